/* Winograd convolution (runtime/ops/winograd.c): against the direct path
 * (conv_forward) and the naive reference (conv_forward_ref), F(2,3) and
 * F(4x4,3x3), on odd sizes,
 * channel counts from 1 to 70, zero padding 0 or 1 at every border
 * combination, batches, with and without bias, 2D, 3D and a 3D model's
 * 1x3x3 layer; the AVX2 and scalar micro-kernels (SL_GEMM_ISA); bit
 * identity between 1 and 2 threads; the per-layer choice (cost model and
 * SL_CONV_ALGO); and the executor running a U-Net's convolutions as
 * Winograd, fused with the InstanceNorm + LeakyRelu after them, against
 * the same U-Net run direct.
 *
 * Tolerance.  Inputs and weights are uniform in [-1, 1]; an output sums
 * K = IC * taps products (~ sqrt(K)/3 in size).  The direct path's error
 * against the double reference is ~ 2e-8 * K (test_conv.c).  Winograd
 * adds the roundings of its transforms: input tiles are sums of up to 4
 * (2D) or 8 (3D) inputs, transformed weights of up to 9 (27) halved
 * weights, and the output transform sums up to 9 (27) GEMM results,
 * each of which is a sum of IC products of values up to ~4 (2D) / ~8 (3D)
 * times larger than the direct path's.  So its error is a small multiple
 * of the direct one; measured here, at most 2.1x on these cases (printed
 * at the end of the run).  F(4x4,3x3) (every 2D case runs both ways)
 * interpolates at +-2 with entries up to 8: up to ~40x (36.5 measured),
 * which the bounds below still hold by a wide margin.  We
 * allow atol = 4e-6 * K (10x test_conv.c's bound) plus rtol 1e-5.  The
 * issue's promise is 1e-4 x the output scale: with the output scale
 * ~ sqrt(K)/3, 4e-6 * K is below it for K < 600^2, i.e. every case here,
 * and each case also checks max|wino - direct| <= 1e-4 * max|direct|.
 * An indexing bug moves outputs by O(0.1).  Scratch is filled with NaN,
 * so reading scratch that was not written fails the comparison.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "runtime/ops/gemm_core.h"
#include "runtime/ops/ops.h"
#include "runtime/ops/winograd.h"
#include "runtime/sslim.h"
#include "tests/graphbuild.h"
#include "tests/testutil.h"

typedef struct {
    int nsp, n, ic, oc;
    int in[3], k[3], plo[3], phi[3];
    int bias;
} WCase;

static void case_shapes(const WCase *c, Shape *xs, Shape *ws, Shape *ys,
                        ConvParams *p)
{
    memset(p, 0, sizeof *p);
    p->nsp = c->nsp;
    p->group = 1;
    xs->ndim = ws->ndim = ys->ndim = c->nsp + 2;
    xs->d[0] = ys->d[0] = c->n;
    xs->d[1] = c->ic;
    ys->d[1] = ws->d[0] = c->oc;
    ws->d[1] = c->ic;
    for (int i = 0; i < c->nsp; i++) {
        int k = c->k[i] ? c->k[i] : 3;
        p->kernel[i] = k;
        p->stride[i] = p->dilation[i] = 1;
        p->pad_lo[i] = c->plo[i];
        p->pad_hi[i] = c->phi[i];
        xs->d[2 + i] = c->in[i];
        ws->d[2 + i] = k;
        ys->d[2 + i] = c->in[i] + c->plo[i] + c->phi[i] - k + 1;
    }
}

static float *alloc_fill(TestRng *r, size_t n)
{
    float *p = sl_alloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    trng_fill(r, p, n, -1.0f, 1.0f);
    return p;
}

static float *alloc_nan(size_t n)
{
    float *p = sl_alloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    return p;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    return m;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN sticks */
    }
    return m;
}

/* y = Winograd conv of the case with `threads` threads (fresh WinoConv,
 * so the ISA in SL_GEMM_ISA at the call is the one used). */
