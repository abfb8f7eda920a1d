/* FLOPs-aware pruning (compressor/sauron/cost.h) on a U-Net whose FLOPs
 * per layer are worked out by hand below:
 *   - FLOPs per channel of every point equal the hand count (and the
 *     difference of two networks built with one channel less);
 *   - the scales of --cost-rule tau: sqrt(f / geometric mean), their
 *     product 1, the full-resolution layers above 1;
 *   - --cost-rule tau in a pruning step: every point prunes with its
 *     ladder tau times its scale, and removes exactly the channels whose
 *     delta_prune is below that (checked against the distance kernels
 *     with the same reference draws); cheap points remove fewer than with
 *     no rule, expensive ones more;
 *   - --cost-rule guard: removals ordered by FLOPs saved, largest first,
 *     ties in point order;
 *   - --target-flops: once the network is at or below the target, the
 *     pruner stops pruning; --recovery-epochs moves the schedule's prune
 *     end; the refusals (paper schedule, out of range);
 *   - the target verdict sentence for met, given up, not reached.
 */
#include <math.h>
#include <string.h>

#include "compressor/sauron/cost.h"
#include "compressor/sauron/distance.h"
#include "compressor/sauron/pruner.h"
#include "compressor/sauron/report.h"
#include "tests/prune_nets.h"
#include "tests/testutil.h"

#define HW 16

/* 2D, 1 input channel, 16x16: enc 4, down 6 (stride 2: 8x8), up 4
 * (ConvTranspose k2 s2 back to 16x16), dec 4 over concat(enc, up) = 8,
 * head 1x1 -> 2 classes.  InstanceNorm + LeakyReLU after enc, down, dec. */
static const NetSpec SPEC = {2, 1, 4, 6, 4, 4, 2, 0, 0, 0};

/* FLOPs of one channel, with the runtime's counts (conv: 2 * OC * IC/g *
 * K * out pixels; ConvTranspose: 2 * IC * OC * K * in pixels; InstanceNorm
 * 5 and LeakyReLU 2 per element):
 *   enc:  its filter 2*1*9*256 = 4608, norm 5*256 = 1280, act 2*256 = 512,
 *         as input of down 2*6*9*64 = 6912 and of dec 2*4*9*256 = 18432
 *         -> 31744
 *   down: filter 2*4*9*64 = 4608, norm 320, act 128, as input of up
 *         2*4*4*64 = 2048                                   -> 7104
 *   up:   filter 2*6*4*64 = 3072 (no norm, no act), as input of dec
 *         18432                                             -> 21504
 *   dec:  filter 2*8*9*256 = 36864, norm 1280, act 512, as input of the
 *         head 2*2*1*256 = 1024                             -> 39680 */
static const int64_t HAND[4] = {31744, 7104, 21504, 39680};

static Shape in1(void)
{
    Shape s = {4, {1, 1, HW, HW, 0}};
    return s;
}

static int64_t flops_of(const NetSpec *s)
{
    Graph g;
    build_net(&g, s, 1);
    Shape x = in1();
    assert_int_equal(graph_infer_shapes(&g, &x), 0);
    int64_t f = graph_flops(&g);
    graph_free(&g);
    return f;
}

static void test_channel_flops_by_hand(void **state)
{
    (void)state;
    Graph g;
    build_net(&g, &SPEC, 1);
    PruneGroups pg;
    assert_int_equal(sauron_find_groups(&g, &pg), 0);
    Shape x = in1();
    int64_t f0 = flops_of(&SPEC);
    for (int k = 0; k < 4; k++) {
        int64_t f = -1;
        assert_true(pg.points[k].prunable);
        assert_int_equal(sauron_channel_flops(&g, &pg, k, &x, &f), 0);
        assert_int_equal(f, HAND[k]);
        /* the same as a network built with one channel less there */
        NetSpec s = SPEC;
        int *c[4] = {&s.c_enc, &s.c_down, &s.c_up, &s.c_dec};
        (*c[k])--;
        assert_int_equal(f, f0 - flops_of(&s));
    }
    /* the head is not prunable: no cost */
    int64_t f = -1;
    assert_int_equal(sauron_channel_flops(&g, &pg, 4, &x, &f), 0);
    assert_int_equal(f, 0);
    /* g itself is untouched (shapes of another size included) */
    assert_int_equal(pg.points[0].channels, 4);
    assert_int_equal(graph_flops(&g) > 0, 1);
    sauron_groups_free(&pg);
    graph_free(&g);
}

