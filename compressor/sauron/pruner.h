/* Sauron pruning during fine-tuning: the piece the training loop calls.
 *
 * It ties together the channel groups (groups.h), the distances
 * (distance.h), the schedule (threshold.h), the surgery (surgery.h) and
 * the optimiser state (optim.h).  One Pruner per run, on the graph being
 * trained.  The loop, per threshold.h's protocol:
 *
 *   pruner_create(&p, g, &cfg, epochs);
 *   pruner_set_calibration(p, batch, &shape);      // fixed, seeded batch
 *   pruner_start(p, dice_of_imported, written);    // epoch 0 = imported
 *   for e = 1..E:
 *       for each iteration it of iters:
 *           train_zero_grads; train_forward; loss into the output grads
 *           pruner_regularize(p, t, &reg);         // lambda * R, grads
 *           train_backward; optim_step
 *           if (pruner_wants_step(p, e, it + 1, iters))   // --prune-every
 *               pruner_step(p, opt, progress, &changed); rebuild if changed
 *       validate -> dice
 *       pruner_end_epoch(p, e, loss, dice, written); // history, best model
 *       pruner_step(p, opt, e, &changed);          // prune; rebuild t
 *       checkpoint: the graph, the optimiser and pruner_save()
 *   write pruner_best(p) (the best model within the Dice margin)
 *
 * Sauron points: the points that are prunable in the imported graph
 * (sauron_find_groups; class heads never are), fixed for the run and
 * numbered 0..n-1 in node order.  The regulariser's lambda is divided by
 * their number, so heads do not dilute it; a point pruned down to one
 * channel stays a Sauron point (its term is 0 and it is not pruned again).
 *
 * Calibration: delta_prune is computed on one fixed batch (the caller
 * chooses it: validation data when there is any) run through a training
 * executor of the pruner's own, in training mode as the reference code
 * does; BatchNorm running statistics are restored afterwards, so the
 * calibration forward leaves no trace in the weights.  Add-tied points
 * share one reference channel (drawn from the run's seeded splitmix64
 * state) and lose the channels that are candidates in EVERY tied point.
 *
 * Errors: 0 or ERR_* with one sl_error line.  A failed pruner_step leaves
 * the graph unchanged (the surgery checks everything first).
 */
#ifndef SL_SAURON_PRUNER_H
#define SL_SAURON_PRUNER_H

#include <stddef.h>
#include <stdint.h>

#include "compressor/sauron/groups.h"
#include "compressor/sauron/threshold.h"
#include "compressor/train/optim.h"
#include "compressor/train/train_exec.h"
#include "runtime/graph.h"

typedef struct {
    double lambda;       /* regulariser weight, --lambda (see _resolve) */
    int sf;              /* pooling factor in both distances (2), --sf */
    int prune_every;     /* also prune every N iterations (budget only) */
    int keep_head_input; /* 1: points feeding a class head are not Sauron
                            points (docs/METHOD.md: protects Dice); 0 */
    uint64_t seed;       /* reference-channel draws */
    int n_threads;       /* calibration executor; <= 0 all cores */
    SauronSchedConfig sched;
    /* --prune-guard G (budget schedule only; default 0.02, 0: off; the
     * paper schedule is kept exactly as published, unguarded): before a
     * pruning step removes a group's
     * channels, the removal is tried on a copy of the network (with the
     * step's removals accepted so far, groups in point order) and the
     * calibration batch forwarded through it; if the segmentation then
     * differs from the unpruned network's by more than G (1 - mean
     * foreground Dice of the two argmax maps) the removal is skipped and
     * the group's points step one rung down the ladder and stop climbing
     * (frozen; paper schedule: wait rho epochs): each layer's threshold is
     * driven by its own effect on the output, and one step changes the
     * segmentation by at most G.  Label-free, so it works with
     * --distill.  Cost per step: one copy, executor and calibration
     * forward per group that has channels to remove. */
    double prune_guard;
    /* --guard-retry E (default 2; 0: never): a layer held back by the
     * guard tries the next rung after E epochs (then again after E more,
     * each try guarded), never above the ladder's current rung. */
    double guard_retry;
    /* --guard-split N (default 0: off): when a layer's removal fails the
     * guard, try the nearest half of its candidates (smallest delta_prune
     * first), then the nearest quarter, ... N times, and keep the first
     * part that passes.  The layer still steps down a rung and freezes
     * (its full removal failed).  Cost: up to N more guarded forwards per
     * failing layer and step. */
    int guard_split;
    /* --cost-rule none|tau|guard|all (cost.h; budget schedule only;
     * see pruner_config_resolve for the default): put what a channel
     * costs into the decision. */
    int cost_rule;
    /* --target-flops F (0: none; else in (0, 1]; the command line's
     * default is 0.1, see pruner_config_resolve): the fraction of the
     * imported model's FLOPs to keep.  Once the network has at most
     * F * imported FLOPs, pruning stops for the rest of the run, which
     * then only recovers accuracy.  The model written is still the
     * one with the fewest FLOPs within the Dice margin
     * (pruner_target_verdict says whether both were met). */
    double target_flops;
    /* --recovery-epochs N (budget schedule; -1: the schedule's own
     * 20% of --epochs; see pruner_config_resolve for the default with a
     * target): no pruning in the last N epochs (the ladder
     * then climbs within the first half of the epochs before them, or
     * as before if that is sooner).  Must be less than --epochs. */
    int recovery_epochs;
    /* --pause-below-margin on|off (budget schedule only; -1 until
     * resolved): while the last validation Dice is below the margin
     * (dice_ref - max_dice_drop), no pruning step removes anything; the
     * ladder still climbs, and removal resumes after the first epoch back
     * within the margin.  Without validation data it never pauses.  The
     * run then spends its epochs near the margin instead of pruning on
     * from a network that is already outside it, which the model written
     * (fewest FLOPs within the margin) could not use. */
    int pause;
} PrunerConfig;

