/* Gradient-check harness and double-precision oracle forwards for
 * tests/test_grad.c (included by that file only).
 *
 * A GradCase describes one op instance: its float inputs, a naive double
 * forward written independently of the runtime (the oracle), the runtime's
 * float forward and the backward under test.  run_case() performs the four
 * checks described in test_grad.c.
 */
#ifndef SL_TEST_GRAD_CHECK_H
#define SL_TEST_GRAD_CHECK_H

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "runtime/graph.h"

#define MAX_IN 4
/* FD is O(inputs * forward); beyond this many entries an input is checked
 * on evenly spaced samples. */
#define FD_MAX_POINTS 300
/* Central-difference step.  Inputs are O(1): truncation error h^2/6 *
 * f''' ~ 1e-9 and rounding error 1e-16 * |L| / h ~ 1e-11, both far below
 * the float backward's own error. */
#define FD_STEP 1e-4

typedef struct GradCase GradCase;
/* y = f(in) in double (the oracle) */
typedef void (*OracleFn)(const GradCase *c, double *const *in, double *y);
/* the runtime's float forward */
typedef void (*ForwardFn)(const GradCase *c, float *const *in, float *y);
/* the kernel under test: d[k] (may be NULL) += dL/din[k] given dy */
typedef void (*BackwardFn)(const GradCase *c, float *const *d,
                           const float *dy, float *const *in);

struct GradCase {
    const char *name;
    int n_in;
    size_t in_n[MAX_IN];
    float *in[MAX_IN];
    size_t y_n;
    OracleFn oracle;
    ForwardFn forward;
    BackwardFn backward;
    /* op description (only the fields an op needs are set) */
    Shape xs, ys, ws, bs;
    Shape cs[MAX_IN];
    ConvParams conv;
    PoolParams pool;
    NormParams norm;
    ActParams act;
    SoftmaxParams sm;
    ConcatParams cat;
    ResizeParams rs;
    float *run_mean, *run_var; /* BatchNorm running statistics */
    float *scratch;
};

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

static Shape shape_of(int ndim, const int64_t *d)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s.d[i] = d[i];
    return s;
}
#define SHAPE(...)                                                           \
    shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),      \
             (int64_t[]){__VA_ARGS__})

static size_t numel(const Shape *s)
{
    return (size_t)shape_numel(s);
}

static void add_input(GradCase *c, size_t n, TestRng *rng, float lo, float hi)
{
    c->in_n[c->n_in] = n;
    c->in[c->n_in] = xcalloc(n, sizeof(float));
    trng_fill(rng, c->in[c->n_in], n, lo, hi);
    c->n_in++;
}

static void case_free(GradCase *c)
{
    for (int k = 0; k < c->n_in; k++)
        free(c->in[k]);
    free(c->run_mean);
    free(c->run_var);
    free(c->scratch);
}

static double loss(const GradCase *c, double *const *in, double *y,
                   const double *r)
{
    c->oracle(c, in, y);
    double s = 0;
    for (size_t i = 0; i < c->y_n; i++)
        s += r[i] * y[i];
    return s;
}

static double max_abs_f(const float *v, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)v[i]) > m) m = fabs((double)v[i]);
    return m;
}

/* Zeroed gradient buffers for every input. */
static void grads_alloc(const GradCase *c, float **d)
{
    for (int k = 0; k < c->n_in; k++)
        d[k] = xcalloc(c->in_n[k], sizeof(float));
}
static void grads_free(const GradCase *c, float **d)
{
    for (int k = 0; k < c->n_in; k++)
        free(d[k]);
}

