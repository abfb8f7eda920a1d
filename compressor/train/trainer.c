/* The training loop: set-up, resume, epochs, checkpoints (see trainer.h). */
#include "compressor/train/trainer.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compressor/data/prefetch.h"
#include "compressor/train/checkpoint.h"
#include "compressor/train/trainer_internal.h"
#include "runtime/common.h"
#include "runtime/sslim.h"

/* Seed offsets so the validation/calibration sampler draws a stream of
 * its own, unrelated to the training batches of the same seed. */
#define VAL_SEED_MIX 0x5a17ca1b5eedull

void trainer_config_default(TrainConfig *c)
{
    memset(c, 0, sizeof *c);
    c->epochs = 1;
    c->iters_per_epoch = 250;
    c->batch = 2;
    optim_options_default(&c->optim, OPTIM_ADAM);
    c->val_fraction = SPLIT_DEFAULT_VAL_FRAC;
    c->augment = 1;
}

/* ---- accessors ---- */

Graph *trainer_graph(Trainer *t)
{
    return t->g;
}
TrainExec *trainer_exec(Trainer *t)
{
    return t->te;
}
Optim *trainer_optim(Trainer *t)
{
    return t->opt;
}
const Dataset *trainer_dataset(const Trainer *t)
{
    return t->ds;
}
const DataSplit *trainer_split(const Trainer *t)
{
    return t->have_split ? &t->split : NULL;
}
const TrainConfig *trainer_config(const Trainer *t)
{
    return &t->cfg;
}
const char *trainer_run_dir(const Trainer *t)
{
    return t->run_dir;
}
const Shape *trainer_input_shape(const Trainer *t)
{
    return &t->in_shape;
}
const Batch *trainer_calib_batch(const Trainer *t)
{
    return t->have_calib ? &t->calib : NULL;
}
const EpochStats *trainer_history(const Trainer *t, int *n)
{
    *n = t->n_hist;
    return t->hist;
}
int trainer_best_epoch(const Trainer *t)
{
    return t->best_epoch;
}
void trainer_set_targets(Trainer *t, const TrainTargets *tt)
{
    t->targets = *tt;
}
const LossOptions *trainer_loss_options(const Trainer *t)
{
    return &t->lo;
}

/* ---- creation ---- */

static int check_config(const TrainConfig *c)
{
    if (c->epochs < 1 || c->epochs > 100000) {
        sl_error("--epochs %d: give a number from 1 to 100000", c->epochs);
        return ERR_ARG;
    }
    if (c->iters_per_epoch < 1 || c->iters_per_epoch > 10000000) {
        sl_error("--iters-per-epoch %d: give a number from 1 to 10000000",
                 c->iters_per_epoch);
        return ERR_ARG;
    }
    if (c->batch < 1 || c->batch > 4096) {
        sl_error("--batch %d: give a batch size from 1 to 4096", c->batch);
        return ERR_ARG;
    }
    if (!(c->optim.lr > 0.0f) || !isfinite(c->optim.lr)) {
        sl_error("--lr %g: the learning rate must be a positive number",
                 (double)c->optim.lr);
        return ERR_ARG;
    }
    if (!(c->optim.weight_decay >= 0.0f) ||
        !isfinite(c->optim.weight_decay)) {
        sl_error("--weight-decay %g: must be zero or positive",
                 (double)c->optim.weight_decay);
        return ERR_ARG;
    }
    if (!(c->val_fraction >= 0.0 && c->val_fraction < 1.0)) {
        sl_error("--val-fraction %g: give a fraction in [0, 1)",
                 c->val_fraction);
        return ERR_ARG;
    }
    if (!(c->clip_grad >= 0.0) || !isfinite(c->clip_grad)) {
        sl_error("--clip-grad %g: give a positive norm (0: no clipping)",
                 c->clip_grad);
        return ERR_ARG;
    }
    if (!c->run_dir || !*c->run_dir) {
        sl_error("no run folder given for the training reports");
        return ERR_ARG;
    }
    return 0;
}

