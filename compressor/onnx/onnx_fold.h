/* Private to compressor/onnx/: constant folding of the shape glue around
 * the network (onnx_fold.c). */
#ifndef SL_ONNX_FOLD_H
#define SL_ONNX_FOLD_H

#include "onnx_ctx.h"

/* Fold node idx of c->gp if all its inputs are constants (c->syms),
 * adding its output as a constant.  Returns 0 if folded, 1 if the node is
 * not one this folds, or a negative code (reported). */
int onnx_fold(OnnxCtx *c, int idx);

#endif
