#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nifti2_io.h>

#include "runtime/common.h"

uint64_t trng_next(TestRng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float trng_uniform(TestRng *r, float lo, float hi)
{
    double u = (double)(trng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return lo + (float)(u * (double)(hi - lo));
}

void trng_fill(TestRng *r, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = trng_uniform(r, lo, hi);
}

int allclose(const float *a, const float *b, size_t n, double atol,
             double rtol, const char *what)
{
    double max_abs = 0, max_rel = 0;
    size_t first_bad = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double tol = atol + rtol * fabs((double)b[i]);
        if (d > max_abs) max_abs = d;
        if (b[i] != 0 && d / fabs((double)b[i]) > max_rel)
            max_rel = d / fabs((double)b[i]);
        if ((!(d <= tol)) && first_bad == (size_t)-1) first_bad = i;
    }
    if (first_bad != (size_t)-1) {
        fprintf(stderr,
                "allclose(%s): n=%zu max_abs=%.3g max_rel=%.3g first bad "
                "index %zu: %.9g vs %.9g (atol %.3g rtol %.3g)\n",
                what, n, max_abs, max_rel, first_bad, (double)a[first_bad],
                (double)b[first_bad], atol, rtol);
        return 0;
    }
    return 1;
}

const char *fixture_path(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "tests/fixtures/%s", name);
    return buf;
}

const char *test_build_dir(void)
{
    const char *b = getenv("SL_BUILD");
    return b && *b ? b : "build";
}

const char *bin_path(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/bin/%s", test_build_dir(), name);
    return buf;
}

const char *test_tmpdir(void)
{
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/sauron-test-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return dir;
}

const char *test_tmp_path(const char *name)
{
    static char buf[16][512];
    static int k;
    k = (k + 1) % 16;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

int run_cmd(const char *cmd, char *err_line, size_t len)
{
    char full[4096];
    char errf[300];
    snprintf(errf, sizeof errf, "%s/stderr.txt", test_tmpdir());
    snprintf(full, sizeof full, "%s 2>%s", cmd, errf);
    int st = system(full);
    if (err_line && len) {
        err_line[0] = '\0';
        FILE *f = fopen(errf, "r");
        if (f) {
            if (!fgets(err_line, (int)len, f)) err_line[0] = '\0';
            fclose(f);
        }
    }
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

char *slurp_text(const char *path)
{
    uint8_t *d = NULL;
    size_t n = 0;
    if (sl_read_file(path, &d, &n)) return NULL;
    char *s = malloc(n + 1);
    assert_non_null(s);
    memcpy(s, d, n);
    s[n] = 0;
    sl_free(d);
    return s;
}

int files_equal(const char *a, const char *b)
{
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int eq = !sl_read_file(a, &x, &nx) && !sl_read_file(b, &y, &ny) &&
             nx == ny && !memcmp(x, y, nx);
    sl_free(x);
    sl_free(y);
    return eq;
}

int file_has_line_starting(const char *path, const char *prefix)
{
    char line[8192];
    int found = 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    while (!found && fgets(line, sizeof line, f))
        found = !strncmp(line, prefix, strlen(prefix));
    fclose(f);
    return found;
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

float *load_tensor(const char *path, int64_t *dims, int *ndim)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "load_tensor: cannot open %s\n", path);
        return NULL;
    }
    unsigned char hdr[16];
    float *data = NULL;
    if (fread(hdr, 1, 16, f) != 16 || memcmp(hdr, "SLTENSOR", 8) != 0)
        goto bad;
    uint32_t ver = (uint32_t)hdr[8] | (uint32_t)hdr[9] << 8 |
                   (uint32_t)hdr[10] << 16 | (uint32_t)hdr[11] << 24;
    uint32_t nd = (uint32_t)hdr[12] | (uint32_t)hdr[13] << 8 |
                  (uint32_t)hdr[14] << 16 | (uint32_t)hdr[15] << 24;
    if (ver != 1 || nd > 8) goto bad;
    size_t numel = 1;
    for (uint32_t i = 0; i < nd; i++) {
        unsigned char b[8];
        if (fread(b, 1, 8, f) != 8) goto bad;
        int64_t d = 0;
        for (int k = 7; k >= 0; k--)
            d = (d << 8) | b[k];
        if (d < 0 || d > (1 << 28)) goto bad;
        dims[i] = d;
        numel *= (size_t)d;
    }
    *ndim = (int)nd;
    data = malloc(numel * sizeof(float) + 1);
    if (!data) goto bad;
    for (size_t i = 0; i < numel; i++) {
        unsigned char b[4];
        if (fread(b, 1, 4, f) != 4) goto bad;
        uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 |
                     (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        memcpy(&data[i], &u, 4);
    }
    fclose(f);
    return data;
bad:
    fprintf(stderr, "load_tensor: %s is not a valid SLTENSOR file\n", path);
    free(data);
    fclose(f);
    return NULL;
}

static void put_le(unsigned char *b, uint64_t v, int n)
{
    for (int k = 0; k < n; k++)
        b[k] = (unsigned char)(v >> (8 * k));
}

int save_tensor(const char *path, const float *x, const int64_t *dims,
                int ndim)
{
    unsigned char b[16];
    size_t numel = 1;
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "save_tensor: cannot create %s\n", path);
        return -1;
    }
    memcpy(b, "SLTENSOR", 8);
    put_le(b + 8, 1, 4);
    put_le(b + 12, (uint64_t)ndim, 4);
    int ok = fwrite(b, 1, 16, f) == 16;
    for (int k = 0; k < ndim; k++) {
        put_le(b, (uint64_t)dims[k], 8);
        ok = ok && fwrite(b, 1, 8, f) == 8;
        numel *= (size_t)dims[k];
    }
    for (size_t i = 0; i < numel && ok; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        put_le(b, u, 4);
        ok = fwrite(b, 1, 4, f) == 4;
    }
    if (fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "save_tensor: cannot write %s\n", path);
    return ok ? 0 : -1;
}

