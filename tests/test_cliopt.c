/* runtime/cliopt.c: the option layer every program parses with.
 *
 * In-process on a spec holding every value type: `--opt value` and
 * `--opt=value` for each, short options and clusters, every kind of bad
 * value giving the one error line, unknown, ambiguous and missing values,
 * ranges at their edges, positionals and "--".  Then each built program:
 * exit 2 and one line for a bad value, every table option in its --help
 * and its man page, and `man -l` renders the page without warnings.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cliopt.h"
#include "runtime/common.h"
#include "tests/testutil.h"

typedef struct {
    int flag, n, n_set, choice;
    unsigned long long seed;
    double x;
    const char *name;
    int pair[2];
} Opts;

static int parse_pair(const char *v, void *target)
{
    int *p = target;
    long a, b;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", v);
    char *comma = strchr(buf, ',');
    if (!comma) return -1;
    *comma = '\0';
    if (cli_parse_long(buf, 1, 9, &a) || cli_parse_long(comma + 1, 1, 9, &b))
        return -1;
    p[0] = (int)a;
    p[1] = (int)b;
    return 0;
}

static const CliChoice colours[] = {{"red", 7}, {"green", 8}, {NULL, 0}};

static const CliOpt test_opts[] = {
    {.name = "flag",
     .short_name = 'f',
     .type = CLI_FLAG,
     .off = offsetof(Opts, flag),
     .help = "a flag"},
    {.name = "count",
     .short_name = 'n',
     .type = CLI_INT,
     .lo = -3,
     .hi = 12,
     .metavar = "N",
     .off = offsetof(Opts, n),
     .has_mark = 1,
     .mark = offsetof(Opts, n_set),
     .help = "an integer"},
    {.name = "colour",
     .type = CLI_CHOICE,
     .choices = colours,
     .off = offsetof(Opts, choice),
     .help = "a choice"},
    {.name = "seed",
     .type = CLI_U64,
     .metavar = "S",
     .off = offsetof(Opts, seed),
     .help = "an unsigned 64-bit integer"},
    {.name = "name",
     .type = CLI_STRING,
     .metavar = "NAME",
     .off = offsetof(Opts, name),
     .help = "a string"},
    {.name = "pair",
     .type = CLI_CUSTOM,
     .parse = parse_pair,
     .expect = "two digits A,B",
     .metavar = "A,B",
     .off = offsetof(Opts, pair),
     .help = "a custom value"},
};

typedef struct {
    int unused;
    Opts inner; /* a group whose struct lives inside the options struct */
} Outer;

static const CliOpt inner_opts[] = {
    {.name = "xval",
     .type = CLI_DOUBLE,
     .lo = 0.25,
     .hi = 2.5,
     .metavar = "X",
     .off = offsetof(Opts, x),
     .help = "a number"},
    {.name = "count-more",
     .type = CLI_FLAG,
     .off = offsetof(Opts, flag),
     .help = "shares a prefix with --count"},
};

static const CliGroup test_groups[] = {
    {NULL, test_opts, sizeof test_opts / sizeof *test_opts,
     offsetof(Outer, inner)},
    {"More", inner_opts, sizeof inner_opts / sizeof *inner_opts,
     offsetof(Outer, inner)},
};

static const CliSpec test_spec = {
    .prog = "tprog",
    .version = "tprog 1",
    .summary = "test program",
    .synopsis = "[options] FILE...",
    .description = "Tests the option layer.",
    .groups = test_groups,
    .n_groups = 2,
};

