/* The benchmark peer tools/torch_segment.py (PyTorch running the ONNX
 * graph, as tools/bench_real.sh runs it) against our `segment` on the
 * shipped models/default.sslim and its ONNX export: same label map, same
 * geometry, batch size irrelevant, the stdout lines bench_real.sh parses
 * present and numeric, and its error paths.  test_peer.c does the same for
 * the ONNX Runtime peer.
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
#include "niftifixture.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nifti2_io.h>

#define DEFAULT_MODEL "models/default.sslim"
#define NX 44
#define NY 40
#define NZ 4
#define NV (NX * NY * NZ)
/* torch's float32 convolutions and ours differ by rounding (~1e-5 of the
 * output scale, as ONNX Runtime's do: DESIGN.md), so a label may only
 * differ where our two class probabilities are within 2e-4 of each other
 * (with two classes |p1 - p0| = 2|p1 - 0.5|): a near-tie, allowed and
 * reported, anything else fails. */
#define TIE_MARGIN 2e-4
/* The head must give a non-trivial map: at least this many voxels of
 * each class (measured: about a third of the 7040 voxels are brain). */
#define MIN_CLASS_VOXELS 300

static const char *tmp(const char *name)
{
    static char buf[16][512];
    static int k;
    k = (k + 1) % 16;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

/* Head intensity at (i, j, k): brain 500 inside a skull rim of 1000 with
 * a dark gap, air 0; a gradient along j and noise of sd ~25. */
static float head(int i, int j, int k, TestRng *rng)
{
    double x = (i - NX / 2.0) / (0.45 * NX), y = (j - NY / 2.0) / (0.45 * NY);
    double r = sqrt(x * x + y * y);
    double v = r < 0.75 ? 500 : r < 0.85 ? 150 : r < 1.0 ? 1000 : 0;
    v += 30.0 * j / NY + 5.0 * k;
    v += (double)trng_uniform(rng, -25.0f, 25.0f);
    return (float)(v + (double)trng_uniform(rng, -25.0f, 25.0f));
}

/* float32 when slope is 0, else int16 stored as (v - inter) / slope. */
static void write_scan(const char *path, double slope, double inter)
{
    int int16 = slope != 0;
    int64_t dims[8] = {3, NX, NY, NZ, 1, 1, 1, 1};
    nifti_image *nim =
        nifti_make_new_nim(dims, int16 ? DT_INT16 : DT_FLOAT32, 1);
    assert_non_null(nim);
    TestRng rng = {7};
    for (int k = 0, idx = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++, idx++) {
                float v = head(i, j, k, &rng);
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

/* models/default.sslim exported to ONNX, once. */
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

/* /usr/bin/python3 tools/torch_segment.py ARGS, stdout into out_txt (NULL:
 * dropped); returns the exit status, the first stderr line in err and the
 * number of stderr lines in *lines. */
static int torch_segment(const char *args, const char *out_txt, char *err,
                         size_t len, int *lines)
{
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/torch_segment.py %s --threads 1 >'%s'",
             args, out_txt ? out_txt : "/dev/null");
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
    /* float32 header fields copied, so equality is exact */
    for (int i = 1; i <= 3; i++)
        assert_true(o->pixdim[i] == in->pixdim[i]);
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
    fail_msg("label map datatype %d is not uint8 (2 classes)", nim->datatype);
    return -1;
}

/* Voxels where two label maps differ; each must be a near-tie of `probs`
 * (segment's class probabilities, [2][NV]). */
static long count_differ(const char *what, const nifti_image *a,
                         const nifti_image *b, const float *probs)
{
    long n = 0;
    for (size_t i = 0; i < NV; i++) {
        int la = label_at(a, i), lb = label_at(b, i);
        if (la == lb) continue;
        n++;
        double gap = fabs((double)probs[NV + i] - (double)probs[i]);
        fprintf(stderr, "%s: voxel %zu: %d vs %d, |p1 - p0| = %.3g\n", what,
                i, la, lb, gap);
        if (gap > TIE_MARGIN)
            fail_msg("%s: voxel %zu differs and is no near-tie", what, i);
    }
    return n;
}

/* One torch_segment.py run of `scan` at `batch` (--repeat 2) checked
 * against segment's map `ours`: timing line, --check line, geometry.
 * Returns the peer's label map (nifti_image_free). */
static nifti_image *run_peer(const char *name, const char *scan,
                             const char *ours, const float *probs, int batch)
{
    char out_name[64], out[512], out_txt[512], args[2500], err[512];
    snprintf(out_name, sizeof out_name, "%s_torch_b%d.nii.gz", name, batch);
    snprintf(out, sizeof out, "%s", tmp(out_name));
    snprintf(out_txt, sizeof out_txt, "%s", tmp("torch_stdout.txt"));
    snprintf(args, sizeof args,
             "'%s' '%s' '%s' --check '%s' --batch %d --repeat 2",
             default_onnx(), scan, out, ours, batch);
    int lines;
    int st = torch_segment(args, out_txt, err, sizeof err, &lines);
    if (st) fail_msg("torch_segment.py on %s: exit %d: %s", scan, st, err);

    FILE *f = fopen(out_txt, "r");
    assert_non_null(f);
    char l1[512] = "", l2[512] = "";
    if (!fgets(l1, sizeof l1, f)) l1[0] = '\0';
    if (!fgets(l2, sizeof l2, f)) l2[0] = '\0';
    fclose(f);
    /* the fields bench_real.sh reads (its field()): numbers, in order */
    double ms = -1, load = -1, peak = -1, base = -1, agree = -1;
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
    long differ = -1, of = -1;
    if (sscanf(l2, "agree %lf differ %ld of %ld", &agree, &differ, &of) != 3)
        fail_msg("%s b%d: no 'agree .. differ .. of ..' line: %s", name,
                 batch, l2);
    assert_int_equal(of, NV);
    /* bench_real.sh's threshold */
    assert_true(agree >= 0.999);
    /* printed with 8 decimals */
    assert_true(fabs(agree - (double)(NV - differ) / NV) <= 5e-9);

    nifti_image *in = nifti_image_read(scan, 0);
    nifti_image *a = nifti_image_read(ours, 1);
    nifti_image *b = nifti_image_read(out, 1);
    assert_non_null(in);
    assert_non_null(a);
    assert_non_null(b);
    assert_same_geometry(in, b);
    assert_int_equal(b->datatype, DT_UINT8);
    char what[96];
    snprintf(what, sizeof what, "%s: ours vs torch b%d", name, batch);
    /* --check counts what we count */
    assert_int_equal(count_differ(what, a, b, probs), differ);
    nifti_image_free(in);
    nifti_image_free(a);
    return b;
}

/* segment on the scan, then the peer at batches 1 and 4: each agrees
 * with segment, and the two agree with each other. */
static void check_scan(const char *name, double slope, double inter)
{
    char scan_name[64], ours_name[64], probs_name[64];
    snprintf(scan_name, sizeof scan_name, "%s.nii.gz", name);
    snprintf(ours_name, sizeof ours_name, "%s_ours.nii.gz", name);
    snprintf(probs_name, sizeof probs_name, "%s_probs.nii.gz", name);
    char scan[512], ours[512], probs[512];
    snprintf(scan, sizeof scan, "%s", tmp(scan_name));
    snprintf(ours, sizeof ours, "%s", tmp(ours_name));
    snprintf(probs, sizeof probs, "%s", tmp(probs_name));
    write_scan(scan, slope, inter);

    char bin[300], cmd[3000], err[512];
    snprintf(cmd, sizeof cmd,
             "%s -q --threads 1 -m %s -o '%s' --probabilities '%s' '%s'",
             bin_path("segment", bin, sizeof bin), DEFAULT_MODEL, ours, probs,
             scan);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fail_msg("segment on %s: exit %d: %s", scan, st, err);
    nifti_image *p = nifti_image_read(probs, 1);
    nifti_image *a = nifti_image_read(ours, 1);
    assert_non_null(p);
    assert_non_null(a);
    assert_int_equal(p->datatype, DT_FLOAT32);
    assert_int_equal((int64_t)p->nvox, 2 * NV);
    long n_brain = 0;
    for (size_t i = 0; i < NV; i++)
        n_brain += label_at(a, i) == 1;
    fprintf(stderr, "%s: segment labels %ld of %d voxels brain\n", name,
            n_brain, NV);
    assert_true(n_brain >= MIN_CLASS_VOXELS);
    assert_true(NV - n_brain >= MIN_CLASS_VOXELS);

    nifti_image *b1 = run_peer(name, scan, ours, p->data, 1);
    nifti_image *b4 = run_peer(name, scan, ours, p->data, 4);
    char what[96];
    snprintf(what, sizeof what, "%s: torch b1 vs b4", name);
    long d = count_differ(what, b1, b4, p->data);
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

/* Exit non-zero with exactly one "error: torch_segment: " line. */
static void assert_one_error(int st, int lines, const char *err)
{
    fprintf(stderr, "exit %d: %s", st, err);
    assert_int_not_equal(st, 0);
    assert_int_equal(lines, 1);
    assert_true(strncmp(err, "error: torch_segment: ", 22) == 0);
}

/* A missing scan: no output made. */
static void test_missing_input(void **state)
{
    (void)state;
    char args[2500], err[512];
    int lines;
    snprintf(args, sizeof args, "'%s' '%s' '%s'", default_onnx(),
             tmp("no_such_scan.nii.gz"), tmp("never.nii.gz"));
    int st = torch_segment(args, NULL, err, sizeof err, &lines);
    assert_one_error(st, lines, err);
    assert_int_not_equal(access(tmp("never.nii.gz"), F_OK), 0);
}

/* An existing output without --force: refused, naming --force, the file
 * left alone; with --force it is replaced by a label map. */
static void test_no_clobber(void **state)
{
    (void)state;
    const char *scan = tmp("clobber_scan.nii.gz");
    const char *exists = tmp("exists.nii.gz");
    write_scan(scan, 0, 0);
    FILE *f = fopen(exists, "w");
    assert_non_null(f);
    fputs("keep", f);
    fclose(f);
    char args[2500], err[512];
    int lines;
    snprintf(args, sizeof args, "'%s' '%s' '%s'", default_onnx(), scan,
             exists);
    int st = torch_segment(args, NULL, err, sizeof err, &lines);
    assert_one_error(st, lines, err);
    assert_non_null(strstr(err, "--force"));
    char keep[8] = "";
    f = fopen(exists, "r");
    assert_non_null(f);
    assert_non_null(fgets(keep, sizeof keep, f));
    fclose(f);
    assert_string_equal(keep, "keep");

    snprintf(args, sizeof args, "'%s' '%s' '%s' --force", default_onnx(),
             scan, exists);
    st = torch_segment(args, NULL, err, sizeof err, &lines);
    if (st) fail_msg("--force: exit %d: %s", st, err);
    nifti_image *o = nifti_image_read(exists, 1);
    assert_non_null(o);
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
