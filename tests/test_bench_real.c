/* The real-data benchmark scripts, end to end on a tiny setup:
 * tools/plot_run.py (PNG of a sauron-compress run folder) and
 * tools/bench_real.sh (`make bench`: baseline vs --no-prune control vs
 * Sauron, our runtime vs ONNX Runtime and PyTorch).
 *
 * The tiny setup: the phantom of tools/make_phantom.py (nnU-Net layout,
 * 3 classes) and tests/fixtures/sauron/phantom_unet.onnx, a U-Net trained
 * on it (see test_sauron_cli.c).  bench_real.sh gets that phantom as its
 * brain dataset ($REAL/data/Dataset001_BrainExtraction), the model as
 * BASELINE_BRAIN, and EPOCHS of 2 x 5 iterations, so a whole run takes
 * seconds while every step (copy, Sauron and control fine-tunes, eval,
 * speed of all three engines at batches 1 and 4, goal lines, plot) runs.
 * The tables are checked against their sources (sauron-inspect, the
 * sauron-eval CSVs, the peers' own lines), not only for their form.
 * The 3D task (TASKS=brain3d) runs the same way on a 3D phantom with a
 * tiny 3D U-Net that tools/train_baseline3d.sh trains in a few
 * iterations (so that script's path is exercised too), with the EXTRA
 * rows (paper schedule, best recipe); its speed table has our rows only.
 *
 * Needs /usr/bin/python3 with torch, onnx, nibabel, matplotlib and
 * onnxruntime-node in $SL_BUILD/node (tools/deps.sh bench): part of
 * `make check-long`, not of `make test`.  Runs from the repository root.
 * The bench tests run in order on one $REAL (the cache is the point).
 */
#include "testutil.h"

#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BASELINE "tests/fixtures/sauron/phantom_unet.onnx"
#define PHANTOM_TRAIN 8
#define PHANTOM_TEST 2
#define MAX_TOK 16
/* columns of plot_run's epoch table, and of both bench tables (accuracy
 * with the phantom's 2 foreground classes; speed) */
#define EPOCH_COLS 7
#define ROW_COLS 9

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Run `cmd` with stdout into `out` and stderr into `err` (paths in the
 * temporary folder); returns the exit status. */
static int run_to(const char *cmd, const char *out, const char *err)
{
    char full[4096];
    snprintf(full, sizeof full, "( %s >'%s' 2>'%s' )", cmd,
             test_tmp_path(out), test_tmp_path(err));
    return run_cmd(full, NULL, 0);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Exactly one stderr line, starting with `prefix`. */
static void assert_one_error(const char *err_name, const char *prefix)
{
    char *e = slurp_text(test_tmp_path(err_name));
    assert_non_null(e);
    fprintf(stderr, "stderr: %s", e);
    assert_int_equal(count_lines(e), 1);
    if (strncmp(e, prefix, strlen(prefix)))
        fail_msg("stderr does not start with '%s': %s", prefix, e);
    free(e);
}

/* A PNG: the signature, an IHDR chunk first, width and height > 0. */
static void assert_png(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'P',  'N',  'G',
                                         '\r', '\n', 0x1a, '\n'};
    unsigned char h[24];
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("no PNG at %s", path);
    size_t n = fread(h, 1, sizeof h, f);
    fclose(f);
    assert_int_equal(n, sizeof h);
    assert_memory_equal(h, sig, 8);
    assert_memory_equal(h + 8, "\0\0\0\015IHDR", 8);
    uint32_t w = (uint32_t)h[16] << 24 | (uint32_t)h[17] << 16 |
                 (uint32_t)h[18] << 8 | h[19];
    uint32_t ht = (uint32_t)h[20] << 24 | (uint32_t)h[21] << 16 |
                  (uint32_t)h[22] << 8 | h[23];
    fprintf(stderr, "%s: PNG %u x %u\n", path, w, ht);
    assert_true(w > 0 && w < 100000 && ht > 0 && ht < 100000);
}

/* Split a line (up to '\n') into whitespace-separated tokens in buf. */
static int tokens(const char *line, char *buf, size_t len, char **tok)
{
    size_t n = strcspn(line, "\n");
    if (n >= len) n = len - 1;
    memcpy(buf, line, n);
    buf[n] = 0;
    int k = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, " \t", &save); t && k < MAX_TOK;
         t = strtok_r(NULL, " \t", &save))
        tok[k++] = t;
    return k;
}

/* The one line of `text` of `ncol` tokens whose first tokens are w1 (and
 * w2 unless NULL), split into tok; returns ncol, 0 if there is no such
 * line, and fails if there are several. */
static int find_row(const char *text, int ncol, const char *w1,
                    const char *w2, char *buf, size_t len, char **tok)
{
    int found = 0, nt = 0;
    char line[1024], *t[MAX_TOK];
    for (const char *p = text; *p; p = strchr(p, '\n') + 1) {
        int k = tokens(p, line, sizeof line, t);
        if (k == ncol && !strcmp(t[0], w1) && (!w2 || !strcmp(t[1], w2))) {
            if (found++) fail_msg("two rows '%s %s'", w1, w2 ? w2 : "");
            nt = tokens(p, buf, len, tok);
        }
        if (!strchr(p, '\n')) break;
    }
    return nt;
}

/* A number, the whole token (after dropping one trailing `suffix` char
 * if given); fails otherwise. */
static double num(const char *s, char suffix)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    size_t n = strlen(buf);
    if (suffix && n && buf[n - 1] == suffix) buf[n - 1] = 0;
    char *end;
    double v = strtod(buf, &end);
    if (end == buf || *end || !isfinite(v))
        fail_msg("'%s' is not a number", s);
    return v;
}

