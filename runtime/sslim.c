/* .sslim v1 reader and writer.
 *
 * File layout (all integers little-endian):
 *
 *   header, 32 bytes:
 *     0  magic "\x89SSLIM\r\n"  (the \r\n catches text-mode mangling)
 *     8  u32 major, 12 u32 minor
 *    16  u32 section count
 *    20  u32 CRC-32 of bytes [0,20) and [24, end of section table)
 *    24  u64 file size
 *   section table, 24 bytes per section, in file order:
 *     char tag[4], u32 CRC-32 of the section, u64 offset, u64 size
 *   sections, in table order, gaps zero-filled; the last ends the file:
 *     META  model metadata (ModelMeta)
 *     GRPH  values and nodes
 *     WGHT  weights, 64-byte aligned in the file, float32
 *   Unknown tags are skipped (after their CRC is checked), so a minor
 *   version can add sections without breaking older readers.
 *
 * Strings are u32 length + bytes (no NUL); length 0xFFFFFFFF is NULL.
 * Every byte of a valid file is covered by a checksum or checked to be
 * zero, so any single-byte corruption is detected.
 */
#include "sslim.h"

#include <stdio.h>
#include <string.h>

#include "common.h"

static const uint8_t MAGIC[8] = {0x89, 'S', 'S', 'L', 'I', 'M', '\r', '\n'};

#define HEADER_BYTES 32
#define SECTION_BYTES 24
#define MAX_SECTIONS 64
#define WEIGHT_ALIGN 64
#define NULL_STR 0xFFFFFFFFu
/* Bounds on counts read from a file, before anything is allocated. */
#define MAX_STRING (16u << 20)
#define MAX_CLASSES 65536
#define MAX_MODALITIES 1024
#define MAX_PATCH 65536

enum { SEC_META, SEC_GRAPH, SEC_WEIGHTS, N_SEC };
static const char TAGS[N_SEC][5] = {"META", "GRPH", "WGHT"};
static const char *const SEC_NAMES[N_SEC] = {"metadata", "graph", "weights"};

/* ============================================================= writing */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int err; /* sticky: ERR_NOMEM once any append failed */
} Buf;

