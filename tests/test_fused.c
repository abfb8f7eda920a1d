/* Fused normalisation + activation, the vectorised exp, and what the
 * executor does with them (fusion decisions, skipped output Softmax and
 * segment's labels from logits, per-node profile, "all cores" thread
 * count).
 *
 * Tolerances:
 *  - fused vs unfused optimised kernels: bit-identical by construction
 *    (same statistics, same float arithmetic, exact activations);
 *  - optimised vs double reference: outputs O(1..10); the float affine
 *    form and block-float moments agree with the two-pass double
 *    reference to ~1e-6 relative (see fused.c), so 2e-5 abs + 1e-5 rel;
 *  - vf4_exp_neg vs exp() in double: < 2e-7 relative (measured 9.5e-8 on
 *    every 8th float in [-87, 0], vecmath.h), tested on a sweep;
 *  - Softmax with the fast exp vs the double reference: 1e-6 abs + 1e-5
 *    rel as test_ops allows (probabilities in [0, 1]).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/ops/ops.h"
#include "runtime/ops/vecmath.h"
#include "runtime/segment.h"
#include "runtime/volume.h"
#include "tests/graphbuild.h"
#include "testutil.h"

static Shape shp(int ndim, const int64_t *d)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s.d[i] = d[i];
    return s;
}
#define SHAPE(...)                                                           \
    shp((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),           \
        (int64_t[]){__VA_ARGS__})

static float *rand_buf(TestRng *r, size_t n, float lo, float hi)
{
    float *x = malloc(n * sizeof(float) + 4);
    assert_non_null(x);
    trng_fill(r, x, n, lo, hi);
    return x;
}

/* ------------------------------------------------------------- exp */

#ifdef SL_HAVE_VF8
__attribute__((target("avx2"))) static void exp8(float *y, const float *x)
{
    vf8_store(y, vf8_exp_neg(vf8_load(x)));
}
#endif

static void test_exp_accuracy(void **state)
{
    (void)state;
    double worst = 0;
    float at = 0;
    /* 2^20 points spread over [-87, 0], plus the ends. */
    const int n = 1 << 20;
    for (int i = 0; i <= n; i += 4) {
        float xs[4];
        for (int l = 0; l < 4; l++)
            xs[l] = -87.0f * (float)(i + l > n ? n : i + l) / (float)n;
        vf4 y = vf4_exp_neg(vf4_load(xs));
        for (int l = 0; l < 4; l++) {
            double want = exp((double)xs[l]);
            double rel = fabs((double)y[l] - want) / want;
            if (rel > worst) {
                worst = rel;
                at = xs[l];
            }
        }
    }
    if (worst >= 2e-7)
        fprintf(stderr, "exp: max relative error %.3g at %.9g\n", worst,
                (double)at);
    assert_true(worst < 2e-7);
#ifdef SL_HAVE_VF8
    /* the 8-lane copy gives the same bits as the 4-lane one */
    if (__builtin_cpu_supports("avx2"))
        for (int i = 0; i < n; i += 8) {
            float xs[8], y8[8], y4[8];
            for (int l = 0; l < 8; l++)
                xs[l] = -90.0f * (float)(i + l) / (float)n;
            exp8(y8, xs);
            vf4_store(y4, vf4_exp_neg(vf4_load(xs)));
            vf4_store(y4 + 4, vf4_exp_neg(vf4_load(xs + 4)));
            assert_memory_equal(y8, y4, sizeof y8);
        }
#endif
    /* special values: exp(0) = 1 exactly, far below the range 0, NaN
     * stays NaN, -inf gives 0 */
    float sp[4] = {0.0f, -1000.0f, NAN, -INFINITY};
    vf4 y = vf4_exp_neg(vf4_load(sp));
    assert_true(y[0] == 1.0f);
    assert_true(y[1] == 0.0f);
    assert_true(isnan(y[2]));
    assert_true(y[3] == 0.0f);
}

/* Softmax over channels on sizes around the vector width and the tile:
 * vector body, scalar tail, several tiles. */
