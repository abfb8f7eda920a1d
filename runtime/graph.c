/* Graph IR: construction, validation, shape inference, cloning. */
#include "graph.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "ops/ops.h"

/* Largest dimension and element count we accept anywhere.  Shapes come
 * from files; these bounds keep every later size computation (bytes =
 * numel * 4, offsets, im2col sizes) far from overflow. */
#define MAX_DIM ((int64_t)1 << 31)
#define MAX_NUMEL ((int64_t)1 << 40)
/* Kernel geometry bounds: generous for any real network, small enough
 * that products in the kernels' index arithmetic cannot overflow. */
#define MAX_KERNEL 1024
#define MAX_STRIDE 1024
#define MAX_PAD 65536

/* ---------------------------------------------------------------- shapes */

int64_t shape_numel(const Shape *s)
{
    if (s->ndim < 0 || s->ndim > SL_MAX_DIMS) return -1;
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) {
        if (s->d[i] < 0) return -1;
        if (s->d[i] && n > INT64_MAX / s->d[i]) return -1;
        n *= s->d[i];
    }
    return n;
}

int shape_equal(const Shape *a, const Shape *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim && i < SL_MAX_DIMS; i++)
        if (a->d[i] != b->d[i]) return 0;
    return 1;
}

char *shape_str(const Shape *s, char *buf, int len)
{
    if (!buf || len <= 0) return buf;
    int pos = snprintf(buf, (size_t)len, "[");
    for (int i = 0; i < s->ndim && i < SL_MAX_DIMS && pos < len; i++)
        pos += snprintf(buf + pos, (size_t)(len - pos), "%s%lld",
                        i ? "," : "", (long long)s->d[i]);
    if (pos < len) snprintf(buf + pos, (size_t)(len - pos), "]");
    return buf;
}

/* ------------------------------------------------------- init and free */

void graph_init(Graph *g)
{
    memset(g, 0, sizeof *g);
    g->input = -1;
}

void meta_free(ModelMeta *m)
{
    if (m->class_names)
        for (int i = 0; i < m->n_classes; i++)
            sl_free(m->class_names[i]);
    if (m->modality_names)
        for (int i = 0; i < m->n_modalities; i++)
            sl_free(m->modality_names[i]);
    sl_free(m->class_names);
    sl_free(m->modality_names);
    sl_free(m->normalize);
    sl_free(m->source_name);
    sl_free(m->notes);
    memset(m, 0, sizeof *m);
}

void graph_free(Graph *g)
{
    for (int i = 0; i < g->n_values; i++) {
        sl_free(g->values[i].name);
        sl_free(g->values[i].data);
    }
    for (int i = 0; i < g->n_nodes; i++)
        sl_free(g->nodes[i].name);
    sl_free(g->values);
    sl_free(g->nodes);
    meta_free(&g->meta);
    graph_init(g);
}

/* Grow an array of `size`-byte elements to hold at least need elements. */
static int grow(void **arr, int *cap, int need, size_t size)
{
    if (need <= *cap) return SL_OK;
    if (need > (1 << 24)) return ERR_NOMEM; /* no sane graph is this big */
    int nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *p = sl_realloc(*arr, (size_t)nc * size);
    if (!p) return ERR_NOMEM;
    *arr = p;
    *cap = nc;
    return SL_OK;
}

int graph_add_value(Graph *g, const char *name, const Shape *shape,
                    float *data)
{
    char *nm = NULL;
    int rc = ERR_ARG;
    if (!shape || shape->ndim < 0 || shape->ndim > SL_MAX_DIMS) {
        sl_error("value '%s': rank outside 0..%d; this is a bug in the "
                 "caller",
                 sl_esc(name).s, SL_MAX_DIMS);
        goto fail;
    }
    rc = ERR_NOMEM;
    nm = sl_strdup(name ? name : "");
    if (!nm) goto fail;
    if (grow((void **)&g->values, &g->cap_values, g->n_values + 1,
             sizeof *g->values))
        goto fail;
    Value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = nm;
    v->shape = *shape;
    v->data = data;
    v->producer = -1;
    return g->n_values++;
fail:
    if (rc == ERR_NOMEM)
        sl_error("out of memory adding value '%s'", sl_esc(name).s);
    sl_free(nm);
    /* Ownership of data was passed to us, so it is released even on
     * failure: callers never have to guess who frees it. */
    sl_free(data);
    return rc;
}

