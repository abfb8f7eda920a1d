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

/* Where output index o lies in input coordinates (ONNX
 * coordinate_transformation_mode, scale = out/in), computed as the
 * forward does: o * in / out with one rounding, so nearest picks the same
 * pixel even at exact halves. */
static double source_coord(const ResizeParams *p, int64_t o, int64_t in,
                           int64_t out)
{
    switch (p->coord) {
    case COORD_HALF_PIXEL:
        return ((double)o + 0.5) * (double)in / (double)out - 0.5;
    case COORD_PYTORCH_HALF_PIXEL:
        return out > 1 ? ((double)o + 0.5) * (double)in / (double)out - 0.5
                       : 0.0;
    case COORD_ALIGN_CORNERS:
        return out > 1 ? (double)o * (double)(in - 1) / (double)(out - 1)
                       : 0.0;
    case COORD_ASYMMETRIC:
    default:
        return (double)o * (double)in / (double)out;
    }
}

/* One output index along one dim: input indices i[0..1], weights w[0..1]
 * (nearest: w = {1, 0}).  Linear weights are rounded to float like the
 * forward's: x[i0] * (1 - w) + x[i1] * w with float w. */
typedef struct {
    int64_t i[2];
    float w[2];
} Tap;

static Tap tap_at(const ResizeParams *p, int64_t o, int64_t in, int64_t out)
{
    Tap t;
    double x = source_coord(p, o, in, out);
    if (p->mode == RESIZE_NEAREST) {
        double r;
        switch (p->nearest) {
        case NEAREST_ROUND_PREFER_FLOOR:
            r = ceil(x - 0.5);
            break;
        case NEAREST_ROUND_PREFER_CEIL:
            r = floor(x + 0.5);
            break;
        case NEAREST_FLOOR:
            r = floor(x);
            break;
        default:
            r = ceil(x);
            break;
        }
        int64_t i = r < 0 ? 0 : r > (double)(in - 1) ? in - 1 : (int64_t)r;
        t.i[0] = t.i[1] = i;
        t.w[0] = 1.0f;
        t.w[1] = 0.0f;
        return t;
    }
    /* linear: clamp the coordinate to the input, as ONNX Runtime and
     * PyTorch do (edge values repeat) */
    if (x < 0) x = 0;
    if (x > (double)(in - 1)) x = (double)(in - 1);
    int64_t i0 = (int64_t)floor(x);
    t.i[0] = i0;
    t.i[1] = i0 + 1 < in ? i0 + 1 : i0;
    t.w[1] = (float)(x - (double)i0);
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
