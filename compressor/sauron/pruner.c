/* Sauron pruning during fine-tuning (pruner.h): regulariser hook, pruning
 * step on the calibration batch, best model within the Dice margin,
 * checkpoint of the pruner's state. */
#include <math.h>
#include <string.h>

#include "compressor/sauron/cost.h"
#include "compressor/sauron/distance.h"
#include "compressor/sauron/pruner.h"
#include "compressor/sauron/surgery.h"
#include "runtime/bytes.h"
#include "runtime/common.h"
#include "runtime/sslim.h"

#define PRUNER_MAGIC "SLPRUNR1"
#define PRUNER_VERSION 1u

struct Pruner {
    Graph *g; /* borrowed: the graph being trained */
    PrunerConfig cfg;
    int epochs;
    PruneGroups pg;
    int n;          /* Sauron points */
    int *pidx;      /* [n] index into pg.points */
    int *channels0; /* [n] channels at import */
    SauronSched sched;
    uint64_t rng; /* reference draws (splitmix64 state) */
    /* calibration batch and its executor (rebuilt after surgery) */
    float *cal_x;
    Shape cal_shape;
    TrainExec *cal;
    /* grow-only work buffers for the regulariser */
    void *saved;
    size_t saved_bytes;
    float *scratch;
    size_t scratch_floats;
    int64_t flops0, params0;
    int started;
    Graph best;    /* copy of the best model (best_kind 1) */
    int best_kind; /* 0 none, 1 the copy, 2 the current graph */
    int best_epoch;
    double last_reg;
    /* --cost-rule: per Sauron point, FLOPs of one channel and the
     * threshold used at the last step (recomputed every step from the
     * graph, so a resume needs neither) */
    int64_t *cost;
    double *tau_used;
    int64_t flops_now; /* FLOPs of the current graph, -1: not known */
};

void pruner_config_default(PrunerConfig *c)
{
    memset(c, 0, sizeof *c);
    c->lambda = 0.5;
    c->sf = 2;
    c->prune_every = 0;
    c->keep_head_input = 0;
    c->seed = 0x5a0e0;
    c->n_threads = 0;
    /* measured on the phantom (docs/SAURON_RESULTS.md): the guard turns
     * a destructive budgeted run into a 68-73% FLOPs cut within 0.2
     * Dice points */
    c->prune_guard = 0.02;
    /* phantom, 30 epochs: 76.3% -> 87.1% fewer FLOPs within 1 Dice point
     * (docs/SAURON_RESULTS.md) */
    c->guard_retry = 2.0;
    c->guard_split = 0;
    c->cost_rule = SAURON_COST_NONE;
    c->target_flops = 0.0;
    c->recovery_epochs = -1;
    c->pause = 0;
    sauron_sched_defaults(&c->sched);
}

void pruner_config_unset(PrunerConfig *c)
{
    pruner_config_default(c);
    c->sched.tau_max = -1.0;
    c->prune_every = -1;
    c->prune_guard = -1.0;
    c->pause = -1;
    c->target_flops = -1.0;
    c->cost_rule = -1;
}

void pruner_config_resolve(PrunerConfig *c, int epochs, int iters_per_epoch)
{
    int paper = c->sched.kind == SAURON_SCHED_PAPER;
    /* The default budget is a target of 10% of the FLOPs: on the phantom
     * (five seeds, 30 x 15) it cut 66-88% within 1 point where the
     * published values (tau_max 0.3, pruning at epoch ends) cut 27-40%,
     * and on brain MRI it gave the smallest model within the margin of
     * every recipe tried (docs/SAURON_RESULTS.md, "The default").  The
     * paper's schedule stays as published: no target. */
    if (c->target_flops < 0) c->target_flops = paper ? 0.0 : 0.1;
    /* With --target-flops the run is asked for a size: the ladder goes
     * all the way (every channel a candidate) and each step may spend the
     * whole Dice margin, if that is above the usual guard (phantom,
     * 30 x 15, target 0.1, margin 0.03: 85.7% fewer FLOPs with tau_max
     * 0.8 and guard 0.02, target met with 1.0 and 0.03;
     * docs/SAURON_RESULTS.md) */
    int target = !paper && c->target_flops > 0;
    if (c->sched.tau_max < 0) c->sched.tau_max = target ? 1.0 : 0.3;
    /* with a target, prune every half epoch as well: the phantom's
     * --target-flops runs were measured so */
    if (c->prune_every < 0)
        c->prune_every =
            !target || iters_per_epoch < 2 ? 0 : iters_per_epoch / 2;
    /* Steps far apart (PRUNER_WIDE_GUARD_ITERS) leave the training time
     * to repair what each one breaks */
    int wide = target && c->prune_every >= PRUNER_WIDE_GUARD_ITERS;
    if (c->prune_guard < 0) {
        c->prune_guard = target && c->sched.max_dice_drop > 0.02
                             ? c->sched.max_dice_drop
                             : 0.02;
        if (wide) c->prune_guard *= 2; /* there the guard doubles */
    }
    /* Where the steps are far apart, say what a channel costs as well
     * (both cost rules): on brain 2D, brain 3D and anatomy it removed
     * more FLOPs at the same or better held-out Dice (runs B2all, D3all2,
     * Aall in docs/SAURON_RESULTS.md).  The phantom's short runs, steps
     * a few iterations apart, lost with it (pace_all): they keep none. */
    if (c->cost_rule < 0)
        c->cost_rule = wide ? SAURON_COST_ALL : SAURON_COST_NONE;
    if (c->pause < 0) c->pause = 0;
    /* With a target, recovery needs a number of steps, not a share of
     * the run: long runs prune on until PRUNER_RECOVERY_ITERS are left */
    if (target && c->recovery_epochs < 0 && iters_per_epoch > 0) {
        int r =
            (PRUNER_RECOVERY_ITERS + iters_per_epoch - 1) / iters_per_epoch;
        if (r < (1.0 - c->sched.prune_end) * epochs - 1e-9)
            c->recovery_epochs = r;
    }
}

