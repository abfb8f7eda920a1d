/* Constant folding of the glue exporters emit around the real network:
 * Constant, Shape, Gather, Unsqueeze/Squeeze, Cast, Concat, Slice,
 * elementwise integer/float arithmetic, Range, ConstantOfShape, Reshape,
 * Transpose on constants.  Also the attribute helpers and the node error
 * line shared with onnx_lower.c. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "onnx_internal.h"
#include "runtime/common.h"

/* Largest constant folding may create: shape glue is tiny, and this stops
 * a crafted ConstantOfShape from allocating gigabytes. */
#define FOLD_MAX_NUMEL ((int64_t)1 << 24)

/* ---- attributes and messages ---- */

const char *onnx_node_name(const Onnx__NodeProto *n)
{
    if (n->name && *n->name) return n->name;
    if (n->n_output && n->output[0] && *n->output[0]) return n->output[0];
    return "?";
}

int onnx_node_fail(OnnxCtx *c, int idx, int code, const char *fmt, ...)
{
    char msg[600];
    const Onnx__NodeProto *n = c->gp->node[idx];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The node's name and type come from the file: escaped.  Callers
     * escape the names they put in msg the same way. */
    sl_error("%s at node '%s' (#%d, %s) in '%s'", msg,
             sl_esc(onnx_node_name(n)).s, idx, sl_esc(n->op_type).s, c->path);
    return code;
}

const Onnx__AttributeProto *attr_find(const Onnx__NodeProto *n,
                                      const char *name)
{
    for (size_t k = 0; k < n->n_attribute; k++)
        if (n->attribute[k]->name && !strcmp(n->attribute[k]->name, name))
            return n->attribute[k];
    return NULL;
}

int64_t attr_i(const Onnx__NodeProto *n, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    return a ? a->i : def;
}

float attr_f(const Onnx__NodeProto *n, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    return a ? a->f : def;
}

int attr_ints(const Onnx__NodeProto *n, const char *name, int64_t *out,
              int max)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    if (!a) return -1;
    if (a->n_ints > (size_t)max) return -2;
    for (size_t k = 0; k < a->n_ints; k++)
        out[k] = a->ints[k];
    return (int)a->n_ints;
}

const char *attr_s(const Onnx__NodeProto *n, const char *name,
                   const char *def, char *buf, size_t len)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    if (!a || !a->has_s) return def;
    size_t m = a->s.len < len - 1 ? a->s.len : len - 1;
    if (m) memcpy(buf, a->s.data, m); /* an empty string may have no data */
    buf[m] = '\0';
    return buf;
}

/* ---- helpers ---- */

static int norm_axis(int64_t axis, int rank, int *out)
{
    if (axis < -rank || axis >= rank) return -1;
    *out = (int)(axis < 0 ? axis + rank : axis);
    return 0;
}

int onnx_reshape_dims(const int64_t *in, int in_nd, const OTensor *shape,
                      int allowzero, int64_t *out, int *out_nd)
{
    int64_t known = 1, in_numel = 1;
    int neg = -1;
    if (shape->ndim > 1 || shape->numel > OT_MAX_DIMS) return -1;
    for (int k = 0; k < in_nd; k++)
        in_numel *= in[k];
    *out_nd = (int)shape->numel;
    for (int k = 0; k < *out_nd; k++) {
        int64_t v = ot_geti(shape, k);
        if (v == 0 && !allowzero) {
            if (k >= in_nd) return -1;
            v = in[k];
        }
        if (v == -1) {
            if (neg >= 0) return -1;
            neg = k;
            v = 1;
        } else if (v < 0) {
            return -1;
        }
        /* Bound before multiplying: the shape may come from a corrupted
         * constant. */
        if (v > OT_MAX_DIM_VALUE || (v && known > ((int64_t)1 << 62) / v))
            return -1;
        out[k] = v;
        known *= v;
    }
    if (neg >= 0) {
        if (known == 0 || in_numel % known) return -1;
        out[neg] = in_numel / known;
    } else if (known != in_numel) {
        return -1;
    }
    return 0;
}

