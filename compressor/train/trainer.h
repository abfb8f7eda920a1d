/* The training loop: fine-tune an imported U-Net on an nnU-Net raw dataset
 * with validation, per-epoch reports, checkpoints and --resume, and hooks
 * through which Sauron pruning (compressor/sauron/) plugs in.
 *
 * Ownership: the caller owns the Graph and the Dataset (opened with
 * dataset_open; the trainer loads the voxels with the layout of g->meta).
 * The trainer changes the graph's weights in place (and on --resume
 * replaces the whole graph with the checkpoint's); a hook may change its
 * structure (pruning).  After trainer_run the graph holds the final
 * network (or the "best" one, see trainer_mark_best); the caller writes it.
 *
 * What trainer_run does, in order (the call order hooks rely on):
 *
 *   1. load the dataset's training cases (layout from g->meta), choose the
 *      patch (TrainConfig.patch), make the validation split (new run:
 *      split_make + split.json; --resume: split.json read back);
 *   2. --resume: read RUN/checkpoint.sslck, refuse it (naming the
 *      difference) if it belongs to another model or other settings,
 *      restore graph, optimiser state, histories and counters, then call
 *      hooks.load with the hook's blob;
 *   3. build the training executor, the optimiser, the samplers (training
 *      with augmentation; validation without), the calibration batch;
 *   4. new run: validate the imported network -> history[0] ("epoch 0",
 *      printed and in the reports);
 *   5. hooks.begin (new run and resume alike);
 *   6. for epoch e = first .. epochs (1-based), lr = poly(lr, e - 1, E):
 *        for it = 0 .. iters - 1  (batch k = (e - 1) * iters + it):
 *            train_zero_grads; train_forward(batch k);
 *            train_loss_outputs  (adds d loss / d outputs);
 *            hooks.after_forward (may add gradient into any activation's
 *                                 grad and returns its loss term);
 *            train_backward; clip (--clip-grad); NaN/Inf check of loss and
 *            gradient norm (stops the run naming the epoch); optim_step;
 *            hooks.after_step (returns 1 if it changed the graph: the
 *                              executor is rebuilt before the next step);
 *        validate (network as trained this epoch) -> EpochStats;
 *        hooks.end_of_epoch(e, &stats) (returns 1 if it changed the graph:
 *                              executor rebuilt; the hook itself slices the
 *                              optimiser state with optim_slice_all and the
 *                              surgery's TensorSlice list);
 *        hooks.columns (extra CSV/JSON values for epoch e);
 *        stderr line, RUN/epochs.csv and RUN/epochs.jsonl rewritten from
 *        the history (atomic), RUN/checkpoint.sslck written atomically
 *        (graph + optimiser + history + hooks.save blob);
 *   7. RUN/summary.txt.
 *
 * Determinism: batch k depends only on (seed, k) (sampler.h), kernels and
 * the optimiser are thread-count independent, and a checkpoint holds all
 * the state of an epoch boundary, so a resumed run ends with the same
 * weights, bit for bit, as an uninterrupted one (a hook must save all its
 * own state, RNG included, in its blob for this to hold).
 *
 * Errors: every function returning int gives 0 or a negative ERR_* with
 * one sl_error() line.  A hook returning a negative code stops the run
 * with that code (it reports its own message).
 */
#ifndef SL_TRAIN_TRAINER_H
#define SL_TRAIN_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "compressor/data/dataset.h"
#include "compressor/data/sampler.h"
#include "compressor/data/split.h"
#include "compressor/train/loss.h"
#include "compressor/train/optim.h"
#include "compressor/train/train_exec.h"
#include "runtime/graph.h"

/* Validation of 2D models: at most this many slices per validation case,
 * evenly spaced over the case (all slices when it has fewer). */
#define TRAINER_VAL_MAX_SLICES 64
/* Extra report columns a hook may add. */
#define TRAINER_MAX_COLUMNS 64