static void test_softmax_tails(void **state)
{
    (void)state;
    const int64_t inners[] = {1, 3, 4, 5, 13, 255, 256, 257, 517};
    for (int c = 1; c <= 6; c++)
        for (size_t k = 0; k < sizeof inners / sizeof *inners; k++) {
            Shape xs = SHAPE(2, c, inners[k]);
            size_t n = (size_t)(2 * c * inners[k]);
            TestRng r = {(uint64_t)(c * 100 + (int)k)};
            float *x = rand_buf(&r, n, -30, 30);
            float *y = malloc(n * 4), *yr = malloc(n * 4);
            SoftmaxParams p = {.axis = 1};
            softmax_forward(y, x, &xs, &p);
            softmax_forward_ref(yr, x, &xs, &p);
            assert_allclose(y, yr, n, 1e-6, 1e-5);
            /* in place gives the same bits */
            softmax_forward(x, x, &xs, &p);
            assert_memory_equal(x, y, n * 4);
            free(x);
            free(y);
            free(yr);
        }
}

/* ------------------------------------------ fused norm + activation */

static void apply_act(float *y, int64_t n, const PostAct *a)
{
    ActParams ap = {.alpha = a->alpha};
    if (a->op == OP_RELU) relu_forward(y, y, n);
    if (a->op == OP_LEAKY_RELU) leaky_relu_forward(y, y, n, &ap);
}

/* which: 0 InstanceNorm, 1 BatchNorm running stats, 2 BatchNorm batch
 * stats.  Checks fused == unfused + activation (bits), in place, 1 vs 2
 * threads, and the double reference + activation within tolerance. */
static void check_norm_act(const Shape *xs, int which, const PostAct *act,
                           float offset)
{
    int64_t n = shape_numel(xs), C = xs->d[1];
    TestRng r = {(uint64_t)(n * 3 + which * 7 + (int)act->op)};
    float *x = rand_buf(&r, (size_t)n, offset - 2, offset + 3);
    float *sc = rand_buf(&r, (size_t)C, 0.5f, 2);
    float *bi = rand_buf(&r, (size_t)C, -1, 1);
    float *mu = rand_buf(&r, (size_t)C, offset - 1, offset + 1);
    float *va = rand_buf(&r, (size_t)C, 0.5f, 3);
    float *yf = malloc((size_t)n * 4), *yu = malloc((size_t)n * 4);
    float *yr = malloc((size_t)n * 4), *y2 = malloc((size_t)n * 4);
    NormParams p = {.eps = 1e-5f, .use_batch_stats = which == 2};
    int saved = omp_get_max_threads();
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        float *y = th == 1 ? yf : y2;
        if (which == 0)
            instance_norm_act_forward(y, x, sc, bi, xs, &p, act);
        else
            batch_norm_act_forward(y, x, sc, bi, mu, va, xs, &p, act);
    }
    omp_set_num_threads(saved);
    assert_memory_equal(yf, y2, (size_t)n * 4);
    if (which == 0) {
        instance_norm_forward(yu, x, sc, bi, xs, &p);
        instance_norm_forward_ref(yr, x, sc, bi, xs, &p);
    } else {
        batch_norm_forward(yu, x, sc, bi, mu, va, xs, &p);
        batch_norm_forward_ref(yr, x, sc, bi, mu, va, xs, &p);
    }
    apply_act(yu, n, act);
    apply_act(yr, n, act);
    assert_memory_equal(yf, yu, (size_t)n * 4);
    assert_allclose(yf, yr, (size_t)n, 2e-5, 1e-5);
    /* in place */
    memcpy(y2, x, (size_t)n * 4);
    if (which == 0)
        instance_norm_act_forward(y2, y2, sc, bi, xs, &p, act);
    else
        batch_norm_act_forward(y2, y2, sc, bi, mu, va, xs, &p, act);
    assert_memory_equal(yf, y2, (size_t)n * 4);
    free(x);
    free(sc);
    free(bi);
    free(mu);
    free(va);
    free(yf);
    free(yu);
    free(yr);
    free(y2);
}

