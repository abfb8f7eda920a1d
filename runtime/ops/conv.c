/* Convolution forward (N-d: 1 to 3 spatial dims), with groups, stride,
 * dilation and asymmetric zero padding.
 *
 * Dimension letters: N batch, IC/OC channels (ICg/OCg per group),
 * D H W spatial (padded to 3 dims, see conv_geom.h), K kernel,
 * P = output voxels per channel.
 *
 * Every fast path computes, per (sample, group), the GEMM
 *   Y[OCg, P] = W[OCg, ICg*K] * col[ICg*K, P] + b
 * where col is the im2col (vol2col in 3D) matrix, which is never formed:
 *  - slab path (the usual one; AVX-512 or AVX2): the input is copied, a slab
 * of planes at a time, into a zero-padded, phase-split buffer in which every
 * col row is the buffer read at a fixed offset, so the GEMM reads B in place
 * (gemm_run_shifted).  Scratch: slab (<= 4 MiB unless one plane is bigger)
 * plus per-thread tiles.
 *  - im2col path (small planes, where the slab's padding ring would be
 *    too much extra work, and CPUs without AVX2): the GEMM's B packer
 *    (im2col_pack) gathers each block straight from the input into the
 *    packed panel layout; scratch is the GEMM's packing buffers.
 *  - a 1x1, stride 1, unpadded conv reads the input as a dense B matrix.
 * Scratch stays a few MiB whatever the volume size.
 */
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "conv_geom.h"
#include "gemm_core.h"
#include "isa.h"
#include "ops.h"

#if SL_ISA_X86
#include <immintrin.h>
#endif

/* ---- im2col straight into packed panels ---- */

/* One run of consecutive output columns inside a panel that share the
 * output (z, y) row: input base coordinates of its first column. */
typedef struct {
    int jj, len;    /* panel column offset, number of columns */
    int bz, by, bx; /* o*s - pad for the first column */
} Im2colRun;

/* s->p: x [ICg, D, H, W] of one (sample, group); s->ctx: ConvGeom.
 * Row k = ((ic*KD + kz)*KH + ky)*KW + kx, column j = (oz*OH + oy)*OW + ox,
 * B(k, j) = x[ic][oz*sz - pz + kz*dz][oy*sy - py + ky*dy][ox*sx - px + kx*dx]
 * or 0 outside.  dst [ceil(nc/r)][kc][r]; columns past nc are zero. */
