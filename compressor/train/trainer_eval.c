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
 * 3D models: every voxel of every validation case, once.  Each case is
 * cut into patch-sized tiles (val_tiles: as few as cover each axis,
 * overlapping evenly), run in batches of --batch, and each tile scores
 * only the voxels nearer its centre than its neighbours' (the overlap
 * split at its middle), so the counts are those of the stitched map.
 * The loss is the mean over tiles of the loss on the voxels a tile
 * scores.  Two random patches per case, as before, said a pruned model
 * was 0.49 point below the imported one where the same 4 cases segmented
 * whole were 1.68 points below (run D3c, docs/SAURON_RESULTS.md).
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

int val_tiles(int64_t S, int64_t P, int64_t *start, int64_t *own)
{
    if ((S + P - 1) / P > VAL_MAX_TILES) return -1;
    int n = S <= P ? 1 : (int)((S + P - 1) / P);
    for (int i = 0; i < n; i++)
        start[i] = n == 1 ? 0 : (i * (S - P) + (n - 1) / 2) / (n - 1);
    own[0] = 0;
    for (int i = 1; i < n; i++) /* the middle of the overlap with i - 1 */
        own[i] = (start[i] + start[i - 1] + P) / 2;
    own[n] = S;
    return n;
}

/* One tile of case dc: its voxels from (a[0], a[1], a[2]) into x [C, P]
 * (air beyond the case, where it is smaller than the patch). */
static void tile_in(const DataCase *dc, int C, const int64_t *P,
                    const int64_t *a, float *x)
{
    const int64_t *S = dc->S;
    const int64_t w = S[2] - a[2] < P[2] ? S[2] - a[2] : P[2];
    for (int c = 0; c < C; c++) {
        const float air = dc->air ? dc->air[c] : 0.0f;
        for (int64_t i = 0; i < P[0]; i++)
            for (int64_t j = 0; j < P[1]; j++) {
                float *dst = x + ((c * P[0] + i) * P[1] + j) * P[2];
                const int64_t si = a[0] + i, sj = a[1] + j;
                const int64_t n = si < S[0] && sj < S[1] ? w : 0;
                if (n > 0)
                    memcpy(dst,
                           dc->image + ((c * S[0] + si) * S[1] + sj) * S[2] +
                               a[2],
                           (size_t)n * sizeof *dst);
                for (int64_t k = n; k < P[2]; k++)
                    dst[k] = air;
            }
    }
}

/* The voxels tile (a) scores, [lo, hi) per axis in case coordinates: its
 * outputs out [K, P] and the labels into crop [K, box] and lab [box]. */
static void tile_out(const DataCase *dc, int K, const int64_t *P,
                     const int64_t *a, const int64_t *lo, const int64_t *hi,
                     const float *out, float *crop, uint8_t *lab)
{
    const int64_t *S = dc->S;
    const int64_t d0 = hi[0] - lo[0], d1 = hi[1] - lo[1], d2 = hi[2] - lo[2];
    /* the box's first voxel inside the tile */
    const int64_t o0 = lo[0] - a[0], o1 = lo[1] - a[1], o2 = lo[2] - a[2];
    for (int k = 0; k < K; k++)
        for (int64_t i = 0; i < d0; i++)
            for (int64_t j = 0; j < d1; j++) {
                const float *src =
                    out + ((k * P[0] + o0 + i) * P[1] + o1 + j) * P[2] + o2;
                float *dst = crop + ((k * d0 + i) * d1 + j) * d2;
                memcpy(dst, src, (size_t)d2 * sizeof *dst);
            }
    for (int64_t i = 0; i < d0; i++)
        for (int64_t j = 0; j < d1; j++) {
            const uint8_t *src =
                dc->label + ((lo[0] + i) * S[1] + lo[1] + j) * S[2] + lo[2];
            memcpy(lab + (i * d1 + j) * d2, src, (size_t)d2);
        }
}

/* A tile waiting in the batch: its corner and the box it scores. */
typedef struct {
    const DataCase *dc;
    int64_t a[3], lo[3], hi[3];
} Tile;

static int score_tiles(Executor *ex, const Tile *tl, int nb, int K,
                       const int64_t *P, float *crop, uint8_t *lab,
                       int64_t *cnt, double *loss_sum, int64_t *n_items,
                       const LossOptions *lo, const float *x)
{
    const float *outs[SL_MAX_OUTPUTS];
    int rc = exec_run(ex, x, outs);
    if (rc) return rc;
    const int64_t pv = P[0] * P[1] * P[2];
    for (int b = 0; b < nb; b++) {
        const Tile *t = &tl[b];
        tile_out(t->dc, K, P, t->a, t->lo, t->hi,
                 outs[0] + (size_t)b * K * pv, crop, lab);
        Shape cs = {5,
                    {1, K, t->hi[0] - t->lo[0], t->hi[1] - t->lo[1],
                     t->hi[2] - t->lo[2]}};
        LossValue lv = {0, 0, 0};
        if ((rc = loss_ce_dice(&lv, NULL, crop, &cs, lab, lo, 1.0f)))
            return rc;
        if ((rc =
                 metric_confusion(cnt, cnt + K, cnt + 2 * K, crop, &cs, lab)))
            return rc;
        *loss_sum += lv.total;
        ++*n_items;
    }
    return 0;
}

