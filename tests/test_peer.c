/* The benchmark peer tools/ort_segment.js (ONNX Runtime, whole volume, as
 * `make bench` runs it; tools/bench_real.sh) against our `segment` on the
 * shipped models/default.sslim and its ONNX export: same scan, same label
 * map, same geometry.  If the peer drifts from segment's pipeline
 * (scaling, z-score, axes, padding, argmax), the benchmark compares
 * different work and this test fails.
 *
 * Scans: a small synthetic "head" (bright rim around medium tissue, plus
 * a smooth gradient and noise) on which the model labels a real fraction
 * of voxels as brain, so an all-background map cannot pass; as float32,
 * as int16 with scl_slope 0.5 / scl_inter -3, and as int16 with
 * scl_slope -0.5.  The model z-scores its input, which no positive
 * slope or intercept changes (up to rounding), so only the negative slope
 * makes a reader that ignores the scaling see a different (inverted)
 * image and fail here.
 *
 * When onnxruntime-node is missing the ORT part fails, unless SL_NO_ORT=1
 * asks to skip it (ort_available in tests/testutil.h).  Tests run from the
 * repository root (make test-run), where models/ and tools/ are.
 */
#include "testutil.h"
#include "niftifixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nifti2_io.h>

#define DEFAULT_MODEL "models/default.sslim"
#define NX 40
#define NY 48
#define NZ 5
#define NV (NX * NY * NZ)
/* Our probabilities and ONNX Runtime's agree within 1e-4 of the output
 * scale (DESIGN.md; test_convert.c checks it on this model), so a label
 * can only differ where our two class probabilities are within 2e-4 of
 * each other (a near-tie; with two classes |p1 - p0| = 2|p1 - 0.5|).
 * On these scans no voxel is that close and the maps agree exactly, but
 * a near-tie is not a bug, so it is allowed and reported. */
#define TIE_MARGIN 2e-4
/* The phantom must give a non-trivial map: at least this many voxels of
 * each class (about 1300 of 9600 are brain). */
#define MIN_CLASS_VOXELS 300

static const char *tmp(const char *name)
{
    static char buf[16][512];
    static int k;
    k = (k + 1) % 16;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

/* Phantom intensity at voxel (i, j, k): rim 900, inside 600, a thin
 * outer layer 300, background 0; plus a gradient along i and noise. */
static float phantom(int i, int j, int k, TestRng *rng)
{
    double x = (i - NX / 2.0) / (0.42 * NX), y = (j - NY / 2.0) / (0.42 * NY);
    double r = sqrt(x * x + y * y);
    double v = r < 0.8 ? 600 : r < 0.95 ? 900 : r < 1.0 ? 300 : 0;
    v += 40.0 * i / NX + 10.0 * k;
    /* sum of three uniforms: roughly Gaussian, sd 30 */
    double n = 0;
    for (int t = 0; t < 3; t++) n += (double)trng_uniform(rng, -52.0f, 52.0f);
    return (float)(v + n);
}

/* Write the phantom as float32 (slope 0) or as int16 stored as
 * (value - inter) / slope with those scl_slope and scl_inter; oblique
 * qform and a different sform. */
static void write_scan(const char *path, double slope, double inter)
{
    int int16 = slope != 0;
    int64_t dims[8] = {3, NX, NY, NZ, 1, 1, 1, 1};
    nifti_image *nim =
        nifti_make_new_nim(dims, int16 ? DT_INT16 : DT_FLOAT32, 1);
    assert_non_null(nim);
    TestRng rng = {42};
    for (int k = 0, idx = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++, idx++) {
                float v = phantom(i, j, k, &rng);
                if (int16)
                    ((int16_t *)nim->data)[idx] =
                        (int16_t)lrint(((double)v - inter) / slope);
                else
                    ((float *)nim->data)[idx] = v;
            }
    if (int16) {
        nim->scl_slope = (float)slope;
        nim->scl_inter = (float)inter;
    }
    nifti_fixture_geometry(nim);
    assert_int_equal(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
    assert_int_equal(access(path, R_OK), 0);
}

/* The ONNX export of the default model, made once. */
static const char *default_onnx(void)
{
    static int done;
    const char *onnx = tmp("default.onnx");
    if (done) return onnx;
    char bin[300], cmd[1500], err[512];
    snprintf(cmd, sizeof cmd, "%s --no-finetune %s '%s' >/dev/null",
             bin_path("sauron-compress", bin, sizeof bin), DEFAULT_MODEL,
             onnx);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fail_msg("sauron-compress --no-finetune: exit %d: %s", st, err);
    done = 1;
    return onnx;
}

/* Folder for ORT_NODE_PATH (testutil's ort_dir); call after ort_available()
 * returned 1. */
static const char *node_dir(void)
{
    const char *dir = ort_dir();
    if (!dir) fail_msg("onnxruntime-node vanished after ort_available()");
    return dir;
}

/* node tools/ort_segment.js ARGS, stdout into `out_txt` (may be NULL);
 * returns the exit status, the first stderr line in err and the number
 * of stderr lines in *lines. */
static int ort_segment(const char *args, const char *out_txt, char *err,
                       size_t len, int *lines)
{
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "ORT_NODE_PATH='%s' node tools/ort_segment.js %s >'%s'",
             node_dir(), args, out_txt ? out_txt : "/dev/null");
    int st = run_cmd(cmd, err, len);
    *lines = 0;
    FILE *f = fopen(tmp("stderr.txt"), "r");
    assert_non_null(f);
    int c;
    while ((c = fgetc(f)) != EOF)
        *lines += c == '\n';
    fclose(f);
    return st;
}

static void assert_same_geometry(const nifti_image *in, const nifti_image *o)
{
    assert_int_equal(o->ndim, 3);
    assert_int_equal(o->nx, in->nx);
    assert_int_equal(o->ny, in->ny);
    assert_int_equal(o->nz, in->nz);
    /* Every value comes from the same float32 header fields and is
     * written back as float32, so equality is exact. */
    for (int i = 1; i <= 3; i++) assert_true(o->pixdim[i] == in->pixdim[i]);
    assert_int_equal(o->qform_code, in->qform_code);
    assert_int_equal(o->sform_code, in->sform_code);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            assert_true(o->qto_xyz.m[r][c] == in->qto_xyz.m[r][c]);
            assert_true(o->sto_xyz.m[r][c] == in->sto_xyz.m[r][c]);
        }
}

