/* Segmentation driver: 2D slice batches and 3D Gaussian sliding windows
 * over a Volume, streamed into a label map.  See segment.h. */
#include "segment.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "exec.h"
#include "mirror.h"

/* Slices per exec_run for 2D models when the caller gives none: as many
 * as keep one run's activations (arena) within SEG_AUTO_BATCH_BYTES, at
 * most SEG_DEFAULT_BATCH.  Batching amortises per-node overheads on
 * small slices, but once a batch outgrows the shared cache every layer
 * streams its activations from memory: the default model's 224x192
 * slices (13 MB of activations each) ran about 7% faster one at a time
 * than four at a time (51 MB) here (32 MiB L3, shared with other jobs).
 * Labels do not depend on the batch. */
#define SEG_DEFAULT_BATCH 4
#define SEG_AUTO_BATCH_BYTES ((size_t)16 << 20)
/* Executors kept alive (one per distinct input shape): one 2D batch
 * shape per grid, usually just one or two. */
#define SEG_MAX_EXEC 4
/* 2D slices run side by side, one single-threaded executor per thread,
 * at most this many (run_2d). */
#define SEG_MAX_LANES 16
/* Largest spatial size probed when looking for a size the network
 * accepts. */
#define SEG_MAX_PROBE 2048

struct Segmenter {
    Graph *g;
    SegmentOptions o;
    int softmax_last; /* graph output is already a softmax */
    int batch_ok;     /* no op mixes samples of a batch */
    int auto_batch;   /* no batch given: chosen per slice size */
    Executor *ex[SEG_MAX_EXEC];
    Shape key[SEG_MAX_EXEC];
    int n_ex, evict, created;
    Executor *lane[SEG_MAX_LANES]; /* run_2d's side-by-side executors */
    Shape lane_key;
    int n_lane;
    size_t accum_bytes;
};

static int meta_check(const Graph *g)
{
    const ModelMeta *m = &g->meta;
    if (m->n_classes < 1 || m->n_classes > 32767 || m->n_modalities < 1 ||
        m->n_modalities > 4096) {
        sl_error("model metadata lists %d classes and %d modalities; "
                 "re-export the model with sauron-compress",
                 m->n_classes, m->n_modalities);
        return ERR_FORMAT;
    }
    if (m->dims == 3)
        for (int t = 0; t < 3; t++)
            if (m->patch[t] < 1 || m->patch[t] > SEG_MAX_PROBE) {
                sl_error("model metadata has 3D patch %dx%dx%d; re-export "
                         "the model with sauron-compress",
                         m->patch[0], m->patch[1], m->patch[2]);
                return ERR_FORMAT;
            }
    if (g->n_outputs < 1 || g->input < 0 || g->input >= g->n_values) {
        sl_error("model has no input or output; re-export it with "
                 "sauron-compress");
        return ERR_FORMAT;
    }
    int ax[3];
    return volume_axes(m->order, m->dims, m->axis, ax);
}

int segmenter_create(Graph *g, const SegmentOptions *o, Segmenter **out)
{
    *out = NULL;
    int rc = meta_check(g);
    if (rc) return rc;
    Segmenter *s = sl_calloc(1, sizeof *s);
    if (!s) {
        sl_error("out of memory creating the segmenter");
        return ERR_NOMEM;
    }
    s->g = g;
    if (o) s->o = *o;
    s->auto_batch = s->o.batch <= 0;
    if (s->o.batch <= 0) s->o.batch = SEG_DEFAULT_BATCH;
    if (!(s->o.step > 0.0 && s->o.step <= 1.0)) s->o.step = 0.5;
    int prod = g->values[g->outputs[0]].producer;
    s->softmax_last = prod >= 0 && g->nodes[prod].op == OP_SOFTMAX &&
                      g->nodes[prod].p.softmax.axis == 1 &&
                      !g->nodes[prod].p.softmax.flatten;
    /* BatchNorm with batch statistics couples the slices of a batch:
     * then one slice per run, so the labels never depend on batching. */
    s->batch_ok = 1;
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == OP_BATCH_NORM &&
            g->nodes[i].p.norm.use_batch_stats)
            s->batch_ok = 0;
    if (!s->batch_ok) {
        s->o.batch = 1;
        s->auto_batch = 0;
    }
    *out = s;
    return 0;
}

