/* The segmentation driver (runtime/segment.c) on the tiny models of
 * segmodel.h: 2D slices along each axis and order, 3D sliding windows
 * and their fusion, batching and threads; labels compared with the
 * expected map computed independently (double statistics). */
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

#include "segmodel.h"

/* Run the library on v with model ms; compare with the expected map. */
static void check_lib(const ModelSpec *ms0, int64_t nx, int64_t ny,
                      int64_t nz, int with_probs)
{
    ModelSpec ms = *ms0;
    Volume v;
    fill_volume(&v, nx, ny, nz, ms.nmod, (int)(nx * 131 + ny * 7 + nz));
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    int64_t n = volume_voxels(&v);
    int16_t *lab = malloc(sizeof(int16_t) * (size_t)n);
    float *probs = with_probs ? malloc(sizeof(float) * 2 * (size_t)n) : NULL;
    sl_error_reset();
    assert_int_equal(segment_volume(&g, &v, NULL, lab, probs), 0);
    int16_t *e = expected(&v, &ms);
    int bad = count_diff(lab, e, n);
    if (bad)
        fail_msg("dims %d axis %d order %d kind %d downup %d: %d of %lld "
                 "labels differ",
                 ms.dims, ms.axis, ms.order, ms.kind, ms.downup, bad,
                 (long long)n);
    if (probs) {
        /* p1 = softmax(x - t, t - x) = 1 / (1 + exp(-2 (x - t))); the
         * network computes it in float32: 1e-5 absolute covers the
         * rounding of the conv, the exp and (3D) the weighted fusion. */
        Volume one = v;
        one.n_mod = 1;
        double *nv = normalised(&one, &ms);
        float *want = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            want[i] =
                (float)(1.0 / (1.0 + exp(-2.0 * (nv[i] - (double)ms.t))));
        assert_allclose(probs + n, want, (size_t)n, 1e-5, 0);
        for (int64_t i = 0; i < n; i++)
            assert_true(fabsf(probs[i] + probs[n + i] - 1.0f) < 1e-5f);
        free(want);
        free(nv);
    }
    free(e);
    free(lab);
    free(probs);
    graph_free(&g);
    volume_free(&v);
}

/* ---- library runs ---- */

static void test_2d_threshold(void **state)
{
    (void)state;
    ModelSpec ms = {.dims = 2,
                    .axis = 2,
                    .nmod = 1,
                    .kind = KIND_THRESH,
                    .softmax = 1,
                    .norm = NORMALIZE_ZSCORE};
    check_lib(&ms, 13, 11, 7, 1);
    ms.softmax = 0; /* logits: same labels, probabilities via softmax */
    check_lib(&ms, 13, 11, 7, 1);
    ms.downup = 1; /* odd sizes: padded to even and cropped back */
    check_lib(&ms, 13, 11, 7, 1);
    ms.norm = NORMALIZE_CT;
    ms.lo = -15.0f;
    ms.hi = 35.0f;
    check_lib(&ms, 9, 5, 4, 0);
}

static void test_2d_axes_and_orders(void **state)
{
    (void)state;
    for (int order = 0; order < 2; order++)
        for (int axis = 0; axis < 3; axis++)
            for (int du = 0; du < 2; du++) {
                ModelSpec ms = {.dims = 2,
                                .axis = axis,
                                .nmod = 1,
                                .kind = KIND_SHIFT,
                                .downup = du,
                                .order = (VoxelOrder)order,
                                .norm = NORMALIZE_ZSCORE};
                check_lib(&ms, 9, 8, 7, 0);
            }
}

