/* Strict recursive-descent JSON parser (see json.h for what "strict"
 * refuses).  The parser records the first problem (position + text) and
 * unwinds; the caller reports it once with line and column. */
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/common.h"

typedef struct {
    const char *s;
    size_t len, pos;
    const char *err; /* first problem, NULL if none */
    size_t err_pos;
    int nomem;
} Parser;

static int fail_at(Parser *p, size_t pos, const char *msg)
{
    if (!p->err) {
        p->err = msg;
        p->err_pos = pos;
    }
    return -1;
}

static int nomem(Parser *p)
{
    p->nomem = 1;
    return fail_at(p, p->pos, "out of memory");
}

static void skip_ws(Parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int peek(const Parser *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

void json_free(JsonValue *v)
{
    if (!v) return;
    sl_free(v->str);
    for (int i = 0; v->items && i < v->n; i++)
        json_free(v->items[i]);
    sl_free(v->items);
    for (int i = 0; v->members && i < v->n; i++) {
        sl_free(v->members[i].key);
        json_free(v->members[i].value);
    }
    sl_free(v->members);
    sl_free(v);
}

static JsonValue *new_value(Parser *p, JsonType t)
{
    JsonValue *v = sl_calloc(1, sizeof *v);
    if (!v) {
        nomem(p);
        return NULL;
    }
    v->type = t;
    return v;
}

/* ---- strings ---- */

/* Growable byte buffer for decoded strings. */
typedef struct {
    char *b;
    size_t n, cap;
} Buf;

static int buf_put(Parser *p, Buf *b, const char *src, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *nb = sl_realloc(b->b, cap);
        if (!nb) return nomem(p);
        b->b = nb;
        b->cap = cap;
    }
    memcpy(b->b + b->n, src, n);
    b->n += n;
    b->b[b->n] = '\0';
    return 0;
}

static int hex4(Parser *p, unsigned *out)
{
    if (p->len - p->pos < 4)
        return fail_at(p, p->pos, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + (size_t)i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return fail_at(p, p->pos + (size_t)i, "bad hex digit in \\u");
        v = v * 16 + d;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

static size_t utf8_encode(unsigned cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 (overlongs,
 * surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_valid(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k;
    unsigned cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0)
        k = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        k = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        k = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

/* At the opening quote.  *out: decoded, NUL-terminated (caller frees). */
static int parse_string(Parser *p, char **out)
{
    Buf b = {0};
    *out = NULL;
    p->pos++; /* opening quote */
    for (;;) {
        if (p->pos >= p->len) {
            fail_at(p, p->pos, "unterminated string");
            goto fail;
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            fail_at(p, p->pos, "control character in string (escape it)");
            goto fail;
        }
        if (c != '\\') {
            size_t k = utf8_valid((const unsigned char *)p->s + p->pos,
                                  p->len - p->pos);
            if (!k) {
                fail_at(p, p->pos, "invalid UTF-8 in string");
                goto fail;
            }
            if (buf_put(p, &b, p->s + p->pos, k)) goto fail;
            p->pos += k;
            continue;
        }
        size_t esc = p->pos++;
        if (p->pos >= p->len) {
            fail_at(p, esc, "unterminated escape");
            goto fail;
        }
        char e = p->s[p->pos++], ch;
        unsigned cp, lo;
        char u[4];
        switch (e) {
        case '"':
            ch = '"';
            break;
        case '\\':
            ch = '\\';
            break;
        case '/':
            ch = '/';
            break;
        case 'b':
            ch = '\b';
            break;
        case 'f':
            ch = '\f';
            break;
        case 'n':
            ch = '\n';
            break;
        case 'r':
            ch = '\r';
            break;
        case 't':
            ch = '\t';
            break;
        case 'u':
            if (hex4(p, &cp)) goto fail;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail_at(p, esc, "unpaired low surrogate in \\u escape");
                goto fail;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->len - p->pos < 2 || p->s[p->pos] != '\\' ||
                    p->s[p->pos + 1] != 'u') {
                    fail_at(p, esc, "unpaired high surrogate in \\u escape");
                    goto fail;
                }
                p->pos += 2;
                if (hex4(p, &lo)) goto fail;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail_at(p, esc, "bad surrogate pair in \\u escape");
                    goto fail;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) {
                fail_at(p, esc, "\\u0000 is not allowed in names");
                goto fail;
            }
            if (buf_put(p, &b, u, utf8_encode(cp, u))) goto fail;
            continue;
        default:
            fail_at(p, esc, "unknown escape in string");
            goto fail;
        }
        if (buf_put(p, &b, &ch, 1)) goto fail;
    }
    if (!b.b && buf_put(p, &b, "", 0)) goto fail;
    *out = b.b;
    return 0;
fail:
    sl_free(b.b);
    return -1;
}

/* ---- numbers ---- */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int parse_number(Parser *p, double *out)
{
    size_t start = p->pos;
    if (peek(p) == '-') p->pos++;
    if (peek(p) == '0') {
        p->pos++;
        if (is_digit(peek(p)))
            return fail_at(p, p->pos, "leading zero in number");
    } else if (is_digit(peek(p))) {
        while (is_digit(peek(p)))
            p->pos++;
    } else {
        return fail_at(p, p->pos, "expected a digit");
    }
    if (peek(p) == '.') {
        p->pos++;
        if (!is_digit(peek(p)))
            return fail_at(p, p->pos, "expected a digit after '.'");
        while (is_digit(peek(p)))
            p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-') p->pos++;
        if (!is_digit(peek(p)))
            return fail_at(p, p->pos, "expected a digit in the exponent");
        while (is_digit(peek(p)))
            p->pos++;
    }
    /* The grammar above was checked on the bounded text; strtod needs a
     * NUL-terminated copy (the input need not be terminated). */
    char tmp[64];
    size_t n = p->pos - start;
    if (n >= sizeof tmp)
        return fail_at(p, start, "number too long (more than 63 chars)");
    memcpy(tmp, p->s + start, n);
    tmp[n] = '\0';
    errno = 0;
    double v = strtod(tmp, NULL);
    if (!isfinite(v)) return fail_at(p, start, "number out of range");
    *out = v;
    return 0;
}

/* ---- values ---- */

static JsonValue *parse_value(Parser *p, int depth);

static int expect_word(Parser *p, const char *w)
{
    size_t n = strlen(w);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0)
        return fail_at(p, p->pos, "unexpected character");
    p->pos += n;
    return 0;
}

static JsonValue *parse_array(Parser *p, int depth)
{
    JsonValue *v = new_value(p, JSON_ARRAY);
    int cap = 0;
    if (!v) return NULL;
    p->pos++; /* [ */
    skip_ws(p);
    if (peek(p) == ']') {
        p->pos++;
        return v;
    }
    for (;;) {
        JsonValue *item = parse_value(p, depth + 1);
        if (!item) goto fail;
        if (v->n == cap) {
            int nc = cap ? cap * 2 : 8;
            if (cap > INT_MAX / 2) {
                json_free(item);
                fail_at(p, p->pos, "array with too many items");
                goto fail;
            }
            JsonValue **ni = sl_realloc(v->items, sizeof *ni * (size_t)nc);
            if (!ni) {
                json_free(item);
                nomem(p);
                goto fail;
            }
            v->items = ni;
            cap = nc;
        }
        v->items[v->n++] = item;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == ']') {
            p->pos++;
            return v;
        }
        fail_at(p, p->pos,
                c < 0 ? "unterminated array"
                      : "expected ',' or ']' in array");
        goto fail;
    }
fail:
    json_free(v);
    return NULL;
}

/* Duplicate keys are found through an open-addressing table of member
 * indices once an object has more than KEY_SCAN_MAX members: a linear
 * scan per key made an object of n members cost n^2 / 2 string compares
 * (a 10 MB file of distinct keys ran for hours). */
#define KEY_SCAN_MAX 16

typedef struct {
    int *slot;  /* member index + 1; 0 = empty */
    size_t cap; /* power of two, > 2 x members */
} KeyTable;

static size_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211u;
    return (size_t)h;
}

