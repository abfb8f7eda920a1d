/* ONNX import: read a .onnx file (protobuf) into the graph IR.
 *
 * Constant and shape sub-graphs are folded at a concrete "import shape":
 * the graph input's static dims, with dynamic dims replaced by 1 for the
 * batch dim and ONNX_DEFAULT_SPATIAL for spatial dims (a size that every
 * U-Net with up to 7 halvings accepts), unless opt->input_shape is given.
 * Identity and Dropout disappear; exporter patterns (Transpose-Softmax-
 * Transpose, Reshape-BatchNormalization-Reshape for instance norm,
 * per-channel Mul/Add/Sub/Div after a normalisation or convolution)
 * become single IR nodes; Pad/Slice/Cast that change nothing at the import
 * shape disappear.  Weights become float32 Values owned by the graph.
 *
 * Resolved at the import shape (exact there, and wherever the network
 * runs at sizes graph_valid_size accepts): Conv/pool auto_pad SAME with
 * stride > 1, ConvTranspose output_shape, Resize "sizes" (a scale, or the
 * activation of that size when the ratio is not an integer).
 *
 * Outputs: all graph outputs are kept; g->outputs[0] is the chosen one
 * (opt->output_name, or the output with the largest spatial size at the
 * import shape, ties to the first).  Nodes needed by no output are dropped.
 *
 * Metadata filled here: meta.source_sha256, meta.source_name, meta.dims
 * (number of spatial dims).  The rest comes from the caller (CLI), unless
 * the file is a Sauron export (onnx_export.h) whose "sauron.*"
 * metadata_props then restore the whole ModelMeta (the source too, unless
 * opt->source_is_file).
 *
 * Returns 0, or ERR_IO (missing/unreadable file), ERR_FORMAT (not an ONNX
 * model, bad tensor data, a node input nobody produces), ERR_UNSUPPORTED
 * (operator, attribute or datatype, external data outside the model's
 * folder), ERR_SHAPE (inconsistent shapes), ERR_NOMEM; one line reported
 * with sl_error() naming the file and node.  On failure g is left empty.
 */
#ifndef SL_ONNX_IMPORT_H
#define SL_ONNX_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/graph.h"

#define ONNX_DEFAULT_SPATIAL 128
/* Largest input dim accepted (a sanity bound against corrupted files). */
#define ONNX_MAX_DIM 65536
/* Largest input (elements) accepted: 2^36, 64 G voxels, far beyond a scan. */
#define ONNX_MAX_INPUT_NUMEL ((int64_t)1 << 36)

typedef struct {
    const char *output_name;  /* NULL: default (largest spatial output) */
    const Shape *input_shape; /* NULL: from the model (see above) */
    /* Nonzero: meta.source_* name this file even when it is a Sauron
     * export carrying the source it was made from.  Fine-tuning makes a
     * new model from this file; a plain conversion keeps the carried one. */
    int source_is_file;
} OnnxImportOptions;

/* g must be initialised (graph_init) and empty.  opt may be NULL. */
int onnx_import(const char *path, const OnnxImportOptions *opt, Graph *g);

/* Nonzero if the buffer plausibly holds an ONNX model (a protobuf whose
 * first field is a ModelProto field); cheap, for format detection only. */
int onnx_looks_like_onnx(const uint8_t *data, size_t size);

#endif
