/* Backward kernels (compressor/grad) checked four ways per case:
 *   (a) the float backward against central finite differences of an
 *       independent double-precision naive forward (grad_check.h), for the
 *       scalar loss L = sum(r * y) with fixed random r (so dy = r);
 *   (b) that double forward against the runtime's float forward, so the
 *       oracle has the runtime's semantics;
 *   (c) accumulation: d* buffers prefilled with random values end up as
 *       prefill + gradient, and each d* alone (others NULL) gives the same
 *       bits as all together;
 *   (d) 1 vs 2 OpenMP threads bit-identical.
 * Kinks are avoided by construction: relu inputs away from 0, max-pool
 * inputs distinct and spaced far more than the FD step apart.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "compressor/grad/grad.h"
#include "grad_check.h"
#include "runtime/common.h"
#include "runtime/ops/ops.h"

/* ================= Conv ================= */

static void conv_fwd(const GradCase *c, float *const *in, float *y)
{
    conv_forward_ref(y, in[0], in[1], in[2], &c->xs, &c->ys, &c->conv);
}
static void conv_bwd(const GradCase *c, float *const *d, const float *dy,
                     float *const *in)
{
    conv_backward(d[0], d[1], d[2], dy, in[0], in[1], &c->xs, &c->ys,
                  &c->conv, c->scratch);
}

/* Sets up and runs a Conv case: x [N,IC,in...], OC, params. */
static void conv_case(const char *name, Shape xs, int oc, ConvParams p,
                      TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.xs = xs;
    c.conv = p;
    c.ys = xs;
    c.ys.d[1] = oc;
    for (int i = 0; i < p.nsp; i++) {
        int64_t ext = (int64_t)p.dilation[i] * (p.kernel[i] - 1) + 1;
        c.ys.d[2 + i] =
            (xs.d[2 + i] + p.pad_lo[i] + p.pad_hi[i] - ext) / p.stride[i] + 1;
    }
    size_t kk = 1;
    for (int i = 0; i < p.nsp; i++)
        kk *= (size_t)p.kernel[i];
    add_input(&c, numel(&xs), rng, -1, 1);
    add_input(&c, (size_t)oc * (size_t)(xs.d[1] / p.group) * kk, rng, -1, 1);
    add_input(&c, (size_t)oc, rng, -1, 1);
    c.y_n = numel(&c.ys);
    c.oracle = conv_oracle;
    c.forward = conv_fwd;
    c.backward = conv_bwd;
    omp_set_num_threads(2); /* scratch sized for the most threads used */
    c.scratch = xcalloc(conv_backward_scratch_floats(&c.xs, &c.ys, &p),
                        sizeof(float));
    run_case(&c, rng);
    case_free(&c);
}

static ConvParams conv_params(int nsp, const int *k, const int *s,
                              const int *dil, const int *plo, const int *phi,
                              const int *opad, int group)
{
    ConvParams p;
    memset(&p, 0, sizeof p);
    p.nsp = nsp;
    p.group = group;
    for (int i = 0; i < nsp; i++) {
        p.kernel[i] = k[i];
        p.stride[i] = s[i];
        p.dilation[i] = dil[i];
        p.pad_lo[i] = plo[i];
        p.pad_hi[i] = phi[i];
        p.out_pad[i] = opad ? opad[i] : 0;
    }
    return p;
}

static void test_conv2d(void **state)
{
    (void)state;
    TestRng rng = {11};
    conv_case("conv2d 3->5 5x7 k3 pad1", SHAPE(2, 3, 5, 7), 5,
              conv_params(2, (int[]){3, 3}, (int[]){1, 1}, (int[]){1, 1},
                          (int[]){1, 1}, (int[]){1, 1}, NULL, 1),
              &rng);
    conv_case("conv2d g2 stride(2,1) dil(1,2) asym pads", SHAPE(1, 4, 5, 7),
              6,
              conv_params(2, (int[]){3, 2}, (int[]){2, 1}, (int[]){1, 2},
                          (int[]){1, 0}, (int[]){0, 2}, NULL, 2),
              &rng);
    conv_case("conv2d 1x1 5->3", SHAPE(2, 5, 5, 7), 3,
              conv_params(2, (int[]){1, 1}, (int[]){1, 1}, (int[]){1, 1},
                          (int[]){0, 0}, (int[]){0, 0}, NULL, 1),
              &rng);
    /* more output positions than one im2col tile (4096) */
    conv_case("conv2d tiled 65x66", SHAPE(1, 1, 65, 66), 2,
              conv_params(2, (int[]){3, 3}, (int[]){1, 1}, (int[]){1, 1},
                          (int[]){1, 1}, (int[]){1, 1}, NULL, 1),
              &rng);
}

