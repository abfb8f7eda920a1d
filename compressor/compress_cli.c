/* sauron-compress: metadata, the --no-finetune conversion (from ONNX or
 * from a .sslim) and fine-tuning; the options are in compress_opts.c. */
#define _XOPEN_SOURCE 700
#include "compress_cli.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "compressor/data/dataset.h"
#include "compressor/onnx/onnx_export.h"
#include "compressor/onnx/onnx_import.h"
#include "compressor/sauron/sauron_hooks.h"
#include "compressor/train/distill.h"
#include "compressor/train/trainer.h"
#include "runtime/common.h"
#include "runtime/orient.h"
#include "runtime/sslim.h"

/* Exit statuses: usage problems are 2 (as getopt tools do), others 1. */
#define EXIT_USAGE 2

int compress_split_list(const char *s, const char *what, char ***items,
                        int *n)
{
    int count = 1, rc = ERR_NOMEM;
    char **out = NULL;
    *items = NULL;
    *n = 0;
    for (const char *p = s; *p; p++)
        count += *p == ',';
    out = sl_calloc((size_t)count, sizeof *out);
    if (!out) goto fail;
    const char *p = s;
    for (int k = 0; k < count; k++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) {
            sl_error("%s '%s': empty name in the list", what, s);
            rc = ERR_ARG;
            goto fail;
        }
        out[k] = sl_alloc(len + 1);
        if (!out[k]) goto fail;
        memcpy(out[k], p, len);
        out[k][len] = '\0';
        p = e ? e + 1 : p + len;
    }
    *items = out;
    *n = count;
    return 0;
fail:
    if (rc == ERR_NOMEM) sl_error("out of memory parsing %s", what);
    for (int k = 0; out && k < count; k++)
        sl_free(out[k]);
    sl_free(out);
    return rc;
}

/* Names from a list option or "<prefix><k>" for k < want. */
static int names_for(const char *list, const char *what, const char *prefix,
                     int want, char ***out)
{
    int n, rc;
    if (list) {
        rc = compress_split_list(list, what, out, &n);
        if (rc) return rc;
        if (n != want) {
            sl_error(
                "%s lists %d names but the network has %d; give exactly %d",
                what, n, want, want);
            for (int k = 0; k < n; k++)
                sl_free((*out)[k]);
            sl_free(*out);
            *out = NULL;
            return ERR_ARG;
        }
        return 0;
    }
    *out = sl_calloc((size_t)want, sizeof **out);
    if (!*out) return ERR_NOMEM;
    for (int k = 0; k < want; k++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%s%d", prefix, k);
        (*out)[k] = sl_strdup(buf);
        if (!(*out)[k]) return ERR_NOMEM; /* freed with the meta */
    }
    return 0;
}

/* Metadata a Sauron export carried in (onnx_meta_decode restored it,
 * and only when its counts fit this network): names and normalisation
 * for every output class and input channel. */
static int meta_embedded(const ModelMeta *m, const Shape *in,
                         const Shape *out)
{
    return m->class_names && m->modality_names && m->normalize &&
           m->n_classes == out->d[1] && m->n_modalities == in->d[1] &&
           m->dims == in->ndim - 2;
}

static void free_names(char **names, int n)
{
    for (int k = 0; names && k < n; k++)
        sl_free(names[k]);
    sl_free(names);
}

/* Replace *names (n of them) by the --classes/--modalities list. */
static int replace_names(char ***names, int n, const char *list,
                         const char *what, const char *prefix)
{
    char **fresh = NULL;
    int rc = names_for(list, what, prefix, n, &fresh);
    if (rc) return rc;
    free_names(*names, n);
    *names = fresh;
    return 0;
}

/* --orientation / --spacing, when given, replace the model's grid. */
static void meta_apply_grid(ModelMeta *m, const CompressOptions *o)
{
    if (o->orientation_set)
        memcpy(m->orientation, o->orientation, sizeof m->orientation);
    if (o->spacing_set) memcpy(m->spacing, o->spacing, sizeof m->spacing);
}

