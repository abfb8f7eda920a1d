/* Forward kernels other than convolution, and the op table: fast kernels
 * against their naive twins on odd 2D and 3D shapes, small cases with
 * answers computed by hand, thread-count determinism, and shape inference
 * rejecting bad input.
 *
 * Tolerances: fast and reference kernels differ only in summation order
 * and float-vs-double intermediates.  For O(1) data a float result carries
 * ~6e-8 relative rounding per operation; a few tens of operations per
 * output keep errors below 1e-5, which is what most comparisons allow.
 * Pooling (max) and nearest resize move values without arithmetic: exact.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/ops/ops.h"
#include "testutil.h"

/* ------------------------------------------------------------ helpers */

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

static size_t numel(const Shape *s)
{
    size_t k = 1;
    for (int i = 0; i < s->ndim; i++)
        k *= (size_t)s->d[i];
    return k;
}

static float *rand_buf(TestRng *r, size_t n, float lo, float hi)
{
    float *x = malloc(n * sizeof(float) + 4);
    assert_non_null(x);
    trng_fill(r, x, n, lo, hi);
    return x;
}

/* A one-node graph: values 0..n_in-1 are the inputs, value n_in the
 * output. */
typedef struct {
    Graph g;
    Value v[SL_MAX_INPUTS + 1];
    Node n;
} OneNode;

static void one_node(OneNode *t, OpType op, int n_in, const Shape *shapes)
{
    memset(t, 0, sizeof *t);
    t->g.values = t->v;
    t->g.n_values = n_in + 1;
    t->g.nodes = &t->n;
    t->g.n_nodes = 1;
    t->n.op = op;
    t->n.name = (char *)"t";
    t->n.n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        t->n.in[i] = i;
        t->v[i].shape = shapes[i];
        t->v[i].producer = -1;
    }
    t->n.out = n_in;
    t->v[n_in].producer = 0;
}

/* Run infer; on success store the output shape in the graph. */
static int infer(OneNode *t, Shape *out)
{
    Shape s;
    memset(&s, 0, sizeof s);
    int rc = op_table[t->n.op].infer(&t->g, &t->n, &s);
    if (rc == 0) t->v[t->n.out].shape = s;
    if (out) *out = s;
    return rc;
}

/* infer must fail with ERR_SHAPE and report one line naming the node. */
static void expect_reject(OneNode *t)
{
    sl_error_reset();
    sl_error_quiet(1);
    int rc = infer(t, NULL);
    sl_error_quiet(0);
    assert_int_equal(rc, ERR_SHAPE);
    assert_true(sl_error_reported());
    assert_non_null(strstr(sl_error_last(), "'t'"));
    sl_error_reset();
}

/* ------------------------------------------------------ the op table */

static void test_optable_complete(void **state)
{
    (void)state;
    for (int op = 0; op < OP_COUNT; op++) {
        assert_non_null(op_table[op].name);
        assert_non_null(op_table[op].infer);
        assert_non_null(op_table[op].flops);
        assert_non_null(op_table[op].forward);
        assert_string_equal(op_name((OpType)op), op_table[op].name);
    }
    assert_string_equal(op_name(OP_SOFTMAX), "Softmax");
    assert_string_equal(op_name(OP_RESIZE), "Resize");
    assert_string_equal(op_name(OP_COUNT), "(unknown op)");
}

/* ------------------------------------------------------- activations */

static void test_activations_known(void **state)
{
    (void)state;
    const float x[6] = {-2.0f, -0.5f, 0.0f, 0.5f, 3.0f, -1000.0f};
    float y[6];
    relu_forward(y, x, 6);
    const float relu_want[6] = {0, 0, 0, 0.5f, 3.0f, 0};
    assert_allclose(y, relu_want, 6, 0, 0);
    ActParams a = {.alpha = 0.01f};
    leaky_relu_forward(y, x, 6, &a);
    const float leaky_want[6] = {-0.02f, -0.005f, 0, 0.5f, 3.0f, -10.0f};
    assert_allclose(y, leaky_want, 6, 1e-7, 1e-6);

    /* Sigmoid must saturate cleanly for huge |x|, never NaN. */
    const float xs[5] = {-1000.0f, -20.0f, 0.0f, 20.0f, 1000.0f};
    float ys[5];
    sigmoid_forward(ys, xs, 5);
    for (int i = 0; i < 5; i++) {
        double want = 1.0 / (1.0 + exp(-(double)xs[i]));
        assert_true(isfinite(ys[i]));
        assert_true(fabs((double)ys[i] - want) <= 1e-7 + 1e-6 * want);
    }
    assert_true(ys[0] == 0.0f || ys[0] < 1e-30f);
    assert_true(ys[4] == 1.0f);
    assert_true(ys[2] == 0.5f);

    /* In place is allowed for elementwise ops. */
    float z[6];
    memcpy(z, x, sizeof z);
    relu_forward(z, z, 6);
    assert_allclose(z, relu_want, 6, 0, 0);
}

/* Large enough for the parallel, vectorised paths (odd length: tails). */
static void test_elementwise_large(void **state)
{
    (void)state;
    const int64_t n = 100003;
    TestRng r = {4};
    float *x = rand_buf(&r, (size_t)n, -30, 30), *y = malloc(n * 4);
    ActParams a = {.alpha = 0.2f};
    relu_forward(y, x, n);
    for (int64_t i = 0; i < n; i++)
        assert_true(y[i] == (x[i] > 0 ? x[i] : 0.0f));
    leaky_relu_forward(y, x, n, &a);
    for (int64_t i = 0; i < n; i++)
        assert_true(y[i] == (x[i] >= 0 ? x[i] : 0.2f * x[i]));
    sigmoid_forward(y, x, n);
    for (int64_t i = 0; i < n; i++) {
        double want = 1.0 / (1.0 + exp(-(double)x[i]));
        /* expf is within a few ulp: 1e-6 relative */
        assert_true(fabs((double)y[i] - want) <= 1e-6 * want + 1e-30);
    }
    free(x);
    free(y);
}