static void test_conv3d(void **state)
{
    (void)state;
    TestRng rng = {12};
    conv_case(
        "conv3d 3->4 3x5x4 k3 stride(1,2,1) pad1", SHAPE(1, 3, 3, 5, 4), 4,
        conv_params(3, (int[]){3, 3, 3}, (int[]){1, 2, 1}, (int[]){1, 1, 1},
                    (int[]){1, 1, 1}, (int[]){1, 1, 1}, NULL, 1),
        &rng);
    conv_case("conv3d g2 dil(1,1,2) k(2,3,2) pads", SHAPE(2, 2, 3, 5, 4), 4,
              conv_params(3, (int[]){2, 3, 2}, (int[]){1, 1, 2},
                          (int[]){1, 1, 2}, (int[]){0, 1, 1},
                          (int[]){1, 0, 1}, NULL, 2),
              &rng);
}

static void test_conv1d(void **state)
{
    (void)state;
    TestRng rng = {13};
    conv_case("conv1d 3->5 len 9 k3 stride2 pad1", SHAPE(2, 3, 9), 5,
              conv_params(1, (int[]){3}, (int[]){2}, (int[]){1}, (int[]){1},
                          (int[]){1}, NULL, 1),
              &rng);
}

/* ================= ConvTranspose ================= */

static void convt_fwd(const GradCase *c, float *const *in, float *y)
{
    conv_transpose_forward_ref(y, in[0], in[1], in[2], &c->xs, &c->ys,
                               &c->conv);
}
static void convt_bwd(const GradCase *c, float *const *d, const float *dy,
                      float *const *in)
{
    conv_transpose_backward(d[0], d[1], d[2], dy, in[0], in[1], &c->xs,
                            &c->ys, &c->conv, c->scratch);
}

static void convt_case(const char *name, Shape xs, int oc, ConvParams p,
                       TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.xs = xs;
    c.conv = p;
    c.ys = xs;
    c.ys.d[1] = oc;
    for (int i = 0; i < p.nsp; i++)
        c.ys.d[2 + i] = (int64_t)p.stride[i] * (xs.d[2 + i] - 1) +
                        p.out_pad[i] +
                        (int64_t)p.dilation[i] * (p.kernel[i] - 1) + 1 -
                        p.pad_lo[i] - p.pad_hi[i];
    size_t kk = 1;
    for (int i = 0; i < p.nsp; i++)
        kk *= (size_t)p.kernel[i];
    add_input(&c, numel(&xs), rng, -1, 1);
    add_input(&c, (size_t)xs.d[1] * (size_t)(oc / p.group) * kk, rng, -1, 1);
    add_input(&c, (size_t)oc, rng, -1, 1);
    c.y_n = numel(&c.ys);
    c.oracle = convt_oracle;
    c.forward = convt_fwd;
    c.backward = convt_bwd;
    omp_set_num_threads(2);
    c.scratch =
        xcalloc(conv_transpose_backward_scratch_floats(&c.xs, &c.ys, &p),
                sizeof(float));
    run_case(&c, rng);
    case_free(&c);
}

static void test_conv_transpose2d(void **state)
{
    (void)state;
    TestRng rng = {21};
    convt_case("convT2d 3->5 5x7 k2 s2 (U-Net up)", SHAPE(2, 3, 5, 7), 5,
               conv_params(2, (int[]){2, 2}, (int[]){2, 2}, (int[]){1, 1},
                           (int[]){0, 0}, (int[]){0, 0}, NULL, 1),
               &rng);
    convt_case("convT2d g2 k3 s2 pad1 out_pad1 dil(1,2)", SHAPE(1, 4, 5, 7),
               6,
               conv_params(2, (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 2},
                           (int[]){1, 1}, (int[]){1, 0}, (int[]){1, 1}, 2),
               &rng);
    /* more input positions than one tile (4096) */
    convt_case("convT2d tiled 65x64", SHAPE(1, 1, 65, 64), 1,
               conv_params(2, (int[]){2, 2}, (int[]){2, 2}, (int[]){1, 1},
                           (int[]){0, 0}, (int[]){0, 0}, NULL, 1),
               &rng);
}

static void test_conv_transpose3d(void **state)
{
    (void)state;
    TestRng rng = {22};
    convt_case("convT3d 3->2 3x5x4 k2 s2", SHAPE(1, 3, 3, 5, 4), 2,
               conv_params(3, (int[]){2, 2, 2}, (int[]){2, 2, 2},
                           (int[]){1, 1, 1}, (int[]){0, 0, 0},
                           (int[]){0, 0, 0}, NULL, 1),
               &rng);
    convt_case("convT3d g2 k3 s(1,2,2) pads out_pad", SHAPE(2, 2, 3, 5, 4), 4,
               conv_params(3, (int[]){3, 3, 2}, (int[]){1, 2, 2},
                           (int[]){1, 1, 1}, (int[]){1, 1, 0},
                           (int[]){1, 0, 1}, (int[]){0, 1, 1}, 2),
               &rng);
}

/* ================= normalisation ================= */

