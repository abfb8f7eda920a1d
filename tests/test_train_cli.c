/* sauron-compress --data DIR --no-prune end to end, on phantom datasets
 * from tools/make_phantom.py (5 cases of 32x32x16, background + organ1)
 * with the e2e2d fixture (2D, 1 modality, 2 classes):
 *   - a run writes the model (.sslim and .onnx), metadata from
 *     dataset.json, reports and checkpoint in the run folder, one stderr
 *     line per epoch; segment runs the fine-tuned model on a training
 *     scan with organ Dice > 0.8 against its label; a 3D model
 *     and a deep-supervision model (3 heads, 3 classes) train too;
 *   - kill -9 in the middle of a run, then --resume: the output is
 *     byte-identical to an uninterrupted run's;
 *   - --resume refuses another model's run folder (both model checksums
 *     shown) and other settings (the flag named);
 *   - a damaged checkpoint (empty, truncated inside the magic, a section
 *     header, a payload or the last CRC; a byte flipped; another file; a
 *     newer version): --resume refuses it with one line naming the file
 *     and saying to start again without --resume; the file is kept;
 *   - disk full (RLIMIT_FSIZE) while writing the final model: one line,
 *     no output or temporary file, the checkpoint intact and still
 *     resumable to the uninterrupted run's model;
 *   - bad input (dataset without dataset.json, a case missing a modality
 *     or its label, a label outside the declared ones, grids that differ,
 *     no training cases, --batch 0, an unknown flag, out-of-range values,
 *     a patch the network cannot take): one stderr line, non-zero exit,
 *     no output and no run folder;
 *   - a learning rate that makes the loss NaN: non-zero exit, the message
 *     names the epoch, no output.
 * Needs /usr/bin/python3 with numpy and nibabel (skipped otherwise). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "compressor/compress_cli.h"
#include "compressor/data/json.h"
#include "compressor/onnx/onnx_import.h"
#include "compressor/sha256.h"
#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/sslim.h"
#include "tests/testutil.h"

#define MODEL "tests/fixtures/torch/e2e2d.onnx"
#define OTHER_MODEL "tests/fixtures/torch/classic2d.onnx"

static int have_data;
static char good[512];

typedef struct {
    int status;
    int lines;       /* stderr lines */
    char err[8192];  /* all of stderr (truncated) */
    char last[1024]; /* last stderr line */
} Cli;

static void cli(Cli *r, const char *fmt, ...)
{
    char cmd[4096], full[4800], errf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(errf, sizeof errf, "%s/cli_stderr.txt", test_tmpdir());
    snprintf(full, sizeof full, "%s > /dev/null 2> %s", cmd, errf);
    int st = system(full);
    r->status = st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
    memset(r->err, 0, sizeof r->err);
    r->last[0] = '\0';
    r->lines = 0;
    FILE *f = fopen(errf, "r");
    if (!f) return;
    size_t n = fread(r->err, 1, sizeof r->err - 1, f);
    fclose(f);
    r->err[n] = '\0';
    const char *line = r->err;
    for (size_t i = 0; i < n; i++)
        if (r->err[i] == '\n') {
            r->lines++;
            size_t len = (size_t)(&r->err[i] - line);
            if (len >= sizeof r->last) len = sizeof r->last - 1;
            memcpy(r->last, line, len);
            r->last[len] = '\0';
            line = &r->err[i + 1];
        }
}

static const char *tmp(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", test_tmpdir(), name);
    return buf;
}

static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static int setup(void **state)
{
    (void)state;
    const char *d = test_tmpdir();
    char err[256];
    if (run_cmd("/usr/bin/python3 -c 'import nibabel, numpy'", err,
                sizeof err) != 0) {
        printf("skipped: /usr/bin/python3 with nibabel and numpy missing\n");
        return 0;
    }
    snprintf(good, sizeof good, "%s/good", d);
    const char *mk = "/usr/bin/python3 tools/make_phantom.py";
    int rc = 0;
    rc |= sh("%s %s --cases 5 --test 0 --size 32,32,16 --classes 2 "
             ">/dev/null",
             mk, good);
    /* Three labels in the voxels, two declared. */
    rc |= sh("%s %s/badlabel --cases 5 --test 0 --size 32,32,16 --classes 3 "
             ">/dev/null && cp %s/dataset.json %s/badlabel/",
             mk, d, good, d);
    /* A label map on a smaller grid than its image. */
    rc |= sh("%s %s/small --cases 3 --test 0 --size 32,32,12 --classes 2 "
             ">/dev/null && cp -r %s %s/grid && cp "
             "%s/small/labelsTr/phantom_002.nii.gz %s/grid/labelsTr/",
             mk, d, good, d, d, d);
    rc |= sh("%s %s/three --cases 3 --test 0 --size 32,32,16 --classes 3 "
             ">/dev/null",
             mk, d);
    rc |= sh("cp -r %s %s/nojson && rm %s/nojson/dataset.json", good, d, d);
    rc |= sh("cp -r %s %s/missmod && rm %s/missmod/imagesTr/"
             "phantom_001_0000.nii.gz",
             good, d, d);
    rc |= sh("cp -r %s %s/misslab && rm %s/misslab/labelsTr/"
             "phantom_001.nii.gz",
             good, d, d);
    rc |= sh("mkdir -p %s/empty/imagesTr %s/empty/labelsTr && printf "
             "'{\"channel_names\": {\"0\": \"T1\"}, \"labels\": "
             "{\"background\": 0, \"organ1\": 1}}' > %s/empty/dataset.json",
             d, d, d);
    have_data = rc == 0;
    return have_data ? 0 : -1;
}

