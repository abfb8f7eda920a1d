/* ONNX file -> graph IR: reading the protobuf, the initializers, the
 * graph input and outputs, dead-node removal and metadata.  The per-node
 * folding and lowering is onnx_lower.c's (see onnx_lower.h for the files
 * and how they depend on each other). */
#define _XOPEN_SOURCE 700
#include "onnx_import.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/sha256.h"
#include "onnx_attr.h"
#include "onnx_ctx.h"
#include "onnx_lower.h"
#include "onnx_meta.h"
#include "runtime/common.h"

/* ---- protobuf decoding through the project's allocator ---- */

static void *pb_alloc(void *data, size_t size)
{
    (void)data;
    return sl_alloc(size);
}

static void pb_free(void *data, void *p)
{
    (void)data;
    sl_free(p);
}

int onnx_looks_like_onnx(const uint8_t *data, size_t size)
{
    /* ModelProto fields 1 (ir_version, varint) and 7 (graph) lead every
     * exporter's output: tags 0x08 or 0x3a. */
    return size > 2 && (data[0] == 0x08 || data[0] == 0x3a);
}

/* ---- graph input ---- */

/* Add the single image input with its import shape. */
static int add_input(OnnxCtx *c, const OnnxImportOptions *opt)
{
    const Onnx__GraphProto *gp = c->gp;
    const Onnx__ValueInfoProto *in = NULL;
    int n_real = 0;
    for (size_t k = 0; k < gp->n_input; k++) {
        const Onnx__ValueInfoProto *v = gp->input[k];
        if (!v->name || sym_find(c, v->name) >= 0) continue; /* initializer */
        if (!in) in = v;
        n_real++;
    }
    if (n_real != 1) {
        sl_error("'%s' has %d graph inputs besides its weights; an image "
                 "network must have exactly one",
                 c->path, n_real);
        return n_real ? ERR_UNSUPPORTED : ERR_FORMAT;
    }
    Shape s = {0};
    SlEsc iname = sl_esc(in->name);
    const Onnx__TypeProto *tp = in->type;
    const Onnx__TensorShapeProto *sp =
        tp && tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE &&
                tp->tensor_type
            ? tp->tensor_type->shape
            : NULL;
    if (tp && tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE &&
        tp->tensor_type && tp->tensor_type->has_elem_type &&
        tp->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        sl_error("input '%s' of '%s' has element type %d; only float32 "
                 "inputs are supported (re-export with a float input)",
                 iname.s, c->path, (int)tp->tensor_type->elem_type);
        return ERR_UNSUPPORTED;
    }
    if (opt && opt->input_shape) {
        s = *opt->input_shape;
    } else {
        if (!sp || sp->n_dim < 3 || sp->n_dim > SL_MAX_DIMS) {
            sl_error("input '%s' of '%s' has %s; expected [N, C, (D,) H, W] "
                     "(give the input shape explicitly)",
                     iname.s, c->path,
                     sp ? "an unsupported rank" : "no shape");
            return ERR_UNSUPPORTED;
        }
        s.ndim = (int)sp->n_dim;
        for (int k = 0; k < s.ndim; k++) {
            const Onnx__TensorShapeProto__Dimension *d = sp->dim[k];
            int64_t v =
                d->value_case ==
                        ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                    ? d->dim_value
                    : 0;
            if (v <= 0) v = k == 0 ? 1 : k == 1 ? 0 : ONNX_DEFAULT_SPATIAL;
            s.d[k] = v;
        }
        if (s.d[1] == 0) {
            /* A dynamic channel count: the first convolution's weight says
             * how many channels the network really takes. */
            for (size_t k = 0; k < gp->n_node && !s.d[1]; k++) {
                const Onnx__NodeProto *n = gp->node[k];
                if (!n->op_type || strcmp(n->op_type, "Conv") ||
                    n->n_input < 2 || strcmp(n->input[0], in->name))
                    continue;
                int w = sym_find(c, n->input[1]);
                /* attr_i skips attributes without a name; the bound keeps
                 * the product exact (the range check below refuses it). */
                int64_t grp = attr_i(n, "group", 1);
                if (grp < 1 || grp > ONNX_MAX_DIM) grp = ONNX_MAX_DIM + 1;
                if (w >= 0 && c->syms[w].kind == SYM_CONST &&
                    c->syms[w].t.ndim >= 2 &&
                    c->syms[w].t.dims[1] <= ONNX_MAX_DIM)
                    s.d[1] = c->syms[w].t.dims[1] * grp;
            }
        }
    }
    if (s.ndim < 3 || s.ndim > SL_MAX_DIMS) {
        sl_error("input '%s' of '%s': rank %d; expected 3 to 5 dims", iname.s,
                 c->path, s.ndim);
        return ERR_UNSUPPORTED;
    }
    /* Each factor is at most 2^16 and the product stops growing past the
     * limit, so it cannot overflow (five dims of 2^16 would). */
    int64_t total = 1;
    for (int k = 0; k < s.ndim && total <= ONNX_MAX_INPUT_NUMEL; k++)
        total = s.d[k] > 0 && s.d[k] <= ONNX_MAX_DIM ? total * s.d[k] : total;
    if (total > ONNX_MAX_INPUT_NUMEL) {
        sl_error("input '%s' of '%s' has %lld elements; that is not a scan "
                 "(the file or the requested shape is wrong)",
                 iname.s, c->path, (long long)total);
        return ERR_SHAPE;
    }
    for (int k = 0; k < s.ndim; k++)
        if (s.d[k] > ONNX_MAX_DIM) {
            sl_error("input '%s' of '%s': dim %d is %lld (at most %d); the "
                     "model or the requested shape is wrong",
                     iname.s, c->path, k, (long long)s.d[k], ONNX_MAX_DIM);
            return ERR_SHAPE;
        } else if (s.d[k] <= 0) {
            sl_error("input '%s' of '%s': cannot determine dim %d (dynamic "
                     "channel count?); give the input shape explicitly",
                     iname.s, c->path, k);
            return ERR_SHAPE;
        }
    int v = graph_add_value(c->g, in->name, &s, NULL);
    if (v < 0) return v;
    c->g->input = v;
    return sym_add_value(c, in->name, v) < 0 ? ERR_NOMEM : 0;
}

