/* Sauron thresholds: ladder, paper schedule, budgeted schedule (the rules
 * are stated in threshold.h; this file keeps them small and pure). */
#include <math.h>
#include <string.h>

#include "compressor/sauron/threshold.h"
#include "runtime/bytes.h"
#include "runtime/common.h"

void sauron_sched_defaults(SauronSchedConfig *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = SAURON_SCHED_BUDGET;
    cfg->tau0 = 0.001;
    cfg->tau_max = 0.3;
    cfg->kappa = 15;
    cfg->rho = 5;
    cfg->mu = 0.02;
    cfg->climb_end = 0.5;
    cfg->prune_end = 0.8;
    cfg->max_dice_drop = 0.01;
    cfg->dice_window = 3;
}

int sauron_sched_config_check(const SauronSchedConfig *c)
{
    /* "!(x in range)" so that NaN fails too */
    if (c->kind != SAURON_SCHED_BUDGET && c->kind != SAURON_SCHED_PAPER) {
        sl_error("Sauron schedule: unknown kind %d (use --schedule paper "
                 "or budget)",
                 (int)c->kind);
        return ERR_ARG;
    }
    if (!(c->tau0 > 0.0 && c->tau0 < 1.0)) {
        sl_error("Sauron schedule: tau0 = %g must be in (0, 1)", c->tau0);
        return ERR_ARG;
    }
    if (!(c->tau_max > c->tau0 && c->tau_max <= 1.0)) {
        sl_error("Sauron schedule: --tau-max %g is out of range: use a value "
                 "in (%g, 1] (delta_prune lies in [0, 1])",
                 c->tau_max, c->tau0);
        return ERR_ARG;
    }
    if (c->kappa < 1 || c->kappa > 1000) {
        sl_error("Sauron schedule: --kappa %d is out of range: use 1 to 1000",
                 c->kappa);
        return ERR_ARG;
    }
    if (c->rho < 0 || c->rho > 1000) {
        sl_error("Sauron schedule: --rho %d is out of range: use 0 to 1000",
                 c->rho);
        return ERR_ARG;
    }
    if (!(c->mu >= 0.0 && c->mu <= 1.0)) {
        sl_error("Sauron schedule: --mu %g is out of range: use [0, 1]",
                 c->mu);
        return ERR_ARG;
    }
    if (!(c->climb_end > 0.0 && c->climb_end <= 1.0) ||
        !(c->prune_end >= c->climb_end && c->prune_end <= 1.0)) {
        sl_error("Sauron schedule: budget fractions climb %g, prune %g must "
                 "satisfy 0 < climb <= prune <= 1",
                 c->climb_end, c->prune_end);
        return ERR_ARG;
    }
    if (!(c->max_dice_drop >= 0.0 && c->max_dice_drop <= 1.0)) {
        sl_error("Sauron schedule: --max-dice-drop %g is out of range: use "
                 "[0, 1] (Dice points as a fraction, 0.01 = one point)",
                 c->max_dice_drop);
        return ERR_ARG;
    }
    if (c->dice_window < 1 || c->dice_window > 100) {
        sl_error("Sauron schedule: Dice trend window %d is out of range: "
                 "use 1 to 100 epochs",
                 c->dice_window);
        return ERR_ARG;
    }
    return 0;
}

double sauron_ladder_tau(const SauronSchedConfig *cfg, int rung)
{
    if (rung <= 0) return cfg->tau0;
    if (rung >= cfg->kappa) return cfg->tau_max; /* exact top */
    return cfg->tau0 + (cfg->tau_max - cfg->tau0) * rung / cfg->kappa;
}

int sauron_loss_plateaued(const double *loss, int n, int rho)
{
    if (rho < 1 || n < rho + 1) return 0;
    double last = loss[n - 1], lo = loss[n - 2], hi = loss[n - 2];
    for (int i = n - 1 - rho; i < n - 1; i++) {
        if (loss[i] < lo) lo = loss[i];
        if (loss[i] > hi) hi = loss[i];
    }
    return last >= lo && last <= hi;
}

