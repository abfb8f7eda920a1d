/* Forward kernels and the op table.
 *
 * Every kernel: outputs first, then inputs, then shapes, then a const
 * parameter struct, then scratch.  Kernels never allocate: scratch comes
 * from the executor, sized by the op's scratch function.  Each optimised
 * kernel has a naive *_ref twin kept forever as the test oracle.
 *
 * Determinism: kernels parallelise over independent outputs and reduce in
 * a fixed order, so results are bit-identical for any OpenMP thread count.
 */
#ifndef SL_OPS_H
#define SL_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../graph.h"

/* ---- per-op shape inference, FLOPs and scratch (the op table) ---- */

typedef struct {
    const char *name;
    /* Output shape from input shapes (g->values[n->in[i]].shape).  Returns
     * 0 or ERR_SHAPE with an sl_error() naming the node. */
    int (*infer)(const Graph *g, const Node *n, Shape *out);
    /* FLOPs for one forward call (multiply-add counts 2). */
    int64_t (*flops)(const Graph *g, const Node *n);
    /* Scratch floats the forward needs (0 if none). */
    size_t (*scratch)(const Graph *g, const Node *n);
    /* Run the node: out and in[] point at the tensors of n->out and
     * n->in[] (weights included). */
    void (*forward)(const Graph *g, const Node *n, float *out,
                    const float *const *in, float *scratch);
} OpInfo;

extern const OpInfo op_table[OP_COUNT];
const char *op_name(OpType op);

/* Op-table hooks.  Each op family's file defines, for each op X it holds,
 * X_infer, X_flops, X_scratch and X_node_forward with the OpInfo
 * signatures (scratch may be NULL in the table when the op needs none).
 * optable.c lists them. */
#define SL_DECLARE_OP(X)                                                     \
    int X##_infer(const Graph *g, const Node *n, Shape *out);                \
    int64_t X##_flops(const Graph *g, const Node *n);                        \
    size_t X##_scratch(const Graph *g, const Node *n);                       \
    void X##_node_forward(const Graph *g, const Node *n, float *out,         \
                          const float *const *in, float *scratch);
SL_DECLARE_OP(conv)
SL_DECLARE_OP(conv_transpose)
SL_DECLARE_OP(instance_norm)
SL_DECLARE_OP(batch_norm)
SL_DECLARE_OP(relu)
SL_DECLARE_OP(leaky_relu)
SL_DECLARE_OP(sigmoid)
SL_DECLARE_OP(softmax)
SL_DECLARE_OP(concat)
SL_DECLARE_OP(add)
SL_DECLARE_OP(max_pool)
SL_DECLARE_OP(avg_pool)
SL_DECLARE_OP(resize)
SL_DECLARE_OP(identity)
#undef SL_DECLARE_OP

/* ---- Conv / ConvTranspose (conv.c, conv_transpose.c, gemm.c) ---- */

/* y [N,OC,out...] = conv(x [N,IC,in...], w [OC,IC/g,K...]) + b [OC] (b may
 * be NULL).  Scratch: conv_scratch_floats(). */
void conv_forward(float *y, const float *x, const float *w, const float *b,
                  const Shape *xs, const Shape *ys, const ConvParams *p,
                  float *scratch);
void conv_forward_ref(float *y, const float *x, const float *w,
                      const float *b, const Shape *xs, const Shape *ys,
                      const ConvParams *p);
size_t conv_scratch_floats(const Shape *xs, const Shape *ys,
                           const ConvParams *p);

/* y [N,OC,out...] = conv_transpose(x [N,IC,in...], w [IC,OC/g,K...]) + b */
void conv_transpose_forward(float *y, const float *x, const float *w,
                            const float *b, const Shape *xs, const Shape *ys,
                            const ConvParams *p, float *scratch);
void conv_transpose_forward_ref(float *y, const float *x, const float *w,
                                const float *b, const Shape *xs,
                                const Shape *ys, const ConvParams *p);
size_t conv_transpose_scratch_floats(const Shape *xs, const Shape *ys,
                                     const ConvParams *p);

/* C[M,N] (+)= A[M,K] * B[K,N], row-major with leading dims; accumulate=0
 * overwrites.  Parallel over output tiles; fixed reduction order (results
 * are bit-identical for any thread count).  pack: caller's scratch of
 * gemm_pack_floats(m, n, k) floats for the packed panels (gemm never
 * allocates).  Do not call from inside an OpenMP parallel region with a
 * shared pack buffer. */
