/* Every legal NIfTI storage of one scan gives the same labels: NIfTI-1
 * and NIfTI-2, little- and big-endian, .nii and .nii.gz, every integer
 * and float datatype segment reads (integers through scl_slope and
 * scl_inter), qform-only and sform-only.  Each stored copy must read back
 * to the same float32 voxels as the little-endian float32 original, so a
 * model run on it gives bit-identical labels; the label map keeps that
 * copy's grid and header geometry.
 *
 * The copies are written here byte by byte from libnifti's own header
 * conversion (then byte-swapped with libnifti's swap for big-endian), so
 * the files are what other writers produce, not what our reader expects.
 * Complex and RGB datatypes are refused (test_nifti): a label map needs
 * one real intensity per voxel. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nifti2_io.h>

#include "batchcheck.h"
#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/nifti_io.h"
#include "runtime/segment.h"
#include "runtime/sslim.h"
#include "tests/niftifixture.h"

/* The scan: the e2e fixture's grid, intensities quantised to q * 0.5 - 3
 * with q in 0..100, so every datatype (int8 included) holds q exactly and
 * q * 0.5 - 3 is exact in float32: every copy must read back bit-equal. */
#define SLOPE 0.5
#define INTER (-3.0)
#define QMAX 100

typedef struct {
    int64_t nx, ny, nz;
    int *q;     /* [nz][ny][nx] quantised intensities */
    float *ref; /* q * SLOPE + INTER */
} Scan;

enum { FORM_QFORM = 1, FORM_SFORM = 2, FORM_BOTH = 3 };

typedef struct {
    int dt;
    int nifti2;
    int big; /* big-endian on disk */
    int gz;
    int forms; /* FORM_* */
} Storage;

static void scan_make(Scan *s)
{
    char path[300];
    fixture_path("torch/e2e_scan.nii.gz", path, sizeof path);
    Volume v;
    assert_int_equal(nio_read(path, &v, NULL), 0);
    s->nx = v.dim[0];
    s->ny = v.dim[1];
    s->nz = v.dim[2];
    size_t n = (size_t)volume_voxels(&v);
    float lo = v.data[0], hi = v.data[0];
    for (size_t i = 0; i < n; i++) {
        lo = fminf(lo, v.data[i]);
        hi = fmaxf(hi, v.data[i]);
    }
    assert_true(hi > lo);
    s->q = malloc(n * sizeof *s->q);
    s->ref = malloc(n * sizeof *s->ref);
    assert_non_null(s->q);
    assert_non_null(s->ref);
    for (size_t i = 0; i < n; i++) {
        s->q[i] = (int)lround((v.data[i] - lo) / (hi - lo) * QMAX);
        s->ref[i] = (float)(s->q[i] * SLOPE + INTER);
    }
    volume_free(&v);
}

static void scan_free(Scan *s)
{
    free(s->q);
    free(s->ref);
}

/* Store q in the datatype: integers as q with the scaling; floats as
 * the value itself (float32 with no scaling, float64 through slope 2 and
 * inter 1, exact as well). */
static void fill(nifti_image *nim, const Scan *s)
{
    size_t n = (size_t)nim->nvox;
    double slope = SLOPE, inter = INTER;
    if (nim->datatype == DT_FLOAT32) slope = 0.0; /* "not scaled" */
    if (nim->datatype == DT_FLOAT64) {
        slope = 2.0;
        inter = 1.0;
    }
    for (size_t i = 0; i < n; i++) {
        double x = s->q[i];
        if (nim->datatype == DT_FLOAT32) x = s->ref[i];
        if (nim->datatype == DT_FLOAT64)
            x = ((double)s->ref[i] - inter) / slope;
        if (nifti_fixture_put(nim, (int64_t)i, x))
            fail_msg("datatype %d", nim->datatype);
    }
    nim->scl_slope = slope;
    nim->scl_inter = inter;
}

/* One world geometry, stored as a qform, an sform or both: voxel sizes
 * 1.2 x 0.9 x 3 mm, an axis flip (qfac -1 in the qform, a negative k
 * column in the sform) and an offset; both forms give the same matrix. */
static void set_geometry(nifti_image *nim, int forms)
{
    nim->pixdim[1] = nim->dx = 1.2f;
    nim->pixdim[2] = nim->dy = 0.9f;
    nim->pixdim[3] = nim->dz = 3.0f;
    nim->xyz_units = NIFTI_UNITS_MM;
    nim->qform_code = forms & FORM_QFORM ? NIFTI_XFORM_SCANNER_ANAT : 0;
    nim->quatern_b = nim->quatern_c = nim->quatern_d = 0.0;
    nim->qoffset_x = -20.5;
    nim->qoffset_y = 7.25;
    nim->qoffset_z = 12.0;
    nim->qfac = -1.0;
    nim->qto_xyz = nifti_quatern_to_dmat44(
        0, 0, 0, nim->qoffset_x, nim->qoffset_y, nim->qoffset_z, nim->dx,
        nim->dy, nim->dz, nim->qfac);
    nim->sform_code = forms & FORM_SFORM ? NIFTI_XFORM_SCANNER_ANAT : 0;
    nim->sto_xyz = nim->qto_xyz;
}

