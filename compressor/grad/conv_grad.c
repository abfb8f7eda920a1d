/* Conv backward, and the im2col/col2im helpers both conv files share.
 *
 * N batch, IC/OC channels, in.../out... spatial (1 to 3 dims, padded on
 * the left to 3 with size-1 dims so 2D and 3D share one path), K kernel,
 * KK = prod(K).  Per group g, with ICg = IC/group, OCg = OC/group,
 * R = ICg*KK and P the number of output positions:
 *   dw_g [OCg, R] += (col [R, P] * dy_g [OCg, P]^T)^T    (col = im2col(x))
 *   stride 1:  dx += conv(dy, w flipped, channels swapped)  (forward conv)
 *   otherwise: dcol [R, P] = w_g [OCg, R]^T * dy_g [OCg, P];
 *              dx_g += col2im(dcol)
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
    /* unused dims lead, so the innermost dim is always the model's W and
     * the line loops below run over contiguous memory */
    for (int d = 0; d < 3; d++) {
        int j = d - (3 - p->nsp);
        gm->src[d] = j >= 0 ? src->d[2 + j] : 1;
        gm->dst[d] = j >= 0 ? dst->d[2 + j] : 1;
        gm->k[d] = j >= 0 ? p->kernel[j] : 1;
        gm->stride[d] = j >= 0 ? p->stride[j] : 1;
        gm->dil[d] = j >= 0 ? p->dilation[j] : 1;
        gm->pad[d] = j >= 0 ? p->pad_lo[j] : 0;
    }
}

static int64_t floor_div(int64_t a, int64_t b) /* b > 0 */
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* A "line" is a run of len consecutive positions along the innermost dst
 * dim, starting at o2, for one tap k2.  Its taps read src at
 * (o2 + j) * stride + off, off = k2 * dil - pad; [*lo, *hi) are the j
 * that land inside [0, n). */
static void line_range(int64_t o2, int64_t len, int64_t stride, int64_t off,
                       int64_t n, int64_t *lo, int64_t *hi)
{
    int64_t a = -floor_div(off, stride) - o2; /* ceil(-off/s) - o2 */
    int64_t b = floor_div(n - 1 - off, stride) - o2 + 1;
    *lo = a < 0 ? 0 : a > len ? len : a;
    *hi = b > len ? len : b < *lo ? *lo : b;
}

/* Walks the lines of positions [p0, p1) of the dst grid for tap (k0, k1,
 * k2): for each, the src row it reads (NULL when that row is outside src),
 * the offset pi of the line in the tile, its length and inside range.
 * Shared by im2col and col2im so both visit exactly the same taps. */
typedef struct {
    int64_t o0, o1, o2, pi;
} LineIter;

static void line_begin(LineIter *it, const GradGeom *gm, int64_t p0)
{
    it->o2 = p0 % gm->dst[2];
    it->o1 = (p0 / gm->dst[2]) % gm->dst[1];
    it->o0 = p0 / (gm->dst[2] * gm->dst[1]);
    it->pi = 0;
}

/* Row index into src [src0, src1, src2] for the current line, or -1. */
static int64_t line_row(const LineIter *it, const GradGeom *gm, int k0,
                        int k1)
{
    int64_t i0 =
        it->o0 * gm->stride[0] - gm->pad[0] + (int64_t)k0 * gm->dil[0];
    int64_t i1 =
        it->o1 * gm->stride[1] - gm->pad[1] + (int64_t)k1 * gm->dil[1];
    if (i0 < 0 || i0 >= gm->src[0] || i1 < 0 || i1 >= gm->src[1]) return -1;
    return (i0 * gm->src[1] + i1) * gm->src[2];
}

static void line_next(LineIter *it, const GradGeom *gm, int64_t len)
{
    it->pi += len;
    it->o2 = 0;
    if (++it->o1 == gm->dst[1]) {
        it->o1 = 0;
        it->o0++;
    }
}

