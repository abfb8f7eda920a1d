/* Lowering the compute operators: Conv/ConvTranspose, pooling,
 * normalisations, activations, Softmax, Concat, Add/Sub/Mul/Div (folded
 * into the producer when per-channel by a constant), Shape of an
 * activation, Identity/Dropout.  Dispatched from onnx_lower.c's table. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "onnx_attr.h"
#include "onnx_import.h"
#include "onnx_lower_ops.h"
#include "runtime/common.h"
#include "runtime/ops/ops.h"

/* Geometry attributes beyond this are corrupted files, not networks. */
#define ATTR_MAX 4096

/* int64 attribute to int without overflow (out-of-range values are
 * rejected by the caller's range check). */
static int clamp_attr(int64_t v)
{
    return v > ATTR_MAX ? ATTR_MAX + 1 : v < -1 ? -1 : (int)v;
}

/* IR weight value for a constant symbol (created once, then shared). */
static int weight_of(Lw *l, int j, int *v)
{
    const OTensor *t = lw_const(l, j);
    if (!t) {
        const char *nm =
            j < l->n_in && l->in[j] >= 0 ? l->c->syms[l->in[j]].name : "?";
        return onnx_node_fail(
            l->c, l->idx, ERR_UNSUPPORTED,
            "input %d ('%s') must be a constant (initializer)", j,
            sl_esc(nm).s);
    }
    Sym *s = &l->c->syms[l->in[j]];
    if (s->value >= 0) {
        *v = s->value;
        return 0;
    }
    if (t->ndim > SL_MAX_DIMS)
        return lw_fail(l, ERR_UNSUPPORTED, "weight has more than 5 dims");
    Shape sh = {t->ndim, {0}};
    for (int k = 0; k < t->ndim; k++)
        sh.d[k] = t->dims[k];
    float *d = sl_alloc(((size_t)t->numel + 1) * sizeof(float));
    if (!d) return lw_fail(l, ERR_NOMEM, "out of memory for a weight");
    for (int64_t k = 0; k < t->numel; k++)
        d[k] = (float)ot_get(t, k);
    int r = graph_add_value(l->c->g, s->name, &sh, d); /* owns d */
    if (r < 0) return r;
    s = &l->c->syms[l->in[j]];
    s->value = r;
    *v = r;
    return 0;
}

/* A private copy of weight value w (to fold something into it). */
static int weight_copy(OnnxCtx *c, int w, int idx)
{
    Value *src = &c->g->values[w];
    size_t n = (size_t)shape_numel(&src->shape);
    char name[256];
    float *d = sl_alloc((n + 1) * sizeof(float));
    if (!d)
        return onnx_node_fail(c, idx, ERR_NOMEM,
                              "out of memory for a weight");
    memcpy(d, src->data, n * sizeof(float));
    snprintf(name, sizeof name, "%s.f%d", src->name, idx);
    Shape sh = src->shape;
    return graph_add_value(c->g, name, &sh, d); /* owns d even on failure */
}

/* ---- per-channel constants (Mul/Add after Conv or a normalisation) ---- */

/* Per-channel vector from constant k broadcast against [N,C,...]:
 * m[c] for c < C, or -1 if k is not per-channel. */
static int channel_vector(const OTensor *k, const Shape *x, float *m)
{
    int64_t C = x->d[1];
    if (k->ndim > x->ndim) return -1;
    int caxis = 1 - (x->ndim - k->ndim); /* position of C inside k */
    int64_t kc = 1;
    for (int a = 0; a < k->ndim; a++) {
        if (a == caxis)
            kc = k->dims[a];
        else if (k->dims[a] != 1)
            return -1;
    }
    if (kc != 1 && kc != C) return -1;
    for (int64_t c = 0; c < C; c++)
        m[c] = (float)ot_get(k, kc == 1 ? 0 : c);
    return 0;
}

/* Fold y = x*m + a (per channel) into the node that produced x, if it is
 * a Conv/ConvTranspose/normalisation whose output nothing else reads.
 * Returns 1 if folded, 0 if not possible, < 0 on error. */
