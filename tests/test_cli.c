/* End-to-end test of the built programs (run from the repository root;
 * SL_BUILD names the build folder, see tests/run_all.sh).
 *
 * The main check: sauron-compress imports the e2e2d fixture, segment runs
 * it on a committed int16 scan (scl_slope/scl_inter, oblique qform/sform,
 * slices 24x32 while the model was exported at 32x32), and the label map
 * must have the scan's exact grid and geometry and equal, voxel by voxel,
 * the argmax of what PyTorch computed for the same scan slice by slice
 * (tools/make_fixtures.py, e2e_prob.f32).  Voxels where PyTorch's two class
 * probabilities are within 1e-3 are skipped: test_torch shows the runtime
 * agrees with PyTorch within 1e-4 on probabilities, so only such near-ties
 * may legitimately flip.
 *
 * Then CLI failures: each must exit non-zero and print exactly one
 * non-empty line on stderr, and must not create or touch outputs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti2_io.h>

#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "runtime/sslim.h"
#include "tests/testutil.h"

/* Margin below which PyTorch's argmax is a near-tie (see above). */
#define TIE_MARGIN 1e-3
#define MAX_CLASSES 8

typedef struct {
    int status;
    int lines;       /* non-empty stderr lines */
    char first[512]; /* first stderr line */
} CmdResult;

/* Run a shell command with stderr captured to a file of ours; count its
 * non-empty lines.  stdout goes to tmp/stdout.txt. */
static CmdResult run(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static CmdResult run(const char *fmt, ...)
{
    CmdResult r;
    memset(&r, 0, sizeof r);
    char cmd[3000], full[3600], errf[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(errf, sizeof errf, "%s/cli_stderr.txt", test_tmpdir());
    /* nested: run_cmd appends its own 2> to the outer group */
    snprintf(full, sizeof full, "( ( %s ) >%s/stdout.txt 2>%s )", cmd,
             test_tmpdir(), errf);
    r.status = run_cmd(full, NULL, 0);
    FILE *f = fopen(errf, "r");
    if (f) {
        char line[4096];
        while (fgets(line, sizeof line, f)) {
            if (strspn(line, " \t\r\n") == strlen(line)) continue;
            if (r.lines++ == 0) {
                size_t l = strcspn(line, "\n");
                if (l >= sizeof r.first) l = sizeof r.first - 1;
                memcpy(r.first, line, l);
                r.first[l] = '\0';
            }
        }
        fclose(f);
    }
    return r;
}

/* A failure must be one clear line and a non-zero exit. */
static void assert_one_line_failure(const CmdResult *r, const char *what)
{
    fprintf(stderr, "%s: exit %d, %d stderr line(s): %s\n", what, r->status,
            r->lines, r->first);
    assert_int_not_equal(r->status, 0);
    assert_int_not_equal(r->status, -1); /* no crash/signal */
    assert_int_equal(r->lines, 1);
}

static const char *tmp(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", test_tmpdir(), name);
    return buf;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[sz] = '\0';
        *n = (size_t)sz;
    }
    return b;
}

static int same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* Convert a fixture to .sslim in the temp folder (the e2e options). */
static void compress_fixture(const char *name, const char *classes,
                             const char *out)
{
    char bin[256], onnx[300], rel[128];
    snprintf(rel, sizeof rel, "torch/%s.onnx", name);
    CmdResult r = run("%s --no-finetune %s %s --axis 2 --normalize zscore "
                      "--classes %s --force",
                      bin_path("sauron-compress", bin, sizeof bin),
                      fixture_path(rel, onnx, sizeof onnx), out, classes);
    if (r.status != 0) fprintf(stderr, "sauron-compress: %s\n", r.first);
    assert_int_equal(r.status, 0);
}

static double label_at(const nifti_image *nim, size_t i)
{
    switch (nim->datatype) {
    case NIFTI_TYPE_UINT8:
        return ((const uint8_t *)nim->data)[i];
    case NIFTI_TYPE_INT16:
        return ((const int16_t *)nim->data)[i];
    case NIFTI_TYPE_INT32:
        return ((const int32_t *)nim->data)[i];
    case NIFTI_TYPE_UINT16:
        return ((const uint16_t *)nim->data)[i];
    default:
        return NAN;
    }
}

static void assert_same_geometry(const nifti_image *a, const nifti_image *b)
{
    assert_int_equal(a->nx, b->nx);
    assert_int_equal(a->ny, b->ny);
    assert_int_equal(a->nz, b->nz);
    assert_int_equal(a->nvox, b->nvox);
    assert_true(a->dx == b->dx && a->dy == b->dy && a->dz == b->dz);
    assert_int_equal(a->qform_code, b->qform_code);
    assert_int_equal(a->sform_code, b->sform_code);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            /* float32 in the file on both sides: equal after rounding */
            assert_true(fabs(a->qto_xyz.m[i][j] - b->qto_xyz.m[i][j]) < 1e-5);
            assert_true(fabs(a->sto_xyz.m[i][j] - b->sto_xyz.m[i][j]) < 1e-5);
        }
}

