/* NIfTI input/output: every datatype with scaling, 4D and comma-joined
 * modalities, grid mismatches, crafted malformed headers (written byte by
 * byte), NIfTI-2, label/probability output geometry, --force rules. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <nifti2_io.h>

#include "runtime/common.h"
#include "runtime/nifti_io.h"
#include "tests/niftifixture.h"

static const char *tmp(const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

/* libnifti 2.1's nifti_image_write puts single-file NIfTI-2 data at
 * offset 0 over the header, so NIfTI-2 test files are assembled here from
 * libnifti's own header conversion. */
static void write_n2(const nifti_image *nim, const char *path)
{
    nifti_2_header h;
    assert_int_equal(nifti_convert_nim2n2hdr(nim, &h), 0);
    memcpy(h.magic, "n+2\0\r\n\032\n", 8);
    h.vox_offset = 544;
    size_t len = strlen(path);
    znzFile f =
        znzopen(path, "wb", len > 3 && !strcmp(path + len - 3, ".gz"));
    assert_false(znz_isnull(f));
    static const char ext[4] = {0};
    size_t bytes = (size_t)nim->nvox * (size_t)nim->nbyper;
    assert_int_equal(znzwrite(&h, 1, 540, f), 540);
    assert_int_equal(znzwrite(ext, 1, 4, f), 4);
    assert_int_equal(znzwrite(nim->data, 1, bytes, f), bytes);
    assert_int_equal(znzclose(f), 0);
}

/* Write a NIfTI file with libnifti: dims nx,ny,nz,nt; voxel values given
 * as doubles converted to `dt`; an oblique qform and a distinct sform so
 * geometry checks have something to compare. */
static void write_nifti(const char *path, const int64_t d[4], int dt,
                        const double *vals, double slope, double inter,
                        int nifti2)
{
    int64_t dims[8] = {d[3] > 1 ? 4 : 3, d[0], d[1], d[2], d[3], 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, dt, 1);
    assert_non_null(nim);
    int64_t n = nim->nvox;
    for (int64_t i = 0; i < n; i++) {
        double v = vals[i];
        if (nifti_fixture_put(nim, i, v)) fail_msg("bad dt %d", dt);
    }
    nim->scl_slope = slope;
    nim->scl_inter = inter;
    nim->pixdim[1] = nim->dx = 0.9;
    nim->pixdim[2] = nim->dy = 1.1;
    nim->pixdim[3] = nim->dz = 2.5;
    nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
    nim->quatern_b = 0.1;
    nim->quatern_c = -0.2;
    nim->quatern_d = 0.05;
    nim->qoffset_x = -90.5;
    nim->qoffset_y = 12.25;
    nim->qoffset_z = -7.0;
    nim->qfac = -1.0;
    nim->qto_xyz = nifti_quatern_to_dmat44(
        nim->quatern_b, nim->quatern_c, nim->quatern_d, nim->qoffset_x,
        nim->qoffset_y, nim->qoffset_z, nim->dx, nim->dy, nim->dz, nim->qfac);
    nim->sform_code = NIFTI_XFORM_MNI_152;
    memset(&nim->sto_xyz, 0, sizeof nim->sto_xyz);
    nim->sto_xyz.m[0][0] = 0.9;
    nim->sto_xyz.m[1][1] = 1.1;
    nim->sto_xyz.m[2][2] = 2.5;
    nim->sto_xyz.m[0][1] = 0.05;
    nim->sto_xyz.m[0][3] = -80;
    nim->sto_xyz.m[1][3] = 3;
    nim->sto_xyz.m[2][3] = 44;
    nim->sto_xyz.m[3][3] = 1;
    nim->xyz_units = NIFTI_UNITS_MM;
    nim->time_units = NIFTI_UNITS_SEC;
    if (nifti2) {
        write_n2(nim, path);
    } else {
        assert_int_equal(nifti_set_filenames(nim, path, 0, 1), 0);
        nifti_image_write(nim);
    }
    nifti_image_free(nim);
    assert_true(sl_file_exists(path));
}

static double *ramp(int64_t n, double lo, double step, double mod)
{
    double *v = malloc(sizeof(double) * (size_t)n);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = lo + fmod((double)i * step, mod);
    return v;
}