static int fold_affine(Lw *l, int x, const float *m, const float *a)
{
    OnnxCtx *c = l->c;
    Graph *g = c->g;
    int p = g->values[x].producer;
    if (p < 0 || lw_consumers(c, g->values[x].name) != 1) return 0;
    Node *nd = &g->nodes[p];
    int64_t C = g->values[x].shape.d[1];
    int wi, bi;
    if (nd->op == OP_CONV || nd->op == OP_CONV_TRANSPOSE) {
        if (nd->op == OP_CONV_TRANSPOSE && nd->p.conv.group != 1 && m)
            return 0;
        wi = m ? 1 : -1;
        bi = 2;
    } else if (nd->op == OP_INSTANCE_NORM || nd->op == OP_BATCH_NORM) {
        if (nd->op == OP_BATCH_NORM && nd->p.norm.use_batch_stats) {
            /* batch statistics: scale/bias still act per channel */
        }
        wi = m ? 1 : -1;
        bi = 2;
    } else {
        return 0;
    }
    if (bi >= nd->n_in) {
        /* A convolution without bias gets a zero one. */
        Shape bs = {1, {C}};
        float *z = sl_calloc((size_t)C + 1, sizeof(float));
        if (!z) return lw_fail(l, ERR_NOMEM, "out of memory");
        char name[256];
        snprintf(name, sizeof name, "%s.bias", nd->name);
        int r = graph_add_value(g, name, &bs, z);
        if (r < 0) return r;
        nd = &g->nodes[p];
        nd->in[nd->n_in++] = r;
    } else {
        int r = weight_copy(c, nd->in[bi], l->idx);
        if (r < 0) return r;
        nd = &g->nodes[p];
        nd->in[bi] = r;
    }
    if (wi >= 0) {
        int r = weight_copy(c, nd->in[wi], l->idx);
        if (r < 0) return r;
        nd = &g->nodes[p];
        nd->in[wi] = r;
        Value *w = &g->values[r];
        int64_t n = shape_numel(&w->shape);
        if (nd->op == OP_CONV) {
            int64_t per = n / C;
            for (int64_t k = 0; k < n; k++)
                w->data[k] *= m[k / per];
        } else if (nd->op == OP_CONV_TRANSPOSE) {
            int64_t per = n / w->shape.d[0] / C; /* [IC, OC, K...] */
            for (int64_t k = 0; k < n; k++)
                w->data[k] *= m[(k / per) % C];
        } else {
            for (int64_t k = 0; k < C; k++)
                w->data[k] *= m[k];
        }
    }
    float *b = g->values[nd->in[bi]].data;
    for (int64_t k = 0; k < C; k++) {
        if (m) b[k] *= m[k];
        if (a) b[k] += a[k];
    }
    return 1;
}

