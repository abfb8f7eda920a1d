/* ONNX file -> graph IR: reading and decoding the protobuf, tensors
 * (raw, typed, external), the graph input and outputs, dead-node removal
 * and metadata.  The per-node folding and lowering lives in onnx_fold.c. */
#define _XOPEN_SOURCE 700
#include "onnx_import.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compressor/sha256.h"
#include "onnx_internal.h"
#include "onnx_meta.h"
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
static int read_external(OnnxCtx *c, const Onnx__TensorProto *tp, size_t want,
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
        if (end && (*end || end == e->value || off < 0 ||
                    (has_len && len < 0) || off == LLONG_MAX ||
                    len == LLONG_MAX)) {
            sl_error("tensor '%s' in '%s': bad external data %s '%s'; "
                     "re-export the model",
                     tn.s, c->path, sl_esc(e->key).s, sl_esc(e->value).s);
            return ERR_FORMAT;
        }
    }
    if (!loc || !*loc) {
        sl_error("tensor '%s' in '%s' has external data without a location; "
                 "re-export the model",
                 tn.s, c->path);
        return ERR_FORMAT;
    }
    SlEsc le = sl_esc(loc);
    /* External data must stay beside the model: an absolute path or ".."
     * could make a crafted model read any file on the machine. */
    if (loc[0] == '/' || strstr(loc, "..")) {
        sl_error("tensor '%s' in '%s': external data location '%s' is "
                 "outside the model's folder; refused (keep the data file "
                 "next to the .onnx)",
                 tn.s, c->path, le.s);
        return ERR_UNSUPPORTED;
    }
    if ((size_t)snprintf(full, sizeof full, "%s/%s", c->dir, loc) >=
            sizeof full ||
        !realpath(full, real)) {
        sl_error("tensor '%s' in '%s': cannot open external data file '%s'; "
                 "copy it next to the model",
                 tn.s, c->path, le.s);
        return ERR_IO;
    }
    size_t dl = strlen(c->dir);
    if (strncmp(real, c->dir, dl) != 0 || real[dl] != '/') {
        sl_error("tensor '%s' in '%s': external data '%s' resolves outside "
                 "the model's folder; refused",
                 tn.s, c->path, le.s);
        return ERR_UNSUPPORTED;
    }
    struct stat st;
    fd = open(real, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        sl_error("tensor '%s' in '%s': cannot read external data file '%s'",
                 tn.s, c->path, le.s);
        rc = ERR_IO;
        goto fail;
    }
    if (!has_len) len = (int64_t)want;
    if (off < 0 || (uint64_t)len != want || off > (int64_t)st.st_size ||
        len > (int64_t)st.st_size - off) {
        sl_error("tensor '%s' in '%s': external data offset %lld length %lld "
                 "does not fit file '%s' (%lld bytes) or the tensor's %zu "
                 "bytes; re-export the model",
                 tn.s, c->path, (long long)off, (long long)len, le.s,
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
            sl_error("tensor '%s' in '%s': short read from '%s'", tn.s,
                     c->path, le.s);
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

int ot_from_proto(OnnxCtx *c, const Onnx__TensorProto *tp, OTensor *t)
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
                 tn.s, c->path, dt);
        return ERR_UNSUPPORTED;
    }
    if (tp->n_dims > OT_MAX_DIMS) {
        sl_error("tensor '%s' in '%s' has %zu dims (at most %d)", tn.s,
                 c->path, tp->n_dims, OT_MAX_DIMS);
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
                tn.s, c->path);
            return ERR_FORMAT;
        }
        numel *= d;
    }
    size_t bytes = (size_t)numel * (size_t)es;
    if (tp->has_data_location &&
        tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        rc = read_external(c, tp, bytes, &ext); /* bounded by the file */
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
                     tn.s, c->path, bytes, tp->raw_data.len);
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
                 tn.s, c->path, (long long)numel, have);
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

/* ---- symbol table ---- */

int sym_find(const OnnxCtx *c, const char *name)
{
    /* Newest first: a later definition of a name shadows nothing in valid
     * SSA graphs, but this keeps aliases cheap to find. */
    for (int k = c->n_syms - 1; k >= 0; k--)
        if (!strcmp(c->syms[k].name, name)) return k;
    return -1;
}