static void run_case(GradCase *c, TestRng *rng)
{
    float *r = xcalloc(c->y_n, sizeof(float));
    double *rd = xcalloc(c->y_n, sizeof(double));
    double *yd = xcalloc(c->y_n, sizeof(double));
    float *yf = xcalloc(c->y_n, sizeof(float));
    float *yref = xcalloc(c->y_n, sizeof(float));
    double *ind[MAX_IN];
    float *g2[MAX_IN], *g1[MAX_IN], *acc[MAX_IN], *pre[MAX_IN];
    float *one[MAX_IN];
    char what[160];
    trng_fill(rng, r, c->y_n, -1.0f, 1.0f);
    for (size_t i = 0; i < c->y_n; i++)
        rd[i] = (double)r[i];
    for (int k = 0; k < c->n_in; k++) {
        ind[k] = xcalloc(c->in_n[k], sizeof(double));
        for (size_t i = 0; i < c->in_n[k]; i++)
            ind[k][i] = (double)c->in[k][i];
    }

    /* (b) oracle vs runtime forward.  The float forward sums at most a few
     * hundred O(1) terms: relative error well under 1e-5 of the output
     * scale. */
    c->oracle(c, ind, yd);
    for (size_t i = 0; i < c->y_n; i++)
        yref[i] = (float)yd[i];
    c->forward(c, c->in, yf);
    snprintf(what, sizeof what, "%s: runtime forward vs double oracle",
             c->name);
    assert_true(allclose(yf, yref, c->y_n,
                         1e-5 * max_abs_f(yref, c->y_n) + 1e-6, 1e-5, what));

    /* (a) float backward vs FD of the double oracle */
    omp_set_num_threads(2);
    grads_alloc(c, g2);
    c->backward(c, g2, r, c->in);
    for (int k = 0; k < c->n_in; k++) {
        size_t n = c->in_n[k];
        size_t pts = n > FD_MAX_POINTS ? FD_MAX_POINTS : n;
        float *got = xcalloc(pts, sizeof(float)),
              *fd = xcalloc(pts, sizeof(float));
        for (size_t j = 0; j < pts; j++) {
            size_t i = pts == n ? j : j * n / pts + (j * 7) % (n / pts);
            double x0 = ind[k][i];
            ind[k][i] = x0 + FD_STEP;
            double lp = loss(c, ind, yd, rd);
            ind[k][i] = x0 - FD_STEP;
            double lm = loss(c, ind, yd, rd);
            ind[k][i] = x0;
            fd[j] = (float)((lp - lm) / (2 * FD_STEP));
            got[j] = g2[k][i];
        }
        /* The float backward sums up to a few thousand float products; its
         * error is ~1e-6 of the largest gradient, and entries that cancel
         * to near zero carry that absolute error.  FD error is ~1e-9.  So
         * atol 1e-4 of the gradient scale and rtol 1e-3 leave a 100x
         * margin, while any indexing or formula slip gives O(1) errors. */
        double scale = max_abs_f(fd, pts);
        snprintf(what, sizeof what, "%s: d(input %d) vs finite differences",
                 c->name, k);
        assert_true(allclose(got, fd, pts, 1e-4 * scale + 1e-7, 1e-3, what));
        assert_true(scale > 0 || n == 0); /* a zero gradient proves nothing */
        free(got);
        free(fd);
    }

    /* (d) one thread gives the same bits */
    omp_set_num_threads(1);
    grads_alloc(c, g1);
    c->backward(c, g1, r, c->in);
    omp_set_num_threads(2);
    for (int k = 0; k < c->n_in; k++) {
        if (memcmp(g1[k], g2[k], c->in_n[k] * sizeof(float)) != 0)
            fail_msg("%s: d(input %d) differs between 1 and 2 threads",
                     c->name, k);
    }

    /* (c) accumulation into prefilled buffers; each gradient alone */
    for (int k = 0; k < c->n_in; k++) {
        acc[k] = xcalloc(c->in_n[k], sizeof(float));
        pre[k] = xcalloc(c->in_n[k], sizeof(float));
        trng_fill(rng, acc[k], c->in_n[k], -2.0f, 2.0f);
        for (size_t i = 0; i < c->in_n[k]; i++) {
            pre[k][i] = acc[k][i];
            acc[k][i] -= g2[k][i]; /* backward adds g2 back */
        }
    }
    c->backward(c, acc, r, c->in);
    for (int k = 0; k < c->n_in; k++) {
        /* prefill - g + g: float rounding of two additions, ~1e-7 of the
         * larger of the prefill (|.| <= 2) and the gradient */
        double s = 2.0 + max_abs_f(g2[k], c->in_n[k]);
        snprintf(what, sizeof what, "%s: d(input %d) accumulates", c->name,
                 k);
        assert_true(allclose(acc[k], pre[k], c->in_n[k], 1e-5 * s, 0, what));
    }
    for (int k = 0; k < c->n_in; k++) {
        float *d[MAX_IN] = {NULL, NULL, NULL, NULL};
        one[k] = xcalloc(c->in_n[k], sizeof(float));
        d[k] = one[k];
        c->backward(c, d, r, c->in);
        if (memcmp(one[k], g2[k], c->in_n[k] * sizeof(float)) != 0)
            fail_msg("%s: d(input %d) alone differs from all together",
                     c->name, k);
        free(one[k]);
    }

    grads_free(c, g1);
    grads_free(c, g2);
    grads_free(c, acc);
    grads_free(c, pre);
    for (int k = 0; k < c->n_in; k++)
        free(ind[k]);
    free(r);
    free(rd);
    free(yd);
    free(yf);
    free(yref);
}

