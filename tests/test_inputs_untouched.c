/* Inputs are never touched: after every program (segment,
 * sauron-compress with and without fine-tuning, sauron-inspect,
 * sauron-run, sauron-eval), on success and on failure (bad option,
 * corrupt input, unwritable output, output named as the input), every
 * input file is byte-identical and keeps its mtime, and the dataset
 * folders (dataset.json, imagesTr, labelsTr, imagesTs, labelsTs) keep
 * their mtimes too, so no file was created, renamed or removed in them
 * even for a moment.
 *
 * Before the programs run, every input's mtime is set to 2001-09-09 (an
 * exact second, nanoseconds 0), so a rewrite with the same bytes shows as
 * a new mtime.  Runs as root here, so "unwritable" cannot rely on file
 * modes: the output's folder is a regular file (ENOTDIR for anyone).
 *
 * Inputs are tiny (phantom dataset from tools/make_phantom.py, 3 cases of
 * 32x32x16; the e2e2d fixture U-Net), so the whole program takes seconds.
 * Needs /usr/bin/python3 with numpy and nibabel (skipped otherwise). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/common.h"
#include "tests/testutil.h"

#define FROZEN_MAX 128
#define FROZEN_TIME 1000000000 /* 2001-09-09T01:46:40Z */

typedef struct {
    char path[512];
    int is_dir;
    struct timespec mtime;
    size_t size;
    char *data; /* files: whole content (malloc) */
} Frozen;

typedef struct {
    int ok; /* setup made every input */
    char in[512], ds[512], bad_ds[512], out[512];
    Frozen f[FROZEN_MAX];
    int n;
} Inputs;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096], err[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fprintf(stderr, "setup: '%s' failed: %s", cmd, err);
    return st;
}

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

/* Set path's mtime to FROZEN_TIME and remember it (recursively for a
 * folder: its entries first, then the folder itself). */
static void freeze(Inputs *in, const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            freeze(in, sub);
        }
        closedir(d);
    }
    struct timespec t[2] = {{FROZEN_TIME, 0}, {FROZEN_TIME, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW), 0);
    assert_true(in->n < FROZEN_MAX);
    Frozen *f = &in->f[in->n++];
    snprintf(f->path, sizeof f->path, "%s", path);
    assert_int_equal(lstat(path, &st), 0);
    f->is_dir = S_ISDIR(st.st_mode);
    f->mtime = st.st_mtim;
    f->data = NULL;
    f->size = 0;
    if (!f->is_dir) {
        f->data = read_all(path, &f->size);
        assert_non_null(f->data);
    }
}

/* Every frozen input as it was; names the first one changed and `what`
 * ran. */
static void check_untouched(const Inputs *in, const char *what)
{
    for (int i = 0; i < in->n; i++) {
        const Frozen *f = &in->f[i];
        struct stat st;
        const char *bad = NULL;
        if (lstat(f->path, &st) != 0) {
            bad = "is gone";
        } else if (st.st_mtim.tv_sec != f->mtime.tv_sec ||
                   st.st_mtim.tv_nsec != f->mtime.tv_nsec) {
            bad = f->is_dir ? "changed mtime (an entry was created, "
                              "renamed or removed in it)"
                            : "changed mtime";
        } else if (!f->is_dir) {
            size_t n = 0;
            char *now = read_all(f->path, &n);
            if (!now || n != f->size || memcmp(now, f->data, n))
                bad = "changed content";
            free(now);
        }
        if (bad) {
            fprintf(stderr, "input %s %s after: %s\n", f->path, bad, what);
            fail();
        }
    }
}

/* Run a command (stdout dropped), check its exit status (want_ok: 0, else
 * non-zero) and that no input changed. */