int graph_add_node(Graph *g, const Node *n)
{
    char *nm = NULL;
    int rc = ERR_ARG;
    if (n->n_in < 0 || n->n_in > SL_MAX_INPUTS || n->out < 0 ||
        n->out >= g->n_values) {
        sl_error("node '%s': input count or output index out of range; this "
                 "is a bug in the caller",
                 sl_esc(n->name).s);
        goto fail;
    }
    rc = ERR_NOMEM;
    nm = sl_strdup(n->name ? n->name : "");
    if (!nm) goto fail;
    if (grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1,
             sizeof *g->nodes))
        goto fail;
    g->nodes[g->n_nodes] = *n;
    g->nodes[g->n_nodes].name = nm;
    g->values[n->out].producer = g->n_nodes;
    return g->n_nodes++;
fail:
    if (rc == ERR_NOMEM)
        sl_error("out of memory adding node '%s'", sl_esc(n->name).s);
    sl_free(nm);
    return rc;
}

int graph_find_value(const Graph *g, const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].name && strcmp(g->values[i].name, name) == 0)
            return i;
    return -1;
}

/* ----------------------------------------------------------- validation */

static int in_range(int v, int lo, int hi)
{
    return v >= lo && v <= hi;
}

/* Kernel geometry shared by Conv, ConvTranspose and the pools. */
static int geometry_ok(int nsp, const int *kernel, const int *stride,
                       const int *dilation, const int *pad_lo,
                       const int *pad_hi)
{
    if (!in_range(nsp, 1, 3)) return 0;
    for (int i = 0; i < nsp; i++)
        if (!in_range(kernel[i], 1, MAX_KERNEL) ||
            !in_range(stride[i], 1, MAX_STRIDE) ||
            !in_range(dilation[i], 1, MAX_KERNEL) ||
            !in_range(pad_lo[i], 0, MAX_PAD) ||
            !in_range(pad_hi[i], 0, MAX_PAD))
            return 0;
    return 1;
}

/* Parameters in range for the op, so that shape inference and kernels
 * never divide by zero or index out of bounds on a hostile file. */
static int params_ok(const Node *n)
{
    switch (n->op) {
    case OP_CONV:
    case OP_CONV_TRANSPOSE: {
        const ConvParams *p = &n->p.conv;
        if (!geometry_ok(p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                         p->pad_hi) ||
            !in_range(p->group, 1, 1 << 20))
            return 0;
        for (int i = 0; i < p->nsp; i++)
            if (!in_range(p->out_pad[i], 0, MAX_STRIDE)) return 0;
        return 1;
    }
    case OP_INSTANCE_NORM:
    case OP_BATCH_NORM:
        return isfinite(n->p.norm.eps) && n->p.norm.eps >= 0 &&
               isfinite(n->p.norm.momentum) &&
               in_range(n->p.norm.use_batch_stats, 0, 1);
    case OP_LEAKY_RELU:
        return isfinite(n->p.act.alpha);
    case OP_SOFTMAX:
        return in_range(n->p.softmax.axis, 0, SL_MAX_DIMS - 1) &&
               in_range(n->p.softmax.flatten, 0, 1);
    case OP_CONCAT:
        return in_range(n->p.concat.axis, 0, SL_MAX_DIMS - 1);
    case OP_MAX_POOL:
    case OP_AVG_POOL: {
        const PoolParams *p = &n->p.pool;
        return geometry_ok(p->nsp, p->kernel, p->stride, p->dilation,
                           p->pad_lo, p->pad_hi) &&
               in_range(p->ceil_mode, 0, 1) &&
               in_range(p->count_include_pad, 0, 1);
    }
    case OP_RESIZE: {
        const ResizeParams *p = &n->p.resize;
        if (!in_range(p->nsp, 1, 3) ||
            !in_range((int)p->mode, RESIZE_NEAREST, RESIZE_LINEAR) ||
            !in_range((int)p->coord, COORD_HALF_PIXEL, COORD_ASYMMETRIC) ||
            !in_range((int)p->nearest, NEAREST_ROUND_PREFER_FLOOR,
                      NEAREST_CEIL))
            return 0;
        /* Scales only matter without a size input, but must be sane. */
        for (int i = 0; i < p->nsp; i++)
            if (!(p->scale[i] > 0 && p->scale[i] <= 1024)) return 0;
        return 1;
    }
    default:
        return 1;
    }
}

