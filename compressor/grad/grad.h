/* Backward kernels for the training engine.
 *
 * One backward per forward kernel of runtime/ops/ops.h, with the same shape
 * of arguments: gradient outputs (d*) first, then dy, then the forward's
 * inputs (and what the forward saved, if anything), then shapes, then the
 * const parameter struct, then scratch.
 *
 * Gradient rule: every backward ACCUMULATES (+=) into its d* buffers; the
 * training step zeroes them once per step.  Any d* pointer may be NULL when
 * that gradient is not needed (dx of the first layer, frozen weights).
 * Kernels never allocate: scratch comes from the caller, sized by the
 * *_backward_scratch_floats functions (which include gemm's packing
 * space, so size it after the OpenMP thread count is set, as for gemm).
 *
 * Determinism: conv weight gradients are summed in a fixed number of
 * chunks of (sample, position tile) units, each through gemm (fixed
 * reduction order), and the chunk partials added in chunk order (grad_dw);
 * conv input gradients are forward convolutions per sample (grad_conv_dx)
 * or col2im scatters parallel over channels; per-channel gradients
 * (bias, norm scale/bias) are parallel over channels, each thread owning
 * whole entries; input gradients are parallel over (n, c) planes or
 * channels.  Every reduction runs in a fixed order without atomics, so
 * results are bit-identical for any OpenMP thread count (test_grad checks
 * 1 vs 2 threads).
 *
 * Dimension letters: N batch, C/IC/OC channels, D H W spatial, K kernel;
 * "sp..." is 1 to 3 spatial dims.
 */
#ifndef SL_GRAD_H
#define SL_GRAD_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/graph.h"
#include "runtime/ops/conv_geom.h"

/* ---- Conv / ConvTranspose (conv_grad.c, conv_transpose_grad.c) ---- */

/* Differentiates y [N,OC,out...] = conv(x [N,IC,in...], w [OC,IC/g,K...])
 * + b [OC], i.e. y[n,oc,o] = b[oc] + sum_{ic in group(oc), k}
 * w[oc,ic,k] * x[n,ic,o*stride - pad_lo + k*dilation] (zero outside x).
 * dx [N,IC,in...], dw [OC,IC/g,K...], db [OC] (accumulates; each may be
 * NULL).  Scratch: conv_backward_scratch_floats() floats. */
void conv_backward(float *dx, float *dw, float *db, const float *dy,
                   const float *x, const float *w, const Shape *xs,
                   const Shape *ys, const ConvParams *p, float *scratch);
size_t conv_backward_scratch_floats(const Shape *xs, const Shape *ys,
                                    const ConvParams *p);

/* Differentiates y [N,OC,out...] = conv_transpose(x [N,IC,in...],
 * w [IC,OC/g,K...]) + b [OC], i.e. y[n,oc,i*stride - pad_lo + k*dilation]
 * += w[ic,oc,k] * x[n,ic,i] for ic in group(oc), plus b[oc] everywhere.
 * dx [N,IC,in...], dw [IC,OC/g,K...], db [OC] (accumulates; each may be
 * NULL).  Scratch: conv_transpose_backward_scratch_floats() floats. */
void conv_transpose_backward(float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, const Shape *xs,
                             const Shape *ys, const ConvParams *p,
                             float *scratch);
size_t conv_transpose_backward_scratch_floats(const Shape *xs,
                                              const Shape *ys,
                                              const ConvParams *p);

/* Shared by the two conv files.  Gathers src [nc,src_sp...] (one image)
 * into col [nc*KK, p1-p0] for the positions [p0,p1) of the dst grid: row
 * (c, k), column p holds src[c, o(p)*stride - pad_lo + k*dilation], 0 when
 * outside src.  The geometry is the forward's ConvGeom
 * (runtime/ops/conv_geom.h: 3-d with unused leading dims of size 1) filled
 * by conv_geom_fill(gm, src, dst, p): gm->in is the src grid, gm->out the
 * dst grid (for ConvTranspose's backward, src is dy and dst is x). */