static void bin(char *buf, size_t len)
{
    bin_path("sauron-compress", buf, len);
}

/* A duration as trainer_report.c prints it ("4.2 s", "45 s",
 * "12 min 05 s", "3 h 07 min") at p, in seconds; -1 if p holds none. */
static double duration_at(const char *p)
{
    double a;
    long b;
    char u1[8], u2[8];
    int n = sscanf(p, "%lf %7s %ld %7s", &a, u1, &b, u2);
    if (n >= 2 && a >= 0 && !strcmp(u1, "s")) return a;
    if (n == 4 && a >= 0 && b >= 0 && b < 60 && !strcmp(u1, "min") &&
        !strncmp(u2, "s", 1))
        return a * 60 + b;
    if (n == 4 && a >= 0 && b >= 0 && b < 60 && !strcmp(u1, "h") &&
        !strncmp(u2, "min", 3))
        return a * 3600 + b * 60;
    return -1;
}

/* The 2-epoch run's timing lines: "expected time: D for 2 epochs (X s
 * per iteration over N iterations, ...)" before epoch 1, then each
 * trained epoch's line ends "elapsed D  ETA D", elapsed never going back
 * and the last ETA 0.  Formats and signs only: timings depend on the
 * machine's load. */
static void check_time_lines(const char *err)
{
    const char *ex = strstr(err, "expected time: ");
    const char *e1 = strstr(err, "epoch 1/2");
    assert_non_null(ex);
    assert_non_null(e1);
    assert_true(ex < e1);
    assert_true(duration_at(ex + 15) >= 0);
    const char *per = strstr(ex, " for 2 epochs (");
    assert_non_null(per);
    double s_iter = -1;
    int n_iter = 0;
    assert_int_equal(sscanf(per,
                            " for 2 epochs (%lf s per iteration, "
                            "median of %d iterations",
                            &s_iter, &n_iter),
                     2);
    assert_true(s_iter > 0);
    assert_int_equal(n_iter, 3); /* 4 iterations: all but the first */
    double prev = -1;
    for (int e = 1; e <= 2; e++) {
        char tag[32];
        snprintf(tag, sizeof tag, "epoch %d/2", e);
        const char *l = strstr(err, tag);
        assert_non_null(l);
        const char *el = strstr(l, "elapsed "), *eta = strstr(l, "ETA ");
        const char *nl = strchr(l, '\n');
        assert_true(el && eta && nl && el < eta && eta < nl);
        double te = duration_at(el + 8), tr = duration_at(eta + 4);
        assert_true(te >= prev && tr >= 0);
        prev = te;
        if (e == 2) assert_true(tr == 0.0);
    }
}

/* Each trained epoch's ETA is that epoch's own time (the "S s (" on its
 * line) times the epochs left: the pace of the epoch shown, which pruning
 * makes faster than the ones before.  Tolerance: S is printed to 0.1 s
 * (0.05 per epoch left) and the ETA to 0.1 s below 10 s, to 1 s above. */
static void check_eta_pace(const char *err, int epochs)
{
    for (int e = 1; e <= epochs; e++) {
        char tag[32];
        snprintf(tag, sizeof tag, "epoch %d/%d ", e, epochs);
        const char *l = strstr(err, tag), *nl, *sec, *eta;
        assert_non_null(l);
        nl = strchr(l, '\n');
        sec = strstr(l, " s (");
        eta = strstr(l, "ETA ");
        assert_true(nl && sec && eta && sec < eta && eta < nl);
        while (sec > l && sec[-1] != ' ')
            sec--;
        double s = strtod(sec, NULL), tr = duration_at(eta + 4);
        int left = epochs - e;
        assert_true(s >= 0 && tr >= 0);
        assert_true(fabs(tr - s * left) <= 0.05 * left + 0.5);
    }
}

/* epochs.csv at path has n_rows epochs whose dice_tuned is a number
 * at least dice_mean. */
static void check_tuned_column(const char *path, int n_rows)
{
    char *csv = slurp_text(path);
    assert_non_null(csv);
    int i_mean = -1, i_tuned = -1, col = 0, rows = 0;
    char *save = NULL;
    char *line = strtok_r(csv, "\n", &save);
    assert_non_null(line);
    for (char *f = line; f; col++) {
        char *comma = strchr(f, ',');
        size_t len = comma ? (size_t)(comma - f) : strlen(f);
        if (len == 9 && !strncmp(f, "dice_mean", 9)) i_mean = col;
        if (len == 10 && !strncmp(f, "dice_tuned", 10)) i_tuned = col;
        f = comma ? comma + 1 : NULL;
    }
    assert_true(i_mean >= 0 && i_tuned == i_mean + 1);
    while ((line = strtok_r(NULL, "\n", &save))) {
        double v[2] = {NAN, NAN};
        col = 0;
        for (char *f = line; f; col++) {
            if (col == i_mean || col == i_tuned)
                v[col - i_mean] = strtod(f, NULL);
            f = strchr(f, ',');
            if (f) f++;
        }
        assert_true(isfinite(v[0]) && isfinite(v[1]));
        assert_true(v[1] >= v[0]);
        rows++;
    }
    assert_int_equal(rows, n_rows);
    free(csv);
}

