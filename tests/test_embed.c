/* The embeddable runtime (runtime/sauron_rt.h).
 *
 * 1. tools/embed_example.c, built by the Makefile against the public
 *    header alone and the shared library, segments its in-memory volume
 *    with models/default.sslim; the same volume written as a float32
 *    NIfTI with the same affine (entries exact in float32) goes through
 *    the segment program, and the two label maps must be equal voxel for
 *    voxel: the API must run the same orientation/spacing path as
 *    segment, with no tolerance (same code, same thread-independent
 *    arithmetic).
 * 2. The example also compiles and links with the flags of the built
 *    sauron-rt.pc (prefix pointed at the build folder, whose include/ and
 *    lib/ have the installed layout), so the .pc file and the header are
 *    complete.
 *    The shared library exports srt_ symbols only.
 * 3. Error paths through the static library: codes, one error line, no
 *    label written, caller's quiet setting restored.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti2_io.h>

#include "runtime/common.h"
#include "runtime/sauron_rt.h"
#include "tests/testutil.h"

/* The example's geometry (tools/embed_example.c, EX_*). */
enum { NX = 48, NY = 40, NZ = 6 };
static const double AFF[4][4] = {{-1.125, 0, 0, 30.0},
                                 {0, -1.25, 0, 25.0},
                                 {0, 0, 2.5, -5.0},
                                 {0, 0, 0, 1}};
#define NVOX ((size_t)NX * NY * NZ)
#define MODEL "models/default.sslim"

static void *read_all(const char *path, size_t bytes)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    void *p = malloc(bytes + 1);
    assert_non_null(p);
    /* exactly `bytes`: one more byte must not be there */
    assert_int_equal(fread(p, 1, bytes + 1, f), bytes);
    fclose(f);
    return p;
}

