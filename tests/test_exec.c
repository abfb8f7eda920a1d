/* plan.c and exec.c: the buffer plan never lets live tensors overlap and
 * saves memory; the executor computes what the reference kernels compute
 * node by node, bit-identically for 1 and 2 threads. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "runtime/ops/ops.h"
#include "runtime/plan.h"
#include "runtime/sslim.h"
#include "tests/graphbuild.h"
#include "tests/testutil.h"

/* Optimised kernels sum in a different order than the naive references
 * (blocked GEMM vs direct loops), so results differ by float rounding:
 * about 1e-6 relative per layer, amplified a little by instance norm.
 * Outputs are softmax/sigmoid probabilities in [0, 1]; 1e-4 absolute
 * (plus 1e-4 relative) is 100x the rounding we expect and far below any
 * real bug (a wrong buffer or a skipped node changes outputs by ~0.1). */
#define ATOL 1e-4
#define RTOL 1e-4

static Shape mk(int ndim, int64_t a, int64_t b, int64_t c, int64_t d,
                int64_t e)
{
    Shape s = {ndim, {a, b, c, d, e}};
    return s;
}

/* ------------------------------------------------------------- the plan */

/* Bytes a value really occupies: its elements (the plan rounds its
 * size up to PLAN_ALIGN, but a Concat slice's padding is the next
 * slice). */
static size_t used_bytes(const Graph *g, int v)
{
    return (size_t)shape_numel(&g->values[v].shape) * 4;
}

static int mem_overlap(const Graph *g, const Plan *p, int a, int b)
{
    size_t a0 = p->offset[a], b0 = p->offset[b];
    return a0 < b0 + used_bytes(g, b) && b0 < a0 + used_bytes(g, a);
}

/* a is held, directly or through nested Concats, by the buffer of b. */
static int held_by(const Plan *p, int a, int b)
{
    for (int w = p->within[a]; w >= 0; w = p->within[w])
        if (p->buffer[w] == p->buffer[b]) return 1;
    return 0;
}

/* Brute force over all pairs of arena values. */
static void check_plan(const Graph *g, const Plan *p, int inplace)
{
    size_t need_max = 0;
    for (int v = 0; v < g->n_values; v++) {
        if (p->offset[v] == PLAN_NONE) {
            assert_true(g->values[v].data != NULL ||
                        (v != g->input && g->values[v].producer < 0));
            continue;
        }
        assert_null(g->values[v].data);
        if (p->within[v] < 0) {
            assert_int_equal(p->offset[v] % PLAN_ALIGN, 0);
        } else {
            /* inside its Concat's output, read last by that Concat */
            int o = p->within[v], c = g->values[o].producer;
            assert_true(p->offset[v] >= p->offset[o]);
            assert_true(p->offset[v] + used_bytes(g, v) <=
                        p->offset[o] + used_bytes(g, o));
            assert_true(p->last[v] <= c + 1);
        }
        assert_true(p->bytes[v] >=
                    (size_t)shape_numel(&g->values[v].shape) * 4);
        assert_true(p->offset[v] + used_bytes(g, v) <= p->arena_bytes);
        assert_true(p->first[v] <= p->last[v]);
        if (p->bytes[v] > need_max) need_max = p->bytes[v];
    }
    /* graph outputs live to the end */
    for (int k = 0; k < g->n_outputs; k++)
        assert_int_equal(p->last[g->outputs[k]], g->n_nodes + 1);
    int shared = 0;
    for (int a = 0; a < g->n_values; a++) {
        if (p->offset[a] == PLAN_NONE) continue;
        for (int b = a + 1; b < g->n_values; b++) {
            if (p->offset[b] == PLAN_NONE) continue;
            int t = p->first[a] <= p->last[b] && p->first[b] <= p->last[a];
            if (p->buffer[a] == p->buffer[b]) {
                /* an in-place pair: same memory, lifetimes only touch at
                 * the step where one is consumed and the other written */
                shared++;
                assert_true(inplace);
                assert_int_equal(p->offset[a], p->offset[b]);
                assert_true(p->last[a] == p->first[b] ||
                            p->last[b] == p->first[a] || !t);
                assert_true(p->last[a] <= p->first[b] ||
                            p->last[b] <= p->first[a]);
                continue;
            }
            if (held_by(p, a, b) || held_by(p, b, a)) {
                /* a Concat input in its slice dies at the Concat, the
                 * step the Concat's output (the whole buffer) is born */
                int in = held_by(p, a, b) ? a : b, out = in == a ? b : a;
                assert_true(p->last[in] <= p->first[out]);
                continue;
            }
            if (t && mem_overlap(g, p, a, b))
                fprintf(stderr, "values %d and %d overlap\n", a, b);
            assert_false(t && mem_overlap(g, p, a, b));
        }
    }
    if (inplace)
        assert_true(shared >= p->n_inplace);
    else
        assert_int_equal(p->n_inplace, 0);
    assert_true(p->arena_bytes >= need_max);
    assert_true(p->arena_bytes < p->unplanned_bytes);
}

