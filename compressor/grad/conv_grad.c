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
 * P is cut into tiles of about GRAD_COL_FLOATS / R columns so the
 * scratch stays bounded on large 3D volumes.
 */
#include "compressor/grad/grad.h"

#include <omp.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/ops/ops.h"

/* Columns per im2col tile: about GRAD_COL_FLOATS floats of col (4 MiB,
 * a few times this machine's L2, so the GEMM re-reads it from L3 at
 * worst), in multiples of 256 columns (the GEMM's k block) between 256
 * and 4096; fewer on small grids. */
#define GRAD_COL_FLOATS (1 << 20)
#define GRAD_TILE_MIN 256
#define GRAD_TILE_MAX 4096
/* dW is summed in at most this many fixed chunks of (sample, tile) units,
 * each a single-threaded GEMM into its own partial sum, the partials then
 * added in chunk order: a fixed order for any thread count, and one
 * parallel region per call instead of a fork/join per tile (which on a
 * busy machine cost more than the arithmetic). */
#define GRAD_DW_CHUNKS 8

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

static void line_begin(LineIter *it, const ConvGeom *gm, int64_t p0)
{
    it->o2 = p0 % gm->out[2];
    it->o1 = (p0 / gm->out[2]) % gm->out[1];
    it->o0 = p0 / ((int64_t)gm->out[2] * gm->out[1]);
    it->pi = 0;
}

/* Row index into src [src0, src1, src2] for the current line, or -1. */
static int64_t line_row(const LineIter *it, const ConvGeom *gm, int k0,
                        int k1)
{
    int64_t i0 = it->o0 * gm->s[0] - gm->pad[0] + (int64_t)k0 * gm->d[0];
    int64_t i1 = it->o1 * gm->s[1] - gm->pad[1] + (int64_t)k1 * gm->d[1];
    if (i0 < 0 || i0 >= gm->in[0] || i1 < 0 || i1 >= gm->in[1]) return -1;
    return (i0 * gm->in[1] + i1) * gm->in[2];
}

static void line_next(LineIter *it, const ConvGeom *gm, int64_t len)
{
    it->pi += len;
    it->o2 = 0;
    if (++it->o1 == gm->out[1]) {
        it->o1 = 0;
        it->o0++;
    }
}

/* col: [nc*KK, p1-p0]; src: [nc, src...]. */
void grad_im2col(float *col, const float *src, const ConvGeom *gm, int nc,
                 int64_t p0, int64_t p1)
{
    const int64_t t = p1 - p0, srcsz = gm->in_sp;
    const int kk = gm->k[0] * gm->k[1] * gm->k[2];
    const int64_t rows = (int64_t)nc * kk, s2 = gm->s[2];
    /* Each thread writes whole rows (one channel and tap) of col. */
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int c = (int)(r / kk), k = (int)(r % kk);
        int k2 = k % gm->k[2], k1 = (k / gm->k[2]) % gm->k[1];
        int k0 = k / (gm->k[2] * gm->k[1]);
        int64_t off = (int64_t)k2 * gm->d[2] - gm->pad[2];
        const float *s = src + c * srcsz;
        float *out = col + r * t;
        /* every whole line of this tap has the same inside range */
        int64_t full_lo, full_hi;
        line_range(0, gm->out[2], s2, off, gm->in[2], &full_lo, &full_hi);
        LineIter it;
        line_begin(&it, gm, p0);
        while (it.pi < t) {
            int64_t len = gm->out[2] - it.o2, lo = 0, hi = 0;
            if (len > t - it.pi) len = t - it.pi;
            int64_t row = line_row(&it, gm, k0, k1);
            if (row >= 0 && it.o2 == 0 && len == gm->out[2]) {
                lo = full_lo;
                hi = full_hi;
            } else if (row >= 0) {
                line_range(it.o2, len, s2, off, gm->in[2], &lo, &hi);
            }
            float *o = out + it.pi;
            if (lo > 0) memset(o, 0, (size_t)lo * sizeof(float));
            if (hi > lo) {
                /* index, not pointer: base + j stays inside for j >= lo */
                int64_t base = row + it.o2 * s2 + off;
                if (s2 == 1) /* memcpy: the plain loop stays scalar */
                    memcpy(o + lo, s + base + lo,
                           (size_t)(hi - lo) * sizeof(float));
                else
                    for (int64_t j = lo; j < hi; j++)
                        o[j] = s[base + j * s2];
            }
            if (len > hi)
                memset(o + hi, 0, (size_t)(len - hi) * sizeof(float));
            line_next(&it, gm, len);
        }
    }
}