/* Row-major strides of dims. */
static void strides_of(const int64_t *dims, int nd, int64_t *st)
{
    int64_t s = 1;
    for (int k = nd - 1; k >= 0; k--) {
        st[k] = s;
        s *= dims[k];
    }
}

static void ot_set(OTensor *t, int64_t k, double v)
{
    if (t->is_int)
        t->i[k] = ot_d2i(v);
    else
        t->f[k] = (float)v;
}

/* Copy element ks of a into element kd of b (types may differ). */
static void ot_copy_el(OTensor *b, int64_t kd, const OTensor *a, int64_t ks)
{
    if (b->is_int)
        b->i[kd] = ot_geti(a, ks);
    else
        b->f[kd] = (float)ot_get(a, ks);
}

static int new_out(OnnxCtx *c, int idx, OTensor *t, int ndim,
                   const int64_t *dims, int is_int)
{
    int64_t n = 1;
    for (int k = 0; k < ndim; k++) {
        if (dims[k] < 0)
            return onnx_node_fail(c, idx, ERR_SHAPE,
                                  "negative dim in a folded constant");
        n = dims[k] && n > FOLD_MAX_NUMEL / dims[k] ? FOLD_MAX_NUMEL + 1
                                                    : n * dims[k];
    }
    if (ndim > OT_MAX_DIMS || n > FOLD_MAX_NUMEL)
        return onnx_node_fail(
            c, idx, ERR_UNSUPPORTED,
            "folded constant too large (%d dims, %lld elements)", ndim,
            (long long)n);
    int rc = ot_alloc(t, ndim, dims, is_int);
    return rc ? onnx_node_fail(c, idx, rc,
                               "cannot allocate a folded constant")
              : 0;
}

/* ---- the folders ---- */

typedef struct {
    OnnxCtx *c;
    int idx;
    const Onnx__NodeProto *n;
    const OTensor *in[8]; /* NULL for absent optional inputs */
    int n_in;
    OTensor out;
} Fold;

static int bad(Fold *f, const char *what)
{
    return onnx_node_fail(f->c, f->idx, ERR_FORMAT, "%s", what);
}

static int fold_constant(Fold *f)
{
    const Onnx__AttributeProto *a;
    if ((a = attr_find(f->n, "value")) && a->t)
        return ot_from_proto(f->c, a->t, &f->out);
    if ((a = attr_find(f->n, "value_float")) ||
        (a = attr_find(f->n, "value_int"))) {
        int is_int = !strcmp(a->name, "value_int");
        int rc = new_out(f->c, f->idx, &f->out, 0, NULL, is_int);
        if (!rc) ot_set(&f->out, 0, is_int ? (double)a->i : (double)a->f);
        return rc;
    }
    if ((a = attr_find(f->n, "value_floats")) ||
        (a = attr_find(f->n, "value_ints"))) {
        int is_int = !strcmp(a->name, "value_ints");
        int64_t d = is_int ? (int64_t)a->n_ints : (int64_t)a->n_floats;
        int rc = new_out(f->c, f->idx, &f->out, 1, &d, is_int);
        for (int64_t k = 0; !rc && k < d; k++)
            ot_set(&f->out, k,
                   is_int ? (double)a->ints[k] : (double)a->floats[k]);
        return rc;
    }
    return onnx_node_fail(f->c, f->idx, ERR_UNSUPPORTED,
                          "Constant without a tensor/float/int value");
}

static int fold_copy(Fold *f, const OTensor *a, int ndim, const int64_t *dims)
{
    int rc = new_out(f->c, f->idx, &f->out, ndim, dims, a->is_int);
    for (int64_t k = 0; !rc && k < a->numel; k++)
        ot_copy_el(&f->out, k, a, k);
    return rc;
}

static int fold_cast(Fold *f)
{
    int64_t to = attr_i(f->n, "to", 1);
    int is_int = !(to == 1 || to == 10 || to == 11 || to == 16);
    const OTensor *a = f->in[0];
    int rc = new_out(f->c, f->idx, &f->out, a->ndim, a->dims, is_int);
    for (int64_t k = 0; !rc && k < a->numel; k++) {
        double v = ot_get(a, k);
        if (to == 9) v = v != 0; /* bool */
        ot_set(&f->out, k, v);
    }
    return rc;
}

