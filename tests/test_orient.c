/* Scan geometry: axis codes, model grids, resampling both ways against
 * brute-force references written here, and the invariance that matters
 * to users: the same head stored in any of the 48 axis permutations and
 * flips gets the same labels in world space, on a 2D and a 3D model.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti2_io.h>

#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/nifti_io.h"
#include "runtime/orient.h"
#include "runtime/resample.h"
#include "runtime/segment.h"
#include "runtime/segment_scan.h"
#include "runtime/sslim.h"
#include "runtime/volume.h"
#include "tests/graphbuild.h"
#include "tests/niftifixture.h"

static Affine diag_affine(double sx, double sy, double sz, double ox,
                          double oy, double oz)
{
    Affine a = {{{sx, 0, 0, ox}, {0, sy, 0, oy}, {0, 0, sz, oz}}};
    return a;
}

/* orient_snap rounds without libm: it must agree with nearbyint's
 * snapping (ties to even) everywhere, including past 2^51 and on NaN. */
static void test_snap_matches_nearbyint(void **state)
{
    (void)state;
    const double xs[] = {0.0,
                         -0.0,
                         0.5,
                         1.5,
                         2.5,
                         -2.5,
                         3.00005,
                         2.99995,
                         -7.00009,
                         7.0002,
                         1e-5,
                         -1e-5,
                         123456.49999,
                         2251799813685247.5,
                         2251799813685248.0,
                         4503599627370497.0,
                         -4503599627370497.0,
                         1e300};
    for (size_t n = 0; n < sizeof xs / sizeof xs[0]; n++) {
        double r = nearbyint(xs[n]);
        double want = fabs(xs[n] - r) <= ORIENT_SNAP ? r : xs[n];
        assert_true(orient_snap(xs[n]) == want);
        assert_true(signbit(orient_snap(xs[n])) == signbit(want));
    }
    TestRng g = {7};
    for (int n = 0; n < 100000; n++) {
        double x = (double)trng_uniform(&g, -1000.0f, 1000.0f);
        if (n & 1) x = nearbyint(x) + (double)trng_uniform(&g, -2e-4f, 2e-4f);
        double r = nearbyint(x);
        assert_true(orient_snap(x) == (fabs(x - r) <= ORIENT_SNAP ? r : x));
    }
    assert_true(isnan(orient_snap(NAN)));
}

