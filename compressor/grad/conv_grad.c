/* Conv backward, and the im2col/col2im helpers both conv files share.
 *
 * N batch, IC/OC channels, in.../out... spatial (1 to 3 dims, padded to 3
 * with size-1 dims so 2D and 3D share one path), K kernel, KK = prod(K).
 * Per group g, with ICg = IC/group, OCg = OC/group, R = ICg*KK and P the
 * number of output positions:
 *   dw_g [OCg, R]  += dy_g [OCg, P] * col [R, P]^T   (col = im2col(x))
 *   dcol [R, P]     = w_g [OCg, R]^T * dy_g [OCg, P]; dx_g += col2im(dcol)
 * P is cut into tiles of CONV_GRAD_TILE_P columns so the scratch stays
 * bounded on large 3D volumes.
 */
#include "compressor/grad/grad.h"

#include "runtime/common.h"
#include "runtime/ops/ops.h"

/* Columns per im2col tile: 4096 positions x R rows keeps a tile of a
 * 32-channel 3x3x3 conv (R = 864) at 14 MB, large enough that gemm runs
 * on long rows, small enough that a 3D patch never needs P x R floats. */
#define CONV_GRAD_TILE_P 4096

static int64_t prod3(const int64_t *v)
{
    return v[0] * v[1] * v[2];
}

void grad_geom_init(GradGeom *gm, const Shape *src, const Shape *dst,
                    const ConvParams *p)
{
    CHECK(p->nsp >= 1 && p->nsp <= 3);
    CHECK(src->ndim == 2 + p->nsp && dst->ndim == 2 + p->nsp);
    for (int d = 0; d < 3; d++) {
        int used = d < p->nsp;
        gm->src[d] = used ? src->d[2 + d] : 1;
        gm->dst[d] = used ? dst->d[2 + d] : 1;
        gm->k[d] = used ? p->kernel[d] : 1;
        gm->stride[d] = used ? p->stride[d] : 1;
        gm->dil[d] = used ? p->dilation[d] : 1;
        gm->pad[d] = used ? p->pad_lo[d] : 0;
    }
}

/* col: [nc*KK, p1-p0]; src: [nc, src...]. */
void grad_im2col(float *col, const float *src, const GradGeom *gm, int nc,
                 int64_t p0, int64_t p1)
{
    const int64_t t = p1 - p0, srcsz = prod3(gm->src);
    const int kk = gm->k[0] * gm->k[1] * gm->k[2];
    const int64_t rows = (int64_t)nc * kk;
    /* Each thread writes whole rows (one channel and tap) of col. */
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int c = (int)(r / kk), k = (int)(r % kk);
        int k2 = k % gm->k[2], k1 = (k / gm->k[2]) % gm->k[1];
        int k0 = k / (gm->k[2] * gm->k[1]);
        const float *s = src + c * srcsz;
        float *out = col + r * t;
        int64_t o2 = p0 % gm->dst[2], o1 = (p0 / gm->dst[2]) % gm->dst[1];
        int64_t o0 = p0 / (gm->dst[2] * gm->dst[1]);
        for (int64_t pi = 0; pi < t; pi++) {
            int64_t i0 =
                o0 * gm->stride[0] - gm->pad[0] + (int64_t)k0 * gm->dil[0];
            int64_t i1 =
                o1 * gm->stride[1] - gm->pad[1] + (int64_t)k1 * gm->dil[1];
            int64_t i2 =
                o2 * gm->stride[2] - gm->pad[2] + (int64_t)k2 * gm->dil[2];
            int in = i0 >= 0 && i0 < gm->src[0] && i1 >= 0 &&
                     i1 < gm->src[1] && i2 >= 0 && i2 < gm->src[2];
            out[pi] = in ? s[(i0 * gm->src[1] + i1) * gm->src[2] + i2] : 0.0f;
            if (++o2 == gm->dst[2]) {
                o2 = 0;
                if (++o1 == gm->dst[1]) {
                    o1 = 0;
                    o0++;
                }
            }
        }
    }
}

/* dsrc: [nc, src...] (accumulates); col: [nc*KK, p1-p0]. */
void grad_col2im(float *dsrc, const float *col, const GradGeom *gm, int nc,
                 int64_t p0, int64_t p1)
{
    const int64_t t = p1 - p0, srcsz = prod3(gm->src);
    const int kk = gm->k[0] * gm->k[1] * gm->k[2];
    /* A channel's plane of dsrc is written only from that channel's rows,
     * so channels are independent; within one the order is fixed. */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc; c++) {
        float *d = dsrc + c * srcsz;
        for (int k = 0; k < kk; k++) {
            int k2 = k % gm->k[2], k1 = (k / gm->k[2]) % gm->k[1];
            int k0 = k / (gm->k[2] * gm->k[1]);
            const float *in = col + ((int64_t)c * kk + k) * t;
            int64_t o2 = p0 % gm->dst[2], o1 = (p0 / gm->dst[2]) % gm->dst[1];
            int64_t o0 = p0 / (gm->dst[2] * gm->dst[1]);
            for (int64_t pi = 0; pi < t; pi++) {
                int64_t i0 = o0 * gm->stride[0] - gm->pad[0] +
                             (int64_t)k0 * gm->dil[0];
                int64_t i1 = o1 * gm->stride[1] - gm->pad[1] +
                             (int64_t)k1 * gm->dil[1];
                int64_t i2 = o2 * gm->stride[2] - gm->pad[2] +
                             (int64_t)k2 * gm->dil[2];
                if (i0 >= 0 && i0 < gm->src[0] && i1 >= 0 &&
                    i1 < gm->src[1] && i2 >= 0 && i2 < gm->src[2])
                    d[(i0 * gm->src[1] + i1) * gm->src[2] + i2] += in[pi];
                if (++o2 == gm->dst[2]) {
                    o2 = 0;
                    if (++o1 == gm->dst[1]) {
                        o1 = 0;
                        o0++;
                    }
                }
            }
        }
    }
}