static void im2col_pack(const GemmSrc *s, float *dst, int k0, int kc, int j0,
                        int nc, int r)
{
    const ConvGeom *g = s->ctx;
    const int ID = g->in[0], IH = g->in[1], IW = g->in[2];
    const int OH = g->out[1], OW = g->out[2];
    const int sx = g->s[2];
    Im2colRun runs[64];
    CHECK(r <= 64);

    for (int jp = 0; jp < nc; jp += r) {
        /* Split the panel's valid columns into runs along output rows. */
        int rv = nc - jp < r ? nc - jp : r, nrun = 0;
        int j = j0 + jp;
        int ox = j % OW, oy = (j / OW) % OH, oz = j / (OW * OH);
        for (int jj = 0; jj < rv;) {
            int len = OW - ox < rv - jj ? OW - ox : rv - jj;
            runs[nrun++] =
                (Im2colRun){jj, len, oz * g->s[0] - g->pad[0],
                            oy * g->s[1] - g->pad[1], ox * sx - g->pad[2]};
            jj += len;
            ox = 0;
            if (++oy == OH) {
                oy = 0;
                oz++;
            }
        }
        /* Row k0 decoded once, then advanced with carries. */
        int kx = k0 % g->k[2], ky = (k0 / g->k[2]) % g->k[1];
        int kz = (k0 / (g->k[2] * g->k[1])) % g->k[0];
        int ic = k0 / (int)g->k_sp;
        for (int kk = 0; kk < kc; kk++) {
            float *d = dst + (size_t)kk * r;
            const float *xc = s->p + (size_t)ic * g->in_sp;
            int zo = kz * g->d[0], yo = ky * g->d[1], xo = kx * g->d[2];
            for (int q = 0; q < nrun; q++) {
                const Im2colRun *u = &runs[q];
                float *dq = d + u->jj;
                int iz = u->bz + zo, iy = u->by + yo, ix0 = u->bx + xo;
                if (iz < 0 || iz >= ID || iy < 0 || iy >= IH) {
                    memset(dq, 0, (size_t)u->len * sizeof(float));
                    continue;
                }
                const float *row = xc + ((size_t)iz * IH + iy) * IW;
                if (sx == 1) {
                    /* Columns t with 0 <= ix0 + t < IW are copied. */
                    int lo = ix0 < 0 ? -ix0 : 0;
                    int hi = IW - ix0 < u->len ? IW - ix0 : u->len;
                    if (lo > u->len) lo = u->len;
                    if (hi < lo) hi = lo;
                    for (int t = 0; t < lo; t++)
                        dq[t] = 0;
                    if (hi > lo)
                        memcpy(dq + lo, row + ix0 + lo,
                               (size_t)(hi - lo) * sizeof(float));
                    for (int t = hi; t < u->len; t++)
                        dq[t] = 0;
                } else {
                    for (int t = 0, ix = ix0; t < u->len; t++, ix += sx)
                        dq[t] = ix >= 0 && ix < IW ? row[ix] : 0.0f;
                }
            }
            for (int jj = rv; jj < r; jj++)
                d[jj] = 0;
            if (++kx == g->k[2]) {
                kx = 0;
                if (++ky == g->k[1]) {
                    ky = 0;
                    if (++kz == g->k[0]) {
                        kz = 0;
                        ic++;
                    }
                }
            }
        }
        dst += (size_t)kc * r;
    }
}

static int conv_is_pointwise(const ConvGeom *g)
{
    for (int i = 0; i < 3; i++)
        if (g->k[i] != 1 || g->s[i] != 1 || g->pad[i] != 0 ||
            g->in[i] != g->out[i])
            return 0;
    return 1;
}

/* ---- shifted-pointer path on a zero-padded, phase-split slab ----
 *
 * The input of one (sample, group) is copied, a slab of output planes at
 * a time, into a zero-padded buffer.  With stride s, padded position
 * o*s + t (t = k*d, the kernel tap's offset) is split into phase
 * t % s and phase-grid position o + t / s; the slab stores each phase's
 * grid separately: [ICg][phases][s0][s1][s2].  Then output column j (a
 * phase-grid position) needs slab value j + koff[k] for kernel row k,
 * for every stride, so B is read in place (gemm_run_shifted) and nothing
 * is packed: the win for few channels, where packing costs as much as
 * the arithmetic, and for strided convs, whose im2col gathers are slow.
 * Grid positions past the output (the ring of t / s extra rows and
 * columns) are computed and dropped, so the path is used only when they
 * are few (SHIFT_MAX_WASTE).  The slab runs along dim 0 (D) in 3D and
 * along dim 1 (H) in 2D/1D. */

/* Slab budget: 1 Mi floats (4 MiB) stays in this machine's L3 (32 MiB
 * shared) next to the output being written. */
#define SHIFT_SLAB_FLOATS (1 << 20)
/* Computed / useful columns above this: im2col instead (the ring costs
 * more than packing saves; an 8x8 2D plane with a 3x3 kernel has 1.25,
 * a 6^3 3D one 1.78). */
#define SHIFT_MAX_WASTE 1.4
/* Largest stride along W (x phases) the slab path takes; larger ones,
 * which no U-Net uses, go through im2col. */
#define SLAB_MAX_XPH 8

typedef struct {
    int sd;               /* slab dim: 0 or 1 */
    int z;                /* output planes (along sd) per slab */
    int qmax[3];          /* largest t / s per dim */
    int nph[3];           /* phases per dim (the stride) */
    int s1, s2;           /* grid rows per plane (full slab) and row length */
    int64_t phase_stride; /* floats per (channel, phase) grid */
    int64_t cstride;      /* floats per channel */
} SlabPlan;

