/* Training batches: sampler (foreground oversampling, determinism,
 * shapes), augmentation (flips, rotation/scale, alignment, intensity)
 * and the prefetch thread, on datasets built in memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compressor/data/augment.h"
#include "compressor/data/dataset.h"
#include "compressor/data/prefetch.h"
#include "compressor/data/sampler.h"
#include "runtime/common.h"
#include "testutil.h"

#define PI_2 1.57079632679489661923

/* ------------------------------------------- hand-built in-memory data */

/* A loaded Dataset built in memory: one modality, 2 classes, n cases of
 * size S (tensor order) with image = x-ramp and a small foreground cube
 * (class 1) of side `fg` at a case-dependent place. */
static void mem_dataset(Dataset *ds, int n, const int64_t S[3], int dims,
                        int fg)
{
    memset(ds, 0, sizeof *ds);
    ds->dir = sl_strdup("memory");
    ds->n_modalities = 1;
    ds->n_classes = 2;
    ds->n_cases = n;
    ds->layout.dims = dims;
    ds->cases = sl_calloc((size_t)n, sizeof *ds->cases);
    TestRng r = {5};
    int64_t nv = S[0] * S[1] * S[2];
    for (int ci = 0; ci < n; ci++) {
        DataCase *c = &ds->cases[ci];
        memcpy(c->S, S, sizeof c->S);
        c->n_classes = 2;
        c->image = sl_alloc(sizeof(float) * (size_t)nv);
        c->label = sl_calloc((size_t)nv, 1);
        trng_fill(&r, c->image, (size_t)nv, -1.0f, 1.0f);
        int64_t o[3];
        for (int t = 0; t < 3; t++) {
            int64_t side = S[t] < fg ? S[t] : fg;
            o[t] = (int64_t)(trng_next(&r) % (uint64_t)(S[t] - side + 1));
        }
        int64_t cnt = 0;
        for (int64_t a = 0; a < S[0]; a++)
            for (int64_t b = 0; b < S[1]; b++)
                for (int64_t d = 0; d < S[2]; d++) {
                    int in = a >= o[0] && a < o[0] + fg && b >= o[1] &&
                             b < o[1] + fg && d >= o[2] && d < o[2] + fg;
                    c->label[(a * S[1] + b) * S[2] + d] = (uint8_t)in;
                    cnt += in;
                }
        c->fg_start = sl_calloc(3, sizeof(int64_t));
        c->fg_loc = sl_alloc(sizeof(int64_t) * (size_t)(cnt + 1));
        c->fg_start[2] = cnt;
        int64_t q = 0;
        for (int64_t v = 0; v < nv; v++)
            if (c->label[v]) c->fg_loc[q++] = v;
    }
}

static void mem_dataset_free(Dataset *ds)
{
    for (int i = 0; i < ds->n_cases; i++) {
        sl_free(ds->cases[i].image);
        sl_free(ds->cases[i].label);
        sl_free(ds->cases[i].fg_loc);
        sl_free(ds->cases[i].fg_start);
    }
    sl_free(ds->cases);
    sl_free(ds->dir);
}

static int has_fg(const uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (y[i]) return 1;
    return 0;
}