static void test_identity_node(void **state)
{
    (void)state;
    Shape s = SHAPE(2, 3, 5);
    OneNode t;
    one_node(&t, OP_IDENTITY, 1, &s);
    Shape out;
    assert_int_equal(infer(&t, &out), 0);
    assert_true(shape_equal(&out, &s));
    TestRng r = {1};
    float *x = rand_buf(&r, 30, -1, 1), y[30];
    const float *in[1] = {x};
    op_table[OP_IDENTITY].forward(&t.g, &t.n, y, in, NULL);
    assert_memory_equal(x, y, sizeof y);
    assert_int_equal(op_table[OP_IDENTITY].flops(&t.g, &t.n), 0);
    free(x);
}

/* ------------------------------------------------------ normalisation */

static void check_instance_norm(const Shape *xs, float offset)
{
    TestRng r = {(uint64_t)xs->d[1] * 7 + 3};
    size_t n = numel(xs);
    int64_t C = xs->d[1];
    float *x = rand_buf(&r, n, offset - 2, offset + 2);
    float *sc = rand_buf(&r, (size_t)C, 0.5f, 2);
    float *bi = rand_buf(&r, (size_t)C, -1, 1);
    float *y = malloc(n * 4), *yr = malloc(n * 4);
    NormParams p = {.eps = 1e-5f};
    instance_norm_forward(y, x, sc, bi, xs, &p);
    instance_norm_forward_ref(yr, x, sc, bi, xs, &p);
    /* Outputs O(2); the shifted one-pass statistics agree with two-pass
     * to ~1e-7 relative even with a large offset, since x - x[0] is
     * exact in double. */
    assert_allclose(y, yr, n, 2e-5, 1e-5);
    free(x);
    free(sc);
    free(bi);
    free(y);
    free(yr);
}

static void test_instance_norm_vs_ref(void **state)
{
    (void)state;
    Shape a = SHAPE(2, 3, 5, 7), b = SHAPE(1, 5, 3, 4, 5),
          c = SHAPE(3, 2, 11);
    check_instance_norm(&a, 0);
    check_instance_norm(&b, 0);
    check_instance_norm(&c, 0);
    Shape d = SHAPE(2, 3, 5); /* fewer voxels than statistic lanes */
    check_instance_norm(&d, 0);
    /* A large mean relative to the spread: no cancellation. */
    check_instance_norm(&a, 1000.0f);
}

/* scale 1, bias 0: each (n, c) plane has mean 0 and variance 1 (eps is
 * tiny next to the variance of U(-2, 2) = 4/3). */
static void test_instance_norm_moments(void **state)
{
    (void)state;
    Shape xs = SHAPE(2, 3, 4, 5, 6);
    size_t n = numel(&xs), S = 120;
    TestRng r = {5};
    float *x = rand_buf(&r, n, 3, 7), *y = malloc(n * 4);
    float sc[3] = {1, 1, 1}, bi[3] = {0, 0, 0};
    NormParams p = {.eps = 1e-12f};
    instance_norm_forward(y, x, sc, bi, &xs, &p);
    for (size_t pl = 0; pl < 6; pl++) {
        double m = 0, v = 0;
        for (size_t i = 0; i < S; i++)
            m += (double)y[pl * S + i];
        m /= (double)S;
        for (size_t i = 0; i < S; i++)
            v += ((double)y[pl * S + i] - m) * ((double)y[pl * S + i] - m);
        v /= (double)S;
        assert_true(fabs(m) < 1e-6);
        assert_true(fabs(v - 1) < 1e-5);
    }
    free(x);
    free(y);
}

static void test_batch_norm(void **state)
{
    (void)state;
    /* Hand case, inference form: channel 0 mean 1 var 4 scale 2 bias 1:
     * x = 3 -> (3-1)/2*2+1 = 3; channel 1 mean 0 var 1-eps... */
    Shape hs = SHAPE(1, 2, 2);
    const float hx[4] = {3, -1, 2, 0};
    const float sc[2] = {2, 1}, bi[2] = {1, 0.5f}, mu[2] = {1, 1},
                va[2] = {4, 0.25f};
    NormParams p = {.eps = 0};
    float hy[4];
    batch_norm_forward(hy, hx, sc, bi, mu, va, &hs, &p);
    /* ch0: (3-1)/2*2+1 = 3, (-1-1)/2*2+1 = -1; ch1: (2-1)/0.5+0.5 = 2.5,
     * (0-1)/0.5+0.5 = -1.5 */
    const float want[4] = {3, -1, 2.5f, -1.5f};
    assert_allclose(hy, want, 4, 1e-6, 1e-6);

    Shape shapes[2] = {SHAPE(2, 3, 5, 7), SHAPE(3, 4, 3, 4, 5)};
    for (int k = 0; k < 2; k++) {
        for (int ubs = 0; ubs <= 1; ubs++) {
            TestRng r = {(uint64_t)(11 + k * 2 + ubs)};
            size_t n = numel(&shapes[k]);
            size_t C = (size_t)shapes[k].d[1];
            float *x = rand_buf(&r, n, -3, 5);
            float *s = rand_buf(&r, C, 0.5f, 2), *b = rand_buf(&r, C, -1, 1);
            float *m = rand_buf(&r, C, -1, 1), *v = rand_buf(&r, C, 0.5f, 3);
            float *y = malloc(n * 4), *yr = malloc(n * 4);
            NormParams q = {.eps = 1e-5f, .use_batch_stats = ubs};
            batch_norm_forward(y, x, s, b, m, v, &shapes[k], &q);
            batch_norm_forward_ref(yr, x, s, b, m, v, &shapes[k], &q);
            /* outputs up to ~10: float affine form vs double */
            assert_allclose(y, yr, n, 1e-5, 1e-5);
            free(x);
            free(s);
            free(b);
            free(m);
            free(v);
            free(y);
            free(yr);
        }
    }
}

