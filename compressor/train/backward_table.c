/* Backward wrappers per op: unpack the node, call the grad.h kernel.
 *
 * Shapes come from the graph (g->values[...].shape), which the training
 * executor has inferred for its input shape.  Every wrapper accumulates
 * into din[k] and skips NULL ones.
 */
#include "compressor/train/backward.h"

#include <string.h>

#include "compressor/grad/grad.h"
#include "runtime/common.h"
#include "runtime/ops/ops.h"

static const Shape *in_shape(const Graph *g, const Node *n, int k)
{
    return &g->values[n->in[k]].shape;
}

static const Shape *out_shape(const Graph *g, const Node *n)
{
    return &g->values[n->out].shape;
}

/* ---- Conv / ConvTranspose: dx, dW, dB from dy, x, W ---- */

static size_t conv_bwd_scratch(const Graph *g, const Node *n)
{
    return conv_backward_scratch_floats(in_shape(g, n, 0), out_shape(g, n),
                                        &n->p.conv);
}

static void conv_bwd(const Graph *g, const Node *n, float *const *din,
                     const float *dout, const float *out,
                     const float *const *in, const float *saved,
                     float *scratch)
{
    (void)out;
    (void)saved;
    conv_backward(din[0], din[1], n->n_in > 2 ? din[2] : NULL, dout, in[0],
                  in[1], in_shape(g, n, 0), out_shape(g, n), &n->p.conv,
                  scratch);
}

static size_t convt_bwd_scratch(const Graph *g, const Node *n)
{
    return conv_transpose_backward_scratch_floats(
        in_shape(g, n, 0), out_shape(g, n), &n->p.conv);
}

static void convt_bwd(const Graph *g, const Node *n, float *const *din,
                      const float *dout, const float *out,
                      const float *const *in, const float *saved,
                      float *scratch)
{
    (void)out;
    (void)saved;
    conv_transpose_backward(din[0], din[1], n->n_in > 2 ? din[2] : NULL, dout,
                            in[0], in[1], in_shape(g, n, 0), out_shape(g, n),
                            &n->p.conv, scratch);
}

/* ---- normalisation ---- */

static void inorm_bwd(const Graph *g, const Node *n, float *const *din,
                      const float *dout, const float *out,
                      const float *const *in, const float *saved,
                      float *scratch)
{
    (void)out;
    (void)saved;
    (void)scratch;
    instance_norm_backward(din[0], din[1], din[2], dout, in[0], in[1],
                           in_shape(g, n, 0), &n->p.norm);
}

/* Training-mode parameters: batch statistics, PyTorch momentum. */
static NormParams bn_train_params(const Node *n)
{
    NormParams q = n->p.norm;
    q.use_batch_stats = 1;
    q.momentum = 1.0f - n->p.norm.momentum;
    return q;
}

/* saved: mean [C] then rstd [C] of the batch statistics y used. */
static size_t bn_saved(const Graph *g, const Node *n)
{
    return 2 * (size_t)in_shape(g, n, 0)->d[1];
}

static void bn_train_fwd(const Graph *g, const Node *n, float *out,
                         float *const *in, float *saved, float *scratch)
{
    (void)scratch;
    const Shape *xs = in_shape(g, n, 0);
    NormParams q = bn_train_params(n);
    batch_norm_forward_train(out, saved, saved + xs->d[1], in[3], in[4],
                             in[0], in[1], in[2], xs, &q);
}

static void bn_bwd(const Graph *g, const Node *n, float *const *din,
                   const float *dout, const float *out,
                   const float *const *in, const float *saved, float *scratch)
{
    (void)out;
    (void)scratch;
    const Shape *xs = in_shape(g, n, 0);
    NormParams q = bn_train_params(n);
    batch_norm_backward(din[0], din[1], din[2], dout, in[0], in[1], saved,
                        saved + xs->d[1], xs, &q);
}

/* ---- activations ---- */

