/* Pieces shared by the label loss (loss.c) and the soft-target loss
 * (loss_soft.c).  B batch, K classes, S voxels per sample. */
#ifndef SL_TRAIN_LOSS_INTERNAL_H
#define SL_TRAIN_LOSS_INTERNAL_H

#include <stdint.h>

#include "compressor/train/loss.h"

/* p [K] = probabilities of one voxel; x [K] strided by s_stride.  Returns
 * the log-sum-exp of the logits (0 for probabilities). */
double loss_voxel_probs(double *p, const float *x, int64_t s_stride, int k_n,
                        int from_logits);

/* acc [B][3K+1] holds per sample: inter [K] = sum p*t, psum [K] = sum p,
 * tsum [K] = sum t (t: one-hot label or soft target), and the CE sum.
 * Adds weight * (CE mean, 1 - mean dc) to val (accumulates) and writes
 * ga [B][K][2] (overwrites, foreground classes): d(1 - mean dc)/dp at a
 * voxel of sample b is ga[b][k][0] + ga[b][k][1] * t[k]. */
void loss_reduce_sums(LossValue *val, double *ga, const double *acc,
                      int64_t bn, int kn, int64_t sn, const LossOptions *o,
                      float weight);

#endif
