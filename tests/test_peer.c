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
#include "peercheck.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NX 40
#define NY 48
#define NZ 5
#define NV (NX * NY * NZ)
/* Our probabilities and ONNX Runtime's agree within 1e-4 of the output
 * scale (docs/DESIGN.md; test_convert.c checks it on this model), so a label
 * can only differ where our two class probabilities are within 2e-4 of
 * each other (a near-tie; with two classes |p1 - p0| = 2|p1 - 0.5|).
 * On these scans no voxel is that close and the maps agree exactly, but
 * a near-tie is not a bug, so it is allowed and reported. */
#define TIE_MARGIN 2e-4
/* The phantom must give a non-trivial map: at least this many voxels of
 * each class (about 1300 of 9600 are brain). */
#define MIN_CLASS_VOXELS 300

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
    for (int t = 0; t < 3; t++)
        n += (double)trng_uniform(rng, -52.0f, 52.0f);
    return (float)(v + n);
}

static const PeerPhantom PHANTOM = {NX, NY, NZ, phantom, 42};

/* node tools/ort_segment.js ARGS, stdout into `out_txt` (may be NULL);
 * returns the exit status, the first stderr line in err and the number
 * of stderr lines in *lines.  Call after ort_available() returned 1. */
static int ort_segment(const char *args, const char *out_txt, char *err,
                       size_t len, int *lines)
{
    const char *dir = ort_dir();
    if (!dir) fail_msg("onnxruntime-node vanished after ort_available()");
    char cmd[3200];
    snprintf(cmd, sizeof cmd,
             "ORT_NODE_PATH='%s' node tools/ort_segment.js %s >'%s'", dir,
             args, out_txt ? out_txt : "/dev/null");
    return peer_run(cmd, err, len, lines);
}

/* segment and ort_segment.js on one scan: label maps equal up to
 * near-ties, the --check line consistent with that, geometry kept. */
static void check_scan(const char *name, double slope, double inter)
{
    PeerScan s;
    peer_segment(&s, name, &PHANTOM, slope, inter);
    if (!ort_available()) return;

    char ort_name[64], ort[512], out_txt[512];
    snprintf(ort_name, sizeof ort_name, "%s_ort.nii.gz", name);
    snprintf(ort, sizeof ort, "%s", test_tmp_path(ort_name));
    snprintf(out_txt, sizeof out_txt, "%s", test_tmp_path("ort_stdout.txt"));
    char args[2500], err[512];
    snprintf(args, sizeof args, "'%s' '%s' '%s' --check '%s' --threads 1",
             peer_default_onnx(), s.scan, ort, s.ours);
    int lines;
    int st = ort_segment(args, out_txt, err, sizeof err, &lines);
    if (st) fail_msg("ort_segment.js on %s: exit %d: %s", s.scan, st, err);

    /* stdout: the timing line, then the agreement line */
    char l1[512], l2[512];
    peer_read_lines(out_txt, l1, l2, sizeof l1);
    double ms = -1, agree;
    int runs = 0;
    long differ;
    if (sscanf(l1, "volume_ms %lf runs %d load_ms", &ms, &runs) != 2 ||
        ms <= 0 || runs != 1)
        fail_msg("%s: no 'volume_ms <ms> runs 1 load_ms' line: %s", name, l1);
    peer_parse_check(name, l2, NV, &agree, &differ);

    nifti_image *in = peer_read(s.scan, 0);
    nifti_image *a = peer_read(s.ours, 1);
    nifti_image *b = peer_read(ort, 1);
    nifti_image *p = peer_read_probs(s.probs, NV);
    peer_assert_same_geometry(in, a);
    peer_assert_same_geometry(in, b);
    char what[96];
    snprintf(what, sizeof what, "%s: ours vs ORT", name);
    long n_diff = peer_count_differ(what, a, b, p->data, NV, TIE_MARGIN);
    /* --check counts what we count */
    assert_int_equal(differ, n_diff);
    if (n_diff == 0) assert_true(strncmp(l2, "agree 1.00000000 ", 17) == 0);
    peer_assert_two_classes(name, a, NV, MIN_CLASS_VOXELS);
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
    peer_check_missing_input(ort_segment, "error: ort_segment: ");
    peer_check_no_clobber(ort_segment, "error: ort_segment: ", &PHANTOM,
                          test_tmp_path("err_scan.nii.gz"),
                          test_tmp_path("exists.nii.gz"));
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