void grad_im2col(float *col, const float *src, const ConvGeom *gm, int nc,
                 int64_t p0, int64_t p1);
/* Scatter-add of col [nc*KK, p1-p0] back into dsrc [nc, src_sp...] (the
 * transpose of grad_im2col); parallel over channels,
 * fixed order within a channel (accumulates). */
void grad_col2im(float *dsrc, const float *col, const ConvGeom *gm, int nc,
                 int64_t p0, int64_t p1);
/* db[c] += sum over n and spatial of dy [N,C,sp...] (fixed order). */
void grad_bias(float *db, const float *dy, const Shape *ys);
/* Weight gradient of a convolution-like op:
 * dw [cols, R] += sum over n of (im2col(src_n) [R, P] * b_n [cols, P]^T)^T
 * with R = nc*KK and P = gm->out_sp; src_n = src + n*src_n is
 * [nc, gm->in...], b_n = b + n*b_n is [cols, P].  Summed in a fixed
 * number of chunks, then in chunk order (any thread count gives the same
 * bits); parallel inside.  scratch: grad_dw_scratch_floats(). */
void grad_dw(float *dw, const float *src, int64_t src_n, int nc,
             const float *b, int64_t b_n, int cols, const ConvGeom *gm,
             int64_t n_batch, float *scratch);
size_t grad_dw_scratch_floats(int64_t rows, int64_t cols, int64_t n_batch,
                              int64_t pos);
/* Input gradient as a forward convolution, sample by sample:
 * dx [N, dxs1...] += conv_forward(dy [N, dys1...], w, p) (accumulates);
 * dys1, dxs1 are one sample's shapes (batch 1).  Samples run in parallel
 * (each conv single-threaded) when N > 1.  scratch:
 * grad_conv_dx_scratch_floats(). */
void grad_conv_dx(float *dx, const float *dy, const float *w,
                  const Shape *dys1, const Shape *dxs1, const ConvParams *p,
                  int64_t n_batch, float *scratch);
size_t grad_conv_dx_scratch_floats(const Shape *dys1, const Shape *dxs1,
                                   const ConvParams *p, int64_t n_batch);
/* dst [n] += src [n] (parallel, elementwise). */
void grad_add(float *restrict dst, const float *restrict src, int64_t n);

/* ---- normalisation (norm_grad.c) ---- */

/* Differentiates y = (x - mean) * rstd * scale[c] + bias[c] with mean and
 * rstd = 1/sqrt(var + eps) (population var) per (n, c) over the spatial
 * dims of x [N,C,sp...].  Statistics are recomputed from x in double.
 * dx [N,C,sp...], dscale [C], dbias [C] (accumulates; each may be NULL). */
void instance_norm_backward(float *dx, float *dscale, float *dbias,
                            const float *dy, const float *x,
                            const float *scale, const Shape *xs,
                            const NormParams *p);

/* BatchNorm forward for training.  With p->use_batch_stats: mean and
 * population var per channel over N and spatial dims (double, fixed
 * order), y = (x - mean) * rstd * scale + bias, and the running
 * statistics are updated in place with the PyTorch convention
 *   running_mean = (1 - momentum) * running_mean + momentum * mean
 *   running_var  = (1 - momentum) * running_var + momentum * var_unbiased
 * (var_unbiased = var * M / (M - 1), M = N * spatial; var itself if M = 1).
 * Without it (frozen statistics): y uses running_mean/var, which are left
 * unchanged.  Either way save_mean [C] and save_rstd [C] receive the mean
 * and 1/sqrt(var + eps) that y used (overwritten), for the backward.
 * y, x [N,C,sp...]; scale, bias, running_mean, running_var [C]. */
void batch_norm_forward_train(float *y, float *save_mean, float *save_rstd,
                              float *running_mean, float *running_var,
                              const float *x, const float *scale,
                              const float *bias, const Shape *xs,
                              const NormParams *p);
/* Differentiates y = (x - mean) * rstd * scale[c] + bias[c], where mean and
 * rstd are the batch statistics of x when p->use_batch_stats (so they
 * depend on x), constants otherwise.  save_mean, save_rstd [C] come from
 * batch_norm_forward_train.  dx [N,C,sp...], dscale [C], dbias [C]
 * (accumulates; each may be NULL). */
