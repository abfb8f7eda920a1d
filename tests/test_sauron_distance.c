/* Sauron distances (compressor/sauron/distance.h):
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
 *   - prune candidates never include r nor empty a point.
 * The thresholds and schedules are in test_sauron_threshold.c.
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

/* --guard-split's order: nearest first, ties by channel, NaN last; the
 * scores travel with their channels. */
static void test_sort_candidates(void **st)
{
    (void)st;
    int ids[6] = {0, 1, 3, 4, 5, 7};
    float sc[6] = {0.5f, NAN, 0.1f, 0.5f, 0.0f, 0.1f};
    sauron_sort_candidates(ids, sc, 6);
    const int want[6] = {5, 3, 7, 0, 4, 1};
    const float wsc[5] = {0.0f, 0.1f, 0.1f, 0.5f, 0.5f};
    for (int i = 0; i < 6; i++)
        assert_int_equal(ids[i], want[i]);
    for (int i = 0; i < 5; i++)
        assert_true(sc[i] == wsc[i]);
    assert_true(isnan(sc[5]));
    sauron_sort_candidates(ids, sc, 0); /* nothing to order */
    sauron_sort_candidates(ids, sc, 1);
    assert_int_equal(ids[0], 5);
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
        cmocka_unit_test(test_sort_candidates),
        cmocka_unit_test(test_draw_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