/* ---------------------------------------------------------------- add */

/* Naive broadcast add for any shapes, rank <= 5 (test oracle). */
static void add_oracle(float *y, const Shape *ys, const float *a,
                       const Shape *as, const float *b, const Shape *bs)
{
    size_t n = numel(ys);
    for (size_t i = 0; i < n; i++) {
        int64_t idx[SL_MAX_DIMS];
        size_t rem = i;
        for (int d = ys->ndim - 1; d >= 0; d--) {
            idx[d] = (int64_t)(rem % (size_t)ys->d[d]);
            rem /= (size_t)ys->d[d];
        }
        size_t ia = 0, ib = 0;
        for (int d = 0; d < as->ndim; d++) {
            int64_t k = idx[d + ys->ndim - as->ndim];
            ia = ia * (size_t)as->d[d] + (size_t)(as->d[d] == 1 ? 0 : k);
        }
        for (int d = 0; d < bs->ndim; d++) {
            int64_t k = idx[d + ys->ndim - bs->ndim];
            ib = ib * (size_t)bs->d[d] + (size_t)(bs->d[d] == 1 ? 0 : k);
        }
        y[i] = a[ia] + b[ib];
    }
}

static void test_add_broadcast(void **state)
{
    (void)state;
    /* Hand case: [2,3] + [3] */
    const float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {10, 20, 30};
    Shape as = SHAPE(2, 3), bs = SHAPE(3);
    float y[6];
    add_forward(y, a, b, &as, &bs);
    const float want[6] = {11, 22, 33, 14, 25, 36};
    assert_allclose(y, want, 6, 0, 0);

    struct {
        Shape a, b, y;
    } cases[] = {
        {SHAPE(2, 3, 5, 7), SHAPE(2, 3, 5, 7), SHAPE(2, 3, 5, 7)},
        {SHAPE(2, 3, 5, 7), SHAPE(3, 1, 1), SHAPE(2, 3, 5, 7)},
        {SHAPE(2, 3, 5, 7), SHAPE(1, 3, 1, 1), SHAPE(2, 3, 5, 7)},
        {SHAPE(1, 5, 3, 4, 5), SHAPE(1), SHAPE(1, 5, 3, 4, 5)},
        {SHAPE(1, 5, 3, 4, 5), SHAPE(4, 1), SHAPE(1, 5, 3, 4, 5)},
        {SHAPE(2, 1, 4), SHAPE(3, 1), SHAPE(2, 3, 4)},
        {SHAPE(3, 1), SHAPE(2, 1, 4), SHAPE(2, 3, 4)},
        {SHAPE(1, 3, 1, 7), SHAPE(2, 1, 5, 1), SHAPE(2, 3, 5, 7)},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        Shape in[2] = {cases[k].a, cases[k].b};
        OneNode t;
        one_node(&t, OP_ADD, 2, in);
        Shape out;
        assert_int_equal(infer(&t, &out), 0);
        assert_true(shape_equal(&out, &cases[k].y));
        TestRng r = {100 + k};
        size_t na = numel(&in[0]), nb = numel(&in[1]), ny = numel(&out);
        float *xa = rand_buf(&r, na, -1, 1), *xb = rand_buf(&r, nb, -1, 1);
        float *yf = malloc(ny * 4), *yo = malloc(ny * 4);
        const float *ins[2] = {xa, xb};
        op_table[OP_ADD].forward(&t.g, &t.n, yf, ins, NULL);
        add_oracle(yo, &out, xa, &in[0], xb, &in[1]);
        /* one float addition each, same operands: exact */
        assert_allclose(yf, yo, ny, 0, 0);
        free(xa);
        free(xb);
        free(yf);
        free(yo);
    }
}

static void test_add_rejects(void **state)
{
    (void)state;
    Shape bad[][2] = {{SHAPE(2, 3), SHAPE(4)},
                      {SHAPE(2, 3, 5, 7), SHAPE(3, 4, 1)},
                      {SHAPE(2, 3, 5), SHAPE(2, 2, 5)}};
    for (size_t k = 0; k < 3; k++) {
        OneNode t;
        one_node(&t, OP_ADD, 2, bad[k]);
        expect_reject(&t);
    }
    OneNode t;
    one_node(&t, OP_ADD, 1, bad[0]); /* one input */
    expect_reject(&t);
}

/* ------------------------------------------------------------ softmax */