int pruner_config_check(const PrunerConfig *c)
{
    if (!(c->lambda >= 0 && c->lambda <= 100)) {
        sl_error("--lambda %g is out of range: give a value in [0, 100] "
                 "(default 0.5)",
                 c->lambda);
        return ERR_ARG;
    }
    if (c->sf < 1 || c->sf > 16) {
        sl_error("--sf %d is out of range: give an integer in [1, 16] "
                 "(default 2)",
                 c->sf);
        return ERR_ARG;
    }
    if (!(c->prune_guard >= 0 && c->prune_guard <= 1)) {
        sl_error("--prune-guard %g is out of range: give a value in [0, 1] "
                 "(0: off)",
                 c->prune_guard);
        return ERR_ARG;
    }
    if (!(c->guard_retry >= 0 && c->guard_retry <= 1e6)) {
        sl_error("--guard-retry %g is out of range: give a number of epochs "
                 ">= 0 (0: never)",
                 c->guard_retry);
        return ERR_ARG;
    }
    if (c->guard_split < 0 || c->guard_split > 30) {
        sl_error("--guard-split %d is out of range: give a number of "
                 "halvings in [0, 30] (0: off)",
                 c->guard_split);
        return ERR_ARG;
    }
    if (c->prune_every < 0) {
        sl_error("--prune-every %d is out of range: give 0 (epoch ends "
                 "only) or a number of iterations >= 1",
                 c->prune_every);
        return ERR_ARG;
    }
    if (c->cost_rule < SAURON_COST_NONE || c->cost_rule > SAURON_COST_ALL) {
        sl_error("--cost-rule %d: expected none, tau, guard or all",
                 c->cost_rule);
        return ERR_ARG;
    }
    if (!(c->target_flops == 0.0 ||
          (c->target_flops > 0.0 && c->target_flops <= 1.0))) {
        sl_error("--target-flops %g is out of range: give the fraction of "
                 "the imported model's FLOPs to keep, in (0, 1] (e.g. 0.1)",
                 c->target_flops);
        return ERR_ARG;
    }
    if (c->recovery_epochs < -1) {
        sl_error("--recovery-epochs %d is out of range: give a number of "
                 "epochs >= 0, less than --epochs",
                 c->recovery_epochs);
        return ERR_ARG;
    }
    if (c->sched.kind == SAURON_SCHED_PAPER &&
        (c->cost_rule != SAURON_COST_NONE || c->recovery_epochs >= 0 ||
         c->pause > 0)) {
        sl_error("%s works with the budgeted schedule only: the paper's "
                 "schedule is kept as published (drop one of the two flags)",
                 c->cost_rule != SAURON_COST_NONE ? "--cost-rule"
                 : c->recovery_epochs >= 0        ? "--recovery-epochs"
                                                  : "--pause-below-margin");
        return ERR_ARG;
    }
    if (c->prune_every > 0 && c->sched.kind == SAURON_SCHED_PAPER) {
        sl_error("--prune-every works with the budgeted schedule only: the "
                 "paper's schedule prunes at epoch ends (drop one of the two "
                 "flags)");
        return ERR_ARG;
    }
    return sauron_sched_config_check(&c->sched);
}

/* Point k feeds a class head: one of its uses is the head's convolution. */
static int feeds_head(const PruneGroups *pg, int k)
{
    const PrunePoint *pt = &pg->points[k];
    for (int u = 0; u < pt->n_uses; u++) {
        if (pt->uses[u].kind != PRUNE_USE_CONV &&
            pt->uses[u].kind != PRUNE_USE_CONV_T)
            continue;
        for (int h = 0; h < pg->n_points; h++)
            if (pg->points[h].head && pg->points[h].conv == pt->uses[u].node)
                return 1;
    }
    return 0;
}

/* Which points are Sauron points: prunable, and with keep_head_input not
 * in a group that feeds a head.  Fills p->pidx (room for pg.n_points). */
static int select_points(Pruner *p)
{
    const PruneGroups *pg = &p->pg;
    int n = 0;
    for (int k = 0; k < pg->n_points; k++) {
        if (!pg->points[k].prunable) continue;
        int skip = 0;
        for (int j = 0; p->cfg.keep_head_input && j < pg->n_points; j++)
            if (pg->points[j].group == pg->points[k].group &&
                feeds_head(pg, j))
                skip = 1;
        if (!skip) p->pidx[n++] = k;
    }
    return n;
}