/* Allowed input counts per op, and which inputs must be weights. */
static void op_arity(OpType op, int *lo, int *hi, int *first_weight)
{
    *first_weight = 99; /* index of the first input that must be a weight */
    switch (op) {
    case OP_CONV:
    case OP_CONV_TRANSPOSE:
        *lo = 2, *hi = 3, *first_weight = 1;
        break;
    case OP_INSTANCE_NORM:
        *lo = 3, *hi = 3, *first_weight = 1;
        break;
    case OP_BATCH_NORM:
        *lo = 5, *hi = 5, *first_weight = 1;
        break;
    case OP_CONCAT:
        *lo = 1, *hi = SL_MAX_INPUTS;
        break;
    case OP_ADD:
        *lo = 2, *hi = 2;
        break;
    case OP_RESIZE:
        *lo = 1, *hi = 2;
        break;
    default:
        *lo = 1, *hi = 1;
        break;
    }
}

/* Weight shapes a kernel can rely on before any input shape is known. */
static int weights_plausible(const Graph *g, const Node *n)
{
    if (n->op == OP_CONV || n->op == OP_CONV_TRANSPOSE) {
        const Shape *w = &g->values[n->in[1]].shape;
        if (w->ndim != n->p.conv.nsp + 2) return 0;
        for (int i = 0; i < n->p.conv.nsp; i++)
            if (w->d[2 + i] != n->p.conv.kernel[i]) return 0;
        int64_t oc = n->op == OP_CONV ? w->d[0] : w->d[1] * n->p.conv.group;
        if (n->op == OP_CONV && w->d[0] % n->p.conv.group) return 0;
        if (n->op == OP_CONV_TRANSPOSE && w->d[0] % n->p.conv.group) return 0;
        if (n->n_in == 3 && shape_numel(&g->values[n->in[2]].shape) != oc)
            return 0;
    }
    if (n->op == OP_INSTANCE_NORM || n->op == OP_BATCH_NORM) {
        int64_t c = shape_numel(&g->values[n->in[1]].shape);
        for (int i = 2; i < n->n_in; i++)
            if (shape_numel(&g->values[n->in[i]].shape) != c) return 0;
    }
    return 1;
}