/* Add/Sub/Mul/Div with at least one activation input. */
int onnx_lower_arith(Lw *l, int op)
{
    OnnxCtx *c = l->c;
    int is_add = op == ARITH_ADD, is_sub = op == ARITH_SUB;
    int is_mul = op == ARITH_MUL, is_div = op == ARITH_DIV;
    int x, y, rc;
    float *vec = NULL;
    /* An empty input name is an absent input: both operands must exist. */
    if (l->n_in != 2 || l->in[0] < 0 || l->in[1] < 0)
        return lw_fail(l, ERR_FORMAT, "binary op needs 2 inputs");
    if (lw_is_act(l, 0) && lw_is_act(l, 1)) {
        if (!is_add)
            return onnx_node_fail(
                c, l->idx, ERR_UNSUPPORTED,
                "unsupported operator '%s' between two activations; "
                "only Add is supported",
                sl_esc(l->n->op_type).s);
        if ((rc = lw_act_value(l, 0, &x)) || (rc = lw_act_value(l, 1, &y)))
            return rc;
        Node nd = {0};
        nd.op = OP_ADD;
        nd.n_in = 2;
        nd.in[0] = x;
        nd.in[1] = y;
        return lw_emit(l, &nd, NULL);
    }
    int ai = lw_is_act(l, 0) ? 0 : 1;
    const OTensor *k = lw_const(l, 1 - ai);
    if (!k) return lw_fail(l, ERR_FORMAT, "binary op needs 2 inputs");
    if ((is_sub || is_div) && ai == 1)
        return lw_fail(l, ERR_UNSUPPORTED,
                       "constant minus/over an activation is not supported");
    if ((rc = lw_act_value(l, ai, &x))) return rc;
    const Shape *xs = &c->g->values[x].shape;
    if (xs->ndim >= 2) vec = sl_alloc(((size_t)xs->d[1] + 1) * sizeof(float));
    if (!vec) return lw_fail(l, ERR_NOMEM, "out of memory");
    int per_channel = channel_vector(k, xs, vec) == 0;
    if (per_channel) {
        for (int64_t j = 0; j < xs->d[1]; j++) {
            if (is_sub) vec[j] = -vec[j];
            if (is_div) vec[j] = 1.0f / vec[j];
        }
        rc = fold_affine(l, x, (is_mul || is_div) ? vec : NULL,
                         (is_add || is_sub) ? vec : NULL);
        if (rc < 0) goto out;
        if (rc == 1) {
            /* The producer now computes this node's output: rename. */
            Value *v = &c->g->values[x];
            char *nm = sl_strdup(l->n->output[0]);
            if (!nm) {
                rc = lw_fail(l, ERR_NOMEM, "out of memory");
                goto out;
            }
            sl_free(v->name);
            v->name = nm;
            rc = sym_add_value(c, l->n->output[0], x);
            rc = rc < 0 ? rc : 0;
            goto out;
        }
    }
    if (is_add || is_sub) {
        /* A bias add that cannot be folded stays an Add with a weight. */
        int w;
        rc = weight_of(l, 1 - ai, &w);
        if (rc) goto out;
        if (is_sub) {
            rc = weight_copy(c, w, l->idx);
            if (rc < 0) goto out;
            w = rc;
            Value *wv = &c->g->values[w];
            for (int64_t j = 0; j < shape_numel(&wv->shape); j++)
                wv->data[j] = -wv->data[j];
        }
        Node nd = {0};
        nd.op = OP_ADD;
        nd.n_in = 2;
        nd.in[0] = x;
        nd.in[1] = w;
        rc = lw_emit(l, &nd, NULL);
        goto out;
    }
    rc = onnx_node_fail(
        c, l->idx, ERR_UNSUPPORTED,
        "unsupported operator '%s' by a constant that cannot be folded "
        "into the preceding Conv or normalisation",
        sl_esc(l->n->op_type).s);
out:
    sl_free(vec);
    return rc;
}

/* ---- convolution and pooling ---- */