/* col: [nc*KK, p1-p0]; src: [nc, src...]. */
void grad_im2col(float *col, const float *src, const GradGeom *gm, int nc,
                 int64_t p0, int64_t p1)
{
    const int64_t t = p1 - p0, srcsz = prod3(gm->src);
    const int kk = gm->k[0] * gm->k[1] * gm->k[2];
    const int64_t rows = (int64_t)nc * kk, s2 = gm->stride[2];
    /* Each thread writes whole rows (one channel and tap) of col. */
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int c = (int)(r / kk), k = (int)(r % kk);
        int k2 = k % gm->k[2], k1 = (k / gm->k[2]) % gm->k[1];
        int k0 = k / (gm->k[2] * gm->k[1]);
        int64_t off = (int64_t)k2 * gm->dil[2] - gm->pad[2];
        const float *s = src + c * srcsz;
        float *out = col + r * t;
        LineIter it;
        line_begin(&it, gm, p0);
        while (it.pi < t) {
            int64_t len = gm->dst[2] - it.o2, lo = 0, hi = 0;
            if (len > t - it.pi) len = t - it.pi;
            int64_t row = line_row(&it, gm, k0, k1);
            if (row >= 0)
                line_range(it.o2, len, s2, off, gm->src[2], &lo, &hi);
            float *o = out + it.pi;
            for (int64_t j = 0; j < lo; j++)
                o[j] = 0.0f;
            if (hi > lo) {
                /* index, not pointer: base + j stays inside for j >= lo */
                int64_t base = row + it.o2 * s2 + off;
                if (s2 == 1)
                    for (int64_t j = lo; j < hi; j++)
                        o[j] = s[base + j];
                else
                    for (int64_t j = lo; j < hi; j++)
                        o[j] = s[base + j * s2];
            }
            for (int64_t j = hi; j < len; j++)
                o[j] = 0.0f;
            line_next(&it, gm, len);
        }
    }
}

/* dsrc: [nc, src...] (accumulates); col: [nc*KK, p1-p0]. */
void grad_col2im(float *dsrc, const float *col, const GradGeom *gm, int nc,
                 int64_t p0, int64_t p1)
{
    const int64_t t = p1 - p0, srcsz = prod3(gm->src);
    const int kk = gm->k[0] * gm->k[1] * gm->k[2];
    const int64_t s2 = gm->stride[2];
    /* A channel's plane of dsrc is written only from that channel's rows,
     * so channels are independent; within one the order is fixed. */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc; c++) {
        float *d = dsrc + c * srcsz;
        for (int k = 0; k < kk; k++) {
            int k2 = k % gm->k[2], k1 = (k / gm->k[2]) % gm->k[1];
            int k0 = k / (gm->k[2] * gm->k[1]);
            int64_t off = (int64_t)k2 * gm->dil[2] - gm->pad[2];
            const float *in = col + ((int64_t)c * kk + k) * t;
            LineIter it;
            line_begin(&it, gm, p0);
            while (it.pi < t) {
                int64_t len = gm->dst[2] - it.o2, lo = 0, hi = 0;
                if (len > t - it.pi) len = t - it.pi;
                int64_t row = line_row(&it, gm, k0, k1);
                if (row >= 0) {
                    line_range(it.o2, len, s2, off, gm->src[2], &lo, &hi);
                    int64_t base = row + it.o2 * s2 + off;
                    const float *ir = in + it.pi;
                    if (s2 == 1)
                        for (int64_t j = lo; j < hi; j++)
                            d[base + j] += ir[j];
                    else
                        for (int64_t j = lo; j < hi; j++)
                            d[base + j * s2] += ir[j];
                }
                line_next(&it, gm, len);
            }
        }
    }
}

/* db [C] (accumulates); dy [N,C,sp...].  Eight interleaved double
 * partial sums per channel (element i of a plane to lane i % 8, planes
 * in order, lanes combined pairwise): a fixed order, and independent add
 * chains instead of one serial chain. */
void grad_bias(float *db, const float *dy, const Shape *ys)
{
    const int64_t n_batch = ys->d[0], c_count = ys->d[1];
    const int64_t sp = shape_numel(ys) / (n_batch * c_count);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < c_count; c++) {
        double a[8] = {0};
        for (int64_t n = 0; n < n_batch; n++) {
            const float *v = dy + (n * c_count + c) * sp;
            for (int64_t i0 = 0; i0 < sp; i0 += 8) {
                int len = sp - i0 < 8 ? (int)(sp - i0) : 8;
                for (int j = 0; j < len; j++)
                    a[j] += (double)v[i0 + j];
            }
        }
        double s = ((a[0] + a[1]) + (a[2] + a[3])) +
                   ((a[4] + a[5]) + (a[6] + a[7]));
        db[c] += (float)s;
    }
}