/* The line starting with `prefix` (its text from there), or NULL. */
static const char *line_with(const char *text, const char *prefix)
{
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, prefix, strlen(prefix))) return p;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

/* ------------------------------------------------------------ fixtures */

/* The phantom dataset at `dir` (sizes as "X,Y,Z"). */
static void make_phantom(const char *dir, const char *size)
{
    char cmd[1024], err[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/make_phantom.py '%s' --cases %d --test "
             "%d --size %s >/dev/null",
             dir, PHANTOM_TRAIN, PHANTOM_TEST, size);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fail_msg("make_phantom.py: exit %d: %s", st, err);
}

/* A sauron-compress run of the phantom model (3 epochs) into run_dir. */
static void make_run(const char *run_dir, const char *out, const char *flags)
{
    static int have_ds;
    const char *ds = test_tmp_path("Dataset910_SauronPhantom");
    if (!have_ds) make_phantom(ds, "32,32,16");
    have_ds = 1;
    char bin[300], cmd[3000], err[512];
    snprintf(cmd, sizeof cmd,
             "%s " BASELINE
             " '%s' --data '%s' --epochs 3 --iters-per-epoch 5 "
             "--batch 4 --threads 2 --seed 1 --run-dir '%s' --force %s "
             ">/dev/null",
             bin_path("sauron-compress", bin, sizeof bin), out, ds, run_dir,
             flags);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fail_msg("sauron-compress for %s: exit %d: %s", run_dir, st, err);
}

static int plot_run(const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/plot_run.py %s", args);
    return run_to(cmd, "plot.out", "plot.err");
}

/* ------------------------------------------------------------ plot_run */

/* A pruning run (sauron_epochs.csv with channels per point) and a
 * --no-prune run (sizes from epochs.csv): a PNG, and the stdout table with
 * one row per epoch 0..3, parameters shrinking only in the pruning run. */
static void check_plot(const char *name, const char *flags, int pruned)
{
    char base[520], run[600], model[600], png[600], args[2000];
    snprintf(base, sizeof base, "%s", test_tmp_path(name));
    snprintf(run, sizeof run, "%s.run", base);
    snprintf(model, sizeof model, "%s.sslim", base);
    snprintf(png, sizeof png, "%s.png", base);
    make_run(run, model, flags);
    snprintf(args, sizeof args, "'%s' '%s' --title 'test %s'", run, png,
             name);
    int st = plot_run(args);
    if (st) fail_msg("plot_run.py on %s: exit %d", run, st);
    assert_png(png);
    char *out = slurp_text(test_tmp_path("plot.out"));
    assert_non_null(out);
    fputs(out, stderr);
    char buf[1024], *tok[MAX_TOK];
    double p0 = 0, p3 = 0;
    for (int e = 0; e <= 3; e++) {
        char ep[8];
        snprintf(ep, sizeof ep, "%d", e);
        /* epoch seconds step_s GFLOPs params channels dice_mean */
        int k = find_row(out, EPOCH_COLS, ep, NULL, buf, sizeof buf, tok);
        if (!k) fail_msg("%s: no 7-column row for epoch %d", name, e);
        double params = num(tok[4], 0), dice = num(tok[6], 0);
        assert_true(num(tok[1], 0) >= 0 && num(tok[3], 0) > 0 && params > 0);
        assert_true(dice >= 0 && dice <= 1);
        if (e == 0) p0 = params;
        if (e == 3) p3 = params;
    }
    if (pruned)
        assert_true(p3 < p0);
    else
        assert_true(p3 == p0);
    free(out);
}

static void test_plot_pruning_run(void **state)
{
    (void)state;
    check_plot("prune", "--lambda 1.0 --tau-max 0.45 --prune-every 5", 1);
}

static void test_plot_noprune_run(void **state)
{
    (void)state;
    check_plot("noprune", "--no-prune", 0);
}

/* An existing PNG is kept without --force and replaced with it. */
static void test_plot_no_clobber(void **state)
{
    (void)state;
    char run[520], png[520];
    snprintf(run, sizeof run, "%s", test_tmp_path("noprune.run"));
    snprintf(png, sizeof png, "%s", test_tmp_path("clobber.png"));
    if (access(run, F_OK))
        make_run(run, test_tmp_path("noprune.sslim"), "--no-prune");
    FILE *f = fopen(png, "w");
    assert_non_null(f);
    fputs("keep", f);
    fclose(f);
    char args[1500];
    snprintf(args, sizeof args, "'%s' '%s'", run, png);
    assert_int_not_equal(plot_run(args), 0);
    assert_one_error("plot.err", "error: plot_run: ");
    char *e = slurp_text(test_tmp_path("plot.err"));
    assert_non_null(strstr(e, "--force"));
    free(e);
    char *kept = slurp_text(png);
    assert_string_equal(kept, "keep");
    free(kept);
    snprintf(args, sizeof args, "'%s' '%s' --force", run, png);
    assert_int_equal(plot_run(args), 0);
    assert_png(png);
}

/* A missing folder, an empty one, and epochs.csv files that are not a
 * trainer's: one error line each, exit non-zero, no PNG. */