/* ---- outputs and dead-node removal ---- */

static int64_t spatial_numel(const Shape *s)
{
    int64_t n = 1;
    for (int k = 2; k < s->ndim; k++)
        n *= s->d[k];
    return n;
}

static int set_outputs(OnnxCtx *c, const OnnxImportOptions *opt)
{
    const Onnx__GraphProto *gp = c->gp;
    Graph *g = c->g;
    int chosen = -1;
    int64_t best = -1;
    g->n_outputs = 0;
    if (gp->n_output == 0) {
        sl_error("'%s' declares no graph output; re-export the model",
                 c->path);
        return ERR_FORMAT;
    }
    for (size_t k = 0; k < gp->n_output; k++) {
        const char *name = gp->output[k]->name;
        if (!name || !*name) {
            sl_error("output #%zu of '%s' has no name; the file is "
                     "corrupted",
                     k, c->path);
            return ERR_FORMAT;
        }
        int s = sym_find(c, name);
        if (s < 0) {
            sl_error("output '%s' of '%s' is produced by no node; the file "
                     "is corrupted",
                     sl_esc(name).s, c->path);
            return ERR_FORMAT;
        }
        if (c->syms[s].kind != SYM_VALUE) {
            sl_error("output '%s' of '%s' is %s, not a network output; "
                     "re-export without it",
                     sl_esc(name).s, c->path,
                     c->syms[s].kind == SYM_CONST
                         ? "a constant"
                         : "a reshaped/transposed tensor");
            return ERR_UNSUPPORTED;
        }
        int v = c->syms[s].value;
        if (v == g->input) {
            sl_error("output '%s' of '%s' is the graph input itself",
                     sl_esc(name).s, c->path);
            return ERR_UNSUPPORTED;
        }
        int64_t n = spatial_numel(&g->values[v].shape);
        if (opt && opt->output_name) {
            if (chosen < 0 && !strcmp(opt->output_name, name))
                chosen = (int)k;
        } else if (n > best) {
            best = n;
            chosen = (int)k;
        }
    }
    if (chosen < 0) {
        sl_error("'%s' has no output named '%s'; its outputs are: %s%s%s%s",
                 c->path, sl_esc(opt->output_name).s,
                 sl_esc(gp->output[0]->name).s, gp->n_output > 1 ? ", " : "",
                 gp->n_output > 1 ? sl_esc(gp->output[1]->name).s : "",
                 gp->n_output > 2 ? ", ..." : "");
        return ERR_ARG;
    }
    if (gp->n_output > SL_MAX_OUTPUTS) {
        sl_error("'%s' has %zu outputs (at most %d supported)", c->path,
                 gp->n_output, SL_MAX_OUTPUTS);
        return ERR_UNSUPPORTED;
    }
    /* IR values carry the ONNX output names (an output reached through an
     * Identity or a folded layout change still has its producer's). */
    for (size_t k = 0; k < gp->n_output; k++) {
        Value *v =
            &g->values[c->syms[sym_find(c, gp->output[k]->name)].value];
        if (!strcmp(v->name, gp->output[k]->name)) continue;
        char *nm = sl_strdup(gp->output[k]->name);
        if (!nm) return ERR_NOMEM;
        sl_free(v->name);
        v->name = nm;
    }
    g->outputs[g->n_outputs++] =
        c->syms[sym_find(c, gp->output[chosen]->name)].value;
    for (size_t k = 0; k < gp->n_output; k++) {
        if ((int)k == chosen) continue;
        int v = c->syms[sym_find(c, gp->output[k]->name)].value;
        int dup = 0;
        for (int j = 0; j < g->n_outputs; j++)
            dup |= g->outputs[j] == v;
        if (!dup) g->outputs[g->n_outputs++] = v;
    }
    return 0;
}