typedef struct {
    const char *run_dir; /* reports and checkpoint (created if missing) */
    int epochs;          /* E >= 1 */
    int iters_per_epoch; /* >= 1 */
    int batch;           /* >= 1 */
    OptimOptions optim;  /* kind, lr, weight decay, ... */
    double clip_grad;    /* max gradient L2 norm; <= 0: no clipping */
    uint64_t seed;
    int threads;         /* <= 0: all cores */
    int64_t patch[3];    /* tensor order; 2D: {1, H, W}; zeros: automatic
                            (2D: the smallest valid size covering the
                            dataset's slices, i.e. whole slices;
                            3D: g->meta.patch, else the import size) */
    double val_fraction; /* SPLIT_DEFAULT_VAL_FRAC by default; 0: none */
    /* --val-cases: the validation cases by name (borrowed), e.g. those
     * the imported model was validated on, instead of a seeded
     * val_fraction; n_val_cases 0: the seeded split */
    char *const *val_cases;
    int n_val_cases;
    int augment;         /* 1: augment_defaults; 0: no augmentation */
    double fov_aug;      /* 2D: fraction of batches that see another field
                            of view (sampler.h); 0: none */
    double crop_aug;     /* 2D: fraction of batches cut close around the
                            case's labelled box (sampler.h); 0: none;
                            fov_aug + crop_aug <= 1 */
    int resume;          /* continue from RUN/checkpoint.sslck */
    int force;           /* start over in a run folder holding one */
    int quiet;           /* 1: no per-epoch stderr lines */
    const char *lr_note; /* a line said before the expected time (once
                            training has started: every check passed), or
                            NULL */
    int tune_decision;   /* at the end, fold into the logits the class
                             biases that maximise validation mean Dice;
                             two-class models are validated every epoch at
                             their best threshold (decision.h); 0: argmax
                             as trained */
    int shrinks; /* the hooks remove channels as the run goes: the expected
                    time, at the imported model's speed, says it is a
                    bound */
    /* Settings of the caller (e.g. the pruning flags) that a resume must
     * match, "key=value" lines; NULL if none.  Compared line by line. */
    const char *extra_settings;
} TrainConfig;

/* epochs 1, iters 250, batch 2, Adam defaults, no clipping, seed 0, all
 * threads, automatic patch, val 0.2, augmentation on, no resume, no
 * force. */
void trainer_config_default(TrainConfig *c);

typedef struct {
    int epoch;          /* 0: the imported network before training */
    double lr;          /* learning rate used this epoch (0 at epoch 0) */
    double train_loss;  /* mean over iterations, extra terms included */
    double train_extra; /* mean of the hooks' after_forward terms */
    double val_loss;    /* NaN without validation cases */
    int n_classes;      /* entries of val_dice */
    double val_dice[DATA_MAX_CLASSES]; /* hard Dice per class; NaN if the
                                          class is absent from prediction
                                          and labels (or no validation) */
    double val_dice_mean; /* mean over foreground classes present */
    /* The same at the validation cases' best class biases, the Dice of
     * the model as the run writes it (trainer_eval.c); NaN when the run
     * does not tune its decision rule.  Two classes: val_dice_mean is
     * already that Dice. */
    double val_dice_tuned;
    double seconds;      /* wall time of the epoch, validation included */
    double step_seconds; /* mean time of one training step */
    double data_wait;    /* seconds spent waiting for batches */
    int64_t flops;       /* one forward at the training input shape */
    int64_t params;
    int n_columns; /* hook columns, names from hooks.column_name */
    double columns[TRAINER_MAX_COLUMNS];
} EpochStats;

typedef struct Trainer Trainer;

/* Every member may be NULL. */
typedef struct {
    void *ctx;
    /* Before the first epoch (after a resume's load).  0 or < 0. */
    int (*begin)(void *ctx, Trainer *t);
    /* After the loss, before train_backward: may add into activation
     * grads (train_grad(te, v)) and sets *extra_loss (added to the
     * reported training loss; starts at 0).  b: the batch.  0 or < 0. */
    int (*after_forward)(void *ctx, Trainer *t, TrainExec *te, const Batch *b,
                         double *extra_loss);
    /* After the optimiser step of iteration it (0-based) of epoch e:
     * 1 if the graph changed (pruning every N iterations), 0, or < 0. */
    int (*after_step)(void *ctx, Trainer *t, int epoch, int it);
    /* End of epoch e, after validation (st = this epoch's statistics):
     * 1 if the graph changed, 0, or < 0. */
    int (*end_of_epoch)(void *ctx, Trainer *t, int epoch,
                        const EpochStats *st);
    /* Extra report columns: n_columns names (stable for the whole run,
     * CSV-safe) and their values for epoch e (epoch 0 included). */
    int n_columns;
    const char *(*column_name)(void *ctx, int k);
    int (*columns)(void *ctx, Trainer *t, int epoch, double *values);
    /* Checkpoint state: save gives a new sl_alloc'd blob (the trainer
     * frees it); load receives the blob saved with the checkpoint. */
    int (*save)(void *ctx, uint8_t **blob, size_t *n);
    int (*load)(void *ctx, const uint8_t *blob, size_t n);
} TrainHooks;

