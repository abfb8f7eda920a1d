/* Sauron pruner (compressor/sauron/pruner.h) driven by a handmade training
 * loop on small C-built U-Nets:
 *   - the regulariser hook adds exactly lambda/n * d delta_opt/dF per
 *     point (against direct calls of the distance kernels) and its value
 *     matches central differences of the weights through the network;
 *   - a pruning step shrinks the graph (FLOPs down, executors rebuilt and
 *     working, never below one channel), Add-tied points lose the same
 *     channels;
 *   - optimiser state is sliced: one step after pruning equals the step of
 *     the same model pruned by hand with the same state;
 *   - checkpoint: stop after epoch 2, restore graph + pruner blob, continue:
 *     same channels, taus and weights as the uninterrupted run;
 *   - refusals: no prunable point, --tau-max 2, resume with other settings,
 *     corrupt blob.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/sauron/distance.h"
#include "compressor/sauron/pruner.h"
#include "compressor/sauron/sauron_hooks.h"
#include "compressor/sauron/surgery.h"
#include "compressor/train/loss.h"
#include "runtime/sslim.h"
#include "tests/prune_nets.h"
#include "tests/testutil.h"

#define B 2
#define HW 16

static Shape net_in(int c)
{
    Shape s = {4, {B, c, HW, HW, 0}};
    return s;
}

static float *rand_input(int c, uint64_t seed)
{
    Shape s = net_in(c);
    size_t n = (size_t)shape_numel(&s);
    float *x = sl_alloc(n * sizeof(float));
    TestRng r = {seed};
    trng_fill(&r, x, n, -1.0f, 1.0f);
    return x;
}

/* Labels [B, HW, HW]: a disc of class 1 (and 2 if classes > 2). */
static uint8_t *disc_labels(int classes)
{
    uint8_t *y = sl_alloc(B * HW * HW);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < HW; i++)
            for (int j = 0; j < HW; j++) {
                int d = (i - 8 + b) * (i - 8 + b) + (j - 7) * (j - 7);
                y[(b * HW + i) * HW + j] =
                    (uint8_t)(d < 16 ? 1 : (classes > 2 && i < 3 ? 2 : 0));
            }
    return y;
}

static void cfg_for(PrunerConfig *c, double tau_max)
{
    pruner_config_default(c);
    c->n_threads = 1;
    c->sched.tau_max = tau_max;
    c->seed = 1234;
    /* these tests check the mechanics of pruning on untrained networks,
     * whose output any removal changes: the guard is tested on its own */
    c->prune_guard = 0;
}

/* One training step: loss + regulariser, backward, then either optim_step
 * (opt) or a plain w -= lr g (opt NULL: no optimiser state). */
static double step(TrainExec *t, Pruner *p, Optim *opt, const float *x,
                   const uint8_t *y, float lr)
{
    LossOptions lo;
    loss_options_default(&lo, 2);
    LossValue lv;
    train_zero_grads(t);
    assert_int_equal(train_forward(t, x), 0);
    assert_int_equal(train_loss_outputs(t, &lv, y, NULL, &lo), 0);
    double reg = 0;
    assert_int_equal(pruner_regularize(p, t, &reg), 0);
    assert_int_equal(train_backward(t), 0);
    TrainParam *tp = train_params(t);
    int np = train_n_params(t);
    if (opt) {
        assert_int_equal(optim_step(opt, tp, np, lr), 0);
    } else {
        for (int i = 0; i < np; i++)
            for (int64_t k = 0; k < tp[i].numel; k++)
                tp[i].data[k] -= lr * tp[i].grad[k];
    }
    return lv.total + reg;
}

/* The hook's gradient equals direct distance-kernel calls, and its value
 * matches central differences through the network. */