void segmenter_free(Segmenter *s)
{
    if (!s) return;
    for (int i = 0; i < s->n_ex; i++)
        exec_free(s->ex[i]);
    for (int i = 0; i < s->n_lane; i++)
        exec_free(s->lane[i]);
    sl_free(s);
}

size_t segmenter_accum_bytes(const Segmenter *s)
{
    return s->accum_bytes;
}
const Graph *segmenter_graph(const Segmenter *s)
{
    return s->g;
}
SegmentOptions segmenter_options(const Segmenter *s)
{
    return s->o;
}
int segmenter_exec_count(const Segmenter *s)
{
    return s->created;
}

/* The executor for input shape `in`, created on first use; checks that
 * the first output is [N, n_classes, same spatial size]. */
static int get_exec(Segmenter *s, const Shape *in, Executor **out)
{
    for (int i = 0; i < s->n_ex; i++)
        if (shape_equal(&s->key[i], in)) {
            *out = s->ex[i];
            return 0;
        }
    Executor *e = NULL;
    int rc = exec_create(s->g, in, s->o.n_threads, &e);
    if (rc) return rc;
    const Shape *os = exec_output_shape(e, 0);
    int ok = os->ndim == in->ndim && os->d[0] == in->d[0] &&
             os->d[1] == s->g->meta.n_classes;
    for (int t = 2; ok && t < in->ndim; t++)
        ok = os->d[t] == in->d[t];
    if (!ok) {
        char a[64], b[64];
        sl_error("model output %s does not match input %s with %d classes "
                 "(metadata); re-export the model with sauron-compress",
                 shape_str(os, a, sizeof a), shape_str(in, b, sizeof b),
                 s->g->meta.n_classes);
        exec_free(e);
        return ERR_SHAPE;
    }
    int slot = s->n_ex;
    if (slot == SEG_MAX_EXEC) {
        slot = s->evict;
        s->evict = (s->evict + 1) % SEG_MAX_EXEC;
        exec_free(s->ex[slot]);
    } else {
        s->n_ex++;
    }
    s->ex[slot] = e;
    s->key[slot] = *in;
    s->created++;
    *out = e;
    return 0;
}

/* n single-threaded executors for input shape `in` (s->lane), created on
 * first use; get_exec's checks hold for them (same graph and shape). */
static int get_lanes(Segmenter *s, const Shape *in, int n)
{
    if (s->n_lane >= n && shape_equal(&s->lane_key, in)) return 0;
    for (int i = 0; i < s->n_lane; i++)
        exec_free(s->lane[i]);
    s->n_lane = 0;
    for (int i = 0; i < n; i++) {
        int rc = exec_create(s->g, in, 1, &s->lane[i]);
        if (rc) return rc;
        s->n_lane++;
        s->created++;
    }
    s->lane_key = *in;
    return 0;
}

/* Does input [1, C, sp...] give an output with the same spatial size? */
static int size_ok(Graph *g, int nsp, const int64_t sp[3])
{
    Shape in = {.ndim = 2 + nsp, .d = {1, g->meta.n_modalities}};
    for (int t = 0; t < nsp; t++)
        in.d[2 + t] = sp[t];
    sl_error_reset();
    if (graph_infer_shapes(g, &in)) return 0;
    const Shape *o = &g->values[g->outputs[0]].shape;
    if (o->ndim != in.ndim) return 0;
    for (int t = 0; t < nsp; t++)
        if (o->d[2 + t] != sp[t]) return 0;
    return 1;
}

/* Smallest sizes >= want (per spatial dim) the network accepts.  U-Net
 * constraints are per dim (divisibility by the total stride), so: find a
 * cube the network accepts, then grow each dim on its own from there. */
static int valid_sizes(Segmenter *s, int nsp, const int64_t want[3],
                       int64_t got[3])
{
    Graph *g = s->g;
    char saved[1024];
    int had_error = sl_error_reported();
    int was_quiet = sl_error_is_quiet();
    snprintf(saved, sizeof saved, "%s", sl_error_last());
    sl_error_quiet(1);
    int64_t cube = -1;
    for (int64_t c = 1; c <= SEG_MAX_PROBE && cube < 0; c++) {
        int64_t sp[3] = {c, c, c};
        if (size_ok(g, nsp, sp)) cube = c;
    }
    sl_error_reset();
    if (had_error) sl_error("%s", saved);
    sl_error_quiet(was_quiet);
    if (cube < 0) {
        sl_error("the model accepts no %dD input up to %d voxels per side; "
                 "check the model's input shape (re-export it)",
                 nsp, SEG_MAX_PROBE);
        return ERR_SHAPE;
    }
    Shape base = {.ndim = 2 + nsp, .d = {1, g->meta.n_modalities}};
    for (int t = 0; t < nsp; t++)
        base.d[2 + t] = cube;
    for (int t = 0; t < nsp; t++) {
        int64_t v = graph_valid_size(g, &base, t, want[t]);
        if (v < 0) {
            sl_error("no input size >= %lld along spatial dim %d suits the "
                     "model; the volume is too large or the model is "
                     "inconsistent",
                     (long long)want[t], t);
            return ERR_SHAPE;
        }
        got[t] = v;
        base.d[2 + t] = v;
    }
    return 0;
}