static void test_sampler_shapes_determinism(void **state)
{
    (void)state;
    Dataset ds;
    int64_t S[3] = {20, 40, 36};
    mem_dataset(&ds, 3, S, 3, 4);
    int cases[3] = {0, 1, 2};
    SamplerOptions o;
    sampler_defaults(&o, 3);
    o.batch = 3;
    o.patch[0] = 16;
    o.patch[1] = 24;
    o.patch[2] = 48; /* larger than the case: padding */
    o.seed = 99;
    o.aug.p_rotate = o.aug.p_scale = 0.5;
    Sampler s;
    assert_int_equal(sampler_init(&s, &ds, cases, 3, &o), 0);
    Batch a, b;
    assert_int_equal(batch_alloc(&a, &s), 0);
    assert_int_equal(batch_alloc(&b, &s), 0);
    Shape sh;
    batch_input_shape(&a, &sh);
    assert_int_equal(sh.ndim, 5);
    assert_int_equal(sh.d[0], 3);
    assert_int_equal(sh.d[1], 1);
    assert_int_equal(sh.d[4], 48);
    size_t nx = (size_t)3 * 16 * 24 * 48;
    sampler_fill(&s, 5, &a);
    sampler_fill(&s, 6, &b);
    assert_int_equal(a.k, 5);
    assert_true(memcmp(a.x, b.x, nx * sizeof(float)) != 0);
    sampler_fill(&s, 5, &b); /* again, after another batch: same bytes */
    assert_memory_equal(a.x, b.x, nx * sizeof(float));
    assert_memory_equal(a.y, b.y, nx);
    for (size_t i = 0; i < nx; i++)
        assert_true(a.y[i] <= 1);

    /* Prefetch gives exactly the batches sampler_fill gives, in order. */
    Prefetcher *pf;
    assert_int_equal(prefetch_start(&pf, &s, 3), 0);
    for (int64_t k = 3; k < 9; k++) {
        const Batch *got;
        assert_int_equal(prefetch_next(pf, &got), 0);
        assert_int_equal(got->k, k);
        sampler_fill(&s, k, &b);
        assert_memory_equal(got->x, b.x, nx * sizeof(float));
        assert_memory_equal(got->y, b.y, nx);
        assert_memory_equal(got->case_idx, b.case_idx, sizeof(int) * 3);
    }
    assert_true(prefetch_wait_seconds(pf) >= 0.0);
    prefetch_stop(pf);
    /* Stopping right after the start (producer mid-batch) is clean. */
    assert_int_equal(prefetch_start(&pf, &s, 0), 0);
    prefetch_stop(pf);

    batch_free(&a);
    batch_free(&b);
    sampler_free(&s);

    /* Bad options. */
    sl_error_quiet(1);
    o.batch = 0;
    sl_error_reset();
    assert_int_equal(sampler_init(&s, &ds, cases, 3, &o), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--batch"));
    o.batch = 2;
    o.fg_rate = 1.5;
    assert_int_equal(sampler_init(&s, &ds, cases, 3, &o), ERR_ARG);
    o.fg_rate = 0.33;
    assert_int_equal(sampler_init(&s, &ds, cases, 0, &o), ERR_ARG);
    o.patch[0] = 0;
    assert_int_equal(sampler_init(&s, &ds, cases, 3, &o), ERR_ARG);
    sl_error_quiet(0);
    mem_dataset_free(&ds);
}

/* Field-of-view augmentation on 2D slices of 6x30x26 cases whose voxel
 * values are their own flat index + 1 (exact in float), with air -7:
 *  - a batch's patch is fit[W] for its window W in [0.7, 1.4] x the
 *    slice, the same for every sample, and about p of the batches get
 *    one (p = 0.5 over 400 batches: sd 0.025, tolerance 4 sd);
 *  - inside the window: the slice cut where larger (one contiguous block
 *    of one slice) and air around it where smaller, exactly
 *    W1*W2 - n1*n2 air voxels (n = min(S, W)); outside it zeros; labels
 *    follow the image voxel for voxel;
 *  - batches without another field of view are byte-identical to those
 *    of a sampler with p = 0 (the decision has its own Rng stream);
 *  - 3D models and a fit table too short are refused. */
static void test_sampler_fov(void **state)
{
    (void)state;
    Dataset ds;
    int64_t S[3] = {6, 30, 26};
    mem_dataset(&ds, 2, S, 2, 5);
    int64_t nv = S[0] * S[1] * S[2];
    for (int ci = 0; ci < 2; ci++) {
        DataCase *c = &ds.cases[ci];
        for (int64_t v = 0; v < nv; v++)
            c->image[v] = (float)(v + 1);
        c->air = sl_alloc(sizeof(float));
        c->air[0] = -7.0f;
    }
    int cases[2] = {0, 1};
    /* sizes the "network" accepts: multiples of 8 */
    int64_t fit1[64], fit2[64];
    for (int64_t n = 0; n < 64; n++)
        fit1[n] = fit2[n] = n < 8 ? 8 : (n + 7) / 8 * 8;
    SamplerOptions o, o0;
    sampler_defaults(&o, 2);
    augment_off(&o.aug);
    o.batch = 3;
    o.patch[1] = 32;
    o.patch[2] = 32;
    o.seed = 11;
    o0 = o;
    o.fov.p = 0.5;
    o.fov.lo = FOV_DEFAULT_LO;
    o.fov.hi = FOV_DEFAULT_HI;
    o.fov.fit[1] = fit1;
    o.fov.fit[2] = fit2;
    o.fov.n_fit[1] = o.fov.n_fit[2] = 64;
    Sampler s, s0;
    Batch b, b0;
    assert_int_equal(sampler_init(&s, &ds, cases, 2, &o), 0);
    assert_int_equal(sampler_init(&s0, &ds, cases, 2, &o0), 0);
    assert_int_equal(batch_alloc(&b, &s), 0);
    assert_int_equal(batch_alloc(&b0, &s0), 0);
    int n_fov = 0, n_crop = 0, n_air = 0;
    for (int64_t k = 0; k < 400; k++) {
        sampler_fill(&s, k, &b);
        sampler_fill(&s0, k, &b0);
        int64_t pv = b.P[1] * b.P[2];
        if (b.P[1] == 32 && b.P[2] == 32 &&
            !memcmp(b.x, b0.x, sizeof(float) * (size_t)(3 * pv)) &&
            !memcmp(b.y, b0.y, (size_t)(3 * pv)))
            continue; /* not a field-of-view batch (or one as large) */
        n_fov++;
        assert_int_equal(b.P[1] % 8, 0);
        assert_int_equal(b.P[2] % 8, 0);
        for (int i = 0; i < 3; i++) {
            const float *x = b.x + i * pv;
            const uint8_t *y = b.y + i * pv;
            const DataCase *c = &ds.cases[b.case_idx[i]];
            /* the window: bounding box of the non-zero voxels */
            int64_t r0 = pv, r1 = -1, q0 = pv, q1 = -1, air = 0;
            for (int64_t a = 0; a < b.P[1]; a++)
                for (int64_t d = 0; d < b.P[2]; d++) {
                    float v = x[a * b.P[2] + d];
                    if (v == 0.0f) {
                        assert_int_equal(y[a * b.P[2] + d], 0);
                        continue;
                    }
                    r0 = a < r0 ? a : r0;
                    r1 = a > r1 ? a : r1;
                    q0 = d < q0 ? d : q0;
                    q1 = d > q1 ? d : q1;
                    air += v == -7.0f;
                }
            int64_t W1 = r1 - r0 + 1, W2 = q1 - q0 + 1;
            assert_true(W1 >= 20 && W1 <= 42 && W2 >= 17 && W2 <= 37);
            assert_true(b.P[1] - W1 < 8 && b.P[2] - W2 < 8);
            int64_t n1 = W1 < 30 ? W1 : 30, n2 = W2 < 26 ? W2 : 26;
            assert_int_equal(air, W1 * W2 - n1 * n2);
            n_crop += W1 < 30 || W2 < 26;
            n_air += W1 > 30 || W2 > 26;
            /* the slice block: its first voxel names slice and corner */
            int64_t f = -1;
            for (int64_t a = r0; a <= r1 && f < 0; a++)
                for (int64_t d = q0; d <= q1 && f < 0; d++)
                    if (x[a * b.P[2] + d] != -7.0f) f = a * b.P[2] + d;
            int64_t v0 = (int64_t)x[f] - 1, fa = f / b.P[2], fd = f % b.P[2];
            for (int64_t a = 0; a < n1; a++)
                for (int64_t d = 0; d < n2; d++) {
                    int64_t at = (fa + a) * b.P[2] + fd + d;
                    int64_t v = v0 + a * S[2] + d;
                    assert_true(x[at] == (float)(v + 1));
                    assert_int_equal(y[at], c->label[v]);
                }
        }
    }
    assert_true(fabs(n_fov / 400.0 - 0.5) < 0.1);
    assert_true(n_crop > 0 && n_air > 0);
    batch_free(&b);
    batch_free(&b0);
    sampler_free(&s);
    sampler_free(&s0);

    sl_error_quiet(1);
    o.fov.n_fit[2] = 30; /* windows up to 1.4 * 26 = 36 not covered */
    assert_int_equal(sampler_init(&s, &ds, cases, 2, &o), ERR_ARG);
    o.fov.n_fit[2] = 64;
    o.fov.lo = 2.0; /* lo > hi */
    assert_int_equal(sampler_init(&s, &ds, cases, 2, &o), ERR_ARG);
    o.fov.lo = FOV_DEFAULT_LO;
    ds.layout.dims = 3;
    sampler_defaults(&o0, 3);
    o0.patch[0] = 4;
    o0.patch[1] = o0.patch[2] = 16;
    o0.fov = o.fov;
    sl_error_reset();
    assert_int_equal(sampler_init(&s, &ds, cases, 2, &o0), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "2D"));
    sl_error_quiet(0);
    for (int ci = 0; ci < 2; ci++)
        sl_free(ds.cases[ci].air);
    mem_dataset_free(&ds);
}

