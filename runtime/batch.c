/* Batches of cases through one Segmenter.  See batch.h. */
#include "batch.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "nifti_io.h"
#include "overlay.h"
#include "segment_scan.h"

/* Length of the scan name without .nii.gz / .nii. */
static size_t stem_len(const char *name, size_t n)
{
    if (n >= 7 && !strncmp(name + n - 7, ".nii.gz", 7)) return n - 7;
    if (n >= 4 && !strncmp(name + n - 4, ".nii", 4)) return n - 4;
    return n;
}

/* Output of case `spec` (its first file names it): beside the scan when
 * dir is NULL ("d/scan.nii.gz" -> "d/scan" + suffix), else
 * "dir/scan" + suffix. */
static char *case_output(const char *spec, const char *dir,
                         const char *suffix)
{
    size_t n = strcspn(spec, ",");
    const char *name = spec;
    if (dir) {
        for (size_t i = 0; i < n; i++)
            if (spec[i] == '/') name = spec + i + 1;
        n -= (size_t)(name - spec);
    }
    size_t stem = stem_len(name, n);
    size_t dl = dir ? strlen(dir) : 0;
    int slash = dl > 0 && dir[dl - 1] != '/';
    size_t len = dl + (size_t)slash + stem + strlen(suffix) + 1;
    char *o = sl_alloc(len);
    if (o)
        snprintf(o, len, "%s%s%.*s%s", dir ? dir : "", slash ? "/" : "",
                 (int)stem, name, suffix);
    return o;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_u64(const void *a, const void *b)
{
    unsigned long long x = *(const unsigned long long *)a,
                       y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Identity of a file for the is-an-input test (device and inode mixed
 * into one 64-bit key; a collision can only refuse a legitimate output,
 * never let an input be overwritten). */
static unsigned long long file_id(const struct stat *st)
{
    return (unsigned long long)st->st_ino * 0x9E3779B97F4A7C15ull ^
           (unsigned long long)st->st_dev;
}

static int push(char ***arr, int *n, int *cap, char *s)
{
    if (!s) return ERR_NOMEM;
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        char **na = sl_realloc(*arr, sizeof(char *) * (size_t)nc);
        if (!na) {
            sl_free(s);
            return ERR_NOMEM;
        }
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = s;
    return 0;
}

/* Append the .nii/.nii.gz regular files of `dir` (hidden ones skipped)
 * in byte order of their names. */
static int list_dir(SegBatch *b, int *cap, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        sl_error("cannot open input folder '%s': %s; check the path", dir,
                 strerror(errno));
        return ERR_IO;
    }
    int first = b->n, rc = 0;
    size_t dl = strlen(dir);
    int slash = dl > 0 && dir[dl - 1] != '/';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !nio_is_nifti_name(e->d_name)) continue;
        size_t len = dl + (size_t)slash + strlen(e->d_name) + 1;
        char *p = sl_alloc(len);
        if (!p) {
            rc = ERR_NOMEM;
            break;
        }
        snprintf(p, len, "%s%s%s", dir, slash ? "/" : "", e->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
            sl_free(p);
            continue;
        }
        if ((rc = push(&b->cases, &b->n, cap, p))) break;
    }
    closedir(d);
    if (rc) {
        sl_error("out of memory listing '%s'", dir);
        return rc;
    }
    if (b->n == first) {
        sl_error("no .nii or .nii.gz files in input folder '%s'; give the "
                 "folder that holds the scans",
                 dir);
        return ERR_ARG;
    }
    qsort(b->cases + first, (size_t)(b->n - first), sizeof(char *), cmp_str);
    return 0;
}

/* Record the identity of every existing input file of every case. */
static int collect_input_ids(SegBatch *b)
{
    int cap = 0;
    for (int c = 0; c < b->n; c++)
        for (const char *p = b->cases[c]; *p;) {
            size_t len = strcspn(p, ",");
            char path[PATH_MAX];
            struct stat st;
            snprintf(path, sizeof path, "%.*s", (int)len, p);
            if (stat(path, &st) == 0) {
                if (b->n_input_ids == cap) {
                    cap = cap ? 2 * cap : 64;
                    unsigned long long *na =
                        sl_realloc(b->input_ids, sizeof *na * (size_t)cap);
                    if (!na) {
                        sl_error("out of memory listing the inputs");
                        return ERR_NOMEM;
                    }
                    b->input_ids = na;
                }
                b->input_ids[b->n_input_ids++] = file_id(&st);
            }
            p += len;
            if (*p == ',') p++;
        }
    if (b->n_input_ids > 1)
        qsort(b->input_ids, (size_t)b->n_input_ids, sizeof *b->input_ids,
              cmp_u64);
    return 0;
}

