/* sauron-eval end to end: Dice and HD95 on shapes with known answers
 * (offset cubes under anisotropic spacing), random blobs against a brute-
 * force HD95 written here independently of the distance transform, the
 * empty-class rules, grid mismatches and bad inputs rejected. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti2_io.h>

typedef struct {
    int64_t n[3];    /* nx, ny, nz */
    double sp[3];    /* mm */
    double origin_x; /* sform translation along x (to provoke mismatches) */
    int dt;          /* NIFTI_TYPE_UINT8 or NIFTI_TYPE_FLOAT32 */
} Grid;

/* NIfTI-1 stores pixdim as float32: expected distances use that value. */
static double stored(double x)
{
    return (double)(float)x;
}

static const char *tmp(const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

/* Write labels [nz][ny][nx] (float values, stored as g->dt) as NIfTI-1. */
static void write_labels(const char *path, const Grid *g, const float *lab)
{
    int64_t dims[8] = {3, g->n[0], g->n[1], g->n[2], 1, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, g->dt, 1);
    assert_non_null(nim);
    int64_t n = g->n[0] * g->n[1] * g->n[2];
    for (int64_t i = 0; i < n; i++) {
        if (g->dt == NIFTI_TYPE_UINT8)
            ((uint8_t *)nim->data)[i] = (uint8_t)lab[i];
        else
            ((float *)nim->data)[i] = lab[i];
    }
    nim->pixdim[1] = nim->dx = g->sp[0];
    nim->pixdim[2] = nim->dy = g->sp[1];
    nim->pixdim[3] = nim->dz = g->sp[2];
    nim->qform_code = 0;
    nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    memset(&nim->sto_xyz, 0, sizeof nim->sto_xyz);
    for (int d = 0; d < 3; d++)
        nim->sto_xyz.m[d][d] = g->sp[d];
    nim->sto_xyz.m[0][3] = g->origin_x;
    nim->sto_xyz.m[1][3] = -20;
    nim->sto_xyz.m[2][3] = 7;
    nim->sto_xyz.m[3][3] = 1;
    assert_int_equal(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
}

/* Run sauron-eval; on success parse the CSV it wrote into dice/hd per
 * class (index c-1).  Returns the exit status; err gets stderr's first
 * line. */
static int run_eval(const char *pred, const char *gt, const char *extra,
                    double *dice, double *hd, int max_cls, char *err,
                    size_t errlen)
{
    char bin[256], cmd[2048];
    const char *csv = tmp("out.csv");
    remove(csv);
    snprintf(cmd, sizeof cmd, "%s %s %s --csv %s %s >/dev/null",
             bin_path("sauron-eval", bin, sizeof bin), pred, gt, csv,
             extra ? extra : "");
    int rc = run_cmd(cmd, err, errlen);
    if (rc != 0) return rc;
    FILE *f = fopen(csv, "r");
    assert_non_null(f);
    char line[512];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "class,dice,hd95_mm,gt_voxels,pred_voxels\n");
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "mean,", 5)) continue;
        char *p = line, *end;
        long c = strtol(p, &end, 10);
        assert_true(*end == ',' && c >= 1 && c <= max_cls);
        dice[c - 1] = strtod(end + 1, &end);
        assert_true(*end == ',');
        hd[c - 1] = strtod(end + 1, &end); /* strtod reads "inf" */
        assert_true(*end == ',');
        rows++;
    }
    fclose(f);
    assert_true(rows >= 1);
    return 0;
}

static void fill_box(float *lab, const Grid *g, const int lo[3],
                     const int hi[3], float v)
{
    for (int z = lo[2]; z < hi[2]; z++)
        for (int y = lo[1]; y < hi[1]; y++)
            for (int x = lo[0]; x < hi[0]; x++)
                lab[((int64_t)z * g->n[1] + y) * g->n[0] + x] = v;
}

static void test_identical(void **state)
{
    (void)state;
    Grid g = {{20, 18, 16}, {1.0, 1.0, 1.0}, -10, NIFTI_TYPE_UINT8};
    float *lab = calloc(20 * 18 * 16, sizeof *lab);
    fill_box(lab, &g, (int[]){3, 4, 5}, (int[]){12, 13, 11}, 1);
    const char *p = tmp("same.nii.gz");
    write_labels(p, &g, lab);
    double dice[1], hd[1];
    char err[512];
    assert_int_equal(run_eval(p, p, NULL, dice, hd, 1, err, sizeof err), 0);
    assert_true(dice[0] == 1.0);
    assert_true(hd[0] == 0.0);
    free(lab);
}