int pruner_create(Graph *g, const PrunerConfig *cfg, int epochs, Pruner **out)
{
    *out = NULL;
    int rc = pruner_config_check(cfg);
    if (rc) return rc;
    if (cfg->recovery_epochs >= epochs) {
        sl_error("--recovery-epochs %d: give fewer epochs than --epochs %d "
                 "(some epochs must prune)",
                 cfg->recovery_epochs, epochs);
        return ERR_ARG;
    }
    Pruner *p = sl_calloc(1, sizeof *p);
    if (!p) goto nomem;
    p->g = g;
    p->cfg = *cfg;
    p->flops_now = -1;
    if (cfg->recovery_epochs >= 0) {
        /* the schedule's own fractions, so the checkpoint keeps them */
        SauronSchedConfig *sc = &p->cfg.sched;
        sc->prune_end = (double)(epochs - cfg->recovery_epochs) / epochs;
        if (sc->climb_end > sc->prune_end) sc->climb_end = sc->prune_end;
    }
    p->epochs = epochs;
    p->rng = cfg->seed;
    p->best_epoch = -1;
    graph_init(&p->best);
    rc = sauron_find_groups(g, &p->pg);
    if (rc) goto fail;
    int np = p->pg.n_points > 0 ? p->pg.n_points : 1;
    p->pidx = sl_alloc((size_t)np * sizeof(int));
    p->channels0 = sl_alloc((size_t)np * sizeof(int));
    p->cost = sl_calloc((size_t)np, sizeof(int64_t));
    p->tau_used = sl_calloc((size_t)np, sizeof(double));
    if (!p->pidx || !p->channels0 || !p->cost || !p->tau_used) goto nomem;
    p->n = select_points(p);
    if (p->n == 0) {
        const char *why = p->pg.n_points ? "every convolution is a class head"
                                         : "the graph has no convolution";
        for (int k = 0; k < p->pg.n_points; k++)
            if (!p->pg.points[k].head) {
                why = p->pg.points[k].prunable ? "they feed a class head "
                                                 "(--keep-head-input)"
                                               : p->pg.points[k].reason;
                break;
            }
        sl_error("the model has no prunable point (%d convolution outputs, "
                 "e.g. %s): Sauron cannot shrink it; pass --allow-unpruned "
                 "to fine-tune and write it unpruned, or --no-prune",
                 p->pg.n_points, why);
        rc = ERR_UNSUPPORTED;
        goto fail;
    }
    for (int i = 0; i < p->n; i++)
        p->channels0[i] = p->pg.points[p->pidx[i]].channels;
    rc = sauron_sched_init(&p->sched, &p->cfg.sched, p->n, p->channels0,
                           epochs, NAN);
    if (rc) goto fail;
    p->params0 = graph_params(g);
    *out = p;
    return 0;
nomem:
    sl_error("out of memory setting up Sauron pruning");
    rc = ERR_NOMEM;
fail:
    pruner_free(p);
    return rc;
}

void pruner_free(Pruner *p)
{
    if (!p) return;
    sauron_groups_free(&p->pg);
    sauron_sched_free(&p->sched);
    train_exec_free(p->cal);
    graph_free(&p->best);
    sl_free(p->pidx);
    sl_free(p->channels0);
    sl_free(p->cost);
    sl_free(p->tau_used);
    sl_free(p->cal_x);
    sl_free(p->saved);
    sl_free(p->scratch);
    sl_free(p);
}

int pruner_set_calibration(Pruner *p, const float *x, const Shape *xs)
{
    int64_t n = shape_numel(xs);
    float *c = sl_alloc((size_t)n * sizeof(float));
    if (!c) {
        sl_error("out of memory for the Sauron calibration batch");
        return ERR_NOMEM;
    }
    memcpy(c, x, (size_t)n * sizeof(float));
    sl_free(p->cal_x);
    p->cal_x = c;
    p->cal_shape = *xs;
    train_exec_free(p->cal);
    p->cal = NULL;
    if (!p->started) p->flops0 = pruner_flops(p);
    return 0;
}

int64_t pruner_graph_flops(const Pruner *p, Graph *g)
{
    if (!p->cal_x) return 0;
    Shape s = p->cal_shape;
    s.d[0] = 1;
    int q = sl_error_is_quiet();
    sl_error_quiet(1);
    int rc = graph_infer_shapes(g, &s);
    sl_error_quiet(q);
    return rc ? -1 : graph_flops(g);
}

int64_t pruner_flops(Pruner *p)
{
    p->flops_now = pruner_graph_flops(p, p->g);
    return p->flops_now;
}

/* Keep the current graph as the best model. */
static int keep_best(Pruner *p, int epoch)
{
    Graph c;
    graph_init(&c);
    if (graph_clone(&c, p->g)) {
        sl_error("out of memory keeping the best model of epoch %d", epoch);
        return ERR_NOMEM;
    }
    graph_free(&p->best);
    p->best = c;
    p->best_kind = 1;
    p->best_epoch = epoch;
    return 0;
}

int pruner_start(Pruner *p, double dice_imported, double written)
{
    p->sched.dice_ref = dice_imported;
    p->sched.select_ref = isnan(dice_imported) ? (double)NAN : written;
    p->started = 1;
    if (isnan(dice_imported)) {
        /* no validation data: no margin to respect, the last model wins */
        p->best_kind = 2;
        p->best_epoch = 0;
        return 0;
    }
    double d = isnan(written) ? dice_imported : written;
    sauron_best_within_margin(&p->sched.best, 0, d, (double)pruner_flops(p),
                              d, &p->sched.cfg);
    return keep_best(p, 0);
}

static int grow(void **buf, size_t *have, size_t want)
{
    if (*have >= want && *buf) return 0;
    void *b = sl_alloc(want ? want : 1);
    if (!b) return ERR_NOMEM;
    sl_free(*buf);
    *buf = b;
    *have = want;
    return 0;
}

int pruner_regularize(Pruner *p, TrainExec *t, double *reg)
{
    *reg = 0;
    if (p->cfg.lambda == 0) return 0;
    double total = 0;
    float scale = (float)(p->cfg.lambda / p->n);
    for (int i = 0; i < p->n; i++) {
        int v = p->pg.points[p->pidx[i]].value;
        const float *F = train_value(t, v);
        float *dF = train_grad(t, v);
        const Shape *fs = train_shape(t, v);
        const char *name = p->g->values[v].name;
        if (!F || !dF) {
            sl_error("Sauron point %s: its activation is not kept by the "
                     "training executor (overwritten in place); this graph "
                     "cannot be regularised",
                     name);
            return ERR_UNSUPPORTED;
        }
        int rc = sauron_dist_check(fs, p->cfg.sf, name);
        if (rc) return rc;
        size_t sb = sauron_opt_saved_bytes(fs, p->cfg.sf);
        size_t sc = sauron_opt_backward_scratch_floats(fs, p->cfg.sf);
        size_t scb = p->scratch_floats * sizeof(float);
        if (grow(&p->saved, &p->saved_bytes, sb) ||
            grow((void **)&p->scratch, &scb, sc * sizeof(float))) {
            sl_error("out of memory for the Sauron regulariser at %s", name);
            return ERR_NOMEM;
        }
        p->scratch_floats = scb / sizeof(float);
        SauronOptSaved sv;
        sauron_opt_saved_carve(&sv, p->saved, fs, p->cfg.sf);
        total += sauron_opt_forward(&sv, F, fs, p->cfg.sf);
        sauron_opt_backward(dF, &sv, fs, p->cfg.sf, scale, p->scratch);
    }
    *reg = p->cfg.lambda * total / p->n;
    p->last_reg = *reg;
    return 0;
}