static void test_plot_bad_run_dirs(void **state)
{
    (void)state;
    static const struct {
        const char *name, *csv; /* csv NULL: no epochs.csv */
    } bad[] = {
        {"bad_empty", NULL},
        {"bad_no_epoch_column", "step,seconds\n1,0.5\n"},
        {"bad_not_a_number", "epoch,seconds\n0,0.1\n1,fast\n"},
        {"bad_no_rows", "epoch,seconds\n"},
        {"bad_no_seconds", "epoch,dice_mean\n0,0.5\n"},
    };
    char args[1500], png[520];
    snprintf(png, sizeof png, "%s", test_tmp_path("bad.png"));
    snprintf(args, sizeof args, "'%s' '%s'", test_tmp_path("no_such.run"),
             png);
    assert_int_not_equal(plot_run(args), 0);
    assert_one_error("plot.err", "error: plot_run: ");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char dir[520];
        snprintf(dir, sizeof dir, "%s", test_tmp_path(bad[i].name));
        assert_int_equal(mkdir(dir, 0755), 0);
        if (bad[i].csv) {
            char p[700];
            snprintf(p, sizeof p, "%s/epochs.csv", dir);
            FILE *f = fopen(p, "w");
            assert_non_null(f);
            fputs(bad[i].csv, f);
            fclose(f);
        }
        fprintf(stderr, "%s: ", bad[i].name);
        snprintf(args, sizeof args, "'%s' '%s'", dir, png);
        assert_int_not_equal(plot_run(args), 0);
        assert_one_error("plot.err", "error: plot_run: ");
        assert_int_not_equal(access(png, F_OK), 0);
    }
}

/* ---------------------------------------------------------- bench_real */

static char g_real[512];
static int g_first_ok;
static double g_first_s;
/* the task the table checks read (its folder in REAL and the input
 * shape of its FLOPs column) */
static const char *g_task = "brain";
static const char *g_shape = "1,1,224,192";

static const char *real(const char *name)
{
    static char buf[8][700];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_real, name);
    return buf[k];
}

/* TASKS=brain sh tools/bench_real.sh with `env` added; stdout and stderr
 * into out/err in the temporary folder.  Returns the exit status. */
static int bench(const char *env, const char *real_dir, const char *out,
                 const char *err)
{
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "env TASKS=brain REAL='%s' BUILD='%s' %s sh tools/bench_real.sh",
             real_dir, test_build_dir(), env);
    double t0 = now_s();
    int st = run_to(cmd, out, err);
    fprintf(stderr, "bench_real %s: exit %d, %.1f s\n", env, st,
            now_s() - t0);
    return st;
}

/* (sum, count) of column `col` (1 = dice, 2 = hd95) of the row `cls`
 * ("1", "mean", ...) over REAL/brain/pred/MODEL/ *.csv. */
static double csv_mean(const char *model, const char *cls, int col)
{
    char pat[800];
    snprintf(pat, sizeof pat, "%s/%s/pred/%s/*.csv", g_real, g_task, model);
    glob_t g;
    assert_int_equal(glob(pat, 0, NULL, &g), 0);
    assert_int_equal(g.gl_pathc, PHANTOM_TEST);
    double sum = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        char *s = slurp_text(g.gl_pathv[i]);
        assert_non_null(s);
        char key[16];
        snprintf(key, sizeof key, "\n%s,", cls);
        const char *p = strstr(s, key);
        if (!p) fail_msg("%s: no row %s", g.gl_pathv[i], cls);
        p += strlen(key);
        for (int c = 1; c < col; c++)
            p = strchr(p, ',') + 1;
        sum += strtod(p, NULL);
        free(s);
    }
    globfree(&g);
    return sum / PHANTOM_TEST;
}

/* "N parameters" of sauron-inspect on REAL/brain/MODEL.sslim. */
static long inspect_params(const char *model)
{
    char bin[300], cmd[2000];
    snprintf(cmd, sizeof cmd, "%s '%s/%s/%s.sslim' --shape %s",
             bin_path("sauron-inspect", bin, sizeof bin), g_real, g_task,
             model, g_shape);
    assert_int_equal(run_to(cmd, "inspect.out", "inspect.err"), 0);
    char *s = slurp_text(test_tmp_path("inspect.out"));
    const char *t = line_with(s, "total:");
    assert_non_null(t);
    const char *p = strstr(t, " layers, ");
    assert_non_null(p);
    long v = strtol(p + 9, NULL, 10);
    free(s);
    return v;
}

/* The accuracy row of `model`: numeric columns agreeing with their
 * sources; returns its mean Dice and sets *gflops_cut (the FLOPs -%). */
static double check_accuracy_row(const char *out, const char *model,
                                 int with_csv, double *gflops_cut)
{
    char buf[1024], *tok[MAX_TOK];
    /* model params -% GFLOPs -% organ1 organ2 Dice HD95 */
    int k = find_row(out, ROW_COLS, model, NULL, buf, sizeof buf, tok);
    if (!k) fail_msg("no 9-column accuracy row '%s'", model);
    double params = num(tok[1], 0), gflops = num(tok[3], 0);
    double cut_p = num(tok[2], '%'), cut_f = num(tok[4], '%');
    double d1 = num(tok[5], 0), d2 = num(tok[6], 0), dice = num(tok[7], 0);
    double hd = num(tok[8], 0);
    assert_true(gflops > 0 && hd >= 0);
    assert_true(cut_p >= 0 && cut_p < 100 && cut_f >= 0 && cut_f < 100);
    assert_true(d1 >= 0 && d1 <= 1 && d2 >= 0 && d2 <= 1);
    /* the columns hold what the script says: params from sauron-inspect,
     * Dice and HD95 the means of the sauron-eval CSVs (printed to 4 and
     * 2 decimals) */
    assert_true(params == (double)inspect_params(model));
    if (with_csv) {
        assert_true(fabs(d1 - csv_mean(model, "1", 1)) <= 0.5e-4 + 1e-9);
        assert_true(fabs(d2 - csv_mean(model, "2", 1)) <= 0.5e-4 + 1e-9);
        assert_true(fabs(dice - csv_mean(model, "mean", 1)) <= 0.5e-4 + 1e-9);
        assert_true(fabs(hd - csv_mean(model, "mean", 2)) <= 0.5e-2 + 1e-9);
    }
    /* every case has both classes, so the mean of the class columns is
     * the mean column (each rounded to 4 decimals) */
    assert_true(fabs(dice - (d1 + d2) / 2) <= 1.01e-4);
    *gflops_cut = cut_f;
    return dice;
}

