/* Sauron's self-adjusting thresholds: the ladder, the paper's schedule
 * (patience and convergence rule, docs/METHOD.md) and the budgeted
 * schedule (issue 4, "Pruning within a budget").
 *
 * Time is measured in epochs of progress: progress p = epochs completed,
 * fractional when the loop prunes every N iterations (p = e - 1 + it/iters
 * inside epoch e, p = e at its end).
 *
 * The decision rules are pure functions over histories (sauron_converged,
 * sauron_budget_rung, sauron_budget_prune_allowed, sauron_dice_breach,
 * sauron_best_within_margin) so they are testable without training.
 * SauronSched wraps them with the per-point state and the histories.
 *
 * How the training loop drives it (one SauronSched per run):
 *
 *   sauron_sched_init(&s, &cfg, npoints, channels, E, dice_of_imported);
 *   for e = 1..E:
 *       train epoch e; every --prune-every N iterations (budgeted only):
 *           sauron_sched_update(&s, e - 1 + it / iters, &now);
 *           if now: prune each point i with tau = s.pt[i].tau, then
 *                   sauron_sched_record(&s, i, progress, channels_i);
 *       validate -> dice (NaN if there is no validation data)
 *       sauron_sched_end_epoch(&s, train_loss, dice);
 *       if sauron_best_within_margin(&s.best, e, dice, flops, s.dice_ref,
 *                                    &s.cfg): save the "best" checkpoint
 *               (the network just validated, i.e. before this prune)
 *       sauron_sched_update(&s, e, &now);
 *       if now: for each point i: delta_prune on the calibration batch
 *               (reference from sauron_draw_reference on the run's seeded
 *               state, which the checkpoint must keep too) with
 *               tau = s.pt[i].tau, the surgery, then
 *               sauron_sched_record(&s, i, e, channels_i)
 *               (record after EVERY pruning step, even one that removed
 *               nothing: the paper's rule reads the channels lost in the
 *               last step, the Dice guard the steps in its window);
 *       checkpoint: sauron_sched_save (below) with the weights.
 *
 * Ownership: SauronSched owns its arrays (sl_alloc); free with
 * sauron_sched_free.  Functions returning int give 0 or ERR_* (with one
 * sl_error line).
 */
#ifndef SAURON_THRESHOLD_H
#define SAURON_THRESHOLD_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/bytes.h"

typedef enum {
    SAURON_SCHED_BUDGET = 0, /* default: fits the ladder into --epochs */
    SAURON_SCHED_PAPER = 1,  /* --schedule paper: patience + convergence */
} SauronSchedKind;

typedef struct {
    SauronSchedKind kind;
    double tau0;    /* first rung (0.001) */
    double tau_max; /* last rung (0.3), --tau-max */
    int kappa;      /* steps from tau0 to tau_max (15): kappa+1 rungs */
    int rho;        /* paper: patience after a step up (5), --rho */
    double mu;      /* paper: "pruning has stalled" fraction (0.02), --mu */
    /* budgeted schedule, as fractions of --epochs E */
    double climb_end;     /* tau reaches tau_max at climb_end * E (0.5) */
    double prune_end;     /* no pruning after prune_end * E (0.8) */
    double max_dice_drop; /* margin below the imported Dice (0.01) */
    int dice_window;      /* epochs in the Dice trend (3) */
} SauronSchedConfig;

void sauron_sched_defaults(SauronSchedConfig *cfg);
/* 0, or ERR_ARG naming the flag and its valid range (e.g. --tau-max 2). */
int sauron_sched_config_check(const SauronSchedConfig *cfg);

/* tau of rung k (clamped to [0, kappa]): tau0 + k (tau_max - tau0)/kappa;
 * rung kappa is exactly tau_max. */
double sauron_ladder_tau(const SauronSchedConfig *cfg, int rung);

/* ---- paper schedule: pure rules ---- */

/* Plateau test: n >= rho + 1 and min(w) <= loss[n-1] <= max(w) where w is
 * the rho losses before the last one.  loss[i] = training loss of epoch
 * i+1.  rho = 0 has an empty window: never a plateau. */
int sauron_loss_plateaued(const double *loss, int n, int rho);

/* Converged: the plateau test, and the point lost fewer than
 * ceil(mu * ch_before) channels in its last pruning step (ch_before ->
 * ch_after).  ceil is taken of mu * ch_before - 1e-9 so that 0.02 * 100
 * is 2, not 3, in binary floating point. */
int sauron_converged(const double *loss, int nloss, int ch_before,
                     int ch_after, const SauronSchedConfig *cfg);

/* ---- budgeted schedule: pure rules ---- */

/* Rung at progress p for a run of E epochs: the ladder is climbed
 * linearly, floor(kappa * p / (climb_end * E)), reaching kappa (tau_max)
 * at p = climb_end * E and staying there. */
int sauron_budget_rung(const SauronSchedConfig *cfg, double progress,
                       int epochs);

/* Pruning happens at progress p iff 0 < p <= prune_end * E: the last
 * (1 - prune_end) of the run only recovers accuracy. */
int sauron_budget_prune_allowed(const SauronSchedConfig *cfg, double progress,
                                int epochs);