static void plan_graph(Graph *g, Shape in)
{
    assert_int_equal(graph_infer_shapes(g, &in), 0);
    Plan p0, p1;
    assert_int_equal(plan_create(g, 0, &p0), 0);
    check_plan(g, &p0, 0);
    assert_int_equal(plan_create(g, 1, &p1), 0);
    check_plan(g, &p1, 1);
    /* in-place reuse never costs memory (here it saves some) */
    assert_true(p1.n_inplace > 0);
    assert_true(p1.arena_bytes <= p0.arena_bytes);
    assert_int_equal(p1.unplanned_bytes, p0.unplanned_bytes);
    plan_free(&p0);
    plan_free(&p1);
}

static void test_plan_unets(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 1, 1), 0);
    plan_graph(&g, mk(4, 1, 1, 32, 24, 0));
    graph_free(&g);
    assert_int_equal(build_unet(&g, 3, 2, 4, 2, 0, 1), 0);
    plan_graph(&g, mk(5, 1, 2, 8, 8, 12));
    graph_free(&g);
    assert_int_equal(build_all_ops(&g, 1), 0);
    plan_graph(&g, mk(4, 2, 2, 16, 10, 0));
    graph_free(&g);
}

/* A long chain of convolutions: with reuse the arena holds about two
 * tensors however deep the chain is. */
static void test_plan_chain(void **state)
{
    (void)state;
    Graph g;
    GBuild b = {&g, {3}, 0, 0};
    graph_init(&g);
    int x = gb_input(&b, 2, 4);
    for (int i = 0; i < 20; i++)
        x = gb_conv(&b, x, 4, 4, 2, 3, 1, 1, 0);
    g.outputs[0] = x;
    g.n_outputs = 1;
    assert_int_equal(b.fail, 0);
    assert_int_equal(graph_infer_shapes(&g, &(Shape){4, {1, 4, 16, 16}}), 0);
    Plan p;
    assert_int_equal(plan_create(&g, 1, &p), 0);
    check_plan(&g, &p, 1);
    size_t t = 4 * 16 * 16 * 4;
    assert_int_equal(p.unplanned_bytes, 21 * t);
    assert_int_equal(p.arena_bytes, 2 * t);
    plan_free(&p);
    graph_free(&g);
}

static void test_plan_nomem(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 1), 0);
    assert_int_equal(graph_infer_shapes(&g, &(Shape){4, {1, 1, 8, 8}}), 0);
    Plan p;
    sl_error_quiet(1);
    for (int k = 0; k < 8; k++) {
        sl_error_reset();
        sl_alloc_fail_after(k);
        int rc = plan_create(&g, 1, &p);
        sl_alloc_fail_after(-1);
        assert_int_equal(rc, ERR_NOMEM);
        assert_null(p.offset);
    }
    sl_error_reset();
    sl_error_quiet(0);
    graph_free(&g);
}

/* ------------------------------------------- reference run, node by node */

/* Runs g with the naive kernels, a fresh buffer per value; returns the
 * graph outputs (caller frees each). */
