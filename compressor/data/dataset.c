/* nnU-Net raw dataset: dataset.json, case discovery and checks, loading
 * into normalised tensor-order arrays (see dataset.h). */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "compressor/data/json.h"
#include "runtime/common.h"
#include "runtime/nifti_io.h"
#include "runtime/orient.h"
#include "runtime/volume.h"

/* nio_read joins modality files with commas (MAX_INPUT_FILES there). */
#define DATA_MAX_MODALITIES 16

/* sl_alloc'd printf. */
static char *str_fmt(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static char *str_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = sl_alloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void free_names(char **names, int n)
{
    for (int i = 0; names && i < n; i++)
        sl_free(names[i]);
    sl_free(names);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Index of name in the sorted list, or -1. */
static int find_name(char **names, int n, const char *name)
{
    char *const *hit =
        bsearch(&name, names, (size_t)n, sizeof *names, cmp_str);
    return hit ? (int)(hit - names) : -1;
}

/* ---- dataset.json ---- */

/* Parse a key "0", "1", ... into an index in [0, n). */
static int key_index(const char *key, int n)
{
    if (!*key || strlen(key) > 4) return -1;
    int v = 0;
    for (const char *c = key; *c; c++) {
        if (*c < '0' || *c > '9') return -1;
        v = v * 10 + (*c - '0');
    }
    if (key[0] == '0' && key[1]) return -1; /* "01" */
    return v < n ? v : -1;
}

static int parse_channels(Dataset *ds, const JsonValue *root,
                          const char *path)
{
    const JsonValue *ch = json_get(root, "channel_names");
    const char *key = "channel_names";
    if (!ch) {
        ch = json_get(root, "modality");
        key = "modality";
    }
    if (!ch || ch->type != JSON_OBJECT || ch->n < 1 ||
        ch->n > DATA_MAX_MODALITIES) {
        sl_error("'%s' has no usable \"channel_names\" (an object such as "
                 "{\"0\": \"T1\"} with 1..%d entries); add it",
                 path, DATA_MAX_MODALITIES);
        return ERR_FORMAT;
    }
    ds->modality_names = sl_calloc((size_t)ch->n, sizeof(char *));
    if (!ds->modality_names) return ERR_NOMEM;
    ds->n_modalities = ch->n;
    for (int i = 0; i < ch->n; i++) {
        const JsonMember *m = &ch->members[i];
        int idx = key_index(m->key, ch->n);
        if (idx < 0 || ds->modality_names[idx] ||
            m->value->type != JSON_STRING) {
            sl_error("'%s': \"%s\" entry \"%s\" must map an index 0..%d "
                     "(each once) to a name string; fix dataset.json",
                     path, key, m->key, ch->n - 1);
            return ERR_FORMAT;
        }
        if (!(ds->modality_names[idx] = sl_strdup(m->value->str)))
            return ERR_NOMEM;
    }
    return 0;
}

static int parse_labels(Dataset *ds, const JsonValue *root, const char *path)
{
    const JsonValue *lb = json_get(root, "labels");
    if (!lb || lb->type != JSON_OBJECT || lb->n < 2 ||
        lb->n > DATA_MAX_CLASSES) {
        sl_error("'%s' has no usable \"labels\" (an object such as "
                 "{\"background\": 0, \"brain\": 1} with 2..%d classes); "
                 "add it",
                 path, DATA_MAX_CLASSES);
        return ERR_FORMAT;
    }
    int n = lb->n;
    if (json_get(lb, "ignore")) {
        sl_error("'%s' declares an \"ignore\" label, which is not "
                 "supported; relabel those voxels or remove the entry",
                 path);
        return ERR_UNSUPPORTED;
    }
    ds->class_names = sl_calloc((size_t)n, sizeof(char *));
    if (!ds->class_names) return ERR_NOMEM;
    ds->n_classes = n;
    for (int i = 0; i < n; i++) {
        const JsonMember *m = &lb->members[i];
        const char *name;
        int val;
        if (m->value->type == JSON_NUMBER) { /* v2: name -> value */
            if (!json_is_int(m->value, 0, n - 1)) {
                sl_error("'%s': label \"%s\" has value %g; values must be "
                         "0..%d, consecutive as in nnU-Net; fix "
                         "dataset.json",
                         path, m->key, m->value->number, n - 1);
                return ERR_FORMAT;
            }
            val = (int)m->value->number;
            name = m->key;
        } else if (m->value->type == JSON_STRING) { /* v1: value -> name */
            val = key_index(m->key, n);
            if (val < 0) {
                sl_error("'%s': label key \"%s\" is not an index 0..%d "
                         "(nnU-Net v1 style); fix dataset.json",
                         path, m->key, n - 1);
                return ERR_FORMAT;
            }
            name = m->value->str;
        } else if (m->value->type == JSON_ARRAY) {
            sl_error("'%s': label \"%s\" is a region (list of values), "
                     "which is not supported; use one value per class",
                     path, m->key);
            return ERR_UNSUPPORTED;
        } else {
            sl_error("'%s': label \"%s\" is a %s; give an integer value",
                     path, m->key, json_type_name(m->value->type));
            return ERR_FORMAT;
        }
        if (ds->class_names[val]) {
            sl_error("'%s': label value %d is declared twice (\"%s\" and "
                     "\"%s\"); fix dataset.json",
                     path, val, ds->class_names[val], name);
            return ERR_FORMAT;
        }
        if (!(ds->class_names[val] = sl_strdup(name))) return ERR_NOMEM;
    }
    /* n distinct values in 0..n-1: all present, background included. */
    return 0;
}

static int parse_json(Dataset *ds, const char *path, int *num_training)
{
    JsonValue *root = NULL;
    int rc = json_parse_file(path, &root);
    if (rc) goto fail;
    rc = ERR_FORMAT;
    if (root->type != JSON_OBJECT) {
        sl_error("'%s' holds a JSON %s; dataset.json must be an object", path,
                 json_type_name(root->type));
        goto fail;
    }
    if ((rc = parse_channels(ds, root, path))) goto fail;
    if ((rc = parse_labels(ds, root, path))) goto fail;
    rc = ERR_FORMAT;
    const JsonValue *fe = json_get(root, "file_ending");
    const char *ending = ".nii.gz";
    if (fe) {
        if (fe->type != JSON_STRING ||
            (strcmp(fe->str, ".nii.gz") && strcmp(fe->str, ".nii"))) {
            sl_error("'%s': \"file_ending\" must be \".nii.gz\" or \".nii\" "
                     "(NIfTI is the only format read); convert the images",
                     path);
            goto fail;
        }
        ending = fe->str;
    }
    const JsonValue *nt = json_get(root, "numTraining");
    *num_training = -1;
    if (nt) {
        if (!json_is_int(nt, 0, 1000000000)) {
            sl_error("'%s': \"numTraining\" must be a non-negative "
                     "integer; fix or remove it",
                     path);
            goto fail;
        }
        *num_training = (int)nt->number;
    }
    rc = ERR_NOMEM;
    if (!(ds->file_ending = sl_strdup(ending))) goto fail;
    rc = 0;
fail:
    if (rc == ERR_NOMEM && !sl_error_reported())
        sl_error("out of memory reading '%s'", path);
    json_free(root);
    return rc;
}

/* ---- case discovery ---- */

/* File names in dir ending in `ending` (hidden files skipped), without
 * the ending, sorted.  A missing dir gives 0 names. */
static int list_dir(const char *dir, const char *ending, char ***out,
                    int *n_out)
{
    DIR *d = opendir(dir);
    char **names = NULL;
    int n = 0, cap = 0, rc = ERR_NOMEM;
    *out = NULL;
    *n_out = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ending)) continue;
        if (n == cap) {
            int nc = cap ? cap * 2 : 64;
            char **nn = sl_realloc(names, sizeof *nn * (size_t)nc);
            if (!nn) goto fail;
            names = nn;
            cap = nc;
        }
        size_t len = strlen(e->d_name) - strlen(ending);
        if (!(names[n] = sl_alloc(len + 1))) goto fail;
        memcpy(names[n], e->d_name, len);
        names[n][len] = '\0';
        n++;
    }
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
    *out = names;
    *n_out = n;
    names = NULL;
    rc = 0;
