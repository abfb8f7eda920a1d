/* Small networks and helpers for test_surgery: a U-Net with independent
 * channel counts (both Concat orders, InstanceNorm or BatchNorm, optional
 * deep-supervision head), a residual network with Add ties, running a
 * graph, zeroing a consumer's input channel, comparing outputs.
 * Header-only (static inline), as tests/graphbuild.h. */
#ifndef SL_TEST_PRUNE_NETS_H
#define SL_TEST_PRUNE_NETS_H

#include <string.h>

#include "compressor/sauron/groups.h"
#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "tests/graphbuild.h"
#include "tests/testutil.h"

/* A small U-Net with independent channel counts:
 *   enc = block(in_c -> c_enc), down = block(c_enc -> c_down, stride 2),
 *   up = convT(c_down -> c_up, k2 s2), cat = concat(enc, up) or
 *   concat(up, enc), dec = block(c_enc + c_up -> c_dec),
 *   out0 = softmax(conv1x1(dec -> classes)),
 *   deep: out1 = sigmoid(conv1x1(down -> classes)).
 * Points in node order: 0 enc, 1 down, 2 up, 3 dec, 4 head, 5 deep head. */
typedef struct {
    int nsp, in_c, c_enc, c_down, c_up, c_dec, classes;
    int up_first, bn, deep;
} NetSpec;

static inline int net_block(GBuild *b, const NetSpec *s, int x, int ic,
                            int oc, int stride)
{
    if (!s->bn) return gb_block(b, x, ic, oc, s->nsp, stride);
    int y = gb_conv(b, x, ic, oc, s->nsp, 3, stride, 1, 1);
    y = gb_bnorm(b, y, oc);
    return gb_unary(b, OP_RELU, y, 0);
}

static inline void build_net(Graph *g, const NetSpec *s, uint64_t seed)
{
    GBuild b = {g, {seed}, 0, 0};
    graph_init(g);
    int x = gb_input(&b, s->nsp, s->in_c);
    int enc = net_block(&b, s, x, s->in_c, s->c_enc, 1);
    int down = net_block(&b, s, enc, s->c_enc, s->c_down, 2);
    int up = gb_conv_t(&b, down, s->c_down, s->c_up, s->nsp, 2, 2, 0);
    int cat = s->up_first ? gb_concat(&b, up, enc) : gb_concat(&b, enc, up);
    int dec = net_block(&b, s, cat, s->c_enc + s->c_up, s->c_dec, 1);
    int logits = gb_conv(&b, dec, s->c_dec, s->classes, s->nsp, 1, 1, 0, 1);
    g->outputs[0] = gb_softmax(&b, logits);
    g->n_outputs = 1;
    if (s->deep) {
        int h = gb_conv(&b, down, s->c_down, s->classes, s->nsp, 1, 1, 0, 0);
        g->outputs[g->n_outputs++] = gb_unary(&b, OP_SIGMOID, h, 0);
    }
    gb_meta(g, s->classes, s->in_c, s->nsp);
    assert_false(b.fail);
}

/* Residual graph, input [N, 2, H, W]:
 *   A = block(2 -> 4); B = IN(conv(A)); r = lrelu(B + A);
 *   C = block(r -> 4); D = IN(conv(C)); r2 = lrelu(D + r);
 *   out = softmax(conv1x1(r2 -> 3)).
 * Points: 0 A, 1 B, 2 C, 3 D, 4 head; A, B, D are tied by the Adds. */
static inline void build_residual(Graph *g, uint64_t seed)
{
    GBuild b = {g, {seed}, 0, 0};
    graph_init(g);
    int x = gb_input(&b, 2, 2);
    int a = gb_block(&b, x, 2, 4, 2, 1);
    int bb = gb_inorm(&b, gb_conv(&b, a, 4, 4, 2, 3, 1, 1, 1), 4);
    int in[2] = {bb, a};
    int r =
        gb_unary(&b, OP_LEAKY_RELU, gb_node(&b, OP_ADD, in, 2, NULL), 0.01f);
    int c = gb_block(&b, r, 4, 4, 2, 1);
    int d = gb_inorm(&b, gb_conv(&b, c, 4, 4, 2, 3, 1, 1, 1), 4);
    in[0] = d;
    in[1] = r;
    int r2 =
        gb_unary(&b, OP_LEAKY_RELU, gb_node(&b, OP_ADD, in, 2, NULL), 0.01f);
    g->outputs[0] = gb_softmax(&b, gb_conv(&b, r2, 4, 3, 2, 1, 1, 0, 1));
    g->n_outputs = 1;
    gb_meta(g, 3, 2, 2);
    assert_false(b.fail);
}