static int fold_shape(Fold *f)
{
    const OTensor *a = f->in[0];
    int64_t st = attr_i(f->n, "start", 0), en = attr_i(f->n, "end", a->ndim);
    if (st < 0) st += a->ndim;
    if (en < 0) en += a->ndim;
    st = st < 0 ? 0 : st > a->ndim ? a->ndim : st;
    en = en < st ? st : en > a->ndim ? a->ndim : en;
    int64_t d = en - st;
    int rc = new_out(f->c, f->idx, &f->out, 1, &d, 1);
    for (int64_t k = 0; !rc && k < d; k++)
        f->out.i[k] = a->dims[st + k];
    return rc;
}

static int fold_gather(Fold *f)
{
    const OTensor *a = f->in[0], *ix = f->in[1];
    int axis, nd = 0;
    int64_t dims[OT_MAX_DIMS], st[OT_MAX_DIMS];
    if (!ix || !ix->is_int ||
        norm_axis(attr_i(f->n, "axis", 0), a->ndim, &axis))
        return bad(f, "Gather with a bad axis or non-integer indices");
    if (a->ndim - 1 + ix->ndim > OT_MAX_DIMS)
        return bad(f, "Gather result rank too large");
    for (int k = 0; k < axis; k++)
        dims[nd++] = a->dims[k];
    for (int k = 0; k < ix->ndim; k++)
        dims[nd++] = ix->dims[k];
    for (int k = axis + 1; k < a->ndim; k++)
        dims[nd++] = a->dims[k];
    int rc = new_out(f->c, f->idx, &f->out, nd, dims, a->is_int);
    if (rc) return rc;
    strides_of(a->dims, a->ndim, st);
    int64_t outer = 1, inner = st[axis], m = ix->numel, o = 0;
    for (int k = 0; k < axis; k++)
        outer *= a->dims[k];
    for (int64_t p = 0; p < outer; p++)
        for (int64_t j = 0; j < m; j++) {
            int64_t q = ix->i[j] < 0 ? ix->i[j] + a->dims[axis] : ix->i[j];
            if (q < 0 || q >= a->dims[axis])
                return bad(f, "Gather index out of range");
            for (int64_t r = 0; r < inner; r++)
                ot_copy_el(&f->out, o++, a,
                           p * a->dims[axis] * inner + q * inner + r);
        }
    return 0;
}

/* Axes from the attribute (old opsets) or the second input (opset 13+). */
static int get_axes(Fold *f, int64_t *axes, int max)
{
    if (f->n_in > 1 && f->in[1]) {
        if (f->in[1]->numel > max) return -2;
        for (int64_t k = 0; k < f->in[1]->numel; k++)
            axes[k] = ot_geti(f->in[1], k);
        return (int)f->in[1]->numel;
    }
    return attr_ints(f->n, "axes", axes, max);
}

static int fold_unsqueeze(Fold *f)
{
    const OTensor *a = f->in[0];
    int64_t axes[OT_MAX_DIMS], dims[OT_MAX_DIMS];
    int na = get_axes(f, axes, OT_MAX_DIMS), r;
    if (na < 0 || a->ndim + na > OT_MAX_DIMS)
        return bad(f, "Unsqueeze without valid axes");
    int nd = a->ndim + na;
    char is_new[OT_MAX_DIMS] = {0};
    for (int k = 0; k < na; k++) {
        if (norm_axis(axes[k], nd, &r) || is_new[r])
            return bad(f, "Unsqueeze axis out of range");
        is_new[r] = 1;
    }
    for (int k = 0, j = 0; k < nd; k++)
        dims[k] = is_new[k] ? 1 : a->dims[j++];
    return fold_copy(f, a, nd, dims);
}

