/* Transposed convolution forward (N-d, groups, stride, dilation, pads,
 * output padding), as ONNX ConvTranspose.
 *
 * Dimension letters: N batch, IC/OC channels (ICg/OCg per group),
 * D H W spatial (padded to 3 dims, see conv_geom.h), K kernel,
 * Pin = input voxels per channel.
 *
 *   y[n, oc, o] = b[oc] + sum_{ic in group, k, i : o = i*s - pad + k*d}
 *                 x[n, ic, i] * w[ic, oc % OCg, k]
 *
 * Fast path, per (sample, group) and per chunk of input columns:
 *   col[OCg*K, chunk] = W^T[OCg*K, ICg] * X[ICg, chunk]     (GEMM)
 * then col2im scatters col into y.  The scatter is parallel over output
 * channels, each thread adding its channels' terms in a fixed order
 * (chunk, kernel offset, input voxel), so results do not depend on the
 * thread count.  When kernel == stride, dilation 1 and no padding
 * (nnU-Net's 2x2 / 2x2x2 upsampling) the kernel footprints tile the
 * output exactly: the scatter is a plain store of bias + col.  Then, with
 * ICg <= GEMM_KC_MAX (one block of depth), there is no col buffer at
 * all: the GEMM hands each finished micro-tile (an L1-sized temporary)
 * to ct_store, which stores bias + tile straight into y (or into the
 * Concat slice y is planned in): the same values, bit for bit, without
 * writing and reading back a column buffer of up to 8 MiB per chunk, and
 * one parallel region per (sample, group) instead of two per chunk.
 */
#include <string.h>

#include "../common.h"
#include "conv_geom.h"
#include "gemm_core.h"
#include "isa.h"
#include "ops.h"

#if SL_ISA_X86
#include <immintrin.h>
#endif

/* Column buffer cap: 2 Mi floats (8 MiB, L3-sized on this machine) so
 * scratch stays bounded for any volume; chunks are multiples of 64
 * columns and at least 64 wide. */
#define CT_COL_FLOATS (1 << 21)
#define CT_MIN_CHUNK 64

static int ct_chunk(const ConvGeom *g)
{
    int64_t m = (int64_t)g->ocg * g->k_sp;
    int64_t c = CT_COL_FLOATS / (m > 0 ? m : 1) / CT_MIN_CHUNK * CT_MIN_CHUNK;
    if (c < CT_MIN_CHUNK) c = CT_MIN_CHUNK;
    if (c > g->in_sp) c = g->in_sp;
    return (int)c;
}

/* Footprints tile the output without overlap or gaps. */
static int ct_is_tiling(const ConvGeom *g)
{
    for (int i = 0; i < 3; i++)
        if (g->k[i] != g->s[i] || (g->d[i] != 1 && g->k[i] != 1) ||
            g->pad[i] != 0 || g->opad[i] != 0 ||
            g->out[i] != g->in[i] * g->s[i])
            return 0;
    return 1;
}

/* Tiling and one block of depth: the GEMM stores into y itself. */
static int ct_direct(const ConvGeom *g)
{
    return ct_is_tiling(g) && g->icg <= GEMM_KC_MAX;
}

size_t conv_transpose_scratch_floats(const Shape *xs, const Shape *ys,
                                     const ConvParams *p)
{
    ConvGeom g;
    conv_geom_fill(&g, xs, ys, p);
    if (ct_direct(&g))
        return gemm_pack_floats((int)(g.ocg * g.k_sp), (int)g.in_sp, g.icg);
    int m = (int)(g.ocg * g.k_sp), nc = ct_chunk(&g);
    return (size_t)m * (size_t)nc + 16 + gemm_pack_floats(m, nc, g.icg);
}

/* y[2i] = bias + a[i], y[2i+1] = bias + b[i] for i < n: one output row
 * of a 2-wide, stride-2 tiling kernel from its two column rows.  Called
 * only when gemm_isa_best() is AVX-512 (never off x86). */