static int conv_shift_plan(const ConvGeom *g, SlabPlan *sp)
{
    if (!gemm_shifted_available(gemm_isa_best()) || conv_is_pointwise(g) ||
        g->s[2] > SLAB_MAX_XPH)
        return 0;
    for (int i = 0; i < 3; i++) {
        sp->nph[i] = g->s[i];
        sp->qmax[i] = g->d[i] * (g->k[i] - 1) / g->s[i];
    }
    /* A real D dim (or a padded one) needs D slabs. */
    sp->sd = g->out[0] == 1 && g->in[0] == 1 && g->k[0] == 1 &&
                     g->pad[0] == 0 && g->s[0] == 1
                 ? 1
                 : 0;
    int64_t g1 = (int64_t)g->out[1] + sp->qmax[1];
    int64_t g2 = (int64_t)g->out[2] + sp->qmax[2];
    double waste = (double)g2 / g->out[2];
    if (sp->sd == 0) waste *= (double)g1 / g->out[1];
    if (waste > SHIFT_MAX_WASTE) return 0;
    int64_t nph = (int64_t)sp->nph[0] * sp->nph[1] * sp->nph[2];
    /* Floats per output plane along sd, over all channels and phases. */
    int64_t plane = (int64_t)g->icg * nph * (sp->sd == 0 ? g1 * g2 : g2);
    int64_t z = SHIFT_SLAB_FLOATS / plane - sp->qmax[sp->sd];
    if (z < 1) z = 1;
    if (z > g->out[sp->sd]) z = g->out[sp->sd];
    sp->z = (int)z;
    sp->s2 = (int)g2;
    sp->s1 = (int)(sp->sd == 0 ? g1 : z + sp->qmax[1]);
    sp->phase_stride =
        (sp->sd == 0 ? z + sp->qmax[0] : 1) * (int64_t)sp->s1 * g2;
    sp->cstride = nph * sp->phase_stride;
    /* koff is int32 and the GEMM takes int sizes. */
    return (int64_t)g->icg * sp->cstride < INT_MAX / 4;
}

static size_t shift_scratch(const ConvGeom *g, const SlabPlan *sp)
{
    size_t slab = ((size_t)g->icg * (size_t)sp->cstride + 64 + 15) / 16 * 16;
    size_t kdim = (size_t)(g->icg * g->k_sp);
    return slab + (kdim + 15) / 16 * 16 + gemm_shifted_pack_floats((int)kdim);
}

/* d[c] = src[2c] for c < n (every other float: the stride-2 phases).
 * AVX-512 only; the caller has a scalar loop for other CPUs (and calls
 * this only when gemm_isa_best() is AVX-512, never off x86). */
#if SL_ISA_X86
__attribute__((target("avx512f"))) static void
copy_stride2(float *restrict d, const float *restrict src, int n)
{
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14,
                                          12, 10, 8, 6, 4, 2, 0);
    int c = 0;
    /* Only src[0 .. 2n-2] may be read: c + 17 <= n keeps the second load
     * (up to src[2c + 31]) inside. */
    for (; c + 17 <= n; c += 16) {
        __m512 lo = _mm512_loadu_ps(src + 2 * c);
        __m512 hi = _mm512_loadu_ps(src + 2 * c + 16);
        _mm512_storeu_ps(d + c, _mm512_permutex2var_ps(lo, even, hi));
    }
    /* The last 1 to 16 with masked loads of src[2c .. 2n-2]: a scalar
     * tail was a sixth of the row on 96-wide rows. */
    int rem = n - c;
    if (rem > 0) {
        int m = 2 * rem - 1;
        __m512 lo = _mm512_maskz_loadu_ps(
            (__mmask16)(m >= 16 ? 0xffffu : (1u << m) - 1), src + 2 * c);
        __m512 hi =
            m > 16 ? _mm512_maskz_loadu_ps((__mmask16)((1u << (m - 16)) - 1),
                                           src + 2 * c + 16)
                   : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(d + c, (__mmask16)((1u << rem) - 1),
                              _mm512_permutex2var_ps(lo, even, hi));
    }
}
#else
static void copy_stride2(float *restrict d, const float *restrict src, int n)
{
    for (int c = 0; c < n; c++)
        d[c] = src[2 * c];
}
#endif

