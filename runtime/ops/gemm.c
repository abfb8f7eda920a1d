/* Blocked, packed, register-tiled single-precision GEMM.
 *
 *   C[M,N] (+)= A[M,K] * B[K,N]        (row-major, leading dims)
 *
 * Structure (as in the Goto/BLIS papers): the output is cut into tiles of
 * at most GEMM_MC x GEMM_NC; a thread owns a tile and, for each block of
 * GEMM_KC values of k in order, packs its A block and B block into panel
 * layouts (gemm_core.h) and runs a register-tiled micro-kernel over every
 * MR x NR sub-tile.  The micro-kernel keeps the MR x NR accumulators in
 * registers and streams the packed panels, so per k step it loads NR/16
 * vectors of B and broadcasts MR values of A.
 *
 * Determinism: threads split only the (M, N) tiles.  Each C element sums
 * its k terms in ascending order inside a k block (one FMA chain in one
 * register lane) and adds block results to C in block order; the blocking
 * of k is a constant.  Edge tiles go through the same kernel into a
 * temporary, with the same final add.  So C is bit-identical for any
 * thread count and any tile split.
 *
 * With AVX-512, full MR-row panels of a plain (untransposed) A are read
 * in place instead of packed: MR sequential row streams prefetch well,
 * and a tile would otherwise repack the same weights for every N tile.
 *
 * A second driver, gemm_run_shifted, serves stride-1-like convolution on
 * a padded slab: B rows are read in place at per-row offsets (see
 * gemm_core.h and conv.c), with the same determinism rules.
 *
 * ISA: AVX-512 and AVX2+FMA kernels are compiled with target attributes
 * and chosen at run time; a portable scalar kernel is the fallback, and
 * the only kernel off x86 (isa.h).
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "gemm_core.h"
#include "isa.h"
#include "ops.h"

#if SL_ISA_X86
#include <immintrin.h>
#endif

/* Blocking.  This machine: L1d 48 KiB and L2 1 MiB per core.
 * GEMM_KC: one packed B micro-panel (KC x NR floats, NR = 32 for
 * AVX-512) is 32 KiB, kept in L1 while the A panels stream past it.
 * GEMM_MC: the packed A block (MC x KC = 384 KiB) stays in L2; 384 covers
 * the widest U-Net layers (320 channels) in one block so B is packed once
 * per k block, and is a multiple of every MR.
 * GEMM_NC: width of an output tile; B block KC x NC = 384 KiB, also
 * L2-resident while it is packed and consumed.  A multiple of every NR. */
#define GEMM_KC 256
_Static_assert(GEMM_KC == GEMM_KC_MAX, "gemm_core.h states the depth block");
#define GEMM_MC 384
#define GEMM_NC 384
/* Largest MR and NR over the kernels below (sizes the edge temporary). */
#define GEMM_MR_MAX 16
#define GEMM_NR_MAX 64

/* ap: packed A panel, or (in-place kernels) the first of MR weight rows
 * lda apart. */
typedef void (*MicroFn)(int kc, const float *ap, int lda, const float *bp,
                        float *c, int ldc, int mode, const float *rowinit);

/* Micro-kernel store modes. */
enum { STORE_SET = 0, STORE_ADD = 1, STORE_ROWINIT = 2 };

/* ---- portable scalar kernel: MR = 4, NR = 8 ----
 * Plain multiply-add (not fmaf, which is a slow library call on CPUs
 * without FMA, the only ones that use this kernel). */

/* ap [kc][4], bp [kc][8], c [4, 8] with ldc, rowinit [4] (STORE_ROWINIT). */
static void kern_scalar_4x8(int kc, const float *restrict ap, int lda,
                            const float *restrict bp, float *restrict c,
                            int ldc, int mode, const float *rowinit)
{
    (void)lda;
    float acc[4][8] = {{0}};
    for (int k = 0; k < kc; k++) {
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 8; j++)
                acc[i][j] += ap[k * 4 + i] * bp[k * 8 + j];
    }
    for (int i = 0; i < 4; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < 8; j++) {
            if (mode == STORE_SET)
                ci[j] = acc[i][j];
            else if (mode == STORE_ADD)
                ci[j] = ci[j] + acc[i][j];
            else
                ci[j] = rowinit[i] + acc[i][j];
        }
    }
}

#if SL_ISA_X86
/* ---- AVX2 + FMA kernel: MR = 6, NR = 16 (12 ymm accumulators) ---- */

#define AVX2_TARGET __attribute__((target("avx2,fma")))

/* ap [kc][6], bp [kc][16], c [6, 16] with ldc. */
AVX2_TARGET static void kern_avx2_6x16(int kc, const float *restrict ap,
                                       int lda, const float *restrict bp,
                                       float *restrict c, int ldc, int mode,
                                       const float *rowinit)
{
    (void)lda;
    __m256 acc[6][2];
    for (int i = 0; i < 6; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(bp);
        __m256 b1 = _mm256_loadu_ps(bp + 8);
        _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)
        {
            __m256 a = _mm256_broadcast_ss(ap + i);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
        ap += 6;
        bp += 16;
    }
    _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)
    {
        float *ci = c + (size_t)i * ldc;
        __m256 c0, c1;
        if (mode == STORE_SET) {
            c0 = _mm256_setzero_ps();
            c1 = c0;
        } else if (mode == STORE_ADD) {
            c0 = _mm256_loadu_ps(ci);
            c1 = _mm256_loadu_ps(ci + 8);
        } else {
            c0 = _mm256_set1_ps(rowinit[i]);
            c1 = c0;
        }
        if (mode == STORE_SET) {
            _mm256_storeu_ps(ci, acc[i][0]);
            _mm256_storeu_ps(ci + 8, acc[i][1]);
        } else {
            _mm256_storeu_ps(ci, _mm256_add_ps(c0, acc[i][0]));
            _mm256_storeu_ps(ci + 8, _mm256_add_ps(c1, acc[i][1]));
        }
    }
}