#if SL_ISA_X86
__attribute__((target("avx512f"))) static void
interleave2_avx512(float *restrict y, const float *restrict a,
                   const float *restrict b, float bias, int n)
{
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18,
                                        2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27,
                                        11, 26, 10, 25, 9, 24, 8);
    const __m512 vb = _mm512_set1_ps(bias);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 va = _mm512_add_ps(vb, _mm512_loadu_ps(a + i));
        __m512 vc = _mm512_add_ps(vb, _mm512_loadu_ps(b + i));
        _mm512_storeu_ps(y + 2 * i, _mm512_permutex2var_ps(va, lo, vc));
        _mm512_storeu_ps(y + 2 * i + 16, _mm512_permutex2var_ps(va, hi, vc));
    }
    for (; i < n; i++) {
        y[2 * i] = bias + a[i];
        y[2 * i + 1] = bias + b[i];
    }
}
#else
static void interleave2_avx512(float *restrict y, const float *restrict a,
                               const float *restrict b, float bias, int n)
{
    for (int i = 0; i < n; i++) {
        y[2 * i] = bias + a[i];
        y[2 * i + 1] = bias + b[i];
    }
}
#endif

/* Tiling case with kernel = stride = 2 along W: yg [OCg, out...],
 * col [OCg*K, nc] for input columns j0 .. j0+nc, bg [OCg] or NULL.
 * Each output row is written once, contiguously. */
static void col2im_tiling_w2(float *yg, const float *col, const float *bg,
                             const ConvGeom *g, int j0, int nc)
{
    const int OH = g->out[1], OW = g->out[2];
    const int IH = g->in[1], IW = g->in[2];
#pragma omp parallel for schedule(static) num_threads(gemm_max_threads())
    for (int oc = 0; oc < g->ocg; oc++) {
        float *yc = yg + (size_t)oc * (size_t)g->out_sp;
        float bias = bg ? bg[oc] : 0.0f;
        for (int kz = 0; kz < g->k[0]; kz++)
            for (int ky = 0; ky < g->k[1]; ky++) {
                const float *c0 =
                    col + (((size_t)oc * g->k[0] + kz) * g->k[1] + ky) * 2 *
                              (size_t)nc;
                const float *c1 = c0 + nc;
                int jj = 0, ix = j0 % IW, iy = j0 / IW % IH,
                    iz = j0 / (IW * IH);
                while (jj < nc) {
                    int len = IW - ix < nc - jj ? IW - ix : nc - jj;
                    int oz = iz * g->s[0] + kz, oy = iy * g->s[1] + ky;
                    float *yr = yc + ((size_t)oz * OH + oy) * OW + 2 * ix;
                    interleave2_avx512(yr, c0 + jj, c1 + jj, bias, len);
                    jj += len;
                    ix = 0;
                    if (++iy == IH) {
                        iy = 0;
                        iz++;
                    }
                }
            }
    }
}

/* Scatter one chunk of columns [j0, j0+nc) into y.
 * yg [OCg, out...] of one (sample, group); col [OCg*K, nc];
 * assign: tiling case, store b + col (every output written exactly once);
 * otherwise add col into y (already holding the bias). */
static void col2im_chunk(float *yg, const float *col, const float *bg,
                         const ConvGeom *g, int j0, int nc, int assign)
{
    const int OD = g->out[0], OH = g->out[1], OW = g->out[2];
    const int IH = g->in[1], IW = g->in[2];
#pragma omp parallel for schedule(static) num_threads(gemm_max_threads())
    for (int oc = 0; oc < g->ocg; oc++) {
        float *yc = yg + (size_t)oc * (size_t)g->out_sp;
        float bias = bg ? bg[oc] : 0.0f;
        for (int kz = 0; kz < g->k[0]; kz++)
            for (int ky = 0; ky < g->k[1]; ky++)
                for (int kx = 0; kx < g->k[2]; kx++) {
                    const float *cr =
                        col +
                        (((size_t)oc * g->k[0] + kz) * g->k[1] + ky) *
                            g->k[2] * nc +
                        (size_t)kx * nc;
                    int j = j0, jj = 0;
                    int ix = j % IW, iy = (j / IW) % IH, iz = j / (IW * IH);
                    while (jj < nc) {
                        /* One input row segment: ix .. min(IW, ix + nc - jj).
                         */
                        int len = IW - ix < nc - jj ? IW - ix : nc - jj;
                        int oz = iz * g->s[0] - g->pad[0] + kz * g->d[0];
                        int oy = iy * g->s[1] - g->pad[1] + ky * g->d[1];
                        if (oz >= 0 && oz < OD && oy >= 0 && oy < OH) {
                            float *yr = yc + ((size_t)oz * OH + oy) * OW;
                            int ox = ix * g->s[2] - g->pad[2] + kx * g->d[2];
                            for (int t = 0; t < len; t++, ox += g->s[2]) {
                                if (ox < 0 || ox >= OW) continue;
                                yr[ox] = assign ? bias + cr[jj + t]
                                                : yr[ox] + cr[jj + t];
                            }
                        }
                        jj += len;
                        ix = 0;
                        if (++iy == IH) {
                            iy = 0;
                            iz++;
                        }
                    }
                }
    }
}

