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

/* Sums in double over NORM_LANES interleaved partial sums (element i goes
 * to lane i % NORM_LANES, lanes combined pairwise at the end): a fixed
 * order, so results do not depend on the thread count, and independent
 * add chains instead of one serial chain of dependent double adds, which
 * bounded the old loops at one element per add latency. */
#define NORM_LANES 8

static double lanes_total(const double *a)
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* v [count]: sum of v. */
static double sum_lanes(const float *v, int64_t count)
{
    double a[NORM_LANES] = {0};
    int64_t i = 0;
    for (; i + NORM_LANES <= count; i += NORM_LANES)
        for (int j = 0; j < NORM_LANES; j++)
            a[j] += (double)v[i + j];
    for (int j = 0; i + j < count; j++)
        a[j] += (double)v[i + j];
    return lanes_total(a);
}

/* x, g [count]: *q = sum (x - mean)^2, *sg = sum g,
 * *sgd = sum g * (x - mean). */
static void centred_sums(const float *x, const float *g, int64_t count,
                         double mean, double *q, double *sg, double *sgd)
{
    double aq[NORM_LANES] = {0}, ag[NORM_LANES] = {0}, ad[NORM_LANES] = {0};
    for (int64_t i0 = 0; i0 < count; i0 += NORM_LANES) {
        int len = count - i0 < NORM_LANES ? (int)(count - i0) : NORM_LANES;
        for (int j = 0; j < len; j++) {
            double d = (double)x[i0 + j] - mean, gj = (double)g[i0 + j];
            aq[j] += d * d;
            ag[j] += gj;
            ad[j] += gj * d;
        }
    }
    *q = lanes_total(aq);
    *sg = lanes_total(ag);
    *sgd = lanes_total(ad);
}

/* dx, dy, x [N,C,sp...]; scale, dscale, dbias [C].  Accumulates.
 * Two reading passes per plane (mean; then variance and the dy sums),
 * then dx in float from coefficients computed in double. */
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
            double mean = sum_lanes(xp, sp) / (double)sp, q, sg, sgd;
            centred_sums(xp, gp, sp, mean, &q, &sg, &sgd);
            double rstd = 1.0 / sqrt(q / (double)sp + (double)p->eps);
            double sgx = sgd * rstd; /* sum dy * xhat */
            sum_dscale += sgx;
            sum_dbias += sg;
            if (dx) {
                /* dx += k * (dy - mean(dy) - xhat * mean(dy * xhat)) */
                const float k = (float)((double)scale[c] * rstd);
                const float mg = (float)(sg / (double)sp);
                const float mgx = (float)(sgx / (double)sp);
                const float fm = (float)mean, fr = (float)rstd;
                float *dp = dx + off;
#pragma omp simd
                for (int64_t i = 0; i < sp; i++) {
                    float xh = (xp[i] - fm) * fr;
                    dp[i] += k * ((gp[i] - mg) - xh * mgx);
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