static int fold_squeeze(Fold *f)
{
    const OTensor *a = f->in[0];
    int64_t axes[OT_MAX_DIMS], dims[OT_MAX_DIMS];
    int na = get_axes(f, axes, OT_MAX_DIMS), r, nd = 0;
    char drop[OT_MAX_DIMS] = {0};
    if (na == -2) return bad(f, "Squeeze with too many axes");
    for (int k = 0; k < na; k++) {
        if (norm_axis(axes[k], a->ndim, &r) || a->dims[r] != 1)
            return bad(f, "Squeeze of a dim that is not 1");
        drop[r] = 1;
    }
    for (int k = 0; k < a->ndim; k++)
        if (!(na < 0 ? a->dims[k] == 1 : drop[k])) dims[nd++] = a->dims[k];
    return fold_copy(f, a, nd, dims);
}

static int fold_concat(Fold *f)
{
    const OTensor *a = f->in[0];
    int axis, is_int = 1;
    if (norm_axis(attr_i(f->n, "axis", 0), a->ndim, &axis))
        return bad(f, "Concat axis out of range");
    int64_t dims[OT_MAX_DIMS];
    memcpy(dims, a->dims, sizeof dims);
    dims[axis] = 0;
    for (int j = 0; j < f->n_in; j++) {
        const OTensor *b = f->in[j];
        if (!b || b->ndim != a->ndim)
            return bad(f, "Concat of constants with different ranks");
        for (int k = 0; k < a->ndim; k++)
            if (k != axis && b->dims[k] != a->dims[k])
                return bad(f, "Concat of constants with different dims");
        dims[axis] += b->dims[axis];
        is_int &= b->is_int;
    }
    int rc = new_out(f->c, f->idx, &f->out, a->ndim, dims, is_int);
    if (rc) return rc;
    int64_t outer = 1, inner = 1, o = 0;
    for (int k = 0; k < axis; k++)
        outer *= a->dims[k];
    for (int k = axis + 1; k < a->ndim; k++)
        inner *= a->dims[k];
    for (int64_t p = 0; p < outer; p++)
        for (int j = 0; j < f->n_in; j++) {
            int64_t blk = f->in[j]->dims[axis] * inner;
            for (int64_t r = 0; r < blk; r++)
                ot_copy_el(&f->out, o++, f->in[j], p * blk + r);
        }
    return 0;
}

static int fold_slice(Fold *f)
{
    const OTensor *a = f->in[0];
    int64_t starts[OT_MAX_DIMS], ends[OT_MAX_DIMS], axes[OT_MAX_DIMS],
        steps[OT_MAX_DIMS];
    int ns;
    if (f->c->opset < 10) {
        ns = attr_ints(f->n, "starts", starts, OT_MAX_DIMS);
        if (ns < 0 || attr_ints(f->n, "ends", ends, OT_MAX_DIMS) != ns)
            return bad(f, "Slice without starts/ends");
        if (attr_ints(f->n, "axes", axes, OT_MAX_DIMS) < 0)
            for (int k = 0; k < ns; k++)
                axes[k] = k;
        for (int k = 0; k < ns; k++)
            steps[k] = 1;
    } else {
        if (f->n_in < 3 || !f->in[1] || !f->in[2])
            return bad(f, "Slice without starts/ends");
        ns = (int)f->in[1]->numel;
        if (ns > OT_MAX_DIMS || f->in[2]->numel != ns)
            return bad(f, "Slice starts/ends mismatch");
        for (int k = 0; k < ns; k++) {
            starts[k] = ot_geti(f->in[1], k);
            ends[k] = ot_geti(f->in[2], k);
            axes[k] = f->n_in > 3 && f->in[3] && f->in[3]->numel == ns
                          ? ot_geti(f->in[3], k)
                          : k;
            steps[k] = f->n_in > 4 && f->in[4] && f->in[4]->numel == ns
                           ? ot_geti(f->in[4], k)
                           : 1;
        }
    }
    int64_t lo[OT_MAX_DIMS], step[OT_MAX_DIMS], dims[OT_MAX_DIMS],
        st[OT_MAX_DIMS];
    for (int k = 0; k < a->ndim; k++) {
        lo[k] = 0;
        step[k] = 1;
        dims[k] = a->dims[k];
    }
    for (int k = 0; k < ns; k++) {
        int ax;
        if (norm_axis(axes[k], a->ndim, &ax) || steps[k] == 0 ||
            steps[k] > OT_MAX_DIM_VALUE || steps[k] < -OT_MAX_DIM_VALUE)
            return bad(f, "Slice axis/step invalid");
        int64_t d = a->dims[ax], s = starts[k], e = ends[k];
        if (s < 0) s += d;
        if (e < 0) e += d;
        if (steps[k] > 0) {
            s = s < 0 ? 0 : s > d ? d : s;
            e = e < 0 ? 0 : e > d ? d : e;
            dims[ax] = e > s ? (e - s + steps[k] - 1) / steps[k] : 0;
        } else {
            s = s < 0 ? -1 : s > d - 1 ? d - 1 : s;
            e = e < -1 ? -1 : e > d - 1 ? d - 1 : e;
            dims[ax] = s > e ? (s - e - steps[k] - 1) / -steps[k] : 0;
        }
        lo[ax] = s;
        step[ax] = steps[k];
    }
    int rc = new_out(f->c, f->idx, &f->out, a->ndim, dims, a->is_int);
    if (rc) return rc;
    strides_of(a->dims, a->ndim, st);
    for (int64_t o = 0; o < f->out.numel; o++) {
        int64_t rem = o, src = 0;
        for (int k = a->ndim - 1; k >= 0; k--) {
            int64_t i = dims[k] ? rem % dims[k] : 0;
            rem = dims[k] ? rem / dims[k] : 0;
            src += (lo[k] + i * step[k]) * st[k];
        }
        ot_copy_el(&f->out, o, a, src);
    }
    return 0;
}