static void test_scales(void **state)
{
    (void)state;
    double s[4];
    const int64_t f[4] = {400, 100, 25, 0};
    sauron_cost_scales(s, f, 4);
    /* geometric mean of 400, 100, 25 is 100: sqrt(4), sqrt(1), sqrt(1/4);
     * 1e-12: exp/log round trip */
    assert_true(fabs(s[0] - 2.0) < 1e-12);
    assert_true(fabs(s[1] - 1.0) < 1e-12);
    assert_true(fabs(s[2] - 0.5) < 1e-12);
    assert_true(s[3] == 1.0);
    sauron_cost_scales(s, HAND, 4);
    assert_true(fabs(s[0] * s[1] * s[2] * s[3] - 1.0) < 1e-12);
    /* the full-resolution layers (enc, dec) above 1, the half-resolution
     * one (down) well below */
    assert_true(s[0] > 1.0 && s[3] > 1.0 && s[1] < 0.7);
    assert_int_equal(sauron_cost_rule_parse("all"), SAURON_COST_ALL);
    assert_int_equal(sauron_cost_rule_parse("tau"), SAURON_COST_TAU);
    assert_int_equal(sauron_cost_rule_parse("flops"), -1);
    assert_string_equal(sauron_cost_rule_name(SAURON_COST_GUARD), "guard");
}

static void test_guard_order(void **state)
{
    (void)state;
    int order[5];
    /* 30 twice: ties keep point order (1 before 2); then 10, 5, 0 */
    const double saved[5] = {10, 30, 30, 5, 0};
    sauron_cost_order(order, saved, 5);
    const int want[5] = {1, 2, 0, 3, 4};
    for (int i = 0; i < 5; i++)
        assert_int_equal(order[i], want[i]);
    /* with the hand costs, 2 channels of down (14208) go after 1 of up
     * (21504): the guard tries the removal that buys more FLOPs first */
    const double s2[2] = {2.0 * HAND[1], 1.0 * HAND[2]};
    sauron_cost_order(order, s2, 2);
    assert_int_equal(order[0], 1);
}

static float *calib_input(uint64_t seed)
{
    size_t n = 2 * HW * HW;
    float *x = sl_alloc(n * sizeof(float));
    TestRng r = {seed};
    trng_fill(&r, x, n, -1.0f, 1.0f);
    return x;
}

/* Channels each point would keep at thresholds tau[i]: delta_prune from
 * the kernels on a training-mode forward of x, references drawn as the
 * pruner draws them (its seed, points in order). */
static void expected_keep(Graph *g, const float *x, const Shape *xs,
                          uint64_t seed, const double *tau, int *keep)
{
    TrainExec *t = NULL;
    assert_int_equal(train_exec_create(g, xs, 1, &t), 0);
    assert_int_equal(train_forward(t, x), 0);
    PruneGroups pg;
    assert_int_equal(sauron_find_groups(g, &pg), 0);
    uint64_t rng = seed;
    for (int i = 0; i < 4; i++) {
        const Shape *fs = train_shape(t, pg.points[i].value);
        int C = (int)fs->d[1];
        float e[16], *scr = sl_alloc(sauron_prune_scratch_floats(fs, 2) *
                                     sizeof(float));
        int cand[16];
        int r = sauron_draw_reference(&rng, C);
        sauron_prune_distance(e, train_value(t, pg.points[i].value), fs, 2, r,
                              scr);
        keep[i] = C - sauron_prune_candidates(cand, e, C, r, (float)tau[i]);
        sl_free(scr);
    }
    sauron_groups_free(&pg);
    train_exec_free(t);
}

