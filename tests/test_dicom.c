/* The DICOM route, end to end (make check-long): the Colin27 T1 from
 * Debian's mricron-data becomes a DICOM MR series (tools/nifti_to_dicom.py,
 * pydicom: one file per axial slice, rows from anterior to posterior as a
 * scanner writes them), Debian's dcm2niix turns it back into NIfTI as the
 * README says, and `segment` with the shipped model labels both.  The
 * label maps must agree voxel for voxel in world space: each voxel centre
 * of the original maps through the two affines onto a voxel centre of the
 * dcm2niix file (within GRID_TOL voxels), with the same intensity and the
 * same label.  dcm2niix stores the slices in the opposite k order (its
 * slice normal follows the DICOM row and column directions); the model
 * segments k-slices one by one, so only the world mapping may differ.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti2_io.h>

#include "runtime/common.h"
#include "tests/batchcheck.h"
#include "tests/testutil.h"

#define DEMO_SCAN "/usr/share/mricron/templates/ch2.nii.gz"
/* dcm2niix writes its affine from DICOM decimal strings (%.10g here): a
 * voxel centre lands within 1e-4 voxel of a centre; 1e-3 leaves room and
 * is far below the 0.5 that would make the match ambiguous. */
#define GRID_TOL 1e-3

static nifti_image *read_nii(const char *path)
{
    nifti_image *nim = nifti_image_read(path, 1);
    if (!nim) fail_msg("cannot read %s", path);
    return nim;
}

static double value_at(const nifti_image *nim, size_t i)
{
    double v;
    switch (nim->datatype) {
    case DT_UINT8:
        v = ((const uint8_t *)nim->data)[i];
        break;
    case DT_INT16:
        v = ((const int16_t *)nim->data)[i];
        break;
    case DT_UINT16:
        v = ((const uint16_t *)nim->data)[i];
        break;
    case DT_INT32:
        v = ((const int32_t *)nim->data)[i];
        break;
    case DT_FLOAT32:
        v = ((const float *)nim->data)[i];
        break;
    default:
        fail_msg("datatype %d not handled here", nim->datatype);
        return 0;
    }
    if (nim->scl_slope != 0) v = v * nim->scl_slope + nim->scl_inter;
    return v;
}

static nifti_dmat44 affine(const nifti_image *nim)
{
    return nim->sform_code > 0 ? nim->sto_xyz : nim->qto_xyz;
}

static void test_dicom_route(void **state)
{
    (void)state;
    if (!sl_file_exists(DEMO_SCAN))
        fail_msg("%s is missing: install Debian's mricron-data "
                 "(sh tools/deps.sh test)",
                 DEMO_SCAN);
    char dir[600];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("dicom_route"));
    bc_fresh_dir(dir);
    BcRun r = bc_sh("cp %s '%s/t1.nii.gz' && /usr/bin/python3 "
                    "tools/nifti_to_dicom.py '%s/t1.nii.gz' '%s/dicom'",
                    DEMO_SCAN, dir, dir, dir);
    if (r.status) fprintf(stderr, "nifti_to_dicom: %s\n", r.err_first);
    assert_int_equal(r.status, 0);
    bc_free(&r);
    /* the README's two lines, verbatim, segment on PATH */
    const char *needles[2] = {"dcm2niix -z", "segment --input-dir nifti"};
    for (int l = 0; l < 2; l++) {
        char *line = bc_readme_line(needles[l]);
        r = bc_sh("cd '%s' && PATH='%s':\"$PATH\" && nice -n 19 sh -c '%s'",
                  dir, bc_bin_dir(), line);
        fprintf(stderr, "%s\nexit %d\n%s%s", line, r.status, r.out, r.err);
        assert_int_equal(r.status, 0);
        bc_free(&r);
        free(line);
    }
    char conv[700];
    snprintf(conv, sizeof conv, "%s/nifti/1_T1.nii.gz", dir);
    assert_true(sl_file_exists(conv));
    /* the original, through the same model */
    r = bc_sh("cd '%s' && nice -n 19 %s -q --threads 2 t1.nii.gz", dir,
              bc_segment_bin());
    if (r.status) fprintf(stderr, "segment: %s\n", r.err_first);
    assert_int_equal(r.status, 0);
    bc_free(&r);

    char p[4][700];
    snprintf(p[0], sizeof p[0], "%s/t1.nii.gz", dir);
    snprintf(p[1], sizeof p[1], "%s", conv);
    snprintf(p[2], sizeof p[2], "%s/t1_seg.nii.gz", dir);
    snprintf(p[3], sizeof p[3], "%s/labels/1_T1_seg.nii.gz", dir);
    nifti_image *a = read_nii(p[0]), *b = read_nii(p[1]);
    nifti_image *la = read_nii(p[2]), *lb = read_nii(p[3]);
    nifti_dmat44 to_b =
        nifti_dmat44_mul(nifti_dmat44_inverse(affine(b)), affine(a));
    int64_t nx = a->nx, ny = a->ny, nz = a->nz;
    long off_grid = 0, diff_val = 0, diff_lab = 0, brain = 0;
    double worst = 0;
    for (int64_t k = 0; k < nz; k++)
        for (int64_t j = 0; j < ny; j++)
            for (int64_t i = 0; i < nx; i++) {
                double x[3], here = 0;
                int64_t q[3];
                for (int t = 0; t < 3; t++) {
                    x[t] = to_b.m[t][0] * (double)i +
                           to_b.m[t][1] * (double)j +
                           to_b.m[t][2] * (double)k + to_b.m[t][3];
                    q[t] = (int64_t)llround(x[t]);
                    double e = fabs(x[t] - (double)q[t]);
                    if (e > here) here = e;
                }
                if (here > worst) worst = here;
                if (here > GRID_TOL || q[0] < 0 || q[0] >= b->nx ||
                    q[1] < 0 || q[1] >= b->ny || q[2] < 0 || q[2] >= b->nz) {
                    off_grid++;
                    continue;
                }
                size_t ia = (size_t)((k * ny + j) * nx + i);
                size_t ib = (size_t)((q[2] * b->ny + q[1]) * b->nx + q[0]);
                if (value_at(a, ia) != value_at(b, ib)) diff_val++;
                double l = value_at(la, ia);
                if (l != value_at(lb, ib)) diff_lab++;
                if (l > 0) brain++;
            }
    fprintf(stderr,
            "dicom route: %lld voxels, worst grid offset %.2g voxel, %ld off "
            "the grid, %ld intensities and %ld labels differ; %ld brain "
            "voxels\n",
            (long long)(nx * ny * nz), worst, off_grid, diff_val, diff_lab,
            brain);
    assert_int_equal(b->nx * b->ny * b->nz, nx * ny * nz);
    assert_int_equal(off_grid, 0);
    assert_int_equal(diff_val, 0);
    assert_int_equal(diff_lab, 0);
    /* a brain mask, not an empty map: Colin27's brain is 1.79 l here */
    assert_true(brain > 1000000);
    nifti_image_free(a);
    nifti_image_free(b);
    nifti_image_free(la);
    nifti_image_free(lb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dicom_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