/* Parse a space-separated line; returns cli_parse's code. */
static int parse(Outer *o, char **pos, int *n_pos, const char *line)
{
    static char buf[1024];
    char *argv[64], *save = NULL;
    int argc = 0;
    snprintf(buf, sizeof buf, "tprog %s", line);
    for (char *t = strtok_r(buf, " ", &save); t && argc < 63;
         t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    argv[argc] = NULL;
    memset(o, 0, sizeof *o);
    sl_error_reset();
    sl_error_quiet(1);
    int rc = cli_parse(&test_spec, argc, argv, o, pos, n_pos);
    sl_error_quiet(0);
    return rc;
}

static int ok(Outer *o, const char *line)
{
    char *pos[64];
    int n = 0;
    int rc = parse(o, pos, &n, line);
    if (rc) fprintf(stderr, "refused '%s': %s\n", line, sl_error_last());
    return rc;
}

/* Refused with exactly the line `want`. */
static void refused(const char *line, const char *want)
{
    Outer o;
    char *pos[64];
    int n = 0;
    int rc = parse(&o, pos, &n, line);
    if (rc != ERR_ARG || strcmp(sl_error_last(), want))
        fprintf(stderr, "'%s': rc %d, got '%s', want '%s'\n", line, rc,
                sl_error_last(), want);
    assert_int_equal(rc, ERR_ARG);
    assert_string_equal(sl_error_last(), want);
}

static void test_both_forms(void **state)
{
    (void)state;
    Outer o;
    static const char *forms[][2] = {
        {"--count 5 --colour green --seed 18446744073709551615 --name a "
         "--pair 3,4 --xval 0.5 --flag",
         "--count=5 --colour=green --seed=18446744073709551615 --name=a "
         "--pair=3,4 --xval=0.5 -f"},
    };
    for (int k = 0; k < 2; k++) {
        assert_int_equal(ok(&o, forms[0][k]), 0);
        assert_int_equal(o.inner.n, 5);
        assert_int_equal(o.inner.n_set, 1);
        assert_int_equal(o.inner.choice, 8);
        assert_true(o.inner.seed == 18446744073709551615ULL);
        assert_string_equal(o.inner.name, "a");
        assert_int_equal(o.inner.pair[0], 3);
        assert_int_equal(o.inner.pair[1], 4);
        assert_true(o.inner.x == 0.5);
        assert_int_equal(o.inner.flag, 1);
        assert_int_equal(o.unused, 0);
    }
    /* short forms: separate, attached, clustered after a flag */
    assert_int_equal(ok(&o, "-n 7"), 0);
    assert_int_equal(o.inner.n, 7);
    assert_int_equal(ok(&o, "-n7"), 0);
    assert_int_equal(o.inner.n, 7);
    assert_int_equal(ok(&o, "-fn-2"), 0);
    assert_int_equal(o.inner.n, -2);
    assert_int_equal(o.inner.flag, 1);
    /* a value may start with '-' */
    assert_int_equal(ok(&o, "--count -3"), 0);
    assert_int_equal(o.inner.n, -3);
    /* not given: untouched, not marked */
    assert_int_equal(ok(&o, "--flag"), 0);
    assert_int_equal(o.inner.n_set, 0);
    /* a unique prefix is the option (getopt_long) */
    assert_int_equal(ok(&o, "--col red"), 0);
    assert_int_equal(o.inner.choice, 7);
}

static void test_ranges_at_edges(void **state)
{
    (void)state;
    Outer o;
    assert_int_equal(ok(&o, "--count -3"), 0);
    assert_int_equal(ok(&o, "--count 12"), 0);
    assert_int_equal(o.inner.n, 12);
    assert_int_equal(ok(&o, "--xval 0.25"), 0);
    assert_int_equal(ok(&o, "--xval 2.5"), 0);
    assert_true(o.inner.x == 2.5);
    assert_int_equal(ok(&o, "--seed 0"), 0);
    refused("--count -4", "--count: '-4' is not an integer in -3..12; see "
                          "tprog --help");
    refused("--count=13", "--count: '13' is not an integer in -3..12; see "
                          "tprog --help");
    refused("--xval 0.2499", "--xval: '0.2499' is not a number in "
                             "0.25..2.5; see tprog --help");
    refused("--xval=2.5001", "--xval: '2.5001' is not a number in "
                             "0.25..2.5; see tprog --help");
    refused("--seed 18446744073709551616",
            "--seed: '18446744073709551616' is not a non-negative integer; "
            "see tprog --help");
}

static void test_bad_values(void **state)
{
    (void)state;
    refused("--count abc",
            "--count: 'abc' is not an integer in -3..12; see tprog --help");
    refused("-n 1.5",
            "-n: '1.5' is not an integer in -3..12; see tprog --help");
    refused("--count 99999999999999999999",
            "--count: '99999999999999999999' is not an integer in -3..12; "
            "see tprog --help");
    refused("--count=", "--count: '' is not an integer in -3..12; see "
                        "tprog --help");
    refused("--xval nan",
            "--xval: 'nan' is not a number in 0.25..2.5; see tprog --help");
    refused("--xval 1e999",
            "--xval: '1e999' is not a number in 0.25..2.5; see tprog --help");
    refused("--xval 1x",
            "--xval: '1x' is not a number in 0.25..2.5; see tprog --help");
    refused("--seed -1", "--seed: '-1' is not a non-negative integer; see "
                         "tprog --help");
    refused("--colour blue", "--colour: 'blue' is not one of red, green; "
                             "see tprog --help");
    refused("--name=", "--name: '' is not a non-empty value; see tprog "
                       "--help");
    refused("--pair 3", "--pair: '3' is not two digits A,B; see tprog "
                        "--help");
    refused("--pair=0,4", "--pair: '0,4' is not two digits A,B; see tprog "
                          "--help");
}

static void test_option_errors(void **state)
{
    (void)state;
    refused("--frobnicate x",
            "unknown option '--frobnicate'; see tprog --help");
    refused("-z", "unknown option '-z'; see tprog --help");
    refused("--frob=1", "unknown option '--frob'; see tprog --help");
    refused("--count", "--count: missing value (an integer in -3..12); see "
                       "tprog --help");
    refused("-n", "-n: missing value (an integer in -3..12); see tprog "
                  "--help");
    refused("--name", "--name: missing value (NAME); see tprog --help");
    refused("--flag=1", "--flag takes no value, got '--flag=1'; see tprog "
                        "--help");
    refused("--help=yes", "--help takes no value, got '--help=yes'; see "
                          "tprog --help");
    refused("--co 1", "ambiguous option '--co' (--count, --colour, ...); "
                      "see tprog --help");
}

static void test_positionals_and_builtins(void **state)
{
    (void)state;
    Outer o;
    char *pos[64];
    int n = 0;
    assert_int_equal(parse(&o, pos, &n, "a --flag b - -- --count c"), 0);
    assert_int_equal(n, 5);
    assert_string_equal(pos[0], "a");
    assert_string_equal(pos[1], "b");
    assert_string_equal(pos[2], "-");
    assert_string_equal(pos[3], "--count");
    assert_string_equal(pos[4], "c");
    assert_int_equal(o.inner.flag, 1);
    assert_int_equal(parse(&o, pos, &n, "a -h --bogus"), CLI_HELP);
    assert_int_equal(parse(&o, pos, &n, "--help"), CLI_HELP);
    assert_int_equal(parse(&o, pos, &n, "--version"), CLI_VERSION);
    assert_int_equal(parse(&o, pos, &n, "--man"), CLI_MAN);
    /* parsing again starts afresh (getopt state is reset) */
    assert_int_equal(parse(&o, pos, &n, "x --count 3"), 0);
    assert_int_equal(n, 1);
    assert_int_equal(o.inner.n, 3);
}

/* Every table option appears in --help and the man page of the test
 * spec; the man page renders without groff warnings. */
static char *capture(void (*print)(const CliSpec *, FILE *), const CliSpec *s,
                     const char *name)
{
    const char *path = test_tmp_path(name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    print(s, f);
    fclose(f);
    char *t = slurp_text(path);
    assert_non_null(t);
    return t;
}

static void test_help_and_man_from_table(void **state)
{
    (void)state;
    char *help = capture(cli_help, &test_spec, "help.txt");
    char *man = capture(cli_man, &test_spec, "tprog.1");
    for (int g = 0; g < test_spec.n_groups; g++)
        for (int k = 0; k < test_spec.groups[g].n; k++) {
            const char *nm = test_spec.groups[g].opts[k].name;
            char want[128], roff[160];
            snprintf(want, sizeof want, "--%s", nm);
            assert_non_null(strstr(help, want));
            snprintf(roff, sizeof roff, "\\fB\\-\\-%s\\fR", nm);
            for (char *p = roff + 10; *p; p++) /* hyphens inside the name */
                if (*p == '-') {
                    memmove(p + 1, p, strlen(p) + 1);
                    *p++ = '\\';
                }
            if (!strstr(man, roff)) fprintf(stderr, "no %s in man\n", roff);
            assert_non_null(strstr(man, roff));
        }
    assert_non_null(strstr(help, "More:"));
    assert_non_null(strstr(man, ".SS More"));
    free(help);
    free(man);
}

/* Long option names on the option lines of --help ("  -x, --name ..."
 * or "      --name ..."; help text continues further right). */
static int help_names(const char *text, char names[][48], int max)
{
    int n = 0;
    for (const char *l = text; l && *l;
         l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        size_t indent = strspn(l, " ");
        if ((indent != 2 && indent != 6) || l[indent] != '-') continue;
        const char *p = strstr(l, "--");
        const char *eol = strchr(l, '\n');
        if (!p || (eol && p > eol) || n == max) continue;
        p += 2;
        size_t len = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789-");
        snprintf(names[n++], 48, "%.*s", (int)len, p);
    }
    return n;
}

/* Long option names in the man page's .TP tags ("\fB\-\-name\fR"). */
static int man_names(const char *text, char names[][48], int max)
{
    int n = 0;
    for (const char *l = strstr(text, ".TP\n"); l && n < max;
         l = strstr(l + 1, ".TP\n")) {
        const char *tag = l + 4, *eol = strchr(tag, '\n');
        const char *p = strstr(tag, "\\fB\\-\\-");
        if (!p || (eol && p > eol)) continue;
        p += 7; /* past the bold dashes */
        size_t k = 0;
        while (*p && strncmp(p, "\\fR", 3) && k + 1 < 48) {
            if (!strncmp(p, "\\-", 2)) p++;
            names[n][k++] = *p++;
        }
        names[n++][k] = '\0';
    }
    return n;
}

/* The built programs: a bad value gives exit 2 and exactly the common
 * line; --help and the man page list the same options (both come from
 * the table; the in-process test above shows every table entry is
 * printed); man -l renders the page without warnings. */
static void check_program(const char *prog, const char *bad_args,
                          const char *want)
{
    char bin[256], cmd[1200], err[512];
    bin_path(prog, bin, sizeof bin);
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null", bin, bad_args);
    int rc = run_cmd(cmd, err, sizeof err);
    err[strcspn(err, "\n")] = '\0';
    if (rc != 2 || strcmp(err, want))
        fprintf(stderr, "%s %s: exit %d '%s', want '%s'\n", prog, bad_args,
                rc, err, want);
    assert_int_equal(rc, 2);
    assert_string_equal(err, want);

    const char *page = test_tmp_path("page.1");
    const char *help = test_tmp_path("help.txt");
    snprintf(cmd, sizeof cmd, "%s --man >%s && %s --help >%s", bin, page, bin,
             help);
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    char *ht = slurp_text(help), *mt = slurp_text(page);
    assert_non_null(ht);
    assert_non_null(mt);
    static char hn[128][48], mn[128][48];
    int nh = help_names(ht, hn, 128), nm = man_names(mt, mn, 128);
    if (nh != nm)
        fprintf(stderr, "%s: %d options in --help, %d in man\n", prog, nh,
                nm);
    assert_int_equal(nh, nm);
    assert_true(nh >= 5); /* the table's options, --help, --version */
    for (int k = 0; k < nh; k++) {
        int found = 0;
        for (int m = 0; m < nm; m++)
            found |= !strcmp(hn[k], mn[m]);
        if (!found) fprintf(stderr, "%s: --%s not in man\n", prog, hn[k]);
        assert_true(found);
    }
    free(ht);
    free(mt);
    /* the page renders without groff warnings */
    snprintf(cmd, sizeof cmd,
             "MANWIDTH=80 man --warnings -E UTF-8 -l %s 2>&1 >/dev/null | "
             "grep . >&2; test $? -eq 1",
             page);
    rc = run_cmd(cmd, err, sizeof err);
    if (rc) fprintf(stderr, "%s: man -l warns: %s\n", prog, err);
    assert_int_equal(rc, 0);
}

static void test_programs(void **state)
{
    (void)state;
    check_program("segment", "--threads abc x.nii.gz",
                  "error: --threads: 'abc' is not an integer in 1..4096; "
                  "see segment --help");
    check_program("segment", "--threads=0 x.nii.gz",
                  "error: --threads: '0' is not an integer in 1..4096; "
                  "see segment --help");
    check_program("segment", "-m",
                  "error: -m: missing value (MODEL.sslim); "
                  "see segment --help");
    check_program("segment", "--frobnicate x.nii.gz",
                  "error: unknown option '--frobnicate'; see segment --help");
    check_program("sauron-compress", "--epochs=abc a.onnx b.sslim",
                  "error: --epochs: 'abc' is not an integer in 1..100000; "
                  "see sauron-compress --help");
    /* the Sauron options take --opt=value like every other */
    check_program("sauron-compress", "--lambda=x a.onnx b.sslim",
                  "error: --lambda: 'x' is not a number in 0..100; see "
                  "sauron-compress --help");
    check_program("sauron-compress", "--schedule=fast a.onnx b.sslim",
                  "error: --schedule: 'fast' is not one of budget, paper; "
                  "see sauron-compress --help");
    check_program("sauron-inspect", "--shape 0,1,8 m.onnx",
                  "error: --shape: '0,1,8' is not N,C,(D,)H,W with positive "
                  "sizes; see sauron-inspect --help");
    check_program("sauron-run", "m.sslim --repeat=0",
                  "error: --repeat: '0' is not an integer in 1..100000; see "
                  "sauron-run --help");
    check_program("sauron-eval", "a.nii b.nii --classes 1",
                  "error: --classes: '1' is not an integer in 2..32768; see "
                  "sauron-eval --help");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_both_forms),
        cmocka_unit_test(test_ranges_at_edges),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_option_errors),
        cmocka_unit_test(test_positionals_and_builtins),
        cmocka_unit_test(test_help_and_man_from_table),
        cmocka_unit_test(test_programs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
