/* Segmentation losses (nnU-Net's cross-entropy + soft Dice), deep
 * supervision, and the hard-Dice validation metric.
 *
 * Tensors: network output x [B, K, sp...] (K classes, 1 to 3 spatial
 * dims), labels [B, sp...] uint8 class indices (each < K), row-major.
 *
 * The loss, per head (what nnU-Net's DC_and_CE_loss computes):
 *   p   = softmax over K of x   (x are logits), or p = x (probabilities)
 *   CE  = -mean over the B*S voxels of log p[label]   (probabilities are
 *         clamped at 1e-30 before the log; such voxels get no CE gradient)
 *   dc  = (2 * sum(p * onehot) + smooth) / max(sum(p) + sum(onehot) +
 *         smooth, 1e-8), smooth = 1e-5, sums over the spatial dims, and
 *         over the batch too with batch_dice ("batch Dice")
 *   Dice = 1 - mean of dc over classes (and samples without batch_dice);
 *         background (class 0) excluded by default, as nnU-Net's
 *         do_bg=False.  nnU-Net uses -mean(dc); 1 - mean(dc) differs by a
 *         constant, has the same gradient and keeps the loss >= 0.
 *   loss = ce_weight * CE + dice_weight * Dice   (1 and 1)
 * Defaults (loss_options_default): batch_dice = 1 for 2D models, 0 for 3D,
 * which is what nnU-Net's planner writes for its 2d and 3d_fullres
 * configurations.
 *
 * Logits: the softmax is fused into the loss (stable log-sum-exp), and the
 * gradient is taken with respect to the logits.  Probabilities (a graph
 * ending in Softmax): the gradient is with respect to the probabilities
 * and flows on through the Softmax backward.
 *
 * Deep supervision: head h (highest resolution first) is compared with the
 * label map downscaled to its size by nearest-exact sampling,
 * src = floor((dst + 0.5) * in / out) (for a factor of 2: the odd indices,
 * as nnU-Net's order-0 resize picks), and weighted w_h = 2^-h / sum_j 2^-j
 * (1, 1/2, 1/4, ... normalised to sum 1).  nnU-Net additionally gives the
 * lowest-resolution head weight 0; we keep it unless zero_lowest is set in
 * loss_ds_weights (with only two heads nnU-Net's rule would ignore the
 * second one entirely).
 *
 * Gradients: every function ACCUMULATES (+=) weight * d loss / d x into
 * dx; all sums are in double in a fixed order, parallel over samples, so
 * results do not depend on the thread count.
 */
#ifndef SL_TRAIN_LOSS_H
#define SL_TRAIN_LOSS_H

#include <stdint.h>

#include "compressor/train/train_exec.h"
#include "runtime/graph.h"

#define LOSS_MAX_CLASSES 256 /* labels are uint8 */

typedef struct {
    int from_logits;        /* 1: x are logits; 0: x are probabilities */
    int batch_dice;         /* 1: Dice sums over the batch as well */
    int include_background; /* 1: class 0 takes part in the Dice */
    float smooth;           /* 1e-5 */
    float ce_weight;        /* 1 */
    float dice_weight;      /* 1 */
} LossOptions;

/* nsp: spatial dims of the model (batch_dice = nsp == 2); from_logits 1. */
void loss_options_default(LossOptions *o, int nsp);

typedef struct {
    double total; /* sum over heads of weight * (ce_w * CE + dice_w * Dice) */
    double ce;    /* weighted sum of the heads' CE */
    double dice;  /* weighted sum of the heads' Dice terms (1 - mean dc) */
} LossValue;

/* One head: adds weight * loss to *val (fields accumulate too) and
 * weight * d loss / d x to dx [B,K,sp...] (accumulates; dx may be NULL for
 * the value only).  Returns 0, ERR_ARG (label >= K, named with its
 * position; K > LOSS_MAX_CLASSES) or ERR_NOMEM, with a message. */
int loss_ce_dice(LossValue *val, float *dx, const float *x, const Shape *xs,
                 const uint8_t *labels, const LossOptions *o, float weight);

/* Deep-supervision weights for n_heads heads: 2^-h normalised to sum 1;
 * with zero_lowest (and n_heads > 1) the last head gets 0 first (nnU-Net). */
void loss_ds_weights(float *w, int n_heads, int zero_lowest);

/* dst [B, dst_sp...] = nearest-exact sampling of src [B, src_sp...]. */
void loss_downsample_labels(uint8_t *dst, const uint8_t *src, int64_t batch,
                            int nsp, const int64_t *src_sp,
                            const int64_t *dst_sp);

/* All heads: x[h], dx[h] (dx[h] may be NULL), shapes xs[h]; labels
 * [B, sp...] at head 0's size (xs[0]); weights NULL = loss_ds_weights(.., 0).
 * *val is overwritten.  from_logits_per_head NULL: o->from_logits for all.
 * Returns 0 or a negative code (message printed). */
int loss_deep_supervision(LossValue *val, float *const *dx,
                          const float *const *x, const Shape *const *xs,
                          int n_heads, const uint8_t *labels,
                          const float *weights,
                          const int *from_logits_per_head,
                          const LossOptions *o);

/* Nonzero if graph output k ends in a Softmax over the channel axis (the
 * loss then takes it as probabilities); otherwise it is taken as logits. */
int loss_output_is_probability(const Graph *g, int k);

/* The loss line of the train_exec.h protocol: after train_forward, compute
 * the loss of every graph output against labels [B, sp...] (size of output
 * 0) and ADD its gradient into the outputs' grads.  from_logits in *o is
 * ignored: decided per output by loss_output_is_probability.  weights NULL
 * = loss_ds_weights(n_outputs, 0).  Returns 0 or a negative code. */
int train_loss_outputs(TrainExec *t, LossValue *val, const uint8_t *labels,
                       const float *weights, const LossOptions *o);

/* ---- validation metric: hard Dice on the argmax ---- */

/* Per class k < K: tp[k], fp[k], fn[k] += counts of argmax(x) (ties to
 * the lower class) against labels, over all B*S voxels (accumulates, so
 * a whole validation set can be summed).  x [B,K,sp...] logits or
 * probabilities.  Returns 0 or ERR_ARG (label >= K). */
int metric_confusion(int64_t *tp, int64_t *fp, int64_t *fn, const float *x,
                     const Shape *xs, const uint8_t *labels);
/* dice[k] = 2 tp / (2 tp + fp + fn), NaN when the class is absent from
 * both prediction and labels (2 tp + fp + fn == 0). */
void metric_dice(double *dice, const int64_t *tp, const int64_t *fp,
                 const int64_t *fn, int n_classes);

#endif