fail:
    if (rc) sl_error("out of memory listing '%s'", dir);
    free_names(names, n);
    closedir(d);
    return rc;
}

/* "CASE_0003" -> case name length and modality 3; -1 if not of the form. */
static int split_image_name(const char *f, size_t *case_len, int *mod)
{
    size_t n = strlen(f);
    if (n < 6 || f[n - 5] != '_') return -1;
    int m = 0;
    for (size_t i = n - 4; i < n; i++) {
        if (f[i] < '0' || f[i] > '9') return -1;
        m = m * 10 + (f[i] - '0');
    }
    *case_len = n - 5;
    *mod = m;
    return 0;
}

/* Collect the case names of an images folder (unique, sorted) after
 * checking every file's modality index. */
static int image_cases(const Dataset *ds, const char *sub, char ***out,
                       int *n_out)
{
    char *dir = str_fmt("%s/%s", ds->dir, sub);
    char **files = NULL, **cases = NULL;
    int nf = 0, nc = 0, rc = ERR_NOMEM;
    *out = NULL;
    *n_out = 0;
    if (!dir) goto fail;
    if ((rc = list_dir(dir, ds->file_ending, &files, &nf))) goto fail;
    rc = ERR_NOMEM;
    if (nf && !(cases = sl_calloc((size_t)nf, sizeof(char *)))) goto fail;
    for (int i = 0; i < nf; i++) {
        size_t cl;
        int m;
        if (split_image_name(files[i], &cl, &m) || m >= ds->n_modalities) {
            sl_error("'%s/%s%s' is not named CASE_XXXX with a modality "
                     "index below %d (dataset.json declares %d channels); "
                     "rename or remove it",
                     dir, files[i], ds->file_ending, ds->n_modalities,
                     ds->n_modalities);
            rc = ERR_FORMAT;
            goto fail;
        }
        files[i][cl] = '\0';
        if (!(cases[nc] = sl_strdup(files[i]))) goto fail;
        nc++;
    }
    /* Sort the case names, then drop repeats (one per modality file).
     * Sorting the full file names is not enough: a case named
     * "x_0000" sorts between "x_0000.nii.gz" and "x_0001.nii.gz". */
    if (nc) qsort(cases, (size_t)nc, sizeof *cases, cmp_str);
    int nu = 0;
    for (int i = 0; i < nc; i++) {
        if (nu && strcmp(cases[nu - 1], cases[i]) == 0) {
            sl_free(cases[i]);
            continue;
        }
        cases[nu++] = cases[i];
    }
    nc = nu;
    *out = cases;
    *n_out = nc;
    cases = NULL;
    rc = 0;
fail:
    if (rc == ERR_NOMEM) sl_error("out of memory listing '%s'", ds->dir);
    free_names(files, nf);
    free_names(cases, nc);
    sl_free(dir);
    return rc;
}

