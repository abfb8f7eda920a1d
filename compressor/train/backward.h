/* The backward op table: the training engine's twin of runtime op_table.
 *
 * For each OpType: a training-mode forward where training differs from
 * inference (BatchNorm: batch statistics, running statistics updated; NULL
 * means "use op_table[op].forward"), the floats it saves per node for the
 * backward, the backward's scratch need, and the backward itself, which
 * calls the compressor/grad/grad.h kernels.
 *
 * BatchNorm momentum: NormParams.momentum holds the ONNX convention (as
 * the importer stores it): running = momentum * running + (1 - momentum)
 * * batch.  The wrapper converts to grad.h's PyTorch convention
 * (1 - momentum).  In training every BatchNorm uses batch statistics,
 * whatever use_batch_stats says (PyTorch's model.train()).
 *
 * Dimension letters: N batch, C channels, sp... 1 to 3 spatial dims.
 */
#ifndef SL_TRAIN_BACKWARD_H
#define SL_TRAIN_BACKWARD_H

#include <stddef.h>

#include "runtime/graph.h"

/* Bits of BackwardInfo.needs: which forward tensors the backward reads. */
#define BWD_NEEDS_IN(k) (1u << (k))
#define BWD_NEEDS_OUT (1u << 31)

typedef struct {
    /* Training forward: out and in[] as in OpInfo.forward, but in[] is
     * writable (BatchNorm updates its running statistics in place);
     * saved: saved(g, n) floats owned by the executor for this node,
     * overwritten.  NULL: the runtime forward is the training forward. */
    void (*forward)(const Graph *g, const Node *n, float *out,
                    float *const *in, float *saved, float *scratch);
    /* Floats saved by the training forward for the backward (NULL: 0). */
    size_t (*saved)(const Graph *g, const Node *n);
    /* Scratch floats the backward needs (NULL: 0).  Depends on the thread
     * count (gemm packing): call under the thread count that will run. */
    size_t (*scratch)(const Graph *g, const Node *n);
    /* Gradients of node n: din[k] (shape of input k) += d loss / d in[k]
     * given dout = d loss / d out (accumulates).  din[k] may be NULL for
     * inputs needing no gradient (graph input, constants).  out, in[],
     * saved are the training forward's tensors; only those flagged in
     * `needs` are read (the others may be NULL). */
    void (*backward)(const Graph *g, const Node *n, float *const *din,
                     const float *dout, const float *out,
                     const float *const *in, const float *saved,
                     float *scratch);
    unsigned needs; /* BWD_NEEDS_* bits */
} BackwardInfo;

extern const BackwardInfo backward_table[OP_COUNT];

/* Nonzero if input slot k of node n is a trainable parameter slot: weight
 * and bias of Conv/ConvTranspose, scale and bias of Instance/BatchNorm.
 * (BatchNorm running statistics and every other weight are constants.) */
int backward_param_slot(const Node *n, int k);

/* BWD_NEEDS_* bits of what node n's backward reads: the table's `needs`,
 * refined per node (LeakyReLU with alpha > 0 reads only its output). */
unsigned backward_needs(const Node *n);

/* 0 if the training engine can differentiate node n of a shape-inferred
 * graph, else ERR_UNSUPPORTED with a message naming the node (e.g. an
 * Add whose output is larger than both inputs). */
int backward_check_node(const Graph *g, const Node *n);

#endif