/* slab [ICg][phz][phy][phx][s0][s1][s2] <- phase grids of the zero-padded
 * input for output planes o0 .. o0+zc along sp->sd: grid position c of
 * phase ph in a dim holds padded position c*s + ph, i.e. input position
 * c*s + ph - pad.  xg [ICg, D, H, W] of one (sample, group).  Called by
 * every thread of the team (work-shared rows, barrier at the end). */
static void slab_fill(float *slab, const float *xg, const ConvGeom *g,
                      const SlabPlan *sp, int o0, int zc)
{
    const int s0 = sp->sd == 0 ? zc + sp->qmax[0] : 1;
    const int s1 = sp->sd == 0 ? sp->s1 : zc + sp->qmax[1];
    const int s2 = sp->s2, iw = g->in[2], sx = g->s[2], px = g->pad[2];
    /* One task per input row and (z, y) phase; its x phases are filled
     * together so the row is read from memory once.  The (z, y) phase
     * varies fastest, so with stride 2 the tasks read input rows in
     * memory order (phase-major order read every other row, twice as
     * slow: the fill is bound by memory, not arithmetic). */
    const int nzy = sp->nph[0] * sp->nph[1];
    const int rows = g->icg * nzy * s0 * s1;
    const int avx512 = gemm_isa_best() == GEMM_ISA_AVX512;
    /* Grid columns lo .. hi of x phase phx have 0 <= x0 + c*sx < iw,
     * x0 = phx - px. */
    int xlo[SLAB_MAX_XPH], xhi[SLAB_MAX_XPH];
    for (int phx = 0; phx < sp->nph[2]; phx++) {
        int x0 = phx - px;
        int lo = x0 < 0 ? (-x0 + sx - 1) / sx : 0;
        int hi = iw - x0 > 0 ? (iw - x0 + sx - 1) / sx : 0;
        if (lo > s2) lo = s2;
        if (hi > s2) hi = s2;
        xlo[phx] = lo;
        xhi[phx] = hi < lo ? lo : hi;
    }
    /* This thread's share of the tasks (a static split, as omp for
     * would make), decoded once and then advanced with carries: on short
     * rows the integer divisions of decoding every task cost more than
     * the copy. */
    const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
    const int r0 = (int)((int64_t)rows * tid / nth);
    const int r1 = (int)((int64_t)rows * (tid + 1) / nth);
    int phy = r0 % sp->nph[1], phz = r0 / sp->nph[1] % sp->nph[0];
    int bb = r0 / nzy % s1, a = r0 / (nzy * s1) % s0;
    int ic = r0 / (nzy * s1 * s0);
    for (int r = r0; r < r1; r++) {
        int pzy = phz * sp->nph[1] + phy;
        int iz = ((sp->sd == 0 ? o0 : 0) + a) * g->s[0] + phz - g->pad[0];
        int iy = ((sp->sd == 1 ? o0 : 0) + bb) * g->s[1] + phy - g->pad[1];
        int inside = iz >= 0 && iz < g->in[0] && iy >= 0 && iy < g->in[1];
        const float *xr = xg + (size_t)ic * (size_t)g->in_sp +
                          ((size_t)(inside ? iz : 0) * g->in[1] +
                           (size_t)(inside ? iy : 0)) *
                              (size_t)iw;
        for (int phx = 0; phx < sp->nph[2]; phx++) {
            float *d =
                slab + (size_t)ic * (size_t)sp->cstride +
                (size_t)(pzy * sp->nph[2] + phx) * (size_t)sp->phase_stride +
                ((size_t)a * sp->s1 + bb) * (size_t)s2;
            if (!inside) {
                memset(d, 0, (size_t)s2 * sizeof(float));
                continue;
            }
            int x0 = phx - px, lo = xlo[phx], hi = xhi[phx];
            /* The padding runs are a column or two: plain loops. */
            for (int c = 0; c < lo; c++)
                d[c] = 0;
            if (sx == 1)
                memcpy(d + lo, xr + x0 + lo,
                       (size_t)(hi - lo) * sizeof(float));
            else if (sx == 2 && avx512)
                copy_stride2(d + lo, xr + x0 + 2 * lo, hi - lo);
            else
                for (int c = lo; c < hi; c++)
                    d[c] = xr[x0 + c * sx];
            for (int c = hi; c < s2; c++)
                d[c] = 0;
        }
        if (++phy == sp->nph[1]) {
            phy = 0;
            if (++phz == sp->nph[0]) {
                phz = 0;
                if (++bb == s1) {
                    bb = 0;
                    if (++a == s0) {
                        a = 0;
                        ic++;
                    }
                }
            }
        }
    }
#pragma omp barrier
}