static char *image_path(const Dataset *ds, const char *sub, const char *name,
                        int m)
{
    return str_fmt("%s/%s/%s_%04d%s", ds->dir, sub, name, m, ds->file_ending);
}

/* Every case in `cases` has all modality files in `sub`. */
static int check_modalities(const Dataset *ds, const char *sub, char **cases,
                            int n)
{
    for (int i = 0; i < n; i++)
        for (int m = 0; m < ds->n_modalities; m++) {
            char *p = image_path(ds, sub, cases[i], m);
            if (!p) {
                sl_error("out of memory");
                return ERR_NOMEM;
            }
            int ok = sl_file_exists(p);
            if (!ok)
                sl_error("case '%s' is missing modality %d (%s): '%s' not "
                         "found; add the file or remove the case",
                         cases[i], m, ds->modality_names[m], p);
            sl_free(p);
            if (!ok) return ERR_FORMAT;
        }
    return 0;
}

static int open_dataset(Dataset *ds, const char *dir, int allow_unlabeled);

int dataset_open(Dataset *ds, const char *dir)
{
    return open_dataset(ds, dir, 0);
}

int dataset_open_unlabeled(Dataset *ds, const char *dir)
{
    return open_dataset(ds, dir, 1);
}

static int open_dataset(Dataset *ds, const char *dir, int allow_unlabeled)
{
    char *json = NULL, *lab_dir = NULL, **img = NULL, **lab_ts = NULL;
    int n_img = 0, n_lab_ts = 0, num_training = -1, rc = ERR_NOMEM;
    memset(ds, 0, sizeof *ds);
    if (strchr(dir, ',')) {
        sl_error("dataset folder '%s' contains a comma, which the image "
                 "reader uses to join modality files; rename the folder",
                 dir);
        return ERR_ARG;
    }
    if (!(ds->dir = sl_strdup(dir))) goto fail;
    if (!(json = str_fmt("%s/dataset.json", dir))) goto fail;
    if (!is_dir(dir)) {
        sl_error("dataset folder '%s' not found; give an nnU-Net raw "
                 "dataset folder (dataset.json, imagesTr, labelsTr)",
                 dir);
        rc = ERR_IO;
        goto fail;
    }
    if (!sl_file_exists(json)) {
        sl_error("'%s' has no dataset.json; give an nnU-Net raw dataset "
                 "folder (dataset.json with channel_names and labels, "
                 "imagesTr, labelsTr)",
                 dir);
        rc = ERR_FORMAT;
        goto fail;
    }
    if ((rc = parse_json(ds, json, &num_training))) goto fail;

    /* Training cases are defined by labelsTr; every image needs one. */
    rc = ERR_NOMEM;
    if (!(lab_dir = str_fmt("%s/labelsTr", dir))) goto fail;
    if ((rc = list_dir(lab_dir, ds->file_ending, &ds->case_names,
                       &ds->n_cases)))
        goto fail;
    if ((rc = image_cases(ds, "imagesTr", &img, &n_img))) goto fail;
    if (allow_unlabeled && ds->n_cases == 0 && n_img > 0) {
        /* no labels: the images define the cases (all names move over) */
        sl_free(ds->case_names);
        ds->case_names = img;
        ds->n_cases = n_img;
        img = NULL;
        n_img = 0;
        ds->unlabeled = 1;
    }
    rc = ERR_FORMAT;
    for (int i = 0; i < n_img; i++)
        if (find_name(ds->case_names, ds->n_cases, img[i]) < 0) {
            sl_error("case '%s' has images in '%s/imagesTr' but no label "
                     "'%s/%s%s'; add the label or remove the images",
                     img[i], dir, lab_dir, img[i], ds->file_ending);
            goto fail;
        }
    if (ds->n_cases == 0) {
        sl_error("dataset '%s' has no training cases (no '*%s' files in "
                 "labelsTr and imagesTr); add cases",
                 dir, ds->file_ending);
        goto fail;
    }
    if ((rc = check_modalities(ds, "imagesTr", ds->case_names, ds->n_cases)))
        goto fail;
    if (num_training >= 0 && num_training != ds->n_cases) {
        sl_error("'%s' says numTraining %d but labelsTr holds %d cases; fix "
                 "numTraining or the files",
                 json, num_training, ds->n_cases);
        rc = ERR_FORMAT;
        goto fail;
    }

    /* Optional test set: images define the cases, labels are optional. */
    if ((rc = image_cases(ds, "imagesTs", &ds->test_names, &ds->n_test)))
        goto fail;
    if ((rc = check_modalities(ds, "imagesTs", ds->test_names, ds->n_test)))
        goto fail;
    sl_free(lab_dir);
    rc = ERR_NOMEM;
    if (!(lab_dir = str_fmt("%s/labelsTs", dir))) goto fail;
    if ((rc = list_dir(lab_dir, ds->file_ending, &lab_ts, &n_lab_ts)))
        goto fail;
    rc = ERR_NOMEM;
    if (ds->n_test &&
        !(ds->test_has_label = sl_calloc((size_t)ds->n_test, sizeof(int))))
        goto fail;
    for (int i = 0; i < ds->n_test; i++)
        ds->test_has_label[i] =
            find_name(lab_ts, n_lab_ts, ds->test_names[i]) >= 0;
    rc = 0;
fail:
    if (rc == ERR_NOMEM && !sl_error_reported())
        sl_error("out of memory opening dataset '%s'", dir);
    if (rc) dataset_free(ds);
    free_names(img, n_img);
    free_names(lab_ts, n_lab_ts);
    sl_free(json);
    sl_free(lab_dir);
    return rc;
}