/* Read kernel/strides/dilations/pads/auto_pad into arrays of nsp. */
static int conv_geometry(Lw *l, int nsp, const int64_t *in_sp, int *kernel,
                         int *stride, int *dil, int *lo, int *hi,
                         int transpose, int *out_pad)
{
    int64_t v[6];
    char buf[32];
    int n;
    for (int k = 0; k < nsp; k++) {
        stride[k] = dil[k] = 1;
        lo[k] = hi[k] = 0;
        if (out_pad) out_pad[k] = 0;
    }
    if ((n = attr_ints(l->n, "kernel_shape", v, 3)) >= 0) {
        if (n != nsp)
            return lw_fail(l, ERR_FORMAT,
                           "kernel_shape has the wrong length");
        for (int k = 0; k < nsp; k++)
            if (kernel[k] > 0 && kernel[k] != v[k])
                return lw_fail(l, ERR_SHAPE,
                               "kernel_shape does not match the weight");
            else
                kernel[k] = clamp_attr(v[k]);
    }
    for (int k = 0; k < nsp; k++)
        if (kernel[k] <= 0)
            return lw_fail(l, ERR_FORMAT, "missing or invalid kernel_shape");
    if ((n = attr_ints(l->n, "strides", v, 3)) >= 0) {
        if (n != nsp)
            return lw_fail(l, ERR_FORMAT, "strides has the wrong length");
        for (int k = 0; k < nsp; k++)
            stride[k] = clamp_attr(v[k]);
    }
    if ((n = attr_ints(l->n, "dilations", v, 3)) >= 0) {
        if (n != nsp)
            return lw_fail(l, ERR_FORMAT, "dilations has the wrong length");
        for (int k = 0; k < nsp; k++)
            dil[k] = clamp_attr(v[k]);
    }
    if ((n = attr_ints(l->n, "pads", v, 6)) >= 0) {
        if (n != 2 * nsp)
            return lw_fail(l, ERR_FORMAT, "pads has the wrong length");
        for (int k = 0; k < nsp; k++) {
            lo[k] = clamp_attr(v[k]);
            hi[k] = clamp_attr(v[nsp + k]);
        }
    }
    if (out_pad && (n = attr_ints(l->n, "output_padding", v, 3)) >= 0) {
        if (n != nsp)
            return lw_fail(l, ERR_FORMAT,
                           "output_padding has the wrong length");
        for (int k = 0; k < nsp; k++)
            out_pad[k] = clamp_attr(v[k]);
    }
    /* Attributes were int64 in the file: bound them before they meet int
     * arithmetic (a corrupted file must give an error, not overflow). */
    for (int k = 0; k < nsp; k++)
        if (kernel[k] > ATTR_MAX || stride[k] < 1 || stride[k] > ATTR_MAX ||
            dil[k] < 1 || dil[k] > ATTR_MAX || lo[k] < 0 ||
            lo[k] > ATTR_MAX || hi[k] < 0 || hi[k] > ATTR_MAX ||
            (out_pad && (out_pad[k] < 0 || out_pad[k] > ATTR_MAX)))
            return lw_fail(l, ERR_FORMAT,
                           "stride/dilation/pad/kernel out of range");
    const char *ap = attr_s(l->n, "auto_pad", "NOTSET", buf, sizeof buf);
    int64_t oshape[5];
    int no = transpose ? attr_ints(l->n, "output_shape", oshape, 5) : -1;
    int upper = !strcmp(ap, "SAME_UPPER");
    if (!strcmp(ap, "VALID")) {
        for (int k = 0; k < nsp; k++)
            lo[k] = hi[k] = 0;
    } else if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER") ||
               no >= 0) {
        if (strcmp(ap, "NOTSET") && strcmp(ap, "SAME_UPPER") &&
            strcmp(ap, "SAME_LOWER"))
            goto bad_ap;
        if (no >= 0 && no != nsp && no != nsp + 2)
            return lw_fail(l, ERR_FORMAT,
                           "output_shape has the wrong length");
        for (int k = 0; k < nsp; k++) {
            int64_t ek = (int64_t)(kernel[k] - 1) * dil[k] + 1, total;
            if (transpose) {
                /* ONNX ConvTranspose: pads derived from the wanted size. */
                int64_t want =
                    no >= 0 ? oshape[no - nsp + k] : in_sp[k] * stride[k];
                if (want < 1 || want > ONNX_MAX_DIM)
                    return lw_fail(l, ERR_FORMAT,
                                   "output_shape out of range");
                total = (int64_t)stride[k] * (in_sp[k] - 1) + out_pad[k] +
                        ek - want;
                if (total < 0) {
                    out_pad[k] += (int)-total;
                    total = 0;
                }
                lo[k] = (int)(upper ? total / 2 : total - total / 2);
                hi[k] = (int)(total - lo[k]);
            } else {
                /* SAME: output = ceil(in / stride); computed at the import
                 * shape (independent of it when stride is 1). */
                int64_t out = (in_sp[k] + stride[k] - 1) / stride[k];
                total = (out - 1) * stride[k] + ek - in_sp[k];
                if (total < 0) total = 0;
                lo[k] = (int)(upper ? total / 2 : total - total / 2);
                hi[k] = (int)(total - lo[k]);
            }
        }
    } else if (strcmp(ap, "NOTSET")) {
        goto bad_ap;
    }
    return 0;
bad_ap:
    return onnx_node_fail(l->c, l->idx, ERR_UNSUPPORTED,
                          "unsupported auto_pad '%s'", sl_esc(ap).s);
}

int onnx_lower_conv(Lw *l, int transpose)
{
    int x, w, b = -1, rc;
    if ((rc = lw_act_value(l, 0, &x))) return rc;
    if ((rc = weight_of(l, 1, &w))) return rc;
    if (l->n_in > 2 && l->in[2] >= 0 && (rc = weight_of(l, 2, &b))) return rc;
    Graph *g = l->c->g;
    const Shape *ws = &g->values[w].shape, *xs = &g->values[x].shape;
    int nsp = ws->ndim - 2;
    if (nsp < 1 || nsp > 3 || xs->ndim != nsp + 2)
        return lw_fail(l, ERR_SHAPE,
                       "weight rank does not match the input rank");
    Node nd = {0};
    ConvParams *p = &nd.p.conv;
    int64_t in_sp[3];
    nd.op = transpose ? OP_CONV_TRANSPOSE : OP_CONV;
    p->nsp = nsp;
    p->group = (int)attr_i(l->n, "group", 1);
    if (p->group < 1) return lw_fail(l, ERR_FORMAT, "group must be >= 1");
    for (int k = 0; k < nsp; k++) {
        p->kernel[k] = (int)ws->d[2 + k];
        in_sp[k] = xs->d[2 + k];
    }
    rc = conv_geometry(l, nsp, in_sp, p->kernel, p->stride, p->dilation,
                       p->pad_lo, p->pad_hi, transpose,
                       transpose ? p->out_pad : NULL);
    if (rc) return rc;
    nd.n_in = b >= 0 ? 3 : 2;
    nd.in[0] = x;
    nd.in[1] = w;
    nd.in[2] = b;
    return lw_emit(l, &nd, NULL);
}