/* Two L^3 cubes offset by 3 voxels along one axis: every distance between
 * the boundaries is <= 3 voxels along that axis and the two far faces (a
 * sixth of all boundary voxels, > 5%) are exactly 3 away, so HD95 =
 * 3 * spacing[axis] and Dice = (L-3)/L.  Tolerance 1e-9 mm: the distance
 * transform sums a few squared doubles, rounding is ~1e-15 relative. */
static void check_offset(int axis, const double sp[3])
{
    Grid g = {{24, 22, 20}, {sp[0], sp[1], sp[2]}, -10, NIFTI_TYPE_UINT8};
    size_t n = 24 * 22 * 20;
    float *a = calloc(n, sizeof *a), *b = calloc(n, sizeof *b);
    int lo[3] = {4, 5, 6}, hi[3] = {12, 13, 14}; /* L = 8 */
    fill_box(a, &g, lo, hi, 1);
    lo[axis] += 3;
    hi[axis] += 3;
    fill_box(b, &g, lo, hi, 1);
    const char *pa = tmp("cube_a.nii.gz"), *pb = tmp("cube_b.nii.gz");
    write_labels(pa, &g, a);
    write_labels(pb, &g, b);
    double dice[1], hd[1];
    char err[512];
    assert_int_equal(run_eval(pa, pb, NULL, dice, hd, 1, err, sizeof err), 0);
    assert_true(fabs(dice[0] - 5.0 / 8.0) < 1e-12);
    if (fabs(hd[0] - 3.0 * stored(sp[axis])) > 1e-9)
        fail_msg("axis %d: HD95 %.17g, expected %.17g", axis, hd[0],
                 3.0 * stored(sp[axis]));
    free(a);
    free(b);
}

static void test_offset_cubes_anisotropic(void **state)
{
    (void)state;
    const double sp[3] = {2.0, 0.7, 1.3};
    for (int axis = 0; axis < 3; axis++)
        check_offset(axis, sp);
}

/* ---- brute-force oracle ---- */