/* y [N,OC,out...], x [N,IC,in...], w [OC,ICg,K...], b [OC] or NULL;
 * scratch shift_scratch(): slab [ICg * cstride + 64], koff [ICg*K] int32,
 * GEMM tiles. */
static void conv_forward_shifted(float *y, const float *x, const float *w,
                                 const float *b, const ConvGeom *g,
                                 const SlabPlan *sp, float *scratch)
{
    const int kdim = (int)(g->icg * g->k_sp);
    const size_t slab_floats = (size_t)g->icg * (size_t)sp->cstride;
    float *slab = scratch;
    int32_t *koff = (int32_t *)(scratch + (slab_floats + 64 + 15) / 16 * 16);
    float *pack = (float *)koff + ((size_t)kdim + 15) / 16 * 16;
    /* Row k = ((ic*KD + kz)*KH + ky)*KW + kx of B starts koff[k] floats
     * into the slab: channel, phase of each tap offset, grid shift.
     * (Scratch has no declared type, so storing int32 in it is fine.)
     * The taps of channel 0 are computed once; each further channel adds
     * cstride (per-tap divisions cost ~5% of a small strided layer). */
    for (int k = 0; k < (int)g->k_sp; k++) {
        int kx = k % g->k[2], ky = k / g->k[2] % g->k[1];
        int kz = k / (g->k[2] * g->k[1]);
        int tz = kz * g->d[0], ty = ky * g->d[1], tx = kx * g->d[2];
        int ph = ((tz % g->s[0]) * sp->nph[1] + ty % g->s[1]) * sp->nph[2] +
                 tx % g->s[2];
        koff[k] =
            (int32_t)(ph * sp->phase_stride +
                      ((int64_t)(tz / g->s[0]) * sp->s1 + ty / g->s[1]) *
                          sp->s2 +
                      tx / g->s[2]);
    }
    for (int k = (int)g->k_sp; k < kdim; k++)
        koff[k] = koff[k - g->k_sp] + (int32_t)sp->cstride;
    /* Dropped columns read up to NR - 1 floats past the last slab value. */
    memset(slab + slab_floats, 0, 64 * sizeof(float));
    CHECK(gemm_shifted_nr() <= 64);
    const int OH = g->out[1], OW = g->out[2];
    const int nsd = g->out[sp->sd];
    const GemmIsa isa = gemm_isa_best();
    /* One team for the whole call: per slab, a barrier after the fill
     * (the GEMM reads the slab) and one after the GEMM (the next fill
     * overwrites it), instead of a fork and join for each. */
#pragma omp parallel num_threads(gemm_max_threads())
    for (int n = 0; n < g->n; n++) {
        for (int gr = 0; gr < g->group; gr++) {
            const float *xg = x + ((size_t)n * g->ic + (size_t)gr * g->icg) *
                                      (size_t)g->in_sp;
            float *yg = y + ((size_t)n * g->oc + (size_t)gr * g->ocg) *
                                (size_t)g->out_sp;
            GemmSrc as = {gemm_pack_a_dense, w + (size_t)gr * g->ocg * kdim,
                          kdim, 0, NULL};
            for (int o0 = 0; o0 < nsd; o0 += sp->z) {
                int zc = nsd - o0 < sp->z ? nsd - o0 : sp->z;
                slab_fill(slab, xg, g, sp, o0, zc);
                ShiftMap mp;
                int ncols;
                if (sp->sd == 0) {
                    mp = (ShiftMap){sp->s1,
                                    sp->s2,
                                    zc,
                                    OH,
                                    OW,
                                    (int64_t)o0 * OH * OW,
                                    (int64_t)OH * OW,
                                    OW};
                    ncols = ((zc - 1) * sp->s1 + (OH - 1)) * sp->s2 + OW;
                } else {
                    mp = (ShiftMap){zc + sp->qmax[1], sp->s2, 1, zc, OW,
                                    (int64_t)o0 * OW, 0,      OW};
                    ncols = (zc - 1) * sp->s2 + OW;
                }
                gemm_shifted_team(isa, yg, (int)g->out_sp, &as, slab, koff,
                                  &mp, g->ocg, ncols, kdim,
                                  b ? b + (size_t)gr * g->ocg : NULL, pack);
            }
        }
    }
}