static void ref_run(const Graph *g, const float *input, float **outs)
{
    int nv = g->n_values;
    float **buf = calloc((size_t)nv, sizeof *buf);
    assert_non_null(buf);
    size_t nin = (size_t)shape_numel(&g->values[g->input].shape);
    buf[g->input] = malloc(nin * 4);
    memcpy(buf[g->input], input, nin * 4);
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        const Shape *ys = &g->values[n->out].shape;
        const Shape *xs = &g->values[n->in[0]].shape;
        int64_t ny = shape_numel(ys);
        float *y = malloc((size_t)ny * 4);
        assert_non_null(y);
        const float *in[SL_MAX_INPUTS];
        const Shape *ins[SL_MAX_INPUTS];
        for (int k = 0; k < n->n_in; k++) {
            const Value *v = &g->values[n->in[k]];
            in[k] = v->data ? v->data : buf[n->in[k]];
            ins[k] = &v->shape;
            assert_non_null(in[k]);
        }
        const float *bias = n->n_in > 2 ? in[2] : NULL;
        switch (n->op) {
        case OP_CONV:
            conv_forward_ref(y, in[0], in[1], bias, xs, ys, &n->p.conv);
            break;
        case OP_CONV_TRANSPOSE:
            conv_transpose_forward_ref(y, in[0], in[1], bias, xs, ys,
                                       &n->p.conv);
            break;
        case OP_INSTANCE_NORM:
            instance_norm_forward_ref(y, in[0], in[1], in[2], xs, &n->p.norm);
            break;
        case OP_BATCH_NORM:
            batch_norm_forward_ref(y, in[0], in[1], in[2], in[3], in[4], xs,
                                   &n->p.norm);
            break;
        case OP_RELU:
            relu_forward(y, in[0], ny);
            break;
        case OP_LEAKY_RELU:
            leaky_relu_forward(y, in[0], ny, &n->p.act);
            break;
        case OP_SIGMOID:
            sigmoid_forward(y, in[0], ny);
            break;
        case OP_SOFTMAX:
            softmax_forward_ref(y, in[0], xs, &n->p.softmax);
            break;
        case OP_CONCAT:
            concat_forward(y, in, ins, n->n_in, &n->p.concat);
            break;
        case OP_ADD:
            add_forward(y, in[0], in[1], ins[0], ins[1]);
            break;
        case OP_MAX_POOL:
            max_pool_forward_ref(y, in[0], xs, ys, &n->p.pool);
            break;
        case OP_AVG_POOL:
            avg_pool_forward_ref(y, in[0], xs, ys, &n->p.pool);
            break;
        case OP_RESIZE:
            resize_forward_ref(y, in[0], xs, ys, &n->p.resize);
            break;
        case OP_IDENTITY:
            memcpy(y, in[0], (size_t)ny * 4);
            break;
        default:
            fail();
        }
        buf[n->out] = y;
    }
    for (int k = 0; k < g->n_outputs; k++) {
        size_t no = (size_t)shape_numel(&g->values[g->outputs[k]].shape);
        outs[k] = malloc(no * 4);
        memcpy(outs[k], buf[g->outputs[k]], no * 4);
    }
    for (int v = 0; v < nv; v++)
        free(buf[v]);
    free(buf);
}

static float *random_input(Shape s, uint64_t seed)
{
    size_t n = (size_t)shape_numel(&s);
    float *x = malloc(n * 4);
    TestRng r = {seed};
    trng_fill(&r, x, n, -2.0f, 2.0f);
    return x;
}

/* Executor output vs the reference, and 1 vs 2 threads bit-identical. */
static void check_exec(Graph *g, Shape in)
{
    float *x = random_input(in, 42);
    Executor *e1 = NULL, *e2 = NULL;
    assert_int_equal(exec_create(g, &in, 1, &e1), 0);
    assert_int_equal(exec_create(g, &in, 2, &e2), 0);
    assert_true(exec_arena_bytes(e1) > 0);
    assert_true(exec_unplanned_bytes(e1) > 0);
    const float *o1[SL_MAX_OUTPUTS], *o2[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(e1, x, o1), 0);
    assert_int_equal(exec_run(e2, x, o2), 0);
    float *ref[SL_MAX_OUTPUTS];
    ref_run(g, x, ref);
    for (int k = 0; k < g->n_outputs; k++) {
        const Shape *os = exec_output_shape(e1, k);
        assert_non_null(os);
        assert_true(shape_equal(os, &g->values[g->outputs[k]].shape));
        size_t n = (size_t)shape_numel(os);
        assert_allclose(o1[k], ref[k], n, ATOL, RTOL);
        assert_memory_equal(o1[k], o2[k], n * 4);
        free(ref[k]);
    }
    assert_null(exec_output_shape(e1, g->n_outputs));
    /* Running again on other data and back: the arena is reused without
     * stale state leaking between runs. */
    float *x2 = random_input(in, 43);
    size_t n0 = (size_t)shape_numel(exec_output_shape(e1, 0));
    float *first = malloc(n0 * 4);
    memcpy(first, o1[0], n0 * 4);
    assert_int_equal(exec_run(e1, x2, o1), 0);
    assert_memory_not_equal(first, o1[0], n0 * 4);
    assert_int_equal(exec_run(e1, x, o1), 0);
    assert_memory_equal(first, o1[0], n0 * 4);
    free(first);
    free(x2);
    exec_free(e1);
    exec_free(e2);
    free(x);
}