static void buf_put(Buf *b, const void *src, size_t n)
{
    if (b->err) return;
    if (n > b->cap - b->n) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc - b->n < n) {
            if (nc > SIZE_MAX / 2) {
                b->err = ERR_NOMEM;
                return;
            }
            nc *= 2;
        }
        uint8_t *p = sl_realloc(b->p, nc);
        if (!p) {
            b->err = ERR_NOMEM;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_u32(Buf *b, uint32_t v)
{
    uint8_t t[4];
    sl_wr32(t, v);
    buf_put(b, t, 4);
}
static void put_i32(Buf *b, int v)
{
    put_u32(b, (uint32_t)v);
}
static void put_u64(Buf *b, uint64_t v)
{
    uint8_t t[8];
    sl_wr64(t, v);
    buf_put(b, t, 8);
}
static void put_f32(Buf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_f64(Buf *b, double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    put_u64(b, u);
}
static void put_str(Buf *b, const char *s)
{
    if (!s) {
        put_u32(b, NULL_STR);
        return;
    }
    size_t n = strlen(s);
    if (n > MAX_STRING) n = MAX_STRING; /* meta_ok rejected longer ones */
    put_u32(b, (uint32_t)n);
    buf_put(b, s, n);
}
static void put_ints(Buf *b, const int *v, int n)
{
    for (int i = 0; i < n; i++)
        put_i32(b, v[i]);
}

static int str_ok(const char *s)
{
    return !s || strlen(s) <= MAX_STRING;
}

/* Metadata a reader accepts; the writer refuses anything else so that a
 * file we write can always be read back. */
static int meta_ok(const ModelMeta *m)
{
    if (m->n_classes < 0 || m->n_classes > MAX_CLASSES ||
        m->n_modalities < 0 || m->n_modalities > MAX_MODALITIES)
        return 0;
    if (m->dims < 0 || m->dims > 3) return 0; /* 0: not set */
    if (m->axis < 0 || m->axis > 2) return 0;
    if (m->order != ORDER_NNUNET && m->order != ORDER_NIBABEL) return 0;
    for (int i = 0; i < 3; i++)
        if (m->patch[i] < 0 || m->patch[i] > MAX_PATCH) return 0;
    for (int i = 0; m->class_names && i < m->n_classes; i++)
        if (!str_ok(m->class_names[i])) return 0;
    for (int i = 0; m->modality_names && i < m->n_modalities; i++)
        if (!str_ok(m->modality_names[i])) return 0;
    for (int i = 0; m->normalize && i < m->n_modalities; i++)
        if (m->normalize[i].kind < NORMALIZE_NONE ||
            m->normalize[i].kind > NORMALIZE_CT)
            return 0;
    return str_ok(m->source_name) && str_ok(m->notes);
}

static void put_meta(Buf *b, const ModelMeta *m)
{
    put_i32(b, m->n_classes);
    for (int i = 0; i < m->n_classes; i++)
        put_str(b, m->class_names ? m->class_names[i] : NULL);
    put_i32(b, m->n_modalities);
    for (int i = 0; i < m->n_modalities; i++) {
        put_str(b, m->modality_names ? m->modality_names[i] : NULL);
        Normalize nz = {NORMALIZE_NONE, 0, 0};
        if (m->normalize) nz = m->normalize[i];
        put_u32(b, (uint32_t)nz.kind);
        put_f32(b, nz.lo);
        put_f32(b, nz.hi);
    }
    put_i32(b, m->dims);
    put_i32(b, m->axis);
    put_ints(b, m->patch, 3);
    put_u32(b, (uint32_t)m->order);
    buf_put(b, m->source_sha256, 32);
    put_str(b, m->source_name);
    put_str(b, m->notes);
}

static void put_geometry(Buf *b, int nsp, const int *kernel,
                         const int *stride, const int *dilation,
                         const int *pad_lo, const int *pad_hi)
{
    put_i32(b, nsp);
    put_ints(b, kernel, 3);
    put_ints(b, stride, 3);
    put_ints(b, dilation, 3);
    put_ints(b, pad_lo, 3);
    put_ints(b, pad_hi, 3);
}

static void put_params(Buf *b, const Node *n)
{
    switch (n->op) {
    case OP_CONV:
    case OP_CONV_TRANSPOSE: {
        const ConvParams *p = &n->p.conv;
        put_geometry(b, p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                     p->pad_hi);
        put_ints(b, p->out_pad, 3);
        put_i32(b, p->group);
        break;
    }
    case OP_INSTANCE_NORM:
    case OP_BATCH_NORM:
        put_f32(b, n->p.norm.eps);
        put_f32(b, n->p.norm.momentum);
        put_i32(b, n->p.norm.use_batch_stats);
        break;
    case OP_LEAKY_RELU:
        put_f32(b, n->p.act.alpha);
        break;
    case OP_SOFTMAX:
        put_i32(b, n->p.softmax.axis);
        put_i32(b, n->p.softmax.flatten);
        break;
    case OP_CONCAT:
        put_i32(b, n->p.concat.axis);
        break;
    case OP_MAX_POOL:
    case OP_AVG_POOL: {
        const PoolParams *p = &n->p.pool;
        put_geometry(b, p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                     p->pad_hi);
        put_i32(b, p->ceil_mode);
        put_i32(b, p->count_include_pad);
        break;
    }
    case OP_RESIZE: {
        const ResizeParams *p = &n->p.resize;
        put_i32(b, p->nsp);
        put_u32(b, (uint32_t)p->mode);
        put_u32(b, (uint32_t)p->coord);
        put_u32(b, (uint32_t)p->nearest);
        for (int i = 0; i < 3; i++)
            put_f64(b, p->scale[i]);
        break;
    }
    default:
        break; /* Relu, Sigmoid, Add, Identity: no parameters */
    }
}

/* GRPH section; weight offsets are relative to the WGHT section, which
 * holds each weight at the next multiple of WEIGHT_ALIGN. */
static void put_graph(Buf *b, const Graph *g, size_t *weights_bytes)
{
    size_t woff = 0;
    put_i32(b, g->n_values);
    for (int i = 0; i < g->n_values; i++) {
        const Value *v = &g->values[i];
        put_str(b, v->name);
        put_i32(b, v->shape.ndim);
        for (int k = 0; k < v->shape.ndim; k++)
            put_u64(b, (uint64_t)v->shape.d[k]);
        put_u32(b, v->data != NULL);
        if (v->data) {
            size_t nb = (size_t)shape_numel(&v->shape) * sizeof(float);
            put_u64(b, woff);
            put_u64(b, nb);
            woff += (nb + WEIGHT_ALIGN - 1) & ~(size_t)(WEIGHT_ALIGN - 1);
        }
    }
    put_i32(b, g->n_nodes);
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        put_u32(b, (uint32_t)n->op);
        put_str(b, n->name);
        put_i32(b, n->n_in);
        put_ints(b, n->in, n->n_in);
        put_i32(b, n->out);
        put_params(b, n);
    }
    put_i32(b, g->input);
    put_i32(b, g->n_outputs);
    put_ints(b, g->outputs, g->n_outputs);
    *weights_bytes = woff;
}

static size_t align_up(size_t x)
{
    return (x + WEIGHT_ALIGN - 1) & ~(size_t)(WEIGHT_ALIGN - 1);
}

int sslim_encode(const Graph *g, uint8_t **data, size_t *size)
{
    Buf meta = {0}, graph = {0};
    uint8_t *out = NULL;
    int rc;
    *data = NULL;
    *size = 0;
    if ((rc = graph_validate(g, "model to write"))) goto fail;
    rc = ERR_ARG;
    if (!meta_ok(&g->meta)) {
        sl_error("model metadata out of range (classes, modalities, dims, "
                 "axis, patch, order or normalisation); fix the metadata");
        goto fail;
    }
    size_t wbytes;
    put_meta(&meta, &g->meta);
    put_graph(&graph, g, &wbytes);
    rc = ERR_NOMEM;
    if (meta.err || graph.err) {
        sl_error("out of memory encoding the model");
        goto fail;
    }
    size_t off_meta = HEADER_BYTES + N_SEC * SECTION_BYTES;
    size_t off_graph = off_meta + meta.n;
    size_t off_w = align_up(off_graph + graph.n);
    size_t total = off_w + wbytes;
    out = sl_calloc(1, total);
    if (!out) {
        sl_error("out of memory encoding the model (%zu bytes)", total);
        goto fail;
    }
    memcpy(out + off_meta, meta.p, meta.n);
    memcpy(out + off_graph, graph.p, graph.n);
    size_t w = off_w;
    for (int i = 0; i < g->n_values; i++) {
        const Value *v = &g->values[i];
        if (!v->data) continue;
        size_t ne = (size_t)shape_numel(&v->shape);
        for (size_t k = 0; k < ne; k++) {
            uint32_t u;
            memcpy(&u, &v->data[k], 4);
            sl_wr32(out + w + 4 * k, u);
        }
        w += align_up(ne * sizeof(float));
    }
    CHECK(w == total);
    const size_t offs[N_SEC] = {off_meta, off_graph, off_w};
    const size_t sizes[N_SEC] = {meta.n, graph.n, wbytes};
    memcpy(out, MAGIC, 8);
    sl_wr32(out + 8, SSLIM_MAJOR);
    sl_wr32(out + 12, SSLIM_MINOR);
    sl_wr32(out + 16, N_SEC);
    sl_wr64(out + 24, total);
    for (int s = 0; s < N_SEC; s++) {
        uint8_t *t = out + HEADER_BYTES + s * SECTION_BYTES;
        memcpy(t, TAGS[s], 4);
        sl_wr32(t + 4, sl_crc32(0, out + offs[s], sizes[s]));
        sl_wr64(t + 8, offs[s]);
        sl_wr64(t + 16, sizes[s]);
    }
    uint32_t hc = sl_crc32(0, out, 20);
    hc = sl_crc32(hc, out + 24, off_meta - 24);
    sl_wr32(out + 20, hc);
    *data = out;
    *size = total;
    out = NULL;
    rc = SL_OK;
fail:
    sl_free(meta.p);
    sl_free(graph.p);
    sl_free(out);
    return rc;
}

int sslim_write(const Graph *g, const char *path, int force)
{
    uint8_t *data = NULL;
    size_t size = 0;
    int rc;
    if (!force && sl_file_exists(path)) {
        sl_error("output '%s' exists; pass --force to overwrite it", path);
        return ERR_EXISTS;
    }
    if ((rc = sslim_encode(g, &data, &size)) == SL_OK)
        rc = sl_write_file_atomic(path, data, size, force);
    sl_free(data);
    return rc;
}

/* ============================================================= reading */

typedef struct {
    const uint8_t *p;
    size_t n, pos;
    int err; /* sticky: ERR_FORMAT (ran past the end) or ERR_NOMEM */
} Rd;

static const uint8_t *get_bytes(Rd *r, size_t n)
{
    if (r->err || n > r->n - r->pos) {
        if (!r->err) r->err = ERR_FORMAT;
        return NULL;
    }
    const uint8_t *q = r->p + r->pos;
    r->pos += n;
    return q;
}
static uint32_t get_u32(Rd *r)
{
    const uint8_t *q = get_bytes(r, 4);
    return q ? sl_rd32(q) : 0;
}
static int get_i32(Rd *r)
{
    return (int)(int32_t)get_u32(r);
}
static uint64_t get_u64(Rd *r)
{
    const uint8_t *q = get_bytes(r, 8);
    return q ? sl_rd64(q) : 0;
}
static float get_f32(Rd *r)
{
    uint32_t u = get_u32(r);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double get_f64(Rd *r)
{
    uint64_t u = get_u64(r);
    double f;
    memcpy(&f, &u, 8);
    return f;
}
static void get_ints(Rd *r, int *v, int n)
{
    for (int i = 0; i < n; i++)
        v[i] = get_i32(r);
}
/* A count that cannot exceed what the remaining bytes could hold at
 * min_bytes per item, so a tiny file never makes us allocate much. */
static int get_count(Rd *r, int max, size_t min_bytes)
{
    int c = get_i32(r);
    if (r->err) return 0;
    if (c < 0 || c > max || (size_t)c > (r->n - r->pos) / min_bytes) {
        r->err = ERR_FORMAT;
        return 0;
    }
    return c;
}
/* Returns a new string (or NULL for the NULL marker, or on error). */
static char *get_str(Rd *r)
{
    uint32_t n = get_u32(r);
    if (r->err || n == NULL_STR) return NULL;
    const uint8_t *q = n <= MAX_STRING ? get_bytes(r, n) : NULL;
    if (!q || memchr(q, 0, n)) {
        r->err = ERR_FORMAT;
        return NULL;
    }
    char *s = sl_alloc((size_t)n + 1);
    if (!s) {
        r->err = ERR_NOMEM;
        return NULL;
    }
    memcpy(s, q, n);
    s[n] = '\0';
    return s;
}

static void get_meta(Rd *r, ModelMeta *m)
{
    m->n_classes = get_count(r, MAX_CLASSES, 4);
    if (m->n_classes) {
        m->class_names = sl_calloc((size_t)m->n_classes, sizeof(char *));
        if (!m->class_names) {
            m->n_classes = 0;
            r->err = ERR_NOMEM;
        }
    }
    for (int i = 0; !r->err && i < m->n_classes; i++)
        m->class_names[i] = get_str(r);
    int nm = get_count(r, MAX_MODALITIES, 16);
    if (r->err) return;
    if (nm) {
        m->modality_names = sl_calloc((size_t)nm, sizeof(char *));
        m->normalize = sl_calloc((size_t)nm, sizeof *m->normalize);
        m->n_modalities = nm;
        if (!m->modality_names || !m->normalize) {
            r->err = ERR_NOMEM;
            return;
        }
    }
    for (int i = 0; !r->err && i < nm; i++) {
        m->modality_names[i] = get_str(r);
        uint32_t kind = get_u32(r);
        if (kind > NORMALIZE_CT) kind = 99; /* caught by meta_ok */
        m->normalize[i].kind = (NormalizeKind)kind;
        m->normalize[i].lo = get_f32(r);
        m->normalize[i].hi = get_f32(r);
    }
    m->dims = get_i32(r);
    m->axis = get_i32(r);
    get_ints(r, m->patch, 3);
    uint32_t order = get_u32(r);
    m->order = order <= ORDER_NIBABEL ? (VoxelOrder)order : (VoxelOrder)99;
    const uint8_t *sha = get_bytes(r, 32);
    if (sha) memcpy(m->source_sha256, sha, 32);
    m->source_name = get_str(r);
    if (!r->err) m->notes = get_str(r);
    if (!r->err && !meta_ok(m)) r->err = ERR_FORMAT;
}

static void get_geometry(Rd *r, int *nsp, int *kernel, int *stride,
                         int *dilation, int *pad_lo, int *pad_hi)
{
    *nsp = get_i32(r);
    get_ints(r, kernel, 3);
    get_ints(r, stride, 3);
    get_ints(r, dilation, 3);
    get_ints(r, pad_lo, 3);
    get_ints(r, pad_hi, 3);
}

/* Enum fields are range-checked here so that an out-of-range value is
 * never stored in an enum; numeric ranges are graph_validate's job. */
static void get_params(Rd *r, Node *n)
{
    switch (n->op) {
    case OP_CONV:
    case OP_CONV_TRANSPOSE: {
        ConvParams *p = &n->p.conv;
        get_geometry(r, &p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                     p->pad_hi);
        get_ints(r, p->out_pad, 3);
        p->group = get_i32(r);
        break;
    }
    case OP_INSTANCE_NORM:
    case OP_BATCH_NORM:
        n->p.norm.eps = get_f32(r);
        n->p.norm.momentum = get_f32(r);
        n->p.norm.use_batch_stats = get_i32(r);
        break;
    case OP_LEAKY_RELU:
        n->p.act.alpha = get_f32(r);
        break;
    case OP_SOFTMAX:
        n->p.softmax.axis = get_i32(r);
        n->p.softmax.flatten = get_i32(r);
        break;
    case OP_CONCAT:
        n->p.concat.axis = get_i32(r);
        break;
    case OP_MAX_POOL:
    case OP_AVG_POOL: {
        PoolParams *p = &n->p.pool;
        get_geometry(r, &p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                     p->pad_hi);
        p->ceil_mode = get_i32(r);
        p->count_include_pad = get_i32(r);
        break;
    }
    case OP_RESIZE: {
        ResizeParams *p = &n->p.resize;
        p->nsp = get_i32(r);
        uint32_t mode = get_u32(r), coord = get_u32(r), near = get_u32(r);
        if (mode > RESIZE_LINEAR || coord > COORD_ASYMMETRIC ||
            near > NEAREST_CEIL) {
            if (!r->err) r->err = ERR_FORMAT;
            break;
        }
        p->mode = (ResizeMode)mode;
        p->coord = (ResizeCoord)coord;
        p->nearest = (ResizeNearest)near;
        for (int i = 0; i < 3; i++)
            p->scale[i] = get_f64(r);
        break;
    }
    default:
        break;
    }
}

/* Bytes in the GRPH section per value and per node, at least. */
#define MIN_VALUE_BYTES 12
#define MIN_NODE_BYTES 16

static int get_graph(Rd *r, const uint8_t *w, size_t wsize, Graph *g)
{
    int nv = get_count(r, 1 << 24, MIN_VALUE_BYTES);
    for (int i = 0; !r->err && i < nv; i++) {
        char *name = get_str(r);
        Shape s;
        memset(&s, 0, sizeof s);
        s.ndim = get_i32(r);
        if (!r->err && (s.ndim < 0 || s.ndim > SL_MAX_DIMS))
            r->err = ERR_FORMAT;
        for (int k = 0; !r->err && k < s.ndim; k++)
            s.d[k] = (int64_t)get_u64(r);
        uint32_t kind = get_u32(r);
        float *data = NULL;
        if (!r->err && kind > 1) r->err = ERR_FORMAT;
        if (!r->err && kind == 1) {
            uint64_t off = get_u64(r), nb = get_u64(r);
            int64_t ne = shape_numel(&s);
            if (r->err || ne < 1 || (uint64_t)ne > wsize / 4 ||
                nb != (uint64_t)ne * 4 || off % WEIGHT_ALIGN || off > wsize ||
                nb > wsize - off) {
                if (!r->err) r->err = ERR_FORMAT;
            } else if (!(data = sl_alloc((size_t)nb))) {
                r->err = ERR_NOMEM;
            } else {
                for (size_t k = 0; k < (size_t)ne; k++) {
                    uint32_t u = sl_rd32(w + off + 4 * k);
                    memcpy(&data[k], &u, 4);
                }
            }
        }
        if (r->err) {
            sl_free(name);
            sl_free(data);
            break;
        }
        int rc = graph_add_value(g, name, &s, data); /* owns data now */
        sl_free(name);
        if (rc < 0) return rc;
    }
    int nn = get_count(r, 1 << 24, MIN_NODE_BYTES);
    for (int i = 0; !r->err && i < nn; i++) {
        Node n;
        memset(&n, 0, sizeof n);
        uint32_t op = get_u32(r);
        if (!r->err && op >= OP_COUNT) r->err = ERR_FORMAT;
        if (r->err) break;
        n.op = (OpType)op;
        n.name = get_str(r);
        n.n_in = get_i32(r);
        if (!r->err && (n.n_in < 0 || n.n_in > SL_MAX_INPUTS))
            r->err = ERR_FORMAT;
        if (!r->err) get_ints(r, n.in, n.n_in);
        n.out = get_i32(r);
        if (!r->err && (n.out < 0 || n.out >= g->n_values))
            r->err = ERR_FORMAT;
        get_params(r, &n);
        int rc = r->err ? 0 : graph_add_node(g, &n);
        sl_free(n.name);
        if (rc < 0) return rc;
    }
    g->input = get_i32(r);
    g->n_outputs = get_count(r, SL_MAX_OUTPUTS, 4);
    get_ints(r, g->outputs, g->n_outputs);
    if (!r->err && r->pos != r->n) r->err = ERR_FORMAT;
    return r->err;
}

int sslim_is_sslim(const uint8_t *data, size_t size)
{
    return size >= 8 && memcmp(data, MAGIC, 8) == 0;
}

/* Check the header, the section table and the checksums; find the
 * offsets of the three sections we need. */
static int check_layout(const uint8_t *data, size_t size, const char *what,
                        size_t off[N_SEC], size_t len[N_SEC])
{
    if (!sslim_is_sslim(data, size)) {
        sl_error("'%s' is not a .sslim file (wrong magic); give a model "
                 "written by sauron-compress",
                 what);
        return ERR_FORMAT;
    }
    if (size < HEADER_BYTES) goto truncated;
    uint32_t major = sl_rd32(data + 8), minor = sl_rd32(data + 12);
    if (major != SSLIM_MAJOR) {
        sl_error("'%s' is .sslim version %u.%u but this program reads "
                 "version %d.x; re-export with sauron-compress",
                 what, major, minor, SSLIM_MAJOR);
        return ERR_FORMAT;
    }
    uint64_t fsize = sl_rd64(data + 24);
    if (fsize != size) {
        if (fsize > size) goto truncated;
        sl_error("'%s' is corrupted: file is %zu bytes but its header says "
                 "%llu; re-export with sauron-compress",
                 what, size, (unsigned long long)fsize);
        return ERR_FORMAT;
    }
    uint32_t ns = sl_rd32(data + 16);
    if (ns < 1 || ns > MAX_SECTIONS) {
        sl_error("'%s' is corrupted: %u sections; re-export with "
                 "sauron-compress",
                 what, ns);
        return ERR_FORMAT;
    }
    size_t table_end = HEADER_BYTES + (size_t)ns * SECTION_BYTES;
    if (table_end > size) goto truncated;
    uint32_t hc = sl_crc32(0, data, 20);
    hc = sl_crc32(hc, data + 24, table_end - 24);
    if (hc != sl_rd32(data + 20)) {
        sl_error("'%s' is corrupted: header checksum mismatch; re-export "
                 "with sauron-compress",
                 what);
        return ERR_FORMAT;
    }
    int found[N_SEC] = {0};
    size_t prev_end = table_end;
    for (uint32_t i = 0; i < ns; i++) {
        const uint8_t *t = data + HEADER_BYTES + (size_t)i * SECTION_BYTES;
        uint64_t o = sl_rd64(t + 8), l = sl_rd64(t + 16);
        char tag[5];
        for (int k = 0; k < 4; k++)
            tag[k] = t[k] >= 32 && t[k] < 127 ? (char)t[k] : '?';
        tag[4] = '\0';
        if (o < prev_end || o > size || l > size - o) {
            sl_error("'%s' is corrupted: section %s lies outside the file or "
                     "overlaps another; re-export with sauron-compress",
                     what, tag);
            return ERR_FORMAT;
        }
        for (size_t k = prev_end; k < o; k++)
            if (data[k]) {
                sl_error("'%s' is corrupted: nonzero padding before section "
                         "%s; re-export with sauron-compress",
                         what, tag);
                return ERR_FORMAT;
            }
        if (sl_crc32(0, data + o, (size_t)l) != sl_rd32(t + 4)) {
            sl_error("'%s' is corrupted: section %s checksum mismatch; "
                     "re-export with sauron-compress",
                     what, tag);
            return ERR_FORMAT;
        }
        for (int s = 0; s < N_SEC; s++) {
            if (memcmp(t, TAGS[s], 4) != 0) continue;
            if (found[s]) {
                sl_error("'%s' is corrupted: section %s appears twice; "
                         "re-export with sauron-compress",
                         what, tag);
                return ERR_FORMAT;
            }
            found[s] = 1;
            off[s] = (size_t)o;
            len[s] = (size_t)l;
        }
        prev_end = (size_t)(o + l);
    }
    if (prev_end != size) {
        sl_error("'%s' is corrupted: trailing bytes after the last section; "
                 "re-export with sauron-compress",
                 what);
        return ERR_FORMAT;
    }
    for (int s = 0; s < N_SEC; s++)
        if (!found[s]) {
            sl_error("'%s' has no %s section; re-export with "
                     "sauron-compress",
                     what, TAGS[s]);
            return ERR_FORMAT;
        }
    if (off[SEC_WEIGHTS] % WEIGHT_ALIGN) {
        sl_error("'%s' is corrupted: weights not 64-byte aligned; re-export "
                 "with sauron-compress",
                 what);
        return ERR_FORMAT;
    }
    return SL_OK;
truncated:
    sl_error(
        "'%s' is truncated (%zu bytes); copy the file again or re-export "
        "with sauron-compress",
        what, size);
    return ERR_FORMAT;
}

int sslim_decode(const uint8_t *data, size_t size, const char *what, Graph *g)
{
    size_t off[N_SEC] = {0}, len[N_SEC] = {0};
    int rc;
    int sec = SEC_META;
    what = what ? what : "model";
    graph_init(g);
    if ((rc = check_layout(data, size, what, off, len))) goto fail;
    Rd r = {data + off[SEC_META], len[SEC_META], 0, 0};
    get_meta(&r, &g->meta);
    if (!r.err && r.pos != r.n) r.err = ERR_FORMAT;
    if ((rc = r.err)) goto fail;
    sec = SEC_GRAPH;
    Rd rg = {data + off[SEC_GRAPH], len[SEC_GRAPH], 0, 0};
    if ((rc = get_graph(&rg, data + off[SEC_WEIGHTS], len[SEC_WEIGHTS], g)))
        goto fail;
    if ((rc = graph_validate(g, what))) goto fail;
    return SL_OK;
fail:
    if (rc == ERR_NOMEM)
        sl_error("out of memory reading '%s'", what);
    else
        sl_error("'%s' is malformed: bad %s section; re-export with "
                 "sauron-compress",
                 what, SEC_NAMES[sec]);
    graph_free(g);
    return rc;
}

int sslim_read(const char *path, Graph *g)
{
    uint8_t *data = NULL;
    size_t size = 0;
    graph_init(g);
    int rc = sl_read_file(path, &data, &size);
    if (rc == SL_OK) rc = sslim_decode(data, size, path, g);
    sl_free(data);
    return rc;
}
