/* Private to compressor/onnx/: constant tensors while importing (folded
 * shape glue, initializers) and their decoding from a TensorProto. */
#ifndef SL_ONNX_TENSOR_H
#define SL_ONNX_TENSOR_H

#include <stdint.h>

#include "onnx.pb-c.h"

#define OT_MAX_DIMS 8
/* Largest single dim a folded shape may have. */
#define OT_MAX_DIM_VALUE ((int64_t)1 << 31)

/* A constant tensor during folding: float32 data for float types, int64
 * for integer and bool types (shape arithmetic). */
typedef struct {
    int ndim;
    int64_t dims[OT_MAX_DIMS];
    int64_t numel;
    int is_int;
    float *f;   /* numel floats when !is_int (owned) */
    int64_t *i; /* numel ints when is_int (owned) */
} OTensor;

void ot_free(OTensor *t);
/* Allocate a tensor of the given dims (data zeroed). */
int ot_alloc(OTensor *t, int ndim, const int64_t *dims, int is_int);
/* Element k as double / as int64 whatever the storage. */
double ot_get(const OTensor *t, int64_t k);
int64_t ot_geti(const OTensor *t, int64_t k);
/* double -> int64, saturating (and NaN -> INT64_MIN) instead of UB. */
int64_t ot_d2i(double v);

/* Tensor proto -> OTensor (raw, typed fields, or external data in a file
 * inside dir, the realpath of the model's folder).  path names the model
 * in messages.  0, or an ERR_* code with one line reported. */
int ot_from_proto(const Onnx__TensorProto *tp, const char *path,
                  const char *dir, OTensor *t);

/* The dims a Reshape to `shape` gives for an input of dims in[]; -1 if
 * the shape is invalid or changes the element count. */
int onnx_reshape_dims(const int64_t *in, int in_nd, const OTensor *shape,
                      int allowzero, int64_t *out, int *out_nd);

#endif