int segmenter_norm_affines(const Segmenter *s, const Volume *in,
                           NormAffine *na)
{
    const ModelMeta *m = &s->g->meta;
    for (int c = 0; c < in->n_mod; c++) {
        /* No normalisation in the metadata: nnU-Net's z-score, the
         * documented default. */
        Normalize z = {NORMALIZE_ZSCORE, 0.0f, 0.0f};
        const Normalize *n = m->normalize ? &m->normalize[c] : &z;
        int rc = volume_norm_affine(in, c, n, &na[c]);
        if (rc) return rc;
    }
    return 0;
}

/* Probabilities p [nb, nc, pad...] of the input x [nb, C, pad...]
 * averaged over the mirrored passes of mr (mirror.h); box: the scan's
 * voxels inside the padding. */
static int run_mirrored(const Segmenter *s, Executor *e, Mirror *mr,
                        const float *x, int64_t nb, int C,
                        const int64_t box[3], const int64_t pad[3], float *p)
{
    int nc = s->g->meta.n_classes;
    int64_t sp = pad[0] * pad[1] * pad[2];
    for (int m = 0; m < mr->n_pass; m++) {
        int mask = m << mr->first_axis;
        mirror_flip(mr->xf, x, nb * C, pad, box, mask, mr->n_threads);
        const float *outs[SL_MAX_OUTPUTS];
        int rc = exec_run(e, mr->xf, outs);
        if (rc) return rc;
        mirror_flip(mr->cur, outs[0], nb * nc, pad, box, mask, mr->n_threads);
        if (!s->softmax_last) softmax_classes(mr->cur, nb, nc, sp);
        mirror_push(mr);
    }
    mirror_mean(mr, p);
    return 0;
}

static void progress(const Segmenter *s, int64_t done, int64_t total)
{
    if (s->o.progress) s->o.progress(s->o.progress_ctx, done, total);
}

/* Where a run's scores go: a label map (and probabilities), or a sink. */
typedef struct {
    int16_t *labels;
    float *probs;
    const ScoreSink *sink;
} Out;

static int out_wants_probs(const Out *o)
{
    return o->probs || (o->sink && o->sink->probabilities);
}

/* ---- 2D: slice batches ---- */

/* The automatic batch for slices of shape one ([1, C, H, W]): from the
 * arena of a one-slice executor (kept: it is the one used when the
 * answer is 1). */
static int auto_batch(Segmenter *s, const Shape *one, int64_t *B)
{
    Executor *e;
    int rc = get_exec(s, one, &e);
    if (rc) return rc;
    size_t per = exec_arena_bytes(e);
    int64_t b =
        per > 0 ? (int64_t)(SEG_AUTO_BATCH_BYTES / per) : SEG_DEFAULT_BATCH;
    *B = b < 1 ? 1 : b > SEG_DEFAULT_BATCH ? SEG_DEFAULT_BATCH : b;
    return 0;
}

/* run_2d with `lanes` slices at a time, slice s0 + t on lane executor t
 * (one thread each); the outputs then go to the label map or the sink in
 * slice order.  shp: the one-slice input shape. */