/* The speed row "engine model": numeric, agree >= 0.999 for the peers;
 * returns volume ms and sets *mb to the peak MB. */
static double check_speed_row(const char *out, const char *engine,
                              const char *model, double *mb)
{
    char buf[1024], *tok[MAX_TOK];
    /* engine model batch ms vs-ORT peak-MB vs-ORT-same base-MB agree */
    int k = find_row(out, ROW_COLS, engine, model, buf, sizeof buf, tok);
    if (!k) fail_msg("no 9-column speed row '%s %s'", engine, model);
    double ms = num(tok[3], 0);
    *mb = num(tok[5], 0);
    assert_true(ms > 0 && *mb > 0);
    if (!strcmp(engine, "ours")) {
        assert_string_equal(tok[2], "auto");
        assert_string_equal(tok[8], "ref");
    } else {
        /* the peer's faster of PEER_BATCHES "1 4" */
        assert_true(!strcmp(tok[2], "1") || !strcmp(tok[2], "4"));
        assert_true(num(tok[7], 0) > 0);
        assert_true(num(tok[8], 0) >= 0.999 && num(tok[8], 0) <= 1);
    }
    num(tok[4], 'x');
    return ms;
}

/* Both tables, the goal lines and the plot line of a full (not QUICK)
 * run's stdout. */
static void check_full_output(const char *out)
{
    assert_non_null(
        line_with(out, "== brain: accuracy on the held-out cases (2 "));
    double cb, cc, cs;
    double db = check_accuracy_row(out, "baseline", 1, &cb);
    check_accuracy_row(out, "control", 1, &cc);
    double ds = check_accuracy_row(out, "sauron", 1, &cs);
    assert_true(cb == 0 && cc == 0); /* the baseline is the reference;
                                        the control prunes nothing */
    assert_true(inspect_params("sauron") <= inspect_params("baseline"));
    assert_true(inspect_params("control") == inspect_params("baseline"));

    assert_non_null(line_with(out, "== brain: one held-out volume ("));
    double mb_os, mb_ob, mb_rs, mb_rb, mb_ts, mb_tb;
    double os = check_speed_row(out, "ours", "sauron", &mb_os);
    check_speed_row(out, "ours", "baseline", &mb_ob);
    double rs = check_speed_row(out, "ort", "sauron", &mb_rs);
    double rb = check_speed_row(out, "ort", "baseline", &mb_rb);
    check_speed_row(out, "torch", "sauron", &mb_ts);
    check_speed_row(out, "torch", "baseline", &mb_tb);

    /* the goal lines restate the tables */
    const char *g = line_with(out, "goal FLOPs: ");
    assert_non_null(g);
    double cut, a, b;
    if (sscanf(g,
               "goal FLOPs: %lf%% fewer (goal >= 90%%) with mean Dice %lf "
               "vs %lf",
               &cut, &a, &b) != 3)
        fail_msg("goal FLOPs line: %.200s", g);
    /* the goal line prints the table's own column: same 1-decimal value */
    assert_true(fabs(cut - cs) <= 1e-9);
    assert_true(a == ds && b == db);
    g = line_with(out, "goal speed: ");
    assert_non_null(g);
    double x1, x2;
    if (sscanf(g,
               "goal speed: ours on the Sauron model is %lfx faster than "
               "ORT on the baseline (goal >= 10x) and %lfx faster than "
               "ORT on the Sauron model",
               &x1, &x2) != 2)
        fail_msg("goal speed line: %.200s", g);
    /* printed with 1 and 2 decimals */
    assert_true(fabs(x1 - rb / os) <= 0.05 + 1e-9);
    assert_true(fabs(x2 - rs / os) <= 0.005 + 1e-9);
    g = line_with(out, "goal memory: ");
    assert_non_null(g);
    double m1, m2;
    if (sscanf(g,
               "goal memory: ours %lf MB vs ORT %lf MB peak on the Sauron "
               "model",
               &m1, &m2) != 2)
        fail_msg("goal memory line: %.200s", g);
    assert_true(fabs(m1 - mb_os) <= 0.5 + 1e-9 &&
                fabs(m2 - mb_rs) <= 0.5 + 1e-9);

    /* the Sauron run: plot_run's table (epochs 0..2) and the PNG */
    assert_non_null(line_with(out, "== brain: the Sauron run ("));
    char buf[1024], *tok[MAX_TOK];
    assert_int_equal(
        find_row(out, EPOCH_COLS, "2", NULL, buf, sizeof buf, tok), 7);
    char plot[800];
    snprintf(plot, sizeof plot, "plot: %s", real("brain/sauron_run.png"));
    assert_non_null(line_with(out, plot));
    assert_png(real("brain/sauron_run.png"));
    assert_non_null(line_with(out, "control (--no-prune, same length): "));
}

/* First run: the baseline copied, both fine-tunes, every step. */
static void test_bench_real_first_run(void **state)
{
    (void)state;
    snprintf(g_real, sizeof g_real, "%s", test_tmp_path("real"));
    make_phantom(real("data/Dataset001_BrainExtraction"), "64,64,32");
    double t0 = now_s();
    int st = bench("BASELINE_BRAIN=" BASELINE
                   " EPOCHS='--epochs 2 --iters-per-epoch 5'",
                   g_real, "b1.out", "b1.err");
    g_first_s = now_s() - t0;
    char *out = slurp_text(test_tmp_path("b1.out")),
         *err = slurp_text(test_tmp_path("b1.err"));
    fputs(out, stderr);
    if (st) fail_msg("bench_real.sh: exit %d: %s", st, err);
    /* the override reached sauron-compress */
    assert_non_null(
        strstr(err, "sauron-compress --epochs 2 --iters-per-epoch 5 "));
    assert_null(strstr(err, "making the datasets"));
    check_full_output(out);
    free(out);
    free(err);
    g_first_ok = 1;
}

