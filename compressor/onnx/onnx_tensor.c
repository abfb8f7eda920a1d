/* Constant tensors while importing: OTensor storage, decoding a
 * TensorProto (raw, typed fields, external data beside the model) and the
 * Reshape shape rule shared by folding and lowering.  Every size a file
 * claims is checked against the data it holds before anything is
 * allocated for it. */
#define _XOPEN_SOURCE 700
#include "onnx_tensor.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/common.h"

/* Largest tensor we accept: 2^31 elements, far beyond any U-Net weight and
 * small enough that byte counts never overflow. */
#define OT_MAX_NUMEL ((int64_t)1 << 31)

/* ---- tensors ---- */

void ot_free(OTensor *t)
{
    sl_free(t->f);
    sl_free(t->i);
    t->f = NULL;
    t->i = NULL;
}

int ot_alloc(OTensor *t, int ndim, const int64_t *dims, int is_int)
{
    int64_t n = 1;
    memset(t, 0, sizeof *t);
    if (ndim < 0 || ndim > OT_MAX_DIMS) return ERR_UNSUPPORTED;
    for (int k = 0; k < ndim; k++) {
        if (dims[k] < 0 || (dims[k] > 0 && n > OT_MAX_NUMEL / dims[k]))
            return ERR_FORMAT;
        n *= dims[k];
        t->dims[k] = dims[k];
    }
    t->ndim = ndim;
    t->numel = n;
    t->is_int = is_int;
    if (is_int)
        t->i = sl_calloc((size_t)n + 1, sizeof(int64_t));
    else
        t->f = sl_calloc((size_t)n + 1, sizeof(float));
    if (!t->i && !t->f) {
        sl_error("out of memory for a %lld-element tensor", (long long)n);
        return ERR_NOMEM;
    }
    return 0;
}

double ot_get(const OTensor *t, int64_t k)
{
    return t->is_int ? (double)t->i[k] : (double)t->f[k];
}

int64_t ot_d2i(double v)
{
    /* float -> int64 is undefined out of range; constants can be garbage. */
    if (!(v > -9.2e18 && v < 9.2e18)) return v > 0 ? INT64_MAX : INT64_MIN;
    return (int64_t)v;
}

int64_t ot_geti(const OTensor *t, int64_t k)
{
    return t->is_int ? t->i[k] : ot_d2i((double)t->f[k]);
}