typedef enum {
    BIN_ADD,
    BIN_SUB,
    BIN_MUL,
    BIN_DIV,
    BIN_POW,
    BIN_EQ,
    BIN_LT,
    BIN_GT,
    BIN_MIN,
    BIN_MAX,
    BIN_MOD
} BinOp;

static double bin_apply(BinOp op, double x, double y, int is_int)
{
    switch (op) {
    case BIN_ADD:
        return x + y;
    case BIN_SUB:
        return x - y;
    case BIN_MUL:
        return x * y;
    case BIN_DIV:
        if (is_int) return y != 0 ? (double)((int64_t)x / (int64_t)y) : 0;
        return x / y;
    case BIN_POW:
        return pow(x, y);
    case BIN_EQ:
        return x == y;
    case BIN_LT:
        return x < y;
    case BIN_GT:
        return x > y;
    case BIN_MIN:
        return x < y ? x : y;
    case BIN_MAX:
        return x > y ? x : y;
    case BIN_MOD:
        return y != 0 ? x - y * floor(x / y) : 0;
    }
    return 0;
}

/* Numpy-broadcast binary op over two constants. */
static int fold_binary(Fold *f, BinOp op)
{
    const OTensor *a = f->in[0], *b = f->in[1];
    if (!a || !b) return bad(f, "binary op with a missing input");
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t dims[OT_MAX_DIMS], sa[OT_MAX_DIMS], sb[OT_MAX_DIMS],
        ta[OT_MAX_DIMS], tb[OT_MAX_DIMS];
    int64_t da[OT_MAX_DIMS], db[OT_MAX_DIMS];
    for (int k = 0; k < nd; k++) {
        int ka = k - (nd - a->ndim), kb = k - (nd - b->ndim);
        da[k] = ka >= 0 ? a->dims[ka] : 1;
        db[k] = kb >= 0 ? b->dims[kb] : 1;
        if (da[k] != db[k] && da[k] != 1 && db[k] != 1)
            return bad(f, "constants do not broadcast");
        dims[k] = da[k] == 1 ? db[k] : da[k];
    }
    int cmp = op == BIN_EQ || op == BIN_LT || op == BIN_GT;
    int is_int = a->is_int && b->is_int;
    int rc = new_out(f->c, f->idx, &f->out, nd, dims, is_int || cmp);
    if (rc) return rc;
    strides_of(da, nd, ta);
    strides_of(db, nd, tb);
    for (int k = 0; k < nd; k++) {
        sa[k] = da[k] == 1 ? 0 : ta[k];
        sb[k] = db[k] == 1 ? 0 : tb[k];
    }
    for (int64_t o = 0; o < f->out.numel; o++) {
        int64_t rem = o, ia = 0, ib = 0;
        for (int k = nd - 1; k >= 0; k--) {
            int64_t i = rem % dims[k];
            rem /= dims[k];
            ia += i * sa[k];
            ib += i * sb[k];
        }
        if (is_int && !cmp && op != BIN_POW) {
            /* Shape arithmetic: exact in int64.  Wrap instead of overflow
             * (corrupted constants only), and skip INT64_MIN / -1. */
            int64_t x = a->i[ia], y = b->i[ib], r = 0;
            uint64_t ux = (uint64_t)x, uy = (uint64_t)y;
            int ok_div = y != 0 && !(y == -1 && x == INT64_MIN);
            switch (op) {
            case BIN_ADD:
                r = (int64_t)(ux + uy);
                break;
            case BIN_SUB:
                r = (int64_t)(ux - uy);
                break;
            case BIN_MUL:
                r = (int64_t)(ux * uy);
                break;
            case BIN_DIV:
                r = ok_div ? x / y : 0;
                break;
            case BIN_MIN:
                r = x < y ? x : y;
                break;
            case BIN_MAX:
                r = x > y ? x : y;
                break;
            case BIN_MOD: /* Python's sign rule (ONNX Mod, fmod=0) */
                r = ok_div ? x % y : 0;
                if (r != 0 && (r < 0) != (y < 0)) r += y;
                break;
            default:
                break;
            }
            f->out.i[o] = r;
        } else {
            ot_set(&f->out, o,
                   bin_apply(op, ot_get(a, ia), ot_get(b, ib), is_int));
        }
    }
    return 0;
}

