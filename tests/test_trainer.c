/* The training loop (compressor/train/trainer.h) on a generated phantom
 * dataset (tools/make_phantom.py: 6 cases of 32x32x16 voxels, background
 * + one organ) with the e2e2d fixture (2D U-Net, 1 modality, 2 classes,
 * 32x32 input, 7562 parameters), through the library API:
 *   - a short run learns: training loss falls and validation Dice rises
 *     above stated thresholds; reports and checkpoint are written;
 *   - determinism: the same seed and thread count give bit-identical
 *     weights;
 *   - resume: a run stopped after epoch 2 of 3 (and one stopped in the
 *     middle of epoch 3) and resumed ends bit-identical to an
 *     uninterrupted run; hook state travels through the checkpoint;
 *     the epochs' times come back from epochs.csv (NaN without it) and
 *     the temporary files of a dead run are removed;
 *   - resume refusals: other settings (named), a corrupted checkpoint, no
 *     checkpoint; a new run refuses a folder holding a checkpoint;
 *   - a NaN loss stops the run naming the epoch;
 *   - hooks are called in the documented order and their columns reach
 *     the CSV; the calibration forward leaves the weights untouched.
 * Needs /usr/bin/python3 with numpy and nibabel for the phantom (skipped
 * otherwise).  Runs with tiny epochs (<= 15 iterations of batch 4). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compressor/compress_cli.h"
#include "compressor/data/dataset.h"
#include "compressor/onnx/onnx_import.h"
#include "compressor/train/decision.h"
#include "compressor/train/trainer.h"
#include "compressor/train/trainer_internal.h"
#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "tests/segmodel.h"
#include "tests/testutil.h"

static char phantom_dir[512];
static int have_phantom;

static int setup_phantom(void **state)
{
    (void)state;
    char cmd[1024], err[256];
    snprintf(phantom_dir, sizeof phantom_dir, "%s/phantom", test_tmpdir());
    if (run_cmd("/usr/bin/python3 -c 'import nibabel, numpy'", err,
                sizeof err) != 0) {
        printf("phantom tests skipped: /usr/bin/python3 with nibabel and "
               "numpy missing\n");
        return 0;
    }
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/make_phantom.py %s --cases 6 --test 0 "
             "--size 32,32,16 --classes 2 > /dev/null",
             phantom_dir);
    have_phantom = run_cmd(cmd, err, sizeof err) == 0;
    if (!have_phantom) fprintf(stderr, "make_phantom.py failed: %s\n", err);
    return have_phantom ? 0 : -1;
}

typedef struct {
    int epochs, iters, batch, threads, resume, force, no_augment;
    float lr;
    OptimKind kind;
    const TrainHooks *hooks;
} RunSpec;

static void spec_default(RunSpec *s)
{
    memset(s, 0, sizeof *s);
    s->epochs = 3;
    s->iters = 4;
    s->batch = 2;
    s->threads = 2;
    s->lr = 0.01f;
    s->kind = OPTIM_ADAM;
}

static char *run_path(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", test_tmpdir(), name);
    return buf;
}

/* Import e2e2d with metadata, train per spec in RUN/<run>; the final
 * graph goes to *g (caller frees), the history to hist (up to 16 rows).
 * Returns trainer_run's code. */
