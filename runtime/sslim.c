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
 *     GEOM  optional (minor version 1): the grid the model was trained on,
 *           written only when it is known: u32 version (1), char[4] axis
 *           code (NUL-padded; "" = unset), f64 spacing[3] in mm (0 =
 *           unset).  Files without it (minor 0, every model written
 *           before) mean: no reorientation, no resampling.  A reader
 *           takes the version-1 fields of a later version and ignores
 *           what follows them.
 *     GRPH  values and nodes
 *     WGHT  weights, 64-byte aligned in the file, float32
 *   Unknown tags are skipped (after their CRC is checked), so a minor
 *   version can add sections without breaking older readers.
 *
 * Strings are u32 length + bytes (no NUL); length 0xFFFFFFFF is NULL.
 * Every byte of a valid file is covered by a checksum or checked to be
 * zero, so any single-byte corruption is detected.  Encoded and decoded
 * with the byte codec (bytes.h), as every other file of the project.
 *
 * Reading a file never holds it whole in memory: the header, the table
 * and the small sections are read as needed, and each weight is read
 * once, straight into its own aligned buffer (the graph's), with the
 * WGHT checksum computed over the bytes as they arrive.  So loading a
 * model needs one copy of its weights, not the file plus a copy.  For
 * that the reader requires the weights in the order the writer puts
 * them: by increasing offset, none overlapping another.
 */
#include "sslim.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "common.h"
#include "orient.h"

static const uint8_t MAGIC[8] = {0x89, 'S', 'S', 'L', 'I', 'M', '\r', '\n'};

#define HEADER_BYTES 32
#define SECTION_BYTES 24
#define MAX_SECTIONS 64
#define WEIGHT_ALIGN 64
/* Bounds on counts read from a file, before anything is allocated. */
#define MAX_STRING (16u << 20)
#define MAX_CLASSES 65536
#define MAX_MODALITIES 1024
#define MAX_PATCH 65536

enum { SEC_META, SEC_GEOM, SEC_GRAPH, SEC_WEIGHTS, N_SEC };
static const char TAGS[N_SEC][5] = {"META", "GEOM", "GRPH", "WGHT"};
static const char *const SEC_NAMES[N_SEC] = {"metadata", "training grid",
                                             "graph", "weights"};
#define GEOM_VERSION 1
#define MAX_SPACING 1000.0 /* mm */

/* The GEOM section is written only for a model that knows its grid, so
 * every older model encodes to the same bytes as before. */
static int meta_has_grid(const ModelMeta *m)
{
    return m->orientation[0] || m->spacing[0] != 0.0 ||
           m->spacing[1] != 0.0 || m->spacing[2] != 0.0;
}

static int grid_ok(const ModelMeta *m)
{
    int w[3], sg[3];
    if (memchr(m->orientation, 0, sizeof m->orientation) == NULL) return 0;
    if (m->orientation[0] && orient_parse(m->orientation, w, sg)) return 0;
    for (int t = 0; t < 3; t++)
        if (!(m->spacing[t] == 0.0 ||
              (m->spacing[t] > 0.0 && m->spacing[t] <= MAX_SPACING)))
            return 0;
    return 1;
}

/* ============================================================= writing */

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
            m->normalize[i].kind > NORMALIZE_ZSCORE_FG ||
            (m->normalize[i].kind == NORMALIZE_ZSCORE_FG &&
             !(m->normalize[i].hi > 0.0f && m->normalize[i].hi < 1e6f &&
               fabsf(m->normalize[i].lo) < 1e6f)))
            return 0;
    return str_ok(m->source_name) && str_ok(m->notes) && grid_ok(m);
}

