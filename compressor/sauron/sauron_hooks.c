/* Sauron pruning as trainer hooks (sauron_hooks.h). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/sauron/cost.h"
#include "compressor/sauron/sauron_hooks.h"
#include "runtime/common.h"

#define NAME_LEN 96

struct SauronHooks {
    Graph *g;
    Pruner *p;
    SauronReport *rep;
    ReportInfo info;
    int n_cols;
    char (*names)[NAME_LEN]; /* [n_cols] report column names */
    char target_line[512];   /* --target-flops verdict, "" if none */
};

Pruner *sauron_hooks_pruner(SauronHooks *h)
{
    return h->p;
}

const char *sauron_settings_lines(const PrunerConfig *c, char *buf,
                                  size_t len)
{
    const SauronSchedConfig *s = &c->sched;
    snprintf(buf, len,
             "sauron.lambda=%.17g\nsauron.sf=%d\nsauron.schedule=%s\n"
             "sauron.tau_max=%.17g\nsauron.kappa=%d\nsauron.rho=%d\n"
             "sauron.mu=%.17g\nsauron.max_dice_drop=%.17g\n"
             "sauron.prune_every=%d\nsauron.keep_head_input=%d\n"
             "sauron.prune_guard=%.17g\nsauron.guard_retry=%.17g\n"
             "sauron.guard_split=%d\n"
             "sauron.cost_rule=%s\nsauron.target_flops=%.17g\n"
             "sauron.recovery_epochs=%d\nsauron.pause=%d\n",
             c->lambda, c->sf,
             s->kind == SAURON_SCHED_PAPER ? "paper" : "budget", s->tau_max,
             s->kappa, s->rho, s->mu, s->max_dice_drop, c->prune_every,
             c->keep_head_input, c->prune_guard, c->guard_retry,
             c->guard_split, sauron_cost_rule_name(c->cost_rule),
             c->target_flops, c->recovery_epochs, c->pause);
    return buf;
}

static void batch_shape(const Batch *b, Shape *s)
{
    memset(s, 0, sizeof *s);
    s->d[0] = b->B;
    s->d[1] = b->C;
    if (b->dims == 2) {
        s->ndim = 4;
        s->d[2] = b->P[1];
        s->d[3] = b->P[2];
    } else {
        s->ndim = 5;
        s->d[2] = b->P[0];
        s->d[3] = b->P[1];
        s->d[4] = b->P[2];
    }
}

static void fill_row(ReportEpoch *r, const EpochStats *st)
{
    memset(r, 0, sizeof *r);
    r->epoch = st->epoch;
    r->seconds = st->seconds;
    r->lr = st->lr;
    r->train_loss = st->train_loss;
    r->reg = st->train_extra;
    r->val_loss = st->val_loss;
    r->dice = st->val_dice_mean;
    r->n_classes = st->n_classes;
    r->dice_class = st->val_dice;
}

static int hk_begin(void *ctx, Trainer *t)
{
    SauronHooks *h = ctx;
    const Batch *cb = trainer_calib_batch(t);
    Shape cs;
    batch_shape(cb, &cs);
    int rc = pruner_set_calibration(h->p, cb->x, &cs);
    if (rc) return rc;
    int n = 0;
    const EpochStats *hist = trainer_history(t, &n);
    int resume = trainer_config(t)->resume;
    if (!resume) {
        rc = pruner_start(h->p, n > 0 ? hist[0].val_dice_mean : (double)NAN,
                          n > 0 ? hist[0].val_dice_tuned : (double)NAN);
        /* the imported network is the fallback result */
        if (!rc && n > 0 && !isnan(hist[0].val_dice_mean))
            rc = trainer_mark_best(t);
        if (rc) return rc;
    }
    rc = report_open(&h->rep, trainer_run_dir(t), h->p, h->g, &h->info,
                     resume ? n - 1 : -1, NULL);
    if (rc) return rc;
    if (!resume && n > 0) {
        ReportEpoch r;
        fill_row(&r, &hist[0]);
        rc = report_epoch(h->rep, h->p, h->g, &r);
    }
    return rc;
}

static int hk_after_forward(void *ctx, Trainer *t, TrainExec *te,
                            const Batch *b, double *extra)
{
    SauronHooks *h = ctx;
    (void)t;
    (void)b;
    return pruner_regularize(h->p, te, extra);
}