int dataset_case_paths(const Dataset *ds, int test, int i, char **image,
                       char **label)
{
    const char *name = test ? ds->test_names[i] : ds->case_names[i];
    const char *isub = test ? "imagesTs" : "imagesTr";
    size_t len = 0;
    int rc = ERR_NOMEM;
    char *parts[DATA_MAX_MODALITIES] = {0};
    *image = *label = NULL;
    CHECK(i >= 0 && i < (test ? ds->n_test : ds->n_cases));
    for (int m = 0; m < ds->n_modalities; m++) {
        if (!(parts[m] = image_path(ds, isub, name, m))) goto fail;
        len += strlen(parts[m]) + 1;
    }
    if (!(*image = sl_alloc(len))) goto fail;
    (*image)[0] = '\0';
    for (int m = 0; m < ds->n_modalities; m++) {
        if (m) strcat(*image, ",");
        strcat(*image, parts[m]);
    }
    if (test ? ds->test_has_label[i] : !ds->unlabeled) {
        *label =
            str_fmt("%s/%s/%s%s", ds->dir, test ? "labelsTs" : "labelsTr",
                    name, ds->file_ending);
        if (!*label) goto fail;
    }
    rc = 0;
fail:
    if (rc) {
        sl_error("out of memory");
        sl_free(*image);
        *image = NULL;
    }
    for (int m = 0; m < DATA_MAX_MODALITIES; m++)
        sl_free(parts[m]);
    return rc;
}