static void relu_bwd(const Graph *g, const Node *n, float *const *din,
                     const float *dout, const float *out,
                     const float *const *in, const float *saved,
                     float *scratch)
{
    (void)in;
    (void)saved;
    (void)scratch;
    if (din[0])
        relu_backward(din[0], dout, out, shape_numel(out_shape(g, n)));
}

/* Reads the output, not the input: for alpha > 0, y > 0 exactly when
 * x > 0, and at x == 0 (y == 0) both give the slope alpha.  Reading y lets
 * the producer's output (a norm's) be dropped after the forward. */
static void leaky_bwd(const Graph *g, const Node *n, float *const *din,
                      const float *dout, const float *out,
                      const float *const *in, const float *saved,
                      float *scratch)
{
    (void)saved;
    (void)scratch;
    const float *x = n->p.act.alpha > 0.0f ? out : in[0];
    if (din[0])
        leaky_relu_backward(din[0], dout, x, shape_numel(out_shape(g, n)),
                            &n->p.act);
}

static void sigmoid_bwd(const Graph *g, const Node *n, float *const *din,
                        const float *dout, const float *out,
                        const float *const *in, const float *saved,
                        float *scratch)
{
    (void)in;
    (void)saved;
    (void)scratch;
    if (din[0])
        sigmoid_backward(din[0], dout, out, shape_numel(out_shape(g, n)));
}

static void softmax_bwd(const Graph *g, const Node *n, float *const *din,
                        const float *dout, const float *out,
                        const float *const *in, const float *saved,
                        float *scratch)
{
    (void)in;
    (void)saved;
    (void)scratch;
    if (din[0])
        softmax_backward(din[0], dout, out, in_shape(g, n, 0), &n->p.softmax);
}

/* ---- Concat, Add, Identity ---- */

static void concat_bwd(const Graph *g, const Node *n, float *const *din,
                       const float *dout, const float *out,
                       const float *const *in, const float *saved,
                       float *scratch)
{
    (void)out;
    (void)in;
    (void)saved;
    (void)scratch;
    const Shape *xs[SL_MAX_INPUTS];
    for (int k = 0; k < n->n_in; k++)
        xs[k] = in_shape(g, n, k);
    concat_backward(din, dout, xs, n->n_in, &n->p.concat);
}

/* add_backward wants the full-size operand first; backward_check_node made
 * sure one input has the output's shape. */
static void add_bwd(const Graph *g, const Node *n, float *const *din,
                    const float *dout, const float *out,
                    const float *const *in, const float *saved,
                    float *scratch)
{
    (void)out;
    (void)in;
    (void)saved;
    (void)scratch;
    const Shape *as = in_shape(g, n, 0), *bs = in_shape(g, n, 1);
    if (shape_equal(as, out_shape(g, n)))
        add_backward(din[0], din[1], dout, as, bs);
    else
        add_backward(din[1], din[0], dout, bs, as);
}

/* dx [n] += dy [n] */
static void identity_bwd(const Graph *g, const Node *n, float *const *din,
                         const float *dout, const float *out,
                         const float *const *in, const float *saved,
                         float *scratch)
{
    (void)out;
    (void)in;
    (void)saved;
    (void)scratch;
    float *dx = din[0];
    if (!dx) return;
    const int64_t count = shape_numel(out_shape(g, n));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++)
        dx[i] += dout[i];
}

/* ---- pooling, Resize ---- */

static void max_pool_bwd(const Graph *g, const Node *n, float *const *din,
                         const float *dout, const float *out,
                         const float *const *in, const float *saved,
                         float *scratch)
{
    (void)out;
    (void)saved;
    (void)scratch;
    if (din[0])
        max_pool_backward(din[0], dout, in[0], in_shape(g, n, 0),
                          out_shape(g, n), &n->p.pool);
}

static void avg_pool_bwd(const Graph *g, const Node *n, float *const *din,
                         const float *dout, const float *out,
                         const float *const *in, const float *saved,
                         float *scratch)
{
    (void)out;
    (void)in;
    (void)saved;
    (void)scratch;
    if (din[0])
        avg_pool_backward(din[0], dout, in_shape(g, n, 0), out_shape(g, n),
                          &n->p.pool);
}