static void put_meta(ByteWriter *b, const ModelMeta *m)
{
    bw_i32(b, m->n_classes);
    for (int i = 0; i < m->n_classes; i++)
        bw_str(b, m->class_names ? m->class_names[i] : NULL);
    bw_i32(b, m->n_modalities);
    for (int i = 0; i < m->n_modalities; i++) {
        bw_str(b, m->modality_names ? m->modality_names[i] : NULL);
        Normalize nz = {NORMALIZE_NONE, 0, 0};
        if (m->normalize) nz = m->normalize[i];
        bw_u32(b, (uint32_t)nz.kind);
        bw_f32(b, nz.lo);
        bw_f32(b, nz.hi);
    }
    bw_i32(b, m->dims);
    bw_i32(b, m->axis);
    bw_i32s(b, m->patch, 3);
    bw_u32(b, (uint32_t)m->order);
    bw_bytes(b, m->source_sha256, 32);
    bw_str(b, m->source_name);
    bw_str(b, m->notes);
}

static void put_grid(ByteWriter *b, const ModelMeta *m)
{
    bw_u32(b, GEOM_VERSION);
    bw_bytes(b, m->orientation, 4);
    for (int t = 0; t < 3; t++)
        bw_f64(b, m->spacing[t]);
}

static void put_geometry(ByteWriter *b, int nsp, const int *kernel,
                         const int *stride, const int *dilation,
                         const int *pad_lo, const int *pad_hi)
{
    bw_i32(b, nsp);
    bw_i32s(b, kernel, 3);
    bw_i32s(b, stride, 3);
    bw_i32s(b, dilation, 3);
    bw_i32s(b, pad_lo, 3);
    bw_i32s(b, pad_hi, 3);
}

static void put_params(ByteWriter *b, const Node *n)
{
    switch (n->op) {
    case OP_CONV:
    case OP_CONV_TRANSPOSE: {
        const ConvParams *p = &n->p.conv;
        put_geometry(b, p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                     p->pad_hi);
        bw_i32s(b, p->out_pad, 3);
        bw_i32(b, p->group);
        break;
    }
    case OP_INSTANCE_NORM:
    case OP_BATCH_NORM:
        bw_f32(b, n->p.norm.eps);
        bw_f32(b, n->p.norm.momentum);
        bw_i32(b, n->p.norm.use_batch_stats);
        break;
    case OP_LEAKY_RELU:
        bw_f32(b, n->p.act.alpha);
        break;
    case OP_SOFTMAX:
        bw_i32(b, n->p.softmax.axis);
        bw_i32(b, n->p.softmax.flatten);
        break;
    case OP_CONCAT:
        bw_i32(b, n->p.concat.axis);
        break;
    case OP_MAX_POOL:
    case OP_AVG_POOL: {
        const PoolParams *p = &n->p.pool;
        put_geometry(b, p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                     p->pad_hi);
        bw_i32(b, p->ceil_mode);
        bw_i32(b, p->count_include_pad);
        break;
    }
    case OP_RESIZE: {
        const ResizeParams *p = &n->p.resize;
        bw_i32(b, p->nsp);
        bw_u32(b, (uint32_t)p->mode);
        bw_u32(b, (uint32_t)p->coord);
        bw_u32(b, (uint32_t)p->nearest);
        for (int i = 0; i < 3; i++)
            bw_f64(b, p->scale[i]);
        break;
    }
    default:
        break; /* Relu, Sigmoid, Add, Identity: no parameters */
    }
}

/* GRPH section; weight offsets are relative to the WGHT section, which
 * holds each weight at the next multiple of WEIGHT_ALIGN. */
static void put_graph(ByteWriter *b, const Graph *g, size_t *weights_bytes)
{
    size_t woff = 0;
    bw_i32(b, g->n_values);
    for (int i = 0; i < g->n_values; i++) {
        const Value *v = &g->values[i];
        bw_str(b, v->name);
        bw_i32(b, v->shape.ndim);
        for (int k = 0; k < v->shape.ndim; k++)
            bw_u64(b, (uint64_t)v->shape.d[k]);
        bw_u32(b, v->data != NULL);
        if (v->data) {
            size_t nb = (size_t)shape_numel(&v->shape) * sizeof(float);
            bw_u64(b, woff);
            bw_u64(b, nb);
            woff += (nb + WEIGHT_ALIGN - 1) & ~(size_t)(WEIGHT_ALIGN - 1);
        }
    }
    bw_i32(b, g->n_nodes);
    for (int i = 0; i < g->n_nodes; i++) {
        const Node *n = &g->nodes[i];
        bw_u32(b, (uint32_t)n->op);
        bw_str(b, n->name);
        bw_i32(b, n->n_in);
        bw_i32s(b, n->in, (size_t)n->n_in);
        bw_i32(b, n->out);
        put_params(b, n);
    }
    bw_i32(b, g->input);
    bw_i32(b, g->n_outputs);
    bw_i32s(b, g->outputs, (size_t)g->n_outputs);
    *weights_bytes = woff;
}