/* ---- loading ---- */

void dataset_layout_from_meta(DataLayout *lay, const ModelMeta *m)
{
    lay->dims = m->dims;
    lay->axis = m->axis;
    lay->order = m->order;
    lay->normalize = m->normalize;
}

void data_case_free(DataCase *c)
{
    if (!c) return;
    sl_free(c->name);
    sl_free(c->image);
    sl_free(c->label);
    sl_free(c->fg_loc);
    sl_free(c->fg_start);
    sl_free(c->air);
    memset(c, 0, sizeof *c);
}

/* The label must lie on the image's grid in space.  Voxel-to-world
 * matrices (nio_geom_affine: sform if set, else qform) must agree within
 * 1e-4 * (1 + |a| + |b|) per entry: far below any voxel size, far above
 * float32 rounding between writers.  gi is the first image file's
 * geometry; the message names that file, the first flen bytes of the
 * image spec. */
static int check_affine(const NiftiGeom *gi, const char *image, int flen,
                        const NiftiGeom *gl, const char *label,
                        const char *name)
{
    double ma[3][4], mb[3][4];
    nio_geom_affine(gi, ma);
    nio_geom_affine(gl, mb);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) {
            double x = ma[r][c], y = mb[r][c];
            if (!(fabs(x - y) <= 1e-4 * (1.0 + fabs(x) + fabs(y)))) {
                sl_error("case '%s': image '%.*s' and label '%s' have "
                         "different voxel-to-world matrices (row %d col %d: "
                         "%g vs %g); resample the label onto the image "
                         "grid",
                         name, flen, image, label, r, c, x, y);
                return ERR_FORMAT;
            }
        }
    return 0;
}

/* Every label voxel is a declared class: an integer in 0..n_classes-1.
 * ERR_FORMAT naming the case, the value and where it is. */
static int check_labels(const Volume *lab, int n_classes, const char *name,
                        const char *path)
{
    int64_t n = volume_voxels(lab);
    for (int64_t i = 0; i < n; i++) {
        float v = lab->data[i];
        if (v >= 0.0f && v < (float)n_classes && v == floorf(v)) continue;
        int64_t x = i % lab->dim[0], y = i / lab->dim[0] % lab->dim[1],
                z = i / lab->dim[0] / lab->dim[1];
        sl_error("case '%s': label value %g at voxel (%lld,%lld,%lld) of "
                 "'%s' is not declared in dataset.json (labels are "
                 "0..%d); fix the label map or dataset.json",
                 name, (double)v, (long long)x, (long long)y, (long long)z,
                 path, n_classes - 1);
        return ERR_FORMAT;
    }
    return 0;
}

