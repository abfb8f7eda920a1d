/* The benchmark peer tools/torch_segment.py (PyTorch running the ONNX
 * graph, as tools/bench_real.sh runs it) against our `segment` on the
 * shipped models/default.sslim and its ONNX export: same label map, same
 * geometry, batch size irrelevant, the stdout lines bench_real.sh parses
 * present and numeric, and its error paths.  test_peer.c does the same for
 * the ONNX Runtime peer; the checks both share are in peercheck.c.
 *
 * Scans: a small synthetic head (skull rim around brain-like tissue, a
 * gradient and noise; the model labels a real part of it as brain, so an
 * all-background map cannot pass) as float32 and as int16 with
 * scl_slope/scl_inter.  The model z-scores its input, so only the
 * negative slope makes a reader that ignores the scaling see another
 * (inverted) image; the positive one checks the int16 path itself.
 *
 * Needs /usr/bin/python3 with torch, onnx, nibabel (tools/deps.sh bench):
 * part of `make check-long`, not of `make test`.  Runs from the
 * repository root, where models/ and tools/ are.
 */
#include "peercheck.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NX 44
#define NY 40
#define NZ 4
#define NV (NX * NY * NZ)
/* torch's float32 convolutions and ours differ by rounding (~1e-5 of the
 * output scale, as ONNX Runtime's do: docs/DESIGN.md), so a label may only
 * differ where our two class probabilities are within 2e-4 of each other
 * (with two classes |p1 - p0| = 2|p1 - 0.5|): a near-tie, allowed and
 * reported, anything else fails. */
#define TIE_MARGIN 2e-4
/* The head must give a non-trivial map: at least this many voxels of
 * each class (measured: about a third of the 7040 voxels are brain). */
#define MIN_CLASS_VOXELS 300

/* Head intensity at (i, j, k): brain 500 inside a skull rim of 1000 with
 * a dark gap, air 0; a gradient along j and noise, the sum of two
 * uniforms on [-25, 25] (sd ~20). */
static float head(int i, int j, int k, TestRng *rng)
{
    double x = (i - NX / 2.0) / (0.45 * NX), y = (j - NY / 2.0) / (0.45 * NY);
    double r = sqrt(x * x + y * y);
    double v = r < 0.75 ? 500 : r < 0.85 ? 150 : r < 1.0 ? 1000 : 0;
    v += 30.0 * j / NY + 5.0 * k;
    v += (double)trng_uniform(rng, -25.0f, 25.0f);
    return (float)(v + (double)trng_uniform(rng, -25.0f, 25.0f));
}

static const PeerPhantom HEAD = {NX, NY, NZ, head, 7};

/* /usr/bin/python3 tools/torch_segment.py ARGS, stdout into out_txt (NULL:
 * dropped); returns the exit status, the first stderr line in err and the
 * number of stderr lines in *lines. */
static int torch_segment(const char *args, const char *out_txt, char *err,
                         size_t len, int *lines)
{
    char cmd[3200];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/torch_segment.py %s --threads 1 >'%s'",
             args, out_txt ? out_txt : "/dev/null");
    return peer_run(cmd, err, len, lines);
}

/* One torch_segment.py run of `scan` at `batch` (--repeat 2) checked
 * against segment's map `ours`: timing line, --check line, geometry.
 * Returns the peer's label map (nifti_image_free). */