static int label_at(const nifti_image *nim, size_t i)
{
    if (nim->datatype == DT_UINT8) return ((const uint8_t *)nim->data)[i];
    if (nim->datatype == DT_INT16) return ((const int16_t *)nim->data)[i];
    fail_msg("label map datatype %d is neither uint8 nor int16",
             nim->datatype);
    return -1;
}

/* segment and ort_segment.js on one scan: label maps equal up to
 * near-ties, the --check line consistent with that, geometry kept. */
static void check_scan(const char *name, double slope, double inter)
{
    char scan_name[64], ours_name[64], probs_name[64], ort_name[64];
    snprintf(scan_name, sizeof scan_name, "%s.nii.gz", name);
    snprintf(ours_name, sizeof ours_name, "%s_ours.nii.gz", name);
    snprintf(probs_name, sizeof probs_name, "%s_probs.nii.gz", name);
    snprintf(ort_name, sizeof ort_name, "%s_ort.nii.gz", name);
    char scan[512], ours[512], probs[512], ort[512], out_txt[512];
    snprintf(scan, sizeof scan, "%s", tmp(scan_name));
    snprintf(ours, sizeof ours, "%s", tmp(ours_name));
    snprintf(probs, sizeof probs, "%s", tmp(probs_name));
    snprintf(ort, sizeof ort, "%s", tmp(ort_name));
    snprintf(out_txt, sizeof out_txt, "%s", tmp("ort_stdout.txt"));
    write_scan(scan, slope, inter);

    char bin[300], cmd[3000], err[512];
    snprintf(cmd, sizeof cmd,
             "%s -q --threads 1 -m %s -o '%s' --probabilities '%s' '%s'",
             bin_path("segment", bin, sizeof bin), DEFAULT_MODEL, ours, probs,
             scan);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fail_msg("segment on %s: exit %d: %s", scan, st, err);
    if (!ort_available()) return;

    char args[2500];
    snprintf(args, sizeof args, "'%s' '%s' '%s' --check '%s' --threads 1",
             default_onnx(), scan, ort, ours);
    int lines;
    st = ort_segment(args, out_txt, err, sizeof err, &lines);
    if (st) fail_msg("ort_segment.js on %s: exit %d: %s", scan, st, err);

    /* stdout: the timing line, then the agreement line */
    FILE *f = fopen(out_txt, "r");
    assert_non_null(f);
    char l1[512] = "", l2[512] = "";
    if (!fgets(l1, sizeof l1, f)) l1[0] = '\0';
    if (!fgets(l2, sizeof l2, f)) l2[0] = '\0';
    fclose(f);
    double ms = -1, agree = -1;
    int runs = 0;
    long differ = -1, of = -1;
    if (sscanf(l1, "volume_ms %lf runs %d load_ms", &ms, &runs) != 2 ||
        ms <= 0 || runs != 1)
        fail_msg("%s: no 'volume_ms <ms> runs 1 load_ms' line: %s", name, l1);
    if (sscanf(l2, "agree %lf differ %ld of %ld", &agree, &differ, &of) != 3)
        fail_msg("%s: no 'agree ... differ ... of ...' line: %s", name, l2);
    assert_int_equal(of, NV);

    nifti_image *in = nifti_image_read(scan, 0);
    nifti_image *a = nifti_image_read(ours, 1);
    nifti_image *b = nifti_image_read(ort, 1);
    nifti_image *p = nifti_image_read(probs, 1);
    assert_non_null(in);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(p);
    assert_same_geometry(in, a);
    assert_same_geometry(in, b);
    assert_int_equal(p->datatype, DT_FLOAT32);
    assert_int_equal((int64_t)p->nvox, 2 * NV);

    const float *pr = p->data;
    long n_diff = 0, n_brain = 0;
    for (size_t i = 0; i < NV; i++) {
        int la = label_at(a, i), lb = label_at(b, i);
        n_brain += la == 1;
        if (la == lb) continue;
        n_diff++;
        double gap = fabs((double)pr[NV + i] - (double)pr[i]);
        fprintf(stderr, "%s: voxel %zu ours %d ORT %d, |p1 - p0| = %.3g\n",
                name, i, la, lb, gap);
        if (gap > TIE_MARGIN)
            fail_msg("%s: voxel %zu differs and is no near-tie", name, i);
    }
    /* --check counts what we count; its fraction is printed to 8 places */
    assert_int_equal(differ, n_diff);
    assert_true(fabs(agree - (double)(NV - n_diff) / NV) <= 5e-9);
    if (n_diff == 0) assert_true(strncmp(l2, "agree 1.00000000 ", 17) == 0);
    assert_true(n_brain >= MIN_CLASS_VOXELS);
    assert_true(NV - n_brain >= MIN_CLASS_VOXELS);
    nifti_image_free(in);
    nifti_image_free(a);
    nifti_image_free(b);
    nifti_image_free(p);
}

