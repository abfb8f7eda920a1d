/* Byte codec (bytes.h): bounds-checked reader, growable writer. */
#include "bytes.h"

#include <string.h>

#include "common.h"

/* ============================================================= reading */

void br_init(ByteReader *r, const void *data, size_t n)
{
    r->p = data;
    r->n = data ? n : 0;
    r->pos = 0;
    r->err = 0;
}

size_t br_left(const ByteReader *r)
{
    return r->err ? 0 : r->n - r->pos;
}

void br_fail(ByteReader *r, int code)
{
    if (!r->err) r->err = code;
}

const uint8_t *br_bytes(ByteReader *r, size_t n)
{
    if (r->err || n > r->n - r->pos) {
        br_fail(r, ERR_FORMAT);
        return NULL;
    }
    if (!r->p) return (const uint8_t *)""; /* n == 0 on an empty reader */
    const uint8_t *q = r->p + r->pos;
    r->pos += n;
    return q;
}

void br_skip(ByteReader *r, size_t n)
{
    (void)br_bytes(r, n);
}

void br_align(ByteReader *r, size_t align)
{
    CHECK(align && !(align & (align - 1)));
    size_t pad = (align - r->pos % align) % align;
    const uint8_t *q = br_bytes(r, pad);
    for (size_t i = 0; q && i < pad; i++)
        if (q[i]) br_fail(r, ERR_FORMAT);
}

uint8_t br_u8(ByteReader *r)
{
    const uint8_t *q = br_bytes(r, 1);
    return q ? q[0] : 0;
}

uint16_t br_u16(ByteReader *r)
{
    const uint8_t *q = br_bytes(r, 2);
    return q ? (uint16_t)(q[0] | q[1] << 8) : 0;
}

uint32_t br_u32(ByteReader *r)
{
    const uint8_t *q = br_bytes(r, 4);
    return q ? sl_rd32(q) : 0;
}

uint64_t br_u64(ByteReader *r)
{
    const uint8_t *q = br_bytes(r, 8);
    return q ? sl_rd64(q) : 0;
}

int32_t br_i32(ByteReader *r)
{
    return (int32_t)br_u32(r);
}

int64_t br_i64(ByteReader *r)
{
    return (int64_t)br_u64(r);
}