static void test_3d_sliding_window(void **state)
{
    (void)state;
    /* Larger than the patch, sizes not multiples of it nor of the step;
     * 1x1x1 threshold so every window agrees and the fused argmax is
     * exact; down/up path makes the patch the only accepted shape. */
    ModelSpec ms = {.dims = 3,
                    .nmod = 1,
                    .kind = KIND_THRESH,
                    .downup = 1,
                    .softmax = 0,
                    .patch = {8, 6, 10},
                    .norm = NORMALIZE_ZSCORE};
    check_lib(&ms, 23, 17, 13, 1);
    /* Smaller than the patch along some dims: padded. */
    check_lib(&ms, 5, 20, 7, 0);
    ms.order = ORDER_NIBABEL;
    ms.softmax = 1;
    check_lib(&ms, 21, 9, 4, 1);

    /* The shift kernel in one window (volume <= patch) pins the 3D axis
     * mapping for both orders. */
    for (int order = 0; order < 2; order++) {
        ModelSpec sh = {.dims = 3,
                        .nmod = 1,
                        .kind = KIND_SHIFT,
                        .order = (VoxelOrder)order,
                        .patch = {8, 8, 8},
                        .norm = NORMALIZE_ZSCORE};
        check_lib(&sh, 7, 6, 5, 0);
    }

    /* The slab bound: (nc + 1) * min(P0, S0) * S1 * S2 floats. */
    Volume v;
    fill_volume(&v, 23, 17, 13, 1, 5);
    ms.order = ORDER_NNUNET;
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    Segmenter *s = NULL;
    assert_int_equal(segmenter_create(&g, NULL, &s), 0);
    int16_t *lab = malloc(sizeof(int16_t) * 23 * 17 * 13);
    assert_int_equal(segmenter_run(s, &v, lab, NULL), 0);
    /* tensor order (k, j, i) = (13, 17, 23); P0 = 8 */
    assert_int_equal(segmenter_accum_bytes(s), 3 * 8 * 17 * 23 * 4);
    assert_true(segmenter_accum_bytes(s) < 2 * 23 * 17 * 13 * 4);
    /* A second case with the same grid reuses the executor. */
    assert_int_equal(segmenter_run(s, &v, lab, NULL), 0);
    assert_int_equal(segmenter_exec_count(s), 1);
    /* Modality mismatch is refused. */
    Volume two;
    fill_volume(&two, 4, 4, 4, 2, 1);
    sl_error_reset();
    sl_error_quiet(1);
    assert_int_equal(segmenter_run(s, &two, lab, NULL), ERR_SHAPE);
    sl_error_quiet(0);
    assert_non_null(strstr(sl_error_last(), "expects 1 modalities"));
    sl_error_reset();
    volume_free(&two);
    segmenter_free(s);
    free(lab);
    graph_free(&g);
    volume_free(&v);
}

/* Windows disagree near their borders (the shift kernel reads zero
 * padding there), so the fused probabilities depend on every window
 * position and Gaussian weight: compare with a double-precision
 * whole-volume reference written independently here. */
static void test_3d_fusion_reference(void **state)
{
    (void)state;
    ModelSpec ms = {.dims = 3,
                    .nmod = 1,
                    .kind = KIND_SHIFT,
                    .patch = {6, 8, 4},
                    .norm = NORMALIZE_ZSCORE};
    const int64_t nx = 11, ny = 13, nz = 9;
    Volume v;
    fill_volume(&v, nx, ny, nz, 1, 77);
    ms.t = mid_threshold(&v, &ms);
    double *xn = normalised(&v, &ms);
    int64_t n = volume_voxels(&v);
    double *num = calloc((size_t)n, sizeof(double));
    double *den = calloc((size_t)n, sizeof(double));
    /* Tensor order (k, j, i); window starts as nnU-Net places them. */
    const int64_t S[3] = {nz, ny, nx}, P[3] = {6, 8, 4};
    int64_t st[3][16];
    int ns[3];
    for (int t = 0; t < 3; t++) {
        if (S[t] <= P[t]) {
            ns[t] = 1;
            st[t][0] = 0;
            continue;
        }
        int64_t steps =
            (int64_t)ceil((double)(S[t] - P[t]) / (0.5 * (double)P[t])) + 1;
        ns[t] = (int)steps;
        for (int64_t i = 0; i < steps; i++)
            st[t][i] = (int64_t)nearbyint((double)(S[t] - P[t]) /
                                          (double)(steps - 1) * (double)i);
    }
    for (int a = 0; a < ns[0]; a++)
        for (int b = 0; b < ns[1]; b++)
            for (int c = 0; c < ns[2]; c++) {
                int64_t o[3] = {st[0][a], st[1][b], st[2][c]};
                int64_t B[3];
                for (int t = 0; t < 3; t++)
                    B[t] = S[t] < P[t] ? S[t] : P[t];
                for (int64_t x0 = 0; x0 < B[0]; x0++)
                    for (int64_t x1 = 0; x1 < B[1]; x1++)
                        for (int64_t x2 = 0; x2 < B[2]; x2++) {
                            /* out(d,h,w) = x(d+1, h, w-1) inside the
                             * window's box, else zero padding. */
                            int64_t y0 = x0 + 1, y2 = x2 - 1;
                            double val = 0.0;
                            if (y0 < B[0] && y2 >= 0)
                                val = xn[((o[0] + y0) * ny + o[1] + x1) * nx +
                                         o[2] + y2];
                            double p1 =
                                1.0 /
                                (1.0 + exp(-2.0 * (val - (double)ms.t)));
                            double e = 0.0;
                            int64_t x[3] = {x0, x1, x2};
                            for (int t = 0; t < 3; t++) {
                                double sg = (double)P[t] / 8.0;
                                double d = (double)(x[t] - P[t] / 2);
                                e += d * d / (2 * sg * sg);
                            }
                            double w = exp(-e);
                            int64_t gi = ((o[0] + x0) * ny + o[1] + x1) * nx +
                                         o[2] + x2;
                            num[gi] += w * p1;
                            den[gi] += w;
                        }
            }
    float *want = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        want[i] = (float)(num[i] / den[i]);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    int16_t *lab = malloc(sizeof(int16_t) * (size_t)n);
    float *probs = malloc(sizeof(float) * 2 * (size_t)n);
    assert_int_equal(segment_volume(&g, &v, NULL, lab, probs), 0);
    /* float32 accumulation of at most 8 overlapping windows with weights
     * >= exp(-8*3): 1e-5 absolute is ~100 ulps of a probability. */
    assert_allclose(probs + n, want, (size_t)n, 1e-5, 0);
    int mixed = 0;
    for (int64_t i = 0; i < n; i++) {
        if (want[i] > 0.01f && want[i] < 0.99f) mixed++;
        if (fabsf(want[i] - 0.5f) > 1e-4f)
            assert_int_equal(lab[i], want[i] > 0.5f);
    }
    assert_true(mixed > 0); /* the windows really disagreed somewhere */
    free(lab);
    free(probs);
    free(want);
    free(num);
    free(den);
    free(xn);
    graph_free(&g);
    volume_free(&v);
}