int pruner_wants_step(const Pruner *p, int it, int iters)
{
    return p->cfg.prune_every > 0 && it < iters &&
           it % p->cfg.prune_every == 0;
}

int pruner_end_epoch(Pruner *p, int epoch, double train_loss, double dice,
                     double written)
{
    int rc = sauron_sched_end_epoch(&p->sched, train_loss, dice);
    if (rc) return rc;
    if (p->best_kind == 2 || isnan(p->sched.dice_ref)) {
        p->best_kind = 2;
        p->best_epoch = epoch;
        return 0;
    }
    /* the model is chosen by the Dice it will be written with */
    double d = dice, ref = p->sched.dice_ref;
    if (!isnan(p->sched.select_ref) && !isnan(written)) {
        d = written;
        ref = p->sched.select_ref;
    }
    if (sauron_best_within_margin(&p->sched.best, epoch, d,
                                  (double)pruner_flops(p), ref,
                                  &p->sched.cfg))
        return keep_best(p, epoch);
    return 0;
}

/* Copy (save = 1) or restore (0) every BatchNorm's running mean and
 * variance to/from buf, which has room for all of them (or count them
 * with buf NULL).  The calibration forward runs in training mode, which
 * updates them; the run must not depend on how often it calibrates. */
static size_t bn_stats(Graph *g, float *buf, int save)
{
    size_t off = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != OP_BATCH_NORM) continue;
        for (int k = 3; k <= 4 && k < n->n_in; k++) {
            Value *v = &g->values[n->in[k]];
            size_t c = (size_t)shape_numel(&v->shape);
            if (buf && save) memcpy(buf + off, v->data, c * sizeof(float));
            if (buf && !save) memcpy(v->data, buf + off, c * sizeof(float));
            off += c;
        }
    }
    return off;
}

/* Forward the calibration batch through the pruner's executor. */
static int calibrate(Pruner *p)
{
    int rc;
    float *bn = NULL;
    if (!p->cal_x) {
        sl_error("Sauron: no calibration batch was set (internal: call "
                 "pruner_set_calibration)");
        return ERR_ARG;
    }
    if (!p->cal) {
        rc =
            train_exec_create(p->g, &p->cal_shape, p->cfg.n_threads, &p->cal);
        if (rc) return rc;
    }
    size_t nbn = bn_stats(p->g, NULL, 1);
    bn = sl_alloc((nbn ? nbn : 1) * sizeof(float));
    if (!bn) {
        sl_error("out of memory for the calibration forward");
        return ERR_NOMEM;
    }
    bn_stats(p->g, bn, 1);
    rc = train_forward(p->cal, p->cal_x);
    bn_stats(p->g, bn, 0);
    sl_free(bn);
    return rc;
}

/* Removal lists for every group of Sauron points: reference drawn per
 * group, channels that are candidates in every tied point.  req[] gets
 * one request per group with something to remove; rem is room for the
 * indices (sum of the points' channels). */
static int build_requests(Pruner *p, TrainExec *cal, PruneRequest *req,
                          int *n_req, int *rem, float *score, float *e,
                          float *emax, int *cand, uint8_t *mask, float *scr)
{
    const PruneGroups *pg = &p->pg;
    int nr = 0, used = 0;
    for (int i = 0; i < p->n; i++) {
        const PrunePoint *pt = &pg->points[p->pidx[i]];
        int first = 1; /* first Sauron point of its group */
        for (int j = 0; j < i; j++)
            if (pg->points[p->pidx[j]].group == pt->group) first = 0;
        if (!first || !pt->prunable || pt->channels <= 1) continue;
        int C = pt->channels;
        int r = sauron_draw_reference(&p->rng, C);
        memset(mask, 1, (size_t)C);
        mask[r] = 0;
        for (int c = 0; c < C; c++)
            emax[c] = 0;
        for (int j = i; j < p->n; j++) {
            const PrunePoint *q = &pg->points[p->pidx[j]];
            if (q->group != pt->group) continue;
            const float *F = train_value(cal, q->value);
            const Shape *fs = train_shape(cal, q->value);
            if (!F) {
                sl_error("Sauron point %s: activation not kept by the "
                         "calibration executor",
                         p->g->values[q->value].name);
                return ERR_UNSUPPORTED;
            }
            CHECK(fs->d[1] == C);
            int rc =
                sauron_dist_check(fs, p->cfg.sf, p->g->values[q->value].name);
            if (rc) return rc;
            sauron_prune_distance(e, F, fs, p->cfg.sf, r, scr);
            int nc =
                sauron_prune_candidates(cand, e, C, r, (float)p->tau_used[j]);
            uint8_t *hit = mask; /* AND with this point's candidates */
            int k = 0;
            for (int c = 0; c < C; c++) {
                int is = k < nc && cand[k] == c;
                if (is) k++;
                hit[c] = (uint8_t)(hit[c] && is);
                /* a tied channel is as near as its farthest point */
                if (e[c] > emax[c]) emax[c] = e[c];
            }
        }
        int m = 0;
        for (int c = 0; c < C; c++)
            if (mask[c]) {
                score[used + m] = emax[c];
                rem[used + m++] = c;
            }
        if (m == 0) continue;
        req[nr].point = p->pidx[i];
        req[nr].n_remove = m;
        req[nr].remove = rem + used;
        used += m;
        nr++;
    }
    *n_req = nr;
    return 0;
}