/* decide, calibration forward, apply: 1 if the graph changed */
static int prune_now(SauronHooks *h, Trainer *t, double progress)
{
    int now = 0, changed = 0;
    int rc = pruner_decide(h->p, progress, &now);
    if (rc || !now) return rc;
    if ((rc = trainer_calib_forward(t))) return rc;
    rc = pruner_apply(h->p, trainer_exec(t), trainer_optim(t), progress,
                      &changed);
    return rc ? rc : changed;
}

static int hk_after_step(void *ctx, Trainer *t, int epoch, int it)
{
    SauronHooks *h = ctx;
    int iters = trainer_config(t)->iters_per_epoch;
    if (!pruner_wants_step(h->p, it + 1, iters)) return 0;
    return prune_now(h, t, epoch - 1 + (double)(it + 1) / iters);
}

static int hk_end_of_epoch(void *ctx, Trainer *t, int epoch,
                           const EpochStats *st)
{
    SauronHooks *h = ctx;
    int rc = pruner_end_epoch(h->p, epoch, st->train_loss, st->val_dice_mean,
                              st->val_dice_tuned);
    if (rc) return rc;
    if (pruner_best_epoch(h->p) == epoch && pruner_best(h->p) != h->g &&
        (rc = trainer_mark_best(t)))
        return rc;
    int changed = prune_now(h, t, epoch);
    if (changed < 0) return changed;
    ReportEpoch r;
    fill_row(&r, st);
    rc = report_epoch(h->rep, h->p, h->g, &r);
    return rc ? rc : changed;
}

static const char *hk_column_name(void *ctx, int k)
{
    SauronHooks *h = ctx;
    return h->names[k];
}

static int hk_columns(void *ctx, Trainer *t, int epoch, double *v)
{
    SauronHooks *h = ctx;
    (void)t;
    (void)epoch;
    int np = pruner_n_points(h->p), tot = 0;
    for (int i = 0; i < np; i++) {
        v[1 + i] = pruner_point_channels(h->p, i);
        v[1 + np + i] = pruner_point_tau(h->p, i);
        tot += pruner_point_channels(h->p, i);
    }
    v[0] = tot;
    return 0;
}

static int hk_save(void *ctx, uint8_t **blob, size_t *n)
{
    SauronHooks *h = ctx;
    return pruner_save(h->p, blob, n);
}

static int hk_load(void *ctx, const uint8_t *blob, size_t n)
{
    SauronHooks *h = ctx;
    return pruner_load(h->p, blob, n, "checkpoint.sslck (Sauron state)");
}

int sauron_hooks_create(SauronHooks **out, Graph *g, const PrunerConfig *cfg,
                        int epochs, const ReportInfo *info, TrainHooks *hooks)
{
    *out = NULL;
    memset(hooks, 0, sizeof *hooks);
    SauronHooks *h = sl_calloc(1, sizeof *h);
    if (!h) {
        sl_error("out of memory setting up Sauron pruning");
        return ERR_NOMEM;
    }
    h->g = g;
    h->info = *info;
    int rc = pruner_create(g, cfg, epochs, &h->p);
    if (rc) goto fail;
    int np = pruner_n_points(h->p);
    h->n_cols = 1 + 2 * np;
    if (h->n_cols > TRAINER_MAX_COLUMNS) h->n_cols = 1; /* totals only */
    h->names = sl_calloc((size_t)h->n_cols, sizeof *h->names);
    if (!h->names) {
        sl_error("out of memory setting up Sauron pruning");
        rc = ERR_NOMEM;
        goto fail;
    }
    snprintf(h->names[0], NAME_LEN, "channels");
    for (int i = 0; h->n_cols > 1 && i < np; i++) {
        const char *nm = g->nodes[pruner_point_node(h->p, i)].name;
        char clean[NAME_LEN - 8];
        size_t k = 0;
        for (; nm && nm[k] && k + 1 < sizeof clean; k++)
            clean[k] =
                (nm[k] == ',' || nm[k] == '"' || nm[k] < ' ') ? '_' : nm[k];
        clean[k] = 0;
        snprintf(h->names[1 + i], NAME_LEN, "ch_%s", clean);
        snprintf(h->names[1 + np + i], NAME_LEN, "tau_%s", clean);
    }
    hooks->ctx = h;
    hooks->begin = hk_begin;
    hooks->after_forward = hk_after_forward;
    hooks->after_step = hk_after_step;
    hooks->end_of_epoch = hk_end_of_epoch;
    hooks->n_columns = h->n_cols;
    hooks->column_name = hk_column_name;
    hooks->columns = hk_columns;
    hooks->save = hk_save;
    hooks->load = hk_load;
    *out = h;
    return 0;
fail:
    sauron_hooks_free(h);
    return rc;
}

