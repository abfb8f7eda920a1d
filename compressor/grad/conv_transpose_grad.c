/* ConvTranspose backward.
 *
 * N batch, IC/OC channels, in.../out... spatial, K kernel, KK = prod(K).
 * The forward scatters: y[n,oc,i*stride - pad_lo + k*dilation] +=
 * w[ic,oc,k] * x[n,ic,i].  Its backward gathers dy at the same positions,
 * which is im2col of dy over the *input* grid.  Per group g, with
 * ICg = IC/group, OCg = OC/group, R = OCg*KK and Pin input positions:
 *   dx_g [ICg, Pin] += w_g [ICg, R] * col [R, Pin]     (col = im2col(dy))
 *   dw_g [ICg, R]   += x_g [ICg, Pin] * col [R, Pin]^T
 * Pin is cut into tiles of CT_GRAD_TILE_P columns to bound the scratch.
 */
#include "compressor/grad/grad.h"

#include "runtime/common.h"
#include "runtime/ops/ops.h"

/* Same reasoning as CONV_GRAD_TILE_P in conv_grad.c. */
#define CT_GRAD_TILE_P 4096

static int64_t tile_cols(int64_t positions)
{
    return positions < CT_GRAD_TILE_P ? positions : CT_GRAD_TILE_P;
}

/* Pack floats for the two gemm shapes, for a tile of t columns. */
static size_t pack_floats(int64_t rows, int64_t icg, int64_t t)
{
    size_t a = gemm_pack_floats((int)icg, (int)t, (int)rows);
    size_t b = gemm_pack_floats((int)icg, (int)rows, (int)t);
    return a > b ? a : b;
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
    int64_t tile = tile_cols(pin), last = pin % tile ? pin % tile : tile;
    size_t pa = pack_floats(rows, icg, tile),
           pb = pack_floats(rows, icg, last);
    return (size_t)(rows * tile) + (pa > pb ? pa : pb);
}

/* dx, x [N,IC,in...]; dw, w [IC,OC/g,K...]; db [OC]; dy [N,OC,out...];
 * scratch: conv_transpose_backward_scratch_floats().  Accumulates. */
void conv_transpose_backward(float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, const Shape *xs,
                             const Shape *ys, const ConvParams *p,
                             float *scratch)
{
    GradGeom gm;
    /* gather from dy (the forward's output grid) at input positions */
    grad_geom_init(&gm, ys, xs, p);
    const int64_t n_batch = xs->d[0], ic = xs->d[1], oc = ys->d[1];
    const int group = p->group;
    CHECK(group >= 1 && ic % group == 0 && oc % group == 0);
    const int icg = (int)(ic / group), ocg = (int)(oc / group);
    const int64_t kk = (int64_t)gm.k[0] * gm.k[1] * gm.k[2];
    const int64_t rows = ocg * kk;
    const int64_t pin = gm.dst[0] * gm.dst[1] * gm.dst[2];
    const int64_t pout = gm.src[0] * gm.src[1] * gm.src[2];
    const int64_t tile = tile_cols(pin);
    CHECK(rows <= INT32_MAX && pin <= INT32_MAX); /* gemm takes int sizes */
    float *col = scratch, *pack = scratch + rows * tile;

    if (db) grad_bias(db, dy, ys);
    if (!dx && !dw) return;
    for (int g = 0; g < group; g++) {
        const float *w_g = w + (int64_t)g * icg * rows;
        float *dw_g = dw ? dw + (int64_t)g * icg * rows : NULL;
        for (int64_t n = 0; n < n_batch; n++) {
            const float *dy_g = dy + (n * oc + (int64_t)g * ocg) * pout;
            const float *x_g = x + (n * ic + (int64_t)g * icg) * pin;
            float *dx_g = dx ? dx + (n * ic + (int64_t)g * icg) * pin : NULL;
            for (int64_t p0 = 0; p0 < pin; p0 += tile) {
                int64_t p1 = p0 + tile < pin ? p0 + tile : pin;
                int t = (int)(p1 - p0);
                grad_im2col(col, dy_g, &gm, ocg, p0, p1);
                /* dx_g [ICg,t] += w_g [ICg,R] * col [R,t] */
                if (dx_g)
                    gemm(dx_g + p0, w_g, col, icg, t, (int)rows, (int)rows, t,
                         (int)pin, 1, pack);
                /* dw_g [ICg,R] += x_g [ICg,t] * col [R,t]^T */
                if (dw_g)
                    gemm_t(dw_g, x_g + p0, col, icg, (int)rows, t, (int)pin,
                           t, (int)rows, 0, 1, 1, pack);
            }
        }
    }
}
