/* Sauron thresholds (compressor/sauron/threshold.h): ladder values,
 * plateau/convergence rule and patience on hand-worked histories, the
 * budgeted schedule (ramp, recovery without pruning, Dice-guard freeze,
 * best checkpoint within the margin), allocation failure and the
 * schedule's checkpoint round trip.  The distances are in
 * test_sauron_distance.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "compressor/sauron/threshold.h"
#include "runtime/common.h"

/* ================= ladder and configuration ================= */

static void test_ladder(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    assert_int_equal(sauron_sched_config_check(&c), 0);
    assert_int_equal(c.kappa, 15);
    /* 16 evenly spaced values from 0.001 to 0.3 */
    for (int k = 0; k <= 15; k++)
        assert_true(fabs(sauron_ladder_tau(&c, k) -
                         (0.001 + k * (0.3 - 0.001) / 15.0)) < 1e-15);
    assert_true(sauron_ladder_tau(&c, 0) == 0.001);
    assert_true(sauron_ladder_tau(&c, 15) == 0.3);
    assert_true(fabs(sauron_ladder_tau(&c, 5) - 0.1006666666666667) < 1e-15);
    assert_true(sauron_ladder_tau(&c, 99) == 0.3); /* never past the top */
    assert_true(sauron_ladder_tau(&c, -1) == 0.001);
    c.tau_max = 0.5;
    c.kappa = 4;
    const double want[5] = {0.001, 0.12575, 0.2505, 0.37525, 0.5};
    for (int k = 0; k <= 4; k++)
        assert_true(fabs(sauron_ladder_tau(&c, k) - want[k]) < 1e-15);
}