void sauron_written_dice(const EpochStats *hist, int n, int be, int folded,
                         double *before, double *after)
{
    *before = n > 0 ? hist[0].val_dice_mean : (double)NAN;
    *after = be >= 0 && be < n ? hist[be].val_dice_mean : (double)NAN;
    if (folded && n > 0 && be >= 0 && be < n &&
        !isnan(hist[0].val_dice_tuned) && !isnan(hist[be].val_dice_tuned)) {
        *before = hist[0].val_dice_tuned;
        *after = hist[be].val_dice_tuned;
    }
}

int sauron_hooks_finish(SauronHooks *h, Trainer *t)
{
    int n = 0;
    const EpochStats *hist = trainer_history(t, &n);
    int be = trainer_best_epoch(t);
    if (be < 0) be = n - 1;
    double before, after;
    sauron_written_dice(hist, n, be, trainer_decision_folded(t), &before,
                        &after);
    if (!h->rep) return 0;
    const PrunerConfig *pc = pruner_config(h->p);
    h->target_line[0] = 0;
    if (pc->target_flops > 0 && n > 0 && hist[0].flops > 0) {
        /* epochs' FLOPs are at the training shape: ratios only */
        double kmin = 1.0;
        for (int e = 0; e < n; e++) {
            double k = (double)hist[e].flops / (double)hist[0].flops;
            if (k < kmin) kmin = k;
        }
        int64_t f0 = pruner_flops0(h->p);
        int64_t fw = pruner_graph_flops(h->p, trainer_graph(t));
        double kw = f0 > 0 && fw >= 0 ? (double)fw / (double)f0 : 1.0;
        report_target_verdict(pc->target_flops, kmin, kw, before, after,
                              pc->sched.max_dice_drop, h->target_line,
                              sizeof h->target_line);
    }
    return report_summary(h->rep, h->p, trainer_graph(t), be, before, after,
                          h->target_line[0] ? h->target_line : NULL);
}

const char *sauron_hooks_target_line(const SauronHooks *h)
{
    return h && h->target_line[0] ? h->target_line : NULL;
}

void sauron_hooks_free(SauronHooks *h)
{
    if (!h) return;
    report_close(h->rep);
    pruner_free(h->p);
    sl_free(h->names);
    sl_free(h);
}

#define PRUNE_OPT(field) offsetof(PrunerConfig, field)

static const CliChoice schedules[] = {{"budget", SAURON_SCHED_BUDGET},
                                      {"paper", SAURON_SCHED_PAPER},
                                      {NULL, 0}};

_Static_assert(sizeof(SauronSchedKind) == sizeof(int),
               "--schedule is stored as an int");

/* cost.c owns the names of the rules */
static int parse_cost_rule(const char *v, void *target)
{
    int r = sauron_cost_rule_parse(v);
    if (r < 0) return -1;
    *(int *)target = r;
    return 0;
}

/* Inside, 0 means "no target": "none" on the command line (a number 0
 * is refused). */
static int parse_target_flops(const char *v, void *target)
{
    double d;
    if (!strcmp(v, "none")) {
        *(double *)target = 0.0;
        return 0;
    }
    if (cli_parse_double(v, 0.0, 1.0, &d) || !(d > 0.0)) return -1;
    *(double *)target = d;
    return 0;
}