/* Write nim as a single-file NIfTI-1 or -2 (.nii or .nii.gz by the
 * name), big-endian if asked: libnifti's header conversion, then its
 * swap of every header field and of the voxel values. */
static void write_storage(const char *path, nifti_image *nim,
                          const Storage *st)
{
    union {
        nifti_1_header h1;
        nifti_2_header h2;
    } h;
    size_t hsize;
    if (st->nifti2) {
        assert_int_equal(nifti_convert_nim2n2hdr(nim, &h.h2), 0);
        memcpy(h.h2.magic, "n+2\0\r\n\032\n", 8);
        h.h2.vox_offset = 544;
        if (st->big) nifti_swap_as_nifti2(&h.h2);
        hsize = 540;
    } else {
        assert_int_equal(nifti_convert_nim2n1hdr(nim, &h.h1), 0);
        memcpy(h.h1.magic, "n+1", 4);
        h.h1.vox_offset = 352.0f;
        if (st->big) nifti_swap_as_nifti1(&h.h1);
        hsize = 348;
    }
    size_t bytes = (size_t)nim->nvox * (size_t)nim->nbyper;
    void *data = malloc(bytes);
    assert_non_null(data);
    memcpy(data, nim->data, bytes);
    if (st->big && nim->nbyper > 1)
        nifti_swap_Nbytes(nim->nvox, nim->nbyper, data);
    znzFile f = znzopen(path, "wb", st->gz);
    assert_false(znz_isnull(f));
    static const char ext[4] = {0};
    assert_int_equal(znzwrite(&h, 1, hsize, f), hsize);
    assert_int_equal(znzwrite(ext, 1, 4, f), 4);
    assert_int_equal(znzwrite(data, 1, bytes, f), bytes);
    assert_int_equal(znzclose(f), 0);
    free(data);
}

static void store(const char *path, const Scan *s, const Storage *st)
{
    int64_t dims[8] = {3, s->nx, s->ny, s->nz, 1, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, st->dt, 1);
    assert_non_null(nim);
    fill(nim, s);
    set_geometry(nim, st->forms);
    write_storage(path, nim, st);
    nifti_image_free(nim);
}

static const char *storage_name(const Storage *st, char *buf, size_t len)
{
    snprintf(buf, len, "scan_%s_n%d_%s_%s%s",
             nifti_datatype_to_string(st->dt), st->nifti2 ? 2 : 1,
             st->big ? "be" : "le",
             st->forms == FORM_BOTH    ? "qs"
             : st->forms == FORM_QFORM ? "q"
                                       : "s",
             st->gz ? ".nii.gz" : ".nii");
    return buf;
}

/* What the file says on disk: version and byte order (so a writer that
 * silently fell back to native order cannot pass for big-endian). */
static void assert_on_disk(const char *path, const Storage *st)
{
    uint8_t b[4];
    znzFile f = znzopen(path, "rb", 1);
    assert_false(znz_isnull(f));
    assert_int_equal(znzread(b, 1, 4, f), 4);
    znzclose(f);
    uint32_t le = sl_rd32(b);
    uint32_t be = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                  (uint32_t)b[2] << 8 | b[3];
    uint32_t want = st->nifti2 ? 540 : 348;
    assert_int_equal(st->big ? be : le, want);
}

static const int DATATYPES[] = {DT_UINT8,   DT_INT8,   DT_UINT16, DT_INT16,
                                DT_UINT32,  DT_INT32,  DT_UINT64, DT_INT64,
                                DT_FLOAT32, DT_FLOAT64};

/* Every datatype x NIfTI-1/-2 x byte order x .nii/.nii.gz, plus the
 * qform-only and sform-only copies: voxels bit-equal to the original,
 * labels bit-equal to the original's, geometry kept. */