int trainer_create(Trainer **out, Graph *g, Dataset *ds,
                   const TrainConfig *cfg, const TrainHooks *hooks)
{
    Trainer *t = NULL;
    int rc;
    *out = NULL;
    if ((rc = check_config(cfg))) return rc;
    const Shape *in = &g->values[g->input].shape;
    const Shape *os = &g->values[g->outputs[0]].shape;
    if (in->ndim != 4 && in->ndim != 5) {
        sl_error("the network takes a %dD input; training needs a 2D or 3D "
                 "U-Net ([N,C,H,W] or [N,C,D,H,W])",
                 in->ndim - 2);
        return ERR_UNSUPPORTED;
    }
    if (ds->n_modalities != in->d[1]) {
        sl_error("dataset '%s' has %d modalities (channel_names) but the "
                 "network takes %lld input channels; use a matching dataset "
                 "or model",
                 ds->dir, ds->n_modalities, (long long)in->d[1]);
        return ERR_ARG;
    }
    if (ds->n_classes != os->d[1]) {
        sl_error("dataset '%s' declares %d labels but the network outputs "
                 "%lld classes; use a matching dataset or model",
                 ds->dir, ds->n_classes, (long long)os->d[1]);
        return ERR_ARG;
    }
    if (hooks &&
        (hooks->n_columns < 0 || hooks->n_columns > TRAINER_MAX_COLUMNS ||
         (hooks->n_columns && (!hooks->column_name || !hooks->columns)))) {
        sl_error("trainer hooks: %d report columns (at most %d, with names "
                 "and values)",
                 hooks->n_columns, TRAINER_MAX_COLUMNS);
        return ERR_ARG;
    }
    t = sl_calloc(1, sizeof *t);
    if (!t) goto nomem;
    t->g = g;
    t->ds = ds;
    t->import_shape = *in;
    t->cfg = *cfg;
    if (hooks) t->hooks = *hooks;
    t->best_epoch = -1;
    t->run_dir = sl_strdup(cfg->run_dir);
    t->hist = sl_calloc((size_t)cfg->epochs + 1, sizeof *t->hist);
    if (!t->run_dir || !t->hist) goto nomem;
    t->cfg.run_dir = t->run_dir;
    t->cfg.extra_settings = NULL; /* folded into t->settings at run */
    if (cfg->extra_settings) {
        t->settings = sl_strdup(cfg->extra_settings);
        if (!t->settings) goto nomem;
    }
    loss_options_default(&t->lo, in->ndim - 2);
    *out = t;
    return 0;
nomem:
    sl_error("out of memory creating the trainer");
    trainer_free(t);
    return ERR_NOMEM;
}

void trainer_free(Trainer *t)
{
    if (!t) return;
    train_exec_free(t->te);
    for (int k = 0; k < 3; k++)
        sl_free(t->fit[k]);
    optim_free(t->opt);
    if (t->have_calib) batch_free(&t->calib);
    if (t->have_train_s) sampler_free(&t->train_s);
    if (t->have_val_s) sampler_free(&t->val_s);
    if (t->have_split) split_free(&t->split);
    sl_free(t->run_dir);
    sl_free(t->settings);
    sl_free(t->hist);
    sl_free(t->best);
    sl_free(t->bn_save);
    sl_free(t);
}

char *trainer_path(const Trainer *t, const char *name)
{
    size_t n = strlen(t->run_dir) + strlen(name) + 2;
    char *p = sl_alloc(n);
    if (p) snprintf(p, n, "%s/%s", t->run_dir, name);
    return p;
}

/* ---- patch choice ---- */

/* 1 if the network accepts size P along spatial dim d (output keeps it). */
static int size_ok(Graph *g, const Shape *base, int d, int64_t P)
{
    return graph_valid_size(g, base, d, P) == P;
}

static int choose_patch(Trainer *t)
{
    Graph *g = t->g;
    Shape base = g->values[g->input].shape;
    int nsp = base.ndim - 2, rc = 0;
    int64_t S[3];
    dataset_max_size(t->ds, S);
    base.d[0] = 1;
    for (int k = 0; k < 3; k++)
        t->P[k] = t->cfg.patch[k];
    if (nsp == 2) {
        t->P[0] = 1;
        for (int k = 1; k < 3; k++) {
            int64_t cover = graph_valid_size(g, &base, k - 1, S[k]);
            if (cover < 0) {
                sl_error("no input size >= %lld along spatial dim %d suits "
                         "the network; check the model",
                         (long long)S[k], k - 1);
                return ERR_SHAPE;
            }
            t->V[k] = cover;
            /* Whole slices, as segment feeds them: crops smaller than the
             * slice change the InstanceNorm statistics the network was
             * trained with (brain baseline, 20 iterations: validation
             * Dice 0.860 with 128x128 crops, 0.967 with whole slices;
             * docs/SAURON_RESULTS.md). */
            if (!t->cfg.patch[k]) t->P[k] = cover;
        }
        t->V[0] = 1;
    } else {
        for (int k = 0; k < 3; k++)
            if (!t->P[k])
                t->P[k] = g->meta.patch[k] ? g->meta.patch[k] : base.d[2 + k];
    }
    for (int k = 3 - nsp; k < 3; k++) {
        int d = k - (3 - nsp);
        if (!size_ok(g, &base, d, t->P[k])) {
            int64_t v = graph_valid_size(g, &base, d, t->P[k]);
            sl_error("--patch: size %lld along spatial dim %d does not suit "
                     "the network (it keeps only some sizes; nearest larger "
                     "valid size: %lld)",
                     (long long)t->P[k], d, (long long)v);
            rc = ERR_ARG;
            break;
        }
    }
    /* Probing left the last probed size in the graph: back to the
     * import size. */
    graph_infer_shapes(g, &t->import_shape);
    t->in_shape.ndim = base.ndim;
    t->in_shape.d[0] = t->cfg.batch;
    t->in_shape.d[1] = base.d[1];
    for (int d = 0; d < nsp; d++)
        t->in_shape.d[2 + d] = t->P[3 - nsp + d];
    return rc;
}