static Sym *sym_new(OnnxCtx *c, const char *name)
{
    if (c->n_syms == c->cap_syms) {
        int cap = c->cap_syms ? 2 * c->cap_syms : 64;
        Sym *s = sl_realloc(c->syms, (size_t)cap * sizeof *s);
        if (!s) return NULL;
        c->syms = s;
        c->cap_syms = cap;
    }
    Sym *s = &c->syms[c->n_syms];
    memset(s, 0, sizeof *s);
    s->name = sl_strdup(name);
    if (!s->name) return NULL;
    s->value = -1;
    s->node = -1;
    c->n_syms++;
    return s;
}

int sym_add_const(OnnxCtx *c, const char *name, OTensor *t, int node)
{
    Sym *s = sym_new(c, name);
    if (!s) {
        ot_free(t);
        sl_error("out of memory importing '%s'", c->path);
        return ERR_NOMEM;
    }
    s->kind = SYM_CONST;
    s->t = *t;
    s->node = node;
    memset(t, 0, sizeof *t);
    return c->n_syms - 1;
}

int sym_add_value(OnnxCtx *c, const char *name, int value)
{
    Sym *s = sym_new(c, name);
    if (!s) {
        sl_error("out of memory importing '%s'", c->path);
        return ERR_NOMEM;
    }
    s->kind = SYM_VALUE;
    s->value = value;
    return c->n_syms - 1;
}

void onnx_ctx_free(OnnxCtx *c)
{
    for (int k = 0; k < c->n_syms; k++) {
        sl_free(c->syms[k].name);
        ot_free(&c->syms[k].t);
    }
    sl_free(c->syms);
    sl_free(c->dir);
    c->syms = NULL;
    c->dir = NULL;
    c->n_syms = c->cap_syms = 0;
}

/* ---- protobuf decoding through the project's allocator ---- */

static void *pb_alloc(void *data, size_t size)
{
    (void)data;
    return sl_alloc(size);
}

static void pb_free(void *data, void *p)
{
    (void)data;
    sl_free(p);
}

int onnx_looks_like_onnx(const uint8_t *data, size_t size)
{
    /* ModelProto fields 1 (ir_version, varint) and 7 (graph) lead every
     * exporter's output: tags 0x08 or 0x3a. */
    return size > 2 && (data[0] == 0x08 || data[0] == 0x3a);
}

/* ---- graph input ---- */

