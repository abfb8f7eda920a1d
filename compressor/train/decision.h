/* The decision threshold of a two-class model: counting margins, the Dice
 * of every threshold, and where the threshold goes in the network.
 *
 * A two-class model labels a voxel foreground when its margin m = log p1
 * - log p0 (= z1 - z0, the foreground logit minus the background's) is
 * above 0.  Pruned 3D brain models came out biased: on the held-out cases
 * of the brain 3D benchmark they labelled up to twice the control's
 * false-positive voxels, nearly all one voxel outside the brain
 * (docs/SAURON_RESULTS.md, "A tuned decision threshold").  Counting, per
 * label, how many voxels fall in each margin bin gives the Dice of every
 * threshold d in [-DECISION_RANGE, DECISION_RANGE] in steps of
 * DECISION_STEP exactly ("m > d"); the chosen d is subtracted from the
 * bias of the convolution that computes z1, so segment needs nothing
 * new.  compressor/train/trainer_decision.c does this at the end of a
 * run.  Models with more classes are left as they are (a threshold per
 * class pair is a different search, not done).
 */
#ifndef SL_TRAIN_DECISION_H
#define SL_TRAIN_DECISION_H

#include <stdint.h>

#include "runtime/graph.h"

#define DECISION_STEP 0.01
#define DECISION_HALF 300 /* bins each side of 0: thresholds within +-3 */
#define DECISION_RANGE (DECISION_HALF * DECISION_STEP)
#define DECISION_BINS (2 * DECISION_HALF + 2)

/* n[y][b]: voxels labelled y (0: background, 1: foreground) whose margin
 * is in bin b.  Bin 0 holds m <= -DECISION_RANGE, bin DECISION_BINS - 1
 * m > DECISION_RANGE, and bin j in between (j - DECISION_HALF - 1) * STEP
 * < m <= (j - DECISION_HALF) * STEP, so threshold index i (d = (i -
 * DECISION_HALF) * STEP, 0 <= i <= 2 * DECISION_HALF) labels foreground
 * exactly the bins above i. */
typedef struct {
    int64_t n[2][DECISION_BINS];
} DecisionHist;

/* Count the voxels of x [B, 2, n] (logits, or probabilities when probs:
 * m = log p1 - log p0) with labels [B, n]; labels other than 0 and 1 are
 * skipped. */
void decision_add(DecisionHist *h, const float *x, int64_t B, int64_t n,
                  const uint8_t *labels, int probs);

/* Foreground confusion counts at threshold index i: true and false
 * positives, false negatives and true negatives. */
void decision_counts(const DecisionHist *h, int i, int64_t *tp, int64_t *fp,
                     int64_t *fn, int64_t *tn);

/* Foreground Dice at threshold index i (NaN when nothing is labelled or
 * predicted foreground). */
double decision_dice(const DecisionHist *h, int i);

/* The threshold index of the highest Dice; among equal ones the nearest
 * to 0 (DECISION_HALF), so a balanced model keeps its threshold. */
int decision_best(const DecisionHist *h);

/* The convolution whose output channel 1 is the foreground logit of
 * output 0: the producer of output 0, or of a Softmax's input when
 * output 0 is a Softmax over channels.  Its node index, or -1 when the
 * graph does not end that way with two channels and a bias. */
int decision_logit_conv(const Graph *g);

/* The foreground bias of decision_logit_conv's node (NULL when there is
 * none): subtracting d from it makes the margin m - d decide. */
float *decision_bias(Graph *g);

#endif