/* The common fast training flags. */
#define FAST "--no-prune --epochs 2 --iters-per-epoch 4 --batch 2"

/* The summary at path says the decision rule was tuned: it begins with
 * tuned (the rule folded in) or "kept as trained" (already the best). */
static void check_decision_line(const char *path, const char *tuned)
{
    char *sum = slurp_text(path);
    assert_non_null(sum);
    const char *dl = strstr(sum, "\ndecision:     ");
    assert_non_null(dl);
    assert_true(!strncmp(dl + 15, tuned, strlen(tuned)) ||
                !strncmp(dl + 15, "kept as trained", 15));
    free(sum);
}

static void test_end_to_end(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], out[600], run[600], p[700];
    Cli r;
    bin(b, sizeof b);
    tmp("e2e.sslim", out, sizeof out);
    tmp("e2e.sslim.run", run, sizeof run);
    cli(&r, "%s %s %s --data %s " FAST " --seed 3 --threads 2", b, MODEL, out,
        good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    /* One line per epoch (0 = the imported model) and the expected
     * time, nothing else. */
    assert_int_equal(r.lines, 4);
    assert_non_null(strstr(r.err, "epoch 0/2"));
    assert_non_null(strstr(r.last, "epoch 2/2"));
    assert_non_null(strstr(r.last, "train "));
    assert_non_null(strstr(r.last, "organ1 "));
    check_time_lines(r.err);
    Graph g;
    graph_init(&g);
    assert_int_equal(sslim_read(out, &g), 0);
    assert_int_equal(g.meta.n_classes, 2);
    assert_string_equal(g.meta.class_names[1], "organ1");
    assert_string_equal(g.meta.modality_names[0], "T1");
    assert_int_equal(g.meta.dims, 2);
    graph_free(&g);
    const char *files[] = {"epochs.csv", "epochs.jsonl", "split.json",
                           "summary.txt", "checkpoint.sslck"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", run, files[i]);
        assert_true(sl_file_exists(p));
    }
    /* a two-class model: its decision threshold was tuned (or kept as
     * trained, the best) on the validation cases; --tune-decision off:
     * not */
    snprintf(p, sizeof p, "%s/summary.txt", run);
    check_decision_line(p, "foreground where");
    cli(&r,
        "%s %s %s --data %s " FAST " --seed 3 --threads 2 --force -q "
        "--tune-decision off",
        b, MODEL, out, good);
    assert_int_equal(r.status, 0);
    char *sum = slurp_text(p);
    assert_non_null(sum);
    assert_null(strstr(sum, "decision:"));
    free(sum);
    /* The output exists now: a second run needs --force. */
    cli(&r, "%s %s %s --data %s " FAST, b, MODEL, out, good);
    assert_int_not_equal(r.status, 0);
    assert_int_equal(r.lines, 1);
    assert_non_null(strstr(r.last, "--force"));
    /* --quiet: no progress, no estimate, no ETA. */
    cli(&r, "%s %s %s --data %s " FAST " --seed 3 --threads 2 --force -q", b,
        MODEL, out, good);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.lines, 0);
}

/* Without --epochs the run is COMPRESS_DEFAULT_EPOCHS long (the length
 * the real-MRI goals were met at): the estimate, the last epoch line and
 * the checkpoint's settings say so.  One iteration per epoch keeps it
 * short. */
static void test_default_length(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], out[600], want[64], cmd[1400], err[256];
    Cli r;
    bin(b, sizeof b);
    tmp("len.sslim", out, sizeof out);
    cli(&r, "%s %s %s --data %s --no-prune --iters-per-epoch 1 --batch 1", b,
        MODEL, out, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    assert_int_equal(COMPRESS_DEFAULT_EPOCHS, 30);
    snprintf(want, sizeof want, "for %d epochs", COMPRESS_DEFAULT_EPOCHS);
    assert_non_null(strstr(r.err, want));
    /* without pruning the estimate is not a bound */
    assert_null(strstr(r.err, "at most"));
    snprintf(want, sizeof want, "epoch %d/%d ", COMPRESS_DEFAULT_EPOCHS,
             COMPRESS_DEFAULT_EPOCHS);
    assert_non_null(strstr(r.last, want));
    snprintf(cmd, sizeof cmd,
             "grep -a -q '^epochs=%d$' %s.run/checkpoint.sslck",
             COMPRESS_DEFAULT_EPOCHS, out);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    /* and --help states the same default */
    snprintf(cmd, sizeof cmd, "%s --help | grep -q 'epochs (default %d)'", b,
             COMPRESS_DEFAULT_EPOCHS);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    check_eta_pace(r.err, COMPRESS_DEFAULT_EPOCHS);
    /* with pruning it is one (at the imported model's speed), from the
     * median of the 8 iterations after the first */
    cli(&r,
        "%s %s %s --data %s --epochs 1 --iters-per-epoch 9 --batch 1 "
        "--force",
        b, MODEL, out, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "expected time: at most "));
    assert_non_null(strstr(r.err, "median of 8 iterations"));
    assert_non_null(strstr(r.err, "pruning makes later epochs faster"));
}

