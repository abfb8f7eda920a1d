/* Compacting a tensor along one axis (pruning surgery, optimiser state). */
#include "compressor/train/slice.h"

#include <string.h>

#include "runtime/common.h"

int tensor_slice_check(const Shape *s, const TensorSlice *ts,
                       const char *what)
{
    if (!s || !ts || ts->axis < 0 || ts->axis >= s->ndim) {
        sl_error("%s: slice axis %d out of range for a %d-d tensor; "
                 "fix the surgery plan",
                 what, ts ? ts->axis : -1, s ? s->ndim : 0);
        return ERR_ARG;
    }
    int64_t len = s->d[ts->axis];
    if (ts->n_keep < 1 || ts->n_keep > len || !ts->keep) {
        sl_error("%s: slice keeps %d of %lld indices along axis %d; "
                 "keep at least one and at most all",
                 what, ts->n_keep, (long long)len, ts->axis);
        return ERR_ARG;
    }
    for (int j = 0; j < ts->n_keep; j++) {
        int k = ts->keep[j];
        if (k < 0 || k >= len || (j > 0 && k <= ts->keep[j - 1])) {
            sl_error("%s: slice index keep[%d] = %d is out of range "
                     "[0,%lld) or not strictly increasing",
                     what, j, k, (long long)len);
            return ERR_ARG;
        }
    }
    return 0;
}

/* data: [outer, len, inner] viewed around `axis`; becomes
 * [outer, n_keep, inner].  keep[j] >= j and rows move towards the front,
 * so each destination block lies at or before its source: memmove in
 * increasing order never reads an already-overwritten block. */
int tensor_slice_apply(float **data, Shape *s, const TensorSlice *ts)
{
    int rc = tensor_slice_check(s, ts, "tensor slice");
    if (rc) return rc;
    if (!data || !*data) {
        sl_error("tensor slice: value %d has no data; only weights and "
                 "training state can be sliced",
                 ts->value);
        return ERR_ARG;
    }
    int64_t outer = 1, inner = 1, len = s->d[ts->axis];
    for (int i = 0; i < ts->axis; i++)
        outer *= s->d[i];
    for (int i = ts->axis + 1; i < s->ndim; i++)
        inner *= s->d[i];
    float *x = *data;
    for (int64_t o = 0; o < outer; o++)
        for (int j = 0; j < ts->n_keep; j++) {
            float *dst = x + (o * ts->n_keep + j) * inner;
            const float *src = x + (o * len + ts->keep[j]) * inner;
            if (dst != src) memmove(dst, src, (size_t)inner * sizeof *x);
        }
    s->d[ts->axis] = ts->n_keep;
    return 0;
}
