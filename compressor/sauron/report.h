/* Run report of a Sauron fine-tuning run (issue 4, "Run output").
 *
 * Files written in the run folder DIR:
 *   sauron_epochs.csv    one row per epoch (row 0: the imported model):
 *                        epoch, seconds, lr, train_loss, reg, val_loss,
 *                        dice (mean over foreground classes), dice_<class>
 *                        per class, params, flops, channels (sum over the
 *                        Sauron points), then ch_<point> and tau_<point>
 *                        for every point (named after its convolution)
 *   sauron_epochs.jsonl  the same, one JSON object per line
 *   sauron_summary.json  before/after params and FLOPs, per-point channels
 *                        before/after with the epoch of every removal,
 *                        validation Dice before/after, the epoch of the
 *                        model written, the mode (labels or distill), the
 *                        calibration batch, the settings
 *   sauron_summary.txt   the same for people
 * and one progress line per epoch on the given stream (FLOPs and channel
 * totals shrinking).
 *
 * Resume: report_open with resume_epoch = k keeps the rows of epochs
 * 0..k already in the files (a run killed after writing a row but before
 * its checkpoint repeats that epoch) and appends after them.
 *
 * Returns 0 or ERR_IO / ERR_NOMEM with one sl_error line naming the file.
 */
#ifndef SL_SAURON_REPORT_H
#define SL_SAURON_REPORT_H

#include <stdio.h>

#include "compressor/sauron/pruner.h"

typedef struct SauronReport SauronReport;

typedef struct {
    int epoch;         /* 0: the imported model, before training */
    double seconds;    /* wall time of the epoch (training + validation) */
    double lr;         /* learning rate used */
    double train_loss; /* mean segmentation loss + regulariser */
    double reg;        /* mean regulariser term (lambda * R) */
    double val_loss;   /* NaN if not measured */
    double dice;       /* mean validation Dice over foreground classes */
    int n_classes;
    const double *dice_class; /* [n_classes] or NULL */
} ReportEpoch;

typedef struct {
    const char *mode;               /* "labels" or "distill" */
    const char *calibration;        /* how the calibration batch was chosen */
    const char *schedule;           /* "budget" or "paper" */
    const char *model_in;           /* imported model path */
    const char *const *class_names; /* [n_classes] or NULL */
    int n_classes;
} ReportInfo;

/* Create (or, with resume_epoch >= 0, reopen and trim) the files in dir
 * (which must exist).  p gives the point names and counts; g is the graph
 * being trained (names). */
int report_open(SauronReport **out, const char *dir, const Pruner *p,
                const Graph *g, const ReportInfo *info, int resume_epoch,
                FILE *progress);
void report_close(SauronReport *r);

/* Append one epoch row (after pruner_end_epoch and pruner_step, so the
 * channels and taus are those the next epoch trains with). */
int report_epoch(SauronReport *r, Pruner *p, const Graph *g,
                 const ReportEpoch *e);

/* Write the summary files for the model that is written out (best, from
 * epoch best_epoch with validation Dice dice_after); its activation
 * shapes are re-inferred for the calibration sample. */
int report_summary(SauronReport *r, Pruner *p, Graph *written, int best_epoch,
                   double dice_before, double dice_after,
                   const char *target_line);

/* --target-flops: whether the target and the Dice margin were both met by
 * the model written, as one plain sentence in buf (len bytes, always
 * NUL-terminated) naming the one given up when not:
 *   target  fraction of the imported FLOPs to keep (> 0)
 *   kept_min      fewest FLOPs of a validated network of the run, as a
 *                 fraction of the imported model's
 *   kept_written  the same for the model written
 *   dice_ref      the imported model's validation Dice (NaN: no
 *                 validation data, the margin cannot be checked)
 *   dice_written  the written model's validation Dice
 * Returns 1 when both were met (the margin counts as met without
 * validation data: the sentence says it was not checked), else 0. */
int report_target_verdict(double target, double kept_min, double kept_written,
                          double dice_ref, double dice_written,
                          double max_dice_drop, char *buf, size_t len);

#endif