/* ================= double oracles ================= */

/* Spatial dims of s padded on the left to three (size 1). */
static void sp3(const Shape *s, int64_t out[3])
{
    int nsp = s->ndim - 2;
    for (int i = 0; i < 3; i++) {
        int j = i - (3 - nsp);
        out[i] = j >= 0 ? s->d[2 + j] : 1;
    }
}
/* Per-dim int parameter padded on the left to three with `fill`. */
static void par3(const int *v, int nsp, int fill, int out[3])
{
    for (int i = 0; i < 3; i++) {
        int j = i - (3 - nsp);
        out[i] = j >= 0 ? v[j] : fill;
    }
}

/* y[n,oc,o] = b[oc] + sum w[oc,icl,k] x[n,g*icg+icl, o*s - pad + k*dil] */
static void conv_oracle(const GradCase *c, double *const *in, double *y)
{
    const double *x = in[0], *w = in[1], *b = in[2];
    const ConvParams *p = &c->conv;
    int64_t is[3], os[3];
    int k[3], s[3], dl[3], pd[3];
    sp3(&c->xs, is);
    sp3(&c->ys, os);
    par3(p->kernel, p->nsp, 1, k);
    par3(p->stride, p->nsp, 1, s);
    par3(p->dilation, p->nsp, 1, dl);
    par3(p->pad_lo, p->nsp, 0, pd);
    int64_t nb = c->xs.d[0], ic = c->xs.d[1], oc = c->ys.d[1];
    int64_t icg = ic / p->group, ocg = oc / p->group;
    int64_t pin = is[0] * is[1] * is[2], pout = os[0] * os[1] * os[2];
    int64_t kk = k[0] * k[1] * k[2];
    for (int64_t n = 0; n < nb; n++)
        for (int64_t o = 0; o < oc; o++)
            for (int64_t q = 0; q < pout; q++) {
                int64_t o0 = q / (os[1] * os[2]), o1 = q / os[2] % os[1],
                        o2 = q % os[2];
                double a = b[o];
                int64_t g = o / ocg;
                for (int64_t l = 0; l < icg; l++)
                    for (int64_t t = 0; t < kk; t++) {
                        int64_t t0 = t / (k[1] * k[2]), t1 = t / k[2] % k[1],
                                t2 = t % k[2];
                        int64_t i0 = o0 * s[0] - pd[0] + t0 * dl[0];
                        int64_t i1 = o1 * s[1] - pd[1] + t1 * dl[1];
                        int64_t i2 = o2 * s[2] - pd[2] + t2 * dl[2];
                        if (i0 < 0 || i0 >= is[0] || i1 < 0 || i1 >= is[1] ||
                            i2 < 0 || i2 >= is[2])
                            continue;
                        a += w[(o * icg + l) * kk + t] *
                             x[(n * ic + g * icg + l) * pin +
                               (i0 * is[1] + i1) * is[2] + i2];
                    }
                y[(n * oc + o) * pout + q] = a;
            }
}

