/* The decision rule of a segmentation model: one bias per class added to
 * its logits, tuned for Dice on counted voxels, and where the biases go
 * in the network.
 *
 * A model labels a voxel with argmax_k z_k (z: logits, or log
 * probabilities).  Pruned 3D brain models came out biased: on the
 * held-out cases of the brain 3D benchmark they labelled up to twice the
 * control's false-positive voxels, nearly all one voxel outside the brain
 * (docs/SAURON_RESULTS.md, "A tuned decision threshold").  Adding b_k to
 * z_k (b_0 = 0) moves every boundary between classes; b is tuned here to
 * maximise the mean foreground Dice of a set of voxels, and added to the
 * bias of the convolution that computes the logits, so segment needs
 * nothing new.  compressor/train/trainer_decision.c does this at the end
 * of a run.
 *
 * The search is exact per class.  With the other biases fixed, voxel v
 * takes class c when its margin m = z_c - max_{k != c} (z_k + b_k)
 * exceeds d = -b_c; counting, per bin of m, which class each voxel would
 * otherwise take and which it is labelled gives the counts of every d in
 * [-DECISION_RANGE, DECISION_RANGE] (steps of DECISION_STEP) in one sweep.
 * Classes 1..K-1 are tuned in turn until a round changes nothing
 * (coordinate ascent; each step keeps the current value unless another
 * is strictly better, so Dice never falls).  With two classes one step
 * is the whole search: the threshold on z1 - z0 with the highest Dice.
 * Voxels whose best class leads the second by more than 2 *
 * DECISION_RANGE keep their label under any such b and are only counted;
 * the others are kept (K floats and a label each).
 */
#ifndef SL_TRAIN_DECISION_H
#define SL_TRAIN_DECISION_H

#include <stdint.h>

#include "runtime/graph.h"

#define DECISION_STEP 0.01
#define DECISION_HALF 300 /* steps each side of 0: biases within +-3 */
#define DECISION_RANGE (DECISION_HALF * DECISION_STEP)
#define DECISION_ROUNDS 8 /* at most; each round tunes classes 1..K-1 */
#define DECISION_MAX_CLASSES 256 /* labels are uint8 */

/* Voxels and their labels, as decision_tune needs them. */
typedef struct {
    int K;
    int64_t *tp, *fp, *fn; /* [K] each: counts of the voxels no bias
                              within the range relabels */
    float *z;              /* [n][K] the scores of the others */
    uint8_t *y;            /* [n] their labels */
    int64_t n, cap;
} DecisionSet;

/* An empty set for 2 <= K <= DECISION_MAX_CLASSES classes.  0, ERR_ARG
 * or ERR_NOMEM (message printed). */
int decision_set_init(DecisionSet *s, int K);
void decision_set_free(DecisionSet *s);

/* Add the voxels of x [B, K, n] (logits, or probabilities when probs:
 * z = log p) with labels [B, n]; labels >= K are skipped.  0 or
 * ERR_NOMEM (message printed). */
int decision_add(DecisionSet *s, const float *x, int64_t B, int64_t n,
                 const uint8_t *labels, int probs);

/* Per-class counts (tp, fp, fn: [K] each) of labelling the set with
 * argmax_k (z_k + b[k]), ties to the lower class as metric_confusion. */
void decision_confusion(const DecisionSet *s, const double *b, int64_t *tp,
                        int64_t *fp, int64_t *fn);

/* The mean Dice (decision_mean_dice) of labelling the set with argmax_k
 * (z_k + b[k]); b NULL: plain argmax.  0 or ERR_NOMEM (message
 * printed). */
int decision_dice(const DecisionSet *s, const double *b, double *dice);

/* Mean Dice over classes 1..K-1 present in prediction or labels (NaN
 * when none is), as validation reports it. */
double decision_mean_dice(const int64_t *tp, const int64_t *fp,
                          const int64_t *fn, int K);

/* Tune b [K] (from all 0; b[0] stays 0) for the highest mean Dice on s,
 * which goes to *dice (unless NULL).  Every b[k] is a multiple of DECISION_STEP within
 * +-RANGE; among equal Dice a class keeps the value nearest its current
 * one (so a model already at its best keeps b = 0).  0 or ERR_NOMEM
 * (message printed). */
int decision_tune(const DecisionSet *s, double *b, double *dice);

/* The convolution whose output channels are the K logits of output 0:
 * the producer of output 0, or of a Softmax's input when output 0 is a
 * Softmax over channels.  Its node index, or -1 when the graph does not
 * end that way with a K-channel bias. */
int decision_logit_conv(const Graph *g, int K);

/* The K biases of decision_logit_conv's node (NULL when there is none):
 * adding b[k] to bias[k] makes the network label argmax_k (z_k + b[k]). */
float *decision_bias(Graph *g, int K);

#endif