static void inorm_oracle(const GradCase *c, double *const *in, double *y)
{
    norm_oracle_common(c, in, y, 0, 1);
}
static void inorm_fwd(const GradCase *c, float *const *in, float *y)
{
    instance_norm_forward_ref(y, in[0], in[1], in[2], &c->xs, &c->norm);
}
static void inorm_bwd(const GradCase *c, float *const *d, const float *dy,
                      float *const *in)
{
    instance_norm_backward(d[0], d[1], d[2], dy, in[0], in[1], &c->xs,
                           &c->norm);
}

static void bnorm_oracle(const GradCase *c, double *const *in, double *y)
{
    norm_oracle_common(c, in, y, 1, c->norm.use_batch_stats);
}
static void bnorm_fwd(const GradCase *c, float *const *in, float *y)
{
    batch_norm_forward_ref(y, in[0], in[1], in[2], c->run_mean, c->run_var,
                           &c->xs, &c->norm);
}
/* The training forward (into a scratch y) supplies the saved statistics;
 * running statistics are updated on copies so the case stays fixed. */
static void bnorm_bwd(const GradCase *c, float *const *d, const float *dy,
                      float *const *in)
{
    size_t ch = (size_t)c->xs.d[1];
    float *y = xcalloc(numel(&c->xs), sizeof(float));
    float *st = xcalloc(4 * ch, sizeof(float));
    memcpy(st + 2 * ch, c->run_mean, ch * sizeof(float));
    memcpy(st + 3 * ch, c->run_var, ch * sizeof(float));
    batch_norm_forward_train(y, st, st + ch, st + 2 * ch, st + 3 * ch, in[0],
                             in[1], in[2], &c->xs, &c->norm);
    batch_norm_backward(d[0], d[1], d[2], dy, in[0], in[1], st, st + ch,
                        &c->xs, &c->norm);
    free(y);
    free(st);
}

static void norm_case(const char *name, Shape xs, int batch, int use_stats,
                      TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    size_t ch = (size_t)xs.d[1];
    c.name = name;
    c.xs = c.ys = xs;
    c.norm.eps = 1e-5f;
    c.norm.momentum = 0.1f;
    c.norm.use_batch_stats = use_stats;
    /* an offset and a spread per case so the statistics matter */
    add_input(&c, numel(&xs), rng, -1.5f, 2.5f);
    add_input(&c, ch, rng, 0.5f, 1.5f);
    add_input(&c, ch, rng, -1, 1);
    c.run_mean = xcalloc(ch, sizeof(float));
    c.run_var = xcalloc(ch, sizeof(float));
    trng_fill(rng, c.run_mean, ch, -0.5f, 0.5f);
    trng_fill(rng, c.run_var, ch, 0.5f, 2.0f);
    c.y_n = numel(&xs);
    c.oracle = batch ? bnorm_oracle : inorm_oracle;
    c.forward = batch ? bnorm_fwd : inorm_fwd;
    c.backward = batch ? bnorm_bwd : inorm_bwd;
    run_case(&c, rng);
    case_free(&c);
}

static void test_instance_norm(void **state)
{
    (void)state;
    TestRng rng = {31};
    norm_case("instnorm2d N2 C3 5x7", SHAPE(2, 3, 5, 7), 0, 1, &rng);
    norm_case("instnorm3d N2 C5 3x5x4", SHAPE(2, 5, 3, 5, 4), 0, 1, &rng);
}

static void test_batch_norm(void **state)
{
    (void)state;
    TestRng rng = {32};
    norm_case("batchnorm2d train N2 C3 5x7", SHAPE(2, 3, 5, 7), 1, 1, &rng);
    norm_case("batchnorm3d train N2 C5 3x5x4", SHAPE(2, 5, 3, 5, 4), 1, 1,
              &rng);
    norm_case("batchnorm2d frozen N2 C3 5x7", SHAPE(2, 3, 5, 7), 1, 0, &rng);
}

/* The training forward: y equals the double oracle; saved statistics and
 * the running update follow the PyTorch convention (unbiased running
 * var); 1 and 2 threads agree bit for bit. */
