/* Resize backward (nearest and linear).
 *
 * N batch, C channels, in... / out... spatial (1 to 3 dims, padded to 3
 * with size-1 dims).  The forward reads, for each output position, one
 * input position (nearest) or the 2^nsp corners around it (linear, weights
 * from the fractional source coordinate); the backward is the transpose:
 * dx[src] += weight * dy[dst].  Parallel over (n, c) planes, output order
 * within a plane, so results do not depend on the thread count.
 */
#include <math.h>

#include "compressor/grad/grad.h"

#include "runtime/common.h"
#include "runtime/ops/resize_geom.h"

/* One output index along one dim: input indices i[0..1], weights w[0..1]
 * (nearest: w = {1, 0}), from the forward's own mapping (resize_geom.h),
 * so the backward scatters to exactly the pixels the forward read. */
typedef struct {
    int64_t i[2];
    float w[2];
} Tap;

static Tap tap_at(const ResizeParams *p, int64_t o, int64_t in, int64_t out)
{
    Tap t;
    double x = resize_src_coord(o, in, out, p->coord);
    if (p->mode == RESIZE_NEAREST) {
        t.i[0] = t.i[1] = resize_nearest_index(x, in, p->nearest);
        t.w[0] = 1.0f;
        t.w[1] = 0.0f;
        return t;
    }
    resize_linear_taps(x, in, &t.i[0], &t.i[1], &t.w[1]);
    t.w[0] = 1.0f - t.w[1];
    return t;
}

/* dx [N,C,in...]; dy [N,C,out...].  Accumulates. */
void resize_backward(float *dx, const float *dy, const Shape *xs,
                     const Shape *ys, const ResizeParams *p)
{
    CHECK(p->nsp >= 1 && p->nsp <= 3);
    CHECK(xs->ndim == 2 + p->nsp && ys->ndim == xs->ndim);
    if (!dx) return;
    int64_t in[3], out[3];
    for (int d = 0; d < 3; d++) {
        in[d] = d < p->nsp ? xs->d[2 + d] : 1;
        out[d] = d < p->nsp ? ys->d[2 + d] : 1;
    }
    const int64_t planes = xs->d[0] * xs->d[1];
    const int64_t pin = in[0] * in[1] * in[2];
    const int64_t pout = out[0] * out[1] * out[2];
    /* nearest needs only the first corner in each dim */
    const int nc = p->mode == RESIZE_NEAREST ? 1 : 2;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *gp = dy + pl * pout;
        float *dp = dx + pl * pin;
        int64_t o = 0;
        for (int64_t o0 = 0; o0 < out[0]; o0++) {
            Tap t0 = tap_at(p, o0, in[0], out[0]);
            for (int64_t o1 = 0; o1 < out[1]; o1++) {
                Tap t1 = tap_at(p, o1, in[1], out[1]);
                for (int64_t o2 = 0; o2 < out[2]; o2++, o++) {
                    Tap t2 = tap_at(p, o2, in[2], out[2]);
                    double g = (double)gp[o];
                    for (int a = 0; a < nc; a++)
                        for (int b = 0; b < nc; b++)
                            for (int c = 0; c < nc; c++) {
                                double w = (double)t0.w[a] * (double)t1.w[b] *
                                           (double)t2.w[c];
                                if (w == 0.0) continue;
                                dp[(t0.i[a] * in[1] + t1.i[b]) * in[2] +
                                   t2.i[c]] += (float)(w * g);
                            }
                }
            }
        }
    }
}