/* db [C] (accumulates); dy [N,C,sp...]. */
void grad_bias(float *db, const float *dy, const Shape *ys)
{
    const int64_t n_batch = ys->d[0], c_count = ys->d[1];
    const int64_t sp = shape_numel(ys) / (n_batch * c_count);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < c_count; c++) {
        double s = 0;
        for (int64_t n = 0; n < n_batch; n++) {
            const float *v = dy + (n * c_count + c) * sp;
            for (int64_t i = 0; i < sp; i++)
                s += (double)v[i];
        }
        db[c] += (float)s;
    }
}

static int64_t tile_cols(int64_t positions)
{
    return positions < CONV_GRAD_TILE_P ? positions : CONV_GRAD_TILE_P;
}

/* Pack floats for the two gemm shapes of conv_backward, for a tile of t
 * columns. */
static size_t pack_floats(int64_t rows, int64_t ocg, int64_t t)
{
    size_t a = gemm_pack_floats((int)ocg, (int)rows, (int)t);
    size_t b = gemm_pack_floats((int)rows, (int)t, (int)ocg);
    return a > b ? a : b;
}

size_t conv_backward_scratch_floats(const Shape *xs, const Shape *ys,
                                    const ConvParams *p)
{
    int64_t kk = 1, pos = 1;
    for (int d = 0; d < p->nsp; d++) {
        kk *= p->kernel[d];
        pos *= ys->d[2 + d];
    }
    int64_t rows = xs->d[1] / p->group * kk;
    int64_t ocg = ys->d[1] / p->group;
    int64_t tile = tile_cols(pos), last = pos % tile ? pos % tile : tile;
    size_t pa = pack_floats(rows, ocg, tile),
           pb = pack_floats(rows, ocg, last);
    /* one im2col tile, reused for col(x) and dcol, plus gemm packing */
    return (size_t)(rows * tile) + (pa > pb ? pa : pb);
}

/* dx, x [N,IC,in...]; dw, w [OC,IC/g,K...]; db [OC]; dy [N,OC,out...];
 * scratch: conv_backward_scratch_floats().  Accumulates. */
void conv_backward(float *dx, float *dw, float *db, const float *dy,
                   const float *x, const float *w, const Shape *xs,
                   const Shape *ys, const ConvParams *p, float *scratch)
{
    GradGeom gm;
    grad_geom_init(&gm, xs, ys, p);
    const int64_t n_batch = xs->d[0], ic = xs->d[1], oc = ys->d[1];
    const int group = p->group;
    CHECK(group >= 1 && ic % group == 0 && oc % group == 0);
    const int icg = (int)(ic / group), ocg = (int)(oc / group);
    const int64_t kk = (int64_t)gm.k[0] * gm.k[1] * gm.k[2];
    const int64_t rows = icg * kk, pin = prod3(gm.src), pos = prod3(gm.dst);
    const int64_t tile = tile_cols(pos);
    /* gemm takes int sizes */
    CHECK(rows <= INT32_MAX && pos <= INT32_MAX);
    float *col = scratch, *pack = scratch + rows * tile;

    if (db) grad_bias(db, dy, ys);
    if (!dx && !dw) return;
    for (int g = 0; g < group; g++) {
        float *dw_g = dw ? dw + (int64_t)g * ocg * rows : NULL;
        const float *w_g = w + (int64_t)g * ocg * rows;
        for (int64_t n = 0; n < n_batch; n++) {
            const float *dy_g = dy + (n * oc + (int64_t)g * ocg) * pos;
            const float *x_g = x + (n * ic + (int64_t)g * icg) * pin;
            float *dx_g = dx ? dx + (n * ic + (int64_t)g * icg) * pin : NULL;
            for (int64_t p0 = 0; p0 < pos; p0 += tile) {
                int64_t p1 = p0 + tile < pos ? p0 + tile : pos;
                int t = (int)(p1 - p0);
                if (dw_g) {
                    /* dw_g [OCg,R] += dy_g [OCg,t] * col [R,t]^T */
                    grad_im2col(col, x_g, &gm, icg, p0, p1);
                    gemm_t(dw_g, dy_g + p0, col, ocg, (int)rows, t, (int)pos,
                           t, (int)rows, 0, 1, 1, pack);
                }
                if (dx_g) {
                    /* dcol [R,t] = w_g [OCg,R]^T * dy_g [OCg,t] */
                    gemm_t(col, w_g, dy_g + p0, (int)rows, t, ocg, (int)rows,
                           (int)pos, t, 1, 0, 0, pack);
                    grad_col2im(dx_g, col, &gm, icg, p0, p1);
                }
            }
        }
    }
}