int onnx_lower_pool(Lw *l, int is_max)
{
    int x, rc;
    if ((rc = lw_act_value(l, 0, &x))) return rc;
    if (l->n->n_output > 1 && l->n->output[1] && *l->n->output[1] &&
        lw_consumers(l->c, l->n->output[1]))
        return lw_fail(l, ERR_UNSUPPORTED,
                       "MaxPool indices output is not supported");
    const Shape *xs = &l->c->g->values[x].shape;
    Node nd = {0};
    PoolParams *p = &nd.p.pool;
    int64_t in_sp[3];
    int nsp = xs->ndim - 2;
    if (nsp < 1 || nsp > 3)
        return lw_fail(l, ERR_SHAPE, "pooling input must be 3D to 5D");
    nd.op = is_max ? OP_MAX_POOL : OP_AVG_POOL;
    p->nsp = nsp;
    for (int k = 0; k < nsp; k++)
        in_sp[k] = xs->d[2 + k];
    rc = conv_geometry(l, nsp, in_sp, p->kernel, p->stride, p->dilation,
                       p->pad_lo, p->pad_hi, 0, NULL);
    if (rc) return rc;
    p->ceil_mode = (int)attr_i(l->n, "ceil_mode", 0);
    p->count_include_pad = (int)attr_i(l->n, "count_include_pad", 0);
    nd.n_in = 1;
    nd.in[0] = x;
    return lw_emit(l, &nd, NULL);
}

/* ---- normalisation ---- */

int onnx_lower_instance_norm(Lw *l, int unused)
{
    (void)unused;
    int x, s, b, rc;
    if ((rc = lw_act_value(l, 0, &x)) || (rc = weight_of(l, 1, &s)) ||
        (rc = weight_of(l, 2, &b)))
        return rc;
    Node nd = {0};
    nd.op = OP_INSTANCE_NORM;
    nd.p.norm.eps = attr_f(l->n, "epsilon", 1e-5f);
    nd.n_in = 3;
    nd.in[0] = x;
    nd.in[1] = s;
    nd.in[2] = b;
    return lw_emit(l, &nd, NULL);
}

/* BatchNormalization on a Reshape view [1, N*C, ...] of [N, C, ...] with
 * batch statistics: per-(n, c) statistics, i.e. InstanceNorm. */