static int run_2d_lanes(Segmenter *s, const Volume *in, const NormAffine *na,
                        const int ax[3], const Out *out, const Shape *shp,
                        int lanes, const int64_t box[3], const int64_t pad[3])
{
    int nc = s->g->meta.n_classes;
    int64_t n_sl = in->dim[ax[0]];
    size_t per_in = (size_t)(shp->d[1] * pad[1] * pad[2]);
    int rc = get_lanes(s, shp, lanes);
    if (rc) return rc;
    for (int t = 0; t < lanes; t++)
        exec_set_skip_softmax(s->lane[t], 1);
    float *x = sl_alloc(sizeof(float) * per_in * (size_t)lanes);
    if (!x) {
        sl_error("out of memory for %d slices", lanes);
        return ERR_NOMEM;
    }
    /* exec_run re-infers the graph's shapes when another shape ran last;
     * the lanes share the graph, so that happens here, before they start */
    Graph *g = s->g;
    if (!shape_equal(&g->values[g->input].shape, shp) &&
        (rc = graph_infer_shapes(g, shp)))
        goto done;
    for (int64_t s0 = 0; s0 < n_sl && !rc; s0 += lanes) {
        int nb = n_sl - s0 < lanes ? (int)(n_sl - s0) : lanes;
        const float *y[SEG_MAX_LANES];
        int lrc[SEG_MAX_LANES] = {0};
#pragma omp parallel for num_threads(nb) schedule(static, 1)
        for (int t = 0; t < nb; t++) {
            int64_t off[3] = {s0 + t, 0, 0};
            float *xt = x + (size_t)t * per_in;
            volume_gather(xt, in, na, ax, off, box, pad);
            const float *outs[SL_MAX_OUTPUTS];
            lrc[t] = exec_run(s->lane[t], xt, outs);
            y[t] = outs[0];
        }
        for (int t = 0; t < nb && !rc; t++)
            rc = lrc[t];
        for (int t = 0; t < nb && !rc; t++) {
            int64_t off[3] = {s0 + t, 0, 0};
            if (out->sink)
                out->sink->planes(out->sink->ctx, y[t], NULL, nc, ax, off,
                                  box, pad);
            else
                volume_argmax_scatter(out->labels, in->dim, y[t], nc, ax, off,
                                      box, pad);
        }
        if (!rc) progress(s, s0 + nb, n_sl);
    }
done:
    sl_free(x);
    return rc;
}

