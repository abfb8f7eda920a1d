/* Byte compatibility of the files this project writes, and the byte codec
 * (runtime/bytes.h) they are written with.
 *
 * The fixtures in tests/fixtures/codec/ were written by the code that
 * predates runtime/bytes.c (each format had its own reader and writer):
 *   - *.sslim: sauron-compress --no-finetune of three ONNX fixtures
 *     (conv_transpose, instnorm_bn, misc_ops: every parameter kind), and
 *     tiny_unet.sslim, the pruned network below; models/default.sslim too;
 *   - pruned.sslck: a training checkpoint of a tiny U-Net pruned by Sauron
 *     for three epochs with Adam (every section: settings, counters,
 *     history with hook columns, optimiser state, graph, best model, and
 *     the pruner's blob with its schedule), made by this program with
 *     `test_codec --make-fixtures DIR`.
 * The tests check that each still loads, and that writing what was loaded
 * again gives the same bytes (the formats did not change), except where a
 * format grew on purpose: checkpoints gained the TUNE section (minor 1)
 * and the schedule state select_ref (version 2).  The codec's
 * own unit tests are in test_bytes (runtime only, so they also run on
 * aarch64).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/sauron/pruner.h"
#include "compressor/train/checkpoint.h"
#include "compressor/train/loss.h"
#include "runtime/common.h"
#include "runtime/sslim.h"
#include "tests/graphbuild.h"
#include "tests/testutil.h"

/* The tiny pruning run (same shapes as test_pruner's). */
#define B 2
#define HW 16
#define EPOCHS 3

static Shape net_in(void)
{
    Shape s = {4, {B, 1, HW, HW, 0}};
    return s;
}

static float *calib_input(void)
{
    Shape s = net_in();
    size_t n = (size_t)shape_numel(&s);
    float *x = sl_alloc(n * sizeof(float));
    TestRng r = {17};
    trng_fill(&r, x, n, -1.0f, 1.0f);
    return x;
}

static void pruner_cfg(PrunerConfig *c)
{
    pruner_config_default(c);
    c->n_threads = 1;
    c->sched.tau_max = 0.6;
    c->seed = 1234;
    c->prune_guard = 0;
}

static const char *codec_fixture(const char *name, char *buf, size_t len)
{
    char rel[256];
    snprintf(rel, sizeof rel, "codec/%s", name);
    return fixture_path(rel, buf, len);
}

/* ------------------------------------------------ fixture generation */

static int fail_gen(const char *what)
{
    fprintf(stderr, "make-fixtures: %s failed\n", what);
    return 1;
}

static int write_bytes(const char *dir, const char *name, const uint8_t *d,
                       size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return sl_write_file_atomic(path, d, n, 1);
}

static int make_fixtures(const char *dir)
{
    Graph g;
    if (build_unet(&g, 2, 1, 6, 2, 0, 51)) return fail_gen("build_unet");
    PrunerConfig cfg;
    pruner_cfg(&cfg);
    Shape in = net_in();
    float *x = calib_input();
    uint8_t y[B * HW * HW];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < HW; i++)
            for (int j = 0; j < HW; j++) {
                int d = (i - 8 + b) * (i - 8 + b) + (j - 7) * (j - 7);
                y[(b * HW + i) * HW + j] = (uint8_t)(d < 16);
            }
    Pruner *p = NULL;
    Optim *opt = NULL;
    OptimOptions oo;
    optim_options_default(&oo, OPTIM_ADAM);
    if (pruner_create(&g, &cfg, EPOCHS, &p) ||
        pruner_set_calibration(p, x, &in) || pruner_start(p, 0.9, NAN) ||
        optim_create(&oo, &opt))
        return fail_gen("pruner set-up");
    TrainExec *t = NULL;
    if (train_exec_create(&g, &in, 1, &t)) return fail_gen("executor");
    EpochStats hist[EPOCHS];
    memset(hist, 0, sizeof hist);
    for (int e = 1; e <= EPOCHS; e++) {
        double loss = 0;
        for (int it = 0; it < 2; it++) {
            LossOptions lo;
            loss_options_default(&lo, 2);
            LossValue lv;
            double reg = 0;
            train_zero_grads(t);
            if (train_forward(t, x) ||
                train_loss_outputs(t, &lv, y, NULL, &lo) ||
                pruner_regularize(p, t, &reg) || train_backward(t) ||
                optim_step(opt, train_params(t), train_n_params(t), 1e-2f))
                return fail_gen("training step");
            loss += (lv.total + reg) / 2;
        }
        if (pruner_end_epoch(p, e, loss, 0.9, NAN))
            return fail_gen("end_epoch");
        int changed = 0;
        if (pruner_step(p, opt, e, &changed)) return fail_gen("prune step");
        if (changed) {
            train_exec_free(t);
            t = NULL;
            if (train_exec_create(&g, &in, 1, &t)) return fail_gen("rebuild");
        }
        EpochStats *s = &hist[e - 1];
        s->epoch = e;
        s->lr = 1e-2;
        s->train_loss = loss;
        s->train_extra = pruner_last_reg(p);
        s->val_loss = NAN;
        s->n_classes = 2;
        s->val_dice[0] = NAN;
        s->val_dice[1] = 0.9 - 0.01 * e;
        s->val_dice_mean = s->val_dice[1];
        s->seconds = 0.25 * e;
        s->step_seconds = 0.01;
        s->data_wait = 0.0;
        s->flops = pruner_flops(p);
        s->params = 1000 - e;
        s->n_columns = 2;
        s->columns[0] = pruner_last_reg(p);
        s->columns[1] = (double)pruner_point_channels(p, 0);
    }
    train_exec_free(t);
    Checkpoint c;
    memset(&c, 0, sizeof c);
    c.settings = "epochs=3\nlambda=0.5\nseed=1234\n";
    c.epoch = EPOCHS;
    c.best_epoch = pruner_best_epoch(p);
    c.n_hist = EPOCHS;
    c.hist = hist;
    if (ckpt_capture_optim(&c, opt, &g)) return fail_gen("capture optim");
    if (sslim_encode(&g, &c.graph, &c.graph_n)) return fail_gen("graph");
    const Graph *best = pruner_best(p);
    if (best && sslim_encode(best, &c.best, &c.best_n))
        return fail_gen("best");
    if (pruner_save(p, &c.hook, &c.hook_n)) return fail_gen("pruner_save");
    char path[1024];
    snprintf(path, sizeof path, "%s/pruned.sslck", dir);
    if (ckpt_write(path, &c)) return fail_gen("ckpt_write");
    if (write_bytes(dir, "tiny_unet.sslim", c.graph, c.graph_n))
        return fail_gen("tiny_unet.sslim");
    fprintf(stderr,
            "make-fixtures: %s/pruned.sslck (best kind %s, epoch %d)\n", dir,
            best == &g ? "current"
            : best     ? "copy"
                       : "none",
            c.best_epoch);
    c.settings = NULL;
    c.hist = NULL;
    ckpt_free(&c);
    optim_free(opt);
    pruner_free(p);
    graph_free(&g);
    sl_free(x);
    return 0;
}