/* One pruning step at the ladder's top (2 epochs, progress 1) with
 * cost rule `rule`; keep[] gets the channels left per point. */
static void one_step(int rule, double tau_max, int *keep, double *used,
                     int64_t *cost)
{
    Graph g;
    build_net(&g, &SPEC, 1);
    PrunerConfig cfg;
    pruner_config_default(&cfg);
    cfg.n_threads = 1;
    cfg.seed = 99;
    cfg.prune_guard = 0; /* the rule alone */
    cfg.cost_rule = rule;
    cfg.sched.tau_max = tau_max;
    Pruner *p = NULL;
    assert_int_equal(pruner_create(&g, &cfg, 2, &p), 0);
    assert_int_equal(pruner_n_points(p), 4);
    Shape xs = {4, {2, 1, HW, HW, 0}};
    float *x = calib_input(5);
    assert_int_equal(pruner_set_calibration(p, x, &xs), 0);
    assert_int_equal(pruner_start(p, NAN, NAN), 0);
    /* what the step must do, from the kernels */
    double tau[4];
    double s[4];
    sauron_cost_scales(s, HAND, 4);
    for (int i = 0; i < 4; i++) {
        double t = tau_max * ((rule & SAURON_COST_TAU) ? s[i] : 1.0);
        tau[i] = t < 1.0 ? t : 1.0;
    }
    int want[4];
    expected_keep(&g, x, &xs, cfg.seed, tau, want);
    int changed = 0;
    assert_int_equal(pruner_step(p, NULL, 1.0, &changed), 0);
    for (int i = 0; i < 4; i++) {
        keep[i] = pruner_point_channels(p, i);
        used[i] = pruner_point_tau_used(p, i);
        cost[i] = pruner_point_channel_flops(p, i);
        assert_int_equal(keep[i], want[i]);
        /* 1e-12: the same products in the same order, up to exp/log */
        assert_true(fabs(used[i] - tau[i]) < 1e-12);
    }
    pruner_free(p);
    sl_free(x);
    graph_free(&g);
}

/* The ladder's top in the step of test_tau_rule_step: on this untrained
 * network nothing is below 0.5 (delta_prune of random filters is large);
 * at 0.7 both rules remove something.  Measured: no rule keeps 3 5 4 4
 * channels (enc down up dec; 38848 FLOPs saved), the tau rule 2 6 4 3
 * (103168 saved): enc and dec lose more, down loses nothing. */
#define STEP_TAU 0.7

static void test_tau_rule_step(void **state)
{
    (void)state;
    int k0[4], k1[4];
    double u0[4], u1[4];
    int64_t c0[4], c1[4];
    one_step(SAURON_COST_NONE, STEP_TAU, k0, u0, c0);
    one_step(SAURON_COST_TAU, STEP_TAU, k1, u1, c1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(c0[i], 0); /* no rule: nothing measured */
        assert_int_equal(c1[i], HAND[i]);
        assert_true(u0[i] == STEP_TAU);
    }
    /* why: enc and dec cost more per channel than the typical point, so
     * they prune at a higher threshold and lose at least as many; down
     * costs least and loses at most as many */
    assert_true(u1[0] > STEP_TAU && u1[3] > STEP_TAU && u1[1] < STEP_TAU);
    assert_true(k1[0] <= k0[0] && k1[3] <= k0[3]);
    assert_true(k1[1] >= k0[1]);
    int lost1 = 0;
    /* FLOPs saved: the rule moves removals to where they save more */
    int64_t saved0 = 0, saved1 = 0;
    const int ch0[4] = {4, 6, 4, 4};
    for (int i = 0; i < 4; i++) {
        saved0 += (ch0[i] - k0[i]) * HAND[i];
        saved1 += (ch0[i] - k1[i]) * HAND[i];
        lost1 += ch0[i] - k1[i];
    }
    fprintf(stderr,
            "keep none %d %d %d %d (saved %lld), tau %d %d %d %d (saved "
            "%lld), %d channels\n",
            k0[0], k0[1], k0[2], k0[3], (long long)saved0, k1[0], k1[1],
            k1[2], k1[3], (long long)saved1, lost1);
    assert_true(saved1 > saved0);
    assert_true(k1[0] < k0[0] && k1[1] > k0[1]);
}