const CliOpt sauron_cli_opts[] = {
    {.name = "lambda",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 100,
     .metavar = "X",
     .off = PRUNE_OPT(lambda),
     .help = "weight of the delta_opt regulariser (default 0.5)"},
    {.name = "sf",
     .type = CLI_INT,
     .lo = 1,
     .hi = 16,
     .metavar = "N",
     .off = PRUNE_OPT(sf),
     .help = "average-pool factor in the distances (default 2)"},
    {.name = "schedule",
     .type = CLI_CHOICE,
     .choices = schedules,
     .off = PRUNE_OPT(sched.kind),
     .help = "threshold schedule (default budget: climb within the first "
             "half of --epochs, prune until 80%, recover)"},
    {.name = "tau-max",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1,
     .metavar = "X",
     .off = PRUNE_OPT(sched.tau_max),
     .help = "last threshold, in (0, 1] (default 1.0; 0.3 with "
             "--target-flops none or --schedule paper)"},
    {.name = "kappa",
     .type = CLI_INT,
     .lo = 1,
     .hi = 1000,
     .metavar = "N",
     .off = PRUNE_OPT(sched.kappa),
     .help = "ladder steps (default 15)"},
    {.name = "rho",
     .type = CLI_INT,
     .lo = 0,
     .hi = 1000,
     .metavar = "N",
     .off = PRUNE_OPT(sched.rho),
     .help = "paper schedule: patience (default 5)"},
    {.name = "mu",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1,
     .metavar = "X",
     .off = PRUNE_OPT(sched.mu),
     .help = "paper schedule: stall fraction (default 0.02)"},
    {.name = "max-dice-drop",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1,
     .metavar = "X",
     .off = PRUNE_OPT(sched.max_dice_drop),
     .help = "Dice margin below the imported model (default 0.01)"},
    {.name = "prune-every",
     .type = CLI_INT,
     .lo = 0,
     .hi = 1000000,
     .metavar = "N",
     .off = PRUNE_OPT(prune_every),
     .help = "also prune every N iterations (budget schedule; default: "
             "every half epoch; 0, and the default with --target-flops none: "
             "at epoch ends only)"},
    {.name = "prune-guard",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1,
     .metavar = "G",
     .off = PRUNE_OPT(prune_guard),
     .help = "budget schedule: skip a layer's removal that would change the "
             "calibration segmentation by more than G (1-Dice); that "
             "layer steps down a rung and stops climbing (default 0.02, or "
             "the Dice margin if larger and there is a target; with a "
             "target, doubled when pruning steps are at least 100 "
             "iterations apart; 0: off)"},
    {.name = "guard-retry",
     .type = CLI_DOUBLE,
     .lo = 0,
     .hi = 1e6,
     .metavar = "E",
     .off = PRUNE_OPT(guard_retry),
     .help = "a layer held back by the guard tries the next rung every E "
             "epochs (default 2, 0: never)"},
    {.name = "guard-split",
     .type = CLI_INT,
     .lo = 0,
     .hi = 30,
     .metavar = "N",
     .off = PRUNE_OPT(guard_split),
     .help = "when a layer's removal fails the guard, try its nearest "
             "half, quarter, ... of the candidates, N times (default 0: "
             "off)"},
    {.name = "cost-rule",
     .type = CLI_CUSTOM,
     .parse = parse_cost_rule,
     .expect = "one of none, tau, guard, all",
     .metavar = "R",
     .off = PRUNE_OPT(cost_rule),
     .help = "budget schedule: put FLOPs per channel into the decision: "
             "none, tau (thresholds scaled by sqrt of a layer's FLOPs per "
             "channel over the geometric mean), guard (the guard tries the "
             "removals saving most FLOPs first), all (both; default with a "
             "target when pruning steps are at least 100 iterations apart, "
             "as at the default length; none otherwise)"},
    {.name = "target-flops",
     .type = CLI_CUSTOM,
     .parse = parse_target_flops,
     .expect = "the fraction of the imported model's FLOPs to keep, a number "
               "in (0, 1] (e.g. 0.1), or none",
     .metavar = "F",
     .off = PRUNE_OPT(target_flops),
     .help = "fraction of the imported model's FLOPs to keep, in (0, 1]: "
             "pruning stops once reached, the rest of the run recovers; the "
             "summary says whether the target and the Dice margin were met "
             "(default 0.1; none: no target, and the published budget values "
             "tau_max 0.3, pruning at epoch ends; --schedule paper: none)"},
    {.name = "recovery-epochs",
     .type = CLI_INT,
     .lo = 0,
     .hi = 100000,
     .metavar = "N",
     .off = PRUNE_OPT(recovery_epochs),
     .help = "budget schedule: no pruning in the last N epochs (default: "
             "the last 20%, with a target at most 500 iterations; less "
             "than --epochs)"},
    {.name = "pause-below-margin",
     .type = CLI_CHOICE,
     .choices = cli_on_off,
     .off = PRUNE_OPT(pause),
     .help = "budget schedule: no removal while the last validation Dice "
             "is below the margin, until an epoch is back within it "
             "(default off)"},
    {.name = "keep-head-input",
     .type = CLI_FLAG,
     .off = PRUNE_OPT(keep_head_input),
     .help = "never prune the block feeding a class head"},
};

const int sauron_cli_n_opts =
    sizeof sauron_cli_opts / sizeof *sauron_cli_opts;
