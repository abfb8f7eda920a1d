/* The byte codec every file format of the project is written with
 * (.sslim, training checkpoints, the pruner's and the schedule's state): a
 * bounds-checked reader over a buffer and a growable writer.
 *
 * Encoding: integers little-endian two's complement, floats as their
 * IEEE-754 bits (little-endian), strings as u32 length + bytes (no NUL;
 * length 0xFFFFFFFF stands for NULL).  Never a pointer cast: every value
 * is assembled byte by byte (sl_rd32/sl_wr32 in common.h), so the files
 * are the same on every host.
 *
 * Error convention: a sticky error code.  Each ByteReader/ByteWriter holds
 * `err`, 0 until an operation fails, then the first ERR_* code (reader:
 * ERR_FORMAT when it would read past the end or finds an invalid value,
 * ERR_NOMEM when a string cannot be allocated; writer: ERR_NOMEM, or
 * ERR_ARG for a string too long for its u32 length).  Once
 * set it stays: reads return 0 (NULL for pointers) and writes do nothing,
 * so a decoder reads a whole structure and checks `err` once at the end,
 * and never sees bytes from beyond the buffer.  The codec prints nothing:
 * the caller knows the file's name and what to do, and reports one line
 * with sl_error().
 */
#ifndef SL_BYTES_H
#define SL_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* Length marker of a NULL string. */
#define BYTES_NULL_STR 0xFFFFFFFFu

/* ---- reader: a cursor over borrowed bytes ---- */

typedef struct {
    const uint8_t *p; /* borrowed */
    size_t n;         /* bytes in p */
    size_t pos;       /* next byte to read */
    int err;          /* 0 or the first ERR_* (sticky) */
} ByteReader;

void br_init(ByteReader *r, const void *data, size_t n);
/* Bytes left to read (0 once failed). */
size_t br_left(const ByteReader *r);
/* Set err to code unless an error is already set (a decoder's own
 * checks: a count out of range, an unknown enum value). */
void br_fail(ByteReader *r, int code);
/* The next n bytes, borrowed from the buffer; NULL (ERR_FORMAT) if fewer
 * than n are left. */
const uint8_t *br_bytes(ByteReader *r, size_t n);
void br_skip(ByteReader *r, size_t n);
/* Skip to the next multiple of `align` (a power of two) from the start
 * of the buffer; the skipped bytes must be zero (else ERR_FORMAT). */
void br_align(ByteReader *r, size_t align);
uint8_t br_u8(ByteReader *r);
uint16_t br_u16(ByteReader *r);
uint32_t br_u32(ByteReader *r);
uint64_t br_u64(ByteReader *r);
int32_t br_i32(ByteReader *r);
int64_t br_i64(ByteReader *r);
float br_f32(ByteReader *r);
double br_f64(ByteReader *r);
/* n values into dst (left unchanged where the read failed). */
void br_i32s(ByteReader *r, int *dst, size_t n);
void br_f32s(ByteReader *r, float *dst, size_t n);
/* A u32 count of items to come, each at least min_bytes long: ERR_FORMAT
 * (and 0) if it exceeds max or what the bytes left could hold, so a
 * corrupt count never makes the caller allocate or loop far. */
uint32_t br_count(ByteReader *r, uint32_t max, size_t min_bytes);
/* A string: a new NUL-terminated copy (caller sl_free()s), or NULL for
 * the NULL marker or on error.  ERR_FORMAT if longer than max_len or if
 * it holds a NUL byte; ERR_NOMEM if the copy cannot be allocated. */
char *br_str(ByteReader *r, uint32_t max_len);
/* err, or ERR_FORMAT if bytes are left over: call at the end of a
 * structure that must fill its buffer exactly. */
int br_finish(ByteReader *r);

/* ---- writer: a growable buffer ---- */

typedef struct {
    uint8_t *p; /* owned; sl_realloc'd, free with sl_free (or bw_free) */
    size_t n;   /* bytes written */
    size_t cap;
    int err; /* 0 or the first ERR_* (sticky) */
} ByteWriter;

/* A zeroed ByteWriter ({0}) is ready too. */
void bw_init(ByteWriter *w);
void bw_free(ByteWriter *w);
/* Append n bytes and return where they go (the caller fills them), or
 * NULL once err is set. */
uint8_t *bw_reserve(ByteWriter *w, size_t n);
void bw_bytes(ByteWriter *w, const void *src, size_t n);
void bw_zeros(ByteWriter *w, size_t n);
/* Zeros up to the next multiple of `align` (a power of two). */
void bw_align(ByteWriter *w, size_t align);
void bw_u8(ByteWriter *w, uint8_t v);
void bw_u16(ByteWriter *w, uint16_t v);
void bw_u32(ByteWriter *w, uint32_t v);
void bw_u64(ByteWriter *w, uint64_t v);
void bw_i32(ByteWriter *w, int32_t v);
void bw_i64(ByteWriter *w, int64_t v);
void bw_f32(ByteWriter *w, float v);
void bw_f64(ByteWriter *w, double v);
void bw_i32s(ByteWriter *w, const int *v, size_t n);
void bw_f32s(ByteWriter *w, const float *v, size_t n);
/* u32 length + bytes; NULL writes the NULL marker.  ERR_ARG for a
 * string of 0xFFFFFFFF bytes or more (a format's own limit is usually
 * lower: check it before encoding, as the reader will). */
void bw_str(ByteWriter *w, const char *s);
/* Overwrite bytes already written at offset `at` (a field whose value is
 * known later: a size, a checksum).  No-op once err is set. */
void bw_put_u32_at(ByteWriter *w, size_t at, uint32_t v);
void bw_put_u64_at(ByteWriter *w, size_t at, uint64_t v);
/* CRC-32 (sl_crc32) of the bytes written in [from, w->n); 0 once err. */
uint32_t bw_crc32(const ByteWriter *w, size_t from);

#endif