static void run_check(const Inputs *in, int want_ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void run_check(const Inputs *in, int want_ok, const char *fmt, ...)
{
    char cmd[4096], full[4200], err[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "%s >/dev/null", cmd);
    int st = run_cmd(full, err, sizeof err);
    if ((st == 0) != want_ok) {
        fprintf(stderr, "'%s' exited %d (wanted %s): %s\n", cmd, st,
                want_ok ? "0" : "non-zero", err);
        fail();
    }
    check_untouched(in, cmd);
}

static int setup(void **state)
{
    static Inputs in;
    *state = &in;
    char err[256];
    if (run_cmd("/usr/bin/python3 -c 'import nibabel, numpy'", err,
                sizeof err) != 0) {
        printf("skipped: /usr/bin/python3 with nibabel and numpy missing\n");
        return 0;
    }
    const char *t = test_tmpdir();
    snprintf(in.in, sizeof in.in, "%s/in", t);
    snprintf(in.ds, sizeof in.ds, "%s/Dataset001_Tiny", t);
    snprintf(in.bad_ds, sizeof in.bad_ds, "%s/Dataset002_Corrupt", t);
    snprintf(in.out, sizeof in.out, "%s/out", t);
    char compress[256];
    bin_path("sauron-compress", compress, sizeof compress);
    int rc = 0;
    rc |= sh("mkdir -p %s %s && /usr/bin/python3 tools/make_phantom.py %s "
             "--cases 3 --test 1 --size 32,32,16 --classes 2 >/dev/null",
             in.in, in.out, in.ds);
    /* One label map cut to 100 bytes: fine-tuning fails while loading. */
    rc |= sh("cp -r %s %s && head -c 100 %s/labelsTr/phantom_001.nii.gz > "
             "%s/labelsTr/phantom_001.nii.gz",
             in.ds, in.bad_ds, in.ds, in.bad_ds);
    rc |= sh("cp tests/fixtures/torch/e2e2d.onnx %s/model.onnx", in.in);
    rc |= sh("%s --no-finetune %s/model.onnx %s/model.sslim --axis 2 "
             "--normalize zscore --classes background,organ1",
             compress, in.in, in.in);
    rc |= sh("cp %s/imagesTs/phantom_003_0000.nii.gz %s/scan.nii.gz && "
             "cp %s/labelsTs/phantom_003.nii.gz %s/gt.nii.gz && "
             "cp %s/labelsTr/phantom_000.nii.gz %s/pred.nii.gz",
             in.ds, in.in, in.ds, in.in, in.ds, in.in);
    /* Truncated copies: corrupt inputs of each kind. */
    rc |= sh("head -c 300 %s/scan.nii.gz > %s/corrupt.nii.gz && "
             "head -c 200 %s/model.onnx > %s/corrupt.onnx && "
             "head -c 200 %s/model.sslim > %s/corrupt.sslim",
             in.in, in.in, in.in, in.in, in.in, in.in);
    /* sauron-run inputs: 1x1x32x32 float32 (zeros), and a short one. */
    rc |= sh("head -c 4096 /dev/zero > %s/x.bin && head -c 100 /dev/zero > "
             "%s/short.bin",
             in.in, in.in);
    /* A regular file where an output folder should be. */
    rc |= sh("touch %s/notadir", in.out);
    if (rc) return -1;
    in.n = 0;
    freeze(&in, in.in);
    freeze(&in, in.ds);
    freeze(&in, in.bad_ds);
    in.ok = 1;
    return 0;
}

static int teardown(void **state)
{
    Inputs *in = *state;
    for (int i = 0; i < in->n; i++)
        free(in->f[i].data);
    return 0;
}

static void test_segment(void **state)
{
    const Inputs *in = *state;
    if (!in->ok) skip();
    char b[256];
    bin_path("segment", b, sizeof b);
    const char *i = in->in, *o = in->out;
    run_check(in, 1,
              "%s -q %s/scan.nii.gz -m %s/model.sslim -o %s/seg.nii.gz", b, i,
              i, o);
    run_check(in, 1,
              "%s -q %s/scan.nii.gz -m %s/model.sslim -o %s/seg.nii.gz "
              "--probabilities %s/prob.nii.gz --force",
              b, i, i, o, o);
    /* Two modalities from one file named twice (the model has one: refused
     * after both are read). */
    run_check(in, 0,
              "%s -q %s/scan.nii.gz,%s/scan.nii.gz -m %s/model.sslim "
              "-o %s/seg2.nii.gz",
              b, i, i, i, o);
    run_check(in, 0, "%s -q --frobnicate %s/scan.nii.gz -m %s/model.sslim", b,
              i, i);
    run_check(in, 0,
              "%s -q %s/corrupt.nii.gz -m %s/model.sslim -o "
              "%s/c.nii.gz",
              b, i, i, o);
    run_check(in, 0,
              "%s -q %s/scan.nii.gz -m %s/corrupt.sslim -o "
              "%s/c.nii.gz",
              b, i, i, o);
    run_check(in, 0, "%s -q %s/scan.nii.gz -m %s/model.onnx -o %s/c.nii.gz",
              b, i, i, o);
    run_check(in, 0,
              "%s -q %s/scan.nii.gz -m %s/model.sslim -o "
              "%s/notadir/seg.nii.gz",
              b, i, i, o);
    /* The output named as an input: refused, even with --force. */
    run_check(in, 0,
              "%s -q %s/scan.nii.gz -m %s/model.sslim -o "
              "%s/scan.nii.gz --force",
              b, i, i, i);
    run_check(in, 0,
              "%s -q %s/scan.nii.gz -m %s/model.sslim -o "
              "%s/gt.nii.gz",
              b, i, i, i);
}

static void test_compress_convert(void **state)
{
    const Inputs *in = *state;
    if (!in->ok) skip();
    char b[256];
    bin_path("sauron-compress", b, sizeof b);
    const char *i = in->in, *o = in->out;
    const char *meta =
        "--axis 2 --normalize zscore --classes background,organ1";
    run_check(in, 1, "%s --no-finetune %s/model.onnx %s/conv.sslim %s", b, i,
              o, meta);
    run_check(in, 1, "%s --no-finetune %s/model.sslim %s/conv.onnx", b, i, o);
    run_check(in, 0,
              "%s --no-finetune --frobnicate %s/model.onnx "
              "%s/x.sslim %s",
              b, i, o, meta);
    run_check(in, 0, "%s --no-finetune %s/corrupt.onnx %s/x.sslim %s", b, i,
              o, meta);
    run_check(in, 0, "%s --no-finetune %s/corrupt.sslim %s/x.onnx", b, i, o);
    run_check(in, 0, "%s --no-finetune %s/model.onnx %s/notadir/x.sslim %s",
              b, i, o, meta);
    run_check(in, 0,
              "%s --no-finetune %s/model.onnx %s/model.onnx --force "
              "%s",
              b, i, i, meta);
    run_check(in, 0,
              "%s --no-finetune %s/model.sslim %s/model.sslim "
              "--force",
              b, i, i);
}

/* The common fast fine-tuning flags (2 short epochs). */
#define FAST "--epochs 2 --iters-per-epoch 2 --batch 2 --threads 2"

static void test_compress_finetune(void **state)
{
    const Inputs *in = *state;
    if (!in->ok) skip();
    char b[256];
    bin_path("sauron-compress", b, sizeof b);
    const char *i = in->in, *o = in->out;
    run_check(in, 1,
              "%s %s/model.onnx %s/tuned.sslim --data %s --no-prune " FAST, b,
              i, o, in->ds);
    run_check(in, 1, "%s %s/model.onnx %s/pruned.sslim --data %s " FAST, b, i,
              o, in->ds);
    /* Resuming a finished run. */
    run_check(in, 1,
              "%s %s/model.onnx %s/pruned.sslim --data %s --resume "
              "--force " FAST,
              b, i, o, in->ds);
    run_check(in, 0,
              "%s %s/model.onnx %s/x.sslim --data %s --frobnicate " FAST, b,
              i, o, in->ds);
    run_check(in, 0, "%s %s/model.onnx %s/x.sslim --data %s " FAST, b, i, o,
              in->bad_ds);
    run_check(in, 0, "%s %s/corrupt.onnx %s/x.sslim --data %s " FAST, b, i, o,
              in->ds);
    /* Fine-tuning starts from ONNX only: a .sslim model is refused. */
    run_check(in, 0,
              "%s %s/model.sslim %s/x.sslim --data %s --no-prune " FAST, b, i,
              o, in->ds);
    run_check(in, 0, "%s %s/model.onnx %s/notadir/x.sslim --data %s " FAST, b,
              i, o, in->ds);
    /* Diverges in epoch 1 (SGD at lr 1e6, as in test_train_cli): fails
     * after training started. */
    run_check(in, 0,
              "%s %s/model.onnx %s/nan.sslim --data %s --no-prune "
              "--optimizer sgd --lr 1e6 --epochs 2 --iters-per-epoch 15 "
              "--batch 2 --threads 2",
              b, i, o, in->ds);
    /* An output inside the dataset, or named as the input model. */
    run_check(in, 0,
              "%s %s/model.onnx %s/model.onnx --force --data %s "
              "--no-prune " FAST,
              b, i, i, in->ds);
    run_check(in, 0,
              "%s %s/model.onnx %s/imagesTr/phantom_000_0000.nii.gz "
              "--force --data %s --no-prune " FAST,
              b, i, in->ds, in->ds);
}

static void test_inspect_run_eval(void **state)
{
    const Inputs *in = *state;
    if (!in->ok) skip();
    char insp[256], run[256], ev[256];
    bin_path("sauron-inspect", insp, sizeof insp);
    bin_path("sauron-run", run, sizeof run);
    bin_path("sauron-eval", ev, sizeof ev);
    const char *i = in->in, *o = in->out;
    run_check(in, 1, "%s %s/model.sslim", insp, i);
    run_check(in, 1, "%s %s/model.onnx --json --groups", insp, i);
    run_check(in, 0, "%s %s/model.sslim --frobnicate", insp, i);
    run_check(in, 0, "%s %s/corrupt.onnx", insp, i);
    run_check(in, 0, "%s %s/corrupt.sslim --json", insp, i);

    run_check(in, 1,
              "%s %s/model.sslim --input %s/x.bin --shape 1,1,32,32 "
              "--output %s/y.bin --repeat 2",
              run, i, i, o);
    run_check(in, 0,
              "%s %s/model.sslim --input %s/x.bin --shape 1,1,32,32 "
              "--frobnicate",
              run, i, i);
    run_check(in, 0,
              "%s %s/model.sslim --input %s/short.bin --shape "
              "1,1,32,32",
              run, i, i);
    run_check(in, 0, "%s %s/corrupt.sslim --input %s/x.bin --shape 1,1,32,32",
              run, i, i);
    run_check(in, 0,
              "%s %s/model.sslim --input %s/x.bin --shape 1,1,32,32 "
              "--output %s/notadir/y.bin",
              run, i, i, o);
    run_check(in, 0,
              "%s %s/model.sslim --input %s/x.bin --shape 1,1,32,32 "
              "--output %s/x.bin --force",
              run, i, i, i);

    run_check(in, 1,
              "%s %s/pred.nii.gz %s/gt.nii.gz --csv %s/e.csv --json "
              "%s/e.json",
              ev, i, i, o, o);
    run_check(in, 0, "%s %s/pred.nii.gz %s/gt.nii.gz --frobnicate", ev, i, i);
    run_check(in, 0, "%s %s/corrupt.nii.gz %s/gt.nii.gz", ev, i, i);
    run_check(in, 0, "%s %s/pred.nii.gz %s/gt.nii.gz --csv %s/notadir/e.csv",
              ev, i, i, o);
    run_check(in, 0,
              "%s %s/pred.nii.gz %s/gt.nii.gz --csv %s/gt.nii.gz "
              "--force",
              ev, i, i, i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segment),
        cmocka_unit_test(test_compress_convert),
        cmocka_unit_test(test_compress_finetune),
        cmocka_unit_test(test_inspect_run_eval),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