/* ----------------------------------------------- old files still load */

static uint8_t *slurp(const char *path, size_t *n)
{
    uint8_t *d = NULL;
    assert_int_equal(sl_read_file(path, &d, n), 0);
    return d;
}

/* Decode, encode again: the same bytes. */
static void expect_sslim_reencodes(const char *path)
{
    size_t n = 0, m = 0;
    uint8_t *old = slurp(path, &n), *again = NULL;
    Graph g;
    graph_init(&g);
    assert_int_equal(sslim_decode(old, n, path, &g), 0);
    assert_true(g.n_nodes > 0);
    assert_int_equal(sslim_encode(&g, &again, &m), 0);
    if (m != n || memcmp(old, again, n))
        fprintf(stderr, "%s: re-encoded bytes differ (%zu vs %zu)\n", path, m,
                n);
    assert_int_equal(m, n);
    assert_memory_equal(old, again, n);
    sl_free(again);
    sl_free(old);
    graph_free(&g);
}

/* A resume compares the settings both ways, naming the first difference;
 * a key recorded only by later versions (tune_decision) is accepted with
 * any value when the run folder lacks it, and compared when it has it. */
static void test_settings_diff(void **state)
{
    (void)state;
    char why[200];
    const char *saved = "epochs=3\nseed=1\n";
    assert_int_equal(
        ckpt_settings_diff(saved, "epochs=3\nseed=1\n", why, sizeof why), 0);
    assert_int_equal(
        ckpt_settings_diff(saved, "epochs=4\nseed=1\n", why, sizeof why), 1);
    assert_string_equal(why, "epochs=3 in the run folder, epochs=4 now");
    assert_int_equal(ckpt_settings_diff(saved,
                                        "epochs=3\nseed=1\nfov_aug=0.5\n",
                                        why, sizeof why),
                     1);
    assert_string_equal(why, "fov_aug=(none) in the run folder, "
                             "fov_aug=0.5 now");
    assert_int_equal(ckpt_settings_diff(saved,
                                        "epochs=3\nseed=1\ntune_decision=0\n",
                                        why, sizeof why),
                     0);
    assert_int_equal(ckpt_settings_diff("epochs=3\ntune_decision=1\n",
                                        "epochs=3\ntune_decision=0\n", why,
                                        sizeof why),
                     1);
    assert_string_equal(why, "tune_decision=1 in the run folder, "
                             "tune_decision=0 now");
    /* the run folder's key is still required now */
    assert_int_equal(ckpt_settings_diff("epochs=3\ntune_decision=1\n",
                                        "epochs=3\n", why, sizeof why),
                     1);
}

static void test_old_sslim_files(void **state)
{
    (void)state;
    const char *names[] = {"conv_transpose.sslim", "instnorm_bn.sslim",
                           "misc_ops.sslim", "tiny_unet.sslim"};
    char path[1024];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        expect_sslim_reencodes(codec_fixture(names[i], path, sizeof path));
    expect_sslim_reencodes("models/default.sslim");
}