/* ---- settings a resume must match ---- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "val_cases=a,b\n", sorted so the order the names were given in does not
 * matter to a resume.  -1 when out of memory. */
static int print_val_cases(FILE *f, const TrainConfig *c)
{
    char **sorted = sl_alloc(sizeof *sorted * (size_t)c->n_val_cases);
    if (!sorted) return -1;
    memcpy(sorted, c->val_cases, sizeof *sorted * (size_t)c->n_val_cases);
    qsort(sorted, (size_t)c->n_val_cases, sizeof *sorted, cmp_name);
    fputs("val_cases=", f);
    for (int k = 0; k < c->n_val_cases; k++)
        fprintf(f, "%s%s", k ? "," : "", sorted[k]);
    fputc('\n', f);
    sl_free(sorted);
    return 0;
}

static int build_settings(Trainer *t)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    const ModelMeta *m = &t->g->meta;
    const TrainConfig *c = &t->cfg;
    if (!f) goto nomem;
    fprintf(f, "model=");
    for (int i = 0; i < 32; i++)
        fprintf(f, "%02x", m->source_sha256[i]);
    fprintf(f, "\ndims=%d\naxis=%d\norder=%d\nnormalize=", m->dims, m->axis,
            (int)m->order);
    for (int k = 0; k < m->n_modalities; k++)
        fprintf(f, "%s%d:%.9g:%.9g", k ? "," : "", (int)m->normalize[k].kind,
                (double)m->normalize[k].lo, (double)m->normalize[k].hi);
    fprintf(f, "\ncases=%d\nclasses=%d\nmodalities=%d\n", t->ds->n_cases,
            t->ds->n_classes, t->ds->n_modalities);
    fprintf(f, "epochs=%d\niters_per_epoch=%d\nbatch=%d\n", c->epochs,
            c->iters_per_epoch, c->batch);
    fprintf(f, "patch=%lldx%lldx%lld\n", (long long)t->P[0],
            (long long)t->P[1], (long long)t->P[2]);
    fprintf(f, "optimizer=%s\nlr=%.9g\nweight_decay=%.9g\n",
            c->optim.kind == OPTIM_ADAM ? "adam" : "sgd", (double)c->optim.lr,
            (double)c->optim.weight_decay);
    fprintf(f, "momentum=%.9g\nbetas=%.9g,%.9g\nclip_grad=%.9g\n",
            (double)c->optim.momentum, (double)c->optim.beta1,
            (double)c->optim.beta2, c->clip_grad);
    fprintf(f, "seed=%llu\nval_fraction=%.9g\naugment=%d\n",
            (unsigned long long)c->seed, c->val_fraction, c->augment);
    /* it sets what validation scores, which the pruning decisions use */
    fprintf(f, "tune_decision=%d\n", c->tune_decision ? 1 : 0);
    /* only when on: run folders from before the option resume */
    if (c->fov_aug > 0) fprintf(f, "fov_aug=%.9g\n", c->fov_aug);
    if (c->crop_aug > 0) fprintf(f, "crop_aug=%.9g\n", c->crop_aug);
    if (c->n_val_cases && print_val_cases(f, c)) goto nomem;
    if (t->settings) fprintf(f, "%s\n", t->settings);
    int closed = fclose(f);
    f = NULL;
    if (closed) goto nomem;
    sl_free(t->settings);
    t->settings = sl_strdup(text);
    free(text);
    if (!t->settings) goto nomem;
    return 0;
nomem:
    if (f) fclose(f);
    free(text);
    sl_error("out of memory building the run settings");
    return ERR_NOMEM;
}

/* ---- executor, optimiser, samplers ---- */

static int build_exec_at(Trainer *t, const Shape *in)
{
    train_exec_free(t->te);
    t->te = NULL;
    return train_exec_create(t->g, in, t->cfg.threads, &t->te);
}

static int build_exec(Trainer *t)
{
    return build_exec_at(t, &t->in_shape);
}

/* The executor for input shape `in`: field-of-view batches change the
 * shape from step to step, and activations are planned per shape. */
static int exec_at(Trainer *t, const Shape *in)
{
    if (t->te && shape_equal(train_shape(t->te, t->g->input), in)) return 0;
    return build_exec_at(t, in);
}

/* fit[k][n]: the smallest size >= n along tensor axis k that the network
 * accepts, for every window the field-of-view and crop augmentations can
 * draw. */