/* A pruner on the test net (10 epochs, a fixed calibration batch) with
 * the step's knobs of the two tests below: unguarded, ladder to 0.9. */
typedef struct {
    Graph g;
    Pruner *p;
    float *x;
} TestPruner;

static void test_pruner_open(TestPruner *t, double target_flops, int pause,
                             double dice_imported)
{
    build_net(&t->g, &SPEC, 1);
    PrunerConfig cfg;
    pruner_config_default(&cfg);
    cfg.n_threads = 1;
    cfg.seed = 99;
    cfg.prune_guard = 0;
    cfg.sched.tau_max = 0.9;
    cfg.target_flops = target_flops;
    cfg.pause = pause;
    t->p = NULL;
    assert_int_equal(pruner_create(&t->g, &cfg, 10, &t->p), 0);
    Shape xs = {4, {2, 1, HW, HW, 0}};
    t->x = calib_input(5);
    assert_int_equal(pruner_set_calibration(t->p, t->x, &xs), 0);
    assert_int_equal(pruner_start(t->p, dice_imported, NAN), 0);
}

static void test_pruner_close(TestPruner *t)
{
    pruner_free(t->p);
    sl_free(t->x);
    graph_free(&t->g);
}

static void test_target_stops_pruning(void **state)
{
    (void)state;
    TestPruner t;
    /* any removal brings the network under 99.9% of its FLOPs */
    test_pruner_open(&t, 0.999, 0, NAN);
    Pruner *p = t.p;
    int now = 0, changed = 0;
    assert_int_equal(pruner_decide(p, 5.0, &now), 0);
    assert_int_equal(now, 1); /* 100% > 99.9%: prune */
    assert_int_equal(pruner_step(p, NULL, 5.0, &changed), 0);
    assert_int_equal(changed, 1);
    assert_true(pruner_flops(p) <= 0.999 * pruner_flops0(p));
    /* reached: every later step recovers only, though pruning would
     * still be allowed at 6 <= 0.8 * 10 */
    assert_int_equal(pruner_decide(p, 6.0, &now), 0);
    assert_int_equal(now, 0);
    test_pruner_close(&t);
}

/* --pause-below-margin: an epoch below the margin stops removal until
 * one is back within it; the same run without the pause prunes. */
static void test_pause_below_margin(void **state)
{
    (void)state;
    TestPruner t;
    int now = 0;
    for (int pause = 0; pause <= 1; pause++) {
        test_pruner_open(&t, 0.0, pause, 0.90);
        Pruner *p = t.p;
        /* epoch 1 at 0.8899: below 0.90 - 0.01 by 1e-4 */
        assert_int_equal(pruner_end_epoch(p, 1, 1.0, 0.8899, NAN), 0);
        assert_int_equal(pruner_decide(p, 1.0, &now), 0);
        assert_int_equal(now, !pause);
        /* still below at epoch 2: mid-epoch steps wait too */
        assert_int_equal(pruner_end_epoch(p, 2, 1.0, 0.85, NAN), 0);
        assert_int_equal(pruner_decide(p, 2.5, &now), 0);
        assert_int_equal(now, !pause);
        /* exactly on the margin counts as within it */
        assert_int_equal(pruner_end_epoch(p, 3, 1.0, 0.89, NAN), 0);
        assert_int_equal(pruner_decide(p, 3.0, &now), 0);
        assert_int_equal(now, 1);
        test_pruner_close(&t);
    }
    /* without validation data there is no margin: never pauses */
    test_pruner_open(&t, 0.0, 1, NAN);
    assert_int_equal(pruner_end_epoch(t.p, 1, 1.0, NAN, NAN), 0);
    assert_int_equal(pruner_decide(t.p, 1.0, &now), 0);
    assert_int_equal(now, 1);
    test_pruner_close(&t);
}