static int run_2d(Segmenter *s, const Volume *in, const NormAffine *na,
                  const int ax[3], const Out *out)
{
    float *probs = out->probs;
    int want_probs = out_wants_probs(out);
    const ModelMeta *m = &s->g->meta;
    int nc = m->n_classes, C = in->n_mod;
    int64_t n_sl = in->dim[ax[0]];
    int64_t want[3] = {in->dim[ax[1]], in->dim[ax[2]], 1}, hw[3];
    int rc = valid_sizes(s, 2, want, hw);
    if (rc) return rc;
    int64_t B = s->o.batch;
    if (s->auto_batch) {
        Shape one = {.ndim = 4, .d = {1, C, hw[0], hw[1]}};
        if ((rc = auto_batch(s, &one, &B))) return rc;
    }
    if (B > n_sl) B = n_sl;
    Shape shp = {.ndim = 4, .d = {B, C, hw[0], hw[1]}};
    Executor *e = NULL;
    float *x = NULL, *p = NULL;
    Mirror mr = {0};
    if ((rc = get_exec(s, &shp, &e))) goto fail;
    /* Labels only: the argmax of the logits is the argmax of their
     * softmax, so the final Softmax is skipped.  Tie rule, either way:
     * the first class with the largest score (volume_argmax_scatter).
     * The logits can only separate classes the softmax rounds to the
     * same probability; then they give the exact argmax.  --tta averages
     * probabilities: then the Softmax stays. */
    exec_set_skip_softmax(e, !want_probs && !s->o.tta);
    rc = ERR_NOMEM;
    size_t per_in = (size_t)(C * hw[0] * hw[1]);
    size_t per_out = (size_t)(nc * hw[0] * hw[1]);
    int need_p = s->o.tta || (want_probs && !s->softmax_last);
    x = sl_alloc(sizeof(float) * per_in * (size_t)B);
    if (need_p) p = sl_alloc(sizeof(float) * per_out * (size_t)B);
    if (s->o.tta && (rc = mirror_init(&mr, 2, per_in * (size_t)B,
                                      per_out * (size_t)B, s->o.n_threads)))
        goto fail;
    rc = ERR_NOMEM;
    if (!x || (need_p && !p)) {
        sl_error("out of memory for a batch of %lld slices", (long long)B);
        goto fail;
    }
    int64_t box[3] = {1, want[0], want[1]}, pad[3] = {1, hw[0], hw[1]};
    /* One slice per run (slices too large to batch): the slices run side
     * by side, one single-threaded executor per thread, instead of one
     * slice split across the threads op by op.  A slim model's layers
     * are too small to keep several threads busy (each op forks, waits
     * at a barrier and splits a few channels unevenly); separate slices
     * need none of that.  Every kernel gives the same bits on 1 thread
     * as on several, so the labels do not change.  Not with --tta or
     * probabilities (their buffers are per run). */
    int nt = s->o.n_threads > 0 ? s->o.n_threads : omp_get_num_procs();
    int lanes = nt < SEG_MAX_LANES ? nt : SEG_MAX_LANES;
    if (B != 1 || s->o.tta || want_probs || n_sl < 2) lanes = 1;
    if (lanes > n_sl) lanes = (int)n_sl;
    if (lanes > 1) {
        rc = run_2d_lanes(s, in, na, ax, out, &shp, lanes, box, pad);
        goto fail; /* done either way: frees the batch buffers */
    }
    for (int64_t s0 = 0; s0 < n_sl; s0 += B) {
        int64_t nb = n_sl - s0 < B ? n_sl - s0 : B;
        for (int64_t b = 0; b < nb; b++) {
            int64_t off[3] = {s0 + b, 0, 0};
            volume_gather(x + b * per_in, in, na, ax, off, box, pad);
        }
        /* A short last batch: zero the unused slots (their outputs are
         * ignored; zeros keep every value finite). */
        if (nb < B)
            memset(x + nb * per_in, 0,
                   sizeof(float) * per_in * (size_t)(B - nb));
        const float *y;
        if (s->o.tta) {
            if ((rc = run_mirrored(s, e, &mr, x, B, C, box, pad, p)))
                goto fail;
            y = p;
        } else {
            const float *outs[SL_MAX_OUTPUTS];
            if ((rc = exec_run(e, x, outs))) goto fail;
            y = outs[0];
            if (p) {
                memcpy(p, y, sizeof(float) * per_out * (size_t)nb);
                softmax_classes(p, nb, nc, hw[0] * hw[1]);
            }
        }
        for (int64_t b = 0; b < nb; b++) {
            int64_t off[3] = {s0 + b, 0, 0};
            if (out->sink) {
                const float *sc = (want_probs && p ? p : y) + b * per_out;
                out->sink->planes(out->sink->ctx, sc, NULL, nc, ax, off, box,
                                  pad);
                continue;
            }
            volume_argmax_scatter(out->labels, in->dim, y + b * per_out, nc,
                                  ax, off, box, pad);
            if (probs)
                volume_probs_scatter(probs, in->dim,
                                     (p ? p : y) + b * per_out, NULL, nc, ax,
                                     off, box, pad);
        }
        progress(s, s0 + nb, n_sl);
    }
    rc = 0;
fail:
    mirror_free(&mr);
    sl_free(x);
    sl_free(p);
    return rc;
}

/* ---- 3D: Gaussian sliding window, slab accumulator ---- */

typedef struct {
    int nc;
    int64_t S[3], Bx[3]; /* volume size, window box (tensor order) */
    int64_t base;        /* global tensor-dim-0 index of slab plane 0 */
    float *acc;          /* [nc][Bx0][S1][S2] weighted probabilities */
    float *wsum;         /* [Bx0][S1][S2] sum of weights */
} Slab;

/* Write planes [base, upto) of the slab into labels (and probs). */
static void slab_flush(const Slab *sl, int64_t upto, const Volume *in,
                       const int ax[3], const Out *out)
{
    if (upto <= sl->base) return;
    int64_t off[3] = {sl->base, 0, 0};
    int64_t box[3] = {upto - sl->base, sl->S[1], sl->S[2]};
    int64_t pad[3] = {sl->Bx[0], sl->S[1], sl->S[2]};
    int16_t *labels = out->labels;
    float *probs = out->probs;
    if (out->sink) {
        out->sink->planes(out->sink->ctx, sl->acc, sl->wsum, sl->nc, ax, off,
                          box, pad);
        return;
    }
    /* The weight sum is positive and equal across classes: the argmax
     * of the weighted sums is the argmax of the averages. */
    volume_argmax_scatter(labels, in->dim, sl->acc, sl->nc, ax, off, box,
                          pad);
    if (probs)
        volume_probs_scatter(probs, in->dim, sl->acc, sl->wsum, sl->nc, ax,
                             off, box, pad);
}

/* Move the slab origin to new_base (>= base): keep the overlap, zero the
 * rest. */