/* Expected probabilities of a committed e2e fixture, with the strides
 * that map (class, i, j, k) into it. */
typedef struct {
    float *p;
    int64_t nc, ni, nj, nk;
    int class_major; /* 1: [C, K, J, I] (3D); 0: [K, C, J, I] (2D slices) */
} Expected;

static float expected_at(const Expected *x, int64_t c, int64_t i, int64_t j,
                         int64_t k)
{
    int64_t idx = x->class_major ? ((c * x->nk + k) * x->nj + j) * x->ni + i
                                 : ((k * x->nc + c) * x->nj + j) * x->ni + i;
    return x->p[idx];
}

/* Compare segment's label map and probability file with PyTorch's
 * probabilities.  Probabilities: 1e-4 (docs/DESIGN.md: relative to the output
 * scale, 1 here; test_torch measures < 1e-6 for the network itself, the
 * rest is z-score statistics and sliding-window weighting).  Labels: the
 * argmax wherever PyTorch's top two classes differ by more than
 * TIE_MARGIN (two classes: |p1 - p0|). */
static void check_against_pytorch(const char *scan, const char *seg,
                                  const char *probs, const Expected *x,
                                  const char *what, int expect_match)
{
    nifti_image *in = nifti_image_read(scan, 0);
    nifti_image *out = nifti_image_read(seg, 1);
    nifti_image *pr = nifti_image_read(probs, 1);
    assert_non_null(in);
    assert_non_null(out);
    assert_non_null(pr);
    assert_same_geometry(out, in);
    assert_true(out->scl_slope == 0 || out->scl_slope == 1);
    assert_true(out->scl_inter == 0 || out->scl_slope == 0);
    assert_true(x->ni == in->nx && x->nj == in->ny && x->nk == in->nz);
    assert_in_range(x->nc, 2, MAX_CLASSES);
    /* probabilities: 4D float32, one volume per class, same grid */
    assert_int_equal(pr->datatype, NIFTI_TYPE_FLOAT32);
    assert_true(pr->nx == in->nx && pr->ny == in->ny && pr->nz == in->nz);
    assert_int_equal(pr->nt, x->nc);
    const float *pv = pr->data;
    size_t nvox = (size_t)(x->ni * x->nj * x->nk);
    size_t ties = 0, wrong = 0, counts[MAX_CLASSES] = {0};
    double max_diff = 0;
    for (int64_t k = 0; k < x->nk; k++)
        for (int64_t j = 0; j < x->nj; j++)
            for (int64_t i = 0; i < x->ni; i++) {
                size_t v = (size_t)(i + x->ni * (j + x->nj * k));
                /* PyTorch's top two classes at this voxel */
                int best = -1;
                double p1st = -1, p2nd = -1;
                for (int64_t c = 0; c < x->nc; c++) {
                    double p = (double)expected_at(x, c, i, j, k);
                    max_diff = fmax(
                        max_diff, fabs((double)pv[(size_t)c * nvox + v] - p));
                    if (p > p1st) {
                        p2nd = p1st;
                        p1st = p;
                        best = (int)c;
                    } else if (p > p2nd) {
                        p2nd = p;
                    }
                }
                double lab = label_at(out, v);
                assert_true(lab >= 0 && lab < (double)x->nc &&
                            lab == floor(lab));
                counts[(int)lab]++;
                if (p1st - p2nd < TIE_MARGIN) {
                    ties++;
                    continue;
                }
                if (lab != best && wrong++ < 5)
                    fprintf(stderr,
                            "%s: label (%ld,%ld,%ld) = %g, PyTorch argmax %d "
                            "(p %.6g, next %.6g)\n",
                            what, (long)i, (long)j, (long)k, lab, best, p1st,
                            p2nd);
            }
    fprintf(stderr, "%s: labels", what);
    for (int64_t c = 0; c < x->nc; c++)
        fprintf(stderr, "%s%zu", c ? "/" : " ", counts[c]);
    fprintf(stderr,
            ", %zu near-ties skipped, %zu wrong, max |prob - PyTorch| %.3g\n",
            ties, wrong, max_diff);
    if (!expect_match) {
        /* the negative control: a wrong setting must be caught */
        assert_true(max_diff > 1e-2 && wrong > 0);
        goto done;
    }
    assert_int_equal(wrong, 0);
    assert_true(max_diff <= 1e-4);
    /* at least two classes really present: a constant map is no check */
    int present = 0;
    for (int64_t c = 0; c < x->nc; c++)
        present += counts[c] > nvox / 20;
    assert_true(present >= 2);
done:
    nifti_image_free(in);
    nifti_image_free(out);
    nifti_image_free(pr);
}