static void test_exec_unet2d(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 1, 2), 0);
    check_exec(&g, mk(4, 2, 1, 20, 28, 0));
    graph_free(&g);
}

static void test_exec_unet3d(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 3, 2, 4, 3, 0, 2), 0);
    check_exec(&g, mk(5, 1, 2, 6, 10, 8));
    graph_free(&g);
}

static void test_exec_all_ops(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_all_ops(&g, 2), 0);
    check_exec(&g, mk(4, 2, 2, 12, 18, 0));
    graph_free(&g);
}

/* A bigger 2D case so the kernels' parallel paths really split work. */
static void test_exec_threads_large(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 16, 4, 0, 4), 0);
    Shape in = mk(4, 1, 1, 96, 96, 0);
    float *x = random_input(in, 5);
    Executor *e1 = NULL, *e2 = NULL;
    assert_int_equal(exec_create(&g, &in, 1, &e1), 0);
    /* Created while the caller runs one OpenMP thread, run with two: the
     * scratch (per-thread GEMM panels) must be sized for two (ASan
     * catches an overflow here otherwise). */
    int outer = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(exec_create(&g, &in, 2, &e2), 0);
    const float *o1[SL_MAX_OUTPUTS], *o2[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(e1, x, o1), 0);
    assert_int_equal(exec_run(e2, x, o2), 0);
    /* and the caller's setting is restored after a run */
    assert_int_equal(omp_get_max_threads(), 1);
    omp_set_num_threads(outer);
    assert_memory_equal(o1[0], o2[0], (size_t)shape_numel(&in) * 4 * 4);
    assert_true(exec_arena_bytes(e1) < exec_unplanned_bytes(e1));
    exec_free(e1);
    exec_free(e2);
    free(x);
    graph_free(&g);
}

/* Two executors with different input sizes on one graph, run in turn:
 * each must compute for its own size (the graph's shapes are shared). */
static void test_two_executors(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 2, 0, 8), 0);
    Shape sa = mk(4, 1, 1, 16, 16, 0), sb = mk(4, 1, 1, 24, 32, 0);
    float *xa = random_input(sa, 1), *xb = random_input(sb, 2);
    Executor *ea = NULL, *eb = NULL;
    assert_int_equal(exec_create(&g, &sa, 1, &ea), 0);
    assert_int_equal(exec_create(&g, &sb, 1, &eb), 0);
    const float *oa[SL_MAX_OUTPUTS], *ob[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(ea, xa, oa), 0);
    float *ref[SL_MAX_OUTPUTS];
    assert_int_equal(graph_infer_shapes(&g, &sa), 0);
    ref_run(&g, xa, ref);
    assert_allclose(oa[0], ref[0], (size_t)shape_numel(&sa) * 2, ATOL, RTOL);
    free(ref[0]);
    assert_int_equal(exec_run(eb, xb, ob), 0);
    assert_int_equal(graph_infer_shapes(&g, &sb), 0);
    ref_run(&g, xb, ref);
    assert_allclose(ob[0], ref[0], (size_t)shape_numel(&sb) * 2, ATOL, RTOL);
    free(ref[0]);
    exec_free(ea);
    exec_free(eb);
    free(xa);
    free(xb);
    graph_free(&g);
}

static void test_exec_errors(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 2), 0);
    Executor *e = (Executor *)&g; /* must be overwritten with NULL */
    sl_error_quiet(1);
    sl_error_reset();
    Shape odd = mk(4, 1, 1, 17, 16, 0);
    assert_int_equal(exec_create(&g, &odd, 1, &e), ERR_SHAPE);
    assert_null(e);
    assert_true(sl_error_reported());
    sl_error_reset();
    /* every allocation failing in turn: ERR_NOMEM, nothing leaked */
    Shape in = mk(4, 1, 1, 16, 16, 0);
    int k;
    for (k = 0; k < 1000; k++) {
        sl_error_reset();
        sl_alloc_fail_after(k);
        int rc = exec_create(&g, &in, 1, &e);
        sl_alloc_fail_after(-1);
        if (rc == 0) break;
        assert_int_equal(rc, ERR_NOMEM);
        assert_null(e);
    }
    assert_true(k > 3 && k < 1000);
    exec_free(e);
    /* an invalid graph is refused before anything runs */
    g.nodes[0].p.conv.stride[0] = 0;
    sl_error_reset();
    assert_int_equal(exec_create(&g, &in, 1, &e), ERR_FORMAT);
    assert_null(e);
    sl_error_reset();
    sl_error_quiet(0);
    exec_free(NULL);
    graph_free(&g);
}