static void test_regularizer_gradient(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 2, 0, 11), 0);
    PrunerConfig cfg;
    cfg_for(&cfg, 0.3);
    Pruner *p = NULL;
    assert_int_equal(pruner_create(&g, &cfg, 4, &p), 0);
    int n = pruner_n_points(p);
    assert_int_equal(n, 4); /* enc, down, up, dec; the head is excluded */
    Shape in = net_in(1);
    float *x = rand_input(1, 5);
    TrainExec *t = NULL;
    assert_int_equal(train_exec_create(&g, &in, 1, &t), 0);
    train_zero_grads(t);
    assert_int_equal(train_forward(t, x), 0);
    double reg = 0;
    assert_int_equal(pruner_regularize(p, t, &reg), 0);
    /* direct: each point's term and gradient with scale lambda / n */
    double sum = 0;
    for (int i = 0; i < n; i++) {
        int v = pruner_point_value(p, i);
        const Shape *fs = train_shape(t, v);
        size_t nel = (size_t)shape_numel(fs);
        void *sb = sl_alloc(sauron_opt_saved_bytes(fs, 2));
        float *scr = sl_alloc(sauron_opt_backward_scratch_floats(fs, 2) *
                              sizeof(float));
        float *dF = sl_calloc(nel, sizeof(float));
        SauronOptSaved sv;
        sauron_opt_saved_carve(&sv, sb, fs, 2);
        sum += sauron_opt_forward(&sv, train_value(t, v), fs, 2);
        sauron_opt_backward(dF, &sv, fs, 2, (float)(0.5 / n), scr);
        /* bit-identical: the same kernels in the same order */
        assert_allclose(train_grad(t, v), dF, nel, 0, 0);
        sl_free(sb);
        sl_free(scr);
        sl_free(dF);
    }
    assert_true(fabs(reg - 0.5 * sum / n) <= 1e-12);
    assert_true(reg > 0);

    /* d reg / d w through the whole network (only the regulariser's
     * gradient was injected): central differences on entries of the first
     * conv weight and of the decoder's norm scale. */
    assert_int_equal(train_backward(t), 0);
    TrainParam *tp = train_params(t);
    int checked = 0;
    for (int i = 0; i < train_n_params(t) && checked < 2; i++) {
        if (tp[i].numel < 4) continue;
        for (int k = 0; k < 3; k++) {
            int64_t idx = (k * 7 + i) % tp[i].numel;
            float w0 = tp[i].data[idx];
            const float h = 1e-3f;
            double r[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                tp[i].data[idx] = w0 + (sgn ? -h : h);
                TrainExec *t2 = NULL;
                assert_int_equal(train_exec_create(&g, &in, 1, &t2), 0);
                assert_int_equal(train_forward(t2, x), 0);
                assert_int_equal(pruner_regularize(p, t2, &r[sgn]), 0);
                train_exec_free(t2);
            }
            tp[i].data[idx] = w0;
            double fd = (r[0] - r[1]) / (2.0 * (double)h);
            double an = tp[i].grad[idx];
            /* float32 forward, h = 1e-3: the difference quotient carries
             * ~1e-4 absolute error (round-off ~6e-8 / 2e-3 on values of
             * order 0.3 plus curvature); 5% relative covers a min/max
             * element moving within the step */
            if (fabs(fd - an) > 3e-4 + 0.05 * fabs(an))
                fail_msg("param %d entry %lld: hook %g, differences %g", i,
                         (long long)idx, an, fd);
        }
        checked++;
    }
    train_exec_free(t);
    pruner_free(p);
    sl_free(x);
    graph_free(&g);
}

/* The small 2D U-Net of these tests (seed 21) in *g, a pruner on it for
 * `epochs` epochs with cfg, calibrated on x (net_in(1)). */
static Pruner *unet_pruner(Graph *g, const PrunerConfig *cfg, int epochs,
                           const float *x)
{
    assert_int_equal(build_unet(g, 2, 1, 6, 2, 0, 21), 0);
    Pruner *p = NULL;
    assert_int_equal(pruner_create(g, cfg, epochs, &p), 0);
    Shape in = net_in(1);
    assert_int_equal(pruner_set_calibration(p, x, &in), 0);
    return p;
}

/* One guarded pruning step (tau_max 0.9, epoch 1 of 2) on an untrained
 * net: the channels it removed in total, and how many points froze.
 * check (may be NULL) sees the pruner and whether the graph changed
 * before it is freed. */