static void test_batch_norm_forward_train(void **state)
{
    (void)state;
    TestRng rng = {33};
    Shape xs = SHAPE(2, 3, 3, 5, 4);
    const int64_t ch = 3, sp = 60, m = 2 * sp;
    size_t n = numel(&xs);
    float *x = xcalloc(n, sizeof(float)), *sc = xcalloc(ch, sizeof(float));
    float *bi = xcalloc(ch, sizeof(float)), *y1 = xcalloc(n, sizeof(float));
    float *y2 = xcalloc(n, sizeof(float)),
          *st1 = xcalloc(4 * ch, sizeof(float));
    float *st2 = xcalloc(4 * ch, sizeof(float));
    trng_fill(&rng, x, n, -1, 3);
    trng_fill(&rng, sc, ch, 0.5f, 1.5f);
    trng_fill(&rng, bi, ch, -1, 1);
    for (int64_t c = 0; c < ch; c++) {
        st1[2 * ch + c] = st2[2 * ch + c] = 0.25f * (float)c;
        st1[3 * ch + c] = st2[3 * ch + c] = 1.0f + 0.5f * (float)c;
    }
    NormParams p = {1e-5f, 0.1f, 1};
    omp_set_num_threads(1);
    batch_norm_forward_train(y1, st1, st1 + ch, st1 + 2 * ch, st1 + 3 * ch, x,
                             sc, bi, &xs, &p);
    omp_set_num_threads(2);
    batch_norm_forward_train(y2, st2, st2 + ch, st2 + 2 * ch, st2 + 3 * ch, x,
                             sc, bi, &xs, &p);
    assert_memory_equal(y1, y2, n * sizeof(float));
    assert_memory_equal(st1, st2, 4 * ch * sizeof(float));
    for (int64_t c = 0; c < ch; c++) {
        double s = 0, q = 0;
        for (int64_t b = 0; b < 2; b++)
            for (int64_t i = 0; i < sp; i++)
                s += (double)x[(b * ch + c) * sp + i];
        double mean = s / (double)m;
        for (int64_t b = 0; b < 2; b++)
            for (int64_t i = 0; i < sp; i++) {
                double d = (double)x[(b * ch + c) * sp + i] - mean;
                q += d * d;
            }
        double var = q / (double)m, unb = q / (double)(m - 1);
        float want[4] = {(float)mean, (float)(1.0 / sqrt(var + 1e-5)),
                         (float)(0.9 * 0.25 * (double)c + 0.1 * mean),
                         (float)(0.9 * (1.0 + 0.5 * (double)c) + 0.1 * unb)};
        float got[4] = {st1[c], st1[ch + c], st1[2 * ch + c],
                        st1[3 * ch + c]};
        /* float results of double formulas: rounding only */
        assert_true(allclose(got, want, 4, 1e-6, 1e-6, "BN saved/running"));
        for (int64_t b = 0; b < 2; b++)
            for (int64_t i = 0; i < sp; i++) {
                int64_t j = (b * ch + c) * sp + i;
                float w = (float)(((double)x[j] - mean) / sqrt(var + 1e-5) *
                                      (double)sc[c] +
                                  (double)bi[c]);
                assert_true(
                    allclose(&y1[j], &w, 1, 1e-5, 1e-5, "BN train y"));
            }
    }
    free(x);
    free(sc);
    free(bi);
    free(y1);
    free(y2);
    free(st1);
    free(st2);
}

/* ================= activations ================= */

static void relu_oracle(const GradCase *c, double *const *in, double *y)
{
    for (size_t i = 0; i < c->y_n; i++)
        y[i] = in[0][i] > 0 ? in[0][i] : 0;
}
static void relu_fwd(const GradCase *c, float *const *in, float *y)
{
    relu_forward(y, in[0], (int64_t)c->y_n);
}
static void relu_bwd(const GradCase *c, float *const *d, const float *dy,
                     float *const *in)
{
    float *y = xcalloc(c->y_n, sizeof(float));
    relu_forward(y, in[0], (int64_t)c->y_n);
    relu_backward(d[0], dy, y, (int64_t)c->y_n);
    free(y);
}
static void lrelu_oracle(const GradCase *c, double *const *in, double *y)
{
    for (size_t i = 0; i < c->y_n; i++)
        y[i] = in[0][i] > 0 ? in[0][i] : (double)c->act.alpha * in[0][i];
}
static void lrelu_fwd(const GradCase *c, float *const *in, float *y)
{
    leaky_relu_forward(y, in[0], (int64_t)c->y_n, &c->act);
}
static void lrelu_bwd(const GradCase *c, float *const *d, const float *dy,
                      float *const *in)
{
    leaky_relu_backward(d[0], dy, in[0], (int64_t)c->y_n, &c->act);
}
static void sigmoid_oracle(const GradCase *c, double *const *in, double *y)
{
    for (size_t i = 0; i < c->y_n; i++)
        y[i] = 1.0 / (1.0 + exp(-in[0][i]));
}
static void sigmoid_fwd(const GradCase *c, float *const *in, float *y)
{
    sigmoid_forward(y, in[0], (int64_t)c->y_n);
}
static void sigmoid_bwd(const GradCase *c, float *const *d, const float *dy,
                        float *const *in)
{
    float *y = xcalloc(c->y_n, sizeof(float));
    sigmoid_forward(y, in[0], (int64_t)c->y_n);
    sigmoid_backward(d[0], dy, y, (int64_t)c->y_n);
    free(y);
}

/* x in [-2, 2] with |x| >= 0.1, far from the kink at 0 */
static void away_from_zero(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fabsf(x[i]) < 0.1f) x[i] = x[i] < 0 ? x[i] - 0.1f : x[i] + 0.1f;
}

