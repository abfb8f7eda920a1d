/* Private to compressor/onnx/: one ONNX node being lowered to IR nodes,
 * and the helpers every lowering function (onnx_lower_ops.c,
 * onnx_layout.c) shares (onnx_lw.c). */
#ifndef SL_ONNX_LW_H
#define SL_ONNX_LW_H

#include <stdint.h>

#include "onnx_ctx.h"

/* One ONNX node being lowered: its symbol per input (-1 if absent). */
typedef struct {
    OnnxCtx *c;
    int idx;
    const Onnx__NodeProto *n;
    int in[SL_MAX_INPUTS]; /* symbol per input, -1 if absent */
    int n_in;
} Lw;

/* "<msg> at node ..." for the node being lowered; returns code. */
int lw_fail(Lw *l, int code, const char *msg);
/* Input j as a constant, or NULL. */
const OTensor *lw_const(Lw *l, int j);
/* Nonzero if input j is present and not a constant (a value or a view). */
int lw_is_act(Lw *l, int j);
/* IR value of activation input j (not a view), or an error. */
int lw_act_value(Lw *l, int j, int *v);
/* Dims of activation input j (a view's dims, or its value's shape); an
 * error (reported) if the input is absent or a constant. */
int lw_act_dims(Lw *l, int j, int *nd, int64_t *dims);
/* Add IR node nd for the node's output 0 and infer its shape. */
int lw_emit(Lw *l, Node *nd, int *out_value);
/* The node's output 0 now stands for what symbol src stands for (an
 * activation or a view; a constant is refused with an error). */
int lw_alias(Lw *l, int src);
/* How many node inputs and graph outputs read tensor name (a graph output
 * counts 2, so it is never folded away). */
int lw_consumers(const OnnxCtx *c, const char *name);

#endif
