/* Command-line options from one constant table (cliopt.h). */
#include "cliopt.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const CliChoice cli_on_off[] = {{"off", 0}, {"on", 1}, {NULL, 0}};

/* getopt_long returns a long-only option as LONG_BASE + its index in the
 * flattened table (above every char value); built-ins follow the table. */
#define LONG_BASE 256
#define HELP_COLUMN 26 /* help text starts here in --help */
#define HELP_WIDTH 79

typedef struct {
    const CliOpt *o;
    size_t base;
} Flat;

int cli_parse_long(const char *v, long lo, long hi, long *out)
{
    char *end = NULL;
    if (!v || !*v) return -1;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

int cli_parse_double(const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    if (!v || !*v) return -1;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || !isfinite(x) || !(x >= lo && x <= hi)) return -1;
    *out = x;
    return 0;
}

static int n_flat(const CliSpec *s)
{
    int n = 0;
    for (int g = 0; g < s->n_groups; g++)
        n += s->groups[g].n;
    return n;
}

static Flat flat_at(const CliSpec *s, int k)
{
    Flat f = {NULL, 0};
    for (int g = 0; g < s->n_groups; g++) {
        if (k < s->groups[g].n) {
            f.o = &s->groups[g].opts[k];
            f.base = s->groups[g].base;
            return f;
        }
        k -= s->groups[g].n;
    }
    return f;
}

/* What a value must be, for error lines and the man page. */
static void expect_text(const CliOpt *o, char *buf, size_t len)
{
    switch (o->type) {
    case CLI_INT:
        snprintf(buf, len, "an integer in %ld..%ld", (long)o->lo,
                 (long)o->hi);
        break;
    case CLI_U64:
        snprintf(buf, len, "a non-negative integer");
        break;
    case CLI_DOUBLE:
        snprintf(buf, len, "a number in %g..%g", o->lo, o->hi);
        break;
    case CLI_CHOICE: {
        size_t used = (size_t)snprintf(buf, len, "one of");
        for (int k = 0; o->choices && o->choices[k].name && used < len; k++)
            used += (size_t)snprintf(buf + used, len - used, "%s %s",
                                     k ? "," : "", o->choices[k].name);
        break;
    }
    case CLI_CUSTOM:
        snprintf(buf, len, "%s", o->expect ? o->expect : "a valid value");
        break;
    case CLI_STRING:
        snprintf(buf, len, "a non-empty value");
        break;
    case CLI_FLAG:
        snprintf(buf, len, "allowed (no value)");
        break;
    }
}

int cli_bad_value(const CliSpec *s, const char *opt, const char *value,
                  const char *expect)
{
    sl_error("%s: '%s' is not %s; see %s --help", opt, value, expect,
             s->prog);
    return ERR_ARG;
}

/* Store value v of option o into opts; ERR_ARG with the common line. */
static int set_value(const CliSpec *s, const Flat *f, const char *typed,
                     const char *v, void *opts)
{
    const CliOpt *o = f->o;
    char *t = (char *)opts + f->base + o->off;
    char exp[256];
    long l = 0;
    double d = 0;
    int ok = 1;
    switch (o->type) {
    case CLI_FLAG:
        *(int *)(void *)t = 1;
        break;
    case CLI_INT:
        if ((ok = !cli_parse_long(v, (long)o->lo, (long)o->hi, &l)))
            *(int *)(void *)t = (int)l;
        break;
    case CLI_U64: {
        char *end = NULL;
        errno = 0;
        unsigned long long u = strtoull(v, &end, 10);
        ok = *v >= '0' && *v <= '9' && !errno && !*end;
        if (ok) *(unsigned long long *)(void *)t = u;
        break;
    }
    case CLI_DOUBLE:
        if ((ok = !cli_parse_double(v, o->lo, o->hi, &d)))
            *(double *)(void *)t = d;
        break;
    case CLI_STRING:
        if ((ok = *v != '\0')) *(const char **)(void *)t = v;
        break;
    case CLI_CHOICE:
        ok = 0;
        for (int k = 0; o->choices && o->choices[k].name; k++)
            if (!strcmp(v, o->choices[k].name)) {
                *(int *)(void *)t = o->choices[k].value;
                ok = 1;
            }
        break;
    case CLI_CUSTOM:
        ok = o->parse && o->parse(v, t) == 0;
        break;
    }
    if (!ok) {
        expect_text(o, exp, sizeof exp);
        return cli_bad_value(s, typed, v, exp);
    }
    if (o->has_mark) *(int *)(void *)((char *)opts + f->base + o->mark) = 1;
    return 0;
}

