/* Private to compressor/onnx/: reading a node's attributes by name. */
#ifndef SL_ONNX_ATTR_H
#define SL_ONNX_ATTR_H

#include <stddef.h>
#include <stdint.h>

#include "onnx.pb-c.h"

/* The attribute called name, or NULL. */
const Onnx__AttributeProto *attr_find(const Onnx__NodeProto *n,
                                      const char *name);
int64_t attr_i(const Onnx__NodeProto *n, const char *name, int64_t def);
float attr_f(const Onnx__NodeProto *n, const char *name, float def);
/* Copy up to max ints; returns the count, -1 if absent, -2 if > max. */
int attr_ints(const Onnx__NodeProto *n, const char *name, int64_t *out,
              int max);
/* String attribute into buf (NUL-terminated), or def if absent. */
const char *attr_s(const Onnx__NodeProto *n, const char *name,
                   const char *def, char *buf, size_t len);

#endif