/* Where ct_store writes: one (sample, group) of a tiling ConvTranspose. */
typedef struct {
    const ConvGeom *g;
    float *yg;       /* [OCg, out...] */
    const float *bg; /* [OCg] or NULL */
    int avx512;      /* interleave2_avx512 may run */
} CtStore;

/* Widest micro-tile (gemm.c's kernels are at most 64 columns wide). */
#define CT_TILE_COLS 64

/* GemmStoreFn: tile rows i0 .. i0+mr_v are col rows (oc, kz, ky, kx),
 * columns j0 .. j0+nr_v input voxels (iz, iy, ix); each goes to
 * y[oc][iz*sz + kz][iy*sy + ky][ix*sx + kx] as bias + value, what
 * col2im_chunk (assign) and col2im_tiling_w2 store from col.  With a
 * 2-wide kernel along W the rows kx = 0 and 1 of a tile are written
 * together, interleaved, so each output row segment is stored once,
 * contiguously. */
static void ct_store(const void *ctx, int i0, int j0, const float *tile,
                     int ldt, int mr_v, int nr_v)
{
    const CtStore *c = ctx;
    const ConvGeom *g = c->g;
    const int KX = g->k[2], KY = g->k[1], KZ = g->k[0];
    const int OH = g->out[1], OW = g->out[2], IH = g->in[1], IW = g->in[2];
    /* The tile's columns cut into runs along input rows, once for all
     * its rows: column offset, length, first output index of kernel
     * offset 0. */
    int jr[CT_TILE_COLS], len[CT_TILE_COLS];
    size_t base[CT_TILE_COLS];
    CHECK(nr_v <= CT_TILE_COLS);
    int nrun = 0;
    int ix = j0 % IW, iy = j0 / IW % IH, iz = j0 / (IW * IH);
    for (int jj = 0; jj < nr_v;) {
        int l = IW - ix < nr_v - jj ? IW - ix : nr_v - jj;
        jr[nrun] = jj;
        len[nrun] = l;
        base[nrun++] =
            ((size_t)iz * g->s[0] * OH + (size_t)iy * g->s[1]) * OW +
            (size_t)ix * g->s[2];
        jj += l;
        ix = 0;
        if (++iy == IH) {
            iy = 0;
            iz++;
        }
    }
    for (int r = 0; r < mr_v; r++) {
        int i = i0 + r;
        int kx = i % KX, ky = i / KX % KY, kz = i / (KX * KY) % KZ;
        int oc = i / (KX * KY * KZ);
        const float *t0 = tile + (size_t)r * ldt;
        float bias = c->bg ? c->bg[oc] : 0.0f;
        float *yk = c->yg + (size_t)oc * (size_t)g->out_sp +
                    ((size_t)kz * OH + ky) * OW + kx;
        int pair = KX == 2 && kx == 0 && r + 1 < mr_v;
        for (int q = 0; q < nrun; q++) {
            float *yr = yk + base[q];
            const float *a = t0 + jr[q];
            if (pair && c->avx512) {
                interleave2_avx512(yr, a, a + ldt, bias, len[q]);
            } else if (pair) {
                for (int t = 0; t < len[q]; t++) {
                    yr[2 * t] = bias + a[t];
                    yr[2 * t + 1] = bias + a[ldt + t];
                }
            } else {
                for (int t = 0; t < len[q]; t++)
                    yr[(size_t)t * g->s[2]] = bias + a[t];
            }
        }
        r += pair;
    }
}

/* y [N,OC,out...], x [N,IC,in...], w [IC,OCg,K...], b [OC] or NULL,
 * scratch conv_transpose_scratch_floats(). */
