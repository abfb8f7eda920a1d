/* Label-free compression (sauron-compress --distill): the imported model
 * is the teacher and its own outputs are the targets.
 *
 *   - validation (and the calibration batch, and foreground sampling):
 *     the loaded cases' labels are replaced by the teacher's segmentation
 *     (segment's argmax, through runtime/segment.h on the case's files)
 *     once the split is known: the validation cases (all training cases
 *     when there is no validation split; training cases keep their
 *     labels, or all background for an unlabeled dataset, since their
 *     targets come per batch).  Validation Dice is then agreement with
 *     the teacher, not with any ground truth;
 *   - training: each batch (augmented as usual) is run through the
 *     teacher (runtime executor, inference mode) and the loss is
 *     loss_soft_ce_dice (loss_soft.h) of every student output against the
 *     teacher's output of the same index, as probabilities (a softmax is
 *     applied when the teacher's output is logits), with the trainer's
 *     loss options and deep-supervision weights (loss_ds_weights, n, 0).
 *
 *   Distill *d; TrainTargets tt;
 *   distill_create(&d, &imported_graph, threads, &tt);  // clones it
 *   trainer_create(&t, ...); trainer_set_targets(t, &tt); trainer_run(t);
 *   distill_free(d);
 *
 * Errors: 0 or ERR_* with one sl_error line.
 */
#ifndef SL_TRAIN_DISTILL_H
#define SL_TRAIN_DISTILL_H

#include "compressor/train/trainer.h"
#include "runtime/graph.h"

typedef struct Distill Distill;

/* teacher: the imported graph, metadata filled (copied, so the student
 * may be trained and pruned in place).  Fills *tt (ctx = the Distill). */
int distill_create(Distill **out, const Graph *teacher, int n_threads,
                   TrainTargets *tt);

/* With labels (sauron-compress --teacher-weight W, W > 0): the imported
 * model teaches as well.  The training loss is the labels' loss
 * (train_loss_outputs) plus W times the soft-target loss above against
 * the teacher's outputs for the same batch; validation, calibration and
 * sampling keep the dataset's labels (no relabelling), so validation Dice
 * is against the ground truth.  Fills *tt as distill_create does. */
int distill_create_teacher(Distill **out, const Graph *teacher, int n_threads,
                           double weight, TrainTargets *tt);
void distill_free(Distill *d);

/* Seconds spent in teacher forwards so far (relabelling included). */
double distill_seconds(const Distill *d);

#endif
