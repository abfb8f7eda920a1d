/* Softmax over one axis (opset >= 13), or over all dims from the axis to
 * the end (flatten = 1, the opset < 13 meaning).
 *
 * The tensor is viewed as [outer, C, inner]: C the reduced length, inner
 * the product of the dims after it (1 in flatten mode).  For segmentation
 * C is the class count (small) and inner the voxels (large), so the fast
 * kernel walks voxels contiguously, a tile at a time, for each class.
 * Each output's sum is accumulated over C in index order by one thread:
 * results do not depend on the thread count.
 */
#include <math.h>

#include "opcheck.h"
#include "ops.h"
#include "vecmath.h"

/* Voxels per tile: the tile's max and sum (2 x 1 KiB) stay in L1 while C
 * class planes stream through. */
#define SOFTMAX_TILE 256

static void softmax_dims(const Shape *xs, const SoftmaxParams *p,
                         int64_t *outer, int64_t *C, int64_t *inner)
{
    int axis = p->axis < 0 ? p->axis + xs->ndim : p->axis;
    *outer = 1;
    *C = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= xs->d[i];
    for (int i = axis; i < xs->ndim; i++) {
        if (i == axis || p->flatten)
            *C *= xs->d[i];
        else
            *inner *= xs->d[i];
    }
}

/* y, x [L] contiguous: one softmax; sum in double. */
static void softmax_row(float *y, const float *x, int64_t L)
{
    float mx = x[0];
    for (int64_t i = 1; i < L; i++)
        mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int64_t i = 0; i < L; i++) {
        float e = expf(x[i] - mx);
        y[i] = e;
        sum += (double)e;
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < L; i++)
        y[i] *= inv;
}

/* The exp pass of softmax_tile from voxel v on: y = exp(x - mx), sum += y,
 * 4 lanes then scalar.  yc, xc, mx, sum [nv]. */
static void softmax_exp(float *yc, const float *xc, const float *mx,
                        float *sum, int64_t v, int64_t nv)
{
    for (; v + VF_W <= nv; v += VF_W) {
        vf4 e = vf4_exp_neg(vf4_load(xc + v) - vf4_load(mx + v));
        vf4_store(yc + v, e);
        vf4_store(sum + v, vf4_load(sum + v) + e);
    }
    for (; v < nv; v++) {
        float e = expf(xc[v] - mx[v]);
        yc[v] = e;
        sum[v] += e;
    }
}

#ifdef SL_HAVE_VF8
/* softmax_exp on 8 lanes first: the same operations per element as the
 * 4-lane path (same results on every CPU), twice the width where AVX2 is
 * there.  yc, xc, mx, sum [nv]. */
__attribute__((target("avx2"))) static void
softmax_exp_avx2(float *yc, const float *xc, const float *mx, float *sum,
                 int64_t nv)
{
    int64_t v = 0;
    for (; v + 8 <= nv; v += 8) {
        vf8 e = vf8_exp_neg(vf8_load(xc + v) - vf8_load(mx + v));
        vf8_store(yc + v, e);
        vf8_store(sum + v, vf8_load(sum + v) + e);
    }
    softmax_exp(yc, xc, mx, sum, v, nv);
}
#endif

/* One tile: yb, xb [C, inner] (tile origin), nv <= SOFTMAX_TILE voxels.
 * exp by vf4_exp_neg (relative error < 2e-7, see vecmath.h) on whole
 * vectors (8 lanes with AVX2 when avx2), expf on the tail; yb may equal xb
 * (each element is read before it is written). */
