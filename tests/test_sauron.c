/* Sauron distances (compressor/sauron/distance.h) and thresholds
 * (compressor/sauron/threshold.h):
 *   - delta_opt value, per-channel d and gradient, and delta_prune e,
 *     against PyTorch fixtures (tools/make_sauron_fixtures.py) that follow
 *     the same tie and guard rules (2D, 3D, a depth below sf, sf = 3, C = 1;
 *     a flat channel, a channel equal to channel 0, an identical pair, ties
 *     at min and max, a minimum in the dropped remainder);
 *   - the gradient against central finite differences of an independent
 *     double-precision forward written here (random inputs: no ties, no
 *     d = 0, so no kinks within the step);
 *   - guards: finite everywhere, exact zeros where the rules say so;
 *   - 1 vs 2 OpenMP threads bit-identical;
 *   - prune candidates never include r nor empty a point;
 *   - ladder values, plateau/convergence rule and patience on hand-worked
 *     histories, the budgeted schedule (ramp, recovery without pruning,
 *     Dice-guard freeze, best checkpoint within the margin).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "compressor/sauron/distance.h"
#include "compressor/sauron/threshold.h"
#include "runtime/common.h"

static Shape mkshape(int ndim, const int64_t *d)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s.d[i] = d[i];
    return s;
}

/* Buffers for one delta_opt forward + backward. */
typedef struct {
    void *saved_buf;
    SauronOptSaved sv;
    float *scratch;
} OptBufs;

static void opt_bufs(OptBufs *b, const Shape *fs, int sf)
{
    b->saved_buf = sl_alloc(sauron_opt_saved_bytes(fs, sf));
    assert_non_null(b->saved_buf);
    sauron_opt_saved_carve(&b->sv, b->saved_buf, fs, sf);
    b->scratch =
        sl_alloc(sauron_opt_backward_scratch_floats(fs, sf) * sizeof(float));
    assert_non_null(b->scratch);
}

static void opt_bufs_free(OptBufs *b)
{
    sl_free(b->saved_buf);
    sl_free(b->scratch);
}

/* ================= PyTorch fixtures ================= */

static float *load_fx(const char *name, const char *kind, int64_t *dims,
                      int *ndim)
{
    char rel[256], path[512];
    snprintf(rel, sizeof rel, "sauron/%s.%s.f32", name, kind);
    float *t = load_tensor(fixture_path(rel, path, sizeof path), dims, ndim);
    assert_non_null(t);
    return t;
}

static void check_fixture(const char *name)
{
    int64_t dims[8], md[8];
    int ndim, mnd;
    float *F = load_fx(name, "F", dims, &ndim);
    float *meta = load_fx(name, "meta", md, &mnd);
    float *dist = load_fx(name, "dist", md, &mnd);
    float *grad = load_fx(name, "grad", md, &mnd);
    float *eref = load_fx(name, "e", md, &mnd);
    Shape fs = mkshape(ndim, dims);
    int sf = (int)meta[0], r = (int)meta[2];
    float scale = meta[1];
    size_t n = (size_t)shape_numel(&fs);
    int C = (int)fs.d[1];
    assert_int_equal(sauron_dist_check(&fs, sf, name), 0);

    OptBufs b;
    opt_bufs(&b, &fs, sf);
    double term = sauron_opt_forward(&b.sv, F, &fs, sf);
    /* float32 pooled maps (relative error ~1e-7 per op), sums in double:
     * 1e-6 absolute on values of order 0.1-1 is 10x the expected error. */
    printf("%-11s term %.7f ref %.7f\n", name, term, (double)meta[3]);
    assert_true(fabs(term - (double)meta[3]) <= 1e-6);
    assert_allclose(b.sv.dist, dist, (size_t)(fs.d[0] * C), 1e-6, 1e-5);

    /* accumulation: dF starts at a random prefill */
    float *dF = malloc(n * sizeof(float)), *pre = malloc(n * sizeof(float));
    TestRng rng = {7};
    trng_fill(&rng, pre, n, -1, 1);
    memcpy(dF, pre, n * sizeof(float));
    sauron_opt_backward(dF, &b.sv, &fs, sf, scale, b.scratch);
    float gmax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        dF[i] -= pre[i];
        gmax = fmaxf(gmax, fabsf(grad[i]));
    }
    /* Gradient entries are O(gmax); float32 sums of up to Q (<= 20) terms
     * of pooled differences plus the prefill round-trip (|pre| <= 1,
     * ulp 6e-8) give ~1e-7 absolute: 1e-6 + 1e-4 * gmax allows 10x. */
    assert_allclose(dF, grad, n, 1e-6 + 1e-4 * (double)gmax, 1e-4);

    float *e = malloc((size_t)C * sizeof(float));
    float *ps =
        sl_alloc(sauron_prune_scratch_floats(&fs, sf) * sizeof(float));
    sauron_prune_distance(e, F, &fs, sf, r, ps);
    /* e is a ratio of float32 RMS values in [0, 1]: 1e-5 is ~100 ulp */
    assert_allclose(e, eref, (size_t)C, 1e-5, 1e-5);
    assert_true(e[r] == 0.0f);

    sl_free(ps);
    free(e);
    free(dF);
    free(pre);
    opt_bufs_free(&b);
    free(F);
    free(meta);
    free(dist);
    free(grad);
    free(eref);
}

static void test_fixture_opt2d(void **st)
{
    (void)st;
    check_fixture("opt2d");
}
static void test_fixture_opt3d(void **st)
{
    (void)st;
    check_fixture("opt3d");
}
static void test_fixture_opt3d_thin(void **st)
{
    (void)st;
    check_fixture("opt3d_thin");
}
static void test_fixture_opt2d_sf3(void **st)
{
    (void)st;
    check_fixture("opt2d_sf3");
}
static void test_fixture_opt_c1(void **st)
{
    (void)st;
    check_fixture("opt_c1");
}