/* Folder holding node_modules/onnxruntime-node, or NULL (also without
 * node). */
const char *ort_dir(void)
{
    static char dir[512];
    const char *cands[2] = {test_build_dir(), "build"};
    if (system("command -v node >/dev/null 2>&1") != 0) return NULL;
    for (int k = 0; k < 2; k++) {
        char probe[600];
        snprintf(dir, sizeof dir, "%s/node", cands[k]);
        snprintf(probe, sizeof probe,
                 "%s/node_modules/onnxruntime-node/package.json", dir);
        if (access(probe, R_OK) == 0) return dir;
    }
    return NULL;
}

int ort_available(void)
{
    if (ort_dir()) return 1;
    const char *no = getenv("SL_NO_ORT");
    if (no && !strcmp(no, "1")) {
        /* not skip(): the rest of the calling test still counts */
        fprintf(stderr, "ONNX Runtime check skipped: SL_NO_ORT=1 is set\n");
        return 0;
    }
    fprintf(stderr,
            "ONNX Runtime (node + onnxruntime-node in $SL_BUILD/node or "
            "build/node) is not available: run 'sh tools/deps.sh test', "
            "or set SL_NO_ORT=1 to skip this check explicitly\n");
    fail();
    return 0;
}

int ort_run_model(const char *model, const char *input,
                  const char *const *outputs, int n_out, char *err,
                  size_t len)
{
    char cmd[3500];
    const char *dir = ort_dir();
    if (!dir) {
        snprintf(err, len, "onnxruntime-node not found");
        return -1;
    }
    int n = snprintf(cmd, sizeof cmd,
                     "ORT_NODE_PATH='%s' node tools/ort_run.js '%s' '%s'",
                     dir, model, input);
    for (int k = 0; k < n_out && n > 0 && (size_t)n < sizeof cmd; k++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " '%s'", outputs[k]);
    if (n < 0 || (size_t)n >= sizeof cmd) {
        snprintf(err, len, "ort_run_model: command too long");
        return -1;
    }
    return run_cmd(cmd, err, len);
}

int ort_output_close(const char *path, const float *ours, const int64_t *dims,
                     int ndim, double rel_tol, const char *what)
{
    int64_t got[8];
    int nd = 0;
    float *y = load_tensor(path, got, &nd);
    if (!y) return 0;
    int same = nd == ndim;
    for (int k = 0; same && k < nd; k++)
        same = got[k] == dims[k];
    if (!same) {
        fprintf(stderr, "%s: ONNX Runtime output has other dims than ours\n",
                what);
        free(y);
        return 0;
    }
    size_t n = 1;
    for (int k = 0; k < nd; k++)
        n *= (size_t)dims[k];
    double scale = 0, maxd = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs((double)ours[i]));
        maxd = fmax(maxd, fabs((double)ours[i] - (double)y[i]));
    }
    fprintf(stderr, "%s: max |ours - ORT| = %.3g (scale %.3g)\n", what, maxd,
            scale);
    int ok = allclose(y, ours, n, rel_tol * scale, 0, what);
    free(y);
    return ok;
}

/* Every field of two ModelMeta equal: names, normalisation, layout and
 * provenance (source name and sha256, notes). */
void assert_meta_equal(const ModelMeta *a, const ModelMeta *b)
{
    assert_int_equal(a->n_classes, b->n_classes);
    for (int k = 0; k < a->n_classes; k++)
        assert_string_equal(a->class_names[k], b->class_names[k]);
    assert_int_equal(a->n_modalities, b->n_modalities);
    for (int k = 0; k < a->n_modalities; k++) {
        assert_string_equal(a->modality_names[k], b->modality_names[k]);
        assert_int_equal(a->normalize[k].kind, b->normalize[k].kind);
        assert_true(a->normalize[k].lo == b->normalize[k].lo);
        assert_true(a->normalize[k].hi == b->normalize[k].hi);
    }
    assert_int_equal(a->dims, b->dims);
    assert_int_equal(a->axis, b->axis);
    for (int k = 0; k < 3; k++)
        assert_int_equal(a->patch[k], b->patch[k]);
    assert_int_equal(a->order, b->order);
    assert_string_equal(a->orientation, b->orientation);
    for (int k = 0; k < 3; k++)
        assert_true(a->spacing[k] == b->spacing[k]);
    assert_memory_equal(a->source_sha256, b->source_sha256, 32);
    assert_non_null(a->source_name);
    assert_non_null(b->source_name);
    assert_string_equal(a->source_name, b->source_name);
    if (a->notes)
        assert_string_equal(a->notes, b->notes);
    else
        assert_null(b->notes);
}

void assert_same_nifti_geometry(const char *in, const char *out,
                                int check_units)
{
    nifti_image *x = nifti_image_read(in, 0), *y = nifti_image_read(out, 0);
    assert_non_null(x);
    assert_non_null(y);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(x->dim[i], y->dim[i]);
        assert_true(x->pixdim[i] == y->pixdim[i]);
    }
    assert_int_equal(x->qform_code, y->qform_code);
    assert_int_equal(x->sform_code, y->sform_code);
    if (check_units) assert_int_equal(x->xyz_units, y->xyz_units);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            assert_true(x->qto_xyz.m[r][c] == y->qto_xyz.m[r][c]);
            assert_true(x->sto_xyz.m[r][c] == y->sto_xyz.m[r][c]);
        }
    nifti_image_free(x);
    nifti_image_free(y);
}