/* Index of the member with `key`, or -1 (and a free slot in *at). */
static int key_find(const KeyTable *t, const JsonValue *v, const char *key,
                    size_t *at)
{
    size_t i = key_hash(key) & (t->cap - 1);
    while (t->slot[i]) {
        int m = t->slot[i] - 1;
        if (strcmp(v->members[m].key, key) == 0) return m;
        i = (i + 1) & (t->cap - 1);
    }
    *at = i;
    return -1;
}

/* Make room for members 0..n (n + 1 of them), re-inserting all. */
static int key_reserve(Parser *p, KeyTable *t, const JsonValue *v, int n)
{
    if ((size_t)n + 1 <= t->cap / 2) return 0;
    size_t cap = t->cap ? t->cap : 64;
    while ((size_t)n + 1 > cap / 2)
        cap *= 2;
    int *slot = sl_calloc(cap, sizeof *slot);
    if (!slot) return nomem(p);
    sl_free(t->slot);
    t->slot = slot;
    t->cap = cap;
    for (int m = 0; m < n; m++) {
        size_t at = 0;
        key_find(t, v, v->members[m].key, &at);
        t->slot[at] = m + 1;
    }
    return 0;
}

static JsonValue *parse_object(Parser *p, int depth)
{
    JsonValue *v = new_value(p, JSON_OBJECT);
    int cap = 0;
    char *key = NULL;
    KeyTable keys = {NULL, 0};
    if (!v) return NULL;
    p->pos++; /* { */
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        return v;
    }
    for (;;) {
        skip_ws(p);
        size_t kpos = p->pos;
        if (peek(p) != '"') {
            fail_at(p, p->pos,
                    peek(p) < 0 ? "unterminated object"
                                : "expected a string key");
            goto fail;
        }
        if (parse_string(p, &key)) goto fail;
        int dup = 0;
        size_t at = 0;
        if (v->n < KEY_SCAN_MAX) {
            for (int i = 0; i < v->n; i++)
                if (strcmp(v->members[i].key, key) == 0) dup = 1;
        } else {
            if (key_reserve(p, &keys, v, v->n)) goto fail;
            dup = key_find(&keys, v, key, &at) >= 0;
        }
        if (dup) {
            fail_at(p, kpos, "duplicate key in object");
            goto fail;
        }
        skip_ws(p);
        if (peek(p) != ':') {
            fail_at(p, p->pos, "expected ':' after key");
            goto fail;
        }
        p->pos++;
        JsonValue *val = parse_value(p, depth + 1);
        if (!val) goto fail;
        if (v->n == cap) {
            int nc = cap ? cap * 2 : 8;
            if (cap > INT_MAX / 2) {
                json_free(val);
                fail_at(p, kpos, "object with too many members");
                goto fail;
            }
            JsonMember *nm = sl_realloc(v->members, sizeof *nm * (size_t)nc);
            if (!nm) {
                json_free(val);
                nomem(p);
                goto fail;
            }
            v->members = nm;
            cap = nc;
        }
        v->members[v->n].key = key;
        v->members[v->n].value = val;
        if (keys.slot) keys.slot[at] = v->n + 1;
        v->n++;
        key = NULL;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == '}') {
            p->pos++;
            sl_free(keys.slot);
            return v;
        }
        fail_at(p, p->pos,
                c < 0 ? "unterminated object"
                      : "expected ',' or '}' in object");
        goto fail;
    }