/* ================= finite differences in double ================= */

/* Independent naive delta_opt in double: normalise every element, then pool
 * with explicit windows (the C code pools first, then normalises). */
static double opt_term_double(const double *F, const Shape *fs, int sf)
{
    int nsp = fs->ndim - 2;
    int64_t sz[3] = {1, 1, 1}, k[3] = {1, 1, 1}, P[3];
    for (int i = 0; i < nsp; i++) {
        sz[3 - nsp + i] = fs->d[2 + i];
    }
    int64_t S = 1, Q = 1;
    for (int i = 0; i < 3; i++) {
        k[i] = sz[i] < sf ? sz[i] : sf;
        P[i] = sz[i] / k[i];
        S *= sz[i];
        Q *= P[i];
    }
    int64_t N = fs->d[0], C = fs->d[1];
    if (C < 2) return 0.0;
    double *p = malloc((size_t)(C * Q) * sizeof(double));
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t c = 0; c < C; c++) {
            const double *x = F + (n * C + c) * S;
            double mn = x[0], mx = x[0];
            for (int64_t s = 0; s < S; s++) {
                mn = fmin(mn, x[s]);
                mx = fmax(mx, x[s]);
            }
            for (int64_t q = 0; q < Q; q++) {
                int64_t qd = q / (P[1] * P[2]), qh = q / P[2] % P[1],
                        qw = q % P[2];
                double acc = 0.0;
                for (int64_t a = 0; a < k[0]; a++)
                    for (int64_t bb = 0; bb < k[1]; bb++)
                        for (int64_t cc = 0; cc < k[2]; cc++) {
                            int64_t s =
                                ((qd * k[0] + a) * sz[1] + qh * k[1] + bb) *
                                    sz[2] +
                                qw * k[2] + cc;
                            acc += (x[s] - mn) / (mx - mn);
                        }
                p[c * Q + q] = acc / (double)(k[0] * k[1] * k[2]);
            }
        }
        for (int64_t c = 1; c < C; c++) {
            double u = 0.0;
            for (int64_t q = 0; q < Q; q++) {
                double t = p[q] - p[c * Q + q];
                u += t * t;
            }
            total += sqrt(u / (double)Q);
        }
    }
    free(p);
    return total / (double)(N * (C - 1));
}

static void fd_case(int ndim, const int64_t *d, int sf, float scale,
                    uint64_t seed)
{
    Shape fs = mkshape(ndim, d);
    size_t n = (size_t)shape_numel(&fs);
    float *F = malloc(n * sizeof(float)), *dF = calloc(n, sizeof(float));
    double *Fd = calloc(n, sizeof(double)), *fd = calloc(n, sizeof(double));
    TestRng rng = {seed};
    trng_fill(&rng, F, n, -1, 1);
    for (size_t i = 0; i < n; i++)
        Fd[i] = (double)F[i];

    OptBufs b;
    opt_bufs(&b, &fs, sf);
    double term = sauron_opt_forward(&b.sv, F, &fs, sf);
    double tref = opt_term_double(Fd, &fs, sf);
    /* same value from two orders of operations: float32 pooled maps */
    assert_true(fabs(term - tref) <= 1e-6 * fmax(1.0, fabs(tref)));
    sauron_opt_backward(dF, &b.sv, &fs, sf, scale, b.scratch);

    /* Central differences, h = 1e-6 in double: truncation error ~h^2
     * times third derivatives of O(1/R^3) (R ~ 2): < 1e-10; rounding
     * ~1e-16/h = 1e-10.  The float gradient has ~1e-7 relative error, so
     * 1e-4 of the largest entry is a wide but meaningful margin. */
    const double h = 1e-6;
    double gmax = 0.0, emax = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = Fd[i];
        Fd[i] = v + h;
        double tp = opt_term_double(Fd, &fs, sf);
        Fd[i] = v - h;
        double tm = opt_term_double(Fd, &fs, sf);
        Fd[i] = v;
        fd[i] = (double)scale * (tp - tm) / (2 * h);
        gmax = fmax(gmax, fabs(fd[i]));
    }
    for (size_t i = 0; i < n; i++)
        emax = fmax(emax, fabs((double)dF[i] - fd[i]));
    printf("fd %dD: max |grad| %.3e, max |err| %.3e\n", ndim - 2, gmax, emax);
    assert_true(gmax > 0.0);
    assert_true(emax <= 1e-4 * gmax);
    opt_bufs_free(&b);
    free(F);
    free(dF);
    free(Fd);
    free(fd);
}

static void test_fd_2d(void **st)
{
    (void)st;
    const int64_t d[4] = {2, 4, 7, 9};
    fd_case(4, d, 2, 0.9f, 11);
}

static void test_fd_3d(void **st)
{
    (void)st;
    const int64_t d[5] = {1, 3, 5, 4, 7};
    fd_case(5, d, 2, 1.0f, 12);
}

static void test_fd_sf3_1d(void **st)
{
    (void)st;
    const int64_t d[3] = {2, 3, 11};
    fd_case(3, d, 3, 0.5f, 13);
}

/* ================= guards ================= */

static int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Runs forward + backward (scale 1) into dF prefilled with `fill`. */
static double run_opt(const float *F, float *dF, const Shape *fs, int sf,
                      OptBufs *b)
{
    double t = sauron_opt_forward(&b->sv, F, fs, sf);
    sauron_opt_backward(dF, &b->sv, fs, sf, 1.0f, b->scratch);
    return t;
}

