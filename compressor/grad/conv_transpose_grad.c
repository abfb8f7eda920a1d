/* ConvTranspose backward.
 *
 * N batch, IC/OC channels, in.../out... spatial, K kernel, KK = prod(K).
 * The forward scatters: y[n,oc,i*stride - pad_lo + k*dilation] +=
 * w[ic,oc,k] * x[n,ic,i].  Its backward gathers dy at the same positions:
 *   dx[n,ic,i] += sum_{oc,k} w[ic,oc,k] * dy[n,oc,i*stride - pad_lo +
 *                 k*dilation],
 * which is exactly the forward convolution of dy with w read as a conv
 * weight [IC, OC/g, K...] (same stride, pads, dilation, groups), so it
 * runs through the runtime's fast conv_forward.  For dW, with col =
 * im2col(dy) over the *input* grid, per group g (ICg = IC/group,
 * OCg = OC/group, R = OCg*KK, Pin input positions):
 *   dw_g [ICg, R] += (col [R, Pin] * x_g [ICg, Pin]^T)^T
 * (grad_dw in conv_grad.c: col is the GEMM's A, read in place, in
 * bounded tiles).
 */
#include "compressor/grad/grad.h"

#include "runtime/common.h"
#include "runtime/ops/ops.h"

/* One sample's shapes: dy [1,OC,out...] is the conv's input, dx
 * [1,IC,in...] its output. */
static void sample_shapes(Shape *dys, Shape *dxs, const Shape *xs,
                          const Shape *ys)
{
    *dys = *ys;
    *dxs = *xs;
    dys->d[0] = dxs->d[0] = 1;
}

size_t conv_transpose_backward_scratch_floats(const Shape *xs,
                                              const Shape *ys,
                                              const ConvParams *p)
{
    int64_t kk = 1, pin = 1;
    for (int d = 0; d < p->nsp; d++) {
        kk *= p->kernel[d];
        pin *= xs->d[2 + d];
    }
    int64_t rows = ys->d[1] / p->group * kk;
    int64_t icg = xs->d[1] / p->group;
    size_t dw = grad_dw_scratch_floats(rows, icg, xs->d[0], pin);
    /* dX (after dW): one sample's dx, the forward conv's scratch */
    Shape dys, dxs;
    sample_shapes(&dys, &dxs, xs, ys);
    size_t dx = grad_conv_dx_scratch_floats(&dys, &dxs, p, xs->d[0]);
    return dw > dx ? dw : dx;
}

/* dx, x [N,IC,in...]; dw, w [IC,OC/g,K...]; db [OC]; dy [N,OC,out...];
 * scratch: conv_transpose_backward_scratch_floats().  Accumulates. */
void conv_transpose_backward(float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, const Shape *xs,
                             const Shape *ys, const ConvParams *p,
                             float *scratch)
{
    ConvGeom gm;
    /* gather from dy (the forward's output grid) at input positions */
    conv_geom_fill(&gm, ys, xs, p);
    const int64_t n_batch = xs->d[0], ic = xs->d[1], oc = ys->d[1];
    const int group = p->group;
    CHECK(group >= 1 && ic % group == 0 && oc % group == 0);
    const int icg = (int)(ic / group), ocg = (int)(oc / group);
    const int64_t kk = (int64_t)gm.k[0] * gm.k[1] * gm.k[2];
    const int64_t rows = ocg * kk;
    const int64_t pin = gm.out_sp;
    const int64_t pout = gm.in_sp;
    CHECK(rows <= INT32_MAX && pin <= INT32_MAX); /* gemm takes int sizes */

    if (db) grad_bias(db, dy, ys);
    for (int g = 0; dw && g < group; g++)
        grad_dw(dw + (int64_t)g * icg * rows, dy + (int64_t)g * ocg * pout,
                oc * pout, ocg, x + (int64_t)g * icg * pin, ic * pin, icg,
                &gm, n_batch, scratch);
    if (!dx) return;
    Shape dys, dxs;
    sample_shapes(&dys, &dxs, xs, ys);
    grad_conv_dx(dx, dy, w, &dys, &dxs, p, n_batch, scratch);
}