static void slab_shift(Slab *sl, int64_t new_base)
{
    size_t plane = (size_t)(sl->S[1] * sl->S[2]);
    int64_t d = new_base - sl->base;
    if (d <= 0) return;
    int64_t keep = sl->Bx[0] - d > 0 ? sl->Bx[0] - d : 0;
    size_t cls = (size_t)sl->Bx[0] * plane;
    for (int c = 0; c <= sl->nc; c++) {
        float *a = c < sl->nc ? sl->acc + (size_t)c * cls : sl->wsum;
        if (keep > 0)
            memmove(a, a + (size_t)d * plane,
                    sizeof(float) * (size_t)keep * plane);
        memset(a + (size_t)keep * plane, 0,
               sizeof(float) * (size_t)(sl->Bx[0] - keep) * plane);
    }
    sl->base = new_base;
}

/* acc += p * w over one window at tensor offset off (dims 1, 2) and
 * slab plane z (dim 0).  p [nc, P0, P1, P2], w [P0, P1, P2]. */
static void slab_add(Slab *sl, const float *p, const float *w,
                     const int64_t P[3], int64_t z, const int64_t off[3],
                     int n_threads)
{
    size_t plane = (size_t)(sl->S[1] * sl->S[2]);
    size_t cls = (size_t)sl->Bx[0] * plane;
    size_t pcls = (size_t)(P[0] * P[1] * P[2]);
    int64_t B0 = sl->Bx[0], B1 = sl->Bx[1], B2 = sl->Bx[2];
    /* Each x0 writes its own slab plane: no two threads touch the same
     * memory and each sum has one term per window, in window order. */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t x0 = 0; x0 < B0; x0++)
        for (int64_t x1 = 0; x1 < B1; x1++) {
            size_t so = (size_t)(z + x0) * plane +
                        (size_t)(off[1] + x1) * (size_t)sl->S[2] +
                        (size_t)off[2];
            size_t po = (size_t)((x0 * P[1] + x1) * P[2]);
            for (int64_t x2 = 0; x2 < B2; x2++)
                sl->wsum[so + (size_t)x2] += w[po + (size_t)x2];
            for (int c = 0; c < sl->nc; c++) {
                float *a = sl->acc + (size_t)c * cls + so;
                const float *pc = p + (size_t)c * pcls + po;
                for (int64_t x2 = 0; x2 < B2; x2++)
                    a[x2] += pc[x2] * w[po + (size_t)x2];
            }
        }
}

