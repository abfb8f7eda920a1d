/* segment: the clinic-side CLI.  Loads a .sslim model once, segments one
 * or more NIfTI scans, writes a label map beside each (or to -o). */
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "common.h"
#include "exec.h"
#include "graph.h"
#include "segment.h"
#include "sslim.h"

#define SEGMENT_VERSION "0.1"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: segment [options] scan.nii.gz [scan2.nii.gz ...]\n"
        "       segment [options] --input-dir DIR -o OUTDIR\n"
        "Segment NIfTI scans with a slim U-Net (.sslim); writes\n"
        "<scan>_seg.nii.gz beside each scan unless -o is given.\n"
        "The model is loaded once for all cases; a case that fails is\n"
        "reported on one line and the others go on (exit status 1).\n"
        "A case with several modalities is one 4D file or files joined\n"
        "by commas: t1.nii.gz,t2.nii.gz (same grid).\n"
        "\n"
        "options:\n"
        "  -m MODEL.sslim         model (default: the shipped\n"
        "                         models/default.sslim)\n"
        "  -o OUT.nii[.gz]        output label map (one case only)\n"
        "  -o OUTDIR              output folder (several cases, --input-dir,\n"
        "                         an existing folder or a name ending in /):\n"
        "                         OUTDIR/<scan>_seg.nii.gz; created if missing\n"
        "  --input-dir DIR        every .nii/.nii.gz file of DIR is a case\n"
        "                         (name order; needs -o OUTDIR)\n"
        "  --probabilities FILE   also write per-class probabilities as a\n"
        "                         4D float32 NIfTI (one case only)\n"
        "  --force                overwrite existing outputs (never inputs)\n"
        "  --threads N            threads (default: all cores)\n"
        "  --batch N              2D slices per network run (default:\n"
        "                         as many as fit 16 MiB of activations,\n"
        "                         at most 4)\n"
        "  -q                     no progress, no summary lines\n"
        "  -h, --help             this help\n"
        "  --version              version\n");
}

typedef struct {
    const char *model, *out, *probs, *input_dir;
    int force, threads, batch, quiet;
    char **scans;
    int n_scans;
} Args;

static int parse_int(const char *opt, const char *v, int lo, int hi,
                     int *out)
{
    char *end = NULL;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || x < lo || x > hi) {
        sl_error("%s needs an integer in %d..%d, got '%s'", opt, lo, hi,
                 v ? v : "");
        return ERR_ARG;
    }
    *out = (int)x;
    return 0;
}

/* 0 ok, 1 exit 0 now (help/version), negative error. */
static int parse_args(int argc, char **argv, Args *a)
{
    memset(a, 0, sizeof *a);
    a->scans = sl_calloc((size_t)argc, sizeof(char *));
    if (!a->scans) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    int only_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (only_files || s[0] != '-' || !s[1]) {
            a->scans[a->n_scans++] = argv[i];
        } else if (!strcmp(s, "--")) {
            only_files = 1;
        } else if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(s, "--version")) {
            printf("segment (sauron) %s, reads .sslim %d.x\n",
                   SEGMENT_VERSION, SSLIM_MAJOR);
            return 1;
        } else if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) {
            a->quiet = 1;
        } else if (!strcmp(s, "--force")) {
            a->force = 1;
        } else if (!strcmp(s, "-m") || !strcmp(s, "-o") ||
                   !strcmp(s, "--probabilities") ||
                   !strcmp(s, "--input-dir") ||
                   !strcmp(s, "--threads") || !strcmp(s, "--batch")) {
            if (!next) {
                sl_error("%s needs a value; see segment --help", s);
                return ERR_ARG;
            }
            i++;
            int rc = 0;
            if (!strcmp(s, "-m")) a->model = next;
            else if (!strcmp(s, "-o")) a->out = next;
            else if (!strcmp(s, "--probabilities")) a->probs = next;
            else if (!strcmp(s, "--input-dir")) a->input_dir = next;
            else if (!strcmp(s, "--threads"))
                rc = parse_int(s, next, 1, 4096, &a->threads);
            else
                rc = parse_int(s, next, 1, 4096, &a->batch);
            if (rc) return rc;
        } else {
            sl_error("unknown option '%s'; see segment --help", s);
            return ERR_ARG;
        }
    }
    return 0;
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
    if (rc) {
        status = rc == ERR_ARG ? 2 : 1;
        goto done;
    }
    model = a.model ? sl_strdup(a.model) : default_model();
    if (!model) goto done;
    if (sslim_read(model, &g)) goto done;
    if (a.threads > 0) omp_set_num_threads(a.threads);
    SegBatchOptions bo = {.force = a.force,
                       .quiet = a.quiet,
                       .show_progress = isatty(2),
                       .seg = {.n_threads = a.threads, .batch = a.batch}};
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