static void check_softmax(const Shape *xs, int axis, int flatten, float lo,
                          float hi)
{
    TestRng r = {(uint64_t)(axis * 10 + flatten + 1)};
    size_t n = numel(xs);
    float *x = rand_buf(&r, n, lo, hi), *y = malloc(n * 4),
          *yr = malloc(n * 4);
    SoftmaxParams p = {.axis = axis, .flatten = flatten};
    softmax_forward(y, x, xs, &p);
    softmax_forward_ref(yr, x, xs, &p);
    /* probabilities in [0,1]; float exp and sums vs double */
    assert_allclose(y, yr, n, 1e-6, 1e-5);

    /* Every softmax group sums to 1. */
    int64_t outer = 1, C = 1, inner = 1;
    for (int i = 0; i < axis; i++)
        outer *= xs->d[i];
    for (int i = axis; i < xs->ndim; i++)
        if (i == axis || flatten)
            C *= xs->d[i];
        else
            inner *= xs->d[i];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t v = 0; v < inner; v++) {
            double s = 0;
            for (int64_t c = 0; c < C; c++)
                s += (double)y[(o * C + c) * inner + v];
            /* C terms each rounded at ~6e-8 */
            assert_true(fabs(s - 1) < 1e-5);
        }
    free(x);
    free(y);
    free(yr);
}

static void test_softmax(void **state)
{
    (void)state;
    Shape a = SHAPE(2, 3, 5, 7), b = SHAPE(1, 5, 3, 4, 5),
          c = SHAPE(2, 4, 300); /* more voxels than one tile */
    check_softmax(&a, 1, 0, -5, 5);
    check_softmax(&b, 1, 0, -5, 5);
    check_softmax(&c, 1, 0, -5, 5);
    check_softmax(&a, 3, 0, -5, 5); /* last axis: contiguous rows */
    check_softmax(&b, 2, 0, -5, 5);
    check_softmax(&a, 1, 1, -5, 5); /* opset < 13 flatten */
    check_softmax(&b, 0, 1, -5, 5);
    /* large logits: max subtraction keeps exp finite */
    check_softmax(&a, 1, 0, 900, 1000);

    /* Hand case: softmax of {0, ln 3} over C = 2 is {1/4, 3/4}. */
    Shape hs = SHAPE(1, 2, 1);
    float hx[2] = {1000.0f, 1000.0f + logf(3.0f)}, hy[2];
    SoftmaxParams p = {.axis = 1};
    softmax_forward(hy, hx, &hs, &p);
    const float want[2] = {0.25f, 0.75f};
    /* logf(3) added to 1000 loses ~3e-5 absolute in float */
    assert_allclose(hy, want, 2, 2e-5, 0);

    OneNode t;
    one_node(&t, OP_SOFTMAX, 1, &a);
    t.n.p.softmax.axis = 4;
    expect_reject(&t);
}

/* ------------------------------------------------------------- concat */

static void test_concat(void **state)
{
    (void)state;
    /* Hand case: [1,1,2] ++ [1,2,2] along axis 1 */
    const float a[2] = {1, 2}, b[4] = {3, 4, 5, 6};
    Shape as = SHAPE(1, 1, 2), bs = SHAPE(1, 2, 2);
    const float *xs2[2] = {a, b};
    const Shape *ss2[2] = {&as, &bs};
    float y[6];
    ConcatParams p = {.axis = 1};
    concat_forward(y, xs2, ss2, 2, &p);
    const float want[6] = {1, 2, 3, 4, 5, 6};
    assert_allclose(y, want, 6, 0, 0);

    /* Three inputs along every axis of a 4D and a 5D shape. */
    const Shape bases[2] = {SHAPE(2, 3, 5, 7), SHAPE(1, 5, 3, 4, 5)};
    for (int k = 0; k < 2; k++)
        for (int axis = 0; axis < bases[k].ndim; axis++) {
            Shape in[3];
            float *x[3];
            TestRng r = {(uint64_t)(axis + 40 * k)};
            for (int i = 0; i < 3; i++) {
                in[i] = bases[k];
                in[i].d[axis] = i + 1;
                x[i] = rand_buf(&r, numel(&in[i]), -1, 1);
            }
            OneNode t;
            one_node(&t, OP_CONCAT, 3, in);
            t.n.p.concat.axis = axis;
            Shape out;
            assert_int_equal(infer(&t, &out), 0);
            assert_int_equal(out.d[axis], 6);
            size_t ny = numel(&out);
            float *yf = malloc(ny * 4), *yo = malloc(ny * 4);
            const float *ins[3] = {x[0], x[1], x[2]};
            op_table[OP_CONCAT].forward(&t.g, &t.n, yf, ins, NULL);
            /* oracle: walk the output, find the source element */
            int64_t outer = 1, inner = 1;
            for (int i = 0; i < axis; i++)
                outer *= out.d[i];
            for (int i = axis + 1; i < out.ndim; i++)
                inner *= out.d[i];
            size_t q = 0;
            for (int64_t o = 0; o < outer; o++)
                for (int i = 0; i < 3; i++)
                    for (int64_t j = 0; j < (i + 1) * inner; j++)
                        yo[q++] = x[i][o * (i + 1) * inner + j];
            assert_memory_equal(yf, yo, ny * 4);
            for (int i = 0; i < 3; i++)
                free(x[i]);
            free(yf);
            free(yo);
        }

    /* A large N = 1 concat split into blocks across threads. */
    Shape big[2] = {SHAPE(1, 3, 170, 190), SHAPE(1, 2, 170, 190)};
    OneNode t;
    one_node(&t, OP_CONCAT, 2, big);
    t.n.p.concat.axis = 1;
    assert_int_equal(infer(&t, NULL), 0);
    TestRng r = {77};
    float *x0 = rand_buf(&r, numel(&big[0]), -1, 1);
    float *x1 = rand_buf(&r, numel(&big[1]), -1, 1);
    float *yb = malloc((numel(&big[0]) + numel(&big[1])) * 4);
    const float *ins[2] = {x0, x1};
    op_table[OP_CONCAT].forward(&t.g, &t.n, yb, ins, NULL);
    assert_memory_equal(yb, x0, numel(&big[0]) * 4);
    assert_memory_equal(yb + numel(&big[0]), x1, numel(&big[1]) * 4);
    free(x0);
    free(x1);
    free(yb);

    /* Mismatch outside the axis, rank mismatch, bad axis. */
    Shape bad[2] = {SHAPE(1, 2, 4, 4), SHAPE(1, 3, 4, 5)};
    one_node(&t, OP_CONCAT, 2, bad);
    t.n.p.concat.axis = 1;
    expect_reject(&t);
    Shape bad2[2] = {SHAPE(1, 2, 4, 4), SHAPE(1, 3, 4)};
    one_node(&t, OP_CONCAT, 2, bad2);
    t.n.p.concat.axis = 1;
    expect_reject(&t);
    one_node(&t, OP_CONCAT, 1, bad);
    t.n.p.concat.axis = 4;
    expect_reject(&t);
}