static int build_fit(Trainer *t)
{
    Graph *g = t->g;
    Shape base = g->values[g->input].shape;
    int64_t S[3];
    int rc = 0;
    dataset_max_size(t->ds, S);
    base.d[0] = 1;
    for (int k = 1; k < 3 && !rc; k++) {
        int64_t n = (int64_t)llround(FOV_DEFAULT_HI * (double)S[k]) + 2;
        /* only with crop, so --fov-aug alone keeps its table */
        if (t->cfg.crop_aug > 0 && S[k] + 2 * CROP_DEFAULT_MARGIN + 2 > n)
            n = S[k] + 2 * CROP_DEFAULT_MARGIN + 2;
        if (!(t->fit[k] = sl_alloc(sizeof(int64_t) * (size_t)n))) {
            sl_error("out of memory");
            rc = ERR_NOMEM;
            break;
        }
        t->n_fit[k] = n;
        for (int64_t w = n - 1; w >= 0; w--) {
            int64_t v = w < 1 ? 1 : w;
            if (size_ok(g, &base, k - 1, v))
                t->fit[k][w] = v;
            else if (w + 1 < n)
                t->fit[k][w] = t->fit[k][w + 1];
            else
                t->fit[k][w] = graph_valid_size(g, &base, k - 1, v);
            if (t->fit[k][w] < v) {
                sl_error("--fov-aug/--crop-aug: no input size >= %lld along "
                         "spatial dim %d suits the network",
                         (long long)v, k - 1);
                rc = ERR_SHAPE;
                break;
            }
        }
    }
    graph_infer_shapes(g, &t->import_shape);
    return rc;
}

int trainer_rebuild(Trainer *t)
{
    sl_free(t->bn_save);
    t->bn_save = NULL;
    t->bn_save_n = 0;
    return build_exec(t);
}

static int build_samplers(Trainer *t)
{
    SamplerOptions so;
    int rc;
    sampler_defaults(&so, t->g->meta.dims);
    so.batch = t->cfg.batch;
    memcpy(so.patch, t->P, sizeof so.patch);
    so.seed = t->cfg.seed;
    if (!t->cfg.augment) augment_off(&so.aug);
    if (t->cfg.fov_aug > 0 || t->cfg.crop_aug > 0) {
        int both = t->cfg.fov_aug > 0 && t->cfg.crop_aug > 0;
        if (t->g->meta.dims != 2) {
            sl_error("%s for 2D models (a 3D patch is already a crop); "
                     "drop %s",
                     both                 ? "--fov-aug and --crop-aug are"
                     : t->cfg.fov_aug > 0 ? "--fov-aug is"
                                          : "--crop-aug is",
                     both ? "them" : "it");
            return ERR_ARG;
        }
        if ((rc = build_fit(t))) return rc;
        so.fov.p = t->cfg.fov_aug;
        so.fov.lo = FOV_DEFAULT_LO;
        so.fov.hi = FOV_DEFAULT_HI;
        so.fov.crop = t->cfg.crop_aug;
        so.fov.margin = CROP_DEFAULT_MARGIN;
        for (int k = 1; k < 3; k++) {
            so.fov.fit[k] = t->fit[k];
            so.fov.n_fit[k] = t->n_fit[k];
        }
    }
    rc = sampler_init(&t->train_s, t->ds, t->split.train, t->split.n_train,
                      &so);
    if (rc) return rc;
    t->have_train_s = 1;
    augment_off(&so.aug);
    memset(&so.fov, 0, sizeof so.fov);
    so.seed = t->cfg.seed ^ VAL_SEED_MIX;
    if (t->split.n_val)
        rc =
            sampler_init(&t->val_s, t->ds, t->split.val, t->split.n_val, &so);
    else
        rc = sampler_init(&t->val_s, t->ds, t->split.train, t->split.n_train,
                          &so);
    if (rc) return rc;
    t->have_val_s = 1;
    rc = batch_alloc(&t->calib, &t->val_s);
    if (rc) return rc;
    t->have_calib = 1;
    sampler_fill(&t->val_s, 0, &t->calib);
    return 0;
}