/* Add the single image input with its import shape. */
static int add_input(OnnxCtx *c, const OnnxImportOptions *opt)
{
    const Onnx__GraphProto *gp = c->gp;
    const Onnx__ValueInfoProto *in = NULL;
    int n_real = 0;
    for (size_t k = 0; k < gp->n_input; k++) {
        const Onnx__ValueInfoProto *v = gp->input[k];
        if (!v->name || sym_find(c, v->name) >= 0) continue; /* initializer */
        if (!in) in = v;
        n_real++;
    }
    if (n_real != 1) {
        sl_error("'%s' has %d graph inputs besides its weights; an image "
                 "network must have exactly one",
                 c->path, n_real);
        return n_real ? ERR_UNSUPPORTED : ERR_FORMAT;
    }
    Shape s = {0};
    SlEsc iname = sl_esc(in->name);
    const Onnx__TypeProto *tp = in->type;
    const Onnx__TensorShapeProto *sp =
        tp && tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE &&
                tp->tensor_type
            ? tp->tensor_type->shape
            : NULL;
    if (tp && tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE &&
        tp->tensor_type && tp->tensor_type->has_elem_type &&
        tp->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        sl_error("input '%s' of '%s' has element type %d; only float32 "
                 "inputs are supported (re-export with a float input)",
                 iname.s, c->path, (int)tp->tensor_type->elem_type);
        return ERR_UNSUPPORTED;
    }
    if (opt && opt->input_shape) {
        s = *opt->input_shape;
    } else {
        if (!sp || sp->n_dim < 3 || sp->n_dim > SL_MAX_DIMS) {
            sl_error("input '%s' of '%s' has %s; expected [N, C, (D,) H, W] "
                     "(give the input shape explicitly)",
                     iname.s, c->path,
                     sp ? "an unsupported rank" : "no shape");
            return ERR_UNSUPPORTED;
        }
        s.ndim = (int)sp->n_dim;
        for (int k = 0; k < s.ndim; k++) {
            const Onnx__TensorShapeProto__Dimension *d = sp->dim[k];
            int64_t v =
                d->value_case ==
                        ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                    ? d->dim_value
                    : 0;
            if (v <= 0) v = k == 0 ? 1 : k == 1 ? 0 : ONNX_DEFAULT_SPATIAL;
            s.d[k] = v;
        }
        if (s.d[1] == 0) {
            /* A dynamic channel count: the first convolution's weight says
             * how many channels the network really takes. */
            for (size_t k = 0; k < gp->n_node && !s.d[1]; k++) {
                const Onnx__NodeProto *n = gp->node[k];
                if (!n->op_type || strcmp(n->op_type, "Conv") ||
                    n->n_input < 2 || strcmp(n->input[0], in->name))
                    continue;
                int w = sym_find(c, n->input[1]);
                /* attr_i skips attributes without a name; the bound keeps
                 * the product exact (the range check below refuses it). */
                int64_t grp = attr_i(n, "group", 1);
                if (grp < 1 || grp > ONNX_MAX_DIM) grp = ONNX_MAX_DIM + 1;
                if (w >= 0 && c->syms[w].kind == SYM_CONST &&
                    c->syms[w].t.ndim >= 2 &&
                    c->syms[w].t.dims[1] <= ONNX_MAX_DIM)
                    s.d[1] = c->syms[w].t.dims[1] * grp;
            }
        }
    }
    if (s.ndim < 3 || s.ndim > SL_MAX_DIMS) {
        sl_error("input '%s' of '%s': rank %d; expected 3 to 5 dims", iname.s,
                 c->path, s.ndim);
        return ERR_UNSUPPORTED;
    }
    /* Each factor is at most 2^16 and the product stops growing past the
     * limit, so it cannot overflow (five dims of 2^16 would). */
    int64_t total = 1;
    for (int k = 0; k < s.ndim && total <= ONNX_MAX_INPUT_NUMEL; k++)
        total = s.d[k] > 0 && s.d[k] <= ONNX_MAX_DIM ? total * s.d[k] : total;
    if (total > ONNX_MAX_INPUT_NUMEL) {
        sl_error("input '%s' of '%s' has %lld elements; that is not a scan "
                 "(the file or the requested shape is wrong)",
                 iname.s, c->path, (long long)total);
        return ERR_SHAPE;
    }
    for (int k = 0; k < s.ndim; k++)
        if (s.d[k] > ONNX_MAX_DIM) {
            sl_error("input '%s' of '%s': dim %d is %lld (at most %d); the "
                     "model or the requested shape is wrong",
                     iname.s, c->path, k, (long long)s.d[k], ONNX_MAX_DIM);
            return ERR_SHAPE;
        } else if (s.d[k] <= 0) {
            sl_error("input '%s' of '%s': cannot determine dim %d (dynamic "
                     "channel count?); give the input shape explicitly",
                     iname.s, c->path, k);
            return ERR_SHAPE;
        }
    int v = graph_add_value(c->g, in->name, &s, NULL);
    if (v < 0) return v;
    c->g->input = v;
    return sym_add_value(c, in->name, v) < 0 ? ERR_NOMEM : 0;
}

/* ---- outputs and dead-node removal ---- */

static int64_t spatial_numel(const Shape *s)
{
    int64_t n = 1;
    for (int k = 2; k < s->ndim; k++)
        n *= s->d[k];
    return n;
}