/* ------------------------------------------------------------ pooling */

static PoolParams pool2(int k, int s, int pad, int ceil_mode)
{
    PoolParams p;
    memset(&p, 0, sizeof p);
    p.nsp = 2;
    for (int i = 0; i < 3; i++) {
        p.kernel[i] = k;
        p.stride[i] = s;
        p.dilation[i] = 1;
        p.pad_lo[i] = p.pad_hi[i] = pad;
    }
    p.ceil_mode = ceil_mode;
    return p;
}

static void test_max_pool_known(void **state)
{
    (void)state;
    const float x[16] = {1, 2,  3,  4,  5,  6,  7,  8,
                         9, 10, 11, 12, 13, 14, 15, 16};
    Shape xs = SHAPE(1, 1, 4, 4), ys = SHAPE(1, 1, 2, 2);
    PoolParams p = pool2(2, 2, 0, 0);
    float y[4];
    max_pool_forward(y, x, &xs, &ys, &p);
    const float want[4] = {6, 8, 14, 16};
    assert_allclose(y, want, 4, 0, 0);
    avg_pool_forward(y, x, &xs, &ys, &p);
    const float wavg[4] = {3.5f, 5.5f, 11.5f, 13.5f};
    assert_allclose(y, wavg, 4, 0, 0);

    /* 3x3 stride 1 pad 1 average of a constant 1 image: with
     * count_include_pad the corner sees 4 of 9, without it 1. */
    float ones[16];
    for (int i = 0; i < 16; i++)
        ones[i] = 1;
    PoolParams q = pool2(3, 1, 1, 0);
    float y16[16];
    q.count_include_pad = 1;
    avg_pool_forward(y16, ones, &xs, &xs, &q);
    assert_true(fabsf(y16[0] - 4.0f / 9.0f) < 1e-7f);
    assert_true(fabsf(y16[5] - 1.0f) < 1e-7f);
    q.count_include_pad = 0;
    avg_pool_forward(y16, ones, &xs, &xs, &q);
    assert_true(fabsf(y16[0] - 1.0f) < 1e-7f);
}

/* Output sizes with and without ceil_mode; the expected values were
 * checked against F.max_pool1d of Debian's python3-torch. */
static void test_pool_ceil_sizes(void **state)
{
    (void)state;
    struct {
        int in, k, s, pad, ceil_mode, want;
    } c[] = {
        {5, 2, 2, 0, 0, 2}, {5, 2, 2, 0, 1, 3}, {4, 2, 2, 0, 1, 2},
        {6, 2, 2, 1, 1, 4}, {5, 2, 2, 1, 1, 3}, {5, 3, 2, 1, 0, 3},
        {7, 3, 3, 0, 1, 3}, {8, 3, 3, 0, 1, 3}, {10, 3, 3, 1, 1, 4},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        Shape xs = SHAPE(1, 2, c[i].in);
        OneNode t;
        one_node(&t, OP_MAX_POOL, 1, &xs);
        t.n.p.pool = pool2(c[i].k, c[i].s, c[i].pad, c[i].ceil_mode);
        t.n.p.pool.nsp = 1;
        Shape out;
        assert_int_equal(infer(&t, &out), 0);
        if (out.d[2] != c[i].want)
            fprintf(stderr, "case %zu: got %lld want %d\n", i,
                    (long long)out.d[2], c[i].want);
        assert_int_equal(out.d[2], c[i].want);
    }
}

static void check_pool(const Shape *xs, const PoolParams *p, int is_max)
{
    OneNode t;
    one_node(&t, is_max ? OP_MAX_POOL : OP_AVG_POOL, 1, xs);
    t.n.p.pool = *p;
    Shape ys;
    assert_int_equal(infer(&t, &ys), 0);
    TestRng r = {(uint64_t)(numel(xs) + (size_t)is_max)};
    size_t nx = numel(xs), ny = numel(&ys);
    float *x = rand_buf(&r, nx, -2, 2), *y = malloc(ny * 4),
          *yr = malloc(ny * 4);
    const float *ins[1] = {x};
    op_table[t.n.op].forward(&t.g, &t.n, y, ins, NULL);
    if (is_max) {
        max_pool_forward_ref(yr, x, xs, &ys, p);
        assert_memory_equal(y, yr, ny * 4); /* max moves values: exact */
    } else {
        avg_pool_forward_ref(yr, x, xs, &ys, p);
        /* float sum of <= 27 terms vs double */
        assert_allclose(y, yr, ny, 1e-6, 1e-5);
    }
    free(x);
    free(y);
    free(yr);
}