/* ---- AVX-512 kernel ---- */

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

/* One generator for the AVX-512 kernels: MR rows x NV vectors of 16.
 * A element (i, k) is ap[i*ARS + k*AKS]: a packed panel [kc][MR]
 * (ARS 1, AKS MR) or MR weight rows read in place (ARS lda, AKS 1).
 * bp [kc][16*NV], c [MR, 16*NV] with ldc. */
#define DEFINE_KERN_AVX512(NAME, MR, NV, ARS, AKS)                           \
    AVX512_TARGET static void NAME(                                          \
        int kc, const float *restrict ap, int lda, const float *restrict bp, \
        float *restrict c, int ldc, int mode, const float *rowinit)          \
    {                                                                        \
        __m512 acc[MR][NV];                                                  \
        (void)lda;                                                           \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[i][v] = \
                _mm512_setzero_ps();                                         \
        for (int k = 0; k < kc; k++) {                                       \
            __m512 b[NV];                                                    \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) b[v] =      \
                _mm512_loadu_ps(bp + 16 * v);                                \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)            \
            {                                                                \
                __m512 a = _mm512_set1_ps(ap[(size_t)i * (ARS)]);            \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)         \
                    acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);         \
            }                                                                \
            ap += (AKS);                                                     \
            bp += 16 * NV;                                                   \
        }                                                                    \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                \
        {                                                                    \
            float *ci = c + (size_t)i * ldc;                                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)             \
            {                                                                \
                __m512 r = acc[i][v];                                        \
                if (mode == STORE_ADD)                                       \
                    r = _mm512_add_ps(_mm512_loadu_ps(ci + 16 * v), r);      \
                else if (mode == STORE_ROWINIT)                              \
                    r = _mm512_add_ps(_mm512_set1_ps(rowinit[i]), r);        \
                _mm512_storeu_ps(ci + 16 * v, r);                            \
            }                                                                \
        }                                                                    \
    }

DEFINE_KERN_AVX512(kern_avx512_8x32, 8, 2, 1, 8)
DEFINE_KERN_AVX512(kern_avx512_8x32_u, 8, 2, lda, 1)
#endif /* SL_ISA_X86 */

/* Where a shifted micro-tile's columns go when they do not form one run
 * of valid outputs (the tile crosses the end of a padded row): tile
 * columns [a, b) of row i are stored at c + i*ldc + off + jj. */
typedef struct {
    int a, b;
    int64_t off;
} ColSeg;
/* A 32-column tile over rows of >= 12 outputs plus their ring spans at
 * most 4 runs; tiles needing more go through a temporary. */
#define COLSEG_MAX 4
typedef struct {
    int n;
    ColSeg s[COLSEG_MAX];
} ColSegs;

#if SL_ISA_X86
/* Vector v (tile columns 16v .. 16v+15) of one row, ci = its row of C:
 * the lanes inside each run, with masked stores.  The lanes are first
 * compressed to the bottom so the store address is that of the run's
 * first valid column, never before the row. */
AVX512_TARGET static inline void store_segs(float *ci, __m512 r, int v,
                                            const ColSegs *sg)
{
    for (int q = 0; q < sg->n; q++) {
        int lo = sg->s[q].a - 16 * v, hi = sg->s[q].b - 16 * v;
        if (lo < 0) lo = 0;
        if (hi > 16) hi = 16;
        if (hi <= lo) continue;
        __mmask16 m = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
        _mm512_mask_storeu_ps(ci + sg->s[q].off + 16 * v + lo,
                              (__mmask16)((1u << (hi - lo)) - 1),
                              _mm512_maskz_compress_ps(m, r));
    }
}

/* Shifted-pointer variant: B row k is read in place at xb + koff[k]
 * instead of from a packed panel.  A element (i, k) is ap[i*ARS + k*AKS]:
 * packed panels (ARS 1, AKS MR) or rows of the weight matrix read in
 * place (ARS lda, AKS 1; 8 sequential streams, which the prefetchers
 * follow, so packing the weights on every call is not worth its cost).
 * xb + koff[k] .. + 16*NV, c [MR, 16*NV] with ldc, or (sg not NULL) the
 * column runs sg describes. */
#define DEFINE_KERN_SHIFTED_AVX512(NAME, MR, NV, ARS, AKS)                   \
    AVX512_TARGET static void NAME(                                          \
        int kc, const float *restrict ap, int lda, const float *restrict xb, \
        const int32_t *restrict koff, float *restrict c, int ldc, int mode,  \
        const float *rowinit, const ColSegs *sg)                             \
    {                                                                        \
        __m512 acc[MR][NV];                                                  \
        (void)lda;                                                           \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[i][v] = \
                _mm512_setzero_ps();                                         \
        for (int k = 0; k < kc; k++) {                                       \
            const float *src = xb + koff[k];                                 \
            /* Same row two panels on: ~4% with a busy L3, else neutral */   \
            _mm_prefetch((const char *)(src + 16 * NV + 32), _MM_HINT_T0);   \
            __m512 b[NV];                                                    \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) b[v] =      \
                _mm512_loadu_ps(src + 16 * v);                               \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)            \
            {                                                                \
                __m512 a = _mm512_set1_ps(ap[(size_t)i * (ARS)]);            \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)         \
                    acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);         \
            }                                                                \
            ap += (AKS);                                                     \
        }                                                                    \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                \
        {                                                                    \
            float *ci = c + (size_t)i * ldc;                                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)             \
            {                                                                \
                __m512 r = acc[i][v];                                        \
                if (mode == STORE_ADD)                                       \
                    r = _mm512_add_ps(_mm512_loadu_ps(ci + 16 * v), r);      \
                else if (mode == STORE_ROWINIT)                              \
                    r = _mm512_add_ps(_mm512_set1_ps(rowinit[i]), r);        \
                if (sg)                                                      \
                    store_segs(ci, r, v, sg);                                \
                else                                                         \
                    _mm512_storeu_ps(ci + 16 * v, r);                        \
            }                                                                \
        }                                                                    \
    }

DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_8x32, 8, 2, 1, 8)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_8x32_u, 8, 2, lda, 1)
/* For 1 to 4 output channels (pruned layers): no wasted rows, and 16
 * accumulators still hide the FMA latency. */
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_4x64, 4, 4, 1, 4)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_4x64_u, 4, 4, lda, 1)
/* The last MR-1 or fewer rows of a weight matrix read in place (pruned
 * layers have any channel count): computing them in a full MR-row tile
 * would waste up to 7/8 of it and need a temporary.  Each C element is
 * the same FMA chain as in the full kernels, so results are unchanged.
 * Few rows leave few accumulators (latency-bound), still faster than
 * the padded tile. */
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_1x32_u, 1, 2, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_2x32_u, 2, 2, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_3x32_u, 3, 2, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_4x32_u, 4, 2, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_5x32_u, 5, 2, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_6x32_u, 6, 2, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_7x32_u, 7, 2, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_1x64_u, 1, 4, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_2x64_u, 2, 4, lda, 1)
DEFINE_KERN_SHIFTED_AVX512(kern_shifted_avx512_3x64_u, 3, 4, lda, 1)
#endif /* SL_ISA_X86 */

typedef void (*ShiftFn)(int kc, const float *ap, int lda, const float *xb,
                        const int32_t *koff, float *c, int ldc, int mode,
                        const float *rowinit, const ColSegs *sg);
typedef struct {
    int mr, nr;
    ShiftFn fn;     /* packed A */
    ShiftFn fnu;    /* A rows in place */
    int segs;       /* the kernels take ColSegs */
    ShiftFn rem[8]; /* [r]: the last r < mr rows in place, or NULL */
} ShiftKern;

#if SL_ISA_X86
/* AVX2 + FMA versions (16 ymm registers): 6x16 keeps 12 accumulators,
 * 4x16 (for 1 to 4 output channels) the 8 that two FMA pipes of latency
 * 4 need.  ap, xb, c as in the AVX-512 generator. */
#define DEFINE_KERN_SHIFTED_AVX2(NAME, MR, NV, ARS, AKS)                     \
    AVX2_TARGET static void NAME(                                            \
        int kc, const float *restrict ap, int lda, const float *restrict xb, \
        const int32_t *restrict koff, float *restrict c, int ldc, int mode,  \
        const float *rowinit, const ColSegs *sg)                             \
    {                                                                        \
        __m256 acc[MR][NV];                                                  \
        (void)lda;                                                           \
        (void)sg; /* never given: segs is 0 for these */                     \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                 \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[i][v] = \
                _mm256_setzero_ps();                                         \
        for (int k = 0; k < kc; k++) {                                       \
            const float *src = xb + koff[k];                                 \
            __m256 b[NV];                                                    \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) b[v] =      \
                _mm256_loadu_ps(src + 8 * v);                                \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)             \
            {                                                                \
                __m256 a = _mm256_broadcast_ss(ap + (size_t)i * (ARS));      \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)         \
                    acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);         \
            }                                                                \
            ap += (AKS);                                                     \
        }                                                                    \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                 \
        {                                                                    \
            float *ci = c + (size_t)i * ldc;                                 \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)             \
            {                                                                \
                __m256 r = acc[i][v];                                        \
                if (mode == STORE_ADD)                                       \
                    r = _mm256_add_ps(_mm256_loadu_ps(ci + 8 * v), r);       \
                else if (mode == STORE_ROWINIT)                              \
                    r = _mm256_add_ps(_mm256_set1_ps(rowinit[i]), r);        \
                _mm256_storeu_ps(ci + 8 * v, r);                             \
            }                                                                \
        }                                                                    \
    }

DEFINE_KERN_SHIFTED_AVX2(kern_shifted_avx2_6x16, 6, 2, 1, 6)
DEFINE_KERN_SHIFTED_AVX2(kern_shifted_avx2_6x16_u, 6, 2, lda, 1)
DEFINE_KERN_SHIFTED_AVX2(kern_shifted_avx2_4x16, 4, 2, 1, 4)
DEFINE_KERN_SHIFTED_AVX2(kern_shifted_avx2_4x16_u, 4, 2, lda, 1)
#endif /* SL_ISA_X86 */

/* Every tile holds at most 256 floats (the edge temporary); NR <= 64 and
 * divides SHIFTED_NC; MR divides GEMM_MC.  [isa][0]: general, [isa][1]:
 * narrow, for few rows. */
