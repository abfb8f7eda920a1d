/* On-the-fly data augmentation (seeded), nnU-Net v2 style.
 *
 * Spatial: flips along each spatial axis, rotation and isotropic scaling,
 * all folded into one 3x3 matrix A and applied as ONE resampling per
 * sample that also does the crop: output voxel o (tensor order) reads the
 * source at  c + A (o - h),  h = (P - 1) / 2 the patch centre, c the
 * centre chosen in the case.  Images: trilinear (bilinear in 2D),
 * labels: nearest; outside the case, images read 0 (the normalised mean,
 * as nnU-Net's constant border) and labels read 0 (background).
 * With A = I (or a pure flip) every coordinate is an integer and the
 * resampling is an exact copy (or an exact permutation).
 *   2D models: flips along H and W, rotation in the H-W plane only;
 *              tensor axis 0 is the slice index and is never resampled.
 *   3D models: flips along all three axes; rotation about each of the
 *              three axes (one angle each, composed R0 R1 R2).
 * Scale s multiplies the source offsets: s < 1 zooms in, as in
 * batchgenerators.
 *
 * Intensity, per sample and channel, after the resampling: additive
 * Gaussian noise (sigma drawn from U(0, noise_sigma_max); batchgenerators
 * calls this value "variance"), then gamma on the inverted image, then
 * gamma: x rescaled to [0, 1] by its min and max, raised to gamma, scaled
 * back, then its mean and std restored (nnU-Net's retain_stats).  gamma
 * is drawn from U(gamma_lo, 1) or U(1, gamma_hi) with equal odds.
 *
 * Not implemented (nnU-Net has them): Gaussian blur, brightness,
 * contrast, low-resolution simulation.  Validation never augments: use
 * augment_off (or enabled = 0).
 *
 * Determinism: every draw comes from the Rng passed in, in a fixed order
 * (flips, rotation, scale, noise, inverted gamma, gamma), so a sample
 * depends only on its Rng stream.
 */
#ifndef SL_DATA_AUGMENT_H
#define SL_DATA_AUGMENT_H

#include <stdint.h>

#include "compressor/data/rng.h"

typedef struct {
    int enabled;                /* 0: no augmentation at all */
    double p_flip;              /* per spatial axis */
    double p_rotate, max_angle; /* radians; angle in [-max, max] */
    double p_scale, scale_lo, scale_hi;
    double p_noise, noise_sigma_max;
    double p_gamma_invert, p_gamma, gamma_lo, gamma_hi;
} AugmentOptions;

/* nnU-Net v2 defaults: flips 0.5 per axis; rotation p 0.2, 2D +-180 deg,
 * 3D +-30 deg per axis; scale p 0.2 in [0.7, 1.4]; noise p 0.1, sigma up
 * to 0.1; inverted gamma p 0.1, gamma p 0.3, gamma in [0.7, 1.5]. */
void augment_defaults(AugmentOptions *o, int dims);
/* Everything off (validation). */
void augment_off(AugmentOptions *o);

typedef struct {
    double A[3][3]; /* source offset = A (o - h), tensor axes */
} AugXform;

void augment_identity(AugXform *t);
/* Draw flips, rotation and scale for a sample of a dims-D model. */
void augment_draw_xform(const AugmentOptions *o, int dims, Rng *r,
                        AugXform *t);

/* Resample a patch out of a case.
 *   x   [C][P0][P1][P2]  output image (overwritten)
 *   y   [P0][P1][P2]     output labels (overwritten; may be NULL)
 *   img [C][S0][S1][S2]  case image
 *   lab [S0][S1][S2]     case labels (NULL: y is all 0)
 *   c   [3]              source point mapped to the patch centre
 * For 2D models P0 = 1 and A's row and column 0 are (1, 0, 0), so
 * output plane 0 is source plane c[0] (an integer). */
void augment_resample(float *x, uint8_t *y, const float *img,
                      const uint8_t *lab, int C, const int64_t S[3],
                      const int64_t P[3], const double c[3],
                      const AugXform *t);

/* Intensity augmentation of x [C][n] in place. */
void augment_intensity(float *x, int C, int64_t n, const AugmentOptions *o,
                       Rng *r);

#endif