/* FNV-1a over bytes: a fingerprint of a run of batches. */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* Cases of 6x30x26 whose voxel values are their own flat index + 1
 * (exact in float), air -7, a 5-voxel foreground cube in each. */
static void mem_dataset_indexed(Dataset *ds, int n)
{
    int64_t S[3] = {6, 30, 26};
    mem_dataset(ds, n, S, 2, 5);
    int64_t nv = S[0] * S[1] * S[2];
    for (int ci = 0; ci < n; ci++) {
        DataCase *c = &ds->cases[ci];
        for (int64_t v = 0; v < nv; v++)
            c->image[v] = (float)(v + 1);
        c->air = sl_alloc(sizeof(float));
        c->air[0] = -7.0f;
    }
}

static void mem_dataset_indexed_free(Dataset *ds)
{
    for (int ci = 0; ci < ds->n_cases; ci++)
        sl_free(ds->cases[ci].air);
    mem_dataset_free(ds);
}

/* Sizes the "network" accepts in the field-of-view tests: multiples
 * of 8. */
static void fit8(int64_t *fit, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        fit[i] = i < 8 ? 8 : (i + 7) / 8 * 8;
}

/* --fov-aug alone keeps its batches: the fingerprint of 60 batches of
 * the field-of-view configuration of test_sampler_fov, recorded with
 * the sampler before the crop augmentation existed (host byte order:
 * the bytes of floats and ints as this machine stores them). */
static void test_sampler_fov_unchanged(void **state)
{
    (void)state;
    Dataset ds;
    mem_dataset_indexed(&ds, 2);
    int cases[2] = {0, 1};
    int64_t fit[64];
    fit8(fit, 64);
    SamplerOptions o;
    sampler_defaults(&o, 2);
    augment_off(&o.aug);
    o.batch = 3;
    o.patch[1] = o.patch[2] = 32;
    o.seed = 11;
    o.fov.p = 0.5;
    o.fov.lo = FOV_DEFAULT_LO;
    o.fov.hi = FOV_DEFAULT_HI;
    o.fov.fit[1] = o.fov.fit[2] = fit;
    o.fov.n_fit[1] = o.fov.n_fit[2] = 64;
    Sampler s;
    Batch b;
    assert_int_equal(sampler_init(&s, &ds, cases, 2, &o), 0);
    assert_int_equal(batch_alloc(&b, &s), 0);
    uint64_t h = 14695981039346656037ull;
    for (int64_t k = 0; k < 60; k++) {
        sampler_fill(&s, k, &b);
        int64_t pv = b.P[1] * b.P[2];
        h = fnv1a(h, b.P, sizeof b.P);
        h = fnv1a(h, b.x, sizeof(float) * (size_t)(3 * pv));
        h = fnv1a(h, b.y, (size_t)(3 * pv));
        h = fnv1a(h, b.case_idx, sizeof(int) * 3);
    }
    assert_true(h == 0xf55febbc9846ccbfull);
    batch_free(&b);
    sampler_free(&s);
    mem_dataset_indexed_free(&ds);
}