float br_f32(ByteReader *r)
{
    uint32_t u = br_u32(r);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

double br_f64(ByteReader *r)
{
    uint64_t u = br_u64(r);
    double f;
    memcpy(&f, &u, 8);
    return f;
}

void br_i32s(ByteReader *r, int *dst, size_t n)
{
    const uint8_t *q = n <= SIZE_MAX / 4 ? br_bytes(r, n * 4) : NULL;
    if (!q) {
        br_fail(r, ERR_FORMAT);
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = (int)(int32_t)sl_rd32(q + 4 * i);
}

void br_f32s(ByteReader *r, float *dst, size_t n)
{
    const uint8_t *q = n <= SIZE_MAX / 4 ? br_bytes(r, n * 4) : NULL;
    if (!q) {
        br_fail(r, ERR_FORMAT);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t u = sl_rd32(q + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
}

uint32_t br_count(ByteReader *r, uint32_t max, size_t min_bytes)
{
    uint32_t c = br_u32(r);
    if (r->err) return 0;
    if (c > max || (min_bytes && c > br_left(r) / min_bytes)) {
        br_fail(r, ERR_FORMAT);
        return 0;
    }
    return c;
}

char *br_str(ByteReader *r, uint32_t max_len)
{
    uint32_t n = br_u32(r);
    if (r->err || n == BYTES_NULL_STR) return NULL;
    const uint8_t *q = n <= max_len ? br_bytes(r, n) : NULL;
    if (!q || memchr(q, 0, n)) {
        br_fail(r, ERR_FORMAT);
        return NULL;
    }
    char *s = sl_alloc((size_t)n + 1);
    if (!s) {
        br_fail(r, ERR_NOMEM);
        return NULL;
    }
    memcpy(s, q, n);
    s[n] = '\0';
    return s;
}

int br_finish(ByteReader *r)
{
    if (!r->err && r->pos != r->n) r->err = ERR_FORMAT;
    return r->err;
}

/* ============================================================= writing */

void bw_init(ByteWriter *w)
{
    memset(w, 0, sizeof *w);
}

void bw_free(ByteWriter *w)
{
    sl_free(w->p);
    memset(w, 0, sizeof *w);
}

uint8_t *bw_reserve(ByteWriter *w, size_t n)
{
    if (w->err) return NULL;
    if (!w->p || n > w->cap - w->n) {
        /* doubling keeps appends amortised O(1); 4096 covers the small
         * blobs (pruner, schedule state) in one allocation */
        size_t cap = w->cap ? w->cap : 4096;
        while (cap - w->n < n) {
            if (cap > SIZE_MAX / 2) {
                w->err = ERR_NOMEM;
                return NULL;
            }
            cap *= 2;
        }
        uint8_t *p = sl_realloc(w->p, cap);
        if (!p) {
            w->err = ERR_NOMEM;
            return NULL;
        }
        w->p = p;
        w->cap = cap;
    }
    uint8_t *at = w->p + w->n;
    w->n += n;
    return at;
}

void bw_bytes(ByteWriter *w, const void *src, size_t n)
{
    uint8_t *at = bw_reserve(w, n);
    if (at && n) memcpy(at, src, n);
}

void bw_zeros(ByteWriter *w, size_t n)
{
    uint8_t *at = bw_reserve(w, n);
    if (at && n) memset(at, 0, n);
}

void bw_align(ByteWriter *w, size_t align)
{
    CHECK(align && !(align & (align - 1)));
    bw_zeros(w, (align - w->n % align) % align);
}

void bw_u8(ByteWriter *w, uint8_t v)
{
    bw_bytes(w, &v, 1);
}

void bw_u16(ByteWriter *w, uint16_t v)
{
    uint8_t *at = bw_reserve(w, 2);
    if (at) {
        at[0] = (uint8_t)v;
        at[1] = (uint8_t)(v >> 8);
    }
}

void bw_u32(ByteWriter *w, uint32_t v)
{
    uint8_t *at = bw_reserve(w, 4);
    if (at) sl_wr32(at, v);
}

void bw_u64(ByteWriter *w, uint64_t v)
{
    uint8_t *at = bw_reserve(w, 8);
    if (at) sl_wr64(at, v);
}

void bw_i32(ByteWriter *w, int32_t v)
{
    bw_u32(w, (uint32_t)v);
}

void bw_i64(ByteWriter *w, int64_t v)
{
    bw_u64(w, (uint64_t)v);
}

void bw_f32(ByteWriter *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    bw_u32(w, u);
}

void bw_f64(ByteWriter *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    bw_u64(w, u);
}

void bw_i32s(ByteWriter *w, const int *v, size_t n)
{
    uint8_t *at = n <= SIZE_MAX / 4 ? bw_reserve(w, n * 4) : NULL;
    if (n > SIZE_MAX / 4 && !w->err) w->err = ERR_NOMEM;
    for (size_t i = 0; at && i < n; i++)
        sl_wr32(at + 4 * i, (uint32_t)v[i]);
}

void bw_f32s(ByteWriter *w, const float *v, size_t n)
{
    uint8_t *at = n <= SIZE_MAX / 4 ? bw_reserve(w, n * 4) : NULL;
    if (n > SIZE_MAX / 4 && !w->err) w->err = ERR_NOMEM;
    for (size_t i = 0; at && i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        sl_wr32(at + 4 * i, u);
    }
}

void bw_str(ByteWriter *w, const char *s)
{
    if (!s) {
        bw_u32(w, BYTES_NULL_STR);
        return;
    }
    size_t n = strlen(s);
    if (n >= BYTES_NULL_STR) {
        if (!w->err) w->err = ERR_ARG;
        return;
    }
    bw_u32(w, (uint32_t)n);
    bw_bytes(w, s, n);
}

void bw_put_u32_at(ByteWriter *w, size_t at, uint32_t v)
{
    if (w->err) return;
    CHECK(at <= w->n && w->n - at >= 4);
    sl_wr32(w->p + at, v);
}

void bw_put_u64_at(ByteWriter *w, size_t at, uint64_t v)
{
    if (w->err) return;
    CHECK(at <= w->n && w->n - at >= 8);
    sl_wr64(w->p + at, v);
}

uint32_t bw_crc32(const ByteWriter *w, size_t from)
{
    if (w->err) return 0;
    CHECK(from <= w->n);
    return sl_crc32(0, w->p + from, w->n - from);
}