fail:
    sl_free(keys.slot);
    sl_free(key);
    json_free(v);
    return NULL;
}

static JsonValue *parse_value(Parser *p, int depth)
{
    JsonValue *v = NULL;
    skip_ws(p);
    if (depth >= JSON_MAX_DEPTH) {
        fail_at(p, p->pos, "nesting deeper than 64 levels");
        return NULL;
    }
    int c = peek(p);
    switch (c) {
    case '{':
        return parse_object(p, depth);
    case '[':
        return parse_array(p, depth);
    case '"':
        if (!(v = new_value(p, JSON_STRING))) return NULL;
        if (parse_string(p, &v->str)) goto fail;
        return v;
    case 't':
    case 'f':
        if (!(v = new_value(p, JSON_BOOL))) return NULL;
        v->boolean = c == 't';
        if (expect_word(p, c == 't' ? "true" : "false")) goto fail;
        return v;
    case 'n':
        if (!(v = new_value(p, JSON_NULL))) return NULL;
        if (expect_word(p, "null")) goto fail;
        return v;
    case -1:
        fail_at(p, p->pos, "unexpected end of text");
        return NULL;
    default:
        if (c == '-' || is_digit(c)) {
            if (!(v = new_value(p, JSON_NUMBER))) return NULL;
            if (parse_number(p, &v->number)) goto fail;
            return v;
        }
        fail_at(p, p->pos, "unexpected character");
        return NULL;
    }
fail:
    json_free(v);
    return NULL;
}

