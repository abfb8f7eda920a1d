/* Softmax backward.
 *
 * The tensor [xs] is viewed as [outer, len, inner]: the softmax runs over
 * len for each (outer, inner) pair.  Axis a: outer = prod(d[0..a)),
 * len = d[a], inner = prod(d[a+1..)); with flatten (opset < 13) len is
 * prod(d[a..)) and inner = 1.
 */
#include "compressor/grad/grad.h"

#include "runtime/common.h"

/* dx, dy, y [outer, len, inner].  From y = softmax(x) over len:
 * dx = y * (dy - sum(dy * y)).  Accumulates. */
void softmax_backward(float *dx, const float *dy, const float *y,
                      const Shape *xs, const SoftmaxParams *p)
{
    CHECK(p->axis >= 0 && p->axis < xs->ndim);
    if (!dx) return;
    int64_t outer = 1, len = 1, inner = 1;
    for (int d = 0; d < xs->ndim; d++) {
        if (d < p->axis)
            outer *= xs->d[d];
        else if (d == p->axis || p->flatten)
            len *= xs->d[d];
        else
            inner *= xs->d[d];
    }
    /* every (outer, inner) line is independent */
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < outer * inner; j++) {
        int64_t base = (j / inner) * len * inner + j % inner;
        double s = 0;
        for (int64_t l = 0; l < len; l++)
            s += (double)dy[base + l * inner] * (double)y[base + l * inner];
        for (int64_t l = 0; l < len; l++) {
            int64_t i = base + l * inner;
            dx[i] += (float)((double)y[i] * ((double)dy[i] - s));
        }
    }
}
