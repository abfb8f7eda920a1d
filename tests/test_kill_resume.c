/* kill -9 at 20 random moments of a short Sauron pruning run, each
 * resumed: every resumed run ends with the uninterrupted run's model and
 * run folder, byte for byte (checkpoint, best network, split, Sauron
 * summaries; no temporary file of the kill left), except the wall-clock
 * fields no two runs share: the time columns of epochs.csv and
 * sauron_epochs.csv, the same keys of their .jsonl twins and
 * summary.txt's "wall time" line.  Those must still hold a number in
 * every row: a resume keeps the times of the epochs it did not rerun.
 * In make check-long (about 20 pruning runs' time);
 * test_kill_resume_quick runs the first 3 of the same moments in make
 * test.
 *
 * The run is test_sauron_cli's phantom pruning run cut to 4 epochs (same
 * model, phantom and flags).  The moments are drawn with a fixed seed,
 * uniformly over the uninterrupted run's duration, so some land before
 * the first checkpoint (then the run is started again, as a user would
 * after "--resume: no checkpoint"), some inside checkpoint writes, some
 * between epochs.  A run that ends before its moment is not counted and
 * the moment is drawn again over a span 10% shorter (the machine's load
 * changes a run's length): the test needs KILLS real kills. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "runtime/common.h"
#include "tests/testutil.h"

#ifndef KILLS
#define KILLS 20
#endif
#define FLAGS                                                                \
    "--tau-max 0.45 --keep-head-input --max-dice-drop 0.02 --lambda 1.0 "    \
    "--prune-every 5 --prune-guard 0.01 "                                    \
    "--epochs 4 --iters-per-epoch 15 --batch 8 --threads 2 --seed 1"
#define MODEL "tests/fixtures/sauron/phantom_unet.onnx"

static char g_ds[512];

static int setup(void **state)
{
    (void)state;
    snprintf(g_ds, sizeof g_ds, "%s/Dataset910_SauronPhantom", test_tmpdir());
    char cmd[1024], err[256];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/make_phantom.py %s --cases 8 --test 2 "
             "--size 32,32,16 >/dev/null",
             g_ds);
    return run_cmd(cmd, err, sizeof err) == 0 ? 0 : -1;
}

/* The wall-clock fields of the run folder's reports. */
static int is_time_key(const char *k, size_t n)
{
    static const char *const keys[] = {"seconds", "step_seconds",
                                       "data_wait"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (strlen(keys[i]) == n && !strncmp(k, keys[i], n)) return 1;
    return 0;
}

/* A time value a resume kept: a finite number, not "nan" or null. */
static void assert_time_value(const char *file, const char *v, size_t n)
{
    char buf[64], *end;
    assert_true(n > 0 && n < sizeof buf);
    memcpy(buf, v, n);
    buf[n] = '\0';
    double x = strtod(buf, &end);
    if (*end || !isfinite(x) || x < 0)
        fprintf(stderr, "%s: time field '%s' is not a time\n", file, buf);
    assert_true(*end == '\0' && isfinite(x) && x >= 0);
}

/* Append the n bytes at p to the string *out (of length *len). */
static void put(char **out, size_t *len, const char *p, size_t n)
{
    *out = realloc(*out, *len + n + 1);
    assert_non_null(*out);
    memcpy(*out + *len, p, n);
    *len += n;
    (*out)[*len] = '\0';
}

/* The CSV text without the columns whose header is a time key; every
 * dropped value must be a time. */
static char *csv_without_times(const char *file, const char *text)
{
    char *out = NULL;
    size_t len = 0;
    int drop[256] = {0}, header = 1;
    put(&out, &len, "", 0);
    for (const char *line = text; *line; line++, header = 0) {
        const char *end = line + strcspn(line, "\n");
        for (int col = 0;; col++) {
            const char *f = line;
            size_t fl = strcspn(f, ",\n");
            assert_true(col < 256);
            if (header) drop[col] = is_time_key(f, fl);
            if (drop[col] && !header) assert_time_value(file, f, fl);
            if (!drop[col]) {
                put(&out, &len, f, fl);
                put(&out, &len, ",", 1);
            }
            line = f + fl;
            if (line >= end) break;
            line++; /* the comma */
        }
        put(&out, &len, "\n", 1);
        if (!*line) break;
    }
    return out;
}

/* The JSON lines without the values of the time keys; each must be a
 * time. */
static char *jsonl_without_times(const char *file, const char *text)
{
    char *out = NULL;
    size_t len = 0;
    put(&out, &len, "", 0);
    for (const char *p = text; *p;) {
        const char *q = strchr(p, '"');
        if (!q) {
            put(&out, &len, p, strlen(p));
            break;
        }
        const char *e = strchr(q + 1, '"');
        assert_non_null(e);
        put(&out, &len, p, (size_t)(e + 1 - p));
        p = e + 1;
        if (is_time_key(q + 1, (size_t)(e - q - 1)) && !strncmp(p, ": ", 2)) {
            size_t vl = strcspn(p + 2, ",}");
            assert_time_value(file, p + 2, vl);
            p += 2 + vl;
        }
    }
    return out;
}

/* summary.txt without its "wall time" line. */
static char *summary_without_time(const char *text)
{
    char *out = NULL;
    size_t len = 0;
    put(&out, &len, "", 0);
    for (const char *line = text; *line;) {
        size_t ll = strcspn(line, "\n") + (line[strcspn(line, "\n")] != 0);
        if (strncmp(line, "wall time", 9)) put(&out, &len, line, ll);
        line += ll;
    }
    return out;
}

/* The text of a report with wall-clock fields without them (a new
 * string), or NULL for the other files: those must be identical byte
 * for byte. */
static char *deterministic_part(const char *dir, const char *name)
{
    size_t n = strlen(name);
    int csv = n > 4 && !strcmp(name + n - 4, ".csv");
    int jsonl = n > 6 && !strcmp(name + n - 6, ".jsonl");
    int summary = !strcmp(name, "summary.txt");
    if (!csv && !jsonl && !summary) return NULL;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = slurp_text(path), *r;
    assert_non_null(text);
    if (csv)
        r = csv_without_times(path, text);
    else if (jsonl)
        r = jsonl_without_times(path, text);
    else
        r = summary_without_time(text);
    free(text);
    return r;
}

/* Sorted names of dir's files; NULL-terminated. */
static char **list_dir(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    char **v = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        v = realloc(v, (size_t)(n + 2) * sizeof *v);
        assert_non_null(v);
        v[n] = strdup(e->d_name);
        assert_non_null(v[n++]);
        v[n] = NULL;
    }
    closedir(d);
    assert_non_null(v);
    for (int i = 1; i < n; i++) /* insertion sort: a dozen names */
        for (int j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
            char *x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return v;
}

/* The two run folders hold the same files (a temporary file a kill left
 * must be gone), each the same but for the wall-clock fields (binary
 * files: byte for byte).  Returns the number of files compared. */
static int assert_run_dirs_same(const char *a, const char *b)
{
    char **x = list_dir(a), **y = list_dir(b);
    int i = 0;
    for (; x[i] && y[i]; i++) {
        if (strcmp(x[i], y[i]))
            fprintf(stderr, "run folders differ: %s vs %s\n", x[i], y[i]);
        assert_string_equal(x[i], y[i]);
        char pa[1200], pb[1200];
        snprintf(pa, sizeof pa, "%s/%s", a, x[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, y[i]);
        char *ta = deterministic_part(a, x[i]);
        char *tb = deterministic_part(b, y[i]);
        int same = ta ? !strcmp(ta, tb) : files_equal(pa, pb);
        if (!same) fprintf(stderr, "\n%s differs from %s\n", pb, pa);
        assert_true(same);
        free(ta);
        free(tb);
    }
    if (x[i] || y[i])
        fprintf(stderr, "run folders differ: %s only in %s\n",
                x[i] ? x[i] : y[i], x[i] ? a : b);
    assert_true(!x[i] && !y[i]);
    for (int k = 0; x[k]; k++)
        free(x[k]);
    for (int k = 0; y[k]; k++)
        free(y[k]);
    free(x);
    free(y);
    return i;
}

static void test_kill(void **state)
{
    (void)state;
    char bin[512], ref[600], out[600], cmd[2600], err[512], pidf[700],
        ck[700], refrun[700], run[700];
    const char *tmp = test_tmpdir();
    bin_path("sauron-compress", bin, sizeof bin);
    snprintf(ref, sizeof ref, "%s/ref.sslim", tmp);
    snprintf(refrun, sizeof refrun, "%s.run", ref);
    double t0 = sl_now();
    snprintf(cmd, sizeof cmd, "%s %s %s --data %s " FLAGS " >/dev/null", bin,
             MODEL, ref, g_ds);
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
        snprintf(run, sizeof run, "%s.run", out);
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
            /* the next try writes the same names */
            snprintf(cmd, sizeof cmd, "rm -rf %s %s.run", out, out);
            assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
            continue;
        }
        int rc = run_cmd(cmd, err, sizeof err);
        int eq = rc == 0 && files_equal(ref, out);
        fprintf(stderr, "kill %2d at %5ld ms: %s: exit %d, model %s", k, ms,
                how, rc, eq ? "identical" : "DIFFERS");
        assert_int_equal(rc, 0);
        assert_true(eq);
        int nf = assert_run_dirs_same(refrun, run);
        fprintf(stderr, ", run folder identical (%d files)\n", nf);
        same++;
        k++;
    }
    fprintf(stderr, "%d/%d killed runs identical\n", same, KILLS);
    assert_int_equal(same, KILLS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