static int train(const RunSpec *s, const char *run, Graph *g,
                 EpochStats *hist, int *n_hist)
{
    CompressOptions co;
    Dataset ds;
    TrainConfig cfg;
    Trainer *t = NULL;
    char rd[512];
    int rc;
    memset(&co, 0, sizeof co);
    co.in_path = "tests/fixtures/torch/e2e2d.onnx";
    co.axis = 2;
    co.normalize.kind = NORMALIZE_ZSCORE;
    graph_init(g);
    memset(&ds, 0, sizeof ds);
    assert_int_equal(onnx_import(co.in_path, NULL, g), 0);
    assert_int_equal(compress_fill_meta(g, &co), 0);
    assert_int_equal(dataset_open(&ds, phantom_dir), 0);
    trainer_config_default(&cfg);
    cfg.run_dir = run_path(run, rd, sizeof rd);
    cfg.epochs = s->epochs;
    cfg.iters_per_epoch = s->iters;
    cfg.batch = s->batch;
    cfg.threads = s->threads;
    cfg.resume = s->resume;
    cfg.force = s->force;
    cfg.quiet = 1;
    cfg.augment = !s->no_augment;
    optim_options_default(&cfg.optim, s->kind);
    cfg.optim.lr = s->lr;
    rc = trainer_create(&t, g, &ds, &cfg, s->hooks);
    if (!rc) rc = trainer_run(t);
    if (t && hist) {
        int n;
        const EpochStats *h = trainer_history(t, &n);
        *n_hist = n < 16 ? n : 16;
        memcpy(hist, h, (size_t)*n_hist * sizeof *hist);
    }
    trainer_free(t);
    dataset_free(&ds);
    return rc;
}