static int lower_bn_as_instance_norm(Lw *l, const Sym *vs, float eps)
{
    OnnxCtx *c = l->c;
    Graph *g = c->g;
    const Shape *src = &g->values[vs->value].shape;
    int64_t N = src->d[0], C = src->d[1], sp = 1, vsp = 1;
    for (int k = 2; k < src->ndim; k++)
        sp *= src->d[k];
    for (int k = 2; k < vs->ndim; k++)
        vsp *= vs->dims[k];
    if (src->ndim < 3 || vs->ndim < 2 || vs->dims[0] != 1 ||
        vs->dims[1] != N * C || vsp != sp)
        return lw_fail(
            l, ERR_UNSUPPORTED,
            "BatchNormalization on a reshaped tensor that is not the "
            "instance-norm pattern [1, N*C, ...]");
    const OTensor *sc = lw_const(l, 1), *bi = lw_const(l, 2);
    if (!sc || !bi || sc->numel != N * C || bi->numel != N * C)
        return lw_fail(l, ERR_UNSUPPORTED,
                       "BatchNormalization scale/bias must be constants of "
                       "N*C elements");
    Shape cs = {1, {C}};
    float *sd = sl_alloc(((size_t)C + 1) * sizeof(float));
    float *bd = sl_alloc(((size_t)C + 1) * sizeof(float));
    int si = -1, bvi = -1, rc;
    char name[256];
    if (!sd || !bd) {
        sl_free(sd);
        sl_free(bd);
        return lw_fail(l, ERR_NOMEM, "out of memory");
    }
    for (int64_t k = 0; k < N * C; k++) {
        float a = (float)ot_get(sc, k), bb = (float)ot_get(bi, k);
        if (k < C) {
            sd[k] = a;
            bd[k] = bb;
        } else if (a != sd[k % C] || bb != bd[k % C]) {
            sl_free(sd);
            sl_free(bd);
            return lw_fail(l, ERR_UNSUPPORTED,
                           "instance-norm pattern with per-sample scale");
        }
    }
    snprintf(name, sizeof name, "%s.scale", onnx_node_name(l->n));
    si = graph_add_value(g, name, &cs, sd);
    if (si < 0) {
        sl_free(bd);
        return si;
    }
    snprintf(name, sizeof name, "%s.bias", onnx_node_name(l->n));
    bvi = graph_add_value(g, name, &cs, bd);
    if (bvi < 0) return bvi;
    Node nd = {0};
    nd.op = OP_INSTANCE_NORM;
    nd.p.norm.eps = eps;
    nd.n_in = 3;
    nd.in[0] = vs->value;
    nd.in[1] = si;
    nd.in[2] = bvi;
    int64_t vd[OT_MAX_DIMS];
    int vn = vs->ndim;
    memcpy(vd, vs->dims, sizeof vd);
    int out;
    rc = lw_emit(l, &nd, &out);
    if (rc) return rc;
    /* The ONNX output still has the view's layout until reshaped back. */
    Sym *o = &c->syms[c->n_syms - 1];
    o->kind = SYM_VIEW;
    o->vkind = VIEW_RESHAPE;
    o->ndim = vn;
    memcpy(o->dims, vd, sizeof vd);
    o->node = l->idx;
    return 0;
}

int onnx_lower_batch_norm(Lw *l, int unused)
{
    (void)unused;
    OnnxCtx *c = l->c;
    float eps = attr_f(l->n, "epsilon", 1e-5f);
    int training = attr_i(l->n, "training_mode", 0) != 0;
    /* Before opset 14 the training form is the one with extra outputs. */
    for (size_t k = 1; k < l->n->n_output; k++)
        if (l->n->output[k] && *l->n->output[k]) training = 1;
    if (l->in[0] >= 0 && c->syms[l->in[0]].kind == SYM_VIEW) {
        Sym vs = c->syms[l->in[0]];
        if (vs.vkind == VIEW_RESHAPE && training)
            return lower_bn_as_instance_norm(l, &vs, eps);
    }
    int x, w[4], rc;
    if ((rc = lw_act_value(l, 0, &x))) return rc;
    for (int k = 0; k < 4; k++)
        if ((rc = weight_of(l, k + 1, &w[k]))) return rc;
    for (size_t k = 1; k < l->n->n_output; k++)
        if (l->n->output[k] && *l->n->output[k] &&
            lw_consumers(c, l->n->output[k]))
            return lw_fail(
                l, ERR_UNSUPPORTED,
                "BatchNormalization running-statistics outputs are used");
    Node nd = {0};
    nd.op = OP_BATCH_NORM;
    nd.p.norm.eps = eps;
    nd.p.norm.momentum = attr_f(l->n, "momentum", 0.9f);
    nd.p.norm.use_batch_stats = training;
    nd.n_in = 5;
    nd.in[0] = x;
    for (int k = 0; k < 4; k++)
        nd.in[k + 1] = w[k];
    return lw_emit(l, &nd, NULL);
}

/* ---- activations, softmax, concat ---- */

/* Elementwise op; on a view it runs on the source and keeps the view. */
int onnx_lower_unary(Lw *l, int op)
{
    OnnxCtx *c = l->c;
    if (l->in[0] < 0 || c->syms[l->in[0]].kind == SYM_CONST)
        return lw_fail(l, ERR_FORMAT, "missing activation input");
    Sym vs = c->syms[l->in[0]];
    Node nd = {0};
    nd.op = (OpType)op;
    nd.n_in = 1;
    nd.in[0] = vs.value;
    if (op == OP_LEAKY_RELU) nd.p.act.alpha = attr_f(l->n, "alpha", 0.01f);
    int rc = lw_emit(l, &nd, NULL);
    if (rc || vs.kind != SYM_VIEW) return rc;
    Sym *o = &c->syms[c->n_syms - 1];
    char *nm = o->name;
    int v = o->value;
    *o = vs;
    o->name = nm;
    o->value = v;
    return 0;
}