void pruner_config_default(PrunerConfig *c);
/* The command line's defaults depend on the schedule, and --prune-every's
 * on the epoch length, so sauron-compress starts from
 * pruner_config_unset (pruner_config_default with tau_max, prune_every,
 * prune_guard, cost_rule, pause and target_flops marked "not given")
 * and, once every flag is parsed, pruner_config_resolve fills what is
 * still unset:
 *   budget schedule: a target of 0.1 (--target-flops none: no target);
 *   paper schedule: no target, as published;
 *   with a target: tau_max 1.0, pruning every half epoch
 *     (iters_per_epoch / 2, at least 1) and a guard of the Dice margin
 *     when that is larger than 0.02; when at least
 *     PRUNER_WIDE_GUARD_ITERS iterations separate the pruning steps,
 *     that guard doubles and the cost rule is all; a recovery phase of
 *     the last 20% of the run but at most PRUNER_RECOVERY_ITERS
 *     iterations (recovery_epochs = ceil(PRUNER_RECOVERY_ITERS /
 *     iters_per_epoch) where that is fewer epochs than 20% of them);
 *   without: tau_max 0.3, pruning at epoch ends, guard 0.02;
 *   elsewhere no cost rule; always lambda 0.5, no pause.
 * docs/SAURON_RESULTS.md ("The default") has the runs behind them. */
void pruner_config_unset(PrunerConfig *c);
void pruner_config_resolve(PrunerConfig *c, int epochs, int iters_per_epoch);
/* Brain MRI with the default length (250 iterations per epoch, steps 125
 * apart), guard 0.04 against 0.02: 3D 89.9% fewer FLOPs against 84.6%,
 * both within the 1-point margin held out (runs D3pg4, D3def); 2D 90.8%
 * against 90.1%, held-out Dice 0.9808 against 0.9800 (B2pg4, DEF5).
 * The phantom's runs (steps 7 apart) lose with 0.04
 * (median 3.7% against 69.8% at 8 x 15) and keep 0.02 by construction
 * (docs/SAURON_RESULTS.md, "Brain 3D on a second machine"). */
#define PRUNER_WIDE_GUARD_ITERS 100
/* Brain MRI 3D at 20 x 250 iterations (the default length then): pruning
 * until 90% of the run instead of 80% (recovery 2 epochs, 500
 * iterations) met the target, 9.9% of the FLOPs kept at held-out Dice
 * 0.9637 against the baseline's 0.9726 (run D3r2), where pruning
 * stopped at 10.1% (D3pg4).  2D met its target at epoch 9 (B2pg4), so
 * it is unchanged; the phantom's runs (<= 450 iterations) keep the
 * schedule's 20% by construction (docs/SAURON_RESULTS.md). */
#define PRUNER_RECOVERY_ITERS 500
/* 0 or ERR_ARG naming the flag and its range (--lambda, --sf,
 * --prune-every, the schedule's flags). */
int pruner_config_check(const PrunerConfig *c);

typedef struct Pruner Pruner;

/* g: the graph being trained (borrowed; outlives the pruner), validated,
 * weights present.  epochs: the run's --epochs.  Returns 0, ERR_ARG (bad
 * config), ERR_UNSUPPORTED (no prunable point: the message says so and
 * names the reasons of the first points), ERR_NOMEM. */
int pruner_create(Graph *g, const PrunerConfig *cfg, int epochs,
                  Pruner **out);
void pruner_free(Pruner *p);

/* The fixed calibration batch [B, C, sp...] (copied).  Also the shape
 * FLOPs are counted for, per sample (batch 1). */
int pruner_set_calibration(Pruner *p, const float *x, const Shape *xs);

/* Validation Dice of the imported model (NaN if there is no validation
 * data): the reference of the Dice guard; the imported graph becomes the
 * best model of epoch 0 (a copy is kept).  Call once, before epoch 1 (not
 * after pruner_load, which restores it).
 * written: the validation Dice of the model as the run would write it
 * (class biases tuned, compressor/train/decision.h), or NaN when the run
 * writes models as trained.  When it is a number here and at every
 * pruner_end_epoch, the model kept is chosen by that Dice against this
 * reference, while the guards (threshold.h) keep the Dice as trained:
 * the anatomy run that let the tuned Dice drive the guards pruned faster
 * and wrote a worse model (run Ad, docs/SAURON_RESULTS.md). */