/* 3D: every validation case whole, in tiles of the model's input. */
static int eval_3d(Trainer *t, Executor *ex, Tile *tl, float *x, float *crop,
                   uint8_t *lab, int64_t *cnt, double *loss_sum,
                   int64_t *n_items, const LossOptions *lo)
{
    const int K = t->ds->n_classes, C = t->ds->n_modalities, B = t->cfg.batch;
    const int64_t *P = t->in_shape.d + 2, pv = P[0] * P[1] * P[2];
    const Shape *os = exec_output_shape(ex, 0);
    if (os->ndim != 5 || os->d[1] != K || os->d[2] != P[0] ||
        os->d[3] != P[1] || os->d[4] != P[2]) {
        sl_error("validation: the model's output [%lld,%lld,%lld,...] is "
                 "not its input's size with %d classes; 3D validation "
                 "needs a same-size segmentation output",
                 (long long)os->d[0], (long long)os->d[1],
                 (long long)os->d[2], K);
        return ERR_UNSUPPORTED;
    }
    int nb = 0, rc;
    for (int vi = 0; vi < t->split.n_val; vi++) {
        const DataCase *dc = &t->ds->cases[t->split.val[vi]];
        int64_t st[3][VAL_MAX_TILES], ow[3][VAL_MAX_TILES + 1];
        int n[3], at[3];
        for (int d = 0; d < 3; d++)
            if ((n[d] = val_tiles(dc->S[d], P[d], st[d], ow[d])) < 0) {
                sl_error("validation: case '%s' is %lld voxels along axis "
                         "%d, more than %d patches of %lld",
                         t->ds->case_names[t->split.val[vi]],
                         (long long)dc->S[d], d, VAL_MAX_TILES,
                         (long long)P[d]);
                return ERR_UNSUPPORTED;
            }
        for (at[0] = 0; at[0] < n[0]; at[0]++)
            for (at[1] = 0; at[1] < n[1]; at[1]++)
                for (at[2] = 0; at[2] < n[2]; at[2]++) {
                    Tile *tt = &tl[nb];
                    tt->dc = dc;
                    for (int d = 0; d < 3; d++) {
                        tt->a[d] = st[d][at[d]];
                        tt->lo[d] = ow[d][at[d]];
                        tt->hi[d] = ow[d][at[d] + 1];
                    }
                    tile_in(dc, C, P, tt->a, x + (size_t)nb * C * pv);
                    if (++nb == B) {
                        rc = score_tiles(ex, tl, nb, K, P, crop, lab, cnt,
                                         loss_sum, n_items, lo, x);
                        if (rc) return rc;
                        nb = 0;
                    }
                }
    }
    if (nb > 0) { /* the last, partial batch: the rest of x is not scored */
        memset(x + (size_t)nb * C * pv, 0,
               (size_t)(B - nb) * C * pv * sizeof *x);
        rc = score_tiles(ex, tl, nb, K, P, crop, lab, cnt, loss_sum, n_items,
                         lo, x);
        if (rc) return rc;
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
    Tile *tiles = NULL;
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
        rc = eval_2d(t, ex, x, crop, lab, cnt, &loss_sum, &n_items, &lo);
    } else {
        const int64_t pv =
            t->in_shape.d[2] * t->in_shape.d[3] * t->in_shape.d[4];
        if ((rc = exec_create(t->g, &t->in_shape, t->cfg.threads, &ex)))
            goto fail;
        x = sl_alloc((size_t)B * C * pv * sizeof *x);
        crop = sl_alloc((size_t)K * pv * sizeof *crop);
        lab = sl_alloc((size_t)pv);
        tiles = sl_calloc((size_t)B, sizeof *tiles);
        if (!x || !crop || !lab || !tiles) goto nomem;
        rc = eval_3d(t, ex, tiles, x, crop, lab, cnt, &loss_sum, &n_items,
                     &lo);
    }
    if (rc) goto fail;
    st->val_loss = n_items ? loss_sum / (double)n_items : (double)NAN;
    dice_from_counts(st, cnt, cnt + K, cnt + 2 * K, K);
fail:
    exec_free(ex);
    sl_free(x);
    sl_free(crop);
    sl_free(lab);
    sl_free(cnt);
    sl_free(tiles);
    return rc;
nomem:
    sl_error("out of memory for validation");
    rc = ERR_NOMEM;
    goto fail;
}