/* y[n,oc,i*s - pad + k*dil] += w[ic,ocl,k] x[n,ic,i]; y += b[oc] */
static void convt_oracle(const GradCase *c, double *const *in, double *y)
{
    const double *x = in[0], *w = in[1], *b = in[2];
    const ConvParams *p = &c->conv;
    int64_t is[3], os[3];
    int k[3], s[3], dl[3], pd[3];
    sp3(&c->xs, is);
    sp3(&c->ys, os);
    par3(p->kernel, p->nsp, 1, k);
    par3(p->stride, p->nsp, 1, s);
    par3(p->dilation, p->nsp, 1, dl);
    par3(p->pad_lo, p->nsp, 0, pd);
    int64_t nb = c->xs.d[0], ic = c->xs.d[1], oc = c->ys.d[1];
    int64_t icg = ic / p->group, ocg = oc / p->group;
    int64_t pin = is[0] * is[1] * is[2], pout = os[0] * os[1] * os[2];
    int64_t kk = k[0] * k[1] * k[2];
    for (int64_t n = 0; n < nb; n++)
        for (int64_t o = 0; o < oc; o++)
            for (int64_t q = 0; q < pout; q++)
                y[(n * oc + o) * pout + q] = b[o];
    for (int64_t n = 0; n < nb; n++)
        for (int64_t i = 0; i < ic; i++)
            for (int64_t q = 0; q < pin; q++) {
                int64_t i0 = q / (is[1] * is[2]), i1 = q / is[2] % is[1],
                        i2 = q % is[2];
                double xv = x[(n * ic + i) * pin + q];
                int64_t g = i / icg;
                for (int64_t l = 0; l < ocg; l++)
                    for (int64_t t = 0; t < kk; t++) {
                        int64_t t0 = t / (k[1] * k[2]), t1 = t / k[2] % k[1],
                                t2 = t % k[2];
                        int64_t o0 = i0 * s[0] - pd[0] + t0 * dl[0];
                        int64_t o1 = i1 * s[1] - pd[1] + t1 * dl[1];
                        int64_t o2 = i2 * s[2] - pd[2] + t2 * dl[2];
                        if (o0 < 0 || o0 >= os[0] || o1 < 0 || o1 >= os[1] ||
                            o2 < 0 || o2 >= os[2])
                            continue;
                        y[(n * oc + g * ocg + l) * pout +
                          (o0 * os[1] + o1) * os[2] + o2] +=
                            w[(i * ocg + l) * kk + t] * xv;
                    }
            }
}

/* y = (x - mean) / sqrt(var + eps) * scale + bias; statistics over
 * spatial dims per (n, c) (instance) or over N and spatial per c (batch),
 * or the running statistics (batch, frozen). */
static void norm_oracle_common(const GradCase *c, double *const *in,
                               double *y, int batch, int use_stats)
{
    const double *x = in[0], *sc = in[1], *bi = in[2];
    int64_t nb = c->xs.d[0], ch = c->xs.d[1];
    int64_t sp = (int64_t)numel(&c->xs) / (nb * ch);
    for (int64_t cc = 0; cc < ch; cc++)
        for (int64_t n0 = 0; n0 < (batch ? 1 : nb); n0++) {
            int64_t n1 = batch ? nb : n0 + 1;
            double s = 0, q = 0, m;
            double cnt = (double)((n1 - n0) * sp);
            for (int64_t n = n0; n < n1; n++)
                for (int64_t i = 0; i < sp; i++)
                    s += x[(n * ch + cc) * sp + i];
            m = s / cnt;
            for (int64_t n = n0; n < n1; n++)
                for (int64_t i = 0; i < sp; i++) {
                    double d = x[(n * ch + cc) * sp + i] - m;
                    q += d * d;
                }
            double var = q / cnt;
            if (batch && !use_stats) {
                m = (double)c->run_mean[cc];
                var = (double)c->run_var[cc];
            }
            double rstd = 1.0 / sqrt(var + (double)c->norm.eps);
            for (int64_t n = n0; n < n1; n++)
                for (int64_t i = 0; i < sp; i++) {
                    int64_t j = (n * ch + cc) * sp + i;
                    y[j] = (x[j] - m) * rstd * sc[cc] + bi[cc];
                }
        }
}

static void softmax_dims(const GradCase *c, int64_t *outer, int64_t *len,
                         int64_t *inner)
{
    *outer = *len = *inner = 1;
    for (int d = 0; d < c->xs.ndim; d++) {
        if (d < c->sm.axis)
            *outer *= c->xs.d[d];
        else if (d == c->sm.axis || c->sm.flatten)
            *len *= c->xs.d[d];
        else
            *inner *= c->xs.d[d];
    }
}
static void softmax_oracle(const GradCase *c, double *const *in, double *y)
{
    int64_t outer, len, inner;
    softmax_dims(c, &outer, &len, &inner);
    const double *x = in[0];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t b = o * len * inner + i;
            double m = x[b], s = 0;
            for (int64_t l = 1; l < len; l++)
                if (x[b + l * inner] > m) m = x[b + l * inner];
            for (int64_t l = 0; l < len; l++)
                s += exp(x[b + l * inner] - m);
            for (int64_t l = 0; l < len; l++)
                y[b + l * inner] = exp(x[b + l * inner] - m) / s;
        }
}

