/* Seeded validation split and its JSON record (see split.h). */
#include "split.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/data/json.h"
#include "compressor/data/rng.h"
#include "runtime/common.h"

/* Stream index of the split in the seed's RNG space: keeps it unrelated
 * to the sampler's streams (which use batch indices). */
#define SPLIT_STREAM 0x53504c4954ull /* "SPLIT" */

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int split_make(DataSplit *sp, int n_cases, double val_frac, uint64_t seed)
{
    int *perm = NULL;
    memset(sp, 0, sizeof *sp);
    if (!(val_frac >= 0.0 && val_frac < 1.0) || n_cases < 1) {
        sl_error("validation fraction %g with %d cases: give a fraction in "
                 "[0, 1) and at least one case",
                 val_frac, n_cases);
        return ERR_ARG;
    }
    int n_val = (int)floor((double)n_cases * val_frac + 0.5);
    if (n_cases >= 2 && val_frac > 0.0) {
        if (n_val < 1) n_val = 1;
        if (n_val > n_cases - 1) n_val = n_cases - 1;
    } else {
        n_val = 0;
    }
    perm = sl_alloc(sizeof *perm * (size_t)n_cases);
    sp->train = sl_alloc(sizeof(int) * (size_t)(n_cases - n_val + 1));
    sp->val = sl_alloc(sizeof(int) * (size_t)(n_val + 1));
    if (!perm || !sp->train || !sp->val) {
        sl_error("out of memory making the validation split");
        sl_free(perm);
        split_free(sp);
        return ERR_NOMEM;
    }
    Rng r;
    rng_seed(&r, seed, SPLIT_STREAM, 0);
    for (int i = 0; i < n_cases; i++)
        perm[i] = i;
    for (int i = n_cases - 1; i > 0; i--) {
        int j = (int)rng_below(&r, i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    memcpy(sp->val, perm, sizeof(int) * (size_t)n_val);
    memcpy(sp->train, perm + n_val, sizeof(int) * (size_t)(n_cases - n_val));
    qsort(sp->val, (size_t)n_val, sizeof(int), cmp_int);
    qsort(sp->train, (size_t)(n_cases - n_val), sizeof(int), cmp_int);
    sp->n_val = n_val;
    sp->n_train = n_cases - n_val;
    sp->seed = seed;
    sp->val_frac = val_frac;
    sl_free(perm);
    return 0;
}

/* Index of the case called `name` in ds, or -1. */
static int case_index(const Dataset *ds, const char *name)
{
    for (int c = 0; c < ds->n_cases; c++)
        if (strcmp(ds->case_names[c], name) == 0) return c;
    return -1;
}

int split_from_names(DataSplit *sp, const Dataset *ds, char *const *names,
                     int n_names, uint64_t seed)
{
    char *is_val = NULL;
    int rc = ERR_NOMEM;
    memset(sp, 0, sizeof *sp);
    if (ds->n_cases < 1) {
        sl_error("dataset '%s' has no training case to split", ds->dir);
        return ERR_ARG;
    }
    is_val = sl_calloc((size_t)ds->n_cases + 1, 1);
    sp->train = sl_alloc(sizeof(int) * (size_t)(ds->n_cases + 1));
    sp->val = sl_alloc(sizeof(int) * (size_t)(ds->n_cases + 1));
    if (!is_val || !sp->train || !sp->val) {
        sl_error("out of memory making the validation split");
        goto fail;
    }
    rc = ERR_ARG;
    for (int i = 0; i < n_names; i++) {
        int k = case_index(ds, names[i]);
        if (k < 0) {
            sl_error("--val-cases: '%s' is not a training case of dataset "
                     "'%s'; give case names as its files have them, such "
                     "as '%s'",
                     names[i], ds->dir, ds->case_names[0]);
            goto fail;
        }
        if (is_val[k]) {
            sl_error("--val-cases: '%s' is listed twice; give each "
                     "validation case once",
                     names[i]);
            goto fail;
        }
        is_val[k] = 1;
    }
    for (int c = 0; c < ds->n_cases; c++) {
        if (is_val[c])
            sp->val[sp->n_val++] = c;
        else
            sp->train[sp->n_train++] = c;
    }
    if (sp->n_train < 1) {
        sl_error("--val-cases names all %d cases of dataset '%s'; leave at "
                 "least one to train on",
                 ds->n_cases, ds->dir);
        goto fail;
    }
    sp->seed = seed;
    sp->val_frac = (double)sp->n_val / ds->n_cases;
    rc = 0;
fail:
    if (rc) split_free(sp);
    sl_free(is_val);
    return rc;
}

void split_free(DataSplit *sp)
{
    if (!sp) return;
    sl_free(sp->train);
    sl_free(sp->val);
    memset(sp, 0, sizeof *sp);
}

static void write_list(FILE *f, const Dataset *ds, const int *idx, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        fputs(i ? ", " : "", f);
        json_write_string(f, ds->case_names[idx[i]]);
    }
    fputc(']', f);
}

int split_write(const DataSplit *sp, const Dataset *ds, const char *dir)
{
    char *text = NULL, *path = NULL;
    size_t len = 0;
    int rc = ERR_NOMEM;
    FILE *f = open_memstream(&text, &len);
    if (!f) goto fail;
    fprintf(f, "{\"seed\": %llu, \"val_fraction\": %.17g, \"train\": ",
            (unsigned long long)sp->seed, sp->val_frac);
    write_list(f, ds, sp->train, sp->n_train);
    fputs(", \"val\": ", f);
    write_list(f, ds, sp->val, sp->n_val);
    fputs("}\n", f);
    if (fclose(f)) {
        f = NULL;
        goto fail;
    }
    f = NULL;
    size_t plen = strlen(dir) + sizeof "/split.json";
    if (!(path = sl_alloc(plen))) goto fail;
    snprintf(path, plen, "%s/split.json", dir);
    rc = sl_write_file_atomic(path, text, len, 1);
fail:
    if (rc == ERR_NOMEM) sl_error("out of memory writing the split");
    if (f) fclose(f);
    free(text); /* open_memstream allocates with malloc */
    sl_free(path);
    return rc;
}

/* names (array of strings) -> case indices; marks used[] against repeats. */
static int read_list(const JsonValue *arr, const Dataset *ds, char *used,
                     int **out, int *n, const char *path)
{
    *out = NULL;
    *n = 0;
    if (!arr || arr->type != JSON_ARRAY) {
        sl_error("'%s' lacks the \"train\"/\"val\" lists; it was not "
                 "written by sauron-compress, remove it",
                 path);
        return ERR_FORMAT;
    }
    if (!(*out = sl_alloc(sizeof(int) * (size_t)(arr->n + 1)))) {
        sl_error("out of memory reading '%s'", path);
        return ERR_NOMEM;
    }
    for (int i = 0; i < arr->n; i++) {
        const JsonValue *v = arr->items[i];
        int k = v->type == JSON_STRING ? case_index(ds, v->str) : -1;
        if (k < 0 || used[k]) {
            sl_error("'%s': entry %d is %s; the split does not match "
                     "dataset '%s' (remove the split file to make a new "
                     "one)",
                     path, i,
                     k < 0 ? "not a case of the dataset" : "listed twice",
                     ds->dir);
            sl_free(*out);
            *out = NULL;
            return ERR_FORMAT;
        }
        used[k] = 1;
        (*out)[(*n)++] = k;
    }
    qsort(*out, (size_t)*n, sizeof(int), cmp_int);
    return 0;
}

int split_read(DataSplit *sp, const Dataset *ds, const char *path)
{
    JsonValue *root = NULL;
    char *used = NULL;
    memset(sp, 0, sizeof *sp);
    int rc = json_parse_file(path, &root);
    if (rc) goto fail;
    rc = ERR_NOMEM;
    if (!(used = sl_calloc((size_t)ds->n_cases, 1))) {
        sl_error("out of memory reading '%s'", path);
        goto fail;
    }
    const JsonValue *seed = json_get(root, "seed");
    const JsonValue *frac = json_get(root, "val_fraction");
    if ((rc = read_list(json_get(root, "train"), ds, used, &sp->train,
                        &sp->n_train, path)) ||
        (rc = read_list(json_get(root, "val"), ds, used, &sp->val, &sp->n_val,
                        path)))
        goto fail;
    if (sp->n_train < 1) {
        sl_error("'%s' lists no training case; remove it to make a new "
                 "split",
                 path);
        rc = ERR_FORMAT;
        goto fail;
    }
    /* Seeds above 2^53 lose bits as JSON numbers; informative only. */
    sp->seed = seed && seed->type == JSON_NUMBER && seed->number >= 0 &&
                       seed->number < 18446744073709551616.0
                   ? (uint64_t)seed->number
                   : 0;
    sp->val_frac = frac && frac->type == JSON_NUMBER ? frac->number : 0.0;
    rc = 0;
fail:
    if (rc) split_free(sp);
    sl_free(used);
    json_free(root);
    return rc;
}