static void test_guard_flat_and_identical(void **st)
{
    (void)st;
    const int64_t d[4] = {2, 3, 6, 5};
    Shape fs = mkshape(4, d);
    const size_t S = 30, n = 2 * 3 * S;
    float F[180], dF[180];
    TestRng rng = {21};
    trng_fill(&rng, F, n, -1, 1);
    for (size_t s = 0; s < S; s++) {
        F[1 * S + s] = 2.5f;                     /* n 0, c 1: flat */
        F[2 * S + s] = F[0 * S + s];             /* n 0, c 2 == c 0 */
        F[(3 + 2) * S + s] = F[(3 + 0) * S + s]; /* n 1, c 2 == c 0 */
    }
    memset(dF, 0, sizeof dF);
    OptBufs b;
    opt_bufs(&b, &fs, 2);
    double t = run_opt(F, dF, &fs, 2, &b);
    assert_true(isfinite(t) && t > 0.0);
    assert_true(all_finite(dF, n));
    assert_true(b.sv.range[1] == 0.0f);
    assert_true(b.sv.dist[2] == 0.0f && b.sv.dist[5] == 0.0f);
    /* flat channel: no gradient at all */
    for (size_t s = 0; s < S; s++)
        assert_true(dF[1 * S + s] == 0.0f);
    /* the flat channel is at distance > 0 from channel 0 in sample 0 */
    assert_true(b.sv.dist[1] > 0.0f);
    opt_bufs_free(&b);

    /* C = 2, channel 1 == channel 0: term 0 and exactly zero gradient */
    const int64_t d2[4] = {1, 2, 5, 6};
    Shape fs2 = mkshape(4, d2);
    float G[60], dG[60];
    trng_fill(&rng, G, 30, -1, 1);
    memcpy(G + 30, G, 30 * sizeof(float));
    memset(dG, 0, sizeof dG);
    opt_bufs(&b, &fs2, 2);
    assert_true(run_opt(G, dG, &fs2, 2, &b) == 0.0);
    for (int i = 0; i < 60; i++)
        assert_true(dG[i] == 0.0f);
    opt_bufs_free(&b);
}

static void test_guard_c1_and_constant(void **st)
{
    (void)st;
    OptBufs b;
    float F[96], dF[96], pre[96];
    TestRng rng = {22};

    /* C = 1: term 0, dF untouched */
    const int64_t d1[4] = {2, 1, 6, 8};
    Shape f1 = mkshape(4, d1);
    trng_fill(&rng, F, 96, -1, 1);
    trng_fill(&rng, pre, 96, -1, 1);
    memcpy(dF, pre, sizeof dF);
    opt_bufs(&b, &f1, 2);
    assert_true(run_opt(F, dF, &f1, 2, &b) == 0.0);
    assert_memory_equal(dF, pre, sizeof dF);
    opt_bufs_free(&b);

    /* every channel constant: term 0, no NaN, no gradient */
    const int64_t d2[4] = {2, 3, 4, 4};
    Shape f2 = mkshape(4, d2);
    for (int i = 0; i < 96; i++)
        F[i] = (float)(i / 16) - 2.0f;
    memset(dF, 0, sizeof dF);
    opt_bufs(&b, &f2, 2);
    assert_true(run_opt(F, dF, &f2, 2, &b) == 0.0);
    for (int i = 0; i < 96; i++)
        assert_true(dF[i] == 0.0f);
    opt_bufs_free(&b);

    /* float noise on a large flat channel (range one ulp of 1000, below
     * 1e-6 * 1000) is treated as flat, not amplified by 1/R */
    const int64_t d3[4] = {1, 2, 4, 4};
    Shape f3 = mkshape(4, d3);
    trng_fill(&rng, F, 16, -1, 1);
    for (int i = 0; i < 16; i++)
        F[16 + i] = i % 3 ? 1000.0f : nextafterf(1000.0f, 2000.0f);
    memset(dF, 0, sizeof dF);
    opt_bufs(&b, &f3, 2);
    double t = run_opt(F, dF, &f3, 2, &b);
    assert_true(isfinite(t));
    assert_true(b.sv.range[1] == 0.0f);
    for (int i = 16; i < 32; i++)
        assert_true(dF[i] == 0.0f);
    assert_true(all_finite(dF, 32));
    opt_bufs_free(&b);

    /* 1x1 maps (smaller than sf): pooled whole, flat, term 0 */
    const int64_t d4[4] = {2, 3, 1, 1};
    Shape f4 = mkshape(4, d4);
    assert_int_equal(sauron_pooled_size(&f4, 2), 1);
    trng_fill(&rng, F, 6, -1, 1);
    memset(dF, 0, sizeof dF);
    opt_bufs(&b, &f4, 2);
    assert_true(run_opt(F, dF, &f4, 2, &b) == 0.0);
    assert_true(all_finite(dF, 6));
    opt_bufs_free(&b);
}

static void test_dist_check(void **st)
{
    (void)st;
    const int64_t d[5] = {1, 2, 3, 4, 5};
    sl_error_quiet(1);
    Shape s = mkshape(5, d);
    assert_int_equal(sauron_dist_check(&s, 2, "p"), 0);
    assert_int_equal(sauron_dist_check(&s, 0, "p"), ERR_ARG);
    Shape s2 = mkshape(2, d);
    assert_int_equal(sauron_dist_check(&s2, 2, "p"), ERR_SHAPE);
    s.d[3] = 0;
    assert_int_equal(sauron_dist_check(&s, 2, "p"), ERR_SHAPE);
    sl_error_quiet(0);
    sl_error_reset();
    /* pooled sizes: floor, and whole-dim pooling below sf */
    const int64_t e[5] = {1, 2, 1, 9, 7};
    Shape s3 = mkshape(5, e);
    assert_int_equal(sauron_pooled_size(&s3, 2), 1 * 4 * 3);
    assert_int_equal(sauron_pooled_size(&s3, 3), 1 * 3 * 2);
}

/* ================= threads ================= */