/* c->box_lo/box_hi from the labels (tensor order). */
static void label_box(DataCase *c)
{
    int64_t lo[3], hi[3];
    for (int t = 0; t < 3; t++) {
        lo[t] = c->S[t];
        hi[t] = 0;
    }
    for (int64_t a = 0; a < c->S[0]; a++)
        for (int64_t b = 0; b < c->S[1]; b++) {
            const uint8_t *l = c->label + (a * c->S[1] + b) * c->S[2];
            for (int64_t d = 0; d < c->S[2]; d++) {
                if (!l[d]) continue;
                int64_t v[3] = {a, b, d};
                for (int t = 0; t < 3; t++) {
                    if (v[t] < lo[t]) lo[t] = v[t];
                    if (v[t] + 1 > hi[t]) hi[t] = v[t] + 1;
                }
            }
        }
    int none = hi[0] == 0;
    for (int t = 0; t < 3; t++) {
        c->box_lo[t] = none ? 0 : lo[t];
        c->box_hi[t] = none ? c->S[t] : hi[t];
    }
}

/* Foreground locations of c (labels already in tensor order).  Class k
 * with count voxels keeps keep = min(count, DATA_MAX_FG_LOCS): its j-th
 * voxel (raster order) is kept when floor(j*keep/count) steps up, an even
 * stride over the structure.  The labelled box too (label_box), so both
 * follow a relabelling. */
static int collect_fg(DataCase *c)
{
    int nc = c->n_classes;
    int64_t n = c->S[0] * c->S[1] * c->S[2];
    int64_t *count = sl_calloc((size_t)nc, sizeof *count);
    int64_t *seen = sl_calloc((size_t)nc, sizeof *seen);
    int rc = ERR_NOMEM;
    if (!count || !seen) goto fail;
    if (!(c->fg_start = sl_calloc((size_t)nc + 1, sizeof *c->fg_start)))
        goto fail;
    for (int64_t i = 0; i < n; i++)
        count[c->label[i]]++;
    count[0] = 0;
    for (int k = 0; k < nc; k++) {
        int64_t keep =
            count[k] < DATA_MAX_FG_LOCS ? count[k] : DATA_MAX_FG_LOCS;
        c->fg_start[k + 1] = c->fg_start[k] + keep;
    }
    c->fg_loc = sl_alloc(sizeof *c->fg_loc * (size_t)(c->fg_start[nc] + 1));
    if (!c->fg_loc) goto fail;
    for (int64_t i = 0; i < n; i++) {
        int k = c->label[i];
        if (k == 0) continue;
        int64_t keep = c->fg_start[k + 1] - c->fg_start[k];
        int64_t j = seen[k]++;
        int64_t s0 = j * keep / count[k], s1 = (j + 1) * keep / count[k];
        if (s1 > s0) c->fg_loc[c->fg_start[k] + s0] = i;
    }
    label_box(c);
    rc = 0;
fail:
    if (rc)
        sl_error("out of memory collecting foreground of case '%s'", c->name);
    sl_free(count);
    sl_free(seen);
    return rc;
}

/* The label map was rewritten in place (c->label): foreground
 * locations again. */
int data_case_relabel(DataCase *c)
{
    sl_free(c->fg_loc);
    sl_free(c->fg_start);
    c->fg_loc = NULL;
    c->fg_start = NULL;
    return collect_fg(c);
}

/* Read, check, normalise and reorder one case.  label may be NULL (an
 * unlabelled test case: all background). */