static int64_t tile_cols(int64_t positions)
{
    return positions < CONV_GRAD_TILE_P ? positions : CONV_GRAD_TILE_P;
}

static size_t round16(size_t n)
{
    return (n + 15) / 16 * 16;
}

/* dst [m, n] += src [n, m]^T; each thread owns whole rows of dst, one add
 * per element, so the result does not depend on the thread count. */
void grad_add_transposed(float *dst, const float *src, int64_t m, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            dst[i * n + j] += src[j * m + i];
}

/* dst [n] += src [n]. */
void grad_add(float *restrict dst, const float *restrict src, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        dst[i] += src[i];
}

/* ---- dW ----
 * dwT [R, OCg] = sum over samples and tiles of col [R, t] * dy_g [OCg, t]^T,
 * then dw_g [OCg, R] += dwT^T once.  col is the GEMM's A, read in place
 * (full row panels are never packed); only dy (OCg x t floats per row
 * block) goes through the transposing packer.  Computing dw_g directly
 * would make col^T the B operand and transpose all R x t of it: that
 * packing was the costliest part of this backward. */

/* Scratch: dwT [R, OCg], col [R, tile], GEMM packing. */
/* Packing for the GEMMs on a tile of t columns: dW's [R,OCg,t] and the
 * strided dX's [R,t,OCg]. */
static size_t pack_floats(int64_t rows, int64_t ocg, int64_t t)
{
    size_t a = gemm_pack_floats((int)rows, (int)ocg, (int)t);
    size_t b = gemm_pack_floats((int)rows, (int)t, (int)ocg);
    return a > b ? a : b;
}

/* Scratch: dwT [R, OCg], col [R, tile], GEMM packing (also what the
 * strided dX path uses, after dwT). */
static size_t dw_scratch(int64_t rows, int64_t ocg, int64_t tile,
                         int64_t last)
{
    size_t pa = pack_floats(rows, ocg, tile), pb = pack_floats(rows, ocg, last);
    return round16((size_t)(rows * ocg)) + (size_t)(rows * tile) +
           (pa > pb ? pa : pb);
}

/* ---- dX as a forward convolution ----
 * With stride 1, dx[n,ic,i] = sum_{oc,k} w[oc,ic,k] *
 * dy[n,oc,i + pad_lo - k*dil], which is conv(dy, wf) with in and out
 * channels swapped and the kernel flipped, wf[ic,oc,KK-1-k] = w[oc,ic,k]
 * (per group), and pads dil*(K-1) - pad.  The runtime's forward conv runs
 * it at GEMM speed with no col2im scatter.  It overwrites, so each sample
 * goes through a temporary that is then added to dx. */

typedef struct {
    ConvParams p;  /* the flipped convolution */
    Shape in, out; /* one sample: [1, OC, out...] -> [1, IC, in...] */
    int64_t kk;
} FlipConv;

/* 0 when the flipped form does not apply (strided, or pads beyond the
 * kernel span): the col2im path then runs. */
static int flip_conv_plan(FlipConv *f, const Shape *xs, const Shape *ys,
                          const ConvParams *p)
{
    f->p = *p;
    f->kk = 1;
    for (int d = 0; d < p->nsp; d++) {
        int span = p->dilation[d] * (p->kernel[d] - 1);
        if (p->stride[d] != 1 || p->pad_lo[d] > span || p->pad_hi[d] > span)
            return 0;
        f->p.pad_lo[d] = span - p->pad_lo[d];
        f->p.pad_hi[d] = span - p->pad_hi[d];
        f->p.out_pad[d] = 0;
        f->kk *= p->kernel[d];
    }
    f->in = *ys;
    f->out = *xs;
    f->in.d[0] = f->out.d[0] = 1;
    return 1;
}

/* Scratch: wf [IC, OCg, K...], one sample's dx, the forward's scratch. */
static size_t flip_scratch(const FlipConv *f)
{
    size_t wf = (size_t)(f->out.d[1] * (f->in.d[1] / f->p.group) * f->kk);
    return round16(wf) + round16((size_t)shape_numel(&f->out)) +
           conv_scratch_floats(&f->in, &f->out, &f->p);
}

