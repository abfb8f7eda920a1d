/* Cross-entropy + soft Dice (nnU-Net), deep supervision, hard Dice.
 * Dimension letters: B batch, K classes, S voxels per sample (product of
 * the spatial dims).  See loss.h for the formulas. */
#include "compressor/train/loss.h"
#include "compressor/train/loss_internal.h"

#include <math.h>
#include <string.h>

#include "runtime/common.h"

/* Probabilities below this are clamped before the log (CE from
 * probabilities): 1/(B*S*1e-30) stays far below FLT_MAX for any batch. */
#define PROB_FLOOR 1e-30

void loss_options_default(LossOptions *o, int nsp)
{
    o->from_logits = 1;
    o->batch_dice = nsp == 2;
    o->include_background = 0;
    o->smooth = 1e-5f;
    o->ce_weight = 1.0f;
    o->dice_weight = 1.0f;
}

double loss_voxel_probs(double *p, const float *x, int64_t s_stride, int k_n,
                        int from_logits)
{
    if (!from_logits) {
        for (int k = 0; k < k_n; k++)
            p[k] = (double)x[k * s_stride];
        return 0.0;
    }
    double m = (double)x[0];
    for (int k = 1; k < k_n; k++)
        if ((double)x[k * s_stride] > m) m = (double)x[k * s_stride];
    double sum = 0.0;
    for (int k = 0; k < k_n; k++) {
        p[k] = exp((double)x[k * s_stride] - m);
        sum += p[k];
    }
    for (int k = 0; k < k_n; k++)
        p[k] /= sum;
    return m + log(sum);
}

static int check_head(const Shape *xs, const char *what)
{
    if (xs->ndim < 3 || xs->d[1] < 1 || xs->d[1] > LOSS_MAX_CLASSES) {
        sl_error("%s: output must be [B, K, spatial...] with 1..%d classes "
                 "(got %d dims, %lld channels)",
                 what, LOSS_MAX_CLASSES, xs->ndim,
                 (long long)(xs->ndim > 1 ? xs->d[1] : 0));
        return ERR_ARG;
    }
    return 0;
}

/* Dice terms and their derivatives d(1 - mean dc)/dp from the per-sample
 * sums; see loss_internal.h. */
void loss_reduce_sums(LossValue *val, double *ga, const double *acc,
                      int64_t bn, int kn, int64_t sn, const LossOptions *o,
                      float weight)
{
    const int k0 = o->include_background ? 0 : 1;
    const int64_t n_groups = o->batch_dice ? 1 : bn;
    const int n_cls = kn - k0;
    const double n_terms = (double)(n_groups * (n_cls > 0 ? n_cls : 1));
    double dc_sum = 0.0, ce_sum = 0.0;
    for (int64_t b = 0; b < bn; b++)
        ce_sum += acc[b * (3 * kn + 1) + 3 * kn];
    for (int64_t gi = 0; gi < n_groups; gi++)
        for (int k = k0; k < kn; k++) {
            double inter = 0, psum = 0, tsum = 0;
            int64_t b_lo = o->batch_dice ? 0 : gi,
                    b_hi = o->batch_dice ? bn : gi + 1;
            for (int64_t b = b_lo; b < b_hi; b++) {
                const double *a = acc + b * (3 * kn + 1);
                inter += a[k];
                psum += a[kn + k];
                tsum += a[2 * kn + k];
            }
            double num = 2.0 * inter + (double)o->smooth;
            double den = tsum + psum + (double)o->smooth;
            if (den < 1e-8) den = 1e-8;
            dc_sum += num / den;
            for (int64_t b = b_lo; b < b_hi; b++) {
                ga[(b * kn + k) * 2] = num / (n_terms * den * den);
                ga[(b * kn + k) * 2 + 1] = -2.0 / (n_terms * den);
            }
        }
    const double ce = ce_sum / (double)(bn * sn);
    const double dice = n_cls > 0 ? 1.0 - dc_sum / n_terms : 0.0;
    const double wd = (double)weight;
    val->ce += wd * ce;
    val->dice += wd * dice;
    val->total +=
        wd * ((double)o->ce_weight * ce + (double)o->dice_weight * dice);
}