static inline Shape in_shape(int nsp, int c)
{
    Shape s = {2 + nsp, {1, c, 8, 8, 8}};
    if (nsp == 3) s.d[2] = s.d[3] = s.d[4] = 4;
    return s;
}

/* Run g on x; copy output k into a new sl_alloc'd array. */
static inline float *run_out(Graph *g, const Shape *in, const float *x, int k,
                             size_t *n)
{
    Executor *e = NULL;
    const float *outs[SL_MAX_OUTPUTS];
    assert_int_equal(exec_create(g, in, 1, &e), 0);
    assert_int_equal(exec_run(e, x, outs), 0);
    *n = (size_t)shape_numel(exec_output_shape(e, k));
    float *y = sl_alloc(*n * sizeof(float));
    assert_non_null(y);
    memcpy(y, outs[k], *n * sizeof(float));
    exec_free(e);
    return y;
}

static inline float *make_input(const Shape *s, uint64_t seed)
{
    TestRng r = {seed};
    size_t n = (size_t)shape_numel(s);
    float *x = sl_alloc(n * sizeof(float));
    assert_non_null(x);
    trng_fill(&r, x, n, -1.0f, 1.0f);
    return x;
}

/* Zero input channel ch of a Conv (W[:, ch]) or ConvTranspose (W[ch]). */
static inline void zero_in_channel(Graph *g, int node, int ch)
{
    const Node *n = &g->nodes[node];
    Value *w = &g->values[n->in[1]];
    int64_t inner = 1;
    for (int i = 2; i < w->shape.ndim; i++)
        inner *= w->shape.d[i];
    if (n->op == OP_CONV) {
        for (int64_t o = 0; o < w->shape.d[0]; o++)
            memset(w->data + (o * w->shape.d[1] + ch) * inner, 0,
                   (size_t)inner * sizeof(float));
    } else {
        assert_int_equal(n->op, OP_CONV_TRANSPOSE);
        memset(w->data + ch * w->shape.d[1] * inner, 0,
               (size_t)(w->shape.d[1] * inner) * sizeof(float));
    }
}

/* Max |a - b| over all outputs of two graphs on the same input. */
static inline double compare_outputs(Graph *a, Graph *b, const Shape *in,
                                     const float *x, double atol)
{
    double worst = 0;
    for (int k = 0; k < a->n_outputs; k++) {
        size_t na, nb;
        float *ya = run_out(a, in, x, k, &na);
        float *yb = run_out(b, in, x, k, &nb);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) {
            double d = ya[i] > yb[i] ? ya[i] - yb[i] : yb[i] - ya[i];
            if (d > worst) worst = d;
        }
        if (atol >= 0) assert_true(allclose(ya, yb, na, atol, 0, "output"));
        sl_free(ya);
        sl_free(yb);
    }
    return worst;
}

static inline int has_use(const PrunePoint *pt, PruneUseKind kind, int node,
                          int offset)
{
    for (int k = 0; k < pt->n_uses; k++)
        if (pt->uses[k].kind == kind && pt->uses[k].node == node &&
            pt->uses[k].offset == offset)
            return 1;
    return 0;
}

static inline int weight_dim(const Graph *g, int node, int input, int axis)
{
    return (int)g->values[g->nodes[node].in[input]].shape.d[axis];
}

static inline int graphs_same_weights(const Graph *a, const Graph *b)
{
    for (int v = 0; v < a->n_values; v++) {
        const Value *x = &a->values[v], *y = &b->values[v];
        if (!x->data) continue;
        if (!shape_equal(&x->shape, &y->shape) ||
            memcmp(x->data, y->data,
                   (size_t)shape_numel(&x->shape) * sizeof(float)))
            return 0;
    }
    return 1;
}

#endif