static void test_config_check(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sl_error_quiet(1);
    sauron_sched_defaults(&c);
    c.tau_max = 2.0;
    sl_error_reset();
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--tau-max"));
    sauron_sched_defaults(&c);
    c.kappa = 0;
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    sauron_sched_defaults(&c);
    c.mu = NAN;
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    sauron_sched_defaults(&c);
    c.prune_end = 0.3; /* before climb_end 0.5 */
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    sauron_sched_defaults(&c);
    c.max_dice_drop = -0.1;
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    sauron_sched_defaults(&c);
    c.rho = -1;
    assert_int_equal(sauron_sched_config_check(&c), ERR_ARG);
    SauronSched s;
    int ch = 4;
    c.rho = 5;
    assert_int_equal(sauron_sched_init(&s, &c, 1, &ch, 0, 0.9), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
}

/* ================= paper schedule ================= */

static void test_plateau_rule(void **st)
{
    (void)st;
    /* rho 5: window = the 5 losses before the last */
    const double plateau[7] = {1.0, 0.9, 0.8, 0.85, 0.82, 0.84, 0.83};
    assert_true(sauron_loss_plateaued(plateau, 7, 5));
    const double falling[7] = {1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4};
    assert_false(sauron_loss_plateaued(falling, 7, 5)); /* below the min */
    const double jump[7] = {1.0, 0.9, 0.8, 0.85, 0.82, 0.84, 0.95};
    assert_false(sauron_loss_plateaued(jump, 7, 5)); /* above the max */
    /* exactly rho + 1 values is enough; rho values are not */
    const double six[6] = {0.5, 0.6, 0.4, 0.55, 0.45, 0.5};
    assert_true(sauron_loss_plateaued(six, 6, 5));
    assert_false(sauron_loss_plateaued(six + 1, 5, 5));
    /* the first loss is outside the window: a big early value is ignored */
    const double early[7] = {9.0, 0.5, 0.6, 0.4, 0.55, 0.45, 0.39};
    assert_false(sauron_loss_plateaued(early, 7, 5));
    /* ties at min and max are inside ("neither below nor above") */
    const double edge[6] = {0.4, 0.5, 0.6, 0.5, 0.5, 0.4};
    assert_true(sauron_loss_plateaued(edge, 6, 5));
    const double edge2[6] = {0.4, 0.5, 0.6, 0.5, 0.5, 0.6};
    assert_true(sauron_loss_plateaued(edge2, 6, 5));
}

static void test_convergence_mu(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    const double flat[6] = {1, 1, 1, 1, 1, 1};
    const double fall[6] = {6, 5, 4, 3, 2, 1};
    /* 100 channels, mu 0.02: ceil(2) = 2, so losing 1 is "stalled" and
     * losing 2 is not (0.02 * 100 is 2.0000000000000004 in binary) */
    assert_true(sauron_converged(flat, 6, 100, 99, &c));
    assert_false(sauron_converged(flat, 6, 100, 98, &c));
    /* 10 channels: ceil(0.2) = 1, only a step that removed none */
    assert_true(sauron_converged(flat, 6, 10, 10, &c));
    assert_false(sauron_converged(flat, 6, 10, 9, &c));
    /* 50 channels: ceil(1.0) = 1 */
    assert_false(sauron_converged(flat, 6, 50, 49, &c));
    /* 51 channels: ceil(1.02) = 2 */
    assert_true(sauron_converged(flat, 6, 51, 50, &c));
    /* falling loss never converges */
    assert_false(sauron_converged(fall, 6, 10, 10, &c));
    /* too short a history */
    assert_false(sauron_converged(flat, 5, 10, 10, &c));
}

/* Paper schedule on one point with a flat loss (always plateaued after
 * rho + 1 epochs) and no pruning: it steps up at epoch 6, waits rho = 5
 * epochs (patience 5 -> 0), steps at 12, 18, ... */
static void test_paper_patience(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    c.kind = SAURON_SCHED_PAPER;
    c.kappa = 3;
    SauronSched s;
    const int ch[2] = {10, 40};
    assert_int_equal(sauron_sched_init(&s, &c, 2, ch, 100, 0.9), 0);
    int prune;
    for (int e = 1; e <= 30; e++) {
        assert_int_equal(sauron_sched_end_epoch(&s, 1.0, 0.9), 0);
        /* mid-epoch queries change nothing in the paper schedule */
        int rung_before = s.pt[0].rung;
        sauron_sched_update(&s, e - 0.5, &prune);
        assert_false(prune);
        assert_int_equal(s.pt[0].rung, rung_before);
        sauron_sched_update(&s, e, &prune);
        assert_true(prune);
        /* steps at 6, 12, 18 (the top, kappa 3); at the top a converged
         * point still resets its patience, it just cannot climb further */
        int want = e < 6 ? 0 : e < 12 ? 1 : e < 18 ? 2 : 3;
        int want_pat = e < 6 ? 0 : 5 - (e - 6) % 6;
        assert_int_equal(s.pt[0].rung, want);
        assert_int_equal(s.pt[0].patience, want_pat);
        assert_true(s.pt[0].tau == sauron_ladder_tau(&c, want));
        /* point 1 loses one channel per epoch, not fewer than
         * ceil(0.02 * 40) = 1: pruning has not stalled, it never climbs */
        assert_int_equal(s.pt[1].rung, 0);
        assert_int_equal(s.pt[1].patience, 0);
        assert_int_equal(sauron_sched_record(&s, 0, e, 10), 0);
        assert_int_equal(sauron_sched_record(&s, 1, e, 40 - e), 0);
    }
    assert_true(s.pt[0].tau == c.tau_max);
    sauron_sched_free(&s);
}

static void test_paper_falling_loss(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    c.kind = SAURON_SCHED_PAPER;
    SauronSched s;
    const int ch = 16;
    assert_int_equal(sauron_sched_init(&s, &c, 1, &ch, 50, 0.9), 0);
    int prune;
    for (int e = 1; e <= 20; e++) {
        assert_int_equal(sauron_sched_end_epoch(&s, 10.0 - 0.1 * e, 0.9), 0);
        sauron_sched_update(&s, e, &prune);
        assert_true(prune);
        assert_int_equal(s.pt[0].rung, 0);
        assert_int_equal(sauron_sched_record(&s, 0, e, 16), 0);
    }
    /* epoch 21: 7.9 is below the window's min 8.0 (epochs 16-20 lost
     * 8.4 .. 8.0); epoch 22: 7.95 lies within [7.9, 8.3]: plateau */
    assert_int_equal(sauron_sched_end_epoch(&s, 7.9, 0.9), 0);
    sauron_sched_update(&s, 21, &prune);
    assert_int_equal(s.pt[0].rung, 0);
    assert_int_equal(sauron_sched_record(&s, 0, 21, 16), 0);
    assert_int_equal(sauron_sched_end_epoch(&s, 7.95, 0.9), 0);
    sauron_sched_update(&s, 22, &prune);
    assert_int_equal(s.pt[0].rung, 1);
    assert_int_equal(s.pt[0].patience, 5);
    assert_int_equal(s.nloss, 22);
    assert_int_equal(s.pt[0].nhist, 22);
    sauron_sched_free(&s);
}

/* ================= budgeted schedule ================= */

static void test_budget_rules(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    /* E = 40: tau climbs 15 rungs in 20 epochs, rung = floor(15 p / 20) */
    assert_int_equal(sauron_budget_rung(&c, 0.0, 40), 0);
    assert_int_equal(sauron_budget_rung(&c, 1.0, 40), 0);
    assert_int_equal(sauron_budget_rung(&c, 2.0, 40), 1);
    assert_int_equal(sauron_budget_rung(&c, 10.5, 40), 7); /* fractional */
    assert_int_equal(sauron_budget_rung(&c, 19.0, 40), 14);
    assert_int_equal(sauron_budget_rung(&c, 20.0, 40), 15);
    assert_int_equal(sauron_budget_rung(&c, 33.0, 40), 15);
    /* 4/3 epochs per rung: rung 4 at exactly p = 16/3 despite rounding */
    assert_int_equal(sauron_budget_rung(&c, 16.0 / 3.0, 40), 4);
    /* pruning in (0, 32], recovery after */
    assert_false(sauron_budget_prune_allowed(&c, 0.0, 40));
    assert_true(sauron_budget_prune_allowed(&c, 0.25, 40));
    assert_true(sauron_budget_prune_allowed(&c, 32.0, 40));
    assert_false(sauron_budget_prune_allowed(&c, 32.5, 40));
    assert_false(sauron_budget_prune_allowed(&c, 40.0, 40));

    /* Dice trend: median of the last 3 below 0.9 - 0.01 */
    const double dip[5] = {0.9, 0.9, 0.5, 0.9, 0.9};
    for (int n = 1; n <= 5; n++) /* one deep dip never breaches */
        assert_false(sauron_dice_breach(dip, n, 0.9, &c));
    const double two[4] = {0.9, 0.88, 0.9, 0.85};
    assert_false(sauron_dice_breach(two, 3, 0.9, &c));
    assert_true(sauron_dice_breach(two, 4, 0.9, &c)); /* 0.88, 0.85 */
    const double edge[3] = {0.89, 0.89, 0.95}; /* median 0.89 = margin */
    assert_false(sauron_dice_breach(edge, 3, 0.9, &c));
    const double low[2] = {0.1, 0.1}; /* fewer than the window */
    assert_false(sauron_dice_breach(low, 2, 0.9, &c));
    const double nan3[3] = {0.1, NAN, 0.1};
    assert_false(sauron_dice_breach(nan3, 3, 0.9, &c));
    assert_false(sauron_dice_breach(low, 2, NAN, &c));
    c.dice_window = 2;                 /* even window: mean of the two */
    const double w2[2] = {0.95, 0.82}; /* 0.885 < 0.89 */
    assert_true(sauron_dice_breach(w2, 2, 0.9, &c));
}

/* E = 10: top at epoch 5, pruning at epochs 1..8, recovery at 9 and 10;
 * Dice stays at the reference, so nothing freezes. */
static void test_budget_ramp_and_recovery(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    SauronSched s;
    const int ch[2] = {32, 16};
    assert_int_equal(sauron_sched_init(&s, &c, 2, ch, 10, 0.9), 0);
    const int want_rung[11] = {0, 3, 6, 9, 12, 15, 15, 15, 15, 15, 15};
    int prune;
    for (int e = 1; e <= 10; e++) {
        /* a mid-epoch query (--prune-every) sees a fractional rung */
        sauron_sched_update(&s, e - 0.5, &prune);
        assert_int_equal(s.pt[0].rung,
                         e - 0.5 >= 5 ? 15 : (int)floor(3 * (e - 0.5)));
        assert_int_equal(prune, e - 0.5 <= 8.0);
        assert_int_equal(sauron_sched_end_epoch(&s, 0.1, 0.9), 0);
        sauron_sched_update(&s, e, &prune);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(s.pt[i].rung, want_rung[e]);
            assert_true(s.pt[i].tau == sauron_ladder_tau(&c, want_rung[e]));
            assert_false(s.pt[i].frozen);
        }
        assert_int_equal(prune, e <= 8);
        if (prune) {
            assert_int_equal(sauron_sched_record(&s, 0, e, 32 - e), 0);
            assert_int_equal(sauron_sched_record(&s, 1, e, 16), 0);
        }
    }
    assert_true(s.pt[0].tau == 0.3);
    assert_int_equal(sauron_point_lost_since(&s.pt[0], 0.0), 8);
    assert_int_equal(sauron_point_lost_since(&s.pt[0], 6.0), 3);
    sauron_sched_free(&s);
}