int trainer_calib_forward(Trainer *t)
{
    const Graph *g = t->g;
    size_t need = 0, at = 0;
    int rc;
    if (!t->te || !t->have_calib) {
        sl_error("trainer: calibration forward before the run is set up");
        return ERR_ARG;
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == OP_BATCH_NORM)
            for (int k = 3; k < 5; k++)
                need +=
                    (size_t)shape_numel(&g->values[g->nodes[i].in[k]].shape);
    if (need > t->bn_save_n) {
        sl_free(t->bn_save);
        t->bn_save = sl_alloc(need * sizeof(float));
        t->bn_save_n = t->bn_save ? need : 0;
        if (!t->bn_save) {
            sl_error("out of memory saving BatchNorm statistics");
            return ERR_NOMEM;
        }
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == OP_BATCH_NORM)
            for (int k = 3; k < 5; k++) {
                const Value *v = &g->values[g->nodes[i].in[k]];
                size_t n = (size_t)shape_numel(&v->shape);
                memcpy(t->bn_save + at, v->data, n * sizeof(float));
                at += n;
            }
    if ((rc = exec_at(t, &t->in_shape))) return rc;
    rc = train_forward(t->te, t->calib.x);
    at = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == OP_BATCH_NORM)
            for (int k = 3; k < 5; k++) {
                const Value *v = &g->values[g->nodes[i].in[k]];
                size_t n = (size_t)shape_numel(&v->shape);
                memcpy(v->data, t->bn_save + at, n * sizeof(float));
                at += n;
            }
    return rc;
}

int trainer_validate(Trainer *t, EpochStats *st)
{
    return trainer_eval_val(t, st);
}

/* ---- best network, checkpoint ---- */

int trainer_mark_best(Trainer *t)
{
    uint8_t *data = NULL;
    size_t n = 0;
    char *path = NULL;
    int rc = sslim_encode(t->g, &data, &n);
    if (rc) return rc;
    path = trainer_path(t, "best.sslim");
    if (!path) {
        sl_free(data);
        sl_error("out of memory saving the best network");
        return ERR_NOMEM;
    }
    rc = sl_write_file_atomic(path, data, n, 1);
    sl_free(path);
    if (rc) {
        sl_free(data);
        return rc;
    }
    sl_free(t->best);
    t->best = data;
    t->best_n = n;
    t->best_epoch = t->cur_epoch;
    return 0;
}

static int save_checkpoint(Trainer *t)
{
    Checkpoint c;
    char *path = NULL;
    int rc;
    memset(&c, 0, sizeof c);
    c.settings = t->settings;
    c.epoch = t->epoch;
    c.best_epoch = t->best_epoch;
    c.n_hist = t->n_hist;
    /* The wall-clock fields are 0 here: no two runs share them, and a
     * run killed and resumed must end with the uninterrupted run's
     * checkpoint, byte for byte.  epochs.csv keeps them (read back by
     * trainer_read_timings on resume). */
    c.hist = sl_alloc((size_t)t->n_hist * sizeof *c.hist);
    if (!c.hist) {
        sl_error("out of memory writing the checkpoint");
        return ERR_NOMEM;
    }
    memcpy(c.hist, t->hist, (size_t)t->n_hist * sizeof *c.hist);
    for (int i = 0; i < c.n_hist; i++)
        c.hist[i].seconds = c.hist[i].step_seconds = c.hist[i].data_wait = 0;
    c.best = t->best;
    c.best_n = t->best_n;
    rc = sslim_encode(t->g, &c.graph, &c.graph_n);
    if (rc) goto fail;
    rc = ckpt_capture_optim(&c, t->opt, t->g);
    if (rc) goto fail;
    if (t->hooks.save) {
        rc = t->hooks.save(t->hooks.ctx, &c.hook, &c.hook_n);
        if (rc) goto fail;
    }
    path = trainer_path(t, "checkpoint.sslck");
    if (!path) {
        sl_error("out of memory writing the checkpoint");
        rc = ERR_NOMEM;
        goto fail;
    }
    rc = ckpt_write(path, &c);
fail:
    /* Borrowed fields must not be freed by ckpt_free. */
    c.settings = NULL;
    c.best = NULL;
    ckpt_free(&c);
    sl_free(path);
    return rc;
}

/* A run killed inside an atomic write leaves "NAME.tmp.PID" in its run
 * folder: remove those of processes that are gone, so a resumed run
 * ends with the files of an uninterrupted one and nothing else.  Best
 * effort: a file it cannot remove is only clutter. */
static void remove_dead_temps(const Trainer *t)
{
    DIR *d = opendir(t->run_dir);
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d))) {
        if (!sl_is_dead_temp(e->d_name, NULL)) continue;
        char *path = trainer_path(t, e->d_name);
        if (path) unlink(path);
        sl_free(path);
    }
    closedir(d);
}

/* Read the checkpoint, check it belongs to this run, restore the graph
 * and histories.  The optimiser state is restored after the executor
 * exists (it needs the parameters): *ck keeps it until then. */