static void wino_run(float *y, const float *x, const float *w, const float *b,
                     const Shape *xs, const Shape *ys, const ConvParams *p,
                     ConvAlgo algo, int threads)
{
    WinoConv *wc = NULL;
    assert_int_equal(wino_create(&wc, w, xs, ys, p, algo, threads, "test"),
                     0);
    float *scratch = alloc_nan(wino_scratch_floats(wc));
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    wino_forward(y, x, b, wc, scratch);
    omp_set_num_threads(saved);
    sl_free(scratch);
    wino_free(wc);
}

/* Largest error ratio seen (|wino - ref| / |direct - ref| bound) of
 * F(2,3) and of F(4x4,3x3), for the tolerance comment. */
static double worst_scaled[2];

/* The case as F(2,3) and as F(4x4,3x3) (a 3x3x3 layer: D's taps summed
 * in the GEMMs). */
static void run_case_algo(const WCase *c, int threads, ConvAlgo algo);
static void run_case(const WCase *c, int threads)
{
    run_case_algo(c, threads, CONV_ALGO_WINOGRAD);
    run_case_algo(c, threads, CONV_ALGO_WINOGRAD4);
}

static void run_case_algo(const WCase *c, int threads, ConvAlgo algo)
{
    TestRng r = {(uint64_t)(c->ic * 977 + c->oc * 13 + c->in[0] * 3 +
                            c->plo[0] + 2 * c->phi[1])};
    Shape xs, ws, ys;
    ConvParams p;
    case_shapes(c, &xs, &ws, &ys, &p);
    assert_true(wino_eligible(&xs, &ys, &p));
    size_t nx = (size_t)shape_numel(&xs), nw = (size_t)shape_numel(&ws);
    size_t ny = (size_t)shape_numel(&ys);
    float *x = alloc_fill(&r, nx), *w = alloc_fill(&r, nw);
    float *b = c->bias ? alloc_fill(&r, (size_t)c->oc) : NULL;
    float *yw = alloc_nan(ny), *yd = alloc_nan(ny), *yr = alloc_nan(ny);
    float *scratch = alloc_nan(conv_scratch_floats(&xs, &ys, &p));
    wino_run(yw, x, w, b, &xs, &ys, &p, algo, threads);
    conv_forward(yd, x, w, b, &xs, &ys, &p, scratch);
    conv_forward_ref(yr, x, w, b, &xs, &ys, &p);
    long k = c->ic;
    for (int i = 0; i < c->nsp; i++)
        k *= p.kernel[i];
    char what[200], sb[64];
    snprintf(what, sizeof what,
             "winograd%s %dD x%s oc=%d pads %d%d%d/%d%d%d bias=%d isa=%s",
             algo == CONV_ALGO_WINOGRAD4 ? "4" : "", c->nsp,
             shape_str(&xs, sb, sizeof sb), c->oc, c->plo[0], c->plo[1],
             c->plo[2], c->phi[0], c->phi[1], c->phi[2], c->bias,
             gemm_isa_name(gemm_isa_best()));
    int ok = allclose(yw, yr, ny, 4e-6 * (double)k, 1e-5, what);
    double scale = max_abs(yd, ny), dd = max_diff(yw, yd, ny);
    if (!(dd <= 1e-4 * scale)) {
        fprintf(stderr, "%s: max |wino - direct| %.3g > 1e-4 x %.3g\n", what,
                dd, scale);
        ok = 0;
    }
    double de = max_diff(yd, yr, ny), we = max_diff(yw, yr, ny);
    int wi = algo == CONV_ALGO_WINOGRAD4;
    if (de > 0 && we / de > worst_scaled[wi]) worst_scaled[wi] = we / de;
    sl_free(x);
    sl_free(w);
    sl_free(b);
    sl_free(yw);
    sl_free(yd);
    sl_free(yr);
    sl_free(scratch);
    assert_true(ok);
}

/* 2D: every combination of pad 0/1 at the four borders, on odd and even
 * sizes (partial tiles at the bottom and right), channels 1 .. 70. */