/* Nonzero if every weight of a and b is bit-identical. */
static int same_weights(const Graph *a, const Graph *b)
{
    if (a->n_values != b->n_values) return 0;
    for (int v = 0; v < a->n_values; v++) {
        const Value *x = &a->values[v], *y = &b->values[v];
        if (!x->data != !y->data) return 0;
        if (!x->data) continue;
        if (!shape_equal(&x->shape, &y->shape)) return 0;
        if (memcmp(x->data, y->data,
                   (size_t)shape_numel(&x->shape) * sizeof(float)))
            return 0;
    }
    return 1;
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    int n = 0, c;
    if (!f) return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* Training on the phantom learns.  Configuration: 4 epochs x 15
 * iterations, batch 4, Adam lr 0.02 with polynomial decay, seed 0,
 * augmentation off (this test measures learning; augmentation is on in
 * every other test here).  Observed (deterministic for this seed and the
 * kernels of the time): mean training loss 1.46 in epoch 1, 0.34 in epoch
 * 4 (a factor 4.4); organ Dice 0.02 for the imported fixture (trained on
 * other data) and 0.94 after epoch 4.  With augmentation on the same run
 * reached Dice 0.67 to 0.75 depending on kernel rounding, too close to
 * any useful bound.  Asserted: the loss falls by a factor 2.5 and the
 * Dice exceeds 0.8, margins that rounding changes do not reach but a
 * broken gradient, optimiser or sampler does. */
static void test_training_learns(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    RunSpec s;
    Graph g;
    EpochStats h[16];
    int n = 0;
    char p[600];
    spec_default(&s);
    s.epochs = 4;
    s.iters = 15;
    s.batch = 4;
    s.lr = 0.02f;
    s.no_augment = 1;
    double t0 = sl_now();
    assert_int_equal(train(&s, "learn", &g, h, &n), 0);
    double secs = sl_now() - t0;
    assert_int_equal(n, 5);
    printf("phantom run: %.1f s; train loss %.3f -> %.3f; organ Dice "
           "%.3f (imported) -> %.3f; %.3f s/step\n",
           secs, h[1].train_loss, h[4].train_loss, h[0].val_dice[1],
           h[4].val_dice[1], h[4].step_seconds);
    assert_true(h[4].train_loss < 0.4 * h[1].train_loss);
    assert_true(h[4].val_dice[1] > 0.8);
    assert_true(h[4].val_loss < h[0].val_loss);
    assert_int_equal(h[0].epoch, 0);
    assert_true(isfinite(h[0].val_dice[1]));
    /* Reports: header + epochs 0..4. */
    assert_int_equal(count_lines(run_path("learn/epochs.csv", p, sizeof p)),
                     6);
    assert_int_equal(count_lines(run_path("learn/epochs.jsonl", p, sizeof p)),
                     5);
    assert_true(sl_file_exists(run_path("learn/split.json", p, sizeof p)));
    assert_true(sl_file_exists(run_path("learn/summary.txt", p, sizeof p)));
    assert_true(
        sl_file_exists(run_path("learn/checkpoint.sslck", p, sizeof p)));
    graph_free(&g);
}

/* Same seed and thread count: bit-identical weights (and losses). */
static void test_determinism(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    RunSpec s;
    Graph a, b;
    EpochStats ha[16], hb[16];
    int na, nb;
    spec_default(&s);
    s.epochs = 2;
    assert_int_equal(train(&s, "det_a", &a, ha, &na), 0);
    assert_int_equal(train(&s, "det_b", &b, hb, &nb), 0);
    assert_true(same_weights(&a, &b));
    assert_true(ha[2].train_loss == hb[2].train_loss);
    assert_true(ha[2].val_loss == hb[2].val_loss);
    graph_free(&a);
    graph_free(&b);
}

/* A hook that counts calls, adds a report column, keeps state in the
 * checkpoint blob, and can stop the run (a simulated crash). */
typedef struct {
    int begin, after_forward, after_step, end_epoch, columns;
    int stop_epoch, stop_iter; /* after_step fails there (iter -1: the
                                  end_of_epoch of stop_epoch fails) */
    uint32_t state;            /* evolves each step; saved in the blob */
    int loaded;
    int order_ok;
    int calib_checked;
} Probe;

static int probe_begin(void *ctx, Trainer *t)
{
    Probe *p = ctx;
    p->begin++;
    /* The imported model has been validated before begin. */
    int n;
    trainer_history(t, &n);
    if (n < 1 && !trainer_config(t)->resume) p->order_ok = 0;
    if (!trainer_calib_batch(t) || !trainer_exec(t) || !trainer_optim(t))
        p->order_ok = 0;
    return 0;
}

static int probe_after_forward(void *ctx, Trainer *t, TrainExec *te,
                               const Batch *b, double *extra)
{
    Probe *p = ctx;
    (void)t;
    (void)te;
    (void)b;
    p->after_forward++;
    *extra = 0.0;
    return 0;
}

static int probe_after_step(void *ctx, Trainer *t, int e, int it)
{
    Probe *p = ctx;
    (void)t;
    p->after_step++;
    p->state = p->state * 1664525u + 1013904223u + (uint32_t)(e * 100 + it);
    if (e == p->stop_epoch && it == p->stop_iter) {
        sl_error("simulated crash at epoch %d, iteration %d", e, it);
        return ERR_IO;
    }
    return 0;
}

static int probe_end_of_epoch(void *ctx, Trainer *t, int e,
                              const EpochStats *st)
{
    Probe *p = ctx;
    p->end_epoch++;
    if (st->epoch != e || p->after_forward < e) p->order_ok = 0;
    if (!p->calib_checked) {
        /* The calibration forward changes no weight. */
        Graph *g = trainer_graph(t);
        size_t n = 0;
        for (int v = 0; v < g->n_values; v++)
            if (g->values[v].data)
                n += (size_t)shape_numel(&g->values[v].shape);
        float *copy = malloc(n * sizeof *copy), *at = copy;
        if (!copy) return ERR_NOMEM;
        for (int v = 0; v < g->n_values; v++)
            if (g->values[v].data) {
                size_t k = (size_t)shape_numel(&g->values[v].shape);
                memcpy(at, g->values[v].data, k * sizeof *at);
                at += k;
            }
        if (trainer_calib_forward(t)) p->order_ok = 0;
        at = copy;
        for (int v = 0; v < g->n_values; v++)
            if (g->values[v].data) {
                size_t k = (size_t)shape_numel(&g->values[v].shape);
                if (memcmp(at, g->values[v].data, k * sizeof *at))
                    p->order_ok = 0;
                at += k;
            }
        free(copy);
        p->calib_checked = 1;
    }
    if (e == p->stop_epoch && p->stop_iter < 0) {
        sl_error("simulated crash at the end of epoch %d", e);
        return ERR_IO;
    }
    return 0;
}

static const char *probe_column_name(void *ctx, int k)
{
    (void)ctx;
    return k == 0 ? "probe_state" : "probe_steps";
}

static int probe_columns(void *ctx, Trainer *t, int e, double *v)
{
    Probe *p = ctx;
    (void)t;
    (void)e;
    p->columns++;
    v[0] = (double)(p->state % 1000u);
    v[1] = p->after_step;
    return 0;
}

static int probe_save(void *ctx, uint8_t **blob, size_t *n)
{
    Probe *p = ctx;
    *blob = sl_alloc(4);
    if (!*blob) return ERR_NOMEM;
    sl_wr32(*blob, p->state);
    *n = 4;
    return 0;
}

static int probe_load(void *ctx, const uint8_t *blob, size_t n)
{
    Probe *p = ctx;
    if (n != 4) return ERR_FORMAT;
    p->state = sl_rd32(blob);
    p->loaded = 1;
    return 0;
}

static void probe_hooks(TrainHooks *h, Probe *p)
{
    memset(h, 0, sizeof *h);
    memset(p, 0, sizeof *p);
    p->order_ok = 1;
    p->stop_epoch = -1;
    h->ctx = p;
    h->begin = probe_begin;
    h->after_forward = probe_after_forward;
    h->after_step = probe_after_step;
    h->end_of_epoch = probe_end_of_epoch;
    h->n_columns = 2;
    h->column_name = probe_column_name;
    h->columns = probe_columns;
    h->save = probe_save;
    h->load = probe_load;
}

/* Hooks: call counts and order; columns in the CSV header. */
static void test_hooks(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    RunSpec s;
    TrainHooks h;
    Probe p;
    Graph g;
    char path[600], line[512];
    spec_default(&s);
    s.epochs = 2;
    s.iters = 3;
    probe_hooks(&h, &p);
    s.hooks = &h;
    assert_int_equal(train(&s, "hooks", &g, NULL, NULL), 0);
    assert_int_equal(p.begin, 1);
    assert_int_equal(p.after_forward, 6);
    assert_int_equal(p.after_step, 6);
    assert_int_equal(p.end_epoch, 2);
    assert_int_equal(p.columns, 3); /* epochs 0, 1, 2 */
    assert_true(p.order_ok);
    FILE *f = fopen(run_path("hooks/epochs.csv", path, sizeof path), "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_non_null(strstr(line, ",probe_state,probe_steps"));
    graph_free(&g);
}

static void write_text_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* Stopped and resumed runs end bit-identical to an uninterrupted one:
 * stopped at the end of epoch 3 (after epoch 2's checkpoint), and in the
 * middle of epoch 2 (iteration 3 of 4).  The hook's state is saved and
 * restored through the checkpoint blob. */
static void test_resume_equivalence(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    RunSpec s;
    TrainHooks h;
    Probe p;
    Graph ref, g;
    EpochStats hr[16], hg[16];
    int nr, ng;
    spec_default(&s);
    probe_hooks(&h, &p);
    s.hooks = &h;
    assert_int_equal(train(&s, "res_ref", &ref, hr, &nr), 0);
    uint32_t ref_state = p.state;

    for (int variant = 0; variant < 2; variant++) {
        const char *run = variant ? "res_mid" : "res_end";
        probe_hooks(&h, &p);
        p.stop_epoch = variant ? 2 : 3;
        p.stop_iter = variant ? 3 : -1;
        sl_error_quiet(1);
        int rc = train(&s, run, &g, NULL, NULL);
        sl_error_quiet(0);
        assert_int_equal(rc, ERR_IO);
        graph_free(&g);
        char path[600], name[300], dead[600], live[600];
        /* what a kill inside an atomic write leaves: the temporary file
         * of a dead process goes, a live process's stays */
        pid_t child = fork();
        assert_true(child >= 0);
        if (!child) _exit(0);
        assert_int_equal(waitpid(child, NULL, 0), child);
        snprintf(name, sizeof name, "%s/checkpoint.sslck.tmp.%ld", run,
                 (long)child);
        write_text_file(run_path(name, dead, sizeof dead), "partial");
        snprintf(name, sizeof name, "%s/epochs.csv.tmp.%ld", run,
                 (long)getppid());
        write_text_file(run_path(name, live, sizeof live), "in use");
        /* the checkpoint holds no times: without epochs.csv they are
         * unknown (NaN), which is no reason to refuse the resume */
        snprintf(name, sizeof name, "%s/epochs.csv", run);
        if (variant)
            assert_int_equal(remove(run_path(name, path, sizeof path)), 0);
        probe_hooks(&h, &p);
        s.resume = 1;
        assert_int_equal(train(&s, run, &g, hg, &ng), 0);
        s.resume = 0;
        assert_false(sl_file_exists(dead));
        assert_true(sl_file_exists(live));
        remove(live);
        assert_int_equal(isnan(hg[1].seconds), variant);
        assert_int_equal(isnan(hg[1].step_seconds), variant);
        assert_int_equal(isnan(hg[1].data_wait), variant);
        assert_true(hg[3].seconds > 0); /* rerun: measured again */
        assert_true(p.loaded);
        assert_int_equal(p.begin, 1);
        assert_true(same_weights(&ref, &g));
        assert_int_equal(ng, nr);
        assert_true(hg[3].train_loss == hr[3].train_loss);
        assert_true(hg[3].val_loss == hr[3].val_loss);
        assert_int_equal(p.state, ref_state);
        graph_free(&g);
    }
    graph_free(&ref);
}

/* Resume refuses what it cannot continue, with one line naming why. */
static void test_resume_refusals(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    RunSpec s;
    Graph g;
    char path[600];
    spec_default(&s);
    s.epochs = 1;
    s.iters = 2;
    assert_int_equal(train(&s, "refuse", &g, NULL, NULL), 0);
    graph_free(&g);
    sl_error_quiet(1);
    /* Other settings: the learning rate differs. */
    s.resume = 1;
    s.lr = 0.02f;
    sl_error_reset();
    assert_int_equal(train(&s, "refuse", &g, NULL, NULL), ERR_ARG);
    graph_free(&g);
    assert_non_null(strstr(sl_error_last(), "lr=0.00999999978"));
    assert_non_null(strstr(sl_error_last(), "lr=0.0199999996"));
    s.lr = 0.01f;
    s.epochs = 2;
    sl_error_reset();
    assert_int_equal(train(&s, "refuse", &g, NULL, NULL), ERR_ARG);
    graph_free(&g);
    assert_non_null(strstr(sl_error_last(), "epochs=1"));
    s.epochs = 1;
    /* No checkpoint at all. */
    sl_error_reset();
    assert_int_equal(train(&s, "refuse_none", &g, NULL, NULL), ERR_ARG);
    graph_free(&g);
    assert_non_null(strstr(sl_error_last(), "no checkpoint"));
    /* A new run in a folder holding a checkpoint. */
    s.resume = 0;
    sl_error_reset();
    assert_int_equal(train(&s, "refuse", &g, NULL, NULL), ERR_EXISTS);
    graph_free(&g);
    assert_non_null(strstr(sl_error_last(), "--resume"));
    /* A corrupted checkpoint: one flipped byte in the middle. */
    uint8_t *data;
    size_t n;
    run_path("refuse/checkpoint.sslck", path, sizeof path);
    assert_int_equal(sl_read_file(path, &data, &n), 0);
    data[n / 2] ^= 0x40;
    assert_int_equal(sl_write_file_atomic(path, data, n, 1), 0);
    sl_free(data);
    s.resume = 1;
    sl_error_reset();
    assert_int_equal(train(&s, "refuse", &g, NULL, NULL), ERR_FORMAT);
    graph_free(&g);
    assert_non_null(strstr(sl_error_last(), "corrupted"));
    /* Truncated. */
    assert_int_equal(sl_read_file(path, &data, &n), 0);
    assert_int_equal(sl_write_file_atomic(path, data, n / 3, 1), 0);
    sl_free(data);
    sl_error_reset();
    assert_int_equal(train(&s, "refuse", &g, NULL, NULL), ERR_FORMAT);
    graph_free(&g);
    assert_non_null(strstr(sl_error_last(), "truncated"));
    sl_error_quiet(0);
}

/* SGD with lr 1e6 blows up within the first epoch: the run stops with a
 * message naming the epoch, before any checkpoint of that epoch. */
static void test_nan_stops(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    RunSpec s;
    Graph g;
    spec_default(&s);
    s.kind = OPTIM_SGD;
    s.lr = 1e6f;
    s.iters = 15;
    s.epochs = 2;
    sl_error_quiet(1);
    sl_error_reset();
    int rc = train(&s, "nan", &g, NULL, NULL);
    sl_error_quiet(0);
    assert_int_equal(rc, ERR_ARG);
    printf("NaN stop: %s\n", sl_error_last());
    assert_non_null(strstr(sl_error_last(), "diverged at epoch 1"));
    assert_non_null(strstr(sl_error_last(), "no model written"));
    graph_free(&g);
}

/* Configuration errors name the flag; nothing is created. */
static void test_config_errors(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    RunSpec s;
    Graph g;
    char path[600];
    spec_default(&s);
    s.batch = 0;
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(train(&s, "bad_batch", &g, NULL, NULL), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--batch"));
    graph_free(&g);
    spec_default(&s);
    s.epochs = 0;
    sl_error_reset();
    assert_int_equal(train(&s, "bad_batch", &g, NULL, NULL), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "--epochs"));
    graph_free(&g);
    sl_error_quiet(0);
    assert_false(sl_file_exists(run_path("bad_batch", path, sizeof path)));
}

/* Run a 3D pointwise threshold model (threshold t on the normalised
 * intensity, windows of patch^3) for one tiny step with tuning on or off; the
 * trainer is returned, its graph in *g. */
static Trainer *run_thresh(Graph *g, Dataset *ds, float thr, int patch,
                           int tune, char *rd, size_t rd_len)
{
    ModelSpec ms;
    TrainConfig cfg;
    Trainer *t = NULL;
    memset(&ms, 0, sizeof ms);
    ms.dims = 3;
    ms.nmod = 1;
    ms.kind = KIND_THRESH;
    ms.norm = NORMALIZE_ZSCORE;
    ms.t = thr;
    ms.patch[0] = ms.patch[1] = ms.patch[2] = patch;
    graph_init(g);
    build_model(g, &ms);
    memset(ds, 0, sizeof *ds);
    assert_int_equal(dataset_open(ds, phantom_dir), 0);
    trainer_config_default(&cfg);
    cfg.run_dir = run_path(tune ? "tune_on" : "tune_off", rd, rd_len);
    cfg.batch = 2;
    cfg.threads = 2;
    cfg.quiet = 1;
    cfg.force = 1;
    cfg.val_fraction = 0.5;
    cfg.epochs = 1;
    cfg.iters_per_epoch = 1;
    cfg.optim.lr = 1e-6f;
    cfg.tune_decision = tune;
    assert_int_equal(trainer_create(&t, g, ds, &cfg, NULL), 0);
    assert_int_equal(trainer_run(t), 0);
    return t;
}

/* 3D validation segments each validation case whole, as segment does:
 * a pointwise model (tests/segmodel.c's threshold, a 1x1x1 conv: label =
 * normalised intensity > 0.5) labels each voxel by its own intensity
 * whatever the windows and their fusion, so the validation Dice must
 * equal the Dice of thresholding the validation cases here (to rounding
 * of the sums).  On the 32x32x16 phantom, windows of 12^3 overlap along
 * every axis (voxels counted twice or left out would change the counts)
 * and windows of 20^3 are larger than the case along one axis (padding,
 * not scored). */
static void val_3d_whole_cases(int patch)
{
    Graph g;
    Dataset ds;
    char rd[512];
    Trainer *t = run_thresh(&g, &ds, 0.5f, patch, 0, rd, sizeof rd);
    int nh;
    const EpochStats *h = trainer_history(t, &nh);
    assert_int_equal(nh, 2);
    const EpochStats st = h[0]; /* the imported model, before training */
    const DataSplit *sp = trainer_split(t);
    const Dataset *d = trainer_dataset(t);
    int64_t tp = 0, fp = 0, fn = 0;
    int larger = 0, smaller = 0;
    assert_true(sp->n_val >= 2);
    for (int i = 0; i < sp->n_val; i++) {
        const DataCase *dc = &d->cases[sp->val[i]];
        int64_t n = dc->S[0] * dc->S[1] * dc->S[2];
        for (int a = 0; a < 3; a++) {
            larger += dc->S[a] > patch;
            smaller += dc->S[a] < patch;
        }
        for (int64_t v = 0; v < n; v++) {
            int pred = dc->image[v] > 0.5f, lab = dc->label[v] == 1;
            tp += pred && lab;
            fp += pred && !lab;
            fn += !pred && lab;
        }
    }
    assert_true(larger > 0); /* tiles overlap somewhere */
    if (patch > 16) assert_true(smaller > 0);
    assert_true(tp > 0 && fp + fn > 0);
    double want = 2.0 * (double)tp / (double)(2 * tp + fp + fn);
    assert_true(fabs(st.val_dice[1] - want) < 1e-12);
    trainer_free(t);
    graph_free(&g);
    dataset_free(&ds);
}

static void test_val_3d_whole_cases(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    val_3d_whole_cases(12);
    val_3d_whole_cases(20);
}

/* Foreground Dice over the validation cases of labelling x > c on the
 * normalised intensity the trainer holds. */
static double dice_at(const Trainer *t, double c)
{
    const DataSplit *sp = trainer_split(t);
    const Dataset *d = trainer_dataset(t);
    int64_t tp = 0, fp = 0, fn = 0;
    for (int i = 0; i < sp->n_val; i++) {
        const DataCase *dc = &d->cases[sp->val[i]];
        int64_t n = dc->S[0] * dc->S[1] * dc->S[2];
        for (int64_t v = 0; v < n; v++) {
            int p = (double)dc->image[v] > c, y = dc->label[v] == 1;
            tp += p && y;
            fp += p && !y;
            fn += !p && y;
        }
    }
    return 2.0 * (double)tp / (double)(2 * tp + fp + fn);
}

/* The decision threshold tuned at the end of a run (decision.h).  A
 * pointwise model labels x > t with margin m = z1 - z0 = 2 (x - t), in
 * every window alike, so the fused margins are exact and the threshold d
 * chosen must be the best of the grid for "x > t + d / 2" computed here.
 * t = -0.8 labels much of the background foreground: the tuning must
 * raise the threshold and Dice.  The tuned graph must be the untuned one
 * with only the foreground bias lowered by d.  Tolerance 1e-3 between
 * Dice here (the trainer's normalised images) and the trainer's (the
 * segmenter normalising the files itself): voxels within float rounding
 * of the threshold may flip; 1e-3 is a few voxels of the ~10^4 labelled
 * foreground. */
static void test_decision_tuning(void **state)
{
    (void)state;
    if (!have_phantom) skip();
    Graph ga, gb;
    Dataset da, db;
    char ra[512], rb[512];
    const float thr = -0.8f;
    Trainer *ta = run_thresh(&ga, &da, thr, 12, 0, ra, sizeof ra);
    Trainer *tb = run_thresh(&gb, &db, thr, 12, 1, rb, sizeof rb);
    const DecisionTune *r = &tb->decision;
    assert_false(sl_error_is_quiet()); /* errors after tuning still show */
    assert_int_equal(ta->decision.done, 0);
    assert_int_equal(r->done, 1);
    assert_int_equal(r->folded, 1);
    assert_true(r->bias[0] == 0);
    const double offset = -r->bias[1]; /* the threshold on z1 - z0 */
    assert_true(offset > 0.1);
    assert_true(r->dice_after > r->dice_before + 0.01);
    /* the same network, but for the foreground bias */
    assert_int_equal(ga.n_values, gb.n_values);
    float *fb = decision_bias(&gb, 2), *fa = decision_bias(&ga, 2);
    assert_non_null(fa);
    assert_true(fb[0] == fa[0]);
    assert_true(fb[1] == (float)((double)fa[1] - offset));
    for (int v = 0; v < ga.n_values; v++) {
        if (!ga.values[v].data) continue;
        int64_t n = shape_numel(&ga.values[v].shape);
        for (int64_t k = 0; k < n; k++)
            if (ga.values[v].data + k != fa + 1)
                assert_true(ga.values[v].data[k] == gb.values[v].data[k]);
    }
    /* per-epoch validation: the imported model's Dice as it is without
     * tuning, at its best threshold with tuning (what it would be
     * once tuned) */
    int nh;
    const EpochStats *ha = trainer_history(ta, &nh);
    const EpochStats *hb = trainer_history(tb, &nh);
    assert_true(fabs(ha[0].val_dice[1] - dice_at(ta, (double)thr)) < 1e-3);
    assert_true(hb[0].val_dice[1] > ha[0].val_dice[1] + 0.01);
    double grid_best = 0;
    for (int i = 0; i <= 2 * DECISION_HALF; i++) {
        double d = dice_at(ta, (double)thr +
                                   (i - DECISION_HALF) * DECISION_STEP / 2);
        grid_best = d > grid_best ? d : grid_best;
    }
    assert_true(fabs(hb[0].val_dice[1] - grid_best) < 1e-3);
    /* the threshold of the model as trained: x > -b1 / w1 (w0 = -w1,
     * b0 = -b1 still, to rounding of one 1e-6 step) */
    const int cv = decision_logit_conv(&ga, 2);
    const float *w = ga.values[ga.nodes[cv].in[1]].data;
    const double c0 = -(double)fa[1] / (double)w[1];
    assert_true(fabs(c0 - (double)thr) < 1e-3);
    assert_true(fabs(dice_at(ta, c0) - r->dice_before) < 1e-3);
    assert_true(fabs(dice_at(ta, c0 + offset / 2) - r->dice_after) < 1e-3);
    for (int i = 0; i <= 2 * DECISION_HALF; i++)
        assert_true(dice_at(ta, c0 + (i - DECISION_HALF) * DECISION_STEP /
                                         2) <= r->dice_after + 1e-3);
    trainer_free(ta);
    trainer_free(tb);
    graph_free(&ga);
    graph_free(&gb);
    dataset_free(&da);
    dataset_free(&db);
    /* where the foreground logit is found: the conv itself, or before a
     * Softmax; an Add (the down/up path) cannot take the threshold */
    for (int variant = 0; variant < 3; variant++) {
        ModelSpec ms;
        memset(&ms, 0, sizeof ms);
        ms.dims = 3;
        ms.nmod = 1;
        ms.kind = KIND_THRESH;
        ms.norm = NORMALIZE_ZSCORE;
        ms.patch[0] = ms.patch[1] = ms.patch[2] = 12;
        ms.softmax = variant == 1;
        ms.downup = variant == 2;
        graph_init(&ga);
        build_model(&ga, &ms);
        int lc = decision_logit_conv(&ga, 2);
        assert_int_equal(decision_logit_conv(&ga, 3), -1);
        if (variant == 2) {
            assert_int_equal(lc, -1);
            assert_null(decision_bias(&ga, 2));
        } else {
            assert_true(lc >= 0 && ga.nodes[lc].op == OP_CONV);
            assert_true(decision_bias(&ga, 2) ==
                        ga.values[ga.nodes[lc].in[2]].data);
        }
        graph_free(&ga);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    /* In-process training: idle OpenMP threads must not spin on a busy
     * machine (exec.h; this program: 14 s -> 0.6 s for the learning run
     * at load 7 on 2 cores). */
    exec_reexec_passive_wait(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_training_learns),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_hooks),
        cmocka_unit_test(test_resume_equivalence),
        cmocka_unit_test(test_resume_refusals),
        cmocka_unit_test(test_nan_stops),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_val_3d_whole_cases),
        cmocka_unit_test(test_decision_tuning),
    };
    return cmocka_run_group_tests(tests, setup_phantom, NULL);
}
