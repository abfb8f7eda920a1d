/* Error codes, one-line error reporting, the single allocator, CHECK.
 *
 * Library code returns 0 or a negative ERR_* code and reports the failure
 * once with sl_error(): one line saying what failed, where (file, node),
 * and what to do.  Only main() turns a code into an exit status.
 */
#ifndef SL_COMMON_H
#define SL_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum {
    SL_OK = 0,
    ERR_NOMEM = -1,       /* allocation failed */
    ERR_IO = -2,          /* open/read/write/rename failed */
    ERR_FORMAT = -3,      /* malformed or corrupted input file */
    ERR_UNSUPPORTED = -4, /* valid input we do not handle (op, datatype) */
    ERR_SHAPE = -5,       /* inconsistent or out-of-range shapes */
    ERR_ARG = -6,         /* bad argument or option value */
    ERR_EXISTS = -7,      /* output exists and --force was not given */
};

const char *sl_strerror(int code);

/* Print "error: <message>" as one line on stderr.  Messages say what
 * failed, which file or node, and what to do.  If several layers report
 * the same failure only the first (innermost) line is printed; call
 * sl_error_reset() before starting an independent operation. */
void sl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A name or string taken from an input file (an ONNX node or tensor name,
 * a .sslim value name, a NIfTI descrip), made safe to echo in a message:
 * control characters, DEL, C1 controls, the Unicode line separators and
 * bytes that are not valid UTF-8 become \xNN; a backslash or a quote
 * is preceded by a backslash (a name cannot fake the message around it);
 * valid UTF-8 letters stay as they are; past SL_ESC_MAX - 4 bytes the text
 * is cut and ends in "...".  NULL gives "(none)".  The result is a struct
 * so that it needs no buffer at the call site: in C11 the array of a
 * returned struct lives until the end of the full expression, so
 *     sl_error("node '%s' ...", sl_esc(name).s);
 * is valid.  sl_error() also passes its whole line through the same
 * filter (without the quote rule): nothing a message contains can move the
 * terminal's cursor or print as a second line. */
#define SL_ESC_MAX 160
typedef struct {
    char s[SL_ESC_MAX];
} SlEsc;
SlEsc sl_esc(const char *s);
/* The same for n bytes that need not end in a NUL (raw protobuf bytes). */
SlEsc sl_esc_n(const char *s, size_t n);
void sl_error_reset(void);
/* Nonzero once sl_error() has printed since the last reset. */
int sl_error_reported(void);
/* Text of the last reported error (for tests); "" if none. */
const char *sl_error_last(void);
/* Silence stderr output (tests that provoke errors on purpose). */
void sl_error_quiet(int quiet);
/* Current quiet setting (so probing code can restore it). */
int sl_error_is_quiet(void);

/* Every allocation goes through these so tests can make the n-th one fail.
 * sl_alloc returns 64-byte aligned memory; sizes of 0 are allowed. */
void *sl_alloc(size_t bytes);
void *sl_calloc(size_t count, size_t size); /* overflow-checked, 64-aligned */
void *sl_realloc(void *p, size_t bytes);    /* not aligned beyond malloc's */
void sl_free(void *p);
char *sl_strdup(const char *s);
/* Test hook: the n-th allocation from now (0 = the next one) fails;
 * n < 0 disables.  Process-wide; tests only. */
void sl_alloc_fail_after(long n);
/* Test hook: sl_alloc_track(1) starts recording the largest single
 * request (failed ones too) from 0, sl_alloc_largest() reads it, so a test
 * can show that a reader refused a huge claim before allocating for it.
 * Process-wide, single-threaded tests only; off by default. */
void sl_alloc_track(int on);
size_t sl_alloc_largest(void);
/* The bytes requested from sl_alloc/sl_calloc/sl_realloc since
 * sl_alloc_track(1) (frees not subtracted): what a step allocated, for a
 * test that counts the copies a model's weights have at load. */
size_t sl_alloc_total(void);

/* Internal invariant (never input validation): print file:line and abort. */
#define CHECK(x)                                                             \
    do {                                                                     \
        if (!(x)) sl_check_failed(#x, __FILE__, __LINE__);                   \
    } while (0)
void sl_check_failed(const char *expr, const char *file, int line)
    __attribute__((noreturn));

/* Overflow-checked size arithmetic: return 0 and set *out, or -1. */
int sl_mul_size(size_t a, size_t b, size_t *out);

/* Little-endian encode/decode without pointer casts. */
static inline uint32_t sl_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static inline uint64_t sl_rd64(const uint8_t *p)
{
    return (uint64_t)sl_rd32(p) | (uint64_t)sl_rd32(p + 4) << 32;
}
static inline void sl_wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void sl_wr64(uint8_t *p, uint64_t v)
{
    sl_wr32(p, (uint32_t)v);
    sl_wr32(p + 4, (uint32_t)(v >> 32));
}

/* CRC-32 (IEEE 802.3, as zlib): crc = sl_crc32(0, buf, n) */
uint32_t sl_crc32(uint32_t crc, const void *buf, size_t n);

/* Files: read a whole file (caller frees with sl_free); write atomically
 * to path via "path.tmp.PID" + fsync + rename.  If !force and path exists,
 * return ERR_EXISTS (message says to pass --force). */
int sl_read_file(const char *path, uint8_t **data, size_t *size);
int sl_write_file_atomic(const char *path, const void *data, size_t size,
                         int force);
/* Temporary name beside `path` for an atomic write (caller frees). */
char *sl_tmp_path(const char *path);
/* Nonzero if file name `name` is "STEM.tmp.PID" (STEM == stem; any stem
 * when stem is NULL) of a process that no longer exists: what a write
 * killed before its rename leaves. */
int sl_is_dead_temp(const char *name, const char *stem);
/* Remove the "path.tmp.PID" files of dead processes beside path.  Best
 * effort: one it cannot remove is only clutter. */
void sl_remove_dead_temps(const char *path);
int sl_file_exists(const char *path);
/* Nonzero if both paths name one existing file (same device and inode, so
 * also through links or another spelling of the path): an output that is
 * an input must be refused, --force or not. */
int sl_same_file(const char *a, const char *b);

/* A byte count as given on a command line: digits with an optional K, M,
 * G or T suffix (powers of 1024, case-insensitive, optional trailing B:
 * "512M", "8G", "1000000").  0 and *out set, or ERR_ARG (nothing
 * printed) for anything else, zero or an overflow. */
int sl_parse_bytes(const char *s, uint64_t *out);
/* "812 bytes", "3.5 KiB", "120.0 MiB", "17.2 GiB" into buf; returns buf. */
const char *sl_fmt_bytes(double bytes, char buf[32]);

/* Wall clock in seconds (monotonic). */
double sl_now(void);

/* Sorts x[0..n) ascending in place. */
void sl_sort_doubles(double *x, size_t n);
/* Sorts x[0..n) and returns its median (the mean of the two middle values
 * for even n).  n >= 1. */
double sl_median(double *x, size_t n);

#endif