/* Names a reader accepts (meta_ok covers the metadata's strings). */
static int names_ok(const Graph *g)
{
    for (int i = 0; i < g->n_values; i++)
        if (!str_ok(g->values[i].name)) return 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (!str_ok(g->nodes[i].name)) return 0;
    return 1;
}

int sslim_encode(const Graph *g, uint8_t **data, size_t *size)
{
    ByteWriter w = {0};
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
    if (!names_ok(g)) {
        sl_error("a value or node name is longer than %u bytes; shorten it",
                 MAX_STRING);
        goto fail;
    }
    /* header and section table, filled in once the sections are known */
    int has_grid = meta_has_grid(&g->meta);
    int n_sec = has_grid ? N_SEC : N_SEC - 1;
    bw_zeros(&w, HEADER_BYTES + (size_t)n_sec * SECTION_BYTES);
    size_t offs[N_SEC], sizes[N_SEC], wbytes;
    offs[SEC_META] = w.n;
    put_meta(&w, &g->meta);
    offs[SEC_GEOM] = w.n;
    if (has_grid) put_grid(&w, &g->meta);
    offs[SEC_GRAPH] = w.n;
    put_graph(&w, g, &wbytes);
    sizes[SEC_META] = offs[SEC_GEOM] - offs[SEC_META];
    sizes[SEC_GEOM] = offs[SEC_GRAPH] - offs[SEC_GEOM];
    sizes[SEC_GRAPH] = w.n - offs[SEC_GRAPH];
    bw_align(&w, WEIGHT_ALIGN);
    offs[SEC_WEIGHTS] = w.n;
    for (int i = 0; i < g->n_values; i++) {
        const Value *v = &g->values[i];
        if (!v->data) continue;
        bw_f32s(&w, v->data, (size_t)shape_numel(&v->shape));
        bw_align(&w, WEIGHT_ALIGN);
    }
    sizes[SEC_WEIGHTS] = w.n - offs[SEC_WEIGHTS];
    if (w.err) {
        rc = w.err;
        sl_error("out of memory encoding the model");
        goto fail;
    }
    CHECK(sizes[SEC_WEIGHTS] == wbytes);
    uint8_t *out = w.p;
    memcpy(out, MAGIC, 8);
    sl_wr32(out + 8, SSLIM_MAJOR);
    sl_wr32(out + 12, has_grid ? SSLIM_MINOR : 0);
    sl_wr32(out + 16, (uint32_t)n_sec);
    sl_wr64(out + 24, w.n);
    for (int s = 0, row = 0; s < N_SEC; s++) {
        if (s == SEC_GEOM && !has_grid) continue;
        uint8_t *t = out + HEADER_BYTES + (row++) * SECTION_BYTES;
        memcpy(t, TAGS[s], 4);
        sl_wr32(t + 4, sl_crc32(0, out + offs[s], sizes[s]));
        sl_wr64(t + 8, offs[s]);
        sl_wr64(t + 16, sizes[s]);
    }
    uint32_t hc = sl_crc32(0, out, 20);
    hc = sl_crc32(hc, out + 24, offs[SEC_META] - 24);
    sl_wr32(out + 20, hc);
    *data = w.p;
    *size = w.n;
    return SL_OK;
fail:
    bw_free(&w);
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

/* The version-1 fields of a GEOM section (a later version's extra
 * bytes are ignored). */
static void get_grid(ByteReader *r, ModelMeta *m)
{
    uint32_t version = br_u32(r);
    const uint8_t *code = br_bytes(r, 4);
    double sp[3];
    for (int t = 0; t < 3; t++)
        sp[t] = br_f64(r);
    if (r->err) return;
    memcpy(m->orientation, code, 4);
    memcpy(m->spacing, sp, sizeof sp);
    if (version < 1 || !grid_ok(m)) {
        memset(m->orientation, 0, sizeof m->orientation);
        memset(m->spacing, 0, sizeof m->spacing);
        br_fail(r, ERR_FORMAT);
    }
}

static void get_meta(ByteReader *r, ModelMeta *m)
{
    m->n_classes = (int)br_count(r, MAX_CLASSES, 4);
    if (m->n_classes) {
        m->class_names = sl_calloc((size_t)m->n_classes, sizeof(char *));
        if (!m->class_names) {
            m->n_classes = 0;
            r->err = ERR_NOMEM;
        }
    }
    for (int i = 0; !r->err && i < m->n_classes; i++)
        m->class_names[i] = br_str(r, MAX_STRING);
    int nm = (int)br_count(r, MAX_MODALITIES, 16);
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
        m->modality_names[i] = br_str(r, MAX_STRING);
        uint32_t kind = br_u32(r);
        if (kind > NORMALIZE_ZSCORE_FG) kind = 99; /* caught by meta_ok */
        m->normalize[i].kind = (NormalizeKind)kind;
        m->normalize[i].lo = br_f32(r);
        m->normalize[i].hi = br_f32(r);
    }
    m->dims = br_i32(r);
    m->axis = br_i32(r);
    br_i32s(r, m->patch, 3);
    uint32_t order = br_u32(r);
    m->order = order <= ORDER_NIBABEL ? (VoxelOrder)order : (VoxelOrder)99;
    const uint8_t *sha = br_bytes(r, 32);
    if (sha) memcpy(m->source_sha256, sha, 32);
    m->source_name = br_str(r, MAX_STRING);
    if (!r->err) m->notes = br_str(r, MAX_STRING);
    if (!r->err && !meta_ok(m)) r->err = ERR_FORMAT;
}

