/* Buffer planning: place every activation of a shape-inferred graph in one
 * arena so that tensors alive at the same time never share memory.
 *
 * Time is counted in steps: step 0 copies the graph input into the arena,
 * step i+1 runs node i.  A value is live from the step that writes it to
 * the last step that reads it; graph outputs stay live to the end
 * (n_nodes + 1).  Buffers are placed greedily, largest first, each in the
 * smallest gap between already placed buffers whose lifetimes overlap.
 *
 * With in-place reuse on, a Relu/LeakyRelu/Sigmoid/Identity node whose
 * input is an arena activation read last by this node writes its output
 * into the input's buffer: both values then share one buffer id, and
 * their lifetimes touch at that one step.  With PLAN_INPLACE_ALL (the
 * inference executor), InstanceNorm, BatchNorm and Softmax do so too:
 * their kernels read each element before writing it.  Training keeps
 * PLAN_INPLACE_ELEMWISE semantics through plan_op_inplace().
 *
 * With PLAN_ALIAS_CONCAT, an input of a Concat whose dims before the axis
 * are all 1 may be placed at its slice of the Concat's output, where its
 * producer then writes it, so the Concat copies nothing for it (taken
 * only when it does not raise the peak; see plan.c).  Such a value is
 * not 64-byte aligned in general; kernels use unaligned loads and never
 * write past a tensor's last element.
 */
#ifndef SL_PLAN_H
#define SL_PLAN_H

#include <stddef.h>

#include "graph.h"

#define PLAN_ALIGN 64
#define PLAN_NONE ((size_t)-1)

typedef struct {
    int n_values;
    size_t *offset; /* per value: bytes from arena start, PLAN_NONE if not
                       in the arena (weights, unused values) */
    size_t *bytes;  /* per value: numel * 4 rounded up to PLAN_ALIGN */
    int *first;     /* per value: first live step (-1 if not in the arena) */
    int *last;      /* per value: last live step */
    int *buffer;    /* per value: buffer id (shared by in-place pairs), -1 */
    int *within;    /* per value: the Concat output whose buffer holds it
                       (PLAN_ALIAS_CONCAT), or -1 */
    int n_buffers;
    int n_inplace;          /* nodes that write over their input */
    int n_aliased;          /* Concat inputs written in place */
    size_t arena_bytes;     /* planned peak */
    size_t unplanned_bytes; /* sum of all value sizes without reuse */
} Plan;

/* in-place levels for plan_create */
#define PLAN_INPLACE_NONE 0
#define PLAN_INPLACE_ELEMWISE 1 /* plan_op_inplace() ops */
#define PLAN_INPLACE_ALL 2      /* also normalisations and Softmax */
#define PLAN_INPLACE_MASK 3
#define PLAN_ALIAS_CONCAT 4 /* flag: Concat inputs written in place */

/* g must have had graph_infer_shapes() run.  inplace: allow elementwise
 * nodes to overwrite their dying input (a PLAN_INPLACE_* level, optionally
 * | PLAN_ALIAS_CONCAT).  Returns 0,
 * ERR_NOMEM or ERR_SHAPE (sizes overflow), with a message.  plan_free() is
 * safe on a failed or zeroed plan. */
int plan_create(const Graph *g, int inplace, Plan *p);
void plan_free(Plan *p);

/* Nonzero if the op may run with its output buffer equal to its input. */
int plan_op_inplace(OpType op);

#endif