/* The option as the user typed it, for messages: "-m" or "--model". */
static void typed_name(const CliOpt *o, int as_short, char *buf, size_t len)
{
    if (as_short || !o->name)
        snprintf(buf, len, "-%c", o->short_name);
    else
        snprintf(buf, len, "--%s", o->name);
}

/* Built-in long options (all flags), after the table's. */
static const char *const builtin_names[] = {"help", "version", "man"};

/* Why getopt refused a long option: unknown, ambiguous, or a flag given
 * a value.  arg is the argv element ("--thr=3"). */
static int refuse_long(const CliSpec *s, const char *arg)
{
    const char *name = arg + 2;
    size_t len = strcspn(name, "=");
    int n = n_flat(s),
        nb = (int)(sizeof builtin_names / sizeof *builtin_names);
    int matches = 0, exact_flag = 0, flag_match = 0;
    const char *first = NULL, *second = NULL;
    for (int k = 0; k < n + nb; k++) {
        const CliOpt *o = k < n ? flat_at(s, k).o : NULL;
        const char *nm = o ? o->name : builtin_names[k - n];
        int is_flag = !o || o->type == CLI_FLAG;
        if (!nm || strncmp(nm, name, len)) continue;
        if (strlen(nm) == len) {
            exact_flag = is_flag;
            first = nm;
            matches = 1;
            break;
        }
        flag_match = is_flag;
        if (matches++ == 0)
            first = nm;
        else if (!second)
            second = nm;
    }
    if (matches > 1) {
        sl_error("ambiguous option '%.*s' (--%s, --%s%s); see %s --help",
                 (int)(len + 2), arg, first, second,
                 matches > 2 ? ", ..." : "", s->prog);
    } else if (matches == 1 && (exact_flag || flag_match) && name[len]) {
        sl_error("--%s takes no value, got '%s'; see %s --help", first, arg,
                 s->prog);
    } else {
        sl_error("unknown option '%.*s'; see %s --help", (int)(len + 2), arg,
                 s->prog);
    }
    return ERR_ARG;
}