typedef struct {
    char path[800], copy[800];
    struct timespec mtime;
} Cached;

/* Remember path's mtime and bytes (a copy in the temporary folder). */
static void snap(Cached *c, const char *path, int i)
{
    struct stat st;
    snprintf(c->path, sizeof c->path, "%s", path);
    if (stat(path, &st)) fail_msg("%s missing after the first run", path);
    c->mtime = st.st_mtim;
    char name[32], cmd[2000];
    snprintf(name, sizeof name, "cached.%d", i);
    snprintf(c->copy, sizeof c->copy, "%s", test_tmp_path(name));
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, c->copy);
    assert_int_equal(run_cmd(cmd, NULL, 0), 0);
}

/* Second run on the same REAL: nothing trained or evaluated again.  The
 * baseline source and EPOCHS are made unusable, so a step that ran again
 * would fail the run; the cached files keep mtime and bytes, the
 * accuracy table is the same.  (Faster, too, but the fine-tunes take
 * about a second of a ~10 s run, less than the timing noise on a shared
 * machine: the times are printed, not compared.) */
static void test_bench_real_cached(void **state)
{
    (void)state;
    if (!g_first_ok) fail_msg("needs test_bench_real_first_run");
    static char names[][64] = {"brain/baseline.onnx", "brain/sauron.sslim",
                               "brain/control.sslim", "brain/sauron.log",
                               "brain/control.log"};
    enum { N_FIXED = sizeof names / sizeof *names };
    Cached c[N_FIXED + 2 * 3 * PHANTOM_TEST];
    int n = 0;
    for (int i = 0; i < N_FIXED; i++, n++)
        snap(&c[n], real(names[i]), n);
    char pat[800];
    snprintf(pat, sizeof pat, "%s/brain/pred/*/*.csv", g_real);
    glob_t g;
    assert_int_equal(glob(pat, 0, NULL, &g), 0);
    assert_int_equal(g.gl_pathc, 3 * PHANTOM_TEST);
    for (size_t i = 0; i < g.gl_pathc; i++, n++)
        snap(&c[n], g.gl_pathv[i], n);
    char *acc1 = slurp_text(real("brain/accuracy.txt"));

    double t0 = now_s();
    int st = bench("BASELINE_BRAIN=/nonexistent/baseline.onnx "
                   "EPOCHS='--epochs not-a-number'",
                   g_real, "b2.out", "b2.err");
    double t = now_s() - t0;
    fprintf(stderr, "first run %.1f s, cached run %.1f s\n", g_first_s, t);
    char *out = slurp_text(test_tmp_path("b2.out")),
         *err = slurp_text(test_tmp_path("b2.err"));
    if (st) fail_msg("cached bench_real.sh: exit %d: %s", st, err);
    assert_non_null(strstr(err, "sauron: cached "));
    assert_non_null(strstr(err, "control: cached "));
    for (int i = 0; i < n; i++) {
        struct stat s;
        assert_int_equal(stat(c[i].path, &s), 0);
        if (s.st_mtim.tv_sec != c[i].mtime.tv_sec ||
            s.st_mtim.tv_nsec != c[i].mtime.tv_nsec)
            fail_msg("%s was written again", c[i].path);
        if (!files_equal(c[i].path, c[i].copy))
            fail_msg("%s changed", c[i].path);
    }
    char *acc2 = slurp_text(real("brain/accuracy.txt"));
    assert_string_equal(acc1, acc2);
    check_full_output(out);
    globfree(&g);
    free(acc1);
    free(acc2);
    free(out);
    free(err);
}

/* A peer whose labels differ from ours: `node` on PATH wrapped to report
 * 1% of the voxels differing.  The tables are still printed, then one
 * error line and exit 1. */
static void test_bench_real_disagreeing_peer(void **state)
{
    (void)state;
    if (!g_first_ok) fail_msg("needs test_bench_real_first_run");
    char node[512] = "";
    FILE *p = popen("command -v node", "r");
    assert_non_null(p);
    if (!fgets(node, sizeof node, p)) node[0] = 0;
    pclose(p);
    node[strcspn(node, "\n")] = 0;
    assert_true(node[0] == '/');
    char dir[520];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("fakebin"));
    assert_int_equal(mkdir(dir, 0755), 0);
    char fake[700];
    snprintf(fake, sizeof fake, "%s/node", dir);
    FILE *f = fopen(fake, "w");
    assert_non_null(f);
    fprintf(f,
            "#!/bin/sh\n'%s' \"$@\" | sed 's/^agree [0-9.]*/agree "
            "0.99000000/'\n",
            node);
    fclose(f);
    assert_int_equal(chmod(fake, 0755), 0);
    char env[1200];
    snprintf(env, sizeof env, "PATH='%s':\"$PATH\"", dir);
    int st = bench(env, g_real, "b3.out", "b3.err");
    assert_int_equal(st, 1);
    char *out = slurp_text(test_tmp_path("b3.out"));
    char buf[1024], *tok[MAX_TOK];
    assert_int_equal(
        find_row(out, ROW_COLS, "ort", "sauron", buf, sizeof buf, tok), 9);
    assert_string_equal(tok[8], "0.99000000");
    assert_int_equal(
        find_row(out, ROW_COLS, "torch", "sauron", buf, sizeof buf, tok), 9);
    assert_true(num(tok[8], 0) >= 0.999);
    free(out);
    char *err = slurp_text(test_tmp_path("b3.err"));
    int n_err = 0;
    for (const char *l = err; l && *l;) {
        n_err += !strncmp(l, "error: ", 7);
        l = strchr(l, '\n');
        if (l) l++;
    }
    assert_int_equal(n_err, 1);
    assert_non_null(strstr(err, "error: bench_real: brain: a peer's labels "
                                "differ from ours on more than 0.1% of the "
                                "voxels"));
    free(err);
}

