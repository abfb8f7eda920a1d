/* sauron-inspect: per-layer table (op, output shape, parameters, FLOPs)
 * and metadata of an ONNX or .sslim model, as text or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/onnx/onnx_import.h"
#include "compressor/sauron/groups.h"
#include "compressor/sha256.h"
#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/ops/ops.h"
#include "runtime/sslim.h"

static void usage(FILE *f)
{
    fprintf(
        f, "usage: sauron-inspect MODEL [--shape N,C,(D,)H,W] [--json] "
           "[--groups]\n"
           "Show the layers of an ONNX or .sslim model: op, output shape,\n"
           "parameters and FLOPs for one input (default: the model's import\n"
           "shape or 3D patch), totals and metadata.\n"
           "--groups: list the prunable points instead (channels, producer,\n"
           "norm and activation, uses with channel offsets, Add groups, or\n"
           "why a point is excluded).\n");
}

static int parse_shape(const char *s, Shape *sh)
{
    char *end;
    sh->ndim = 0;
    while (*s) {
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1 || v > (1 << 20) || sh->ndim == SL_MAX_DIMS)
            return -1;
        sh->d[sh->ndim++] = v;
        s = end;
        if (*s == ',' || *s == 'x')
            s++;
        else if (*s)
            return -1;
    }
    return sh->ndim >= 3 ? 0 : -1;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static int64_t node_params(const Graph *g, const Node *n)
{
    int64_t p = 0;
    for (int j = 0; j < n->n_in; j++) {
        const Value *v = &g->values[n->in[j]];
        if (v->data) p += shape_numel(&v->shape);
    }
    return p;
}

static const char *norm_str(const Normalize *n, char *buf, size_t len)
{
    if (n->kind == NORMALIZE_ZSCORE)
        snprintf(buf, len, "zscore");
    else if (n->kind == NORMALIZE_NONE)
        snprintf(buf, len, "none");
    else
        snprintf(buf, len, "ct:%g,%g", (double)n->lo, (double)n->hi);
    return buf;
}

static void print_text(const Graph *g, const char *path, const char *fmt)
{
    const ModelMeta *m = &g->meta;
    char sb[96], hex[65], nb[64];
    printf("%s (%s)\n", path, fmt);
    printf("%4s  %-14s %-28s %-22s %10s %14s\n", "#", "op", "name", "output",
           "params", "FLOPs");
    for (int k = 0; k < g->n_nodes; k++) {
        const Node *n = &g->nodes[k];
        printf("%4d  %-14s %-28s %-22s %10lld %14lld\n", k, op_name(n->op),
               n->name, shape_str(&g->values[n->out].shape, sb, sizeof sb),
               (long long)node_params(g, n),
               (long long)op_table[n->op].flops(g, n));
    }
    printf("total: %d layers, %lld parameters, %lld FLOPs (%.3f GFLOPs) for "
           "input %s\n",
           g->n_nodes, (long long)graph_params(g), (long long)graph_flops(g),
           (double)graph_flops(g) * 1e-9,
           shape_str(&g->values[g->input].shape, sb, sizeof sb));
    printf("outputs:");
    for (int k = 0; k < g->n_outputs; k++)
        printf(" %s%s", g->values[g->outputs[k]].name,
               k ? "" : " (segmentation)");
    printf("\n");
    if (m->n_classes) {
        printf("classes:");
        for (int k = 0; k < m->n_classes; k++)
            printf(" %s", m->class_names[k]);
        printf("\n");
    }
    if (m->n_modalities) {
        printf("modalities:");
        for (int k = 0; k < m->n_modalities; k++)
            printf(" %s (%s)", m->modality_names[k],
                   m->normalize ? norm_str(&m->normalize[k], nb, sizeof nb)
                                : "?");
        printf("\n");
    }
    if (!strcmp(fmt, "onnx"))
        printf(
            "%dD model; classes, modalities, normalisation and slicing are "
            "set by sauron-compress\n",
            m->dims);
    else if (m->dims == 2)
        printf("2D, slicing axis %d, order %s\n", m->axis,
               m->order == ORDER_NIBABEL ? "nibabel" : "nnunet");
    else if (m->dims == 3)
        printf("3D, patch %d,%d,%d, order %s\n", m->patch[0], m->patch[1],
               m->patch[2], m->order == ORDER_NIBABEL ? "nibabel" : "nnunet");
    sha256_hex(m->source_sha256, hex);
    printf("source: %s sha256 %s\n", m->source_name ? m->source_name : "?",
           hex);
    if (m->notes) printf("notes: %s\n", m->notes);
}

static void print_json(const Graph *g, const char *path, const char *fmt)
{
    const ModelMeta *m = &g->meta;
    char sb[96], hex[65], nb[64];
    printf("{\"model\": ");
    json_str(stdout, path);
    printf(", \"format\": \"%s\", \"input\": ", fmt);
    json_str(stdout, shape_str(&g->values[g->input].shape, sb, sizeof sb));
    printf(", \"params\": %lld, \"flops\": %lld, \"layers\": [",
           (long long)graph_params(g), (long long)graph_flops(g));
    for (int k = 0; k < g->n_nodes; k++) {
        const Node *n = &g->nodes[k];
        printf("%s\n  {\"index\": %d, \"name\": ", k ? "," : "", k);
        json_str(stdout, n->name);
        printf(", \"op\": \"%s\", \"shape\": [", op_name(n->op));
        const Shape *s = &g->values[n->out].shape;
        for (int j = 0; j < s->ndim; j++)
            printf("%s%lld", j ? ", " : "", (long long)s->d[j]);
        printf("], \"params\": %lld, \"flops\": %lld}",
               (long long)node_params(g, n),
               (long long)op_table[n->op].flops(g, n));
    }
    printf("],\n \"outputs\": [");
    for (int k = 0; k < g->n_outputs; k++) {
        printf("%s", k ? ", " : "");
        json_str(stdout, g->values[g->outputs[k]].name);
    }
    printf("],\n \"meta\": {\"dims\": %d, \"axis\": %d, \"patch\": [%d, %d, "
           "%d], "
           "\"order\": \"%s\", \"classes\": [",
           m->dims, m->axis, m->patch[0], m->patch[1], m->patch[2],
           m->order == ORDER_NIBABEL ? "nibabel" : "nnunet");
    for (int k = 0; k < m->n_classes; k++) {
        printf("%s", k ? ", " : "");
        json_str(stdout, m->class_names[k]);
    }
    printf("], \"modalities\": [");
    for (int k = 0; k < m->n_modalities; k++) {
        printf("%s", k ? ", " : "");
        json_str(stdout, m->modality_names[k]);
    }
    printf("], \"normalize\": [");
    for (int k = 0; m->normalize && k < m->n_modalities; k++) {
        printf("%s", k ? ", " : "");
        json_str(stdout, norm_str(&m->normalize[k], nb, sizeof nb));
    }
    sha256_hex(m->source_sha256, hex);
    printf("], \"source_name\": ");
    json_str(stdout, m->source_name ? m->source_name : "");
    printf(", \"source_sha256\": \"%s\", \"notes\": ", hex);
    if (m->notes)
        json_str(stdout, m->notes);
    else
        printf("null");
    printf("}}\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0, rc = 1, have_shape = 0, groups = 0;
    Shape shape = {0};
    Graph g;
    uint8_t *bytes = NULL;
    size_t size = 0;
    graph_init(&g);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--groups")) {
            groups = 1;
        } else if (!strcmp(a, "--shape") || !strncmp(a, "--shape=", 8)) {
            const char *v = a[7] == '='    ? a + 8
                            : i + 1 < argc ? argv[++i]
                                           : "";
            if (parse_shape(v, &shape)) {
                fprintf(stderr,
                        "error: --shape '%s': expected N,C,(D,)H,W with "
                        "positive sizes\n",
                        v);
                return 2;
            }
            have_shape = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr,
                    "error: unknown option '%s'; see sauron-inspect --help\n",
                    a);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            fprintf(stderr,
                    "error: unexpected argument '%s'; give one model\n", a);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "error: no model given; usage: sauron-inspect MODEL "
                        "[--shape N,C,(D,)H,W] [--json]\n");
        return 2;
    }
    if (sl_read_file(path, &bytes, &size)) goto out;
    int is_sslim = sslim_is_sslim(bytes, size);
    sl_free(bytes);
    bytes = NULL;
    if (is_sslim ? sslim_read(path, &g) : onnx_import(path, NULL, &g))
        goto out;
    if (!have_shape) {
        shape = g.values[g.input].shape;
        if (g.meta.dims == 3 && g.meta.patch[0] > 0 && shape.ndim == 5)
            for (int k = 0; k < 3; k++)
                shape.d[2 + k] = g.meta.patch[k];
    }
    if (shape.ndim < 3) {
        fprintf(stderr, "error: '%s' stores no input shape; pass --shape\n",
                path);
        goto out;
    }
    if (graph_infer_shapes(&g, &shape)) goto out;
    if (groups) {
        PruneGroups pg;
        if (sauron_find_groups(&g, &pg)) goto out;
        sauron_groups_print(stdout, &g, &pg);
        sauron_groups_free(&pg);
    } else if (json)
        print_json(&g, path, is_sslim ? "sslim" : "onnx");
    else
        print_text(&g, path, is_sslim ? "sslim" : "onnx");
    rc = 0;
out:
    graph_free(&g);
    return rc;
}