static void act_case(const char *name, Shape xs, OracleFn o, ForwardFn f,
                     BackwardFn b, float alpha, TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.xs = c.ys = xs;
    c.act.alpha = alpha;
    add_input(&c, numel(&xs), rng, -2, 2);
    away_from_zero(c.in[0], c.in_n[0]);
    c.y_n = numel(&xs);
    c.oracle = o;
    c.forward = f;
    c.backward = b;
    run_case(&c, rng);
    case_free(&c);
}

static void test_activations(void **state)
{
    (void)state;
    TestRng rng = {41};
    act_case("relu 2d", SHAPE(2, 3, 5, 7), relu_oracle, relu_fwd, relu_bwd, 0,
             &rng);
    act_case("relu 3d", SHAPE(1, 5, 3, 5, 4), relu_oracle, relu_fwd, relu_bwd,
             0, &rng);
    act_case("leaky_relu 2d", SHAPE(2, 3, 5, 7), lrelu_oracle, lrelu_fwd,
             lrelu_bwd, 0.01f, &rng);
    act_case("leaky_relu 3d a=0.2", SHAPE(1, 5, 3, 5, 4), lrelu_oracle,
             lrelu_fwd, lrelu_bwd, 0.2f, &rng);
    act_case("sigmoid 2d", SHAPE(2, 3, 5, 7), sigmoid_oracle, sigmoid_fwd,
             sigmoid_bwd, 0, &rng);
    act_case("sigmoid 3d", SHAPE(1, 5, 3, 5, 4), sigmoid_oracle, sigmoid_fwd,
             sigmoid_bwd, 0, &rng);
}

/* The subgradient choices at exactly 0, as PyTorch: relu 0, leaky alpha. */
static void test_activation_kinks(void **state)
{
    (void)state;
    float x[3] = {0.0f, -0.0f, 1.0f}, y[3], dy[3] = {1, 1, 1};
    float dx[3] = {0, 0, 0};
    relu_forward(y, x, 3);
    relu_backward(dx, dy, y, 3);
    assert_true(dx[0] == 0.0f && dx[1] == 0.0f && dx[2] == 1.0f);
    ActParams a = {0.25f};
    memset(dx, 0, sizeof dx);
    leaky_relu_backward(dx, dy, x, 3, &a);
    assert_true(dx[0] == 0.25f && dx[1] == 0.25f && dx[2] == 1.0f);
}

/* ================= softmax ================= */

static void softmax_fwd(const GradCase *c, float *const *in, float *y)
{
    softmax_forward_ref(y, in[0], &c->xs, &c->sm);
}
static void softmax_bwd(const GradCase *c, float *const *d, const float *dy,
                        float *const *in)
{
    float *y = xcalloc(c->y_n, sizeof(float));
    softmax_forward(y, in[0], &c->xs, &c->sm);
    softmax_backward(d[0], dy, y, &c->xs, &c->sm);
    free(y);
}
static void softmax_case(const char *name, Shape xs, int axis, int flatten,
                         TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.xs = c.ys = xs;
    c.sm.axis = axis;
    c.sm.flatten = flatten;
    add_input(&c, numel(&xs), rng, -3, 3);
    c.y_n = numel(&xs);
    c.oracle = softmax_oracle;
    c.forward = softmax_fwd;
    c.backward = softmax_bwd;
    run_case(&c, rng);
    case_free(&c);
}

static void test_softmax(void **state)
{
    (void)state;
    TestRng rng = {51};
    softmax_case("softmax2d axis1", SHAPE(2, 5, 3, 4), 1, 0, &rng);
    softmax_case("softmax3d axis1", SHAPE(1, 3, 3, 5, 4), 1, 0, &rng);
    softmax_case("softmax axis3 (last)", SHAPE(2, 3, 5, 7), 3, 0, &rng);
    softmax_case("softmax flatten axis2", SHAPE(2, 3, 5, 4), 2, 1, &rng);
}

/* ================= Concat, Add ================= */

static void concat_fwd(const GradCase *c, float *const *in, float *y)
{
    const float *x[MAX_IN];
    const Shape *s[MAX_IN];
    for (int k = 0; k < c->n_in; k++) {
        x[k] = in[k];
        s[k] = &c->cs[k];
    }
    concat_forward(y, x, s, c->n_in, &c->cat);
}
static void concat_bwd(const GradCase *c, float *const *d, const float *dy,
                       float *const *in)
{
    (void)in;
    const Shape *s[MAX_IN];
    for (int k = 0; k < c->n_in; k++)
        s[k] = &c->cs[k];
    concat_backward(d, dy, s, c->n_in, &c->cat);
}
static void concat_case(const char *name, const Shape *cs, int n_in, int axis,
                        TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.cat.axis = axis;
    c.y_n = 0;
    for (int k = 0; k < n_in; k++) {
        c.cs[k] = cs[k];
        add_input(&c, numel(&cs[k]), rng, -1, 1);
        c.y_n += numel(&cs[k]);
    }
    c.oracle = concat_oracle;
    c.forward = concat_fwd;
    c.backward = concat_bwd;
    run_case(&c, rng);
    case_free(&c);
}