static void test_pool_vs_ref(void **state)
{
    (void)state;
    Shape s2 = SHAPE(2, 3, 11, 9), s3 = SHAPE(1, 2, 7, 6, 9),
          s1 = SHAPE(2, 2, 13);
    for (int is_max = 0; is_max <= 1; is_max++) {
        for (int cm = 0; cm <= 1; cm++)
            for (int cip = 0; cip <= 1; cip++) {
                PoolParams p = pool2(3, 2, 1, cm);
                p.count_include_pad = cip;
                check_pool(&s2, &p, is_max);
                p.nsp = 3;
                check_pool(&s3, &p, is_max);
                p.nsp = 1;
                check_pool(&s1, &p, is_max);
                p = pool2(2, 2, 0, cm);
                p.count_include_pad = cip;
                check_pool(&s2, &p, is_max);
                p.nsp = 3;
                check_pool(&s3, &p, is_max);
            }
        /* anisotropic kernel, stride and pads */
        PoolParams p = pool2(1, 1, 0, 1);
        p.kernel[0] = 3, p.kernel[1] = 2, p.kernel[2] = 4;
        p.stride[0] = 1, p.stride[1] = 3, p.stride[2] = 2;
        p.pad_lo[0] = 2, p.pad_hi[0] = 0, p.pad_lo[2] = 1, p.pad_hi[2] = 3;
        p.nsp = 3;
        check_pool(&s3, &p, is_max);
    }
    /* dilation (max only) */
    PoolParams p = pool2(3, 2, 2, 1);
    p.dilation[0] = 2, p.dilation[1] = 3;
    check_pool(&s2, &p, 1);
    p.nsp = 3;
    p.dilation[2] = 2;
    check_pool(&s3, &p, 1);
}

static void test_pool_rejects(void **state)
{
    (void)state;
    Shape s2 = SHAPE(1, 2, 4, 4), s3 = SHAPE(1, 2, 4, 4, 4);
    OneNode t;
    one_node(&t, OP_MAX_POOL, 1, &s3); /* rank 5 for a 2D pool */
    t.n.p.pool = pool2(2, 2, 0, 0);
    expect_reject(&t);
    one_node(&t, OP_MAX_POOL, 1, &s2); /* kernel larger than input */
    t.n.p.pool = pool2(5, 1, 0, 0);
    expect_reject(&t);
    one_node(&t, OP_MAX_POOL, 1, &s2); /* pad as big as the kernel */
    t.n.p.pool = pool2(2, 1, 2, 0);
    expect_reject(&t);
    one_node(&t, OP_AVG_POOL, 1, &s2); /* zero stride */
    t.n.p.pool = pool2(2, 0, 0, 0);
    expect_reject(&t);
    one_node(&t, OP_AVG_POOL, 1, &s2); /* dilated average */
    t.n.p.pool = pool2(2, 1, 0, 0);
    t.n.p.pool.dilation[0] = 2;
    expect_reject(&t);
}

/* ------------------------------------------------------------- resize */

static ResizeParams rp(int nsp, ResizeMode m, ResizeCoord c, ResizeNearest nr,
                       double scale)
{
    ResizeParams p;
    memset(&p, 0, sizeof p);
    p.nsp = nsp;
    p.mode = m;
    p.coord = c;
    p.nearest = nr;
    for (int i = 0; i < 3; i++)
        p.scale[i] = scale;
    return p;
}