static void test_2d_pads_and_channels(void **state)
{
    (void)state;
    static const int ch[][2] = {{1, 1},   {3, 7},  {13, 2}, {22, 9},
                                {33, 17}, {70, 5}, {8, 70}, {41, 64}};
    static const int sz[][2] = {{5, 7}, {9, 4}, {12, 13}, {3, 3}, {17, 40}};
    int t = 0;
    for (int m = 0; m < 16; m++) {
        WCase c = {2, 1, 0, 0, {0}, {3, 3}, {0}, {0}, 1};
        c.plo[0] = m & 1;
        c.plo[1] = m >> 1 & 1;
        c.phi[0] = m >> 2 & 1;
        c.phi[1] = m >> 3 & 1;
        for (int s = 0; s < 5; s++, t++) {
            c.ic = ch[t % 8][0];
            c.oc = ch[t % 8][1];
            c.in[0] = sz[s][0];
            c.in[1] = sz[s][1];
            c.bias = t % 3 != 0;
            c.n = t % 7 == 3 ? 2 : 1;
            run_case(&c, 2);
        }
    }
    /* Many tiles: several chunks and panels, wide rows, deep K (several
     * k blocks of 256 in the GEMM: IC = 300). */
    static const WCase big[] = {
        {2, 1, 16, 24, {63, 130}, {3, 3}, {1, 1}, {1, 1}, 1},
        {2, 2, 32, 32, {33, 31}, {3, 3}, {1, 1}, {1, 1}, 0},
        {2, 1, 300, 19, {11, 9}, {3, 3}, {1, 0}, {0, 1}, 1},
        {2, 1, 64, 40, {6, 6}, {3, 3}, {1, 1}, {1, 1}, 1},
        /* pad 2 (beyond F(2,3)'s tile overlap) */
        {2, 1, 5, 6, {7, 8}, {3, 3}, {2, 0}, {2, 2}, 1},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        run_case(&big[i], 2);
}

/* 3D 3x3x3: pads 0/1 at every border combination (the 64 of them over
 * a few sizes and channel counts), and 1x3x3 layers of a 3D model. */
static void test_3d(void **state)
{
    (void)state;
    static const int ch[][2] = {{1, 2}, {5, 3}, {17, 12}, {8, 33}};
    static const int sz[][3] = {{5, 6, 7}, {4, 3, 9}, {7, 5, 4}, {3, 3, 3}};
    for (int m = 0; m < 64; m++) {
        WCase c = {3, 1, 0, 0, {0}, {3, 3, 3}, {0}, {0}, m & 1};
        for (int i = 0; i < 3; i++) {
            c.plo[i] = m >> i & 1;
            c.phi[i] = m >> (3 + i) & 1;
        }
        c.ic = ch[m % 4][0];
        c.oc = ch[m % 4][1];
        memcpy(c.in, sz[m / 4 % 4], sizeof c.in);
        run_case(&c, 2);
    }
    static const WCase more[] = {
        {3, 1, 32, 16, {12, 11, 10}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1},
        {3, 2, 6, 70, {6, 7, 5}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1},
        /* 1x3x3 (anisotropic 3D U-Nets): D is not transformed */
        {3, 1, 7, 9, {4, 9, 10}, {1, 3, 3}, {0, 1, 1}, {0, 1, 0}, 1},
        {3, 2, 12, 5, {3, 6, 5}, {1, 3, 3}, {0, 0, 1}, {0, 1, 1}, 0},
    };
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        run_case(&more[i], 2);
    /* F(4x4,3x3) of 3x3x3 layers cuts D into chunks of planes, sized
     * by the thread count: on 1 thread these take chunks of 6, 6 and 1
     * output planes per sample (a short last one), and all 9 planes of
     * a panel in one chunk. */
    static const WCase chunked[] = {
        {3, 2, 9, 11, {13, 7, 9}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1},
        {3, 1, 3, 5, {9, 40, 40}, {3, 3, 3}, {1, 0, 1}, {0, 1, 1}, 1},
    };
    for (size_t i = 0; i < sizeof chunked / sizeof chunked[0]; i++)
        run_case(&chunked[i], 1);
}

/* The AVX2 and scalar micro-kernels (SL_GEMM_ISA caps the ISA), where
 * this CPU has them. */
static void test_isas(void **state)
{
    (void)state;
    static const WCase cs[] = {
        {2, 1, 19, 13, {15, 22}, {3, 3}, {1, 0}, {1, 1}, 1},
        {3, 1, 9, 7, {5, 6, 7}, {3, 3, 3}, {1, 1, 1}, {0, 1, 1}, 1},
        /* rows of 18 tiles on the AVX2 and scalar kernels */
        {2, 1, 7, 9, {11, 70}, {3, 3}, {1, 1}, {1, 1}, 1},
    };
    const char *saved = getenv("SL_GEMM_ISA");
    static const char *isa[] = {"avx2", "scalar"};
    for (int i = 0; i < 2; i++) {
        setenv("SL_GEMM_ISA", isa[i], 1);
        for (size_t j = 0; j < sizeof cs / sizeof cs[0]; j++)
            run_case(&cs[j], 2);
    }
    if (saved)
        setenv("SL_GEMM_ISA", saved, 1);
    else
        unsetenv("SL_GEMM_ISA");
    /* With AVX-512 present, both caps really changed the kernel. */
    if (gemm_isa_best() == GEMM_ISA_AVX512) {
        setenv("SL_GEMM_ISA", "scalar", 1);
        assert_int_equal(gemm_isa_best(), GEMM_ISA_SCALAR);
        if (saved)
            setenv("SL_GEMM_ISA", saved, 1);
        else
            unsetenv("SL_GEMM_ISA");
    }
}

/* 1 and 2 threads give the same bits, also when the chunk size (chosen
 * for the thread count) differs. */
static void test_threads(void **state)
{
    (void)state;
    static const WCase cs[] = {
        {2, 1, 24, 20, {37, 41}, {3, 3}, {1, 1}, {1, 0}, 1},
        {2, 2, 5, 3, {64, 9}, {3, 3}, {0, 1}, {1, 1}, 1},
        {3, 1, 10, 12, {9, 10, 11}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1},
        {3, 2, 9, 11, {13, 7, 9}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        TestRng r = {77 + i};
        Shape xs, ws, ys;
        ConvParams p;
        case_shapes(&cs[i], &xs, &ws, &ys, &p);
        size_t nx = (size_t)shape_numel(&xs), nw = (size_t)shape_numel(&ws);
        size_t ny = (size_t)shape_numel(&ys);
        float *x = alloc_fill(&r, nx), *w = alloc_fill(&r, nw);
        float *b = alloc_fill(&r, (size_t)cs[i].oc);
        float *y1 = alloc_nan(ny), *y2 = alloc_nan(ny);
        int same = 1;
        for (int a = 0; a < 2; a++) {
            ConvAlgo algo = a ? CONV_ALGO_WINOGRAD4 : CONV_ALGO_WINOGRAD;
            wino_run(y1, x, w, b, &xs, &ys, &p, algo, 1);
            wino_run(y2, x, w, b, &xs, &ys, &p, algo, 2);
            same &= memcmp(y1, y2, ny * sizeof(float)) == 0;
        }
        sl_free(x);
        sl_free(w);
        sl_free(b);
        sl_free(y1);
        sl_free(y2);
        assert_true(same);
    }
}

static void set_algo(const char *v)
{
    if (v)
        setenv("SL_CONV_ALGO", v, 1);
    else
        unsetenv("SL_CONV_ALGO");
}

/* The choice: a function of the shape, the same for any thread count,
 * overridden by SL_CONV_ALGO; ineligible layers always direct; a bad
 * value refused. */
static void test_choice(void **state)
{
    (void)state;
    const char *saved = getenv("SL_CONV_ALGO");
    Shape xs, ws, ys;
    ConvParams p;
    ConvAlgo a1, a2;
    /* A dense nnU-Net layer: 32 channels on 256x256. */
    WCase big = {2, 1, 32, 32, {256, 256}, {3, 3}, {1, 1}, {1, 1}, 1};
    /* A pruned layer: 3 -> 4 channels. */
    WCase slim = {2, 1, 3, 4, {64, 64}, {3, 3}, {1, 1}, {1, 1}, 1};
    /* 320 channels on 4x4: 4 tiles, too few to pay. */
    WCase deep = {2, 1, 320, 320, {4, 4}, {3, 3}, {1, 1}, {1, 1}, 1};
    set_algo(NULL);
    case_shapes(&big, &xs, &ws, &ys, &p);
    for (int t = 1; t <= 2; t++) {
        int saved_t = omp_get_max_threads();
        omp_set_num_threads(t);
        assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
        assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a2), 0);
        omp_set_num_threads(saved_t);
        assert_int_equal(a1, a2);
        assert_int_equal(a1, CONV_ALGO_WINOGRAD4);
    }
    set_algo("auto");
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_WINOGRAD4);
    set_algo("winograd");
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_WINOGRAD);
    set_algo("direct");
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_DIRECT);
    set_algo(NULL);
    case_shapes(&slim, &xs, &ws, &ys, &p);
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_DIRECT);
    set_algo("winograd");
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_WINOGRAD);
    set_algo(NULL);
    case_shapes(&deep, &xs, &ws, &ys, &p);
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_DIRECT);
    /* With the AVX2 micro-kernel a MAC costs twice the time and the
     * transforms the same (WINO_AVX2_SCALE): a pruned full-resolution
     * layer goes to F(4x4,3x3) there and stays direct with AVX-512;
     * few channels stay direct on both. */
    if (gemm_isa_best() == GEMM_ISA_AVX512) {
        WCase hires = {2, 1, 13, 9, {224, 192}, {3, 3}, {1, 1}, {1, 1}, 1};
        WCase tiny = {2, 1, 8, 8, {128, 128}, {3, 3}, {1, 1}, {1, 1}, 1};
        const char *isa = getenv("SL_GEMM_ISA");
        case_shapes(&hires, &xs, &ws, &ys, &p);
        assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
        assert_int_equal(a1, CONV_ALGO_DIRECT);
        setenv("SL_GEMM_ISA", "avx2", 1);
        assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
        assert_int_equal(a1, CONV_ALGO_WINOGRAD4);
        case_shapes(&tiny, &xs, &ws, &ys, &p);
        assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
        assert_int_equal(a1, CONV_ALGO_DIRECT);
        /* the shipped model's largest layer (14 -> 21 at 224x192): F(4x4)
         * with AVX-512 too (bench_conv: 0.68-0.93 of direct's time) */
        WCase ship = {2, 1, 14, 21, {224, 192}, {3, 3}, {1, 1}, {1, 1}, 1};
        unsetenv("SL_GEMM_ISA");
        case_shapes(&ship, &xs, &ws, &ys, &p);
        assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
        assert_int_equal(a1, CONV_ALGO_WINOGRAD4);
        if (isa)
            setenv("SL_GEMM_ISA", isa, 1);
        else
            unsetenv("SL_GEMM_ISA");
    }
    /* 40x24 outputs: 60 tiles of 4x4 (too few), 240 of 2x2 */
    WCase mid = {2, 1, 32, 32, {40, 24}, {3, 3}, {1, 1}, {1, 1}, 1};
    case_shapes(&mid, &xs, &ws, &ys, &p);
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_WINOGRAD);
    /* winograd4 asks F(4x4,3x3) of 2D and 3x3x3 layers */
    set_algo("winograd4");
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_WINOGRAD4);
    WCase cube = {3, 1, 8, 8, {8, 8, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1};
    case_shapes(&cube, &xs, &ws, &ys, &p);
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_WINOGRAD4);
    /* A dense 3D U-Net's full-resolution layer (16 channels on 48^3):
     * the model prefers F(4x4,3x3) in-plane with D summed in the GEMMs
     * (36 x 3 products per 16 outputs against 27 x 16) to direct and
     * to F(2x2x2,3x3x3), whose 64-element transforms cost more; a 4 ->
     * 4 channel pruned one stays direct with AVX-512 (and the scalar
     * kernels) and goes to F(4x4) with AVX2, where a MAC of the GEMMs
     * costs twice the time and the transforms the same (measured
     * on an AVX2-only EPYC, bench_conv 4,4,48,48,48, one thread: direct
     * 2.87 ms, F(4x4) 2.44 ms). */
    set_algo(NULL);
    WCase vol = {3,         1,         16,        16, {48, 48, 48},
                 {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1};
    case_shapes(&vol, &xs, &ws, &ys, &p);
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_WINOGRAD4);
    WCase vslim = {3,         1,         4,         4, {48, 48, 48},
                   {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1};
    case_shapes(&vslim, &xs, &ws, &ys, &p);
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, gemm_isa_best() == GEMM_ISA_AVX2
                             ? CONV_ALGO_WINOGRAD4
                             : CONV_ALGO_DIRECT);
    /* Strided and dilated layers are never Winograd, even when asked. */
    set_algo("winograd");
    case_shapes(&big, &xs, &ws, &ys, &p);
    p.stride[0] = p.stride[1] = 2;
    ys.d[2] = ys.d[3] = 128;
    assert_false(wino_eligible(&xs, &ys, &p));
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), 0);
    assert_int_equal(a1, CONV_ALGO_DIRECT);
    set_algo("fast");
    sl_error_quiet(1);
    assert_int_equal(conv_algo_choose(&xs, &ys, &p, &a1), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "SL_CONV_ALGO=fast"));
    sl_error_quiet(0);
    set_algo(saved);
}