/* Crop augmentation on 4 cases of 6x30x26 (voxel value = flat index
 * + 1, air -7, a 5-voxel cube of class 1 at a case-dependent place),
 * --fov-aug 0.25 --crop-aug 0.4, margin 12 (the window is at most
 * 5 + 24 = 29 voxels, so it always cuts the 30-row slice):
 *  - the case box that dataset loading computes (data_case_relabel)
 *    equals a brute-force box of the labels;
 *  - a crop batch's window (the non-zero region of each sample) has one
 *    size for the batch; sample 0's window is its case box widened by
 *    margins in 0..12 on each side; the others' are centred on their own
 *    box (floor of half the difference); every window voxel is the
 *    slice's voxel there (one slice, labels with it) or air -7 with label
 *    0 where the window runs past the slice; zeros outside the window;
 *  - about 0.4 of 600 batches are crop batches (sd 0.02, tolerance 4 sd)
 *    and about 0.25 field of view; both margin bounds 0 and 12 occur and
 *    windows run past the slice;
 *  - field-of-view and whole-slice batches are byte-identical to those
 *    of a sampler with --fov-aug 0.25 alone (same uniform draw);
 *  - p + crop > 1 and 3D models are refused. */
static void test_sampler_crop(void **state)
{
    (void)state;
    Dataset ds;
    mem_dataset_indexed(&ds, 4);
    const int64_t *S = ds.cases[0].S;
    int M = CROP_DEFAULT_MARGIN;
    int64_t lo[4][3], hi[4][3];
    for (int ci = 0; ci < 4; ci++) {
        DataCase *c = &ds.cases[ci];
        assert_int_equal(data_case_relabel(c), 0);
        for (int t = 0; t < 3; t++) {
            lo[ci][t] = S[t];
            hi[ci][t] = 0;
        }
        for (int64_t v = 0; v < S[0] * S[1] * S[2]; v++) {
            if (!c->label[v]) continue;
            int64_t p[3] = {v / (S[1] * S[2]), v / S[2] % S[1], v % S[2]};
            for (int t = 0; t < 3; t++) {
                lo[ci][t] = p[t] < lo[ci][t] ? p[t] : lo[ci][t];
                hi[ci][t] = p[t] + 1 > hi[ci][t] ? p[t] + 1 : hi[ci][t];
            }
        }
        for (int t = 0; t < 3; t++) {
            assert_int_equal(c->box_lo[t], lo[ci][t]);
            assert_int_equal(c->box_hi[t], hi[ci][t]);
        }
    }
    int cases[4] = {0, 1, 2, 3};
    int64_t fit[80];
    fit8(fit, 80);
    SamplerOptions o, of;
    sampler_defaults(&o, 2);
    augment_off(&o.aug);
    o.batch = 3;
    o.patch[1] = o.patch[2] = 32;
    o.seed = 5;
    o.fov.p = 0.25;
    o.fov.lo = FOV_DEFAULT_LO;
    o.fov.hi = FOV_DEFAULT_HI;
    o.fov.fit[1] = o.fov.fit[2] = fit;
    o.fov.n_fit[1] = o.fov.n_fit[2] = 80;
    of = o;
    o.fov.crop = 0.4;
    o.fov.margin = M;
    Sampler s, sf;
    Batch b, bf;
    assert_int_equal(sampler_init(&s, &ds, cases, 4, &o), 0);
    assert_int_equal(sampler_init(&sf, &ds, cases, 4, &of), 0);
    assert_int_equal(batch_alloc(&b, &s), 0);
    assert_int_equal(batch_alloc(&bf, &sf), 0);
    int nb = 600, n_crop = 0, n_fov = 0, m_zero = 0, m_max = 0, past = 0;
    for (int64_t k = 0; k < nb; k++) {
        sampler_fill(&s, k, &b);
        sampler_fill(&sf, k, &bf);
        int64_t pv = b.P[1] * b.P[2];
        if (b.view != VIEW_CROP) {
            n_fov += b.view == VIEW_FOV;
            assert_int_equal(b.view, bf.view);
            assert_memory_equal(b.P, bf.P, sizeof b.P);
            assert_memory_equal(b.x, bf.x, sizeof(float) * (size_t)(3 * pv));
            assert_memory_equal(b.y, bf.y, (size_t)(3 * pv));
            continue;
        }
        n_crop++;
        int64_t W1 = -1, W2 = -1;
        for (int i = 0; i < 3; i++) {
            const float *x = b.x + i * pv;
            const uint8_t *y = b.y + i * pv;
            int ci = b.case_idx[i];
            const DataCase *c = &ds.cases[ci];
            int64_t r0 = pv, r1 = -1, q0 = pv, q1 = -1, f = -1;
            for (int64_t a = 0; a < b.P[1]; a++)
                for (int64_t d = 0; d < b.P[2]; d++) {
                    float v = x[a * b.P[2] + d];
                    if (v == 0.0f) {
                        assert_int_equal(y[a * b.P[2] + d], 0);
                        continue;
                    }
                    r0 = a < r0 ? a : r0;
                    r1 = a > r1 ? a : r1;
                    q0 = d < q0 ? d : q0;
                    q1 = d > q1 ? d : q1;
                    if (v != -7.0f && f < 0) f = a * b.P[2] + d;
                }
            if (i == 0) {
                W1 = r1 - r0 + 1;
                W2 = q1 - q0 + 1;
            }
            assert_int_equal(r1 - r0 + 1, W1);
            assert_int_equal(q1 - q0 + 1, W2);
            assert_true(b.P[1] - W1 < 8 && b.P[2] - W2 < 8);
            /* window origin in slice coordinates, from one slice voxel */
            assert_true(f >= 0);
            int64_t v0 = (int64_t)x[f] - 1, k0 = v0 / (S[1] * S[2]);
            int64_t org1 = v0 / S[2] % S[1] - (f / b.P[2] - r0);
            int64_t org2 = v0 % S[2] - (f % b.P[2] - q0);
            int64_t e1 = hi[ci][1] - lo[ci][1], e2 = hi[ci][2] - lo[ci][2];
            if (i == 0) {
                int64_t m[4] = {
                    lo[ci][1] - org1, W1 - e1 - (lo[ci][1] - org1),
                    lo[ci][2] - org2, W2 - e2 - (lo[ci][2] - org2)};
                for (int j = 0; j < 4; j++) {
                    assert_true(m[j] >= 0 && m[j] <= M);
                    m_zero += m[j] == 0;
                    m_max += m[j] == M;
                }
            } else {
                int64_t d1 = e1 - W1, d2 = e2 - W2;
                assert_int_equal(org1, lo[ci][1] + (int64_t)floor(d1 / 2.0));
                assert_int_equal(org2, lo[ci][2] + (int64_t)floor(d2 / 2.0));
            }
            for (int64_t a = 0; a < W1; a++)
                for (int64_t d = 0; d < W2; d++) {
                    int64_t at = (r0 + a) * b.P[2] + q0 + d;
                    int64_t sa = org1 + a, sd = org2 + d;
                    if (sa < 0 || sa >= S[1] || sd < 0 || sd >= S[2]) {
                        past++;
                        assert_true(x[at] == -7.0f);
                        assert_int_equal(y[at], 0);
                        continue;
                    }
                    int64_t v = (k0 * S[1] + sa) * S[2] + sd;
                    assert_true(x[at] == (float)(v + 1));
                    assert_int_equal(y[at], c->label[v]);
                }
        }
    }
    assert_true(fabs(n_crop / (double)nb - 0.4) < 0.08);
    assert_true(fabs(n_fov / (double)nb - 0.25) < 0.08);
    assert_true(m_zero > 0 && m_max > 0 && past > 0);
    batch_free(&b);
    batch_free(&bf);
    sampler_free(&s);
    sampler_free(&sf);

    sl_error_quiet(1);
    o.fov.crop = 0.8; /* 0.25 + 0.8 > 1 */
    sl_error_reset();
    assert_int_equal(sampler_init(&s, &ds, cases, 4, &o), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--crop-aug"));
    o.fov.crop = 0.75; /* exactly 1: accepted */
    assert_int_equal(sampler_init(&s, &ds, cases, 4, &o), 0);
    sampler_free(&s);
    o.fov.p = 0;
    o.fov.crop = 0.5;
    o.fov.n_fit[1] = 40; /* crop windows up to 30 + 24 = 54 not covered */
    assert_int_equal(sampler_init(&s, &ds, cases, 4, &o), ERR_ARG);
    o.fov.n_fit[1] = 80;
    ds.layout.dims = 3;
    SamplerOptions o3;
    sampler_defaults(&o3, 3);
    o3.patch[0] = 4;
    o3.patch[1] = o3.patch[2] = 16;
    o3.fov = o.fov;
    sl_error_reset();
    assert_int_equal(sampler_init(&s, &ds, cases, 4, &o3), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "2D"));
    sl_error_quiet(0);
    mem_dataset_indexed_free(&ds);
}

