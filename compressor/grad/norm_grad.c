/* InstanceNorm and BatchNorm backward, and BatchNorm's training forward.
 *
 * N batch, C channels, S = product of the spatial dims.  With
 * xhat = (x - mean) * rstd and y = xhat * scale + bias, when mean and rstd
 * are statistics over M values that include x:
 *   dx = scale * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))
 *   dscale = sum(dy * xhat), dbias = sum(dy)
 * InstanceNorm: statistics per (n, c) over S.  BatchNorm: per c over N*S.
 * All sums in double, in index order; parallel over channels so each
 * thread owns dscale[c], dbias[c] and the channel's dx planes.
 */
#include <math.h>

#include "compressor/grad/grad.h"

#include "runtime/common.h"

/* Mean and population variance of v [count], two passes in double. */
static void plane_stats(const float *v, int64_t count, double *mean,
                        double *var)
{
    double s = 0, q = 0;
    for (int64_t i = 0; i < count; i++)
        s += (double)v[i];
    double m = s / (double)count;
    for (int64_t i = 0; i < count; i++) {
        double d = (double)v[i] - m;
        q += d * d;
    }
    *mean = m;
    *var = q / (double)count;
}

/* dx, dy, x [N,C,sp...]; scale, dscale, dbias [C].  Accumulates. */
void instance_norm_backward(float *dx, float *dscale, float *dbias,
                            const float *dy, const float *x,
                            const float *scale, const Shape *xs,
                            const NormParams *p)
{
    const int64_t n_batch = xs->d[0], c_count = xs->d[1];
    const int64_t sp = shape_numel(xs) / (n_batch * c_count);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < c_count; c++) {
        double sum_dscale = 0, sum_dbias = 0;
        for (int64_t n = 0; n < n_batch; n++) {
            int64_t off = (n * c_count + c) * sp;
            const float *xp = x + off, *gp = dy + off;
            double mean, var;
            plane_stats(xp, sp, &mean, &var);
            double rstd = 1.0 / sqrt(var + (double)p->eps);
            double sg = 0, sgx = 0;
            for (int64_t i = 0; i < sp; i++) {
                sg += (double)gp[i];
                sgx += (double)gp[i] * ((double)xp[i] - mean) * rstd;
            }
            sum_dscale += sgx;
            sum_dbias += sg;
            if (dx) {
                double k = (double)scale[c] * rstd;
                double mg = sg / (double)sp, mgx = sgx / (double)sp;
                float *dp = dx + off;
                for (int64_t i = 0; i < sp; i++) {
                    double xh = ((double)xp[i] - mean) * rstd;
                    dp[i] += (float)(k * ((double)gp[i] - mg - xh * mgx));
                }
            }
        }
        if (dscale) dscale[c] += (float)sum_dscale;
        if (dbias) dbias[c] += (float)sum_dbias;
    }
}

/* y, x [N,C,sp...]; save_mean, save_rstd, running_mean, running_var,
 * scale, bias [C].  Overwrites y and save_*; updates running_* in place
 * (batch statistics only). */
void batch_norm_forward_train(float *y, float *save_mean, float *save_rstd,
                              float *running_mean, float *running_var,
                              const float *x, const float *scale,
                              const float *bias, const Shape *xs,
                              const NormParams *p)
{
    const int64_t n_batch = xs->d[0], c_count = xs->d[1];
    const int64_t sp = shape_numel(xs) / (n_batch * c_count);
    const int64_t m = n_batch * sp;
    const double mom = (double)p->momentum;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < c_count; c++) {
        double mean, var;
        if (p->use_batch_stats) {
            double s = 0, q = 0;
            for (int64_t n = 0; n < n_batch; n++) {
                const float *xp = x + (n * c_count + c) * sp;
                for (int64_t i = 0; i < sp; i++)
                    s += (double)xp[i];
            }
            mean = s / (double)m;
            for (int64_t n = 0; n < n_batch; n++) {
                const float *xp = x + (n * c_count + c) * sp;
                for (int64_t i = 0; i < sp; i++) {
                    double d = (double)xp[i] - mean;
                    q += d * d;
                }
            }
            var = q / (double)m;
            /* PyTorch refuses M = 1; we keep the biased value there. */
            double unbiased = m > 1 ? q / (double)(m - 1) : var;
            running_mean[c] =
                (float)((1.0 - mom) * (double)running_mean[c] + mom * mean);
            running_var[c] = (float)((1.0 - mom) * (double)running_var[c] +
                                     mom * unbiased);
        } else {
            mean = (double)running_mean[c];
            var = (double)running_var[c];
        }
        double rstd = 1.0 / sqrt(var + (double)p->eps);
        save_mean[c] = (float)mean;
        save_rstd[c] = (float)rstd;
        double k = (double)scale[c] * rstd;
        for (int64_t n = 0; n < n_batch; n++) {
            int64_t off = (n * c_count + c) * sp;
            for (int64_t i = 0; i < sp; i++)
                y[off + i] = (float)(((double)x[off + i] - mean) * k +
                                     (double)bias[c]);
        }
    }
}

/* dx, dy, x [N,C,sp...]; scale, save_mean, save_rstd, dscale, dbias [C].
 * Accumulates. */
void batch_norm_backward(float *dx, float *dscale, float *dbias,
                         const float *dy, const float *x, const float *scale,
                         const float *save_mean, const float *save_rstd,
                         const Shape *xs, const NormParams *p)
{
    const int64_t n_batch = xs->d[0], c_count = xs->d[1];
    const int64_t sp = shape_numel(xs) / (n_batch * c_count);
    const double m = (double)(n_batch * sp);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < c_count; c++) {
        double mean = (double)save_mean[c], rstd = (double)save_rstd[c];
        double sg = 0, sgx = 0;
        for (int64_t n = 0; n < n_batch; n++) {
            int64_t off = (n * c_count + c) * sp;
            for (int64_t i = 0; i < sp; i++) {
                double g = (double)dy[off + i];
                sg += g;
                sgx += g * ((double)x[off + i] - mean) * rstd;
            }
        }
        if (dscale) dscale[c] += (float)sgx;
        if (dbias) dbias[c] += (float)sg;
        if (!dx) continue;
        double k = (double)scale[c] * rstd;
        /* frozen statistics do not depend on x: only the direct term */
        double mg = p->use_batch_stats ? sg / m : 0.0;
        double mgx = p->use_batch_stats ? sgx / m : 0.0;
        for (int64_t n = 0; n < n_batch; n++) {
            int64_t off = (n * c_count + c) * sp;
            for (int64_t i = 0; i < sp; i++) {
                double xh = ((double)x[off + i] - mean) * rstd;
                dx[off + i] +=
                    (float)(k * ((double)dy[off + i] - mg - xh * mgx));
            }
        }
    }
}