size_t conv_scratch_floats(const Shape *xs, const Shape *ys,
                           const ConvParams *p)
{
    ConvGeom g;
    SlabPlan sp;
    conv_geom_fill(&g, xs, ys, p);
    if (conv_shift_plan(&g, &sp)) return shift_scratch(&g, &sp);
    return gemm_pack_floats(g.ocg, (int)g.out_sp, (int)(g.icg * g.k_sp));
}

/* y [N,OC,out...], x [N,IC,in...], w [OC,ICg,K...], b [OC] or NULL,
 * scratch conv_scratch_floats(). */
void conv_forward(float *y, const float *x, const float *w, const float *b,
                  const Shape *xs, const Shape *ys, const ConvParams *p,
                  float *scratch)
{
    ConvGeom g;
    SlabPlan sp;
    conv_geom_fill(&g, xs, ys, p);
    if (conv_shift_plan(&g, &sp)) {
        conv_forward_shifted(y, x, w, b, &g, &sp, scratch);
        return;
    }
    const int kdim = (int)(g.icg * g.k_sp), P = (int)g.out_sp;
    const int pointwise = conv_is_pointwise(&g);
    const GemmIsa isa = gemm_isa_best();
    for (int n = 0; n < g.n; n++) {
        for (int gr = 0; gr < g.group; gr++) {
            const float *xg =
                x + ((size_t)n * g.ic + (size_t)gr * g.icg) * (size_t)g.in_sp;
            float *yg =
                y + ((size_t)n * g.oc + (size_t)gr * g.ocg) * (size_t)P;
            GemmSrc as = {gemm_pack_a_dense, w + (size_t)gr * g.ocg * kdim,
                          kdim, 0, NULL};
            GemmSrc bs = {im2col_pack, xg, 0, 0, &g};
            if (pointwise) bs = (GemmSrc){gemm_pack_b_dense, xg, P, 0, NULL};
            gemm_run(isa, yg, P, &as, &bs, g.ocg, P, kdim, 0,
                     b ? b + (size_t)gr * g.ocg : NULL, scratch);
        }
    }
}

