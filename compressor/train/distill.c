/* Teacher targets for label-free compression (distill.h). */
#include "compressor/train/distill.h"

#include <math.h>
#include <string.h>

#include "compressor/train/loss_soft.h"
#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/nifti_io.h"
#include "runtime/segment.h"

struct Distill {
    Graph teacher; /* owned copy of the imported graph */
    int n_threads;
    Executor *ex;             /* for the training batch shape */
    Shape ex_shape;           /* its input shape */
    float *q[SL_MAX_OUTPUTS]; /* teacher probabilities per output */
    size_t q_n[SL_MAX_OUTPUTS];
    double seconds;
    double teach_w; /* > 0: labels + teach_w * soft targets */
};

double distill_seconds(const Distill *d)
{
    return d->seconds;
}

/* Teacher segmentation of training case i into its label map (tensor
 * order: label[i0][i1][i2] is NIfTI voxel c[ax[t]] = i_t). */
static int relabel_case(Distill *d, Segmenter *sg, Dataset *ds, int i)
{
    Volume v;
    int16_t *lab = NULL;
    int rc = dataset_read_image(ds, i, &v);
    if (rc) return rc;
    DataCase *c = &ds->cases[i];
    int64_t nv = volume_voxels(&v);
    lab = sl_alloc((size_t)nv * sizeof *lab);
    if (!lab) {
        sl_error("out of memory for the teacher's segmentation of '%s'",
                 c->name);
        rc = ERR_NOMEM;
        goto fail;
    }
    double t0 = sl_now();
    if ((rc = segmenter_run(sg, &v, lab, NULL))) goto fail;
    d->seconds += sl_now() - t0;
    int64_t stride[3] = {1, v.dim[0], v.dim[0] * v.dim[1]}; /* NIfTI i,j,k */
    int64_t s0 = stride[ds->ax[0]], s1 = stride[ds->ax[1]],
            s2 = stride[ds->ax[2]];
    int64_t o = 0;
    for (int64_t a = 0; a < c->S[0]; a++)
        for (int64_t b = 0; b < c->S[1]; b++)
            for (int64_t e = 0; e < c->S[2]; e++)
                c->label[o++] = (uint8_t)lab[a * s0 + b * s1 + e * s2];
    rc = data_case_relabel(c);
fail:
    volume_free(&v);
    sl_free(lab);
    return rc;
}

static int ds_split_ready(void *ctx, Trainer *t, Dataset *ds)
{
    Distill *d = ctx;
    const DataSplit *sp = trainer_split(t);
    Segmenter *sg = NULL;
    SegmentOptions so;
    memset(&so, 0, sizeof so);
    so.n_threads = d->n_threads;
    int rc = segmenter_create(&d->teacher, &so, &sg);
    if (rc) return rc;
    int n = sp->n_val > 0 ? sp->n_val : ds->n_cases;
    for (int k = 0; k < n && !rc; k++)
        rc = relabel_case(d, sg, ds, sp->n_val > 0 ? sp->val[k] : k);
    segmenter_free(sg);
    return rc;
}

/* In-place softmax over K of q [B, K, S]. */
static void softmax_channels(float *q, const Shape *s)
{
    int64_t bn = s->d[0], kn = s->d[1], sn = shape_numel(s) / (bn * kn);
    for (int64_t b = 0; b < bn; b++)
        for (int64_t i = 0; i < sn; i++) {
            float *p = q + b * kn * sn + i;
            double m = p[0], sum = 0;
            for (int64_t k = 1; k < kn; k++)
                if ((double)p[k * sn] > m) m = (double)p[k * sn];
            for (int64_t k = 0; k < kn; k++)
                sum += exp((double)p[k * sn] - m);
            for (int64_t k = 0; k < kn; k++)
                p[k * sn] = (float)(exp((double)p[k * sn] - m) / sum);
        }
}