/* Metadata a model brought with it (a .sslim, or a Sauron ONNX export)
 * kept, each metadata option given explicitly replacing its field (the
 * value the ONNX path would store for a plain model). */
static int meta_apply_options(ModelMeta *m, const CompressOptions *o)
{
    int rc;
    if (o->classes && (rc = replace_names(&m->class_names, m->n_classes,
                                          o->classes, "--classes", "class")))
        return rc;
    if (o->modalities &&
        (rc = replace_names(&m->modality_names, m->n_modalities,
                            o->modalities, "--modalities", "mod")))
        return rc;
    for (int k = 0; o->normalize_set && k < m->n_modalities; k++)
        m->normalize[k] = o->normalize;
    if (o->axis_set) m->axis = o->axis;
    if (o->order_set) m->order = o->order;
    meta_apply_grid(m, o);
    return 0;
}

/* The embedded metadata with the options applied.  3D: --patch
 * re-imported the network at that size, which becomes the patch; without
 * it the embedded patch (the one the model was trained with) stays, not
 * the importer's default size for symbolic dims. */
static int fill_meta_embedded(Graph *g, const CompressOptions *o)
{
    ModelMeta *m = &g->meta;
    const Shape *in = &g->values[g->input].shape;
    int rc = meta_apply_options(m, o);
    if (rc) return rc;
    if (m->dims == 3 && (o->n_patch || !m->patch[0]))
        for (int k = 0; k < 3; k++)
            m->patch[k] = (int)in->d[2 + k];
    return 0;
}

int compress_fill_meta(Graph *g, const CompressOptions *o)
{
    ModelMeta *m = &g->meta;
    const Shape *in = &g->values[g->input].shape;
    const Shape *out = &g->values[g->outputs[0]].shape;
    int rc;
    if (out->ndim < 2 || out->d[1] < 1 || in->d[1] < 1) {
        sl_error("'%s': output '%s' has no channel dim", o->in_path,
                 g->values[g->outputs[0]].name);
        return ERR_SHAPE;
    }
    /* A Sauron ONNX export comes with its metadata restored: kept, so a
     * .sslim -> .onnx -> .sslim round trip needs no options again. */
    if (meta_embedded(m, in, out)) return fill_meta_embedded(g, o);
    for (int k = 0; m->class_names && k < m->n_classes; k++)
        sl_free(m->class_names[k]);
    for (int k = 0; m->modality_names && k < m->n_modalities; k++)
        sl_free(m->modality_names[k]);
    sl_free(m->class_names);
    sl_free(m->modality_names);
    sl_free(m->normalize);
    m->class_names = m->modality_names = NULL;
    m->normalize = NULL;
    m->n_classes = (int)out->d[1];
    rc = names_for(o->classes, "--classes", "class", m->n_classes,
                   &m->class_names);
    if (rc) goto fail;
    m->n_modalities = (int)in->d[1];
    rc = names_for(o->modalities, "--modalities", "mod", m->n_modalities,
                   &m->modality_names);
    if (rc) goto fail;
    m->normalize = sl_calloc((size_t)m->n_modalities, sizeof *m->normalize);
    if (!m->normalize) {
        rc = ERR_NOMEM;
        goto fail;
    }
    for (int k = 0; k < m->n_modalities; k++)
        m->normalize[k] = o->normalize;
    m->dims = in->ndim - 2;
    m->axis = o->axis;
    m->order = o->order;
    meta_apply_grid(m, o);
    memset(m->patch, 0, sizeof m->patch);
    if (m->dims == 3)
        for (int k = 0; k < 3; k++)
            m->patch[k] = (int)in->d[2 + k];
    return 0;
fail:
    if (rc == ERR_NOMEM) sl_error("out of memory filling model metadata");
    if (!m->class_names) m->n_classes = 0;
    if (!m->modality_names) m->n_modalities = 0;
    return rc;
}