/* The fine-tuned model segments a training scan with segment (the
 * metadata it needs came from the fine-tuning run): organ Dice against
 * the label map > 0.8 (observed 0.9+ after 3 x 15 steps at lr 0.02). */
static void test_segment_uses_model(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], seg[256], out[600], lab[700];
    Cli r;
    bin(b, sizeof b);
    bin_path("segment", seg, sizeof seg);
    tmp("seg_model.sslim", out, sizeof out);
    cli(&r,
        "%s %s %s --data %s --no-prune --epochs 3 --iters-per-epoch 15 "
        "--batch 4 --lr 0.02 --no-augment",
        b, MODEL, out, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    tmp("seg_out.nii.gz", lab, sizeof lab);
    cli(&r, "%s -q -m %s -o %s %s/imagesTr/phantom_000_0000.nii.gz", seg, out,
        lab, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    /* Voxel agreement with the reference label, via nibabel. */
    assert_int_equal(sh("/usr/bin/python3 -c \"import nibabel as n, numpy as "
                        "np, sys; a = np.asarray(n.load('%s').dataobj); b = "
                        "np.asarray(n.load('%s/labelsTr/phantom_000.nii.gz')"
                        ".dataobj); d = 2 * ((a == 1) & (b == 1)).sum() / "
                        "max((a == 1).sum() + (b == 1).sum(), 1); "
                        "print('segment organ Dice %%.3f' %% d); sys.exit(0 "
                        "if a.shape == b.shape and d > 0.8 else 1)\"",
                        lab, good),
                     0);
}

/* A 3D model (patches, 3D validation) and a deep-supervision 2D model
 * (three heads, three classes) train and write models. */
static void test_3d_and_deep_supervision(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], out[600];
    Cli r;
    Graph g;
    bin(b, sizeof b);
    tmp("m3d.sslim", out, sizeof out);
    cli(&r, "%s tests/fixtures/torch/nnunet3d.onnx %s --data %s " FAST, b,
        out, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.last, "epoch 2/2"));
    graph_init(&g);
    assert_int_equal(sslim_read(out, &g), 0);
    assert_int_equal(g.meta.dims, 3);
    graph_free(&g);
    tmp("ds2d.sslim", out, sizeof out);
    cli(&r, "%s tests/fixtures/torch/deepsup2d.onnx %s --data %s/three " FAST,
        b, out, test_tmpdir());
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.last, "organ2"));
    graph_init(&g);
    assert_int_equal(sslim_read(out, &g), 0);
    assert_int_equal(g.meta.n_classes, 3);
    graph_free(&g);
    /* three classes: the decision rule is tuned too (biases of classes
     * 1-2 folded in, or kept as trained when that is the best) */
    char sp[700];
    snprintf(sp, sizeof sp, "%s.run/summary.txt", out);
    check_decision_line(sp, "logits of classes 1-2 shifted");
    /* every epoch is also scored at its best biases: never below the
     * Dice as trained, since the search starts at biases 0 and only
     * moves when the Dice rises */
    assert_non_null(strstr(r.last, ", tuned "));
    char *sum = slurp_text(sp);
    assert_non_null(sum);
    assert_non_null(strstr(sum, "\ndice tuned "));
    free(sum);
    char cp[700];
    snprintf(cp, sizeof cp, "%s.run/epochs.csv", out);
    check_tuned_column(cp, 3);
}

static void test_onnx_output(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], out[600];
    Cli r;
    bin(b, sizeof b);
    tmp("e2e.onnx", out, sizeof out);
    cli(&r,
        "%s %s %s --data %s --no-prune --epochs 1 --iters-per-epoch 2 "
        "--batch 2",
        b, MODEL, out, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    Graph g;
    graph_init(&g);
    assert_int_equal(onnx_import(out, NULL, &g), 0);
    assert_int_equal(g.meta.n_classes, 2);
    assert_string_equal(g.meta.class_names[1], "organ1");
    /* A conversion keeps the source the export carries. */
    assert_string_equal(g.meta.source_name, "e2e2d.onnx");
    graph_free(&g);

    /* Fine-tuning the export makes a model whose source is the export
     * itself (name and checksum), not the model it was trained from:
     * the summary and the resume check then name the file given. */
    char again[600];
    tmp("e2e_again.sslim", again, sizeof again);
    cli(&r,
        "%s %s %s --data %s --no-prune --epochs 1 --iters-per-epoch 2 "
        "--batch 2",
        b, out, again, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    FILE *f = fopen(out, "rb");
    assert_non_null(f);
    static uint8_t bytes[1 << 22];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    assert_true(n > 0 && n < sizeof bytes && feof(f));
    fclose(f);
    uint8_t want[32];
    sha256(bytes, n, want);
    graph_init(&g);
    assert_int_equal(sslim_read(again, &g), 0);
    assert_string_equal(g.meta.source_name, "e2e.onnx");
    assert_memory_equal(g.meta.source_sha256, want, 32);
    assert_string_equal(g.meta.class_names[1], "organ1");
    graph_free(&g);
    char summary[700];
    snprintf(summary, sizeof summary, "%s.run/summary.txt", again);
    assert_true(file_has_line_starting(summary, "model:        e2e.onnx"));
}

/* kill -9 during epoch 2 of 3, then --resume: byte-identical output. */
static void test_kill_and_resume(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], ref[600], out[600], run[600], csv[700], pidf[600];
    Cli r;
    const char *args =
        "--no-prune --epochs 3 --iters-per-epoch 100 --batch 2 "
        "--threads 2 --lr 0.01 --seed 5";
    bin(b, sizeof b);
    tmp("kill_ref.sslim", ref, sizeof ref);
    tmp("kill.sslim", out, sizeof out);
    tmp("kill.sslim.run", run, sizeof run);
    tmp("kill.pid", pidf, sizeof pidf);
    snprintf(csv, sizeof csv, "%s/epochs.csv", run);
    cli(&r, "%s %s %s --data %s %s", b, MODEL, ref, good, args);
    assert_int_equal(r.status, 0);
    assert_int_equal(sh("%s %s %s --data %s %s >/dev/null 2>&1 & echo $! > "
                        "%s",
                        b, MODEL, out, good, args, pidf),
                     0);
    FILE *f = fopen(pidf, "r");
    long pid = 0;
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld", &pid), 1);
    fclose(f);
    /* Wait (at most 120 s) for epoch 1's report, which is written just
     * before its checkpoint; then kill at once, inside epoch 2 (100
     * steps, about a second here). */
    for (int i = 0; i < 6000 && !file_has_line_starting(csv, "1,"); i++)
        sleep_ms(20);
    assert_true(file_has_line_starting(csv, "1,"));
    sleep_ms(20);
    assert_false(sl_file_exists(out)); /* still running: the kill counts */
    kill((pid_t)pid, SIGKILL);
    for (int i = 0; i < 200 && kill((pid_t)pid, 0) == 0; i++)
        sleep_ms(20);
    assert_false(sl_file_exists(out));
    cli(&r, "%s %s %s --data %s %s --resume", b, MODEL, out, good, args);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "resuming"));
    assert_true(files_equal(ref, out));
    /* The reports hold each epoch once. */
    assert_true(file_has_line_starting(csv, "3,"));
}

