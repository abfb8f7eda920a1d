/* Private to compressor/train/trainer*.c: the Trainer itself, and the
 * validation and report helpers shared by its files. */
#ifndef SL_TRAIN_TRAINER_INTERNAL_H
#define SL_TRAIN_TRAINER_INTERNAL_H

#include <stdint.h>

#include "compressor/train/decision.h"
#include "compressor/train/trainer.h"
#include "runtime/segment.h"

/* What trainer_tune_decision did (decision.h). */
typedef struct {
    int done;           /* 1: tuned (validation cases, and output 0 a
                           convolution with one bias per class) */
    int folded;         /* 1: bias added to the model's logits */
    double bias[DECISION_MAX_CLASSES]; /* the best of the validation
                           scores (all 0: the model was at its best);
                           not in the model when !folded */
    double predicted;   /* the mean Dice the scores gave for it */
    double dice_before; /* validation mean Dice as trained */
    double dice_after;  /* with bias folded in, measured again
                           (dice_before when bias is all 0) */
} DecisionTune;

struct Trainer {
    Graph *g;
    Dataset *ds;
    TrainConfig cfg;
    TrainHooks hooks;
    char *run_dir;  /* owned copy */
    char *settings; /* owned "key=value" lines a resume must match */
    DataSplit split;
    int have_split;
    Sampler train_s, val_s; /* val_s: unaugmented, over val (or train) */
    int have_train_s, have_val_s;
    Batch calib;
    int have_calib;
    Shape in_shape;     /* [B, C, sp...] training input */
    Shape import_shape; /* the graph input's shape at creation */
    int64_t P[3];       /* patch, tensor order */
    int64_t V[3];       /* 2D validation input size (covers every slice) */
    TrainExec *te;      /* at in_shape, or at the last batch's shape */
    int64_t *fit[3];    /* field-of-view sizes the network accepts (owned;
                           sampler.h FovOptions) */
    int64_t n_fit[3];
    Optim *opt;
    LossOptions lo;
    EpochStats *hist; /* [epochs + 1] */
    int n_hist;
    int epoch;      /* epochs completed */
    int cur_epoch;  /* epoch being run (for trainer_mark_best) */
    int best_epoch; /* -1: none */
    uint8_t *best;  /* .sslim bytes of the best network (owned) */
    size_t best_n;
    TrainTargets targets;  /* zero: the dataset's labels */
    DecisionTune decision; /* set at the end of trainer_run */
    float *bn_save;        /* BatchNorm running statistics (calibration) */
    size_t bn_save_n;
    /* Wall clock of this invocation (sl_now), for the stderr estimates
     * only: never written to a file, so a resumed run's files do not
     * depend on them. */
    double run_t0;      /* trainer_run entered */
    int estimate_shown; /* the expected-time line was printed */
};

/* trainer_eval.c */
/* Validation over the split's validation cases (see trainer.h). */
int trainer_eval_val(Trainer *t, EpochStats *st);
/* The probabilities of validation case i as sg (a segmenter of t->g)
 * gives them, the case read from its file: *out [K, S0, S1, S2] in the
 * case's tensor order (sl_free it; NULL on error).  0 or < 0 (message
 * printed). */
int trainer_val_case_probs(Trainer *t, Segmenter *sg, int i, float **out);

/* trainer_decision.c */
/* At the end of the run, when t->g has validation cases and its logits
 * come from a convolution with a bias: the class biases that maximise
 * the mean Dice of the validation cases segmented as segment does,
 * folded into t->g if that Dice rises (decision.h); t->decision says
 * what was done. */
int trainer_tune_decision(Trainer *t);

/* trainer_report.c */
/* One stderr line for st (unless quiet); after a trained epoch it ends
 * with the wall time elapsed and the ETA of the remaining epochs. */
void trainer_print_epoch(const Trainer *t, const EpochStats *st);
/* One stderr line (unless quiet): the expected wall time of n_epochs
 * epochs of iters iterations at per_iter seconds each (the median of
 * n_probe iterations) plus val_s seconds of validation per epoch; "at
 * most" when cfg.shrinks (pruning makes the later epochs faster). */
void trainer_print_estimate(const Trainer *t, int n_epochs, double per_iter,
                            int n_probe, double val_s);
/* Rewrite RUN/epochs.csv and RUN/epochs.jsonl from the history. */
int trainer_write_reports(const Trainer *t);
/* The wall-clock fields (seconds, step_seconds, data_wait) of the
 * history a resume restored, read back from RUN/epochs.csv: checkpoints
 * do not hold them, so that a resumed run's checkpoint is byte for byte
 * the uninterrupted run's.  Rows or columns it cannot find leave NaN
 * ("nan" in epochs.csv, null in epochs.jsonl): the times are a record,
 * never a reason to refuse a resume. */
void trainer_read_timings(Trainer *t);
/* RUN/summary.txt at the end of the run. */
int trainer_write_summary(const Trainer *t, double seconds);
/* "RUN/name" (caller sl_frees), NULL on out of memory. */
char *trainer_path(const Trainer *t, const char *name);

#endif