static int load_case(const Dataset *ds, const char *name, const char *image,
                     const char *label, DataCase *out)
{
    Volume img = {0}, lab = {0};
    NiftiGeom *gimg = NULL, *glab = NULL;
    NormAffine na[DATA_MAX_MODALITIES];
    float *ltmp = NULL;
    int rc;
    memset(out, 0, sizeof *out);
    out->n_classes = ds->n_classes;
    /* nio_read's message names both modality files (and so the case);
     * for a dataset a grid mismatch is a broken dataset: ERR_FORMAT. */
    if ((rc = nio_read(image, &img, &gimg))) {
        if (rc == ERR_SHAPE) rc = ERR_FORMAT;
        goto fail;
    }
    rc = ERR_FORMAT;
    if (img.n_mod != ds->n_modalities) {
        sl_error("case '%s': its image files hold %d volumes but "
                 "dataset.json declares %d channels; give one 3D file per "
                 "modality",
                 name, img.n_mod, ds->n_modalities);
        goto fail;
    }
    if (label) {
        if ((rc = nio_read(label, &lab, &glab))) goto fail;
        rc = ERR_FORMAT;
        if (lab.n_mod != 1) {
            sl_error("case '%s': label '%s' holds %d volumes; give one 3D "
                     "label map",
                     name, label, lab.n_mod);
            goto fail;
        }
        for (int t = 0; t < 3; t++)
            if (lab.dim[t] != img.dim[t]) {
                sl_error("case '%s': image grid %lldx%lldx%lld and label "
                         "grid %lldx%lldx%lld ('%s') differ; resample the "
                         "label onto the image grid",
                         name, (long long)img.dim[0], (long long)img.dim[1],
                         (long long)img.dim[2], (long long)lab.dim[0],
                         (long long)lab.dim[1], (long long)lab.dim[2], label);
                goto fail;
            }
        /* nio_read kept the first modality file's geometry (the spec
         * joins them with commas and the dataset folder has none). */
        int flen = (int)strcspn(image, ",");
        if ((rc = check_affine(gimg, image, flen, glab, label, name)))
            goto fail;
        if ((rc = check_labels(&lab, ds->n_classes, name, label))) goto fail;
    }
    Affine aff;
    nio_geom_affine(gimg, aff.m);
    orient_axcodes(&aff, out->orientation);
    for (int t = 0; t < 3; t++)
        out->spacing[t] =
            sqrt(aff.m[0][t] * aff.m[0][t] + aff.m[1][t] * aff.m[1][t] +
                 aff.m[2][t] * aff.m[2][t]);
    for (int m = 0; m < img.n_mod; m++)
        if ((rc = volume_norm_affine(&img, m, &ds->normalize[m], &na[m])))
            goto fail;
    rc = ERR_NOMEM;
    for (int t = 0; t < 3; t++)
        out->S[t] = img.dim[ds->ax[t]];
    int64_t nv = volume_voxels(&img), off[3] = {0, 0, 0};
    if (!(out->name = sl_strdup(name)) ||
        !(out->image = sl_alloc(sizeof(float) * (size_t)(nv * img.n_mod))) ||
        !(out->label = sl_calloc((size_t)nv, 1))) {
        sl_error("out of memory loading case '%s'", name);
        goto fail;
    }
    volume_gather(out->image, &img, na, ds->ax, off, out->S, out->S);
    if (!(out->air = sl_alloc(sizeof(float) * (size_t)img.n_mod))) {
        sl_error("out of memory loading case '%s'", name);
        goto fail;
    }
    /* The normalisations are non-decreasing maps, so the darkest voxel
     * after them is the darkest before: air in MRI (0), air in CT. */
    for (int m = 0; m < img.n_mod; m++) {
        const float *x = out->image + (size_t)m * (size_t)nv;
        float lo = x[0];
        for (int64_t i = 1; i < nv; i++)
            lo = x[i] < lo ? x[i] : lo;
        out->air[m] = lo;
    }
    if (label) {
        if (!(ltmp = sl_alloc(sizeof(float) * (size_t)nv))) {
            sl_error("out of memory loading case '%s'", name);
            goto fail;
        }
        volume_gather(ltmp, &lab, NULL, ds->ax, off, out->S, out->S);
        for (int64_t i = 0; i < nv; i++)
            out->label[i] = (uint8_t)ltmp[i];
    }
    if ((rc = collect_fg(out))) goto fail;
    rc = 0;
fail:
    if (rc) data_case_free(out);
    volume_free(&img);
    volume_free(&lab);
    nio_geom_free(gimg);
    nio_geom_free(glab);
    sl_free(ltmp);
    return rc;
}

static int set_layout(Dataset *ds, const DataLayout *lay)
{
    int rc = volume_axes(lay->order, lay->dims, lay->axis, ds->ax);
    if (rc) return rc;
    ds->normalize = sl_calloc((size_t)ds->n_modalities, sizeof(Normalize));
    if (!ds->normalize) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    for (int m = 0; m < ds->n_modalities; m++) {
        /* segment's default when the model has no normalisation */
        Normalize z = {NORMALIZE_ZSCORE, 0.0f, 0.0f};
        ds->normalize[m] = lay->normalize ? lay->normalize[m] : z;
        if (ds->normalize[m].kind == NORMALIZE_CT &&
            !(ds->normalize[m].hi > ds->normalize[m].lo)) {
            sl_error("CT normalisation window [%g, %g] of modality %d (%s) "
                     "is empty; give ct:LOW,HIGH with LOW < HIGH",
                     (double)ds->normalize[m].lo, (double)ds->normalize[m].hi,
                     m, ds->modality_names[m]);
            return ERR_ARG;
        }
    }
    ds->layout = *lay;
    ds->layout.normalize = ds->normalize;
    return 0;
}

