/* NIfTI fixtures shared by test programs.  nifti_fixture_geometry
 * (test_segment_cli, test_peer, test_orient): 1.2 x 0.8 x 3.0 mm voxels, an
 * oblique qform and a different sform, so a tool that drops or swaps either
 * transform is caught. nifti_fixture_put (test_nifti, test_storage): one
 * voxel written in the image's own datatype.  Header-only (static inline) so
 * each test program stays one file. */
#ifndef SL_TEST_NIFTIFIXTURE_H
#define SL_TEST_NIFTIFIXTURE_H

#include <nifti2_io.h>
#include <stdint.h>
#include <string.h>

static inline void nifti_fixture_geometry(nifti_image *nim)
{
    nim->pixdim[1] = nim->dx = 1.2;
    nim->pixdim[2] = nim->dy = 0.8;
    nim->pixdim[3] = nim->dz = 3.0;
    nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
    nim->quatern_b = 0.2;
    nim->quatern_c = 0.1;
    nim->quatern_d = -0.3;
    nim->qoffset_x = 10;
    nim->qoffset_y = -20.5;
    nim->qoffset_z = 33;
    nim->qfac = 1;
    nim->sform_code = NIFTI_XFORM_ALIGNED_ANAT;
    nim->sto_xyz = nifti_quatern_to_dmat44(0.2, 0.1, -0.3, 11, -20, 30, 1.2,
                                           0.8, 3.0, 1);
    nim->xyz_units = NIFTI_UNITS_MM;
}

/* Voxel i of nim set to v converted (C conversion) to nim's datatype.
 * Returns 0, or -1 for a datatype the fixtures do not write. */
static inline int nifti_fixture_put(nifti_image *nim, int64_t i, double v)
{
    char *p = (char *)nim->data + i * (int64_t)nim->nbyper;
#define NF_PUT(T)                                                            \
    do {                                                                     \
        T t = (T)v;                                                          \
        memcpy(p, &t, sizeof t);                                             \
        return 0;                                                            \
    } while (0)
    switch (nim->datatype) {
    case DT_UINT8:
        NF_PUT(uint8_t);
    case DT_INT8:
        NF_PUT(int8_t);
    case DT_UINT16:
        NF_PUT(uint16_t);
    case DT_INT16:
        NF_PUT(int16_t);
    case DT_UINT32:
        NF_PUT(uint32_t);
    case DT_INT32:
        NF_PUT(int32_t);
    case DT_UINT64:
        NF_PUT(uint64_t);
    case DT_INT64:
        NF_PUT(int64_t);
    case DT_FLOAT32:
        NF_PUT(float);
    case DT_FLOAT64:
        NF_PUT(double);
    default:
        return -1;
    }
#undef NF_PUT
}

#endif