int graph_validate(const Graph *g, const char *what)
{
    int *produced = NULL;
    int rc = ERR_FORMAT;
    what = what ? what : "graph";
    if (g->n_values < 0 || g->n_nodes < 0 || g->n_values > (1 << 24)) {
        sl_error("%s: corrupt graph counts; re-export with sauron-compress",
                 what);
        goto fail;
    }
    for (int i = 0; i < g->n_values; i++) {
        const Value *v = &g->values[i];
        if (v->shape.ndim < 0 || v->shape.ndim > SL_MAX_DIMS) {
            sl_error("%s: value '%s' has rank %d (max %d); re-export with "
                     "sauron-compress",
                     what, sl_esc(v->name).s, v->shape.ndim, SL_MAX_DIMS);
            goto fail;
        }
        if (!v->data) continue;
        int64_t ne = shape_numel(&v->shape);
        for (int k = 0; k < v->shape.ndim; k++)
            if (v->shape.d[k] < 1 || v->shape.d[k] > MAX_DIM) ne = -1;
        if (v->shape.ndim < 1 || ne < 1 || ne > MAX_NUMEL) {
            sl_error("%s: weight '%s' has an invalid shape; re-export with "
                     "sauron-compress",
                     what, sl_esc(v->name).s);
            goto fail;
        }
    }
    if (g->input < 0 || g->input >= g->n_values || g->values[g->input].data) {
        sl_error("%s: graph input missing or is a weight; re-export with "
                 "sauron-compress",
                 what);
        goto fail;
    }
    if (g->n_outputs < 1 || g->n_outputs > SL_MAX_OUTPUTS) {
        sl_error("%s: graph has %d outputs (need 1..%d); re-export with "
                 "sauron-compress",
                 what, g->n_outputs, SL_MAX_OUTPUTS);
        goto fail;
    }
    rc = ERR_NOMEM;
    produced = sl_calloc((size_t)g->n_values + 1, sizeof *produced);
    if (!produced) {
        sl_error("%s: out of memory validating the graph", what);
        goto fail;
    }
    rc = ERR_FORMAT;
    /* produced[v] = 1 + index of the node that wrote v, filled in node
     * order, so "defined before use" is the topological-order check. */
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        const char *nn = n->name ? n->name : "?";
        if (n->op < 0 || n->op >= OP_COUNT) {
            sl_error("%s: node %d '%s' has unknown op %d; re-export with "
                     "sauron-compress",
                     what, i, sl_esc(nn).s, (int)n->op);
            goto fail;
        }
        int lo, hi, fw;
        op_arity(n->op, &lo, &hi, &fw);
        if (n->n_in < lo || n->n_in > hi) {
            sl_error("%s: node %d '%s' (%s) has %d inputs, expected %d..%d",
                     what, i, sl_esc(nn).s, op_name(n->op), n->n_in, lo, hi);
            goto fail;
        }
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v < 0 || v >= g->n_values) {
                sl_error("%s: node %d '%s' input %d refers to value %d of "
                         "%d",
                         what, i, sl_esc(nn).s, k, v, g->n_values);
                goto fail;
            }
            int is_w = g->values[v].data != NULL;
            if (k >= fw && !is_w) {
                sl_error("%s: node %d '%s' (%s) input %d '%s' must be a "
                         "weight with data",
                         what, i, sl_esc(nn).s, op_name(n->op), k,
                         sl_esc(g->values[v].name).s);
                goto fail;
            }
            if (!is_w && v != g->input && !produced[v]) {
                sl_error("%s: node %d '%s' reads '%s' before it is produced "
                         "(not in topological order or never produced)",
                         what, i, sl_esc(nn).s, sl_esc(g->values[v].name).s);
                goto fail;
            }
        }
        int o = n->out;
        if (o < 0 || o >= g->n_values) {
            sl_error("%s: node %d '%s' output refers to value %d of %d", what,
                     i, sl_esc(nn).s, o, g->n_values);
            goto fail;
        }
        if (g->values[o].data || o == g->input || produced[o]) {
            sl_error("%s: node %d '%s' writes '%s', which is a weight, the "
                     "graph input, or already produced",
                     what, i, sl_esc(nn).s, sl_esc(g->values[o].name).s);
            goto fail;
        }
        if (g->values[o].producer != i) {
            sl_error("%s: node %d '%s': producer of '%s' inconsistent", what,
                     i, sl_esc(nn).s, sl_esc(g->values[o].name).s);
            goto fail;
        }
        produced[o] = i + 1;
        if (!params_ok(n)) {
            sl_error("%s: node %d '%s' (%s) has out-of-range parameters; "
                     "re-export with sauron-compress",
                     what, i, sl_esc(nn).s, op_name(n->op));
            goto fail;
        }
        if (!weights_plausible(g, n)) {
            sl_error("%s: node %d '%s' (%s) has weights whose shape does not "
                     "match its parameters",
                     what, i, sl_esc(nn).s, op_name(n->op));
            goto fail;
        }
    }
    for (int k = 0; k < g->n_outputs; k++) {
        int v = g->outputs[k];
        if (v < 0 || v >= g->n_values || g->values[v].data ||
            (v != g->input && !produced[v])) {
            sl_error("%s: graph output %d is not a produced activation; "
                     "re-export with sauron-compress",
                     what, k);
            goto fail;
        }
    }
    for (int v = 0; v < g->n_values; v++) {
        if (!g->values[v].data && v != g->input && !produced[v] &&
            g->values[v].producer != -1) {
            sl_error("%s: value '%s' claims a producer that does not write "
                     "it",
                     what, sl_esc(g->values[v].name).s);
            goto fail;
        }
    }
    rc = SL_OK;