#define SHIFTED_TILE 256
#define SHIFTED_NR_MAX 64
static const ShiftKern shift_kerns[GEMM_ISA_AVX512 + 1][2] = {
#if SL_ISA_X86
    [GEMM_ISA_AVX2] =
        {{6, 16, kern_shifted_avx2_6x16, kern_shifted_avx2_6x16_u, 0, {0}},
         {4, 16, kern_shifted_avx2_4x16, kern_shifted_avx2_4x16_u, 0, {0}}},
    [GEMM_ISA_AVX512] =
        {{8,
          32,
          kern_shifted_avx512_8x32,
          kern_shifted_avx512_8x32_u,
          1,
          {NULL, kern_shifted_avx512_1x32_u, kern_shifted_avx512_2x32_u,
           kern_shifted_avx512_3x32_u, kern_shifted_avx512_4x32_u,
           kern_shifted_avx512_5x32_u, kern_shifted_avx512_6x32_u,
           kern_shifted_avx512_7x32_u}},
         {4,
          64,
          kern_shifted_avx512_4x64,
          kern_shifted_avx512_4x64_u,
          1,
          {NULL, kern_shifted_avx512_1x64_u, kern_shifted_avx512_2x64_u,
           kern_shifted_avx512_3x64_u}}},
#else
    [GEMM_ISA_SCALAR] = {{0}}, /* unused: gemm_shifted_available() is 0 */
#endif
};

typedef struct {
    int mr, nr;
    MicroFn fn;  /* packed A */
    MicroFn fnu; /* A rows in place, or NULL */
    const char *name;
} KernInfo;

/* Off x86 only the scalar entry is filled: gemm_isa_best() never
 * returns the others there. */
static const KernInfo kern_table[GEMM_ISA_AVX512 + 1] = {
    [GEMM_ISA_SCALAR] = {4, 8, kern_scalar_4x8, NULL, "scalar 4x8"},
#if SL_ISA_X86
    [GEMM_ISA_AVX2] = {6, 16, kern_avx2_6x16, NULL, "avx2 6x16"},
    [GEMM_ISA_AVX512] = {8, 32, kern_avx512_8x32, kern_avx512_8x32_u,
                         "avx512 8x32"},
#endif
};

GemmIsa gemm_isa_best(void)
{
    GemmIsa best = GEMM_ISA_SCALAR;
#if SL_ISA_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        best = GEMM_ISA_AVX512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        best = GEMM_ISA_AVX2;
#endif
    /* SL_GEMM_ISA=avx2|scalar caps the choice, so the fallback paths can
     * be tested and timed on an AVX-512 machine. */
    const char *cap = getenv("SL_GEMM_ISA");
    if (cap && !strcmp(cap, "scalar")) best = GEMM_ISA_SCALAR;
    if (cap && !strcmp(cap, "avx2") && best > GEMM_ISA_AVX2)
        best = GEMM_ISA_AVX2;
    return best;
}

const char *gemm_isa_name(GemmIsa isa)
{
    return kern_table[isa].name;
}

int gemm_max_threads(void)
{
    int t = omp_get_max_threads();
    int p = omp_get_num_procs();
    return t < p ? t : p;
}

/* Pack buffers are sized for every processor, not for the current thread
 * count: a caller may size scratch under one omp_set_num_threads() and
 * run under another, and gemm_max_threads() never exceeds this. */
static int gemm_pack_threads(void)
{
    int p = omp_get_num_procs();
    return p > 0 ? p : 1;
}

/* ---- dense packers ---- */

/* A(i,k) = trans ? p[k*ld + i] : p[i*ld + k].
 * dst [ceil(mc/r)][kc][r]; rows past mc are zero. */
void gemm_pack_a_dense(const GemmSrc *s, float *dst, int k0, int kc, int i0,
                       int mc, int r)
{
    size_t ld = (size_t)s->ld;
    for (int ip = 0; ip < mc; ip += r) {
        int rv = mc - ip < r ? mc - ip : r;
        if (s->trans) {
            for (int kk = 0; kk < kc; kk++) {
                const float *src = s->p + (size_t)(k0 + kk) * ld + i0 + ip;
                float *d = dst + (size_t)kk * r;
                memcpy(d, src, (size_t)rv * sizeof(float));
                for (int ii = rv; ii < r; ii++)
                    d[ii] = 0;
            }
        } else {
            for (int ii = 0; ii < r; ii++) {
                if (ii < rv) {
                    const float *src =
                        s->p + (size_t)(i0 + ip + ii) * ld + k0;
                    for (int kk = 0; kk < kc; kk++)
                        dst[(size_t)kk * r + ii] = src[kk];
                } else {
                    for (int kk = 0; kk < kc; kk++)
                        dst[(size_t)kk * r + ii] = 0;
                }
            }
        }
        dst += (size_t)kc * r;
    }
}

/* B(k,j) = trans ? p[j*ld + k] : p[k*ld + j].
 * dst [ceil(nc/r)][kc][r]; columns past nc are zero. */
void gemm_pack_b_dense(const GemmSrc *s, float *dst, int k0, int kc, int j0,
                       int nc, int r)
{
    size_t ld = (size_t)s->ld;
    for (int jp = 0; jp < nc; jp += r) {
        int rv = nc - jp < r ? nc - jp : r;
        if (!s->trans) {
            for (int kk = 0; kk < kc; kk++) {
                const float *src = s->p + (size_t)(k0 + kk) * ld + j0 + jp;
                float *d = dst + (size_t)kk * r;
                memcpy(d, src, (size_t)rv * sizeof(float));
                for (int jj = rv; jj < r; jj++)
                    d[jj] = 0;
            }
        } else {
            for (int jj = 0; jj < r; jj++) {
                if (jj < rv) {
                    const float *src =
                        s->p + (size_t)(j0 + jp + jj) * ld + k0;
                    for (int kk = 0; kk < kc; kk++)
                        dst[(size_t)kk * r + jj] = src[kk];
                } else {
                    for (int kk = 0; kk < kc; kk++)
                        dst[(size_t)kk * r + jj] = 0;
                }
            }
        }
        dst += (size_t)kc * r;
    }
}