static void test_axcodes(void **state)
{
    (void)state;
    char c[4];
    Affine a = diag_affine(1, 1, 1, 0, 0, 0);
    orient_axcodes(&a, c);
    assert_string_equal(c, "RAS");
    a = diag_affine(-1, -1, 1, 0, 0, 0);
    orient_axcodes(&a, c);
    assert_string_equal(c, "LPS");
    /* a sagittal stack: i anterior, j superior, k to the left */
    Affine s = {{{0, 0, -1, 0}, {2, 0, 0, 0}, {0, 3, 0, 0}}};
    orient_axcodes(&s, c);
    assert_string_equal(c, "ASL");
    /* 10 degrees oblique about z: still closest to R and A */
    double t = 10.0 * 3.14159265358979323846 / 180.0;
    Affine o = {
        {{cos(t), -sin(t), 0, 0}, {sin(t), cos(t), 0, 0}, {0, 0, 1, 0}}};
    orient_axcodes(&o, c);
    assert_string_equal(c, "RAS");
    int w[3], sg[3];
    assert_int_equal(orient_parse("ras", w, sg), 0);
    assert_int_equal(w[0] * 100 + w[1] * 10 + w[2], 12);
    assert_int_equal(orient_parse("PIR", w, sg), 0);
    assert_int_equal(w[0], 1);
    assert_int_equal(sg[0], -1);
    const char *bad[] = {"RRS", "RA", "XAS", "RASL", "", "RLA"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(orient_parse(bad[i], w, sg), ERR_ARG);
}

/* The 48 signed permutations: perm[t] = source axis of axis t. */
static void signed_perm(int n, int perm[3], int flip[3])
{
    static const int P[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int t = 0; t < 3; t++) {
        perm[t] = P[n / 8][t];
        flip[t] = n >> t & 1;
    }
}

/* Store canonical volume c (affine ca) with its axes permuted and flipped:
 * stored axis t is canonical axis perm[t], reversed if flip[t].  The
 * stored affine's columns match, so every voxel keeps its world position. */
static void store_permuted(const Volume *c, const Affine *ca, int n,
                           Volume *out, Affine *oa)
{
    int perm[3], flip[3];
    signed_perm(n, perm, flip);
    int64_t d[3];
    for (int t = 0; t < 3; t++)
        d[t] = c->dim[perm[t]];
    assert_int_equal(volume_alloc(out, d[0], d[1], d[2], c->n_mod), 0);
    int64_t nv = volume_voxels(c);
    for (int m = 0; m < c->n_mod; m++)
        for (int64_t k = 0; k < d[2]; k++)
            for (int64_t j = 0; j < d[1]; j++)
                for (int64_t i = 0; i < d[0]; i++) {
                    int64_t s[3] = {i, j, k}, q[3];
                    for (int t = 0; t < 3; t++)
                        q[perm[t]] = flip[t] ? d[t] - 1 - s[t] : s[t];
                    out->data[(size_t)m * (size_t)nv +
                              (size_t)((k * d[1] + j) * d[0] + i)] =
                        c->data[(size_t)m * (size_t)nv +
                                (size_t)((q[2] * c->dim[1] + q[1]) *
                                             c->dim[0] +
                                         q[0])];
                }
    /* voxel s of the stored grid is canonical voxel q(s) =
     * F s + o; world = ca (F s + o): columns permuted, signs flipped */
    memset(oa, 0, sizeof *oa);
    for (int r = 0; r < 3; r++) {
        oa->m[r][3] = ca->m[r][3];
        for (int t = 0; t < 3; t++) {
            double col = ca->m[r][perm[t]];
            if (flip[t]) {
                oa->m[r][t] = -col;
                oa->m[r][3] += col * (double)(d[t] - 1);
            } else {
                oa->m[r][t] = col;
            }
        }
    }
}

/* The canonical index of stored voxel (i, j, k) of permutation n. */
static size_t canonical_index(const int64_t cdim[3], int n, int64_t i,
                              int64_t j, int64_t k)
{
    int perm[3], flip[3];
    signed_perm(n, perm, flip);
    int64_t s[3] = {i, j, k}, q[3];
    for (int t = 0; t < 3; t++) {
        int64_t dt = cdim[perm[t]];
        q[perm[t]] = flip[t] ? dt - 1 - s[t] : s[t];
    }
    return (size_t)((q[2] * cdim[1] + q[1]) * cdim[0] + q[0]);
}

static void test_model_grid_of_permutations(void **state)
{
    (void)state;
    Affine ca = diag_affine(1.0, 2.0, 3.0, -10, 20, 5);
    Volume c;
    assert_int_equal(volume_alloc(&c, 5, 6, 7, 1), 0);
    for (int n = 0; n < 48; n++) {
        Volume s;
        Affine sa;
        store_permuted(&c, &ca, n, &s, &sa);
        Grid in = {{s.dim[0], s.dim[1], s.dim[2]}, sa}, mg;
        const double none[3] = {0, 0, 0};
        assert_int_equal(orient_model_grid(&in, "RAS", none, &mg), 0);
        /* the canonical grid exactly */
        assert_int_equal(mg.dim[0], 5);
        assert_int_equal(mg.dim[1], 6);
        assert_int_equal(mg.dim[2], 7);
        for (int r = 0; r < 3; r++)
            for (int q = 0; q < 4; q++)
                assert_true(fabs(mg.aff.m[r][q] - ca.m[r][q]) < 1e-9);
        Affine m;
        assert_int_equal(orient_voxel_map(&in, &mg, &m), 0);
        for (int r = 0; r < 3; r++)
            for (int q = 0; q < 4; q++)
                assert_true(fabs(m.m[r][q] - nearbyint(m.m[r][q])) < 1e-9);
        volume_free(&s);
    }
    volume_free(&c);
    /* a 2 mm model on a 1 mm grid of 9 voxels (8 mm): 5 voxels, centred */
    Grid in = {{9, 9, 9}, diag_affine(1, 1, 1, 0, 0, 0)}, mg;
    const double two[3] = {2, 2, 2};
    assert_int_equal(orient_model_grid(&in, "RAS", two, &mg), 0);
    assert_int_equal(mg.dim[0], 5);
    assert_true(fabs(mg.aff.m[0][0] - 2.0) < 1e-12);
    assert_true(fabs(mg.aff.m[0][3]) < 1e-12);
    /* no code: the scan's axes, spacing changed (LPS stays LPS) */
    Grid lps = {{9, 9, 9}, diag_affine(-1, -1, 1, 8, 8, 0)};
    assert_int_equal(orient_model_grid(&lps, "", two, &mg), 0);
    assert_true(fabs(mg.aff.m[0][0] + 2.0) < 1e-12);
    assert_true(fabs(mg.aff.m[0][3] - 8.0) < 1e-12);
    sl_error_quiet(1);
    assert_int_equal(orient_model_grid(&in, "RAX", two, &mg), ERR_ARG);
    Grid sing = {{9, 9, 9}, diag_affine(1, 0, 1, 0, 0, 0)};
    assert_int_equal(orient_model_grid(&sing, "RAS", two, &mg), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
}

/* A random rotation-ish affine map with scaling and shift. */
static Affine random_map(TestRng *r, double scale)
{
    double a = trng_uniform(r, -0.5f, 0.5f), b = trng_uniform(r, -0.5f, 0.5f);
    Affine m = {{{scale * cos(a), -scale * sin(a), 0, 0},
                 {scale * sin(a) * cos(b), scale * cos(a) * cos(b),
                  -scale * sin(b), 0},
                 {scale * sin(a) * sin(b), scale * cos(a) * sin(b),
                  scale * cos(b), 0}}};
    for (int i = 0; i < 3; i++)
        m.m[i][3] = trng_uniform(r, -1.5f, 1.5f);
    return m;
}

/* Independent trilinear reference: clamp, then the 8-corner sum with
 * the upper index kept inside the volume. */
static double brute_sample(const float *x, const int64_t d[3],
                           const double p[3], const NormAffine *na,
                           double fill, int normalise)
{
    int64_t i0[3];
    double f[3];
    for (int a = 0; a < 3; a++) {
        if (normalise && (p[a] < -0.5 || p[a] > (double)d[a] - 0.5))
            return fill;
        double c = fmin(fmax(p[a], 0.0), (double)(d[a] - 1));
        i0[a] = d[a] > 1 ? (int64_t)fmin(floor(c), (double)(d[a] - 2)) : 0;
        f[a] = d[a] > 1 ? c - (double)i0[a] : 0.0;
    }
    double acc = 0.0;
    for (int c = 0; c < 8; c++) {
        double w = 1.0;
        int64_t q[3];
        for (int a = 0; a < 3; a++) {
            int hi = c >> a & 1;
            w *= hi ? f[a] : 1.0 - f[a];
            q[a] = i0[a] + (d[a] > 1 ? hi : 0);
        }
        double v = x[(q[2] * d[1] + q[1]) * d[0] + q[0]];
        if (normalise) v = (double)norm_apply(na, (float)v);
        acc += w * v;
    }
    return acc;
}

static void test_resample_vs_brute_force(void **state)
{
    (void)state;
    TestRng r = {42};
    /* trials 4 and 5: axis-aligned scalings whose positions fall on
     * voxels, on the last voxel and (offset 1e-5) within ORIENT_SNAP of
     * them: the weight-0 corners and the snapping */
    const Affine scaled[2] = {
        {{{0.75, 0, 0, -0.25}, {0, 1, 0, 0.5}, {0, 0, 0.8, 0}}},
        {{{0.75, 0, 0, 1e-5}, {0, 0.5, 0, -1e-5}, {0, 0, 1, -0.5}}}};
    for (int trial = 0; trial < 6; trial++) {
        Volume src, a, b;
        assert_int_equal(volume_alloc(&src, 7, 6, 5, 2), 0);
        trng_fill(&r, src.data, (size_t)volume_voxels(&src) * 2, -3, 9);
        assert_int_equal(volume_alloc(&a, 9, 8, 6, 2), 0);
        assert_int_equal(volume_alloc(&b, 9, 8, 6, 2), 0);
        Affine m = trial < 4 ? random_map(&r, trial < 2 ? 0.7 : 1.0)
                             : scaled[trial - 4];
        NormAffine na[2];
        Normalize z = {NORMALIZE_ZSCORE, 0, 0};
        Normalize ct = {NORMALIZE_CT, -1, 5};
        assert_int_equal(volume_norm_affine(&src, 0, &z, &na[0]), 0);
        assert_int_equal(volume_norm_affine(&src, 1, &ct, &na[1]), 0);
        /* resample_volume normalises its source in place: each call
         * gets its own copy, and the brute force reads the raw one */
        Volume s1, s2, s3, c3;
        size_t sbytes = (size_t)volume_voxels(&src) * 2 * sizeof(float);
        assert_int_equal(volume_alloc(&s1, 7, 6, 5, 2), 0);
        assert_int_equal(volume_alloc(&s2, 7, 6, 5, 2), 0);
        assert_int_equal(volume_alloc(&s3, 7, 6, 5, 2), 0);
        assert_int_equal(volume_alloc(&c3, 9, 8, 6, 2), 0);
        memcpy(s1.data, src.data, sbytes);
        memcpy(s2.data, src.data, sbytes);
        memcpy(s3.data, src.data, sbytes);
        resample_volume(&a, &s1, na, &m, 1);
        resample_volume(&b, &s2, na, &m, 2);
        /* the portable path (SL_VEC_ISA=sse) gives the AVX2 rows' bits:
         * rows of 9 voxels are two 4-voxel steps and one scalar voxel */
        assert_int_equal(setenv("SL_VEC_ISA", "sse", 1), 0);
        resample_volume(&c3, &s3, na, &m, 1);
        unsetenv("SL_VEC_ISA");
        volume_free(&s1);
        volume_free(&s2);
        volume_free(&s3);
        size_t n = (size_t)volume_voxels(&a);
        assert_memory_equal(a.data, b.data, 2 * n * sizeof(float));
        assert_memory_equal(a.data, c3.data, 2 * n * sizeof(float));
        volume_free(&c3);
        float *ref = sl_alloc(2 * n * sizeof(float));
        assert_non_null(ref);
        int64_t snv = volume_voxels(&src);
        for (int c = 0; c < 2; c++) {
            const float *x = src.data + (size_t)c * (size_t)snv;
            float mn = x[0];
            for (int64_t i = 0; i < snv; i++)
                mn = fminf(mn, x[i]);
            double fill = (double)norm_apply(&na[c], mn);
            for (int64_t k = 0; k < a.dim[2]; k++)
                for (int64_t j = 0; j < a.dim[1]; j++)
                    for (int64_t i = 0; i < a.dim[0]; i++) {
                        double p[3];
                        for (int q = 0; q < 3; q++)
                            p[q] = m.m[q][0] * (double)i +
                                   m.m[q][1] * (double)j +
                                   m.m[q][2] * (double)k + m.m[q][3];
                        ref[(size_t)c * n +
                            (size_t)((k * a.dim[1] + j) * a.dim[0] + i)] =
                            (float)brute_sample(x, src.dim, p, &na[c], fill,
                                                1);
                    }
        }
        /* float32 results of double sums of O(1) values; positions within
         * ORIENT_SNAP of an integer are snapped in resample_volume: at
         * most 1e-4 voxel times a slope of a few units */
        assert_allclose(a.data, ref, 2 * n, 2e-3, 1e-5);
        sl_free(ref);
        volume_free(&src);
        volume_free(&a);
        volume_free(&b);
    }
}

/* A grid turned by a degree or two, as scanners store oblique scans:
 * four neighbouring voxels of a row mostly read their corners from one
 * source row (sample_row_avx2's contiguous loads), the others gather;
 * both give the portable path's bits (SL_VEC_ISA=sse). */
static void test_resample_turned_grid(void **state)
{
    (void)state;
    TestRng r = {5};
    for (int trial = 0; trial < 3; trial++) {
        double a = 0.01 + 0.012 * trial, c = cos(a), s = sin(a);
        Affine m = {{{c, -s, 0, 0.3},
                     {s * c, c * c, -s, -0.45},
                     {s * s, c * s, c, 0.2 + 0.5 * trial}}};
        Volume src, v[2];
        assert_int_equal(volume_alloc(&src, 41, 23, 11, 1), 0);
        trng_fill(&r, src.data, (size_t)volume_voxels(&src), -2, 7);
        Normalize z = {NORMALIZE_ZSCORE, 0, 0};
        NormAffine na;
        assert_int_equal(volume_norm_affine(&src, 0, &z, &na), 0);
        for (int k = 0; k < 2; k++) {
            Volume cp;
            assert_int_equal(volume_alloc(&cp, 41, 23, 11, 1), 0);
            memcpy(cp.data, src.data,
                   (size_t)volume_voxels(&src) * sizeof(float));
            assert_int_equal(volume_alloc(&v[k], 43, 22, 12, 1), 0);
            if (k) assert_int_equal(setenv("SL_VEC_ISA", "sse", 1), 0);
            resample_volume(&v[k], &cp, &na, &m, 2);
            unsetenv("SL_VEC_ISA");
            volume_free(&cp);
        }
        assert_memory_equal(v[0].data, v[1].data,
                            (size_t)volume_voxels(&v[0]) * sizeof(float));
        volume_free(&v[0]);
        volume_free(&v[1]);
        volume_free(&src);
    }
}

/* Back-mapping: random model-grid scores fed plane by plane (one at a
 * time, or three with weight sums as a 3D slab does), interpolated at
 * the scan voxels of a random oblique map; labels and scores against
 * the brute-force interpolation of the whole score volume. */
static void check_backmap(int a0, int planes_per_call, int with_wsum,
                          uint64_t seed)
{
    TestRng r = {seed};
    const int nc = 3;
    int64_t md[3] = {9, 8, 7}, sd[3] = {12, 10, 9};
    int64_t mnv = md[0] * md[1] * md[2], snv = sd[0] * sd[1] * sd[2];
    float *sc = sl_alloc((size_t)(nc * mnv) * sizeof(float));
    float *ws = sl_alloc((size_t)mnv * sizeof(float));
    assert_non_null(sc);
    assert_non_null(ws);
    trng_fill(&r, sc, (size_t)(nc * mnv), -2, 2);
    trng_fill(&r, ws, (size_t)mnv, 0.5f, 2);
    Affine m = random_map(&r, 0.75);
    int16_t *lab = sl_alloc((size_t)snv * sizeof(int16_t));
    float *pr = sl_alloc((size_t)(nc * snv) * sizeof(float));
    assert_non_null(lab);
    assert_non_null(pr);
    BackMap *bm = NULL;
    assert_int_equal(backmap_create(sd, md, &m, a0, nc, lab, pr, 2, &bm), 0);
    int ax[3] = {a0, a0 == 0 ? 2 : 0, a0 == 2 ? 1 : a0 == 1 ? 2 : 1};
    int64_t pad[3] = {planes_per_call, md[ax[1]] + 1, md[ax[2]] + 2};
    size_t cst = (size_t)(pad[0] * pad[1] * pad[2]);
    float *buf = sl_alloc((size_t)nc * cst * sizeof(float));
    float *wb = sl_alloc(cst * sizeof(float));
    assert_non_null(buf);
    assert_non_null(wb);
    for (int64_t z0 = 0; z0 < md[a0]; z0 += planes_per_call) {
        int64_t nb =
            md[a0] - z0 < planes_per_call ? md[a0] - z0 : planes_per_call;
        for (int64_t x0 = 0; x0 < nb; x0++)
            for (int64_t x1 = 0; x1 < md[ax[1]]; x1++)
                for (int64_t x2 = 0; x2 < md[ax[2]]; x2++) {
                    int64_t q[3];
                    q[ax[0]] = z0 + x0;
                    q[ax[1]] = x1;
                    q[ax[2]] = x2;
                    size_t mi =
                        (size_t)((q[2] * md[1] + q[1]) * md[0] + q[0]);
                    size_t bi = (size_t)((x0 * pad[1] + x1) * pad[2] + x2);
                    wb[bi] = with_wsum ? ws[mi] : 1.0f;
                    for (int c = 0; c < nc; c++)
                        buf[(size_t)c * cst + bi] =
                            with_wsum
                                ? sc[(size_t)c * (size_t)mnv + mi] * ws[mi]
                                : sc[(size_t)c * (size_t)mnv + mi];
                }
        int64_t off[3] = {z0, 0, 0}, box[3] = {nb, md[ax[1]], md[ax[2]]};
        backmap_planes(bm, buf, with_wsum ? wb : NULL, nc, ax, off, box, pad);
    }
    assert_int_equal(backmap_done(bm), snv);
    backmap_free(bm);
    int ties = 0;
    for (int64_t k = 0; k < sd[2]; k++)
        for (int64_t j = 0; j < sd[1]; j++)
            for (int64_t i = 0; i < sd[0]; i++) {
                double p[3], s[3];
                for (int q = 0; q < 3; q++)
                    p[q] = orient_snap(m.m[q][0] * (double)i +
                                       m.m[q][1] * (double)j +
                                       m.m[q][2] * (double)k + m.m[q][3]);
                int best = 0;
                for (int c = 0; c < nc; c++) {
                    /* a score times a weight, then divided: the same
                     * float rounding as the slab */
                    s[c] = brute_sample(sc + (size_t)c * (size_t)mnv, md, p,
                                        NULL, 0, 0);
                    if (s[c] > s[best]) best = c;
                }
                size_t v = (size_t)((k * sd[1] + j) * sd[0] + i);
                for (int c = 0; c < nc; c++)
                    assert_true(fabs((double)pr[(size_t)c * (size_t)snv + v] -
                                     s[c]) < 1e-5);
                if (lab[v] != best) {
                    /* only a near tie may go the other way */
                    assert_true(fabs(s[lab[v]] - s[best]) < 1e-5);
                    ties++;
                }
            }
    assert_true(ties <= 2);
    sl_free(sc);
    sl_free(ws);
    sl_free(lab);
    sl_free(pr);
    sl_free(buf);
    sl_free(wb);
}

/* Labels of one back-mapping, plane by plane, of scores sc [nc][model]:
 * with probabilities asked for (every voxel interpolated) or not (voxels
 * whose corners agree take their common argmax). */
static void backmap_labels(const float *sc, int nc, const int64_t md[3],
                           const int64_t sd[3], const Affine *m, int a0,
                           int16_t *lab, float *pr)
{
    BackMap *bm = NULL;
    assert_int_equal(backmap_create(sd, md, m, a0, nc, lab, pr, 2, &bm), 0);
    int ax[3] = {a0, a0 == 0 ? 2 : 0, a0 == 2 ? 1 : a0 == 1 ? 2 : 1};
    int64_t pad[3] = {1, md[ax[1]], md[ax[2]]};
    size_t cst = (size_t)(pad[1] * pad[2]);
    float *buf = sl_alloc((size_t)nc * cst * sizeof(float));
    assert_non_null(buf);
    int64_t mnv = md[0] * md[1] * md[2];
    for (int64_t z = 0; z < md[a0]; z++) {
        for (int64_t x1 = 0; x1 < md[ax[1]]; x1++)
            for (int64_t x2 = 0; x2 < md[ax[2]]; x2++) {
                int64_t q[3];
                q[ax[0]] = z;
                q[ax[1]] = x1;
                q[ax[2]] = x2;
                size_t mi = (size_t)((q[2] * md[1] + q[1]) * md[0] + q[0]);
                for (int c = 0; c < nc; c++)
                    buf[(size_t)c * cst + (size_t)(x1 * pad[2] + x2)] =
                        sc[(size_t)c * (size_t)mnv + mi];
            }
        int64_t off[3] = {z, 0, 0}, box[3] = {1, md[ax[1]], md[ax[2]]};
        backmap_planes(bm, buf, NULL, nc, ax, off, box, pad);
    }
    assert_int_equal(backmap_done(bm), sd[0] * sd[1] * sd[2]);
    backmap_free(bm);
    sl_free(buf);
}

/* Without probabilities, a voxel whose interpolation corners share their
 * argmax takes it without interpolating: the labels must be those of
 * the full interpolation, on smooth scores (large regions, most voxels
 * take the shortcut), on noise (few do), with NaN scores here and there
 * and with an exact tie between two classes on a whole region. */
static void test_backmap_shortcut(void **state)
{
    (void)state;
    TestRng r = {99};
    const int nc = 3;
    int64_t md[3] = {17, 15, 13}, sd[3] = {20, 18, 16};
    int64_t mnv = md[0] * md[1] * md[2], snv = sd[0] * sd[1] * sd[2];
    float *sc = sl_alloc((size_t)(nc * mnv) * sizeof(float));
    int16_t *full = sl_alloc((size_t)snv * sizeof(int16_t));
    int16_t *fast = sl_alloc((size_t)snv * sizeof(int16_t));
    float *pr = sl_alloc((size_t)(nc * snv) * sizeof(float));
    assert_non_null(sc);
    assert_non_null(full);
    assert_non_null(fast);
    assert_non_null(pr);
    for (int kind = 0; kind < 4; kind++) {
        float a[3][4];
        trng_fill(&r, &a[0][0], 12, -1, 1);
        for (int64_t k = 0; k < md[2]; k++)
            for (int64_t j = 0; j < md[1]; j++)
                for (int64_t i = 0; i < md[0]; i++) {
                    size_t mi = (size_t)((k * md[1] + j) * md[0] + i);
                    for (int c = 0; c < nc; c++) {
                        float v = a[c][0] * (float)i / 4 +
                                  a[c][1] * (float)j / 4 +
                                  a[c][2] * (float)k / 4 + a[c][3];
                        if (kind == 1) trng_fill(&r, &v, 1, -2, 2);
                        sc[(size_t)c * (size_t)mnv + mi] = v;
                    }
                    if (kind == 2 && mi % 37 == 0)
                        sc[(size_t)(mi % 3) * (size_t)mnv + mi] = NAN;
                    if (kind == 3 && i < md[0] / 2) /* classes 0, 2 tie */
                        sc[2 * (size_t)mnv + mi] = sc[mi] = 5.0f;
                }
        for (int v = 0; v < 5; v++) {
            /* v 3, 4: a grid turned by about a degree, where four
             * neighbouring voxels mostly read one row of one plane
             * (label_run_avx2's runs) */
            int a0 = v < 3 ? v : 2;
            double t = 0.012 * v, c = cos(t), sn = sin(t);
            Affine m = v < 3 ? random_map(&r, 0.75)
                             : (Affine){{{c, -sn, 0, 0.3},
                                         {sn * c, c * c, -sn, -0.2},
                                         {sn * sn, c * sn, c, 0.45}}};
            backmap_labels(sc, nc, md, sd, &m, a0, full, pr);
            backmap_labels(sc, nc, md, sd, &m, a0, fast, NULL);
            assert_memory_equal(full, fast, (size_t)snv * sizeof(int16_t));
            /* the shortcut's portable path: the AVX2 lanes' labels */
            assert_int_equal(setenv("SL_VEC_ISA", "sse", 1), 0);
            backmap_labels(sc, nc, md, sd, &m, a0, fast, NULL);
            unsetenv("SL_VEC_ISA");
            assert_memory_equal(full, fast, (size_t)snv * sizeof(int16_t));
        }
    }
    sl_free(sc);
    sl_free(full);
    sl_free(fast);
    sl_free(pr);
}

static void test_backmap_vs_brute_force(void **state)
{
    (void)state;
    for (int a0 = 0; a0 < 3; a0++) {
        check_backmap(a0, 1, 0, 7 + (uint64_t)a0);
        check_backmap(a0, 3, 1, 17 + (uint64_t)a0);
    }
}

/* A head-like phantom: a bright ellipsoid with a darker core, noise,
 * on a 14 x 12 x 10 grid at 1 x 1.5 x 2 mm. */
static void phantom(Volume *v, Affine *a)
{
    TestRng r = {3};
    assert_int_equal(volume_alloc(v, 14, 12, 10, 1), 0);
    for (int64_t k = 0; k < 10; k++)
        for (int64_t j = 0; j < 12; j++)
            for (int64_t i = 0; i < 14; i++) {
                double x = (double)(i - 6) / 5.0, y = (double)(j - 5) / 4.5,
                       z = (double)(k - 4) / 3.5;
                double e = x * x + y * y + z * z;
                float val = e < 1.0 ? (e < 0.3 ? 60.0f : 100.0f) : 5.0f;
                v->data[(k * 12 + j) * 14 + i] =
                    val + trng_uniform(&r, -4, 4);
            }
    *a = diag_affine(1.0, 1.5, 2.0, -7, -8, -9);
}

/* Fraction of voxels labelled 1 by a random tiny U-Net on the phantom
 * stored canonically. */
static double ones_fraction(Segmenter *s)
{
    Volume v;
    Affine a;
    phantom(&v, &a);
    size_t nv = (size_t)volume_voxels(&v);
    int16_t *lab = NULL;
    assert_int_equal(segment_scan(s, &v, &a, &lab, NULL), 0);
    size_t ones = 0;
    for (size_t i = 0; i < nv; i++)
        ones += lab[i] == 1;
    sl_free(lab);
    return (double)ones / (double)nv;
}

static void check_48(int nsp, const char *code, const double sp[3])
{
    Graph g;
    Segmenter *s = NULL;
    SegmentOptions o = {.n_threads = 2};
    /* the first random network that labels between 10% and 90% of the
     * phantom 1: a constant label map would prove nothing */
    for (uint64_t seed = 1;; seed++) {
        assert_true(seed < 200);
        assert_int_equal(build_unet(&g, nsp, 1, 4, 2, 0, seed), 0);
        if (nsp == 3) g.meta.patch[0] = g.meta.patch[1] = g.meta.patch[2] = 8;
        snprintf(g.meta.orientation, sizeof g.meta.orientation, "%s", code);
        memcpy(g.meta.spacing, sp, sizeof g.meta.spacing);
        assert_int_equal(segmenter_create(&g, &o, &s), 0);
        double f = ones_fraction(s);
        if (f > 0.1 && f < 0.9) break;
        segmenter_free(s);
        graph_free(&g);
    }
    Volume c;
    Affine ca;
    phantom(&c, &ca);
    int64_t cdim[3] = {c.dim[0], c.dim[1], c.dim[2]};
    size_t nv = (size_t)volume_voxels(&c);
    int16_t *ref = NULL;
    for (int n = 0; n < 48; n++) {
        Volume v;
        Affine va;
        store_permuted(&c, &ca, n, &v, &va);
        int16_t *lab = NULL;
        assert_int_equal(segment_scan(s, &v, &va, &lab, NULL), 0);
        assert_null(v.data); /* consumed */
        int16_t *world = sl_alloc(nv * sizeof *world);
        assert_non_null(world);
        int perm[3], flip[3];
        signed_perm(n, perm, flip);
        int64_t d[3] = {cdim[perm[0]], cdim[perm[1]], cdim[perm[2]]};
        for (int64_t k = 0; k < d[2]; k++)
            for (int64_t j = 0; j < d[1]; j++)
                for (int64_t i = 0; i < d[0]; i++)
                    world[canonical_index(cdim, n, i, j, k)] =
                        lab[(k * d[1] + j) * d[0] + i];
        sl_free(lab);
        if (!ref) {
            ref = world;
            continue;
        }
        if (memcmp(ref, world, nv * sizeof *ref)) {
            size_t diff = 0;
            for (size_t i = 0; i < nv; i++)
                diff += ref[i] != world[i];
            fail_msg("%dD model, code '%s': permutation %d gives %zu "
                     "voxels different in world space",
                     nsp, code, n, diff);
        }
        sl_free(world);
    }
    sl_free(ref);
    volume_free(&c);
    segmenter_free(s);
    graph_free(&g);
}

static void test_48_orientations_same_labels(void **state)
{
    (void)state;
    const double none[3] = {0, 0, 0}, iso[3] = {1.25, 1.25, 1.25};
    check_48(2, "RAS", none); /* exact permutations */
    check_48(3, "LPS", none);
    check_48(2, "PIR", iso); /* resampled: the model grid is the same */
    check_48(3, "RAS", iso);
}

/* An old model (no orientation, no spacing) and a model whose grid is
 * the scan's own run the scan directly: the labels are segmenter_run's. */
static void test_direct_path_unchanged(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 2, 0, 11), 0);
    Segmenter *s = NULL;
    assert_int_equal(segmenter_create(&g, NULL, &s), 0);
    for (int with_grid = 0; with_grid < 2; with_grid++) {
        if (with_grid) {
            snprintf(g.meta.orientation, 4, "RAS");
            g.meta.spacing[0] = 1.0;
            g.meta.spacing[1] = 1.5;
            g.meta.spacing[2] = 2.0;
        }
        Volume v, w;
        Affine a;
        phantom(&v, &a);
        phantom(&w, &a);
        size_t nv = (size_t)volume_voxels(&v);
        int16_t *ref = sl_alloc(nv * sizeof *ref), *lab = NULL;
        assert_non_null(ref);
        assert_int_equal(segmenter_run(s, &w, ref, NULL), 0);
        int64_t md[3];
        Affine ma;
        int direct = 0;
        assert_int_equal(segment_scan_grid(s, v.dim, &a, md, &ma, &direct),
                         0);
        assert_true(direct);
        assert_int_equal(segment_scan(s, &v, &a, &lab, NULL), 0);
        assert_memory_equal(ref, lab, nv * sizeof *ref);
        sl_free(ref);
        sl_free(lab);
        volume_free(&w);
    }
    segmenter_free(s);
    graph_free(&g);
}