/* A build folder without the binaries, and an unknown task: one error
 * line, exit 1, nothing made. */
static void test_bench_real_errors(void **state)
{
    (void)state;
    char nob[520];
    snprintf(nob, sizeof nob, "%s", test_tmp_path("nobuild"));
    assert_int_equal(mkdir(nob, 0755), 0);
    char cmd[2000];
    snprintf(cmd, sizeof cmd,
             "env TASKS=brain REAL='%s' BUILD='%s' sh tools/bench_real.sh",
             test_tmp_path("real_nobuild"), nob);
    assert_int_equal(run_to(cmd, "e.out", "e.err"), 1);
    assert_one_error("e.err", "error: bench_real: ");
    char *e = slurp_text(test_tmp_path("e.err"));
    assert_non_null(strstr(e, "/bin/sauron-compress missing"));
    free(e);
    assert_int_not_equal(access(test_tmp_path("real_nobuild"), F_OK), 0);

    snprintf(cmd, sizeof cmd,
             "env TASKS=nosuch REAL='%s' BUILD='%s' sh tools/bench_real.sh",
             test_tmp_path("real_nosuch"), test_build_dir());
    assert_int_equal(run_to(cmd, "e.out", "e.err"), 1);
    assert_one_error("e.err", "error: bench_real: unknown task 'nosuch'");
    assert_int_not_equal(access(test_tmp_path("real_nosuch/data"), F_OK), 0);
}

/* QUICK=1 on a REAL holding only the dataset: the baseline architecture
 * exported untrained (tools/train_baseline.py --iters 0), the shipped
 * model as the Sauron model; speed rows for both, accuracy only for
 * Sauron, no FLOPs goal, no run to plot. */
static void test_bench_real_quick_untrained(void **state)
{
    (void)state;
    if (!g_first_ok) fail_msg("needs test_bench_real_first_run");
    char r2[520];
    snprintf(r2, sizeof r2, "%s", test_tmp_path("real_quick"));
    assert_int_equal(mkdir(r2, 0755), 0);
    char link[700];
    snprintf(link, sizeof link, "%s/data", r2);
    assert_int_equal(symlink(real("data"), link), 0);
    int st = bench("QUICK=1", r2, "q1.out", "q1.err");
    char *out = slurp_text(test_tmp_path("q1.out")),
         *err = slurp_text(test_tmp_path("q1.err"));
    fputs(out, stderr);
    if (st) fail_msg("QUICK bench_real.sh: exit %d: %s", st, err);
    char buf[1024], *tok[MAX_TOK];
    assert_non_null(line_with(out, "baseline: untrained weights"));
    assert_int_equal(
        find_row(out, ROW_COLS, "sauron", NULL, buf, sizeof buf, tok), 9);
    assert_int_equal(
        find_row(out, ROW_COLS, "baseline", NULL, buf, sizeof buf, tok), 0);
    assert_int_equal(
        find_row(out, ROW_COLS, "control", NULL, buf, sizeof buf, tok), 0);
    double mb;
    check_speed_row(out, "ours", "baseline", &mb);
    check_speed_row(out, "ort", "baseline", &mb);
    check_speed_row(out, "torch", "baseline", &mb);
    check_speed_row(out, "ours", "sauron", &mb);
    assert_null(line_with(out, "goal FLOPs: "));
    assert_non_null(line_with(out, "goal speed: "));
    assert_null(line_with(out, "== brain: the Sauron run"));
    free(out);
    free(err);
}

/* QUICK=1 on the first run's REAL: the cached trained baseline is used
 * (rows baseline and sauron, the goal FLOPs line); the Sauron model is
 * now the shipped one and its run folder is gone. */
static void test_bench_real_quick_cached(void **state)
{
    (void)state;
    if (!g_first_ok) fail_msg("needs test_bench_real_first_run");
    int st = bench("QUICK=1", g_real, "q2.out", "q2.err");
    char *out = slurp_text(test_tmp_path("q2.out")),
         *err = slurp_text(test_tmp_path("q2.err"));
    if (st) fail_msg("QUICK bench_real.sh: exit %d: %s", st, err);
    double cut;
    check_accuracy_row(out, "baseline", 1, &cut);
    char buf[1024], *tok[MAX_TOK];
    assert_int_equal(
        find_row(out, ROW_COLS, "sauron", NULL, buf, sizeof buf, tok), 9);
    assert_int_equal(
        find_row(out, ROW_COLS, "control", NULL, buf, sizeof buf, tok), 0);
    assert_null(line_with(out, "baseline: untrained weights"));
    assert_non_null(line_with(out, "goal FLOPs: "));
    assert_true(
        files_equal("models/default.sslim", real("brain/sauron.sslim")));
    assert_int_not_equal(access(real("brain/sauron.run"), F_OK), 0);
    assert_null(line_with(out, "== brain: the Sauron run"));
    free(out);
    free(err);
}

/* ------------------------------------------------------------ brain3d */

#define DS3D "data/Dataset003_BrainExtraction2mm"