/* ---- driver ---- */

static int min_i(int a, int b)
{
    return a < b ? a : b;
}
static int round_up(int a, int r)
{
    return (a + r - 1) / r * r;
}

/* Per-thread pack floats: A block + B block, each rounded to 16 floats so
 * every block starts 64-byte aligned. */
static size_t pack_per_thread(int m, int n, int k)
{
    size_t kc = (size_t)min_i(k, GEMM_KC);
    size_t mc = (size_t)min_i(m + GEMM_MR_MAX, GEMM_MC);
    size_t nc = (size_t)min_i(n + GEMM_NR_MAX, GEMM_NC);
    size_t a = (mc * kc + 15) / 16 * 16, b = (kc * nc + 15) / 16 * 16;
    return a + b;
}

size_t gemm_pack_floats(int m, int n, int k)
{
    if (m <= 0 || n <= 0 || k <= 0) return 0;
    /* +16: the caller's buffer may not be 64-byte aligned. */
    return (size_t)gemm_pack_threads() * pack_per_thread(m, n, k) + 16;
}

/* C with no k terms: set to rowinit / 0, or leave (accumulate). */
static void gemm_k0(float *c, int ldc, int m, int n, int accumulate,
                    const float *rowinit)
{
    if (accumulate) return;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[(size_t)i * ldc + j] = rowinit ? rowinit[i] : 0.0f;
}

/* One MR x NR sub-tile at (i, j) of C with mr_v x nr_v valid entries,
 * computed by fn (packed A, or rows lda apart in place). */
static void run_tile(const KernInfo *kd, MicroFn fn, int kc, const float *ap,
                     int lda, const float *bp, float *c, int ldc, int mode,
                     const float *rowinit, int mr_v, int nr_v)
{
    if (mr_v == kd->mr && nr_v == kd->nr) {
        fn(kc, ap, lda, bp, c, ldc, mode, rowinit);
        return;
    }
    /* Edge: same kernel into a temporary, then the same final add. */
    float tmp[GEMM_MR_MAX * GEMM_NR_MAX];
    fn(kc, ap, lda, bp, tmp, kd->nr, STORE_SET, NULL);
    for (int i = 0; i < mr_v; i++) {
        float *ci = c + (size_t)i * ldc;
        const float *ti = tmp + (size_t)i * kd->nr;
        for (int j = 0; j < nr_v; j++) {
            if (mode == STORE_SET)
                ci[j] = ti[j];
            else if (mode == STORE_ADD)
                ci[j] = ci[j] + ti[j];
            else
                ci[j] = rowinit[i] + ti[j];
        }
    }
}

/* The driver of gemm_run and gemm_run_store: C tiles into c (ldc), or,
 * with store set (then k <= GEMM_KC), each micro-tile through a
 * temporary handed to store. */
static void gemm_drive(GemmIsa isa, float *c, int ldc, const GemmSrc *a,
                       const GemmSrc *b, int m, int n, int k, int accumulate,
                       const float *rowinit, float *pack, GemmStoreFn store,
                       const void *ctx)
{
    const KernInfo *kd = &kern_table[isa];
    CHECK(kd->fn); /* an ISA this build has kernels for (gemm_isa_best) */
    const int mr = kd->mr, nr = kd->nr;
    const int nthr = gemm_max_threads();
    const int in_place = kd->fnu && a->pack == gemm_pack_a_dense && !a->trans;

    /* Tile sizes: as large as the blocking allows, then split until every
     * thread has a few tiles (the split never changes the results).  N
     * first: M tiles would each pack the same B block; but while A is
     * packed too, not below 4 panels, as N tiles each pack A. */
    int mc = min_i(round_up(m, mr), GEMM_MC);
    int nc = min_i(round_up(n, nr), GEMM_NC);
    int tm = (m + mc - 1) / mc, tn = (n + nc - 1) / nc;
    while (tm * tn < 4 * nthr && nc > (in_place ? nr : 4 * nr)) {
        nc = round_up(nc / 2, nr);
        tn = (n + nc - 1) / nc;
    }
    while (tm * tn < 2 * nthr && mc > mr) {
        mc = round_up(mc / 2, mr);
        tm = (m + mc - 1) / mc;
    }
    const int ntiles = tm * tn;
    const size_t per = pack_per_thread(m, n, k);
    float *base = (float *)(((uintptr_t)pack + 63) & ~(uintptr_t)63);
    const size_t a_floats =
        (size_t)min_i(m + GEMM_MR_MAX, GEMM_MC) * (size_t)min_i(k, GEMM_KC);
    const size_t a_off = (a_floats + 15) / 16 * 16;

#pragma omp parallel num_threads(ntiles < nthr ? ntiles : nthr)
    {
        float *pa = base + (size_t)omp_get_thread_num() * per;
        float *pb = pa + a_off;
        float tile[GEMM_MR_MAX * GEMM_NR_MAX]; /* gemm_run_store's */
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntiles; t++) {
            int i0 = (t / tn) * mc, j0 = (t % tn) * nc;
            int mcur = min_i(mc, m - i0), ncur = min_i(nc, n - j0);
            for (int pc = 0; pc < k; pc += GEMM_KC) {
                int kc = min_i(GEMM_KC, k - pc);
                int mode = pc > 0 || accumulate ? STORE_ADD
                           : rowinit            ? STORE_ROWINIT
                                                : STORE_SET;
                /* Full row panels of a plain A are read in place; a
                 * partial last panel (and any other A) is packed. */
                int mfull = in_place ? mcur / mr * mr : 0;
                if (mfull < mcur)
                    a->pack(a, pa, pc, kc, i0 + mfull, mcur - mfull, mr);
                b->pack(b, pb, pc, kc, j0, ncur, nr);
                for (int jr = 0; jr < ncur; jr += nr) {
                    const float *bp = pb + (size_t)(jr / nr) * kc * nr;
                    for (int ir = 0; ir < mcur; ir += mr) {
                        int ip = ir < mfull;
                        const float *ap =
                            ip ? a->p + (size_t)(i0 + ir) * a->ld + pc
                               : pa + (size_t)((ir - mfull) / mr) * kc * mr;
                        if (store) {
                            (ip ? kd->fnu : kd->fn)(kc, ap, a->ld, bp, tile,
                                                    nr, STORE_SET, NULL);
                            store(ctx, i0 + ir, j0 + jr, tile, nr,
                                  min_i(mr, mcur - ir), min_i(nr, ncur - jr));
                            continue;
                        }
                        run_tile(kd, ip ? kd->fnu : kd->fn, kc, ap, a->ld, bp,
                                 c + (size_t)(i0 + ir) * ldc + j0 + jr, ldc,
                                 mode, rowinit ? rowinit + i0 + ir : NULL,
                                 min_i(mr, mcur - ir), min_i(nr, ncur - jr));
                    }
                }
            }
        }
    }
}

