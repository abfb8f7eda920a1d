/* Convolution kernels: the fast paths (padded-slab, im2col, pointwise,
 * transposed) against the naive references on awkward shapes (1D, 2D,
 * 3D; odd sizes, stride, dilation, asymmetric pads, groups, 1x1,
 * transposed with kernel == stride and with overlap, output padding,
 * several k blocks, several slabs and column chunks), the same cases on
 * the AVX2 and scalar micro-kernels (SL_GEMM_ISA), GEMM vs gemm_ref on
 * awkward M, N, K, bit identity between 1 and 2 threads (fixed and random
 * shapes), and the op-table hooks (shape inference errors, FLOPs).
 *
 * Tolerance.  Inputs and weights are uniform in [-1, 1], so a product
 * has variance 1/9.  An output is a sum of K products (K = IC/group *
 * kernel volume, or the GEMM depth): partial sums are ~ sqrt(K)/3, and
 * float rounding of the K additions (u = 6e-8 each, random signs) gives
 * an error of ~ u * sqrt(K) * sqrt(K)/3 = 2e-8 * K.  The conv references
 * sum in double; gemm_ref sums in float.  We allow atol = 4e-7 * K per
 * rounding side (20x the estimate; 2x that for gemm vs gemm_ref) plus
 * rtol 1e-5.  An indexing bug moves outputs by O(0.1), far outside this.
 * Scratch is filled with NaN, so a kernel that reads scratch it did not
 * write fails the comparison.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/ops/gemm_core.h"
#include "runtime/ops/ops.h"
#include "tests/testutil.h"

static double tol_for_k(long k)
{
    return 4e-7 * (double)(k > 0 ? k : 1);
}

static float *alloc_fill(TestRng *r, size_t n)
{
    float *p = sl_alloc(n * sizeof(float));
    assert_non_null(p);
    trng_fill(r, p, n, -1.0f, 1.0f);
    return p;
}

/* Scratch full of NaN: a kernel that reads scratch it did not write
 * produces NaN outputs and fails the comparison. */
static float *alloc_nan(size_t n)
{
    float *p = sl_alloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

/* ---- GEMM ---- */

static void check_gemm(GemmIsa isa, int m, int n, int k, int pad, int acc,
                       int ta, int tb, TestRng *r)
{
    int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    size_t asz = (size_t)(ta ? k : m) * lda, bsz = (size_t)(tb ? n : k) * ldb;
    float *a = alloc_fill(r, asz), *b = alloc_fill(r, bsz);
    float *c = alloc_fill(r, (size_t)m * ldc);
    float *cref = sl_alloc((size_t)m * ldc * sizeof(float));
    float *an = sl_alloc((size_t)m * k * sizeof(float) + 4);
    float *bn = sl_alloc((size_t)k * n * sizeof(float) + 4);
    memcpy(cref, c, (size_t)m * ldc * sizeof(float));
    /* Plain row-major copies of op(A), op(B) for the reference. */
    for (int i = 0; i < m; i++)
        for (int kk = 0; kk < k; kk++)
            an[(size_t)i * k + kk] =
                ta ? a[(size_t)kk * lda + i] : a[(size_t)i * lda + kk];
    for (int kk = 0; kk < k; kk++)
        for (int j = 0; j < n; j++)
            bn[(size_t)kk * n + j] =
                tb ? b[(size_t)j * ldb + kk] : b[(size_t)kk * ldb + j];
    float *pack = alloc_nan(gemm_pack_floats(m, n, k));
    GemmSrc as = {gemm_pack_a_dense, a, lda, ta, NULL};
    GemmSrc bs = {gemm_pack_b_dense, b, ldb, tb, NULL};
    gemm_run(isa, c, ldc, &as, &bs, m, n, k, acc, NULL, pack);
    gemm_ref(cref, an, bn, m, n, k, k, n, ldc, acc);
    char what[160];
    snprintf(what, sizeof what,
             "gemm %s m=%d n=%d k=%d pad=%d acc=%d ta=%d tb=%d",
             gemm_isa_name(isa), m, n, k, pad, acc, ta, tb);
    int ok = 1;
    for (int i = 0; i < m && ok; i++)
        ok = allclose(c + (size_t)i * ldc, cref + (size_t)i * ldc, (size_t)n,
                      2 * tol_for_k(k), 1e-5, what);
    /* Padding columns of C are never written. */
    for (int i = 0; i < m && ok; i++)
        for (int j = n; j < ldc; j++)
            ok = ok && c[(size_t)i * ldc + j] == cref[(size_t)i * ldc + j];
    sl_free(a);
    sl_free(b);
    sl_free(c);
    sl_free(cref);
    sl_free(an);
    sl_free(bn);
    sl_free(pack);
    assert_true(ok);
}

static int isa_ok(GemmIsa isa)
{
    return isa <= gemm_isa_best();
}

static void test_gemm_shapes(void **state)
{
    (void)state;
    TestRng r = {1};
    static const int sz[] = {1, 7, 17, 65, 130};
    for (int isa = GEMM_ISA_SCALAR; isa <= GEMM_ISA_AVX512; isa++) {
        if (!isa_ok((GemmIsa)isa)) continue;
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++)
                for (int l = 0; l < 5; l++)
                    check_gemm((GemmIsa)isa, sz[i], sz[j], sz[l],
                               (i + j + l) % 3, (i + l) % 2, 0, 0, &r);
        /* Several k blocks (GEMM_KC = 256), tiles over M and N, and
         * transposed operands. */
        check_gemm((GemmIsa)isa, 97, 401, 600, 1, 0, 0, 0, &r);
        check_gemm((GemmIsa)isa, 400, 33, 513, 0, 1, 0, 0, &r);
        check_gemm((GemmIsa)isa, 37, 45, 300, 2, 0, 1, 0, &r);
        check_gemm((GemmIsa)isa, 19, 70, 270, 0, 1, 0, 1, &r);
        check_gemm((GemmIsa)isa, 50, 29, 31, 3, 0, 1, 1, &r);
    }
}

