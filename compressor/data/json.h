/* A small strict JSON (RFC 8259) parser into a tree, and string escaping
 * for writers.
 *
 * Strict means: no comments, no trailing commas, no NaN/Infinity, no
 * leading zeros or '+' in numbers, no unescaped control characters in
 * strings, valid UTF-8 only, no duplicate keys in one object (a config
 * with two "labels" is ambiguous, so it is refused rather than guessed).
 * Nesting is limited to JSON_MAX_DEPTH so hostile input cannot exhaust
 * the stack.  Strings are decoded (escapes, \uXXXX with surrogate pairs,
 * to UTF-8) and NUL-terminated; \u0000 is refused because names in this
 * project are C strings.
 *
 * Ownership: json_parse returns one tree owned by the caller, freed with
 * json_free.  Every pointer inside (keys, strings, children) belongs to
 * the tree.  Object members keep their order in the document.
 */
#ifndef SL_JSON_H
#define SL_JSON_H

#include <stddef.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 64
/* Largest file json_parse_file reads.  A parsed value costs up to about
 * 40 times its text (a tree node per "0,"), so this bounds the tree near
 * 300 MiB; an nnU-Net dataset.json listing 50 000 cases is about 4 MiB. */
#define JSON_MAX_FILE_BYTES (8 << 20)

typedef enum {
    JSON_NULL,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
} JsonType;

typedef struct JsonValue JsonValue;

typedef struct {
    char *key; /* decoded, NUL-terminated */
    JsonValue *value;
} JsonMember;

struct JsonValue {
    JsonType type;
    int boolean;   /* JSON_BOOL */
    double number; /* JSON_NUMBER (as strtod reads it) */
    char *str;     /* JSON_STRING: decoded, NUL-terminated */
    int n;         /* JSON_ARRAY: items; JSON_OBJECT: members */
    JsonValue **items;
    JsonMember *members;
};

/* Parse text[0..len) (one JSON value, surrounded by optional whitespace).
 * `what` names the source in messages (usually the file name).  Returns
 * 0 and *out, or ERR_FORMAT with one line via sl_error() giving line and
 * column of the first problem, or ERR_NOMEM.  Nothing allocated on
 * failure. */
int json_parse(const char *text, size_t len, const char *what,
               JsonValue **out);
/* Read and parse a whole file (ERR_IO if unreadable, ERR_FORMAT if larger
 * than JSON_MAX_FILE_BYTES, refused before it is read). */
int json_parse_file(const char *path, JsonValue **out);
void json_free(JsonValue *v);

/* Member of an object by key, or NULL (also NULL if v is not an object). */
const JsonValue *json_get(const JsonValue *v, const char *key);
/* Name of a type for messages ("object", "number", ...). */
const char *json_type_name(JsonType t);
/* Nonzero if v is a number holding an integer in [lo, hi]. */
int json_is_int(const JsonValue *v, long long lo, long long hi);

/* Write s as a JSON string literal (quotes and escapes) to f. */
void json_write_string(FILE *f, const char *s);

#endif