static void load_expected(const char *name, int class_major, Expected *x)
{
    char rel[128], path[300];
    int64_t d[8];
    int nd = 0;
    snprintf(rel, sizeof rel, "torch/%s", name);
    x->p = load_tensor(fixture_path(rel, path, sizeof path), d, &nd);
    assert_non_null(x->p);
    assert_int_equal(nd, 4);
    x->class_major = class_major;
    x->nc = class_major ? d[0] : d[1];
    x->nk = class_major ? d[1] : d[0];
    x->nj = d[2];
    x->ni = d[3];
}

static void test_end_to_end_matches_pytorch(void **state)
{
    (void)state;
    char bin[256], scan[300], model[300], seg[300], src[300], prob[300];
    fixture_path("torch/e2e_scan.nii.gz", src, sizeof src);
    tmp("scan.nii.gz", scan, sizeof scan);
    tmp("e2e.sslim", model, sizeof model);
    tmp("scan_seg.nii.gz", seg, sizeof seg);
    tmp("scan_prob.nii.gz", prob, sizeof prob);
    CmdResult r = run("cp %s %s && rm -f %s %s", src, scan, seg, prob);
    assert_int_equal(r.status, 0);
    compress_fixture("e2e2d", "background,fg", model);

    r = run("%s %s -m %s --threads 2 --probabilities %s",
            bin_path("segment", bin, sizeof bin), scan, model, prob);
    if (r.status != 0) fprintf(stderr, "segment: %s\n", r.first);
    assert_int_equal(r.status, 0);
    assert_true(same_file(src, scan)); /* the input is never modified */

    /* slices along k in nnU-Net order: PyTorch saw [K, 1, J, I] */
    Expected x;
    load_expected("e2e_prob.f32", 0, &x);
    check_against_pytorch(scan, seg, prob, &x, "e2e 2D", 1);
    free(x.p);

    /* a second run must not overwrite the label map without --force */
    size_t n0 = 0;
    char *before = slurp(seg, &n0);
    assert_non_null(before);
    r = run("%s %s -m %s", bin_path("segment", bin, sizeof bin), scan, model);
    assert_one_line_failure(&r, "segment without --force");
    size_t n1 = 0;
    char *after = slurp(seg, &n1);
    assert_true(after && n0 == n1 && memcmp(before, after, n0) == 0);
    free(before);
    free(after);
}