static int count_label(const Executor *e, const Graph *g, const char *l)
{
    int k = 0;
    for (int i = 0; i < g->n_nodes; i++)
        k += !strcmp(exec_node_label(e, i), l);
    return k;
}

/* A 2D and a 3D U-Net through the executor with SL_CONV_ALGO=winograd:
 * its stride-1 3x3 convs (followed by fused InstanceNorm + LeakyRelu)
 * run as Winograd, the labels say so, the probabilities stay within
 * 1e-4 of the direct run's (InstanceNorm rescales each channel, so the
 * conv's relative error carries through), 1 and 2 threads agree
 * bit for bit, and a bad SL_CONV_ALGO fails exec_create with one line. */
static void test_executor(void **state)
{
    (void)state;
    const char *saved = getenv("SL_CONV_ALGO");
    for (int nsp = 2; nsp <= 3; nsp++) {
        Graph g;
        assert_int_equal(build_unet(&g, nsp, 2, 12, 3, 0, 31), 0);
        Shape in = nsp == 2 ? (Shape){4, {2, 2, 30, 26}}
                            : (Shape){5, {1, 2, 10, 12, 14}};
        size_t nin = (size_t)shape_numel(&in);
        TestRng r = {9};
        float *x = alloc_fill(&r, nin);
        float *out[4] = {NULL, NULL, NULL, NULL};
        size_t nout = 0;
        static const char *algo[4] = {"direct", "winograd", "winograd",
                                      "winograd4"};
        for (int k = 0; k < 4; k++) {
            set_algo(algo[k]);
            Executor *e = NULL;
            assert_int_equal(exec_create(&g, &in, k == 2 ? 1 : 2, &e), 0);
            /* enc and dec blocks; down is strided, the head is 1x1 */
            int f4 = k == 3;
            assert_int_equal(count_label(e, &g, "Conv/winograd"),
                             k && !f4 ? 2 : 0);
            assert_int_equal(count_label(e, &g, "Conv/winograd4"),
                             f4 ? 2 : 0);
            assert_int_equal(count_label(e, &g, "Conv/direct"), k ? 2 : 4);
            const float *o[SL_MAX_OUTPUTS];
            assert_int_equal(exec_run(e, x, o), 0);
            nout = (size_t)shape_numel(exec_output_shape(e, 0));
            out[k] = sl_alloc(nout * sizeof(float));
            assert_non_null(out[k]);
            memcpy(out[k], o[0], nout * sizeof(float));
            exec_free(e);
        }
        assert_allclose(out[1], out[0], nout, 1e-4, 0);
        assert_allclose(out[3], out[0], nout, 1e-4, 0);
        assert_int_equal(memcmp(out[1], out[2], nout * sizeof(float)), 0);
        set_algo("sometimes");
        sl_error_quiet(1);
        Executor *e = NULL;
        assert_int_equal(exec_create(&g, &in, 2, &e), ERR_ARG);
        assert_null(e);
        sl_error_quiet(0);
        for (int k = 0; k < 4; k++)
            sl_free(out[k]);
        sl_free(x);
        graph_free(&g);
    }
    set_algo(saved);
    fprintf(stderr,
            "winograd error / direct error, worst case: F(2,3) %.1f, "
            "F(4x4,3x3) %.1f\n",
            worst_scaled[0], worst_scaled[1]);
}