/* x, dx [B,K,S]; labels [B,S].  Pass 1 gathers per (b, k) in double:
 * inter = sum p*onehot, psum = sum p, gsum = sum onehot, and per b the CE
 * sum; pass 2 writes the gradient from those sums. */
int loss_ce_dice(LossValue *val, float *dx, const float *x, const Shape *xs,
                 const uint8_t *labels, const LossOptions *o, float weight)
{
    int rc = check_head(xs, "loss");
    if (rc) return rc;
    const int64_t bn = xs->d[0];
    const int kn = (int)xs->d[1];
    const int64_t sn = shape_numel(xs) / (bn * kn);
    const int k0 = o->include_background ? 0 : 1;
    const int from_logits = o->from_logits;
    double *acc = sl_calloc((size_t)(bn * (3 * kn + 1)), sizeof(double));
    double *ga = sl_calloc((size_t)(bn * kn * 2), sizeof(double));
    if (!acc || !ga) {
        sl_error("loss: out of memory for %lld x %d sums", (long long)bn, kn);
        rc = ERR_NOMEM;
        goto fail;
    }
    /* acc layout per b: inter [K], psum [K], gsum [K], ce */
    int64_t bad_at = -1;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < bn; b++) {
        double *inter = acc + b * (3 * kn + 1), *psum = inter + kn,
               *gsum = psum + kn, *ce = gsum + kn;
        double p[LOSS_MAX_CLASSES];
        for (int64_t s = 0; s < sn; s++) {
            int y = labels[b * sn + s];
            if (y >= kn) {
#pragma omp critical(loss_bad_label)
                if (bad_at < 0 || b * sn + s < bad_at) bad_at = b * sn + s;
                break;
            }
            const float *xp = x + b * kn * sn + s;
            double lse = loss_voxel_probs(p, xp, sn, kn, from_logits);
            if (from_logits)
                *ce += lse - (double)xp[y * sn];
            else
                *ce -= log(p[y] > PROB_FLOOR ? p[y] : PROB_FLOOR);
            for (int k = 0; k < kn; k++)
                psum[k] += p[k];
            inter[y] += p[y];
            gsum[y] += 1.0;
        }
    }
    if (bad_at >= 0) {
        sl_error("loss: label value %d at sample %lld, voxel %lld is not a "
                 "class of this %d-class model; check the label map",
                 labels[bad_at], (long long)(bad_at / sn),
                 (long long)(bad_at % sn), kn);
        rc = ERR_ARG;
        goto fail;
    }
    loss_reduce_sums(val, ga, acc, bn, kn, sn, o, weight);
    const double m_vox = (double)(bn * sn);
    const double wd = (double)weight, cw = (double)o->ce_weight,
                 dw = (double)o->dice_weight;
    if (!dx) goto done;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < bn; b++)
        for (int64_t s = 0; s < sn; s++) {
            double p[LOSS_MAX_CLASSES], gd[LOSS_MAX_CLASSES];
            const float *xp = x + b * kn * sn + s;
            float *dp = dx + b * kn * sn + s;
            int y = labels[b * sn + s];
            loss_voxel_probs(p, xp, sn, kn, from_logits);
            double dot = 0.0;
            for (int k = 0; k < kn; k++) {
                gd[k] = 0.0;
                if (k >= k0) {
                    gd[k] = dw * ga[(b * kn + k) * 2];
                    if (k == y) gd[k] += dw * ga[(b * kn + k) * 2 + 1];
                }
                dot += gd[k] * p[k];
            }
            for (int k = 0; k < kn; k++) {
                double gk;
                if (from_logits) /* through the fused softmax */
                    gk = p[k] * (gd[k] - dot) +
                         cw * (p[k] - (k == y ? 1.0 : 0.0)) / m_vox;
                else {
                    gk = gd[k];
                    if (k == y && p[k] > PROB_FLOOR)
                        gk -= cw / (m_vox * p[k]);
                }
                dp[k * sn] += (float)(wd * gk);
            }
        }