/* 3D: the scan is exactly one patch, so segment's sliding window is one
 * network run and PyTorch's output on the whole volume is the reference. */
static void test_end_to_end_3d_matches_pytorch(void **state)
{
    (void)state;
    char bin[256], onnx[300], scan[300], model[300], seg[300], prob[300];
    fixture_path("torch/e2e3d_scan.nii.gz", scan, sizeof scan);
    tmp("e2e3d.sslim", model, sizeof model);
    tmp("e2e3d_seg.nii.gz", seg, sizeof seg);
    tmp("e2e3d_prob.nii.gz", prob, sizeof prob);
    CmdResult r =
        run("%s --no-finetune %s %s --normalize zscore --classes "
            "background,fg --force",
            bin_path("sauron-compress", bin, sizeof bin),
            fixture_path("torch/nnunet3d.onnx", onnx, sizeof onnx), model);
    if (r.status != 0) fprintf(stderr, "sauron-compress: %s\n", r.first);
    assert_int_equal(r.status, 0);
    /* -o: the committed scan's folder must stay untouched */
    r = run("%s %s -m %s -o %s --probabilities %s --threads 2 --force",
            bin_path("segment", bin, sizeof bin), scan, model, seg, prob);
    if (r.status != 0) fprintf(stderr, "segment: %s\n", r.first);
    assert_int_equal(r.status, 0);
    Expected x;
    load_expected("e2e3d_prob.f32", 1, &x);
    check_against_pytorch(scan, seg, prob, &x, "e2e 3D", 1);
    free(x.p);
}

/* Two modalities given as comma-joined files: each normalised on its own
 * (their ranges differ by 1000x) and fed as channels 0 and 1. */
static void test_end_to_end_two_modalities(void **state)
{
    (void)state;
    char bin[256], onnx[300], m0[300], m1[300], model[300], seg[300];
    char prob[300];
    fixture_path("torch/e2e2mod_mod0.nii.gz", m0, sizeof m0);
    fixture_path("torch/e2e2mod_mod1.nii.gz", m1, sizeof m1);
    tmp("e2e2mod.sslim", model, sizeof model);
    tmp("e2e2mod_seg.nii.gz", seg, sizeof seg);
    tmp("e2e2mod_prob.nii.gz", prob, sizeof prob);
    CmdResult r = run(
        "%s --no-finetune %s %s --axis 2 --normalize zscore "
        "--modalities t1,t2 --classes bg,a,b --force",
        bin_path("sauron-compress", bin, sizeof bin),
        fixture_path("torch/nnunet2d_2mod.onnx", onnx, sizeof onnx), model);
    if (r.status != 0) fprintf(stderr, "sauron-compress: %s\n", r.first);
    assert_int_equal(r.status, 0);
    r = run("%s %s,%s -m %s -o %s --probabilities %s --force",
            bin_path("segment", bin, sizeof bin), m0, m1, model, seg, prob);
    if (r.status != 0) fprintf(stderr, "segment: %s\n", r.first);
    assert_int_equal(r.status, 0);
    Expected x;
    load_expected("e2e2mod_prob.f32", 0, &x);
    check_against_pytorch(m0, seg, prob, &x, "e2e 2 modalities", 1);
    /* swapped modalities must not pass */
    r = run("%s %s,%s -m %s -o %s --probabilities %s --force",
            bin_path("segment", bin, sizeof bin), m1, m0, model, seg, prob);
    assert_int_equal(r.status, 0);
    check_against_pytorch(m0, seg, prob, &x, "e2e modalities swapped", 0);
    free(x.p);
}

/* Negative control for the end-to-end check: the same model stored with
 * the wrong voxel order (--order nibabel: slices seen as [i, j]) must be
 * reported as different from PyTorch. */
