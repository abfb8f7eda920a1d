/* segment: the clinic-side CLI.  Loads a .sslim model once, segments one
 * or more NIfTI scans, writes a label map beside each (or to -o). */
#include <limits.h>
#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "cliopt.h"
#include "common.h"
#include "exec.h"
#include "graph.h"
#include "nifti_io.h"
#include "segment.h"
#include "sslim.h"

#define SEGMENT_VERSION "0.1"

typedef struct {
    const char *model, *out, *probs, *input_dir, *overlay;
    int force, threads, batch, quiet, tta;
    uint64_t max_memory; /* bytes a case may claim (--max-memory) */
    char **scans;
    int n_scans;
} Args;

/* --max-memory: a byte count with an optional K/M/G/T suffix. */
static int parse_max_memory(const char *value, void *target)
{
    return sl_parse_bytes(value, target) ? -1 : 0;
}

static const CliOpt segment_opts[] = {
    {.name = "model",
     .short_name = 'm',
     .type = CLI_STRING,
     .metavar = "MODEL.sslim",
     .off = offsetof(Args, model),
     .help = "model (default: the shipped models/default.sslim)"},
    {.name = "output",
     .short_name = 'o',
     .type = CLI_STRING,
     .metavar = "OUT",
     .off = offsetof(Args, out),
     .help = "output label map OUT.nii[.gz] (one case only), or output "
             "folder (several cases, --input-dir, an existing folder or a "
             "name ending in /): OUT/<scan>_seg.nii.gz; created if missing"},
    {.name = "input-dir",
     .type = CLI_STRING,
     .metavar = "DIR",
     .off = offsetof(Args, input_dir),
     .help = "every .nii/.nii.gz file of DIR is a case (name order; needs "
             "-o OUTDIR)"},
    {.name = "probabilities",
     .type = CLI_STRING,
     .metavar = "FILE",
     .off = offsetof(Args, probs),
     .help = "also write per-class probabilities as a 4D float32 NIfTI "
             "(one case only)"},
    {.name = "overlay",
     .type = CLI_STRING,
     .metavar = "PNG",
     .off = offsetof(Args, overlay),
     .help = "also write a picture of the scan with its labels: axial, "
             "coronal and sagittal planes through the labelled region, "
             "radiological convention (R on the left), the same for any "
             "storage order of the scan.  One case: PNG is the file "
             "(.png); several cases: a folder receiving "
             "<scan>_overlay.png"},
    {.name = "force",
     .type = CLI_FLAG,
     .off = offsetof(Args, force),
     .help = "overwrite existing outputs (never inputs)"},
    {.name = "threads",
     .type = CLI_INT,
     .lo = 1,
     .hi = 4096,
     .metavar = "N",
     .off = offsetof(Args, threads),
     .help = "threads (default: all cores)"},
    {.name = "max-memory",
     .type = CLI_CUSTOM,
     .metavar = "SIZE",
     .off = offsetof(Args, max_memory),
     .parse = parse_max_memory,
     .expect = "a size such as 4G or 512M",
     .help = "refuse a scan whose voxels, label map and probabilities need "
             "more than SIZE bytes (suffix K/M/G/T; default: half the "
             "physical RAM)"},
    {.name = "batch",
     .type = CLI_INT,
     .lo = 1,
     .hi = 4096,
     .metavar = "N",
     .off = offsetof(Args, batch),
     .help = "2D slices per network run (default: as many as fit 16 MiB of "
             "activations, at most 4)"},
    {.name = "tta",
     .type = CLI_FLAG,
     .off = offsetof(Args, tta),
     .help = "test-time mirroring: average the class probabilities of "
             "the scan and its mirror images along each axis the network "
             "sees (on the model's grid; 4 passes for 2D models, 8 for "
             "3D), as nnU-Net does; that many times the network's time"},
    {.name = "quiet",
     .short_name = 'q',
     .type = CLI_FLAG,
     .off = offsetof(Args, quiet),
     .help = "no progress, no summary lines"},
};

static const CliGroup segment_groups[] = {
    {NULL, segment_opts, sizeof segment_opts / sizeof *segment_opts, 0},
};