typedef void (*StepCheck)(const Pruner *p, int changed);
static int guarded_step(double guard, int split, int *frozen, StepCheck check)
{
    Graph g;
    PrunerConfig cfg;
    cfg_for(&cfg, 0.9);
    cfg.prune_guard = guard;
    cfg.guard_split = split;
    Shape in = net_in(1);
    float *x = rand_input(1, 7);
    uint8_t *y = disc_labels(2);
    Pruner *p = unet_pruner(&g, &cfg, 2, x);
    assert_int_equal(pruner_start(p, 0.5, NAN), 0);
    TrainExec *t = NULL;
    assert_int_equal(train_exec_create(&g, &in, 1, &t), 0);
    step(t, p, NULL, x, y, 1e-3f);
    assert_int_equal(pruner_end_epoch(p, 1, 1.0, 0.5, NAN), 0);
    int changed = 0;
    assert_int_equal(pruner_step(p, NULL, 1.0, &changed), 0);
    int lost = 0;
    *frozen = 0;
    for (int i = 0; i < pruner_n_points(p); i++) {
        lost += pruner_point_channels0(p, i) - pruner_point_channels(p, i);
        *frozen += pruner_sched(p)->pt[i].frozen != 0;
    }
    if (check) check(p, changed);
    train_exec_free(t);
    pruner_free(p);
    sl_free(x);
    sl_free(y);
    graph_free(&g);
    return lost;
}

/* A frozen point stepped one rung down from the top; the others kept
 * the top's tau. */
static void check_rungs(const Pruner *p, int changed)
{
    (void)changed;
    const SauronSched *sc = pruner_sched(p);
    for (int i = 0; i < pruner_n_points(p); i++) {
        if (sc->pt[i].frozen) {
            assert_int_equal(sc->pt[i].rung, sc->cfg.kappa - 1);
            assert_true(pruner_point_tau(p, i) < 0.9);
        } else {
            assert_true(fabs(pruner_point_tau(p, i) - 0.9) < 1e-12);
        }
    }
}

static void check_unchanged(const Pruner *p, int changed)
{
    check_rungs(p, changed);
    assert_int_equal(changed, 0);
}

/* --prune-guard: the step of test_prune_shrinks with a guard no removal
 * can pass (the untrained network's segmentation moves with any channel)
 * removes nothing, and every point that had channels to remove steps one
 * rung down from the top and freezes; a guard of 1 lets everything
 * through, as no guard does. */
static void test_prune_guard(void **state)
{
    (void)state;
    int frozen;
    assert_int_equal(guarded_step(1e-9, 0, &frozen, check_unchanged), 0);
    assert_true(frozen > 0);
    assert_true(guarded_step(1.0, 0, &frozen, check_rungs) > 0);
    assert_int_equal(frozen, 0);
}

/* --guard-split: where a layer's whole removal fails the guard, a part of
 * it that passes is kept (the layer still freezes); where everything
 * passes, splitting changes nothing. */
static void test_guard_split(void **state)
{
    (void)state;
    /* guard 0.1 on this seeded net: without splitting one channel goes
     * (the other layers fail whole), with it five, the same three layers
     * frozen; the numbers are exact because the run is seeded, and the
     * relations are what --guard-split promises */
    int f0, f1;
    int l0 = guarded_step(0.1, 0, &f0, NULL);
    int l1 = guarded_step(0.1, 4, &f1, NULL);
    assert_true(f0 > 0);
    assert_int_equal(f1, f0);
    assert_true(l1 > l0);
    /* one halving is a weaker search than four: never more channels */
    int fh;
    int lh = guarded_step(0.1, 1, &fh, NULL);
    assert_true(lh >= l0 && lh <= l1);
    /* a guard everything passes: nothing to split */
    l0 = guarded_step(1.0, 0, &f0, NULL);
    l1 = guarded_step(1.0, 4, &f1, NULL);
    assert_int_equal(f0, 0);
    assert_int_equal(f1, 0);
    assert_int_equal(l1, l0);
}

/* The model kept is chosen by the Dice it would be written with (class
 * biases tuned) when the caller gives one; the guards keep the Dice as
 * trained.  Dice values are made up: 0.5 as trained and 0.6 as written
 * for the imported model, margin 0.01. */