/* train_baseline.py --crop-aug cuts the windows this sampler cuts:
 * tools/check_crop_aug.py checks its windows against the same rule
 * (exact content, margins, centring, fraction; --crop-aug 0 draws as
 * before) and exits non-zero on the first mismatch. */
static void test_train_baseline_crop(void **state)
{
    (void)state;
    char err[256];
    if (run_cmd("/usr/bin/python3 -c 'import numpy'", err, sizeof err)) {
        printf("skipped: /usr/bin/python3 with numpy missing\n");
        skip();
    }
    int rc = run_cmd("/usr/bin/python3 tools/check_crop_aug.py >/dev/null",
                     err, sizeof err);
    if (rc) printf("%s", err);
    assert_int_equal(rc, 0);
}

/* Foreground oversampling: a 3x3 foreground square in 2D slices of a
 * 30x64x64 case hardly ever appears by chance in a 32x32 patch (only 3 of
 * 30 slices hold any); forced samples must contain it and their count is
 * exactly ceil(n * rate). */
static void test_sampler_foreground(void **state)
{
    (void)state;
    Dataset ds;
    int64_t S[3] = {30, 64, 64};
    mem_dataset(&ds, 2, S, 2, 3);
    int cases[2] = {0, 1};
    SamplerOptions o;
    sampler_defaults(&o, 2);
    o.batch = 4;
    o.patch[0] = 1;
    o.patch[1] = 32;
    o.patch[2] = 32;
    o.seed = 3;
    for (int aug = 0; aug < 2; aug++) {
        if (!aug)
            augment_off(&o.aug);
        else
            augment_defaults(&o.aug, 2);
        Sampler s;
        Batch b;
        assert_int_equal(sampler_init(&s, &ds, cases, 2, &o), 0);
        assert_int_equal(batch_alloc(&b, &s), 0);
        int n = 0, forced = 0, fg = 0, forced_fg = 0;
        int64_t pv = 32 * 32;
        for (int64_t k = 0; k < 75; k++) {
            sampler_fill(&s, k, &b);
            for (int i = 0; i < 4; i++) {
                int h = has_fg(b.y + i * pv, pv);
                n++;
                forced += b.forced[i];
                fg += h;
                forced_fg += h && b.forced[i];
            }
        }
        assert_int_equal(forced, (int)ceil(n * 0.33));
        assert_true((double)fg / n >= 0.33);
        /* Without augmentation the chosen voxel is always inside; with
         * rotations it can leave the patch only when the clamped centre
         * is off the voxel, which a 3x3 structure in a 64 wide case
         * allows rarely. */
        if (!aug)
            assert_int_equal(forced_fg, forced);
        else
            assert_true(forced_fg >= forced * 9 / 10);
        batch_free(&b);
        sampler_free(&s);
    }
    mem_dataset_free(&ds);
}