/* ------------------------------------------------- Concat in place */

/* Runs g with the executor's own kernels (op-table forwards), a fresh
 * buffer per value, one thread: what the executor computes without any
 * planning.  Caller frees each output. */
static void table_run(const Graph *g, const float *input, float **outs)
{
    int nv = g->n_values, saved = omp_get_max_threads();
    omp_set_num_threads(1);
    float **buf = calloc((size_t)nv, sizeof *buf);
    assert_non_null(buf);
    size_t nin = (size_t)shape_numel(&g->values[g->input].shape);
    buf[g->input] = malloc(nin * 4);
    memcpy(buf[g->input], input, nin * 4);
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        const float *in[SL_MAX_INPUTS];
        for (int k = 0; k < n->n_in; k++) {
            const Value *v = &g->values[n->in[k]];
            in[k] = v->data ? v->data : buf[n->in[k]];
            assert_non_null(in[k]);
        }
        size_t ny = (size_t)shape_numel(&g->values[n->out].shape);
        size_t ns =
            op_table[n->op].scratch ? op_table[n->op].scratch(g, n) : 0;
        float *y = malloc(ny * 4), *sc = malloc(ns * 4 + 64);
        assert_non_null(y);
        assert_non_null(sc);
        op_table[n->op].forward(g, n, y, in, sc);
        free(sc);
        buf[n->out] = y;
    }
    for (int k = 0; k < g->n_outputs; k++) {
        size_t no = (size_t)shape_numel(&g->values[g->outputs[k]].shape);
        outs[k] = malloc(no * 4);
        memcpy(outs[k], buf[g->outputs[k]], no * 4);
    }
    for (int v = 0; v < nv; v++)
        free(buf[v]);
    free(buf);
    omp_set_num_threads(saved);
}

/* Two-level U-Net with the odd channel counts Sauron leaves:
 *   e0 = block(in_c -> 3), e1 = block(3 -> 7, stride 2),
 *   m = block(7 -> 13, stride 2), u1 = convT(13 -> 5, k2 s2),
 *   c1 = concat(u1, e1), d1 = block(12 -> 11), u0 = convT(11 -> 5),
 *   c0 = concat(u0, e0), r = LeakyRelu(c0) (in place over c0),
 *   d0 = block(8 -> 3), out 0 = softmax(conv1x1(d0 -> classes)).
 * up_first 0 puts the skip first in both Concats (nnU-Net's order is
 * torch.cat((up, skip))).  reread: e0 also feeds a second output
 * (sigmoid of a 1x1 conv) computed after c0, so c0 must copy it. */
static int build_unet_odd(Graph *g, int nsp, int in_c, int classes,
                          int up_first, int reread, uint64_t seed)
{
    GBuild b = {g, {seed}, 0, 0};
    graph_init(g);
    int x = gb_input(&b, nsp, in_c);
    int e0 = gb_block(&b, x, in_c, 3, nsp, 1);
    int e1 = gb_block(&b, e0, 3, 7, nsp, 2);
    int m = gb_block(&b, e1, 7, 13, nsp, 2);
    int u1 = gb_conv_t(&b, m, 13, 5, nsp, 2, 2, 0);
    int c1 = up_first ? gb_concat(&b, u1, e1) : gb_concat(&b, e1, u1);
    int d1 = gb_block(&b, c1, 12, 11, nsp, 1);
    int u0 = gb_conv_t(&b, d1, 11, 5, nsp, 2, 2, 0);
    int c0 = up_first ? gb_concat(&b, u0, e0) : gb_concat(&b, e0, u0);
    int r = gb_unary(&b, OP_LEAKY_RELU, c0, 0.01f);
    int d0 = gb_block(&b, r, 8, 3, nsp, 1);
    g->outputs[0] =
        gb_softmax(&b, gb_conv(&b, d0, 3, classes, nsp, 1, 1, 0, 1));
    g->n_outputs = 1;
    if (reread) {
        int h = gb_conv(&b, e0, 3, classes, nsp, 1, 1, 0, 0);
        g->outputs[g->n_outputs++] = gb_unary(&b, OP_SIGMOID, h, 0);
    }
    gb_meta(g, classes, in_c, nsp);
    return b.fail ? -1 : 0;
}