void gemm(float *c, const float *a, const float *b, int m, int n, int k,
          int lda, int ldb, int ldc, int accumulate, float *pack);
size_t gemm_pack_floats(int m, int n, int k);
/* Same with op(A) = A^T when trans_a (A stored [K,M], lda >= M) and
 * op(B) = B^T when trans_b (B stored [N,K], ldb >= K):
 * C[M,N] (+)= op(A)[M,K] * op(B)[K,N].  Same pack size as gemm. */
void gemm_t(float *c, const float *a, const float *b, int m, int n, int k,
            int lda, int ldb, int ldc, int trans_a, int trans_b,
            int accumulate, float *pack);
void gemm_ref(float *c, const float *a, const float *b, int m, int n, int k,
              int lda, int ldb, int ldc, int accumulate);

/* ---- normalisation (norm.c) ---- */

/* InstanceNorm: per (n,c) mean/var over spatial dims (population var),
 * y = (x - mean) / sqrt(var + eps) * scale[c] + bias[c].  Statistics are
 * accumulated in double in a fixed order. */
void instance_norm_forward(float *y, const float *x, const float *scale,
                           const float *bias, const Shape *xs,
                           const NormParams *p);
void instance_norm_forward_ref(float *y, const float *x, const float *scale,
                               const float *bias, const Shape *xs,
                               const NormParams *p);
/* BatchNorm, inference form with running statistics; or batch statistics
 * over N and spatial dims when p->use_batch_stats. */
void batch_norm_forward(float *y, const float *x, const float *scale,
                        const float *bias, const float *mean,
                        const float *var, const Shape *xs,
                        const NormParams *p);
void batch_norm_forward_ref(float *y, const float *x, const float *scale,
                            const float *bias, const float *mean,
                            const float *var, const Shape *xs,
                            const NormParams *p);

/* ---- elementwise (activation.c, add.c) ---- */

void relu_forward(float *y, const float *x, int64_t n);
void leaky_relu_forward(float *y, const float *x, int64_t n,
                        const ActParams *p);
void sigmoid_forward(float *y, const float *x, int64_t n);
/* y = a + b with b broadcast to a's shape (numpy rules, b's dims <= a's). */
void add_forward(float *y, const float *a, const float *b, const Shape *as,
                 const Shape *bs);

/* ---- softmax.c, concat.c ---- */

void softmax_forward(float *y, const float *x, const Shape *xs,
                     const SoftmaxParams *p);
void softmax_forward_ref(float *y, const float *x, const Shape *xs,
                         const SoftmaxParams *p);
void concat_forward(float *y, const float *const *x, const Shape *const *xs,
                    int n_in, const ConcatParams *p);

/* ---- pool.c ---- */

void max_pool_forward(float *y, const float *x, const Shape *xs,
                      const Shape *ys, const PoolParams *p);
void avg_pool_forward(float *y, const float *x, const Shape *xs,
                      const Shape *ys, const PoolParams *p);
void max_pool_forward_ref(float *y, const float *x, const Shape *xs,
                          const Shape *ys, const PoolParams *p);
void avg_pool_forward_ref(float *y, const float *x, const Shape *xs,
                          const Shape *ys, const PoolParams *p);

/* ---- resize.c ---- */

void resize_forward(float *y, const float *x, const Shape *xs,
                    const Shape *ys, const ResizeParams *p);
void resize_forward_ref(float *y, const float *x, const Shape *xs,
                        const Shape *ys, const ResizeParams *p);

/* ---- fused.c: a normalisation and the activation after it ---- */

/* The activation applied as a normalisation stores its output:
 * op = OP_IDENTITY (none), OP_RELU, or OP_LEAKY_RELU with alpha. */
typedef struct {
    OpType op;
    float alpha;
} PostAct;

/* y = act(InstanceNorm(x)) with instance_norm_forward's contract; y may
 * equal x.  With act->op == OP_IDENTITY this is instance_norm_forward,
 * and with an activation it is bit-identical to instance_norm_forward
 * followed by relu_forward / leaky_relu_forward. */
void instance_norm_act_forward(float *y, const float *x, const float *scale,
                               const float *bias, const Shape *xs,
                               const NormParams *p, const PostAct *act);
/* y = act(BatchNorm(x)) with batch_norm_forward's contract; same
 * promises. */
void batch_norm_act_forward(float *y, const float *x, const float *scale,
                            const float *bias, const float *mean,
                            const float *var, const Shape *xs,
                            const NormParams *p, const PostAct *act);

#endif