/* Dice trend rule: with at least dice_window values, the MEDIAN of the
 * last dice_window validation Dice values is below dice_ref -
 * max_dice_drop.  With the default window 3 this means two of the last
 * three epochs fell below the margin: a dip right after a prune, however
 * deep, tends to recover within 1 to 3 epochs and does not stop the
 * climb on its own (a mean of three would), while a sustained drop stops
 * it after two epochs.  Fewer values than the window
 * never breach; a NaN in the window (no validation data) never breaches. */
int sauron_dice_breach(const double *dice, int n, double dice_ref,
                       const SauronSchedConfig *cfg);

/* The checkpoint to keep: among epochs whose own validation Dice is within
 * the margin (dice >= dice_ref - max_dice_drop, 1e-12 slack), the one with
 * the fewest FLOPs, ties going to the higher Dice (then the earlier
 * epoch).  Call for epoch 0 with the imported model so there always is
 * one.  Returns 1 when this epoch is the new best (and updates *b). */
typedef struct {
    int have; /* 0 until an epoch within the margin was seen */
    int epoch;
    double dice;
    double flops;
} SauronBest;
int sauron_best_within_margin(SauronBest *b, int epoch, double dice,
                              double flops, double dice_ref,
                              const SauronSchedConfig *cfg);

/* ---- per-point state and the schedule object ---- */

typedef struct {
    double progress; /* when the pruning step ran (0 for the initial entry) */
    int channels;    /* channels after it */
} SauronChanRec;

typedef struct {
    int rung;            /* index on the ladder */
    double tau;          /* sauron_ladder_tau(rung): prune with this */
    int patience;        /* paper: epochs left before the next step up */
    int frozen;          /* budgeted: 0 climbing; 1 stopped for good (Dice
                            guard); 2 held back by the pruning guard
                            (pruner.h --prune-guard, --guard-retry: the
                            pruner moves it, never faster than the
                            ladder) */
    double frozen_at;    /* progress when frozen, -1 if not */
    int nhist, cap;      /* hist[0] = {0, channels at import} */
    SauronChanRec *hist; /* one entry per sauron_sched_record */
} SauronPoint;

typedef struct {
    SauronSchedConfig cfg;
    int epochs;      /* E (budgeted schedule) */
    double dice_ref; /* validation Dice of the imported model */
    /* The same for the model as it would be written (class biases
     * tuned, pruner.h): the reference of sauron_best_within_margin when
     * not NaN; NaN when the written model is the model as trained. */
    double select_ref;
    int npoints;
    SauronPoint *pt; /* [npoints] */
    int nloss, ndice, cap;
    double *loss;     /* [nloss] training loss per epoch */
    double *dice;     /* [ndice] validation Dice per epoch */
    int dice_checked; /* ndice at the last Dice-guard check */
    int last_freeze;  /* ndice when the guard last froze points (0) */
    SauronBest best;  /* for sauron_best_within_margin */
} SauronSched;

/* channels[npoints]: channel counts at import.  Taus start at rung 0. */
int sauron_sched_init(SauronSched *s, const SauronSchedConfig *cfg,
                      int npoints, const int *channels, int epochs,
                      double dice_ref);
void sauron_sched_free(SauronSched *s);

/* Appends epoch results (train loss; validation Dice or NaN). */
int sauron_sched_end_epoch(SauronSched *s, double train_loss, double dice);

/* Moves the thresholds for progress p and says whether to prune now.
 *   paper: only at an epoch end (p == nloss, an integer): for each point,
 *     patience > 0 -> patience - 1; else if converged (losses so far, its
 *     last recorded pruning step) -> patience = rho, one rung up (never
 *     past kappa).  *prune_now = 1.  At any other p: no change, 0.
 *   budgeted: when a new Dice value has arrived since the last call,
 *     the Dice window lies wholly after the last freeze (so a freeze gets
 *     dice_window epochs to show its effect before the next one), and
 *     sauron_dice_breach holds: freeze the points that lost channels in a
 *     pruning step at progress >= ndice - dice_window (the steps that can
 *     have pulled the trend down); if none did, freeze every point.  A
 *     frozen point keeps its tau for the rest of the run (it still prunes
 *     at that tau while pruning is allowed).  Every other point moves to
 *     sauron_budget_rung(p).  *prune_now = sauron_budget_prune_allowed(p).
 */
void sauron_sched_update(SauronSched *s, double progress, int *prune_now);

/* Appends {progress, channels} to point i's history after a pruning step. */
int sauron_sched_record(SauronSched *s, int point, double progress,
                        int channels);

/* Channels point i lost in pruning steps at progress >= since. */
int sauron_point_lost_since(const SauronPoint *pt, double since);

/* ---- checkpoint (for --resume) ----
 * The whole schedule (config, histories, every point's state) as a
 * self-contained little-endian blob with magic "SLSCHED1" and a version.
 * sauron_sched_save appends it to w (runtime/bytes.h: an allocation
 * failure sets w->err).  sauron_sched_load rebuilds *s (owned by the
 * caller afterwards: sauron_sched_free) from such a blob and refuses, with
 * ERR_ARG and a line naming the first difference, a state saved with other
 * settings (expect), another --epochs or another number of prunable
 * points; ERR_FORMAT for a bad magic/version or a truncated or corrupt
 * blob (every count is bounded by the bytes left); `what` names the file
 * in messages. */
void sauron_sched_save(const SauronSched *s, ByteWriter *w);
int sauron_sched_load(SauronSched *s, const uint8_t *buf, size_t len,
                      const SauronSchedConfig *expect, int expect_epochs,
                      int expect_points, const char *what);

#endif