/* Same file?  Compares real paths (the output may not exist yet). */
static int same_file(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    if (!realpath(a, ra) || !realpath(b, rb)) return 0;
    return !strcmp(ra, rb);
}
/* Nonzero if path (which may not exist yet) is in dir or below it. */
static int inside_dir(const char *path, const char *dir)
{
    char rd[PATH_MAX], rp[PATH_MAX], parent[PATH_MAX];
    if (!realpath(dir, rd)) return 0;
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else
        slash[slash == parent] = '\0'; /* "/x" keeps "/" */
    if (!realpath(parent, rp)) return 0;
    size_t n = strlen(rd);
    return !strncmp(rp, rd, n) && (rp[n] == '\0' || rp[n] == '/');
}

/* The output never replaces an input (the model, a dataset file: the
 * output and its run folder stay out of the dataset), and replaces an
 * existing file only with --force (checked before any work, so a refusal
 * costs nothing). */
static int check_output_path(const CompressOptions *o)
{
    if (same_file(o->in_path, o->out_path)) {
        sl_error("output '%s' is the input model; choose another output path",
                 o->out_path);
        return ERR_ARG;
    }
    if (o->data_dir && inside_dir(o->out_path, o->data_dir)) {
        sl_error("output '%s' is inside the dataset folder '%s'; write it "
                 "elsewhere (the dataset is never modified)",
                 o->out_path, o->data_dir);
        return ERR_ARG;
    }
    if (!o->force && sl_file_exists(o->out_path)) {
        sl_error("output '%s' exists; pass --force to overwrite it",
                 o->out_path);
        return ERR_EXISTS;
    }
    /* a run killed while writing its model left OUT.tmp.PID beside it */
    sl_remove_dead_temps(o->out_path);
    return 0;
}

/* A .sslim by name, or by magic under any other name. */
int compress_input_is_sslim(const char *path)
{
    size_t len = strlen(path);
    if (len >= 6 && !strcmp(path + len - 6, ".sslim")) return 1;
    uint8_t head[8];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return sslim_is_sslim(head, n);
}

/* A .sslim input: its network and metadata as they are, the metadata
 * options given explicitly replacing their fields (the same values the
 * ONNX path would store).  --output and --patch choose an output and a
 * shape at ONNX import, which a .sslim had long ago: refused rather than
 * ignored. */
static int load_sslim(const CompressOptions *o, Graph *g)
{
    int rc;
    if (o->output_name || o->n_patch) {
        sl_error("%s: '%s' is a .sslim model, whose output and input shape "
                 "were fixed when it was written; drop %s, or convert the "
                 "original .onnx",
                 o->output_name ? "--output" : "--patch", o->in_path,
                 o->output_name ? "--output" : "--patch");
        return ERR_ARG;
    }
    if ((rc = sslim_read(o->in_path, g))) return rc;
    return meta_apply_options(&g->meta, o);
}

/* An ONNX input: import (at the --patch size for a 3D model), then the
 * metadata: what a Sauron export carried, else the options' defaults;
 * options given explicitly win either way. */
static int load_onnx(const CompressOptions *o, Graph *g)
{
    OnnxImportOptions io = {o->output_name, NULL, 0};
    int rc = onnx_import(o->in_path, &io, g);
    if (rc) return rc;
    const Shape *in = &g->values[g->input].shape;
    if (o->n_patch) {
        if (in->ndim != 5) {
            sl_error("--patch is for 3D models; '%s' is a %dD model (it runs "
                     "slice by slice: use --axis)",
                     o->in_path, in->ndim - 2);
            return ERR_ARG;
        }
        /* Re-import at the patch size so every folded shape matches it. */
        Shape ps = *in;
        for (int k = 0; k < 3; k++)
            ps.d[2 + k] = o->patch[k];
        graph_free(g);
        graph_init(g);
        io.input_shape = &ps;
        rc = onnx_import(o->in_path, &io, g);
        if (rc) return rc;
    }
    return compress_fill_meta(g, o);
}