static void test_datatypes_roundtrip(void **state)
{
    (void)state;
    static const struct {
        int dt;
        double lo, step, mod;
    } types[] = {
        {DT_UINT8, 0, 7, 256},       {DT_INT8, -128, 5, 256},
        {DT_UINT16, 0, 977, 65536},  {DT_INT16, -30000, 977, 60000},
        {DT_UINT32, 0, 1e5, 4e9},    {DT_INT32, -2e9, 1.7e6, 4e9},
        {DT_UINT64, 0, 123457, 1e7}, {DT_INT64, -5e6, 123457, 1e7},
        {DT_FLOAT32, -3, 0.37, 50},  {DT_FLOAT64, -1e3, 3.3, 2e3},
    };
    const int64_t d[4] = {5, 4, 3, 1};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (int variant = 0; variant < 3; variant++) {
            /* variant 0: slope 0 (no scaling), 1: slope/inter, 2: .nii */
            double slope = variant == 0 ? 0.0 : 2.5, inter = -3.0;
            const char *path = tmp(variant == 2 ? "dt.nii" : "dt.nii.gz");
            double *vals = ramp(60, types[t].lo, types[t].step, types[t].mod);
            write_nifti(path, d, types[t].dt, vals, slope, inter, 0);
            Volume v;
            NiftiGeom *g = NULL;
            sl_error_reset();
            assert_int_equal(nio_read(path, &v, &g), 0);
            assert_int_equal(v.dim[0], 5);
            assert_int_equal(v.dim[1], 4);
            assert_int_equal(v.dim[2], 3);
            assert_int_equal(v.n_mod, 1);
            float want[60];
            for (int i = 0; i < 60; i++) {
                double x = vals[i];
                /* The stored value, as the file type holds it. */
                if (types[t].dt == DT_FLOAT32) x = (double)(float)x;
                want[i] = (float)(slope != 0.0 ? x * slope + inter : x);
            }
            /* Exact up to float32 rounding of the scaled value. */
            if (!allclose(v.data, want, 60, 0.0, 1e-7, "datatype")) {
                fail_msg("datatype %d variant %d", types[t].dt, variant);
            }
            volume_free(&v);
            nio_geom_free(g);
            free(vals);
            unlink(path);
        }
}

static void test_nifti2_and_4d(void **state)
{
    (void)state;
    const int64_t d[4] = {6, 5, 4, 2};
    double *vals = ramp(240, -10, 1.5, 400);
    const char *p2 = tmp("four_d_n2.nii.gz");
    write_nifti(p2, d, DT_FLOAT32, vals, 0, 0, 1);
    /* Make sure it really is NIfTI-2 on disk. */
    int nver = 0;
    void *h = nifti_read_header(p2, &nver, 0);
    assert_non_null(h);
    free(h);
    assert_int_equal(nver, 2);
    Volume v;
    NiftiGeom *g = NULL;
    assert_int_equal(nio_read(p2, &v, &g), 0);
    assert_int_equal(v.n_mod, 2);
    assert_int_equal(v.dim[0] * v.dim[1] * v.dim[2], 120);
    float want[240];
    for (int i = 0; i < 240; i++)
        want[i] = (float)vals[i];
    assert_allclose(v.data, want, 240, 0.0, 0.0);
    int64_t gd[3];
    nio_geom_dims(g, gd);
    assert_int_equal(gd[0], 6);
    assert_int_equal(gd[2], 4);
    /* A NIfTI-2 input gives a NIfTI-2 label map with the same geometry. */
    int16_t lab[120] = {0};
    const char *out = tmp("four_d_n2_seg.nii.gz");
    unlink(out);
    assert_int_equal(nio_write_labels(out, g, lab, 2, 0), 0);
    h = nifti_read_header(out, &nver, 0);
    assert_non_null(h);
    free(h);
    assert_int_equal(nver, 2);
    assert_same_nifti_geometry(p2, out, 1);
    volume_free(&v);
    nio_geom_free(g);
    free(vals);
}