/* sauron-compress's defaults (pruner_config_unset + _resolve): a target
 * of 10% with the whole ladder, pruning every half epoch and the margin
 * as guard (no cost rule at 20 iterations per epoch); the published
 * budget values with --target-flops none; the paper's values untouched;
 * given flags kept. */
static void test_default_recipe(void **state)
{
    (void)state;
    PrunerConfig c;
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 20, 20);
    assert_true(c.target_flops == 0.1);
    assert_true(c.lambda == 0.5 && c.sched.tau_max == 1.0);
    assert_int_equal(c.cost_rule, SAURON_COST_NONE);
    assert_int_equal(c.prune_every, 10);
    assert_true(c.prune_guard == 0.02);
    assert_int_equal(c.pause, 0);
    assert_int_equal(pruner_config_check(&c), 0);
    pruner_config_unset(&c);
    c.target_flops = 0.0; /* --target-flops none */
    pruner_config_resolve(&c, 20, 20);
    assert_true(c.lambda == 0.5 && c.sched.tau_max == 0.3);
    assert_int_equal(c.prune_every, 0);
    assert_true(c.prune_guard == 0.02);
    assert_int_equal(pruner_config_check(&c), 0);
    pruner_config_unset(&c);
    c.sched.kind = SAURON_SCHED_PAPER; /* no target by default */
    pruner_config_resolve(&c, 20, 250);
    assert_true(c.target_flops == 0.0);
    assert_true(c.lambda == 0.5 && c.sched.tau_max == 0.3);
    assert_int_equal(c.prune_every, 0);
    assert_int_equal(pruner_config_check(&c), 0);
    pruner_config_unset(&c);
    c.sched.kind = SAURON_SCHED_PAPER;
    c.target_flops = 0.1; /* the paper's schedule ignores the target rule */
    pruner_config_resolve(&c, 20, 250);
    assert_true(c.lambda == 0.5 && c.sched.tau_max == 0.3);
    assert_int_equal(c.prune_every, 0);
    pruner_config_unset(&c);
    c.target_flops = 0.1;
    c.sched.max_dice_drop = 0.03;
    pruner_config_resolve(&c, 20, 15);
    assert_true(c.sched.tau_max == 1.0 && c.prune_guard == 0.03);
    assert_int_equal(c.prune_every, 7);
    pruner_config_unset(&c);
    c.target_flops = 0.1;
    pruner_config_resolve(&c, 20,
                          1); /* one iteration per epoch: epoch ends */
    assert_int_equal(c.prune_every, 0);
    pruner_config_unset(&c); /* a margin below the guard keeps the guard */
    c.target_flops = 0.1;
    pruner_config_resolve(&c, 20, 15);
    assert_true(c.prune_guard == 0.02);
    /* steps at least PRUNER_WIDE_GUARD_ITERS apart: the guard doubles
     * and both cost rules apply (the default length, 250 iterations per
     * epoch: 0.04, all) */
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 20, 250);
    assert_int_equal(c.prune_every, 125);
    assert_true(c.prune_guard == 0.04);
    assert_int_equal(c.cost_rule, SAURON_COST_ALL);
    assert_int_equal(pruner_config_check(&c), 0);
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 20, 2 * PRUNER_WIDE_GUARD_ITERS - 1);
    assert_true(c.prune_guard == 0.02); /* steps 99 apart */
    assert_int_equal(c.cost_rule, SAURON_COST_NONE);
    pruner_config_unset(&c);
    c.sched.max_dice_drop = 0.03;
    pruner_config_resolve(&c, 20, 2 * PRUNER_WIDE_GUARD_ITERS);
    assert_true(fabs(c.prune_guard - 0.06) < 1e-15);
    assert_int_equal(c.cost_rule, SAURON_COST_ALL);
    pruner_config_unset(&c); /* given --prune-every: its gap decides */
    c.prune_every = 10;
    pruner_config_resolve(&c, 20, 250);
    assert_true(c.prune_guard == 0.02);
    assert_int_equal(c.cost_rule, SAURON_COST_NONE);
    pruner_config_unset(&c);
    c.prune_every = PRUNER_WIDE_GUARD_ITERS;
    pruner_config_resolve(&c, 20, 20);
    assert_int_equal(c.cost_rule, SAURON_COST_ALL);
    pruner_config_unset(&c); /* a given rule wins in the wide regime too */
    c.cost_rule = SAURON_COST_NONE;
    pruner_config_resolve(&c, 20, 250);
    assert_int_equal(c.cost_rule, SAURON_COST_NONE);
    assert_true(c.prune_guard == 0.04);
    pruner_config_unset(&c); /* no target: the published guard, no rule */
    c.target_flops = 0.0;
    pruner_config_resolve(&c, 20, 250);
    assert_true(c.prune_guard == 0.02);
    assert_int_equal(c.cost_rule, SAURON_COST_NONE);
    pruner_config_unset(&c); /* the paper's schedule: none, and it checks */
    c.sched.kind = SAURON_SCHED_PAPER;
    pruner_config_resolve(&c, 20, 250);
    assert_int_equal(c.cost_rule, SAURON_COST_NONE);
    assert_int_equal(pruner_config_check(&c), 0);
    /* recovery with a target: the last 20% of the run, but at most
     * PRUNER_RECOVERY_ITERS iterations in whole epochs */
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 20, 250); /* the default length */
    assert_int_equal(c.recovery_epochs, 2);
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 20, 167); /* ceil(500 / 167) = 3 < 4 */
    assert_int_equal(c.recovery_epochs, 3);
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 20, 126); /* 4 epochs: not fewer than 20% */
    assert_int_equal(c.recovery_epochs, -1);
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 8, 15); /* the phantom's runs */
    assert_int_equal(c.recovery_epochs, -1);
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 100, 10); /* 50 epochs, 20% is 20 */
    assert_int_equal(c.recovery_epochs, -1);
    pruner_config_unset(&c);
    pruner_config_resolve(&c, 300, 10); /* 50 epochs, 20% is 60 */
    assert_int_equal(c.recovery_epochs, 50);
    pruner_config_unset(&c); /* given --recovery-epochs wins */
    c.recovery_epochs = 5;
    pruner_config_resolve(&c, 20, 250);
    assert_int_equal(c.recovery_epochs, 5);
    pruner_config_unset(&c); /* no target: the schedule's own 20% */
    c.target_flops = 0.0;
    pruner_config_resolve(&c, 20, 250);
    assert_int_equal(c.recovery_epochs, -1);
    assert_int_equal(pruner_config_check(&c), 0);
    pruner_config_unset(&c); /* given values win */
    c.lambda = 0.25;
    c.sched.tau_max = 0.6;
    c.cost_rule = SAURON_COST_GUARD;
    c.prune_every = 3;
    c.prune_guard = 0;
    c.target_flops = 0.1;
    pruner_config_resolve(&c, 20, 20);
    assert_true(c.lambda == 0.25 && c.sched.tau_max == 0.6);
    assert_int_equal(c.cost_rule, SAURON_COST_GUARD);
    assert_int_equal(c.prune_every, 3);
    assert_true(c.prune_guard == 0);
}

