/* Command-line options from one constant table per program.
 *
 * Each program declares its options once (long name, short name, value
 * type, range, metavar, help text, where the value goes) and this layer
 * parses them with getopt_long, prints --help and writes the man page
 * (hidden --man) from the same table.  `--opt value` and `--opt=value`
 * both work for every option.  Every bad value gives the same line:
 *
 *   error: --threads: 'abc' is not an integer in 1..4096; see segment --help
 *
 * Targets are offsets into the program's options struct (no globals):
 * cli_parse writes the value at (char *)opts + group base + off.
 */
#ifndef SL_CLIOPT_H
#define SL_CLIOPT_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    CLI_FLAG,   /* int, set to 1 */
    CLI_INT,    /* int in [lo, hi] */
    CLI_U64,    /* unsigned long long, decimal, no sign */
    CLI_DOUBLE, /* finite double in [lo, hi] */
    CLI_STRING, /* const char *, non-empty, borrowed from argv */
    CLI_CHOICE, /* int: the value of the matching name in choices */
    CLI_CUSTOM, /* parse(value, target); `expect` says what it wants */
} CliType;

typedef struct {
    const char *name;
    int value;
} CliChoice;

/* The choices of an on/off switch: off = 0, on = 1. */
extern const CliChoice cli_on_off[];

typedef struct {
    const char *name; /* long name without "--" */
    char short_name;  /* 0: none */
    CliType type;
    double lo, hi;       /* CLI_INT, CLI_DOUBLE: inclusive range */
    const char *metavar; /* value placeholder in --help ("N", "FILE") */
    const char *help;    /* one paragraph, wrapped by the printers */
    size_t off;          /* offset of the target in the group's struct */
    int has_mark;        /* with mark: an int set to 1 when given */
    size_t mark;
    const CliChoice *choices; /* CLI_CHOICE: ends with {NULL, 0} */
    /* CLI_CUSTOM: 0, or -1 for a bad value (the layer prints the line) */
    int (*parse)(const char *value, void *target);
    const char *expect; /* CLI_CUSTOM: "three sizes D,H,W in 1..4096" */
} CliOpt;

/* Options whose targets live in one struct at `base` inside the
 * program's options struct (0 for the struct itself). */
typedef struct {
    const char *title; /* heading in --help and the man page; NULL: none */
    const CliOpt *opts;
    int n;
    size_t base;
} CliGroup;

typedef struct {
    const char *prog;        /* "segment" */
    const char *version;     /* the --version line */
    const char *summary;     /* NAME line of the man page */
    const char *synopsis;    /* after the program name: "[options] SCAN..." */
    const char *description; /* paragraphs separated by blank lines */
    const CliGroup *groups;
    int n_groups;
    const char *notes; /* after the options (NULL: none), same layout */
} CliSpec;

/* What cli_parse found besides options. */
enum { CLI_HELP = 1, CLI_VERSION = 2, CLI_MAN = 3 };

/* Parse argv[1..argc-1] into opts (defaults are the caller's: fields not
 * given are left as they are).  Non-option arguments, and everything
 * after "--", go to pos[0..*n_pos-1] in order (pos holds argc entries).
 * -h/--help, --version and the hidden --man stop parsing and return
 * CLI_HELP, CLI_VERSION or CLI_MAN (nothing printed).  Returns 0, or
 * ERR_ARG with one sl_error() line (unknown or ambiguous option, missing
 * value, bad value), or ERR_NOMEM. */
int cli_parse(const CliSpec *s, int argc, char **argv, void *opts, char **pos,
              int *n_pos);

/* --help text / roff man page, both generated from the table. */
void cli_help(const CliSpec *s, FILE *f);
void cli_man(const CliSpec *s, FILE *f);

/* The common error line for a value an option refuses:
 * "error: OPT: 'VALUE' is not EXPECT; see PROG --help".  Returns ERR_ARG.
 * For checks made after parsing (values that depend on each other). */
int cli_bad_value(const CliSpec *s, const char *opt, const char *value,
                  const char *expect);

/* Whole-string decimal integer / finite number in [lo, hi]: 0, or -1
 * (nothing printed, *out untouched). */
int cli_parse_long(const char *v, long lo, long hi, long *out);
int cli_parse_double(const char *v, double lo, double hi, double *out);

#endif
