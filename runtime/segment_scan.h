/* Segmenting a scan as stored: on the model's grid, labels on the scan's.
 *
 * A model that records its training orientation and spacing
 * (ModelMeta.orientation, .spacing) runs on the model grid of the scan
 * (orient_model_grid): the scan is normalised on its own grid, resampled
 * onto the model grid (exact for permutations and flips, trilinear
 * otherwise), segmented there, and the class scores are interpolated back
 * to every scan voxel plane by plane (resample.h).  A model without them,
 * or a scan already on the model grid, is segmented on the scan's grid
 * directly (segmenter_run), bit for bit as before.
 *
 * Memory: the scan, then the model-grid copy; the scan is freed before
 * the label map is allocated, so the peak is about the scan's float32
 * size plus the network's, or the model-grid copy plus the label map and
 * the network's, whichever is larger.
 */
#ifndef SL_SEGMENT_SCAN_H
#define SL_SEGMENT_SCAN_H

#include <stdint.h>

#include "orient.h"
#include "segment.h"

/* v: raw intensities on the grid with voxel-to-world matrix aff (mm);
 * consumed (volume_free'd) whatever the outcome.  *labels: new
 * [nz][ny][nx] label map on the scan's grid (caller sl_free()s).  probs:
 * NULL or [nc][nz][ny][nx] (overwritten).  Returns 0 or a negative code
 * (message printed); *labels is NULL on failure. */
int segment_scan(Segmenter *s, Volume *v, const Affine *aff, int16_t **labels,
                 float *probs);

/* What segment_scan does with a scan on grid (dim, aff): the model grid
 * (== the scan's when run on it directly).  *direct: nonzero if the scan
 * is segmented on its own grid.  0 or a negative code. */
int segment_scan_grid(const Segmenter *s, const int64_t dim[3],
                      const Affine *aff, int64_t model_dim[3],
                      Affine *model_aff, int *direct);

#endif