fail:
    sl_free(produced);
    return rc;
}

/* ------------------------------------------------------ shape inference */

int graph_infer_shapes(Graph *g, const Shape *input)
{
    char a[96], b[96];
    if (g->input < 0 || g->input >= g->n_values) {
        sl_error("graph has no input; load a valid model");
        return ERR_ARG;
    }
    Value *in = &g->values[g->input];
    int64_t ne = shape_numel(input);
    if (input->ndim < 1 || input->ndim > SL_MAX_DIMS || ne < 1 ||
        ne > MAX_NUMEL) {
        sl_error("input shape %s is empty or too large",
                 shape_str(input, a, sizeof a));
        return ERR_SHAPE;
    }
    if (in->shape.ndim > 0) {
        if (input->ndim != in->shape.ndim) {
            sl_error("input shape %s has rank %d but model '%s' expects %s "
                     "(rank %d)",
                     shape_str(input, a, sizeof a), input->ndim,
                     sl_esc(in->name).s, shape_str(&in->shape, b, sizeof b),
                     in->shape.ndim);
            return ERR_SHAPE;
        }
        if (in->shape.ndim > 1 && in->shape.d[1] > 0 &&
            input->d[1] != in->shape.d[1]) {
            sl_error("input shape %s has %lld channels but model input '%s' "
                     "expects %lld (one per modality)",
                     shape_str(input, a, sizeof a), (long long)input->d[1],
                     sl_esc(in->name).s, (long long)in->shape.d[1]);
            return ERR_SHAPE;
        }
    }
    in->shape = *input;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->op < 0 || n->op >= OP_COUNT || n->out < 0 ||
            n->out >= g->n_values) {
            sl_error("node %d '%s' is malformed; validate the graph first", i,
                     sl_esc(n->name).s);
            return ERR_SHAPE;
        }
        Shape out;
        memset(&out, 0, sizeof out);
        int rc = op_table[n->op].infer(g, n, &out);
        if (rc) {
            sl_error("node %d '%s' (%s): inconsistent shapes for input %s", i,
                     sl_esc(n->name).s, op_name(n->op),
                     shape_str(input, a, sizeof a));
            return ERR_SHAPE;
        }
        int64_t on = shape_numel(&out);
        int bad = out.ndim < 1 || out.ndim > SL_MAX_DIMS || on < 1 ||
                  on > MAX_NUMEL;
        for (int k = 0; !bad && k < out.ndim; k++)
            if (out.d[k] < 1 || out.d[k] > MAX_DIM) bad = 1;
        if (bad) {
            sl_error("node %d '%s' (%s): output shape %s is empty or too "
                     "large for input %s; use a larger or smaller input",
                     i, sl_esc(n->name).s, op_name(n->op),
                     shape_str(&out, b, sizeof b),
                     shape_str(input, a, sizeof a));
            return ERR_SHAPE;
        }
        g->values[n->out].shape = out;
    }
    return SL_OK;
}

int64_t graph_flops(const Graph *g)
{
    int64_t f = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (op_table[n->op].flops) f += op_table[n->op].flops(g, n);
    }
    return f;
}

int64_t graph_params(const Graph *g)
{
    int64_t p = 0;
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].data) p += shape_numel(&g->values[i].shape);
    return p;
}