static void test_best_by_written_dice(void **state)
{
    (void)state;
    Graph g;
    PrunerConfig cfg;
    cfg_for(&cfg, 0.9);
    Shape in = net_in(1);
    float *x = rand_input(1, 7);
    uint8_t *y = disc_labels(2);
    Pruner *p = unet_pruner(&g, &cfg, 3, x);
    assert_int_equal(pruner_start(p, 0.5, 0.6), 0);
    assert_int_equal(pruner_best_epoch(p), 0);
    /* same FLOPs, higher as trained but lower as written: not better */
    assert_int_equal(pruner_end_epoch(p, 1, 1.0, 0.52, 0.59), 0);
    assert_int_equal(pruner_best_epoch(p), 0);
    TrainExec *t = NULL;
    assert_int_equal(train_exec_create(&g, &in, 1, &t), 0);
    step(t, p, NULL, x, y, 1e-3f);
    int changed = 0;
    assert_int_equal(pruner_step(p, NULL, 1.0, &changed), 0);
    assert_int_equal(changed, 1);
    /* fewer FLOPs, out of the margin as trained (0.45 < 0.49) but within
     * it as written (0.595 >= 0.59): kept */
    assert_int_equal(pruner_end_epoch(p, 2, 1.0, 0.45, 0.595), 0);
    assert_int_equal(pruner_best_epoch(p), 2);
    /* the Dice trend guard still sees the Dice as trained */
    const SauronSched *s = pruner_sched(p);
    assert_int_equal(s->ndice, 2);
    assert_true(s->dice[0] == 0.52 && s->dice[1] == 0.45);
    train_exec_free(t);
    pruner_free(p);

    /* NaN as written: chosen by the Dice as trained, as before */
    Graph h;
    p = unet_pruner(&h, &cfg, 3, x);
    assert_int_equal(pruner_start(p, 0.5, NAN), 0);
    assert_int_equal(pruner_end_epoch(p, 1, 1.0, 0.52, 0.59), 0);
    assert_int_equal(pruner_best_epoch(p), 1);
    pruner_free(p);
    graph_free(&h);
    sl_free(x);
    sl_free(y);
    graph_free(&g);
}

/* The Dice the summary judges the written model by: tuned at both ends
 * only when the model is written tuned; as trained when the end's tuning
 * kept it as trained, or when epoch 0 has no tuned Dice (a run resumed
 * from an older checkpoint). */
static void test_written_dice(void **state)
{
    (void)state;
    EpochStats h[3];
    memset(h, 0, sizeof h);
    const double trained[3] = {0.90, 0.88, 0.87};
    const double tuned[3] = {0.91, 0.905, 0.89};
    for (int e = 0; e < 3; e++) {
        h[e].val_dice_mean = trained[e];
        h[e].val_dice_tuned = tuned[e];
    }
    double b, a;
    sauron_written_dice(h, 3, 1, 1, &b, &a);
    assert_true(b == 0.91 && a == 0.905);
    /* tuned 0.905 is within 0.01 of 0.91; as trained 0.88 is not within
     * 0.01 of 0.90: a model kept as trained is judged as trained */
    sauron_written_dice(h, 3, 1, 0, &b, &a);
    assert_true(b == 0.90 && a == 0.88);
    h[0].val_dice_tuned = NAN;
    sauron_written_dice(h, 3, 2, 1, &b, &a);
    assert_true(b == 0.90 && a == 0.87);
    sauron_written_dice(h, 0, -1, 1, &b, &a);
    assert_true(isnan(b) && isnan(a));
}

/* Budgeted schedule with 2 epochs: at the end of epoch 1 tau is at its
 * top (climb_end 0.5) and pruning is allowed (prune_end 0.8). */
static void test_prune_shrinks(void **state)
{
    (void)state;
    Graph g;
    PrunerConfig cfg;
    cfg_for(&cfg, 0.9);
    Shape in = net_in(1);
    float *x = rand_input(1, 7);
    uint8_t *y = disc_labels(2);
    Pruner *p = unet_pruner(&g, &cfg, 2, x);
    assert_int_equal(pruner_start(p, 0.5, NAN), 0);
    int64_t f0 = pruner_flops(p);
    assert_true(f0 == pruner_flops0(p) && f0 > 0);
    TrainExec *t = NULL;
    assert_int_equal(train_exec_create(&g, &in, 1, &t), 0);
    step(t, p, NULL, x, y, 1e-3f);
    assert_int_equal(pruner_end_epoch(p, 1, 1.0, 0.5, NAN), 0);
    int changed = 0;
    assert_int_equal(pruner_step(p, NULL, 1.0, &changed), 0);
    assert_int_equal(changed, 1);
    int lost = 0;
    for (int i = 0; i < pruner_n_points(p); i++) {
        int c = pruner_point_channels(p, i);
        assert_true(c >= 1 && c <= pruner_point_channels0(p, i));
        lost += pruner_point_channels0(p, i) - c;
        assert_true(fabs(pruner_point_tau(p, i) - 0.9) < 1e-12);
    }
    assert_true(lost > 0);
    assert_true(pruner_flops(p) < f0);
    assert_int_equal(graph_validate(&g, "pruned"), 0);
    /* the old executor is stale; a new one trains the smaller network */
    train_exec_free(t);
    t = NULL;
    assert_int_equal(train_exec_create(&g, &in, 1, &t), 0);
    double l = step(t, p, NULL, x, y, 1e-3f);
    assert_true(isfinite(l));
    /* epoch 2 is in the recovery tail (2 > 0.8 * 2): no pruning */
    assert_int_equal(pruner_end_epoch(p, 2, l, 0.5, NAN), 0);
    assert_int_equal(pruner_step(p, NULL, 2.0, &changed), 0);
    assert_int_equal(changed, 0);
    /* the imported model is the best of epoch 0 unless a smaller one
     * kept the Dice: here epoch 2 (Dice 0.5 >= 0.5 - 0.01) */
    assert_int_equal(pruner_best_epoch(p), 2);
    train_exec_free(t);
    pruner_free(p);
    sl_free(x);
    sl_free(y);
    graph_free(&g);
}

