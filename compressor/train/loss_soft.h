/* Soft-target segmentation loss for label-free compression (--distill):
 * the targets are a teacher's class probabilities instead of a label map.
 *
 * Tensors: network output x [B, K, sp...] (logits or probabilities, as
 * LossOptions.from_logits says), targets q [B, K, sp...] (probabilities:
 * each voxel's q sums to 1 over K), row-major.
 *
 *   p   = softmax over K of x (logits), or p = x (probabilities)
 *   CE  = -mean over the B*S voxels of sum_k q_k log p_k
 *         (from logits: log p_k = x_k - logsumexp(x), exact; from
 *         probabilities: p_k clamped at 1e-30 before the log, and such
 *         entries get no CE gradient)
 *   dc  = (2 sum(p_k q_k) + smooth) / max(sum p_k + sum q_k + smooth,
 *         1e-8), sums over the spatial dims (and the batch with batch_dice)
 *   Dice = 1 - mean of dc over classes (background excluded unless
 *         include_background) and samples (without batch_dice)
 *   loss = ce_weight * CE + dice_weight * Dice
 * With one-hot q this is exactly loss_ce_dice (loss.h) for the labels
 * argmax q: the same options, the same defaults.
 *
 * Gradient (accumulated, +=, weight times): from logits,
 *   dCE/dx_j = (p_j sum_k q_k - q_j) / (B S)
 *   dDice/dp_k(v) = -(2 q_k(v) den - num) / (n den^2)  (n = Dice terms)
 * chained through the softmax; from probabilities, with respect to p.
 * Sums are in double in a fixed order, parallel over samples only, so
 * results do not depend on the thread count.
 */
#ifndef SL_TRAIN_LOSS_SOFT_H
#define SL_TRAIN_LOSS_SOFT_H

#include "compressor/train/loss.h"

/* Adds weight * loss to *val (fields accumulate) and weight * d loss / d x
 * to dx (may be NULL).  q has x's shape.  Returns 0, ERR_ARG (bad shape,
 * K > LOSS_MAX_CLASSES) or ERR_NOMEM, with a message. */
int loss_soft_ce_dice(LossValue *val, float *dx, const float *x,
                      const Shape *xs, const float *q, const LossOptions *o,
                      float weight);

#endif
