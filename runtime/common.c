/* Errors, allocation, small file helpers shared by every module. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The only mutable process state in the library: the last error line (so a
 * failure is reported once, by the layer that knows most) and the test hook
 * hooks of the allocator (fail the n-th allocation, record the largest
 * request and the sum of requests).  All are diagnostics, never part of a
 * computation. */
static char last_error[1024];
static int error_reported;
static int error_quiet;
static long alloc_fail_countdown = -1;
static size_t alloc_largest;
static size_t alloc_total;
static int alloc_track; /* record alloc_largest and alloc_total (off: no
                         * shared writes) */

const char *sl_strerror(int code)
{
    switch (code) {
    case SL_OK:
        return "ok";
    case ERR_NOMEM:
        return "out of memory";
    case ERR_IO:
        return "input/output error";
    case ERR_FORMAT:
        return "malformed file";
    case ERR_UNSUPPORTED:
        return "unsupported";
    case ERR_SHAPE:
        return "inconsistent shapes";
    case ERR_ARG:
        return "bad argument";
    case ERR_EXISTS:
        return "output exists";
    default:
        return "unknown error";
    }
}

/* Length of the valid UTF-8 sequence at p (at most n bytes) that may be
 * shown as it is, or 0: ASCII controls and DEL, C1 controls (U+0080 to
 * U+009F), U+2028/U+2029 (line and paragraph separators), overlong forms,
 * surrogates and anything past U+10FFFF are not. */
static size_t utf8_printable(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    uint32_t cp;
    if (c >= 0x20 && c < 0x7f) return 1;
    if (c < 0xc2 || c > 0xf4) return 0; /* ASCII controls, DEL, 80-C1 */
    len = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (n < len) return 0;
    cp = c & (len == 2 ? 0x1f : len == 3 ? 0x0f : 0x07);
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp < 0xa0 ||
        cp == 0x2028 || cp == 0x2029)
        return 0;
    return len;
}

/* Escape n bytes of src into dst (cap bytes, always NUL-terminated);
 * quotes: also escape ' " and \.  Cut with "..." when it does not fit. */
static void esc_into(char *dst, size_t cap, const char *src, size_t n,
                     int quotes)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)src;
    size_t o = 0, room = cap - 4; /* keep space for "..." and the NUL */
    for (size_t k = 0; k < n && p[k];) {
        size_t len = utf8_printable(p + k, n - k);
        char tmp[4];
        size_t tl;
        if (len == 1 && quotes &&
            (p[k] == '\\' || p[k] == '\'' || p[k] == '"')) {
            tmp[0] = '\\';
            tmp[1] = (char)p[k];
            tl = 2;
        } else if (len) {
            tl = 0;
        } else {
            tmp[0] = '\\';
            tmp[1] = 'x';
            tmp[2] = hex[p[k] >> 4];
            tmp[3] = hex[p[k] & 15];
            tl = 4;
        }
        size_t need = tl ? tl : len;
        if (o + need > room) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(dst + o, tl ? tmp : (const char *)p + k, need);
        o += need;
        k += len ? len : 1;
    }
    dst[o] = '\0';
}

SlEsc sl_esc_n(const char *s, size_t n)
{
    SlEsc e;
    if (!s)
        snprintf(e.s, sizeof e.s, "(none)");
    else
        esc_into(e.s, sizeof e.s, s, n, 1);
    return e;
}

SlEsc sl_esc(const char *s)
{
    return sl_esc_n(s, s ? strlen(s) : 0);
}

void sl_error(const char *fmt, ...)
{
    char line[sizeof last_error];
    if (error_reported) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One line, whatever the message contained: its own line breaks become
     * spaces, every other byte a terminal would act on is escaped. */
    for (char *c = line; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    esc_into(last_error, sizeof last_error, line, strlen(line), 0);
    error_reported = 1;
    if (!error_quiet) fprintf(stderr, "error: %s\n", last_error);
}

void sl_error_reset(void)
{
    error_reported = 0;
    last_error[0] = '\0';
}

int sl_error_reported(void)
{
    return error_reported;
}
const char *sl_error_last(void)
{
    return last_error;
}
void sl_error_quiet(int quiet)
{
    error_quiet = quiet;
}
int sl_error_is_quiet(void)
{
    return error_quiet;
}

void sl_check_failed(const char *expr, const char *file, int line)
{
    fprintf(stderr,
            "internal error: %s:%d: CHECK(%s) failed; please report "
            "this bug\n",
            file, line, expr);
    abort();
}

void sl_alloc_fail_after(long n)
{
    alloc_fail_countdown = n;
}

void sl_alloc_track(int on)
{
    alloc_track = on;
    alloc_largest = 0;
    alloc_total = 0;
}

size_t sl_alloc_largest(void)
{
    return alloc_largest;
}
size_t sl_alloc_total(void)
{
    return alloc_total;
}

static int alloc_should_fail(size_t bytes)
{
    if (alloc_track && bytes > alloc_largest) alloc_largest = bytes;
    if (alloc_track) alloc_total += bytes;
    if (alloc_fail_countdown < 0) return 0;
    if (alloc_fail_countdown == 0) {
        alloc_fail_countdown = -1;
        return 1;
    }
    alloc_fail_countdown--;
    return 0;
}

void *sl_alloc(size_t bytes)
{
    if (alloc_should_fail(bytes)) return NULL;
    /* Round up: aligned_alloc wants a multiple of the alignment. */
    size_t n = (bytes + 63) & ~(size_t)63;
    if (n < bytes) return NULL;
    if (n == 0) n = 64;
    return aligned_alloc(64, n);
}

void *sl_calloc(size_t count, size_t size)
{
    size_t n;
    if (sl_mul_size(count, size, &n)) {
        if (alloc_track) alloc_largest = SIZE_MAX; /* too large to count */
        return NULL;
    }
    void *p = sl_alloc(n);
    if (p) memset(p, 0, n);
    return p;
}

void *sl_realloc(void *p, size_t bytes)
{
    if (alloc_should_fail(bytes)) return NULL;
    return realloc(p, bytes ? bytes : 1);
}

void sl_free(void *p)
{
    free(p);
}

char *sl_strdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = sl_alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int sl_mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int sl_parse_bytes(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return ERR_ARG;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return ERR_ARG;
        v = v * 10 + d;
    }
    int shift = 0;
    switch (*s) {
    case 'k':
    case 'K':
        shift = 10;
        s++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        s++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        s++;
        break;
    case 't':
    case 'T':
        shift = 40;
        s++;
        break;
    default:
        break;
    }
    if (*s == 'b' || *s == 'B') s++;
    if (*s || v == 0 || v > UINT64_MAX >> shift) return ERR_ARG;
    *out = v << shift;
    return 0;
}

