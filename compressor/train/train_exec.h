/* Training executor: forward in training mode, backward through the whole
 * graph, gradients for every trainable parameter and every activation.
 *
 * One step, the protocol:
 *
 *     train_zero_grads(t);                 // all grads = 0 (once per step)
 *     train_forward(t, input);             // activations kept for backward
 *     loss_...(..., train_grad(t, g->outputs[k]), ...);   // += dL/dout
 *     // optional: add extra gradient into ANY activation's grad, e.g. the
 *     // Sauron regulariser reads train_value(t, v) of a prunable point v
 *     // and adds lambda * dR/dv into train_grad(t, v)
 *     train_backward(t);                   // propagates everything
 *     optim_step(opt, train_params(t), train_n_params(t), lr);
 *
 * train_backward never zeroes anything: it runs every node's backward in
 * reverse topological order, each ACCUMULATING into its inputs' grads, so a
 * gradient injected into an activation's grad before the call is propagated
 * to everything upstream of that activation, together with the loss's.
 * (Calling train_backward twice without zeroing doubles the parameter
 * grads: don't.)  train_loss_outputs() in loss.h does the loss line above
 * for all heads.
 *
 * Trainable parameters: the weight and bias of every Conv and
 * ConvTranspose, scale and bias of every InstanceNorm/BatchNorm.  BatchNorm
 * running mean/var are updated in place by the training forward (ONNX
 * momentum convention, see backward.h) and not trained; every other weight
 * is a constant.  Weights stay in the Graph: a parameter's data pointer is
 * g->values[v].data, so the optimiser updates the graph's own weights.
 *
 * Memory: every activation the backward reads is kept; an activation the
 * backward never reads (e.g. an InstanceNorm output consumed only by a
 * LeakyReLU, whose backward reads its own output) is overwritten in place
 * by its elementwise consumer, as PyTorch's inplace=True does:
 * train_value() returns NULL for such values.  Every activation except the
 * graph input has its own gradient buffer.
 *
 * Pruning: when surgery changes the graph's shapes, free the executor and
 * create a new one (gradients and activations are per-shape); optimiser
 * state lives in the Optim (optim.h), keyed by value index, and is sliced
 * with the same TensorSlice list as the weights.
 *
 * Determinism: every kernel reduces in a fixed order, so a step gives
 * bit-identical results for any thread count.
 */
#ifndef SL_TRAIN_EXEC_H
#define SL_TRAIN_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "compressor/train/params.h"
#include "runtime/graph.h"

typedef struct TrainExec TrainExec;

/* Infer shapes for input [B, C, sp...], check that every node can be
 * differentiated, allocate activations, gradients, saved state and scratch
 * (sized under n_threads; <= 0 means all cores).  g must outlive the
 * executor; its weights may change (that is what training does), its
 * structure and weight shapes must not.  Returns 0, ERR_SHAPE,
 * ERR_UNSUPPORTED or ERR_NOMEM (message printed); *out NULL on failure. */
int train_exec_create(Graph *g, const Shape *input, int n_threads,
                      TrainExec **out);
void train_exec_free(TrainExec *t);

/* Set every gradient (parameters and activations) to zero. */
void train_zero_grads(TrainExec *t);
/* Training-mode forward of input (numel of the input shape floats).
 * Re-infers shapes if another executor changed them.  Returns 0 or a
 * negative code. */
int train_forward(TrainExec *t, const float *input);
/* Backward from whatever the activation grads hold (see the protocol).
 * Must follow train_forward.  Returns 0 or a negative code. */
int train_backward(TrainExec *t);

/* Trainable parameters, sorted by value index. */
int train_n_params(const TrainExec *t);
TrainParam *train_params(TrainExec *t);

/* Tensor of value v during the step: weights -> g->values[v].data;
 * activations -> the executor's buffer (valid after train_forward until
 * the next train_forward); NULL if out of range or overwritten in place. */
float *train_value(TrainExec *t, int v);
/* Gradient buffer of value v (activation or trainable parameter), or NULL
 * (graph input, constants, out of range).  Same shape as the value. */
float *train_grad(TrainExec *t, int v);
/* Shape of value v for this executor's input shape. */
const Shape *train_shape(const TrainExec *t, int v);
const Graph *train_graph(const TrainExec *t);
/* Bytes allocated for activations, gradients, saved state and scratch. */
size_t train_bytes(const TrainExec *t);

#endif