/* --------------------------------------------------------------- clone */

static int clone_strings(char ***dst, char *const *src, int n)
{
    *dst = NULL;
    if (!src || n <= 0) return SL_OK;
    *dst = sl_calloc((size_t)n, sizeof **dst);
    if (!*dst) return ERR_NOMEM;
    for (int i = 0; i < n; i++)
        if (src[i] && !((*dst)[i] = sl_strdup(src[i]))) return ERR_NOMEM;
    return SL_OK;
}

static int clone_meta(ModelMeta *d, const ModelMeta *s)
{
    *d = *s;
    d->class_names = d->modality_names = NULL;
    d->normalize = NULL;
    d->source_name = d->notes = NULL;
    if (clone_strings(&d->class_names, s->class_names, s->n_classes) ||
        clone_strings(&d->modality_names, s->modality_names, s->n_modalities))
        return ERR_NOMEM;
    if (s->normalize && s->n_modalities > 0) {
        d->normalize =
            sl_calloc((size_t)s->n_modalities, sizeof *d->normalize);
        if (!d->normalize) return ERR_NOMEM;
        memcpy(d->normalize, s->normalize,
               (size_t)s->n_modalities * sizeof *d->normalize);
    }
    if ((s->source_name && !(d->source_name = sl_strdup(s->source_name))) ||
        (s->notes && !(d->notes = sl_strdup(s->notes))))
        return ERR_NOMEM;
    return SL_OK;
}

int graph_clone(Graph *dst, const Graph *src)
{
    graph_init(dst);
    int rc = ERR_NOMEM;
    for (int i = 0; i < src->n_values; i++) {
        const Value *v = &src->values[i];
        float *data = NULL;
        if (v->data) {
            int64_t ne = shape_numel(&v->shape);
            size_t bytes;
            if (ne < 0 || sl_mul_size((size_t)ne, sizeof(float), &bytes))
                goto fail;
            if (!(data = sl_alloc(bytes))) goto fail;
            memcpy(data, v->data, bytes);
        }
        int r = graph_add_value(dst, v->name, &v->shape, data);
        if (r < 0) {
            rc = r;
            goto fail;
        }
        dst->values[r].producer = v->producer;
    }
    for (int i = 0; i < src->n_nodes; i++) {
        int r = graph_add_node(dst, &src->nodes[i]);
        if (r < 0) {
            rc = r;
            goto fail;
        }
    }
    dst->input = src->input;
    dst->n_outputs = src->n_outputs;
    memcpy(dst->outputs, src->outputs, sizeof dst->outputs);
    if (clone_meta(&dst->meta, &src->meta)) goto fail;
    return SL_OK;
fail:
    sl_error("out of memory copying the graph");
    graph_free(dst);
    return rc;
}

/* ---------------------------------------------------------- valid sizes */

int64_t graph_valid_size(Graph *g, const Shape *base, int dim, int64_t want)
{
    if (dim < 0 || base->ndim < 3 || 2 + dim >= base->ndim ||
        g->n_outputs < 1)
        return -1;
    /* Probing fails on purpose many times: keep those errors silent and
     * leave the error state exactly as the caller had it. */
    char saved[1024];
    int had_error = sl_error_reported();
    int was_quiet = sl_error_is_quiet();
    snprintf(saved, sizeof saved, "%s", sl_error_last());
    sl_error_quiet(1);
    int64_t found = -1;
    for (int64_t s = want < 1 ? 1 : want; s <= want + 1024; s++) {
        Shape in = *base;
        in.d[2 + dim] = s;
        sl_error_reset();
        if (graph_infer_shapes(g, &in) != SL_OK) continue;
        const Shape *o = &g->values[g->outputs[0]].shape;
        if (o->ndim == in.ndim && o->d[2 + dim] == s) {
            found = s;
            break;
        }
    }
    sl_error_reset();
    if (had_error) sl_error("%s", saved);
    sl_error_quiet(was_quiet);
    return found;
}
