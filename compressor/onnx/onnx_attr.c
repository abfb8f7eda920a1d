/* NodeProto attributes by name, with defaults.  Attributes without a
 * name (possible in a corrupted file) are never matched. */
#include "onnx_attr.h"

#include <string.h>

const Onnx__AttributeProto *attr_find(const Onnx__NodeProto *n,
                                      const char *name)
{
    for (size_t k = 0; k < n->n_attribute; k++)
        if (n->attribute[k]->name && !strcmp(n->attribute[k]->name, name))
            return n->attribute[k];
    return NULL;
}

int64_t attr_i(const Onnx__NodeProto *n, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    return a ? a->i : def;
}

float attr_f(const Onnx__NodeProto *n, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    return a ? a->f : def;
}

int attr_ints(const Onnx__NodeProto *n, const char *name, int64_t *out,
              int max)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    if (!a) return -1;
    if (a->n_ints > (size_t)max) return -2;
    for (size_t k = 0; k < a->n_ints; k++)
        out[k] = a->ints[k];
    return (int)a->n_ints;
}

const char *attr_s(const Onnx__NodeProto *n, const char *name,
                   const char *def, char *buf, size_t len)
{
    const Onnx__AttributeProto *a = attr_find(n, name);
    if (!a || !a->has_s) return def;
    size_t m = a->s.len < len - 1 ? a->s.len : len - 1;
    if (m) memcpy(buf, a->s.data, m); /* an empty string may have no data */
    buf[m] = '\0';
    return buf;
}