/* The axis code and spacing all training cases share; spacings agree
 * within 1e-3 relative (float32 headers of one protocol). */
static void training_grid(Dataset *ds)
{
    int same_o = ds->n_cases > 0, same_s = ds->n_cases > 0;
    const DataCase *c0 = &ds->cases[0];
    for (int i = 1; i < ds->n_cases; i++) {
        const DataCase *c = &ds->cases[i];
        same_o &= !strcmp(c->orientation, c0->orientation);
        for (int t = 0; t < 3; t++)
            same_s &=
                fabs(c->spacing[t] - c0->spacing[t]) <= 1e-3 * c0->spacing[t];
    }
    memset(ds->orientation, 0, sizeof ds->orientation);
    memset(ds->spacing, 0, sizeof ds->spacing);
    if (same_o) memcpy(ds->orientation, c0->orientation, 4);
    if (same_s) memcpy(ds->spacing, c0->spacing, sizeof ds->spacing);
}

int dataset_load(Dataset *ds, const DataLayout *lay)
{
    char *image = NULL, *label = NULL;
    int rc;
    CHECK(!ds->cases && !ds->normalize);
    if ((rc = set_layout(ds, lay))) return rc;
    ds->cases = sl_calloc((size_t)ds->n_cases, sizeof *ds->cases);
    if (!ds->cases) {
        sl_error("out of memory");
        return ERR_NOMEM;
    }
    for (int i = 0; i < ds->n_cases; i++) {
        if ((rc = dataset_case_paths(ds, 0, i, &image, &label))) goto fail;
        rc = load_case(ds, ds->case_names[i], image, label, &ds->cases[i]);
        sl_free(image);
        sl_free(label);
        image = label = NULL;
        if (rc) goto fail;
    }
    training_grid(ds);
    return 0;
fail:
    for (int i = 0; i < ds->n_cases; i++)
        data_case_free(&ds->cases[i]);
    sl_free(ds->cases);
    ds->cases = NULL;
    return rc;
}

int dataset_load_test_case(const Dataset *ds, int i, DataCase *out)
{
    char *image = NULL, *label = NULL;
    CHECK(ds->normalize && i >= 0 && i < ds->n_test);
    int rc = dataset_case_paths(ds, 1, i, &image, &label);
    if (!rc) rc = load_case(ds, ds->test_names[i], image, label, out);
    sl_free(image);
    sl_free(label);
    return rc;
}

void dataset_max_size(const Dataset *ds, int64_t S[3])
{
    S[0] = S[1] = S[2] = 0;
    for (int i = 0; ds->cases && i < ds->n_cases; i++)
        for (int t = 0; t < 3; t++)
            if (ds->cases[i].S[t] > S[t]) S[t] = ds->cases[i].S[t];
}

void dataset_free(Dataset *ds)
{
    if (!ds) return;
    if (ds->cases)
        for (int i = 0; i < ds->n_cases; i++)
            data_case_free(&ds->cases[i]);
    sl_free(ds->cases);
    sl_free(ds->dir);
    sl_free(ds->file_ending);
    free_names(ds->modality_names, ds->n_modalities);
    free_names(ds->class_names, ds->n_classes);
    free_names(ds->case_names, ds->n_cases);
    free_names(ds->test_names, ds->n_test);
    sl_free(ds->test_has_label);
    sl_free(ds->normalize);
    memset(ds, 0, sizeof *ds);
}

int dataset_read_image(const Dataset *ds, int i, Volume *v)
{
    const DataCase *c = &ds->cases[i];
    char *image = NULL, *label = NULL;
    memset(v, 0, sizeof *v);
    int rc = dataset_case_paths(ds, 0, i, &image, &label);
    if (!rc && !(rc = nio_read(image, v, NULL)) &&
        volume_voxels(v) != c->S[0] * c->S[1] * c->S[2]) {
        sl_error("case '%s' changed size since it was loaded (%s); "
                 "restart the run",
                 c->name, image);
        volume_free(v);
        rc = ERR_FORMAT;
    }
    sl_free(image);
    sl_free(label);
    return rc;
}
