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
 *
 * Field-of-view augmentation (2D only, FovOptions): InstanceNorm takes
 * its statistics over the whole slice, so a network fine-tuned on whole
 * slices alone learns its training scans' ratio of air to head and
 * loses Dice on scans stored with more air or a cropped field of view
 * (brain, measured in docs/SAURON_RESULTS.md).  With probability p a
 * batch (stream (seed, k, B), so the samples' own streams are unchanged)
 * takes a window size Wt = round(U(lo, hi) * St) per in-plane axis, St
 * the largest slice of the sampler's cases, the same for the whole
 * batch; its patch becomes fit[t][Wt], the smallest size >= Wt the
 * network accepts (so batches of one run have different shapes).  Each
 * sample's slice (chosen as above) is cut to the window where larger and
 * surrounded by the case's air (DataCase.air) where smaller, at a random
 * offset; the window then goes into the patch like a case smaller than
 * the patch (random offset, zeros around, the same augmentation).
 *
 * Crop augmentation (2D only, FovOptions.crop): the field-of-view
 * windows above sit at random offsets and never show a scan cut close
 * around the organ on all sides, which is what a cropped clinical scan
 * holds (brain: most misses on geom_check.py's cropped Colin27 copy are
 * false negatives).  One uniform draw u of the batch stream decides:
 * u < p field of view, u < p + crop crop, else the whole slice; so with
 * crop = 0 every batch is what it was before the option.  A crop batch
 * draws four margins m in 0..margin (top, bottom, left, right) from the
 * same stream; its window is the in-plane extent of the first sample's
 * case box (DataCase.box_lo/box_hi) widened by them, the same size for
 * the whole batch.  Sample 0 sees its slice through that window exactly;
 * every other sample through a window of the same size centred on its
 * own case's box (origin box_lo + floor((extent - W) / 2) per axis).
 * Slice voxels inside the window, the case's air where the window runs
 * past the slice, labels 0 there; then into the patch as a field-of-view
 * window (fit table, random offset, zeros around).
 */
#ifndef SL_DATA_SAMPLER_H
#define SL_DATA_SAMPLER_H

#include <stdint.h>

#include "compressor/data/augment.h"
#include "compressor/data/dataset.h"
#include "runtime/graph.h"

#define SAMPLER_DEFAULT_FG_RATE 0.33 /* nnU-Net's oversample_foreground */

typedef struct {
    double p;      /* fraction of batches with another field of view;
                      0: off */
    double lo, hi; /* window size / slice size, U(lo, hi) per axis */
    double crop;   /* fraction of batches cut around the labelled box
                      (p + crop <= 1); 0: off */
    int margin;    /* crop: each side widened by 0..margin voxels */
    /* fit[t][n] for n < n_fit[t] (t = 1, 2): the smallest size >= n the
     * network accepts (caller-owned; must cover round(hi * St) and, with
     * crop, St + 2 * margin) */
    const int64_t *fit[3];
    int64_t n_fit[3];
} FovOptions;

/* What tools/train_baseline.py --fov-aug uses: window 0.7 to 1.4 times
 * the slice. */
#define FOV_DEFAULT_LO 0.7
#define FOV_DEFAULT_HI 1.4
/* Crop margin: up to 12 voxels a side.  geom_check.py's cropped copy
 * keeps 5 around the brain; 0..12 puts that well inside the range drawn,
 * with tighter and looser crops on either side, while the window stays
 * close to the organ (wider views are what --fov-aug and whole slices
 * already show). */
#define CROP_DEFAULT_MARGIN 12

/* How a batch saw its slices. */
typedef enum { VIEW_WHOLE = 0, VIEW_FOV = 1, VIEW_CROP = 2 } BatchView;

typedef struct {
    int batch;        /* B >= 1 */
    int64_t patch[3]; /* tensor order; 2D models: patch[0] = 1 */
    double fg_rate;   /* fraction of samples centred on foreground */
    uint64_t seed;
    AugmentOptions aug; /* augment_off for validation */
    FovOptions fov;     /* p = 0 (off) unless set */
} SamplerOptions;

/* batch 2, fg_rate 0.33, seed 0, augment_defaults(dims); the caller sets
 * patch (2D: {1, H, W}). */
void sampler_defaults(SamplerOptions *o, int dims);

typedef struct {
    int B, C, dims;
    int64_t P[3]; /* this batch's patch, tensor order (P0 = 1 for 2D);
                     differs between batches with field-of-view
                     augmentation */
    int64_t cap;  /* voxels one sample's buffers hold */
    float *win;   /* field-of-view window scratch (owned; may be NULL) */
    uint8_t *winl;
    float *x;       /* [B][C][P0][P1][P2] network input (owned) */
    uint8_t *y;     /* [B][P0][P1][P2] class per voxel (owned) */
    int *case_idx;  /* [B] Dataset case index of each sample (owned) */
    int *forced;    /* [B] 1 if centred on a foreground voxel (owned) */
    BatchView view; /* whole slices, field of view or crop */
    int64_t k;      /* batch index held, -1 if none yet */
} Batch;

typedef struct {
    const Dataset *ds; /* loaded; must outlive the sampler */
    int n_cases;
    int *cases; /* [n_cases] Dataset case indices (owned copy) */
    SamplerOptions o;
    int64_t S[3];    /* largest case size along each axis */
    int64_t Wmax[3]; /* largest field-of-view or crop window */
    int64_t Pmax[3]; /* largest patch a batch can have */
} Sampler;

/* Bind a sampler to cases (e.g. DataSplit.train or .val) of a loaded
 * dataset.  ERR_ARG with a clear line for batch < 1, a bad patch, a
 * fg_rate outside [0, 1], no cases, or field-of-view or crop options
 * that are out of range (p + crop > 1), given to a 3D model or without a
 * fit table covering them; ERR_NOMEM. */
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
