/* Training data: JSON parser, nnU-Net dataset loading and its checks,
 * normalisation, validation split, the phantom dataset maker.  Batches
 * and augmentation: test_sampler.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "compressor/data/dataset.h"
#include "compressor/data/json.h"
#include "compressor/data/split.h"
#include "runtime/common.h"
#include "runtime/nifti_io.h"
#include "runtime/volume.h"
#include "testutil.h"

/* ---------------------------------------------------------------- JSON */

static JsonValue *parse_ok(const char *s)
{
    JsonValue *v = NULL;
    sl_error_reset();
    int rc = json_parse(s, strlen(s), "test", &v);
    if (rc) fprintf(stderr, "unexpected failure on: %s\n", s);
    assert_int_equal(rc, 0);
    assert_non_null(v);
    return v;
}

static void test_json_valid(void **state)
{
    (void)state;
    const char *doc =
        " {\"a\": 1, \"b\": [true, false, null, -0, 2.5E-2, 1e3, 123],\n"
        "  \"s\": \"q\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\",\n"
        "  \"nested\": {\"x\": {\"y\": [[], {}, [1, [2]]]}}, \"\": \"\"} ";
    JsonValue *v = parse_ok(doc);
    assert_int_equal(v->type, JSON_OBJECT);
    assert_int_equal(v->n, 5);
    assert_true(json_is_int(json_get(v, "a"), 1, 1));
    const JsonValue *b = json_get(v, "b");
    assert_int_equal(b->type, JSON_ARRAY);
    assert_int_equal(b->n, 7);
    assert_int_equal(b->items[0]->type, JSON_BOOL);
    assert_int_equal(b->items[0]->boolean, 1);
    assert_int_equal(b->items[1]->boolean, 0);
    assert_int_equal(b->items[2]->type, JSON_NULL);
    assert_true(b->items[3]->number == 0.0);
    assert_true(b->items[4]->number == 0.025);
    assert_true(b->items[5]->number == 1000.0);
    assert_true(json_is_int(b->items[6], 0, 1000));
    assert_false(json_is_int(b->items[4], -10, 10));
    /* q " \ / BS FF LF CR TAB e-acute (2 bytes) U+1F600 (4 bytes) */
    const char *want = "q\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80";
    assert_string_equal(json_get(v, "s")->str, want);
    const JsonValue *y = json_get(json_get(json_get(v, "nested"), "x"), "y");
    assert_int_equal(y->n, 3);
    assert_int_equal(y->items[2]->items[1]->items[0]->number, 2);
    assert_string_equal(json_get(v, "")->str, "");
    assert_null(json_get(v, "missing"));
    json_free(v);

    /* Scalars at the root and raw UTF-8 pass. */
    v = parse_ok("\"caf\xc3\xa9\"");
    assert_string_equal(v->str, "caf\xc3\xa9");
    json_free(v);
    v = parse_ok("-12.5e+1");
    assert_true(v->number == -125.0);
    json_free(v);
}

static void test_json_invalid(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "{\"a\":1,}",
        "01",
        "+1",
        "1.",
        ".5",
        "-",
        "1e",
        "NaN",
        "Infinity",
        "\"\\x\"",
        "\"abc",
        "{\"a\" 1}",
        "[1 2]",
        "tru",
        "nul",
        "\"a\x01\"",
        "{\"a\":1,\"a\":2}",
        "// c\n{}",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\xff\"",
        "\"\xc0\xaf\"",
        "\"\xed\xa0\x80\"",
        "1 2",
        "{1:2}",
        "[",
        "[[[",
        "{\"a\":}",
        "\"\\u12\"",
        "\"\\u0000\"",
        "1e999",
        "'a'",
        "[1,,2]",
    };
    sl_error_quiet(1);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        JsonValue *v = (JsonValue *)1;
        sl_error_reset();
        int rc = json_parse(bad[i], strlen(bad[i]), "bad.json", &v);
        if (rc != ERR_FORMAT) fprintf(stderr, "accepted: '%s'\n", bad[i]);
        assert_int_equal(rc, ERR_FORMAT);
        assert_null(v);
        assert_non_null(strstr(sl_error_last(), "bad.json"));
        assert_non_null(strstr(sl_error_last(), "line"));
    }
    /* Nesting beyond the limit is refused, not a stack overflow. */
    char deep[4 * JSON_MAX_DEPTH + 8];
    size_t n = 0;
    for (int i = 0; i < 2 * JSON_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i < 2 * JSON_MAX_DEPTH; i++)
        deep[n++] = ']';
    JsonValue *v = NULL;
    sl_error_reset();
    assert_int_equal(json_parse(deep, n, "deep", &v), ERR_FORMAT);
    assert_non_null(strstr(sl_error_last(), "nesting"));
    /* Error position: line 2, column 8 ('x'). */
    sl_error_reset();
    const char *pos = "{\"a\": 1,\n \"b\": x}";
    assert_int_equal(json_parse(pos, strlen(pos), "p", &v), ERR_FORMAT);
    assert_non_null(strstr(sl_error_last(), "line 2 column 7"));
    sl_error_quiet(0);
}

/* Every proper prefix of an object document is invalid; random byte
 * changes must never crash (ASan checks the reads stay in bounds: each
 * input is an exact-size heap copy without a terminating NUL). */
