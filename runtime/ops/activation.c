/* Elementwise activations: Relu, LeakyRelu, Sigmoid, and Identity.
 *
 * All work on a flat array of n floats, so any rank is accepted.  y may
 * equal x (in place): each element is read before it is written.
 */
#include <math.h>
#include <string.h>

#include "opcheck.h"
#include "ops.h"
#include "vecmath.h"

/* Below this many elements a parallel region costs more than it saves. */
#define ELEMWISE_PAR_MIN 32768

/* Branch-free: gcc at -O2 keeps `x >= 0 ? x : a*x` as a branch per
 * element (an ordered compare may trap on NaN, so it will not if-convert
 * it), which mispredicts on about half of a network's activations; that
 * made LeakyRelu the most expensive op of a small U-Net.  vecmath.h
 * spells the select out on 4-float vectors.  Blocks of ELEMWISE_BLOCK
 * elements go to threads; y may equal x (element i only reads x[i]).
 * NaN: Relu(NaN) = 0, LeakyRelu(NaN) = NaN, as the scalar rules give. */
#define ELEMWISE_BLOCK 4096

/* y [n] = max(x [n], 0) */
void relu_forward(float *y, const float *x, int64_t n)
{
    int64_t nb = (n + ELEMWISE_BLOCK - 1) / ELEMWISE_BLOCK;
#pragma omp parallel for schedule(static) if (n > ELEMWISE_PAR_MIN)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t i = blk * ELEMWISE_BLOCK;
        int64_t end = i + ELEMWISE_BLOCK < n ? i + ELEMWISE_BLOCK : n;
        for (; i + VF_W <= end; i += VF_W)
            vf4_store(y + i, vf4_relu(vf4_load(x + i)));
        for (; i < end; i++)
            y[i] = sf_relu(x[i]);
    }
}

/* y [n] = x >= 0 ? x : alpha * x,  x [n] */
void leaky_relu_forward(float *y, const float *x, int64_t n,
                        const ActParams *p)
{
    const float alpha = p->alpha;
    int64_t nb = (n + ELEMWISE_BLOCK - 1) / ELEMWISE_BLOCK;
#pragma omp parallel for schedule(static) if (n > ELEMWISE_PAR_MIN)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t i = blk * ELEMWISE_BLOCK;
        int64_t end = i + ELEMWISE_BLOCK < n ? i + ELEMWISE_BLOCK : n;
        for (; i + VF_W <= end; i += VF_W)
            vf4_store(y + i, vf4_leaky(vf4_load(x + i), alpha));
        for (; i < end; i++)
            y[i] = sf_leaky(x[i], alpha);
    }
}

/* y [n] = 1 / (1 + exp(-x)),  x [n].  exp is only ever taken of
 * -|x| <= 0 (vf4_exp_neg, relative error < 2e-7), so large |x| neither
 * overflows nor gives NaN: with e = exp(-|x|), y = 1 / (1 + e) for
 * x >= 0 and e / (1 + e) otherwise.  Below -87, exp gives 0 and so does
 * the sigmoid (the true value is < 2e-38).  NaN stays NaN. */
static inline vf4 vf4_sigmoid(vf4 v)
{
    vf4 negabs = (vf4)((vi4)v | (vi4)vf4_set1(-0.0f));
    vf4 e = vf4_exp_neg(negabs), d = vf4_set1(1.0f) + e;
    return vf4_select(v >= vf4_set1(0.0f), vf4_set1(1.0f) / d, e / d);
}

void sigmoid_forward(float *y, const float *x, int64_t n)
{
    int64_t nb = (n + ELEMWISE_BLOCK - 1) / ELEMWISE_BLOCK;
#pragma omp parallel for schedule(static) if (n > ELEMWISE_PAR_MIN / 8)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t i = blk * ELEMWISE_BLOCK;
        int64_t end = i + ELEMWISE_BLOCK < n ? i + ELEMWISE_BLOCK : n;
        for (; i + VF_W <= end; i += VF_W)
            vf4_store(y + i, vf4_sigmoid(vf4_load(x + i)));
        /* the tail through the same vector code, one lane used, so that
         * every element gets the same arithmetic */
        for (; i < end; i++) {
            vf4 v = vf4_set1(x[i]);
            y[i] = vf4_sigmoid(v)[0];
        }
    }
}

/* ---- op-table hooks ---- */

static int unary_infer(const Graph *g, const Node *n, Shape *out,
                       const char *op)
{
    int rc = op_check_inputs(g, n, op, 1, 1);
    if (rc) return rc;
    *out = *op_in_shape(g, n, 0);
    return 0;
}

static int64_t unary_numel(const Graph *g, const Node *n)
{
    return op_numel(op_in_shape(g, n, 0));
}

int relu_infer(const Graph *g, const Node *n, Shape *out)
{
    return unary_infer(g, n, out, "Relu");
}
int64_t relu_flops(const Graph *g, const Node *n)
{
    return unary_numel(g, n);
}
size_t relu_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void relu_node_forward(const Graph *g, const Node *n, float *out,
                       const float *const *in, float *scratch)
{
    (void)scratch;
    relu_forward(out, in[0], unary_numel(g, n));
}

int leaky_relu_infer(const Graph *g, const Node *n, Shape *out)
{
    int rc = unary_infer(g, n, out, "LeakyRelu");
    if (rc) return rc;
    if (!isfinite(n->p.act.alpha)) {
        sl_error("node '%s' (LeakyRelu): alpha is not a finite number; "
                 "re-export the model",
                 op_node_name(n));
        return ERR_SHAPE;
    }
    return 0;
}
int64_t leaky_relu_flops(const Graph *g, const Node *n)
{
    return 2 * unary_numel(g, n);
}
size_t leaky_relu_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void leaky_relu_node_forward(const Graph *g, const Node *n, float *out,
                             const float *const *in, float *scratch)
{
    (void)scratch;
    leaky_relu_forward(out, in[0], unary_numel(g, n), &n->p.act);
}

int sigmoid_infer(const Graph *g, const Node *n, Shape *out)
{
    return unary_infer(g, n, out, "Sigmoid");
}
/* exp counted as one op: FLOPs here are for comparing models, not time. */
int64_t sigmoid_flops(const Graph *g, const Node *n)
{
    return 4 * unary_numel(g, n);
}
size_t sigmoid_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
void sigmoid_node_forward(const Graph *g, const Node *n, float *out,
                          const float *const *in, float *scratch)
{
    (void)scratch;
    sigmoid_forward(out, in[0], unary_numel(g, n));
}

int identity_infer(const Graph *g, const Node *n, Shape *out)
{
    return unary_infer(g, n, out, "Identity");
}
int64_t identity_flops(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
size_t identity_scratch(const Graph *g, const Node *n)
{
    (void)g;
    (void)n;
    return 0;
}
/* out [numel] = in[0] [numel]; nothing to do when the executor placed both
 * in the same buffer. */
void identity_node_forward(const Graph *g, const Node *n, float *out,
                           const float *const *in, float *scratch)
{
    (void)scratch;
    if (out != in[0])
        memmove(out, in[0], (size_t)unary_numel(g, n) * sizeof(float));
}