static void test_config(void **state)
{
    (void)state;
    Graph g;
    build_net(&g, &SPEC, 1);
    PrunerConfig cfg;
    Pruner *p = NULL;
    pruner_config_default(&cfg);
    cfg.recovery_epochs = 3;
    assert_int_equal(pruner_create(&g, &cfg, 10, &p), 0);
    /* 7 of 10 epochs prune; the ladder still tops at half the run */
    assert_true(fabs(pruner_config(p)->sched.prune_end - 0.7) < 1e-12);
    assert_true(pruner_config(p)->sched.climb_end == 0.5);
    pruner_free(p);
    cfg.recovery_epochs = 8; /* 2 pruning epochs: the ladder tops at 0.2 */
    assert_int_equal(pruner_create(&g, &cfg, 10, &p), 0);
    assert_true(fabs(pruner_config(p)->sched.climb_end - 0.2) < 1e-12);
    pruner_free(p);
    p = NULL;
    sl_error_quiet(1);
    cfg.recovery_epochs = 10; /* no epoch would prune */
    assert_int_equal(pruner_create(&g, &cfg, 10, &p), ERR_ARG);
    pruner_config_default(&cfg);
    cfg.sched.kind = SAURON_SCHED_PAPER;
    cfg.cost_rule = SAURON_COST_TAU;
    assert_int_equal(pruner_config_check(&cfg), ERR_ARG);
    cfg.cost_rule = SAURON_COST_NONE;
    cfg.recovery_epochs = 2;
    assert_int_equal(pruner_config_check(&cfg), ERR_ARG);
    cfg.recovery_epochs = -1; /* the paper's schedule never pauses */
    cfg.pause = 1;
    assert_int_equal(pruner_config_check(&cfg), ERR_ARG);
    pruner_config_default(&cfg);
    cfg.target_flops = 1.5;
    assert_int_equal(pruner_config_check(&cfg), ERR_ARG);
    cfg.target_flops = -0.1;
    assert_int_equal(pruner_config_check(&cfg), ERR_ARG);
    cfg.target_flops = 1.0;
    assert_int_equal(pruner_config_check(&cfg), 0);
    sl_error_quiet(0);
    graph_free(&g);
}