static void test_norm_act(void **state)
{
    (void)state;
    Shape shapes[] = {SHAPE(2, 3, 5, 7),   SHAPE(1, 5, 3, 4, 5),
                      SHAPE(3, 2, 11),     SHAPE(2, 3, 2),
                      SHAPE(1, 4, 67, 61), SHAPE(2, 16, 9, 8, 7)};
    PostAct acts[] = {{OP_IDENTITY, 0},
                      {OP_RELU, 0},
                      {OP_LEAKY_RELU, 0.01f},
                      {OP_LEAKY_RELU, 1.5f}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int which = 0; which < 3; which++)
            for (size_t a = 0; a < sizeof acts / sizeof *acts; a++)
                check_norm_act(&shapes[s], which, &acts[a], 0.0f);
}

/* A mean far from zero relative to the spread, and a first element far
 * from the mean (the statistics' shift must not cancel). */
static void test_norm_offset(void **state)
{
    (void)state;
    Shape a = SHAPE(2, 3, 33, 35);
    PostAct leaky = {OP_LEAKY_RELU, 0.01f};
    check_norm_act(&a, 0, &leaky, 1000.0f);
    check_norm_act(&a, 2, &leaky, -500.0f);
    check_norm_act(&a, 1, &leaky, 300.0f);

    Shape xs = SHAPE(1, 1, 4099);
    TestRng r = {77};
    float *x = rand_buf(&r, 4099, 99.0f, 101.0f);
    x[0] = 1e4f; /* outlier first */
    float sc = 1.0f, bi = 0.0f, y[4099], yr[4099];
    NormParams p = {.eps = 1e-5f};
    instance_norm_forward(y, x, &sc, &bi, &xs, &p);
    instance_norm_forward_ref(yr, x, &sc, &bi, &xs, &p);
    /* outputs up to ~64 (the outlier): 1e-5 relative */
    assert_allclose(y, yr, 4099, 2e-5, 1e-5);
    free(x);
}

/* The 8-lane AVX2 loops and the 4-lane ones give the same bits
 * (SL_VEC_ISA=sse forces the latter; on a machine without AVX2 both runs
 * take the 4-lane path and the test is trivially true). */
static void test_isa_paths_identical(void **state)
{
    (void)state;
    Shape xs = SHAPE(2, 5, 37, 29);
    int64_t n = shape_numel(&xs);
    TestRng r = {31};
    float *x = rand_buf(&r, (size_t)n, -3, 4);
    float sc[5] = {1, 0.5f, 2, 1.5f, 0.7f}, bi[5] = {0, 1, -1, 0.2f, 0};
    float mu[5] = {0, 0.1f, -0.2f, 1, 0}, va[5] = {1, 2, 0.5f, 1, 3};
    float *y[2], *z[2], *w[2];
    NormParams np = {.eps = 1e-5f}, bp = {.eps = 1e-5f};
    PostAct leaky = {OP_LEAKY_RELU, 0.01f}, relu = {OP_RELU, 0};
    SoftmaxParams sp = {.axis = 1};
    for (int k = 0; k < 2; k++) {
        if (k == 1) assert_int_equal(setenv("SL_VEC_ISA", "sse", 1), 0);
        y[k] = malloc((size_t)n * 4);
        z[k] = malloc((size_t)n * 4);
        w[k] = malloc((size_t)n * 4);
        instance_norm_act_forward(y[k], x, sc, bi, &xs, &np, &leaky);
        batch_norm_act_forward(z[k], x, sc, bi, mu, va, &xs, &bp, &relu);
        softmax_forward(w[k], x, &xs, &sp);
    }
    unsetenv("SL_VEC_ISA");
    assert_memory_equal(y[0], y[1], (size_t)n * 4);
    assert_memory_equal(z[0], z[1], (size_t)n * 4);
    assert_memory_equal(w[0], w[1], (size_t)n * 4);
    for (int k = 0; k < 2; k++) {
        free(y[k]);
        free(z[k]);
        free(w[k]);
    }
    free(x);
}

/* ------------------------------------------------------ executor */

static int count_label(const Executor *e, const Graph *g, const char *l)
{
    int k = 0;
    for (int i = 0; i < g->n_nodes; i++)
        k += !strcmp(exec_node_label(e, i), l);
    return k;
}

/* The U-Net's three Conv -> InstanceNorm -> LeakyRelu blocks run fused;
 * profiling counts every node that ran; the output Softmax is skipped
 * on request and the logits' argmax equals the probabilities'. */