static void threads_case(int ndim, const int64_t *d, uint64_t seed)
{
    Shape fs = mkshape(ndim, d);
    size_t n = (size_t)shape_numel(&fs);
    int C = (int)fs.d[1];
    float *F = malloc(n * sizeof(float));
    float *dF[2], *e[2];
    OptBufs b[2];
    float *ps = sl_alloc(sauron_prune_scratch_floats(&fs, 2) * sizeof(float));
    double t[2];
    TestRng rng = {seed};
    trng_fill(&rng, F, n, -1, 1);
    int saved_threads = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k + 1);
        dF[k] = calloc(n, sizeof(float));
        e[k] = malloc((size_t)C * sizeof(float));
        opt_bufs(&b[k], &fs, 2);
        t[k] = sauron_opt_forward(&b[k].sv, F, &fs, 2);
        sauron_opt_backward(dF[k], &b[k].sv, &fs, 2, 0.5f, b[k].scratch);
        sauron_prune_distance(e[k], F, &fs, 2, C / 2, ps);
    }
    omp_set_num_threads(saved_threads);
    assert_true(t[0] == t[1]);
    /* every saved array (the carve padding between them is never set) */
    size_t nc = (size_t)(fs.d[0] * C);
    size_t q = (size_t)sauron_pooled_size(&fs, 2);
    assert_memory_equal(b[0].sv.pooled, b[1].sv.pooled,
                        nc * q * sizeof(float));
    assert_memory_equal(b[0].sv.dist, b[1].sv.dist, nc * sizeof(float));
    assert_memory_equal(b[0].sv.range, b[1].sv.range, nc * sizeof(float));
    assert_memory_equal(b[0].sv.argmin, b[1].sv.argmin, nc * sizeof(int64_t));
    assert_memory_equal(b[0].sv.argmax, b[1].sv.argmax, nc * sizeof(int64_t));
    assert_memory_equal(dF[0], dF[1], n * sizeof(float));
    assert_memory_equal(e[0], e[1], (size_t)C * sizeof(float));
    for (int k = 0; k < 2; k++) {
        free(dF[k]);
        free(e[k]);
        opt_bufs_free(&b[k]);
    }
    sl_free(ps);
    free(F);
}

static void test_threads_bit_identical(void **st)
{
    (void)st;
    const int64_t d2[4] = {2, 8, 33, 31};
    threads_case(4, d2, 31);
    const int64_t d3[5] = {1, 6, 9, 10, 11};
    threads_case(5, d3, 32);
    /* Q > DP0_BLOCK: several dp_0 blocks per sample */
    const int64_t d4[4] = {1, 3, 64, 70};
    threads_case(4, d4, 33);
}

/* ================= delta_prune and candidates ================= */

static void test_prune_hand_worked(void **st)
{
    (void)st;
    /* one 2x2 map per channel, sf 2: each pools to its mean 1, 2, 4;
     * r = 0: raw distances 0, 1, 3, divided by 3 (+1e-15) */
    const int64_t d[4] = {1, 3, 2, 2};
    Shape fs = mkshape(4, d);
    const float F[12] = {0, 2, 1, 1, 2, 2, 3, 1, 4, 4, 4, 4};
    float e[3], ps[16];
    assert_true(sauron_prune_scratch_floats(&fs, 2) <= 16);
    sauron_prune_distance(e, F, &fs, 2, 0, ps);
    assert_true(e[0] == 0.0f);
    assert_true(fabsf(e[1] - 1.0f / 3.0f) <= 1e-7f);
    assert_true(fabsf(e[2] - 1.0f) <= 1e-7f);
    int out[2];
    assert_int_equal(sauron_prune_candidates(out, e, 3, 0, 0.34f), 1);
    assert_int_equal(out[0], 1);
    /* the reference r is kept even with tau above every distance */
    assert_int_equal(sauron_prune_candidates(out, e, 3, 0, 2.0f), 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
}

static void test_prune_candidates(void **st)
{
    (void)st;
    const float e[6] = {0.5f, 0.05f, 0.0f, 0.2f, NAN, 0.099f};
    int out[5];
    int k = sauron_prune_candidates(out, e, 6, 2, 0.1f);
    assert_int_equal(k, 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 5);
    k = sauron_prune_candidates(out, e, 6, 2, 1.1f); /* NaN and r kept */
    assert_int_equal(k, 4);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[3], 5);
    const float one[1] = {0.0f};
    assert_int_equal(sauron_prune_candidates(out, one, 1, 0, 1.0f), 0);

    /* identical channels: every distance 0, all but r are candidates */
    const int64_t d[4] = {2, 4, 6, 6};
    Shape fs = mkshape(4, d);
    float F[288], ev[4];
    TestRng rng = {41};
    trng_fill(&rng, F, 36, -1, 1);
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 4; c++)
            memcpy(F + (n * 4 + c) * 36, F, 36 * sizeof(float));
    float *ps = sl_alloc(sauron_prune_scratch_floats(&fs, 2) * sizeof(float));
    sauron_prune_distance(ev, F, &fs, 2, 3, ps);
    for (int c = 0; c < 4; c++)
        assert_true(ev[c] == 0.0f);
    int o4[3];
    assert_int_equal(sauron_prune_candidates(o4, ev, 4, 3, 0.001f), 3);
    for (int i = 0; i < 3; i++)
        assert_true(o4[i] != 3);

    /* random maps: e in [0, 1], e[r] = 0, the farthest channel at 1 */
    trng_fill(&rng, F, 288, -1, 1);
    sauron_prune_distance(ev, F, &fs, 2, 1, ps);
    float mx = 0.0f;
    for (int c = 0; c < 4; c++) {
        assert_true(ev[c] >= 0.0f && ev[c] <= 1.0f);
        mx = fmaxf(mx, ev[c]);
    }
    assert_true(ev[1] == 0.0f && mx > 0.5f);
    sl_free(ps);
}