/* Add-tied points (residual net) lose the same channels. */
static void test_prune_add_tied(void **state)
{
    (void)state;
    Graph g;
    build_residual(&g, 31);
    PrunerConfig cfg;
    cfg_for(&cfg, 0.95);
    Pruner *p = NULL;
    assert_int_equal(pruner_create(&g, &cfg, 2, &p), 0);
    Shape in = net_in(2);
    float *x = rand_input(2, 9);
    assert_int_equal(pruner_set_calibration(p, x, &in), 0);
    assert_int_equal(pruner_start(p, NAN, NAN), 0);
    assert_int_equal(pruner_end_epoch(p, 1, 1.0, NAN, NAN), 0);
    int changed = 0;
    assert_int_equal(pruner_step(p, NULL, 1.0, &changed), 0);
    const PruneGroups *pg = pruner_groups(p);
    /* points 0 (A), 1 (B), 3 (D) share a group */
    assert_int_equal(pg->points[0].group, pg->points[1].group);
    assert_int_equal(pg->points[0].channels, pg->points[1].channels);
    assert_int_equal(pg->points[0].channels, pg->points[3].channels);
    assert_int_equal(graph_validate(&g, "pruned residual"), 0);
    size_t no = 0;
    float *o = run_out(&g, &in, x, 0, &no);
    for (size_t i = 0; i < no; i++)
        assert_true(isfinite(o[i]));
    sl_free(o);
    /* without validation data the written model is the current one */
    assert_ptr_equal(pruner_best(p), &g);
    pruner_free(p);
    sl_free(x);
    graph_free(&g);
}

/* Kept output channels of a point: its conv bias entries are distinct
 * random numbers, so each kept one is found in the original bias. */
static int kept_of(const Graph *pruned, const Graph *orig, int node,
                   int *keep)
{
    const Node *n = &pruned->nodes[node];
    CHECK(n->n_in >= 3);
    const Value *bp = &pruned->values[n->in[2]];
    const Value *bo = &orig->values[orig->nodes[node].in[2]];
    int k = 0;
    for (int64_t j = 0; j < bp->shape.d[0]; j++)
        for (int64_t c = 0; c < bo->shape.d[0]; c++)
            if (bp->data[j] == bo->data[c]) keep[k++] = (int)c;
    return k;
}

