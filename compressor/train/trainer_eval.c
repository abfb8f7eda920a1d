/* Validation of the current network with the runtime executor (inference
 * mode, as segment runs it: BatchNorm uses running statistics).
 *
 * 2D models: up to TRAINER_VAL_MAX_SLICES slices of every validation case
 * (evenly spaced), each zero-padded to t->V (a size covering every slice)
 * in batches of --batch; loss and confusion counts on the case's own
 * H x W region only (the padding is not scored).  The loss is the mean
 * over these batches of the training loss (CE + soft Dice, the Dice
 * summed over the batch's slices as in training; a batch never mixes
 * cases).
 * 3D models: TRAINER_VAL_PATCHES_PER_CASE fixed patches per validation
 * case from the unaugmented validation sampler (the same every epoch);
 * the loss is the mean over batches.
 * Only output 0 is scored (deep-supervision heads are training aids).
 * Hard Dice per class comes from confusion counts summed over the whole
 * validation set.
 */
#include <math.h>
#include <string.h>

#include "compressor/train/trainer_internal.h"
#include "runtime/common.h"
#include "runtime/exec.h"

static void no_validation(EpochStats *st, int K)
{
    st->val_loss = (double)NAN;
    st->n_classes = K;
    for (int k = 0; k < K; k++)
        st->val_dice[k] = (double)NAN;
    st->val_dice_mean = (double)NAN;
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
                   int64_t *n_items, const LossOptions *lo)
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
            *loss_sum += lv.total;
            ++*n_items;
        }
    }
    return 0;
}

/* 3D: fixed patches of the validation sampler. */
static int eval_3d(Trainer *t, Executor *ex, Batch *b, int64_t *cnt,
                   double *loss_sum, int64_t *n_items, const LossOptions *lo)
{
    const int K = t->ds->n_classes, B = t->cfg.batch;
    int64_t n = (int64_t)t->split.n_val * TRAINER_VAL_PATCHES_PER_CASE;
    int64_t nbatch = (n + B - 1) / B;
    int rc;
    for (int64_t k = 0; k < nbatch; k++) {
        const float *outs[SL_MAX_OUTPUTS];
        sampler_fill(&t->val_s, k, b);
        if ((rc = exec_run(ex, b->x, outs))) return rc;
        const Shape *os = exec_output_shape(ex, 0);
        LossValue lv = {0, 0, 0};
        if ((rc = loss_ce_dice(&lv, NULL, outs[0], os, b->y, lo, 1.0f)))
            return rc;
        if ((rc = metric_confusion(cnt, cnt + K, cnt + 2 * K, outs[0], os,
                                   b->y)))
            return rc;
        *loss_sum += lv.total;
        ++*n_items;
    }
    return 0;
}

int trainer_eval_val(Trainer *t, EpochStats *st)
{
    const int K = t->ds->n_classes, C = t->ds->n_modalities;
    const int B = t->cfg.batch;
    Executor *ex = NULL;
    float *x = NULL, *crop = NULL;
    uint8_t *lab = NULL;
    int64_t *cnt = NULL, n_items = 0;
    double loss_sum = 0.0;
    Batch vb;
    int have_vb = 0, rc;
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
        rc = eval_2d(t, ex, x, crop, lab, cnt, &loss_sum, &n_items, &lo);
    } else {
        if ((rc = batch_alloc(&vb, &t->val_s))) goto fail;
        have_vb = 1;
        if ((rc = exec_create(t->g, &t->in_shape, t->cfg.threads, &ex)))
            goto fail;
        rc = eval_3d(t, ex, &vb, cnt, &loss_sum, &n_items, &lo);
    }
    if (rc) goto fail;
    st->val_loss = n_items ? loss_sum / (double)n_items : (double)NAN;
    dice_from_counts(st, cnt, cnt + K, cnt + 2 * K, K);
fail:
    exec_free(ex);
    if (have_vb) batch_free(&vb);
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