/* A run into folder `run` with `flags` (after "--no-prune --epochs 1") is
 * refused with one line holding `want`, and writes nothing. */
static void run_refused(const char *model, const char *out, const char *run,
                        const char *flags, const char *want, Cli *r)
{
    char b[256];
    bin(b, sizeof b);
    cli(r, "%s %s %s --data %s --no-prune --epochs 1 %s --run-dir %s", b,
        model, out, good, flags, run);
    assert_int_not_equal(r->status, 0);
    assert_int_equal(r->lines, 1);
    assert_non_null(strstr(r->last, want));
    assert_false(sl_file_exists(out));
}

static void test_resume_refusals(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], out[600], run[600];
    Cli r;
    bin(b, sizeof b);
    tmp("res.sslim", out, sizeof out);
    tmp("res.run", run, sizeof run);
    cli(&r,
        "%s %s %s --data %s --no-prune --epochs 1 --iters-per-epoch 2 "
        "--run-dir %s",
        b, MODEL, out, good, run);
    assert_int_equal(r.status, 0);
    remove(out);
    /* Another model. */
    run_refused(OTHER_MODEL, out, run, "--iters-per-epoch 2 --resume",
                "another model", &r);
    /* both checksums, so the user can tell which file made the folder */
    assert_non_null(strstr(r.last, "in the run folder"));
    assert_non_null(strstr(r.last, "... for '"));
    /* Other settings: named. */
    run_refused(MODEL, out, run, "--iters-per-epoch 3 --resume",
                "iters_per_epoch=2 in the run folder", &r);
    assert_non_null(strstr(r.last, "iters_per_epoch=3 now"));
    /* the decision rule sets what validation scores */
    run_refused(MODEL, out, run,
                "--iters-per-epoch 2 --resume --tune-decision off",
                "tune_decision=1 in the run folder", &r);
    /* A new run there without --resume. */
    run_refused(MODEL, out, run, "--iters-per-epoch 2", "--resume", &r);
}

/* One short --no-prune run of MODEL on `good` with --val-cases `names`. */
static void val_cases_run(Cli *r, const char *out, const char *run,
                          const char *names, const char *more)
{
    char b[256];
    bin(b, sizeof b);
    cli(r,
        "%s %s %s --data %s --no-prune --epochs 1 --iters-per-epoch 2 -q "
        "--val-cases %s --run-dir %s %s",
        b, MODEL, out, good, names, run, more);
}

/* --val-cases: split.json validates on exactly the named cases; a resume
 * may give them in another order but not other ones; --val-fraction
 * beside it, or a name that is not a case, is one line. */
static void test_val_cases(void **state)
{
    (void)state;
    if (!have_data) skip();
    char out[600], run[600], p[700];
    Cli r;
    tmp("vc.sslim", out, sizeof out);
    tmp("vc.run", run, sizeof run);
    val_cases_run(&r, out, run, "phantom_003,phantom_001", "");
    assert_int_equal(r.status, 0);
    snprintf(p, sizeof p, "%s/split.json", run);
    JsonValue *j = NULL;
    assert_int_equal(json_parse_file(p, &j), 0);
    const JsonValue *val = json_get(j, "val"), *tr = json_get(j, "train");
    assert_int_equal(val->n, 2);
    assert_string_equal(val->items[0]->str, "phantom_001");
    assert_string_equal(val->items[1]->str, "phantom_003");
    assert_int_equal(tr->n, 3);
    for (int i = 0; i < tr->n; i++)
        assert_null(strstr("phantom_001 phantom_003", tr->items[i]->str));
    json_free(j);
    remove(out);
    val_cases_run(&r, out, run, "phantom_001,phantom_004", "--resume");
    assert_int_not_equal(r.status, 0);
    assert_int_equal(r.lines, 1);
    assert_non_null(strstr(r.last, "val_cases=phantom_001,phantom_003"));
    assert_false(sl_file_exists(out));
    val_cases_run(&r, out, run, "phantom_001,phantom_003", "--resume");
    assert_int_equal(r.status, 0);
    assert_true(sl_file_exists(out));
}