static void test_concat(void **state)
{
    (void)state;
    TestRng rng = {61};
    Shape a[3] = {SHAPE(2, 3, 5, 7), SHAPE(2, 5, 5, 7), SHAPE(2, 1, 5, 7)};
    concat_case("concat2d axis1 (3 inputs)", a, 3, 1, &rng);
    Shape b[2] = {SHAPE(1, 3, 3, 5, 4), SHAPE(1, 2, 3, 5, 4)};
    concat_case("concat3d axis1", b, 2, 1, &rng);
    Shape e[2] = {SHAPE(2, 3, 2, 5, 4), SHAPE(2, 3, 3, 5, 4)};
    concat_case("concat3d axis2", e, 2, 2, &rng);
}

static void add_fwd(const GradCase *c, float *const *in, float *y)
{
    add_forward(y, in[0], in[1], &c->xs, &c->bs);
}
static void add_bwd(const GradCase *c, float *const *d, const float *dy,
                    float *const *in)
{
    (void)in;
    add_backward(d[0], d[1], dy, &c->xs, &c->bs);
}
static void add_case(const char *name, Shape as, Shape bs, TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.xs = c.ys = as;
    c.bs = bs;
    add_input(&c, numel(&as), rng, -1, 1);
    add_input(&c, numel(&bs), rng, -1, 1);
    c.y_n = numel(&as);
    c.oracle = add_oracle;
    c.forward = add_fwd;
    c.backward = add_bwd;
    run_case(&c, rng);
    case_free(&c);
}

static void test_add(void **state)
{
    (void)state;
    TestRng rng = {62};
    add_case("add same shape 3d", SHAPE(1, 3, 3, 5, 4), SHAPE(1, 3, 3, 5, 4),
             &rng);
    add_case("add bias [1,C,1,1]", SHAPE(2, 5, 5, 7), SHAPE(1, 5, 1, 1),
             &rng);
    add_case("add [C,1,1,1] fewer dims", SHAPE(2, 3, 3, 5, 4),
             SHAPE(3, 1, 1, 1), &rng);
    add_case("add [1,1,H,W]", SHAPE(2, 3, 5, 7), SHAPE(1, 1, 5, 7), &rng);
    add_case("add scalar [1]", SHAPE(2, 3, 5, 7), SHAPE(1), &rng);
    add_case("add [N,1,1,W] mixed", SHAPE(2, 3, 5, 7), SHAPE(2, 1, 1, 7),
             &rng);
}

/* ================= pooling ================= */

static void maxpool_fwd(const GradCase *c, float *const *in, float *y)
{
    max_pool_forward_ref(y, in[0], &c->xs, &c->ys, &c->pool);
}
static void avgpool_fwd(const GradCase *c, float *const *in, float *y)
{
    avg_pool_forward_ref(y, in[0], &c->xs, &c->ys, &c->pool);
}
static void maxpool_bwd(const GradCase *c, float *const *d, const float *dy,
                        float *const *in)
{
    max_pool_backward(d[0], dy, in[0], &c->xs, &c->ys, &c->pool);
}
static void avgpool_bwd(const GradCase *c, float *const *d, const float *dy,
                        float *const *in)
{
    (void)in;
    avg_pool_backward(d[0], dy, &c->xs, &c->ys, &c->pool);
}

/* Distinct values spaced 2/n >= 1e-3 apart (n <= 2000), randomly placed:
 * no ties, and an FD step of 1e-4 never changes an arg-max. */