/* Cost of one 2D batch of 4 at 256x256 with default augmentation (the
 * issue asks for "a few ms"; printed for the report, bounded loosely so
 * a slow sanitizer build passes). */
static void test_sampler_speed(void **state)
{
    (void)state;
    Dataset ds;
    int64_t S[3] = {24, 256, 256};
    mem_dataset(&ds, 2, S, 2, 30);
    int cases[2] = {0, 1};
    SamplerOptions o;
    sampler_defaults(&o, 2);
    o.batch = 4;
    o.patch[1] = o.patch[2] = 256;
    Sampler s;
    Batch b;
    assert_int_equal(sampler_init(&s, &ds, cases, 2, &o), 0);
    assert_int_equal(batch_alloc(&b, &s), 0);
    int nb = 40;
    double t0 = sl_now();
    for (int k = 0; k < nb; k++)
        sampler_fill(&s, k, &b);
    double ms = (sl_now() - t0) * 1e3 / nb;
    /* Worst case: every sample rotated (general interpolation path). */
    o.aug.p_rotate = 1.0;
    sampler_free(&s);
    assert_int_equal(sampler_init(&s, &ds, cases, 2, &o), 0);
    t0 = sl_now();
    for (int k = 0; k < nb; k++)
        sampler_fill(&s, k, &b);
    double ms_rot = (sl_now() - t0) * 1e3 / nb;
    printf("sampler: 2D batch 4x1x256x256, default augmentation %.2f ms, "
           "all rotated %.2f ms\n",
           ms, ms_rot);
    assert_true(ms < 500.0);
    /* Overlap: with a simulated 30 ms training step the consumer waits
     * only for the first batch (reported, not asserted: timing on a
     * loaded machine is not a test). */
    Prefetcher *pf;
    assert_int_equal(prefetch_start(&pf, &s, 0), 0);
    int steps = 10;
    t0 = sl_now();
    for (int k = 0; k < steps; k++) {
        const Batch *got;
        assert_int_equal(prefetch_next(pf, &got), 0);
        assert_int_equal(got->k, k);
        struct timespec ts = {0, 30 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("prefetch: %d steps of 30 ms took %.1f ms, consumer waited "
           "%.2f ms in total\n",
           steps, (sl_now() - t0) * 1e3, prefetch_wait_seconds(pf) * 1e3);
    prefetch_stop(pf);
    batch_free(&b);
    sampler_free(&s);
    mem_dataset_free(&ds);
}

/* Failing each allocation in turn: sampler, batch and prefetcher set-up
 * fail with ERR_NOMEM and leave nothing behind (ASan checks leaks). */
static void test_sampler_nomem(void **state)
{
    (void)state;
    Dataset ds;
    int64_t S[3] = {4, 16, 16};
    mem_dataset(&ds, 1, S, 2, 3);
    int cases[1] = {0};
    SamplerOptions o;
    sampler_defaults(&o, 2);
    o.patch[1] = o.patch[2] = 16;
    int rc = ERR_NOMEM;
    long n;
    sl_error_quiet(1);
    for (n = 0; rc != 0 && n < 100; n++) {
        Sampler s;
        Batch b;
        Prefetcher *pf = NULL;
        sl_error_reset();
        sl_alloc_fail_after(n);
        rc = sampler_init(&s, &ds, cases, 1, &o);
        if (!rc) {
            rc = batch_alloc(&b, &s);
            if (!rc) {
                rc = prefetch_start(&pf, &s, 0);
                if (!rc) prefetch_stop(pf);
                batch_free(&b);
            }
            sampler_free(&s);
        }
        sl_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == ERR_NOMEM);
    }
    sl_error_quiet(0);
    assert_int_equal(rc, 0);
    assert_true(n > 5);
    mem_dataset_free(&ds);
}

/* ------------------------------------------------------- augmentation */

static void test_augment_flips_identity(void **state)
{
    (void)state;
    int64_t S[3] = {5, 7, 6}, P[3] = {5, 7, 6};
    int C = 2;
    int64_t nv = S[0] * S[1] * S[2];
    float *img = malloc(sizeof(float) * (size_t)(C * nv));
    uint8_t *lab = malloc((size_t)nv);
    float *x = malloc(sizeof(float) * (size_t)(C * nv));
    uint8_t *y = malloc((size_t)nv);
    TestRng r = {11};
    trng_fill(&r, img, (size_t)(C * nv), -3.0f, 3.0f);
    for (int64_t v = 0; v < nv; v++)
        lab[v] = (uint8_t)(trng_next(&r) % 3);
    double c[3];
    for (int t = 0; t < 3; t++)
        c[t] = 0.5 * (double)(S[t] - 1);
    for (int mask = 0; mask < 8; mask++) {
        AugXform t;
        augment_identity(&t);
        for (int a = 0; a < 3; a++)
            if (mask >> a & 1) t.A[a][a] = -1.0;
        augment_resample(x, y, img, lab, C, S, P, c, &t);
        for (int64_t a = 0; a < S[0]; a++)
            for (int64_t b = 0; b < S[1]; b++)
                for (int64_t d = 0; d < S[2]; d++) {
                    int64_t sa = mask & 1 ? S[0] - 1 - a : a;
                    int64_t sb = mask & 2 ? S[1] - 1 - b : b;
                    int64_t sd = mask & 4 ? S[2] - 1 - d : d;
                    int64_t o = (a * S[1] + b) * S[2] + d;
                    int64_t s = (sa * S[1] + sb) * S[2] + sd;
                    assert_int_equal(y[o], lab[s]);
                    for (int ch = 0; ch < C; ch++)
                        assert_true(x[ch * nv + o] == img[ch * nv + s]);
                }
    }
    /* Rotation by 0 and scale 1 drawn through the options: identity.
     * Likewise a 1e-12 rad rotation on the interpolating path: weights
     * of 1e-12 change values by far less than 1e-6. */
    AugmentOptions o;
    augment_off(&o);
    o.enabled = 1;
    o.p_rotate = o.p_scale = 1.0;
    o.max_angle = 0.0;
    o.scale_lo = o.scale_hi = 1.0;
    for (int pass = 0; pass < 2; pass++) {
        Rng rr;
        rng_seed(&rr, 1, 2, 3);
        AugXform t;
        if (pass) o.max_angle = 1e-12;
        augment_draw_xform(&o, 3, &rr, &t);
        augment_resample(x, y, img, lab, C, S, P, c, &t);
        assert_memory_equal(y, lab, (size_t)nv);
        if (!pass)
            assert_memory_equal(x, img, sizeof(float) * (size_t)(C * nv));
        else
            assert_allclose(x, img, (size_t)(C * nv), 1e-6, 0);
    }
    free(img);
    free(lab);
    free(x);
    free(y);
}

/* 2D rotation by 90 degrees (general path: cos(pi/2) is 6e-17, not 0)
 * equals the exact rot90 permutation within 1e-5; the slice index is
 * kept. */
static void test_augment_rot90(void **state)
{
    (void)state;
    int64_t S[3] = {3, 9, 9}, P[3] = {1, 9, 9};
    int64_t nv = S[0] * S[1] * S[2];
    float *img = malloc(sizeof(float) * (size_t)nv);
    uint8_t *lab = malloc((size_t)nv);
    float x[81];
    uint8_t y[81];
    TestRng r = {12};
    trng_fill(&r, img, (size_t)nv, 0.0f, 1.0f);
    for (int64_t v = 0; v < nv; v++)
        lab[v] = (uint8_t)(trng_next(&r) % 4);
    AugXform t;
    augment_identity(&t);
    t.A[1][1] = cos(PI_2);
    t.A[1][2] = -sin(PI_2);
    t.A[2][1] = sin(PI_2);
    t.A[2][2] = cos(PI_2);
    double c[3] = {2.0, 4.0, 4.0};
    augment_resample(x, y, img, lab, 1, S, P, c, &t);
    /* source = c + A (o - h): (b, d) reads (4 - (d - 4), 4 + (b - 4)) */
    for (int b = 0; b < 9; b++)
        for (int d = 0; d < 9; d++) {
            int64_t s = (2 * 9 + (8 - d)) * 9 + b;
            assert_true(fabsf(x[b * 9 + d] - img[s]) < 1e-5f);
            assert_int_equal(y[b * 9 + d], lab[s]);
        }
    free(img);
    free(lab);
}

/* A labelled square moves with the image under random spatial
 * augmentation; labels stay within the label set.  Bounds: an image of
 * 10 inside the square and 0 outside, linear interpolation; where the
 * nearest source voxel is inside (label 1) that voxel's weight is at
 * least 1/4 in 2D (1/8 in 3D), so x >= 2.5 (1.25); where it is outside,
 * x <= 7.5 (8.75). */
static void test_augment_alignment(void **state)
{
    (void)state;
    for (int dims = 2; dims <= 3; dims++) {
        int64_t S[3] = {dims == 2 ? 3 : 24, 24, 24};
        int64_t P[3] = {dims == 2 ? 1 : 20, 20, 20};
        int64_t nv = S[0] * S[1] * S[2], pv = P[0] * P[1] * P[2];
        float *img = calloc((size_t)nv, sizeof(float));
        uint8_t *lab = calloc((size_t)nv, 1);
        float *x = malloc(sizeof(float) * (size_t)pv);
        uint8_t *y = malloc((size_t)pv);
        for (int64_t a = 0; a < S[0]; a++)
            for (int64_t b = 6; b < 14; b++)
                for (int64_t d = 8; d < 16; d++) {
                    if (dims == 3 && (a < 8 || a >= 16)) continue;
                    img[(a * S[1] + b) * S[2] + d] = 10.0f;
                    lab[(a * S[1] + b) * S[2] + d] = 1;
                }
        AugmentOptions o;
        augment_defaults(&o, dims);
        o.p_rotate = o.p_scale = 0.8;
        double lo_in = dims == 2 ? 2.5 : 1.25,
               hi_out = dims == 2 ? 7.5 : 8.75;
        int labelled = 0;
        for (int it = 0; it < 60; it++) {
            Rng r;
            rng_seed(&r, 77, (uint64_t)it, 0);
            AugXform t;
            augment_draw_xform(&o, dims, &r, &t);
            double c[3] = {dims == 2 ? 1.0 : 12.0, 10.0, 12.0};
            augment_resample(x, y, img, lab, 1, S, P, c, &t);
            for (int64_t v = 0; v < pv; v++) {
                assert_true(y[v] <= 1);
                if (y[v])
                    assert_true((double)x[v] >= lo_in - 1e-4);
                else
                    assert_true((double)x[v] <= hi_out + 1e-4);
                labelled += y[v];
            }
        }
        assert_true(labelled > 0);
        free(img);
        free(lab);
        free(x);
        free(y);
    }
}

/* Gamma keeps each channel's mean and std (retain_stats); noise changes
 * values by about sigma <= noise_sigma_max. */
static void test_augment_intensity(void **state)
{
    (void)state;
    int64_t n = 4096;
    float *x = malloc(sizeof(float) * 2 * (size_t)n);
    float *x0 = malloc(sizeof(float) * 2 * (size_t)n);
    TestRng tr = {13};
    trng_fill(&tr, x0, 2 * (size_t)n, -2.0f, 3.0f);
    AugmentOptions o;
    augment_off(&o);
    o.enabled = 1;
    o.gamma_lo = 0.7;
    o.gamma_hi = 1.5;
    for (int inv = 0; inv < 2; inv++) {
        o.p_gamma = inv ? 0.0 : 1.0;
        o.p_gamma_invert = inv ? 1.0 : 0.0;
        memcpy(x, x0, sizeof(float) * 2 * (size_t)n);
        Rng r;
        rng_seed(&r, 5, (uint64_t)inv, 0);
        augment_intensity(x, 2, n, &o, &r);
        assert_true(memcmp(x, x0, sizeof(float) * 2 * (size_t)n) != 0);
        for (int c = 0; c < 2; c++) {
            double s0 = 0, s1 = 0, q0 = 0, q1 = 0;
            for (int64_t i = 0; i < n; i++) {
                s0 += (double)x0[c * n + i];
                s1 += (double)x[c * n + i];
            }
            for (int64_t i = 0; i < n; i++) {
                q0 += pow((double)x0[c * n + i] - s0 / n, 2);
                q1 += pow((double)x[c * n + i] - s1 / n, 2);
            }
            /* float32 storage of the result: 1e-4 absolute on stats of
             * values of order 1. */
            assert_true(fabs(s0 / n - s1 / n) < 1e-4);
            assert_true(fabs(sqrt(q0 / n) - sqrt(q1 / n)) < 1e-4);
        }
    }
    augment_off(&o);
    o.enabled = 1;
    o.p_noise = 1.0;
    o.noise_sigma_max = 0.1;
    memcpy(x, x0, sizeof(float) * 2 * (size_t)n);
    Rng r;
    rng_seed(&r, 6, 0, 0);
    augment_intensity(x, 2, n, &o, &r);
    double ss = 0;
    for (int64_t i = 0; i < 2 * n; i++)
        ss += pow((double)x[i] - (double)x0[i], 2);
    double sd = sqrt(ss / (2.0 * (double)n));
    assert_true(sd > 0.0 && sd < 0.11);
    /* Disabled: untouched. */
    augment_off(&o);
    memcpy(x, x0, sizeof(float) * 2 * (size_t)n);
    augment_intensity(x, 2, n, &o, &r);
    assert_memory_equal(x, x0, sizeof(float) * 2 * (size_t)n);
    free(x);
    free(x0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampler_shapes_determinism),
        cmocka_unit_test(test_sampler_foreground),
        cmocka_unit_test(test_sampler_fov),
        cmocka_unit_test(test_sampler_fov_unchanged),
        cmocka_unit_test(test_sampler_crop),
        cmocka_unit_test(test_train_baseline_crop),
        cmocka_unit_test(test_sampler_speed),
        cmocka_unit_test(test_sampler_nomem),
        cmocka_unit_test(test_augment_flips_identity),
        cmocka_unit_test(test_augment_rot90),
        cmocka_unit_test(test_augment_alignment),
        cmocka_unit_test(test_augment_intensity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