static void test_exec_fusion(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 9), 0);
    Shape in = SHAPE(2, 1, 20, 28);
    Executor *e = NULL;
    assert_int_equal(exec_create(&g, &in, 2, &e), 0);
    assert_int_equal(count_label(e, &g, "InstanceNormalization+LeakyRelu"),
                     3);
    assert_int_equal(count_label(e, &g, ""), 3);
    assert_int_equal(count_label(e, &g, "LeakyRelu"), 0);
    assert_string_equal(exec_node_label(e, g.n_nodes), "");

    size_t nin = (size_t)shape_numel(&in);
    TestRng r = {3};
    float *x = rand_buf(&r, nin, -2, 2);
    const float *o[SL_MAX_OUTPUTS];
    exec_profile(e, 1);
    assert_int_equal(exec_run(e, x, o), 0);
    exec_profile(e, 0);
    double total = 0;
    for (int i = 0; i < g.n_nodes; i++) {
        double s = exec_node_seconds(e, i);
        assert_true(s >= 0);
        if (!exec_node_label(e, i)[0]) assert_true(s == 0);
        total += s;
    }
    assert_true(total > 0);

    size_t no = (size_t)shape_numel(exec_output_shape(e, 0));
    float *prob = malloc(no * 4), *logit = malloc(no * 4);
    memcpy(prob, o[0], no * 4);
    assert_int_equal(exec_set_skip_softmax(e, 1), 1);
    assert_int_equal(exec_run(e, x, o), 0);
    memcpy(logit, o[0], no * 4);
    float *p2 = malloc(no * 4);
    SoftmaxParams sp = {.axis = 1};
    softmax_forward(p2, logit, exec_output_shape(e, 0), &sp);
    assert_memory_equal(p2, prob, no * 4);
    /* and back */
    assert_int_equal(exec_set_skip_softmax(e, 0), 0);
    assert_int_equal(exec_run(e, x, o), 0);
    assert_memory_equal(o[0], prob, no * 4);
    free(p2);
    free(prob);
    free(logit);
    free(x);
    exec_free(e);
    graph_free(&g);
}

/* A normalisation whose output is also read elsewhere (here: a graph
 * output) must not be fused: both values stay visible and correct. */
static void test_exec_no_fusion_shared(void **state)
{
    (void)state;
    Graph g;
    GBuild b = {&g, {11}, 0, 0};
    graph_init(&g);
    int x = gb_input(&b, 2, 2);
    int c = gb_conv(&b, x, 2, 4, 2, 3, 1, 1, 1);
    int nrm = gb_inorm(&b, c, 4);
    int act = gb_unary(&b, OP_RELU, nrm, 0);
    int bn = gb_bnorm(&b, act, 4);
    int act2 = gb_unary(&b, OP_LEAKY_RELU, bn, 0.2f);
    g.outputs[0] = act2;
    g.outputs[1] = nrm;
    g.n_outputs = 2;
    assert_int_equal(b.fail, 0);
    Shape in = SHAPE(1, 2, 9, 11);
    Executor *e = NULL;
    assert_int_equal(exec_create(&g, &in, 1, &e), 0);
    assert_int_equal(count_label(e, &g, "InstanceNormalization"), 1);
    assert_int_equal(count_label(e, &g, "Relu"), 1);
    assert_int_equal(count_label(e, &g, "BatchNormalization+LeakyRelu"), 1);
    /* no Softmax to skip */
    assert_int_equal(exec_set_skip_softmax(e, 1), 0);
    TestRng r = {5};
    float *xi = rand_buf(&r, 2 * 9 * 11, -2, 2);
    const float *o[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(e, xi, o), 0);
    /* op by op with the optimised kernels */
    size_t n = 4 * 9 * 11;
    Shape cs = SHAPE(1, 4, 9, 11);
    float *t = malloc(n * 4), *u = malloc(n * 4);
    const Node *cn = &g.nodes[0];
    float *scratch =
        malloc(conv_scratch_floats(&in, &cs, &cn->p.conv) * 4 + 64);
    conv_forward(t, xi, g.values[cn->in[1]].data, g.values[cn->in[2]].data,
                 &in, &cs, &cn->p.conv, scratch);
    const Node *nn = &g.nodes[1];
    instance_norm_forward(u, t, g.values[nn->in[1]].data,
                          g.values[nn->in[2]].data, &cs, &nn->p.norm);
    assert_memory_equal(o[1], u, n * 4);
    relu_forward(u, u, (int64_t)n);
    const Node *bnn = &g.nodes[3];
    batch_norm_forward(t, u, g.values[bnn->in[1]].data,
                       g.values[bnn->in[2]].data, g.values[bnn->in[3]].data,
                       g.values[bnn->in[4]].data, &cs, &bnn->p.norm);
    ActParams ap = {.alpha = 0.2f};
    leaky_relu_forward(t, t, (int64_t)n, &ap);
    assert_memory_equal(o[0], t, n * 4);
    free(scratch);
    free(t);
    free(u);
    free(xi);
    exec_free(e);
    graph_free(&g);
}