static void test_batching_and_threads_agree(void **state)
{
    (void)state;
    /* Shift model with down/up path on odd sizes: labels must not depend
     * on the slice batch nor on the thread count. */
    ModelSpec ms = {.dims = 2,
                    .axis = 1,
                    .nmod = 1,
                    .kind = KIND_SHIFT,
                    .downup = 1,
                    .norm = NORMALIZE_ZSCORE};
    Volume v;
    fill_volume(&v, 15, 9, 11, 1, 3);
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    int64_t n = volume_voxels(&v);
    int16_t *ref = malloc(sizeof(int16_t) * (size_t)n);
    int16_t *lab = malloc(sizeof(int16_t) * (size_t)n);
    SegmentOptions o = {.n_threads = 1, .batch = 1};
    assert_int_equal(segment_volume(&g, &v, &o, ref, NULL), 0);
    /* 9 slices: 9 | 2 leaves a short batch; 0: chosen by slice size */
    int batches[4] = {2, 4, 9, 0};
    for (int b = 0; b < 4; b++)
        for (int t = 1; t <= 2; t++) {
            SegmentOptions ob = {.n_threads = t, .batch = batches[b]};
            assert_int_equal(segment_volume(&g, &v, &ob, lab, NULL), 0);
            assert_int_equal(count_diff(lab, ref, n), 0);
        }
    /* One slice per run on several threads: the slices run side by side
     * on single-threaded executors (2, 3 and 4 lanes over 9 slices: the
     * last group short or full), same labels; a second volume reuses the
     * lanes */
    for (int t = 2; t <= 4; t++) {
        SegmentOptions ol = {.n_threads = t, .batch = 1};
        Segmenter *s = NULL;
        assert_int_equal(segmenter_create(&g, &ol, &s), 0);
        for (int rep = 0; rep < 2; rep++) {
            memset(lab, 0xff, sizeof(int16_t) * (size_t)n);
            assert_int_equal(segmenter_run(s, &v, lab, NULL), 0);
            assert_int_equal(count_diff(lab, ref, n), 0);
        }
        /* the one-slice executor and t lanes */
        assert_int_equal(segmenter_exec_count(s), 1 + t);
        segmenter_free(s);
    }
    int16_t *e = expected(&v, &ms);
    assert_int_equal(count_diff(ref, e, n), 0);
    free(e);
    free(ref);
    free(lab);
    graph_free(&g);
    volume_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_2d_threshold),
        cmocka_unit_test(test_2d_axes_and_orders),
        cmocka_unit_test(test_3d_sliding_window),
        cmocka_unit_test(test_3d_fusion_reference),
        cmocka_unit_test(test_batching_and_threads_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