void conv_transpose_forward(float *y, const float *x, const float *w,
                            const float *b, const Shape *xs, const Shape *ys,
                            const ConvParams *p, float *scratch)
{
    ConvGeom g;
    conv_geom_fill(&g, xs, ys, p);
    const int m = (int)(g.ocg * g.k_sp), pin = (int)g.in_sp;
    const int chunk = ct_chunk(&g), tiling = ct_is_tiling(&g);
    const GemmIsa isa = gemm_isa_best();
    if (ct_direct(&g)) {
        for (int n = 0; n < g.n; n++)
            for (int gr = 0; gr < g.group; gr++) {
                CtStore st = {&g,
                              y + ((size_t)n * g.oc + (size_t)gr * g.ocg) *
                                      (size_t)g.out_sp,
                              b ? b + (size_t)gr * g.ocg : NULL,
                              isa == GEMM_ISA_AVX512};
                GemmSrc as = {gemm_pack_a_dense, w + (size_t)gr * g.icg * m,
                              m, 1, NULL};
                GemmSrc bs = {gemm_pack_b_dense,
                              x + ((size_t)n * g.ic + (size_t)gr * g.icg) *
                                      (size_t)pin,
                              pin, 0, NULL};
                gemm_run_store(isa, ct_store, &st, &as, &bs, m, pin, g.icg,
                               scratch);
            }
        return;
    }
    const int tiling_w2 = tiling && g.k[2] == 2 && isa == GEMM_ISA_AVX512;
    float *col = scratch;
    float *pack = scratch + ((size_t)m * (size_t)chunk + 15) / 16 * 16;
    for (int n = 0; n < g.n; n++) {
        for (int gr = 0; gr < g.group; gr++) {
            const float *xg =
                x + ((size_t)n * g.ic + (size_t)gr * g.icg) * (size_t)pin;
            float *yg = y + ((size_t)n * g.oc + (size_t)gr * g.ocg) *
                                (size_t)g.out_sp;
            const float *bg = b ? b + (size_t)gr * g.ocg : NULL;
            if (!tiling) {
                for (int oc = 0; oc < g.ocg; oc++) {
                    float v = bg ? bg[oc] : 0.0f;
                    float *yc = yg + (size_t)oc * (size_t)g.out_sp;
                    for (int64_t i = 0; i < g.out_sp; i++)
                        yc[i] = v;
                }
            }
            /* A(i, k) = w[g*ICg + k][i]: W^T of this group's [ICg, OCg*K]. */
            GemmSrc as = {gemm_pack_a_dense, w + (size_t)gr * g.icg * m, m, 1,
                          NULL};
            for (int j0 = 0; j0 < pin; j0 += chunk) {
                int nc = pin - j0 < chunk ? pin - j0 : chunk;
                GemmSrc bs = {gemm_pack_b_dense, xg + j0, pin, 0, NULL};
                gemm_run(isa, col, nc, &as, &bs, m, nc, g.icg, 0, NULL, pack);
                if (tiling_w2)
                    col2im_tiling_w2(yg, col, bg, &g, j0, nc);
                else
                    col2im_chunk(yg, col, bg, &g, j0, nc, tiling);
            }
        }
    }
}

/* Same contract; gathers each output from the inputs that reach it, sums
 * in double. */
void conv_transpose_forward_ref(float *y, const float *x, const float *w,
                                const float *b, const Shape *xs,
                                const Shape *ys, const ConvParams *p)
{
    ConvGeom g;
    conv_geom_fill(&g, xs, ys, p);
    int o[3], k[3], i[3];
    for (int n = 0; n < g.n; n++)
        for (int oc = 0; oc < g.oc; oc++) {
            int gr = oc / g.ocg, ocl = oc % g.ocg;
            float *yc = y + ((size_t)n * g.oc + oc) * (size_t)g.out_sp;
            for (o[0] = 0; o[0] < g.out[0]; o[0]++)
                for (o[1] = 0; o[1] < g.out[1]; o[1]++)
                    for (o[2] = 0; o[2] < g.out[2]; o[2]++) {
                        double s = b ? (double)b[oc] : 0.0;
                        for (k[0] = 0; k[0] < g.k[0]; k[0]++)
                            for (k[1] = 0; k[1] < g.k[1]; k[1]++)
                                for (k[2] = 0; k[2] < g.k[2]; k[2]++) {
                                    int ok = 1;
                                    for (int a = 0; a < 3; a++) {
                                        int t =
                                            o[a] + g.pad[a] - k[a] * g.d[a];
                                        if (t < 0 || t % g.s[a] != 0 ||
                                            t / g.s[a] >= g.in[a])
                                            ok = 0;
                                        else
                                            i[a] = t / g.s[a];
                                    }
                                    if (!ok) continue;
                                    size_t xi =
                                        ((size_t)i[0] * g.in[1] + i[1]) *
                                            g.in[2] +
                                        i[2];
                                    size_t ki =
                                        ((size_t)k[0] * g.k[1] + k[1]) *
                                            g.k[2] +
                                        k[2];
                                    for (int icl = 0; icl < g.icg; icl++) {
                                        int ic = gr * g.icg + icl;
                                        s +=
                                            (double)
                                                x[((size_t)n * g.ic + ic) *
                                                      g.in_sp +
                                                  xi] *
                                            (double)
                                                w[((size_t)ic * g.ocg + ocl) *
                                                      g.k_sp +
                                                  ki];
                                    }
                                }
                        yc[((size_t)o[0] * g.out[1] + o[1]) * g.out[2] +
                           o[2]] = (float)s;
                    }
        }
}