/* Segmentation of every calibration pixel: argmax over the K channels of
 * out [B, K, S] -> lab [B, S]. */
static void argmax_labels(const float *out, int B, int K, size_t S,
                          uint8_t *lab)
{
    for (int b = 0; b < B; b++)
        for (size_t s = 0; s < S; s++) {
            const float *o = out + (size_t)b * K * S + s;
            int best = 0;
            for (int k = 1; k < K; k++)
                if (o[(size_t)k * S] > o[(size_t)best * S]) best = k;
            lab[(size_t)b * S + s] = (uint8_t)best;
        }
}

/* 1 - mean over foreground classes present in a or b of their Dice. */
static double label_change(const uint8_t *a, const uint8_t *b, size_t n,
                           int K)
{
    double sum = 0;
    int used = 0;
    for (int k = 1; k < K; k++) {
        size_t na = 0, nb = 0, both = 0;
        for (size_t i = 0; i < n; i++) {
            na += a[i] == k;
            nb += b[i] == k;
            both += a[i] == k && b[i] == k;
        }
        if (na + nb == 0) continue;
        sum += 2.0 * (double)both / (double)(na + nb);
        used++;
    }
    return used ? 1.0 - sum / used : 0.0;
}

/* --cost-rule guard|all: req[] reordered by the FLOPs each removal
 * saves, largest first (ties keep point order), so that the guard's
 * tolerance goes to the removals that buy the most FLOPs. */
static void order_by_savings(const Pruner *p, PruneRequest *req, int n)
{
    double saved[64];
    int order[64];
    PruneRequest tmp[64];
    for (int base = 0; base < n; base += 64) {
        /* blocks of 64 (a U-Net has far fewer groups; larger graphs are
         * ordered within each block, which keeps this allocation-free) */
        int m = n - base < 64 ? n - base : 64;
        for (int r = 0; r < m; r++) {
            saved[r] = 0;
            for (int i = 0; i < p->n; i++)
                if (p->pidx[i] == req[base + r].point)
                    saved[r] =
                        (double)req[base + r].n_remove * (double)p->cost[i];
            tmp[r] = req[base + r];
        }
        sauron_cost_order(order, saved, m);
        for (int r = 0; r < m; r++)
            req[base + r] = tmp[order[r]];
    }
}

/* Segmentation change (*ch) of the calibration batch when req[0..keep)
 * (accepted) and *try are applied to a copy of the graph: lab0 is the
 * unpruned network's, lab1 scratch of the same size. */
static int guard_change(Pruner *p, PruneRequest *req, int keep,
                        const PruneRequest *try, const uint8_t *lab0,
                        uint8_t *lab1, double *ch)
{
    int out = p->g->outputs[0];
    TrainExec *te = NULL;
    Graph c;
    graph_init(&c);
    if (graph_clone(&c, p->g)) {
        sl_error("out of memory in the Sauron pruning guard");
        return ERR_NOMEM;
    }
    PruneRequest save = req[keep];
    req[keep] = *try;
    int rc = sauron_prune_batch(&c, &p->pg, req, keep + 1, NULL, NULL);
    req[keep] = save;
    if (!rc) rc = train_exec_create(&c, &p->cal_shape, p->cfg.n_threads, &te);
    /* a training-mode forward, like the calibration one; it moves the
     * copy's BatchNorm statistics only */
    if (!rc) rc = train_forward(te, p->cal_x);
    if (!rc) {
        const Shape *ts = train_shape(te, out);
        const float *o = train_value(te, out);
        CHECK(o != NULL && ts != NULL);
        int B = (int)ts->d[0], K = (int)ts->d[1];
        size_t S = (size_t)(shape_numel(ts) / ((int64_t)B * K));
        argmax_labels(o, B, K, S, lab1);
        *ch = label_change(lab0, lab1, (size_t)B * S, K);
    }
    train_exec_free(te);
    graph_free(&c);
    return rc;
}

/* The step's requests tried one at a time, in point order (--cost-rule
 * guard: in order of FLOPs saved), on a copy of
 * the graph with the requests accepted so far (--prune-guard): a removal
 * that would bring the calibration segmentation's change (against the
 * unpruned network) above the guard is dropped from req[] (--guard-split:
 * cut to the largest nearest-first half, quarter, ... that passes) and
 * its group's points step one rung down (budget: and freeze; paper: and
 * wait rho epochs).  So the whole step changes the segmentation by at
 * most the guard, however many layers prune in it.  score[] holds the
 * distances of rem[]'s channels (the requests' lists point into rem). */
