/* Validation of the current network with the runtime (inference mode,
 * as segment runs it: BatchNorm uses running statistics).
 *
 * 2D models: up to TRAINER_VAL_MAX_SLICES slices of every validation case
 * (evenly spaced), each zero-padded to t->V (a size covering every slice)
 * in batches of --batch; loss and confusion counts on the case's own
 * H x W region only (the padding is not scored).  The loss is the mean
 * over these batches of the training loss (CE + soft Dice, the Dice
 * summed over the batch's slices as in training; a batch never mixes
 * cases).
 * 3D models: every validation case segmented as segment does it (read
 * from its file, normalised, the sliding window with Gaussian fusion,
 * runtime/segment.h), scored whole; the loss is the mean over cases of
 * the loss of the fused probabilities.  Two random patches per case, as
 * at first, said a pruned model was 0.49 point below the imported one
 * where the same 4 cases segmented whole were 1.68 points below; tiles
 * stitched by nearest tile, as next, said 1.90 where segment's fused
 * windows said 1.63 (run D3c, docs/SAURON_RESULTS.md).
 * Models whose decision rule the run tunes (cfg.tune_decision,
 * decision.h) are also scored at the validation set's best class biases,
 * the Dice the model will have once tuned (val_dice_tuned).  Two-class
 * models report that Dice as their Dice too (val_dice, val_dice_mean).
 * With more classes val_dice and val_dice_mean stay as trained: they
 * drive the pruning guards, and scoring every epoch at its best biases
 * there let the anatomy default command prune faster and write 73.5%
 * fewer FLOPs at held-out 0.9363 (run Ad), where scoring as trained
 * wrote 78.9% at 0.9379 once tuned at the end (Ac; docs/SAURON_RESULTS.md,
 * "Class biases for any class count").
 * Only output 0 is scored (deep-supervision heads are training aids).
 * Hard Dice per class comes from confusion counts summed over the whole
 * validation set.
 */
#include <math.h>
#include <string.h>

#include "compressor/train/decision.h"
#include "compressor/train/trainer_internal.h"
#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/segment.h"

static void no_validation(EpochStats *st, int K)
{
    st->val_loss = (double)NAN;
    st->n_classes = K;
    for (int k = 0; k < K; k++)
        st->val_dice[k] = (double)NAN;
    st->val_dice_mean = (double)NAN;
    st->val_dice_tuned = (double)NAN;
}

static void dice_from_counts(EpochStats *st, const int64_t *tp,
                             const int64_t *fp, const int64_t *fn, int K)
{
    double sum = 0.0;
    int n = 0;
    metric_dice(st->val_dice, tp, fp, fn, K);
    for (int k = 1; k < K; k++)
        if (!isnan(st->val_dice[k])) {
            sum += st->val_dice[k];
            n++;
        }
    st->val_dice_mean = n ? sum / n : (double)NAN;
}