static void test_draw_reference(void **st)
{
    (void)st;
    uint64_t a = 1234, b = 1234;
    int count[6] = {0};
    for (int i = 0; i < 6000; i++) {
        int r = sauron_draw_reference(&a, 6);
        assert_int_equal(r, sauron_draw_reference(&b, 6));
        assert_true(r >= 0 && r < 6);
        count[r]++;
    }
    /* binomial(6000, 1/6): sd 29, so +-150 is over 5 sd */
    for (int c = 0; c < 6; c++)
        assert_true(count[c] > 850 && count[c] < 1150);
    uint64_t z = 0;
    for (int i = 0; i < 10; i++)
        assert_int_equal(sauron_draw_reference(&z, 1), 0);
    /* a different seed gives a different sequence */
    uint64_t c1 = 1, c2 = 2;
    int same = 0;
    for (int i = 0; i < 50; i++)
        same += sauron_draw_reference(&c1, 1000) ==
                sauron_draw_reference(&c2, 1000);
    assert_true(same < 5);
}

/* ================= ladder and configuration ================= */

static void test_ladder(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    assert_int_equal(sauron_sched_config_check(&c), 0);
    assert_int_equal(c.kappa, 15);
    /* 16 evenly spaced values from 0.001 to 0.3 */
    for (int k = 0; k <= 15; k++)
        assert_true(fabs(sauron_ladder_tau(&c, k) -
                         (0.001 + k * (0.3 - 0.001) / 15.0)) < 1e-15);
    assert_true(sauron_ladder_tau(&c, 0) == 0.001);
    assert_true(sauron_ladder_tau(&c, 15) == 0.3);
    assert_true(fabs(sauron_ladder_tau(&c, 5) - 0.1006666666666667) < 1e-15);
    assert_true(sauron_ladder_tau(&c, 99) == 0.3); /* never past the top */
    assert_true(sauron_ladder_tau(&c, -1) == 0.001);
    c.tau_max = 0.5;
    c.kappa = 4;
    const double want[5] = {0.001, 0.12575, 0.2505, 0.37525, 0.5};
    for (int k = 0; k <= 4; k++)
        assert_true(fabs(sauron_ladder_tau(&c, k) - want[k]) < 1e-15);
}