static int guard_requests(Pruner *p, TrainExec *cal, PruneRequest *req,
                          int *n_req, int *rem, float *score, double progress)
{
    int out = p->g->outputs[0], rc = 0, keep = 0;
    const float *ref = train_value(cal, out);
    const Shape *os = train_shape(cal, out);
    uint8_t *lab0 = NULL, *lab1 = NULL;
    if (!ref || !os || os->ndim < 3 || os->d[1] < 2 || os->d[1] > 255)
        return 0; /* no class map to compare (internal layouts only) */
    int B = (int)os->d[0], K = (int)os->d[1];
    size_t S = 1;
    for (int d = 2; d < os->ndim; d++)
        S *= (size_t)os->d[d];
    rc = ERR_NOMEM;
    lab0 = sl_alloc((size_t)B * S);
    lab1 = sl_alloc((size_t)B * S);
    if (!lab0 || !lab1) {
        sl_error("out of memory in the Sauron pruning guard");
        goto fail;
    }
    argmax_labels(ref, B, K, S, lab0);
    if (p->cfg.cost_rule & SAURON_COST_GUARD)
        order_by_savings(p, req, *n_req);
    for (int r = 0; r < *n_req; r++) {
        double ch = 0;
        rc = guard_change(p, req, keep, &req[r], lab0, lab1, &ch);
        if (rc) goto fail;
        if (ch <= p->cfg.prune_guard) {
            req[keep++] = req[r];
            continue;
        }
        int n = req[r].n_remove;
        if (p->cfg.guard_split > 0 && n > 1) {
            /* the list is rem's own memory: reorder it nearest first */
            size_t off = (size_t)(req[r].remove - rem);
            sauron_sort_candidates(rem + off, score + off, n);
            for (int h = 1; h <= p->cfg.guard_split && (n >> h) > 0; h++) {
                PruneRequest part = req[r];
                part.n_remove = n >> h;
                rc = guard_change(p, req, keep, &part, lab0, lab1, &ch);
                if (rc) goto fail;
                if (ch <= p->cfg.prune_guard) {
                    req[keep++] = part;
                    break;
                }
            }
        }
        int grp = p->pg.points[req[r].point].group;
        for (int i = 0; i < p->n; i++) {
            if (p->pg.points[p->pidx[i]].group != grp) continue;
            SauronPoint *sp = &p->sched.pt[i];
            if (sp->rung > 0) sp->rung--;
            sp->tau = sauron_ladder_tau(&p->sched.cfg, sp->rung);
            if (p->sched.cfg.kind == SAURON_SCHED_PAPER) {
                sp->patience = p->sched.cfg.rho;
            } else if (sp->frozen != 1) {
                sp->frozen = 2;
                sp->frozen_at = progress;
            }
        }
    }
    *n_req = keep;
    rc = 0;
fail:
    sl_free(lab0);
    sl_free(lab1);
    return rc;
}

int pruner_decide(Pruner *p, double progress, int *now)
{
    *now = 0;
    /* layers held back by the guard: one rung up per retry period, so the
     * guard tests the next rung once the network has adapted */
    int top = sauron_budget_rung(&p->sched.cfg, progress, p->sched.epochs);
    for (int i = 0; p->cfg.guard_retry > 0 && i < p->n; i++) {
        SauronPoint *sp = &p->sched.pt[i];
        if (sp->frozen == 2 && sp->rung < top &&
            progress - sp->frozen_at >= p->cfg.guard_retry - 1e-9) {
            sp->rung++;
            sp->frozen_at = progress;
        }
    }
    sauron_sched_update(&p->sched, progress, now);
    /* --target-flops: once reached, the rest of the run recovers */
    if (*now && p->cfg.target_flops > 0 && p->cal_x) {
        int64_t f = p->flops_now >= 0 ? p->flops_now : pruner_flops(p);
        if ((double)f <= p->cfg.target_flops * (double)p->flops0) *now = 0;
    }
    /* --pause-below-margin: recover first (same slack as the choice of
     * the model written) */
    const SauronSched *s = &p->sched;
    if (*now && p->cfg.pause && s->cfg.kind == SAURON_SCHED_BUDGET &&
        s->ndice > 0 && !isnan(s->dice_ref)) {
        double d = s->dice[s->ndice - 1];
        if (!isnan(d) && d < s->dice_ref - s->cfg.max_dice_drop - 1e-12)
            *now = 0;
    }
    return 0;
}

/* Thresholds of this step: the ladder's, scaled by what a channel costs
 * with --cost-rule tau|all (cost.h).  Costs are measured with guard and
 * order rules too (the guard orders by them). */
static int step_thresholds(Pruner *p)
{
    for (int i = 0; i < p->n; i++) {
        p->tau_used[i] = p->sched.pt[i].tau;
        p->cost[i] = 0;
    }
    if (p->cfg.cost_rule == SAURON_COST_NONE) return 0;
    Shape in1 = p->cal_shape;
    in1.d[0] = 1;
    for (int i = 0; i < p->n; i++) {
        int j = 0; /* the first Sauron point of i's group measures it */
        while (p->pg.points[p->pidx[j]].group !=
               p->pg.points[p->pidx[i]].group)
            j++;
        if (j < i) {
            p->cost[i] = p->cost[j];
            continue;
        }
        int rc =
            sauron_channel_flops(p->g, &p->pg, p->pidx[i], &in1, &p->cost[i]);
        if (rc) return rc;
    }
    if (!(p->cfg.cost_rule & SAURON_COST_TAU)) return 0;
    double *s = sl_alloc((size_t)p->n * sizeof(double));
    if (!s) {
        sl_error("out of memory for the FLOPs-scaled thresholds");
        return ERR_NOMEM;
    }
    sauron_cost_scales(s, p->cost, p->n);
    for (int i = 0; i < p->n; i++) {
        double t = p->sched.pt[i].tau * s[i];
        p->tau_used[i] = t < 1.0 ? t : 1.0;
    }
    sl_free(s);
    return 0;
}