/* Same contract as conv_forward; direct loops, sums in double. */
void conv_forward_ref(float *y, const float *x, const float *w,
                      const float *b, const Shape *xs, const Shape *ys,
                      const ConvParams *p)
{
    ConvGeom g;
    conv_geom_fill(&g, xs, ys, p);
    for (int n = 0; n < g.n; n++)
        for (int oc = 0; oc < g.oc; oc++) {
            int gr = oc / g.ocg;
            float *yc = y + ((size_t)n * g.oc + oc) * (size_t)g.out_sp;
            for (int oz = 0; oz < g.out[0]; oz++)
                for (int oy = 0; oy < g.out[1]; oy++)
                    for (int ox = 0; ox < g.out[2]; ox++) {
                        double s = b ? (double)b[oc] : 0.0;
                        for (int icl = 0; icl < g.icg; icl++) {
                            const float *xc = x + ((size_t)n * g.ic +
                                                   (size_t)gr * g.icg + icl) *
                                                      (size_t)g.in_sp;
                            const float *wc = w + ((size_t)oc * g.icg + icl) *
                                                      (size_t)g.k_sp;
                            for (int kz = 0; kz < g.k[0]; kz++)
                                for (int ky = 0; ky < g.k[1]; ky++)
                                    for (int kx = 0; kx < g.k[2]; kx++) {
                                        int iz = oz * g.s[0] - g.pad[0] +
                                                 kz * g.d[0];
                                        int iy = oy * g.s[1] - g.pad[1] +
                                                 ky * g.d[1];
                                        int ix = ox * g.s[2] - g.pad[2] +
                                                 kx * g.d[2];
                                        if (iz < 0 || iz >= g.in[0] ||
                                            iy < 0 || iy >= g.in[1] ||
                                            ix < 0 || ix >= g.in[2])
                                            continue;
                                        s +=
                                            (double)wc[((size_t)kz * g.k[1] +
                                                        ky) *
                                                           g.k[2] +
                                                       kx] *
                                            (double)xc[((size_t)iz * g.in[1] +
                                                        iy) *
                                                           g.in[2] +
                                                       ix];
                                    }
                        }
                        yc[((size_t)oz * g.out[1] + oy) * g.out[2] + ox] =
                            (float)s;
                    }
        }
}

/* ---- op-table hooks ---- */

int conv_check_common(const Graph *g, const Node *n, int transpose)
{
    const char *opname = transpose ? "ConvTranspose" : "Conv";
    const ConvParams *p = &n->p.conv;
    char b0[96], b1[96];
    if (n->n_in != 2 && n->n_in != 3) {
        sl_error("node '%s' (%s): has %d inputs, expected X, W and optional "
                 "B; check the model export",
                 n->name, opname, n->n_in);
        return ERR_SHAPE;
    }
    const Shape *xs = &g->values[n->in[0]].shape;
    const Shape *ws = &g->values[n->in[1]].shape;
    if (p->nsp < 1 || p->nsp > 3 || xs->ndim != p->nsp + 2 ||
        ws->ndim != p->nsp + 2) {
        sl_error("node '%s' (%s): input %s and weight %s do not match a "
                 "%d-d convolution (1 to 3 spatial dims supported)",
                 n->name, opname, shape_str(xs, b0, sizeof b0),
                 shape_str(ws, b1, sizeof b1), p->nsp);
        return ERR_SHAPE;
    }
    if (p->group < 1) {
        sl_error("node '%s' (%s): group %d must be >= 1", n->name, opname,
                 p->group);
        return ERR_SHAPE;
    }
    for (int i = 0; i < p->nsp; i++) {
        if (p->kernel[i] != ws->d[2 + i] || p->stride[i] < 1 ||
            p->dilation[i] < 1 || p->pad_lo[i] < 0 || p->pad_hi[i] < 0 ||
            p->out_pad[i] < 0) {
            sl_error("node '%s' (%s): spatial dim %d has kernel %d (weight "
                     "%s), stride %d, dilation %d, pads %d/%d, output pad "
                     "%d; need kernel equal to the weight's, stride and "
                     "dilation >= 1, pads >= 0",
                     n->name, opname, i, p->kernel[i],
                     shape_str(ws, b1, sizeof b1), p->stride[i],
                     p->dilation[i], p->pad_lo[i], p->pad_hi[i],
                     p->out_pad[i]);
            return ERR_SHAPE;
        }
    }
    if (n->n_in == 3) {
        const Shape *bs = &g->values[n->in[2]].shape;
        int64_t oc = transpose ? ws->d[1] * p->group : ws->d[0];
        if (bs->ndim != 1 || bs->d[0] != oc) {
            sl_error("node '%s' (%s): bias %s should be [%lld] (one value "
                     "per output channel)",
                     n->name, opname, shape_str(bs, b0, sizeof b0),
                     (long long)oc);
            return ERR_SHAPE;
        }
    }
    return 0;
}

