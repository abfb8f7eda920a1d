/* Sauron's two distances for one prunable point (docs/METHOD.md).
 *
 * F is the point's activation for one batch, [N, C, sp...] with 1 to 3
 * spatial dims (2D: [N,C,H,W], 3D: [N,C,D,H,W]); every reduction runs over
 * ALL spatial dims.  Both distances compare average-pooled maps:
 *
 * Pooling.  Kernel = stride = k_i = min(sf, size_i) in every spatial dim i,
 * pooled size P_i = floor(size_i / k_i): the remainder is dropped, as
 * nn.AvgPool with kernel = stride = sf does; a dim smaller than sf is
 * pooled whole (to size 1) instead of being an error.  Q = prod P_i pooled
 * positions, K = prod k_i elements per window.
 *
 * delta_opt (the regulariser, minimised during training).  Per sample n and
 * channel c, with m = min F_c, M = max F_c over all spatial positions
 * (the dropped remainder included) and R = M - m:
 *     nrm_c = (F_c - m) / R,   p_c = pool(nrm_c) = (pool(F_c) - m) / R,
 *     d_c = sqrt(mean_q (p_0(q) - p_c(q))^2)          for c = 1..C-1,
 *     term = mean over n and c = 1..C-1 of d_c        (0 when C == 1).
 * The regulariser is lambda * mean of the terms over the prunable points,
 * so each point's backward gets scale = lambda / npoints.
 * Rules that make the gradient exact and defined everywhere:
 *   - constant channel: if R <= SAURON_RANGE_EPS * max(1, |m|, |M|) the
 *     channel is treated as constant: nrm = 0 and no gradient flows to F_c
 *     (float32 noise on a flat map is not amplified by 1/R);
 *   - d_c == 0 (channel c equal to channel 0 after normalisation, e.g.
 *     identical channels): d_c contributes 0 and its gradient is 0 (the
 *     sqrt has an infinite slope there; 0 is the subgradient we pick);
 *   - min and max receive gradient (dm, dM flow to one element each):
 *     the element is the FIRST index in scan order (flat spatial index)
 *     among ties, i.e. numpy argmin/argmax; the PyTorch fixture gathers
 *     exactly that element (torch.amin/amax would split ties evenly).
 *
 * delta_prune (decides what to remove, on raw maps).  For a reference
 * channel r: e_c = sqrt(mean_q (pool(F_r)(q) - pool(F_c)(q))^2) per sample,
 * divided by (max_c e_c of that sample + 1e-15), averaged over samples:
 * e[C] in [0, 1], e_r = 0.  Channels c != r with e_c < tau are the
 * candidates for removal.
 *
 * Threads: parallel over (n, c) with fixed reduction orders and sums in
 * double; results are bit-identical for any OpenMP thread count.  Kernels
 * never allocate: saved and scratch memory come from the caller, sized by
 * the *_bytes / *_floats functions below.
 */
#ifndef SAURON_DISTANCE_H
#define SAURON_DISTANCE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/graph.h"

#define SAURON_RANGE_EPS 1e-6f /* relative flat-channel guard, above */
#define SAURON_PRUNE_EPS 1e-15 /* added to the per-sample max e_c */

/* What sauron_opt_forward saves for sauron_opt_backward.  Carve it from one
 * caller buffer of sauron_opt_saved_bytes() bytes with
 * sauron_opt_saved_carve(); the caller owns the buffer. */
typedef struct {
    float *pooled;   /* [N, C, Q] p_c: normalised, pooled maps */
    float *dist;     /* [N, C] d_c; entry c = 0 is 0 */
    float *range;    /* [N, C] R, or 0 for a channel treated as constant */
    int64_t *argmin; /* [N, C] flat spatial index of the first minimum */
    int64_t *argmax; /* [N, C] flat spatial index of the first maximum */
} SauronOptSaved;

/* 0 if fs (3 to 5 dims, all positive) and sf (>= 1) are usable; else
 * ERR_SHAPE / ERR_ARG with one sl_error line naming `what` (the point). */
int sauron_dist_check(const Shape *fs, int sf, const char *what);

/* Pooled positions Q for F of shape fs (see Pooling above). */
int64_t sauron_pooled_size(const Shape *fs, int sf);

/* Bytes for SauronOptSaved of F [N,C,sp...] (64-byte aligned pieces). */
size_t sauron_opt_saved_bytes(const Shape *fs, int sf);
/* Points the members of *sv into buf (sauron_opt_saved_bytes() bytes,
 * 64-byte aligned as sl_alloc returns). */
void sauron_opt_saved_carve(SauronOptSaved *sv, void *buf, const Shape *fs,
                            int sf);

/* delta_opt forward: returns the layer term (mean of d over n and
 * c = 1..C-1; 0 when C == 1) and fills *sv (overwrites).
 * F [N,C,sp...]; shapes must have passed sauron_dist_check. */
double sauron_opt_forward(SauronOptSaved *sv, const float *F, const Shape *fs,
                          int sf);

/* Floats of scratch for sauron_opt_backward: N * Q. */
size_t sauron_opt_backward_scratch_floats(const Shape *fs, int sf);

/* delta_opt backward: dF [N,C,sp...] += d(scale * term)/dF (accumulates),
 * through the sqrt, the pooling and the min-max normalisation (min and max
 * included), with the rules stated above.  sv is what the forward saved for
 * the same F; scratch has sauron_opt_backward_scratch_floats() floats. */
void sauron_opt_backward(float *dF, const SauronOptSaved *sv, const Shape *fs,
                         int sf, float scale, float *scratch);

/* Uniform reference channel in [0, C) from an explicit splitmix64 state
 * (advanced in place; unbiased by rejection).  C >= 1. */
int sauron_draw_reference(uint64_t *rng_state, int C);

/* Floats of scratch for sauron_prune_distance: N * C * Q + N * C. */
size_t sauron_prune_scratch_floats(const Shape *fs, int sf);

/* delta_prune: e [C] (overwrites) for reference channel r in [0, C), from
 * F [N,C,sp...] on raw maps, as stated above; e[r] = 0. */
void sauron_prune_distance(float *e, const float *F, const Shape *fs, int sf,
                           int r, float *scratch);

/* Candidates for removal: writes to out (room for C - 1 ints) the channels
 * c != r with e[c] < tau, in increasing order, and returns their number.
 * r is never a candidate, so at least one channel always stays; a NaN e[c]
 * keeps its channel. */
int sauron_prune_candidates(int *out, const float *e, int C, int r,
                            float tau);

/* Orders the n candidates ids[] (with their distances score[], moved
 * alongside) nearest first: score ascending, ties by channel index, a NaN
 * last.  --guard-split then removes a prefix: the channels most like the
 * reference, which the removal changes least. */
void sauron_sort_candidates(int *ids, float *score, int n);

#endif