/* The optional second input only gives the output size: no gradient. */
static void resize_bwd(const Graph *g, const Node *n, float *const *din,
                       const float *dout, const float *out,
                       const float *const *in, const float *saved,
                       float *scratch)
{
    (void)out;
    (void)in;
    (void)saved;
    (void)scratch;
    if (din[0])
        resize_backward(din[0], dout, in_shape(g, n, 0), out_shape(g, n),
                        &n->p.resize);
}

#define IN0 BWD_NEEDS_IN(0)
#define IN1 BWD_NEEDS_IN(1)
const BackwardInfo backward_table[OP_COUNT] = {
    [OP_CONV] = {NULL, NULL, conv_bwd_scratch, conv_bwd, IN0 | IN1},
    [OP_CONV_TRANSPOSE] = {NULL, NULL, convt_bwd_scratch, convt_bwd,
                           IN0 | IN1},
    [OP_INSTANCE_NORM] = {NULL, NULL, NULL, inorm_bwd, IN0 | IN1},
    [OP_BATCH_NORM] = {bn_train_fwd, bn_saved, NULL, bn_bwd, IN0 | IN1},
    [OP_RELU] = {NULL, NULL, NULL, relu_bwd, BWD_NEEDS_OUT},
    /* backward_needs() drops IN0 when alpha > 0 */
    [OP_LEAKY_RELU] = {NULL, NULL, NULL, leaky_bwd, BWD_NEEDS_OUT | IN0},
    [OP_SIGMOID] = {NULL, NULL, NULL, sigmoid_bwd, BWD_NEEDS_OUT},
    [OP_SOFTMAX] = {NULL, NULL, NULL, softmax_bwd, BWD_NEEDS_OUT},
    [OP_CONCAT] = {NULL, NULL, NULL, concat_bwd, 0},
    [OP_ADD] = {NULL, NULL, NULL, add_bwd, 0},
    [OP_MAX_POOL] = {NULL, NULL, NULL, max_pool_bwd, IN0},
    [OP_AVG_POOL] = {NULL, NULL, NULL, avg_pool_bwd, 0},
    [OP_RESIZE] = {NULL, NULL, NULL, resize_bwd, 0},
    [OP_IDENTITY] = {NULL, NULL, NULL, identity_bwd, 0},
};
#undef IN0
#undef IN1

int backward_param_slot(const Node *n, int k)
{
    switch (n->op) {
    case OP_CONV:
    case OP_CONV_TRANSPOSE:
    case OP_INSTANCE_NORM:
    case OP_BATCH_NORM:
        return k == 1 || k == 2;
    default:
        return 0;
    }
}

unsigned backward_needs(const Node *n)
{
    unsigned needs = backward_table[n->op].needs;
    if (n->op == OP_LEAKY_RELU && n->p.act.alpha > 0.0f)
        needs &= ~BWD_NEEDS_IN(0);
    return needs;
}

int backward_check_node(const Graph *g, const Node *n)
{
    if (n->op < 0 || n->op >= OP_COUNT || !backward_table[n->op].backward) {
        sl_error("node '%s': op %d has no backward; the training engine "
                 "cannot fine-tune this model",
                 n->name ? n->name : "?", (int)n->op);
        return ERR_UNSUPPORTED;
    }
    if (n->op == OP_ADD && n->n_in == 2 &&
        !shape_equal(in_shape(g, n, 0), out_shape(g, n)) &&
        !shape_equal(in_shape(g, n, 1), out_shape(g, n))) {
        sl_error("node '%s' (Add): both inputs are broadcast; training "
                 "supports Add only when one input has the output's shape",
                 n->name ? n->name : "?");
        return ERR_UNSUPPORTED;
    }
    if (n->op == OP_BATCH_NORM && n->n_in != 5) {
        sl_error("node '%s' (BatchNormalization): %d inputs, expected 5",
                 n->name ? n->name : "?", n->n_in);
        return ERR_UNSUPPORTED;
    }
    return 0;
}
