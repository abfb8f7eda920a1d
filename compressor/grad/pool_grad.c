/* MaxPool and AveragePool backwards.
 *
 * N batch, C channels, in... / out... spatial (1 to 3 dims, padded to 3
 * with size-1 dims).  Window tap k of output o reads input position
 * o*stride - pad_lo + k*dilation in each spatial dim.  Parallel over
 * (n, c) planes: a plane of dx is written only from the same plane of dy,
 * in output order, so results do not depend on the thread count.
 */
#include "compressor/grad/grad.h"

#include "runtime/common.h"

typedef struct {
    int64_t in[3], out[3];
    int k[3], stride[3], dil[3], pad_lo[3], pad_hi[3];
} PoolGeom;

/* use_dilation = 0 for AveragePool, which has none (as the forward). */
static void pool_geom(PoolGeom *g, const Shape *xs, const Shape *ys,
                      const PoolParams *p, int use_dilation)
{
    CHECK(p->nsp >= 1 && p->nsp <= 3);
    CHECK(xs->ndim == 2 + p->nsp && ys->ndim == xs->ndim);
    for (int d = 0; d < 3; d++) {
        int used = d < p->nsp;
        g->in[d] = used ? xs->d[2 + d] : 1;
        g->out[d] = used ? ys->d[2 + d] : 1;
        g->k[d] = used ? p->kernel[d] : 1;
        g->stride[d] = used ? p->stride[d] : 1;
        /* dilation 0 means "not given", as in the forward */
        g->dil[d] =
            used && use_dilation && p->dilation[d] > 1 ? p->dilation[d] : 1;
        g->pad_lo[d] = used ? p->pad_lo[d] : 0;
        g->pad_hi[d] = used ? p->pad_hi[d] : 0;
    }
}

/* dx, x [N,C,in...]; dy [N,C,out...].  Accumulates. */
void max_pool_backward(float *dx, const float *dy, const float *x,
                       const Shape *xs, const Shape *ys, const PoolParams *p)
{
    PoolGeom g;
    pool_geom(&g, xs, ys, p, 1);
    if (!dx) return;
    const int64_t planes = xs->d[0] * xs->d[1];
    const int64_t pin = g.in[0] * g.in[1] * g.in[2];
    const int64_t pout = g.out[0] * g.out[1] * g.out[2];
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * pin, *gp = dy + pl * pout;
        float *dp = dx + pl * pin;
        int64_t o = 0;
        for (int64_t o0 = 0; o0 < g.out[0]; o0++)
            for (int64_t o1 = 0; o1 < g.out[1]; o1++)
                for (int64_t o2 = 0; o2 < g.out[2]; o2++, o++) {
                    int64_t best = -1;
                    float bv = 0.0f;
                    /* scan order k0, k1, k2; strict > keeps the first tie */
                    for (int k0 = 0; k0 < g.k[0]; k0++) {
                        int64_t i0 = o0 * g.stride[0] - g.pad_lo[0] +
                                     (int64_t)k0 * g.dil[0];
                        if (i0 < 0 || i0 >= g.in[0]) continue;
                        for (int k1 = 0; k1 < g.k[1]; k1++) {
                            int64_t i1 = o1 * g.stride[1] - g.pad_lo[1] +
                                         (int64_t)k1 * g.dil[1];
                            if (i1 < 0 || i1 >= g.in[1]) continue;
                            for (int k2 = 0; k2 < g.k[2]; k2++) {
                                int64_t i2 = o2 * g.stride[2] - g.pad_lo[2] +
                                             (int64_t)k2 * g.dil[2];
                                if (i2 < 0 || i2 >= g.in[2]) continue;
                                int64_t i =
                                    (i0 * g.in[1] + i1) * g.in[2] + i2;
                                if (best < 0 || xp[i] > bv) {
                                    best = i;
                                    bv = xp[i];
                                }
                            }
                        }
                    }
                    if (best >= 0) dp[best] += gp[o];
                }
    }
}

/* Taps of one window along dim d that count in the divisor. */
static int64_t taps_counted(const PoolGeom *g, int d, int64_t o,
                            int include_pad)
{
    int64_t lo = include_pad ? -g->pad_lo[d] : 0;
    int64_t hi = include_pad ? g->in[d] + g->pad_hi[d] : g->in[d];
    int64_t count = 0;
    for (int k = 0; k < g->k[d]; k++) {
        int64_t i = o * g->stride[d] - g->pad_lo[d] + (int64_t)k * g->dil[d];
        count += i >= lo && i < hi;
    }
    return count;
}

/* dx [N,C,in...]; dy [N,C,out...].  Accumulates. */
void avg_pool_backward(float *dx, const float *dy, const Shape *xs,
                       const Shape *ys, const PoolParams *p)
{
    PoolGeom g;
    pool_geom(&g, xs, ys, p, 0);
    if (!dx) return;
    const int64_t planes = xs->d[0] * xs->d[1];
    const int64_t pin = g.in[0] * g.in[1] * g.in[2];
    const int64_t pout = g.out[0] * g.out[1] * g.out[2];
    const int inc = p->count_include_pad;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *gp = dy + pl * pout;
        float *dp = dx + pl * pin;
        int64_t o = 0;
        for (int64_t o0 = 0; o0 < g.out[0]; o0++) {
            int64_t c0 = taps_counted(&g, 0, o0, inc);
            for (int64_t o1 = 0; o1 < g.out[1]; o1++) {
                int64_t c1 = taps_counted(&g, 1, o1, inc);
                for (int64_t o2 = 0; o2 < g.out[2]; o2++, o++) {
                    int64_t div = c0 * c1 * taps_counted(&g, 2, o2, inc);
                    if (div == 0) continue; /* window entirely outside */
                    float v = gp[o] / (float)div;
                    for (int k0 = 0; k0 < g.k[0]; k0++) {
                        int64_t i0 = o0 * g.stride[0] - g.pad_lo[0] +
                                     (int64_t)k0 * g.dil[0];
                        if (i0 < 0 || i0 >= g.in[0]) continue;
                        for (int k1 = 0; k1 < g.k[1]; k1++) {
                            int64_t i1 = o1 * g.stride[1] - g.pad_lo[1] +
                                         (int64_t)k1 * g.dil[1];
                            if (i1 < 0 || i1 >= g.in[1]) continue;
                            for (int k2 = 0; k2 < g.k[2]; k2++) {
                                int64_t i2 = o2 * g.stride[2] - g.pad_lo[2] +
                                             (int64_t)k2 * g.dil[2];
                                if (i2 < 0 || i2 >= g.in[2]) continue;
                                dp[(i0 * g.in[1] + i1) * g.in[2] + i2] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}
