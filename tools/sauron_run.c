/* sauron-run: run a .sslim network on one raw float32 tensor and time it.
 * Links the runtime only: ONNX models must be converted first. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cliopt.h"
#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "runtime/sslim.h"

#define STR2(x) #x
#define STR(x) STR2(x)

/* "N,C,[D,]H,W": 3 to SL_MAX_DIMS sizes in 1..2^31. */
static int parse_shape(const char *v, void *target)
{
    Shape *sh = target, t;
    memset(&t, 0, sizeof t);
    const char *p = v;
    while (*p) {
        char item[32];
        size_t len = strcspn(p, ",");
        long x;
        if (t.ndim == SL_MAX_DIMS || len >= sizeof item) return -1;
        memcpy(item, p, len);
        item[len] = '\0';
        if (cli_parse_long(item, 1, 1L << 31, &x)) return -1;
        t.d[t.ndim++] = x;
        p += len;
        if (*p == ',' && !*++p) return -1;
    }
    if (t.ndim < 3) return -1;
    *sh = t;
    return 0;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

typedef struct {
    const char *model, *input, *output;
    Shape shape;
    int repeat, threads, force, profile, has_shape;
} Args;

static const CliOpt run_opts[] = {
    {.name = "input",
     .type = CLI_STRING,
     .metavar = "IN.bin",
     .off = offsetof(Args, input),
     .help = "raw little-endian float32 tensor of the given shape"},
    {.name = "shape",
     .type = CLI_CUSTOM,
     .parse = parse_shape,
     .expect = "3 to " STR(SL_MAX_DIMS) " positive integers separated by "
                                        "commas, e.g. 1,1,64,64",
     .metavar = "N,C,[D,]H,W",
     .off = offsetof(Args, shape),
     .has_mark = 1,
     .mark = offsetof(Args, has_shape),
     .help = "input shape"},
    {.name = "output",
     .type = CLI_STRING,
     .metavar = "OUT.bin",
     .off = offsetof(Args, output),
     .help = "write the first graph output as raw little-endian float32 "
             "(refuses an existing file unless --force)"},
    {.name = "repeat",
     .type = CLI_INT,
     .lo = 1,
     .hi = 100000,
     .metavar = "N",
     .off = offsetof(Args, repeat),
     .help = "runs; the median time is printed (default 1)"},
    {.name = "threads",
     .type = CLI_INT,
     .lo = 1,
     .hi = 4096,
     .metavar = "N",
     .off = offsetof(Args, threads),
     .help = "threads (default: all cores)"},
    {.name = "force",
     .type = CLI_FLAG,
     .off = offsetof(Args, force),
     .help = "overwrite --output if it exists"},
    {.name = "profile",
     .type = CLI_FLAG,
     .off = offsetof(Args, profile),
     .help = "also print the time per op type (fused pairs such as "
             "InstanceNorm+LeakyRelu count as one type), as ms per run and "
             "share of the total, then each Conv layer with its algorithm "
             "(direct, winograd: F(2,3), or winograd4: F(4x4,3x3); "
             "SL_CONV_ALGO=direct|winograd|winograd4|auto overrides the "
             "choice)"},
};

static const CliGroup run_groups[] = {
    {NULL, run_opts, sizeof run_opts / sizeof *run_opts, 0},
};

static const CliSpec run_cli = {
    .prog = "sauron-run",
    .version = "sauron-run (sauron), reads .sslim " STR(SSLIM_MAJOR) ".x",
    .summary = "run a .sslim network on one raw tensor and time it",
    .synopsis = "MODEL.sslim --input IN.bin --shape N,C,[D,]H,W [options]",
    .description =
        "Runs the network on a raw little-endian float32 tensor of the\n"
        "given shape and prints the median time over --repeat runs and the\n"
        "peak activation memory.  ONNX models: convert with\n"
        "sauron-compress --no-finetune first.",
    .groups = run_groups,
    .n_groups = 1,
    .notes = "Exit status: 0 on success, 1 on failure, 2 for a usage "
             "error.",
};

/* 0 ok, CLI_HELP/VERSION/MAN (printed), or ERR_ARG / ERR_NOMEM. */
static int parse_args(int argc, char **argv, Args *a)
{
    memset(a, 0, sizeof *a);
    a->repeat = 1;
    char **pos = sl_calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0, rc = ERR_NOMEM;
    if (!pos) {
        sl_error("out of memory");
        return rc;
    }
    rc = cli_parse(&run_cli, argc, argv, a, pos, &npos);
    if (rc == CLI_HELP) cli_help(&run_cli, stdout);
    if (rc == CLI_VERSION) printf("%s\n", run_cli.version);
    if (rc == CLI_MAN) cli_man(&run_cli, stdout);
    if (rc) goto done;
    rc = ERR_ARG;
    if (npos > 1) {
        sl_error("unexpected argument '%s'; give one model", pos[1]);
        goto done;
    }
    a->model = npos ? pos[0] : NULL;
    if (!a->model || !a->input || !a->has_shape) {
        sl_error("need MODEL.sslim, --input and --shape; see sauron-run "
                 "--help");
        goto done;
    }
    rc = SL_OK;
done:
    sl_free(pos);
    return rc;
}

/* Raw little-endian float32 file of exactly numel(shape) values. */
static int read_input(const char *path, const Shape *sh, float **out)
{
    uint8_t *raw = NULL;
    size_t size = 0;
    *out = NULL;
    int rc = sl_read_file(path, &raw, &size);
    if (rc) return rc;
    int64_t ne = shape_numel(sh);
    size_t want;
    if (ne < 1 || sl_mul_size((size_t)ne, 4, &want) || size != want) {
        char b[96];
        sl_error("input '%s' has %zu bytes but shape %s needs %lld float32 "
                 "(%lld bytes); check --shape",
                 path, size, shape_str(sh, b, sizeof b), (long long)ne,
                 (long long)ne * 4);
        rc = ERR_ARG;
        goto fail;
    }
    float *x = sl_alloc(want);
    if (!x) {
        sl_error("out of memory reading '%s'", path);
        rc = ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < (size_t)ne; i++) {
        uint32_t u = sl_rd32(raw + 4 * i);
        memcpy(&x[i], &u, 4);
    }
    *out = x;
fail:
    sl_free(raw);
    return rc;
}

static int write_output(const char *path, const float *y, const Shape *sh,
                        int force)
{
    size_t ne = (size_t)shape_numel(sh);
    uint8_t *raw = sl_alloc(ne * 4);
    if (!raw) {
        sl_error("out of memory writing '%s'", path);
        return ERR_NOMEM;
    }
    for (size_t i = 0; i < ne; i++) {
        uint32_t u;
        memcpy(&u, &y[i], 4);
        sl_wr32(raw + 4 * i, u);
    }
    int rc = sl_write_file_atomic(path, raw, ne * 4, force);
    sl_free(raw);
    return rc;
}

/* Shape inference up front, so that a size the network cannot take gets
 * one line that also names the nearest sizes it can take. */
static int check_shape(Graph *g, const Shape *sh, const char *model)
{
    char why[1024], a[96], b[96];
    sl_error_quiet(1);
    int rc = graph_infer_shapes(g, sh);
    snprintf(why, sizeof why, "%s", sl_error_last());
    sl_error_reset();
    sl_error_quiet(0);
    if (rc == SL_OK) return SL_OK;
    Shape ok = *sh;
    int found = rc == ERR_SHAPE && sh->ndim >= 3;
    for (int i = 0; found && i < sh->ndim - 2; i++) {
        /* other dims at a generous power of two, which U-Nets accept */
        Shape base = *sh;
        for (int k = 2; k < sh->ndim; k++) {
            int64_t p = 64;
            while (p < base.d[k])
                p *= 2;
            base.d[k] = p;
        }
        int64_t v = graph_valid_size(g, &base, i, sh->d[2 + i]);
        if (v < 0)
            found = 0;
        else
            ok.d[2 + i] = v;
    }
    if (found)
        sl_error("input shape %s does not fit '%s' (%s); the nearest size "
                 "it accepts is %s: pad the input",
                 shape_str(sh, a, sizeof a), model, why,
                 shape_str(&ok, b, sizeof b));
    else
        sl_error("input shape %s does not fit '%s': %s",
                 shape_str(sh, a, sizeof a), model, why);
    return rc;
}

/* ms per run for each distinct node label, in first-seen order. */
static void print_profile(const Executor *e, const Graph *g, long runs)
{
    double total = 0;
    for (int i = 0; i < g->n_nodes; i++)
        total += exec_node_seconds(e, i);
    printf("profile: %d nodes, %.3f ms per run in nodes\n", g->n_nodes,
           total * 1e3 / (double)runs);
    for (int i = 0; i < g->n_nodes; i++) {
        const char *l = exec_node_label(e, i);
        int seen = !l[0];
        for (int j = 0; j < i && !seen; j++)
            seen = !strcmp(exec_node_label(e, j), l);
        if (seen) continue;
        double s = 0;
        int count = 0;
        for (int j = i; j < g->n_nodes; j++)
            if (!strcmp(exec_node_label(e, j), l)) {
                s += exec_node_seconds(e, j);
                count++;
            }
        printf("  %-32s %4d nodes %9.3f ms %5.1f%%\n", l, count,
               s * 1e3 / (double)runs, total > 0 ? 100.0 * s / total : 0.0);
    }
    /* Each Conv layer with the algorithm the plan chose for it. */
    for (int i = 0; i < g->n_nodes; i++) {
        const char *l = exec_node_label(e, i);
        if (strncmp(l, "Conv/", 5)) continue;
        printf("  conv %-36s %-9s %9.3f ms\n", g->nodes[i].name, l + 5,
               exec_node_seconds(e, i) * 1e3 / (double)runs);
    }
}

static int run(const Args *a)
{
    Graph g;
    Executor *e = NULL;
    float *x = NULL;
    double *ms = NULL;
    Shape sh;
    int rc;
    graph_init(&g);
    sh = a->shape;
    if (a->output && (sl_same_file(a->output, a->model) ||
                      sl_same_file(a->output, a->input))) {
        sl_error("output '%s' is an input of this run; choose another "
                 "output path",
                 a->output);
        rc = ERR_ARG;
        goto fail;
    }
    if (a->output && !a->force && sl_file_exists(a->output)) {
        sl_error("output '%s' exists; pass --force to overwrite it",
                 a->output);
        rc = ERR_EXISTS;
        goto fail;
    }
    /* Only the magic is sniffed: sslim_read reads each weight once,
     * straight into its buffer, and never holds the whole file. */
    uint8_t head[8];
    size_t hsize = 0;
    FILE *mf = fopen(a->model, "rb");
    if (mf) {
        hsize = fread(head, 1, sizeof head, mf);
        fclose(mf);
    }
    if (mf && !sslim_is_sslim(head, hsize) && has_suffix(a->model, ".onnx")) {
        sl_error("'%s' is an ONNX model; sauron-run reads .sslim only: "
                 "convert with sauron-compress --no-finetune first",
                 a->model);
        rc = ERR_UNSUPPORTED;
        goto fail;
    }
    if ((rc = sslim_read(a->model, &g))) goto fail;
    if ((rc = read_input(a->input, &sh, &x))) goto fail;
    if ((rc = check_shape(&g, &sh, a->model))) goto fail;
    /* one executor and nothing else on g: the lean form (exec.h) */
    if ((rc = exec_create_lean(&g, &sh, a->threads, &e))) goto fail;
    ms = sl_calloc((size_t)a->repeat, sizeof *ms);
    if (!ms) {
        sl_error("out of memory");
        rc = ERR_NOMEM;
        goto fail;
    }
    const float *outs[SL_MAX_OUTPUTS];
    if (a->profile) exec_profile(e, 1);
    for (int r = 0; r < a->repeat; r++) {
        double t0 = sl_now();
        if ((rc = exec_run(e, x, outs))) goto fail;
        ms[r] = (sl_now() - t0) * 1e3;
    }
    double med = sl_median(ms, (size_t)a->repeat);
    if (a->output && (rc = write_output(a->output, outs[0],
                                        exec_output_shape(e, 0), a->force)))
        goto fail;
    char ob[96];
    printf("output %s\n", shape_str(exec_output_shape(e, 0), ob, sizeof ob));
    printf("median %.3f ms over %d runs\n", med, a->repeat);
    printf("peak arena %.2f MB (without reuse %.2f MB)\n",
           (double)exec_arena_bytes(e) / 1048576.0,
           (double)exec_unplanned_bytes(e) / 1048576.0);
    if (a->profile) print_profile(e, &g, a->repeat);
    rc = SL_OK;
fail:
    exec_free(e);
    graph_free(&g);
    sl_free(x);
    sl_free(ms);
    return rc;
}

int main(int argc, char **argv)
{
    exec_reexec_passive_wait(argv);
    Args a;
    int prc = parse_args(argc, argv, &a);
    if (prc > 0) return 0;
    if (prc) return 2;
    int rc = run(&a);
    if (rc && !sl_error_reported())
        fprintf(stderr, "error: %s\n", sl_strerror(rc));
    return rc ? 1 : 0;
}