/* c [m, n] with ldc; a, b: operand sources (gemm_core.h); rowinit [m] or
 * NULL; pack gemm_pack_floats(m, n, k). */
void gemm_run(GemmIsa isa, float *c, int ldc, const GemmSrc *a,
              const GemmSrc *b, int m, int n, int k, int accumulate,
              const float *rowinit, float *pack)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        gemm_k0(c, ldc, m, n, accumulate, rowinit);
        return;
    }
    gemm_drive(isa, c, ldc, a, b, m, n, k, accumulate, rowinit, pack, NULL,
               NULL);
}

void gemm_run_store(GemmIsa isa, GemmStoreFn store, const void *ctx,
                    const GemmSrc *a, const GemmSrc *b, int m, int n, int k,
                    float *pack)
{
    CHECK(k >= 1 && k <= GEMM_KC);
    if (m <= 0 || n <= 0) return;
    gemm_drive(isa, NULL, 0, a, b, m, n, k, 0, NULL, pack, store, ctx);
}

/* ---- prepacked operands (Winograd) ---- */

void gemm_kernel_dims(GemmIsa isa, int *mr, int *nr)
{
    CHECK(kern_table[isa].fn);
    *mr = kern_table[isa].mr;
    *nr = kern_table[isa].nr;
}

/* c [m, n] with ldc; ap [m/MR][k][MR], bp [n/NR][k][NR]; m, n multiples
 * of MR, NR.  Depth in GEMM_KC blocks added in order, as gemm_run does,
 * so each element's sum does not depend on where its column sits. */
void gemm_prepacked_serial(GemmIsa isa, float *c, int ldc, const float *ap,
                           const float *bp, int m, int n, int k)
{
    const KernInfo *kd = &kern_table[isa];
    CHECK(kd->fn && m % kd->mr == 0 && n % kd->nr == 0);
    const int mr = kd->mr, nr = kd->nr;
    for (int pc = 0; pc < k; pc += GEMM_KC) {
        int kc = min_i(GEMM_KC, k - pc);
        int mode = pc > 0 ? STORE_ADD : STORE_SET;
        for (int jr = 0; jr < n; jr += nr) {
            const float *b = bp + (size_t)jr * k + (size_t)pc * nr;
            for (int ir = 0; ir < m; ir += mr)
                kd->fn(kc, ap + (size_t)ir * k + (size_t)pc * mr, 0, b,
                       c + (size_t)ir * ldc + jr, ldc, mode, NULL);
        }
    }
}

/* ---- shifted-pointer driver ---- */

int gemm_shifted_available(GemmIsa isa)
{
    return SL_ISA_X86 && isa >= GEMM_ISA_AVX2;
}
int gemm_shifted_nr(void)
{
    return SHIFTED_NR_MAX;
}

/* c [mv rows] <- rowinit + t [mv, ldt] over product columns j0 .. j0+nv
 * through the column map. */
static void shifted_store(float *c, int ldc, const float *t, int ldt,
                          const ShiftMap *mp, int j0, int nv, int mv,
                          const float *rowinit)
{
    int plane = mp->s1 * mp->s2;
    int z = j0 / plane, y = j0 % plane / mp->s2, x = j0 % mp->s2;
    for (int jj = 0; jj < nv;) {
        /* One run: columns jj .. jj+len of padded row (z, y). */
        int len = mp->s2 - x < nv - jj ? mp->s2 - x : nv - jj;
        int lv = x < mp->ow ? (mp->ow - x < len ? mp->ow - x : len) : 0;
        if (z < mp->zv && y < mp->yv && lv > 0) {
            int64_t off = mp->base + z * mp->zpitch + y * mp->ypitch + x;
            for (int i = 0; i < mv; i++) {
                float *ci = c + (size_t)i * ldc + off;
                const float *ti = t + (size_t)i * ldt + jj;
                float r = rowinit ? rowinit[i] : 0.0f;
                if (rowinit)
                    for (int q = 0; q < lv; q++)
                        ci[q] = r + ti[q];
                else
                    memcpy(ci, ti, (size_t)lv * sizeof(float));
            }
        }
        jj += len;
        x = 0;
        if (++y == mp->s1) {
            y = 0;
            z++;
        }
    }
}

