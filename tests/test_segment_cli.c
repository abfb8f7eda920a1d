/* The `segment` CLI on the tiny models of segmodel.h: labels, geometry
 * (tests/nifti_check.py), 3D with threads, and the shipped model on ch2;
 * the shipped 3D model's brain mask on ch2 against ch2bet. */
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

/* ---- the CLI ---- */

static const char *tmp(const char *name)
{
    /* A ring large enough that no test holds a stale name. */
    static char buf[64][512];
    static int k;
    k = (k + 1) % 64;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

/* Write v as a float32 NIfTI-1 with an oblique qform and an sform. */
static void write_scan(const char *path, const Volume *v)
{
    int64_t dims[8] = {v->n_mod > 1 ? 4 : 3,
                       v->dim[0],
                       v->dim[1],
                       v->dim[2],
                       v->n_mod,
                       1,
                       1,
                       1};
    nifti_image *nim = nifti_make_new_nim(dims, DT_FLOAT32, 1);
    assert_non_null(nim);
    memcpy(nim->data, v->data,
           sizeof(float) * (size_t)(volume_voxels(v) * v->n_mod));
    nifti_fixture_geometry(nim);
    assert_int_equal(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
    assert_true(sl_file_exists(path));
}

static int16_t *read_labels(const char *path, int64_t n)
{
    Volume r;
    sl_error_reset();
    assert_int_equal(nio_read(path, &r, NULL), 0);
    assert_int_equal(volume_voxels(&r), n);
    int16_t *l = malloc(sizeof(int16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        l[i] = (int16_t)r.data[i];
    volume_free(&r);
    return l;
}

static int segment_cmd(const char *args, char *err, size_t len)
{
    char bin[512], cmd[5000];
    bin_path("segment", bin, sizeof bin);
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null", bin, args);
    return run_cmd(cmd, err, len);
}

static void test_cli(void **state)
{
    (void)state;
    char args[4096], err[512];
    /* 2D model on odd sizes (padding), threshold with softmax. */
    ModelSpec ms = {.dims = 2,
                    .axis = 2,
                    .nmod = 1,
                    .kind = KIND_SHIFT,
                    .downup = 1,
                    .softmax = 1,
                    .norm = NORMALIZE_ZSCORE};
    Volume v;
    fill_volume(&v, 19, 14, 9, 1, 11);
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    const char *model = tmp("m2d.sslim");
    assert_int_equal(sslim_write(&g, model, 1), 0);
    const char *scan = tmp("case1.nii.gz");
    write_scan(scan, &v);
    int64_t n = volume_voxels(&v);
    int16_t *e = expected(&v, &ms);

    /* Default output beside the scan. */
    const char *def = tmp("case1_seg.nii.gz");
    unlink(def);
    snprintf(args, sizeof args, "-q -m %s %s", model, scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int16_t *lab = read_labels(def, n);
    assert_int_equal(count_diff(lab, e, n), 0);
    free(lab);
    assert_same_nifti_geometry(scan, def, 0);

    /* Existing output refused without --force, accepted with it. */
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "--force"));
    snprintf(args, sizeof args, "-q --force -m %s %s", model, scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);

    /* -o, probabilities, threads 1 vs 2. */
    const char *o1 = tmp("t1.nii"), *o2 = tmp("t2.nii.gz");
    const char *pr = tmp("probs.nii.gz");
    unlink(o1);
    unlink(o2);
    unlink(pr);
    snprintf(args, sizeof args, "-q --threads 1 -m %s -o %s %s", model, o1,
             scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    snprintf(args, sizeof args,
             "-q --threads 2 -m %s -o %s --probabilities %s %s", model, o2,
             pr, scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int16_t *l1 = read_labels(o1, n), *l2 = read_labels(o2, n);
    assert_int_equal(count_diff(l1, l2, n), 0);
    assert_int_equal(count_diff(l1, e, n), 0);
    free(l1);
    free(l2);
    assert_same_nifti_geometry(scan, o1, 0);
    Volume pv;
    assert_int_equal(nio_read(pr, &pv, NULL), 0);
    assert_int_equal(pv.n_mod, 2);
    volume_free(&pv);

    /* Several cases in one call. */
    Volume v2;
    fill_volume(&v2, 12, 10, 6, 1, 12);
    const char *scan2 = tmp("case2.nii");
    write_scan(scan2, &v2);
    const char *def2 = tmp("case2_seg.nii.gz");
    unlink(def);
    unlink(def2);
    snprintf(args, sizeof args, "-q -m %s %s %s", model, scan, scan2);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    assert_true(sl_file_exists(def) && sl_file_exists(def2));
    assert_same_nifti_geometry(scan2, def2, 0);

    /* Failures: one line, non-zero exit. */
    snprintf(args, sizeof args, "-q -m %s -o %s %s %s", model, o1, scan,
             scan2);
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "one scan"));
    snprintf(args, sizeof args, "-q --force -m %s -o %s %s", model, scan,
             scan);
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "input"));
    snprintf(args, sizeof args, "-q -m %s %s", model, tmp("missing.nii.gz"));
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "cannot open"));
    snprintf(args, sizeof args, "-q -m %s %s", tmp("nomodel.sslim"), scan);
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "nomodel.sslim"));
    assert_int_not_equal(segment_cmd("--threads x a.nii", err, sizeof err),
                         0);
    assert_non_null(strstr(err, "--threads"));
    assert_int_equal(segment_cmd("--help", err, sizeof err), 0);
    assert_int_equal(segment_cmd("--version", err, sizeof err), 0);

    /* A 2-modality model: mismatch names the modalities; 4D file and
     * comma-joined files both work. */
    ModelSpec m2 = ms;
    m2.nmod = 2;
    m2.kind = KIND_THRESH;
    Volume v4;
    fill_volume(&v4, 8, 7, 6, 2, 21);
    Volume first = v4;
    first.n_mod = 1;
    m2.t = mid_threshold(&first, &m2);
    Graph g2;
    graph_init(&g2);
    build_model(&g2, &m2);
    const char *model2 = tmp("m2mod.sslim");
    assert_int_equal(sslim_write(&g2, model2, 1), 0);
    snprintf(args, sizeof args, "-q -m %s -o %s %s", model2, tmp("x.nii"),
             scan);
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    if (!strstr(err, "model expects 2 modalities (t1, t2)") ||
        !strstr(err, "has 1"))
        fail_msg("unexpected message: %s", err);
    const char *s4 = tmp("four.nii.gz"), *o4 = tmp("four_seg.nii.gz");
    write_scan(s4, &v4);
    unlink(o4);
    snprintf(args, sizeof args, "-q -m %s %s", model2, s4);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int16_t *e4 = expected(&v4, &m2);
    int64_t n4 = volume_voxels(&v4);
    int16_t *l4 = read_labels(o4, n4);
    assert_int_equal(count_diff(l4, e4, n4), 0);
    free(l4);
    Volume ma = {.dim = {8, 7, 6}, .n_mod = 1, .data = v4.data};
    Volume mb = {.dim = {8, 7, 6}, .n_mod = 1, .data = v4.data + n4};
    const char *sa = tmp("ja.nii.gz"), *sb = tmp("jb.nii.gz");
    write_scan(sa, &ma);
    write_scan(sb, &mb);
    const char *oj = tmp("joined_seg.nii.gz");
    unlink(oj);
    snprintf(args, sizeof args, "-q -m %s -o %s %s,%s", model2, oj, sa, sb);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    l4 = read_labels(oj, n4);
    assert_int_equal(count_diff(l4, e4, n4), 0);
    free(l4);
    free(e4);

    free(e);
    graph_free(&g);
    graph_free(&g2);
    volume_free(&v);
    volume_free(&v2);
    volume_free(&v4);
}

