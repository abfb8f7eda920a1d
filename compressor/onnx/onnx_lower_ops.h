/* Private to compressor/onnx/: the lowering functions the op table of
 * onnx_lower.c dispatches to, one per op family (onnx_lower_ops.c: compute
 * ops; onnx_layout.c: layout changes and resampling). */
#ifndef SL_ONNX_LOWER_OPS_H
#define SL_ONNX_LOWER_OPS_H

#include "onnx_lw.h"

/* A lowering function: arg selects the variant the table entry names
 * (an OpType, an ArithOp, a layout kind, transpose or not, ...). */
typedef int (*LowerFn)(Lw *l, int arg);

typedef enum { ARITH_ADD, ARITH_SUB, ARITH_MUL, ARITH_DIV } ArithOp;
typedef enum {
    LAYOUT_RESHAPE,
    LAYOUT_FLATTEN,
    LAYOUT_SQUEEZE,
    LAYOUT_UNSQUEEZE
} LayoutKind;
typedef enum { NOOP_PAD, NOOP_SLICE, NOOP_CAST } NoopKind;

/* onnx_lower_ops.c */
int onnx_lower_conv(Lw *l, int transpose);
int onnx_lower_pool(Lw *l, int is_max);
int onnx_lower_instance_norm(Lw *l, int unused);
int onnx_lower_batch_norm(Lw *l, int unused);
int onnx_lower_unary(Lw *l, int op); /* OpType: Relu, LeakyRelu, ... */
int onnx_lower_softmax(Lw *l, int unused);
int onnx_lower_concat(Lw *l, int unused);
int onnx_lower_arith(Lw *l, int op); /* ArithOp */
int onnx_lower_shape(Lw *l, int unused);
int onnx_lower_identity(Lw *l, int unused); /* Identity, Dropout */

/* onnx_layout.c */
int onnx_lower_reshape(Lw *l, int kind); /* LayoutKind */
int onnx_lower_transpose(Lw *l, int unused);
int onnx_lower_noop(Lw *l, int kind); /* NoopKind */
int onnx_lower_resize(Lw *l, int upsample);

#endif