static int load_checkpoint(Trainer *t, Checkpoint *ck)
{
    char *path = trainer_path(t, "checkpoint.sslck"), why[512];
    int rc;
    size_t vl = 0;
    if (!path) {
        sl_error("out of memory reading the checkpoint");
        return ERR_NOMEM;
    }
    if (!sl_file_exists(path)) {
        sl_error("--resume: no checkpoint in run folder '%s'; run without "
                 "--resume to start training",
                 t->run_dir);
        rc = ERR_ARG;
        goto fail;
    }
    rc = ckpt_read(path, ck);
    if (rc) goto fail;
    /* The model first: a different network is the likeliest mistake. */
    const char *saved_model = strstr(ck->settings, "model=");
    const char *now_model = strstr(t->settings, "model=");
    vl = 6 + 64;
    if (!saved_model || !now_model || strncmp(saved_model, now_model, vl)) {
        /* the first 12 hex digits of each checksum: enough to tell
         * which of the user's files made the folder */
        sl_error("--resume: run folder '%s' belongs to another model (source "
                 "checksum %.12s... in the run folder, %.12s... for '%s'); "
                 "choose another --run-dir",
                 t->run_dir, saved_model ? saved_model + 6 : "(none)",
                 now_model ? now_model + 6 : "(none)",
                 t->g->meta.source_name ? t->g->meta.source_name
                                        : "the input");
        rc = ERR_ARG;
        goto fail;
    }
    if (ckpt_settings_diff(ck->settings, t->settings, why, sizeof why)) {
        sl_error("--resume: run folder '%s' was made with other settings "
                 "(%s); resume with the same settings or choose another "
                 "--run-dir",
                 t->run_dir, why);
        rc = ERR_ARG;
        goto fail;
    }
    if (ck->epoch > t->cfg.epochs || ck->n_hist != ck->epoch + 1) {
        sl_error("checkpoint '%s' is inconsistent (%d epochs done, %d "
                 "history rows); start again without --resume",
                 path, ck->epoch, ck->n_hist);
        rc = ERR_FORMAT;
        goto fail;
    }
    Graph ng;
    graph_init(&ng);
    rc = sslim_decode(ck->graph, ck->graph_n, path, &ng);
    if (rc) goto fail;
    graph_free(t->g);
    *t->g = ng;
    memcpy(t->hist, ck->hist, (size_t)ck->n_hist * sizeof *t->hist);
    t->n_hist = ck->n_hist;
    trainer_read_timings(t);
    t->epoch = ck->epoch;
    t->best_epoch = ck->best_epoch;
    if (ck->best) {
        t->best = ck->best;
        t->best_n = ck->best_n;
        ck->best = NULL;
    }
    if (t->hooks.load && ck->hook) {
        rc = t->hooks.load(t->hooks.ctx, ck->hook, ck->hook_n);
        if (rc) goto fail;
    }
fail:
    sl_free(path);
    return rc;
}

/* ---- the loop ---- */