static int set_outputs(OnnxCtx *c, const OnnxImportOptions *opt)
{
    const Onnx__GraphProto *gp = c->gp;
    Graph *g = c->g;
    int chosen = -1;
    int64_t best = -1;
    g->n_outputs = 0;
    if (gp->n_output == 0) {
        sl_error("'%s' declares no graph output; re-export the model",
                 c->path);
        return ERR_FORMAT;
    }
    for (size_t k = 0; k < gp->n_output; k++) {
        const char *name = gp->output[k]->name;
        if (!name || !*name) {
            sl_error("output #%zu of '%s' has no name; the file is "
                     "corrupted",
                     k, c->path);
            return ERR_FORMAT;
        }
        int s = sym_find(c, name);
        if (s < 0) {
            sl_error("output '%s' of '%s' is produced by no node; the file "
                     "is corrupted",
                     sl_esc(name).s, c->path);
            return ERR_FORMAT;
        }
        if (c->syms[s].kind != SYM_VALUE) {
            sl_error("output '%s' of '%s' is %s, not a network output; "
                     "re-export without it",
                     sl_esc(name).s, c->path,
                     c->syms[s].kind == SYM_CONST
                         ? "a constant"
                         : "a reshaped/transposed tensor");
            return ERR_UNSUPPORTED;
        }
        int v = c->syms[s].value;
        if (v == g->input) {
            sl_error("output '%s' of '%s' is the graph input itself",
                     sl_esc(name).s, c->path);
            return ERR_UNSUPPORTED;
        }
        int64_t n = spatial_numel(&g->values[v].shape);
        if (opt && opt->output_name) {
            if (chosen < 0 && !strcmp(opt->output_name, name))
                chosen = (int)k;
        } else if (n > best) {
            best = n;
            chosen = (int)k;
        }
    }
    if (chosen < 0) {
        sl_error("'%s' has no output named '%s'; its outputs are: %s%s%s%s",
                 c->path, sl_esc(opt->output_name).s,
                 sl_esc(gp->output[0]->name).s, gp->n_output > 1 ? ", " : "",
                 gp->n_output > 1 ? sl_esc(gp->output[1]->name).s : "",
                 gp->n_output > 2 ? ", ..." : "");
        return ERR_ARG;
    }
    if (gp->n_output > SL_MAX_OUTPUTS) {
        sl_error("'%s' has %zu outputs (at most %d supported)", c->path,
                 gp->n_output, SL_MAX_OUTPUTS);
        return ERR_UNSUPPORTED;
    }
    /* IR values carry the ONNX output names (an output reached through an
     * Identity or a folded layout change still has its producer's). */
    for (size_t k = 0; k < gp->n_output; k++) {
        Value *v =
            &g->values[c->syms[sym_find(c, gp->output[k]->name)].value];
        if (!strcmp(v->name, gp->output[k]->name)) continue;
        char *nm = sl_strdup(gp->output[k]->name);
        if (!nm) return ERR_NOMEM;
        sl_free(v->name);
        v->name = nm;
    }
    g->outputs[g->n_outputs++] =
        c->syms[sym_find(c, gp->output[chosen]->name)].value;
    for (size_t k = 0; k < gp->n_output; k++) {
        if ((int)k == chosen) continue;
        int v = c->syms[sym_find(c, gp->output[k]->name)].value;
        int dup = 0;
        for (int j = 0; j < g->n_outputs; j++)
            dup |= g->outputs[j] == v;
        if (!dup) g->outputs[g->n_outputs++] = v;
    }
    return 0;
}

/* Copy the nodes some output needs, and the values they touch, from src
 * into the empty dst (weights move, not copy). */
static int graph_compact(Graph *src, Graph *dst)
{
    int rc = ERR_NOMEM;
    char *live = sl_calloc((size_t)src->n_nodes + 1, 1);
    int *vmap = sl_alloc(((size_t)src->n_values + 1) * sizeof(int));
    if (!live || !vmap) {
        sl_error("out of memory compacting the imported graph");
        goto fail;
    }
    for (int k = 0; k < src->n_values; k++)
        vmap[k] = -1;
    /* Mark backwards: nodes are in topological order. */
    for (int k = 0; k < src->n_outputs; k++) {
        int p = src->values[src->outputs[k]].producer;
        if (p >= 0) live[p] = 1;
    }
    for (int k = src->n_nodes - 1; k >= 0; k--) {
        if (!live[k]) continue;
        const Node *n = &src->nodes[k];
        for (int j = 0; j < n->n_in; j++) {
            int p = src->values[n->in[j]].producer;
            if (p >= 0) live[p] = 1;
        }
    }
    Value *iv = &src->values[src->input];
    rc = graph_add_value(dst, iv->name, &iv->shape, NULL);
    if (rc < 0) goto fail;
    vmap[src->input] = rc;
    dst->input = rc;
    for (int k = 0; k < src->n_nodes; k++) {
        if (!live[k]) continue;
        Node n = src->nodes[k];
        for (int j = 0; j <= n.n_in; j++) {
            int v = j < n.n_in ? n.in[j] : n.out;
            if (vmap[v] >= 0) continue;
            Value *sv = &src->values[v];
            float *data = sv->data;
            sv->data = NULL; /* moved: dst owns it even on failure */
            rc = graph_add_value(dst, sv->name, &sv->shape, data);
            if (rc < 0) goto fail;
            vmap[v] = rc;
        }
        for (int j = 0; j < n.n_in; j++)
            n.in[j] = vmap[n.in[j]];
        n.out = vmap[n.out];
        rc = graph_add_node(dst, &n);
        if (rc < 0) goto fail;
    }
    for (int k = 0; k < src->n_outputs; k++)
        dst->outputs[k] = vmap[src->outputs[k]];
    dst->n_outputs = src->n_outputs;
    rc = 0;
fail:
    sl_free(live);
    sl_free(vmap);
    return rc;
}