/* exec_create_lean keeps one form of each Winograd weight.  The model is
 * read from a file (one copy of the weights: sslim_read), and creating
 * the executor allocates the transformed weights, the arena and the
 * scratch plus small bookkeeping, and frees the raw weights of its
 * Winograd layers: what stays allocated for weights is the others' raw
 * form plus the transformed forms, not both forms.  The outputs are
 * exec_create's, bit for bit, and the graph cannot make a second
 * executor (a weight is gone: refused with one line). */
static void test_lean_weights(void **state)
{
    (void)state;
    const char *saved = getenv("SL_CONV_ALGO");
    set_algo("winograd");
    Graph g;
    assert_int_equal(build_unet(&g, 2, 2, 24, 3, 0, 41), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/lean.sslim", test_tmpdir());
    assert_int_equal(sslim_write(&g, path, 1), 0);
    graph_free(&g);
    Shape in = {4, {2, 2, 30, 26}};
    size_t nin = (size_t)shape_numel(&in);
    TestRng r = {17};
    float *x = alloc_fill(&r, nin);
    const float *o[SL_MAX_OUTPUTS];

    Graph ref;
    Executor *e = NULL;
    assert_int_equal(sslim_read(path, &ref), 0);
    size_t raw = 0;
    for (int i = 0; i < ref.n_values; i++)
        if (ref.values[i].data)
            raw += (size_t)shape_numel(&ref.values[i].shape) * 4;
    assert_int_equal(exec_create(&ref, &in, 2, &e), 0);
    size_t wino = exec_weight_bytes(e);
    assert_true(wino > 0);
    assert_int_equal(exec_run(e, x, o), 0);
    size_t nout = (size_t)shape_numel(exec_output_shape(e, 0));
    float *want = sl_alloc(nout * sizeof(float));
    assert_non_null(want);
    memcpy(want, o[0], nout * sizeof(float));
    /* raw bytes of the Winograd layers' weights */
    size_t wraw = 0;
    for (int i = 0; i < ref.n_nodes; i++)
        if (!strcmp(exec_node_label(e, i), "Conv/winograd"))
            wraw +=
                (size_t)shape_numel(&ref.values[ref.nodes[i].in[1]].shape) *
                4;
    assert_true(wraw > 0);
    exec_free(e);

    Graph g2;
    sl_alloc_track(1);
    assert_int_equal(sslim_read(path, &g2), 0);
    size_t t_read = sl_alloc_total();
    assert_int_equal(exec_create_lean(&g2, &in, 2, &e), 0);
    size_t t_exec = sl_alloc_total() - t_read;
    sl_alloc_track(0);
    /* reading: one copy of the weights (plus names, arrays, sections) */
    assert_true(t_read >= raw && t_read < raw + 32 * 1024);
    /* creating: the transformed weights, the arena and scratch, and
     * bookkeeping (plan, labels, per-node arrays: a few KiB here) */
    size_t need = wino + exec_arena_bytes(e);
    if (!(t_exec >= need && t_exec < need + 32 * 1024))
        fprintf(stderr,
                "exec_create_lean allocated %zu, expected %zu + "
                "bookkeeping\n",
                t_exec, need);
    assert_true(t_exec >= need && t_exec < need + 32 * 1024);
    size_t live = 0;
    for (int i = 0; i < g2.n_values; i++)
        if (g2.values[i].data)
            live += (size_t)shape_numel(&g2.values[i].shape) * 4;
    assert_int_equal(live, raw - wraw);
    assert_int_equal(exec_run(e, x, o), 0);
    assert_int_equal(memcmp(o[0], want, nout * sizeof(float)), 0);
    Executor *e2 = NULL;
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_not_equal(exec_create(&g2, &in, 2, &e2), 0);
    assert_null(e2);
    assert_true(sl_error_reported());
    sl_error_reset();
    sl_error_quiet(0);
    exec_free(e);
    graph_free(&g2);
    graph_free(&ref);
    sl_free(want);
    sl_free(x);
    unlink(path);
    set_algo(saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_2d_pads_and_channels),
        cmocka_unit_test(test_3d),
        cmocka_unit_test(test_isas),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_choice),
        cmocka_unit_test(test_executor),
        cmocka_unit_test(test_lean_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