int cli_parse(const CliSpec *s, int argc, char **argv, void *opts, char **pos,
              int *n_pos)
{
    int n = n_flat(s), rc = ERR_NOMEM;
    *n_pos = 0;
    struct option *lo = sl_calloc((size_t)n + 4, sizeof *lo);
    /* "-": non-options come back in order as 1 (no permutation, also
     * under POSIXLY_CORRECT); ":": a missing value is reported as ':' */
    char *shorts = sl_alloc(3 * (size_t)n + 8);
    if (!lo || !shorts) {
        sl_error("out of memory parsing the command line");
        goto done;
    }
    int nl = 0;
    size_t ns = 0;
    shorts[ns++] = '-';
    shorts[ns++] = ':';
    shorts[ns++] = 'h';
    for (int k = 0; k < n; k++) {
        const CliOpt *o = flat_at(s, k).o;
        int has_arg = o->type == CLI_FLAG ? no_argument : required_argument;
        if (o->name)
            lo[nl++] = (struct option){o->name, has_arg, NULL, LONG_BASE + k};
        if (o->short_name) {
            shorts[ns++] = o->short_name;
            if (has_arg == required_argument) shorts[ns++] = ':';
        }
    }
    shorts[ns] = '\0';
    lo[nl++] = (struct option){"help", no_argument, NULL, LONG_BASE + n + 2};
    lo[nl++] = (struct option){"version", no_argument, NULL, LONG_BASE + n};
    lo[nl++] = (struct option){"man", no_argument, NULL, LONG_BASE + n + 1};
    lo[nl] = (struct option){NULL, 0, NULL, 0};

    /* getopt keeps its state in libc globals: start afresh each call
     * (0 also re-reads the option string; the tests parse many times). */
    optind = 0;
    opterr = 0;
    rc = ERR_ARG;
    for (;;) {
        int c = getopt_long(argc, argv, shorts, lo, NULL);
        if (c == -1) break;
        if (c == 1) {
            pos[(*n_pos)++] = optarg;
            continue;
        }
        if (c == 'h' || c == LONG_BASE + n + 2) {
            rc = CLI_HELP;
            goto done;
        }
        if (c == LONG_BASE + n) {
            rc = CLI_VERSION;
            goto done;
        }
        if (c == LONG_BASE + n + 1) {
            rc = CLI_MAN;
            goto done;
        }
        const char *arg = argv[optind - 1];
        if (c == '?' || c == ':') {
            /* optopt: 0 for an unknown or ambiguous long option, the
             * option's val otherwise (a char for a short option) */
            int k = -1, as_short = optopt > 0 && optopt < LONG_BASE;
            if (c == '?' && !as_short) {
                refuse_long(s, arg); /* getopt stepped past it */
                goto done;
            }
            if (as_short) {
                for (int j = 0; j < n; j++)
                    if (flat_at(s, j).o->short_name == optopt) k = j;
            } else if (optopt < LONG_BASE + n) {
                k = optopt - LONG_BASE;
            }
            if (k < 0) {
                sl_error("unknown option '-%c'; see %s --help",
                         optopt > 0 && optopt < 128 ? optopt : '?', s->prog);
                goto done;
            }
            const CliOpt *o = flat_at(s, k).o;
            char tn[128], exp[256];
            typed_name(o, as_short, tn, sizeof tn);
            if (o->type == CLI_STRING && o->metavar)
                snprintf(exp, sizeof exp, "%s", o->metavar);
            else
                expect_text(o, exp, sizeof exp);
            sl_error("%s: missing value (%s); see %s --help", tn, exp,
                     s->prog);
            goto done;
        }
        int k = -1, as_short = c < LONG_BASE;
        if (as_short) {
            for (int j = 0; j < n; j++)
                if (flat_at(s, j).o->short_name == c) k = j;
        } else {
            k = c - LONG_BASE;
        }
        CHECK(k >= 0 && k < n);
        Flat f = flat_at(s, k);
        char tn[128];
        typed_name(f.o, as_short, tn, sizeof tn);
        if (set_value(s, &f, tn, f.o->type == CLI_FLAG ? "" : optarg, opts))
            goto done;
    }
    while (optind < argc)
        pos[(*n_pos)++] = argv[optind++];
    rc = 0;
done:
    sl_free(lo);
    sl_free(shorts);
    return rc;
}

/* ---- --help ---- */

static void metavar(const CliOpt *o, char *buf, size_t len)
{
    buf[0] = '\0';
    if (o->type == CLI_FLAG) return;
    if (o->metavar) {
        snprintf(buf, len, "%s", o->metavar);
    } else if (o->type == CLI_CHOICE) {
        size_t used = 0;
        for (int k = 0; o->choices[k].name && used < len; k++)
            used += (size_t)snprintf(buf + used, len - used, "%s%s",
                                     k ? "|" : "", o->choices[k].name);
    } else {
        snprintf(buf, len, "%s", o->type == CLI_INT ? "N" : "X");
    }
}

/* Words of text, wrapped to HELP_WIDTH, continuing at column `col`. */
static void wrap(FILE *f, const char *text, int col, int indent)
{
    const char *p = text;
    while (*p) {
        size_t w = strcspn(p, " ");
        if (col > indent && col + 1 + (int)w > HELP_WIDTH) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, w, f);
        col += (int)w;
        p += w;
        while (*p == ' ')
            p++;
    }
    fputc('\n', f);
}

static void help_line(FILE *f, const char *label, const char *help)
{
    int col = fprintf(f, "  %s", label);
    if (col + 2 > HELP_COLUMN) {
        fputc('\n', f);
        col = 0;
    }
    fprintf(f, "%*s", HELP_COLUMN - col, "");
    wrap(f, help, HELP_COLUMN, HELP_COLUMN);
}

void cli_help(const CliSpec *s, FILE *f)
{
    fprintf(f, "usage: %s %s\n", s->prog, s->synopsis);
    if (s->description) fprintf(f, "%s\n", s->description);
    const char *last = NULL;
    for (int g = 0; g < s->n_groups; g++) {
        const CliGroup *gr = &s->groups[g];
        const char *title = gr->title ? gr->title : "options";
        if (!last || strcmp(title, last)) fprintf(f, "\n%s:\n", title);
        last = title;
        for (int k = 0; k < gr->n; k++) {
            const CliOpt *o = &gr->opts[k];
            char mv[128], label[256];
            metavar(o, mv, sizeof mv);
            snprintf(label, sizeof label, "%s%c%s%s%s%s%s",
                     o->short_name ? "-" : "    ",
                     o->short_name ? o->short_name : ' ',
                     o->short_name && o->name ? ", " : "",
                     o->name ? "--" : "", o->name ? o->name : "",
                     mv[0] ? " " : "", mv);
            /* "    " + ' ' keeps long-only names aligned under "-x, " */
            help_line(f, o->short_name ? label : label + 1, o->help);
        }
    }
    help_line(f, "-h, --help", "this help");
    help_line(f, "    --version", "version");
    if (s->notes) fprintf(f, "\n%s\n", s->notes);
}