static void test_optim_state_sliced(void **state)
{
    (void)state;
    Graph g, h;
    assert_int_equal(build_unet(&g, 2, 1, 6, 2, 0, 41), 0);
    assert_int_equal(build_unet(&h, 2, 1, 6, 2, 0, 41), 0);
    PrunerConfig cfg;
    cfg_for(&cfg, 0.9);
    Pruner *p = NULL, *q = NULL;
    assert_int_equal(pruner_create(&g, &cfg, 2, &p), 0);
    assert_int_equal(pruner_create(&h, &cfg, 2, &q), 0);
    Shape in = net_in(1);
    float *x = rand_input(1, 13);
    uint8_t *y = disc_labels(2);
    OptimOptions oo;
    optim_options_default(&oo, OPTIM_ADAM);
    Optim *og = NULL, *oh = NULL;
    assert_int_equal(optim_create(&oo, &og), 0);
    assert_int_equal(optim_create(&oo, &oh), 0);
    TrainExec *tg = NULL, *th = NULL;
    assert_int_equal(train_exec_create(&g, &in, 1, &tg), 0);
    assert_int_equal(train_exec_create(&h, &in, 1, &th), 0);
    for (int s = 0; s < 3; s++) {
        step(tg, p, og, x, y, 1e-2f);
        step(th, q, oh, x, y, 1e-2f);
    }
    /* Adam m of the first conv's bias before pruning */
    int enc = pruner_point_node(p, 0);
    int bias = g.nodes[enc].in[2];
    OptimState *st = optim_find(og, bias);
    assert_non_null(st);
    float m_before[64], b_before[64];
    memcpy(m_before, st->m, (size_t)st->numel * sizeof(float));
    memcpy(b_before, g.values[bias].data, (size_t)st->numel * sizeof(float));
    assert_int_equal(pruner_set_calibration(p, x, &in), 0);
    assert_int_equal(pruner_start(p, NAN, NAN), 0);
    assert_int_equal(pruner_end_epoch(p, 1, 1.0, NAN, NAN), 0);
    int changed = 0;
    assert_int_equal(pruner_step(p, og, 1.0, &changed), 0);
    assert_int_equal(changed, 1);
    /* by hand on h: the same removals, the surgery's slices on oh */
    PruneGroups pg;
    assert_int_equal(sauron_find_groups(&h, &pg), 0);
    PruneRequest req[8];
    int rem[8][64], nr = 0;
    for (int i = 0; i < pruner_n_points(p); i++) {
        int node = pruner_point_node(p, i);
        int keep[64];
        int nk = kept_of(&g, &h, node, keep);
        assert_int_equal(nk, pruner_point_channels(p, i));
        int c0 = pruner_point_channels0(p, i), m = 0;
        for (int c = 0, k = 0; c < c0; c++) {
            if (k < nk && keep[k] == c)
                k++;
            else
                rem[nr][m++] = c;
        }
        if (!m) continue;
        int k = 0;
        while (pg.points[k].conv != node)
            k++;
        req[nr].point = k;
        req[nr].n_remove = m;
        req[nr].remove = rem[nr];
        nr++;
    }
    assert_true(nr > 0);
    TensorSlice *sl = NULL;
    int ns = 0;
    assert_int_equal(sauron_prune_batch(&h, &pg, req, nr, &sl, &ns), 0);
    assert_int_equal(optim_slice_all(oh, sl, ns), 0);
    sl_free(sl);
    sauron_groups_free(&pg);
    assert_true(graphs_same_weights(&g, &h));
    /* independent check of one sliced moment: m_after[j] is m_before at
     * the kept channel (found by its bias value) */
    st = optim_find(og, bias);
    assert_int_equal(st->numel, pruner_point_channels(p, 0));
    for (int j = 0; j < st->numel; j++) {
        int c = -1;
        for (int k = 0; k < 64 && k < pruner_point_channels0(p, 0); k++)
            if (b_before[k] == g.values[bias].data[j]) c = k;
        assert_true(c >= 0);
        assert_true(st->m[j] == m_before[c]);
    }
    /* one more step each: bit-identical weights and moments */
    train_exec_free(tg);
    train_exec_free(th);
    tg = th = NULL;
    assert_int_equal(train_exec_create(&g, &in, 1, &tg), 0);
    assert_int_equal(train_exec_create(&h, &in, 1, &th), 0);
    assert_int_equal(pruner_set_calibration(q, x, &in), 0);
    /* q still describes h's imported points; its regulariser reads the
     * same activations, so the steps match */
    double lg = step(tg, p, og, x, y, 1e-2f);
    double lh = step(th, q, oh, x, y, 1e-2f);
    assert_true(lg == lh);
    assert_true(graphs_same_weights(&g, &h));
    for (int i = 0; i < optim_n_states(og); i++) {
        OptimState *a = optim_state(og, i);
        OptimState *b = optim_find(oh, a->value);
        assert_non_null(b);
        assert_int_equal(a->numel, b->numel);
        assert_int_equal(a->step, b->step);
        assert_allclose(a->m, b->m, (size_t)a->numel, 0, 0);
        assert_allclose(a->v, b->v, (size_t)a->numel, 0, 0);
    }
    train_exec_free(tg);
    train_exec_free(th);
    optim_free(og);
    optim_free(oh);
    pruner_free(p);
    pruner_free(q);
    sl_free(x);
    sl_free(y);
    graph_free(&g);
    graph_free(&h);
}