/* Runs of valid outputs among product columns j .. j+nv: tile columns
 * [a, b) of each go to C offset off + jj.  Returns 0 when there are more
 * than COLSEG_MAX. */
static int shifted_segs(const ShiftMap *mp, int j, int nv, ColSegs *sg)
{
    int plane = mp->s1 * mp->s2;
    int z = j / plane, y = j % plane / mp->s2, x = j % mp->s2;
    sg->n = 0;
    for (int jj = 0; jj < nv;) {
        int len = mp->s2 - x < nv - jj ? mp->s2 - x : nv - jj;
        int lv = x < mp->ow ? (mp->ow - x < len ? mp->ow - x : len) : 0;
        if (z < mp->zv && y < mp->yv && lv > 0) {
            if (sg->n == COLSEG_MAX) return 0;
            int64_t off = mp->base + z * mp->zpitch + y * mp->ypitch + x;
            sg->s[sg->n++] = (ColSeg){jj, jj + lv, off - jj};
        }
        jj += len;
        x = 0;
        if (++y == mp->s1) {
            y = 0;
            z++;
        }
    }
    return 1;
}

/* One k block (see SHIFTED_K1): micro-tile of the shifted GEMM at product
 * columns j .. j+NR (nr_v valid) and rows mr_v, computed by fn with kmr
 * rows.  Straight into C when the columns are one run of valid outputs,
 * or with masked stores of each run (kernels that take ColSegs), else
 * through a temporary and the column map. */
static void shifted_tile(const ShiftKern *sk, ShiftFn fn, int kmr, int kc,
                         const float *ap, int lda, const float *xb,
                         const int32_t *koff, float *c, int ldc,
                         const ShiftMap *mp, int j, int nr_v, int mr_v,
                         const float *rowinit)
{
    int plane = mp->s1 * mp->s2;
    int z = j / plane, y = j % plane / mp->s2, x = j % mp->s2;
    int mode = rowinit ? STORE_ROWINIT : STORE_SET;
    if (mr_v == kmr && nr_v == sk->nr && z < mp->zv && y < mp->yv &&
        x + sk->nr <= mp->ow) {
        int64_t off = mp->base + z * mp->zpitch + y * mp->ypitch + x;
        fn(kc, ap, lda, xb, koff, c + off, ldc, mode, rowinit, NULL);
        return;
    }
    ColSegs sg;
    if (mr_v == kmr && sk->segs && shifted_segs(mp, j, nr_v, &sg)) {
        fn(kc, ap, lda, xb, koff, c, ldc, mode, rowinit, &sg);
        return;
    }
    float tmp[SHIFTED_TILE];
    fn(kc, ap, lda, xb, koff, tmp, sk->nr, STORE_SET, NULL, NULL);
    shifted_store(c, ldc, tmp, sk->nr, mp, j, nr_v, mr_v, rowinit);
}

/* Shifted tiles accumulate in a per-thread buffer in product-column
 * order (all k blocks), then go to C once through the column map: the
 * padded rows do not line up with micro-tiles, and mapping every k block
 * would cost as much as the arithmetic when K is large.  (With one k
 * block, shifted_tile stores straight into C instead: for few channels
 * the extra pass through the buffer would cost more than it saves.)  128
 * columns: with GEMM_MC rows that is 192 KiB, in L2 beside the A block. */
#define SHIFTED_NC 128

/* One k block up to SHIFTED_K1 deep (3x3 convs of up to 64 channels,
 * 3x3x3 of up to 23) when the A block stays under SHIFTED_A1 floats
 * (384 KiB of L2): single pass, stores straight to C.  The unpacked B
 * rows of a 32-column panel overlap (neighbouring taps), so 640 rows
 * still touch under ~40 KiB of L1. */
#define SHIFTED_K1 640
#define SHIFTED_A1 (96 * 1024)

static size_t shifted_a_floats(int k)
{
    size_t a = (size_t)GEMM_MC * (size_t)min_i(k, GEMM_KC);
    if (a < SHIFTED_A1) a = SHIFTED_A1;
    return (a + 15) / 16 * 16;
}

static size_t shifted_per_thread(int k)
{
    return shifted_a_floats(k) + (size_t)GEMM_MC * SHIFTED_NC;
}

size_t gemm_shifted_pack_floats(int k)
{
    return (size_t)gemm_pack_threads() * shifted_per_thread(k) + 16;
}

/* c [m, out positions] with ldc; a: weights source; xb: slab, read at
 * koff[k] + j; map: product column -> output position; rowinit [m] or
 * NULL; pack gemm_shifted_pack_floats(k).  Called by every thread of the
 * current team (work-shared tiles, one barrier at the end). */