/* "All cores" (n_threads <= 0) gives the outputs of a one-thread
 * executor bit for bit: every kernel reduces in a fixed order.  Several
 * runs, so a reused arena cannot hide a difference. */
static void test_exec_all_cores(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 8, 3, 1, 4), 0);
    Shape in = SHAPE(2, 1, 40, 36);
    Executor *ea = NULL, *e1 = NULL;
    assert_int_equal(exec_create(&g, &in, 0, &ea), 0);
    assert_int_equal(exec_create(&g, &in, 1, &e1), 0);
    size_t nin = (size_t)shape_numel(&in);
    TestRng r = {8};
    float *x = rand_buf(&r, nin, -2, 2);
    const float *oa[SL_MAX_OUTPUTS], *o1[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(e1, x, o1), 0);
    for (int run = 0; run < 3; run++) {
        assert_int_equal(exec_run(ea, x, oa), 0);
        for (int k = 0; k < g.n_outputs; k++)
            assert_memory_equal(
                oa[k], o1[k],
                (size_t)shape_numel(exec_output_shape(e1, k)) * 4);
    }
    free(x);
    exec_free(ea);
    exec_free(e1);
    graph_free(&g);
}

/* segment without --probabilities skips the output Softmax (argmax of
 * the logits): the labels equal those taken from the probabilities, on
 * every voxel where the two largest probabilities are not equal floats
 * (there the first class wins on both sides only if the logits tie too). */
static void test_segment_logits_labels(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 21), 0);
    Volume v;
    assert_int_equal(volume_alloc(&v, 23, 19, 7, 1), 0);
    int64_t nv = volume_voxels(&v);
    TestRng r = {12};
    trng_fill(&r, v.data, (size_t)nv, 0, 100);
    int16_t *la = malloc((size_t)nv * 2), *lb = malloc((size_t)nv * 2);
    float *pr = malloc((size_t)nv * 3 * 4);
    SegmentOptions o = {.n_threads = 1};
    assert_int_equal(segment_volume(&g, &v, &o, la, pr), 0);
    assert_int_equal(segment_volume(&g, &v, &o, lb, NULL), 0);
    int64_t differ = 0, ties = 0;
    for (int64_t i = 0; i < nv; i++) {
        float p0 = pr[i], p1 = pr[nv + i], p2 = pr[2 * nv + i];
        float top = p0 > p1 ? p0 : p1, second = p0 > p1 ? p1 : p0;
        if (p2 > top) {
            second = top;
            top = p2;
        } else if (p2 > second) {
            second = p2;
        }
        if (top == second)
            ties++;
        else if (la[i] != lb[i])
            differ++;
    }
    assert_int_equal(differ, 0);
    assert_true(ties < nv / 100);
    free(la);
    free(lb);
    free(pr);
    volume_free(&v);
    graph_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_accuracy),
        cmocka_unit_test(test_softmax_tails),
        cmocka_unit_test(test_norm_act),
        cmocka_unit_test(test_norm_offset),
        cmocka_unit_test(test_isa_paths_identical),
        cmocka_unit_test(test_exec_fusion),
        cmocka_unit_test(test_exec_no_fusion_shared),
        cmocka_unit_test(test_exec_all_cores),
        cmocka_unit_test(test_segment_logits_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
