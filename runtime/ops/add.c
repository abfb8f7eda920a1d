/* Add with numpy (bidirectional) broadcasting.
 *
 * Shapes are right-aligned; along each dim the sizes must be equal or one
 * of them 1.  The output has the broadcast shape.  y may equal a or b when
 * that operand already has the output shape (in place).
 */
#include "opcheck.h"
#include "ops.h"

#define ELEMWISE_PAR_MIN 32768

/* Broadcast shape of a and b into *y; -1 if incompatible. */
static int broadcast_shape(const Shape *a, const Shape *b, Shape *y)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    y->ndim = nd;
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
        if (da != db && da != 1 && db != 1) return -1;
        y->d[i] = da > db ? da : db;
    }
    return 0;
}

/* Strides of s as seen from a rank-5 right-aligned output of shape yd:
 * 0 along dims where s is broadcast. */
static void bcast_strides(const Shape *s, const int64_t yd[5], int64_t st[5])
{
    int64_t acc = 1;
    for (int i = 4; i >= 0; i--) {
        int is = i - (5 - s->ndim);
        int64_t d = is >= 0 ? s->d[is] : 1;
        st[i] = (d == 1 && yd[i] != 1) ? 0 : acc;
        acc *= d;
    }
}

/* y [ys] = a [as] + b [bs], as and bs broadcastable to ys. */
static void add_bcast(float *y, const Shape *ys, const float *a,
                      const Shape *as, const float *b, const Shape *bs)
{
    int64_t total = op_numel(ys);
    if (shape_equal(as, ys) && shape_equal(bs, ys)) {
#pragma omp parallel for schedule(static) if (total > ELEMWISE_PAR_MIN)
        for (int64_t i = 0; i < total; i++)
            y[i] = a[i] + b[i];
        return;
    }
    int64_t yd[5], sa[5], sb[5];
    for (int i = 0; i < 5; i++) {
        int iy = i - (5 - ys->ndim);
        yd[i] = iy >= 0 ? ys->d[iy] : 1;
    }
    bcast_strides(as, yd, sa);
    bcast_strides(bs, yd, sb);
    /* One row = the last dim; rows are independent outputs. */
    int64_t W = yd[4], rows = total / W;
#pragma omp parallel for schedule(static) if (total > ELEMWISE_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, oa = 0, ob = 0;
        for (int i = 3; i >= 0; i--) {
            int64_t k = rem % yd[i];
            rem /= yd[i];
            oa += k * sa[i];
            ob += k * sb[i];
        }
        const float *ap = a + oa, *bp = b + ob;
        float *yp = y + r * W;
        int64_t ja = sa[4], jb = sb[4];
        if (ja && jb)
            for (int64_t w = 0; w < W; w++)
                yp[w] = ap[w] + bp[w];
        else if (ja)
            for (int64_t w = 0; w < W; w++)
                yp[w] = ap[w] + bp[0];
        else if (jb)
            for (int64_t w = 0; w < W; w++)
                yp[w] = ap[0] + bp[w];
        else
            for (int64_t w = 0; w < W; w++)
                yp[w] = ap[0] + bp[0];
    }
}

/* y [as] = a [as] + b [bs], b broadcast to a's shape. */
void add_forward(float *y, const float *a, const float *b, const Shape *as,
                 const Shape *bs)
{
    add_bcast(y, as, a, as, b, bs);
}

/* ---- op-table hooks ---- */

int add_infer(const Graph *g, const Node *n, Shape *out)
{
    int rc = op_check_inputs(g, n, "Add", 2, 2);
    if (rc) return rc;
    const Shape *as = op_in_shape(g, n, 0), *bs = op_in_shape(g, n, 1);
    if (broadcast_shape(as, bs, out)) {
        char sa[96], sb[96];
        sl_error("node '%s' (Add): shapes %s and %s cannot be broadcast "
                 "together",
                 op_node_name(n), shape_str(as, sa, sizeof sa),
                 shape_str(bs, sb, sizeof sb));
        return ERR_SHAPE;
    }
    return 0;
}
int64_t add_flops(const Graph *g, const Node *n)
{
    Shape ys;
    if (broadcast_shape(op_in_shape(g, n, 0), op_in_shape(g, n, 1), &ys))
        return 0;
    return op_numel(&ys);
}
size_t add_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void add_node_forward(const Graph *g, const Node *n, float *out,
                      const float *const *in, float *scratch)
{
    (void)scratch;
    const Shape *as = op_in_shape(g, n, 0), *bs = op_in_shape(g, n, 1);
    Shape ys;
    CHECK(broadcast_shape(as, bs, &ys) == 0);
    add_bcast(out, &ys, in[0], as, in[1], bs);
}