/* ---- op-table hooks ---- */

int conv_transpose_infer(const Graph *g, const Node *n, Shape *out)
{
    const ConvParams *p = &n->p.conv;
    char b0[96], b1[96];
    int rc = conv_check_common(g, n, 1);
    if (rc) return rc;
    const Shape *xs = &g->values[n->in[0]].shape;
    const Shape *ws = &g->values[n->in[1]].shape;
    if (ws->d[0] != xs->d[1] || xs->d[1] % p->group != 0 || ws->d[1] < 1) {
        sl_error("node '%s' (ConvTranspose): input %s has %lld channels but "
                 "weight %s expects %lld (a multiple of group %d); check the "
                 "model export",
                 n->name, shape_str(xs, b0, sizeof b0), (long long)xs->d[1],
                 shape_str(ws, b1, sizeof b1), (long long)ws->d[0], p->group);
        return ERR_SHAPE;
    }
    out->ndim = xs->ndim;
    out->d[0] = xs->d[0];
    out->d[1] = ws->d[1] * p->group;
    int64_t ksp = 1;
    for (int i = 0; i < p->nsp; i++) {
        int64_t o = (int64_t)p->stride[i] * (xs->d[2 + i] - 1) +
                    p->out_pad[i] +
                    (int64_t)p->dilation[i] * (p->kernel[i] - 1) + 1 -
                    p->pad_lo[i] - p->pad_hi[i];
        if (xs->d[2 + i] < 1 || o < 1) {
            sl_error("node '%s' (ConvTranspose): input %s gives output size "
                     "%lld < 1 in spatial dim %d (pads %d/%d too large)",
                     n->name, shape_str(xs, b0, sizeof b0), (long long)o, i,
                     p->pad_lo[i], p->pad_hi[i]);
            return ERR_SHAPE;
        }
        out->d[2 + i] = o;
        ksp *= p->kernel[i];
    }
    int64_t insp = 1;
    for (int i = 2; i < xs->ndim; i++)
        insp *= xs->d[i];
    return conv_check_int_range(n, "ConvTranspose", ws->d[1] * ksp, insp,
                                ws->d[0] / p->group);
}

/* Multiply-adds actually performed: each input voxel meets OCg*K weights
 * per input channel (the output-side count would overcount by the
 * stride product). */
int64_t conv_transpose_flops(const Graph *g, const Node *n)
{
    const Shape *xs = &g->values[n->in[0]].shape;
    const Shape *ws = &g->values[n->in[1]].shape;
    int64_t f = 2 * xs->d[0] * xs->d[1] * ws->d[1];
    for (int i = 2; i < xs->ndim; i++)
        f *= xs->d[i] * ws->d[i];
    return f;
}

size_t conv_transpose_scratch(const Graph *g, const Node *n)
{
    return conv_transpose_scratch_floats(
        &g->values[n->in[0]].shape, &g->values[n->out].shape, &n->p.conv);
}

void conv_transpose_node_forward(const Graph *g, const Node *n, float *out,
                                 const float *const *in, float *scratch)
{
    conv_transpose_forward(out, in[0], in[1], n->n_in > 2 ? in[2] : NULL,
                           &g->values[n->in[0]].shape,
                           &g->values[n->out].shape, &n->p.conv, scratch);
}