/* ---- man page (roff) ---- */

/* Text for roff: backslashes and hyphens escaped, no line starting with
 * a control character.  Keeps newlines; a blank line starts a paragraph,
 * a line starting with a space stays a line of its own. */
static void roff_text(FILE *f, const char *t)
{
    int bol = 1;
    for (const char *p = t; *p; p++) {
        if (bol && *p == '\n') {
            fputs(".PP\n", f);
            continue;
        }
        if (bol && (*p == '.' || *p == '\'')) fputs("\\&", f);
        bol = *p == '\n';
        if (*p == '\\')
            fputs("\\e", f);
        else if (*p == '-')
            fputs("\\-", f);
        else
            fputc(*p, f);
    }
    if (!bol) fputc('\n', f);
}

/* A word inside a line (no control-character check needed). */
static void roff_inline(FILE *f, const char *t)
{
    for (; *t; t++) {
        if (*t == '\\')
            fputs("\\e", f);
        else if (*t == '-')
            fputs("\\-", f);
        else
            fputc(*t, f);
    }
}

static void roff_upper(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '-')
            fputs("\\-", f);
        else
            fputc(*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s, f);
    }
}

static void man_item(FILE *f, char short_name, const char *name,
                     const char *mv, const char *help)
{
    fputs(".TP\n", f);
    if (short_name) fprintf(f, "\\fB\\-%c\\fR", short_name);
    if (short_name && name) fputs(", ", f);
    if (name) {
        fputs("\\fB\\-\\-", f);
        roff_inline(f, name);
        fputs("\\fR", f);
    }
    if (mv && mv[0]) {
        fputs(" \\fI", f);
        roff_inline(f, mv);
        fputs("\\fR", f);
    }
    fputc('\n', f);
    roff_text(f, help);
}

void cli_man(const CliSpec *s, FILE *f)
{
    fputs(".TH ", f);
    roff_upper(f, s->prog);
    /* .nh: no hyphenation inside file and option names */
    fputs(" 1 \"\" \"sauron\" \"User Commands\"\n.nh\n.SH NAME\n", f);
    roff_inline(f, s->prog);
    fputs(" \\- ", f);
    roff_text(f, s->summary);
    /* one synopsis line per form; --help aligns the later ones under the
     * first with spaces, which roff would keep as an indent */
    fputs(".SH SYNOPSIS\n.B ", f);
    roff_inline(f, s->prog);
    fputc('\n', f);
    for (const char *l = s->synopsis; *l;) {
        size_t len = strcspn(l, "\n");
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)len, l);
        if (l != s->synopsis) fputs(".br\n", f);
        roff_text(f, line + strspn(line, " "));
        l += len + (l[len] == '\n');
    }
    if (s->description) {
        fputs(".SH DESCRIPTION\n", f);
        roff_text(f, s->description);
    }
    fputs(".SH OPTIONS\n", f);
    const char *last = NULL;
    for (int g = 0; g < s->n_groups; g++) {
        const CliGroup *gr = &s->groups[g];
        if (gr->title && (!last || strcmp(gr->title, last))) {
            fputs(".SS ", f);
            roff_text(f, gr->title);
        }
        last = gr->title;
        for (int k = 0; k < gr->n; k++) {
            const CliOpt *o = &gr->opts[k];
            char mv[128];
            metavar(o, mv, sizeof mv);
            man_item(f, o->short_name, o->name, mv, o->help);
        }
    }
    if (last) fputs(".SS Other\n", f);
    man_item(f, 'h', "help", NULL, "Print the options and exit.");
    man_item(f, 0, "version", NULL, "Print the version and exit.");
    if (s->notes) {
        fputs(".SH NOTES\n", f);
        roff_text(f, s->notes);
    }
}