static void test_json_garbage(void **state)
{
    (void)state;
    const char *doc = "{\"channel_names\": {\"0\": \"T1\"}, \"labels\": "
                      "{\"background\": 0, \"a\\u00e9\": 1}, "
                      "\"numTraining\": 3, \"x\": [1.5e3, -2, true, null]}";
    size_t len = strlen(doc);
    sl_error_quiet(1);
    for (size_t cut = 0; cut < len; cut++) {
        char *buf = malloc(cut + 1);
        memcpy(buf, doc, cut);
        JsonValue *v = NULL;
        sl_error_reset();
        assert_int_equal(json_parse(buf, cut, "cut", &v), ERR_FORMAT);
        free(buf);
    }
    TestRng r = {42};
    int ok = 0;
    for (int it = 0; it < 2000; it++) {
        char *buf = malloc(len);
        memcpy(buf, doc, len);
        int flips = 1 + (int)(trng_next(&r) % 3);
        for (int f = 0; f < flips; f++)
            buf[trng_next(&r) % len] = (char)(trng_next(&r) & 0xff);
        JsonValue *v = NULL;
        sl_error_reset();
        int rc = json_parse(buf, len, "flip", &v);
        assert_true(rc == 0 || rc == ERR_FORMAT);
        ok += rc == 0;
        json_free(v);
        free(buf);
    }
    /* Some flips land inside strings and keep the document valid. */
    assert_true(ok > 0);
    sl_error_quiet(0);
}

/* The largest claims a JSON text can make, each refused with one line or
 * parsed in bounded time and memory: an object of 100 000 distinct keys
 * (a duplicate-key check per member made this n^2/2 = 5e9 string
 * compares, minutes), a duplicate found among them, a 7 MB string,
 * numbers too long or out of range, nesting past the limit (test above),
 * a file above JSON_MAX_FILE_BYTES refused before it is read. */
static void test_json_largest_claims(void **state)
{
    (void)state;
    const int n = 100000;
    size_t cap = (size_t)n * 24 + 16, len = 0;
    char *doc = malloc(cap);
    assert_non_null(doc);
    doc[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(doc + len, cap - len, "%s\"case_%06d\": %d",
                                i ? "," : "", i, i);
    doc[len++] = '}';
    JsonValue *v = NULL;
    double t0 = sl_now();
    assert_int_equal(json_parse(doc, len, "many.json", &v), 0);
    double dt = sl_now() - t0;
    fprintf(stderr, "100000-key object: %.3f s\n", dt);
    /* Linear work is ~20 ms here; 3 s leaves room for ASan and a loaded
     * machine while the quadratic check took minutes. */
    assert_true(dt < 3.0);
    assert_int_equal(v->n, n);
    assert_true(json_get(v, "case_099999")->number == 99999);
    assert_null(json_get(v, "case_100000"));
    json_free(v);
    /* The last key repeats an early one: found through the key table. */
    memcpy(doc + len - 1 - strlen("\"case_099999\": 99999"),
           "\"case_000003\"", 13);
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(json_parse(doc, len, "dup.json", &v), ERR_FORMAT);
    assert_non_null(strstr(sl_error_last(), "duplicate key"));
    assert_null(v);
    /* The key table under a failing allocator: every step either parses
     * or fails with ERR_NOMEM, freeing what it took (ASan's leak check). */
    const char *keys20 =
        "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,"
        "\"i\":9,\"j\":10,\"k\":11,\"l\":12,\"m\":13,\"n\":14,\"o\":15,"
        "\"p\":16,\"q\":17,\"r\":18,\"s\":19,\"t\":20}";
    int rc = ERR_NOMEM;
    for (long k = 0; rc == ERR_NOMEM && k < 10000; k++) {
        sl_error_reset();
        sl_alloc_fail_after(k);
        rc = json_parse(keys20, strlen(keys20), "nomem", &v);
        sl_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == ERR_NOMEM);
        json_free(v);
        v = NULL;
    }
    assert_int_equal(rc, 0);
    free(doc);

    /* A 7 MB string parses (bounded by the text itself). */
    size_t sn = (size_t)7 << 20;
    char *big = malloc(sn + 16);
    assert_non_null(big);
    big[0] = '"';
    memset(big + 1, 'x', sn);
    big[sn + 1] = '"';
    assert_int_equal(json_parse(big, sn + 2, "str.json", &v), 0);
    assert_int_equal(strlen(v->str), sn);
    json_free(v);
    v = NULL;
    /* Numbers: 64 digits, and 1e999999. */
    char num[80];
    memset(num, '9', 64);
    sl_error_reset();
    assert_int_equal(json_parse(num, 64, "num.json", &v), ERR_FORMAT);
    assert_non_null(strstr(sl_error_last(), "number too long"));
    sl_error_reset();
    assert_int_equal(json_parse("1e999999", 8, "num.json", &v), ERR_FORMAT);
    assert_non_null(strstr(sl_error_last(), "out of range"));

    /* A file above the size limit: refused by its size, before reading. */
    char path[512];
    snprintf(path, sizeof path, "%s/huge.json", test_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fputc('"', f), '"');
    assert_int_equal(fseek(f, JSON_MAX_FILE_BYTES, SEEK_SET), 0);
    assert_int_equal(fputc('"', f), '"');
    fclose(f);
    sl_error_reset();
    assert_int_equal(json_parse_file(path, &v), ERR_FORMAT);
    assert_null(v);
    assert_non_null(strstr(sl_error_last(), "MiB"));
    assert_non_null(strstr(sl_error_last(), path));
    unlink(path);
    sl_error_quiet(0);
    free(big);
}

