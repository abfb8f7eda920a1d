/* Batches for training: 2D slices or 3D patches drawn from the loaded
 * cases of a Dataset, with nnU-Net's foreground oversampling and
 * on-the-fly augmentation.
 *
 * Sample b of batch k:
 *   - its Rng stream is (seed, k, b) (rng.h): a batch depends only on
 *     the seed and k, never on timing, threads or earlier batches;
 *   - case: uniform among the sampler's cases (with replacement);
 *   - forced foreground when ceil((g+1)*fg_rate) > ceil(g*fg_rate) for
 *     the global sample index g = k*B + b: the first n samples contain
 *     exactly ceil(n*fg_rate) forced ones, whatever B is.  A forced
 *     sample picks a class uniformly among the foreground classes present
 *     in the case, then one of that class's stored voxels, and centres
 *     the patch there (clamped so the patch stays inside the case when
 *     the case is larger; the voxel always stays inside the patch).  A
 *     case without foreground falls back to a random placement;
 *   - random placement: offset uniform in [0, S - P] per axis (or
 *     [S - P, 0] when the case is smaller than the patch: the case lands
 *     somewhere inside the zero-padded patch);
 *   - then augment_resample (crop + flips/rotation/scale in one pass) and
 *     augment_intensity, as the options say.
 * Validation: a second sampler over the validation cases with
 * augment_off and a fixed seed gives the same batches every epoch
 * (sampler_fill(val, k) for k = 0..n-1), so epoch losses compare.
 * 2D models (patch[0] == 1): tensor axis 0 of a case is the slice axis;
 * a sample is one slice [C][P1][P2] (H = P1, W = P2), padded with zeros
 * or cropped to the patch.  3D models: patches [C][P0][P1][P2].
 */
#ifndef SL_DATA_SAMPLER_H
#define SL_DATA_SAMPLER_H

#include <stdint.h>

#include "compressor/data/augment.h"
#include "compressor/data/dataset.h"
#include "runtime/graph.h"

#define SAMPLER_DEFAULT_FG_RATE 0.33 /* nnU-Net's oversample_foreground */

typedef struct {
    int batch;        /* B >= 1 */
    int64_t patch[3]; /* tensor order; 2D models: patch[0] = 1 */
    double fg_rate;   /* fraction of samples centred on foreground */
    uint64_t seed;
    AugmentOptions aug; /* augment_off for validation */
} SamplerOptions;

/* batch 2, fg_rate 0.33, seed 0, augment_defaults(dims); the caller sets
 * patch (2D: {1, H, W}). */
void sampler_defaults(SamplerOptions *o, int dims);

typedef struct {
    int B, C, dims;
    int64_t P[3];  /* patch, tensor order (P0 = 1 for 2D) */
    float *x;      /* [B][C][P0][P1][P2] network input (owned) */
    uint8_t *y;    /* [B][P0][P1][P2] class per voxel (owned) */
    int *case_idx; /* [B] Dataset case index of each sample (owned) */
    int *forced;   /* [B] 1 if centred on a foreground voxel (owned) */
    int64_t k;     /* batch index held, -1 if none yet */
} Batch;

typedef struct {
    const Dataset *ds; /* loaded; must outlive the sampler */
    int n_cases;
    int *cases; /* [n_cases] Dataset case indices (owned copy) */
    SamplerOptions o;
} Sampler;

/* Bind a sampler to cases (e.g. DataSplit.train or .val) of a loaded
 * dataset.  ERR_ARG with a clear line for batch < 1, a bad patch, a
 * fg_rate outside [0, 1] or no cases; ERR_NOMEM. */
int sampler_init(Sampler *s, const Dataset *ds, const int *cases, int n_cases,
                 const SamplerOptions *o);
void sampler_free(Sampler *s);

/* Buffers for one batch of s.  0 or ERR_NOMEM/ERR_SHAPE. */
int batch_alloc(Batch *b, const Sampler *s);
void batch_free(Batch *b);
/* Network input shape of a batch: [B, C, P1, P2] (2D) or
 * [B, C, P0, P1, P2] (3D). */
void batch_input_shape(const Batch *b, Shape *out);

/* Fill b with batch k (deterministic; cannot fail; single-threaded so a
 * producer thread does not compete with the OpenMP compute team). */
void sampler_fill(const Sampler *s, int64_t k, Batch *b);

#endif