/* Targets other than the dataset's labels (label-free compression,
 * compressor/train/distill.h).  Every member may be NULL. */
typedef struct {
    void *ctx;
    /* Once the validation split is known (new run and resume alike),
     * before the executor and the samplers are built: may rewrite the
     * loaded cases' labels (then data_case_relabel), e.g. with a
     * teacher's segmentation, which validation and sampling then use. */
    int (*split_ready)(void *ctx, Trainer *t, Dataset *ds);
    /* Replaces train_loss_outputs in every training step: after
     * train_forward of batch b, set *lv and ADD d loss / d outputs into
     * the outputs' grads.  0 or < 0. */
    int (*loss)(void *ctx, Trainer *t, TrainExec *te, const Batch *b,
                LossValue *lv);
} TrainTargets;

/* g: imported network with its metadata filled (classes, modalities,
 * normalisation, dims, axis, order); ds: opened, not loaded.  Checks the
 * configuration (ERR_ARG naming the flag) and that the dataset fits the
 * network (modalities = input channels, classes = output channels).
 * hooks may be NULL.  g, ds and hooks must outlive the trainer. */
int trainer_create(Trainer **out, Graph *g, Dataset *ds,
                   const TrainConfig *cfg, const TrainHooks *hooks);
/* Steps 1 to 7 above.  0 or a negative code.  On failure (NaN loss
 * included) the graph must not be written. */
int trainer_run(Trainer *t);
void trainer_free(Trainer *t);
/* Plug in targets (copied; ctx must outlive the trainer); before
 * trainer_run. */
void trainer_set_targets(Trainer *t, const TrainTargets *tt);
/* Loss options of the run (the soft-target loss uses the same). */
const LossOptions *trainer_loss_options(const Trainer *t);

/* ---- what hooks (and tests) may use during the run ---- */
Graph *trainer_graph(Trainer *t);
/* Training executor for [B, C, patch...]; NULL before step 3. */
TrainExec *trainer_exec(Trainer *t);
Optim *trainer_optim(Trainer *t);
const Dataset *trainer_dataset(const Trainer *t);
const DataSplit *trainer_split(const Trainer *t);
const TrainConfig *trainer_config(const Trainer *t);
const char *trainer_run_dir(const Trainer *t);
/* Training input shape [B, C, sp...]. */
const Shape *trainer_input_shape(const Trainer *t);
/* Fixed, seeded calibration batch (same shape as a training batch):
 * batch 0 of the validation sampler (no augmentation) when there are
 * validation cases, else of an unaugmented sampler over the training
 * cases.  The same bytes for every epoch and after --resume. */
const Batch *trainer_calib_batch(const Trainer *t);
/* Training-mode forward of the calibration batch through trainer_exec
 * (then train_value(te, v) reads any kept activation).  BatchNorm running
 * statistics are restored afterwards, so the call changes no state. */
int trainer_calib_forward(Trainer *t);
/* Rebuild the executor after a graph change made outside the hooks'
 * return-1 protocol. */
int trainer_rebuild(Trainer *t);
/* Validate the current network: fills st's val_loss, val_dice,
 * val_dice_mean (NaN without validation cases). */
int trainer_validate(Trainer *t, EpochStats *st);
/* History so far: [0] is the imported network (epoch 0), [e] epoch e. */
const EpochStats *trainer_history(const Trainer *t, int *n);
/* Keep the current network as the run's result (also written to
 * RUN/best.sslim): trainer_run then leaves that network in the graph
 * instead of the last one.  Call from end_of_epoch before pruning. */
int trainer_mark_best(Trainer *t);
/* Epoch last marked best, or -1. */
int trainer_best_epoch(const Trainer *t);

/* After trainer_run with cfg.tune_decision: what the tuning of the
 * decision rule did, one line without newline ("foreground where ...",
 * "class logits shifted ...", "kept as trained ...", "not tuned (why)"). */
void trainer_decision_line(const Trainer *t, char *buf, size_t len);
/* 1 if that tuning changed the network (biases folded into its logits):
 * the model written is then the tuned one; 0 if it is as trained. */
int trainer_decision_folded(const Trainer *t);

#endif