static nifti_image *run_peer(const char *name, const char *scan,
                             const char *ours, const float *probs, int batch)
{
    char out_name[64], out[512], out_txt[512], args[2500], err[512];
    snprintf(out_name, sizeof out_name, "%s_torch_b%d.nii.gz", name, batch);
    snprintf(out, sizeof out, "%s", test_tmp_path(out_name));
    snprintf(out_txt, sizeof out_txt, "%s",
             test_tmp_path("torch_stdout.txt"));
    snprintf(args, sizeof args,
             "'%s' '%s' '%s' --check '%s' --batch %d --repeat 2",
             peer_default_onnx(), scan, out, ours, batch);
    int lines;
    int st = torch_segment(args, out_txt, err, sizeof err, &lines);
    if (st) fail_msg("torch_segment.py on %s: exit %d: %s", scan, st, err);

    char l1[512], l2[512];
    peer_read_lines(out_txt, l1, l2, sizeof l1);
    /* the fields bench_real.sh reads (its field()): numbers, in order */
    double ms = -1, load = -1, peak = -1, base = -1, agree;
    int runs = 0;
    if (sscanf(l1,
               "volume_ms %lf runs %d load_ms %lf peak_rss_mb %lf "
               "base_rss_mb %lf",
               &ms, &runs, &load, &peak, &base) != 5)
        fail_msg("%s b%d: no 'volume_ms .. runs .. load_ms .. peak_rss_mb "
                 ".. base_rss_mb ..' line: %s",
                 name, batch, l1);
    assert_int_equal(runs, 2);
    assert_true(ms > 0 && load > 0 && load <= ms);
    /* the interpreter with torch imported holds tens of MB; the peak
     * includes it */
    assert_true(base > 10 && peak >= base);
    char what[96];
    snprintf(what, sizeof what, "%s b%d", name, batch);
    long differ;
    peer_parse_check(what, l2, NV, &agree, &differ);
    /* bench_real.sh's threshold */
    assert_true(agree >= 0.999);

    nifti_image *in = peer_read(scan, 0);
    nifti_image *a = peer_read(ours, 1);
    nifti_image *b = peer_read(out, 1);
    peer_assert_same_geometry(in, b);
    assert_int_equal(b->datatype, DT_UINT8);
    snprintf(what, sizeof what, "%s: ours vs torch b%d", name, batch);
    /* --check counts what we count */
    assert_int_equal(peer_count_differ(what, a, b, probs, NV, TIE_MARGIN),
                     differ);
    nifti_image_free(in);
    nifti_image_free(a);
    return b;
}

/* segment on the scan, then the peer at batches 1 and 4: each agrees
 * with segment, and the two agree with each other. */
static void check_scan(const char *name, double slope, double inter)
{
    PeerScan s;
    peer_segment(&s, name, &HEAD, slope, inter);
    nifti_image *p = peer_read_probs(s.probs, NV);
    nifti_image *a = peer_read(s.ours, 1);
    /* 2 classes: a uint8 map */
    assert_int_equal(a->datatype, DT_UINT8);
    peer_assert_two_classes(name, a, NV, MIN_CLASS_VOXELS);

    nifti_image *b1 = run_peer(name, s.scan, s.ours, p->data, 1);
    nifti_image *b4 = run_peer(name, s.scan, s.ours, p->data, 4);
    char what[96];
    snprintf(what, sizeof what, "%s: torch b1 vs b4", name);
    long d = peer_count_differ(what, b1, b4, p->data, NV, TIE_MARGIN);
    fprintf(stderr, "%s: batch 1 and 4 differ on %ld voxels\n", name, d);
    nifti_image_free(b1);
    nifti_image_free(b4);
    nifti_image_free(a);
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

/* A missing scan: no output made. */
static void test_missing_input(void **state)
{
    (void)state;
    peer_check_missing_input(torch_segment, "error: torch_segment: ");
}

/* An existing output without --force: refused, naming --force, the file
 * left alone; with --force it is replaced by a label map. */
static void test_no_clobber(void **state)
{
    (void)state;
    char scan[512], exists[512];
    snprintf(scan, sizeof scan, "%s", test_tmp_path("clobber_scan.nii.gz"));
    snprintf(exists, sizeof exists, "%s", test_tmp_path("exists.nii.gz"));
    peer_check_no_clobber(torch_segment, "error: torch_segment: ", &HEAD,
                          scan, exists);

    char args[2500], err[512];
    int lines;
    snprintf(args, sizeof args, "'%s' '%s' '%s' --force", peer_default_onnx(),
             scan, exists);
    int st = torch_segment(args, NULL, err, sizeof err, &lines);
    if (st) fail_msg("--force: exit %d: %s", st, err);
    nifti_image *o = peer_read(exists, 1);
    assert_int_equal((int64_t)o->nvox, NV);
    nifti_image_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float32_scan),
        cmocka_unit_test(test_int16_scaled_scan),
        cmocka_unit_test(test_int16_negative_slope_scan),
        cmocka_unit_test(test_missing_input),
        cmocka_unit_test(test_no_clobber),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