static void distinct_fill(TestRng *rng, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(trng_next(rng) % i);
        float t = x[i - 1];
        x[i - 1] = x[j];
        x[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        x[i] = ((x[i] + 0.5f) / (float)n) * 2.0f - 1.0f;
}

/* Output size as the forward infers it (floor or ceil; with ceil_mode the
 * last window must start inside the input or the left padding). */
static void pool_case(const char *name, Shape xs, PoolParams p, int is_max,
                      TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.xs = c.ys = xs;
    c.pool = p;
    for (int i = 0; i < p.nsp; i++) {
        int64_t ext = (int64_t)p.dilation[i] * (p.kernel[i] - 1) + 1;
        int64_t span = xs.d[2 + i] + p.pad_lo[i] + p.pad_hi[i] - ext;
        int64_t o =
            (p.ceil_mode ? span + p.stride[i] - 1 : span) / p.stride[i] + 1;
        if (p.ceil_mode && (o - 1) * p.stride[i] >= xs.d[2 + i] + p.pad_lo[i])
            o--;
        c.ys.d[2 + i] = o;
    }
    add_input(&c, numel(&xs), rng, -1, 1);
    if (is_max) distinct_fill(rng, c.in[0], c.in_n[0]);
    c.y_n = numel(&c.ys);
    c.oracle = is_max ? maxpool_oracle : avgpool_oracle;
    c.forward = is_max ? maxpool_fwd : avgpool_fwd;
    c.backward = is_max ? maxpool_bwd : avgpool_bwd;
    run_case(&c, rng);
    case_free(&c);
}

static PoolParams pool_params(int nsp, const int *k, const int *s,
                              const int *dil, const int *plo, const int *phi,
                              int ceil_mode, int incl)
{
    PoolParams p;
    memset(&p, 0, sizeof p);
    p.nsp = nsp;
    p.ceil_mode = ceil_mode;
    p.count_include_pad = incl;
    for (int i = 0; i < nsp; i++) {
        p.kernel[i] = k[i];
        p.stride[i] = s[i];
        p.dilation[i] = dil[i];
        p.pad_lo[i] = plo[i];
        p.pad_hi[i] = phi[i];
    }
    return p;
}

static void test_max_pool(void **state)
{
    (void)state;
    TestRng rng = {71};
    pool_case("maxpool2d k2 s2 5x7 floor", SHAPE(2, 3, 5, 7),
              pool_params(2, (int[]){2, 2}, (int[]){2, 2}, (int[]){1, 1},
                          (int[]){0, 0}, (int[]){0, 0}, 0, 0),
              1, &rng);
    pool_case("maxpool2d k3 s2 pad1 ceil 5x7", SHAPE(1, 3, 5, 7),
              pool_params(2, (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 1},
                          (int[]){1, 1}, (int[]){1, 1}, 1, 0),
              1, &rng);
    pool_case("maxpool2d k(3,2) s1 dil(2,2) overlapping", SHAPE(1, 2, 5, 7),
              pool_params(2, (int[]){3, 2}, (int[]){1, 1}, (int[]){2, 2},
                          (int[]){1, 0}, (int[]){0, 1}, 0, 0),
              1, &rng);
    pool_case("maxpool3d k2 s2 3x5x4 ceil", SHAPE(1, 5, 3, 5, 4),
              pool_params(3, (int[]){2, 2, 2}, (int[]){2, 2, 2},
                          (int[]){1, 1, 1}, (int[]){0, 0, 0},
                          (int[]){0, 0, 0}, 1, 0),
              1, &rng);
    pool_case("maxpool3d k3 s(1,2,2) pad1", SHAPE(2, 2, 3, 5, 4),
              pool_params(3, (int[]){3, 3, 3}, (int[]){1, 2, 2},
                          (int[]){1, 1, 1}, (int[]){1, 1, 1},
                          (int[]){1, 1, 1}, 0, 0),
              1, &rng);
}

/* dy routed to the first of tied maxima (scan order), as PyTorch. */
static void test_max_pool_ties(void **state)
{
    (void)state;
    Shape xs = SHAPE(1, 1, 4), ys = SHAPE(1, 1, 3);
    PoolParams p = pool_params(1, (int[]){2}, (int[]){1}, (int[]){1},
                               (int[]){0}, (int[]){0}, 0, 0);
    float x[4] = {1, 1, 0.5f, 1}, dy[3] = {1, 1, 1}, dx[4] = {0, 0, 0, 0};
    max_pool_backward(dx, dy, x, &xs, &ys, &p);
    float want[4] = {1, 1, 0, 1}; /* torch.max_pool1d(k=2, s=1) gives this */
    assert_memory_equal(dx, want, sizeof want);
}

static void test_avg_pool(void **state)
{
    (void)state;
    TestRng rng = {72};
    for (int incl = 0; incl < 2; incl++) {
        pool_case(incl ? "avgpool2d k3 s2 pad1 ceil incl_pad"
                       : "avgpool2d k3 s2 pad1 ceil excl_pad",
                  SHAPE(2, 3, 5, 7),
                  pool_params(2, (int[]){3, 3}, (int[]){2, 2}, (int[]){1, 1},
                              (int[]){1, 1}, (int[]){1, 1}, 1, incl),
                  0, &rng);
        pool_case(incl ? "avgpool2d k(2,3) asym pads floor incl_pad"
                       : "avgpool2d k(2,3) asym pads floor excl_pad",
                  SHAPE(1, 2, 5, 7),
                  pool_params(2, (int[]){2, 3}, (int[]){1, 2}, (int[]){1, 1},
                              (int[]){1, 0}, (int[]){0, 1}, 0, incl),
                  0, &rng);
        pool_case(incl ? "avgpool3d k3 s2 pad1 ceil incl_pad"
                       : "avgpool3d k3 s2 pad1 ceil excl_pad",
                  SHAPE(1, 3, 3, 5, 4),
                  pool_params(3, (int[]){3, 3, 3}, (int[]){2, 2, 2},
                              (int[]){1, 1, 1}, (int[]){1, 1, 1},
                              (int[]){1, 1, 1}, 1, incl),
                  0, &rng);
    }
    pool_case("avgpool3d k2 s2 floor", SHAPE(2, 2, 3, 5, 4),
              pool_params(3, (int[]){2, 2, 2}, (int[]){2, 2, 2},
                          (int[]){1, 1, 1}, (int[]){0, 0, 0},
                          (int[]){0, 0, 0}, 0, 0),
              0, &rng);
}

/* ================= Resize ================= */

static void resize_fwd(const GradCase *c, float *const *in, float *y)
{
    resize_forward_ref(y, in[0], &c->xs, &c->ys, &c->rs);
}
static void resize_bwd(const GradCase *c, float *const *d, const float *dy,
                       float *const *in)
{
    (void)in;
    resize_backward(d[0], dy, &c->xs, &c->ys, &c->rs);
}
static void resize_case(const char *name, Shape xs, Shape ys, ResizeMode m,
                        ResizeCoord co, ResizeNearest nr, TestRng *rng)
{
    GradCase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.xs = xs;
    c.ys = ys;
    c.rs.nsp = xs.ndim - 2;
    c.rs.mode = m;
    c.rs.coord = co;
    c.rs.nearest = nr;
    for (int i = 0; i < c.rs.nsp; i++)
        c.rs.scale[i] = (double)ys.d[2 + i] / (double)xs.d[2 + i];
    add_input(&c, numel(&xs), rng, -1, 1);
    c.y_n = numel(&ys);
    c.oracle = resize_oracle;
    c.forward = resize_fwd;
    c.backward = resize_bwd;
    run_case(&c, rng);
    case_free(&c);
}

static void test_resize(void **state)
{
    (void)state;
    TestRng rng = {81};
    resize_case("nearest2d x2 asymmetric floor", SHAPE(2, 3, 5, 7),
                SHAPE(2, 3, 10, 14), RESIZE_NEAREST, COORD_ASYMMETRIC,
                NEAREST_FLOOR, &rng);
    resize_case("nearest2d 5x7->7x10 half_pixel prefer_floor",
                SHAPE(1, 2, 5, 7), SHAPE(1, 2, 7, 10), RESIZE_NEAREST,
                COORD_HALF_PIXEL, NEAREST_ROUND_PREFER_FLOOR, &rng);
    /* asymmetric x2 puts odd outputs exactly on halves: the tie rule */
    resize_case("nearest2d x2 asymmetric round_prefer_floor",
                SHAPE(1, 3, 5, 7), SHAPE(1, 3, 10, 14), RESIZE_NEAREST,
                COORD_ASYMMETRIC, NEAREST_ROUND_PREFER_FLOOR, &rng);
    resize_case("nearest3d x2 asymmetric round_prefer_ceil",
                SHAPE(1, 3, 3, 5, 4), SHAPE(1, 3, 6, 10, 8), RESIZE_NEAREST,
                COORD_ASYMMETRIC, NEAREST_ROUND_PREFER_CEIL, &rng);
    resize_case("nearest2d down 7x10->5x7 ceil", SHAPE(1, 2, 7, 10),
                SHAPE(1, 2, 5, 7), RESIZE_NEAREST, COORD_HALF_PIXEL,
                NEAREST_CEIL, &rng);
    resize_case("linear2d x2 half_pixel", SHAPE(2, 3, 5, 7),
                SHAPE(2, 3, 10, 14), RESIZE_LINEAR, COORD_HALF_PIXEL,
                NEAREST_FLOOR, &rng);
    resize_case("linear2d 5x7->8x9 pytorch_half_pixel", SHAPE(1, 2, 5, 7),
                SHAPE(1, 2, 8, 9), RESIZE_LINEAR, COORD_PYTORCH_HALF_PIXEL,
                NEAREST_FLOOR, &rng);
    resize_case("linear3d 3x5x4->6x9x7 align_corners", SHAPE(1, 2, 3, 5, 4),
                SHAPE(1, 2, 6, 9, 7), RESIZE_LINEAR, COORD_ALIGN_CORNERS,
                NEAREST_FLOOR, &rng);
    resize_case("linear3d x2 asymmetric", SHAPE(1, 3, 3, 5, 4),
                SHAPE(1, 3, 6, 10, 8), RESIZE_LINEAR, COORD_ASYMMETRIC,
                NEAREST_FLOOR, &rng);
    resize_case("linear2d down 7x10->5x7 half_pixel", SHAPE(1, 2, 7, 10),
                SHAPE(1, 2, 5, 7), RESIZE_LINEAR, COORD_HALF_PIXEL,
                NEAREST_FLOOR, &rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv1d),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv3d),
        cmocka_unit_test(test_conv_transpose2d),
        cmocka_unit_test(test_conv_transpose3d),
        cmocka_unit_test(test_instance_norm),
        cmocka_unit_test(test_batch_norm),
        cmocka_unit_test(test_batch_norm_forward_train),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_activation_kinks),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_max_pool),
        cmocka_unit_test(test_max_pool_ties),
        cmocka_unit_test(test_avg_pool),
        cmocka_unit_test(test_resize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