static void test_config_check(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sl_error_quiet(1);
    sauron_sched_defaults(&c);
    c.tau_max = 2.0;
    sl_error_reset();
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--tau-max"));
    sauron_sched_defaults(&c);
    c.kappa = 0;
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    sauron_sched_defaults(&c);
    c.mu = NAN;
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    sauron_sched_defaults(&c);
    c.prune_end = 0.3; /* before climb_end 0.5 */
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    sauron_sched_defaults(&c);
    c.max_dice_drop = -0.1;
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    sauron_sched_defaults(&c);
    c.rho = -1;
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    SauronSched s;
    int ch = 4;
    c.rho = 5;
    assert_int_equal(sauron_sched_init(&s, &c, 1, &ch, 0, 0.9), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
}

/* ================= paper schedule ================= */

static void test_plateau_rule(void **st)
{
    (void)st;
    /* rho 5: window = the 5 losses before the last */
    const double plateau[7] = {1.0, 0.9, 0.8, 0.85, 0.82, 0.84, 0.83};
    assert_true(sauron_loss_plateaued(plateau, 7, 5));
    const double falling[7] = {1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4};
    assert_false(sauron_loss_plateaued(falling, 7, 5)); /* below the min */
    const double jump[7] = {1.0, 0.9, 0.8, 0.85, 0.82, 0.84, 0.95};
    assert_false(sauron_loss_plateaued(jump, 7, 5)); /* above the max */
    /* exactly rho + 1 values is enough; rho values are not */
    const double six[6] = {0.5, 0.6, 0.4, 0.55, 0.45, 0.5};
    assert_true(sauron_loss_plateaued(six, 6, 5));
    assert_false(sauron_loss_plateaued(six + 1, 5, 5));
    /* the first loss is outside the window: a big early value is ignored */
    const double early[7] = {9.0, 0.5, 0.6, 0.4, 0.55, 0.45, 0.39};
    assert_false(sauron_loss_plateaued(early, 7, 5));
    /* ties at min and max are inside ("neither below nor above") */
    const double edge[6] = {0.4, 0.5, 0.6, 0.5, 0.5, 0.4};
    assert_true(sauron_loss_plateaued(edge, 6, 5));
    const double edge2[6] = {0.4, 0.5, 0.6, 0.5, 0.5, 0.6};
    assert_true(sauron_loss_plateaued(edge2, 6, 5));
}

static void test_convergence_mu(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    const double flat[6] = {1, 1, 1, 1, 1, 1};
    const double fall[6] = {6, 5, 4, 3, 2, 1};
    /* 100 channels, mu 0.02: ceil(2) = 2, so losing 1 is "stalled" and
     * losing 2 is not (0.02 * 100 is 2.0000000000000004 in binary) */
    assert_true(sauron_converged(flat, 6, 100, 99, &c));
    assert_false(sauron_converged(flat, 6, 100, 98, &c));
    /* 10 channels: ceil(0.2) = 1, only a step that removed none */
    assert_true(sauron_converged(flat, 6, 10, 10, &c));
    assert_false(sauron_converged(flat, 6, 10, 9, &c));
    /* 50 channels: ceil(1.0) = 1 */
    assert_false(sauron_converged(flat, 6, 50, 49, &c));
    /* 51 channels: ceil(1.02) = 2 */
    assert_true(sauron_converged(flat, 6, 51, 50, &c));
    /* falling loss never converges */
    assert_false(sauron_converged(fall, 6, 10, 10, &c));
    /* too short a history */
    assert_false(sauron_converged(flat, 5, 10, 10, &c));
}

/* Paper schedule on one point with a flat loss (always plateaued after
 * rho + 1 epochs) and no pruning: it steps up at epoch 6, waits rho = 5
 * epochs (patience 5 -> 0), steps at 12, 18, ... */
static void test_paper_patience(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    c.kind = SAURON_SCHED_PAPER;
    c.kappa = 3;
    SauronSched s;
    const int ch[2] = {10, 40};
    assert_int_equal(sauron_sched_init(&s, &c, 2, ch, 100, 0.9), 0);
    int prune;
    for (int e = 1; e <= 30; e++) {
        assert_int_equal(sauron_sched_end_epoch(&s, 1.0, 0.9), 0);
        /* mid-epoch queries change nothing in the paper schedule */
        int rung_before = s.pt[0].rung;
        sauron_sched_update(&s, e - 0.5, &prune);
        assert_false(prune);
        assert_int_equal(s.pt[0].rung, rung_before);
        sauron_sched_update(&s, e, &prune);
        assert_true(prune);
        /* steps at 6, 12, 18 (the top, kappa 3); at the top a converged
         * point still resets its patience, it just cannot climb further */
        int want = e < 6 ? 0 : e < 12 ? 1 : e < 18 ? 2 : 3;
        int want_pat = e < 6 ? 0 : 5 - (e - 6) % 6;
        assert_int_equal(s.pt[0].rung, want);
        assert_int_equal(s.pt[0].patience, want_pat);
        assert_true(s.pt[0].tau == sauron_ladder_tau(&c, want));
        /* point 1 loses one channel per epoch, not fewer than
         * ceil(0.02 * 40) = 1: pruning has not stalled, it never climbs */
        assert_int_equal(s.pt[1].rung, 0);
        assert_int_equal(s.pt[1].patience, 0);
        assert_int_equal(sauron_sched_record(&s, 0, e, 10), 0);
        assert_int_equal(sauron_sched_record(&s, 1, e, 40 - e), 0);
    }
    assert_true(s.pt[0].tau == c.tau_max);
    sauron_sched_free(&s);
}

static void test_paper_falling_loss(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    c.kind = SAURON_SCHED_PAPER;
    SauronSched s;
    const int ch = 16;
    assert_int_equal(sauron_sched_init(&s, &c, 1, &ch, 50, 0.9), 0);
    int prune;
    for (int e = 1; e <= 20; e++) {
        assert_int_equal(sauron_sched_end_epoch(&s, 10.0 - 0.1 * e, 0.9), 0);
        sauron_sched_update(&s, e, &prune);
        assert_true(prune);
        assert_int_equal(s.pt[0].rung, 0);
        assert_int_equal(sauron_sched_record(&s, 0, e, 16), 0);
    }
    /* epoch 21: 7.9 is below the window's min 8.0 (epochs 16-20 lost
     * 8.4 .. 8.0); epoch 22: 7.95 lies within [7.9, 8.3]: plateau */
    assert_int_equal(sauron_sched_end_epoch(&s, 7.9, 0.9), 0);
    sauron_sched_update(&s, 21, &prune);
    assert_int_equal(s.pt[0].rung, 0);
    assert_int_equal(sauron_sched_record(&s, 0, 21, 16), 0);
    assert_int_equal(sauron_sched_end_epoch(&s, 7.95, 0.9), 0);
    sauron_sched_update(&s, 22, &prune);
    assert_int_equal(s.pt[0].rung, 1);
    assert_int_equal(s.pt[0].patience, 5);
    assert_int_equal(s.nloss, 22);
    assert_int_equal(s.pt[0].nhist, 22);
    sauron_sched_free(&s);
}

/* ================= budgeted schedule ================= */

static void test_budget_rules(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    /* E = 40: tau climbs 15 rungs in 20 epochs, rung = floor(15 p / 20) */
    assert_int_equal(sauron_budget_rung(&c, 0.0, 40), 0);
    assert_int_equal(sauron_budget_rung(&c, 1.0, 40), 0);
    assert_int_equal(sauron_budget_rung(&c, 2.0, 40), 1);
    assert_int_equal(sauron_budget_rung(&c, 10.5, 40), 7); /* fractional */
    assert_int_equal(sauron_budget_rung(&c, 19.0, 40), 14);
    assert_int_equal(sauron_budget_rung(&c, 20.0, 40), 15);
    assert_int_equal(sauron_budget_rung(&c, 33.0, 40), 15);
    /* 4/3 epochs per rung: rung 4 at exactly p = 16/3 despite rounding */
    assert_int_equal(sauron_budget_rung(&c, 16.0 / 3.0, 40), 4);
    /* pruning in (0, 32], recovery after */
    assert_false(sauron_budget_prune_allowed(&c, 0.0, 40));
    assert_true(sauron_budget_prune_allowed(&c, 0.25, 40));
    assert_true(sauron_budget_prune_allowed(&c, 32.0, 40));
    assert_false(sauron_budget_prune_allowed(&c, 32.5, 40));
    assert_false(sauron_budget_prune_allowed(&c, 40.0, 40));

    /* Dice trend: median of the last 3 below 0.9 - 0.01 */
    const double dip[5] = {0.9, 0.9, 0.5, 0.9, 0.9};
    for (int n = 1; n <= 5; n++) /* one deep dip never breaches */
        assert_false(sauron_dice_breach(dip, n, 0.9, &c));
    const double two[4] = {0.9, 0.88, 0.9, 0.85};
    assert_false(sauron_dice_breach(two, 3, 0.9, &c));
    assert_true(sauron_dice_breach(two, 4, 0.9, &c)); /* 0.88, 0.85 */
    const double edge[3] = {0.89, 0.89, 0.95}; /* median 0.89 = margin */
    assert_false(sauron_dice_breach(edge, 3, 0.9, &c));
    const double low[2] = {0.1, 0.1}; /* fewer than the window */
    assert_false(sauron_dice_breach(low, 2, 0.9, &c));
    const double nan3[3] = {0.1, NAN, 0.1};
    assert_false(sauron_dice_breach(nan3, 3, 0.9, &c));
    assert_false(sauron_dice_breach(low, 2, NAN, &c));
    c.dice_window = 2;                 /* even window: mean of the two */
    const double w2[2] = {0.95, 0.82}; /* 0.885 < 0.89 */
    assert_true(sauron_dice_breach(w2, 2, 0.9, &c));
}

/* E = 10: top at epoch 5, pruning at epochs 1..8, recovery at 9 and 10;
 * Dice stays at the reference, so nothing freezes. */
static void test_budget_ramp_and_recovery(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    SauronSched s;
    const int ch[2] = {32, 16};
    assert_int_equal(sauron_sched_init(&s, &c, 2, ch, 10, 0.9), 0);
    const int want_rung[11] = {0, 3, 6, 9, 12, 15, 15, 15, 15, 15, 15};
    int prune;
    for (int e = 1; e <= 10; e++) {
        /* a mid-epoch query (--prune-every) sees a fractional rung */
        sauron_sched_update(&s, e - 0.5, &prune);
        assert_int_equal(s.pt[0].rung,
                         e - 0.5 >= 5 ? 15 : (int)floor(3 * (e - 0.5)));
        assert_int_equal(prune, e - 0.5 <= 8.0);
        assert_int_equal(sauron_sched_end_epoch(&s, 0.1, 0.9), 0);
        sauron_sched_update(&s, e, &prune);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(s.pt[i].rung, want_rung[e]);
            assert_true(s.pt[i].tau == sauron_ladder_tau(&c, want_rung[e]));
            assert_false(s.pt[i].frozen);
        }
        assert_int_equal(prune, e <= 8);
        if (prune) {
            assert_int_equal(sauron_sched_record(&s, 0, e, 32 - e), 0);
            assert_int_equal(sauron_sched_record(&s, 1, e, 16), 0);
        }
    }
    assert_true(s.pt[0].tau == 0.3);
    assert_int_equal(sauron_point_lost_since(&s.pt[0], 0.0), 8);
    assert_int_equal(sauron_point_lost_since(&s.pt[0], 6.0), 3);
    sauron_sched_free(&s);
}

