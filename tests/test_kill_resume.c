/* kill -9 at 20 random moments of a short Sauron pruning run, each
 * resumed: every resumed run ends with the uninterrupted run's model, byte
 * for byte, and with its checkpoint (the network, the best network, the
 * optimiser state, the pruner's state and the settings byte for byte; the
 * epoch history too except its wall-clock fields, which no two runs
 * share).  In make check-long (about 20 pruning runs' time).
 *
 * The run is test_sauron_cli's phantom pruning run cut to 4 epochs (same
 * model, phantom and flags).  The moments are drawn with a fixed seed,
 * uniformly over the uninterrupted run's duration, so some land before
 * the first checkpoint (then the run is started again, as a user would
 * after "--resume: no checkpoint"), some inside checkpoint writes, some
 * between epochs.  A run that ends before its moment is not counted and
 * the moment is drawn again over a span 10% shorter (the machine's load
 * changes a run's length): the test needs 20 real kills. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "compressor/train/checkpoint.h"
#include "runtime/common.h"
#include "tests/testutil.h"

#define KILLS 20
#define FLAGS                                                                 \
    "--tau-max 0.45 --keep-head-input --max-dice-drop 0.02 --lambda 1.0 "    \
    "--prune-every 5 --prune-guard 0.01 "                                    \
    "--epochs 4 --iters-per-epoch 15 --batch 8 --threads 2 --seed 1"
#define MODEL "tests/fixtures/sauron/phantom_unet.onnx"

static char g_ds[512];

static int setup(void **state)
{
    (void)state;
    snprintf(g_ds, sizeof g_ds, "%s/Dataset910_SauronPhantom",
             test_tmpdir());
    char cmd[1024], err[256];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/make_phantom.py %s --cases 8 --test 2 "
             "--size 32,32,16 >/dev/null",
             g_ds);
    return run_cmd(cmd, err, sizeof err) == 0 ? 0 : -1;
}

/* Two checkpoints equal but for the wall-clock fields of the history. */
static void assert_ckpt_same(const char *a, const char *b)
{
    Checkpoint x, y;
    assert_int_equal(ckpt_read(a, &x), 0);
    assert_int_equal(ckpt_read(b, &y), 0);
    assert_string_equal(x.settings, y.settings);
    assert_int_equal(x.epoch, y.epoch);
    assert_int_equal(x.best_epoch, y.best_epoch);
    assert_int_equal(x.n_hist, y.n_hist);
    for (int i = 0; i < x.n_hist; i++) {
        EpochStats s = x.hist[i], t = y.hist[i];
        s.seconds = t.seconds = 0;
        s.step_seconds = t.step_seconds = 0;
        s.data_wait = t.data_wait = 0;
        assert_memory_equal(&s, &t, sizeof s);
    }
    assert_int_equal(x.n_opt, y.n_opt);
    for (int i = 0; i < x.n_opt; i++) {
        assert_string_equal(x.opt[i].name, y.opt[i].name);
        assert_int_equal(x.opt[i].numel, y.opt[i].numel);
        assert_int_equal(x.opt[i].step, y.opt[i].step);
        assert_memory_equal(x.opt[i].m, y.opt[i].m,
                            (size_t)x.opt[i].numel * 4);
        assert_int_equal(x.opt[i].v != NULL, y.opt[i].v != NULL);
        if (x.opt[i].v)
            assert_memory_equal(x.opt[i].v, y.opt[i].v,
                                (size_t)x.opt[i].numel * 4);
    }
    assert_int_equal(x.graph_n, y.graph_n);
    assert_memory_equal(x.graph, y.graph, x.graph_n);
    assert_int_equal(x.best_n, y.best_n);
    if (x.best_n) assert_memory_equal(x.best, y.best, x.best_n);
    assert_int_equal(x.hook_n, y.hook_n);
    if (x.hook_n) assert_memory_equal(x.hook, y.hook, x.hook_n);
    ckpt_free(&x);
    ckpt_free(&y);
}

static void test_kill_20(void **state)
{
    (void)state;
    char bin[512], ref[600], out[600], cmd[2600], err[512], pidf[700],
        ck[700], refck[700];
    const char *tmp = test_tmpdir();
    bin_path("sauron-compress", bin, sizeof bin);
    snprintf(ref, sizeof ref, "%s/ref.sslim", tmp);
    snprintf(refck, sizeof refck, "%s.run/checkpoint.sslck", ref);
    double t0 = sl_now();
    snprintf(cmd, sizeof cmd, "%s %s %s --data %s " FLAGS " >/dev/null",
             bin, MODEL, ref, g_ds);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    long total_ms = (long)((sl_now() - t0) * 1000);
    fprintf(stderr, "uninterrupted run: %ld ms\n", total_ms);
    srand(20261206);
    int same = 0, k = 0;
    long span = total_ms;
    /* a run that ends before its kill is no kill: draw again over a
     * shorter span (load changes a run's length), at most 60 tries */
    for (int tries = 0; k < KILLS && tries < 60; tries++) {
        long ms = 50 + (long)((double)rand() / RAND_MAX * (double)span);
        snprintf(out, sizeof out, "%s/kill%02d.sslim", tmp, k);
        snprintf(pidf, sizeof pidf, "%s.pid", out);
        snprintf(ck, sizeof ck, "%s.run/checkpoint.sslck", out);
        snprintf(cmd, sizeof cmd,
                 "%s %s %s --data %s " FLAGS " >/dev/null 2>&1 & echo $! > "
                 "%s",
                 bin, MODEL, out, g_ds, pidf);
        assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
        FILE *f = fopen(pidf, "r");
        long pid = 0;
        assert_non_null(f);
        assert_int_equal(fscanf(f, "%ld", &pid), 1);
        fclose(f);
        sleep_ms(ms);
        int finished = sl_file_exists(out);
        kill((pid_t)pid, SIGKILL);
        for (int i = 0; i < 500 && kill((pid_t)pid, 0) == 0; i++)
            sleep_ms(20);
        const char *how = "";
        if (!finished && sl_file_exists(ck)) {
            how = "resumed";
            snprintf(cmd, sizeof cmd,
                     "%s %s %s --data %s --resume " FLAGS " >/dev/null", bin,
                     MODEL, out, g_ds);
        } else if (!finished) {
            /* before the first checkpoint: --resume refuses ("no
             * checkpoint"), so start again in a clean folder */
            how = "restarted (no checkpoint yet)";
            snprintf(cmd, sizeof cmd,
                     "rm -rf %s.run && %s %s %s --data %s " FLAGS
                     " >/dev/null",
                     out, bin, MODEL, out, g_ds);
        }
        if (finished) {
            fprintf(stderr, "(run ended before %ld ms: not counted)\n", ms);
            span = span * 9 / 10;
            continue;
        }
        int rc = run_cmd(cmd, err, sizeof err);
        int eq = rc == 0 && files_equal(ref, out);
        fprintf(stderr, "kill %2d at %5ld ms: %s: exit %d, model %s\n", k,
                ms, how, rc, eq ? "identical" : "DIFFERS");
        assert_int_equal(rc, 0);
        assert_true(eq);
        assert_ckpt_same(refck, ck);
        same++;
        k++;
    }
    fprintf(stderr, "%d/%d killed runs identical\n", same, KILLS);
    assert_int_equal(same, KILLS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_20),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