static void get_geometry(ByteReader *r, int *nsp, int *kernel, int *stride,
                         int *dilation, int *pad_lo, int *pad_hi)
{
    *nsp = br_i32(r);
    br_i32s(r, kernel, 3);
    br_i32s(r, stride, 3);
    br_i32s(r, dilation, 3);
    br_i32s(r, pad_lo, 3);
    br_i32s(r, pad_hi, 3);
}

/* Enum fields are range-checked here so that an out-of-range value is
 * never stored in an enum; numeric ranges are graph_validate's job. */
static void get_params(ByteReader *r, Node *n)
{
    switch (n->op) {
    case OP_CONV:
    case OP_CONV_TRANSPOSE: {
        ConvParams *p = &n->p.conv;
        get_geometry(r, &p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                     p->pad_hi);
        br_i32s(r, p->out_pad, 3);
        p->group = br_i32(r);
        break;
    }
    case OP_INSTANCE_NORM:
    case OP_BATCH_NORM:
        n->p.norm.eps = br_f32(r);
        n->p.norm.momentum = br_f32(r);
        n->p.norm.use_batch_stats = br_i32(r);
        break;
    case OP_LEAKY_RELU:
        n->p.act.alpha = br_f32(r);
        break;
    case OP_SOFTMAX:
        n->p.softmax.axis = br_i32(r);
        n->p.softmax.flatten = br_i32(r);
        break;
    case OP_CONCAT:
        n->p.concat.axis = br_i32(r);
        break;
    case OP_MAX_POOL:
    case OP_AVG_POOL: {
        PoolParams *p = &n->p.pool;
        get_geometry(r, &p->nsp, p->kernel, p->stride, p->dilation, p->pad_lo,
                     p->pad_hi);
        p->ceil_mode = br_i32(r);
        p->count_include_pad = br_i32(r);
        break;
    }
    case OP_RESIZE: {
        ResizeParams *p = &n->p.resize;
        p->nsp = br_i32(r);
        uint32_t mode = br_u32(r), coord = br_u32(r), near = br_u32(r);
        if (mode > RESIZE_LINEAR || coord > COORD_ASYMMETRIC ||
            near > NEAREST_CEIL) {
            if (!r->err) r->err = ERR_FORMAT;
            break;
        }
        p->mode = (ResizeMode)mode;
        p->coord = (ResizeCoord)coord;
        p->nearest = (ResizeNearest)near;
        for (int i = 0; i < 3; i++)
            p->scale[i] = br_f64(r);
        break;
    }
    default:
        break;
    }
}