/* A training run of one short epoch into run folder `run` (output
 * removed), the checkpoint copied to `saved`: the start of the
 * checkpoint fault tests. */
#define SHORT_RUN                                                            \
    "--no-prune --epochs 1 --iters-per-epoch 2 --batch 2 --threads 2 "       \
    "--seed 5"
static void short_run(const char *out, const char *run, const char *saved)
{
    char b[256], ck[700];
    Cli r;
    bin(b, sizeof b);
    cli(&r, "%s %s %s --data %s " SHORT_RUN " --run-dir %s --force", b, MODEL,
        out, good, run);
    assert_int_equal(r.status, 0);
    remove(out);
    snprintf(ck, sizeof ck, "%s/checkpoint.sslck", run);
    assert_int_equal(sh("cp %s %s", ck, saved), 0);
}

/* A damaged checkpoint is refused by --resume with one line naming it
 * and saying what to do; nothing is trained, nothing written, the file
 * is left as it was (never a silent fresh start). */
static void test_damaged_checkpoint(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], out[600], run[600], ck[700], saved[600];
    Cli r;
    bin(b, sizeof b);
    tmp("dmg.sslim", out, sizeof out);
    tmp("dmg.run", run, sizeof run);
    tmp("dmg_saved.sslck", saved, sizeof saved);
    snprintf(ck, sizeof ck, "%s/checkpoint.sslck", run);
    short_run(out, run, saved);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(sl_read_file(saved, &d, &n), 0);
    assert_true(n > 1000);
    /* what is done to the file, and a phrase the refusal must hold */
    struct {
        const char *what;
        size_t keep; /* bytes kept (truncation) */
        size_t flip; /* byte inverted, or SIZE_MAX */
        const char *want;
    } cases[] = {
        {"empty", 0, SIZE_MAX, "truncated"},
        {"inside the magic", 5, SIZE_MAX, "truncated"},
        {"another file", n, 0, "not a training checkpoint"},
        {"inside a section header", 8 + 8 + 6, SIZE_MAX, "truncated"},
        {"at half", n / 2, SIZE_MAX, "truncated"},
        {"last byte missing", n - 1, SIZE_MAX, "truncated"},
        {"a byte flipped at half", n, n / 2, "corrupted"},
        {"last CRC byte flipped", n, n - 1, "corrupted"},
        {"version changed", n, 8, "version"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *m = malloc(n);
        assert_non_null(m);
        memcpy(m, d, n);
        if (cases[i].flip != SIZE_MAX) m[cases[i].flip] ^= 0xff;
        assert_int_equal(sl_write_file_atomic(ck, m, cases[i].keep, 1), 0);
        free(m);
        cli(&r, "%s %s %s --data %s " SHORT_RUN " --run-dir %s --resume", b,
            MODEL, out, good, run);
        fprintf(stderr, "checkpoint %s: exit %d: %s", cases[i].what, r.status,
                r.err);
        assert_int_not_equal(r.status, 0);
        assert_int_equal(r.lines, 1);
        assert_non_null(strstr(r.last, cases[i].want));
        assert_non_null(strstr(r.last, ck));
        assert_non_null(strstr(r.last, "without --resume"));
        assert_false(sl_file_exists(out));
        /* the damaged file is still there, unchanged */
        uint8_t *now = NULL;
        size_t nn = 0;
        assert_int_equal(sl_read_file(ck, &now, &nn), 0);
        assert_int_equal(nn, cases[i].keep);
        sl_free(now);
    }
    sl_free(d);
    /* the intact checkpoint still resumes (to the end: it is final) */
    assert_int_equal(sh("cp %s %s", saved, ck), 0);
    cli(&r, "%s %s %s --data %s " SHORT_RUN " --run-dir %s --resume", b,
        MODEL, out, good, run);
    assert_int_equal(r.status, 0);
    assert_true(sl_file_exists(out));
}

/* Disk full while writing the final model, simulated with RLIMIT_FSIZE
 * (the shell's ulimit -f, SIGXFSZ ignored, so write() fails with EFBIG
 * as on a full disk; portable, needs no mount or preload): a --resume of
 * a finished run's folder writes only the model (40 KB), so a limit of
 * 8 KB stops exactly that write.  One line, non-zero exit, no output and
 * no temporary file left, the checkpoint unchanged; a --resume without
 * the limit then writes the uninterrupted run's model, byte for byte. */