void batch_norm_backward(float *dx, float *dscale, float *dbias,
                         const float *dy, const float *x, const float *scale,
                         const float *save_mean, const float *save_rstd,
                         const Shape *xs, const NormParams *p);

/* ---- activations (activation_grad.c, softmax_grad.c) ---- */

/* Differentiates y = max(x, 0) from its output y: dx += dy where y > 0.
 * At x == 0 the gradient is 0, as in PyTorch (threshold_backward on the
 * result).  dx, dy, y [n] (accumulates). */
void relu_backward(float *dx, const float *dy, const float *y, int64_t n);
/* Differentiates y = x > 0 ? x : alpha * x: dx += dy * (x > 0 ? 1 : alpha).
 * At x == 0 the slope is alpha, as in PyTorch's leaky_relu_backward.
 * dx, dy, x [n] (accumulates). */
void leaky_relu_backward(float *dx, const float *dy, const float *x,
                         int64_t n, const ActParams *p);
/* Differentiates y = 1 / (1 + exp(-x)) from its output:
 * dx += dy * y * (1 - y).  dx, dy, y [n] (accumulates). */
void sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n);
/* Differentiates y = exp(x) / sum_axis exp(x) from its output y:
 * dx += y * (dy - sum_axis(dy * y)), the sum over the softmax axis (over
 * all dims from axis on when p->flatten), in double, fixed order.
 * dx, dy, y [xs] (accumulates). */
void softmax_backward(float *dx, const float *dy, const float *y,
                      const Shape *xs, const SoftmaxParams *p);

/* ---- Concat, Add (concat_grad.c) ---- */

/* Differentiates y = concat(x[0..n_in-1], axis): dx[i] += the slice of dy
 * [ys] that x[i] [xs[i]] occupies.  dx[i] may be NULL (accumulates). */
void concat_backward(float *const *dx, const float *dy,
                     const Shape *const *xs, int n_in, const ConcatParams *p);
/* Differentiates y = a + b with b broadcast to a's shape (numpy rules,
 * b's dims <= a's): da [as] += dy; db [bs] += dy summed over the dims
 * that b broadcasts (fixed order, double).  da or db may be NULL
 * (accumulates). */
void add_backward(float *da, float *db, const float *dy, const Shape *as,
                  const Shape *bs);

/* ---- pooling (pool_grad.c) ---- */

/* Differentiates y[n,c,o] = max over window taps
 * x[n,c,o*stride - pad_lo + k*dilation] (taps outside x skipped): dy is
 * routed to the arg-max, recomputed from x, ties to the first tap in scan
 * order (strict >), as the forward and PyTorch do.
 * dx, x [N,C,in...], dy [N,C,out...] (accumulates). */
void max_pool_backward(float *dx, const float *dy, const float *x,
                       const Shape *xs, const Shape *ys, const PoolParams *p);
/* Differentiates y[n,c,o] = sum over taps inside x / divisor, where the
 * divisor counts the taps inside x, or with p->count_include_pad the taps
 * inside the padded extent [-pad_lo, in + pad_hi) (taps a ceil_mode window
 * puts beyond that do not count, as in PyTorch).  AveragePool has no
 * dilation: p->dilation is ignored, as in the forward.
 * dx [N,C,in...], dy [N,C,out...] (accumulates). */
void avg_pool_backward(float *dx, const float *dy, const Shape *xs,
                       const Shape *ys, const PoolParams *p);

/* ---- Resize (resize_grad.c) ---- */

/* Differentiates y = resize(x) (nearest or linear, ONNX coordinate
 * transforms with out/in as the scale): the transpose of the
 * interpolation, dx[src] += weight * dy[dst], parallel over (n, c)
 * planes, fixed order within a plane.
 * dx [N,C,in...], dy [N,C,out...] (accumulates). */
void resize_backward(float *dx, const float *dy, const Shape *xs,
                     const Shape *ys, const ResizeParams *p);

#endif