/* ---- driver ---- */

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int opset_of(const Onnx__ModelProto *m)
{
    for (size_t k = 0; k < m->n_opset_import; k++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[k];
        if ((!o->domain || !*o->domain || !strcmp(o->domain, "ai.onnx")) &&
            o->has_version)
            return (int)o->version;
    }
    return -1;
}

int onnx_import(const char *path, const OnnxImportOptions *opt, Graph *g)
{
    uint8_t *bytes = NULL;
    size_t size = 0;
    Onnx__ModelProto *m = NULL;
    ProtobufCAllocator al = {pb_alloc, pb_free, NULL};
    OnnxCtx c = {0};
    Graph tmp;
    int rc;
    graph_init(&tmp);
    c.path = path;
    c.g = &tmp;
    rc = sl_read_file(path, &bytes, &size);
    if (rc) {
        if (!sl_error_reported())
            sl_error("cannot read '%s'; check the path", path);
        goto fail;
    }
    m = size ? onnx__model_proto__unpack(&al, size, bytes) : NULL;
    if (!m || !m->graph || m->graph->n_node == 0) {
        sl_error("'%s' is not an ONNX model (%s); export it with "
                 "torch.onnx.export",
                 path,
                 !size ? "empty file"
                 : !m  ? "not a valid protobuf ModelProto"
                       : "no graph or no nodes");
        rc = ERR_FORMAT;
        goto fail;
    }
    c.opset = opset_of(m);
    if (c.opset < 7 || c.opset > 18) {
        sl_error("'%s' uses ONNX opset %d; supported are 7 to 18 (re-export "
                 "with opset_version=17)",
                 path, c.opset);
        rc = ERR_UNSUPPORTED;
        goto fail;
    }
    c.gp = m->graph;
    {
        char dirbuf[PATH_MAX], real[PATH_MAX];
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path) : 0;
        if (dl >= sizeof dirbuf) dl = sizeof dirbuf - 1;
        memcpy(dirbuf, path, dl);
        dirbuf[dl] = '\0';
        if (!slash)
            strcpy(dirbuf, ".");
        else if (dl == 0)
            strcpy(dirbuf, "/");
        if (!realpath(dirbuf, real)) {
            sl_error("cannot resolve the folder of '%s'", path);
            rc = ERR_IO;
            goto fail;
        }
        c.dir = sl_strdup(real);
        if (!c.dir) {
            rc = ERR_NOMEM;
            goto fail;
        }
    }
    for (size_t k = 0; k < m->graph->n_initializer; k++) {
        const Onnx__TensorProto *tp = m->graph->initializer[k];
        OTensor t;
        rc = ot_from_proto(&c, tp, &t);
        if (rc) goto fail;
        rc = sym_add_const(&c, tp->name ? tp->name : "", &t, -1);
        if (rc < 0) goto fail;
    }
    rc = add_input(&c, opt);
    if (rc) goto fail;
    rc = onnx_lower(&c);
    if (rc) goto fail;
    rc = set_outputs(&c, opt);
    if (rc) goto fail;
    rc = graph_compact(&tmp, g);
    if (rc) goto fail;
    g->meta.dims = g->values[g->input].shape.ndim - 2;
    sha256(bytes, size, g->meta.source_sha256);
    g->meta.source_name = sl_strdup(base_name(path));
    if (!g->meta.source_name) {
        rc = ERR_NOMEM;
        goto fail;
    }
    rc = graph_validate(g, path);
    if (rc) goto fail;
    {
        Shape in = g->values[g->input].shape;
        rc = graph_infer_shapes(g, &in);
        if (rc) goto fail;
    }
    /* A Sauron export carries its ModelMeta (absent: nothing changes). */
    rc = onnx_meta_decode(m, path, g);
    if (rc) goto fail;
    rc = 0;
fail:
    if (rc) {
        if (rc == ERR_NOMEM && !sl_error_reported())
            sl_error("out of memory importing '%s'", path);
        graph_free(g);
        graph_init(g);
    }
    graph_free(&tmp);
    onnx_ctx_free(&c);
    if (m) onnx__model_proto__free_unpacked(m, &al);
    sl_free(bytes);
    return rc;
}