static void test_json_nomem(void **state)
{
    (void)state;
    const char *doc =
        "{\"a\": [1, 2, {\"b\": \"xyz\\u00e9\"}], \"c\": \"d\"}";
    sl_error_quiet(1);
    int rc = ERR_NOMEM;
    long n;
    for (n = 0; rc == ERR_NOMEM && n < 1000; n++) {
        JsonValue *v = NULL;
        sl_error_reset();
        sl_alloc_fail_after(n);
        rc = json_parse(doc, strlen(doc), "nomem", &v);
        sl_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == ERR_NOMEM);
        json_free(v);
    }
    assert_int_equal(rc, 0);
    assert_true(n > 5);
    sl_error_quiet(0);
}

/* ------------------------------------------------- tiny NIfTI datasets */

/* A NIfTI-1 single file (.nii, or gzip'd .nii.gz) of nx*ny*nz voxels,
 * datatype float32 (16) or uint8 (2), unit spacing, sform with origin
 * (ox, 0, 0). */
static void write_nii(const char *path, const int64_t dim[3], int dt,
                      const void *data, float ox)
{
    uint8_t h[352] = {0};
    int32_t i32 = 348;
    memcpy(h, &i32, 4);
    int16_t d[8] = {
        3, (int16_t)dim[0], (int16_t)dim[1], (int16_t)dim[2], 1, 1, 1, 1};
    memcpy(h + 40, d, sizeof d);
    int16_t dtype = (int16_t)dt, bitpix = dt == 16 ? 32 : 8;
    memcpy(h + 70, &dtype, 2);
    memcpy(h + 72, &bitpix, 2);
    float pix[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    memcpy(h + 76, pix, sizeof pix);
    float f = 352.0f;
    memcpy(h + 108, &f, 4);
    f = 1.0f;
    memcpy(h + 112, &f, 4); /* scl_slope */
    int16_t sform = 1;
    memcpy(h + 254, &sform, 2);
    float srow[3][4] = {{1, 0, 0, ox}, {0, 1, 0, 0}, {0, 0, 1, 0}};
    memcpy(h + 280, srow, sizeof srow);
    memcpy(h + 344, "n+1\0", 4);
    size_t n = (size_t)(dim[0] * dim[1] * dim[2]) * (dt == 16 ? 4 : 1);
    size_t pl = strlen(path);
    if (pl > 3 && strcmp(path + pl - 3, ".gz") == 0) {
        gzFile g = gzopen(path, "wb");
        assert_non_null(g);
        assert_int_equal(gzwrite(g, h, sizeof h), (int)sizeof h);
        assert_int_equal(gzwrite(g, data, (unsigned)n), (int)n);
        assert_int_equal(gzclose(g), Z_OK);
    } else {
        FILE *fp = fopen(path, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(h, 1, sizeof h, fp), sizeof h);
        assert_int_equal(fwrite(data, 1, n, fp), n);
        fclose(fp);
    }
}

#define NX 12
#define NY 10
#define NZ 8
#define NVOX (NX * NY * NZ)

/* Ground truth of the generated cases (NIfTI order, i fastest). */
static uint8_t case_label(int i, int j, int k)
{
    if (i >= 2 && i < 6 && j >= 2 && j < 5 && k >= 1 && k < 4) return 1;
    if (i >= 7 && i < 10 && j >= 5 && j < 8 && k >= 4 && k < 7) return 2;
    return 0;
}

/* Distinct per case/modality/voxel so reordering bugs show; the value
 * written (float) and the reference (double of that float) agree. */
static double case_value(int c, int m, int i, int j, int k)
{
    return (double)(float)(100.0 * (m + 1) + 7.0 * c + i +
                           0.37 * j * (m + 2) + 3.1 * k +
                           20.0 * case_label(i, j, k));
}

/* Make a fresh folder in the test directory holding n cases, nm
 * modalities, 3 classes; writes its path into dir and returns dir. */
static const char *make_dataset(char *dir, size_t len, int n, int nm,
                                const char *ending)
{
    char p[700];
    snprintf(dir, len, "%s/dsXXXXXX", test_tmpdir());
    assert_non_null(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/imagesTr", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/labelsTr", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/dataset.json", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f, "{\"channel_names\": {");
    for (int m = 0; m < nm; m++)
        fprintf(f, "%s\"%d\": \"M%d\"", m ? ", " : "", m, m);
    fprintf(f,
            "}, \"labels\": {\"background\": 0, \"liver\": 1, "
            "\"spleen\": 2}, \"numTraining\": %d, \"file_ending\": "
            "\"%s\"}\n",
            n, ending);
    fclose(f);
    int64_t dim[3] = {NX, NY, NZ};
    float img[NVOX];
    uint8_t lab[NVOX];
    for (int c = 0; c < n; c++) {
        for (int m = 0; m < nm; m++) {
            for (int k = 0; k < NZ; k++)
                for (int j = 0; j < NY; j++)
                    for (int i = 0; i < NX; i++)
                        img[(k * NY + j) * NX + i] =
                            (float)case_value(c, m, i, j, k);
            snprintf(p, sizeof p, "%s/imagesTr/case%02d_%04d%s", dir, c, m,
                     ending);
            write_nii(p, dim, 16, img, 0.0f);
        }
        for (int k = 0; k < NZ; k++)
            for (int j = 0; j < NY; j++)
                for (int i = 0; i < NX; i++)
                    lab[(k * NY + j) * NX + i] = case_label(i, j, k);
        snprintf(p, sizeof p, "%s/labelsTr/case%02d%s", dir, c, ending);
        write_nii(p, dim, 2, lab, 0.0f);
    }
    return dir;
}

static void test_dataset_load(void **state)
{
    (void)state;
    char dbuf[512];
    const char *dir = make_dataset(dbuf, sizeof dbuf, 3, 2, ".nii.gz");
    Dataset ds;
    assert_int_equal(dataset_open(&ds, dir), 0);
    assert_int_equal(ds.n_cases, 3);
    assert_int_equal(ds.n_modalities, 2);
    assert_int_equal(ds.n_classes, 3);
    assert_string_equal(ds.case_names[0], "case00");
    assert_string_equal(ds.case_names[2], "case02");
    assert_string_equal(ds.class_names[2], "spleen");
    assert_string_equal(ds.modality_names[1], "M1");
    assert_int_equal(ds.n_test, 0);
    DataLayout lay = {.dims = 3, .axis = 0, .order = ORDER_NNUNET};
    assert_int_equal(dataset_load(&ds, &lay), 0);
    const DataCase *c = &ds.cases[1];
    /* nnU-Net order: tensor [C, k, j, i]. */
    assert_int_equal(c->S[0], NZ);
    assert_int_equal(c->S[1], NY);
    assert_int_equal(c->S[2], NX);
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++)
                assert_int_equal(c->label[(k * NY + j) * NX + i],
                                 case_label(i, j, k));
    /* Normalisation: per case and modality, mean 0 and population std 1
     * (double statistics over 960 voxels: float32 storage leaves ~1e-7
     * relative error, 1e-5 is ample); and the values are the z-scores
     * of the written intensities computed here independently. */
    for (int m = 0; m < 2; m++) {
        const float *x = c->image + (size_t)m * NVOX;
        double s = 0, ss = 0, rs = 0, rss = 0;
        for (int v = 0; v < NVOX; v++)
            s += (double)x[v];
        for (int v = 0; v < NVOX; v++)
            ss += pow((double)x[v] - s / NVOX, 2);
        assert_true(fabs(s / NVOX) < 1e-5);
        assert_true(fabs(sqrt(ss / NVOX) - 1.0) < 1e-5);
        for (int k = 0; k < NZ; k++)
            for (int j = 0; j < NY; j++)
                for (int i = 0; i < NX; i++)
                    rs += case_value(1, m, i, j, k);
        double mean = rs / NVOX;
        for (int k = 0; k < NZ; k++)
            for (int j = 0; j < NY; j++)
                for (int i = 0; i < NX; i++) {
                    double d = case_value(1, m, i, j, k) - mean;
                    rss += d * d;
                }
        double sd = sqrt(rss / NVOX);
        int i = 5, j = 3, k = 6;
        double want = (case_value(1, m, i, j, k) - mean) / sd;
        assert_true(fabs((double)x[(k * NY + j) * NX + i] - want) < 1e-5);
    }
    /* Foreground locations point at the right classes. */
    for (int cls = 1; cls < 3; cls++) {
        assert_true(c->fg_start[cls + 1] > c->fg_start[cls]);
        for (int64_t q = c->fg_start[cls]; q < c->fg_start[cls + 1]; q++)
            assert_int_equal(c->label[c->fg_loc[q]], cls);
    }
    assert_int_equal(c->fg_start[2] - c->fg_start[1], 4 * 3 * 3);

    /* Bit-identical to what segment's functions produce from the file. */
    char *image = NULL, *label = NULL;
    assert_int_equal(dataset_case_paths(&ds, 0, 1, &image, &label), 0);
    assert_non_null(strstr(image, "case01_0000.nii.gz,"));
    Volume v;
    assert_int_equal(nio_read(image, &v, NULL), 0);
    NormAffine na[2];
    Normalize z = {NORMALIZE_ZSCORE, 0, 0};
    int ax[3];
    assert_int_equal(volume_axes(ORDER_NNUNET, 3, 0, ax), 0);
    for (int m = 0; m < 2; m++)
        assert_int_equal(volume_norm_affine(&v, m, &z, &na[m]), 0);
    float *g = malloc(sizeof(float) * 2 * NVOX);
    int64_t off[3] = {0, 0, 0};
    volume_gather(g, &v, na, ax, off, c->S, c->S);
    assert_memory_equal(g, c->image, sizeof(float) * 2 * NVOX);
    free(g);
    volume_free(&v);
    sl_free(image);
    sl_free(label);
    dataset_free(&ds);

    /* 2D along NIfTI axis 0 (i): slices [C, k, j] in nnU-Net order. */
    assert_int_equal(dataset_open(&ds, dir), 0);
    Normalize ct[2] = {{NORMALIZE_CT, 100.0f, 140.0f},
                       {NORMALIZE_NONE, 0, 0}};
    DataLayout l2 = {
        .dims = 2, .axis = 0, .order = ORDER_NNUNET, .normalize = ct};
    assert_int_equal(dataset_load(&ds, &l2), 0);
    c = &ds.cases[2];
    assert_int_equal(c->S[0], NX);
    assert_int_equal(c->S[1], NZ);
    assert_int_equal(c->S[2], NY);
    int i = 7, j = 6, k = 5;
    int64_t q = ((int64_t)i * NZ + k) * NY + j;
    assert_int_equal(c->label[q], case_label(i, j, k));
    /* CT: clip to [100, 140] then map to [-1, 1]; none: raw. */
    double raw0 = case_value(2, 0, i, j, k);
    double cl = raw0 < 100 ? 100 : raw0 > 140 ? 140 : raw0;
    assert_true(fabs((double)c->image[q] - ((cl - 100) / 40 * 2 - 1)) < 1e-5);
    assert_true((double)c->image[NVOX + q] == case_value(2, 1, i, j, k));
    for (int vv = 0; vv < NVOX; vv++)
        assert_true(c->image[vv] >= -1.0f && c->image[vv] <= 1.0f);
    /* Every slice is bit-identical to the [C, H, W] input segment builds
     * for that slice (its run_2d gathers box {1, H, W} at {slice, 0, 0}
     * with the model's normalisation). */
    assert_int_equal(dataset_case_paths(&ds, 0, 2, &image, &label), 0);
    assert_int_equal(nio_read(image, &v, NULL), 0);
    assert_int_equal(volume_axes(ORDER_NNUNET, 2, 0, ax), 0);
    for (int m = 0; m < 2; m++)
        assert_int_equal(volume_norm_affine(&v, m, &ct[m], &na[m]), 0);
    int64_t plane = c->S[1] * c->S[2];
    float *sl = malloc(sizeof(float) * 2 * (size_t)plane);
    for (int64_t s0 = 0; s0 < c->S[0]; s0++) {
        int64_t o2[3] = {s0, 0, 0}, box[3] = {1, c->S[1], c->S[2]};
        volume_gather(sl, &v, na, ax, o2, box, box);
        for (int m = 0; m < 2; m++)
            assert_memory_equal(sl + m * plane,
                                c->image + m * NVOX + s0 * plane,
                                sizeof(float) * (size_t)plane);
    }
    free(sl);
    volume_free(&v);
    sl_free(image);
    sl_free(label);
    dataset_free(&ds);
}

/* nnU-Net v1 style keys, .nii ending, a test set with partial labels. */
static void test_dataset_v1_and_test_set(void **state)
{
    (void)state;
    char dbuf[512];
    const char *dir = make_dataset(dbuf, sizeof dbuf, 2, 1, ".nii");
    char p[700];
    snprintf(p, sizeof p, "%s/dataset.json", dir);
    FILE *f = fopen(p, "w");
    fprintf(f, "{\"modality\": {\"0\": \"MRI\"}, \"labels\": {\"0\": "
               "\"background\", \"2\": \"b\", \"1\": \"a\"}, "
               "\"file_ending\": \".nii\"}");
    fclose(f);
    snprintf(p, sizeof p, "%s/imagesTs", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/labelsTs", dir);
    mkdir(p, 0755);
    int64_t dim[3] = {NX, NY, NZ};
    float img[NVOX];
    uint8_t lab[NVOX];
    for (int v = 0; v < NVOX; v++)
        img[v] = (float)(v % 17);
    for (int v = 0; v < NVOX; v++)
        lab[v] = (uint8_t)(v % 3 == 0);
    snprintf(p, sizeof p, "%s/imagesTs/t1_0000.nii", dir);
    write_nii(p, dim, 16, img, 0.0f);
    snprintf(p, sizeof p, "%s/imagesTs/t0_0000.nii", dir);
    write_nii(p, dim, 16, img, 0.0f);
    snprintf(p, sizeof p, "%s/labelsTs/t1.nii", dir);
    write_nii(p, dim, 2, lab, 0.0f);
    Dataset ds;
    assert_int_equal(dataset_open(&ds, dir), 0);
    assert_string_equal(ds.modality_names[0], "MRI");
    assert_string_equal(ds.class_names[1], "a");
    assert_string_equal(ds.class_names[2], "b");
    assert_int_equal(ds.n_test, 2);
    assert_string_equal(ds.test_names[0], "t0");
    assert_int_equal(ds.test_has_label[0], 0);
    assert_int_equal(ds.test_has_label[1], 1);
    DataLayout lay = {.dims = 3, .order = ORDER_NIBABEL};
    assert_int_equal(dataset_load(&ds, &lay), 0);
    /* nibabel order: tensor [C, i, j, k]. */
    assert_int_equal(ds.cases[0].S[0], NX);
    assert_int_equal(ds.cases[0].S[2], NZ);
    int64_t S[3];
    dataset_max_size(&ds, S);
    assert_int_equal(S[1], NY);
    DataCase tc;
    assert_int_equal(dataset_load_test_case(&ds, 1, &tc), 0);
    assert_string_equal(tc.name, "t1");
    assert_int_equal(tc.label[0], 1); /* voxel (0,0,0): 0 % 3 == 0 */
    data_case_free(&tc);
    assert_int_equal(dataset_load_test_case(&ds, 0, &tc), 0);
    assert_int_equal(tc.fg_start[3], 0); /* unlabelled: all background */
    data_case_free(&tc);
    dataset_free(&ds);
}

/* Expect open+load of dir to fail with rc and a message containing all
 * of the given words. */
static void expect_fail(const char *dir, int rc, const char *w1,
                        const char *w2, const char *w3)
{
    Dataset ds;
    DataLayout lay = {.dims = 3, .order = ORDER_NNUNET};
    sl_error_reset();
    sl_error_quiet(1);
    int got = dataset_open(&ds, dir);
    if (!got) {
        got = dataset_load(&ds, &lay);
        dataset_free(&ds);
    }
    sl_error_quiet(0);
    const char *msg = sl_error_last();
    if (got != rc || !strstr(msg, w1) || (w2 && !strstr(msg, w2)) ||
        (w3 && !strstr(msg, w3)))
        fprintf(stderr, "rc %d (want %d), message: %s\n", got, rc, msg);
    assert_int_equal(got, rc);
    assert_non_null(strstr(msg, w1));
    if (w2) assert_non_null(strstr(msg, w2));
    if (w3) assert_non_null(strstr(msg, w3));
    /* One line. */
    assert_null(strchr(msg, '\n'));
}

static void test_dataset_bad_inputs(void **state)
{
    (void)state;
    char dbuf[512];
    char p[700], q[700];
    int64_t dim[3] = {NX, NY, NZ};
    uint8_t lab[NVOX];
    float img[NVOX];

    /* No dataset.json. */
    const char *dir = make_dataset(dbuf, sizeof dbuf, 2, 1, ".nii");
    snprintf(p, sizeof p, "%s/dataset.json", dir);
    unlink(p);
    expect_fail(dir, ERR_FORMAT, "no dataset.json", dir, NULL);
    expect_fail("/nonexistent/dataset", ERR_IO, "not found", NULL, NULL);

    /* Garbage dataset.json. */
    dir = make_dataset(dbuf, sizeof dbuf, 2, 1, ".nii");
    snprintf(p, sizeof p, "%s/dataset.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"channel_names\": {\"0\": \"T1\"}, \"labels\": ", f);
    fclose(f);
    expect_fail(dir, ERR_FORMAT, "dataset.json", "not valid JSON", NULL);

    /* Missing modality. */
    dir = make_dataset(dbuf, sizeof dbuf, 3, 2, ".nii");
    snprintf(p, sizeof p, "%s/imagesTr/case01_0001.nii", dir);
    unlink(p);
    expect_fail(dir, ERR_FORMAT, "case01", "missing modality 1", "M1");

    /* Missing label. */
    dir = make_dataset(dbuf, sizeof dbuf, 3, 1, ".nii");
    snprintf(p, sizeof p, "%s/labelsTr/case02.nii", dir);
    unlink(p);
    expect_fail(dir, ERR_FORMAT, "case02", "no label", NULL);

    /* Undeclared label value 7. */
    dir = make_dataset(dbuf, sizeof dbuf, 3, 1, ".nii");
    for (int v = 0; v < NVOX; v++)
        lab[v] = 0;
    lab[(3 * NY + 4) * NX + 5] = 7;
    snprintf(p, sizeof p, "%s/labelsTr/case01.nii", dir);
    write_nii(p, dim, 2, lab, 0.0f);
    expect_fail(dir, ERR_FORMAT, "case01", "label value 7", "(5,4,3)");

    /* Image and label grids differ: dims. */
    dir = make_dataset(dbuf, sizeof dbuf, 2, 1, ".nii");
    int64_t dsmall[3] = {NX, NY, NZ - 1};
    snprintf(p, sizeof p, "%s/labelsTr/case00.nii", dir);
    write_nii(p, dsmall, 2, lab, 0.0f);
    expect_fail(dir, ERR_FORMAT, "case00", "12x10x8", "12x10x7");

    /* ... and affine (origin shifted by 2 mm). */
    dir = make_dataset(dbuf, sizeof dbuf, 2, 1, ".nii");
    for (int v = 0; v < NVOX; v++)
        lab[v] = 0;
    snprintf(p, sizeof p, "%s/labelsTr/case01.nii", dir);
    write_nii(p, dim, 2, lab, 2.0f);
    expect_fail(dir, ERR_FORMAT, "case01", "voxel-to-world", NULL);

    /* Modality grids differ. */
    dir = make_dataset(dbuf, sizeof dbuf, 2, 2, ".nii");
    snprintf(p, sizeof p, "%s/imagesTr/case00_0001.nii", dir);
    write_nii(p, dsmall, 16, img, 0.0f);
    expect_fail(dir, ERR_FORMAT, "case00_0001", "dimensions", NULL);

    /* Empty training set. */
    dir = make_dataset(dbuf, sizeof dbuf, 0, 1, ".nii");
    expect_fail(dir, ERR_FORMAT, "no training cases", NULL, NULL);

    /* numTraining disagrees; label value not consecutive; stray file. */
    dir = make_dataset(dbuf, sizeof dbuf, 2, 1, ".nii");
    snprintf(p, sizeof p, "%s/dataset.json", dir);
    f = fopen(p, "w");
    fputs("{\"channel_names\": {\"0\": \"T1\"}, \"labels\": "
          "{\"background\": 0, \"a\": 1}, \"numTraining\": 5, "
          "\"file_ending\": \".nii\"}",
          f);
    fclose(f);
    expect_fail(dir, ERR_FORMAT, "numTraining 5", "2 cases", NULL);
    f = fopen(p, "w");
    fputs("{\"channel_names\": {\"0\": \"T1\"}, \"labels\": "
          "{\"background\": 0, \"a\": 2}, \"file_ending\": \".nii\"}",
          f);
    fclose(f);
    expect_fail(dir, ERR_FORMAT, "label \"a\"", "0..1", NULL);
    f = fopen(p, "w");
    fputs("{\"channel_names\": {\"0\": \"T1\"}, \"labels\": "
          "{\"background\": 0, \"a\": 1}, \"file_ending\": \".nii\"}",
          f);
    fclose(f);
    snprintf(q, sizeof q, "%s/imagesTr/stray.nii", dir);
    write_nii(q, dim, 16, img, 0.0f);
    expect_fail(dir, ERR_FORMAT, "stray.nii", "CASE_XXXX", NULL);
    unlink(q);
    /* That dataset is fine again (label value 2 of the generated maps is
     * now undeclared: 2 classes only). */
    expect_fail(dir, ERR_FORMAT, "label value 2", "case00", NULL);
}

/* Failing each allocation in turn: open+load returns ERR_NOMEM cleanly
 * (ASan reports any leak) until it succeeds. */
static void test_dataset_nomem(void **state)
{
    (void)state;
    char dbuf[512];
    const char *dir = make_dataset(dbuf, sizeof dbuf, 2, 1, ".nii");
    DataLayout lay = {.dims = 3, .order = ORDER_NNUNET};
    int rc = ERR_NOMEM;
    long n;
    sl_error_quiet(1);
    for (n = 0; rc != 0 && n < 2000; n++) {
        Dataset ds;
        sl_error_reset();
        sl_alloc_fail_after(n);
        rc = dataset_open(&ds, dir);
        if (!rc) {
            rc = dataset_load(&ds, &lay);
            dataset_free(&ds);
        }
        sl_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == ERR_NOMEM);
    }
    sl_error_quiet(0);
    assert_int_equal(rc, 0);
    assert_true(n > 10);
}

/* ------------------------------------------------------------- split */

static void test_split(void **state)
{
    (void)state;
    char dbuf[512];
    DataSplit a, b;
    assert_int_equal(split_make(&a, 10, SPLIT_DEFAULT_VAL_FRAC, 7), 0);
    assert_int_equal(a.n_val, 2);
    assert_int_equal(a.n_train, 8);
    assert_int_equal(split_make(&b, 10, SPLIT_DEFAULT_VAL_FRAC, 7), 0);
    assert_memory_equal(a.val, b.val, sizeof(int) * 2);
    assert_memory_equal(a.train, b.train, sizeof(int) * 8);
    /* Disjoint and covering. */
    int seen[10] = {0};
    for (int i = 0; i < a.n_val; i++)
        seen[a.val[i]]++;
    for (int i = 0; i < a.n_train; i++)
        seen[a.train[i]]++;
    for (int i = 0; i < 10; i++)
        assert_int_equal(seen[i], 1);
    split_free(&b);
    /* Another seed gives another split (for at least one of 20 seeds). */
    int differ = 0;
    for (uint64_t s = 100; s < 120; s++) {
        assert_int_equal(split_make(&b, 10, 0.2, s), 0);
        differ |= memcmp(a.val, b.val, sizeof(int) * 2) != 0;
        split_free(&b);
    }
    assert_true(differ);
    split_free(&a);
    /* Sizes at the edges. */
    assert_int_equal(split_make(&a, 2, 0.2, 1), 0);
    assert_int_equal(a.n_val, 1);
    split_free(&a);
    assert_int_equal(split_make(&a, 1, 0.2, 1), 0);
    assert_int_equal(a.n_val, 0);
    assert_int_equal(a.n_train, 1);
    split_free(&a);
    assert_int_equal(split_make(&a, 3, 0.9, 1), 0);
    assert_int_equal(a.n_val, 2);
    split_free(&a);
    sl_error_quiet(1);
    assert_int_equal(split_make(&a, 5, 1.0, 1), ERR_ARG);
    assert_int_equal(split_make(&a, 0, 0.2, 1), ERR_ARG);
    sl_error_quiet(0);

    /* Recorded in the run folder and read back. */
    const char *dir = make_dataset(dbuf, sizeof dbuf, 5, 1, ".nii");
    Dataset ds;
    assert_int_equal(dataset_open(&ds, dir), 0);
    assert_int_equal(split_make(&a, ds.n_cases, 0.2, 12345), 0);
    char run[600], path[700];
    snprintf(run, sizeof run, "%s/run_split", test_tmpdir());
    mkdir(run, 0755);
    assert_int_equal(split_write(&a, &ds, run), 0);
    snprintf(path, sizeof path, "%s/split.json", run);
    JsonValue *j = NULL;
    assert_int_equal(json_parse_file(path, &j), 0);
    assert_true(json_is_int(json_get(j, "seed"), 12345, 12345));
    const JsonValue *val = json_get(j, "val");
    assert_int_equal(val->n, 1);
    assert_string_equal(val->items[0]->str, ds.case_names[a.val[0]]);
    json_free(j);
    assert_int_equal(split_read(&b, &ds, path), 0);
    assert_int_equal(b.n_train, a.n_train);
    assert_int_equal(b.n_val, a.n_val);
    assert_memory_equal(b.train, a.train, sizeof(int) * (size_t)a.n_train);
    assert_memory_equal(b.val, a.val, sizeof(int) * (size_t)a.n_val);
    assert_int_equal(b.seed, 12345);
    split_free(&b);
    /* A split naming an unknown case is refused. */
    FILE *f = fopen(path, "w");
    fputs("{\"seed\": 1, \"train\": [\"case00\", \"zzz\"], \"val\": []}", f);
    fclose(f);
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(split_read(&b, &ds, path), ERR_FORMAT);
    assert_non_null(strstr(sl_error_last(), "entry 1"));
    sl_error_quiet(0);
    split_free(&a);

    /* Chosen by name: the named cases validate, the others train. */
    char *names[] = {ds.case_names[3], ds.case_names[1], ds.case_names[1]};
    assert_int_equal(split_from_names(&a, &ds, names, 2, 9), 0);
    assert_int_equal(a.n_val, 2);
    assert_int_equal(a.val[0], 1);
    assert_int_equal(a.val[1], 3);
    assert_int_equal(a.n_train, 3);
    assert_int_equal(a.train[0], 0);
    assert_int_equal(a.train[1], 2);
    assert_int_equal(a.train[2], 4);
    assert_true(a.val_frac == 0.4);
    split_free(&a);
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(split_from_names(&a, &ds, names, 3, 9), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "twice"));
    sl_error_reset();
    char nope[] = "nope", *bad_name[] = {nope};
    assert_int_equal(split_from_names(&a, &ds, bad_name, 1, 9), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "'nope'"));
    sl_error_reset();
    assert_int_equal(split_from_names(&a, &ds, ds.case_names, 5, 9), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "train on"));
    sl_error_reset();
    sl_error_quiet(0);
    dataset_free(&ds);
}