/* Copy the nodes some output needs, and the values they touch, from src
 * into the empty dst (weights move, not copy). */
static int graph_compact(Graph *src, Graph *dst)
{
    int rc = ERR_NOMEM;
    char *live = sl_calloc((size_t)src->n_nodes + 1, 1);
    int *vmap = sl_alloc(((size_t)src->n_values + 1) * sizeof(int));
    if (!live || !vmap) {
        sl_error("out of memory compacting the imported graph");
        goto fail;
    }
    for (int k = 0; k < src->n_values; k++)
        vmap[k] = -1;
    /* Mark backwards: nodes are in topological order. */
    for (int k = 0; k < src->n_outputs; k++) {
        int p = src->values[src->outputs[k]].producer;
        if (p >= 0) live[p] = 1;
    }
    for (int k = src->n_nodes - 1; k >= 0; k--) {
        if (!live[k]) continue;
        const Node *n = &src->nodes[k];
        for (int j = 0; j < n->n_in; j++) {
            int p = src->values[n->in[j]].producer;
            if (p >= 0) live[p] = 1;
        }
    }
    Value *iv = &src->values[src->input];
    rc = graph_add_value(dst, iv->name, &iv->shape, NULL);
    if (rc < 0) goto fail;
    vmap[src->input] = rc;
    dst->input = rc;
    for (int k = 0; k < src->n_nodes; k++) {
        if (!live[k]) continue;
        Node n = src->nodes[k];
        for (int j = 0; j <= n.n_in; j++) {
            int v = j < n.n_in ? n.in[j] : n.out;
            if (vmap[v] >= 0) continue;
            Value *sv = &src->values[v];
            float *data = sv->data;
            sv->data = NULL; /* moved: dst owns it even on failure */
            rc = graph_add_value(dst, sv->name, &sv->shape, data);
            if (rc < 0) goto fail;
            vmap[v] = rc;
        }
        for (int j = 0; j < n.n_in; j++)
            n.in[j] = vmap[n.in[j]];
        n.out = vmap[n.out];
        rc = graph_add_node(dst, &n);
        if (rc < 0) goto fail;
    }
    for (int k = 0; k < src->n_outputs; k++)
        dst->outputs[k] = vmap[src->outputs[k]];
    dst->n_outputs = src->n_outputs;
    rc = 0;
fail:
    sl_free(live);
    sl_free(vmap);
    return rc;
}

/* ---- driver ---- */

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int opset_of(const Onnx__ModelProto *m)
{
    for (size_t k = 0; k < m->n_opset_import; k++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[k];
        if ((!o->domain || !*o->domain || !strcmp(o->domain, "ai.onnx")) &&
            o->has_version)
            return (int)o->version;
    }
    return -1;
}