static int is_onnx_path(const char *path)
{
    size_t len = strlen(path);
    return len >= 5 && !strcmp(path + len - 5, ".onnx");
}

int compress_run(const CompressOptions *o)
{
    Graph g;
    int rc;
    graph_init(&g);
    if ((rc = check_output_path(o))) return rc;
    if (compress_input_is_sslim(o->in_path))
        rc = load_sslim(o, &g);
    else
        rc = load_onnx(o, &g);
    if (rc) goto fail;
    /* The writer follows the output's extension. */
    if (is_onnx_path(o->out_path))
        rc = onnx_export(&g, o->out_path, o->force);
    else
        rc = sslim_write(&g, o->out_path, o->force);
    if (rc) goto fail;
    {
        char sb[64];
        printf("wrote %s: %dD, %d nodes, %lld parameters, input %s, %d "
               "classes\n",
               o->out_path, g.meta.dims, g.n_nodes,
               (long long)graph_params(&g),
               shape_str(&g.values[g.input].shape, sb, sizeof sb),
               g.meta.n_classes);
    }
fail:
    graph_free(&g);
    return rc;
}

/* Replace generated names by the dataset's (a list option was checked
 * and used by compress_fill_meta already). */
static int copy_names(char **dst, char *const *src, int n)
{
    for (int k = 0; k < n; k++) {
        char *c = sl_strdup(src[k]);
        if (!c) {
            sl_error("out of memory copying names from dataset.json");
            return ERR_NOMEM;
        }
        sl_free(dst[k]);
        dst[k] = c;
    }
    return 0;
}

/* Metadata for a fine-tuned model: compress_fill_meta (flags and counts
 * from the network, or what a Sauron export carried), then class and
 * modality names from dataset.json, which names the labels the model is
 * trained on, unless --classes/--modalities gave them. */
static int meta_from_dataset(Graph *g, const Dataset *ds,
                             const CompressOptions *o)
{
    ModelMeta *m = &g->meta;
    int rc = compress_fill_meta(g, o);
    if (rc) return rc;
    if (ds->n_classes != m->n_classes) {
        sl_error("dataset '%s' declares %d labels in dataset.json but the "
                 "network '%s' outputs %d classes; use a matching dataset or "
                 "model",
                 ds->dir, ds->n_classes, o->in_path, m->n_classes);
        return ERR_ARG;
    }
    if (ds->n_modalities != m->n_modalities) {
        sl_error("dataset '%s' has %d modalities in dataset.json but the "
                 "network '%s' takes %d input channels; use a matching "
                 "dataset or model",
                 ds->dir, ds->n_modalities, o->in_path, m->n_modalities);
        return ERR_ARG;
    }
    if (!o->classes &&
        (rc = copy_names(m->class_names, ds->class_names, m->n_classes)))
        return rc;
    if (!o->modalities &&
        (rc = copy_names(m->modality_names, ds->modality_names,
                         m->n_modalities)))
        return rc;
    /* nnU-Net normalises a "CT" channel with dataset-wide percentiles,
     * which we do not compute: ask for the window instead of silently
     * using z-score (a window a Sauron export carried is one). */
    for (int k = 0; k < ds->n_modalities && !o->normalize_set; k++)
        if (!strcasecmp(ds->modality_names[k], "CT") &&
            m->normalize[k].kind != NORMALIZE_CT) {
            sl_error("dataset '%s': modality %d is CT; give its intensity "
                     "window with --normalize ct:LOW,HIGH (e.g. "
                     "ct:-1000,1000) or --normalize zscore",
                     ds->dir, k);
            return ERR_ARG;
        }
    return 0;
}

/* --data must name a folder; checked before anything is imported. */
static int check_data_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        sl_error("--data '%s': dataset folder not found; give an nnU-Net raw "
                 "dataset folder (dataset.json, imagesTr/, labelsTr/)",
                 dir);
        return ERR_ARG;
    }
    return 0;
}