/* E = 20 (rung = floor(1.5 p)), 3 points, Dice reference 0.9.  Point 1
 * prunes at epoch 5; Dice then stays at 0.85 for epochs 6-8.  At the end of
 * epoch 7 two of the last three are below 0.89: point 1, the only one that
 * lost channels at progress >= 7 - 3, freezes; the check runs before the
 * climb, so it keeps the rung of p = 6 (9).  The others climb on: the
 * windows ending at epochs 8 and 9 still hold Dice from before the freeze
 * and are not judged.  At epoch 16 (0.8, 0.8) nobody still climbing has
 * pruned recently, so every point still climbing freezes. */
static void test_budget_dice_freeze(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    SauronSched s;
    const int ch[3] = {8, 8, 8};
    assert_int_equal(sauron_sched_init(&s, &c, 3, ch, 20, 0.9), 0);
    const double dice[20] = {0.9,  0.9, 0.9, 0.9, 0.9, 0.85, 0.85,
                             0.85, 0.9, 0.9, 0.9, 0.9, 0.9,  0.9,
                             0.8,  0.8, 0.9, 0.9, 0.9, 0.9};
    int prune;
    for (int e = 1; e <= 20; e++) {
        assert_int_equal(sauron_sched_end_epoch(&s, 0.1, dice[e - 1]), 0);
        sauron_sched_update(&s, e, &prune);
        int top = (int)floor(1.5 * e) > 15 ? 15 : (int)floor(1.5 * e);
        if (e < 7) {
            for (int i = 0; i < 3; i++)
                assert_false(s.pt[i].frozen);
        } else {
            assert_true(s.pt[1].frozen);
            assert_int_equal(s.pt[1].rung, 9); /* rung of p = 6 */
            assert_true(s.pt[1].frozen_at == 7.0);
            assert_true(s.pt[1].tau == sauron_ladder_tau(&c, 9));
        }
        if (e < 16) {
            assert_false(s.pt[0].frozen);
            assert_false(s.pt[2].frozen);
            assert_int_equal(s.pt[0].rung, top);
            assert_int_equal(s.pt[2].rung, top);
        } else {
            /* epoch 16: 0.8, 0.8 -> breach, nobody pruned since 13 */
            assert_true(s.pt[0].frozen && s.pt[2].frozen);
            assert_int_equal(s.pt[0].rung, 15);
        }
        if (prune)
            for (int i = 0; i < 3; i++)
                assert_int_equal(
                    sauron_sched_record(&s, i, e, i == 1 && e >= 5 ? 7 : 8),
                    0);
    }
    sauron_sched_free(&s);
}

static void test_best_within_margin(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    SauronBest b;
    memset(&b, 0, sizeof b);
    const double ref = 0.9;
    /* epoch, dice, flops, new best? */
    assert_true(sauron_best_within_margin(&b, 0, 0.90, 100, ref, &c));
    assert_true(sauron_best_within_margin(&b, 1, 0.895, 80, ref, &c));
    assert_false(sauron_best_within_margin(&b, 2, 0.85, 50, ref, &c));
    assert_true(sauron_best_within_margin(&b, 3, 0.891, 60, ref, &c));
    /* exactly at the margin counts, but lower Dice at equal FLOPs loses */
    assert_false(sauron_best_within_margin(&b, 4, 0.89, 60, ref, &c));
    assert_true(sauron_best_within_margin(&b, 5, 0.899, 60, ref, &c));
    assert_false(sauron_best_within_margin(&b, 6, 0.95, 70, ref, &c));
    assert_false(sauron_best_within_margin(&b, 7, NAN, 10, ref, &c));
    assert_true(sauron_best_within_margin(&b, 8, 0.89, 59, ref, &c));
    assert_int_equal(b.epoch, 8);
    assert_true(b.flops == 59 && b.dice == 0.89);
    /* nothing within the margin: no best */
    SauronBest none;
    memset(&none, 0, sizeof none);
    assert_false(sauron_best_within_margin(&none, 1, 0.5, 1, ref, &c));
    assert_false(none.have);
}