int json_parse(const char *text, size_t len, const char *what,
               JsonValue **out)
{
    Parser p = {.s = text, .len = len};
    *out = NULL;
    JsonValue *v = parse_value(&p, 0);
    if (v) {
        skip_ws(&p);
        if (p.pos != p.len) fail_at(&p, p.pos, "text after the JSON value");
    }
    if (p.err) {
        json_free(v);
        if (p.nomem) {
            sl_error("out of memory parsing '%s'", what);
            return ERR_NOMEM;
        }
        int line = 1, col = 1;
        for (size_t i = 0; i < p.err_pos && i < len; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        sl_error("'%s' is not valid JSON: %s at line %d column %d; fix the "
                 "file",
                 what, p.err, line, col);
        return ERR_FORMAT;
    }
    *out = v;
    return 0;
}

int json_parse_file(const char *path, JsonValue **out)
{
    uint8_t *data = NULL;
    size_t size = 0;
    *out = NULL;
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size > JSON_MAX_FILE_BYTES) {
        sl_error("'%s' is %lld bytes, more than the %d MiB a JSON file of "
                 "this project may have; check that it is the right file",
                 path, (long long)st.st_size, JSON_MAX_FILE_BYTES >> 20);
        return ERR_FORMAT;
    }
    int rc = sl_read_file(path, &data, &size);
    if (rc) return rc;
    rc = json_parse((const char *)data, size, path, out);
    sl_free(data);
    return rc;
}

const JsonValue *json_get(const JsonValue *v, const char *key)
{
    if (!v || v->type != JSON_OBJECT) return NULL;
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->members[i].key, key) == 0) return v->members[i].value;
    return NULL;
}

const char *json_type_name(JsonType t)
{
    switch (t) {
    case JSON_NULL:
        return "null";
    case JSON_BOOL:
        return "boolean";
    case JSON_NUMBER:
        return "number";
    case JSON_STRING:
        return "string";
    case JSON_ARRAY:
        return "array";
    case JSON_OBJECT:
        return "object";
    }
    return "?";
}

int json_is_int(const JsonValue *v, long long lo, long long hi)
{
    if (!v || v->type != JSON_NUMBER) return 0;
    double x = v->number;
    return x == floor(x) && x >= (double)lo && x <= (double)hi;
}

void json_write_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*c < 0x20)
                fprintf(f, "\\u%04x", *c);
            else
                fputc(*c, f);
        }
    }
    fputc('"', f);
}