/* The ONNX model to train: at its own input shape, or, for a 3D model
 * with --patch, imported again at the patch size so every folded shape
 * matches it.  A 2D model takes --patch 1,H,W only.  Its source is this
 * file, even when it is an export of an earlier run: the summary, the
 * resume check and the model written name what the user gave. */
static int import_for_training(const CompressOptions *o, Graph *g)
{
    OnnxImportOptions io = {o->output_name, NULL, 1};
    int rc = onnx_import(o->in_path, &io, g);
    if (rc) return rc;
    int nsp = g->values[g->input].shape.ndim - 2;
    if (o->n_patch && nsp == 2 && o->patch[0] != 1) {
        sl_error("--patch: '%s' is a 2D model; give 1,H,W (one slice)",
                 o->in_path);
        return ERR_ARG;
    }
    if (!o->n_patch || nsp != 3) return 0;
    Shape ps = g->values[g->input].shape;
    for (int k = 0; k < 3; k++)
        ps.d[2 + k] = o->patch[k];
    graph_free(g);
    graph_init(g);
    io.input_shape = &ps;
    return onnx_import(o->in_path, &io, g);
}

/* --run-dir, or "<out>.run" (caller frees; NULL when out of memory, with
 * the message printed). */
static char *run_dir_for(const CompressOptions *o)
{
    char *dir = NULL;
    if (o->run_dir) {
        dir = sl_strdup(o->run_dir);
    } else {
        size_t n = strlen(o->out_path) + 5;
        dir = sl_alloc(n);
        if (dir) snprintf(dir, n, "%s.run", o->out_path);
    }
    if (!dir) sl_error("out of memory");
    return dir;
}

/* Trainer settings from the options (run_dir borrowed; lr_note, of
 * note_len bytes, holds the line that says a length-scaled rate). */
static void train_config_from(const CompressOptions *o, const char *run_dir,
                              TrainConfig *cfg, char *lr_note,
                              size_t note_len)
{
    trainer_config_default(cfg);
    cfg->epochs = o->epochs;
    cfg->iters_per_epoch = o->iters_per_epoch;
    cfg->batch = o->batch;
    optim_options_default(&cfg->optim, (OptimKind)o->optimizer);
    const float full = cfg->optim.lr;
    const long long iters = (long long)o->epochs * o->iters_per_epoch;
    if (o->lr > 0.0) {
        cfg->optim.lr = (float)o->lr;
    } else {
        cfg->optim.lr = optim_default_lr(cfg->optim.kind, iters);
        if (cfg->optim.lr != full) {
            snprintf(lr_note, note_len,
                     "learning rate %.3g: Adam's default %.3g times %d / "
                     "%lld iterations, for this run's length (--lr sets it)",
                     (double)cfg->optim.lr, (double)full,
                     OPTIM_ADAM_FULL_RATE_ITERS, iters);
            cfg->lr_note = lr_note;
        }
    }
    if (o->weight_decay >= 0.0)
        cfg->optim.weight_decay = (float)o->weight_decay;
    cfg->clip_grad = o->clip_grad;
    cfg->seed = o->seed;
    cfg->threads = o->threads;
    for (int k = 0; o->n_patch && k < 3; k++)
        cfg->patch[k] = o->patch[k];
    cfg->val_fraction = o->val_fraction;
    cfg->augment = !o->no_augment;
    cfg->fov_aug = o->fov_aug;
    cfg->crop_aug = o->crop_aug;
    cfg->tune_decision = o->tune_decision;
    cfg->shrinks = !o->no_prune;
    cfg->resume = o->resume;
    cfg->force = o->force;
    cfg->quiet = o->quiet;
    cfg->run_dir = run_dir;
}

/* Sauron pruning as trainer hooks (not called with --no-prune).  *sh
 * stays NULL when --allow-unpruned lets a model without prunable point
 * train unpruned.  The pruning settings go to cfg->extra_settings (in
 * settings, len bytes) so a resume with other flags is refused. */