int onnx_lower_softmax(Lw *l, int unused)
{
    (void)unused;
    OnnxCtx *c = l->c;
    if (l->in[0] < 0 || c->syms[l->in[0]].kind == SYM_CONST)
        return lw_fail(l, ERR_FORMAT, "missing activation input");
    Sym vs = c->syms[l->in[0]];
    int nd_, axis;
    int64_t dims[OT_MAX_DIMS];
    int rc = lw_act_dims(l, 0, &nd_, dims);
    if (rc) return rc;
    int64_t a = attr_i(l->n, "axis", c->opset >= 13 ? -1 : 1);
    if (a < 0) a += nd_;
    if (a < 0 || a >= nd_)
        return lw_fail(l, ERR_FORMAT, "Softmax axis out of range");
    axis = (int)a;
    Node nd = {0};
    nd.op = OP_SOFTMAX;
    nd.n_in = 1;
    nd.in[0] = vs.value;
    if (vs.kind == SYM_VIEW) {
        /* Softmax on a transposed view over one axis: the same softmax on
         * the source over the axis it came from (torch, opset < 13). */
        if (vs.vkind != VIEW_TRANSPOSE || (c->opset < 13 && axis != nd_ - 1))
            return lw_fail(l, ERR_UNSUPPORTED,
                           "Softmax on a reshaped tensor is not supported");
        nd.p.softmax.axis = vs.perm[axis];
        nd.p.softmax.flatten = 0;
    } else {
        nd.p.softmax.axis = axis;
        /* Opset < 13: one softmax over all dims from axis to the end. */
        nd.p.softmax.flatten = c->opset < 13 && axis < nd_ - 1;
    }
    rc = lw_emit(l, &nd, NULL);
    if (rc || vs.kind != SYM_VIEW) return rc;
    Sym *o = &c->syms[c->n_syms - 1];
    char *nm = o->name;
    int v = o->value;
    *o = vs;
    o->name = nm;
    o->value = v;
    o->node = l->idx;
    return 0;
}

int onnx_lower_concat(Lw *l, int unused)
{
    (void)unused;
    Node nd = {0};
    int rc;
    if (l->n_in < 1 || l->n_in > SL_MAX_INPUTS)
        return onnx_node_fail(l->c, l->idx, ERR_UNSUPPORTED,
                              "Concat of %d inputs (at most %d)", l->n_in,
                              SL_MAX_INPUTS);
    nd.op = OP_CONCAT;
    nd.n_in = l->n_in;
    for (int j = 0; j < l->n_in; j++)
        if ((rc = lw_act_value(l, j, &nd.in[j]))) return rc;
    int rank = l->c->g->values[nd.in[0]].shape.ndim;
    int64_t a = attr_i(l->n, "axis", 1);
    if (a < 0) a += rank;
    if (a < 0 || a >= rank)
        return lw_fail(l, ERR_FORMAT, "Concat axis out of range");
    nd.p.concat.axis = (int)a;
    return lw_emit(l, &nd, NULL);
}

/* ---- the driver ---- */

int onnx_lower_shape(Lw *l, int unused)
{
    (void)unused;
    OnnxCtx *c = l->c;
    int nd;
    int64_t dims[OT_MAX_DIMS];
    int rc = lw_act_dims(l, 0, &nd, dims);
    if (rc) return rc;
    int64_t st = attr_i(l->n, "start", 0), en = attr_i(l->n, "end", nd);
    if (st < 0) st += nd;
    if (en < 0) en += nd;
    st = st < 0 ? 0 : st > nd ? nd : st;
    en = en < st ? st : en > nd ? nd : en;
    int64_t len = en - st;
    OTensor t;
    rc = ot_alloc(&t, 1, &len, 1);
    if (rc) return lw_fail(l, rc, "out of memory");
    for (int64_t k = 0; k < len; k++)
        t.i[k] = dims[st + k];
    rc = sym_add_const(c, l->n->output[0], &t, l->idx);
    return rc < 0 ? rc : 0;
}

/* Identity and Dropout (inference: the identity) on an activation. */
int onnx_lower_identity(Lw *l, int unused)
{
    (void)unused;
    if (l->n->n_output > 1 && l->n->output[1] && *l->n->output[1] &&
        lw_consumers(l->c, l->n->output[1]))
        return lw_fail(l, ERR_UNSUPPORTED,
                       "Dropout mask output is not supported");
    return lw_alias(l, l->in[0]);
}