static void test_end_to_end_detects_wrong_order(void **state)
{
    (void)state;
    char bin[256], onnx[300], src[300], model[300], seg[300], prob[300];
    fixture_path("torch/e2e_scan.nii.gz", src, sizeof src);
    tmp("e2e_nib.sslim", model, sizeof model);
    tmp("e2e_nib_seg.nii.gz", seg, sizeof seg);
    tmp("e2e_nib_prob.nii.gz", prob, sizeof prob);
    CmdResult r =
        run("%s --no-finetune %s %s --axis 2 --order nibabel "
            "--classes background,fg --force",
            bin_path("sauron-compress", bin, sizeof bin),
            fixture_path("torch/e2e2d.onnx", onnx, sizeof onnx), model);
    assert_int_equal(r.status, 0);
    r = run("%s %s -m %s -o %s --probabilities %s --force",
            bin_path("segment", bin, sizeof bin), src, model, seg, prob);
    if (r.status != 0) fprintf(stderr, "segment: %s\n", r.first);
    assert_int_equal(r.status, 0);
    Expected x;
    load_expected("e2e_prob.f32", 0, &x);
    check_against_pytorch(src, seg, prob, &x, "e2e 2D, wrong order", 0);
    free(x.p);
}

static void test_compress_without_data(void **state)
{
    (void)state;
    char bin[256], onnx[300], out[300];
    tmp("nodata.sslim", out, sizeof out);
    CmdResult r =
        run("%s %s %s", bin_path("sauron-compress", bin, sizeof bin),
            fixture_path("torch/nnunet2d_op13.onnx", onnx, sizeof onnx), out);
    assert_one_line_failure(&r, "compress without --data");
    assert_int_equal(r.status, 2); /* usage error */
    assert_false(sl_file_exists(out));
}

static void test_compress_missing_input(void **state)
{
    (void)state;
    char bin[256], out[300];
    tmp("missing.sslim", out, sizeof out);
    CmdResult r =
        run("%s --no-finetune %s/no_such_model.onnx %s",
            bin_path("sauron-compress", bin, sizeof bin), test_tmpdir(), out);
    assert_one_line_failure(&r, "compress missing input");
    assert_non_null(strstr(r.first, "no_such_model.onnx")); /* names it */
    assert_false(sl_file_exists(out));
}

static void test_compress_refuses_existing_output(void **state)
{
    (void)state;
    char bin[256], onnx[300], out[300];
    tmp("exists.sslim", out, sizeof out);
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    fputs("keep me\n", f);
    fclose(f);
    bin_path("sauron-compress", bin, sizeof bin);
    fixture_path("torch/nnunet2d_op13.onnx", onnx, sizeof onnx);
    CmdResult r = run("%s --no-finetune %s %s", bin, onnx, out);
    assert_one_line_failure(&r, "compress onto an existing file");
    size_t n = 0;
    char *c = slurp(out, &n);
    assert_non_null(c);
    assert_string_equal(c, "keep me\n");
    free(c);
    r = run("%s --no-finetune %s %s --force", bin, onnx, out);
    assert_int_equal(r.status, 0);
    Graph g;
    graph_init(&g);
    assert_int_equal(sslim_read(out, &g), 0);
    graph_free(&g);
}

static void test_segment_bad_inputs(void **state)
{
    (void)state;
    char bin[256], model[300], junk[300];
    bin_path("segment", bin, sizeof bin);
    tmp("seg_model.sslim", model, sizeof model);
    compress_fixture("e2e2d", "background,fg", model);
    CmdResult r =
        run("%s %s/no_such_scan.nii.gz -m %s", bin, test_tmpdir(), model);
    assert_one_line_failure(&r, "segment missing scan");
    /* a model file that is not a model */
    tmp("junk.sslim", junk, sizeof junk);
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    fputs("this is not a model\n", f);
    fclose(f);
    char scan[300];
    fixture_path("torch/e2e_scan.nii.gz", scan, sizeof scan);
    r = run("cp %s %s/junkscan.nii.gz", scan, test_tmpdir());
    assert_int_equal(r.status, 0);
    r = run("%s %s/junkscan.nii.gz -m %s", bin, test_tmpdir(), junk);
    assert_one_line_failure(&r, "segment with a junk model");
    char seg[300];
    assert_false(sl_file_exists(tmp("junkscan_seg.nii.gz", seg, sizeof seg)));
}

