/* Soft-target CE + soft Dice (loss_soft.h).  B batch, K classes, S voxels
 * per sample. */
#include "compressor/train/loss_soft.h"

#include <math.h>
#include <string.h>

#include "runtime/common.h"

#define PROB_FLOOR 1e-30

/* p [K] from x [K] strided by sn; returns log-sum-exp (0 for
 * probabilities). */
static double probs(double *p, const float *x, int64_t sn, int kn,
                    int from_logits)
{
    if (!from_logits) {
        for (int k = 0; k < kn; k++)
            p[k] = (double)x[k * sn];
        return 0.0;
    }
    double m = (double)x[0], sum = 0.0;
    for (int k = 1; k < kn; k++)
        if ((double)x[k * sn] > m) m = (double)x[k * sn];
    for (int k = 0; k < kn; k++) {
        p[k] = exp((double)x[k * sn] - m);
        sum += p[k];
    }
    for (int k = 0; k < kn; k++)
        p[k] /= sum;
    return m + log(sum);
}

/* x, dx, q [B,K,S].  Pass 1 sums per (b, k) in double: inter = sum p q,
 * psum = sum p, qsum = sum q, and per b the CE; pass 2 writes the
 * gradient from those sums. */
int loss_soft_ce_dice(LossValue *val, float *dx, const float *x,
                      const Shape *xs, const float *q, const LossOptions *o,
                      float weight)
{
    if (xs->ndim < 3 || xs->d[1] < 1 || xs->d[1] > LOSS_MAX_CLASSES ||
        xs->d[0] < 1) {
        sl_error("soft-target loss: output must be [B, K, spatial...] with "
                 "1..%d classes",
                 LOSS_MAX_CLASSES);
        return ERR_ARG;
    }
    const int64_t bn = xs->d[0];
    const int kn = (int)xs->d[1];
    const int64_t sn = shape_numel(xs) / (bn * kn);
    const int k0 = o->include_background ? 0 : 1;
    const int fl = o->from_logits;
    int rc = ERR_NOMEM;
    double *acc = sl_calloc((size_t)(bn * (3 * kn + 1)), sizeof(double));
    double *ga = sl_calloc((size_t)(bn * kn * 2), sizeof(double));
    if (!acc || !ga) {
        sl_error("soft-target loss: out of memory for %lld x %d sums",
                 (long long)bn, kn);
        goto fail;
    }
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < bn; b++) {
        double *inter = acc + b * (3 * kn + 1), *psum = inter + kn,
               *qsum = psum + kn, *ce = qsum + kn;
        double p[LOSS_MAX_CLASSES];
        for (int64_t s = 0; s < sn; s++) {
            const float *xp = x + b * kn * sn + s;
            const float *qp = q + b * kn * sn + s;
            double lse = probs(p, xp, sn, kn, fl);
            for (int k = 0; k < kn; k++) {
                double qk = (double)qp[k * sn];
                if (fl)
                    *ce -= qk * ((double)xp[k * sn] - lse);
                else
                    *ce -= qk * log(p[k] > PROB_FLOOR ? p[k] : PROB_FLOOR);
                psum[k] += p[k];
                qsum[k] += qk;
                inter[k] += p[k] * qk;
            }
        }
    }
    /* ga[b][k] = (num / den^2, -2 / den) / n_terms: d(1 - mean dc)/dp at
     * a voxel is ga0 + ga1 * q. */
    const int64_t n_groups = o->batch_dice ? 1 : bn;
    const int n_cls = kn - k0;
    const double n_terms = (double)(n_groups * (n_cls > 0 ? n_cls : 1));
    double dc_sum = 0.0, ce_sum = 0.0;
    for (int64_t b = 0; b < bn; b++)
        ce_sum += acc[b * (3 * kn + 1) + 3 * kn];
    for (int64_t gi = 0; gi < n_groups; gi++)
        for (int k = k0; k < kn; k++) {
            double inter = 0, psum = 0, qsum = 0;
            int64_t lo = o->batch_dice ? 0 : gi, hi = o->batch_dice ? bn : gi + 1;
            for (int64_t b = lo; b < hi; b++) {
                const double *a = acc + b * (3 * kn + 1);
                inter += a[k];
                psum += a[kn + k];
                qsum += a[2 * kn + k];
            }
            double num = 2.0 * inter + (double)o->smooth;
            double den = qsum + psum + (double)o->smooth;
            if (den < 1e-8) den = 1e-8;
            dc_sum += num / den;
            for (int64_t b = lo; b < hi; b++) {
                ga[(b * kn + k) * 2] = num / (n_terms * den * den);
                ga[(b * kn + k) * 2 + 1] = -2.0 / (n_terms * den);
            }
        }
    const double m_vox = (double)(bn * sn);
    const double ce = ce_sum / m_vox;
    const double dice = n_cls > 0 ? 1.0 - dc_sum / n_terms : 0.0;
    const double wd = (double)weight, cw = (double)o->ce_weight,
                 dw = (double)o->dice_weight;
    val->ce += wd * ce;
    val->dice += wd * dice;
    val->total += wd * (cw * ce + dw * dice);
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int64_t b = 0; b < bn; b++)
            for (int64_t s = 0; s < sn; s++) {
                double p[LOSS_MAX_CLASSES], gd[LOSS_MAX_CLASSES];
                const float *xp = x + b * kn * sn + s;
                const float *qp = q + b * kn * sn + s;
                float *dp = dx + b * kn * sn + s;
                probs(p, xp, sn, kn, fl);
                double dot = 0.0, qtot = 0.0;
                for (int k = 0; k < kn; k++) {
                    double qk = (double)qp[k * sn];
                    qtot += qk;
                    gd[k] = 0.0;
                    if (k >= k0)
                        gd[k] = dw * (ga[(b * kn + k) * 2] +
                                      ga[(b * kn + k) * 2 + 1] * qk);
                    dot += gd[k] * p[k];
                }
                for (int k = 0; k < kn; k++) {
                    double qk = (double)qp[k * sn], gk;
                    if (fl) /* through the fused softmax */
                        gk = p[k] * (gd[k] - dot) +
                             cw * (p[k] * qtot - qk) / m_vox;
                    else {
                        gk = gd[k];
                        if (p[k] > PROB_FLOOR) gk -= cw * qk / (m_vox * p[k]);
                    }
                    dp[k * sn] += (float)(wd * gk);
                }
            }
    }
    rc = 0;
fail:
    sl_free(acc);
    sl_free(ga);
    return rc;
}