static int fold_unary(Fold *f, const char *op)
{
    const OTensor *a = f->in[0];
    int rc = new_out(f->c, f->idx, &f->out, a->ndim, a->dims, a->is_int);
    for (int64_t k = 0; !rc && k < a->numel; k++) {
        double x = ot_get(a, k), y = x;
        if (!strcmp(op, "Floor"))
            y = floor(x);
        else if (!strcmp(op, "Ceil"))
            y = ceil(x);
        else if (!strcmp(op, "Neg"))
            y = -x;
        else if (!strcmp(op, "Abs"))
            y = fabs(x);
        else if (!strcmp(op, "Sqrt"))
            y = sqrt(x);
        else if (!strcmp(op, "Reciprocal"))
            y = 1.0 / x;
        else if (!strcmp(op, "Not"))
            y = x == 0;
        else if (!strcmp(op, "Round"))
            y = nearbyint(x);
        ot_set(&f->out, k, y);
    }
    return rc;
}

static int fold_range(Fold *f)
{
    if (f->n_in < 3 || !f->in[0] || !f->in[1] || !f->in[2])
        return bad(f, "Range needs 3 inputs");
    double s = ot_get(f->in[0], 0), l = ot_get(f->in[1], 0),
           d = ot_get(f->in[2], 0);
    if (d == 0) return bad(f, "Range with delta 0");
    double cnt = ceil((l - s) / d);
    if (!(cnt <= (double)FOLD_MAX_NUMEL)) return bad(f, "Range too long");
    int64_t n = cnt > 0 ? (int64_t)cnt : 0;
    int rc = new_out(f->c, f->idx, &f->out, 1, &n, f->in[0]->is_int);
    for (int64_t k = 0; !rc && k < n; k++)
        ot_set(&f->out, k, s + (double)k * d);
    return rc;
}