int pruner_apply(Pruner *p, TrainExec *cal, Optim *opt, double progress,
                 int *changed)
{
    *changed = 0;
    PruneRequest *req = NULL;
    int *rem = NULL, *cand = NULL;
    float *e = NULL, *emax = NULL, *score = NULL, *scr = NULL;
    uint8_t *mask = NULL;
    TensorSlice *slices = NULL;
    int n_slices = 0, n_req = 0, rc;
    size_t tot = 0, cmax = 1, smax = 1;
    for (int i = 0; i < p->n; i++) {
        const PrunePoint *pt = &p->pg.points[p->pidx[i]];
        const Shape *fs = train_shape(cal, pt->value);
        tot += (size_t)pt->channels;
        if ((size_t)pt->channels > cmax) cmax = (size_t)pt->channels;
        size_t s = sauron_prune_scratch_floats(fs, p->cfg.sf);
        if (s > smax) smax = s;
    }
    rc = ERR_NOMEM;
    req = sl_alloc((size_t)p->n * sizeof *req);
    rem = sl_alloc(tot * sizeof(int));
    cand = sl_alloc(cmax * sizeof(int));
    e = sl_alloc(cmax * sizeof(float));
    emax = sl_alloc(cmax * sizeof(float));
    score = sl_alloc(tot * sizeof(float));
    mask = sl_alloc(cmax);
    scr = sl_alloc(smax * sizeof(float));
    if (!req || !rem || !cand || !e || !emax || !score || !mask || !scr) {
        sl_error("out of memory in the Sauron pruning step");
        goto fail;
    }
    rc = step_thresholds(p);
    if (rc) goto fail;
    rc = build_requests(p, cal, req, &n_req, rem, score, e, emax, cand, mask,
                        scr);
    if (rc) goto fail;
    if (p->cfg.prune_guard > 0 && n_req > 0 && p->cal_x &&
        p->cfg.sched.kind == SAURON_SCHED_BUDGET) {
        rc = guard_requests(p, cal, req, &n_req, rem, score, progress);
        if (rc) goto fail;
    }
    if (n_req > 0) {
        rc = sauron_prune_batch(p->g, &p->pg, req, n_req, &slices, &n_slices);
        if (rc) goto fail;
        if (opt && slices) {
            rc = optim_slice_all(opt, slices, n_slices);
            CHECK(rc == 0); /* the surgery's own slices, valid by design */
        }
        sauron_groups_free(&p->pg);
        rc = sauron_find_groups(p->g, &p->pg);
        if (rc) goto fail;
        train_exec_free(p->cal);
        p->cal = NULL;
        p->flops_now = -1;
        *changed = 1;
    }
    for (int i = 0; i < p->n; i++) {
        rc = sauron_sched_record(&p->sched, i, progress,
                                 p->pg.points[p->pidx[i]].channels);
        if (rc) goto fail;
    }
    rc = 0;
fail:
    sl_free(slices);
    sl_free(req);
    sl_free(rem);
    sl_free(cand);
    sl_free(e);
    sl_free(emax);
    sl_free(score);
    sl_free(mask);
    sl_free(scr);
    return rc;
}

int pruner_step(Pruner *p, Optim *opt, double progress, int *changed)
{
    *changed = 0;
    int now = 0;
    int rc = pruner_decide(p, progress, &now);
    if (rc || !now) return rc;
    rc = calibrate(p);
    if (rc) return rc;
    return pruner_apply(p, p->cal, opt, progress, changed);
}

int pruner_n_points(const Pruner *p)
{
    return p->n;
}
const PrunerConfig *pruner_config(const Pruner *p)
{
    return &p->cfg;
}
int pruner_point_value(const Pruner *p, int i)
{
    return p->pg.points[p->pidx[i]].value;
}
int pruner_point_node(const Pruner *p, int i)
{
    return p->pg.points[p->pidx[i]].conv;
}
int pruner_point_channels(const Pruner *p, int i)
{
    return p->pg.points[p->pidx[i]].channels;
}
int pruner_point_channels0(const Pruner *p, int i)
{
    return p->channels0[i];
}
double pruner_point_tau(const Pruner *p, int i)
{
    return p->sched.pt[i].tau;
}
double pruner_point_tau_used(const Pruner *p, int i)
{
    return p->tau_used[i] > 0 ? p->tau_used[i] : p->sched.pt[i].tau;
}
int64_t pruner_point_channel_flops(const Pruner *p, int i)
{
    return p->cost[i];
}
const SauronSched *pruner_sched(const Pruner *p)
{
    return &p->sched;
}
const PruneGroups *pruner_groups(const Pruner *p)
{
    return &p->pg;
}
int64_t pruner_flops0(const Pruner *p)
{
    return p->flops0;
}
int64_t pruner_params0(const Pruner *p)
{
    return p->params0;
}
const Graph *pruner_best(const Pruner *p)
{
    if (p->best_kind == 1) return &p->best;
    if (p->best_kind == 2) return p->g;
    return NULL;
}
int pruner_best_epoch(const Pruner *p)
{
    return p->best_epoch;
}
double pruner_last_reg(const Pruner *p)
{
    return p->last_reg;
}

/* ---- checkpoint ---- */

int pruner_save(const Pruner *p, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    uint8_t *model = NULL;
    size_t mlen = 0;
    int rc;
    if (p->best_kind == 1) {
        rc = sslim_encode(&p->best, &model, &mlen);
        if (rc) return rc;
    }
    ByteWriter w = {0};
    bw_bytes(&w, PRUNER_MAGIC, 8);
    bw_u32(&w, PRUNER_VERSION);
    bw_f64(&w, p->cfg.lambda);
    bw_i32(&w, p->cfg.sf);
    bw_i32(&w, p->cfg.prune_every);
    bw_i32(&w, p->cfg.keep_head_input);
    bw_i32(&w, p->started);
    bw_u64(&w, p->cfg.seed);
    bw_u64(&w, p->rng);
    bw_i64(&w, p->flops0);
    bw_i64(&w, p->params0);
    bw_i32(&w, p->n);
    for (int i = 0; i < p->n; i++) {
        bw_i32(&w, p->pidx[i]);
        bw_i32(&w, p->channels0[i]);
    }
    bw_i32(&w, p->best_kind);
    bw_i32(&w, p->best_epoch);
    bw_u64(&w, mlen);
    bw_bytes(&w, model, mlen);
    sl_free(model);
    size_t at = w.n;
    bw_u64(&w, 0); /* the schedule's size, known once it is written */
    sauron_sched_save(&p->sched, &w);
    bw_put_u64_at(&w, at, (uint64_t)(w.n - at - 8));
    bw_u32(&w, bw_crc32(&w, 0));
    if (w.err) {
        bw_free(&w);
        sl_error("out of memory saving the Sauron pruner state");
        return ERR_NOMEM;
    }
    *buf = w.p;
    *len = w.n;
    return 0;
}

