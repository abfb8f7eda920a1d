/* Private to compressor/onnx/: the lowering pass and its dispatch.
 *
 * Files and what they may call (a DAG, no file calls back up):
 *   onnx_import.c   reads the file, graph input/outputs, compaction
 *     -> onnx_lower.c      the node loop: fold, else the table below
 *       -> onnx_lower_ops.c, onnx_layout.c  one function per op family
 *         -> onnx_lw.c     the helpers they share
 *       -> onnx_fold.c     constant folding
 *     -> onnx_ctx.c        symbol table, node error line
 *       -> onnx_tensor.c   constant tensors and their decoding
 *       -> onnx_attr.c     attributes by name */
#ifndef SL_ONNX_LOWER_H
#define SL_ONNX_LOWER_H

#include "onnx_ctx.h"

/* Lower every node of c->gp into c->g (graph input already added). */
int onnx_lower(OnnxCtx *c);

#endif