/* --max-memory: a scan (with its outputs) above the limit is refused with
 * one line naming the limit, before its voxels are read; a bad size is a
 * usage error; the fuzzer's 17 GB NIfTI fails with one line at the
 * default limit. */
static void test_segment_max_memory(void **state)
{
    (void)state;
    char bin[256], model[300], scan[300], seg[300], fz[300];
    bin_path("segment", bin, sizeof bin);
    tmp("mm_model.sslim", model, sizeof model);
    compress_fixture("e2e2d", "background,fg", model);
    fixture_path("torch/e2e_scan.nii.gz", scan, sizeof scan);
    tmp("mm_seg.nii.gz", seg, sizeof seg);
    unlink(seg);
    CmdResult r =
        run("%s -q %s -m %s -o %s --max-memory 1K", bin, scan, model, seg);
    assert_one_line_failure(&r, "segment --max-memory 1K");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.first, "memory limit"));
    assert_false(sl_file_exists(seg));
    r = run("%s -q %s -m %s -o %s --max-memory lots", bin, scan, model, seg);
    assert_one_line_failure(&r, "segment --max-memory lots");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.first, "--max-memory"));
    r = run("%s -q %s -m %s -o %s --max-memory 1G", bin, scan, model, seg);
    assert_int_equal(r.status, 0);
    assert_true(sl_file_exists(seg));
    fixture_path("fuzz/nifti/nifti2-negative-vox-offset-17GB.nii", fz,
                 sizeof fz);
    r = run("%s -q %s -m %s -o %s --force", bin, fz, model, seg);
    assert_one_line_failure(&r, "segment on the 17 GB reproducer");
    assert_non_null(strstr(r.first, "vox_offset"));
    r = run("%s --help", bin);
    assert_int_equal(r.status, 0);
    size_t hn = 0;
    char *help = slurp(tmp("stdout.txt", fz, sizeof fz), &hn);
    assert_non_null(help);
    assert_non_null(strstr(help, "--max-memory SIZE"));
    assert_non_null(strstr(help, "half the"));
    free(help);
}

/* Parse the first integer after "key": in a JSON text; -1 if absent. */
static long long json_int(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (!p) return -1;
    p += strlen(pat);
    while (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n')
        p++;
    char *end = NULL;
    long long v = strtoll(p, &end, 10);
    return end == p ? -1 : v;
}

static void test_inspect_json_params(void **state)
{
    (void)state;
    static const char *names[] = {"nnunet2d_op13", "nnunet3d", "deepsup2d"};
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) {
        char bin[256], onnx[300], rel[128], meta[300], outp[300];
        size_t n = 0;
        snprintf(rel, sizeof rel, "torch/%s.json", names[t]);
        char *m = slurp(fixture_path(rel, meta, sizeof meta), &n);
        assert_non_null(m);
        long long want = json_int(m, "params"); /* counted by PyTorch */
        free(m);
        assert_true(want > 0);
        snprintf(rel, sizeof rel, "torch/%s.onnx", names[t]);
        CmdResult r =
            run("%s %s --json", bin_path("sauron-inspect", bin, sizeof bin),
                fixture_path(rel, onnx, sizeof onnx));
        if (r.status != 0) fprintf(stderr, "sauron-inspect: %s\n", r.first);
        assert_int_equal(r.status, 0);
        char *js = slurp(tmp("stdout.txt", outp, sizeof outp), &n);
        assert_non_null(js);
        long long got = json_int(js, "params");
        if (got != want)
            fprintf(stderr, "%s: inspect params %lld, PyTorch %lld\n",
                    names[t], got, want);
        assert_true(got == want);
        /* and the per-layer figures add up to the total */
        long long sum = 0;
        const char *q = strstr(js, "\"params\"");
        while (q && (q = strstr(q + 1, "\"params\"")) != NULL)
            sum += json_int(q, "params");
        assert_true(sum == want);
        assert_true(json_int(js, "flops") > 0);
        free(js);
    }
}