static void test_sched_alloc_failure(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    const int ch[4] = {4, 4, 4, 4};
    sl_error_quiet(1);
    for (int k = 0; k < 6; k++) {
        SauronSched s;
        sl_alloc_fail_after(k);
        int rc = sauron_sched_init(&s, &c, 4, ch, 10, 0.9);
        sl_alloc_fail_after(-1);
        if (rc == 0) {
            /* history growth failing is reported, not a crash */
            int ok = 1;
            sl_alloc_fail_after(0);
            for (int e = 0; e < 40 && ok; e++)
                ok = sauron_sched_end_epoch(&s, 1.0, 0.9) == 0;
            sl_alloc_fail_after(-1);
            assert_false(ok);
            sauron_sched_free(&s);
        } else {
            assert_int_equal(rc, ERR_NOMEM);
            assert_null(s.pt);
        }
    }
    sl_error_quiet(0);
    sl_error_reset();
}

/* Checkpoint round trip: a budgeted run with a freeze is saved at epoch 9,
 * reloaded, and both copies continue identically; other settings, wrong
 * bytes and every truncation are refused without a crash. */
static void sched_run(SauronSched *s, int e0, int e1)
{
    int prune;
    for (int e = e0; e <= e1; e++) {
        assert_int_equal(
            sauron_sched_end_epoch(s, 1.0 / e, e == 6 || e == 7 ? 0.8 : 0.9),
            0);
        sauron_sched_update(s, e, &prune);
        for (int i = 0; prune && i < s->npoints; i++)
            assert_int_equal(sauron_sched_record(s, i, e, 20 - (i == 1) * e),
                             0);
    }
}

static void test_sched_checkpoint(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    SauronSched a, b;
    const int ch[3] = {20, 20, 20};
    assert_int_equal(sauron_sched_init(&a, &c, 3, ch, 20, 0.9), 0);
    sched_run(&a, 1, 9);
    assert_true(a.pt[1].frozen && !a.pt[0].frozen);
    ByteWriter w = {0};
    sauron_sched_save(&a, &w);
    assert_int_equal(w.err, 0);
    uint8_t *buf = w.p;
    size_t n = w.n;
    assert_int_equal(sauron_sched_load(&b, buf, n, &c, 20, 3, "ckpt"), 0);
    sched_run(&a, 10, 20);
    sched_run(&b, 10, 20);
    ByteWriter wa = {0}, wb = {0};
    sauron_sched_save(&a, &wa);
    sauron_sched_save(&b, &wb);
    assert_int_equal(wa.err, 0);
    assert_int_equal(wb.err, 0);
    assert_int_equal(wa.n, wb.n);
    assert_memory_equal(wa.p, wb.p, wa.n);
    for (int i = 0; i < 3; i++)
        assert_true(a.pt[i].tau == b.pt[i].tau);
    sauron_sched_free(&b);

    sl_error_quiet(1);
    SauronSchedConfig other = c;
    other.tau_max = 0.4;
    sl_error_reset();
    assert_int_equal(sauron_sched_load(&b, buf, n, &other, 20, 3, "ckpt"),
                     ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--tau-max"));
    sl_error_reset();
    assert_int_equal(sauron_sched_load(&b, buf, n, &c, 30, 3, "ckpt"),
                     ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--epochs"));
    for (size_t k = 0; k < n; k++) /* every truncation */
        assert_int_equal(sauron_sched_load(&b, buf, k, &c, 20, 3, "ckpt"),
                         ERR_FORMAT);
    for (size_t k = 0; k < n; k++) { /* every byte flipped: no crash */
        buf[k] ^= 0xA5;
        if (sauron_sched_load(&b, buf, n, &c, 20, 3, "ckpt") == 0)
            sauron_sched_free(&b);
        buf[k] ^= 0xA5;
    }
    for (int k = 0; k < 8; k++) { /* each allocation failing in turn */
        sl_alloc_fail_after(k);
        int rc = sauron_sched_load(&b, buf, n, &c, 20, 3, "ckpt");
        sl_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == ERR_NOMEM);
        if (rc == 0) sauron_sched_free(&b);
    }
    sl_error_quiet(0);
    sl_error_reset();
    sauron_sched_free(&a);
    bw_free(&w);
    bw_free(&wa);
    bw_free(&wb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_opt2d),
        cmocka_unit_test(test_fixture_opt3d),
        cmocka_unit_test(test_fixture_opt3d_thin),
        cmocka_unit_test(test_fixture_opt2d_sf3),
        cmocka_unit_test(test_fixture_opt_c1),
        cmocka_unit_test(test_fd_2d),
        cmocka_unit_test(test_fd_3d),
        cmocka_unit_test(test_fd_sf3_1d),
        cmocka_unit_test(test_guard_flat_and_identical),
        cmocka_unit_test(test_guard_c1_and_constant),
        cmocka_unit_test(test_dist_check),
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_prune_hand_worked),
        cmocka_unit_test(test_prune_candidates),
        cmocka_unit_test(test_draw_reference),
        cmocka_unit_test(test_ladder),
        cmocka_unit_test(test_config_check),
        cmocka_unit_test(test_plateau_rule),
        cmocka_unit_test(test_convergence_mu),
        cmocka_unit_test(test_paper_patience),
        cmocka_unit_test(test_paper_falling_loss),
        cmocka_unit_test(test_budget_rules),
        cmocka_unit_test(test_budget_ramp_and_recovery),
        cmocka_unit_test(test_budget_dice_freeze),
        cmocka_unit_test(test_best_within_margin),
        cmocka_unit_test(test_sched_alloc_failure),
        cmocka_unit_test(test_sched_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