static int boundary(const float *lab, const int64_t n[3], float c, int64_t x,
                    int64_t y, int64_t z)
{
    int64_t i = (z * n[1] + y) * n[0] + x;
    if (lab[i] != c) return 0;
    const int64_t d[6][3] = {{-1, 0, 0}, {1, 0, 0},  {0, -1, 0},
                             {0, 1, 0},  {0, 0, -1}, {0, 0, 1}};
    for (int k = 0; k < 6; k++) {
        int64_t X = x + d[k][0], Y = y + d[k][1], Z = z + d[k][2];
        if (X < 0 || Y < 0 || Z < 0 || X >= n[0] || Y >= n[1] || Z >= n[2])
            return 1;
        if (lab[(Z * n[1] + Y) * n[0] + X] != c) return 1;
    }
    return 0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Directed distances from boundary(a) to the nearest boundary(b), by
 * trying every pair; appended to out. */
static size_t directed(const float *a, const float *b, const Grid *g, float c,
                       double *out, size_t k)
{
    const int64_t *n = g->n;
    for (int64_t z = 0; z < n[2]; z++)
        for (int64_t y = 0; y < n[1]; y++)
            for (int64_t x = 0; x < n[0]; x++) {
                if (!boundary(a, n, c, x, y, z)) continue;
                double best = INFINITY;
                for (int64_t Z = 0; Z < n[2]; Z++)
                    for (int64_t Y = 0; Y < n[1]; Y++)
                        for (int64_t X = 0; X < n[0]; X++) {
                            if (!boundary(b, n, c, X, Y, Z)) continue;
                            double dx = (double)(x - X) * stored(g->sp[0]);
                            double dy = (double)(y - Y) * stored(g->sp[1]);
                            double dz = (double)(z - Z) * stored(g->sp[2]);
                            double d = sqrt(dx * dx + dy * dy + dz * dz);
                            if (d < best) best = d;
                        }
                out[k++] = best;
            }
    return k;
}

static double brute_hd95(const float *p, const float *gt, const Grid *g,
                         float c)
{
    size_t n = (size_t)(g->n[0] * g->n[1] * g->n[2]);
    double *d = malloc(2 * n * sizeof *d);
    size_t k = directed(p, gt, g, c, d, 0);
    k = directed(gt, p, g, c, d, k);
    qsort(d, k, sizeof *d, cmp_d);
    double pos = 0.95 * (double)(k - 1);
    size_t i0 = (size_t)pos, i1 = i0 + 1 < k ? i0 + 1 : i0;
    double r = d[i0] + (pos - (double)i0) * (d[i1] - d[i0]);
    free(d);
    return r;
}

/* Random blobs: a few random boxes per class; 3 classes incl. background.
 * Small grids keep the O(n^2) oracle fast. */
static void random_labels(TestRng *r, float *lab, const Grid *g)
{
    size_t n = (size_t)(g->n[0] * g->n[1] * g->n[2]);
    memset(lab, 0, n * sizeof *lab);
    for (int c = 1; c <= 2; c++)
        for (int b = 0; b < 3; b++) {
            int lo[3], hi[3];
            for (int d = 0; d < 3; d++) {
                int m = (int)g->n[d];
                lo[d] = (int)trng_uniform(r, 0.0f, (float)(m - 2));
                hi[d] =
                    lo[d] + 1 + (int)trng_uniform(r, 0.0f, (float)(m / 2));
                if (hi[d] > m) hi[d] = m;
            }
            fill_box(lab, g, lo, hi, (float)c);
        }
}

static void test_random_vs_bruteforce(void **state)
{
    (void)state;
    TestRng r = {12345};
    Grid g = {{13, 11, 9}, {1.5, 0.8, 2.2}, -10, NIFTI_TYPE_UINT8};
    size_t n = 13 * 11 * 9;
    float *p = malloc(n * sizeof *p), *t = malloc(n * sizeof *t);
    for (int trial = 0; trial < 6; trial++) {
        random_labels(&r, p, &g);
        random_labels(&r, t, &g);
        const char *pp = tmp("rp.nii"), *pt = tmp("rt.nii");
        write_labels(pp, &g, p);
        write_labels(pt, &g, t);
        double dice[2], hd[2];
        char err[512];
        assert_int_equal(
            run_eval(pp, pt, "--classes 3", dice, hd, 2, err, sizeof err), 0);
        for (int c = 1; c <= 2; c++) {
            size_t np = 0, nt = 0, ni = 0;
            for (size_t i = 0; i < n; i++) {
                np += p[i] == (float)c;
                nt += t[i] == (float)c;
                ni += p[i] == (float)c && t[i] == (float)c;
            }
            double want_dice = 2.0 * (double)ni / (double)(np + nt);
            double want_hd = brute_hd95(p, t, &g, (float)c);
            /* 1e-9: both sides compute the same exact distances in double;
             * only the summation order differs */
            if (fabs(dice[c - 1] - want_dice) > 1e-12 ||
                fabs(hd[c - 1] - want_hd) > 1e-9)
                fail_msg("trial %d class %d: dice %.17g vs %.17g, hd95 "
                         "%.17g vs %.17g",
                         trial, c, dice[c - 1], want_dice, hd[c - 1],
                         want_hd);
        }
    }
    free(p);
    free(t);
}

/* Both empty: Dice 1, HD95 0.  One empty: Dice 0, HD95 inf (CSV) and
 * null (JSON), and the mean HD95 becomes null too. */
static void test_empty_rules(void **state)
{
    (void)state;
    Grid g = {{10, 10, 10}, {1.0, 1.0, 1.0}, 0, NIFTI_TYPE_UINT8};
    float p[1000] = {0}, t[1000] = {0};
    fill_box(p, &g, (int[]){2, 2, 2}, (int[]){6, 6, 6}, 1);
    fill_box(t, &g, (int[]){2, 2, 2}, (int[]){6, 6, 6}, 1);
    fill_box(t, &g, (int[]){7, 7, 7}, (int[]){9, 9, 9}, 2);
    const char *pp = tmp("ep.nii.gz"), *pt = tmp("et.nii.gz");
    write_labels(pp, &g, p);
    write_labels(pt, &g, t);
    double dice[3], hd[3];
    char err[512];
    assert_int_equal(
        run_eval(pp, pt, "--classes 4", dice, hd, 3, err, sizeof err), 0);
    assert_true(dice[0] == 1.0 && hd[0] == 0.0);
    assert_true(dice[1] == 0.0 && isinf(hd[1]));
    assert_true(dice[2] == 1.0 && hd[2] == 0.0);

    char bin[256], cmd[2048];
    const char *js = tmp("e.json");
    remove(js);
    snprintf(cmd, sizeof cmd, "%s %s %s --classes 4 --json %s >/dev/null",
             bin_path("sauron-eval", bin, sizeof bin), pp, pt, js);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    FILE *f = fopen(js, "r");
    assert_non_null(f);
    char buf[4096];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = '\0';
    fclose(f);
    assert_non_null(
        strstr(buf, "{\"class\": 2, \"dice\": 0, \"hd95_mm\": null"));
    assert_non_null(
        strstr(buf, "{\"class\": 3, \"dice\": 1, \"hd95_mm\": 0,"));
    assert_non_null(strstr(buf, "\"mean_hd95_mm\": null"));
    assert_null(strstr(buf, "inf"));
    /* an existing output is kept unless --force */
    assert_int_not_equal(run_cmd(cmd, err, sizeof err), 0);
    assert_non_null(strstr(err, "--force"));
}

static void expect_rejected(const char *a, const char *b, const char *extra,
                            const char *needle)
{
    double dice[4], hd[4];
    char err[512];
    int rc = run_eval(a, b, extra, dice, hd, 4, err, sizeof err);
    if (rc == 0 || !strstr(err, needle))
        fail_msg("expected failure mentioning '%s'; exit %d, stderr '%s'",
                 needle, rc, err);
    assert_non_null(strstr(err, "error:"));
}

static void test_grid_mismatch(void **state)
{
    (void)state;
    Grid g = {{10, 9, 8}, {1.0, 1.0, 1.0}, 0, NIFTI_TYPE_UINT8};
    float lab[10 * 9 * 8] = {0};
    fill_box(lab, &g, (int[]){2, 2, 2}, (int[]){6, 6, 6}, 1);
    const char *ref = tmp("g_ref.nii.gz");
    write_labels(ref, &g, lab);

    Grid d = g;
    d.n[2] = 7; /* fewer slices: the buffer is only read up to 10*9*7 */
    const char *pd = tmp("g_dims.nii.gz");
    write_labels(pd, &d, lab);
    expect_rejected(pd, ref, NULL, "dimensions");

    Grid s = g;
    s.sp[1] = 1.2;
    const char *ps = tmp("g_pix.nii.gz");
    write_labels(ps, &s, lab);
    expect_rejected(ps, ref, NULL, "not on the same grid");

    Grid o = g;
    o.origin_x = 1.0; /* same size, shifted 1 mm in the world */
    const char *po = tmp("g_origin.nii.gz");
    write_labels(po, &o, lab);
    expect_rejected(po, ref, NULL, "voxel-to-world");
}

static void test_bad_inputs(void **state)
{
    (void)state;
    Grid g = {{6, 6, 6}, {1.0, 1.0, 1.0}, 0, NIFTI_TYPE_FLOAT32};
    float lab[216] = {0};
    const char *ok = tmp("b_ok.nii.gz");
    lab[100] = 3;
    write_labels(ok, &g, lab);
    lab[7] = 0.5f; /* not a label */
    const char *frac = tmp("b_frac.nii.gz");
    write_labels(frac, &g, lab);
    expect_rejected(frac, ok, NULL, "not a label map");
    expect_rejected(tmp("missing.nii.gz"), ok, NULL, "missing.nii.gz");
    expect_rejected(ok, ok, "--classes 2", "--classes");
    expect_rejected(ok, ok, "--classes x", "--classes");

    const char *junk = tmp("junk.nii");
    FILE *f = fopen(junk, "wb");
    assert_non_null(f);
    fputs("this is not a NIfTI file at all, not even close.............", f);
    fclose(f);
    expect_rejected(junk, ok, NULL, "junk.nii");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identical),
        cmocka_unit_test(test_offset_cubes_anisotropic),
        cmocka_unit_test(test_random_vs_bruteforce),
        cmocka_unit_test(test_empty_rules),
        cmocka_unit_test(test_grid_mismatch),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