/* A scan whose "no data" voxels are NaN or infinite (as some tools write
 * them): segmented as if they held the lowest finite value (the CT
 * window's bottom here, where that is exact), with one note on stderr
 * naming the file and the count, none with -q; a scan with no finite
 * voxel fails with one line. */
static void test_nonfinite_scan(void **state)
{
    (void)state;
    char args[4096], err[512];
    ModelSpec ms = {.dims = 2,
                    .axis = 2,
                    .nmod = 1,
                    .kind = KIND_SHIFT,
                    .norm = NORMALIZE_CT,
                    .lo = -15.0f,
                    .hi = 35.0f};
    Volume v, f;
    fill_volume(&v, 13, 11, 7, 1, 21);
    fill_volume(&f, 13, 11, 7, 1, 21);
    ms.t = mid_threshold(&v, &ms);
    int64_t n = volume_voxels(&v), bad = 0;
    for (int64_t i = 0; i < n; i += 7) {
        v.data[i] = i % 2 ? NAN : -INFINITY;
        f.data[i] = ms.lo;
        bad++;
    }
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    const char *model = tmp("mnan.sslim");
    assert_int_equal(sslim_write(&g, model, 1), 0);
    const char *scan = tmp("nan_case.nii.gz"), *out = tmp("nan_seg.nii.gz");
    write_scan(scan, &v);
    unlink(out);
    char bin[512], cmd[5000], note[64];
    bin_path("segment", bin, sizeof bin);
    snprintf(cmd, sizeof cmd, "%s -m %s -o %s %s >/dev/null", bin, model, out,
             scan);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    snprintf(note, sizeof note, "%lld voxels are NaN or infinite",
             (long long)bad);
    assert_non_null(strstr(err, note));
    assert_non_null(strstr(err, "nan_case.nii.gz"));
    int16_t *lab = read_labels(out, n), *e = expected(&f, &ms);
    assert_int_equal(count_diff(lab, e, n), 0);
    free(lab);
    free(e);
    snprintf(args, sizeof args, "-q --force -m %s -o %s %s", model, out,
             scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    assert_null(strstr(err, "NaN"));
    /* nothing finite: one error line, non-zero exit (a z-score model;
     * the CT window needs no statistics) */
    ModelSpec mz = ms;
    mz.norm = NORMALIZE_ZSCORE;
    Graph gz;
    graph_init(&gz);
    build_model(&gz, &mz);
    const char *modelz = tmp("mnanz.sslim");
    assert_int_equal(sslim_write(&gz, modelz, 1), 0);
    for (int64_t i = 0; i < n; i++)
        v.data[i] = NAN;
    write_scan(scan, &v);
    snprintf(args, sizeof args, "--force -m %s -o %s %s", modelz, out, scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 1);
    assert_non_null(strstr(err, "no finite voxel"));
    assert_non_null(strstr(err, "nan_case.nii.gz"));
    graph_free(&g);
    graph_free(&gz);
    volume_free(&v);
    volume_free(&f);
}

static void test_cli_3d_threads(void **state)
{
    (void)state;
    char args[4096], err[512];
    ModelSpec ms = {.dims = 3,
                    .nmod = 1,
                    .kind = KIND_THRESH,
                    .downup = 1,
                    .patch = {8, 8, 8},
                    .norm = NORMALIZE_ZSCORE};
    Volume v;
    fill_volume(&v, 21, 18, 11, 1, 31);
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    const char *model = tmp("m3d.sslim");
    assert_int_equal(sslim_write(&g, model, 1), 0);
    const char *scan = tmp("vol3d.nii.gz");
    write_scan(scan, &v);
    const char *o1 = tmp("v3_1.nii.gz"), *o2 = tmp("v3_2.nii.gz");
    unlink(o1);
    unlink(o2);
    snprintf(args, sizeof args, "-q --threads 1 -m %s -o %s %s", model, o1,
             scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    snprintf(args, sizeof args, "-q --threads 2 -m %s -o %s %s", model, o2,
             scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int64_t n = volume_voxels(&v);
    int16_t *l1 = read_labels(o1, n), *l2 = read_labels(o2, n);
    int16_t *e = expected(&v, &ms);
    assert_int_equal(count_diff(l1, l2, n), 0);
    assert_int_equal(count_diff(l1, e, n), 0);
    assert_same_nifti_geometry(scan, o1, 0);
    free(l1);
    free(l2);
    free(e);
    graph_free(&g);
    volume_free(&v);
}

/* The real T1 template: 181 x 217 x 181, odd sizes, through the CLI. */
static void test_ch2(void **state)
{
    (void)state;
    const char *ch2 = "/usr/share/mricron/templates/ch2.nii.gz";
    if (!sl_file_exists(ch2))
        fail_msg("%s missing: apt-get install mricron-data", ch2);
    Volume v;
    assert_int_equal(nio_read(ch2, &v, NULL), 0);
    assert_int_equal(v.dim[0], 181);
    assert_int_equal(v.dim[1], 217);
    assert_int_equal(v.dim[2], 181);
    ModelSpec ms = {.dims = 2,
                    .axis = 2,
                    .nmod = 1,
                    .kind = KIND_THRESH,
                    .downup = 1,
                    .softmax = 1,
                    .norm = NORMALIZE_ZSCORE};
    /* ch2 holds integers: a threshold half-way between raw 100 and 101
     * is >= 0.5 / std away from every voxel. */
    {
        Volume one = v;
        double *nv = normalised(&one, &ms);
        double a = NAN, b = NAN;
        for (int64_t i = 0; i < volume_voxels(&v); i++) {
            if (v.data[i] == 100.0f) a = nv[i];
            if (v.data[i] == 101.0f) b = nv[i];
        }
        free(nv);
        assert_false(isnan(a) || isnan(b));
        ms.t = (float)(0.5 * (a + b));
    }
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    const char *model = tmp("ch2.sslim");
    assert_int_equal(sslim_write(&g, model, 1), 0);
    const char *out = tmp("ch2_seg.nii.gz");
    unlink(out);
    char args[2048], err[512];
    snprintf(args, sizeof args, "-q -m %s -o %s %s", model, out, ch2);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int64_t n = volume_voxels(&v);
    int16_t *lab = read_labels(out, n);
    int16_t *e = expected(&v, &ms);
    assert_int_equal(count_diff(lab, e, n), 0);
    int64_t ones = 0;
    for (int64_t i = 0; i < n; i++)
        ones += lab[i];
    assert_true(ones > n / 20 && ones < n / 2); /* a brain-sized mask */
    assert_same_nifti_geometry(ch2, out, 0);
    free(lab);
    free(e);
    graph_free(&g);
    volume_free(&v);
}

/* The shipped 3D model (models/brain3d_2mm.sslim: 2 mm, 64^3 sliding
 * window) on the real T1: resampled to 2 mm, run, mapped back to the
 * 1 mm grid.  Its brain mask against ch2bet's non-zero voxels measured
 * Dice 0.9755 (models/README.md); 0.95 is issue 11's bar for every
 * storage of this head, and a wrong axis, spacing or window position
 * falls far below it. */
static void test_shipped_3d_model(void **state)
{
    (void)state;
    const char *ch2 = "/usr/share/mricron/templates/ch2.nii.gz";
    const char *bet = "/usr/share/mricron/templates/ch2bet.nii.gz";
    if (!sl_file_exists(ch2) || !sl_file_exists(bet))
        fail_msg("%s missing: apt-get install mricron-data", ch2);
    const char *out = tmp("ch2_3d_seg.nii.gz");
    unlink(out);
    char args[2048], err[512];
    snprintf(args, sizeof args, "-q -m models/brain3d_2mm.sslim -o %s %s",
             out, ch2);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    Volume ref;
    assert_int_equal(nio_read(bet, &ref, NULL), 0);
    int64_t n = volume_voxels(&ref);
    int16_t *lab = read_labels(out, n);
    int64_t both = 0, nl = 0, nr = 0;
    for (int64_t i = 0; i < n; i++) {
        int r = ref.data[i] > 0.0f, l = lab[i] > 0;
        both += r && l;
        nl += l;
        nr += r;
    }
    double dice = 2.0 * (double)both / (double)(nl + nr);
    fprintf(stderr, "brain3d_2mm on ch2: Dice %.4f against ch2bet\n", dice);
    assert_true(dice >= 0.95);
    assert_same_nifti_geometry(ch2, out, 0);
    free(lab);
    volume_free(&ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_cli_3d_threads),
        cmocka_unit_test(test_nonfinite_scan),
        cmocka_unit_test(test_ch2),
        cmocka_unit_test(test_shipped_3d_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