static int is_an_input(const SegBatch *b, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return 0; /* inputs exist; path does not */
    unsigned long long id = file_id(&st);
    return b->n_input_ids > 0 &&
           bsearch(&id, b->input_ids, (size_t)b->n_input_ids, sizeof id,
                   cmp_u64) != NULL;
}

/* Is -o a folder?  1 yes, 0 a file, negative: refused (message). */
static int out_is_folder(const char *out, int n_cases, int several)
{
    size_t n = strlen(out);
    if (is_dir(out) || (n > 0 && out[n - 1] == '/')) return 1;
    if (!several) return 0;
    if (nio_is_nifti_name(out)) {
        sl_error("-o '%s' is one file and takes one scan, %d cases were "
                 "given; give an output folder with -o, or drop -o to "
                 "write <scan>_seg.nii.gz beside each scan",
                 out, n_cases);
        return ERR_ARG;
    }
    if (sl_file_exists(out)) {
        sl_error("-o '%s' is a file, not a folder; give an output folder",
                 out);
        return ERR_ARG;
    }
    return 1;
}

/* Two cases writing one output: the second would overwrite the first
 * (or fail on it).  Sorting copies keeps this O(n log n). */
static int refuse_duplicates(char **outputs, int n)
{
    if (n < 2) return 0;
    char **sorted = sl_alloc(sizeof(char *) * (size_t)n);
    if (!sorted) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    memcpy(sorted, outputs, sizeof(char *) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(char *), cmp_str);
    for (int c = 1; c < n; c++)
        if (!strcmp(sorted[c - 1], sorted[c])) {
            sl_error("two cases would both write '%s' (scans with the "
                     "same name); segment them into different output "
                     "folders",
                     sorted[c]);
            sl_free(sorted);
            return ERR_ARG;
        }
    sl_free(sorted);
    return 0;
}