static int fold_constant_of_shape(Fold *f)
{
    const OTensor *sh = f->in[0];
    int64_t dims[OT_MAX_DIMS];
    OTensor v = {0};
    int rc, is_int = 0;
    double fill = 0;
    if (sh->numel > OT_MAX_DIMS)
        return bad(f, "ConstantOfShape rank too large");
    for (int64_t k = 0; k < sh->numel; k++)
        dims[k] = ot_geti(sh, k);
    const Onnx__AttributeProto *a = attr_find(f->n, "value");
    if (a && a->t) {
        rc = ot_from_proto(f->c, a->t, &v);
        if (rc) return rc;
        if (v.numel != 1) {
            ot_free(&v);
            return bad(f, "ConstantOfShape value must have one element");
        }
        fill = ot_get(&v, 0);
        is_int = v.is_int;
        ot_free(&v);
    }
    rc = new_out(f->c, f->idx, &f->out, (int)sh->numel, dims, is_int);
    for (int64_t k = 0; !rc && k < f->out.numel; k++)
        ot_set(&f->out, k, fill);
    return rc;
}

static int fold_reshape(Fold *f)
{
    const OTensor *a = f->in[0];
    int64_t dims[OT_MAX_DIMS];
    int nd;
    OTensor shape = {0};
    int64_t sd[1];
    int rc;
    if (f->c->opset < 5 || f->n_in < 2 || !f->in[1]) {
        /* Reshape-1 took the shape as an attribute. */
        int64_t v[OT_MAX_DIMS];
        int m = attr_ints(f->n, "shape", v, OT_MAX_DIMS);
        if (m < 0) return bad(f, "Reshape without a shape");
        sd[0] = m;
        rc = ot_alloc(&shape, 1, sd, 1);
        if (rc) return rc;
        memcpy(shape.i, v, (size_t)m * sizeof *v);
    }
    rc = onnx_reshape_dims(a->dims, a->ndim, shape.i ? &shape : f->in[1],
                           (int)attr_i(f->n, "allowzero", 0), dims, &nd);
    ot_free(&shape);
    if (rc)
        return bad(f, "Reshape to a shape with a different element count");
    return fold_copy(f, a, nd, dims);
}

static int fold_transpose(Fold *f)
{
    const OTensor *a = f->in[0];
    int64_t perm[OT_MAX_DIMS], dims[OT_MAX_DIMS], st[OT_MAX_DIMS];
    int np = attr_ints(f->n, "perm", perm, OT_MAX_DIMS);
    if (np < 0)
        for (int k = 0; k < a->ndim; k++)
            perm[k] = a->ndim - 1 - k;
    else if (np != a->ndim)
        return bad(f, "Transpose perm of the wrong length");
    for (int k = 0; k < a->ndim; k++) {
        if (perm[k] < 0 || perm[k] >= a->ndim)
            return bad(f, "Transpose perm out of range");
        dims[k] = a->dims[perm[k]];
    }
    int rc = new_out(f->c, f->idx, &f->out, a->ndim, dims, a->is_int);
    if (rc) return rc;
    strides_of(a->dims, a->ndim, st);
    for (int64_t o = 0; o < f->out.numel; o++) {
        int64_t rem = o, src = 0;
        for (int k = a->ndim - 1; k >= 0; k--) {
            src += (rem % dims[k]) * st[perm[k]];
            rem /= dims[k];
        }
        ot_copy_el(&f->out, o, a, src);
    }
    return 0;
}

static int fold_where(Fold *f)
{
    const OTensor *cnd = f->in[0], *x = f->in[1], *y = f->in[2];
    if (f->n_in < 3 || !cnd || !x || !y || cnd->numel != x->numel ||
        x->numel != y->numel)
        return bad(f, "Where on constants of different sizes");
    int rc = new_out(f->c, f->idx, &f->out, x->ndim, x->dims,
                     x->is_int && y->is_int);
    for (int64_t k = 0; !rc && k < x->numel; k++)
        ot_set(&f->out, k, ot_get(cnd, k) != 0 ? ot_get(x, k) : ot_get(y, k));
    return rc;
}