static void write_scan(const char *path, const float *vol)
{
    int64_t dims[8] = {3, NX, NY, NZ, 1, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, DT_FLOAT32, 1);
    assert_non_null(nim);
    memcpy(nim->data, vol, NVOX * sizeof *vol);
    nim->pixdim[1] = nim->dx = 1.125;
    nim->pixdim[2] = nim->dy = 1.25;
    nim->pixdim[3] = nim->dz = 2.5;
    nim->qform_code = 0;
    nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            nim->sto_xyz.m[r][c] = AFF[r][c];
    nim->xyz_units = NIFTI_UNITS_MM;
    assert_int_equal(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
}

static void test_example_matches_segment(void **state)
{
    (void)state;
    char bin[300], seg[300], cmd[2000];
    char vp[300], lp[300], sp[300], op[300];
    snprintf(vp, sizeof vp, "%s", test_tmp_path("embed_vol.f32"));
    snprintf(lp, sizeof lp, "%s", test_tmp_path("embed_lab.i16"));
    snprintf(sp, sizeof sp, "%s", test_tmp_path("embed_scan.nii.gz"));
    snprintf(op, sizeof op, "%s", test_tmp_path("embed_scan_seg.nii.gz"));
    snprintf(cmd, sizeof cmd,
             "rm -f %s %s %s %s && %s %s %s %s >%s/embed.txt", vp, lp, sp, op,
             bin_path("embed-example", bin, sizeof bin), MODEL, vp, lp,
             test_tmpdir());
    assert_int_equal(run_cmd(cmd, NULL, 0), 0);
    char txt[300];
    snprintf(txt, sizeof txt, "%s/embed.txt", test_tmpdir());
    assert_true(file_has_line_starting(txt, "class 1 (brain): "));

    float *vol = read_all(vp, NVOX * sizeof(float));
    int16_t *lab = read_all(lp, NVOX * sizeof(int16_t));
    write_scan(sp, vol);
    snprintf(cmd, sizeof cmd, "%s -q --threads 1 -m %s -o %s %s",
             bin_path("segment", seg, sizeof seg), MODEL, op, sp);
    assert_int_equal(run_cmd(cmd, NULL, 0), 0);

    nifti_image *nim = nifti_image_read(op, 1);
    assert_non_null(nim);
    assert_int_equal(nim->nvox, NVOX);
    /* segment stores labels as uint8 when the classes fit, else int16 */
    assert_true(nim->datatype == DT_UINT8 || nim->datatype == DT_INT16);
    size_t diff = 0, fg = 0, first = 0;
    for (size_t i = 0; i < NVOX; i++) {
        int ref = nim->datatype == DT_UINT8 ? ((const uint8_t *)nim->data)[i]
                                            : ((const int16_t *)nim->data)[i];
        if (lab[i] != ref && diff++ == 0) first = i;
        fg += ref != 0;
    }
    if (diff)
        fprintf(stderr, "%zu labels differ, first at voxel %zu\n", diff,
                first);
    assert_int_equal(diff, 0);
    /* the phantom must give both classes, or equality proves little */
    assert_true(fg > 100 && fg < NVOX - 100);
    nifti_image_free(nim);
    free(vol);
    free(lab);
}

static void test_pkg_config_build(void **state)
{
    (void)state;
    char cmd[2000];
    const char *b = test_build_dir();
    const char *cc = getenv("CC");
    snprintf(
        cmd, sizeof cmd,
        "export PKG_CONFIG_PATH=%s/lib/pkgconfig; %s -std=c11 -Wall -Wextra "
        "-Werror tools/embed_example.c $(pkg-config "
        "--define-variable=prefix=%s --cflags --libs sauron-rt) -o "
        "%s/embed_pc",
        b, cc && *cc ? cc : "cc", b, test_tmpdir());
    char err[512] = "";
    int rc = run_cmd(cmd, err, sizeof err);
    if (rc) fprintf(stderr, "pkg-config build: %s\n", err);
    assert_int_equal(rc, 0);
    /* the shared library exports the srt_ API only (sauron_rt.map) */
    snprintf(cmd, sizeof cmd,
             "nm -D --defined-only %s/lib/libsauron_rt.so.0 | awk "
             "'$2 ~ /^[A-Z]$/ && $2 != \"A\" && $3 !~ /^srt_/ "
             "{ print > \"/dev/stderr\"; bad = 1 } END { exit bad }'",
             b);
    rc = run_cmd(cmd, err, sizeof err);
    if (rc) fprintf(stderr, "exported beyond srt_: %s\n", err);
    assert_int_equal(rc, 0);
}

static void test_errors(void **state)
{
    (void)state;
    sl_error_quiet(0);
    srt_model *m = (srt_model *)&m; /* must be reset to NULL */
    int rc = srt_open(test_tmp_path("no_such.sslim"), NULL, &m);
    assert_int_equal(rc, SRT_EIO);
    assert_null(m);
    assert_true(strstr(srt_last_error(), "no_such.sslim") != NULL);
    assert_int_equal(sl_error_is_quiet(), 0); /* restored */
    assert_int_equal(srt_open(NULL, NULL, &m), SRT_EARG);

    srt_options o = {1, 0};
    assert_int_equal(srt_open(MODEL, &o, &m), SRT_OK);
    assert_int_equal(srt_n_modalities(m), 1);
    assert_int_equal(srt_n_classes(m), 2);
    assert_null(srt_class_name(m, 2));
    float vol[4 * 4 * 2] = {0};
    int16_t lab[4 * 4 * 2];
    for (size_t i = 0; i < 32; i++)
        lab[i] = 77;
    const int64_t dim[3] = {4, 4, 2}, bad[3] = {4, 0, 2};
    assert_int_equal(srt_segment(m, vol, 2, dim, NULL, NULL, lab), SRT_EARG);
    assert_true(strstr(srt_last_error(), "modalities") != NULL);
    double aff[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2};
    assert_int_equal(srt_segment(m, vol, 1, dim, aff, NULL, lab), SRT_EARG);
    double sp[3] = {1, -1, 1};
    assert_int_equal(srt_segment(m, vol, 1, dim, NULL, sp, lab), SRT_EARG);
    assert_int_equal(srt_segment(m, vol, 1, bad, NULL, NULL, lab),
                     SRT_ESHAPE);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(lab[i], 77);
    assert_int_equal(srt_segment(NULL, vol, 1, dim, NULL, NULL, lab),
                     SRT_EARG);
    assert_int_equal(sl_error_is_quiet(), 0);
    srt_close(m);
    srt_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_matches_segment),
        cmocka_unit_test(test_pkg_config_build),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