/* Bytes in the GRPH section per value and per node, at least. */
#define MIN_VALUE_BYTES 12
#define MIN_NODE_BYTES 16
/* Stack buffer for checksumming bytes that are not kept (gaps, unknown
 * sections) when reading from a file. */
#define SCAN_CHUNK 16384

/* Where the reader's bytes come from: the whole file in memory
 * (sslim_decode), or an open file read piece by piece (sslim_read). */
typedef struct {
    const uint8_t *mem; /* the whole file, or NULL: read fd */
    int fd;
    size_t size;
    const char *what;
} Src;

/* n bytes at off into dst; off + n <= size (the caller checked). */
static int src_read(const Src *s, size_t off, void *dst, size_t n)
{
    CHECK(off <= s->size && n <= s->size - off);
    if (s->mem) {
        if (n) memcpy(dst, s->mem + off, n);
        return SL_OK;
    }
    uint8_t *p = dst;
    while (n) {
        ssize_t r = pread(s->fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            /* r == 0: the file shrank since it was opened */
            sl_error("cannot read '%s': %s; check the file", s->what,
                     r < 0 ? strerror(errno) : "it got shorter while read");
            return ERR_IO;
        }
        p += r;
        off += (size_t)r;
        n -= (size_t)r;
    }
    return SL_OK;
}

/* Bytes [off, off + n): a pointer into the buffer, or read into a new
 * one (*own, which the caller sl_free()s). */
static int src_view(const Src *s, size_t off, size_t n, const uint8_t **p,
                    uint8_t **own)
{
    *own = NULL;
    if (s->mem) {
        *p = s->mem + off;
        return SL_OK;
    }
    if (!(*own = sl_alloc(n))) return ERR_NOMEM;
    int rc = src_read(s, off, *own, n);
    if (rc) {
        sl_free(*own);
        *own = NULL;
        return rc;
    }
    *p = *own;
    return SL_OK;
}

/* Continue *crc over bytes [off, off + n); set *nonzero (if given) when
 * one of them is not 0.  From a file, in chunks: nothing is kept. */
static int src_scan(const Src *s, size_t off, size_t n, uint32_t *crc,
                    int *nonzero)
{
    uint8_t chunk[SCAN_CHUNK];
    while (n) {
        size_t k = s->mem || n < sizeof chunk ? n : sizeof chunk;
        const uint8_t *p = chunk;
        if (s->mem) {
            CHECK(off <= s->size && k <= s->size - off);
            p = s->mem + off;
        } else {
            int rc = src_read(s, off, chunk, k);
            if (rc) return rc;
        }
        *crc = sl_crc32(*crc, p, k);
        for (size_t i = 0; nonzero && !*nonzero && i < k; i++)
            if (p[i]) *nonzero = 1;
        off += k;
        n -= k;
    }
    return SL_OK;
}

static int host_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* The WGHT section as the values are read: each weight goes from the
 * source straight into its buffer, and the section's checksum runs over
 * the bytes in file order (gaps included) as they pass. */
typedef struct {
    const Src *src;
    size_t off, size; /* the section in the source */
    size_t pos;       /* bytes of the section consumed so far */
    uint32_t crc, want;
} WeightStream;

/* Read ne floats at section offset off (>= ws->pos, checked by the
 * caller) into data. */
static int weights_take(WeightStream *ws, size_t off, float *data, size_t ne)
{
    size_t nb = ne * sizeof(float);
    int rc =
        src_scan(ws->src, ws->off + ws->pos, off - ws->pos, &ws->crc, NULL);
    if (!rc) rc = src_read(ws->src, ws->off + off, data, nb);
    if (rc) return rc;
    ws->crc = sl_crc32(ws->crc, data, nb);
    ws->pos = off + nb;
    if (!host_little_endian()) {
        uint8_t *b = (uint8_t *)data;
        for (size_t i = 0; i < ne; i++) {
            uint32_t u = sl_rd32(b + 4 * i);
            memcpy(b + 4 * i, &u, 4);
        }
    }
    return SL_OK;
}