done:
    rc = 0;
fail:
    sl_free(acc);
    sl_free(ga);
    return rc;
}

void loss_ds_weights(float *w, int n_heads, int zero_lowest)
{
    double sum = 0.0, v = 1.0;
    for (int h = 0; h < n_heads; h++, v *= 0.5) {
        w[h] = (float)v;
        if (zero_lowest && n_heads > 1 && h == n_heads - 1) w[h] = 0.0f;
        sum += (double)w[h];
    }
    for (int h = 0; h < n_heads; h++)
        w[h] = (float)((double)w[h] / sum);
}

/* dst [B, dst_sp...] from src [B, src_sp...]: per dim
 * src = min(floor((dst + 0.5) * in / out), in - 1), in integer arithmetic:
 * floor((2 dst + 1) * in / (2 out)). */
void loss_downsample_labels(uint8_t *dst, const uint8_t *src, int64_t batch,
                            int nsp, const int64_t *src_sp,
                            const int64_t *dst_sp)
{
    int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1};
    for (int i = 0; i < nsp; i++) {
        in[3 - nsp + i] = src_sp[i];
        out[3 - nsp + i] = dst_sp[i];
    }
    const int64_t in_n = in[0] * in[1] * in[2],
                  out_n = out[0] * out[1] * out[2];
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t z = 0; z < out[0]; z++) {
            int64_t sz = (2 * z + 1) * in[0] / (2 * out[0]);
            if (sz > in[0] - 1) sz = in[0] - 1;
            for (int64_t yy = 0; yy < out[1]; yy++) {
                int64_t sy = (2 * yy + 1) * in[1] / (2 * out[1]);
                if (sy > in[1] - 1) sy = in[1] - 1;
                uint8_t *d = dst + b * out_n + (z * out[1] + yy) * out[2];
                const uint8_t *s = src + b * in_n + (sz * in[1] + sy) * in[2];
                for (int64_t xx = 0; xx < out[2]; xx++) {
                    int64_t sx = (2 * xx + 1) * in[2] / (2 * out[2]);
                    d[xx] = s[sx > in[2] - 1 ? in[2] - 1 : sx];
                }
            }
        }
}

int loss_deep_supervision(LossValue *val, float *const *dx,
                          const float *const *x, const Shape *const *xs,
                          int n_heads, const uint8_t *labels,
                          const float *weights,
                          const int *from_logits_per_head,
                          const LossOptions *o)
{
    uint8_t *small = NULL;
    float w[SL_MAX_OUTPUTS];
    int rc;
    memset(val, 0, sizeof *val);
    if (n_heads < 1 || n_heads > SL_MAX_OUTPUTS) {
        sl_error("loss: %d output heads; expected 1..%d", n_heads,
                 SL_MAX_OUTPUTS);
        return ERR_ARG;
    }
    if (weights)
        memcpy(w, weights, (size_t)n_heads * sizeof *w);
    else
        loss_ds_weights(w, n_heads, 0);
    for (int h = 0; h < n_heads; h++) {
        if ((rc = check_head(xs[h], "loss"))) goto fail;
        if (xs[h]->ndim != xs[0]->ndim || xs[h]->d[0] != xs[0]->d[0]) {
            sl_error("loss: head %d has shape rank %d and batch %lld, head "
                     "0 has %d and %lld; deep-supervision heads must match",
                     h, xs[h]->ndim, (long long)xs[h]->d[0], xs[0]->ndim,
                     (long long)xs[0]->d[0]);
            rc = ERR_SHAPE;
            goto fail;
        }
    }
    for (int h = 0; h < n_heads; h++) {
        if (w[h] == 0.0f) continue;
        LossOptions oh = *o;
        if (from_logits_per_head) oh.from_logits = from_logits_per_head[h];
        const uint8_t *lab = labels;
        const int nsp = xs[h]->ndim - 2;
        if (h > 0 && memcmp(xs[h]->d + 2, xs[0]->d + 2,
                            (size_t)nsp * sizeof(int64_t))) {
            size_t count = (size_t)(shape_numel(xs[h]) / xs[h]->d[1]);
            sl_free(small);
            small = sl_alloc(count);
            if (!small) {
                sl_error("loss: out of memory for a downscaled label map");
                rc = ERR_NOMEM;
                goto fail;
            }
            loss_downsample_labels(small, labels, xs[0]->d[0], nsp,
                                   xs[0]->d + 2, xs[h]->d + 2);
            lab = small;
        }
        rc =
            loss_ce_dice(val, dx ? dx[h] : NULL, x[h], xs[h], lab, &oh, w[h]);
        if (rc) goto fail;
    }
    rc = 0;
fail:
    sl_free(small);
    return rc;
}