static void test_model_write_fails(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], out[600], ref[600], run[600], ck[700], saved[600];
    Cli r;
    bin(b, sizeof b);
    tmp("mfull.sslim", out, sizeof out);
    tmp("mfull_ref.sslim", ref, sizeof ref);
    tmp("mfull.run", run, sizeof run);
    tmp("mfull_saved.sslck", saved, sizeof saved);
    snprintf(ck, sizeof ck, "%s/checkpoint.sslck", run);
    cli(&r, "%s %s %s --data %s " SHORT_RUN " --run-dir %s.ref --force", b,
        MODEL, ref, good, run);
    assert_int_equal(r.status, 0);
    short_run(out, run, saved);
    cli(&r,
        "sh -c \"trap '' XFSZ; ulimit -f 8; exec %s %s %s --data "
        "%s " SHORT_RUN " --run-dir %s --resume\"",
        b, MODEL, out, good, run);
    fprintf(stderr, "final write under ulimit -f 8: exit %d: %s", r.status,
            r.err);
    assert_int_not_equal(r.status, 0);
    /* "resuming ..." then the one error line */
    assert_int_equal(r.lines, 2);
    assert_non_null(strstr(r.last, "cannot write"));
    assert_non_null(strstr(r.last, out));
    assert_false(sl_file_exists(out));
    assert_int_equal(sh("ls %s.tmp.* >/dev/null 2>&1", out), 2);
    assert_true(files_equal(ck, saved));
    cli(&r, "%s %s %s --data %s " SHORT_RUN " --run-dir %s --resume", b,
        MODEL, out, good, run);
    assert_int_equal(r.status, 0);
    assert_true(files_equal(ref, out));
}
/* One bad input: non-zero exit, one stderr line holding `want`, no
 * output, no run folder. */
static void bad(const char *name, const char *data, const char *flags,
                const char *want)
{
    char b[256], out[600], run[700];
    Cli r;
    bin(b, sizeof b);
    snprintf(out, sizeof out, "%s/bad_%s.sslim", test_tmpdir(), name);
    snprintf(run, sizeof run, "%s.run", out);
    cli(&r, "%s %s %s --data %s/%s %s", b, MODEL, out, test_tmpdir(), data,
        flags);
    printf("%-10s exit %d: %s\n", name, r.status, r.last);
    assert_int_not_equal(r.status, 0);
    assert_int_equal(r.lines, 1);
    if (want) assert_non_null(strstr(r.last, want));
    assert_false(sl_file_exists(out));
    assert_false(sl_file_exists(run));
}

static void test_bad_datasets(void **state)
{
    (void)state;
    if (!have_data) skip();
    bad("nojson", "nojson", FAST, "dataset.json");
    bad("missmod", "missmod", FAST, "phantom_001");
    bad("misslab", "misslab", FAST, "phantom_001");
    bad("badlabel", "badlabel", FAST, "2");
    bad("grid", "grid", FAST, "phantom_002");
    bad("empty", "empty", FAST, NULL);
    bad("nodir", "no_such_dataset", FAST, "--data");
}

static void test_bad_flags(void **state)
{
    (void)state;
    if (!have_data) skip();
    bad("batch0", "good", "--no-prune --batch 0", "--batch");
    bad("unknown", "good", "--no-prune --frobnicate", "--frobnicate");
    bad("lr", "good", "--no-prune --lr -1", "--lr");
    bad("lrtext", "good", "--no-prune --lr fast", "--lr");
    bad("epochs0", "good", "--no-prune --epochs 0", "--epochs");
    bad("iters", "good", "--no-prune --iters-per-epoch 0",
        "--iters-per-epoch");
    bad("valfrac", "good", "--no-prune --val-fraction 1.5", "--val-fraction");
    bad("threads", "good", "--no-prune --threads 0", "--threads");
    bad("optim", "good", "--no-prune --optimizer rmsprop", "--optimizer");
    bad("wd", "good", "--no-prune --weight-decay -3", "--weight-decay");
    bad("clip", "good", "--no-prune --clip-grad -1", "--clip-grad");
    bad("tune", "good", "--no-prune --tune-decision maybe",
        "--tune-decision");
    bad("patch2d", "good", "--no-prune --patch 16,32,32", "1,H,W");
    bad("patchbad", "good", "--no-prune --patch 1,30,30", "--patch");
    bad("classes", "good", "--no-prune --classes a,b,c", "--classes");
    bad("vcname", "good", "--no-prune --val-cases phantom_001,colin_000",
        "'colin_000' is not a training case");
    bad("vctwice", "good", "--no-prune --val-cases phantom_001,phantom_001",
        "twice");
    bad("vcall", "good",
        "--no-prune --val-cases "
        "phantom_000,phantom_001,phantom_002,phantom_003,phantom_004",
        "at least one to train on");
    bad("vcempty", "good", "--no-prune --val-cases phantom_001,,phantom_002",
        "empty name");
    bad("vcfrac", "good",
        "--no-prune --val-cases phantom_001 --val-fraction 0.2",
        "--val-fraction");
}

/* --fov-aug: batches of other shapes train (the executor follows them);
 * the model written keeps the imported input shape; the run gives the
 * same bytes on 1 and 2 threads and other bytes than a run without the
 * option; 3D models and values outside [0, 1] get one line. */