static void softmax_tile(float *yb, const float *xb, int64_t C, int64_t inner,
                         int avx2, int64_t nv)
{
    float mx[SOFTMAX_TILE], sum[SOFTMAX_TILE];
    for (int64_t v = 0; v < nv; v++) {
        mx[v] = xb[v];
        sum[v] = 0.0f;
    }
    for (int64_t c = 1; c < C; c++) {
        const float *xc = xb + c * inner;
        int64_t v = 0;
        for (; v + VF_W <= nv; v += VF_W) {
            vf4 a = vf4_load(xc + v), m = vf4_load(mx + v);
            vf4_store(mx + v, vf4_select(a > m, a, m));
        }
        for (; v < nv; v++)
            mx[v] = xc[v] > mx[v] ? xc[v] : mx[v];
    }
    /* Float sums are fine: C terms each in (0, 1], at least one 1. */
    for (int64_t c = 0; c < C; c++) {
        const float *xc = xb + c * inner;
        float *yc = yb + c * inner;
#ifdef SL_HAVE_VF8
        if (avx2) {
            softmax_exp_avx2(yc, xc, mx, sum, nv);
            continue;
        }
#else
        (void)avx2; /* 0 off x86 (vec_use_avx2) */
#endif
        softmax_exp(yc, xc, mx, sum, 0, nv);
    }
    for (int64_t v = 0; v < nv; v++)
        sum[v] = 1.0f / sum[v];
    for (int64_t c = 0; c < C; c++) {
        float *yc = yb + c * inner;
#pragma omp simd
        for (int64_t v = 0; v < nv; v++)
            yc[v] *= sum[v];
    }
}

/* y, x [outer, C, inner] */
void softmax_forward(float *y, const float *x, const Shape *xs,
                     const SoftmaxParams *p)
{
    int64_t outer, C, inner;
    softmax_dims(xs, p, &outer, &C, &inner);
    if (inner == 1) {
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < outer; o++)
            softmax_row(y + o * C, x + o * C, C);
        return;
    }
    int64_t tiles = (inner + SOFTMAX_TILE - 1) / SOFTMAX_TILE;
    const int avx2 = vec_use_avx2();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < outer * tiles; t++) {
        int64_t o = t / tiles, v0 = (t % tiles) * SOFTMAX_TILE;
        int64_t nv = inner - v0 < SOFTMAX_TILE ? inner - v0 : SOFTMAX_TILE;
        const float *xb = x + o * C * inner + v0;
        float *yb = y + o * C * inner + v0;
        softmax_tile(yb, xb, C, inner, avx2, nv);
    }
}

/* Same contract; one output at a time, everything in double. */
void softmax_forward_ref(float *y, const float *x, const Shape *xs,
                         const SoftmaxParams *p)
{
    int64_t outer, C, inner;
    softmax_dims(xs, p, &outer, &C, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t v = 0; v < inner; v++) {
            const float *xp = x + o * C * inner + v;
            float *yp = y + o * C * inner + v;
            double mx = (double)xp[0];
            for (int64_t c = 1; c < C; c++)
                if ((double)xp[c * inner] > mx) mx = (double)xp[c * inner];
            double sum = 0;
            for (int64_t c = 0; c < C; c++)
                sum += exp((double)xp[c * inner] - mx);
            for (int64_t c = 0; c < C; c++)
                yp[c * inner] =
                    (float)(exp((double)xp[c * inner] - mx) / sum);
        }
}

/* ---- op-table hooks ---- */

int softmax_infer(const Graph *g, const Node *n, Shape *out)
{
    int rc = op_check_inputs(g, n, "Softmax", 1, 1);
    if (rc) return rc;
    const Shape *xs = op_in_shape(g, n, 0);
    int axis = n->p.softmax.axis;
    if (axis < -xs->ndim || axis >= xs->ndim) {
        sl_error("node '%s' (Softmax): axis %d is out of range for an "
                 "input of rank %d",
                 op_node_name(n), axis, xs->ndim);
        return ERR_SHAPE;
    }
    *out = *xs;
    return 0;
}
/* max, subtract+exp, sum, scale: about 4 per element. */
int64_t softmax_flops(const Graph *g, const Node *n)
{
    return 4 * op_numel(op_in_shape(g, n, 0));
}
size_t softmax_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void softmax_node_forward(const Graph *g, const Node *n, float *out,
                          const float *const *in, float *scratch)
{
    (void)scratch;
    softmax_forward(out, in[0], op_in_shape(g, n, 0), &n->p.softmax);
}