static void test_float32_scan(void **state)
{
    (void)state;
    check_scan("f32", 0, 0);
}

static void test_int16_scaled_scan(void **state)
{
    (void)state;
    check_scan("i16", 0.5, -3);
}

static void test_int16_negative_slope_scan(void **state)
{
    (void)state;
    check_scan("i16neg", -0.5, -3);
}

/* A missing scan, and an output that exists without --force: exit
 * non-zero with exactly one "error: ort_segment:" line; the existing
 * output is left alone. */
static void test_errors(void **state)
{
    (void)state;
    if (!ort_available()) return;
    char args[2500], err[512];
    int lines;
    snprintf(args, sizeof args, "'%s' '%s' '%s'", default_onnx(),
             tmp("no_such_scan.nii.gz"), tmp("never.nii.gz"));
    int st = ort_segment(args, NULL, err, sizeof err, &lines);
    assert_int_not_equal(st, 0);
    assert_int_equal(lines, 1);
    assert_true(strncmp(err, "error: ort_segment: ", 20) == 0);
    assert_int_not_equal(access(tmp("never.nii.gz"), F_OK), 0);

    const char *scan = tmp("err_scan.nii.gz");
    const char *exists = tmp("exists.nii.gz");
    write_scan(scan, 0, 0);
    FILE *f = fopen(exists, "w");
    assert_non_null(f);
    fputs("keep", f);
    fclose(f);
    snprintf(args, sizeof args, "'%s' '%s' '%s'", default_onnx(), scan,
             exists);
    st = ort_segment(args, NULL, err, sizeof err, &lines);
    assert_int_not_equal(st, 0);
    assert_int_equal(lines, 1);
    assert_true(strncmp(err, "error: ort_segment: ", 20) == 0);
    assert_non_null(strstr(err, "--force"));
    char keep[8] = "";
    f = fopen(exists, "r");
    assert_non_null(f);
    assert_non_null(fgets(keep, sizeof keep, f));
    fclose(f);
    assert_string_equal(keep, "keep");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float32_scan),
        cmocka_unit_test(test_int16_scaled_scan),
        cmocka_unit_test(test_int16_negative_slope_scan),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