int conv_check_int_range(const Node *n, const char *opname, int64_t a,
                         int64_t b, int64_t c)
{
    if (a > INT_MAX / 2 || b > INT_MAX / 2 || c > INT_MAX / 2) {
        sl_error("node '%s' (%s): GEMM sizes %lld x %lld x %lld exceed this "
                 "runtime's limit (2^30); use a smaller patch size",
                 n->name, opname, (long long)a, (long long)b, (long long)c);
        return ERR_SHAPE;
    }
    return 0;
}

int conv_infer(const Graph *g, const Node *n, Shape *out)
{
    const ConvParams *p = &n->p.conv;
    char b0[96], b1[96];
    int rc = conv_check_common(g, n, 0);
    if (rc) return rc;
    const Shape *xs = &g->values[n->in[0]].shape;
    const Shape *ws = &g->values[n->in[1]].shape;
    if (ws->d[0] < 1 || ws->d[0] % p->group != 0 ||
        xs->d[1] != ws->d[1] * p->group) {
        sl_error("node '%s' (Conv): input %s has %lld channels but weight "
                 "%s with group %d expects %lld, and output channels must "
                 "be a multiple of group; check the model export",
                 n->name, shape_str(xs, b0, sizeof b0), (long long)xs->d[1],
                 shape_str(ws, b1, sizeof b1), p->group,
                 (long long)(ws->d[1] * p->group));
        return ERR_SHAPE;
    }
    out->ndim = xs->ndim;
    out->d[0] = xs->d[0];
    out->d[1] = ws->d[0];
    int64_t osp = 1;
    for (int i = 0; i < p->nsp; i++) {
        int64_t span = (int64_t)p->dilation[i] * (p->kernel[i] - 1) + 1;
        int64_t padded = xs->d[2 + i] + p->pad_lo[i] + p->pad_hi[i];
        int64_t o = padded >= span ? (padded - span) / p->stride[i] + 1 : 0;
        if (o < 1) {
            sl_error("node '%s' (Conv): input %s is too small for kernel "
                     "extent %lld in spatial dim %d (output size would be "
                     "< 1); use a larger input",
                     n->name, shape_str(xs, b0, sizeof b0), (long long)span,
                     i);
            return ERR_SHAPE;
        }
        out->d[2 + i] = o;
        osp *= o;
    }
    return conv_check_int_range(n, "Conv", ws->d[0], osp,
                                ws->d[1] *
                                    (ws->d[2] * (p->nsp > 1 ? ws->d[3] : 1) *
                                     (p->nsp > 2 ? ws->d[4] : 1)));
}

int64_t conv_flops(const Graph *g, const Node *n)
{
    const Shape *ws = &g->values[n->in[1]].shape;
    const Shape *ys = &g->values[n->out].shape;
    int64_t f = 2 * ys->d[0] * ys->d[1] * ws->d[1];
    for (int i = 2; i < ys->ndim; i++)
        f *= ys->d[i] * ws->d[i];
    return f;
}

size_t conv_scratch(const Graph *g, const Node *n)
{
    return conv_scratch_floats(&g->values[n->in[0]].shape,
                               &g->values[n->out].shape, &n->p.conv);
}

void conv_node_forward(const Graph *g, const Node *n, float *out,
                       const float *const *in, float *scratch)
{
    conv_forward(out, in[0], in[1], n->n_in > 2 ? in[2] : NULL,
                 &g->values[n->in[0]].shape, &g->values[n->out].shape,
                 &n->p.conv, scratch);
}