static void test_inspect_missing_file(void **state)
{
    (void)state;
    char bin[256];
    CmdResult r =
        run("%s %s/nothing.onnx --json",
            bin_path("sauron-inspect", bin, sizeof bin), test_tmpdir());
    assert_one_line_failure(&r, "inspect missing file");
}

/* sauron-run on a raw float32 input writes the same bytes the library
 * computes for the same model and input. */
static void test_run_matches_library(void **state)
{
    (void)state;
    char bin[256], model[300], xin[300], yout[300], fx[300];
    tmp("run.sslim", model, sizeof model);
    tmp("run_x.bin", xin, sizeof xin);
    tmp("run_y.bin", yout, sizeof yout);
    compress_fixture("nnunet2d_op13", "background,a,b", model);
    int64_t d[8];
    int nd = 0;
    float *x = load_tensor(
        fixture_path("torch/nnunet2d_op13.in.f32", fx, sizeof fx), d, &nd);
    assert_non_null(x);
    assert_int_equal(nd, 4);
    Shape xs = {4, {d[0], d[1], d[2], d[3]}};
    size_t nx = (size_t)shape_numel(&xs);
    /* raw little-endian float32 (the machine is little-endian; the file
     * layout, not the host, is what sauron-run must read) */
    uint8_t *raw = malloc(nx * 4);
    assert_non_null(raw);
    for (size_t i = 0; i < nx; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        sl_wr32(raw + 4 * i, u);
    }
    assert_int_equal(sl_write_file_atomic(xin, raw, nx * 4, 1), 0);
    free(raw);

    CmdResult r = run("%s %s --input %s --shape %ld,%ld,%ld,%ld --output %s "
                      "--threads 2 --repeat 2",
                      bin_path("sauron-run", bin, sizeof bin), model, xin,
                      (long)d[0], (long)d[1], (long)d[2], (long)d[3], yout);
    if (r.status != 0) fprintf(stderr, "sauron-run: %s\n", r.first);
    assert_int_equal(r.status, 0);

    Graph g;
    graph_init(&g);
    assert_int_equal(sslim_read(model, &g), 0);
    Executor *e = NULL;
    assert_int_equal(exec_create(&g, &xs, 1, &e), 0);
    const float *res[SL_MAX_OUTPUTS] = {0};
    assert_int_equal(exec_run(e, x, res), 0);
    size_t ny = (size_t)shape_numel(exec_output_shape(e, 0));
    size_t n = 0;
    char *y = slurp(yout, &n);
    assert_non_null(y);
    if (n != ny * 4)
        fprintf(stderr, "sauron-run wrote %zu bytes, expected %zu\n", n,
                ny * 4);
    assert_int_equal(n, ny * 4);
    for (size_t i = 0; i < ny; i++) {
        uint32_t u;
        memcpy(&u, &res[0][i], 4);
        if (sl_rd32((const uint8_t *)y + 4 * i) != u) {
            fprintf(stderr, "sauron-run output differs at %zu\n", i);
            fail();
        }
    }
    free(y);
    exec_free(e);
    graph_free(&g);
    free(x);
}

/* Without -m, segment finds the shipped models/default.sslim from the
 * build tree (<exe>/../../models): same label map as naming it. */