/* Nested Concats and a Concat input that is also a graph output:
 *   a, b2, d = block(x) each (5, 3, 7 channels), c1 = concat(a, b2),
 *   c2 = concat(c1, d), out 0 = conv1x1(c2 -> 2), out 1 = b2. */
static int build_concat_nest(Graph *g, uint64_t seed)
{
    GBuild b = {g, {seed}, 0, 0};
    graph_init(g);
    int x = gb_input(&b, 2, 2);
    int a = gb_block(&b, x, 2, 5, 2, 1);
    int b2 = gb_block(&b, x, 2, 3, 2, 1);
    int c1 = gb_concat(&b, a, b2);
    int d = gb_block(&b, x, 2, 7, 2, 1);
    int c2 = gb_concat(&b, c1, d);
    g->outputs[0] = gb_conv(&b, c2, 15, 2, 2, 1, 1, 0, 1);
    g->outputs[1] = b2;
    g->n_outputs = 2;
    gb_meta(g, 2, 2, 2);
    return b.fail ? -1 : 0;
}

/* The executor with Concats in place against the same kernels with a
 * buffer per value: bit-identical (each kernel does the same arithmetic
 * wherever its output lives), also with 2 threads; the plan is valid and
 * its peak no larger than without aliasing.  Direct convolution only
 * (Winograd rounds differently from the op-table forward).  Returns the
 * number of Concats left with nothing to copy; *saved: peak bytes the
 * aliasing saved; *aliased: Concat inputs written in place. */
static int check_alias(Graph *g, Shape in, size_t *saved, int *aliased)
{
    char *algo =
        getenv("SL_CONV_ALGO") ? strdup(getenv("SL_CONV_ALGO")) : NULL;
    setenv("SL_CONV_ALGO", "direct", 1);
    float *x = random_input(in, 7);
    Executor *e1 = NULL, *e2 = NULL;
    assert_int_equal(exec_create(g, &in, 1, &e1), 0);
    assert_int_equal(exec_create(g, &in, 2, &e2), 0);
    const float *o1[SL_MAX_OUTPUTS], *o2[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(e1, x, o1), 0);
    assert_int_equal(exec_run(e2, x, o2), 0);
    float *ref[SL_MAX_OUTPUTS];
    table_run(g, x, ref);
    for (int k = 0; k < g->n_outputs; k++) {
        size_t n = (size_t)shape_numel(exec_output_shape(e1, k));
        assert_memory_equal(o1[k], ref[k], n * 4);
        assert_memory_equal(o2[k], ref[k], n * 4);
        free(ref[k]);
    }
    int skipped = 0;
    for (int i = 0; i < g->n_nodes; i++)
        skipped += !strcmp(exec_node_label(e1, i), "Concat/in-place");
    Plan p0, p1;
    assert_int_equal(plan_create(g, PLAN_INPLACE_ALL, &p0), 0);
    assert_int_equal(
        plan_create(g, PLAN_INPLACE_ALL | PLAN_ALIAS_CONCAT, &p1), 0);
    check_plan(g, &p1, 1);
    assert_int_equal(p0.n_aliased, 0);
    assert_true(p1.arena_bytes <= p0.arena_bytes);
    assert_int_equal(exec_arena_bytes(e1) - p1.arena_bytes,
                     exec_arena_bytes(e2) - p1.arena_bytes);
    *saved = p0.arena_bytes - p1.arena_bytes;
    *aliased = p1.n_aliased;
    /* no aliasing unless every input is one block of the output */
    if (in.d[0] > 1) assert_int_equal(p1.n_aliased, 0);
    plan_free(&p0);
    plan_free(&p1);
    exec_free(e1);
    exec_free(e2);
    free(x);
    if (algo) {
        setenv("SL_CONV_ALGO", algo, 1);
        free(algo);
    } else {
        unsetenv("SL_CONV_ALGO");
    }
    return skipped;
}