int sauron_converged(const double *loss, int nloss, int ch_before,
                     int ch_after, const SauronSchedConfig *cfg)
{
    if (!sauron_loss_plateaued(loss, nloss, cfg->rho)) return 0;
    double allowed = ceil(cfg->mu * ch_before - 1e-9);
    return (double)(ch_before - ch_after) < allowed;
}

int sauron_budget_rung(const SauronSchedConfig *cfg, double progress,
                       int epochs)
{
    double span = cfg->climb_end * epochs;
    if (!(progress > 0.0) || !(span > 0.0)) return 0;
    double r = floor(cfg->kappa * progress / span + 1e-9);
    return r >= cfg->kappa ? cfg->kappa : (int)r;
}

int sauron_budget_prune_allowed(const SauronSchedConfig *cfg, double progress,
                                int epochs)
{
    return progress > 0.0 && progress <= cfg->prune_end * epochs + 1e-9;
}

int sauron_dice_breach(const double *dice, int n, double dice_ref,
                       const SauronSchedConfig *cfg)
{
    int w = cfg->dice_window;
    if (w < 1 || w > 100 || n < w) return 0;
    double v[100]; /* the window, insertion-sorted (w <= 100, checked) */
    for (int i = 0; i < w; i++) {
        double x = dice[n - w + i];
        if (isnan(x)) return 0;
        int j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
    double med = w % 2 ? v[w / 2] : 0.5 * (v[w / 2 - 1] + v[w / 2]);
    return med < dice_ref - cfg->max_dice_drop; /* NaN dice_ref: false */
}

int sauron_best_within_margin(SauronBest *b, int epoch, double dice,
                              double flops, double dice_ref,
                              const SauronSchedConfig *cfg)
{
    if (!(dice >= dice_ref - cfg->max_dice_drop - 1e-12)) return 0;
    if (b->have &&
        !(flops < b->flops || (flops == b->flops && dice > b->dice)))
        return 0;
    b->have = 1;
    b->epoch = epoch;
    b->dice = dice;
    b->flops = flops;
    return 1;
}

/* ---- schedule object ---- */

int sauron_sched_init(SauronSched *s, const SauronSchedConfig *cfg,
                      int npoints, const int *channels, int epochs,
                      double dice_ref)
{
    memset(s, 0, sizeof *s);
    int rc = sauron_sched_config_check(cfg);
    if (rc) return rc;
    if (npoints < 0 || epochs < 1) {
        sl_error("Sauron schedule: %d prunable points and %d epochs: need "
                 "at least one epoch (--epochs)",
                 npoints, epochs);
        return ERR_ARG;
    }
    s->cfg = *cfg;
    s->epochs = epochs;
    s->dice_ref = dice_ref;
    s->select_ref = (double)NAN;
    s->npoints = npoints;
    rc = ERR_NOMEM;
    s->pt = sl_calloc((size_t)(npoints > 0 ? npoints : 1), sizeof *s->pt);
    if (!s->pt) goto fail;
    for (int i = 0; i < npoints; i++) {
        SauronPoint *p = &s->pt[i];
        p->tau = sauron_ladder_tau(cfg, 0);
        p->frozen_at = -1.0;
        p->cap = 16;
        p->hist = sl_alloc((size_t)p->cap * sizeof *p->hist);
        if (!p->hist) goto fail;
        p->hist[0].progress = 0.0;
        p->hist[0].channels = channels[i];
        p->nhist = 1;
    }
    return 0;
fail:
    sl_error("Sauron schedule: out of memory for %d points", npoints);
    sauron_sched_free(s);
    return rc;
}

void sauron_sched_free(SauronSched *s)
{
    if (s->pt)
        for (int i = 0; i < s->npoints; i++)
            sl_free(s->pt[i].hist);
    sl_free(s->pt);
    sl_free(s->loss);
    sl_free(s->dice);
    memset(s, 0, sizeof *s);
}

/* Returns arr (of cap entries of `size` bytes) with room for more than n
 * entries, doubling *cap when needed; NULL (arr untouched) on failure. */
static void *grow(void *arr, int *cap, int n, size_t size)
{
    if (n < *cap) return arr;
    int ncap = *cap > 0 ? 2 * *cap : 16;
    void *p = sl_realloc(arr, (size_t)ncap * size);
    if (!p) {
        sl_error("Sauron schedule: out of memory for %d history entries",
                 ncap);
        return NULL;
    }
    *cap = ncap;
    return p;
}

int sauron_sched_end_epoch(SauronSched *s, double train_loss, double dice)
{
    /* loss and dice grow together and share one capacity */
    int cap = s->cap;
    double *l = grow(s->loss, &cap, s->nloss, sizeof(double));
    if (!l) return ERR_NOMEM;
    s->loss = l;
    cap = s->cap;
    double *d = grow(s->dice, &cap, s->ndice, sizeof(double));
    if (!d) return ERR_NOMEM;
    s->dice = d;
    s->cap = cap;
    s->loss[s->nloss++] = train_loss;
    s->dice[s->ndice++] = dice;
    return 0;
}

int sauron_sched_record(SauronSched *s, int point, double progress,
                        int channels)
{
    CHECK(point >= 0 && point < s->npoints);
    SauronPoint *p = &s->pt[point];
    SauronChanRec *h = grow(p->hist, &p->cap, p->nhist, sizeof *p->hist);
    if (!h) return ERR_NOMEM;
    p->hist = h;
    p->hist[p->nhist].progress = progress;
    p->hist[p->nhist].channels = channels;
    p->nhist++;
    return 0;
}

int sauron_point_lost_since(const SauronPoint *pt, double since)
{
    int lost = 0;
    for (int i = 1; i < pt->nhist; i++)
        if (pt->hist[i].progress >= since - 1e-9)
            lost += pt->hist[i - 1].channels - pt->hist[i].channels;
    return lost;
}

static void update_paper(SauronSched *s, double progress, int *prune_now)
{
    *prune_now = 0;
    if (s->nloss < 1 || fabs(progress - s->nloss) > 1e-9) return;
    for (int i = 0; i < s->npoints; i++) {
        SauronPoint *p = &s->pt[i];
        if (p->patience > 0) {
            p->patience--;
        } else {
            int n = p->nhist;
            int before = p->hist[n >= 2 ? n - 2 : 0].channels;
            int after = p->hist[n - 1].channels;
            if (sauron_converged(s->loss, s->nloss, before, after, &s->cfg)) {
                p->patience = s->cfg.rho;
                if (p->rung < s->cfg.kappa) p->rung++;
            }
        }
        p->tau = sauron_ladder_tau(&s->cfg, p->rung);
    }
    *prune_now = 1;
}

static void update_budget(SauronSched *s, double progress, int *prune_now)
{
    /* a new Dice value, and a window that starts after the last freeze
     * (the Dice needs that long to show whether the freeze helped) */
    if (s->ndice > s->dice_checked &&
        s->ndice - s->cfg.dice_window >= s->last_freeze) {
        s->dice_checked = s->ndice;
        if (sauron_dice_breach(s->dice, s->ndice, s->dice_ref, &s->cfg)) {
            s->last_freeze = s->ndice;
            double since = s->ndice - s->cfg.dice_window;
            int any = 0;
            for (int i = 0; i < s->npoints; i++)
                if (!s->pt[i].frozen &&
                    sauron_point_lost_since(&s->pt[i], since) > 0)
                    any = 1;
            for (int i = 0; i < s->npoints; i++) {
                SauronPoint *p = &s->pt[i];
                if (p->frozen) continue;
                if (!any || sauron_point_lost_since(p, since) > 0) {
                    p->frozen = 1;
                    p->frozen_at = progress;
                }
            }
        }
    }
    int rung = sauron_budget_rung(&s->cfg, progress, s->epochs);
    for (int i = 0; i < s->npoints; i++) {
        SauronPoint *p = &s->pt[i];
        if (!p->frozen && rung > p->rung) p->rung = rung;
        p->tau = sauron_ladder_tau(&s->cfg, p->rung);
    }
    *prune_now = sauron_budget_prune_allowed(&s->cfg, progress, s->epochs);
}

void sauron_sched_update(SauronSched *s, double progress, int *prune_now)
{
    if (s->cfg.kind == SAURON_SCHED_PAPER)
        update_paper(s, progress, prune_now);
    else
        update_budget(s, progress, prune_now);
}

/* ---- checkpoint encoding ----
 * "SLSCHED1", u32 version, then the config, the run values, the loss and
 * Dice histories and every point's state and channel history; integers as
 * u32, reals as IEEE f64 bits, all little-endian. */

#define SCHED_MAGIC "SLSCHED1"
/* Version 2 added select_ref; a version-1 state reads it as NaN (the
 * runs that wrote it chose the model by the Dice as trained). */
#define SCHED_VERSION 2u

void sauron_sched_save(const SauronSched *s, ByteWriter *b)
{
    bw_bytes(b, SCHED_MAGIC, 8);
    bw_u32(b, SCHED_VERSION);
    const SauronSchedConfig *c = &s->cfg;
    bw_i32(b, c->kind);
    bw_f64(b, c->tau0);
    bw_f64(b, c->tau_max);
    bw_i32(b, c->kappa);
    bw_i32(b, c->rho);
    bw_f64(b, c->mu);
    bw_f64(b, c->climb_end);
    bw_f64(b, c->prune_end);
    bw_f64(b, c->max_dice_drop);
    bw_i32(b, c->dice_window);
    bw_i32(b, s->epochs);
    bw_f64(b, s->dice_ref);
    bw_f64(b, s->select_ref);
    bw_i32(b, s->npoints);
    bw_i32(b, s->nloss);
    bw_i32(b, s->dice_checked);
    bw_i32(b, s->last_freeze);
    bw_i32(b, s->best.have);
    bw_i32(b, s->best.epoch);
    bw_f64(b, s->best.dice);
    bw_f64(b, s->best.flops);
    for (int i = 0; i < s->nloss; i++) {
        bw_f64(b, s->loss[i]);
        bw_f64(b, s->dice[i]);
    }
    for (int i = 0; i < s->npoints; i++) {
        const SauronPoint *p = &s->pt[i];
        bw_i32(b, p->rung);
        bw_i32(b, p->patience);
        bw_i32(b, p->frozen);
        bw_f64(b, p->frozen_at);
        bw_i32(b, p->nhist);
        for (int k = 0; k < p->nhist; k++) {
            bw_f64(b, p->hist[k].progress);
            bw_i32(b, p->hist[k].channels);
        }
    }
}

/* Names the first setting that differs, or returns NULL. */
static const char *config_diff(const SauronSchedConfig *a,
                               const SauronSchedConfig *b)
{
    if (a->kind != b->kind) return "--schedule";
    if (a->tau0 != b->tau0) return "tau0";
    if (a->tau_max != b->tau_max) return "--tau-max";
    if (a->kappa != b->kappa) return "--kappa";
    if (a->rho != b->rho) return "--rho";
    if (a->mu != b->mu) return "--mu";
    if (a->climb_end != b->climb_end) return "budget climb fraction";
    if (a->prune_end != b->prune_end) return "budget prune fraction";
    if (a->max_dice_drop != b->max_dice_drop) return "--max-dice-drop";
    if (a->dice_window != b->dice_window) return "Dice trend window";
    return NULL;
}

int sauron_sched_load(SauronSched *s, const uint8_t *buf, size_t len,
                      const SauronSchedConfig *expect, int expect_epochs,
                      int expect_points, const char *what)
{
    memset(s, 0, sizeof *s);
    ByteReader r;
    br_init(&r, buf, len);
    br_skip(&r, 8);
    if (len < 12 || memcmp(buf, SCHED_MAGIC, 8) != 0) {
        sl_error("%s: not a Sauron schedule state (bad magic); start the "
                 "run again without --resume",
                 what);
        return ERR_FORMAT;
    }
    uint32_t version = br_u32(&r);
    if (version < 1 || version > SCHED_VERSION) {
        sl_error("%s: schedule state version %u is not 1 to %u; start the "
                 "run again without --resume",
                 what, sl_rd32(buf + 8), SCHED_VERSION);
        return ERR_FORMAT;
    }
    SauronSchedConfig c;
    memset(&c, 0, sizeof c);
    c.kind = (SauronSchedKind)br_u32(&r);
    c.tau0 = br_f64(&r);
    c.tau_max = br_f64(&r);
    c.kappa = br_i32(&r);
    c.rho = br_i32(&r);
    c.mu = br_f64(&r);
    c.climb_end = br_f64(&r);
    c.prune_end = br_f64(&r);
    c.max_dice_drop = br_f64(&r);
    c.dice_window = br_i32(&r);
    int epochs = br_i32(&r);
    double dice_ref = br_f64(&r);
    double select_ref = version >= 2 ? br_f64(&r) : (double)NAN;
    int npoints = br_i32(&r);
    if (r.err) {
        sl_error("%s: schedule state is truncated; start the run again "
                 "without --resume",
                 what);
        return ERR_FORMAT;
    }
    const char *diff = config_diff(&c, expect);
    if (!diff && epochs != expect_epochs) diff = "--epochs";
    if (!diff && npoints != expect_points) diff = "number of prunable points";
    if (diff) {
        sl_error("%s: the run being resumed used other settings (%s "
                 "differs); resume with the same flags and model, or start "
                 "again without --resume",
                 what, diff);
        return ERR_ARG;
    }
    s->cfg = c;
    s->epochs = epochs;
    s->dice_ref = dice_ref;
    s->select_ref = select_ref;
    s->npoints = npoints;
    int nl = (int)br_count(&r, 1000000, 16);
    s->dice_checked = br_i32(&r);
    s->last_freeze = br_i32(&r);
    s->best.have = br_i32(&r);
    s->best.epoch = br_i32(&r);
    s->best.dice = br_f64(&r);
    s->best.flops = br_f64(&r);
    int rc = ERR_FORMAT;
    if (r.err || s->dice_checked < 0 || s->dice_checked > nl ||
        s->last_freeze < 0 || s->last_freeze > nl)
        goto fail;
    rc = ERR_NOMEM;
    s->cap = nl > 0 ? nl : 1;
    s->loss = sl_alloc((size_t)s->cap * sizeof(double));
    s->dice = sl_alloc((size_t)s->cap * sizeof(double));
    s->pt = sl_calloc((size_t)(npoints > 0 ? npoints : 1), sizeof *s->pt);
    if (!s->loss || !s->dice || !s->pt) goto fail;
    for (int i = 0; i < nl; i++) {
        s->loss[i] = br_f64(&r);
        s->dice[i] = br_f64(&r);
    }
    s->nloss = s->ndice = nl;
    for (int i = 0; i < npoints; i++) {
        SauronPoint *p = &s->pt[i];
        p->rung = br_i32(&r);
        p->patience = br_i32(&r);
        p->frozen = br_i32(&r);
        p->frozen_at = br_f64(&r);
        int nh = (int)br_count(&r, 100000000, 12);
        rc = ERR_FORMAT;
        if (r.err || nh < 1 || p->rung < 0 || p->rung > c.kappa ||
            p->patience < 0)
            goto fail;
        rc = ERR_NOMEM;
        p->hist = sl_alloc((size_t)nh * sizeof *p->hist);
        if (!p->hist) goto fail;
        p->cap = nh;
        for (int k = 0; k < nh; k++) {
            p->hist[k].progress = br_f64(&r);
            p->hist[k].channels = br_i32(&r);
        }
        p->nhist = nh;
        p->tau = sauron_ladder_tau(&c, p->rung);
    }
    rc = ERR_FORMAT;
    if (r.err || br_finish(&r)) goto fail;
    return 0;
fail:
    if (rc == ERR_NOMEM)
        sl_error("%s: out of memory reading the schedule state", what);
    else
        sl_error("%s: schedule state is truncated or corrupt; start the run "
                 "again without --resume",
                 what);
    sauron_sched_free(s);
    return rc;
}
