/* Resize's coordinate mapping (see resize.c for the formulas), shared by
 * the forward (runtime/ops/resize.c) and the backward
 * (compressor/grad/resize_grad.c) so that the two cannot drift: the
 * backward must scatter to exactly the pixels and weights the forward
 * read. */
#ifndef SL_RESIZE_GEOM_H
#define SL_RESIZE_GEOM_H

#include <math.h>
#include <stdint.h>

#include "../graph.h"

/* Source coordinate of output index o along a dim of size in -> out.
 * Products of integers and halves are exact in double; one rounding. */
static inline double resize_src_coord(int64_t o, int64_t in, int64_t out,
                                      ResizeCoord c)
{
    switch (c) {
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

static inline int64_t resize_nearest_index(double x, int64_t in,
                                           ResizeNearest m)
{
    double r;
    switch (m) {
    case NEAREST_ROUND_PREFER_FLOOR:
        r = ceil(x - 0.5);
        break;
    case NEAREST_ROUND_PREFER_CEIL:
        r = floor(x + 0.5);
        break;
    case NEAREST_FLOOR:
        r = floor(x);
        break;
    case NEAREST_CEIL:
    default:
        r = ceil(x);
        break;
    }
    if (r < 0) return 0;
    if (r > (double)(in - 1)) return in - 1;
    return (int64_t)r;
}

/* Linear taps: value = x[i0] * (1 - w) + x[i1] * w. */
static inline void resize_linear_taps(double x, int64_t in, int64_t *i0,
                                      int64_t *i1, float *w)
{
    if (x < 0) x = 0;
    if (x > (double)(in - 1)) x = (double)(in - 1);
    int64_t f = (int64_t)floor(x);
    *i0 = f;
    *i1 = f + 1 < in ? f + 1 : f;
    *w = (float)(x - (double)f);
}

#endif
