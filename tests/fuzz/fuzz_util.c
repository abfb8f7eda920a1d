/* Temporary files for the fuzz targets (see fuzz_targets.h). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "runtime/graph.h"
#include "tests/fuzz/fuzz_targets.h"

const FuzzTarget fuzz_targets[FUZZ_N_TARGETS] = {
    {"sslim", fuzz_sslim},
    {"nifti", fuzz_nifti},
    {"onnx", fuzz_onnx},
    {"dataset", fuzz_dataset},
};

int fuzz_mkdtemp(char *dir, size_t len)
{
    const char *t = getenv("TMPDIR");
    if (!t || !*t) t = "/tmp";
    int n = snprintf(dir, len, "%s/sl-fuzz-XXXXXX", t);
    if (n < 0 || (size_t)n >= len) return -1;
    return mkdtemp(dir) ? 0 : -1;
}

int fuzz_write(const char *dir, const char *name, const void *data,
               size_t size, int gz)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof path) return -1;
    if (gz) {
        /* level 1: the point is a valid gzip stream, not its size */
        gzFile f = gzopen(path, "wb1");
        if (!f) return -1;
        int ok = size == 0 || gzwrite(f, data, (unsigned)size) == (int)size;
        return gzclose(f) == Z_OK && ok ? 0 : -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = size == 0 || fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok ? 0 : -1;
}

void fuzz_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char path[4096];
            int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (n < 0 || (size_t)n >= sizeof path) continue;
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                fuzz_rmtree(path);
            else
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a,
                size_t *na, const uint8_t **b, size_t *nb)
{
    const size_t k = sizeof FUZZ_SEP - 1;
    *a = data;
    *na = size;
    *b = NULL;
    *nb = 0;
    for (size_t i = 0; size >= k && i <= size - k; i++)
        if (data[i] == FUZZ_SEP[0] && !memcmp(data + i, FUZZ_SEP, k)) {
            *na = i;
            *b = data + i + k;
            *nb = size - i - k;
            return;
        }
}

void fuzz_use_graph(Graph *g)
{
    if (g->input < 0 || g->input >= g->n_values) return;
    Shape in = g->values[g->input].shape;
    if (in.ndim < 3 || in.ndim > SL_MAX_DIMS) return;
    for (int i = 0; i < in.ndim; i++)
        if (in.d[i] <= 0) in.d[i] = 16;
    if (graph_infer_shapes(g, &in)) return;
    (void)graph_flops(g);
    (void)graph_params(g);
}