/* v as a float32 NIfTI with sform `a` (code 2) and, as its qform, the
 * identity-rotation matrix of `wrong` (code 1): a reader that prefers the
 * qform over a set sform puts the voxels elsewhere. */
static void write_nifti(const char *path, const Volume *v, const Affine *a,
                        const Affine *wrong)
{
    int64_t dims[8] = {3, v->dim[0], v->dim[1], v->dim[2], 1, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, DT_FLOAT32, 1);
    assert_non_null(nim);
    memcpy(nim->data, v->data, sizeof(float) * (size_t)volume_voxels(v));
    nim->sform_code = NIFTI_XFORM_ALIGNED_ANAT;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            nim->sto_xyz.m[r][c] = a->m[r][c];
    nim->sto_xyz.m[3][3] = 1.0;
    nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
    nim->quatern_b = nim->quatern_c = nim->quatern_d = 0.0;
    nim->qoffset_x = wrong->m[0][3];
    nim->qoffset_y = wrong->m[1][3];
    nim->qoffset_z = wrong->m[2][3];
    nim->qfac = 1;
    for (int t = 0; t < 3; t++) {
        double n = 0;
        for (int r = 0; r < 3; r++)
            n += a->m[r][t] * a->m[r][t];
        nim->pixdim[t + 1] = (float)sqrt(n);
    }
    nim->dx = nim->pixdim[1];
    nim->dy = nim->pixdim[2];
    nim->dz = nim->pixdim[3];
    nim->qto_xyz =
        nifti_quatern_to_dmat44(0, 0, 0, nim->qoffset_x, nim->qoffset_y,
                                nim->qoffset_z, nim->dx, nim->dy, nim->dz, 1);
    nim->xyz_units = NIFTI_UNITS_MM;
    assert_int_equal(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
}

/* The segment program with a model that records RAS: a sagittal-style
 * stored copy (sform set, a misleading qform) gives the canonical file's
 * labels in world space; every output has its input's header geometry,
 * including an oblique scan (resampled through its affine). */
static void test_cli_geometry(void **state)
{
    (void)state;
    Graph g;
    Segmenter *s = NULL;
    for (uint64_t seed = 1;; seed++) {
        assert_true(seed < 200);
        assert_int_equal(build_unet(&g, 2, 1, 4, 2, 0, seed), 0);
        snprintf(g.meta.orientation, 4, "RAS");
        assert_int_equal(segmenter_create(&g, NULL, &s), 0);
        double f = ones_fraction(s);
        segmenter_free(s);
        if (f > 0.1 && f < 0.9) break;
        graph_free(&g);
    }
    char model[1024], bin[1024], cmd[8192], err[512];
    snprintf(model, sizeof model, "%s", test_tmp_path("ras.sslim"));
    assert_int_equal(sslim_write(&g, model, 1), 0);
    graph_free(&g);
    bin_path("segment", bin, sizeof bin);
    Volume c, p;
    Affine ca, pa;
    phantom(&c, &ca);
    const int n = 29; /* a permutation with two flips */
    store_permuted(&c, &ca, n, &p, &pa);
    char in_c[1024], in_p[1024], out_c[1024], out_p[1024];
    snprintf(in_c, sizeof in_c, "%s", test_tmp_path("canon.nii.gz"));
    snprintf(in_p, sizeof in_p, "%s", test_tmp_path("perm.nii"));
    snprintf(out_c, sizeof out_c, "%s", test_tmp_path("canon_seg.nii.gz"));
    snprintf(out_p, sizeof out_p, "%s", test_tmp_path("perm_seg.nii"));
    write_nifti(in_c, &c, &ca, &ca);
    write_nifti(in_p, &p, &pa, &ca);
    const char *pairs[2][2] = {{in_c, out_c}, {in_p, out_p}};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "%s -q --force -m '%s' -o '%s' '%s'", bin,
                 model, pairs[k][1], pairs[k][0]);
        int rc = run_cmd(cmd, err, sizeof err);
        if (rc) fail_msg("%s: exit %d: %s", cmd, rc, err);
        assert_same_nifti_geometry(pairs[k][0], pairs[k][1], 0);
    }
    Volume lc, lp;
    assert_int_equal(nio_read(out_c, &lc, NULL), 0);
    assert_int_equal(nio_read(out_p, &lp, NULL), 0);
    int64_t cdim[3] = {c.dim[0], c.dim[1], c.dim[2]};
    size_t diff = 0;
    for (int64_t k = 0; k < p.dim[2]; k++)
        for (int64_t j = 0; j < p.dim[1]; j++)
            for (int64_t i = 0; i < p.dim[0]; i++)
                diff += lp.data[(k * p.dim[1] + j) * p.dim[0] + i] !=
                        lc.data[canonical_index(cdim, n, i, j, k)];
    assert_int_equal(diff, 0);
    /* oblique: the shared fixture geometry (rotated qform and sform) */
    char in_o[1024], out_o[1024];
    snprintf(in_o, sizeof in_o, "%s", test_tmp_path("oblique.nii.gz"));
    snprintf(out_o, sizeof out_o, "%s", test_tmp_path("oblique_seg.nii.gz"));
    {
        int64_t dims[8] = {3, c.dim[0], c.dim[1], c.dim[2], 1, 1, 1, 1};
        nifti_image *nim = nifti_make_new_nim(dims, DT_FLOAT32, 1);
        assert_non_null(nim);
        memcpy(nim->data, c.data, sizeof(float) * (size_t)volume_voxels(&c));
        nifti_fixture_geometry(nim);
        assert_int_equal(nifti_set_filenames(nim, in_o, 0, 1), 0);
        nifti_image_write(nim);
        nifti_image_free(nim);
    }
    snprintf(cmd, sizeof cmd, "%s -q --force -m '%s' -o '%s' '%s'", bin,
             model, out_o, in_o);
    int rc = run_cmd(cmd, err, sizeof err);
    if (rc) fail_msg("%s: exit %d: %s", cmd, rc, err);
    assert_same_nifti_geometry(in_o, out_o, 0);
    volume_free(&lc);
    volume_free(&lp);
    volume_free(&c);
    volume_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snap_matches_nearbyint),
        cmocka_unit_test(test_axcodes),
        cmocka_unit_test(test_model_grid_of_permutations),
        cmocka_unit_test(test_resample_vs_brute_force),
        cmocka_unit_test(test_backmap_vs_brute_force),
        cmocka_unit_test(test_backmap_shortcut),
        cmocka_unit_test(test_resample_turned_grid),
        cmocka_unit_test(test_48_orientations_same_labels),
        cmocka_unit_test(test_direct_path_unchanged),
        cmocka_unit_test(test_cli_geometry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
