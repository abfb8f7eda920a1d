/* segment: the clinic-side CLI.  Loads a .sslim model once, segments one
 * or more NIfTI scans, writes a label map beside each (or to -o). */
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "exec.h"
#include "graph.h"
#include "nifti_io.h"
#include "segment.h"
#include "sslim.h"

#define SEGMENT_VERSION "0.1"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: segment [options] scan.nii.gz [scan2.nii.gz ...]\n"
        "Segment NIfTI scans with a slim U-Net (.sslim); writes\n"
        "<scan>_seg.nii.gz beside each scan unless -o is given.\n"
        "A case with several modalities is one 4D file or files joined\n"
        "by commas: t1.nii.gz,t2.nii.gz (same grid).\n"
        "\n"
        "options:\n"
        "  -m MODEL.sslim         model (default: the shipped\n"
        "                         models/default.sslim)\n"
        "  -o OUT.nii[.gz]        output label map (one case only)\n"
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
    const char *model, *out, *probs;
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
    if (a->n_scans == 0) {
        sl_error("no scan given; usage: segment [options] scan.nii.gz "
                 "(see --help)");
        return ERR_ARG;
    }
    if (a->n_scans > 1 && (a->out || a->probs)) {
        sl_error("-o and --probabilities take one scan, %d were given; "
                 "drop -o to write <scan>_seg.nii.gz beside each",
                 a->n_scans);
        return ERR_ARG;
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

/* "dir/scan.nii.gz" (first file of a comma list) -> "dir/scan_seg.nii.gz" */
static char *default_output(const char *spec)
{
    size_t n = strcspn(spec, ",");
    size_t stem = n;
    if (n >= 7 && !strncmp(spec + n - 7, ".nii.gz", 7)) stem = n - 7;
    else if (n >= 4 && !strncmp(spec + n - 4, ".nii", 4)) stem = n - 4;
    char *o = sl_alloc(stem + 16);
    if (o) snprintf(o, stem + 16, "%.*s_seg.nii.gz", (int)stem, spec);
    return o;
}

/* Nonzero if `out` is the same file as any input of any case. */
static int is_an_input(const char *out, char **scans, int n)
{
    struct stat so, si;
    if (stat(out, &so) != 0) return 0; /* inputs exist; out does not */
    for (int c = 0; c < n; c++) {
        const char *p = scans[c];
        while (*p) {
            size_t len = strcspn(p, ",");
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%.*s", (int)len, p);
            if (stat(path, &si) == 0 && si.st_dev == so.st_dev &&
                si.st_ino == so.st_ino)
                return 1;
            p += len;
            if (*p == ',') p++;
        }
    }
    return 0;
}

typedef struct {
    double t0;
    int case_no, n_cases;
    const char *unit;
} Progress;

static void show_progress(void *ctx, int64_t done, int64_t total)
{
    Progress *p = ctx;
    double el = sl_now() - p->t0;
    double eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    fprintf(stderr, "\rcase %d/%d: %s %lld/%lld (%3d%%) ETA %.0f s   ",
            p->case_no, p->n_cases, p->unit, (long long)done,
            (long long)total, (int)(100 * done / (total > 0 ? total : 1)),
            eta);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

static void modality_list(const ModelMeta *m, char *buf, size_t len)
{
    buf[0] = '\0';
    size_t used = 0;
    for (int i = 0; i < m->n_modalities && m->modality_names; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
                         m->modality_names[i] ? m->modality_names[i] : "?");
        if (w < 0 || (size_t)w >= len - used) break;
        used += (size_t)w;
    }
}

static int run_case(Segmenter *seg, const Graph *g, const Args *a, int c)
{
    const char *spec = a->scans[c];
    char *out = a->out ? sl_strdup(a->out) : default_output(spec);
    Volume v = {0};
    NiftiGeom *geom = NULL;
    int16_t *labels = NULL;
    float *probs = NULL;
    int rc = ERR_NOMEM;
    if (!out) {
        sl_error("out of memory");
        goto fail;
    }
    rc = ERR_ARG;
    if (is_an_input(out, a->scans, a->n_scans) ||
        (a->probs && is_an_input(a->probs, a->scans, a->n_scans))) {
        sl_error("output '%s' is one of the input scans; choose another "
                 "output name with -o", out);
        goto fail;
    }
    if (!nio_is_nifti_name(out)) {
        sl_error("output '%s' must end in .nii or .nii.gz", out);
        goto fail;
    }
    rc = ERR_EXISTS;
    if (!a->force && sl_file_exists(out)) {
        sl_error("output '%s' exists; pass --force to overwrite it", out);
        goto fail;
    }
    if (!a->force && a->probs && sl_file_exists(a->probs)) {
        sl_error("output '%s' exists; pass --force to overwrite it",
                 a->probs);
        goto fail;
    }
    if ((rc = nio_read(spec, &v, &geom))) goto fail;
    const ModelMeta *m = &g->meta;
    if (v.n_mod != m->n_modalities) {
        char names[512];
        modality_list(m, names, sizeof names);
        sl_error("model expects %d modalit%s (%s), '%s' has %d; pass them "
                 "as one 4D file or joined by commas", m->n_modalities,
                 m->n_modalities == 1 ? "y" : "ies", names, spec, v.n_mod);
        rc = ERR_SHAPE;
        goto fail;
    }
    size_t nv = (size_t)volume_voxels(&v);
    labels = sl_alloc(nv * sizeof *labels);
    if (a->probs) probs = sl_calloc(nv * (size_t)m->n_classes, sizeof(float));
    if (!labels || (a->probs && !probs)) {
        sl_error("out of memory for the label map of '%s'", spec);
        rc = ERR_NOMEM;
        goto fail;
    }
    if ((rc = segmenter_run(seg, &v, labels, probs))) goto fail;
    if ((rc = nio_write_labels(out, geom, labels, m->n_classes, a->force)))
        goto fail;
    if (a->probs &&
        (rc = nio_write_probs(a->probs, geom, probs, m->n_classes,
                              a->force)))
        goto fail;
    if (!a->quiet) printf("%s -> %s\n", spec, out);
    rc = 0;
fail:
    sl_free(out);
    sl_free(labels);
    sl_free(probs);
    volume_free(&v);
    nio_geom_free(geom);
    return rc;
}

int main(int argc, char **argv)
{
    /* Before libgomp starts: idle threads must not spin at barriers
     * while another process holds the cores (see exec.h). */
    exec_reexec_passive_wait(argv);
    Args a;
    Graph g;
    graph_init(&g);
    Segmenter *seg = NULL;
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
    model = a.model ? sl_strdup(a.model) : default_model();
    if (!model) goto done;
    if (sslim_read(model, &g)) goto done;
    if (a.threads > 0) omp_set_num_threads(a.threads);
    Progress pr = {.n_cases = a.n_scans,
                   .unit = g.meta.dims == 2 ? "slices" : "windows"};
    SegmentOptions so = {.n_threads = a.threads, .batch = a.batch};
    if (!a.quiet && isatty(2)) {
        so.progress = show_progress;
        so.progress_ctx = &pr;
    }
    if (segmenter_create(&g, &so, &seg)) goto done;
    int failed = 0;
    for (int c = 0; c < a.n_scans; c++) {
        sl_error_reset();
        pr.case_no = c + 1;
        pr.t0 = sl_now();
        if (run_case(seg, &g, &a, c)) failed++;
    }
    status = failed ? 1 : 0;
done:
    segmenter_free(seg);
    graph_free(&g);
    sl_free(model);
    sl_free(a.scans);
    return status;
}