/* IEEE half / bfloat16 bits -> float. */
static float half_to_float(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

static float bf16_to_float(uint16_t h)
{
    uint8_t b[4];
    float v;
    uint32_t u = (uint32_t)h << 16;
    sl_wr32(b, u);
    /* Host float layout is little-endian on every target we build for. */
    memcpy(&v, b, 4);
    return v;
}

static float f32_from_le(const uint8_t *p)
{
    uint32_t u = sl_rd32(p);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

static double f64_from_le(const uint8_t *p)
{
    uint64_t u = sl_rd64(p);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* Bytes per element of a data type, 0 if we do not decode it. */
static int dtype_size(int dt, int *is_int)
{
    *is_int = 1;
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
        *is_int = 0;
        return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
        *is_int = 0;
        return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
        *is_int = 0;
        return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
        return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
        return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
        return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
        return 1;
    default:
        return 0;
    }
}

/* Decode numel little-endian elements of type dt from bytes. */
static void decode_raw(OTensor *t, int dt, const uint8_t *p)
{
    for (int64_t k = 0; k < t->numel; k++) {
        switch (dt) {
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
            t->f[k] = f32_from_le(p + 4 * k);
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
            t->f[k] = (float)f64_from_le(p + 8 * k);
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
            t->f[k] = half_to_float((uint16_t)(p[2 * k] | p[2 * k + 1] << 8));
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
            t->f[k] = bf16_to_float((uint16_t)(p[2 * k] | p[2 * k + 1] << 8));
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
        case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
            t->i[k] = (int64_t)sl_rd64(p + 8 * k);
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
            t->i[k] = (int32_t)sl_rd32(p + 4 * k);
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
            t->i[k] = sl_rd32(p + 4 * k);
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
            t->i[k] = (int16_t)(uint16_t)(p[2 * k] | p[2 * k + 1] << 8);
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
            t->i[k] = p[2 * k] | p[2 * k + 1] << 8;
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
            t->i[k] = (int8_t)p[k];
            break;
        default:
            t->i[k] = p[k];
            break; /* UINT8, BOOL */
        }
    }
}

/* Read [offset, offset+len) of an external data file into a new buffer,
 * refusing locations outside the model's folder. */
static int read_external(const char *path, const char *dir,
                         const Onnx__TensorProto *tp, size_t want,
                         uint8_t **out)
{
    const char *loc = NULL;
    int64_t off = 0, len = -1;
    int has_len = 0;
    char full[PATH_MAX], real[PATH_MAX];
    int fd = -1, rc = ERR_FORMAT;
    uint8_t *buf = NULL;
    /* Names and strings from the file are echoed escaped (sl_esc). */
    SlEsc tn = sl_esc(tp->name && *tp->name ? tp->name : "(unnamed)");
    for (size_t k = 0; k < tp->n_external_data; k++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[k];
        if (!e->key || !e->value) continue;
        char *end = NULL;
        if (!strcmp(e->key, "location"))
            loc = e->value;
        else if (!strcmp(e->key, "offset"))
            off = strtoll(e->value, &end, 10);
        else if (!strcmp(e->key, "length")) {
            len = strtoll(e->value, &end, 10);
            has_len = 1;
        }
        /* A number that does not parse, is negative or overflows (strtoll
         * saturates) is a corrupted entry, not an absent one. */
        if (end &&
            (*end || end == e->value || off < 0 || (has_len && len < 0) ||
             off == LLONG_MAX || len == LLONG_MAX)) {
            sl_error("tensor '%s' in '%s': bad external data %s '%s'; "
                     "re-export the model",
                     tn.s, path, sl_esc(e->key).s, sl_esc(e->value).s);
            return ERR_FORMAT;
        }
    }
    if (!loc || !*loc) {
        sl_error("tensor '%s' in '%s' has external data without a location; "
                 "re-export the model",
                 tn.s, path);
        return ERR_FORMAT;
    }
    SlEsc le = sl_esc(loc);
    /* External data must stay beside the model: an absolute path or ".."
     * could make a crafted model read any file on the machine. */
    if (loc[0] == '/' || strstr(loc, "..")) {
        sl_error("tensor '%s' in '%s': external data location '%s' is "
                 "outside the model's folder; refused (keep the data file "
                 "next to the .onnx)",
                 tn.s, path, le.s);
        return ERR_UNSUPPORTED;
    }
    if ((size_t)snprintf(full, sizeof full, "%s/%s", dir, loc) >=
            sizeof full ||
        !realpath(full, real)) {
        sl_error("tensor '%s' in '%s': cannot open external data file '%s'; "
                 "copy it next to the model",
                 tn.s, path, le.s);
        return ERR_IO;
    }
    size_t dl = strlen(dir);
    if (strncmp(real, dir, dl) != 0 || real[dl] != '/') {
        sl_error("tensor '%s' in '%s': external data '%s' resolves outside "
                 "the model's folder; refused",
                 tn.s, path, le.s);
        return ERR_UNSUPPORTED;
    }
    struct stat st;
    fd = open(real, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        sl_error("tensor '%s' in '%s': cannot read external data file '%s'",
                 tn.s, path, le.s);
        rc = ERR_IO;
        goto fail;
    }
    if (!has_len) len = (int64_t)want;
    if (off < 0 || (uint64_t)len != want || off > (int64_t)st.st_size ||
        len > (int64_t)st.st_size - off) {
        sl_error("tensor '%s' in '%s': external data offset %lld length %lld "
                 "does not fit file '%s' (%lld bytes) or the tensor's %zu "
                 "bytes; re-export the model",
                 tn.s, path, (long long)off, (long long)len, le.s,
                 (long long)st.st_size, want);
        goto fail;
    }
    buf = sl_alloc(want + 1);
    if (!buf) {
        rc = ERR_NOMEM;
        sl_error("out of memory reading external data of '%s'", tn.s);
        goto fail;
    }
    for (size_t got = 0; got < want;) {
        ssize_t r =
            pread(fd, buf + got, want - got, (off_t)(off + (int64_t)got));
        if (r <= 0) {
            sl_error("tensor '%s' in '%s': short read from '%s'", tn.s, path,
                     le.s);
            rc = ERR_IO;
            goto fail;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    return 0;
fail:
    if (fd >= 0) close(fd);
    sl_free(buf);
    return rc;
}

int ot_from_proto(const Onnx__TensorProto *tp, const char *path,
                  const char *dir, OTensor *t)
{
    int is_int, rc;
    int dt = tp->has_data_type ? tp->data_type : 0;
    int es = dtype_size(dt, &is_int);
    SlEsc tn = sl_esc(tp->name && *tp->name ? tp->name : "(unnamed)");
    uint8_t *ext = NULL;
    memset(t, 0, sizeof *t);
    if (!es) {
        sl_error("tensor '%s' in '%s' has data type %d which is not "
                 "supported (use float32)",
                 tn.s, path, dt);
        return ERR_UNSUPPORTED;
    }
    if (tp->n_dims > OT_MAX_DIMS) {
        sl_error("tensor '%s' in '%s' has %zu dims (at most %d)", tn.s, path,
                 tp->n_dims, OT_MAX_DIMS);
        return ERR_UNSUPPORTED;
    }
    /* Check the declared size against the data actually present before
     * allocating anything: a crafted header must not make us allocate. */
    int64_t numel = 1;
    for (size_t k = 0; k < tp->n_dims; k++) {
        int64_t d = tp->dims[k];
        if (d < 0 || (d > 0 && numel > OT_MAX_NUMEL / d)) {
            sl_error(
                "tensor '%s' in '%s' has negative or huge dims; the file "
                "is corrupted",
                tn.s, path);
            return ERR_FORMAT;
        }
        numel *= d;
    }
    size_t bytes = (size_t)numel * (size_t)es;
    if (tp->has_data_location &&
        tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        rc = read_external(path, dir, tp, bytes,
                           &ext); /* bounded by the file */
        if (rc) return rc;
        rc = ot_alloc(t, (int)tp->n_dims, tp->dims, is_int);
        if (!rc) decode_raw(t, dt, ext);
        sl_free(ext);
        return rc;
    }
    if (tp->has_raw_data) {
        if (tp->raw_data.len != bytes) {
            sl_error("tensor '%s' in '%s': dims need %zu bytes but raw data "
                     "has %zu; the file is corrupted",
                     tn.s, path, bytes, tp->raw_data.len);
            return ERR_FORMAT;
        }
        rc = ot_alloc(t, (int)tp->n_dims, tp->dims, is_int);
        if (!rc) decode_raw(t, dt, tp->raw_data.data);
        return rc;
    }
    size_t have;
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
        have = tp->n_float_data;
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
        have = tp->n_double_data;
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
        have = tp->n_int64_data;
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
        have = tp->n_uint64_data;
        break;
    default:
        have = tp->n_int32_data;
        break;
    }
    if (have != (size_t)numel) {
        sl_error("tensor '%s' in '%s': dims say %lld elements but it holds "
                 "%zu; the file is corrupted",
                 tn.s, path, (long long)numel, have);
        return ERR_FORMAT;
    }
    rc = ot_alloc(t, (int)tp->n_dims, tp->dims, is_int);
    if (rc) return rc;
    for (int64_t k = 0; k < t->numel; k++) {
        switch (dt) {
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
            t->f[k] = tp->float_data[k];
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
            t->f[k] = (float)tp->double_data[k];
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
            t->f[k] = half_to_float((uint16_t)tp->int32_data[k]);
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
            t->f[k] = bf16_to_float((uint16_t)tp->int32_data[k]);
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
            t->i[k] = tp->int64_data[k];
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
        case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
            t->i[k] = (int64_t)tp->uint64_data[k];
            break;
        default:
            t->i[k] = tp->int32_data[k];
            break;
        }
    }
    return 0;
}

int onnx_reshape_dims(const int64_t *in, int in_nd, const OTensor *shape,
                      int allowzero, int64_t *out, int *out_nd)
{
    int64_t known = 1, in_numel = 1;
    int neg = -1;
    if (shape->ndim > 1 || shape->numel > OT_MAX_DIMS) return -1;
    for (int k = 0; k < in_nd; k++)
        in_numel *= in[k];
    *out_nd = (int)shape->numel;
    for (int k = 0; k < *out_nd; k++) {
        int64_t v = ot_geti(shape, k);
        if (v == 0 && !allowzero) {
            if (k >= in_nd) return -1;
            v = in[k];
        }
        if (v == -1) {
            if (neg >= 0) return -1;
            neg = k;
            v = 1;
        } else if (v < 0) {
            return -1;
        }
        /* Bound before multiplying: the shape may come from a corrupted
         * constant. */
        if (v > OT_MAX_DIM_VALUE || (v && known > ((int64_t)1 << 62) / v))
            return -1;
        out[k] = v;
        known *= v;
    }
    if (neg >= 0) {
        if (known == 0 || in_numel % known) return -1;
        out[neg] = in_numel / known;
    } else if (known != in_numel) {
        return -1;
    }
    return 0;
}