static int setup_pruning(const CompressOptions *o, Graph *g, int distill,
                         TrainConfig *cfg, char *settings, size_t len,
                         SauronHooks **sh, TrainHooks *hooks)
{
    PrunerConfig pc = o->prune;
    pc.seed = o->seed;
    pc.n_threads = o->threads;
    ReportInfo info = {distill ? "distill" : "labels",
                       "batch 0 of the validation sampler "
                       "(training cases without augmentation if there "
                       "is no validation split)",
                       pc.sched.kind == SAURON_SCHED_PAPER ? "paper"
                                                           : "budget",
                       o->in_path,
                       NULL,
                       g->meta.n_classes};
    info.class_names = (const char *const *)g->meta.class_names;
    int rc = sauron_hooks_create(sh, g, &pc, cfg->epochs, &info, hooks);
    if (rc == ERR_UNSUPPORTED && o->allow_unpruned) {
        fprintf(stderr, "sauron-compress: --allow-unpruned: fine-tuning "
                        "without pruning\n");
        return 0;
    }
    if (rc) return rc;
    cfg->extra_settings = sauron_settings_lines(&pc, settings, len);
    return 0;
}

/* The imported model as a teacher: the only one when label-free
 * (--distill, or a dataset without labelsTr), or beside the labels with
 * --teacher-weight.  *dd stays NULL without a teacher. */
static int setup_teacher(const CompressOptions *o, Graph *g, int distill,
                         Distill **dd, TrainTargets *tt)
{
    if (distill && o->teacher_weight > 0) {
        sl_error("--teacher-weight needs labels: with %s the imported model "
                 "is already the only teacher; drop --teacher-weight",
                 o->distill ? "--distill" : "a dataset without labelsTr");
        return ERR_ARG;
    }
    if (distill) {
        fprintf(stderr,
                "sauron-compress: label-free compression (%s): targets are "
                "the imported model's outputs; validation Dice is agreement "
                "with the imported model\n",
                o->distill ? "--distill" : "the dataset has no labelsTr");
        return distill_create(dd, g, o->threads, tt);
    }
    if (o->teacher_weight > 0)
        return distill_create_teacher(dd, g, o->threads, o->teacher_weight,
                                      tt);
    return 0;
}

/* Write the trained network (ONNX or .sslim, by the output's name) and
 * print what was written (and the --target-flops verdict, if any). */
static int write_trained(const CompressOptions *o, const Graph *g,
                         const char *run_dir, const SauronHooks *sh,
                         const char *decision)
{
    int rc = is_onnx_path(o->out_path)
                 ? onnx_export(g, o->out_path, o->force)
                 : sslim_write(g, o->out_path, o->force);
    if (rc) return rc;
    char sb[64];
    printf("wrote %s: %dD, %d nodes, %lld parameters, input %s, %d "
           "classes; reports in %s\n",
           o->out_path, g->meta.dims, g->n_nodes, (long long)graph_params(g),
           shape_str(&g->values[g->input].shape, sb, sizeof sb),
           g->meta.n_classes, run_dir);
    if (decision) printf("decision: %s\n", decision);
    const char *tl = sauron_hooks_target_line(sh);
    if (tl) printf("--target-flops: %s\n", tl);
    return 0;
}