static void test_comma_joined(void **state)
{
    (void)state;
    const int64_t d[4] = {4, 3, 2, 1};
    double *a = ramp(24, 0, 1, 100), *b = ramp(24, 50, 3, 100);
    const char *pa = tmp("mod_a.nii.gz"), *pb = tmp("mod_b.nii");
    write_nifti(pa, d, DT_INT16, a, 0, 0, 0);
    write_nifti(pb, d, DT_FLOAT64, b, 0, 0, 1); /* NIfTI-2 + NIfTI-1 mix */
    char spec[1200];
    snprintf(spec, sizeof spec, "%s,%s,%s", pa, pb, pa);
    Volume v;
    assert_int_equal(nio_read(spec, &v, NULL), 0);
    assert_int_equal(v.n_mod, 3);
    for (int i = 0; i < 24; i++) {
        assert_true(v.data[i] == (float)a[i]);
        assert_true(v.data[24 + i] == (float)b[i]);
        assert_true(v.data[48 + i] == (float)a[i]);
    }
    volume_free(&v);

    /* Different dims, then different spacing: a clear ERR_SHAPE. */
    const int64_t d2[4] = {4, 3, 3, 1};
    double *c = ramp(36, 0, 1, 10);
    const char *pc = tmp("mod_c.nii.gz");
    write_nifti(pc, d2, DT_UINT8, c, 0, 0, 0);
    snprintf(spec, sizeof spec, "%s,%s", pa, pc);
    sl_error_reset();
    sl_error_quiet(1);
    assert_int_equal(nio_read(spec, &v, NULL), ERR_SHAPE);
    assert_non_null(strstr(sl_error_last(), "dimensions"));
    assert_null(v.data);

    nifti_image *nim = nifti_image_read(pb, 1);
    assert_non_null(nim);
    nim->pixdim[2] = nim->dy = 1.3;
    const char *pd = tmp("mod_d.nii.gz");
    assert_int_equal(nifti_set_filenames(nim, pd, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
    snprintf(spec, sizeof spec, "%s,%s", pa, pd);
    sl_error_reset();
    assert_int_equal(nio_read(spec, &v, NULL), ERR_SHAPE);
    assert_non_null(strstr(sl_error_last(), "pixdim"));

    /* Same grid but a different sform. */
    nim = nifti_image_read(pb, 1);
    nim->sto_xyz.m[0][3] += 1.0;
    const char *pe = tmp("mod_e.nii.gz");
    assert_int_equal(nifti_set_filenames(nim, pe, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
    snprintf(spec, sizeof spec, "%s,%s", pa, pe);
    sl_error_reset();
    assert_int_equal(nio_read(spec, &v, NULL), ERR_SHAPE);
    assert_non_null(strstr(sl_error_last(), "sform"));

    snprintf(spec, sizeof spec, "%s,,%s", pa, pb);
    sl_error_reset();
    assert_int_equal(nio_read(spec, &v, NULL), ERR_ARG);
    sl_error_quiet(0);
    free(a);
    free(b);
    free(c);
}

/* ---- crafted headers ---- */

static void put16(uint8_t *p, int v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void putf(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    sl_wr32(p, u);
}
static void putd(uint8_t *p, double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    sl_wr64(p, u);
}

/* A NIfTI-1 file: 348-byte header with vox_offset `off` and `magic`, 4
 * extension bytes, then data_bytes of voxel data (a ramp) from byte 352,
 * written plain or gzipped. */
static void craft_n1_at(const char *path, const int dim[8], int dt,
                        int bitpix, size_t data_bytes, int gz, float off,
                        const char *magic)
{
    size_t n = 352 + data_bytes;
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
    sl_wr32(b, 348);
    for (int i = 0; i < 8; i++)
        put16(b + 40 + 2 * i, dim[i]);
    put16(b + 70, dt);
    put16(b + 72, bitpix);
    for (int i = 0; i < 8; i++)
        putf(b + 76 + 4 * i, 1.0f);
    putf(b + 108, off);
    memcpy(b + 344, magic, 4);
    for (size_t i = 352; i < n; i++)
        b[i] = (uint8_t)(i * 7);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, b, (unsigned)n), (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(b, 1, n, f), n);
        fclose(f);
    }
    free(b);
}

/* The usual single file: magic n+1, data at 352. */
static void craft_n1(const char *path, const int dim[8], int dt, int bitpix,
                     size_t data_bytes, int gz)
{
    craft_n1_at(path, dim, dt, bitpix, data_bytes, gz, 352.0f, "n+1");
}

/* A NIfTI-2 file (540-byte header + 4) with vox_offset `off` and a
 * 4-byte magic (the rest of the 8 is always "\r\n\032\n"); data from
 * byte 544. */
static void craft_n2_at(const char *path, const int64_t dim[8], int dt,
                        int bitpix, size_t data_bytes, int64_t off,
                        const char *magic)
{
    size_t n = 544 + data_bytes;
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
    sl_wr32(b, 540);
    memcpy(b + 4, magic, 4);
    memcpy(b + 8, "\r\n\032\n", 4);
    put16(b + 12, dt);
    put16(b + 14, bitpix);
    for (int i = 0; i < 8; i++)
        sl_wr64(b + 16 + 8 * i, (uint64_t)dim[i]);
    for (int i = 0; i < 8; i++)
        putd(b + 104 + 8 * i, 1.0);
    sl_wr64(b + 168, (uint64_t)off);
    for (size_t i = 544; i < n; i++)
        b[i] = (uint8_t)(i * 3);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

static void craft_n2(const char *path, const int64_t dim[8], int dt,
                     int bitpix, size_t data_bytes)
{
    craft_n2_at(path, dim, dt, bitpix, data_bytes, 544, "n+2");
}

static void expect_fail(const char *path, int code, const char *needle)
{
    Volume v;
    NiftiGeom *g = (NiftiGeom *)1;
    sl_error_reset();
    sl_error_quiet(1);
    int rc = nio_read(path, &v, &g);
    sl_error_quiet(0);
    if (rc != code || !strstr(sl_error_last(), needle))
        fail_msg("%s: got %d '%s', want %d with '%s'", path, rc,
                 sl_error_last(), code, needle);
    assert_null(v.data);
    assert_null(g);
    /* The message names the file. */
    assert_non_null(strstr(sl_error_last(), path));
}

static void test_malformed_headers(void **state)
{
    (void)state;
    const char *p = tmp("bad.nii"), *pg = tmp("bad.nii.gz");
    /* The crafted writer itself is sound: a good file reads. */
    int good[8] = {3, 4, 3, 2, 1, 1, 1, 1};
    craft_n1(p, good, DT_INT16, 16, 48, 0);
    Volume v;
    assert_int_equal(nio_read(p, &v, NULL), 0);
    assert_int_equal(v.dim[0] * v.dim[1] * v.dim[2], 24);
    volume_free(&v);
    craft_n1(pg, good, DT_INT16, 16, 48, 1);
    assert_int_equal(nio_read(pg, &v, NULL), 0);
    volume_free(&v);

    int neg[8] = {3, 4, -3, 2, 1, 1, 1, 1};
    craft_n1(p, neg, DT_INT16, 16, 48, 0);
    expect_fail(p, ERR_FORMAT, "not positive");
    int zero[8] = {3, 0, 3, 2, 1, 1, 1, 1};
    craft_n1(p, zero, DT_INT16, 16, 48, 0);
    expect_fail(p, ERR_FORMAT, "not positive");
    int d0[8] = {9, 4, 3, 2, 1, 1, 1, 1};
    craft_n1(p, d0, DT_INT16, 16, 48, 0);
    expect_fail(p, ERR_FORMAT, "dim[0]");
    int d00[8] = {0, 4, 3, 2, 1, 1, 1, 1};
    craft_n1(p, d00, DT_INT16, 16, 48, 0);
    expect_fail(p, ERR_FORMAT, "dim[0]");
    int over[8] = {7, 32767, 32767, 32767, 32767, 32767, 32767, 32767};
    craft_n1(p, over, DT_INT16, 16, 48, 0);
    expect_fail(p, ERR_FORMAT, "overflow");
    int five[8] = {5, 4, 3, 2, 1, 2, 1, 1};
    craft_n1(p, five, DT_INT16, 16, 96, 0);
    expect_fail(p, ERR_UNSUPPORTED, "5D");
    /* 5D with the extra dims all 1 is fine. */
    int five1[8] = {5, 4, 3, 2, 1, 1, 1, 1};
    craft_n1(p, five1, DT_INT16, 16, 48, 0);
    assert_int_equal(nio_read(p, &v, NULL), 0);
    volume_free(&v);

    /* Short data: .nii by file size, .nii.gz by the decompressed count. */
    craft_n1(p, good, DT_INT16, 16, 47, 0);
    expect_fail(p, ERR_FORMAT, "shorter");
    craft_n1(pg, good, DT_INT16, 16, 30, 1);
    expect_fail(pg, ERR_FORMAT, "shorter");
    /* Huge declared size in a tiny .gz: refused before allocating it. */
    int huge[8] = {3, 30000, 30000, 30000, 1, 1, 1, 1};
    craft_n1(pg, huge, DT_FLOAT32, 32, 100, 1);
    expect_fail(pg, ERR_FORMAT, "shorter");
    craft_n1(p, huge, DT_FLOAT32, 32, 100, 0);
    expect_fail(p, ERR_FORMAT, "shorter");

    craft_n1(p, good, DT_COMPLEX64, 64, 192, 0);
    expect_fail(p, ERR_UNSUPPORTED, "datatype");
    craft_n1(p, good, DT_RGB24, 24, 72, 0);
    expect_fail(p, ERR_UNSUPPORTED, "datatype");
    craft_n1(p, good, DT_COMPLEX128, 128, 384, 0);
    expect_fail(p, ERR_UNSUPPORTED, "datatype");

    /* Not NIfTI at all; missing file. */
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    for (int i = 0; i < 1000; i++)
        fputc((i * 37) & 0xff, f);
    fclose(f);
    expect_fail(p, ERR_FORMAT, "not a NIfTI");
    expect_fail(tmp("does_not_exist.nii.gz"), ERR_IO, "cannot open");

    /* NIfTI-2: a valid crafted file, then dims that overflow int64. */
    const char *p2 = tmp("bad2.nii");
    int64_t g2[8] = {3, 3, 2, 2, 1, 1, 1, 1};
    craft_n2(p2, g2, DT_UINT8, 8, 12);
    assert_int_equal(nio_read(p2, &v, NULL), 0);
    assert_true(v.data[1] == (float)(uint8_t)(545 * 3));
    volume_free(&v);
    int64_t o2[8] = {3, (int64_t)1 << 40, (int64_t)1 << 40, 4, 1, 1, 1, 1};
    craft_n2(p2, o2, DT_UINT8, 8, 12);
    expect_fail(p2, ERR_FORMAT, "overflow");
    int64_t n2[8] = {4, 3, 2, 2, -1, 1, 1, 1};
    craft_n2(p2, n2, DT_UINT8, 8, 12);
    expect_fail(p2, ERR_FORMAT, "not positive");
    int64_t s2[8] = {3, 300, 200, 100, 1, 1, 1, 1};
    craft_n2(p2, s2, DT_UINT8, 8, 12);
    expect_fail(p2, ERR_FORMAT, "shorter");
}

/* ---- resource claims: headers that claim more than the file holds ---- */

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

typedef struct {
    int rc;
    char msg[1024];
} CappedRead;

/* nio_read(path) in a child whose address space may grow by at most
 * 1 GiB (not under ASan, whose shadow memory needs terabytes of address
 * space): a reader that allocates a header's claim fails there with
 * ERR_NOMEM instead of taking the machine's memory, so "refused before
 * any large allocation" is what ERR_FORMAT from the child shows. */
static CappedRead read_capped(const char *path)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
#ifndef UNDER_ASAN
        long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%ld", &pages) != 1) _exit(3);
        fclose(f);
        rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGE_SIZE) +
                     ((rlim_t)1 << 30);
        struct rlimit rl = {cap, cap};
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(4);
#endif
        CappedRead r;
        memset(&r, 0, sizeof r);
        Volume v;
        NiftiGeom *g = NULL;
        sl_error_reset();
        sl_error_quiet(1);
        r.rc = nio_read(path, &v, &g);
        snprintf(r.msg, sizeof r.msg, "%s", sl_error_last());
        if (r.rc == 0) {
            volume_free(&v);
            nio_geom_free(g);
        }
        _exit(write(fds[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 5);
    }
    close(fds[1]);
    CappedRead r;
    memset(&r, 0, sizeof r);
    ssize_t got = read(fds[0], &r, sizeof r);
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        got != (ssize_t)sizeof r)
        fail_msg("%s: the capped reader died (status %d)", path, status);
    return r;
}

static void expect_capped_fail(const char *path, int code, const char *needle)
{
    CappedRead r = read_capped(path);
    if (r.rc != code || !strstr(r.msg, needle) || !strstr(r.msg, path))
        fail_msg("%s: got %d '%s', want %d with '%s'", path, r.rc, r.msg,
                 code, needle);
}

/* The fuzzer's findings (tests/fixtures/fuzz/nifti): NIfTI-2 files with
 * a negative vox_offset that overflowed the size check; one made segment
 * allocate and zero 17 GB.  Each is refused for its offset, within the
 * memory cap. */
static void test_fuzz_reproducers(void **state)
{
    (void)state;
    static const char *names[] = {
        "fuzz/nifti/nifti2-negative-vox-offset-overflow.nii",
        "fuzz/nifti/nifti2-negative-vox-offset-17GB.nii",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[300];
        fixture_path(names[i], path, sizeof path);
        assert_true(sl_file_exists(path));
        expect_capped_fail(path, ERR_FORMAT, "vox_offset");
    }
}

/* Every vox_offset that is not a byte offset at or past the header (and
 * its extension flag) is refused by name; legal ones are honoured. */
static void test_vox_offset_class(void **state)
{
    (void)state;
    const char *p = tmp("off.nii"), *p2 = tmp("off2.nii");
    int d1[8] = {3, 4, 3, 2, 1, 1, 1, 1};
    int64_t d2[8] = {3, 4, 3, 2, 1, 1, 1, 1};
    static const int64_t bad2[] = {-1,  -932007903233, INT64_MIN,           0,
                                   543, INT64_MAX,     (int64_t)1 << 62 | 1};
    for (size_t i = 0; i < sizeof bad2 / sizeof bad2[0]; i++) {
        craft_n2_at(p2, d2, DT_UINT8, 8, 24, bad2[i], "n+2");
        expect_capped_fail(p2, ERR_FORMAT, "vox_offset");
    }
    /* Past the end of the file: the data are missing. */
    static const int64_t past2[] = {545, 4096, (int64_t)1 << 40};
    for (size_t i = 0; i < sizeof past2 / sizeof past2[0]; i++) {
        craft_n2_at(p2, d2, DT_UINT8, 8, 24, past2[i], "n+2");
        expect_capped_fail(p2, ERR_FORMAT, "shorter");
    }
    static const float bad1[] = {-5.0f, 100.0f, 351.0f, 352.5f, -1e30f};
    for (size_t i = 0; i < sizeof bad1 / sizeof bad1[0]; i++) {
        craft_n1_at(p, d1, DT_UINT8, 8, 24, 0, bad1[i], "n+1");
        expect_capped_fail(p, ERR_FORMAT, "vox_offset");
    }
    craft_n1_at(p, d1, DT_UINT8, 8, 24, 0, NAN, "n+1");
    expect_capped_fail(p, ERR_FORMAT, "vox_offset");
    craft_n1_at(p, d1, DT_UINT8, 8, 24, 0, INFINITY, "n+1");
    expect_capped_fail(p, ERR_FORMAT, "vox_offset");
    craft_n1_at(p, d1, DT_UINT8, 8, 24, 0, 1e12f, "n+1");
    expect_capped_fail(p, ERR_FORMAT, "shorter");
    /* A .hdr/.img pair's header named .nii: its offset counts in another
     * file, so it is refused as a pair (a negative offset, as in the
     * fuzz reproducers, is refused as corrupt first). */
    craft_n1_at(p, d1, DT_UINT8, 8, 24, 0, 0.0f, "ni1");
    expect_capped_fail(p, ERR_UNSUPPORTED, "pair");
    craft_n2_at(p2, d2, DT_UINT8, 8, 24, 544, "ni2");
    expect_capped_fail(p2, ERR_UNSUPPORTED, "pair");
    craft_n2_at(p2, d2, DT_UINT8, 8, 24, 544, "x+2");
    expect_capped_fail(p2, ERR_FORMAT, "magic");

    /* Legal: NIfTI-1 offset 0 means right after the header (352); a
     * larger offset skips bytes (here 4 bytes of the ramp). */
    Volume v;
    craft_n1_at(p, d1, DT_UINT8, 8, 24, 0, 0.0f, "n+1");
    assert_int_equal(nio_read(p, &v, NULL), 0);
    assert_true(v.data[0] == (float)(uint8_t)(352 * 7));
    volume_free(&v);
    craft_n1_at(p, d1, DT_UINT8, 8, 28, 0, 356.0f, "n+1");
    assert_int_equal(nio_read(p, &v, NULL), 0);
    assert_true(v.data[0] == (float)(uint8_t)(356 * 7));
    assert_true(v.data[23] == (float)(uint8_t)(379 * 7));
    volume_free(&v);
    craft_n2_at(p2, d2, DT_UINT8, 8, 30, 550, "n+2");
    assert_int_equal(nio_read(p2, &v, NULL), 0);
    assert_true(v.data[0] == (float)(uint8_t)(550 * 3));
    volume_free(&v);
    unlink(p);
    unlink(p2);
}

/* A .nii.gz whose header claims 2 GB within deflate's 1032:1 bound, but
 * whose stream holds 2.5 MB: refused as short with memory bounded by the
 * real data (the old reader allocated the claim, 2 GB raw + 2 GB float,
 * up front).  Then claims that the file size alone refutes, each kind of
 * dimension. */
static void test_claims_beyond_the_data(void **state)
{
    (void)state;
    const char *pg = tmp("claim.nii.gz"), *p = tmp("claim.nii");
    int big[8] = {3, 1000, 1000, 500, 1, 1, 1, 1};
    size_t n = 352 + ((size_t)5 << 19);
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
    sl_wr32(b, 348);
    for (int i = 0; i < 8; i++)
        put16(b + 40 + 2 * i, big[i]);
    put16(b + 70, DT_FLOAT32);
    put16(b + 72, 32);
    for (int i = 0; i < 8; i++)
        putf(b + 76 + 4 * i, 1.0f);
    putf(b + 108, 352.0f);
    memcpy(b + 344, "n+1", 4);
    TestRng r = {7};
    for (size_t i = 352; i < n; i++)
        b[i] = (uint8_t)trng_next(&r);
    gzFile f = gzopen(pg, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, b, (unsigned)n), (int)n);
    gzclose(f);
    free(b);
    expect_capped_fail(pg, ERR_FORMAT, "shorter");
    unlink(pg);

    static const int claims[][8] = {
        {3, 32767, 32767, 32767, 1, 1, 1, 1},
        {4, 100, 100, 100, 4000, 1, 1, 1},
        {1, 32767, 1, 1, 1, 1, 1, 1},
        {7, 2, 2, 2, 2, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof claims / sizeof claims[0]; i++) {
        craft_n1(p, claims[i], DT_FLOAT64, 64, 24, 0);
        expect_capped_fail(p, ERR_FORMAT, "shorter");
        craft_n1(pg, claims[i], DT_FLOAT64, 64, 24, 1);
        expect_capped_fail(pg, ERR_FORMAT, "shorter");
    }
    int64_t c2[8] = {4, (int64_t)1 << 20, (int64_t)1 << 20, 1 << 10, 2, 1, 1,
                     1};
    craft_n2(p, c2, DT_INT64, 64, 24);
    expect_capped_fail(p, ERR_FORMAT, "shorter");
    unlink(p);
}

/* The memory limit: a claim above it is refused with one line naming
 * the limit; the limit itself is allowed. */
static void test_memory_limit(void **state)
{
    (void)state;
    const char *p = tmp("limit.nii.gz");
    int d[8] = {4, 4, 3, 2, 2, 1, 1, 1};
    craft_n1(p, d, DT_INT16, 16, 96, 1);
    uint64_t need = 4 * 3 * 2 * 2 * sizeof(float);
    Volume v;
    sl_error_reset();
    sl_error_quiet(1);
    assert_int_equal(nio_read_within(p, need - 1, &v, NULL), ERR_NOMEM);
    sl_error_quiet(0);
    assert_non_null(strstr(sl_error_last(), "memory limit"));
    assert_non_null(strstr(sl_error_last(), p));
    assert_null(v.data);
    sl_error_reset();
    assert_int_equal(nio_read_within(p, need, &v, NULL), 0);
    assert_int_equal(v.n_mod, 2);
    volume_free(&v);
    /* The default: half the machine's RAM, so more than this file. */
    assert_true(nio_default_max_memory() > ((uint64_t)1 << 26));
    unlink(p);
}

static int has_tmp_files(void)
{
    DIR *d = opendir(test_tmpdir());
    assert_non_null(d);
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) found = 1;
    closedir(d);
    return found;
}

static void test_write_labels_and_probs(void **state)
{
    (void)state;
    const int64_t d[4] = {7, 6, 5, 2};
    double *vals = ramp(420, 0, 1, 97);
    const char *in = tmp("geom_in.nii.gz");
    write_nifti(in, d, DT_INT16, vals, 1.5, 2, 0);
    Volume v;
    NiftiGeom *g = NULL;
    assert_int_equal(nio_read(in, &v, &g), 0);
    int16_t lab[210];
    for (int i = 0; i < 210; i++)
        lab[i] = (int16_t)(i % 4);

    const char *out = tmp("geom_seg.nii.gz");
    unlink(out);
    assert_int_equal(nio_write_labels(out, g, lab, 4, 0), 0);
    assert_false(has_tmp_files());
    nifti_image *o = nifti_image_read(out, 1);
    assert_non_null(o);
    assert_int_equal(o->datatype, DT_UINT8);
    assert_int_equal(o->dim[0], 3);
    assert_int_equal(o->nvox, 210);
    assert_true(o->scl_slope == 1.0 && o->scl_inter == 0.0);
    assert_string_equal(o->descrip, "sauron segment");
    for (int i = 0; i < 210; i++)
        assert_int_equal(((uint8_t *)o->data)[i], i % 4);
    nifti_image_free(o);
    assert_same_nifti_geometry(in, out, 1);

    /* Refused without force (message says --force), allowed with it. */
    sl_error_reset();
    sl_error_quiet(1);
    assert_int_equal(nio_write_labels(out, g, lab, 4, 0), ERR_EXISTS);
    assert_non_null(strstr(sl_error_last(), "--force"));
    assert_int_equal(nio_write_labels(tmp("x.img"), g, lab, 4, 1), ERR_ARG);
    assert_int_equal(
        nio_write_labels(tmp("no/such/dir/x.nii.gz"), g, lab, 4, 1), ERR_IO);
    sl_error_quiet(0);
    sl_error_reset();
    for (int i = 0; i < 210; i++)
        lab[i] = (int16_t)(i * 3 % 300);
    assert_int_equal(nio_write_labels(out, g, lab, 300, 1), 0);
    assert_false(has_tmp_files());
    Volume r;
    assert_int_equal(nio_read(out, &r, NULL), 0);
    for (int i = 0; i < 210; i++)
        assert_true(r.data[i] == (float)lab[i]);
    volume_free(&r);
    o = nifti_image_read(out, 0);
    assert_int_equal(o->datatype, DT_INT16);
    nifti_image_free(o);

    /* Uncompressed output too. */
    const char *outn = tmp("geom_seg.nii");
    unlink(outn);
    assert_int_equal(nio_write_labels(outn, g, lab, 300, 0), 0);
    assert_same_nifti_geometry(in, outn, 1);

    float probs[3 * 210];
    for (int i = 0; i < 630; i++)
        probs[i] = (float)i / 630.0f;
    const char *pp = tmp("geom_probs.nii.gz");
    unlink(pp);
    assert_int_equal(nio_write_probs(pp, g, probs, 3, 0), 0);
    assert_int_equal(nio_read(pp, &r, NULL), 0);
    assert_int_equal(r.n_mod, 3);
    assert_allclose(r.data, probs, 630, 0.0, 0.0);
    volume_free(&r);
    assert_same_nifti_geometry(in, pp, 1);

    volume_free(&v);
    nio_geom_free(g);
    free(vals);
}

/* The real T1 template shipped by Debian's mricron-data. */
static void test_real_t1(void **state)
{
    (void)state;
    const char *ch2 = "/usr/share/mricron/templates/ch2.nii.gz";
    if (!sl_file_exists(ch2)) {
        fail_msg("%s missing: apt-get install mricron-data", ch2);
    }
    Volume v;
    NiftiGeom *g = NULL;
    assert_int_equal(nio_read(ch2, &v, &g), 0);
    assert_int_equal(v.dim[0], 181);
    assert_int_equal(v.dim[1], 217);
    assert_int_equal(v.dim[2], 181);
    assert_int_equal(v.n_mod, 1);
    float mx = 0;
    for (int64_t i = 0; i < volume_voxels(&v); i++)
        if (v.data[i] > mx) mx = v.data[i];
    assert_true(mx > 0.0f); /* a brain, not an empty buffer */
    volume_free(&v);
    nio_geom_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_datatypes_roundtrip),
        cmocka_unit_test(test_nifti2_and_4d),
        cmocka_unit_test(test_comma_joined),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_fuzz_reproducers),
        cmocka_unit_test(test_vox_offset_class),
        cmocka_unit_test(test_claims_beyond_the_data),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_write_labels_and_probs),
        cmocka_unit_test(test_real_t1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