/* E = 20 (rung = floor(1.5 p)), 3 points, Dice reference 0.9.  Point 1
 * prunes at epoch 5; Dice then stays at 0.85 for epochs 6-8.  At the end of
 * epoch 7 two of the last three are below 0.89: point 1, the only one that
 * lost channels at progress >= 7 - 3, freezes; the check runs before the
 * climb, so it keeps the rung of p = 6 (9).  The others climb on: the
 * windows ending at epochs 8 and 9 still hold Dice from before the freeze
 * and are not judged.  At epoch 16 (0.8, 0.8) nobody still climbing has
 * pruned recently, so every point still climbing freezes. */
static void test_budget_dice_freeze(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    SauronSched s;
    const int ch[3] = {8, 8, 8};
    assert_int_equal(sauron_sched_init(&s, &c, 3, ch, 20, 0.9), 0);
    const double dice[20] = {0.9,  0.9, 0.9, 0.9, 0.9, 0.85, 0.85,
                             0.85, 0.9, 0.9, 0.9, 0.9, 0.9,  0.9,
                             0.8,  0.8, 0.9, 0.9, 0.9, 0.9};
    int prune;
    for (int e = 1; e <= 20; e++) {
        assert_int_equal(sauron_sched_end_epoch(&s, 0.1, dice[e - 1]), 0);
        sauron_sched_update(&s, e, &prune);
        int top = (int)floor(1.5 * e) > 15 ? 15 : (int)floor(1.5 * e);
        if (e < 7) {
            for (int i = 0; i < 3; i++)
                assert_false(s.pt[i].frozen);
        } else {
            assert_true(s.pt[1].frozen);
            assert_int_equal(s.pt[1].rung, 9); /* rung of p = 6 */
            assert_true(s.pt[1].frozen_at == 7.0);
            assert_true(s.pt[1].tau == sauron_ladder_tau(&c, 9));
        }
        if (e < 16) {
            assert_false(s.pt[0].frozen);
            assert_false(s.pt[2].frozen);
            assert_int_equal(s.pt[0].rung, top);
            assert_int_equal(s.pt[2].rung, top);
        } else {
            /* epoch 16: 0.8, 0.8 -> breach, nobody pruned since 13 */
            assert_true(s.pt[0].frozen && s.pt[2].frozen);
            assert_int_equal(s.pt[0].rung, 15);
        }
        if (prune)
            for (int i = 0; i < 3; i++)
                assert_int_equal(
                    sauron_sched_record(&s, i, e, i == 1 && e >= 5 ? 7 : 8),
                    0);
    }
    sauron_sched_free(&s);
}

