/* Elementwise activation backwards: Relu, LeakyRelu, Sigmoid.
 *
 * All pointers are flat [n]; each element is independent, so a plain
 * parallel loop is deterministic for any thread count.
 */
#include "compressor/grad/grad.h"

/* dx, dy, y [n].  y = max(x, 0); y > 0 exactly when x > 0.  Accumulates. */
void relu_backward(float *dx, const float *dy, const float *y, int64_t n)
{
    if (!dx) return;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
}

/* dx, dy, x [n].  y = x > 0 ? x : alpha * x.  Accumulates. */
void leaky_relu_backward(float *dx, const float *dy, const float *x,
                         int64_t n, const ActParams *p)
{
    const float alpha = p->alpha;
    if (!dx) return;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        /* a select, not a branch, so the loop vectorises (1 * dy == dy) */
        float slope = x[i] > 0.0f ? 1.0f : alpha;
        dx[i] += slope * dy[i];
    }
}

/* dx, dy, y [n].  y = 1 / (1 + exp(-x)), dy/dx = y (1 - y).  Accumulates. */
void sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n)
{
    if (!dx) return;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] += dy[i] * y[i] * (1.0f - y[i]);
}