static void test_fov_aug(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], o0[600], o1[600], o2[600];
    Cli r;
    bin(b, sizeof b);
    tmp("fov0.sslim", o0, sizeof o0);
    tmp("fov1.sslim", o1, sizeof o1);
    tmp("fov2.sslim", o2, sizeof o2);
    cli(&r, "%s %s %s --data %s " FAST " --seed 3 --threads 2", b, MODEL, o0,
        good);
    assert_int_equal(r.status, 0);
    cli(&r, "%s %s %s --data %s " FAST " --seed 3 --threads 2 --fov-aug 0.5",
        b, MODEL, o1, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    cli(&r, "%s %s %s --data %s " FAST " --seed 3 --threads 1 --fov-aug 0.5",
        b, MODEL, o2, good);
    assert_int_equal(r.status, 0);
    assert_true(files_equal(o1, o2));
    assert_false(files_equal(o0, o1));
    Graph g0, g1;
    graph_init(&g0);
    graph_init(&g1);
    assert_int_equal(sslim_read(o0, &g0), 0);
    assert_int_equal(sslim_read(o1, &g1), 0);
    assert_true(
        shape_equal(&g0.values[g0.input].shape, &g1.values[g1.input].shape));
    graph_free(&g0);
    graph_free(&g1);
    cli(&r,
        "%s tests/fixtures/torch/nnunet3d.onnx %s --data %s " FAST
        " --fov-aug 0.5 --force",
        b, o0, good);
    assert_int_not_equal(r.status, 0);
    assert_int_equal(r.lines, 1);
    assert_non_null(strstr(r.last, "2D"));
    bad("fov", "good", "--no-prune --fov-aug 1.5", "--fov-aug");
}

/* --crop-aug: the run gives the same bytes on 1 and 2 threads and other
 * bytes than a run without it; a --resume with another value is refused
 * naming it; 3D models, values outside [0, 1], text and --fov-aug P with
 * P + Q > 1 get one line. */
static void test_crop_aug(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], o0[600], o1[600], o2[600];
    Cli r;
    bin(b, sizeof b);
    tmp("crop0.sslim", o0, sizeof o0);
    tmp("crop1.sslim", o1, sizeof o1);
    tmp("crop2.sslim", o2, sizeof o2);
    cli(&r, "%s %s %s --data %s " FAST " --seed 3 --threads 2 --fov-aug 0.3",
        b, MODEL, o0, good);
    assert_int_equal(r.status, 0);
    cli(&r,
        "%s %s %s --data %s " FAST
        " --seed 3 --threads 2 --fov-aug 0.3 --crop-aug 0.7",
        b, MODEL, o1, good);
    if (r.status) fprintf(stderr, "%s", r.err);
    assert_int_equal(r.status, 0);
    cli(&r,
        "%s %s %s --data %s " FAST
        " --seed 3 --threads 1 --fov-aug 0.3 --crop-aug 0.7",
        b, MODEL, o2, good);
    assert_int_equal(r.status, 0);
    assert_true(files_equal(o1, o2));
    assert_false(files_equal(o0, o1));
    remove(o1);
    cli(&r,
        "%s %s %s --data %s " FAST
        " --seed 3 --threads 2 --fov-aug 0.3 --crop-aug 0.5 --resume",
        b, MODEL, o1, good);
    assert_int_not_equal(r.status, 0);
    assert_int_equal(r.lines, 1);
    assert_non_null(strstr(r.last, "crop_aug=0.7 in the run folder"));
    assert_false(sl_file_exists(o1));
    cli(&r,
        "%s tests/fixtures/torch/nnunet3d.onnx %s --data %s " FAST
        " --crop-aug 0.5 --force",
        b, o0, good);
    assert_int_not_equal(r.status, 0);
    assert_int_equal(r.lines, 1);
    assert_non_null(strstr(r.last, "2D"));
    assert_non_null(strstr(r.last, "--crop-aug"));
    bad("crop", "good", "--no-prune --crop-aug 1.5", "--crop-aug");
    bad("croptext", "good", "--no-prune --crop-aug abc", "--crop-aug");
    bad("fovcrop", "good", "--no-prune --fov-aug 0.6 --crop-aug 0.5",
        "--crop-aug");
}

/* SGD at lr 1e6 diverges in epoch 1: the last line names it, no model. */
static void test_nan_stop(void **state)
{
    (void)state;
    if (!have_data) skip();
    char b[256], out[600];
    Cli r;
    bin(b, sizeof b);
    tmp("nan.sslim", out, sizeof out);
    cli(&r,
        "%s %s %s --data %s --no-prune --epochs 2 --iters-per-epoch 15 "
        "--batch 2 --optimizer sgd --lr 1e6",
        b, MODEL, out, good);
    printf("NaN run: exit %d: %s\n", r.status, r.last);
    assert_int_not_equal(r.status, 0);
    assert_non_null(strstr(r.last, "diverged at epoch 1"));
    assert_false(sl_file_exists(out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_end_to_end),
        cmocka_unit_test(test_onnx_output),
        cmocka_unit_test(test_default_length),
        cmocka_unit_test(test_segment_uses_model),
        cmocka_unit_test(test_3d_and_deep_supervision),
        cmocka_unit_test(test_kill_and_resume),
        cmocka_unit_test(test_resume_refusals),
        cmocka_unit_test(test_val_cases),
        cmocka_unit_test(test_damaged_checkpoint),
        cmocka_unit_test(test_model_write_fails),
        cmocka_unit_test(test_bad_datasets),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_nan_stop),
        cmocka_unit_test(test_fov_aug),
        cmocka_unit_test(test_crop_aug),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