/* tools/make_phantom.py writes a dataset this loader accepts: names,
 * classes, modalities, a test set, and organ intensities ordered as the
 * script states (organ1 bright, organ2 dark in T1). */
static void test_phantom(void **state)
{
    (void)state;
    char dir[600], cmd[1400], err[256];
    snprintf(dir, sizeof dir, "%s/phantom", test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/make_phantom.py %s --cases 3 --test 1 "
             "--size 24,20,12 --modalities 2 --seed 4 >/dev/null",
             dir);
    if (run_cmd("/usr/bin/python3 -c 'import nibabel, numpy'", err,
                sizeof err) != 0) {
        printf("skipped: /usr/bin/python3 with nibabel and numpy missing\n");
        skip();
    }
    assert_int_equal(run_cmd(cmd, err, sizeof err), 0);
    Dataset ds;
    assert_int_equal(dataset_open(&ds, dir), 0);
    assert_int_equal(ds.n_cases, 3);
    assert_int_equal(ds.n_test, 1);
    assert_int_equal(ds.test_has_label[0], 1);
    assert_int_equal(ds.n_classes, 3);
    assert_int_equal(ds.n_modalities, 2);
    assert_string_equal(ds.case_names[0], "phantom_000");
    assert_string_equal(ds.modality_names[1], "T2");
    DataLayout lay = {.dims = 2, .axis = 2, .order = ORDER_NNUNET};
    assert_int_equal(dataset_load(&ds, &lay), 0);
    for (int i = 0; i < ds.n_cases; i++) {
        const DataCase *c = &ds.cases[i];
        assert_int_equal(c->S[0], 12);
        assert_int_equal(c->S[1], 20);
        assert_int_equal(c->S[2], 24);
        double sum[3] = {0}, cnt[3] = {0};
        int64_t nv = c->S[0] * c->S[1] * c->S[2];
        for (int64_t v = 0; v < nv; v++) {
            sum[c->label[v]] += (double)c->image[v];
            cnt[c->label[v]] += 1;
        }
        assert_true(cnt[1] > 0 && cnt[2] > 0);
        assert_true(sum[1] / cnt[1] > sum[0] / cnt[0]);
        assert_true(sum[2] / cnt[2] < sum[1] / cnt[1]);
    }
    DataCase tc;
    assert_int_equal(dataset_load_test_case(&ds, 0, &tc), 0);
    assert_true(tc.fg_start[3] > 0);
    data_case_free(&tc);
    dataset_free(&ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_valid),
        cmocka_unit_test(test_json_invalid),
        cmocka_unit_test(test_json_garbage),
        cmocka_unit_test(test_json_nomem),
        cmocka_unit_test(test_json_largest_claims),
        cmocka_unit_test(test_dataset_load),
        cmocka_unit_test(test_dataset_v1_and_test_set),
        cmocka_unit_test(test_dataset_bad_inputs),
        cmocka_unit_test(test_dataset_nomem),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_phantom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