int compress_train(const CompressOptions *o)
{
    Graph g;
    Dataset ds;
    Trainer *t = NULL;
    TrainConfig cfg;
    char *run_dir = NULL;
    SauronHooks *sh = NULL;
    TrainHooks hooks;
    Distill *dd = NULL;
    TrainTargets tt;
    char settings[1024], lr_note[160];
    char **val_cases = NULL;
    int n_val_cases = 0, rc;
    graph_init(&g);
    memset(&ds, 0, sizeof ds);
    if ((rc = check_data_dir(o->data_dir))) return rc;
    if ((rc = check_output_path(o))) return rc;
    if (o->val_cases && (rc = compress_split_list(o->val_cases, "--val-cases",
                                                  &val_cases, &n_val_cases)))
        return rc;
    if ((rc = import_for_training(o, &g))) goto fail;
    if ((rc = dataset_open_unlabeled(&ds, o->data_dir))) goto fail;
    if ((rc = meta_from_dataset(&g, &ds, o))) goto fail;
    int distill = o->distill || ds.unlabeled;
    if ((rc = setup_teacher(o, &g, distill, &dd, &tt))) goto fail;
    rc = ERR_NOMEM;
    if (!(run_dir = run_dir_for(o))) goto fail;
    train_config_from(o, run_dir, &cfg, lr_note, sizeof lr_note);
    cfg.val_cases = val_cases;
    cfg.n_val_cases = n_val_cases;
    if (o->threads > 0) omp_set_num_threads(o->threads);
    if (!o->no_prune && (rc = setup_pruning(o, &g, distill, &cfg, settings,
                                            sizeof settings, &sh, &hooks)))
        goto fail;
    if (distill || o->teacher_weight > 0) {
        /* a resume must keep the mode and the teacher's weight */
        size_t n = cfg.extra_settings ? strlen(settings) : 0;
        if (distill)
            snprintf(settings + n, sizeof settings - n, "distill=1\n");
        else
            snprintf(settings + n, sizeof settings - n,
                     "teacher_weight=%.17g\n", o->teacher_weight);
        cfg.extra_settings = settings;
    }
    if ((rc = trainer_create(&t, &g, &ds, &cfg, sh ? &hooks : NULL)))
        goto fail;
    if (dd) trainer_set_targets(t, &tt);
    rc = trainer_run(t);
    if (!rc && sh) rc = sauron_hooks_finish(sh, t);
    /* The grid the model learned on: what the training headers share
     * (loaded by the trainer), unless --orientation/--spacing said. */
    if (!rc && !o->orientation_set)
        memcpy(g.meta.orientation, ds.orientation, sizeof g.meta.orientation);
    if (!rc && !o->spacing_set)
        memcpy(g.meta.spacing, ds.spacing, sizeof g.meta.spacing);
    /* Only now, with a finite network, is the output written. */
    char thr[512];
    if (!rc && o->tune_decision) trainer_decision_line(t, thr, sizeof thr);
    if (!rc)
        rc = write_trained(o, &g, run_dir, sh, o->tune_decision ? thr : NULL);
fail:
    trainer_free(t);
    distill_free(dd);
    sauron_hooks_free(sh);
    dataset_free(&ds);
    graph_free(&g);
    sl_free(run_dir);
    free_names(val_cases, n_val_cases);
    return rc;
}

int compress_main(int argc, char **argv)
{
    CompressOptions o;
    int rc = compress_parse_args(argc, argv, &o);
    if (rc) return EXIT_USAGE;
    if (o.help) {
        compress_usage(stdout);
        return 0;
    }
    if (o.version) {
        printf("%s\n", compress_version());
        return 0;
    }
    if (o.man) {
        compress_man(stdout);
        return 0;
    }
    if (!o.no_finetune && compress_input_is_sslim(o.in_path)) {
        sl_error("'%s' is a .sslim model: fine-tuning starts from the "
                 "original ONNX; pass --no-finetune to convert it as it is, "
                 "or give the .onnx it was made from",
                 o.in_path);
        return EXIT_USAGE;
    }
    if (!o.no_finetune) {
        if (!o.data_dir)
            fprintf(stderr,
                    "sauron-compress: fine-tuning needs a dataset: pass "
                    "--data DIR (nnU-Net raw layout: dataset.json, "
                    "imagesTr/, labelsTr/) or --no-finetune to convert "
                    "only\n");
        if (!o.data_dir) return EXIT_USAGE;
        rc = compress_train(&o);
        if (rc == ERR_ARG) return EXIT_USAGE;
        return rc ? 1 : 0;
    }
    rc = compress_run(&o);
    if (rc == ERR_ARG) return EXIT_USAGE;
    return rc ? 1 : 0;
}