#define STR2(x) #x
#define STR(x) STR2(x)
static const CliSpec segment_cli = {
    .prog = "segment",
    .version = "segment (sauron) " SEGMENT_VERSION
               ", reads .sslim " STR(SSLIM_MAJOR) ".x",
    .summary = "segment NIfTI scans with a slim U-Net",
    .synopsis = "[options] scan.nii.gz [scan2.nii.gz ...]\n"
                "       segment [options] --input-dir DIR -o OUTDIR",
    .description =
        "Segment NIfTI scans with a slim U-Net (.sslim); writes\n"
        "<scan>_seg.nii.gz beside each scan unless -o is given.\n"
        "The model is loaded once for all cases; a case that fails is\n"
        "reported on one line and the others go on (exit status 1).\n"
        "A case with several modalities is one 4D file or files joined\n"
        "by commas: t1.nii.gz,t2.nii.gz (same grid).",
    .groups = segment_groups,
    .n_groups = sizeof segment_groups / sizeof *segment_groups,
    .notes = "Exit status: 0 when every scan was segmented, 1 when one\n"
             "failed, 2 for a usage error.",
};

/* 0 ok, 1 exit 0 now (help/version/man), negative error. */
static int parse_args(int argc, char **argv, Args *a)
{
    memset(a, 0, sizeof *a);
    a->max_memory = nio_default_max_memory();
    a->scans = sl_calloc((size_t)argc, sizeof(char *));
    if (!a->scans) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    int rc = cli_parse(&segment_cli, argc, argv, a, a->scans, &a->n_scans);
    if (rc == CLI_HELP) cli_help(&segment_cli, stdout);
    if (rc == CLI_VERSION) printf("%s\n", segment_cli.version);
    if (rc == CLI_MAN) cli_man(&segment_cli, stdout);
    return rc > 0 ? 1 : rc;
}

/* The shipped model: <exe dir>/../share/sauron/models/default.sslim once
 * installed under any PREFIX (so an install built for another PREFIX
 * still finds it), <exe dir>/../../models/default.sslim in the build
 * tree, then SL_DATADIR/models/default.sslim. */
static char *default_model(void)
{
    char exe[PATH_MAX], cand[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(cand, sizeof cand, "%s/../share/sauron/models/default.sslim",
                 exe);
        if (sl_file_exists(cand)) return sl_strdup(cand);
        snprintf(cand, sizeof cand, "%s/../../models/default.sslim", exe);
        if (sl_file_exists(cand)) return sl_strdup(cand);
    }
    snprintf(cand, sizeof cand, "%s", SL_DATADIR "/models/default.sslim");
    if (sl_file_exists(cand)) return sl_strdup(cand);
    sl_error("no model given and no default model found (looked beside "
             "the program and in %s/models); pass -m MODEL.sslim",
             SL_DATADIR);
    return NULL;
}

int main(int argc, char **argv)
{
    /* Before libgomp starts: idle threads must not spin at barriers
     * while another process holds the cores (see exec.h). */
    exec_reexec_passive_wait(argv);
    Args a;
    Graph g;
    graph_init(&g);
    SegBatch b;
    memset(&b, 0, sizeof b);
    char *model = NULL;
    int status = 1;
    int rc = parse_args(argc, argv, &a);
    if (rc == 1) {
        status = 0;
        goto done;
    }
    if (rc) {
        status = 2;
        goto done;
    }
    rc = segbatch_plan(&b, a.scans, a.n_scans, a.input_dir, a.out, a.probs);
    if (!rc && a.overlay) rc = segbatch_set_overlay(&b, a.overlay);
    if (rc) {
        status = rc == ERR_ARG ? 2 : 1;
        goto done;
    }
    model = a.model ? sl_strdup(a.model) : default_model();
    if (!model) goto done;
    if (sslim_read(model, &g)) goto done;
    if (a.threads > 0) omp_set_num_threads(a.threads);
    SegBatchOptions bo = {
        .force = a.force,
        .max_memory = a.max_memory,
        .quiet = a.quiet,
        .show_progress = isatty(2),
        .seg = {.n_threads = a.threads, .batch = a.batch, .tta = a.tta}};
    SegBatchResult br;
    if (segbatch_run(&b, &g, &bo, &br)) goto done;
    status = br.n_failed ? 1 : 0;
done:
    segbatch_free(&b);
    graph_free(&g);
    sl_free(model);
    sl_free(a.scans);
    return status;
}