static void test_old_checkpoint(void **state)
{
    (void)state;
    char path[1024];
    codec_fixture("pruned.sslck", path, sizeof path);
    Checkpoint c;
    assert_int_equal(ckpt_read(path, &c), 0);
    /* what the generator put there */
    assert_string_equal(c.settings, "epochs=3\nlambda=0.5\nseed=1234\n");
    assert_int_equal(c.epoch, EPOCHS);
    assert_int_equal(c.n_hist, EPOCHS);
    for (int e = 0; e < EPOCHS; e++) {
        assert_int_equal(c.hist[e].epoch, e + 1);
        assert_int_equal(c.hist[e].n_classes, 2);
        assert_true(isnan(c.hist[e].val_loss));
        assert_int_equal(c.hist[e].n_columns, 2);
    }
    assert_true(c.n_opt > 0);
    assert_non_null(c.opt[0].v); /* Adam */
    assert_non_null(c.hook);
    /* minor version 0 has no TUNE section: every epoch reads as not
     * tuned */
    assert_int_equal(c.have_tune, 0);
    for (int e = 0; e < EPOCHS; e++)
        assert_true(isnan(c.hist[e].val_dice_tuned));
    /* written again: the same sections, plus TUNE (minor version 1) */
    const char *again = test_tmp_path("again.sslck");
    assert_int_equal(ckpt_write(again, &c), 0);
    Checkpoint d;
    assert_int_equal(ckpt_read(again, &d), 0);
    assert_int_equal(d.have_tune, 1);
    assert_string_equal(d.settings, c.settings);
    assert_int_equal(d.epoch, c.epoch);
    assert_int_equal(d.best_epoch, c.best_epoch);
    assert_int_equal(d.n_hist, c.n_hist);
    for (int e = 0; e < EPOCHS; e++) /* NaNs included: compare the bits */
        assert_memory_equal(&d.hist[e], &c.hist[e], sizeof d.hist[e]);
    assert_int_equal(d.n_opt, c.n_opt);
    assert_int_equal(d.graph_n, c.graph_n);
    assert_memory_equal(d.graph, c.graph, c.graph_n);
    assert_int_equal(d.hook_n, c.hook_n);
    assert_memory_equal(d.hook, c.hook, c.hook_n);
    size_t n_old = 0, n_new = 0;
    uint8_t *b_old = slurp(path, &n_old), *b_new = slurp(again, &n_new);
    /* TUNE: tag, size, 3 doubles, CRC */
    assert_int_equal(n_new, n_old + 4 + 8 + EPOCHS * 8 + 4);
    assert_int_equal(b_new[12], 1); /* minor */
    sl_free(b_old);
    sl_free(b_new);
    ckpt_free(&d);
    remove(again);

    /* the network and the pruner's blob inside it */
    Graph g;
    graph_init(&g);
    assert_int_equal(sslim_decode(c.graph, c.graph_n, "GRPH", &g), 0);
    uint8_t *m = NULL;
    size_t mn = 0;
    assert_int_equal(sslim_encode(&g, &m, &mn), 0);
    assert_int_equal(mn, c.graph_n);
    assert_memory_equal(m, c.graph, mn);
    sl_free(m);
    PrunerConfig cfg;
    pruner_cfg(&cfg);
    Shape in = net_in();
    float *x = calib_input();
    Pruner *p = NULL;
    assert_int_equal(pruner_create(&g, &cfg, EPOCHS, &p), 0);
    assert_int_equal(pruner_set_calibration(p, x, &in), 0);
    assert_int_equal(pruner_load(p, c.hook, c.hook_n, "pruned.sslck"), 0);
    uint8_t *blob = NULL;
    size_t bn = 0;
    assert_int_equal(pruner_save(p, &blob, &bn), 0);
    /* the schedule state is now version 2: select_ref (NaN here, the
     * run chose by the Dice as trained) follows dice_ref; the rest is
     * the same bytes */
    assert_true(isnan(pruner_sched(p)->select_ref));
    assert_int_equal(bn, c.hook_n + 8);
    Pruner *q = NULL;
    assert_int_equal(pruner_create(&g, &cfg, EPOCHS, &q), 0);
    assert_int_equal(pruner_set_calibration(q, x, &in), 0);
    assert_int_equal(pruner_load(q, blob, bn, "again"), 0);
    uint8_t *blob2 = NULL;
    size_t bn2 = 0;
    assert_int_equal(pruner_save(q, &blob2, &bn2), 0);
    assert_int_equal(bn2, bn);
    assert_memory_equal(blob2, blob, bn);
    sl_free(blob2);
    pruner_free(q);
    /* the run pruned something, so the comparison covers a real state */
    int lost = 0;
    for (int i = 0; i < pruner_n_points(p); i++)
        lost += pruner_point_channels0(p, i) - pruner_point_channels(p, i);
    assert_true(lost > 0);
    sl_free(blob);
    pruner_free(p);
    graph_free(&g);
    sl_free(x);
    ckpt_free(&c);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--make-fixtures"))
        return make_fixtures(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_old_sslim_files),
        cmocka_unit_test(test_old_checkpoint),
        cmocka_unit_test(test_settings_diff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