/* 2D: slices of the validation cases through an executor for [B,C,V1,V2]. */
static int eval_2d(Trainer *t, Executor *ex, float *x, float *crop,
                   uint8_t *lab, int64_t *cnt, double *loss_sum,
                   int64_t *n_items, const LossOptions *lo, DecisionSet *th)
{
    const Dataset *ds = t->ds;
    const int B = t->cfg.batch, C = ds->n_modalities, K = ds->n_classes;
    const int64_t V1 = t->V[1], V2 = t->V[2];
    int64_t *tp = cnt, *fp = cnt + K, *fn = cnt + 2 * K;
    int rc = 0;
    for (int vi = 0; vi < t->split.n_val; vi++) {
        const DataCase *dc = &ds->cases[t->split.val[vi]];
        const int64_t S0 = dc->S[0], S1 = dc->S[1], S2 = dc->S[2];
        int64_t ns =
            S0 < TRAINER_VAL_MAX_SLICES ? S0 : TRAINER_VAL_MAX_SLICES;
        for (int64_t first = 0; first < ns; first += B) {
            int nb = (int)(ns - first < B ? ns - first : B);
            memset(x, 0, (size_t)B * C * V1 * V2 * sizeof *x);
            for (int b = 0; b < nb; b++) {
                /* Evenly spaced slices when capped: centre of each bin. */
                int64_t s = ns == S0 ? first + b
                                     : ((first + b) * 2 + 1) * S0 / (2 * ns);
                for (int c = 0; c < C; c++)
                    for (int64_t h = 0; h < S1; h++)
                        memcpy(x + (((size_t)b * C + c) * V1 + h) * V2,
                               dc->image + ((c * S0 + s) * S1 + h) * S2,
                               (size_t)S2 * sizeof *x);
            }
            const float *outs[SL_MAX_OUTPUTS];
            if ((rc = exec_run(ex, x, outs))) return rc;
            /* The batch's own H x W regions, side by side, so the loss
             * sees the slices together as a training batch does. */
            for (int b = 0; b < nb; b++) {
                int64_t s = ns == S0 ? first + b
                                     : ((first + b) * 2 + 1) * S0 / (2 * ns);
                for (int k = 0; k < K; k++)
                    for (int64_t h = 0; h < S1; h++)
                        memcpy(crop + (((size_t)b * K + k) * S1 + h) * S2,
                               outs[0] + (((size_t)b * K + k) * V1 + h) * V2,
                               (size_t)S2 * sizeof *crop);
                memcpy(lab + (size_t)b * S1 * S2, dc->label + s * S1 * S2,
                       (size_t)S1 * S2);
            }
            Shape cs = {4, {nb, K, S1, S2}};
            LossValue lv = {0, 0, 0};
            if ((rc = loss_ce_dice(&lv, NULL, crop, &cs, lab, lo, 1.0f)))
                return rc;
            if ((rc = metric_confusion(tp, fp, fn, crop, &cs, lab)))
                return rc;
            if (th &&
                (rc = decision_add(th, crop, nb, S1 * S2, lab,
                                   !lo->from_logits)))
                return rc;
            *loss_sum += lv.total;
            ++*n_items;
        }
    }
    return 0;
}

int trainer_val_case_probs(Trainer *t, Segmenter *sg, int i, float **out)
{
    const Dataset *ds = t->ds;
    const DataCase *c = &ds->cases[i];
    const int K = ds->n_classes;
    int16_t *lab = NULL;
    float *probs = NULL, *pt = NULL;
    Volume v;
    *out = NULL;
    int rc = dataset_read_image(ds, i, &v);
    if (rc) return rc;
    const int64_t nv = volume_voxels(&v);
    lab = sl_alloc((size_t)nv * sizeof *lab);
    probs = sl_alloc((size_t)K * nv * sizeof *probs);
    pt = sl_alloc((size_t)K * nv * sizeof *pt);
    if (!lab || !probs || !pt) {
        sl_error("out of memory segmenting validation case '%s'", c->name);
        rc = ERR_NOMEM;
        goto fail;
    }
    if ((rc = segmenter_run(sg, &v, lab, probs))) goto fail;
    /* NIfTI order (i fastest) to tensor order: tensor axis a is NIfTI
     * axis ds->ax[a] */
    const int64_t stride[3] = {1, v.dim[0], v.dim[0] * v.dim[1]};
    const int64_t s0 = stride[ds->ax[0]], s1 = stride[ds->ax[1]],
                  s2 = stride[ds->ax[2]];
    for (int k = 0; k < K; k++) {
        const float *src = probs + (size_t)k * nv;
        float *dst = pt + (size_t)k * nv;
        int64_t o = 0;
        for (int64_t a0 = 0; a0 < c->S[0]; a0++)
            for (int64_t a1 = 0; a1 < c->S[1]; a1++)
                for (int64_t a2 = 0; a2 < c->S[2]; a2++)
                    dst[o++] = src[a0 * s0 + a1 * s1 + a2 * s2];
    }
    *out = pt;
    pt = NULL;
fail:
    volume_free(&v);
    sl_free(lab);
    sl_free(probs);
    sl_free(pt);
    return rc;
}

