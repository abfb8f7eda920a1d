/* Constant folding of the glue exporters emit around the real network:
 * Constant, Shape, Gather, Unsqueeze/Squeeze, Cast, Concat, Slice,
 * elementwise integer/float arithmetic, Range, ConstantOfShape, Reshape,
 * Transpose on constants, dispatched through a table of op types. */
#include "onnx_fold.h"

#include <math.h>
#include <string.h>

#include "onnx_attr.h"
#include "runtime/common.h"

/* Largest constant folding may create: shape glue is tiny, and this stops
 * a crafted ConstantOfShape from allocating gigabytes. */
#define FOLD_MAX_NUMEL ((int64_t)1 << 24)

/* ---- helpers ---- */

static int norm_axis(int64_t axis, int rank, int *out)
{
    if (axis < -rank || axis >= rank) return -1;
    *out = (int)(axis < 0 ? axis + rank : axis);
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

static int fold_constant(Fold *f, int unused)
{
    (void)unused;
    const Onnx__AttributeProto *a;
    if ((a = attr_find(f->n, "value")) && a->t)
        return ot_from_proto(a->t, f->c->path, f->c->dir, &f->out);
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

static int fold_cast(Fold *f, int unused)
{
    (void)unused;
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

static int fold_shape(Fold *f, int unused)
{
    (void)unused;
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

static int fold_gather(Fold *f, int unused)
{
    (void)unused;
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

static int fold_unsqueeze(Fold *f, int unused)
{
    (void)unused;
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

static int fold_squeeze(Fold *f, int unused)
{
    (void)unused;
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

static int fold_concat(Fold *f, int unused)
{
    (void)unused;
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

static int fold_slice(Fold *f, int unused)
{
    (void)unused;
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
static int fold_binary(Fold *f, int op)
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
            ot_set(
                &f->out, o,
                bin_apply((BinOp)op, ot_get(a, ia), ot_get(b, ib), is_int));
        }
    }
    return 0;
}

typedef enum {
    UN_FLOOR,
    UN_CEIL,
    UN_NEG,
    UN_ABS,
    UN_SQRT,
    UN_RECIPROCAL,
    UN_NOT,
    UN_ROUND
} UnaryOp;

static double unary_apply(UnaryOp op, double x)
{
    switch (op) {
    case UN_FLOOR:
        return floor(x);
    case UN_CEIL:
        return ceil(x);
    case UN_NEG:
        return -x;
    case UN_ABS:
        return fabs(x);
    case UN_SQRT:
        return sqrt(x);
    case UN_RECIPROCAL:
        return 1.0 / x;
    case UN_NOT:
        return x == 0;
    case UN_ROUND:
        return nearbyint(x);
    }
    return x;
}

static int fold_unary(Fold *f, int op)
{
    const OTensor *a = f->in[0];
    int rc = new_out(f->c, f->idx, &f->out, a->ndim, a->dims, a->is_int);
    for (int64_t k = 0; !rc && k < a->numel; k++)
        ot_set(&f->out, k, unary_apply((UnaryOp)op, ot_get(a, k)));
    return rc;
}

static int fold_range(Fold *f, int unused)
{
    (void)unused;
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

static int fold_constant_of_shape(Fold *f, int unused)
{
    (void)unused;
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
        rc = ot_from_proto(a->t, f->c->path, f->c->dir, &v);
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

static int fold_reshape(Fold *f, int unused)
{
    (void)unused;
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

static int fold_transpose(Fold *f, int unused)
{
    (void)unused;
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

static int fold_where(Fold *f, int unused)
{
    (void)unused;
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

/* Identity and Dropout (inference) of a constant: a copy. */
static int fold_identity(Fold *f, int unused)
{
    (void)unused;
    return fold_copy(f, f->in[0], f->in[0]->ndim, f->in[0]->dims);
}

static int fold_size(Fold *f, int unused)
{
    int64_t one = 1;
    (void)unused;
    int rc = new_out(f->c, f->idx, &f->out, 0, &one, 1);
    if (!rc) f->out.i[0] = f->in[0]->numel;
    return rc;
}

static int fold_flatten(Fold *f, int unused)
{
    int ax;
    (void)unused;
    if (norm_axis(attr_i(f->n, "axis", 1), f->in[0]->ndim + 1, &ax))
        return bad(f, "Flatten axis out of range");
    int64_t d[2] = {1, 1};
    for (int k = 0; k < f->in[0]->ndim; k++)
        d[k >= ax] *= f->in[0]->dims[k];
    return fold_copy(f, f->in[0], 2, d);
}

/* Op type -> folding function and the variant it folds. */
typedef struct {
    const char *op;
    int (*fn)(Fold *f, int arg);
    int arg;
} FoldEntry;

static const FoldEntry FOLD_TABLE[] = {
    {"Constant", fold_constant, 0},
    {"Identity", fold_identity, 0},
    {"Dropout", fold_identity, 0},
    {"Cast", fold_cast, 0},
    {"Shape", fold_shape, 0},
    {"Size", fold_size, 0},
    {"Gather", fold_gather, 0},
    {"Unsqueeze", fold_unsqueeze, 0},
    {"Squeeze", fold_squeeze, 0},
    {"Concat", fold_concat, 0},
    {"Slice", fold_slice, 0},
    {"Add", fold_binary, BIN_ADD},
    {"Sub", fold_binary, BIN_SUB},
    {"Mul", fold_binary, BIN_MUL},
    {"Div", fold_binary, BIN_DIV},
    {"Pow", fold_binary, BIN_POW},
    {"Equal", fold_binary, BIN_EQ},
    {"Less", fold_binary, BIN_LT},
    {"Greater", fold_binary, BIN_GT},
    {"Min", fold_binary, BIN_MIN},
    {"Max", fold_binary, BIN_MAX},
    {"Mod", fold_binary, BIN_MOD},
    {"Floor", fold_unary, UN_FLOOR},
    {"Ceil", fold_unary, UN_CEIL},
    {"Neg", fold_unary, UN_NEG},
    {"Abs", fold_unary, UN_ABS},
    {"Sqrt", fold_unary, UN_SQRT},
    {"Reciprocal", fold_unary, UN_RECIPROCAL},
    {"Not", fold_unary, UN_NOT},
    {"Round", fold_unary, UN_ROUND},
    {"Range", fold_range, 0},
    {"ConstantOfShape", fold_constant_of_shape, 0},
    {"Reshape", fold_reshape, 0},
    {"Flatten", fold_flatten, 0},
    {"Transpose", fold_transpose, 0},
    {"Where", fold_where, 0},
};

int onnx_fold(OnnxCtx *c, int idx)
{
    const Onnx__NodeProto *n = c->gp->node[idx];
    const FoldEntry *e = NULL;
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
    for (size_t k = 0; k < sizeof FOLD_TABLE / sizeof FOLD_TABLE[0]; k++)
        if (!strcmp(n->op_type, FOLD_TABLE[k].op)) e = &FOLD_TABLE[k];
    /* Every folder but Constant's reads input 0. */
    if (!e || (e->fn != fold_constant && !f.in[0])) return 1;
    rc = e->fn(&f, e->arg);
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