static void test_best_within_margin(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    SauronBest b;
    memset(&b, 0, sizeof b);
    const double ref = 0.9;
    /* epoch, dice, flops, new best? */
    assert_true(sauron_best_within_margin(&b, 0, 0.90, 100, ref, &c));
    assert_true(sauron_best_within_margin(&b, 1, 0.895, 80, ref, &c));
    assert_false(sauron_best_within_margin(&b, 2, 0.85, 50, ref, &c));
    assert_true(sauron_best_within_margin(&b, 3, 0.891, 60, ref, &c));
    /* exactly at the margin counts, but lower Dice at equal FLOPs loses */
    assert_false(sauron_best_within_margin(&b, 4, 0.89, 60, ref, &c));
    assert_true(sauron_best_within_margin(&b, 5, 0.899, 60, ref, &c));
    assert_false(sauron_best_within_margin(&b, 6, 0.95, 70, ref, &c));
    assert_false(sauron_best_within_margin(&b, 7, NAN, 10, ref, &c));
    assert_true(sauron_best_within_margin(&b, 8, 0.89, 59, ref, &c));
    assert_int_equal(b.epoch, 8);
    assert_true(b.flops == 59 && b.dice == 0.89);
    /* nothing within the margin: no best */
    SauronBest none;
    memset(&none, 0, sizeof none);
    assert_false(sauron_best_within_margin(&none, 1, 0.5, 1, ref, &c));
    assert_false(none.have);
}

static void test_sched_alloc_failure(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    const int ch[4] = {4, 4, 4, 4};
    sl_error_quiet(1);
    for (int k = 0; k < 6; k++) {
        SauronSched s;
        sl_alloc_fail_after(k);
        int rc = sauron_sched_init(&s, &c, 4, ch, 10, 0.9);
        sl_alloc_fail_after(-1);
        if (rc == 0) {
            /* history growth failing is reported, not a crash */
            int ok = 1;
            sl_alloc_fail_after(0);
            for (int e = 0; e < 40 && ok; e++)
                ok = sauron_sched_end_epoch(&s, 1.0, 0.9) == 0;
            sl_alloc_fail_after(-1);
            assert_false(ok);
            sauron_sched_free(&s);
        } else {
            assert_int_equal(rc, ERR_NOMEM);
            assert_null(s.pt);
        }
    }
    sl_error_quiet(0);
    sl_error_reset();
}