int segbatch_plan(SegBatch *b, char *const *scans, int n_scans,
                  const char *input_dir, const char *out, const char *probs)
{
    memset(b, 0, sizeof *b);
    b->probs = probs;
    int cap = 0, rc = 0;
    for (int i = 0; i < n_scans; i++)
        if ((rc = push(&b->cases, &b->n, &cap, sl_strdup(scans[i])))) {
            sl_error("out of memory");
            return rc;
        }
    if (input_dir && (rc = list_dir(b, &cap, input_dir))) return rc;
    if (b->n == 0) {
        sl_error("no scan given; usage: segment [options] scan.nii.gz "
                 "(see --help)");
        return ERR_ARG;
    }
    int several = b->n > 1 || input_dir;
    int folder = out ? out_is_folder(out, b->n, several) : 0;
    if (folder < 0) return folder;
    if (probs && b->n > 1) {
        sl_error("--probabilities takes one scan, %d were given; run the "
                 "cases one by one to keep their probabilities",
                 b->n);
        return ERR_ARG;
    }
    if (input_dir && !folder) {
        sl_error("--input-dir needs an output folder: -o OUTDIR (outputs "
                 "beside the scans would be read as scans next time)");
        return ERR_ARG;
    }
    if (input_dir && is_dir(out)) {
        struct stat si, so;
        if (stat(input_dir, &si) == 0 && stat(out, &so) == 0 &&
            si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
            sl_error("-o '%s' is the input folder; outputs would be read "
                     "as scans next time: choose another output folder",
                     out);
            return ERR_ARG;
        }
    }
    b->batch_mode = several || folder;
    b->outputs = sl_calloc((size_t)b->n, sizeof(char *));
    if (!b->outputs) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    for (int c = 0; c < b->n; c++) {
        b->outputs[c] = out && !folder
                            ? sl_strdup(out)
                            : case_output(b->cases[c], folder ? out : NULL,
                                          "_seg.nii.gz");
        if (!b->outputs[c]) {
            sl_error("out of memory");
            return ERR_NOMEM;
        }
    }
    if ((rc = refuse_duplicates(b->outputs, b->n))) return rc;
    if ((rc = collect_input_ids(b))) return rc;
    if (folder && !is_dir(out) && mkdir(out, 0777) != 0 && errno != EEXIST) {
        sl_error("cannot create output folder '%s': %s; create it (and "
                 "its parents) first",
                 out, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

static int ends_png(const char *path)
{
    size_t n = strlen(path);
    return n >= 4 && !strcmp(path + n - 4, ".png");
}

int segbatch_set_overlay(SegBatch *b, const char *overlay)
{
    int one_file = b->n == 1 && ends_png(overlay) && !is_dir(overlay);
    if (!one_file && ends_png(overlay) && !is_dir(overlay)) {
        sl_error("--overlay '%s' is one picture and takes one scan, %d "
                 "cases were given; give a folder for one picture per case",
                 overlay, b->n);
        return ERR_ARG;
    }
    if (!one_file && b->n == 1 && !is_dir(overlay) &&
        overlay[strlen(overlay) - 1] != '/') {
        sl_error("--overlay '%s' must end in .png (one case) or name a "
                 "folder (an existing one, or a name ending in '/')",
                 overlay);
        return ERR_ARG;
    }
    b->overlays = sl_calloc((size_t)b->n, sizeof(char *));
    if (!b->overlays) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    for (int c = 0; c < b->n; c++) {
        b->overlays[c] =
            one_file ? sl_strdup(overlay)
                     : case_output(b->cases[c], overlay, "_overlay.png");
        if (!b->overlays[c]) {
            sl_error("out of memory");
            return ERR_NOMEM;
        }
    }
    int rc = refuse_duplicates(b->overlays, b->n);
    if (rc) return rc;
    if (!one_file && !is_dir(overlay) && mkdir(overlay, 0777) != 0 &&
        errno != EEXIST) {
        sl_error("cannot create overlay folder '%s': %s; create it (and "
                 "its parents) first",
                 overlay, strerror(errno));
        return ERR_IO;
    }
    return 0;
}

void segbatch_free(SegBatch *b)
{
    for (int c = 0; c < b->n; c++) {
        sl_free(b->cases[c]);
        if (b->outputs) sl_free(b->outputs[c]);
        if (b->overlays) sl_free(b->overlays[c]);
    }
    sl_free(b->cases);
    sl_free(b->outputs);
    sl_free(b->overlays);
    sl_free(b->input_ids);
    memset(b, 0, sizeof *b);
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

/* One case: read, segment, write.  0 or a negative code (one line
 * reported through sl_error). */
static int run_case(const SegBatch *b, int c, Segmenter *seg, const Graph *g,
                    int force, uint64_t max_memory, int64_t *nonfinite)
{
    const char *spec = b->cases[c], *out = b->outputs[c];
    const char *ovl = b->overlays ? b->overlays[c] : NULL;
    Volume v = {0};
    OverlayImage img = {0};
    NiftiGeom *geom = NULL;
    int16_t *labels = NULL;
    float *probs = NULL;
    int rc = ERR_ARG;
    if (is_an_input(b, out) || (b->probs && is_an_input(b, b->probs)) ||
        (ovl && is_an_input(b, ovl))) {
        sl_error("output '%s' is one of the input scans; choose another "
                 "output name with -o",
                 out);
        goto fail;
    }
    if (!nio_is_nifti_name(out)) {
        sl_error("output '%s' must end in .nii or .nii.gz", out);
        goto fail;
    }
    rc = ERR_EXISTS;
    if (!force && sl_file_exists(out)) {
        sl_error("output '%s' exists; pass --force to overwrite it", out);
        goto fail;
    }
    if (!force && b->probs && sl_file_exists(b->probs)) {
        sl_error("output '%s' exists; pass --force to overwrite it",
                 b->probs);
        goto fail;
    }
    if (!force && ovl && sl_file_exists(ovl)) {
        sl_error("output '%s' exists; pass --force to overwrite it", ovl);
        goto fail;
    }
    if ((rc = nio_read_within(spec, max_memory, &v, &geom))) goto fail;
    /* one pass per modality: the count for the note, and a modality
     * with nothing finite refused here, where the file can be named */
    for (int mo = 0; mo < v.n_mod; mo++) {
        int64_t bad = volume_count_nonfinite(&v, mo);
        *nonfinite += bad;
        if (bad == volume_voxels(&v)) {
            sl_error("'%s': modality %d has no finite voxel (every one is "
                     "NaN or infinite); check the scan",
                     spec, mo + 1);
            rc = ERR_FORMAT;
            goto fail;
        }
    }
    const ModelMeta *m = &g->meta;
    if (v.n_mod != m->n_modalities) {
        char names[512];
        modality_list(m, names, sizeof names);
        sl_error("model expects %d modalit%s (%s), '%s' has %d; pass them "
                 "as one 4D file or joined by commas",
                 m->n_modalities, m->n_modalities == 1 ? "y" : "ies", names,
                 spec, v.n_mod);
        rc = ERR_SHAPE;
        goto fail;
    }
    size_t nv = (size_t)volume_voxels(&v);
    /* The scan fitted the limit; so must it with its outputs (far below
     * overflow: the scan's own float32 size fitted). */
    double need = (double)nv *
                  ((double)v.n_mod * sizeof(float) + sizeof *labels +
                   (b->probs ? (double)m->n_classes * sizeof(float) : 0.0));
    if (need > (double)max_memory) {
        char need_s[32], max_s[32];
        sl_error("'%s' needs %s for its voxels and outputs, above the "
                 "memory limit of %s; raise it with --max-memory",
                 spec, sl_fmt_bytes(need, need_s),
                 sl_fmt_bytes((double)max_memory, max_s));
        rc = ERR_NOMEM;
        goto fail;
    }
    if (b->probs) probs = sl_calloc(nv * (size_t)m->n_classes, sizeof(float));
    if (b->probs && !probs) {
        sl_error("out of memory for the probabilities of '%s'", spec);
        rc = ERR_NOMEM;
        goto fail;
    }
    /* On the model's grid when it records one (segment_scan.h); frees
     * v's voxels and allocates the label map. */
    Affine aff;
    nio_geom_affine(geom, aff.m);
    if ((rc = segment_scan(seg, &v, &aff, &labels, probs))) goto fail;
    if ((rc = nio_write_labels(out, geom, labels, m->n_classes, force)))
        goto fail;
    if (b->probs &&
        (rc = nio_write_probs(b->probs, geom, probs, m->n_classes, force)))
        goto fail;
    if (ovl) {
        /* segment_scan freed the voxels to bound peak memory: read the
         * scan again for the picture rather than keep a copy. */
        volume_free(&v);
        if ((rc = nio_read_within(spec, max_memory, &v, NULL)) ||
            (rc = overlay_render(&img, &v, labels, aff.m, spec)) ||
            (rc = overlay_write_png(ovl, &img, force)))
            goto fail;
    }
    rc = 0;
fail:
    overlay_free(&img);
    sl_free(labels);
    sl_free(probs);
    volume_free(&v);
    nio_geom_free(geom);
    return rc;
}

/* Does the error message name one of the case's files? */
static int names_a_file(const char *msg, const char *spec)
{
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%.*s", (int)len, p);
        if (len > 0 && strstr(msg, path)) return 1;
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

int segbatch_run(const SegBatch *b, Graph *g, const SegBatchOptions *o,
                 SegBatchResult *r)
{
    memset(r, 0, sizeof *r);
    Progress pr = {.n_cases = b->n,
                   .unit = g->meta.dims == 2 ? "slices" : "windows"};
    SegmentOptions so = o->seg;
    so.progress = NULL;
    so.progress_ctx = NULL;
    if (o->show_progress && !o->quiet) {
        so.progress = show_progress;
        so.progress_ctx = &pr;
    }
    Segmenter *seg = NULL;
    int rc = segmenter_create(g, &so, &seg);
    if (rc) return rc;
    double t_all = sl_now();
    int was_quiet = sl_error_is_quiet();
    for (int c = 0; c < b->n; c++) {
        sl_error_reset();
        pr.case_no = c + 1;
        pr.t0 = sl_now();
        /* SegBatch mode: the case's error is printed below, with its number
         * and (when the message does not say it) its file. */
        if (b->batch_mode) sl_error_quiet(1);
        int64_t nonfinite = 0;
        int crc =
            run_case(b, c, seg, g, o->force,
                     o->max_memory ? o->max_memory : nio_default_max_memory(),
                     &nonfinite);
        sl_error_quiet(was_quiet);
        double dt = sl_now() - pr.t0;
        if (crc) {
            r->n_failed++;
            const char *msg = sl_error_last();
            if (!*msg) msg = sl_strerror(crc);
            if (b->batch_mode && !was_quiet) {
                if (names_a_file(msg, b->cases[c]))
                    fprintf(stderr, "error: case %d/%d: %s\n", c + 1, b->n,
                            msg);
                else
                    fprintf(stderr, "error: case %d/%d '%s': %s\n", c + 1,
                            b->n, b->cases[c], msg);
            }
            continue;
        }
        r->n_ok++;
        if (o->quiet) continue;
        if (nonfinite > 0)
            fprintf(stderr,
                    "note: '%s': %lld voxels are NaN or infinite; they were "
                    "segmented as the lowest finite value of their "
                    "modality\n",
                    b->cases[c], (long long)nonfinite);
        const char *ovl = b->overlays ? b->overlays[c] : NULL;
        if (b->batch_mode)
            printf("[%d/%d] %s -> %s%s%s (%.2f s)\n", c + 1, b->n,
                   b->cases[c], b->outputs[c], ovl ? ", " : "",
                   ovl ? ovl : "", dt);
        else
            printf("%s -> %s%s%s\n", b->cases[c], b->outputs[c],
                   ovl ? ", " : "", ovl ? ovl : "");
        fflush(stdout);
    }
    r->seconds = sl_now() - t_all;
    r->n_executors = segmenter_exec_count(seg);
    segmenter_free(seg);
    if (b->batch_mode && !o->quiet) {
        printf("segmented %d of %d cases in %.1f s (%.2f s per case)",
               r->n_ok, b->n, r->seconds, r->seconds / b->n);
        if (r->n_failed)
            printf("; %d failed (error lines above)", r->n_failed);
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