/* dsrc: [nc, src...] (accumulates); col: [nc*KK, p1-p0]. */
void grad_col2im(float *dsrc, const float *col, const ConvGeom *gm, int nc,
                 int64_t p0, int64_t p1)
{
    const int64_t t = p1 - p0, srcsz = gm->in_sp;
    const int kk = gm->k[0] * gm->k[1] * gm->k[2];
    const int64_t s2 = gm->s[2];
    /* A channel's plane of dsrc is written only from that channel's rows,
     * so channels are independent; within one the order is fixed. */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc; c++) {
        float *d = dsrc + c * srcsz;
        for (int k = 0; k < kk; k++) {
            int k2 = k % gm->k[2], k1 = (k / gm->k[2]) % gm->k[1];
            int k0 = k / (gm->k[2] * gm->k[1]);
            int64_t off = (int64_t)k2 * gm->d[2] - gm->pad[2];
            const float *in = col + ((int64_t)c * kk + k) * t;
            LineIter it;
            line_begin(&it, gm, p0);
            while (it.pi < t) {
                int64_t len = gm->out[2] - it.o2, lo = 0, hi = 0;
                if (len > t - it.pi) len = t - it.pi;
                int64_t row = line_row(&it, gm, k0, k1);
                if (row >= 0) {
                    line_range(it.o2, len, s2, off, gm->in[2], &lo, &hi);
                    int64_t base = row + it.o2 * s2 + off;
                    const float *ir = in + it.pi;
                    /* simd: col and dsrc are different buffers */
                    if (s2 == 1)
#pragma omp simd
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
        double s =
            ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        db[c] += (float)s;
    }
}

static size_t round16(size_t n)
{
    return (n + 15) / 16 * 16;
}

/* Tile width for an im2col of `rows` rows over `positions` columns. */
static int64_t grad_tile(int64_t rows, int64_t positions)
{
    int64_t t = GRAD_COL_FLOATS / (rows > 0 ? rows : 1);
    t = t / GRAD_TILE_MIN * GRAD_TILE_MIN;
    if (t < GRAD_TILE_MIN) t = GRAD_TILE_MIN;
    if (t > GRAD_TILE_MAX) t = GRAD_TILE_MAX;
    return positions < t ? positions : t;
}

/* dst [n] += src [n]. */
void grad_add(float *restrict dst, const float *restrict src, int64_t n)
{
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++)
        dst[i] += src[i];
}

/* ---- dW ----
 * dwT [R, cols] = sum over samples and tiles of col [R, t] * b [cols, t]^T,
 * then dw [cols, R] += dwT^T.  col is the GEMM's A, read in place (full
 * row panels are never packed); only b (cols x t floats per row block)
 * goes through the transposing packer.  Computing dw directly would make
 * col^T the B operand and transpose all R x t of it: that packing was
 * the costliest part of this backward. */

typedef struct {
    int64_t rows, cols, pos, n_batch, tile, n_tiles, units;
    int chunks;
    size_t part, col, pack; /* floats per partial, col and pack slot */
} DwPlan;

static void dw_plan(DwPlan *d, int64_t rows, int64_t cols, int64_t n_batch,
                    int64_t pos)
{
    d->rows = rows;
    d->cols = cols;
    d->pos = pos;
    d->n_batch = n_batch;
    d->tile = grad_tile(rows, pos);
    d->n_tiles = (pos + d->tile - 1) / d->tile;
    d->units = n_batch * d->n_tiles;
    d->chunks = d->units < GRAD_DW_CHUNKS ? (int)d->units : GRAD_DW_CHUNKS;
    int64_t last = pos - (d->n_tiles - 1) * d->tile;
    size_t pa = gemm_pack_floats((int)rows, (int)cols, (int)d->tile),
           pb = gemm_pack_floats((int)rows, (int)cols, (int)last);
    d->part = round16((size_t)(rows * cols));
    /* col [R, tile], then b's tile transposed, bt [tile, cols] */
    d->col =
        round16((size_t)(rows * d->tile)) + round16((size_t)(d->tile * cols));
    d->pack = round16(pa > pb ? pa : pb);
}

/* Threads for the chunk loop: no more than processors (as gemm), since
 * the slots below are sized by the processor count. */
static int dw_threads(void)
{
    int t = omp_get_max_threads(), p = omp_get_num_procs();
    return t < p ? t : p;
}

/* Slots of col + pack: one per thread when chunks run in parallel. */
static int dw_slots(const DwPlan *d)
{
    int procs = omp_get_num_procs();
    return d->chunks > 1 ? (procs > 0 ? procs : 1) : 1;
}

size_t grad_dw_scratch_floats(int64_t rows, int64_t cols, int64_t n_batch,
                              int64_t pos)
{
    DwPlan d;
    dw_plan(&d, rows, cols, n_batch, pos);
    return (size_t)(d.chunks > 0 ? d.chunks : 1) * d.part +
           (size_t)dw_slots(&d) * (d.col + d.pack);
}

/* dst [i, j] (+)= src [j, i] for i in [i0, i1), j in [j0, j1), in
 * 16 x 16 blocks so that both sides are read in whole cache lines; ldd and
 * lds are the row lengths of dst and src */
static void transpose16(float *dst, int64_t ldd, const float *src,
                        int64_t lds, int64_t i0, int64_t i1, int64_t j0,
                        int64_t j1, int accumulate)
{
    for (int64_t jb = j0; jb < j1; jb += 16) {
        int64_t je = jb + 16 < j1 ? jb + 16 : j1;
        for (int64_t ib = i0; ib < i1; ib += 16) {
            int64_t ie = ib + 16 < i1 ? ib + 16 : i1;
            /* the mode is tested per block, not per element; the
             * read-modify-write runs along dst rows */
            if (accumulate)
                for (int64_t i = ib; i < ie; i++)
                    for (int64_t j = jb; j < je; j++)
                        dst[i * ldd + j] += src[j * lds + i];
            else
                for (int64_t j = jb; j < je; j++)
                    for (int64_t i = ib; i < ie; i++)
                        dst[i * ldd + j] = src[j * lds + i];
        }
    }
}

/* Units [u0, u1) (unit = sample * n_tiles + tile) into part [R, cols]
 * (overwritten); col, pack: this thread's slot. */
static void dw_units(float *part, float *col, float *pack, const DwPlan *d,
                     const ConvGeom *gm, const float *src, int64_t src_n,
                     int nc, const float *b, int64_t b_n, int64_t u0,
                     int64_t u1)
{
    float *bt = col + round16((size_t)(d->rows * d->tile));
    const int64_t cols = d->cols;
    for (int64_t u = u0; u < u1; u++) {
        int64_t n = u / d->n_tiles, p0 = u % d->n_tiles * d->tile;
        int64_t p1 = p0 + d->tile < d->pos ? p0 + d->tile : d->pos;
        int t = (int)(p1 - p0);
        grad_im2col(col, src + n * src_n, gm, nc, p0, p1);
        /* bt [t, cols] = b_n [cols, p0:p1]^T once, in 16 x 16 blocks:
         * the GEMM then packs B with row copies, where its transposing
         * packer would redo this for every row block of col */
        transpose16(bt, cols, b + n * b_n + p0, d->pos, 0, t, 0, cols, 0);
        /* part [R,cols] (+)= col [R,t] * bt [t,cols] */
        gemm(part, col, bt, (int)d->rows, (int)cols, t, t, (int)cols,
             (int)cols, u > u0, pack);
    }
}

/* dw [cols, R] (accumulates) += sum over n of (im2col(src_n) [R, P] *
 * b_n [cols, P]^T)^T, R = nc * KK, P = gm->out_sp.  src_n = src +
 * n*src_n: [nc, gm->in...]; b_n = b + n*b_n: [cols, P].  scratch:
 * grad_dw_scratch_floats(R, cols, n_batch, P). */
void grad_dw(float *dw, const float *src, int64_t src_n, int nc,
             const float *b, int64_t b_n, int cols, const ConvGeom *gm,
             int64_t n_batch, float *scratch)
{
    const int64_t kk = (int64_t)gm->k[0] * gm->k[1] * gm->k[2];
    DwPlan d;
    dw_plan(&d, nc * kk, cols, n_batch, gm->out_sp);
    if (d.units < 1) return;
    CHECK(d.rows <= INT32_MAX && d.pos <= INT32_MAX); /* gemm takes int */
    float *slots = scratch + (size_t)d.chunks * d.part;
    if (d.chunks == 1) {
        /* one unit: the GEMM itself runs in parallel */
        dw_units(scratch, slots, slots + d.col, &d, gm, src, src_n, nc, b,
                 b_n, 0, d.units);
    } else {
        /* chunk c owns units [c*U/C, (c+1)*U/C); nested regions inside
         * (im2col, gemm) run on the calling thread alone */
#pragma omp parallel for schedule(static) num_threads(dw_threads())
        for (int c = 0; c < d.chunks; c++) {
            float *slot =
                slots + (size_t)omp_get_thread_num() * (d.col + d.pack);
            /* this thread's nested calls plan for one thread: gemm then
             * cuts fewer tiles, each of which would repack B */
            omp_set_num_threads(1);
            dw_units(scratch + (size_t)c * d.part, slot, slot + d.col, &d, gm,
                     src, src_n, nc, b, b_n, d.units * c / d.chunks,
                     d.units * (c + 1) / d.chunks);
        }
    }
    /* part_0 += part_1, += part_2, ... (chunks in order, contiguous),
     * then dw [o, r] += part_0 [r, o] in 16 x 16 blocks so that both
     * sides are read in whole cache lines */
    const int64_t rows = d.rows, total = rows * cols;
    const int chunks = d.chunks, nthr = dw_threads();
    const size_t part = d.part;
#pragma omp parallel num_threads(nthr)
    {
#pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < total; i0 += 1024) {
            int64_t i1 = i0 + 1024 < total ? i0 + 1024 : total;
            for (int c = 1; c < chunks; c++) {
                const float *pc = scratch + (size_t)c * part;
#pragma omp simd
                for (int64_t i = i0; i < i1; i++)
                    scratch[i] += pc[i];
            }
        }
#pragma omp for schedule(static)
        for (int64_t o0 = 0; o0 < cols; o0 += 16)
            transpose16(dw, rows, scratch, cols, o0,
                        o0 + 16 < cols ? o0 + 16 : cols, 0, rows, 1);
    }
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

/* ---- dx += conv_forward(dy, w) sample by sample ----
 * With two or more samples, each thread takes whole samples and runs the
 * forward conv single-threaded (its parallel region nests, so it gets a
 * team of one) into its own temporary and scratch slot: no barriers
 * inside, which on a busy machine is worth more than the conv's own
 * load balance.  One sample: the conv runs in parallel as usual.  Each
 * sample's result is the same either way (conv_forward does not depend
 * on the thread count), so dx does not either. */

static int dx_slots(int64_t n_batch)
{
    int procs = omp_get_num_procs();
    return n_batch > 1 && procs > 1 ? procs : 1;
}

static size_t dx_slot_floats(const Shape *dys1, const Shape *dxs1,
                             const ConvParams *p)
{
    return round16((size_t)shape_numel(dxs1)) +
           round16(conv_scratch_floats(dys1, dxs1, p));
}

size_t grad_conv_dx_scratch_floats(const Shape *dys1, const Shape *dxs1,
                                   const ConvParams *p, int64_t n_batch)
{
    return (size_t)dx_slots(n_batch) * dx_slot_floats(dys1, dxs1, p);
}

/* dx [N, dxs1...] += conv_forward(dy [N, dys1...], w, p) per sample;
 * dys1, dxs1 one sample's shapes (batch 1); scratch
 * grad_conv_dx_scratch_floats(). */
void grad_conv_dx(float *dx, const float *dy, const float *w,
                  const Shape *dys1, const Shape *dxs1, const ConvParams *p,
                  int64_t n_batch, float *scratch)
{
    const int64_t in_n = shape_numel(dxs1), out_n = shape_numel(dys1);
    const size_t slot = dx_slot_floats(dys1, dxs1, p);
    const size_t tmp_floats = round16((size_t)in_n);
    if (dx_slots(n_batch) == 1) {
        for (int64_t n = 0; n < n_batch; n++) {
            conv_forward(scratch, dy + n * out_n, w, NULL, dys1, dxs1, p,
                         scratch + tmp_floats);
            grad_add(dx + n * in_n, scratch, in_n);
        }
        return;
    }
    int nthr = dw_threads();
    if (nthr > n_batch) nthr = (int)n_batch;
#pragma omp parallel for schedule(static) num_threads(nthr)
    for (int64_t n = 0; n < n_batch; n++) {
        float *tmp = scratch + (size_t)omp_get_thread_num() * slot;
        omp_set_num_threads(1); /* nested calls plan for one thread */
        conv_forward(tmp, dy + n * out_n, w, NULL, dys1, dxs1, p,
                     tmp + tmp_floats);
        float *d = dx + n * in_n;
#pragma omp simd
        for (int64_t i = 0; i < in_n; i++)
            d[i] += tmp[i];
    }
}

/* Scratch: wf [IC, OCg, K...], then grad_conv_dx's. */
static size_t flip_scratch(const FlipConv *f, int64_t n_batch)
{
    size_t wf = (size_t)(f->out.d[1] * (f->in.d[1] / f->p.group) * f->kk);
    return round16(wf) +
           grad_conv_dx_scratch_floats(&f->in, &f->out, &f->p, n_batch);
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
    float *wf = scratch;
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
    grad_conv_dx(dx, dy, wf, &f->in, &f->out, &f->p, n_batch,
                 wf + round16((size_t)(ic * ocg * kk)));
}

/* Strided dX, one slot: dcol [R, t] and packing for the GEMM on t
 * columns ([R,t,OCg]). */
static size_t strided_slot(int64_t rows, int64_t ocg, int64_t pos)
{
    int64_t t = grad_tile(rows, pos), last = pos - (pos - 1) / t * t;
    size_t pa = gemm_pack_floats((int)rows, (int)t, (int)ocg),
           pb = gemm_pack_floats((int)rows, (int)last, (int)ocg);
    return round16((size_t)(rows * t)) + round16(pa > pb ? pa : pb);
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
    /* dW, then dX: they share the scratch */
    size_t dw = grad_dw_scratch_floats(rows, ocg, xs->d[0], pos);
    FlipConv f;
    size_t dx =
        flip_conv_plan(&f, xs, ys, p)
            ? flip_scratch(&f, xs->d[0])
            : (size_t)dx_slots(xs->d[0]) * strided_slot(rows, ocg, pos);
    return dw > dx ? dw : dx;
}

/* dx, x [N,IC,in...]; dw, w [OC,IC/g,K...]; db [OC]; dy [N,OC,out...];
 * scratch: conv_backward_scratch_floats().  Accumulates. */
void conv_backward(float *dx, float *dw, float *db, const float *dy,
                   const float *x, const float *w, const Shape *xs,
                   const Shape *ys, const ConvParams *p, float *scratch)
{
    ConvGeom gm;
    conv_geom_fill(&gm, xs, ys, p);
    const int64_t n_batch = xs->d[0], ic = xs->d[1], oc = ys->d[1];
    const int group = p->group;
    CHECK(group >= 1 && ic % group == 0 && oc % group == 0);
    const int icg = (int)(ic / group), ocg = (int)(oc / group);
    const int64_t kk = (int64_t)gm.k[0] * gm.k[1] * gm.k[2];
    const int64_t rows = icg * kk, pin = gm.in_sp, pos = gm.out_sp;
    /* gemm takes int sizes */
    CHECK(rows <= INT32_MAX && pos <= INT32_MAX);

    if (db) grad_bias(db, dy, ys);
    for (int g = 0; dw && g < group; g++)
        grad_dw(dw + (int64_t)g * ocg * rows, x + (int64_t)g * icg * pin,
                ic * pin, icg, dy + (int64_t)g * ocg * pos, oc * pos, ocg,
                &gm, n_batch, scratch);
    if (!dx) return;
    FlipConv f;
    if (flip_conv_plan(&f, xs, ys, p)) {
        conv_dx_flipped(dx, dy, w, n_batch, &f, scratch);
        return;
    }
    /* Strided: dcol [R,t] = w_g [OCg,R]^T * dy_g [OCg,t]; dx_g +=
     * col2im(dcol).  Samples in parallel when there are several (as in
     * grad_conv_dx: nested regions get one thread, no barriers inside). */
    const int64_t tile = grad_tile(rows, pos);
    const size_t slot = strided_slot(rows, ocg, pos);
    int nthr = dx_slots(n_batch) > 1 ? dw_threads() : 1;
    if (nthr > n_batch) nthr = (int)n_batch;
#pragma omp parallel for schedule(static) num_threads(nthr)
    for (int64_t n = 0; n < n_batch; n++) {
        float *col = scratch + (size_t)omp_get_thread_num() * slot;
        omp_set_num_threads(1); /* nested calls plan for one thread */
        float *pack = col + round16((size_t)(rows * tile));
        for (int g = 0; g < group; g++) {
            const float *w_g = w + (int64_t)g * ocg * rows;
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