/* `env BUILD=... ENV sh tools/SCRIPT.sh DS ONNX`, the baselines our
 * trainer trains, run twice: the first run must succeed and write ONNX
 * (its stdout and stderr in *o and *e, for the caller to check and
 * free); the second must refuse to replace it with one error line that
 * names the script. */
static void train_twice(const char *script, const char *env, const char *ds,
                        const char *onnx, char **o, char **e)
{
    /* onnx and ds may sit in test_tmp_path's ring of buffers, which the
     * calls below turn over: copy them first */
    char cmd[3000], prefix[100], out[700];
    snprintf(out, sizeof out, "%s", onnx);
    snprintf(cmd, sizeof cmd, "env BUILD='%s' %s sh tools/%s.sh '%s' '%s'",
             test_build_dir(), env, script, ds, out);
    int st = run_to(cmd, "t.out", "t.err");
    if (st)
        fail_msg("%s.sh: exit %d: %s", script, st,
                 slurp_text(test_tmp_path("t.err")));
    *e = slurp_text(test_tmp_path("t.err"));
    *o = slurp_text(test_tmp_path("t.out"));
    assert_non_null(*e);
    assert_non_null(*o);
    assert_int_equal(access(out, F_OK), 0);
    assert_int_equal(run_to(cmd, "t.out", "t.err") != 0, 1);
    snprintf(prefix, sizeof prefix, "error: %s: ", script);
    assert_one_error("t.err", prefix);
}

/* tools/train_baseline3d.sh with tiny knobs: a 3D U-Net (16^3 input, 3
 * levels of 4-8-16 features) trained from scratch on the 3D phantom in 6
 * iterations (the first stage, kept as tiny3d.stage1.onnx), fine-tuned 2
 * more (the second stage), written as ONNX as trained (neither stage
 * tunes its decision rule); run again, it refuses to replace it with one
 * error line. */
static void test_train_baseline3d(void **state)
{
    (void)state;
    snprintf(g_real, sizeof g_real, "%s", test_tmp_path("real3d"));
    make_phantom(real(DS3D), "64,64,32");
    char *o, *e;
    train_twice("train_baseline3d",
                "EPOCHS=2 ITERS=3 PATCH=16 LEVELS=3 BASE=4 MAX_FEAT=16 "
                "FT_EPOCHS=1 FT_ITERS=2",
                real(DS3D), test_tmp_path("tiny3d.onnx"), &o, &e);
    assert_non_null(strstr(e, "epoch 2/2"));
    assert_non_null(strstr(e, "epoch 1/1"));
    assert_int_equal(access(test_tmp_path("tiny3d.stage1.onnx"), F_OK), 0);
    assert_int_equal(
        access(test_tmp_path("tiny3d.ft.run/checkpoint.sslck"), F_OK), 0);
    /* the class count came from dataset.json (the phantom's 3), the
     * input is the PATCH asked for */
    assert_non_null(strstr(o, "input [1,1,16,16,16], 3 classes"));
    /* baselines are written as trained: no stage tuned its decision */
    assert_null(strstr(o, "decision: "));
    free(e);
    free(o);
}

/* tools/train_baseline2d.sh with tiny knobs: train_baseline.py's 2D
 * U-Net, seeded and untrained, trained by our trainer on the 2D phantom
 * for 2 iterations and written as ONNX with the class count of
 * dataset.json, without the second stage (FT_EPOCHS=0: no stage1 file);
 * run again, it refuses to replace it with one error line that names the
 * script (the checks it shares with the 3D script), as it does a
 * FT_EPOCHS that is not a whole number. */
static void test_train_baseline2d(void **state)
{
    (void)state;
    const char *ds = test_tmp_path("Dataset911_Tiny2D");
    make_phantom(ds, "32,32,8");
    char *o, *e;
    train_twice("train_baseline2d", "EPOCHS=1 ITERS=2 BATCH=2 FT_EPOCHS=0",
                ds, test_tmp_path("tiny2d.onnx"), &o, &e);
    assert_non_null(strstr(e, "epoch 1/1"));
    assert_int_not_equal(access(test_tmp_path("tiny2d.stage1.onnx"), F_OK),
                         0);
    assert_non_null(strstr(o, "wrote "));
    assert_non_null(strstr(o, "2D, 64 nodes, 5142"));
    assert_non_null(strstr(o, "3 classes"));
    assert_null(strstr(o, "decision: "));
    free(e);
    free(o);
    char cmd[2000];
    snprintf(
        cmd, sizeof cmd,
        "env BUILD='%s' FT_EPOCHS=2x sh tools/train_baseline2d.sh '%s' '%s'",
        test_build_dir(), ds, test_tmp_path("never2d.onnx"));
    assert_int_not_equal(run_to(cmd, "t.out", "t.err"), 0);
    assert_one_error("t.err", "error: train_baseline2d: FT_EPOCHS must be");
}

/* TASKS=brain3d with that model as the baseline and EXTRA="paper best":
 * five accuracy rows checked against their sources, speed rows for our
 * segment only (no peer row, no speed goal), the goal FLOPs line, the
 * run's plot and every fine-tune's wall time. */