/* Epochs first..last of a run on g: 2 plain-SGD steps, end of epoch,
 * pruning step (executor rebuilt when the graph changed). */
static void run_epochs(Graph *g, Pruner *p, int first, int last,
                       const float *x, const uint8_t *y)
{
    Shape in = net_in(1);
    TrainExec *t = NULL;
    assert_int_equal(train_exec_create(g, &in, 1, &t), 0);
    for (int e = first; e <= last; e++) {
        double l = 0;
        for (int it = 0; it < 2; it++)
            l += step(t, p, NULL, x, y, 1e-2f) / 2;
        assert_int_equal(pruner_end_epoch(p, e, l, 0.9, NAN), 0);
        int changed = 0;
        assert_int_equal(pruner_step(p, NULL, e, &changed), 0);
        if (changed) {
            train_exec_free(t);
            t = NULL;
            assert_int_equal(train_exec_create(g, &in, 1, &t), 0);
        }
    }
    train_exec_free(t);
}

static void test_resume_equivalence(void **state)
{
    (void)state;
    Graph a, b;
    assert_int_equal(build_unet(&a, 2, 1, 6, 2, 0, 51), 0);
    assert_int_equal(build_unet(&b, 2, 1, 6, 2, 0, 51), 0);
    PrunerConfig cfg;
    cfg_for(&cfg, 0.6);
    Shape in = net_in(1);
    float *x = rand_input(1, 17);
    uint8_t *y = disc_labels(2);
    Pruner *pa = NULL, *pb = NULL;
    assert_int_equal(pruner_create(&a, &cfg, 6, &pa), 0);
    assert_int_equal(pruner_set_calibration(pa, x, &in), 0);
    assert_int_equal(pruner_start(pa, 0.9, NAN), 0);
    run_epochs(&a, pa, 1, 6, x, y);

    assert_int_equal(pruner_create(&b, &cfg, 6, &pb), 0);
    assert_int_equal(pruner_set_calibration(pb, x, &in), 0);
    assert_int_equal(pruner_start(pb, 0.9, NAN), 0);
    run_epochs(&b, pb, 1, 3, x, y);
    uint8_t *gm = NULL, *blob = NULL;
    size_t gn = 0, bn = 0;
    assert_int_equal(sslim_encode(&b, &gm, &gn), 0);
    assert_int_equal(pruner_save(pb, &blob, &bn), 0);
    pruner_free(pb);
    graph_free(&b);
    /* "killed": start again from the checkpoint */
    Graph c;
    graph_init(&c);
    assert_int_equal(sslim_decode(gm, gn, "ckpt", &c), 0);
    Pruner *pc = NULL;
    assert_int_equal(pruner_create(&c, &cfg, 6, &pc), 0);
    assert_int_equal(pruner_set_calibration(pc, x, &in), 0);
    assert_int_equal(pruner_load(pc, blob, bn, "ckpt"), 0);
    run_epochs(&c, pc, 4, 6, x, y);

    int lost = 0;
    for (int i = 0; i < pruner_n_points(pa); i++) {
        assert_int_equal(pruner_point_channels(pa, i),
                         pruner_point_channels(pc, i));
        assert_true(pruner_point_tau(pa, i) == pruner_point_tau(pc, i));
        lost += pruner_point_channels0(pa, i) - pruner_point_channels(pa, i);
    }
    assert_true(lost > 0); /* the comparison covers real pruning */
    assert_true(graphs_same_weights(&a, &c));
    assert_int_equal(pruner_best_epoch(pa), pruner_best_epoch(pc));
    assert_true(graphs_same_weights(pruner_best(pa), pruner_best(pc)));

    /* other settings: refused, naming the flag */
    PrunerConfig other = cfg;
    other.lambda = 1.0;
    Pruner *pd = NULL;
    assert_int_equal(pruner_create(&c, &other, 6, &pd), 0);
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(pruner_load(pd, blob, bn, "ckpt"), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--lambda"));
    pruner_free(pd);
    other = cfg;
    other.sched.tau_max = 0.5;
    assert_int_equal(pruner_create(&c, &other, 6, &pd), 0);
    sl_error_reset();
    assert_int_equal(pruner_load(pd, blob, bn, "ckpt"), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--tau-max"));
    pruner_free(pd);
    /* every byte flip is caught (checksum), every truncation too */
    assert_int_equal(pruner_create(&c, &cfg, 6, &pd), 0);
    for (size_t i = 0; i < bn; i += 7) {
        blob[i] ^= 0x40;
        sl_error_reset();
        assert_true(pruner_load(pd, blob, bn, "ckpt") < 0);
        blob[i] ^= 0x40;
    }
    for (size_t n = 0; n < bn; n += 13) {
        sl_error_reset();
        assert_true(pruner_load(pd, blob, n, "ckpt") < 0);
    }
    sl_error_quiet(0);
    pruner_free(pd);
    sl_free(gm);
    sl_free(blob);
    pruner_free(pa);
    pruner_free(pc);
    graph_free(&a);
    graph_free(&c);
    sl_free(x);
    sl_free(y);
}

static void test_refusals(void **state)
{
    (void)state;
    PrunerConfig cfg;
    cfg_for(&cfg, 2.0);
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(pruner_config_check(&cfg), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--tau-max"));
    cfg_for(&cfg, 0.3);
    cfg.sf = 0;
    sl_error_reset();
    assert_int_equal(pruner_config_check(&cfg), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--sf"));
    /* a model whose only convolution is the class head */
    Graph g;
    graph_init(&g);
    GBuild gb = {&g, {3}, 0, 0};
    int xin = gb_input(&gb, 2, 1);
    g.outputs[0] = gb_softmax(&gb, gb_conv(&gb, xin, 1, 2, 2, 3, 1, 1, 1));
    g.n_outputs = 1;
    gb_meta(&g, 2, 1, 2);
    assert_false(gb.fail);
    cfg_for(&cfg, 0.3);
    Pruner *p = NULL;
    sl_error_reset();
    assert_int_equal(pruner_create(&g, &cfg, 2, &p), ERR_UNSUPPORTED);
    assert_null(p);
    assert_non_null(strstr(sl_error_last(), "no prunable point"));
    sl_error_quiet(0);
    graph_free(&g);
    /* keep_head_input: the decoder block feeding the head is not a point */
    Graph u;
    assert_int_equal(build_unet(&u, 2, 1, 4, 2, 0, 61), 0);
    cfg.keep_head_input = 1;
    assert_int_equal(pruner_create(&u, &cfg, 2, &p), 0);
    assert_int_equal(pruner_n_points(p), 3);
    pruner_free(p);
    graph_free(&u);
}

/* Every allocation of create, calibration, a pruning step and save failing
 * in turn: an error code, never a crash or a leak (ASan). */
static void test_alloc_failures(void **state)
{
    (void)state;
    Shape in = net_in(1);
    float *x = rand_input(1, 19);
    sl_error_quiet(1);
    int failed = 0;
    for (long k = 0; k < 400; k++) {
        Graph g;
        assert_int_equal(build_unet(&g, 2, 1, 6, 2, 0, 71), 0);
        PrunerConfig cfg;
        cfg_for(&cfg, 0.9);
        Pruner *p = NULL;
        uint8_t *blob = NULL;
        size_t bn = 0;
        int changed = 0;
        sl_alloc_fail_after(k);
        int rc = pruner_create(&g, &cfg, 2, &p);
        if (!rc) rc = pruner_set_calibration(p, x, &in);
        if (!rc) rc = pruner_start(p, 0.5, NAN);
        if (!rc) rc = pruner_end_epoch(p, 1, 1.0, 0.5, NAN);
        if (!rc) rc = pruner_step(p, NULL, 1.0, &changed);
        if (!rc) rc = pruner_save(p, &blob, &bn);
        sl_alloc_fail_after(-1);
        if (rc) {
            assert_true(rc == ERR_NOMEM);
            failed++;
        } else {
            assert_int_equal(graph_validate(&g, "after"), 0);
        }
        sl_free(blob);
        pruner_free(p);
        graph_free(&g);
        if (!rc) break;
    }
    sl_error_quiet(0);
    assert_true(failed > 10);
    sl_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regularizer_gradient),
        cmocka_unit_test(test_prune_shrinks),
        cmocka_unit_test(test_best_by_written_dice),
        cmocka_unit_test(test_written_dice),
        cmocka_unit_test(test_prune_guard),
        cmocka_unit_test(test_guard_split),
        cmocka_unit_test(test_prune_add_tied),
        cmocka_unit_test(test_optim_state_sliced),
        cmocka_unit_test(test_resume_equivalence),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