const char *sl_fmt_bytes(double bytes, char buf[32])
{
    if (bytes < 1024.0)
        snprintf(buf, 32, "%.0f bytes", bytes);
    else if (bytes < 1048576.0)
        snprintf(buf, 32, "%.1f KiB", bytes / 1024.0);
    else if (bytes < 1073741824.0)
        snprintf(buf, 32, "%.1f MiB", bytes / 1048576.0);
    else
        snprintf(buf, 32, "%.1f GiB", bytes / 1073741824.0);
    return buf;
}

int sl_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int sl_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int sl_read_file(const char *path, uint8_t **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        sl_error("cannot open '%s': %s; check the path", path,
                 strerror(errno));
        return ERR_IO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        sl_error("'%s' is not a regular file; give the path of a file", path);
        return ERR_IO;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = sl_alloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        sl_error("out of memory reading '%s' (%zu bytes)", path, n);
        return ERR_NOMEM;
    }
    if (n && fread(buf, 1, n, f) != n) {
        fclose(f);
        sl_free(buf);
        sl_error("cannot read '%s': short read; check the file", path);
        return ERR_IO;
    }
    fclose(f);
    *data = buf;
    *size = n;
    return SL_OK;
}

char *sl_tmp_path(const char *path)
{
    size_t n = strlen(path) + 32;
    char *t = sl_alloc(n);
    if (t) snprintf(t, n, "%s.tmp.%ld", path, (long)getpid());
    return t;
}

int sl_is_dead_temp(const char *name, const char *stem)
{
    const char *tmp = strstr(name, ".tmp."), *p;
    if (!tmp || !tmp[5]) return 0;
    if (stem && ((size_t)(tmp - name) != strlen(stem) ||
                 strncmp(name, stem, (size_t)(tmp - name))))
        return 0;
    for (p = tmp + 5; *p >= '0' && *p <= '9'; p++)
        continue;
    long pid = strtol(tmp + 5, NULL, 10);
    if (*p || pid <= 0 || pid == (long)getpid()) return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

void sl_remove_dead_temps(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dn = slash ? (size_t)(slash - path) + 1 : 0;
    char *dir = sl_alloc(dn + 2);
    if (!dir) return;
    if (dn)
        memcpy(dir, path, dn);
    else
        dir[dn++] = '.';
    dir[dn] = '\0';
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!sl_is_dead_temp(e->d_name, base)) continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *f = sl_alloc(n);
        if (f) {
            snprintf(f, n, "%s%s%s", dir, slash ? "" : "/", e->d_name);
            unlink(f);
        }
        sl_free(f);
    }
    if (d) closedir(d);
    sl_free(dir);
}

int sl_write_file_atomic(const char *path, const void *data, size_t size,
                         int force)
{
    if (!force && sl_file_exists(path)) {
        sl_error("output '%s' exists; pass --force to overwrite it", path);
        return ERR_EXISTS;
    }
    char *tmp = sl_tmp_path(path);
    if (!tmp) {
        sl_error("out of memory writing '%s'", path);
        return ERR_NOMEM;
    }
    int rc = ERR_IO;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        sl_error("cannot write '%s' (creating '%s': %s); check the folder "
                 "exists and is writable",
                 path, tmp, strerror(errno));
        goto fail;
    }
    const uint8_t *p = data;
    size_t left = size;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            sl_error("cannot write '%s': %s; check free disk space (no "
                     "partial file is left)",
                     path, strerror(errno));
            close(fd);
            unlink(tmp);
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        sl_error("cannot write '%s': %s; check free disk space (no "
                 "partial file is left)",
                 path, strerror(errno));
        unlink(tmp);
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        sl_error("cannot rename '%s' to '%s': %s", tmp, path,
                 strerror(errno));
        unlink(tmp);
        goto fail;
    }
    rc = SL_OK;
fail:
    sl_free(tmp);
    return rc;
}

double sl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void sl_sort_doubles(double *x, size_t n)
{
    qsort(x, n, sizeof *x, cmp_double);
}

double sl_median(double *x, size_t n)
{
    sl_sort_doubles(x, n);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

uint32_t sl_crc32(uint32_t crc, const void *buf, size_t n)
{
    /* Reflected polynomial 0xEDB88320, a nibble at a time: a 16-entry
     * constant table is fast enough for model files of a few MB. */
    static const uint32_t table[16] = {
        0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu,
        0x76dc4190u, 0x6b6b51f4u, 0x4db26158u, 0x5005713cu,
        0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu,
        0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu,
    };
    const uint8_t *p = buf;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ table[crc & 15];
        crc = (crc >> 4) ^ table[crc & 15];
    }
    return ~crc;
}