static void concat_oracle(const GradCase *c, double *const *in, double *y)
{
    int64_t outer = 1;
    for (int d = 0; d < c->cat.axis; d++)
        outer *= c->cs[0].d[d];
    int64_t off = 0, row = (int64_t)c->y_n / outer;
    for (int k = 0; k < c->n_in; k++) {
        int64_t blk = (int64_t)c->in_n[k] / outer;
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < blk; j++)
                y[o * row + off + j] = in[k][o * blk + j];
        off += blk;
    }
}

/* y = a + b, b broadcast from the trailing dims */
static void add_oracle(const GradCase *c, double *const *in, double *y)
{
    const Shape *as = &c->xs, *bs = &c->bs;
    int lead = as->ndim - bs->ndim;
    for (size_t i = 0; i < c->y_n; i++) {
        int64_t rem = (int64_t)i, bi = 0, bstride = 1;
        for (int d = as->ndim - 1; d >= 0; d--) {
            int64_t coord = rem % as->d[d];
            rem /= as->d[d];
            if (d >= lead) {
                int64_t bd = bs->d[d - lead];
                bi += (bd == 1 ? 0 : coord) * bstride;
                bstride *= bd;
            }
        }
        y[i] = in[0][i] + in[1][bi];
    }
}

static void pool_geom3(const GradCase *c, int64_t is[3], int64_t os[3],
                       int k[3], int s[3], int dl[3], int pl[3], int ph[3])
{
    const PoolParams *p = &c->pool;
    sp3(&c->xs, is);
    sp3(&c->ys, os);
    par3(p->kernel, p->nsp, 1, k);
    par3(p->stride, p->nsp, 1, s);
    par3(p->dilation, p->nsp, 1, dl);
    par3(p->pad_lo, p->nsp, 0, pl);
    par3(p->pad_hi, p->nsp, 0, ph);
}

/* max over the taps o*s - pad + k*dil inside x */
static void maxpool_oracle(const GradCase *c, double *const *in, double *y)
{
    int64_t is[3], os[3];
    int k[3], s[3], dl[3], pl[3], ph[3];
    pool_geom3(c, is, os, k, s, dl, pl, ph);
    int64_t planes = c->xs.d[0] * c->xs.d[1];
    int64_t pin = is[0] * is[1] * is[2], pout = os[0] * os[1] * os[2];
    for (int64_t q = 0; q < planes * pout; q++) {
        int64_t pl_ = q / pout, o = q % pout;
        int64_t o0 = o / (os[1] * os[2]), o1 = o / os[2] % os[1],
                o2 = o % os[2];
        double m = -INFINITY;
        for (int a = 0; a < k[0]; a++)
            for (int b = 0; b < k[1]; b++)
                for (int e = 0; e < k[2]; e++) {
                    int64_t i0 = o0 * s[0] - pl[0] + a * dl[0];
                    int64_t i1 = o1 * s[1] - pl[1] + b * dl[1];
                    int64_t i2 = o2 * s[2] - pl[2] + e * dl[2];
                    if (i0 < 0 || i0 >= is[0] || i1 < 0 || i1 >= is[1] ||
                        i2 < 0 || i2 >= is[2])
                        continue;
                    double v =
                        in[0][pl_ * pin + (i0 * is[1] + i1) * is[2] + i2];
                    if (v > m) m = v;
                }
        y[q] = m;
    }
}
/* PyTorch's average: window [start, min(start + k, in + pad_hi)) gives the
 * count_include_pad divisor; clipped to [0, in) it gives the taps summed
 * and the other divisor. */