static void test_segment_default_model(void **state)
{
    (void)state;
    char bin[256], src[300], scan[300], a[300], b[300];
    fixture_path("torch/e2e_scan.nii.gz", src, sizeof src);
    tmp("dflt.nii.gz", scan, sizeof scan);
    tmp("dflt_a.nii.gz", a, sizeof a);
    tmp("dflt_b.nii.gz", b, sizeof b);
    CmdResult r = run("cp %s %s && rm -f %s %s", src, scan, a, b);
    assert_int_equal(r.status, 0);
    r = run("%s -q %s -o %s", bin_path("segment", bin, sizeof bin), scan, a);
    if (r.status != 0) fprintf(stderr, "segment: %s\n", r.first);
    assert_int_equal(r.status, 0);
    r = run("%s -q -m models/default.sslim %s -o %s",
            bin_path("segment", bin, sizeof bin), scan, b);
    assert_int_equal(r.status, 0);
    assert_true(same_file(a, b));
}

/* Installed layout (make install): PREFIX/bin/segment finds
 * PREFIX/share/sauron/models/default.sslim, whatever PREFIX it was built
 * for. */
static void test_segment_installed_default_model(void **state)
{
    (void)state;
    char bin[256], src[300], pre[300], scan[400], a[300], b[300];
    fixture_path("torch/e2e_scan.nii.gz", src, sizeof src);
    tmp("prefix", pre, sizeof pre);
    snprintf(scan, sizeof scan, "%s/scan.nii.gz", pre);
    tmp("inst_a.nii.gz", a, sizeof a);
    tmp("inst_b.nii.gz", b, sizeof b);
    CmdResult r =
        run("rm -rf %s && mkdir -p %s/bin %s/share/sauron/models && "
            "cp %s %s/bin/ && cp models/default.sslim "
            "%s/share/sauron/models/ && cp %s %s && rm -f %s %s",
            pre, pre, pre, bin_path("segment", bin, sizeof bin), pre, pre,
            src, scan, a, b);
    assert_int_equal(r.status, 0);
    r = run("%s/bin/segment -q %s -o %s", pre, scan, a);
    if (r.status != 0) fprintf(stderr, "segment: %s\n", r.first);
    assert_int_equal(r.status, 0);
    r = run("%s -q -m models/default.sslim %s -o %s",
            bin_path("segment", bin, sizeof bin), scan, b);
    assert_int_equal(r.status, 0);
    assert_true(same_file(a, b));
}

static void test_run_bad_shape(void **state)
{
    (void)state;
    char bin[256], model[300], xin[300];
    tmp("run.sslim", model, sizeof model);
    tmp("run_x.bin", xin, sizeof xin);
    if (!sl_file_exists(model))
        compress_fixture("nnunet2d_op13", "background,a,b", model);
    if (!sl_file_exists(xin)) {
        float z[32 * 32] = {0};
        assert_int_equal(sl_write_file_atomic(xin, z, sizeof z, 1), 0);
    }
    /* 1x1x32x32 floats given as 1x1x64x64: the file is too short */
    CmdResult r = run("%s %s --input %s --shape 1,1,64,64",
                      bin_path("sauron-run", bin, sizeof bin), model, xin);
    assert_one_line_failure(&r, "sauron-run wrong input size");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_end_to_end_matches_pytorch),
        cmocka_unit_test(test_end_to_end_3d_matches_pytorch),
        cmocka_unit_test(test_end_to_end_detects_wrong_order),
        cmocka_unit_test(test_end_to_end_two_modalities),
        cmocka_unit_test(test_compress_without_data),
        cmocka_unit_test(test_compress_missing_input),
        cmocka_unit_test(test_compress_refuses_existing_output),
        cmocka_unit_test(test_segment_bad_inputs),
        cmocka_unit_test(test_segment_max_memory),
        cmocka_unit_test(test_inspect_json_params),
        cmocka_unit_test(test_inspect_missing_file),
        cmocka_unit_test(test_run_matches_library),
        cmocka_unit_test(test_run_bad_shape),
        cmocka_unit_test(test_segment_default_model),
        cmocka_unit_test(test_segment_installed_default_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
