/* ONNX export: write a Graph (a compressed model) back to an .onnx file,
 * so any ONNX tool (ONNX Runtime, Netron, onnx.checker) can use it.
 *
 * The file is opset 17, ir_version 8, producer "sauron-compress".  Every
 * IR node becomes one ONNX node with explicit attributes (no auto_pad, no
 * defaults relied on), except:
 *   - Softmax with flatten = 1 (the opset < 13 meaning) over more than the
 *     last axis: Flatten -> Softmax(axis 1) -> Reshape(Shape(x));
 *   - Resize to the size of a second tensor: sizes computed at run time by
 *     Concat(Slice(Shape(x), 0, 2), Slice(Shape(ref), 2, rank)), so the
 *     relation holds at every input size;
 *   - Resize by integer scales: roi empty, scales [1, 1, s...] as a
 *     float32 initializer (U-Net x2 upsampling);
 *   - Resize by other scales: sizes = [N, C] ++ floor(spatial * s + 1e-6)
 *     computed at run time (Shape/Cast/Mul/Add/Floor/Cast/Concat), so ONNX
 *     maps coordinates with out/in as our runtime does (with a scales
 *     input it would use s itself, which differs when in * s is not an
 *     integer).  Our importer reads that glue back exactly only at its
 *     import shape (it folds sizes there).
 * Weights are initializers (raw_data, little-endian float32).  The graph
 * input has symbolic batch and spatial dims ("N", "D", "H", "W") and the
 * fixed channel count; outputs name their batch "N", spatial dims equal
 * to the input's by the input's names, others by fresh names.  Value names
 * are kept (characters outside [A-Za-z0-9_.:/-] become '_', duplicates get
 * a suffix).  BatchNorm momentum is written as stored (the IR keeps the
 * ONNX convention, see compressor/train/backward.h).
 *
 * ModelMeta goes into metadata_props under "sauron.*" keys (see
 * onnx_meta.h); onnx_import restores it when present.
 *
 * Refused (ERR_UNSUPPORTED, nothing written): BatchNorm with
 * use_batch_stats (ONNX Runtime has no inference kernel for training-mode
 * BatchNormalization; its InstanceNorm equivalent holds only for N = 1),
 * AveragePool with dilation > 1 (opset 19).
 */
#ifndef SL_ONNX_EXPORT_H
#define SL_ONNX_EXPORT_H

#include "runtime/graph.h"

#define ONNX_EXPORT_OPSET 17
#define ONNX_EXPORT_IR_VERSION 8

/* Write g to path atomically (temporary name, then rename).  Refuses an
 * existing path unless force (ERR_EXISTS).  g is not modified.  Returns 0
 * or ERR_UNSUPPORTED, ERR_ARG (malformed graph), ERR_NOMEM, ERR_IO,
 * ERR_EXISTS, with one sl_error() line naming the node or file. */
int onnx_export(const Graph *g, const char *path, int force);

#endif