int pruner_load(Pruner *p, const uint8_t *buf, size_t len, const char *what)
{
    ByteReader r;
    Graph best;
    graph_init(&best);
    SauronSched s;
    memset(&s, 0, sizeof s);
    int rc = ERR_FORMAT;
    const char *diff = NULL;
    if (len < 16 || memcmp(buf, PRUNER_MAGIC, 8) != 0) {
        sl_error("%s: not a Sauron pruner state (bad magic); start the run "
                 "again without --resume",
                 what);
        return ERR_FORMAT;
    }
    /* the caller may have replaced the graph (resume): new groups */
    PruneGroups ng;
    rc = sauron_find_groups(p->g, &ng);
    if (rc) return rc;
    sauron_groups_free(&p->pg);
    p->pg = ng;
    train_exec_free(p->cal);
    p->cal = NULL;
    if (sl_crc32(0, buf, len - 4) != sl_rd32(buf + len - 4)) {
        sl_error("%s: Sauron pruner state is corrupt (checksum); start the "
                 "run again without --resume",
                 what);
        return ERR_FORMAT;
    }
    br_init(&r, buf, len - 4);
    br_skip(&r, 8);
    if (br_u32(&r) != PRUNER_VERSION) {
        sl_error("%s: Sauron pruner state of another version; start the run "
                 "again without --resume",
                 what);
        return ERR_FORMAT;
    }
    double lambda = br_f64(&r);
    int sf = br_i32(&r);
    int every = br_i32(&r);
    int keep = br_i32(&r);
    int started = br_i32(&r);
    uint64_t seed = br_u64(&r);
    uint64_t rng = br_u64(&r);
    int64_t flops0 = br_i64(&r);
    int64_t params0 = br_i64(&r);
    int n = br_i32(&r);
    if (r.err) goto corrupt;
    if (lambda != p->cfg.lambda)
        diff = "--lambda";
    else if (sf != p->cfg.sf)
        diff = "--sf";
    else if (every != p->cfg.prune_every)
        diff = "--prune-every";
    else if (keep != p->cfg.keep_head_input)
        diff = "--keep-head-input";
    else if (seed != p->cfg.seed)
        diff = "--seed";
    else if (n < 1 || n > p->pg.n_points)
        diff = "the model (prunable points)";
    if (diff) {
        sl_error("%s: the run being resumed used other settings (%s "
                 "differs); resume with the same flags and model, or start "
                 "again without --resume",
                 what, diff);
        return ERR_ARG;
    }
    int *pidx = sl_alloc((size_t)n * sizeof(int));
    int *ch0 = sl_alloc((size_t)n * sizeof(int));
    if (!pidx || !ch0) {
        sl_free(pidx);
        sl_free(ch0);
        sl_error("out of memory loading the Sauron pruner state");
        return ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        pidx[i] = br_i32(&r);
        ch0[i] = br_i32(&r);
        if (!r.err && (pidx[i] < 0 || pidx[i] >= p->pg.n_points ||
                       p->pg.points[pidx[i]].head ||
                       (i > 0 && pidx[i] <= pidx[i - 1]) ||
                       p->pg.points[pidx[i]].channels > ch0[i]))
            diff = "the model (its points do not match the checkpoint)";
    }
    int best_kind = br_i32(&r);
    int best_epoch = br_i32(&r);
    uint64_t mlen = br_u64(&r);
    const uint8_t *mb = br_bytes(&r, (size_t)mlen);
    if (r.err || best_kind < 0 || best_kind > 2 ||
        (best_kind == 1) != (mlen > 0))
        goto corrupt_free;
    if (diff) {
        sl_error("%s: the run being resumed was on another model (%s); "
                 "resume with the same model or start again without "
                 "--resume",
                 what, diff);
        rc = ERR_ARG;
        goto free_lists;
    }
    if (mlen) {
        rc = sslim_decode(mb, (size_t)mlen, what, &best);
        if (rc) goto free_lists;
    }
    uint64_t slen = br_u64(&r);
    const uint8_t *sb = br_bytes(&r, (size_t)slen);
    if (r.err || br_finish(&r)) goto corrupt_free;
    rc = sauron_sched_load(&s, sb, (size_t)slen, &p->cfg.sched, p->epochs, n,
                           what);
    if (rc) goto free_lists;
    /* commit */
    sauron_sched_free(&p->sched);
    p->sched = s;
    graph_free(&p->best);
    p->best = best;
    p->best_kind = best_kind;
    p->best_epoch = best_epoch;
    sl_free(p->pidx);
    sl_free(p->channels0);
    p->pidx = pidx;
    p->channels0 = ch0;
    p->n = n;
    p->rng = rng;
    p->flops0 = flops0;
    p->params0 = params0;
    p->started = started;
    p->flops_now = -1;
    return 0;
corrupt_free:
    rc = ERR_FORMAT;
    sl_error("%s: Sauron pruner state is truncated or corrupt; start the run "
             "again without --resume",
             what);
free_lists:
    graph_free(&best);
    sl_free(pidx);
    sl_free(ch0);
    return rc;
corrupt:
    sl_error("%s: Sauron pruner state is truncated or corrupt; start the run "
             "again without --resume",
             what);
    return ERR_FORMAT;
}