static void test_concat_in_place(void **state)
{
    (void)state;
    Graph g;
    size_t saved;
    int na;
    /* the tiny U-Net: its Concat copy needed a buffer of its own */
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 31), 0);
    assert_int_equal(check_alias(&g, mk(4, 1, 1, 32, 24, 0), &saved, &na), 1);
    assert_int_equal(na, 2);
    assert_true(saved > 0);
    assert_int_equal(check_alias(&g, mk(4, 2, 1, 32, 24, 0), &saved, &na), 0);
    assert_int_equal(saved, 0);
    graph_free(&g);
    /* odd channel counts, 2D and 3D, either Concat order, batch 1 and 3 */
    for (int up_first = 0; up_first < 2; up_first++) {
        for (int nsp = 2; nsp <= 3; nsp++) {
            Shape one =
                nsp == 2 ? mk(4, 1, 2, 20, 36, 0) : mk(5, 1, 2, 8, 12, 4);
            Shape three = one;
            three.d[0] = 3;
            assert_int_equal(build_unet_odd(&g, nsp, 2, 3, up_first, 0, 40),
                             0);
            assert_int_equal(check_alias(&g, one, &saved, &na), 2);
            assert_int_equal(na, 4);
            assert_true(saved > 0);
            assert_int_equal(check_alias(&g, three, &saved, &na), 0);
            graph_free(&g);
            /* e0 is read after c0: c0 copies it and takes u0 in place */
            assert_int_equal(build_unet_odd(&g, nsp, 2, 3, up_first, 1, 41),
                             0);
            assert_int_equal(check_alias(&g, one, &saved, &na), 1);
            assert_int_equal(na, 3);
            assert_true(saved > 0);
            assert_int_equal(check_alias(&g, three, &saved, &na), 0);
            graph_free(&g);
        }
    }
    /* c1 copies b2 (a graph output) and takes a; c2 takes c1 (with a
     * inside it) and d: nothing left to copy */
    assert_int_equal(build_concat_nest(&g, 50), 0);
    assert_int_equal(check_alias(&g, mk(4, 1, 2, 10, 14, 0), &saved, &na), 1);
    assert_int_equal(na, 3);
    graph_free(&g);
}

/* sauron-run (the binary) computes what the library computes, and fails
 * with one clear line on bad input. */
static void test_sauron_run(void **state)
{
    (void)state;
    char bin[256], model[512], xin[512], yout[512], onnx[512], cmd[2400];
    char err[512];
    const char *dir = test_tmpdir();
    bin_path("sauron-run", bin, sizeof bin);
    snprintf(model, sizeof model, "%s/run.sslim", dir);
    snprintf(xin, sizeof xin, "%s/run_x.bin", dir);
    snprintf(yout, sizeof yout, "%s/run_y.bin", dir);
    snprintf(onnx, sizeof onnx, "%s/run.onnx", dir);
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 21), 0);
    assert_int_equal(sslim_write(&g, model, 1), 0);
    Shape in = mk(4, 1, 1, 16, 24, 0);
    float *x = random_input(in, 9);
    size_t nx = (size_t)shape_numel(&in);
    uint8_t *raw = malloc(nx * 4);
    for (size_t i = 0; i < nx; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        sl_wr32(raw + 4 * i, u);
    }
    assert_int_equal(sl_write_file_atomic(xin, raw, nx * 4, 1), 0);
    assert_int_equal(sl_write_file_atomic(onnx, raw, 16, 1), 0);
    free(raw);
    unlink(yout);

    snprintf(cmd, sizeof cmd, "%s --help >/dev/null", bin);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    snprintf(cmd, sizeof cmd,
             "%s %s --input %s --shape 1,1,16,24 --output %s --repeat 3 "
             "--threads 2 >/dev/null",
             bin, model, xin, yout);
    int st = run_cmd(cmd, err, sizeof err);
    if (st) fprintf(stderr, "sauron-run: %s\n", err);
    assert_int_equal(st, 0);
    Executor *e = NULL;
    assert_int_equal(exec_create(&g, &in, 1, &e), 0);
    const float *o[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(e, x, o), 0);
    uint8_t *y = NULL;
    size_t ny = 0;
    assert_int_equal(sl_read_file(yout, &y, &ny), 0);
    assert_int_equal(ny, nx * 3 * 4);
    for (size_t i = 0; i < nx * 3; i++) {
        uint32_t u;
        memcpy(&u, &o[0][i], 4);
        assert_int_equal(sl_rd32(y + 4 * i), u); /* bit-identical */
    }
    sl_free(y);
    exec_free(e);

    /* --profile names each Conv's algorithm: forced Winograd, the two
     * stride-1 3x3 blocks say so, the strided one and the 1x1 head run
     * direct; a bad SL_CONV_ALGO is one line and a failure. */
    char prof[600];
    snprintf(prof, sizeof prof, "%s/run_prof.txt", dir);
    snprintf(cmd, sizeof cmd,
             "SL_CONV_ALGO=winograd %s %s --input %s --shape 1,1,16,24 "
             "--threads 2 --profile >%s",
             bin, model, xin, prof);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    char *pt = slurp_text(prof);
    assert_non_null(pt);
    int nwino = 0, ndirect = 0;
    for (const char *l = pt; (l = strstr(l, "\n  conv ")); l++) {
        const char *eol = strchr(l + 1, '\n');
        size_t len = eol ? (size_t)(eol - l) : strlen(l);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)(len < 255 ? len : 255), l);
        nwino += strstr(line, " winograd ") != NULL;
        ndirect += strstr(line, " direct ") != NULL;
    }
    free(pt);
    assert_int_equal(nwino, 2);
    assert_int_equal(ndirect, 2);
    snprintf(cmd, sizeof cmd,
             "SL_CONV_ALGO=sometimes %s %s --input %s --shape 1,1,16,24 "
             ">/dev/null",
             bin, model, xin);
    assert_int_not_equal(run_cmd(cmd, err, sizeof err), 0);
    assert_non_null(strstr(err, "SL_CONV_ALGO=sometimes"));

    /* each failure: exit 1 or 2, one line on stderr naming the problem */
    struct {
        const char *args, *needle;
    } bad[] = {
        {"%s %s --input %s --shape 1,1,16,24 --output %s", "--force"},
        {"%s %s --input %s --shape 1,1,16,16", "bytes"},
        {"%s %s --input %s --shape 1,1,16,x", "--shape"},
        {"%s %s --input %s", "--shape"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, bad[i].args, bin, model, xin, yout);
        st = run_cmd(cmd, err, sizeof err);
        if (st == 0 || !strstr(err, bad[i].needle))
            fprintf(stderr, "case %zu: exit %d, '%s'\n", i, st, err);
        assert_true(st == 1 || st == 2);
        assert_non_null(strstr(err, "error: "));
        assert_non_null(strstr(err, bad[i].needle));
    }
    snprintf(cmd, sizeof cmd, "%s %s --input %s --shape 1,1,16,24", bin, onnx,
             xin);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 1);
    assert_non_null(strstr(err, "sauron-compress --no-finetune"));
    /* a size the network cannot take: the nearest one it can */
    snprintf(cmd, sizeof cmd, "%s %s --input %s --shape 1,1,1,%d", bin, model,
             xin, 16 * 24);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 1);
    assert_non_null(strstr(err, "nearest size it accepts is [1,1,2,384]"));
    free(x);
    graph_free(&g);
}