/* 3D: every validation case segmented as segment does it. */
static int eval_3d(Trainer *t, int64_t *cnt, double *loss_sum,
                   int64_t *n_items, const LossOptions *lo, DecisionSet *th)
{
    const int K = t->ds->n_classes;
    SegmentOptions so;
    memset(&so, 0, sizeof so);
    so.n_threads = t->cfg.threads;
    Segmenter *sg = NULL;
    float *pt = NULL;
    int rc = segmenter_create(t->g, &so, &sg);
    LossOptions lp = *lo;
    lp.from_logits = 0; /* segment's output: fused probabilities */
    for (int vi = 0; !rc && vi < t->split.n_val; vi++) {
        const DataCase *dc = &t->ds->cases[t->split.val[vi]];
        const int64_t nv = dc->S[0] * dc->S[1] * dc->S[2];
        sl_free(pt);
        if ((rc = trainer_val_case_probs(t, sg, t->split.val[vi], &pt)))
            break;
        Shape cs = {5, {1, K, dc->S[0], dc->S[1], dc->S[2]}};
        LossValue lv = {0, 0, 0};
        if ((rc = loss_ce_dice(&lv, NULL, pt, &cs, dc->label, &lp, 1.0f)))
            break;
        if ((rc = metric_confusion(cnt, cnt + K, cnt + 2 * K, pt, &cs,
                                   dc->label)))
            break;
        if (th && (rc = decision_add(th, pt, 1, nv, dc->label, 1))) break;
        *loss_sum += lv.total;
        ++*n_items;
    }
    sl_free(pt);
    segmenter_free(sg);
    return rc;
}

/* Validation of t->g; th (or NULL) also receives the scores, and the
 * counts are then those at its best class biases. */
static int eval_val(Trainer *t, EpochStats *st, DecisionSet *th)
{
    const int K = t->ds->n_classes, C = t->ds->n_modalities;
    const int B = t->cfg.batch;
    Executor *ex = NULL;
    float *x = NULL, *crop = NULL;
    uint8_t *lab = NULL;
    int64_t *cnt = NULL, n_items = 0;
    double loss_sum = 0.0;
    int rc;
    LossOptions lo = t->lo;
    no_validation(st, K);
    if (t->split.n_val == 0) return 0;
    lo.from_logits = !loss_output_is_probability(t->g, 0);
    cnt = sl_calloc((size_t)3 * K, sizeof *cnt);
    if (!cnt) goto nomem;
    if (t->g->meta.dims == 2) {
        Shape vs = {4, {B, C, t->V[1], t->V[2]}};
        if ((rc = exec_create(t->g, &vs, t->cfg.threads, &ex))) goto fail;
        x = sl_alloc((size_t)shape_numel(&vs) * sizeof *x);
        crop = sl_alloc((size_t)B * K * t->V[1] * t->V[2] * sizeof *crop);
        lab = sl_alloc((size_t)B * t->V[1] * t->V[2]);
        if (!x || !crop || !lab) goto nomem;
        rc = eval_2d(t, ex, x, crop, lab, cnt, &loss_sum, &n_items, &lo, th);
    } else {
        rc = eval_3d(t, cnt, &loss_sum, &n_items, &lo, th);
    }
    if (rc) goto fail;
    st->val_loss = n_items ? loss_sum / (double)n_items : (double)NAN;
    if (th) {
        /* two classes: the counts at the best threshold become the Dice
         * (and the tuned Dice is that Dice, below); more classes keep
         * their counts as trained and only the tuned mean */
        double b[DECISION_MAX_CLASSES];
        if ((rc = decision_tune(th, b, K == 2 ? NULL : &st->val_dice_tuned)))
            goto fail;
        if (K == 2) decision_confusion(th, b, cnt, cnt + K, cnt + 2 * K);
    }
    dice_from_counts(st, cnt, cnt + K, cnt + 2 * K, K);
    if (th && K == 2) st->val_dice_tuned = st->val_dice_mean;
fail:
    exec_free(ex);
    sl_free(x);
    sl_free(crop);
    sl_free(lab);
    sl_free(cnt);
    return rc;
nomem:
    sl_error("out of memory for validation");
    rc = ERR_NOMEM;
    goto fail;
}

int trainer_eval_val(Trainer *t, EpochStats *st)
{
    /* models whose decision rule the run will tune: also the Dice at
     * the best class biases, the Dice the model will have once tuned */
    const int K = t->ds->n_classes;
    if (!t->cfg.tune_decision || decision_logit_conv(t->g, K) < 0)
        return eval_val(t, st, NULL);
    DecisionSet s;
    int rc = decision_set_init(&s, K);
    if (!rc) rc = eval_val(t, st, &s);
    decision_set_free(&s);
    return rc;
}