int pruner_start(Pruner *p, double dice_imported, double written);

/* After train_forward and the loss, before train_backward: adds
 * lambda / n * d delta_opt / dF into the grad of every Sauron point's
 * activation F and sets *reg = lambda * mean of the points' terms (the
 * value added to the loss).  Returns 0, ERR_UNSUPPORTED (a point's
 * activation was overwritten in place by the executor) or ERR_NOMEM. */
int pruner_regularize(Pruner *p, TrainExec *t, double *reg);

/* 1 when --prune-every N asks for a pruning step after iteration it
 * (1-based) of iters in epoch e (never at the epoch's end: that one is
 * pruner_step after pruner_end_epoch). */
int pruner_wants_step(const Pruner *p, int it, int iters);

/* Epoch e ended with this training loss (segmentation + regulariser) and
 * validation Dice (NaN if none): appended to the schedule's history; if
 * this network is the best within the Dice margin, a copy is kept.
 * written: as in pruner_start (NaN: choose by dice). */
int pruner_end_epoch(Pruner *p, int epoch, double train_loss, double dice,
                     double written);

/* One pruning step at progress (epochs done, fractional inside an epoch):
 * the schedule moves the thresholds and decides; if it prunes, delta_prune
 * on the calibration batch per group, surgery on the graph, the same
 * slices on opt's state (opt may be NULL), new groups.  *changed = 1 when
 * channels were removed: the caller's executors are then stale (free and
 * create them again).  Returns 0 or ERR_*. */
int pruner_step(Pruner *p, Optim *opt, double progress, int *changed);

/* pruner_step in two halves, for a loop that runs the calibration forward
 * itself (the trainer's trainer_calib_forward): pruner_decide moves the
 * thresholds and sets *now; only if *now, the caller forwards the
 * calibration batch through cal (training mode, BatchNorm statistics
 * restored) and calls pruner_apply with the same progress.  cal must be
 * an executor of the current graph holding that forward's activations. */
int pruner_decide(Pruner *p, double progress, int *now);
int pruner_apply(Pruner *p, TrainExec *cal, Optim *opt, double progress,
                 int *changed);

/* ---- state for reports ---- */
int pruner_n_points(const Pruner *p);
/* The run's settings (after --recovery-epochs moved the schedule's
 * fractions). */
const PrunerConfig *pruner_config(const Pruner *p);
/* Sauron point i: its graph value, producer node, current channels,
 * channels at import, current threshold. */
int pruner_point_value(const Pruner *p, int i);
int pruner_point_node(const Pruner *p, int i);
int pruner_point_channels(const Pruner *p, int i);
int pruner_point_channels0(const Pruner *p, int i);
double pruner_point_tau(const Pruner *p, int i);
/* Threshold point i pruned with at the last step (the ladder's tau,
 * times the cost scale with --cost-rule tau|all, capped at 1), and the
 * FLOPs one of its channels cost then (0 before any step or without a
 * cost rule). */
double pruner_point_tau_used(const Pruner *p, int i);
int64_t pruner_point_channel_flops(const Pruner *p, int i);
const SauronSched *pruner_sched(const Pruner *p);
const PruneGroups *pruner_groups(const Pruner *p);
/* FLOPs and parameters of the current graph for one calibration sample
 * (pruner_set_calibration first), and of the imported graph. */
int64_t pruner_flops(Pruner *p);
int64_t pruner_flops0(const Pruner *p);
/* FLOPs of any graph (e.g. the best model) for one calibration sample;
 * re-infers its activation shapes.  -1 on a shape error. */
int64_t pruner_graph_flops(const Pruner *p, Graph *g);
int64_t pruner_params0(const Pruner *p);
/* Best model within the margin (or NULL before pruner_start) and its
 * epoch (0: the imported model). */
const Graph *pruner_best(const Pruner *p);
int pruner_best_epoch(const Pruner *p);
/* Last regulariser value and the mean seconds it took per call. */
double pruner_last_reg(const Pruner *p);

/* ---- checkpoint ----
 * Blob "SLPRUNR1": version, the settings (lambda, sf, prune_every,
 * keep_head_input, seed), the reference RNG state, the imported FLOPs and
 * params and channels, the best model (.sslim bytes) and the schedule
 * (threshold.h).  The graph's own weights are the caller's to save.
 * pruner_load is called on a pruner created (with the same config) on the
 * graph restored from the checkpoint; it refuses (ERR_ARG, naming the
 * first difference) a blob saved with other settings or for another
 * model, ERR_FORMAT for a corrupt one.  `what` names the file. */
int pruner_save(const Pruner *p, uint8_t **buf, size_t *len);
int pruner_load(Pruner *p, const uint8_t *buf, size_t len, const char *what);

#endif