/* dx [N,IC,in...] += conv(dy [N,OC,out...], flipped w [OC,ICg,K...]);
 * scratch flip_scratch(f). */
static void conv_dx_flipped(float *dx, const float *dy, const float *w,
                            int64_t n_batch, const FlipConv *f,
                            float *scratch)
{
    const int64_t ic = f->out.d[1], oc = f->in.d[1], kk = f->kk;
    const int group = f->p.group;
    const int64_t icg = ic / group, ocg = oc / group;
    const int64_t in_n = shape_numel(&f->out), out_n = shape_numel(&f->in);
    float *wf = scratch;
    float *tmp = wf + round16((size_t)(ic * ocg * kk));
    float *conv_scratch = tmp + round16((size_t)in_n);
    /* wf row (g, ic) holds, per oc of the group, the reversed taps. */
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < ic; r++) {
        int64_t gi = r / icg, il = r % icg;
        for (int64_t o = 0; o < ocg; o++) {
            const float *src = w + ((gi * ocg + o) * icg + il) * kk;
            float *dst = wf + (r * ocg + o) * kk;
            for (int64_t k = 0; k < kk; k++)
                dst[k] = src[kk - 1 - k];
        }
    }
    for (int64_t n = 0; n < n_batch; n++) {
        conv_forward(tmp, dy + n * out_n, wf, NULL, &f->in, &f->out, &f->p,
                     conv_scratch);
        grad_add(dx + n * in_n, tmp, in_n);
    }
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
    /* dW and dX run one after the other and share the scratch; the col2im
     * dX path needs no more than the dW path (col and packing) */
    size_t dw = dw_scratch(rows, ocg, tile, last);
    FlipConv f;
    size_t dx = flip_conv_plan(&f, xs, ys, p) ? flip_scratch(&f) : 0;
    return dw > dx ? dw : dx;
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
    float *dwt = scratch, *col = dwt + round16((size_t)(rows * ocg));
    float *pack = col + rows * tile;

    if (db) grad_bias(db, dy, ys);
    for (int g = 0; dw && g < group; g++) {
        for (int64_t n = 0; n < n_batch; n++) {
            const float *dy_g = dy + (n * oc + (int64_t)g * ocg) * pos;
            const float *x_g = x + (n * ic + (int64_t)g * icg) * pin;
            for (int64_t p0 = 0; p0 < pos; p0 += tile) {
                int64_t p1 = p0 + tile < pos ? p0 + tile : pos;
                int t = (int)(p1 - p0);
                /* dwT [R,OCg] (+)= col [R,t] * dy_g [OCg,t]^T */
                grad_im2col(col, x_g, &gm, icg, p0, p1);
                gemm_t(dwt, col, dy_g + p0, (int)rows, ocg, t, t, (int)pos,
                       ocg, 0, 1, n > 0 || p0 > 0, pack);
            }
        }
        grad_add_transposed(dw + (int64_t)g * ocg * rows, dwt, ocg, rows);
    }
    if (!dx) return;
    FlipConv f;
    if (flip_conv_plan(&f, xs, ys, p)) {
        conv_dx_flipped(dx, dy, w, n_batch, &f, scratch);
        return;
    }
    /* Strided: dcol [R,t] = w_g [OCg,R]^T * dy_g [OCg,t]; dx_g +=
     * col2im(dcol). */
    for (int g = 0; g < group; g++) {
        const float *w_g = w + (int64_t)g * ocg * rows;
        for (int64_t n = 0; n < n_batch; n++) {
            const float *dy_g = dy + (n * oc + (int64_t)g * ocg) * pos;
            float *dx_g = dx + (n * ic + (int64_t)g * icg) * pin;
            for (int64_t p0 = 0; p0 < pos; p0 += tile) {
                int64_t p1 = p0 + tile < pos ? p0 + tile : pos;
                int t = (int)(p1 - p0);
                gemm_t(col, w_g, dy_g + p0, (int)rows, t, ocg, (int)rows,
                       (int)pos, t, 1, 0, 0, pack);
                grad_col2im(dx_g, col, &gm, icg, p0, p1);
            }
        }
    }
}