static int make_run_dir(const Trainer *t)
{
    if (mkdir(t->run_dir, 0777) && errno != EEXIST) {
        sl_error("cannot create run folder '%s': %s; choose another "
                 "--run-dir",
                 t->run_dir, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

static int weights_finite(const Graph *g)
{
    for (int v = 0; v < g->n_values; v++) {
        const Value *x = &g->values[v];
        if (!x->data) continue;
        int64_t n = shape_numel(&x->shape);
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(x->data[i])) return 0;
    }
    return 1;
}

static void fill_size_stats(Trainer *t, EpochStats *st)
{
    Graph *g = t->g;
    graph_infer_shapes(g, &t->in_shape);
    st->flops = graph_flops(g);
    st->params = graph_params(g);
}

static int hook_columns(Trainer *t, EpochStats *st)
{
    st->n_columns = t->hooks.n_columns;
    if (!t->hooks.n_columns) return 0;
    return t->hooks.columns(t->hooks.ctx, t, st->epoch, st->columns);
}

static int finish_epoch_files(Trainer *t)
{
    int rc = trainer_write_reports(t);
    if (rc) return rc;
    return save_checkpoint(t);
}

/* One training step on batch b; *loss gets the step's total loss. */
static int train_step(Trainer *t, const Batch *b, float lr, double *loss,
                      double *extra, int epoch, int it)
{
    LossValue lv;
    double ex = 0.0;
    Shape bs;
    int rc;
    batch_input_shape(b, &bs);
    if ((rc = exec_at(t, &bs))) return rc;
    train_zero_grads(t->te);
    if ((rc = train_forward(t->te, b->x))) return rc;
    if (t->targets.loss) {
        memset(&lv, 0, sizeof lv);
        rc = t->targets.loss(t->targets.ctx, t, t->te, b, &lv);
    } else {
        rc = train_loss_outputs(t->te, &lv, b->y, NULL, &t->lo);
    }
    if (rc) return rc;
    if (t->hooks.after_forward) {
        rc = t->hooks.after_forward(t->hooks.ctx, t, t->te, b, &ex);
        if (rc) return rc;
    }
    if ((rc = train_backward(t->te))) return rc;
    double norm = optim_clip_grad_norm(
        train_params(t->te), train_n_params(t->te), t->cfg.clip_grad);
    *loss = lv.total + ex;
    *extra = ex;
    if (!isfinite(*loss) || !isfinite(norm)) {
        sl_error("training diverged at epoch %d, iteration %d: %s is %s (lr "
                 "%g); lower --lr or set --clip-grad; no model written",
                 epoch, it + 1,
                 isfinite(*loss) ? "the gradient norm" : "the loss",
                 isnan(isfinite(*loss) ? norm : *loss) ? "NaN" : "infinite",
                 (double)lr);
        return ERR_ARG;
    }
    return optim_step(t->opt, train_params(t->te), train_n_params(t->te), lr);
}

/* Iterations timed for the expected-time line, after the first one
 * (which also waits for the first batch and touches fresh buffers): few,
 * so the line comes within seconds; the per-epoch ETA corrects it.  Their
 * median, not their mean: the first batch of each new crop size plans
 * and touches fresh buffers too (brain 2D with --crop-aug, 2 threads:
 * 1.0-1.4 s against 0.3-0.5 s; the mean of 4 said 0.82 s per iteration
 * where the epoch ran at 0.42). */
#define TRAIN_ESTIMATE_ITERS 8

static int run_epoch(Trainer *t, int e)
{
    EpochStats *st = &t->hist[e];
    Prefetcher *pf = NULL;
    const TrainConfig *c = &t->cfg;
    double t0 = sl_now(), sum = 0.0, sum_extra = 0.0, steps = 0.0;
    float lr = optim_poly_lr(c->optim.lr, e - 1, c->epochs);
    /* Progress within the epoch only on a terminal: logs stay one line
     * per epoch. */
    int tty = !c->quiet && isatty(STDERR_FILENO);
    double shown = t0, t_it = t0, probe_s[TRAIN_ESTIMATE_ITERS + 1];
    int rc, changed;
    int probe = c->iters_per_epoch < 1 + TRAIN_ESTIMATE_ITERS
                    ? c->iters_per_epoch
                    : 1 + TRAIN_ESTIMATE_ITERS;
    memset(st, 0, sizeof *st);
    st->epoch = e;
    st->lr = lr;
    t->cur_epoch = e;
    rc = prefetch_start(&pf, &t->train_s,
                        (int64_t)(e - 1) * c->iters_per_epoch);
    if (rc) return rc;
    for (int it = 0; it < c->iters_per_epoch; it++) {
        const Batch *b;
        double loss, extra, s0;
        if ((rc = prefetch_next(pf, &b))) goto fail;
        s0 = sl_now();
        rc = train_step(t, b, lr, &loss, &extra, e, it);
        if (rc) goto fail;
        steps += sl_now() - s0;
        sum += loss;
        sum_extra += extra;
        if (!t->estimate_shown && it < probe) {
            probe_s[it] = sl_now() - t_it; /* batch wait too */
            t_it = sl_now();
        }
        if (!t->estimate_shown && it + 1 == probe) {
            /* Validation as long as the imported model's (epoch 0). */
            int n = probe > 1 ? probe - 1 : 1;
            double per =
                sl_median(probe > 1 ? probe_s + 1 : probe_s, (size_t)n);
            double val = t->n_hist > 0 ? t->hist[0].seconds : 0.0;
            if (tty) fprintf(stderr, "\r\033[K");
            trainer_print_estimate(t, c->epochs - e + 1, per, n, val);
            t->estimate_shown = 1;
        }
        if (tty && sl_now() - shown > 0.5) {
            shown = sl_now();
            fprintf(stderr,
                    "\repoch %d/%d  iteration %d/%d  loss %.4f  ETA "
                    "%.0f s \033[K",
                    e, c->epochs, it + 1, c->iters_per_epoch, sum / (it + 1),
                    (shown - t0) / (it + 1) * (c->iters_per_epoch - it - 1));
        }
        if (t->hooks.after_step) {
            changed = t->hooks.after_step(t->hooks.ctx, t, e, it);
            if (changed < 0) {
                rc = changed;
                goto fail;
            }
            if (changed && (rc = trainer_rebuild(t))) goto fail;
        }
    }
    if (tty) fprintf(stderr, "\r\033[K");
    st->data_wait = prefetch_wait_seconds(pf);
    prefetch_stop(pf);
    pf = NULL;
    st->train_loss = sum / c->iters_per_epoch;
    st->train_extra = sum_extra / c->iters_per_epoch;
    st->step_seconds = steps / c->iters_per_epoch;
    if (!weights_finite(t->g)) {
        sl_error("training diverged at epoch %d: weights are no longer "
                 "finite (lr %g); lower --lr or set --clip-grad; no model "
                 "written",
                 e, (double)lr);
        return ERR_ARG;
    }
    fill_size_stats(t, st);
    if ((rc = trainer_eval_val(t, st))) return rc;
    st->seconds = sl_now() - t0;
    if (t->hooks.end_of_epoch) {
        changed = t->hooks.end_of_epoch(t->hooks.ctx, t, e, st);
        if (changed < 0) return changed;
        if (changed && (rc = trainer_rebuild(t))) return rc;
    }
    if ((rc = hook_columns(t, st))) return rc;
    t->n_hist = e + 1;
    t->epoch = e;
    trainer_print_epoch(t, st);
    return finish_epoch_files(t);
fail:
    prefetch_stop(pf);
    return rc;
}

/* Steps 1-3 of trainer.h: data, split, resume, executor, samplers. */
static int setup(Trainer *t, Checkpoint *ck)
{
    DataLayout lay;
    int rc;
    char *split_path = NULL;
    dataset_layout_from_meta(&lay, &t->g->meta);
    if ((rc = dataset_load(t->ds, &lay))) return rc;
    if ((rc = choose_patch(t))) return rc;
    if ((rc = build_settings(t))) return rc;
    if (t->cfg.resume) {
        if ((rc = load_checkpoint(t, ck))) return rc;
        remove_dead_temps(t);
        split_path = trainer_path(t, "split.json");
        if (!split_path) return ERR_NOMEM;
        rc = split_read(&t->split, t->ds, split_path);
        sl_free(split_path);
        if (rc) return rc;
        t->have_split = 1;
    } else {
        char *cp = trainer_path(t, "checkpoint.sslck");
        if (!cp) return ERR_NOMEM;
        int exists = sl_file_exists(cp);
        sl_free(cp);
        if (exists && !t->cfg.force) {
            sl_error("run folder '%s' holds a checkpoint of an earlier run; "
                     "pass --resume to continue it, --force to start over, "
                     "or choose another --run-dir",
                     t->run_dir);
            return ERR_EXISTS;
        }
        rc = t->cfg.n_val_cases
                 ? split_from_names(&t->split, t->ds, t->cfg.val_cases,
                                    t->cfg.n_val_cases, t->cfg.seed)
                 : split_make(&t->split, t->ds->n_cases, t->cfg.val_fraction,
                              t->cfg.seed);
        if (rc) return rc;
        t->have_split = 1;
        if ((rc = make_run_dir(t))) return rc;
        if ((rc = split_write(&t->split, t->ds, t->run_dir))) return rc;
    }
    if (t->targets.split_ready &&
        (rc = t->targets.split_ready(t->targets.ctx, t, t->ds)))
        return rc;
    if ((rc = optim_create(&t->cfg.optim, &t->opt))) return rc;
    if ((rc = build_exec(t))) return rc;
    if (t->cfg.resume) {
        char *cp = trainer_path(t, "checkpoint.sslck");
        if (!cp) return ERR_NOMEM;
        rc = ckpt_restore_optim(ck, t->opt, t->g, train_params(t->te),
                                train_n_params(t->te), cp);
        sl_free(cp);
        if (rc) return rc;
    }
    return build_samplers(t);
}

int trainer_run(Trainer *t)
{
    Checkpoint ck;
    double t0 = sl_now();
    int rc;
    memset(&ck, 0, sizeof ck);
    t->run_t0 = t0;
    if ((rc = setup(t, &ck))) goto fail;
    ckpt_free(&ck);
    if (!t->cfg.resume) {
        EpochStats *st = &t->hist[0];
        memset(st, 0, sizeof *st);
        t->cur_epoch = 0;
        fill_size_stats(t, st);
        double v0 = sl_now();
        if ((rc = trainer_eval_val(t, st))) goto fail;
        st->seconds = sl_now() - v0;
        t->n_hist = 1; /* hooks.begin reads the imported model's Dice */
    }
    if (t->hooks.begin && (rc = t->hooks.begin(t->hooks.ctx, t))) goto fail;
    if (!t->cfg.resume) {
        if ((rc = hook_columns(t, &t->hist[0]))) goto fail;
        trainer_print_epoch(t, &t->hist[0]);
        if ((rc = finish_epoch_files(t))) goto fail;
    } else if (!t->cfg.quiet) {
        fprintf(stderr, "resuming '%s' after epoch %d of %d\n", t->run_dir,
                t->epoch, t->cfg.epochs);
    }
    for (int e = t->epoch + 1; e <= t->cfg.epochs; e++)
        if ((rc = run_epoch(t, e))) goto fail;
    if (t->best) {
        Graph ng;
        graph_init(&ng);
        rc = sslim_decode(t->best, t->best_n, "best network", &ng);
        if (rc) goto fail;
        graph_free(t->g);
        *t->g = ng;
    }
    if (t->cfg.tune_decision && (rc = trainer_tune_decision(t))) goto fail;
    /* The result keeps the imported input shape (batch and spatial
     * size), not the training batch's, as a --no-finetune model does. */
    if ((rc = graph_infer_shapes(t->g, &t->import_shape))) goto fail;
    rc = trainer_write_summary(t, sl_now() - t0);
fail:
    ckpt_free(&ck);
    return rc;
}