static int run_3d(Segmenter *s, const Volume *in, const NormAffine *na,
                  const int ax[3], const Out *out)
{
    const ModelMeta *m = &s->g->meta;
    int nc = m->n_classes, C = in->n_mod, rc = ERR_NOMEM;
    int64_t P[3], S[3];
    int64_t *starts[3] = {NULL, NULL, NULL};
    int nst[3];
    float *x = NULL, *p = NULL, *w = NULL;
    Mirror mr = {0};
    Slab sl = {.nc = nc};
    for (int t = 0; t < 3; t++) {
        P[t] = m->patch[t];
        S[t] = in->dim[ax[t]];
        sl.S[t] = S[t];
        sl.Bx[t] = S[t] < P[t] ? S[t] : P[t];
    }
    Shape shp = {.ndim = 5, .d = {1, C, P[0], P[1], P[2]}};
    Executor *e = NULL;
    if ((rc = get_exec(s, &shp, &e))) goto fail;
    /* windows are fused as probabilities: keep the Softmax */
    exec_set_skip_softmax(e, 0);
    rc = ERR_NOMEM;
    size_t pv = (size_t)(P[0] * P[1] * P[2]);
    size_t slab_vox = (size_t)sl.Bx[0] * (size_t)(S[1] * S[2]);
    x = sl_alloc(sizeof(float) * pv * (size_t)C);
    p = sl_alloc(sizeof(float) * pv * (size_t)nc);
    w = sl_alloc(sizeof(float) * pv);
    sl.acc = sl_calloc(slab_vox * (size_t)nc, sizeof(float));
    sl.wsum = sl_calloc(slab_vox, sizeof(float));
    for (int t = 0; t < 3; t++)
        starts[t] = sl_alloc(sizeof(int64_t) * (size_t)(S[t] + 1));
    if (s->o.tta && (rc = mirror_init(&mr, 3, pv * (size_t)C, pv * (size_t)nc,
                                      s->o.n_threads)))
        goto fail;
    rc = ERR_NOMEM;
    if (!x || !p || !w || !sl.acc || !sl.wsum || !starts[0] || !starts[1] ||
        !starts[2]) {
        sl_error("out of memory for the sliding window (%zu MB of slab "
                 "buffers)",
                 slab_vox * (size_t)(nc + 1) * 4 >> 20);
        goto fail;
    }
    s->accum_bytes = slab_vox * (size_t)(nc + 1) * sizeof(float);
    gaussian_map(w, P);
    for (int t = 0; t < 3; t++)
        nst[t] =
            window_starts(S[t], P[t], s->o.step, starts[t], (int)(S[t] + 1));
    int64_t total = (int64_t)nst[0] * nst[1] * nst[2], done = 0;
    int nt = s->o.n_threads > 0 ? s->o.n_threads : omp_get_num_procs();
    for (int i0 = 0; i0 < nst[0]; i0++) {
        int64_t z = starts[0][i0];
        /* Planes below z are final: no later window reaches them. */
        slab_flush(&sl, z, in, ax, out);
        slab_shift(&sl, z);
        for (int i1 = 0; i1 < nst[1]; i1++)
            for (int i2 = 0; i2 < nst[2]; i2++) {
                int64_t off[3] = {z, starts[1][i1], starts[2][i2]};
                volume_gather(x, in, na, ax, off, sl.Bx, P);
                if (s->o.tta) {
                    if ((rc = run_mirrored(s, e, &mr, x, 1, C, sl.Bx, P, p)))
                        goto fail;
                } else {
                    const float *outs[SL_MAX_OUTPUTS];
                    if ((rc = exec_run(e, x, outs))) goto fail;
                    memcpy(p, outs[0], sizeof(float) * pv * (size_t)nc);
                    if (!s->softmax_last)
                        softmax_classes(p, 1, nc, (int64_t)pv);
                }
                slab_add(&sl, p, w, P, z - sl.base, off, nt);
                progress(s, ++done, total);
            }
    }
    slab_flush(&sl, S[0], in, ax, out);
    rc = 0;
fail:
    mirror_free(&mr);
    for (int t = 0; t < 3; t++)
        sl_free(starts[t]);
    sl_free(x);
    sl_free(p);
    sl_free(w);
    sl_free(sl.acc);
    sl_free(sl.wsum);
    return rc;
}

int segmenter_run(Segmenter *s, const Volume *in, int16_t *labels,
                  float *probs)
{
    const ModelMeta *m = &s->g->meta;
    NormAffine *na = NULL;
    int ax[3], rc;
    s->accum_bytes = 0;
    if (in->n_mod != m->n_modalities) {
        sl_error("model expects %d modalities, the scan has %d; pass them "
                 "as one 4D file or joined by commas",
                 m->n_modalities, in->n_mod);
        return ERR_SHAPE;
    }
    if ((rc = volume_axes(m->order, m->dims, m->axis, ax))) return rc;
    na = sl_calloc((size_t)in->n_mod, sizeof *na);
    if (!na) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    if ((rc = segmenter_norm_affines(s, in, na))) goto fail;
    Out out = {labels, probs, NULL};
    if (m->dims == 2)
        rc = run_2d(s, in, na, ax, &out);
    else
        rc = run_3d(s, in, na, ax, &out);
fail:
    sl_free(na);
    return rc;
}

int segmenter_run_sink(Segmenter *s, const Volume *in, const ScoreSink *sink)
{
    const ModelMeta *m = &s->g->meta;
    int ax[3], rc;
    s->accum_bytes = 0;
    if (in->n_mod != m->n_modalities) {
        sl_error("model expects %d modalities, the scan has %d; pass them "
                 "as one 4D file or joined by commas",
                 m->n_modalities, in->n_mod);
        return ERR_SHAPE;
    }
    if ((rc = volume_axes(m->order, m->dims, m->axis, ax))) return rc;
    Out out = {NULL, NULL, sink};
    return m->dims == 2 ? run_2d(s, in, NULL, ax, &out)
                        : run_3d(s, in, NULL, ax, &out);
}

int segment_volume(Graph *g, const Volume *in, const SegmentOptions *o,
                   int16_t *labels, float *probs)
{
    Segmenter *s = NULL;
    int rc = segmenter_create(g, o, &s);
    if (rc) return rc;
    rc = segmenter_run(s, in, labels, probs);
    segmenter_free(s);
    return rc;
}