static void test_resize_known(void **state)
{
    (void)state;
    /* nearest 2x of a 2x2 (PyTorch: asymmetric + floor) */
    const float x[4] = {1, 2, 3, 4};
    Shape xs = SHAPE(1, 1, 2, 2), ys = SHAPE(1, 1, 4, 4);
    ResizeParams p =
        rp(2, RESIZE_NEAREST, COORD_ASYMMETRIC, NEAREST_FLOOR, 2);
    float y[16];
    resize_forward(y, x, &xs, &ys, &p);
    const float want[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    assert_allclose(y, want, 16, 0, 0);
    /* half_pixel + round_prefer_ceil gives the same for 2x */
    p.coord = COORD_HALF_PIXEL;
    p.nearest = NEAREST_ROUND_PREFER_CEIL;
    resize_forward(y, x, &xs, &ys, &p);
    assert_allclose(y, want, 16, 0, 0);

    /* linear align_corners: corners are the input corners, the middle of
     * a 3x3 from a 2x2 is the mean 2.5, edge midpoints the pair means. */
    Shape y3 = SHAPE(1, 1, 3, 3);
    p = rp(2, RESIZE_LINEAR, COORD_ALIGN_CORNERS, NEAREST_FLOOR, 1.5);
    float z[9];
    resize_forward(z, x, &xs, &y3, &p);
    const float wz[9] = {1, 1.5f, 2, 2, 2.5f, 3, 3, 3.5f, 4};
    assert_allclose(z, wz, 9, 1e-6, 0);

    /* linear half_pixel 1D 2 -> 4: coords -0.25 (clamped 0), 0.25, 0.75,
     * 1.25 (clamped 1): values 1, 1.25, 1.75, 2 (PyTorch bilinear,
     * align_corners=False). */
    Shape x1 = SHAPE(1, 1, 2), y1 = SHAPE(1, 1, 4);
    p = rp(1, RESIZE_LINEAR, COORD_HALF_PIXEL, NEAREST_FLOOR, 2);
    float w4[4];
    resize_forward(w4, x, &x1, &y1, &p);
    const float ww4[4] = {1, 1.25f, 1.75f, 2};
    assert_allclose(w4, ww4, 4, 1e-6, 0);

    /* nearest modes on 3 -> 2 (scale 2/3) with half_pixel: source coords
     * 0.25 and 1.75; with asymmetric: 0 and 1.5. */
    const float x3[3] = {10, 20, 30};
    Shape xs3 = SHAPE(1, 1, 3), ys2 = SHAPE(1, 1, 2);
    struct {
        ResizeCoord c;
        ResizeNearest m;
        float a, b;
    } nc[] = {
        {COORD_HALF_PIXEL, NEAREST_ROUND_PREFER_FLOOR, 10, 30},
        {COORD_HALF_PIXEL, NEAREST_FLOOR, 10, 20},
        {COORD_HALF_PIXEL, NEAREST_CEIL, 20, 30},
        {COORD_ASYMMETRIC, NEAREST_ROUND_PREFER_FLOOR, 10, 20},
        {COORD_ASYMMETRIC, NEAREST_ROUND_PREFER_CEIL, 10, 30},
        {COORD_ALIGN_CORNERS, NEAREST_FLOOR, 10, 30},
        {COORD_PYTORCH_HALF_PIXEL, NEAREST_FLOOR, 10, 20},
    };
    for (size_t i = 0; i < sizeof nc / sizeof nc[0]; i++) {
        ResizeParams q = rp(1, RESIZE_NEAREST, nc[i].c, nc[i].m, 2.0 / 3);
        float o[2];
        resize_forward(o, x3, &xs3, &ys2, &q);
        if (o[0] != nc[i].a || o[1] != nc[i].b)
            fprintf(stderr, "nearest case %zu: got %g %g\n", i, (double)o[0],
                    (double)o[1]);
        assert_true(o[0] == nc[i].a && o[1] == nc[i].b);
    }
    /* pytorch_half_pixel with one output: coordinate 0, not the centre */
    Shape ys1 = SHAPE(1, 1, 1);
    ResizeParams q =
        rp(1, RESIZE_LINEAR, COORD_PYTORCH_HALF_PIXEL, NEAREST_FLOOR, 0.4);
    float o1;
    resize_forward(&o1, x3, &xs3, &ys1, &q);
    assert_true(o1 == 10);
    q.coord = COORD_HALF_PIXEL; /* centre: 1.5 * 3 - 0.5 = 1 -> 20 */
    resize_forward(&o1, x3, &xs3, &ys1, &q);
    assert_true(o1 == 20);
}

static void check_resize(const Shape *xs, const ResizeParams *p)
{
    OneNode t;
    one_node(&t, OP_RESIZE, 1, xs);
    t.n.p.resize = *p;
    Shape ys;
    assert_int_equal(infer(&t, &ys), 0);
    TestRng r = {numel(xs) * 3 + (size_t)p->coord};
    size_t nx = numel(xs), ny = numel(&ys);
    float *x = rand_buf(&r, nx, -2, 2), *y = malloc(ny * 4),
          *yr = malloc(ny * 4);
    const float *ins[1] = {x};
    op_table[OP_RESIZE].forward(&t.g, &t.n, y, ins, NULL);
    resize_forward_ref(yr, x, xs, &ys, p);
    if (p->mode == RESIZE_NEAREST)
        assert_memory_equal(y, yr, ny * 4); /* a copy: exact */
    else
        /* nested float lerps vs double 8-corner sum, values O(2) */
        assert_allclose(y, yr, ny, 2e-6, 1e-5);
    free(x);
    free(y);
    free(yr);
}

static void test_resize_vs_ref(void **state)
{
    (void)state;
    Shape s2 = SHAPE(2, 3, 5, 7), s3 = SHAPE(1, 2, 3, 4, 5),
          s1 = SHAPE(1, 2, 9), wide = SHAPE(1, 1, 3, 150);
    const double scales[] = {2, 0.5, 1.7, 3};
    for (int mode = 0; mode <= 1; mode++)
        for (int c = 0; c <= COORD_ASYMMETRIC; c++)
            for (int nm = 0; nm <= NEAREST_CEIL; nm++) {
                if (mode == RESIZE_LINEAR && nm > 0) continue;
                for (size_t k = 0; k < 4; k++) {
                    ResizeParams p = rp(2, (ResizeMode)mode, (ResizeCoord)c,
                                        (ResizeNearest)nm, scales[k]);
                    check_resize(&s2, &p);
                    p.nsp = 3;
                    check_resize(&s3, &p);
                    p.nsp = 1;
                    check_resize(&s1, &p);
                }
            }
    /* W wider than one tap tile, anisotropic scales */
    ResizeParams p = rp(2, RESIZE_LINEAR, COORD_HALF_PIXEL, NEAREST_FLOOR, 2);
    p.scale[0] = 1.5;
    check_resize(&wide, &p);
    p.mode = RESIZE_NEAREST;
    check_resize(&wide, &p);
}

static void test_resize_infer(void **state)
{
    (void)state;
    Shape s[2] = {SHAPE(1, 4, 5, 7), SHAPE(1, 8, 10, 13)};
    OneNode t;
    one_node(&t, OP_RESIZE, 1, s);
    t.n.p.resize = rp(2, RESIZE_NEAREST, COORD_ASYMMETRIC, NEAREST_FLOOR, 2);
    t.n.p.resize.scale[1] = 1.5; /* 7 * 1.5 = 10.5 -> 10 */
    Shape out;
    assert_int_equal(infer(&t, &out), 0);
    Shape want = SHAPE(1, 4, 10, 10);
    assert_true(shape_equal(&out, &want));
    /* with a size reference, its spatial size wins, channels stay */
    one_node(&t, OP_RESIZE, 2, s);
    t.n.p.resize = rp(2, RESIZE_LINEAR, COORD_HALF_PIXEL, NEAREST_FLOOR, 2);
    assert_int_equal(infer(&t, &out), 0);
    Shape want2 = SHAPE(1, 4, 10, 13);
    assert_true(shape_equal(&out, &want2));
    /* floor(10 * 0.7 + 1e-6) = 7 even if the product rounds below 7 */
    Shape s10 = SHAPE(1, 1, 10);
    one_node(&t, OP_RESIZE, 1, &s10);
    t.n.p.resize = rp(1, RESIZE_LINEAR, COORD_HALF_PIXEL, NEAREST_FLOOR, 0.7);
    assert_int_equal(infer(&t, &out), 0);
    assert_int_equal(out.d[2], 7);

    one_node(&t, OP_RESIZE, 1, s); /* rank 4 for a 3D resize */
    t.n.p.resize = rp(3, RESIZE_LINEAR, COORD_HALF_PIXEL, NEAREST_FLOOR, 2);
    expect_reject(&t);
    one_node(&t, OP_RESIZE, 1, s); /* scale that empties a dim */
    t.n.p.resize = rp(2, RESIZE_LINEAR, COORD_HALF_PIXEL, NEAREST_FLOOR, 0.1);
    expect_reject(&t);
    one_node(&t, OP_RESIZE, 1, s); /* negative scale */
    t.n.p.resize = rp(2, RESIZE_LINEAR, COORD_HALF_PIXEL, NEAREST_FLOOR, -2);
    expect_reject(&t);
}

/* ------------------------------------------------- norm shape checks */

static void test_norm_rejects(void **state)
{
    (void)state;
    Shape in[5] = {SHAPE(1, 4, 5, 5), SHAPE(4), SHAPE(3), SHAPE(4), SHAPE(4)};
    OneNode t;
    one_node(&t, OP_INSTANCE_NORM, 3, in); /* bias has 3, not 4 */
    t.n.p.norm.eps = 1e-5f;
    expect_reject(&t);
    one_node(&t, OP_INSTANCE_NORM, 2, in); /* missing bias */
    expect_reject(&t);
    in[2] = SHAPE(4);
    one_node(&t, OP_INSTANCE_NORM, 3, in);
    t.n.p.norm.eps = 1e-5f;
    Shape out;
    assert_int_equal(infer(&t, &out), 0);
    assert_true(shape_equal(&out, &in[0]));
    assert_int_equal(op_table[OP_INSTANCE_NORM].flops(&t.g, &t.n), 5 * 100);
    one_node(&t, OP_BATCH_NORM, 3, in); /* BatchNorm needs 5 inputs */
    expect_reject(&t);
    in[4] = SHAPE(5);
    one_node(&t, OP_BATCH_NORM, 5, in); /* running var of 5 */
    expect_reject(&t);
    Shape flat[3] = {SHAPE(4, 4), SHAPE(4), SHAPE(4)};
    one_node(&t, OP_INSTANCE_NORM, 3, flat); /* no spatial dims */
    expect_reject(&t);
    Shape zero[1] = {SHAPE(1, 0, 3)};
    one_node(&t, OP_RELU, 1, zero); /* empty dim */
    expect_reject(&t);
}

/* ------------------------------------------------------ determinism */

/* 1 thread vs 2 threads: bit-identical outputs. */
static void test_thread_determinism(void **state)
{
    (void)state;
    Shape xs = SHAPE(2, 3, 17, 19, 23);
    size_t n = numel(&xs);
    TestRng r = {99};
    float *x = rand_buf(&r, n, -4, 6), *y1 = malloc(n * 4),
          *y2 = malloc(n * 4);
    float sc[3] = {1, 0.5f, 2}, bi[3] = {0, 1, -1}, mu[3] = {0, 0, 0},
          va[3] = {1, 1, 1};
    NormParams np = {.eps = 1e-5f};
    NormParams bp = {.eps = 1e-5f, .use_batch_stats = 1};
    SoftmaxParams sp = {.axis = 1};
    SoftmaxParams fp = {.axis = 1, .flatten = 1};
    int saved = omp_get_max_threads();
    for (int which = 0; which < 4; which++) {
        for (int th = 1; th <= 2; th++) {
            omp_set_num_threads(th);
            float *y = th == 1 ? y1 : y2;
            if (which == 0) instance_norm_forward(y, x, sc, bi, &xs, &np);
            if (which == 1)
                batch_norm_forward(y, x, sc, bi, mu, va, &xs, &bp);
            if (which == 2) softmax_forward(y, x, &xs, &sp);
            if (which == 3) softmax_forward(y, x, &xs, &fp);
        }
        assert_memory_equal(y1, y2, n * 4);
    }
    omp_set_num_threads(saved);
    free(x);
    free(y1);
    free(y2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_optable_complete),
        cmocka_unit_test(test_activations_known),
        cmocka_unit_test(test_elementwise_large),
        cmocka_unit_test(test_identity_node),
        cmocka_unit_test(test_instance_norm_vs_ref),
        cmocka_unit_test(test_instance_norm_moments),
        cmocka_unit_test(test_batch_norm),
        cmocka_unit_test(test_norm_rejects),
        cmocka_unit_test(test_add_broadcast),
        cmocka_unit_test(test_add_rejects),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_max_pool_known),
        cmocka_unit_test(test_pool_ceil_sizes),
        cmocka_unit_test(test_pool_vs_ref),
        cmocka_unit_test(test_pool_rejects),
        cmocka_unit_test(test_resize_known),
        cmocka_unit_test(test_resize_vs_ref),
        cmocka_unit_test(test_resize_infer),
        cmocka_unit_test(test_thread_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
