/* Soft-target CE + soft Dice (loss_soft.h).  B batch, K classes, S voxels
 * per sample. */
#include "compressor/train/loss_soft.h"
#include "compressor/train/loss_internal.h"

#include <math.h>
#include <string.h>

#include "runtime/common.h"

#define PROB_FLOOR 1e-30

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
            double lse = loss_voxel_probs(p, xp, sn, kn, fl);
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
    loss_reduce_sums(val, ga, acc, bn, kn, sn, o, weight);
    const double m_vox = (double)(bn * sn);
    const double wd = (double)weight, cw = (double)o->ce_weight,
                 dw = (double)o->dice_weight;
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int64_t b = 0; b < bn; b++)
            for (int64_t s = 0; s < sn; s++) {
                double p[LOSS_MAX_CLASSES], gd[LOSS_MAX_CLASSES];
                const float *xp = x + b * kn * sn + s;
                const float *qp = q + b * kn * sn + s;
                float *dp = dx + b * kn * sn + s;
                loss_voxel_probs(p, xp, sn, kn, fl);
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