static void test_every_storage_same_labels(void **state)
{
    (void)state;
    Scan s;
    scan_make(&s);
    size_t n = (size_t)(s.nx * s.ny * s.nz);
    Graph g;
    graph_init(&g);
    assert_int_equal(sslim_read(bc_model(), &g), 0);
    SegmentOptions so = {.n_threads = 1};
    int16_t *ref = malloc(n * sizeof *ref), *lab = malloc(n * sizeof *lab);
    assert_non_null(ref);
    assert_non_null(lab);

    /* The original: little-endian float32 NIfTI-1 with both forms. */
    const Storage orig = {DT_FLOAT32, 0, 0, 1, FORM_BOTH};
    char name[128], porig[512];
    snprintf(porig, sizeof porig, "%s", test_tmp_path("original.nii.gz"));
    store(porig, &s, &orig);
    Volume v;
    assert_int_equal(nio_read(porig, &v, NULL), 0);
    assert_true(memcmp(v.data, s.ref, n * sizeof(float)) == 0);
    assert_int_equal(segment_volume(&g, &v, &so, ref, NULL), 0);
    volume_free(&v);
    /* A label map with both classes, so "the same labels" says something. */
    size_t fg = 0;
    for (size_t i = 0; i < n; i++)
        fg += ref[i] == 1;
    fprintf(stderr, "original: %zu of %zu voxels foreground\n", fg, n);
    assert_true(fg > 0 && fg < n);

    int copies = 0;
    for (size_t t = 0; t < sizeof DATATYPES / sizeof DATATYPES[0]; t++)
        for (int variant = 0; variant < 10; variant++) {
            /* 0-7: version x byte order x compression with both forms;
             * 8: qform only, 9: sform only (big-endian NIfTI-2 .nii.gz
             * and little-endian NIfTI-1 .nii). */
            Storage st = {DATATYPES[t], variant & 1, (variant >> 1) & 1,
                          (variant >> 2) & 1, FORM_BOTH};
            if (variant == 8)
                st = (Storage){DATATYPES[t], 1, 1, 1, FORM_QFORM};
            if (variant == 9)
                st = (Storage){DATATYPES[t], 0, 0, 0, FORM_SFORM};
            char path[512], out[600];
            snprintf(path, sizeof path, "%s",
                     test_tmp_path(storage_name(&st, name, sizeof name)));
            store(path, &s, &st);
            assert_on_disk(path, &st);
            NiftiGeom *geom = NULL;
            sl_error_reset();
            if (nio_read(path, &v, &geom) != 0)
                fail_msg("%s: %s", path, sl_error_last());
            if (memcmp(v.data, s.ref, n * sizeof(float)) != 0)
                fail_msg("%s: voxels differ from the original", path);
            assert_int_equal(segment_volume(&g, &v, &so, lab, NULL), 0);
            if (memcmp(lab, ref, n * sizeof *lab) != 0)
                fail_msg("%s: labels differ from the original", path);
            snprintf(out, sizeof out, "%s_seg.nii.gz", path);
            unlink(out);
            assert_int_equal(nio_write_labels(out, geom, lab, 2, 0), 0);
            assert_same_nifti_geometry(path, out, 1);
            /* The world affine is the original's whichever form holds
             * it (sform if set, else qform). */
            double m[3][4], mo[3][4];
            nio_geom_affine(geom, m);
            NiftiGeom *go = NULL;
            Volume vo;
            assert_int_equal(nio_read(porig, &vo, &go), 0);
            nio_geom_affine(go, mo);
            for (int r = 0; r < 3; r++)
                for (int c = 0; c < 4; c++)
                    assert_true(fabs(m[r][c] - mo[r][c]) < 1e-6);
            volume_free(&vo);
            nio_geom_free(go);
            volume_free(&v);
            nio_geom_free(geom);
            unlink(path);
            unlink(out);
            copies++;
        }
    fprintf(stderr, "%d stored copies gave the original's labels\n", copies);
    free(ref);
    free(lab);
    graph_free(&g);
    scan_free(&s);
}

/* The program end to end on big-endian copies (NIfTI-1 .nii, NIfTI-2
 * .nii.gz): segment exits 0 and writes the original's label map with the
 * copy's geometry. */
static void test_segment_big_endian_cli(void **state)
{
    (void)state;
    Scan s;
    scan_make(&s);
    size_t n = (size_t)(s.nx * s.ny * s.nz);
    const Storage orig = {DT_FLOAT32, 0, 0, 1, FORM_BOTH};
    const Storage copies[] = {{DT_INT16, 0, 1, 0, FORM_BOTH},
                              {DT_FLOAT64, 1, 1, 1, FORM_BOTH}};
    char name[128], po[512], pol[600];
    snprintf(po, sizeof po, "%s", test_tmp_path("original_cli.nii.gz"));
    store(po, &s, &orig);
    snprintf(pol, sizeof pol, "%s_seg.nii.gz", po);
    BcRun r = bc_sh("%s -q --threads 1 -m %s -o %s --force %s",
                    bc_segment_bin(), bc_model(), pol, po);
    assert_int_equal(r.status, 0);
    bc_free(&r);
    Volume ref;
    assert_int_equal(nio_read(pol, &ref, NULL), 0);
    for (size_t c = 0; c < sizeof copies / sizeof copies[0]; c++) {
        char p[512], out[600];
        snprintf(p, sizeof p, "%s",
                 test_tmp_path(storage_name(&copies[c], name, sizeof name)));
        store(p, &s, &copies[c]);
        assert_on_disk(p, &copies[c]);
        snprintf(out, sizeof out, "%s_seg.nii.gz", p);
        r = bc_sh("%s -q --threads 1 -m %s -o %s --force %s",
                  bc_segment_bin(), bc_model(), out, p);
        if (r.status != 0) fail_msg("segment %s: %s", p, r.err_first);
        assert_int_equal(r.err_lines, 0);
        bc_free(&r);
        Volume lab;
        assert_int_equal(nio_read(out, &lab, NULL), 0);
        assert_true(memcmp(lab.data, ref.data, n * sizeof(float)) == 0);
        volume_free(&lab);
        assert_same_nifti_geometry(p, out, 1);
    }
    volume_free(&ref);
    scan_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_storage_same_labels),
        cmocka_unit_test(test_segment_big_endian_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