static void test_verdict(void **state)
{
    (void)state;
    char b[512];
    assert_int_equal(report_target_verdict(0.1, 0.08, 0.09, 0.99, 0.985, 0.01,
                                           b, sizeof b),
                     1);
    assert_non_null(strstr(b, "target met"));
    assert_non_null(strstr(b, "Dice margin met"));
    /* reached at some epoch, but the model written (within the margin)
     * keeps more: the target was given up */
    assert_int_equal(
        report_target_verdict(0.1, 0.08, 0.3, 0.99, 0.985, 0.01, b, sizeof b),
        0);
    assert_non_null(strstr(b, "target given up to keep the Dice margin"));
    assert_non_null(strstr(b, "30.0%"));
    /* never reached */
    assert_int_equal(
        report_target_verdict(0.1, 0.4, 0.45, 0.99, 0.99, 0.01, b, sizeof b),
        0);
    assert_non_null(strstr(b, "target not reached"));
    assert_non_null(strstr(b, "40.0%"));
    /* no validation data: the target decides, the margin is unchecked */
    assert_int_equal(
        report_target_verdict(0.5, 0.4, 0.4, NAN, NAN, 0.01, b, sizeof b), 1);
    assert_non_null(strstr(b, "not checked"));
    /* exact decimal targets: 10% of 1000 FLOPs is met by 100 of them */
    assert_int_equal(report_target_verdict(0.1, 100.0 / 1000.0,
                                           100.0 / 1000.0, 0.9, 0.9, 0.01, b,
                                           sizeof b),
                     1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channel_flops_by_hand),
        cmocka_unit_test(test_scales),
        cmocka_unit_test(test_guard_order),
        cmocka_unit_test(test_tau_rule_step),
        cmocka_unit_test(test_target_stops_pruning),
        cmocka_unit_test(test_pause_below_margin),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_default_recipe),
        cmocka_unit_test(test_verdict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