/* exec_reexec_passive_wait, seen from a re-executed copy of this binary
 * (main's --report-wait-env): the variables it ends up with under the
 * environment `env` sets up. */
static void wait_env_of(const char *env, char *out, size_t cap)
{
    char self[512], cmd[800];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    snprintf(cmd, sizeof cmd, "env %s '%s' --report-wait-env", env, self);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    out[0] = '\0';
    if (!fgets(out, (int)cap, p)) out[0] = '\0';
    assert_int_equal(pclose(p), 0);
    out[strcspn(out, "\n")] = '\0';
}

static void test_wait_policy(void **state)
{
    (void)state;
    char got[128];
    /* nothing set: passive after a short spin */
    wait_env_of("-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT", got, sizeof got);
    assert_string_equal(got, "passive " EXEC_SPIN_COUNT);
    /* the user's spin count is kept */
    wait_env_of("-u OMP_WAIT_POLICY GOMP_SPINCOUNT=7", got, sizeof got);
    assert_string_equal(got, "passive 7");
    /* the user's policy is kept, and nothing is added to it */
    wait_env_of("-u GOMP_SPINCOUNT OMP_WAIT_POLICY=active", got, sizeof got);
    assert_string_equal(got, "active -");
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--report-wait-env")) {
        exec_reexec_passive_wait(argv);
        const char *w = getenv("OMP_WAIT_POLICY"),
                   *c = getenv("GOMP_SPINCOUNT");
        printf("%s %s\n", w ? w : "-", c ? c : "-");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_unets),
        cmocka_unit_test(test_plan_chain),
        cmocka_unit_test(test_plan_nomem),
        cmocka_unit_test(test_exec_unet2d),
        cmocka_unit_test(test_exec_unet3d),
        cmocka_unit_test(test_exec_all_ops),
        cmocka_unit_test(test_exec_threads_large),
        cmocka_unit_test(test_two_executors),
        cmocka_unit_test(test_concat_in_place),
        cmocka_unit_test(test_exec_errors),
        cmocka_unit_test(test_sauron_run),
        cmocka_unit_test(test_wait_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
