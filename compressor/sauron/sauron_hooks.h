/* Sauron plugged into the trainer (compressor/train/trainer.h TrainHooks):
 * the regulariser after every forward, pruning at epoch ends (and every
 * --prune-every N iterations), the best model within the Dice margin
 * marked with trainer_mark_best, report columns (channels and tau per
 * point), the pruner's checkpoint blob, and the run report files
 * (compressor/sauron/report.h).
 *
 *   SauronHooks *sh; TrainHooks hooks;
 *   sauron_hooks_create(&sh, g, &pcfg, epochs, &info, &hooks);
 *   trainer_create(&t, g, ds, &tcfg, &hooks); trainer_run(t);
 *   sauron_hooks_finish(sh, t);    // summary for the model left in g
 *   sauron_hooks_free(sh);
 *
 * The calibration batch is the trainer's (trainer_calib_batch: validation
 * data when there is any), forwarded through the trainer's executor.
 */
#ifndef SL_SAURON_HOOKS_H
#define SL_SAURON_HOOKS_H

#include <stdio.h>

#include "compressor/sauron/pruner.h"
#include "compressor/sauron/report.h"
#include "compressor/train/trainer.h"
#include "runtime/cliopt.h"

typedef struct SauronHooks SauronHooks;

/* g: the imported graph the trainer will train.  info is copied (its
 * strings must outlive the hooks).  Fills *hooks (ctx = the SauronHooks).
 * Returns 0 or the pruner_create codes (ERR_UNSUPPORTED: no prunable
 * point, message printed). */
int sauron_hooks_create(SauronHooks **out, Graph *g, const PrunerConfig *cfg,
                        int epochs, const ReportInfo *info,
                        TrainHooks *hooks);
/* After a successful trainer_run: summary files for the model the trainer
 * left in its graph (the best one within the margin). */
int sauron_hooks_finish(SauronHooks *h, Trainer *t);
/* The Dice before (epoch 0) and after (epoch `be`, the one written) that
 * the summary and the --target-flops verdict judge the margin by: the
 * tuned Dice the epoch was chosen by (pruner_end_epoch) when both ends
 * have one and the model is written tuned (`folded`, the end's tuning
 * changed it); else the Dice as trained, as the model is written then
 * (segmenting whole cases gave no gain), so the verdict says if that
 * misses the margin.  NaN where an epoch is missing. */
void sauron_written_dice(const EpochStats *hist, int n, int be, int folded,
                         double *before, double *after);
void sauron_hooks_free(SauronHooks *h);
/* After sauron_hooks_finish with --target-flops: the verdict sentence
 * (report_target_verdict) also in sauron_summary.txt; NULL otherwise. */
const char *sauron_hooks_target_line(const SauronHooks *h);
Pruner *sauron_hooks_pruner(SauronHooks *h);

/* "key=value" lines of the pruning settings, for TrainConfig
 * .extra_settings (a resume with other flags is refused, naming the
 * key).  Writes into buf (len bytes) and returns it. */
const char *sauron_settings_lines(const PrunerConfig *c, char *buf,
                                  size_t len);

/* Command-line options of pruning (sauron-compress), targets inside a
 * PrunerConfig (a CliGroup with base offsetof(..., PrunerConfig)):
 * --lambda --sf --schedule --tau-max --kappa --rho --mu --max-dice-drop
 * --prune-every --prune-guard --guard-retry --keep-head-input.  Each
 * range is in the table; pruner_config_check adds the rules that tie two
 * settings together (--tau-max above tau0, --prune-every with budget). */
extern const CliOpt sauron_cli_opts[];
extern const int sauron_cli_n_opts;

#endif
