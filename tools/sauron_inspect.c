/* sauron-inspect: per-layer table (op, output shape, parameters, FLOPs)
 * and metadata of an ONNX or .sslim model, as text or JSON. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/compress_cli.h"
#include "compressor/onnx/onnx_import.h"
#include "compressor/sauron/groups.h"
#include "compressor/sha256.h"
#include "runtime/cliopt.h"
#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/ops/ops.h"
#include "runtime/sslim.h"

/* "N,C,(D,)H,W" (commas or x): 3 to SL_MAX_DIMS sizes in 1..2^20. */
static int parse_shape(const char *v, void *target)
{
    Shape *sh = target, t;
    memset(&t, 0, sizeof t);
    const char *p = v;
    while (*p) {
        char item[32];
        size_t len = strcspn(p, ",x");
        long x;
        if (t.ndim == SL_MAX_DIMS || len >= sizeof item) return -1;
        memcpy(item, p, len);
        item[len] = '\0';
        if (cli_parse_long(item, 1, 1L << 20, &x)) return -1;
        t.d[t.ndim++] = x;
        p += len;
        if (*p && !*++p) return -1;
    }
    if (t.ndim < 3) return -1;
    *sh = t;
    return 0;
}

typedef struct {
    Shape shape;
    int have_shape, json, groups;
} Args;

static const CliOpt inspect_opts[] = {
    {.name = "shape",
     .type = CLI_CUSTOM,
     .parse = parse_shape,
     .expect = "N,C,(D,)H,W with positive sizes",
     .metavar = "N,C,(D,)H,W",
     .off = offsetof(Args, shape),
     .has_mark = 1,
     .mark = offsetof(Args, have_shape),
     .help = "input shape the table is computed for (default: the model's "
             "import shape or 3D patch)"},
    {.name = "json",
     .type = CLI_FLAG,
     .off = offsetof(Args, json),
     .help = "print JSON instead of a table"},
    {.name = "groups",
     .type = CLI_FLAG,
     .off = offsetof(Args, groups),
     .help = "list the prunable points instead (channels, producer, norm and "
             "activation, uses with channel offsets, Add groups, or why a "
             "point is excluded)"},
};

static const CliGroup inspect_groups[] = {
    {NULL, inspect_opts, sizeof inspect_opts / sizeof *inspect_opts, 0},
};

static const CliSpec inspect_cli = {
    .prog = "sauron-inspect",
    .version = "sauron-inspect (sauron) " SAURON_VERSION,
    .summary = "show the layers, parameters and FLOPs of a model",
    .synopsis = "MODEL [--shape N,C,(D,)H,W] [--json] [--groups]",
    .description =
        "Show the layers of an ONNX or .sslim model: op, output shape,\n"
        "parameters and FLOPs for one input (default: the model's import\n"
        "shape or 3D patch), totals and metadata.",
    .groups = inspect_groups,
    .n_groups = 1,
    .notes = "Exit status: 0 on success, 1 on failure, 2 for a usage "
             "error.",
};

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
    else if (n->kind == NORMALIZE_ZSCORE_FG &&
             (n->hi != 1.0f || n->lo != 0.0f))
        snprintf(buf, len, "zscore-fg:%g,%g", (double)n->hi, (double)n->lo);
    else if (n->kind == NORMALIZE_ZSCORE_FG)
        snprintf(buf, len, "zscore-fg");
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
    if (strcmp(fmt, "onnx") || m->orientation[0] || m->spacing[0] > 0)
        printf("training grid: %s, spacing %g,%g,%g mm%s\n",
               m->orientation[0] ? m->orientation : "(scan's axes)",
               m->spacing[0], m->spacing[1], m->spacing[2],
               m->orientation[0] || m->spacing[0] > 0
                   ? ""
                   : " (none recorded: segment runs on each scan's grid)");
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
           "\"order\": \"%s\", \"orientation\": \"%s\", "
           "\"spacing\": [%.17g, %.17g, %.17g], \"classes\": [",
           m->dims, m->axis, m->patch[0], m->patch[1], m->patch[2],
           m->order == ORDER_NIBABEL ? "nibabel" : "nnunet", m->orientation,
           m->spacing[0], m->spacing[1], m->spacing[2]);
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
    int rc = 1, npos = 0;
    Args a;
    Shape shape;
    Graph g;
    uint8_t *bytes = NULL;
    size_t size = 0;
    graph_init(&g);
    memset(&a, 0, sizeof a);
    char **pos = sl_calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) {
        sl_error("out of memory");
        return 1;
    }
    int prc = cli_parse(&inspect_cli, argc, argv, &a, pos, &npos);
    if (prc == CLI_HELP) cli_help(&inspect_cli, stdout);
    if (prc == CLI_VERSION) printf("%s\n", inspect_cli.version);
    if (prc == CLI_MAN) cli_man(&inspect_cli, stdout);
    if (prc == 0 && npos > 1) {
        sl_error("unexpected argument '%s'; give one model", pos[1]);
        prc = ERR_ARG;
    }
    if (prc == 0 && npos == 0) {
        sl_error("no model given; usage: sauron-inspect MODEL "
                 "[--shape N,C,(D,)H,W] [--json]");
        prc = ERR_ARG;
    }
    path = npos ? pos[0] : NULL;
    sl_free(pos);
    if (prc) return prc > 0 ? 0 : 2;
    shape = a.shape;
    if (sl_read_file(path, &bytes, &size)) goto out;
    int is_sslim = sslim_is_sslim(bytes, size);
    sl_free(bytes);
    bytes = NULL;
    if (is_sslim ? sslim_read(path, &g) : onnx_import(path, NULL, &g))
        goto out;
    if (!a.have_shape) {
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
    if (a.groups) {
        PruneGroups pg;
        if (sauron_find_groups(&g, &pg)) goto out;
        sauron_groups_print(stdout, &g, &pg);
        sauron_groups_free(&pg);
    } else if (a.json)
        print_json(&g, path, is_sslim ? "sslim" : "onnx");
    else
        print_text(&g, path, is_sslim ? "sslim" : "onnx");
    rc = 0;
out:
    graph_free(&g);
    return rc;
}