int onnx_import(const char *path, const OnnxImportOptions *opt, Graph *g)
{
    uint8_t *bytes = NULL;
    size_t size = 0;
    Onnx__ModelProto *m = NULL;
    ProtobufCAllocator al = {pb_alloc, pb_free, NULL};
    OnnxCtx c = {0};
    Graph tmp;
    int rc;
    graph_init(&tmp);
    c.path = path;
    c.g = &tmp;
    rc = sl_read_file(path, &bytes, &size);
    if (rc) {
        if (!sl_error_reported())
            sl_error("cannot read '%s'; check the path", path);
        goto fail;
    }
    m = size ? onnx__model_proto__unpack(&al, size, bytes) : NULL;
    if (!m || !m->graph || m->graph->n_node == 0) {
        sl_error("'%s' is not an ONNX model (%s); export it with "
                 "torch.onnx.export",
                 path,
                 !size ? "empty file"
                 : !m  ? "not a valid protobuf ModelProto"
                       : "no graph or no nodes");
        rc = ERR_FORMAT;
        goto fail;
    }
    c.opset = opset_of(m);
    if (c.opset < 7 || c.opset > 18) {
        sl_error("'%s' uses ONNX opset %d; supported are 7 to 18 (re-export "
                 "with opset_version=17)",
                 path, c.opset);
        rc = ERR_UNSUPPORTED;
        goto fail;
    }
    c.gp = m->graph;
    {
        char dirbuf[PATH_MAX], real[PATH_MAX];
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path) : 0;
        if (dl >= sizeof dirbuf) dl = sizeof dirbuf - 1;
        memcpy(dirbuf, path, dl);
        dirbuf[dl] = '\0';
        if (!slash)
            strcpy(dirbuf, ".");
        else if (dl == 0)
            strcpy(dirbuf, "/");
        if (!realpath(dirbuf, real)) {
            sl_error("cannot resolve the folder of '%s'", path);
            rc = ERR_IO;
            goto fail;
        }
        c.dir = sl_strdup(real);
        if (!c.dir) {
            rc = ERR_NOMEM;
            goto fail;
        }
    }
    for (size_t k = 0; k < m->graph->n_initializer; k++) {
        const Onnx__TensorProto *tp = m->graph->initializer[k];
        OTensor t;
        rc = ot_from_proto(tp, c.path, c.dir, &t);
        if (rc) goto fail;
        rc = sym_add_const(&c, tp->name ? tp->name : "", &t, -1);
        if (rc < 0) goto fail;
    }
    rc = add_input(&c, opt);
    if (rc) goto fail;
    rc = onnx_lower(&c);
    if (rc) goto fail;
    rc = set_outputs(&c, opt);
    if (rc) goto fail;
    rc = graph_compact(&tmp, g);
    if (rc) goto fail;
    g->meta.dims = g->values[g->input].shape.ndim - 2;
    uint8_t own_sha[32]; /* this file's, kept for opt->source_is_file */
    sha256(bytes, size, own_sha);
    memcpy(g->meta.source_sha256, own_sha, sizeof own_sha);
    g->meta.source_name = sl_strdup(base_name(path));
    if (!g->meta.source_name) {
        rc = ERR_NOMEM;
        goto fail;
    }
    rc = graph_validate(g, path);
    if (rc) goto fail;
    {
        Shape in = g->values[g->input].shape;
        rc = graph_infer_shapes(g, &in);
        if (rc) goto fail;
    }
    /* A Sauron export carries its ModelMeta (absent: nothing changes). */
    rc = onnx_meta_decode(m, path, g);
    if (rc) goto fail;
    if (opt && opt->source_is_file) {
        char *name = sl_strdup(base_name(path));
        if (!name) {
            rc = ERR_NOMEM;
            goto fail;
        }
        memcpy(g->meta.source_sha256, own_sha, sizeof own_sha);
        sl_free(g->meta.source_name);
        g->meta.source_name = name;
    }
    rc = 0;
fail:
    if (rc) {
        if (rc == ERR_NOMEM && !sl_error_reported())
            sl_error("out of memory importing '%s'", path);
        graph_free(g);
        graph_init(g);
    }
    graph_free(&tmp);
    onnx_ctx_free(&c);
    if (m) onnx__model_proto__free_unpacked(m, &al);
    sl_free(bytes);
    return rc;
}
