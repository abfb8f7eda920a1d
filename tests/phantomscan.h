/* Small synthetic scans in any common NIfTI datatype, for the batch tests
 * (test_batch, test_soak): a bright ellipsoid "head" on a noisy background,
 * nx x ny x nz voxels, the geometry of niftifixture.h.  The seed changes the
 * noise, the centre and the radii, so every scan has its own label map.
 * Header-only (static inline) so each test program stays one file. */
#ifndef SL_TEST_PHANTOMSCAN_H
#define SL_TEST_PHANTOMSCAN_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <nifti2_io.h>

#include "niftifixture.h"
#include "runtime/common.h"
#include "testutil.h"

/* Datatypes the batch tests cycle through; scaled types use scl_slope. */
static const int phantom_types[] = {DT_UINT8,   DT_INT16,  DT_FLOAT32,
                                    DT_FLOAT64, DT_UINT16, DT_INT32};
#define N_PHANTOM_TYPES (int)(sizeof phantom_types / sizeof phantom_types[0])

/* Write the phantom to `path` (.nii or .nii.gz); returns 0 or -1. */
static inline int phantom_write(const char *path, int nx, int ny, int nz,
                                int datatype, uint64_t seed)
{
    int64_t dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, datatype, 1);
    if (!nim) return -1;
    TestRng rng = {seed};
    double cx = nx * trng_uniform(&rng, 0.35f, 0.65f);
    double cy = ny * trng_uniform(&rng, 0.35f, 0.65f);
    double cz = nz * trng_uniform(&rng, 0.35f, 0.65f);
    double rx = nx * trng_uniform(&rng, 0.2f, 0.4f);
    double ry = ny * trng_uniform(&rng, 0.2f, 0.4f);
    double rz = nz * trng_uniform(&rng, 0.2f, 0.45f);
    /* Integer types hold 0..200 (the uint8 range with room); scaled by
     * slope 0.5 for int16 so scl_slope is exercised. */
    int scaled = datatype == DT_INT16;
    size_t idx = 0;
    for (int k = 0; k < nz; k++)
        for (int j = 0; j < ny; j++)
            for (int i = 0; i < nx; i++, idx++) {
                double u = (i - cx) / rx, v = (j - cy) / ry,
                       w = (k - cz) / rz;
                double val = (u * u + v * v + w * w < 1 ? 150 : 30) +
                             (double)trng_uniform(&rng, -20, 20);
                if (scaled) val /= 0.5;
                void *d = nim->data;
                switch (datatype) {
                case DT_UINT8:
                    ((uint8_t *)d)[idx] = (uint8_t)lrint(val);
                    break;
                case DT_INT16:
                    ((int16_t *)d)[idx] = (int16_t)lrint(val);
                    break;
                case DT_UINT16:
                    ((uint16_t *)d)[idx] = (uint16_t)lrint(val);
                    break;
                case DT_INT32:
                    ((int32_t *)d)[idx] = (int32_t)lrint(val);
                    break;
                case DT_FLOAT32:
                    ((float *)d)[idx] = (float)val;
                    break;
                case DT_FLOAT64:
                    ((double *)d)[idx] = val;
                    break;
                default:
                    nifti_image_free(nim);
                    return -1;
                }
            }
    if (scaled) {
        nim->scl_slope = 0.5f;
        nim->scl_inter = 0.0f;
    }
    nifti_fixture_geometry(nim);
    if (nifti_set_filenames(nim, path, 0, 1)) {
        nifti_image_free(nim);
        return -1;
    }
    nifti_image_write(nim);
    nifti_image_free(nim);
    return sl_file_exists(path) ? 0 : -1;
}

/* A corrupt scan: the first `keep` bytes of `src` (a truncated .nii.gz
 * has a valid header and too little data).  Returns 0 or -1. */
static inline int phantom_truncate(const char *src, const char *dst,
                                   size_t keep)
{
    uint8_t *d = NULL;
    size_t n = 0;
    if (sl_read_file(src, &d, &n)) return -1;
    int rc = sl_write_file_atomic(dst, d, n < keep ? n : keep, 1);
    sl_free(d);
    return rc ? -1 : 0;
}

#endif