int loss_output_is_probability(const Graph *g, int k)
{
    int v = g->outputs[k];
    int pn = g->values[v].producer;
    if (pn < 0) return 0;
    const Node *n = &g->nodes[pn];
    return n->op == OP_SOFTMAX && n->p.softmax.axis == 1 &&
           (!n->p.softmax.flatten || g->values[v].shape.ndim == 2);
}

int train_loss_outputs(TrainExec *t, LossValue *val, const uint8_t *labels,
                       const float *weights, const LossOptions *o)
{
    const Graph *g = train_graph(t);
    float *dx[SL_MAX_OUTPUTS];
    const float *x[SL_MAX_OUTPUTS];
    const Shape *xs[SL_MAX_OUTPUTS];
    int logits[SL_MAX_OUTPUTS];
    for (int k = 0; k < g->n_outputs; k++) {
        int v = g->outputs[k];
        x[k] = train_value(t, v);
        dx[k] = train_grad(t, v);
        xs[k] = train_shape(t, v);
        logits[k] = !loss_output_is_probability(g, k);
        if (!x[k] || !dx[k]) {
            sl_error("loss: graph output %d ('%s') is not a trained "
                     "activation; the model's outputs must be computed by "
                     "nodes",
                     k, g->values[v].name ? g->values[v].name : "?");
            return ERR_ARG;
        }
    }
    return loss_deep_supervision(val, dx, x, xs, g->n_outputs, labels,
                                 weights, logits, o);
}

int metric_confusion(int64_t *tp, int64_t *fp, int64_t *fn, const float *x,
                     const Shape *xs, const uint8_t *labels)
{
    int rc = check_head(xs, "Dice metric");
    if (rc) return rc;
    const int64_t bn = xs->d[0];
    const int kn = (int)xs->d[1];
    const int64_t sn = shape_numel(xs) / (bn * kn);
    for (int64_t b = 0; b < bn; b++)
        for (int64_t s = 0; s < sn; s++) {
            const float *xp = x + b * kn * sn + s;
            int y = labels[b * sn + s], best = 0;
            if (y >= kn) {
                sl_error("Dice metric: label value %d at sample %lld, voxel "
                         "%lld is not a class of this %d-class model",
                         y, (long long)b, (long long)s, kn);
                return ERR_ARG;
            }
            for (int k = 1; k < kn; k++)
                if (xp[k * sn] > xp[best * sn]) best = k;
            if (best == y)
                tp[y]++;
            else {
                fp[best]++;
                fn[y]++;
            }
        }
    return 0;
}

void metric_dice(double *dice, const int64_t *tp, const int64_t *fp,
                 const int64_t *fn, int n_classes)
{
    for (int k = 0; k < n_classes; k++) {
        int64_t den = 2 * tp[k] + fp[k] + fn[k];
        dice[k] = den ? 2.0 * (double)tp[k] / (double)den : (double)NAN;
    }
}