/* The rest of the section, then its checksum. */
static int weights_finish(WeightStream *ws)
{
    int rc = src_scan(ws->src, ws->off + ws->pos, ws->size - ws->pos,
                      &ws->crc, NULL);
    if (rc) return rc;
    ws->pos = ws->size;
    if (ws->crc != ws->want) {
        sl_error("'%s' is corrupted: section WGHT checksum mismatch; "
                 "re-export with sauron-compress",
                 ws->src->what);
        return ERR_FORMAT;
    }
    return SL_OK;
}

static int get_graph(ByteReader *r, WeightStream *ws, Graph *g)
{
    const size_t wsize = ws->size;
    int nv = (int)br_count(r, 1 << 24, MIN_VALUE_BYTES);
    for (int i = 0; !r->err && i < nv; i++) {
        char *name = br_str(r, MAX_STRING);
        Shape s;
        memset(&s, 0, sizeof s);
        s.ndim = br_i32(r);
        if (!r->err && (s.ndim < 0 || s.ndim > SL_MAX_DIMS))
            r->err = ERR_FORMAT;
        for (int k = 0; !r->err && k < s.ndim; k++)
            s.d[k] = (int64_t)br_u64(r);
        uint32_t kind = br_u32(r);
        float *data = NULL;
        if (!r->err && kind > 1) r->err = ERR_FORMAT;
        if (!r->err && kind == 1) {
            uint64_t off = br_u64(r), nb = br_u64(r);
            int64_t ne = shape_numel(&s);
            if (r->err || ne < 1 || (uint64_t)ne > wsize / 4 ||
                nb != (uint64_t)ne * 4 || off % WEIGHT_ALIGN || off > wsize ||
                nb > wsize - off || off < ws->pos) {
                if (!r->err) r->err = ERR_FORMAT;
            } else if (!(data = sl_alloc((size_t)nb))) {
                r->err = ERR_NOMEM;
            } else {
                int rc = weights_take(ws, (size_t)off, data, (size_t)ne);
                if (rc) r->err = rc;
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
    /* every weight is in: the section's checksum before anything else */
    if (!r->err) {
        int rc = weights_finish(ws);
        if (rc) return rc;
    }
    int nn = (int)br_count(r, 1 << 24, MIN_NODE_BYTES);
    for (int i = 0; !r->err && i < nn; i++) {
        Node n;
        memset(&n, 0, sizeof n);
        uint32_t op = br_u32(r);
        if (!r->err && op >= OP_COUNT) r->err = ERR_FORMAT;
        if (r->err) break;
        n.op = (OpType)op;
        n.name = br_str(r, MAX_STRING);
        n.n_in = br_i32(r);
        if (!r->err && (n.n_in < 0 || n.n_in > SL_MAX_INPUTS))
            r->err = ERR_FORMAT;
        if (!r->err) br_i32s(r, n.in, (size_t)n.n_in);
        n.out = br_i32(r);
        if (!r->err && (n.out < 0 || n.out >= g->n_values))
            r->err = ERR_FORMAT;
        get_params(r, &n);
        int rc = r->err ? 0 : graph_add_node(g, &n);
        sl_free(n.name);
        if (rc < 0) return rc;
    }
    g->input = br_i32(r);
    g->n_outputs = (int)br_count(r, SL_MAX_OUTPUTS, 4);
    br_i32s(r, g->outputs, (size_t)g->n_outputs);
    return br_finish(r);
}

int sslim_is_sslim(const uint8_t *data, size_t size)
{
    return size >= 8 && memcmp(data, MAGIC, 8) == 0;
}

/* Check the header, the section table, the padding and the checksums
 * (the WGHT section's later, as its weights are read: *wcrc is the one
 * the table gives); find the offsets of the sections we need. */
static int check_layout(const Src *src, size_t off[N_SEC], size_t len[N_SEC],
                        uint32_t *wcrc)
{
    const char *what = src->what;
    const size_t size = src->size;
    uint8_t data[HEADER_BYTES + MAX_SECTIONS * SECTION_BYTES];
    size_t hn = size < HEADER_BYTES ? size : HEADER_BYTES;
    int rc = src_read(src, 0, data, hn);
    if (rc) return rc;
    if (!sslim_is_sslim(data, hn)) {
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
    if ((rc = src_read(src, HEADER_BYTES, data + HEADER_BYTES,
                       table_end - HEADER_BYTES)))
        return rc;
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
        uint32_t unused = 0;
        int nonzero = 0;
        if ((rc = src_scan(src, prev_end, (size_t)o - prev_end, &unused,
                           &nonzero)))
            return rc;
        if (nonzero) {
            sl_error("'%s' is corrupted: nonzero padding before section "
                     "%s; re-export with sauron-compress",
                     what, tag);
            return ERR_FORMAT;
        }
        int is_w = memcmp(t, TAGS[SEC_WEIGHTS], 4) == 0;
        uint32_t crc = 0;
        if (!is_w && (rc = src_scan(src, (size_t)o, (size_t)l, &crc, NULL)))
            return rc;
        if (!is_w && crc != sl_rd32(t + 4)) {
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
        if (is_w) *wcrc = sl_rd32(t + 4);
        prev_end = (size_t)(o + l);
    }
    if (prev_end != size) {
        sl_error("'%s' is corrupted: trailing bytes after the last section; "
                 "re-export with sauron-compress",
                 what);
        return ERR_FORMAT;
    }
    for (int s = 0; s < N_SEC; s++)
        if (!found[s] && s != SEC_GEOM) {
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

static int decode(const Src *src, Graph *g)
{
    size_t off[N_SEC] = {0}, len[N_SEC] = {0};
    uint32_t wcrc = 0;
    const uint8_t *p = NULL;
    uint8_t *own = NULL;
    int rc;
    int sec = SEC_META;
    graph_init(g);
    if ((rc = check_layout(src, off, len, &wcrc))) goto fail;
    ByteReader r;
    if ((rc = src_view(src, off[SEC_META], len[SEC_META], &p, &own)))
        goto fail;
    br_init(&r, p, len[SEC_META]);
    get_meta(&r, &g->meta);
    if ((rc = br_finish(&r))) goto fail;
    sl_free(own);
    own = NULL;
    sec = SEC_GEOM;
    if (len[SEC_GEOM]) {
        if ((rc = src_view(src, off[SEC_GEOM], len[SEC_GEOM], &p, &own)))
            goto fail;
        br_init(&r, p, len[SEC_GEOM]);
        get_grid(&r, &g->meta);
        if ((rc = r.err)) goto fail;
        sl_free(own);
        own = NULL;
    }
    sec = SEC_GRAPH;
    if ((rc = src_view(src, off[SEC_GRAPH], len[SEC_GRAPH], &p, &own)))
        goto fail;
    br_init(&r, p, len[SEC_GRAPH]);
    WeightStream ws = {src, off[SEC_WEIGHTS], len[SEC_WEIGHTS], 0, 0, wcrc};
    if ((rc = get_graph(&r, &ws, g))) goto fail;
    sl_free(own);
    own = NULL;
    if ((rc = graph_validate(g, src->what))) goto fail;
    return SL_OK;
fail:
    sl_free(own);
    if (rc == ERR_NOMEM)
        sl_error("out of memory reading '%s'", src->what);
    else
        sl_error("'%s' is malformed: bad %s section; re-export with "
                 "sauron-compress",
                 src->what, SEC_NAMES[sec]);
    graph_free(g);
    return rc;
}

int sslim_decode(const uint8_t *data, size_t size, const char *what, Graph *g)
{
    Src src = {data, -1, size, what ? what : "model"};
    return decode(&src, g);
}

int sslim_read(const char *path, Graph *g)
{
    graph_init(g);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sl_error("cannot open '%s': %s; check the path", path,
                 strerror(errno));
        return ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        sl_error("'%s' is not a regular file; give the path of a file", path);
        return ERR_IO;
    }
    Src src = {NULL, fd, (size_t)st.st_size, path};
    int rc = decode(&src, g);
    close(fd);
    return rc;
}
