/* Resampling between a scan's grid and a model's grid (orient.h).
 *
 * Image, scan -> model grid (resample_volume): each model voxel takes the
 * trilinear interpolation of the normalised scan at its position; a
 * position within half a voxel outside the scan takes the nearest edge
 * voxel, farther out (corners of an oblique scan's box) the scan's
 * normalised minimum (air).  Where the map is a permutation, every weight
 * is 0 or 1 and the copy is exact.
 *
 * Scores, model grid -> scan (BackMap): the network's class scores on the
 * model grid are interpolated trilinearly at each scan voxel's position
 * (clamped to the grid) and the label is the argmax of the interpolated
 * scores (scores before argmax, as nnU-Net does; first maximum wins).  The
 * scores arrive plane by plane along one model axis, in increasing order;
 * a BackMap keeps only the last two planes ([2][n_classes][plane] floats),
 * and when a plane arrives it labels every scan voxel that lies between it
 * and the one before: no per-class map of either volume exists.  Exact
 * maps (permutations) give exactly the labels of the model grid.
 */
#ifndef SL_RESAMPLE_H
#define SL_RESAMPLE_H

#include <stdint.h>

#include "orient.h"
#include "volume.h"

/* dst (already allocated on the model grid, dst->n_mod == src->n_mod) =
 * src normalised with na[m] and sampled at m_dst_to_src * q for each dst
 * voxel q (voxel coordinates).  src is normalised IN PLACE first (its
 * raw values are gone afterwards: the caller frees it).  Threads:
 * n_threads (<= 0: all); the result does not depend on it. */
void resample_volume(Volume *dst, Volume *src, const NormAffine *na,
                     const Affine *m_dst_to_src, int n_threads);

typedef struct BackMap BackMap;

/* labels [nz][ny][nx] of the scan (scan_dim), written as planes arrive;
 * probs NULL or [nc][nz][ny][nx] (interpolated scores).  m: scan voxel ->
 * model voxel.  a0: the model-grid NIfTI axis the planes step along.
 * Returns 0 or ERR_NOMEM (message printed). */
int backmap_create(const int64_t scan_dim[3], const int64_t model_dim[3],
                   const Affine *m_scan_to_model, int a0, int nc,
                   int16_t *labels, float *probs, int n_threads,
                   BackMap **out);
void backmap_free(BackMap *b);

/* Planes off[0] .. off[0]+box[0]-1 of model-grid scores, as the segmenter
 * emits them: scores [nc, pad0, pad1, pad2] in tensor order ax (ax[0] ==
 * a0; box[1], box[2] cover the whole plane), divided by wsum
 * [pad0, pad1, pad2] if it is not NULL.  Must be called for every plane,
 * in increasing order. */
void backmap_planes(void *backmap, const float *scores, const float *wsum,
                    int nc, const int ax[3], const int64_t off[3],
                    const int64_t box[3], const int64_t pad[3]);

/* Scan voxels labelled so far (all of them once every plane arrived). */
int64_t backmap_done(const BackMap *b);

#endif
