/* Volumes in memory and the voxel bookkeeping around the network:
 * normalisation, NIfTI axis <-> tensor axis mapping, padding and cropping
 * of slices/patches, the Gaussian importance map, argmax.
 *
 * A Volume holds float32 voxels in NIfTI storage order: i fastest, then
 * j, then k, then modality: data[((m*nz + k)*ny + j)*nx + i].
 *
 * Tensor axes.  A network input is [N, C, S0, S1, S2] (3D) or
 * [N, C, S1, S2] (2D).  ax[t] gives the NIfTI axis (0=i, 1=j, 2=k) behind
 * tensor spatial axis t, slowest first.  For 2D models ax[0] is the axis
 * the volume is sliced along (S0 = 1 per slice), ax[1] = H, ax[2] = W.
 * Every gather/scatter below works on a "box": the voxels whose
 * coordinate along ax[t] is off[t] .. off[t]+box[t]-1, laid out in a
 * tensor [C, pad[0], pad[1], pad[2]] (pad >= box; the excess is padding).
 */
#ifndef SL_VOLUME_H
#define SL_VOLUME_H

#include <math.h>
#include <stdint.h>

#include "graph.h"

typedef struct {
    int64_t dim[3]; /* nx, ny, nz: sizes along NIfTI i, j, k */
    int n_mod;      /* modalities (channels) */
    float *data;    /* owned (sl_alloc or sl_realloc): [n_mod][nz][ny][nx] */
} Volume;

/* Allocate data for the given size (zeroed).  0 or ERR_NOMEM/ERR_SHAPE. */
int volume_alloc(Volume *v, int64_t nx, int64_t ny, int64_t nz, int n_mod);
void volume_free(Volume *v);
/* Voxels per modality (nx*ny*nz). */
int64_t volume_voxels(const Volume *v);

/* Per-modality affine map applied on the fly while gathering: clip to
 * [lo, hi] then ((double)v - shift) * scale (the zscore divides by the
 * std: scale = 1/max(std,1e-8), computed in double).  A voxel that is
 * NaN or infinite is taken as `fill` first: the lowest finite value of
 * the modality (CT: the window's bottom; no normalisation: 0).  Scans
 * written by some tools store "no data" as NaN; unmapped, one NaN would
 * spread through every convolution it reaches. */
typedef struct {
    double lo, hi;
    double shift, scale;
    double fill;
} NormAffine;

/* Statistics of modality m of v for normalisation `n` (n may be NULL:
 * identity).  zscore: mean and population std over all finite voxels, in
 * double, in a fixed order (thread-count independent).  zscore-fg: the
 * same over the finite voxels >= volume_otsu_threshold (all of them if
 * the modality is constant).  CT: clip to [lo, hi], (v - lo) / (hi - lo)
 * * 2 - 1.  Returns 0, ERR_ARG (CT with hi <= lo) or ERR_FORMAT (a
 * z-score of a modality with no finite voxel). */
int volume_norm_affine(const Volume *v, int m, const Normalize *n,
                       NormAffine *out);
/* Inline: resampling applies it to 8 neighbours of every voxel. */
static inline float norm_apply(const NormAffine *a, float v)
{
    double d = (double)v;
    if (!isfinite(d)) d = a->fill;
    if (d < a->lo) d = a->lo;
    if (d > a->hi) d = a->hi;
    return (float)((d - a->shift) * a->scale);
}

/* The head/air threshold of x[0..n): Otsu's threshold on a histogram of
 * VOLUME_OTSU_BINS equal bins between the minimum and the maximum (bin
 * of v: floor((v - min) / (max - min) * BINS), the maximum in the last;
 * NaN and infinite voxels are left out of all three);
 * the split t (1..BINS-1) maximising w0 * w1 * (mu0 - mu1)^2 over bin
 * indices, the first on ties; returns min + t * (max - min) / BINS.
 * Everything in double, in index order, so the Python and JavaScript
 * peers (tools/) compute the same threshold.  Returns -INFINITY when
 * max == min (every voxel is foreground). */
#define VOLUME_OTSU_BINS 256
double volume_otsu_threshold(const float *x, int64_t n);
/* Normalise every modality in place (norms: n_mod entries, or NULL). */
int volume_normalize(Volume *v, const Normalize *norms);
/* Voxels of modality m of v (m < 0: of all modalities) that are NaN or
 * infinite. */
int64_t volume_count_nonfinite(const Volume *v, int m);

/* Tensor-to-NIfTI axis map for a model (see the top of this file).
 * dims 3: NNUNET (k, j, i), NIBABEL (i, j, k).  dims 2 along `axis`:
 * NNUNET keeps the other two slowest first (descending), NIBABEL in
 * i, j, k order.  Returns ERR_ARG for dims/axis out of range. */
int volume_axes(VoxelOrder order, int dims, int axis, int ax[3]);

/* Gather the box into dst [C, pad0, pad1, pad2] (C = v->n_mod), applying
 * norms[m] (NULL: raw values); padding is 0 (after normalisation). */
void volume_gather(float *dst, const Volume *v, const NormAffine *norms,
                   const int ax[3], const int64_t off[3],
                   const int64_t box[3], const int64_t pad[3]);

/* scores [nc, pad0, pad1, pad2]: write the argmax over classes (first
 * maximum wins; NaN never wins) of each box voxel into labels
 * [nz][ny][nx] at its NIfTI position. */
void volume_argmax_scatter(int16_t *labels, const int64_t dim[3],
                           const float *scores, int nc, const int ax[3],
                           const int64_t off[3], const int64_t box[3],
                           const int64_t pad[3]);
/* p [nc, pad0, pad1, pad2] (times 1/wsum [pad0,pad1,pad2] if wsum is not
 * NULL): write the box into probs [nc][nz][ny][nx]. */
void volume_probs_scatter(float *probs, const int64_t dim[3], const float *p,
                          const float *wsum, int nc, const int ax[3],
                          const int64_t off[3], const int64_t box[3],
                          const int64_t pad[3]);

/* In-place softmax over the class axis of x [nb][nc][sp] (sp voxels per
 * class), in double for the sum. */
void softmax_classes(float *x, int64_t nb, int nc, int64_t sp);

/* nnU-Net Gaussian importance map w [p0, p1, p2]: sigma = p/8 per dim,
 * centred at p/2 (integer division), maximum 1, values below the smallest
 * positive one raised to it (so no voxel has weight 0). */
void gaussian_map(float *w, const int64_t p[3]);

/* Start offsets of sliding windows of length `patch` over `size` with
 * step <= patch * step_frac (nnU-Net: evenly spaced, first at 0, last at
 * size - patch).  Writes up to max entries; returns the count (1 when
 * size <= patch). */
int window_starts(int64_t size, int64_t patch, double step_frac,
                  int64_t *starts, int max);

#endif