static int ds_loss(void *ctx, Trainer *t, TrainExec *te, const Batch *b,
                   LossValue *lv)
{
    Distill *d = ctx;
    const Graph *g = train_graph(te);
    Shape in;
    int rc;
    batch_input_shape(b, &in); /* field-of-view batches change it */
    if (!d->ex || !shape_equal(&d->ex_shape, &in)) {
        exec_free(d->ex);
        d->ex = NULL;
        if ((rc = exec_create(&d->teacher, &in, d->n_threads, &d->ex)))
            return rc;
        d->ex_shape = in;
    }
    if (d->teacher.n_outputs != g->n_outputs) {
        sl_error("--distill: the teacher has %d outputs and the network %d",
                 d->teacher.n_outputs, g->n_outputs);
        return ERR_ARG;
    }
    const float *out[SL_MAX_OUTPUTS];
    double t0 = sl_now();
    if ((rc = exec_run(d->ex, b->x, out))) return rc;
    d->seconds += sl_now() - t0;
    float w[SL_MAX_OUTPUTS];
    loss_ds_weights(w, g->n_outputs, 0);
    LossOptions o = *trainer_loss_options(t);
    if (d->teach_w > 0) {
        /* the labels' loss first (it sets *lv), the teacher's added */
        rc = train_loss_outputs(te, lv, b->y, NULL, &o);
        if (rc) return rc;
        for (int k = 0; k < g->n_outputs; k++)
            w[k] *= (float)d->teach_w;
    }
    for (int k = 0; k < g->n_outputs; k++) {
        int v = g->outputs[k];
        const Shape *qs = exec_output_shape(d->ex, k);
        const Shape *xs = train_shape(te, v);
        const float *x = train_value(te, v);
        float *dx = train_grad(te, v);
        if (!x || !dx || shape_numel(qs) != shape_numel(xs)) {
            sl_error("--distill: output %d of the network (%s) does not "
                     "match the teacher's",
                     k, g->values[v].name ? g->values[v].name : "?");
            return ERR_ARG;
        }
        size_t n = (size_t)shape_numel(qs);
        if (d->q_n[k] < n) {
            sl_free(d->q[k]);
            d->q_n[k] = 0;
            if (!(d->q[k] = sl_alloc(n * sizeof(float)))) {
                sl_error("out of memory for the teacher's outputs");
                return ERR_NOMEM;
            }
            d->q_n[k] = n;
        }
        memcpy(d->q[k], out[k], n * sizeof(float));
        if (!loss_output_is_probability(&d->teacher, k))
            softmax_channels(d->q[k], qs);
        o.from_logits = !loss_output_is_probability(g, k);
        rc = loss_soft_ce_dice(lv, dx, x, xs, d->q[k], &o, w[k]);
        if (rc) return rc;
    }
    return 0;
}

int distill_create(Distill **out, const Graph *teacher, int n_threads,
                   TrainTargets *tt)
{
    *out = NULL;
    memset(tt, 0, sizeof *tt);
    Distill *d = sl_calloc(1, sizeof *d);
    if (!d) {
        sl_error("out of memory setting up --distill");
        return ERR_NOMEM;
    }
    graph_init(&d->teacher);
    if (graph_clone(&d->teacher, teacher)) {
        sl_error("out of memory copying the teacher model for --distill");
        distill_free(d);
        return ERR_NOMEM;
    }
    d->n_threads = n_threads;
    tt->ctx = d;
    tt->split_ready = ds_split_ready;
    tt->loss = ds_loss;
    *out = d;
    return 0;
}

int distill_create_teacher(Distill **out, const Graph *teacher, int n_threads,
                           double weight, TrainTargets *tt)
{
    int rc = distill_create(out, teacher, n_threads, tt);
    if (rc) return rc;
    (*out)->teach_w = weight;
    tt->split_ready = NULL; /* the labels stay */
    return 0;
}

void distill_free(Distill *d)
{
    if (!d) return;
    exec_free(d->ex);
    for (int k = 0; k < SL_MAX_OUTPUTS; k++)
        sl_free(d->q[k]);
    graph_free(&d->teacher);
    sl_free(d);
}