void gemm_shifted_team(GemmIsa isa, float *c, int ldc, const GemmSrc *a,
                       const float *xb, const int32_t *koff,
                       const ShiftMap *map, int m, int n, int k,
                       const float *rowinit, float *pack)
{
    CHECK(gemm_shifted_available(isa));
    if (m <= 0 || n <= 0 || k <= 0) return;
    /* The narrow kernel when it wastes fewer rows (few output channels,
     * e.g. 4, 8 or 12 with AVX2's 6-row kernel). */
    const ShiftKern *wide = &shift_kerns[isa][0],
                    *narrow = &shift_kerns[isa][1];
    const ShiftKern *sk =
        m <= 16 && round_up(m, narrow->mr) - m < round_up(m, wide->mr) - m
            ? narrow
            : wide;
    const int mr = sk->mr, nr = sk->nr;
    const int nthr = omp_get_num_threads();
    int mc = min_i(round_up(m, mr), GEMM_MC);
    int nc = min_i(round_up(n, nr), SHIFTED_NC);
    int tm = (m + mc - 1) / mc, tn = (n + nc - 1) / nc;
    while (tm * tn < 2 * nthr && mc > mr) {
        mc = round_up(mc / 2, mr);
        tm = (m + mc - 1) / mc;
    }
    const int ntiles = tm * tn;
    /* Decided on the unsplit row block, never on mc: the k blocking
     * fixes the rounding, and mc depends on the thread count. */
    const int one_block =
        k <= SHIFTED_K1 &&
        (size_t)min_i(round_up(m, mr), GEMM_MC) * k <= SHIFTED_A1;
    const int kblk = one_block ? k : GEMM_KC;
    const int in_place = a->pack == gemm_pack_a_dense && !a->trans;
    const size_t per = shifted_per_thread(k);
    const size_t a_off = shifted_a_floats(k);
    float *base = (float *)(((uintptr_t)pack + 63) & ~(uintptr_t)63);

    {
        float *pa = base + (size_t)omp_get_thread_num() * per;
        float *ct = pa + a_off; /* [mc rounded to MR][SHIFTED_NC] */
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntiles; t++) {
            int i0 = (t / tn) * mc, j0 = (t % tn) * nc;
            int mcur = min_i(mc, m - i0), ncur = min_i(nc, n - j0);
            /* Full row panels read A in place when it is a plain matrix,
             * and so does a partial last panel when there is a kernel
             * for its rows; any other is packed. */
            int mfull = in_place ? mcur / mr * mr : 0;
            ShiftFn remfn =
                in_place && mfull < mcur ? sk->rem[mcur - mfull] : NULL;
            if (remfn) mfull = mcur;
            for (int pc = 0; pc < k; pc += kblk) {
                int kc = min_i(kblk, k - pc);
                if (mfull < mcur)
                    a->pack(a, pa, pc, kc, i0 + mfull, mcur - mfull, mr);
                for (int jr = 0; jr < ncur; jr += nr) {
                    for (int ir = 0; ir < mcur; ir += mr) {
                        const float *ap;
                        ShiftFn fn;
                        const ShiftKern *tk = sk; /* nr of this tile */
                        int kmr = mr;
                        if (ir < mfull) {
                            ap = a->p + (size_t)(i0 + ir) * a->ld + pc;
                            fn = sk->fnu;
                            if (mcur - ir < mr) {
                                fn = remfn;
                                kmr = mcur - ir;
                            }
                        } else {
                            ap = pa + (size_t)((ir - mfull) / mr) * kc * mr;
                            fn = sk->fn;
                        }
                        /* 1 to 3 remainder rows over 32 columns keep 2 to
                         * 6 accumulators: bound by FMA latency.  The
                         * narrow set's 64-column kernels (every other
                         * column step) run twice the chains. */
                        if (kmr < mr && kmr <= 3 && narrow->nr == 2 * nr &&
                            narrow->rem[kmr]) {
                            if (jr % narrow->nr) continue;
                            tk = narrow;
                            fn = narrow->rem[kmr];
                        }
                        if (one_block)
                            shifted_tile(
                                tk, fn, kmr, kc, ap, a->ld, xb + j0 + jr,
                                koff, c + (size_t)(i0 + ir) * ldc, ldc, map,
                                j0 + jr, min_i(tk->nr, ncur - jr),
                                min_i(mr, mcur - ir),
                                rowinit ? rowinit + i0 + ir : NULL);
                        else
                            fn(kc, ap, a->ld, xb + j0 + jr, koff + pc,
                               ct + (size_t)ir * SHIFTED_NC + jr, SHIFTED_NC,
                               pc > 0 ? STORE_ADD : STORE_SET, NULL, NULL);
                    }
                }
            }
            if (!one_block)
                shifted_store(c + (size_t)i0 * ldc, ldc, ct, SHIFTED_NC, map,
                              j0, ncur, mcur, rowinit ? rowinit + i0 : NULL);
        }
    }
}

void gemm_run_shifted(GemmIsa isa, float *c, int ldc, const GemmSrc *a,
                      const float *xb, const int32_t *koff,
                      const ShiftMap *map, int m, int n, int k,
                      const float *rowinit, float *pack)
{
#pragma omp parallel num_threads(gemm_max_threads())
    gemm_shifted_team(isa, c, ldc, a, xb, koff, map, m, n, k, rowinit, pack);
}

/* ---- public entry points ---- */

void gemm_t(float *c, const float *a, const float *b, int m, int n, int k,
            int lda, int ldb, int ldc, int trans_a, int trans_b,
            int accumulate, float *pack)
{
    GemmSrc as = {gemm_pack_a_dense, a, lda, trans_a, NULL};
    GemmSrc bs = {gemm_pack_b_dense, b, ldb, trans_b, NULL};
    gemm_run(gemm_isa_best(), c, ldc, &as, &bs, m, n, k, accumulate, NULL,
             pack);
}

void gemm(float *c, const float *a, const float *b, int m, int n, int k,
          int lda, int ldb, int ldc, int accumulate, float *pack)
{
    gemm_t(c, a, b, m, n, k, lda, ldb, ldc, 0, 0, accumulate, pack);
}

/* c [m, n] ldc, a [m, k] lda, b [k, n] ldb: the textbook triple loop. */
void gemm_ref(float *c, const float *a, const float *b, int m, int n, int k,
              int lda, int ldb, int ldc, int accumulate)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            float s = 0;
            for (int kk = 0; kk < k; kk++)
                s += a[(size_t)i * lda + kk] * b[(size_t)kk * ldb + j];
            float *cij = &c[(size_t)i * ldc + j];
            *cij = accumulate ? *cij + s : s;
        }
    }
}
