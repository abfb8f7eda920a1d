/* runtime/volume.c units: voxel orders and axes, normalisation (z-score,
 * foreground, CT window), the Gaussian weights and sliding windows. */
#include "niftifixture.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nifti2_io.h>

#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/nifti_io.h"
#include "runtime/segment.h"
#include "runtime/sslim.h"
#include "runtime/volume.h"

/* ---- volume.c units ---- */

static void test_volume_axes(void **state)
{
    (void)state;
    static const struct {
        VoxelOrder o;
        int dims, axis, ax[3];
    } cases[] = {
        {ORDER_NNUNET, 3, 0, {2, 1, 0}},  {ORDER_NIBABEL, 3, 0, {0, 1, 2}},
        {ORDER_NNUNET, 2, 2, {2, 1, 0}},  {ORDER_NNUNET, 2, 1, {1, 2, 0}},
        {ORDER_NNUNET, 2, 0, {0, 2, 1}},  {ORDER_NIBABEL, 2, 2, {2, 0, 1}},
        {ORDER_NIBABEL, 2, 1, {1, 0, 2}}, {ORDER_NIBABEL, 2, 0, {0, 1, 2}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int ax[3];
        assert_int_equal(
            volume_axes(cases[c].o, cases[c].dims, cases[c].axis, ax), 0);
        assert_memory_equal(ax, cases[c].ax, sizeof ax);
    }
    int ax[3];
    sl_error_quiet(1);
    assert_int_equal(volume_axes(ORDER_NNUNET, 2, 3, ax), ERR_ARG);
    assert_int_equal(volume_axes(ORDER_NNUNET, 4, 0, ax), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();

    /* Gather then argmax-scatter a box: every voxel lands where it came
     * from (2 "classes" = value and its negation). */
    Volume v;
    assert_int_equal(volume_alloc(&v, 5, 4, 3, 1), 0);
    for (int i = 0; i < 60; i++)
        v.data[i] = (float)(i % 7) - 3.0f;
    int64_t off[3] = {1, 1, 0}, box[3] = {2, 3, 2}, pad[3] = {3, 4, 4};
    assert_int_equal(volume_axes(ORDER_NNUNET, 3, 0, ax), 0);
    float buf[2 * 48];
    volume_gather(buf, &v, NULL, ax, off, box, pad);
    for (int i = 0; i < 48; i++)
        buf[48 + i] = -buf[i];
    int16_t lab[60];
    for (int i = 0; i < 60; i++)
        lab[i] = 7;
    volume_argmax_scatter(lab, v.dim, buf, 2, ax, off, box, pad);
    int touched = 0;
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < 5; i++) {
                int idx = (k * 4 + j) * 5 + i;
                /* ax = (k, j, i): the box spans k 1..2, j 1..3, i 0..1 */
                int in = k >= 1 && k <= 2 && j >= 1 && j <= 3 && i <= 1;
                if (!in) {
                    assert_int_equal(lab[idx], 7);
                    continue;
                }
                touched++;
                assert_int_equal(lab[idx], v.data[idx] >= 0 ? 0 : 1);
            }
    assert_int_equal(touched, 12);
    /* Padding is zero. */
    assert_true(buf[(0 * 4 + 3) * 4 + 0] == 0.0f);
    assert_true(buf[(2 * 4 + 0) * 4 + 0] == 0.0f);
    volume_free(&v);
}

static void test_normalisation(void **state)
{
    (void)state;
    Volume v;
    assert_int_equal(volume_alloc(&v, 3, 2, 2, 2), 0);
    for (int i = 0; i < 12; i++) {
        v.data[i] = 1000.0f + (float)i; /* large offset: two-pass stats */
        v.data[12 + i] = 7.0f;          /* constant: std 0 -> 1e-8 */
    }
    Normalize nz[2] = {{NORMALIZE_ZSCORE, 0, 0}, {NORMALIZE_ZSCORE, 0, 0}};
    assert_int_equal(volume_normalize(&v, nz), 0);
    /* mean 1005.5, population std sqrt((144-1)/12) */
    double sd = sqrt(143.0 / 12.0);
    for (int i = 0; i < 12; i++) {
        float want = (float)(((double)i - 5.5) / sd);
        assert_true(fabsf(v.data[i] - want) <= 1e-6f);
        assert_true(v.data[12 + i] == 0.0f);
    }
    /* CT: clip to [-100, 300] then (v - lo) / (hi - lo) * 2 - 1. */
    float raw[4] = {-1000.0f, -100.0f, 100.0f, 2000.0f};
    Normalize ct = {NORMALIZE_CT, -100.0f, 300.0f};
    NormAffine a;
    Volume one = {.dim = {4, 1, 1}, .n_mod = 1, .data = raw};
    assert_int_equal(volume_norm_affine(&one, 0, &ct, &a), 0);
    float want[4] = {-1.0f, -1.0f, 0.0f, 1.0f};
    for (int i = 0; i < 4; i++)
        assert_true(fabsf(norm_apply(&a, raw[i]) - want[i]) <= 1e-7f);
    Normalize bad = {NORMALIZE_CT, 5.0f, 5.0f};
    sl_error_quiet(1);
    assert_int_equal(volume_norm_affine(&one, 0, &bad, &a), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
    assert_int_equal(volume_norm_affine(&one, 0, NULL, &a), 0);
    assert_true(norm_apply(&a, 123.5f) == 123.5f);
    volume_free(&v);
}

/* zscore-fg: Otsu splits air from head; the statistics are the head's,
 * so padding the scan with air (a wider field of view) or with noisy air
 * changes nothing, where the plain zscore moves. */
static void test_foreground_normalisation(void **state)
{
    (void)state;
    TestRng r = {5};
    /* a 10^3 "head" of values 80..120 inside 20^3 of air 0..4 */
    Volume v, w;
    assert_int_equal(volume_alloc(&v, 20, 20, 20, 1), 0);
    assert_int_equal(volume_alloc(&w, 40, 40, 40, 1), 0);
    double s = 0, ss = 0;
    int n = 0;
    for (int k = 0; k < 20; k++)
        for (int j = 0; j < 20; j++)
            for (int i = 0; i < 20; i++) {
                int in =
                    i >= 5 && i < 15 && j >= 5 && j < 15 && k >= 5 && k < 15;
                float x =
                    in ? trng_uniform(&r, 80, 120) : trng_uniform(&r, 0, 4);
                v.data[(k * 20 + j) * 20 + i] = x;
                w.data[((k + 10) * 40 + j + 10) * 40 + i + 10] = x;
                if (in) {
                    s += (double)x;
                    n++;
                }
            }
    double mean = s / n;
    for (int i = 0; i < 8000; i++) {
        double x = (double)v.data[i];
        if (x >= 80) ss += (x - mean) * (x - mean);
    }
    double thr = volume_otsu_threshold(v.data, 8000);
    assert_true(thr > 4.0 && thr <= 80.0);
    Normalize fg = {NORMALIZE_ZSCORE_FG, 0, 1}, z = {NORMALIZE_ZSCORE, 0, 0};
    NormAffine a, b, za, zb;
    assert_int_equal(volume_norm_affine(&v, 0, &fg, &a), 0);
    /* the head's own mean and population std */
    assert_true(fabs(a.shift - mean) < 1e-9 * mean);
    assert_true(fabs(1.0 / a.scale - sqrt(ss / n)) < 1e-9 * sqrt(ss / n));
    /* 7x the voxels, all air (exact zeros): the same statistics */
    assert_int_equal(volume_norm_affine(&w, 0, &fg, &b), 0);
    assert_true(a.shift == b.shift && a.scale == b.scale);
    assert_int_equal(volume_norm_affine(&v, 0, &z, &za), 0);
    assert_int_equal(volume_norm_affine(&w, 0, &z, &zb), 0);
    assert_true(fabs(za.shift - zb.shift) > 10.0); /* plain zscore moves */
    /* noisy air instead of zeros: still the head's statistics */
    for (int k = 0; k < 40; k++)
        for (int j = 0; j < 40; j++)
            for (int i = 0; i < 40; i++)
                if (i < 10 || i >= 30 || j < 10 || j >= 30 || k < 10 ||
                    k >= 30)
                    w.data[(k * 40 + j) * 40 + i] = trng_uniform(&r, 0, 4);
    assert_int_equal(volume_norm_affine(&w, 0, &fg, &b), 0);
    assert_true(a.shift == b.shift && a.scale == b.scale);
    /* gain and offset: (v - mean) / sd * 0.5 + 2 */
    Normalize cal = {NORMALIZE_ZSCORE_FG, 2.0f, 0.5f};
    assert_int_equal(volume_norm_affine(&v, 0, &cal, &b), 0);
    for (int i = 0; i < 8000; i += 97) {
        double want = ((double)v.data[i] - mean) / sqrt(ss / n) * 0.5 + 2.0;
        assert_true(fabs((double)norm_apply(&b, v.data[i]) - want) < 1e-5);
    }
    Normalize bad = {NORMALIZE_ZSCORE_FG, 0, 0};
    sl_error_quiet(1);
    assert_int_equal(volume_norm_affine(&v, 0, &bad, &b), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
    /* a constant modality: all voxels, std floor */
    float c[5] = {3, 3, 3, 3, 3};
    Volume cv = {.dim = {5, 1, 1}, .n_mod = 1, .data = c};
    assert_true(isinf(volume_otsu_threshold(c, 5)));
    assert_int_equal(volume_norm_affine(&cv, 0, &fg, &a), 0);
    assert_true(a.shift == 3.0 && a.scale == 1e8);
    volume_free(&v);
    volume_free(&w);
}

/* NaN and infinite voxels ("no data" in scans some tools write): left
 * out of the threshold and the statistics, and read as the modality's
 * lowest finite value, so the same scan with its air replaced by NaN
 * normalises to the same numbers; a modality with no finite voxel is an
 * error, not a NaN network input. */
static void test_nonfinite_voxels(void **state)
{
    (void)state;
    TestRng r = {9};
    Volume v, w;
    assert_int_equal(volume_alloc(&v, 20, 20, 20, 1), 0);
    assert_int_equal(volume_alloc(&w, 20, 20, 20, 1), 0);
    for (int i = 0; i < 8000; i++) {
        int k = i / 400, j = i / 20 % 20, x = i % 20;
        int in = x >= 5 && x < 15 && j >= 5 && j < 15 && k >= 5 && k < 15;
        v.data[i] = in ? trng_uniform(&r, 80, 120) : 0.0f;
        /* w: the head, and half the air as NaN, +inf or -inf (the rest
         * stays 0: the lowest finite value) */
        w.data[i] = in || i % 2  ? v.data[i]
                    : i % 3 == 0 ? NAN
                    : i % 3 == 1 ? INFINITY
                                 : -INFINITY;
    }
    int64_t bad = volume_count_nonfinite(&w, -1);
    assert_int_equal(volume_count_nonfinite(&v, -1), 0);
    assert_int_equal(volume_count_nonfinite(&w, 0), bad);
    assert_true(bad > 3000 && bad < 4000);
    double tv = volume_otsu_threshold(v.data, 8000);
    double tw = volume_otsu_threshold(w.data, 8000);
    assert_true(tv > 0.0 && tv <= 80.0);
    assert_true(tw > 0.0 && tw <= 80.0);
    Normalize fg = {NORMALIZE_ZSCORE_FG, 0, 1}, z = {NORMALIZE_ZSCORE, 0, 0};
    NormAffine a, b;
    assert_int_equal(volume_norm_affine(&v, 0, &fg, &a), 0);
    assert_int_equal(volume_norm_affine(&w, 0, &fg, &b), 0);
    assert_true(a.shift == b.shift && a.scale == b.scale);
    assert_true(b.fill == 0.0);
    for (int i = 0; i < 8000; i++) {
        float x = norm_apply(&b, w.data[i]);
        assert_true(isfinite(x));
        assert_true(x == norm_apply(&a, v.data[i]));
    }
    /* plain z-score: over the finite voxels only */
    assert_int_equal(volume_norm_affine(&w, 0, &z, &b), 0);
    assert_true(isfinite(b.shift) && isfinite(b.scale) && b.scale > 0);
    /* CT: a missing voxel is the window's bottom */
    Normalize ct = {NORMALIZE_CT, -100.0f, 300.0f};
    assert_int_equal(volume_norm_affine(&w, 0, &ct, &b), 0);
    assert_true(norm_apply(&b, NAN) == -1.0f);
    /* nothing finite */
    for (int i = 0; i < 8000; i++)
        w.data[i] = NAN;
    assert_true(isinf(volume_otsu_threshold(w.data, 8000)));
    sl_error_quiet(1);
    assert_int_equal(volume_norm_affine(&w, 0, &fg, &b), ERR_FORMAT);
    assert_int_equal(volume_norm_affine(&w, 0, &z, &b), ERR_FORMAT);
    sl_error_quiet(0);
    assert_non_null(strstr(sl_error_last(), "no finite voxel"));
    sl_error_reset();
    volume_free(&v);
    volume_free(&w);
}

static void test_gaussian_and_windows(void **state)
{
    (void)state;
    int64_t p[3] = {8, 6, 5};
    float w[240];
    gaussian_map(w, p);
    float mx = 0, mn = 2;
    for (int i = 0; i < 240; i++) {
        mx = w[i] > mx ? w[i] : mx;
        mn = w[i] < mn ? w[i] : mn;
    }
    assert_true(mx == 1.0f);
    assert_true(w[(4 * 6 + 3) * 5 + 2] == 1.0f); /* centre p/2 */
    assert_true(mn > 0.0f);
    /* sigma = p/8: one step from the centre along dim 0 (sigma 1) is
     * exp(-1/2). */
    assert_true(fabsf(w[(5 * 6 + 3) * 5 + 2] - expf(-0.5f)) < 1e-6f);
    /* Symmetric about the centre where both sides exist. */
    assert_true(w[(3 * 6 + 3) * 5 + 2] == w[(5 * 6 + 3) * 5 + 2]);

    int64_t st[32];
    assert_int_equal(window_starts(10, 4, 0.5, st, 32), 4);
    int64_t w10[4] = {0, 2, 4, 6};
    assert_memory_equal(st, w10, sizeof w10);
    /* nnU-Net: 5 steps of 7/4, rounded half to even. */
    assert_int_equal(window_starts(11, 4, 0.5, st, 32), 5);
    int64_t w11[5] = {0, 2, 4, 5, 7};
    assert_memory_equal(st, w11, sizeof w11);
    assert_int_equal(window_starts(3, 8, 0.5, st, 32), 1);
    assert_int_equal(st[0], 0);
    assert_int_equal(window_starts(8, 8, 0.5, st, 32), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_volume_axes),
        cmocka_unit_test(test_normalisation),
        cmocka_unit_test(test_foreground_normalisation),
        cmocka_unit_test(test_nonfinite_voxels),
        cmocka_unit_test(test_gaussian_and_windows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