static void avgpool_oracle(const GradCase *c, double *const *in, double *y)
{
    int64_t is[3], os[3];
    int k[3], s[3], dl[3], pl[3], ph[3];
    pool_geom3(c, is, os, k, s, dl, pl, ph);
    int64_t planes = c->xs.d[0] * c->xs.d[1];
    int64_t pin = is[0] * is[1] * is[2], pout = os[0] * os[1] * os[2];
    for (int64_t q = 0; q < planes * pout; q++) {
        int64_t pl_ = q / pout, o = q % pout;
        int64_t oc[3] = {o / (os[1] * os[2]), o / os[2] % os[1], o % os[2]};
        int64_t lo[3], hi[3], pad_size = 1, in_size = 1;
        for (int d = 0; d < 3; d++) {
            int64_t st = oc[d] * s[d] - pl[d];
            int64_t en = st + k[d];
            if (en > is[d] + ph[d]) en = is[d] + ph[d];
            pad_size *= en - st;
            lo[d] = st < 0 ? 0 : st;
            hi[d] = en > is[d] ? is[d] : en;
            in_size *= hi[d] - lo[d];
        }
        double sum = 0;
        for (int64_t a = lo[0]; a < hi[0]; a++)
            for (int64_t b = lo[1]; b < hi[1]; b++)
                for (int64_t e = lo[2]; e < hi[2]; e++)
                    sum += in[0][pl_ * pin + (a * is[1] + b) * is[2] + e];
        y[q] = sum / (double)(c->pool.count_include_pad ? pad_size : in_size);
    }
}

/* ONNX coordinate transforms with scale = out / in */
static double resize_coord(const ResizeParams *p, int64_t o, int64_t in,
                           int64_t out)
{
    switch (p->coord) {
    case COORD_HALF_PIXEL:
        return ((double)o + 0.5) * (double)in / (double)out - 0.5;
    case COORD_PYTORCH_HALF_PIXEL:
        return out > 1 ? ((double)o + 0.5) * (double)in / (double)out - 0.5
                       : 0;
    case COORD_ALIGN_CORNERS:
        return out > 1 ? (double)o * (double)(in - 1) / (double)(out - 1) : 0;
    default:
        return (double)o * (double)in / (double)out;
    }
}
/* Per dim: up to two source indices and weights. */
static void resize_taps(const ResizeParams *p, int64_t o, int64_t in,
                        int64_t out, int64_t idx[2], double w[2])
{
    double x = resize_coord(p, o, in, out);
    if (p->mode == RESIZE_NEAREST) {
        double r = p->nearest == NEAREST_ROUND_PREFER_FLOOR  ? ceil(x - 0.5)
                   : p->nearest == NEAREST_ROUND_PREFER_CEIL ? floor(x + 0.5)
                   : p->nearest == NEAREST_FLOOR             ? floor(x)
                                                             : ceil(x);
        int64_t i = (int64_t)fmin(fmax(r, 0), (double)(in - 1));
        idx[0] = idx[1] = i;
        w[0] = 1;
        w[1] = 0;
        return;
    }
    x = fmin(fmax(x, 0), (double)(in - 1));
    idx[0] = (int64_t)floor(x);
    idx[1] = idx[0] + 1 < in ? idx[0] + 1 : idx[0];
    w[1] = x - floor(x);
    w[0] = 1 - w[1];
}
static void resize_oracle(const GradCase *c, double *const *in, double *y)
{
    int64_t is[3], os[3];
    sp3(&c->xs, is);
    sp3(&c->ys, os);
    int64_t planes = c->xs.d[0] * c->xs.d[1];
    int64_t pin = is[0] * is[1] * is[2], pout = os[0] * os[1] * os[2];
    for (int64_t q = 0; q < planes * pout; q++) {
        int64_t pl = q / pout, o = q % pout;
        int64_t oc[3] = {o / (os[1] * os[2]), o / os[2] % os[1], o % os[2]};
        int64_t idx[3][2];
        double w[3][2];
        for (int d = 0; d < 3; d++)
            resize_taps(&c->rs, oc[d], is[d], os[d], idx[d], w[d]);
        double v = 0;
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                for (int e = 0; e < 2; e++)
                    v += w[0][a] * w[1][b] * w[2][e] *
                         in[0][pl * pin +
                               (idx[0][a] * is[1] + idx[1][b]) * is[2] +
                               idx[2][e]];
        y[q] = v;
    }
}

#endif