static void test_gemm_public_and_k0(void **state)
{
    (void)state;
    TestRng r = {2};
    int m = 13, n = 29, k = 21;
    float *a = alloc_fill(&r, (size_t)m * k),
          *b = alloc_fill(&r, (size_t)k * n);
    float *c = alloc_fill(&r, (size_t)m * n),
          *cref = sl_alloc((size_t)m * n * 4);
    float *pack = alloc_nan(gemm_pack_floats(m, n, k));
    memcpy(cref, c, (size_t)m * n * 4);
    gemm(c, a, b, m, n, k, k, n, n, 1, pack);
    gemm_ref(cref, a, b, m, n, k, k, n, n, 1);
    assert_allclose(c, cref, (size_t)m * n, 2 * tol_for_k(k), 1e-5);
    /* k = 0: overwrite gives zeros, accumulate leaves C alone. */
    gemm(c, a, b, m, n, 0, k, n, n, 1, pack);
    assert_allclose(c, cref, (size_t)m * n, 2 * tol_for_k(k), 1e-5);
    gemm(c, a, b, m, n, 0, k, n, n, 0, pack);
    for (int i = 0; i < m * n; i++)
        assert_true(c[i] == 0.0f);
    sl_free(a);
    sl_free(b);
    sl_free(c);
    sl_free(cref);
    sl_free(pack);
}

/* ---- convolution cases ---- */

typedef struct {
    int nsp, n, ic, oc;
    int in[3], k[3], s[3], d[3], plo[3], phi[3], opad[3];
    int group, bias;
} ConvCase;

static void case_shapes(const ConvCase *cc, int transpose, Shape *xs,
                        Shape *ws, Shape *ys, ConvParams *p)
{
    memset(p, 0, sizeof *p);
    p->nsp = cc->nsp;
    p->group = cc->group;
    xs->ndim = ws->ndim = ys->ndim = cc->nsp + 2;
    xs->d[0] = ys->d[0] = cc->n;
    xs->d[1] = cc->ic;
    ys->d[1] = cc->oc;
    ws->d[0] = transpose ? cc->ic : cc->oc;
    ws->d[1] = transpose ? cc->oc / cc->group : cc->ic / cc->group;
    for (int i = 0; i < cc->nsp; i++) {
        p->kernel[i] = cc->k[i];
        p->stride[i] = cc->s[i] ? cc->s[i] : 1;
        p->dilation[i] = cc->d[i] ? cc->d[i] : 1;
        p->pad_lo[i] = cc->plo[i];
        p->pad_hi[i] = cc->phi[i];
        p->out_pad[i] = cc->opad[i];
        xs->d[2 + i] = cc->in[i];
        ws->d[2 + i] = cc->k[i];
        int span = p->dilation[i] * (cc->k[i] - 1) + 1;
        ys->d[2 + i] = transpose
                           ? p->stride[i] * (cc->in[i] - 1) + cc->opad[i] +
                                 span - cc->plo[i] - cc->phi[i]
                           : (cc->in[i] + cc->plo[i] + cc->phi[i] - span) /
                                     p->stride[i] +
                                 1;
    }
}

/* Multiply-adds of a case (for skipping the biggest in repeat runs). */
static double case_macs(const ConvCase *cc, int transpose)
{
    Shape xs, ws, ys;
    ConvParams p;
    case_shapes(cc, transpose, &xs, &ws, &ys, &p);
    double m =
        (double)shape_numel(transpose ? &xs : &ys) * (cc->ic / cc->group);
    for (int i = 0; i < cc->nsp; i++)
        m *= cc->k[i];
    return transpose ? m / cc->ic * cc->oc : m;
}

