/* NIfTI fixture geometry shared by test_segment_cli and test_peer: 1.2 x 0.8
 * x 3.0 mm voxels, an oblique qform and a different sform, so a tool that
 * drops or swaps either transform is caught.  Header-only (static inline)
 * so each test program stays one file. */
#ifndef SL_TEST_NIFTIFIXTURE_H
#define SL_TEST_NIFTIFIXTURE_H

#include <nifti2_io.h>

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

#endif