static void test_bench_real_brain3d(void **state)
{
    (void)state;
    const char *model = test_tmp_path("tiny3d.onnx");
    if (access(model, F_OK)) fail_msg("needs test_train_baseline3d");
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "env TASKS=brain3d REAL='%s' BUILD='%s' BASELINE_BRAIN3D='%s' "
             "EPOCHS='--epochs 2 --iters-per-epoch 5' EXTRA='paper best' "
             "RUNS=1 sh tools/bench_real.sh",
             g_real, test_build_dir(), model);
    int st = run_to(cmd, "b3d.out", "b3d.err");
    char *out = slurp_text(test_tmp_path("b3d.out")),
         *err = slurp_text(test_tmp_path("b3d.err"));
    fputs(out, stderr);
    if (st) fail_msg("bench_real.sh brain3d: exit %d: %s", st, err);
    /* the length override and the 3D batch reached every fine-tune */
    assert_non_null(strstr(err, "sauron: sauron-compress --epochs 2 "
                                "--iters-per-epoch 5 --batch 1 "));
    assert_non_null(strstr(err, "paper: sauron-compress --epochs 2 "
                                "--iters-per-epoch 5 --batch 1 "));
    assert_non_null(strstr(err, "--schedule paper"));
    assert_non_null(strstr(err, "best: sauron-compress --epochs 2 "));
    assert_null(strstr(err, "making "));

    g_task = "brain3d";
    g_shape = "1,1,64,64,64";
    assert_non_null(
        line_with(out, "== brain3d: accuracy on the held-out cases (2 "));
    assert_non_null(line_with(out, "GFLOPs per 64,64,64 patch"));
    double cut, db, ds;
    db = check_accuracy_row(out, "baseline", 1, &cut);
    assert_true(cut == 0);
    check_accuracy_row(out, "control", 1, &cut);
    assert_true(cut == 0);
    ds = check_accuracy_row(out, "sauron", 1, &cut);
    check_accuracy_row(out, "paper", 1, &cut);
    check_accuracy_row(out, "best", 1, &cut);
    assert_true(inspect_params("control") == inspect_params("baseline"));

    assert_non_null(line_with(out, "== brain3d: one held-out volume ("));
    assert_non_null(strstr(out, "_0000.nii.gz, 64x64x32), "));
    char buf[1024], *tok[MAX_TOK];
    /* engine model batch ms vs-ORT peak-MB vs-ORT-same base-MB agree,
     * the ratios to ORT n/a */
    static const char *const ours[] = {"sauron", "baseline"};
    for (int i = 0; i < 2; i++) {
        if (!find_row(out, ROW_COLS, "ours", ours[i], buf, sizeof buf, tok))
            fail_msg("no 9-column speed row 'ours %s'", ours[i]);
        assert_string_equal(tok[2], "auto");
        assert_true(num(tok[3], 0) > 0 && num(tok[5], 0) > 0);
        assert_string_equal(tok[4], "n/a");
        assert_string_equal(tok[6], "n/a");
        assert_string_equal(tok[8], "ref");
    }
    assert_int_equal(
        find_row(out, ROW_COLS, "ort", "baseline", buf, sizeof buf, tok), 0);
    assert_int_equal(
        find_row(out, ROW_COLS, "torch", "sauron", buf, sizeof buf, tok), 0);
    assert_non_null(line_with(out, "3D model: our sliding window only"));
    assert_null(line_with(out, "goal speed: "));
    const char *g = line_with(out, "goal FLOPs: ");
    assert_non_null(g);
    double c2, a, b;
    if (sscanf(g,
               "goal FLOPs: %lf%% fewer (goal >= 90%%) with mean Dice %lf "
               "vs %lf",
               &c2, &a, &b) != 3)
        fail_msg("goal FLOPs line: %.200s", g);
    assert_true(a == ds && b == db);

    assert_non_null(line_with(out, "== brain3d: the Sauron run ("));
    assert_png(real("brain3d/sauron_run.png"));
    assert_non_null(line_with(out, "control (--no-prune, same length): "));
    assert_non_null(line_with(out, "paper (same length): "));
    assert_non_null(line_with(out, "best (same length): "));
    g_task = "brain";
    g_shape = "1,1,224,192";
    free(out);
    free(err);
}

/* QUICK=1 with brain3d, and an unknown EXTRA row: one error line each,
 * exit 1, nothing made. */
static void test_bench_real_brain3d_errors(void **state)
{
    (void)state;
    char cmd[2000];
    snprintf(cmd, sizeof cmd,
             "env TASKS='brain brain3d' QUICK=1 REAL='%s' BUILD='%s' sh "
             "tools/bench_real.sh",
             test_tmp_path("real_q3d"), test_build_dir());
    assert_int_equal(run_to(cmd, "e.out", "e.err"), 1);
    assert_one_error("e.err", "error: bench_real: QUICK runs 2D tasks only");
    assert_int_not_equal(access(test_tmp_path("real_q3d/data"), F_OK), 0);
    snprintf(cmd, sizeof cmd,
             "env TASKS=brain3d REAL='%s' BUILD='%s' EXTRA='best fastest' sh "
             "tools/bench_real.sh",
             test_tmp_path("real_x3d"), test_build_dir());
    assert_int_equal(run_to(cmd, "e.out", "e.err"), 1);
    assert_one_error("e.err",
                     "error: bench_real: EXTRA: unknown row 'fastest'");
    assert_int_not_equal(access(test_tmp_path("real_x3d/data"), F_OK), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plot_pruning_run),
        cmocka_unit_test(test_plot_noprune_run),
        cmocka_unit_test(test_plot_no_clobber),
        cmocka_unit_test(test_plot_bad_run_dirs),
        cmocka_unit_test(test_bench_real_first_run),
        cmocka_unit_test(test_bench_real_cached),
        cmocka_unit_test(test_bench_real_disagreeing_peer),
        cmocka_unit_test(test_bench_real_errors),
        cmocka_unit_test(test_bench_real_quick_untrained),
        cmocka_unit_test(test_bench_real_quick_cached),
        cmocka_unit_test(test_train_baseline2d),
        cmocka_unit_test(test_train_baseline3d),
        cmocka_unit_test(test_bench_real_brain3d),
        cmocka_unit_test(test_bench_real_brain3d_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