static void run_case(const ConvCase *cc, int transpose)
{
    TestRng r = {(uint64_t)(cc->ic * 131 + cc->oc * 7 + cc->in[0])};
    Shape xs, ws, ys;
    ConvParams p;
    case_shapes(cc, transpose, &xs, &ws, &ys, &p);
    size_t nx = (size_t)shape_numel(&xs), nw = (size_t)shape_numel(&ws);
    size_t ny = (size_t)shape_numel(&ys);
    float *x = alloc_fill(&r, nx), *w = alloc_fill(&r, nw);
    float *b = cc->bias ? alloc_fill(&r, (size_t)cc->oc) : NULL;
    float *y = alloc_nan(ny), *yref = alloc_nan(ny);
    size_t ns = transpose ? conv_transpose_scratch_floats(&xs, &ys, &p)
                          : conv_scratch_floats(&xs, &ys, &p);
    float *scratch = alloc_nan(ns);
    long kterms = (long)(transpose ? cc->ic / cc->group : cc->ic / cc->group);
    for (int i = 0; i < cc->nsp; i++)
        kterms *= cc->k[i];
    if (transpose) {
        conv_transpose_forward(y, x, w, b, &xs, &ys, &p, scratch);
        conv_transpose_forward_ref(yref, x, w, b, &xs, &ys, &p);
    } else {
        conv_forward(y, x, w, b, &xs, &ys, &p, scratch);
        conv_forward_ref(yref, x, w, b, &xs, &ys, &p);
    }
    char what[200], sb[64];
    snprintf(what, sizeof what, "%s %dD x%s ic=%d oc=%d g=%d",
             transpose ? "convT" : "conv", cc->nsp,
             shape_str(&xs, sb, sizeof sb), cc->ic, cc->oc, cc->group);
    int ok = allclose(y, yref, ny, tol_for_k(kterms), 1e-5, what);
    sl_free(x);
    sl_free(w);
    sl_free(b);
    sl_free(y);
    sl_free(yref);
    sl_free(scratch);
    assert_true(ok);
}