/* Checkpoint round trip: a budgeted run with a freeze is saved at epoch 9,
 * reloaded, and both copies continue identically; other settings, wrong
 * bytes and every truncation are refused without a crash. */
static void sched_run(SauronSched *s, int e0, int e1)
{
    int prune;
    for (int e = e0; e <= e1; e++) {
        assert_int_equal(
            sauron_sched_end_epoch(s, 1.0 / e, e == 6 || e == 7 ? 0.8 : 0.9),
            0);
        sauron_sched_update(s, e, &prune);
        for (int i = 0; prune && i < s->npoints; i++)
            assert_int_equal(sauron_sched_record(s, i, e, 20 - (i == 1) * e),
                             0);
    }
}

static void test_sched_checkpoint(void **st)
{
    (void)st;
    SauronSchedConfig c;
    sauron_sched_defaults(&c);
    SauronSched a, b;
    const int ch[3] = {20, 20, 20};
    assert_int_equal(sauron_sched_init(&a, &c, 3, ch, 20, 0.9), 0);
    sched_run(&a, 1, 9);
    assert_true(a.pt[1].frozen && !a.pt[0].frozen);
    ByteWriter w = {0};
    sauron_sched_save(&a, &w);
    assert_int_equal(w.err, 0);
    uint8_t *buf = w.p;
    size_t n = w.n;
    assert_int_equal(sauron_sched_load(&b, buf, n, &c, 20, 3, "ckpt"), 0);
    sched_run(&a, 10, 20);
    sched_run(&b, 10, 20);
    ByteWriter wa = {0}, wb = {0};
    sauron_sched_save(&a, &wa);
    sauron_sched_save(&b, &wb);
    assert_int_equal(wa.err, 0);
    assert_int_equal(wb.err, 0);
    assert_int_equal(wa.n, wb.n);
    assert_memory_equal(wa.p, wb.p, wa.n);
    for (int i = 0; i < 3; i++)
        assert_true(a.pt[i].tau == b.pt[i].tau);
    sauron_sched_free(&b);

    sl_error_quiet(1);
    SauronSchedConfig other = c;
    other.tau_max = 0.4;
    sl_error_reset();
    assert_int_equal(sauron_sched_load(&b, buf, n, &other, 20, 3, "ckpt"),
                     ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--tau-max"));
    sl_error_reset();
    assert_int_equal(sauron_sched_load(&b, buf, n, &c, 30, 3, "ckpt"),
                     ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--epochs"));
    for (size_t k = 0; k < n; k++) /* every truncation */
        assert_int_equal(sauron_sched_load(&b, buf, k, &c, 20, 3, "ckpt"),
                         ERR_FORMAT);
    for (size_t k = 0; k < n; k++) { /* every byte flipped: no crash */
        buf[k] ^= 0xA5;
        if (sauron_sched_load(&b, buf, n, &c, 20, 3, "ckpt") == 0)
            sauron_sched_free(&b);
        buf[k] ^= 0xA5;
    }
    for (int k = 0; k < 8; k++) { /* each allocation failing in turn */
        sl_alloc_fail_after(k);
        int rc = sauron_sched_load(&b, buf, n, &c, 20, 3, "ckpt");
        sl_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == ERR_NOMEM);
        if (rc == 0) sauron_sched_free(&b);
    }
    sl_error_quiet(0);
    sl_error_reset();
    sauron_sched_free(&a);
    bw_free(&w);
    bw_free(&wa);
    bw_free(&wb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ladder),
        cmocka_unit_test(test_config_check),
        cmocka_unit_test(test_plateau_rule),
        cmocka_unit_test(test_convergence_mu),
        cmocka_unit_test(test_paper_patience),
        cmocka_unit_test(test_paper_falling_loss),
        cmocka_unit_test(test_budget_rules),
        cmocka_unit_test(test_budget_ramp_and_recovery),
        cmocka_unit_test(test_budget_dice_freeze),
        cmocka_unit_test(test_best_within_margin),
        cmocka_unit_test(test_sched_alloc_failure),
        cmocka_unit_test(test_sched_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
