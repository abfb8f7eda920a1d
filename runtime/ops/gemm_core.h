/* Private interface of the blocked GEMM (gemm.c) for the convolution files
 * and the kernel tests.  Not part of the public op API.
 *
 * The driver computes C[M,N] (+)= A[M,K] * B[K,N] where A and B are not
 * necessarily stored matrices: each is described by a packer that writes
 * a block of it straight into the packed panel layout.  Convolution uses
 * this to run im2col inside the B packing, so no full column matrix ever
 * exists in memory.
 *
 * Packed layouts (r = panel width: MR for A, NR for B):
 *   A block [mc, kc] -> panels of r rows:    ap[panel][k][r]
 *   B block [kc, nc] -> panels of r columns: bp[panel][k][r]
 * Rows/columns past the matrix edge are zero-filled, so the micro-kernel
 * always computes full tiles.
 */
#ifndef SL_GEMM_CORE_H
#define SL_GEMM_CORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct GemmSrc GemmSrc;
/* Write rows k0..k0+kc and columns j0..j0+nc of the operand, as panels of
 * `r` columns (for B; for A the roles of rows and columns are swapped:
 * A rows i0..i0+nc become the panel dimension).  dst holds
 * ceil(nc/r)*kc*r floats. */
typedef void (*GemmPackFn)(const GemmSrc *s, float *dst, int k0, int kc,
                           int j0, int nc, int r);

struct GemmSrc {
    GemmPackFn pack;
    const float *p;  /* dense operand, or the conv input for im2col */
    int ld;          /* leading dimension of the dense operand */
    int trans;       /* dense operand stored transposed */
    const void *ctx; /* packer-specific geometry (conv) */
};

typedef enum { GEMM_ISA_SCALAR, GEMM_ISA_AVX2, GEMM_ISA_AVX512 } GemmIsa;

/* Best ISA this CPU supports, capped by the environment variable
 * SL_GEMM_ISA=avx2|scalar when set (tests and benchmarks of the
 * fallbacks). */
GemmIsa gemm_isa_best(void);
const char *gemm_isa_name(GemmIsa isa);

/* The driver.  c [M,N] with ldc.  rowinit (may be NULL): when !accumulate,
 * C is initialised to rowinit[i] (a per-row bias) instead of 0.  pack:
 * gemm_pack_floats(m, n, k) floats.  Parallel over (M, N) tiles inside;
 * the K reduction order per element is fixed (blocks of GEMM_KC in order,
 * ascending k inside), so results do not depend on the thread count. */
void gemm_run(GemmIsa isa, float *c, int ldc, const GemmSrc *a,
              const GemmSrc *b, int m, int n, int k, int accumulate,
              const float *rowinit, float *pack);

/* gemm_run without C: each finished micro-tile, rows i0 .. i0+mr_v and
 * columns j0 .. j0+nr_v of the product, is handed to store as tile
 * [mr_v][nr_v] (row stride ldt), so a caller can scatter C wherever it
 * belongs (ConvTranspose: straight into its output) without a C buffer.
 * Called by the tile's thread; tiles are disjoint.  k <= GEMM_KC_MAX
 * (one block of depth, so each tile is final when handed over; its
 * values are bit-identical to gemm_run's C without rowinit).  pack:
 * gemm_pack_floats(m, n, k). */
#define GEMM_KC_MAX 256
typedef void (*GemmStoreFn)(const void *ctx, int i0, int j0,
                            const float *tile, int ldt, int mr_v, int nr_v);
void gemm_run_store(GemmIsa isa, GemmStoreFn store, const void *ctx,
                    const GemmSrc *a, const GemmSrc *b, int m, int n, int k,
                    float *pack);

/* Dense packers, usable as GemmSrc.pack for plain matrices. */
void gemm_pack_a_dense(const GemmSrc *s, float *dst, int k0, int kc, int i0,
                       int mc, int r);
void gemm_pack_b_dense(const GemmSrc *s, float *dst, int k0, int kc, int j0,
                       int nc, int r);

/* Shifted-pointer ("implicit") GEMM for convolution on a zero-padded,
 * phase-split input slab (any stride; see conv.c): B(k, j) =
 * xb[koff[k] + j], so B is read in place and never packed.  Column j of the
 * product is slab position (z', y', x') = (j / (s1*s2), j / s2 % s1, j % s2)
 * and is stored at c[i*ldc + base + z'*zpitch + y'*ypitch + x'] when z' < zv,
 * y' < yv and x' < ow; other columns (the padding ring) are computed and
 * dropped. Overwrites C (plus rowinit[i] when given).  Same determinism as
 * gemm_run.  AVX-512 and AVX2 only: call only when
 * gemm_shifted_available(isa). */
typedef struct {
    int s1, s2;     /* slab row count and row length (padded) */
    int zv, yv, ow; /* valid planes, rows per plane, columns per row */
    int64_t base, zpitch, ypitch;
} ShiftMap;

int gemm_shifted_available(GemmIsa isa);
/* Widest micro-kernel of the shifted path: xb must allow reads up to
 * max_k koff[k] + n - 1 + (this - 1). */
int gemm_shifted_nr(void);
/* pack floats gemm_run_shifted needs for depth k. */
size_t gemm_shifted_pack_floats(int k);
void gemm_run_shifted(GemmIsa isa, float *c, int ldc, const GemmSrc *a,
                      const float *xb, const int32_t *koff,
                      const ShiftMap *map, int m, int n, int k,
                      const float *rowinit, float *pack);
/* The same, work-shared by the calling team: every thread of an enclosing
 * parallel region calls it with the same arguments (fewer fork/joins when
 * a caller runs several in a row). */
void gemm_shifted_team(GemmIsa isa, float *c, int ldc, const GemmSrc *a,
                       const float *xb, const int32_t *koff,
                       const ShiftMap *map, int m, int n, int k,
                       const float *rowinit, float *pack);

/* Micro-kernel tile of an ISA: MR rows by NR columns. */
void gemm_kernel_dims(GemmIsa isa, int *mr, int *nr);
/* One thread, no packing: C[m, n] (ldc) = A[m, k] * B[k, n] with both
 * operands already in the panel layouts above for the whole depth,
 * ap [m/MR][k][MR] and bp [n/NR][k][NR]; m and n multiples of MR and NR.
 * Overwrites C.  Same k order as gemm_run (GEMM_KC blocks in order,
 * ascending k inside), so a column's result does not depend on its
 * position in B. */
void gemm_prepacked_serial(GemmIsa isa, float *c, int ldc, const float *ap,
                           const float *bp, int m, int n, int k);

/* Threads gemm_run uses: min(omp_get_max_threads(), processors).  Pack
 * buffers are sized for all processors, so scratch sized under one
 * thread count stays valid under any other. */
int gemm_max_threads(void);

#endif