/* in, k, s, d, plo, phi, opad per spatial dim (leading entries used). */
static const ConvCase conv2d_cases[] = {
    {2, 1, 3, 5, {7, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1, 1},
    {2, 2, 4, 6, {9, 7}, {3, 3}, {2, 2}, {1, 1}, {0, 1}, {1, 0}, {0}, 2, 1},
    {2,
     1,
     5,
     17,
     {11, 10},
     {3, 3},
     {1, 1},
     {2, 2},
     {2, 2},
     {2, 2},
     {0},
     1,
     0},
    {2, 1, 17, 3, {8, 8}, {1, 1}, {1, 1}, {1, 1}, {0}, {0}, {0}, 1, 1},
    {2, 1, 8, 16, {13, 6}, {5, 3}, {2, 1}, {1, 2}, {2, 0}, {1, 1}, {0}, 1, 1},
    {2, 1, 6, 6, {9, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 6, 1},
    {2, 1, 6, 9, {10, 12}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 3, 0},
    /* >1 N tile (P = 740 > 384) and >1 k block (K = 288 > 256). */
    {2,
     1,
     32,
     32,
     {20, 37},
     {3, 3},
     {1, 1},
     {1, 1},
     {1, 1},
     {1, 1},
     {0},
     1,
     1},
    {2, 1, 64, 40, {6, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1, 1},
    /* 1x1 with stride (not the pointwise path), strided 2x2. */
    {2, 1, 5, 7, {9, 11}, {1, 1}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
    {2, 1, 4, 8, {10, 13}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
    /* stride 1 on wide rows (padded-slab path), several slabs */
    {2,
     1,
     64,
     8,
     {200, 128},
     {3, 3},
     {1, 1},
     {1, 1},
     {1, 1},
     {1, 1},
     {0},
     1,
     1},
    {2, 2, 3, 4, {9, 40}, {3, 5}, {1, 1}, {2, 1}, {0, 3}, {2, 1}, {0}, 1, 1},
    /* K = 720: several k blocks on the slab path, with a partial row
     * panel (29 = 3*8 + 5) */
    {2,
     1,
     80,
     29,
     {12, 40},
     {3, 3},
     {1, 1},
     {1, 1},
     {1, 1},
     {1, 1},
     {0},
     1,
     1},
    /* the same with a 2-row remainder (64-column kernel) over 3 column
     * tiles of 128 */
    {2,
     1,
     80,
     26,
     {6, 70},
     {3, 3},
     {1, 1},
     {1, 1},
     {1, 1},
     {1, 1},
     {0},
     1,
     1},
    /* strided on wide rows (phase-split slab path): stride 3 with
     * dilation 2, and stride 2 */
    {2, 1, 3, 5, {20, 61}, {5, 3}, {3, 3}, {2, 2}, {4, 1}, {3, 2}, {0}, 1, 1},
    {2,
     1,
     16,
     24,
     {31, 70},
     {3, 3},
     {2, 2},
     {1, 1},
     {1, 1},
     {1, 1},
     {0},
     1,
     1},
    /* 1 to 4 output channels (narrow micro-kernel) */
    {2, 1, 4, 4, {19, 70}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1, 1},
    {2, 1, 6, 1, {9, 66}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1, 1},
    {2, 1, 6, 6, {11, 67}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 2, 1},
    /* one input channel (a first layer; K is the kernel size only):
     * asymmetric pads with a 5x3 kernel, a pad wider than the kernel's
     * reach */
    {2, 2, 1, 9, {13, 21}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {0}, 1, 1},
    {2, 1, 1, 5, {7, 5}, {5, 3}, {1, 1}, {1, 1}, {2, 0}, {1, 2}, {0}, 1, 0},
    {2, 1, 1, 3, {6, 17}, {3, 3}, {1, 1}, {1, 1}, {3, 0}, {0, 4}, {0}, 1, 1},
    /* 1D */
    {1, 1, 1, 3, {20}, {5}, {1}, {1}, {2}, {2}, {0}, 1, 1},
    {1, 1, 3, 4, {20}, {5}, {2}, {1}, {2}, {1}, {0}, 1, 1},
    {1, 2, 4, 4, {33}, {3}, {1}, {3}, {3}, {3}, {0}, 2, 0},
};

static const ConvCase conv3d_cases[] = {
    {3,
     1,
     3,
     5,
     {5, 6, 7},
     {3, 3, 3},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     1,
     1},
    {3,
     1,
     4,
     6,
     {6, 7, 5},
     {3, 3, 3},
     {2, 2, 2},
     {1, 1, 1},
     {1, 1, 1},
     {0, 0, 1},
     {0},
     2,
     1},
    {3,
     2,
     5,
     3,
     {7, 5, 6},
     {1, 3, 3},
     {1, 1, 2},
     {1, 2, 1},
     {0, 2, 1},
     {0, 2, 0},
     {0},
     1,
     0},
    {3,
     1,
     8,
     8,
     {4, 4, 4},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     {0},
     {0},
     1,
     1},
    /* stride 1, wide planes (padded-slab path): dilation, asymmetric
     * pads, groups, several slabs */
    {3,
     1,
     5,
     7,
     {5, 18, 21},
     {3, 3, 3},
     {1, 1, 1},
     {2, 1, 1},
     {2, 1, 0},
     {1, 1, 2},
     {0},
     1,
     1},
    {3,
     2,
     4,
     6,
     {4, 20, 24},
     {3, 3, 3},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     2,
     0},
    {3,
     1,
     64,
     4,
     {20, 40, 40},
     {3, 3, 3},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     1,
     1},
    {3,
     1,
     8,
     6,
     {9, 24, 26},
     {3, 3, 3},
     {2, 2, 2},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     1,
     1},
    {3,
     1,
     3,
     4,
     {8, 20, 37},
     {3, 3, 3},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     1,
     0},
    {3,
     1,
     17,
     12,
     {6, 9, 8},
     {3, 3, 3},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     1,
     1},
    /* one input channel: 3x3x3, and 1x3x3 with asymmetric pads */
    {3,
     2,
     1,
     4,
     {5, 6, 19},
     {3, 3, 3},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     1,
     1},
    {3,
     1,
     1,
     3,
     {4, 5, 9},
     {1, 3, 3},
     {1, 1, 1},
     {1, 1, 1},
     {0, 1, 0},
     {0, 1, 2},
     {0},
     1,
     0},
};

static const ConvCase convt_cases[] = {
    /* kernel == stride: the tiling path */
    {2, 1, 6, 5, {7, 9}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
    {2, 2, 4, 6, {5, 3}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 2, 0},
    {3,
     1,
     8,
     4,
     {5, 6, 7},
     {2, 2, 2},
     {2, 2, 2},
     {1, 1, 1},
     {0},
     {0},
     {0},
     1,
     1},
    {3,
     1,
     3,
     5,
     {3, 4, 5},
     {1, 2, 2},
     {1, 2, 2},
     {1, 1, 1},
     {0},
     {0},
     {0},
     1,
     1},
    /* overlap, pads, output padding, dilation, groups */
    {2,
     1,
     4,
     6,
     {7, 8},
     {3, 3},
     {2, 2},
     {1, 1},
     {1, 1},
     {1, 1},
     {1, 1},
     2,
     1},
    {2,
     1,
     5,
     3,
     {6, 5},
     {4, 4},
     {2, 2},
     {1, 1},
     {1, 0},
     {1, 2},
     {0, 1},
     1,
     1},
    {2,
     1,
     3,
     4,
     {5, 7},
     {3, 2},
     {1, 3},
     {2, 1},
     {0, 1},
     {1, 0},
     {0, 2},
     1,
     0},
    {3,
     1,
     4,
     4,
     {4, 5, 3},
     {3, 3, 3},
     {1, 1, 1},
     {2, 1, 1},
     {1, 1, 1},
     {1, 1, 1},
     {0},
     1,
     1},
    {1, 1, 3, 2, {9}, {3}, {2}, {1}, {1}, {0}, {1}, 1, 1},
    /* tiling with odd channel counts (pairs of kx rows split across
     * micro-tiles), a 1-wide kernel along W, and ICg = 300 > 256 (the
     * column-buffer path) */
    {2, 1, 13, 7, {9, 11}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
    {3,
     2,
     7,
     3,
     {3, 5, 7},
     {2, 2, 2},
     {2, 2, 2},
     {1, 1, 1},
     {0},
     {0},
     {0},
     1,
     0},
    {2, 1, 5, 3, {6, 7}, {2, 1}, {2, 1}, {1, 1}, {0}, {0}, {0}, 1, 1},
    {2, 1, 300, 3, {5, 6}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
    /* several column chunks (OCg*K*Pin > 2 Mi floats) */
    {2, 1, 4, 8, {260, 257}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
    {2,
     1,
     2,
     4,
     {250, 251},
     {3, 3},
     {2, 2},
     {1, 1},
     {1, 1},
     {1, 1},
     {1, 1},
     1,
     1},
};

static void test_conv2d(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof conv2d_cases / sizeof conv2d_cases[0]; i++)
        run_case(&conv2d_cases[i], 0);
}

static void test_conv3d(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof conv3d_cases / sizeof conv3d_cases[0]; i++)
        run_case(&conv3d_cases[i], 0);
}

static void test_conv_transpose(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof convt_cases / sizeof convt_cases[0]; i++)
        run_case(&convt_cases[i], 1);
}

/* Kernel == stride: the GEMM's tiles go straight into y (ct_store), and
 * must give the bits the column-buffer path gave: col = W^T X from the
 * same GEMM (gemm_t, W read transposed), then y = bias + col at each
 * footprint position.  Odd channel counts and widths, groups, batch 2,
 * 2D and 3D. */
static void test_conv_transpose_direct(void **state)
{
    (void)state;
    static const ConvCase cases[] = {
        {2, 2, 13, 7, {9, 11}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
        {2, 1, 41, 16, {14, 12}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
        {2, 1, 94, 19, {7, 6}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 0},
        {2, 2, 6, 10, {5, 37}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 2, 1},
        {2, 1, 256, 3, {4, 5}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1},
        {3,
         2,
         7,
         5,
         {3, 5, 7},
         {2, 2, 2},
         {2, 2, 2},
         {1, 1, 1},
         {0},
         {0},
         {0},
         1,
         1},
        {3,
         1,
         3,
         5,
         {3, 4, 5},
         {1, 2, 2},
         {1, 2, 2},
         {1, 1, 1},
         {0},
         {0},
         {0},
         1,
         1},
        {2, 1, 5, 3, {6, 7}, {2, 1}, {2, 1}, {1, 1}, {0}, {0}, {0}, 1, 1},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const ConvCase *cc = &cases[ci];
        TestRng r = {(uint64_t)(ci + 11)};
        Shape xs, ws, ys;
        ConvParams p;
        case_shapes(cc, 1, &xs, &ws, &ys, &p);
        size_t nx = (size_t)shape_numel(&xs), nw = (size_t)shape_numel(&ws);
        size_t ny = (size_t)shape_numel(&ys);
        float *x = alloc_fill(&r, nx), *w = alloc_fill(&r, nw);
        float *b = cc->bias ? alloc_fill(&r, (size_t)cc->oc) : NULL;
        float *y = alloc_nan(ny), *yold = alloc_nan(ny);
        float *sc = alloc_nan(conv_transpose_scratch_floats(&xs, &ys, &p));
        conv_transpose_forward(y, x, w, b, &xs, &ys, &p, sc);
        /* the column-buffer arithmetic, one (sample, group) at a time */
        int icg = cc->ic / cc->group, ocg = cc->oc / cc->group;
        int ksp = 1, pin = 1;
        int in3[3] = {1, 1, 1}, k3[3] = {1, 1, 1};
        for (int i = 0; i < cc->nsp; i++) {
            ksp *= cc->k[i];
            pin *= cc->in[i];
            in3[3 - cc->nsp + i] = cc->in[i];
            k3[3 - cc->nsp + i] = cc->k[i];
        }
        int m = ocg * ksp;
        float *col = alloc_nan((size_t)m * pin);
        float *pack = alloc_nan(gemm_pack_floats(m, pin, icg));
        for (int n = 0; n < cc->n; n++)
            for (int gr = 0; gr < cc->group; gr++) {
                gemm_t(col, w + (size_t)gr * icg * m,
                       x + ((size_t)n * cc->ic + (size_t)gr * icg) * pin, m,
                       pin, icg, m, pin, pin, 1, 0, 0, pack);
                for (int i = 0; i < m; i++) {
                    int oc = gr * ocg + i / ksp, kk = i % ksp;
                    int kx = kk % k3[2], ky = kk / k3[2] % k3[1];
                    int kz = kk / (k3[2] * k3[1]);
                    float bias = b ? b[oc] : 0.0f;
                    for (int j = 0; j < pin; j++) {
                        int ix = j % in3[2], iy = j / in3[2] % in3[1];
                        int iz = j / (in3[2] * in3[1]);
                        size_t o =
                            ((((size_t)n * cc->oc + oc) * in3[0] * k3[0] +
                              (size_t)iz * k3[0] + kz) *
                                 in3[1] * k3[1] +
                             (size_t)iy * k3[1] + ky) *
                                in3[2] * k3[2] +
                            (size_t)ix * k3[2] + kx;
                        yold[o] = bias + col[(size_t)i * pin + j];
                    }
                }
            }
        if (memcmp(y, yold, ny * sizeof(float)))
            fprintf(stderr, "convT case %zu: direct store differs\n", ci);
        assert_memory_equal(y, yold, ny * sizeof(float));
        sl_free(x);
        sl_free(w);
        sl_free(b);
        sl_free(y);
        sl_free(yold);
        sl_free(sc);
        sl_free(col);
        sl_free(pack);
    }
}

/* Pruned layers have any channel count: every remainder of the row
 * panels (1 to 7 rows of the 8-row kernel, 1 to 3 of the 4-row one) on
 * rows whose width and padding ring make the 32- and 64-column tiles
 * cross row ends at every offset (masked column runs; more runs than a
 * tile can take on the narrowest rows), stride 1 and 2. */
static void test_conv_pruned_channels(void **state)
{
    (void)state;
    static const int ocs[] = {1, 2, 3, 5, 6, 7, 9, 11, 13, 14, 19, 34, 41};
    static const int widths[] = {6, 12, 24, 47, 97};
    for (size_t o = 0; o < sizeof ocs / sizeof ocs[0]; o++)
        for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
            for (int s = 1; s <= 2; s++) {
                ConvCase cc = {2,
                               1,
                               3,
                               ocs[o],
                               {5 + 2 * s, widths[w]},
                               {3, 3},
                               {s, s},
                               {1, 1},
                               {1, 1},
                               {1, 1},
                               {0},
                               1,
                               (int)(o % 2)};
                run_case(&cc, 0);
            }
}

/* The same cases (but the few biggest, to stay fast under ASan) with
 * the micro-kernel capped to AVX2 and to scalar (SL_GEMM_ISA): the AVX2
 * slab kernels, the im2col packer with other panel widths, and the
 * scalar paths everywhere. */
#define FALLBACK_MAX_MACS 2e7
static void test_fallback_isas(void **state)
{
    (void)state;
    static const char *caps[] = {"avx2", "scalar"};
    for (int c = 0; c < 2; c++) {
        if (c == 0 && gemm_isa_best() < GEMM_ISA_AVX2) continue;
        setenv("SL_GEMM_ISA", caps[c], 1);
        assert_true(gemm_isa_best() <=
                    (c == 0 ? GEMM_ISA_AVX2 : GEMM_ISA_SCALAR));
        for (size_t i = 0; i < sizeof conv2d_cases / sizeof conv2d_cases[0];
             i++)
            if (case_macs(&conv2d_cases[i], 0) <= FALLBACK_MAX_MACS)
                run_case(&conv2d_cases[i], 0);
        for (size_t i = 0; i < sizeof conv3d_cases / sizeof conv3d_cases[0];
             i++)
            if (case_macs(&conv3d_cases[i], 0) <= FALLBACK_MAX_MACS)
                run_case(&conv3d_cases[i], 0);
        for (size_t i = 0; i < sizeof convt_cases / sizeof convt_cases[0];
             i++)
            if (case_macs(&convt_cases[i], 1) <= FALLBACK_MAX_MACS)
                run_case(&convt_cases[i], 1);
        unsetenv("SL_GEMM_ISA");
    }
}

/* ---- determinism across thread counts ---- */

static void run_threads(const ConvCase *cc, int transpose)
{
    TestRng r = {99};
    Shape xs, ws, ys;
    ConvParams p;
    case_shapes(cc, transpose, &xs, &ws, &ys, &p);
    size_t nx = (size_t)shape_numel(&xs), nw = (size_t)shape_numel(&ws);
    size_t ny = (size_t)shape_numel(&ys);
    float *x = alloc_fill(&r, nx), *w = alloc_fill(&r, nw);
    float *b = alloc_fill(&r, (size_t)cc->oc);
    float *y1 = alloc_nan(ny), *y2 = alloc_nan(ny);
    /* Scratch sized under 1 thread must also serve 2 (ASan checks). */
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    size_t ns = transpose ? conv_transpose_scratch_floats(&xs, &ys, &p)
                          : conv_scratch_floats(&xs, &ys, &p);
    float *scratch = alloc_nan(ns);
    for (int t = 1; t <= 2; t++) {
        omp_set_num_threads(t);
        if (transpose)
            conv_transpose_forward(t == 1 ? y1 : y2, x, w, b, &xs, &ys, &p,
                                   scratch);
        else
            conv_forward(t == 1 ? y1 : y2, x, w, b, &xs, &ys, &p, scratch);
    }
    omp_set_num_threads(saved);
    int same = memcmp(y1, y2, ny * sizeof(float)) == 0;
    if (!same)
        fprintf(stderr, "1 vs 2 threads differ (%s)\n",
                transpose ? "convT" : "conv");
    sl_free(x);
    sl_free(w);
    sl_free(b);
    sl_free(y1);
    sl_free(y2);
    sl_free(scratch);
    assert_true(same);
}

static void test_threads_identical(void **state)
{
    (void)state;
    static const ConvCase c2 = {2,      1,      32,     24,     {40, 50},
                                {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1},
                                {0},    1,      1};
    static const ConvCase c3 = {
        3,         1,         8,         16,        {10, 11, 12},
        {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1},
        {0},       1,         1};
    static const ConvCase cw = {2,      1,      320,    40,     {8, 8},
                                {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1},
                                {0},    1,      1};
    static const ConvCase t1 = {
        2, 1, 16, 8, {30, 31}, {2, 2}, {2, 2}, {1, 1}, {0}, {0}, {0}, 1, 1};
    static const ConvCase t2 = {3,         1,         6,         4,
                                {7, 8, 9}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1},
                                {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1,
                                1};
    /* 6^3 planes: too much ring for the slab path, so im2col. */
    static const ConvCase c4 = {
        3,         1,         40,        36,  {6, 6, 6}, {3, 3, 3}, {1, 1, 1},
        {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0}, 1,         1};
    run_threads(&c4, 0);
    /* 19 output channels (two full 8-row panels and a 3-row remainder)
     * on rows that do not divide into tiles. */
    static const ConvCase c6 = {2,      1,      14,     19,     {30, 97},
                                {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1},
                                {0},    1,      1};
    run_threads(&c6, 0);
    /* Many output channels, deep K, few columns: the tile split differs
     * between 1 and 2 threads, the k blocking must not. */
    static const ConvCase c5 = {2,      1,      67,     384,    {8, 10},
                                {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1},
                                {0},    1,      1};
    run_threads(&c5, 0);
    run_threads(&c2, 0);
    run_threads(&c3, 0);
    run_threads(&cw, 0);
    run_threads(&t1, 1);
    run_threads(&t2, 1);
    /* Plain GEMM with M and N tiles split differently per thread count. */
    TestRng r = {5};
    int m = 203, n = 517, k = 300;
    float *a = alloc_fill(&r, (size_t)m * k),
          *bm = alloc_fill(&r, (size_t)k * n);
    float *c1 = sl_alloc((size_t)m * n * 4),
          *c2m = sl_alloc((size_t)m * n * 4);
    float *pack = alloc_nan(gemm_pack_floats(m, n, k));
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    gemm(c1, a, bm, m, n, k, k, n, n, 0, pack);
    omp_set_num_threads(2);
    gemm(c2m, a, bm, m, n, k, k, n, n, 0, pack);
    omp_set_num_threads(saved);
    int same = memcmp(c1, c2m, (size_t)m * n * 4) == 0;
    sl_free(a);
    sl_free(bm);
    sl_free(c1);
    sl_free(c2m);
    sl_free(pack);
    assert_true(same);
}

/* Random shapes, fast path only: every tile split, k-blocking and
 * kernel choice must give the same bits for 1 and 2 threads. */
static void test_threads_random(void **state)
{
    (void)state;
    TestRng r = {4242};
    for (int t = 0; t < 16; t++) {
        ConvCase cc;
        memset(&cc, 0, sizeof cc);
        cc.nsp = t % 3 == 2 ? 3 : 2;
        cc.n = 1;
        cc.ic = 1 + (int)(trng_next(&r) % 80);
        cc.oc = 1 + (int)(trng_next(&r) % 400);
        cc.group = 1;
        cc.bias = 1;
        for (int i = 0; i < cc.nsp; i++) {
            cc.in[i] = 3 + (int)(trng_next(&r) % (cc.nsp == 3 ? 12 : 40));
            cc.k[i] = 1 + (int)(trng_next(&r) % 3);
            cc.s[i] = 1 + (int)(trng_next(&r) % 2);
            cc.d[i] = 1;
            cc.plo[i] = cc.phi[i] = (int)(trng_next(&r) % 2);
        }
        run_threads(&cc, (int)(trng_next(&r) % 4 == 0));
    }
}

/* ---- op-table hooks ---- */

static int add_val(Graph *g, const char *name, int ndim, const int64_t *d,
                   int weight)
{
    Shape s = {ndim, {0}};
    for (int i = 0; i < ndim; i++)
        s.d[i] = d[i];
    float *data = NULL;
    if (weight) {
        data = sl_calloc((size_t)shape_numel(&s) + 1, sizeof(float));
        assert_non_null(data);
    }
    int v = graph_add_value(g, name, &s, data);
    assert_true(v >= 0);
    return v;
}

/* X [1,xc,10,12], W wd, optional B [bn]; infer with the given params. */
static int infer_conv(int transpose, int64_t xc, const int64_t *wd, int bn,
                      const ConvParams *p, Shape *out)
{
    Graph g;
    graph_init(&g);
    int64_t xd[4] = {1, xc, 10, 12};
    int64_t bd[1] = {bn};
    Node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = transpose ? OP_CONV_TRANSPOSE : OP_CONV;
    nd.name = (char *)"enc.conv7";
    nd.in[0] = add_val(&g, "x", 4, xd, 0);
    nd.in[1] = add_val(&g, "w", 4, wd, 1);
    nd.n_in = 2;
    if (bn) nd.in[nd.n_in++] = add_val(&g, "b", 1, bd, 1);
    nd.out = add_val(&g, "y", 0, xd, 0);
    nd.p.conv = *p;
    int ni = graph_add_node(&g, &nd);
    assert_true(ni >= 0);
    sl_error_reset();
    int rc = transpose ? conv_transpose_infer(&g, &g.nodes[ni], out)
                       : conv_infer(&g, &g.nodes[ni], out);
    if (rc == 0) {
        g.values[nd.out].shape = *out;
        int64_t f = transpose ? conv_transpose_flops(&g, &g.nodes[ni])
                              : conv_flops(&g, &g.nodes[ni]);
        int64_t want = transpose ? 2 * xc * wd[1] * wd[2] * wd[3] * 10 * 12
                                 : 2 * out->d[1] * (xc / p->group) * wd[2] *
                                       wd[3] * out->d[2] * out->d[3];
        assert_int_equal(f, want);
        size_t sc = transpose ? conv_transpose_scratch(&g, &g.nodes[ni])
                              : conv_scratch(&g, &g.nodes[ni]);
        assert_true(sc > 0);
    }
    graph_free(&g);
    return rc;
}

static ConvParams params2d(int k, int s, int pad, int group)
{
    ConvParams p;
    memset(&p, 0, sizeof p);
    p.nsp = 2;
    p.group = group;
    for (int i = 0; i < 2; i++) {
        p.kernel[i] = k;
        p.stride[i] = s;
        p.dilation[i] = 1;
        p.pad_lo[i] = p.pad_hi[i] = pad;
    }
    return p;
}

static void test_infer(void **state)
{
    (void)state;
    Shape out;
    sl_error_quiet(1);
    ConvParams p = params2d(3, 2, 1, 1);
    int64_t w_ok[4] = {8, 4, 3, 3};
    assert_int_equal(infer_conv(0, 4, w_ok, 8, &p, &out), 0);
    assert_int_equal(out.ndim, 4);
    assert_int_equal(out.d[1], 8);
    assert_int_equal(out.d[2], 5);
    assert_int_equal(out.d[3], 6);
    /* IC mismatch, bias length, OC not divisible by group, too small. */
    int64_t w_ic[4] = {8, 5, 3, 3};
    assert_int_equal(infer_conv(0, 4, w_ic, 0, &p, &out), ERR_SHAPE);
    assert_non_null(strstr(sl_error_last(), "enc.conv7"));
    assert_int_equal(infer_conv(0, 4, w_ok, 7, &p, &out), ERR_SHAPE);
    assert_non_null(strstr(sl_error_last(), "bias"));
    ConvParams pg = params2d(3, 1, 1, 2);
    int64_t w_g[4] = {7, 2, 3, 3};
    assert_int_equal(infer_conv(0, 4, w_g, 0, &pg, &out), ERR_SHAPE);
    ConvParams pbig = params2d(13, 1, 0, 1);
    int64_t w_big[4] = {8, 4, 13, 13};
    assert_int_equal(infer_conv(0, 4, w_big, 0, &pbig, &out), ERR_SHAPE);
    assert_non_null(strstr(sl_error_last(), "too small"));
    /* Kernel attribute disagreeing with the weight; bad stride. */
    assert_int_equal(infer_conv(0, 4, w_big, 0, &p, &out), ERR_SHAPE);
    ConvParams ps = params2d(3, 0, 1, 1);
    assert_int_equal(infer_conv(0, 4, w_ok, 0, &ps, &out), ERR_SHAPE);
    /* ConvTranspose: 2x2 stride 2 doubles; output padding; IC check. */
    ConvParams pt = params2d(2, 2, 0, 1);
    int64_t wt[4] = {4, 3, 2, 2};
    assert_int_equal(infer_conv(1, 4, wt, 3, &pt, &out), 0);
    assert_int_equal(out.d[1], 3);
    assert_int_equal(out.d[2], 20);
    assert_int_equal(out.d[3], 24);
    ConvParams pt2 = params2d(3, 2, 1, 2);
    pt2.out_pad[0] = 1;
    int64_t wt2[4] = {4, 3, 3, 3};
    assert_int_equal(infer_conv(1, 4, wt2, 6, &pt2, &out), 0);
    assert_int_equal(out.d[1], 6);
    assert_int_equal(out.d[2], 20);
    assert_int_equal(out.d[3], 23);
    assert_int_equal(infer_conv(1, 5, wt, 0, &pt, &out), ERR_SHAPE);
    assert_non_null(strstr(sl_error_last(), "enc.conv7"));
    ConvParams pt3 = params2d(2, 2, 30, 1);
    assert_int_equal(infer_conv(1, 4, wt, 0, &pt3, &out), ERR_SHAPE);
    sl_error_quiet(0);
    sl_error_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_shapes),
        cmocka_unit_test(test_gemm_public_and_k0),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv3d),
        cmocka_unit_test(test_conv_pruned_channels),
        cmocka_unit_test(test_conv_transpose),
        cmocka_unit_test(test_conv_transpose_direct),
        cmocka_unit_test(test_fallback_isas),
        cmocka_unit_test(test_threads_identical),
        cmocka_unit_test(test_threads_random),
        cmocka_unit_test(test_infer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
