/* Slicing tensors along one axis: the common currency of pruning surgery.
 *
 * When Sauron prunes channels, surgery produces a list of TensorSlice
 * records: "value `value`, keep only indices keep[0..n_keep) along axis
 * `axis`".  The same list is applied to the weights in the Graph
 * (g->values[value].data / .shape) and to every per-parameter training
 * state keyed by graph value index (optimiser moments, see optim.h
 * optim_slice_all), so the two can never drift apart.
 *
 * Conventions:
 *   - `value` is a graph value index (weights only; activations have no
 *     data and get new shapes from graph_infer_shapes).
 *   - `axis` indexes the value's shape: for a Conv weight [OC,IC/g,K...]
 *     axis 0 removes output channels, axis 1 input channels; for a
 *     ConvTranspose weight [IC,OC/g,K...] axis 0 is input channels; for
 *     biases / norm scale / bias / running stats [C] it is 0.
 *   - keep[] is strictly increasing, each in [0, shape.d[axis]),
 *     n_keep >= 1.  The caller owns keep[].
 *   - Several slices of the same value (e.g. axis 0 then axis 1) are
 *     applied one after another; indices of a later slice refer to the
 *     shape left by the earlier one.
 */
#ifndef SL_TRAIN_SLICE_H
#define SL_TRAIN_SLICE_H

#include "runtime/graph.h"

typedef struct {
    int value;       /* graph value index */
    int axis;        /* axis of that value's shape */
    int n_keep;      /* number of kept indices, >= 1 */
    const int *keep; /* strictly increasing kept indices (not owned) */
} TensorSlice;

/* Keep only ts->keep along ts->axis of the dense row-major tensor *data of
 * shape *s.  Compacts in place (the buffer keeps its size and alignment,
 * *data is left unchanged; the argument is a pointer so that a future
 * version may shrink the allocation) and sets s->d[axis] = n_keep.
 * Cannot fail once arguments are valid, so surgery never leaves a tensor
 * half-sliced.  ts->value is not used here (the caller found the tensor).
 * Returns 0, or ERR_ARG (with a message) on a bad axis or keep list, in
 * which case nothing is changed. */
int tensor_slice_apply(float **data, Shape *s, const TensorSlice *ts);

/* Check a slice against a shape without applying it: 0 or ERR_ARG (with a
 * message naming `what`). */
int tensor_slice_check(const Shape *s, const TensorSlice *ts,
                       const char *what);

#endif