int onnx_fold(OnnxCtx *c, int idx)
{
    const Onnx__NodeProto *n = c->gp->node[idx];
    const char *op = n->op_type;
    Fold f = {c, idx, n, {0}, 0, {0}};
    int rc;
    if (n->n_input > 8) return 1;
    f.n_in = (int)n->n_input;
    for (int j = 0; j < f.n_in; j++) {
        if (!n->input[j] || !*n->input[j]) continue;
        int s = sym_find(c, n->input[j]);
        if (s < 0 || c->syms[s].kind != SYM_CONST) return 1;
        f.in[j] = &c->syms[s].t;
    }
    if (strcmp(op, "Constant") && !f.in[0]) return 1;
    if (!strcmp(op, "Constant"))
        rc = fold_constant(&f);
    else if (!strcmp(op, "Identity") || !strcmp(op, "Dropout"))
        rc = fold_copy(&f, f.in[0], f.in[0]->ndim, f.in[0]->dims);
    else if (!strcmp(op, "Cast"))
        rc = fold_cast(&f);
    else if (!strcmp(op, "Shape"))
        rc = fold_shape(&f);
    else if (!strcmp(op, "Size")) {
        int64_t one = 1;
        rc = new_out(c, idx, &f.out, 0, &one, 1);
        if (!rc) f.out.i[0] = f.in[0]->numel;
    } else if (!strcmp(op, "Gather"))
        rc = fold_gather(&f);
    else if (!strcmp(op, "Unsqueeze"))
        rc = fold_unsqueeze(&f);
    else if (!strcmp(op, "Squeeze"))
        rc = fold_squeeze(&f);
    else if (!strcmp(op, "Concat"))
        rc = fold_concat(&f);
    else if (!strcmp(op, "Slice"))
        rc = fold_slice(&f);
    else if (!strcmp(op, "Add"))
        rc = fold_binary(&f, BIN_ADD);
    else if (!strcmp(op, "Sub"))
        rc = fold_binary(&f, BIN_SUB);
    else if (!strcmp(op, "Mul"))
        rc = fold_binary(&f, BIN_MUL);
    else if (!strcmp(op, "Div"))
        rc = fold_binary(&f, BIN_DIV);
    else if (!strcmp(op, "Pow"))
        rc = fold_binary(&f, BIN_POW);
    else if (!strcmp(op, "Equal"))
        rc = fold_binary(&f, BIN_EQ);
    else if (!strcmp(op, "Less"))
        rc = fold_binary(&f, BIN_LT);
    else if (!strcmp(op, "Greater"))
        rc = fold_binary(&f, BIN_GT);
    else if (!strcmp(op, "Min"))
        rc = fold_binary(&f, BIN_MIN);
    else if (!strcmp(op, "Max"))
        rc = fold_binary(&f, BIN_MAX);
    else if (!strcmp(op, "Mod"))
        rc = fold_binary(&f, BIN_MOD);
    else if (!strcmp(op, "Floor") || !strcmp(op, "Ceil") ||
             !strcmp(op, "Neg") || !strcmp(op, "Abs") ||
             !strcmp(op, "Sqrt") || !strcmp(op, "Reciprocal") ||
             !strcmp(op, "Not") || !strcmp(op, "Round"))
        rc = fold_unary(&f, op);
    else if (!strcmp(op, "Range"))
        rc = fold_range(&f);
    else if (!strcmp(op, "ConstantOfShape"))
        rc = fold_constant_of_shape(&f);
    else if (!strcmp(op, "Reshape"))
        rc = fold_reshape(&f);
    else if (!strcmp(op, "Flatten")) {
        int ax;
        if (norm_axis(attr_i(n, "axis", 1), f.in[0]->ndim + 1, &ax))
            return bad(&f, "Flatten axis out of range");
        int64_t d[2] = {1, 1};
        for (int k = 0; k < f.in[0]->ndim; k++)
            d[k >= ax] *= f.in[0]->dims[k];
        rc = fold_copy(&f, f.in[0], 2, d);
    } else if (!strcmp(op, "Transpose"))
        rc = fold_transpose(&f);
    else if (!strcmp(op, "Where"))
        rc = fold_where(&f);
    else
        return 1;
    if (rc) {
        ot_free(&f.out);
        return rc;
    }
    if (!n->n_output || !n->output[0]) {
        ot_free(&f.out);
        return bad(&f, "node without an output");
    }
    rc = sym_add_const(c, n->output[0], &f.out, idx);
    return rc < 0 ? rc : 0;
}
