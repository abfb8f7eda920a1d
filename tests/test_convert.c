/* sauron-compress --no-finetune with a .sslim input (compress_cli.c):
 * the shipped models/default.sslim to ONNX and back, and the refusals.
 * The ONNX carries the metadata (metadata_props), and the CLI keeps it
 * on the way back unless an option replaces a field.
 *
 * Our runtime: the .sslim, its ONNX export re-imported by the CLI, and
 * its .sslim -> .sslim copy run on one fixed input and must agree bit for
 * bit: export and import map every IR node to the same IR op with the
 * same float32 weights and attributes, so the executor runs the same
 * kernels in the same order (test_onnx_export.c asserts the same for its
 * graphs).  Any change of weights, pads, eps or slope shows up as a
 * difference, however small.
 *
 * ONNX Runtime: tools/ort_run.js on the exported file must match our
 * runtime on the .sslim within 1e-4 of the output scale (docs/DESIGN.md's
 * criterion).  The outputs are softmax probabilities (scale <= 1); float32
 * with different summation orders over ~30 layers differs by about 1e-6,
 * a wrong attribute by 1e-2 or more.  When onnxruntime-node is missing
 * the check fails, unless SL_NO_ORT=1 asks to skip it (ort_available in
 * tests/testutil.h).
 *
 * Tests run from the repository root (make test-run), where
 * models/default.sslim is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compressor/onnx/onnx_import.h"
#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "runtime/sslim.h"
#include "tests/testutil.h"

#define DEFAULT_MODEL "models/default.sslim"
#define ORT_REL_TOL 1e-4
/* A smaller slice than the model's 224x192 keeps the test fast (also
 * under ASan); both sizes are multiples of 16, as its four halvings
 * need. */
#define IN_H 96
#define IN_W 80

static const char *tmp_file(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", test_tmpdir(), name);
    return buf;
}

/* Run sauron-compress with args; returns the exit status, fills the first
 * stderr line and the number of stderr lines. */
static int compress(const char *args, char *err, size_t len, int *lines)
{
    char bin[300], cmd[3000], path[300];
    bin_path("sauron-compress", bin, sizeof bin);
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null", bin, args);
    int st = run_cmd(cmd, err, len);
    *lines = 0;
    FILE *f = fopen(tmp_file("stderr.txt", path, sizeof path), "r");
    assert_non_null(f);
    int c;
    while ((c = fgetc(f)) != EOF)
        *lines += c == '\n';
    fclose(f);
    return st;
}

static void compress_ok(const char *args)
{
    char err[512];
    int lines;
    int st = compress(args, err, sizeof err, &lines);
    if (st) fprintf(stderr, "sauron-compress %s: %s\n", args, err);
    assert_int_equal(st, 0);
}

/* Refused with one stderr line containing `want`, no output written. */
static void compress_refused(const char *args, const char *want,
                             const char *out)
{
    char err[512];
    int lines;
    int st = compress(args, err, sizeof err, &lines);
    if (!st || lines != 1 || !strstr(err, want))
        fprintf(stderr, "sauron-compress %s: exit %d, %d lines: %s\n", args,
                st, lines, err);
    assert_int_not_equal(st, 0);
    assert_int_equal(lines, 1);
    assert_non_null(strstr(err, want));
    if (out) assert_int_equal(access(out, F_OK), -1);
}

static void read_ok(const char *path, Graph *g)
{
    graph_init(g);
    sl_error_reset();
    int rc = sslim_read(path, g);
    if (rc) fprintf(stderr, "sslim_read(%s): %s\n", path, sl_error_last());
    assert_int_equal(rc, 0);
}

/* A fixed input: a bright ellipse on noise, so both classes occur and the
 * probabilities are not all saturated. */
static void make_input(float *x)
{
    TestRng r = {2024};
    for (int i = 0; i < IN_H; i++)
        for (int j = 0; j < IN_W; j++) {
            float u = (float)(i - IN_H / 2) / (0.3f * IN_H);
            float v = (float)(j - IN_W / 2) / (0.3f * IN_W);
            float in = u * u + v * v < 1.0f ? 1.0f : -1.0f;
            x[i * IN_W + j] = in + trng_uniform(&r, -0.5f, 0.5f);
        }
}

/* Output 0 of g on x (malloc'd); its shape into ys. */
static float *run_model(Graph *g, const float *x, Shape *ys)
{
    Shape xs = {4, {1, 1, IN_H, IN_W}};
    Executor *e = NULL;
    sl_error_reset();
    int rc = exec_create(g, &xs, 1, &e);
    if (rc) fprintf(stderr, "exec_create: %s\n", sl_error_last());
    assert_int_equal(rc, 0);
    const float *res[SL_MAX_OUTPUTS] = {0};
    assert_int_equal(exec_run(e, x, res), 0);
    *ys = *exec_output_shape(e, 0);
    size_t n = (size_t)shape_numel(ys);
    float *y = malloc(n * sizeof *y);
    assert_non_null(y);
    memcpy(y, res[0], n * sizeof *y);
    exec_free(e);
    return y;
}

static void assert_identical(const float *a, const float *b, const Shape *s,
                             const char *what)
{
    size_t n = (size_t)shape_numel(s);
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) {
            fprintf(stderr, "%s: differs at %zu: %.9g vs %.9g\n", what, i,
                    (double)a[i], (double)b[i]);
            fail();
        }
}

/* ---- ONNX Runtime peer (tests/testutil.h) ---- */

/* ORT on model (output 0) vs ours (shape ys). */
static void check_ort(const char *model, const float *x, const float *ours,
                      const Shape *ys)
{
    if (!ort_available()) return;
    char in[300], out[300], err[512];
    const char *outs[1] = {out};
    const int64_t xdims[4] = {1, 1, IN_H, IN_W};
    tmp_file("ort_in.sltensor", in, sizeof in);
    tmp_file("ort_out.sltensor", out, sizeof out);
    assert_int_equal(save_tensor(in, x, xdims, 4), 0);
    unlink(out);
    int st = ort_run_model(model, in, outs, 1, err, sizeof err);
    if (st) fprintf(stderr, "ort_run failed: %s\n", err);
    assert_int_equal(st, 0);
    assert_true(ort_output_close(out, ours, ys->d, ys->ndim, ORT_REL_TOL,
                                 "default model, ONNX Runtime on the export "
                                 "vs ours on the .sslim"));
}

/* ---- tests ---- */

/* .sslim -> .onnx -> .sslim: same outputs, metadata carried; ORT agrees. */
static void test_default_to_onnx(void **state)
{
    (void)state;
    char onnx[300], back[300], args[1200];
    tmp_file("default.onnx", onnx, sizeof onnx);
    tmp_file("back.sslim", back, sizeof back);
    unlink(onnx);
    unlink(back);
    snprintf(args, sizeof args, "--no-finetune %s %s", DEFAULT_MODEL, onnx);
    compress_ok(args);

    Graph a, imp, b;
    read_ok(DEFAULT_MODEL, &a);
    /* the ONNX file carries the whole ModelMeta (metadata_props) */
    graph_init(&imp);
    sl_error_reset();
    int rc = onnx_import(onnx, NULL, &imp);
    if (rc) fprintf(stderr, "onnx_import: %s\n", sl_error_last());
    assert_int_equal(rc, 0);
    assert_meta_equal(&a.meta, &imp.meta);
    assert_int_equal(imp.n_nodes, a.n_nodes);
    assert_int_equal(graph_params(&imp), graph_params(&a));

    /* The CLI keeps the metadata the ONNX carries (compress_fill_meta):
     * no --classes/--modalities needed.  The shipped names are not the
     * defaults, so a fallback to class0/mod0 would show. */
    assert_int_equal(a.meta.n_classes, 2);
    assert_int_equal(a.meta.n_modalities, 1);
    assert_string_not_equal(a.meta.class_names[1], "class1");
    assert_string_not_equal(a.meta.modality_names[0], "mod0");
    snprintf(args, sizeof args, "--no-finetune %s %s", onnx, back);
    compress_ok(args);
    read_ok(back, &b);
    assert_meta_equal(&a.meta, &b.meta);

    static float x[IN_H * IN_W];
    make_input(x);
    Shape ya, yb;
    float *oa = run_model(&a, x, &ya);
    float *ob = run_model(&b, x, &yb);
    assert_true(shape_equal(&ya, &yb));
    assert_int_equal(ya.d[1], 2);
    assert_identical(oa, ob, &ya, ".sslim vs .sslim -> .onnx -> .sslim");
    /* both classes present: the comparison is not of a constant map */
    size_t n = (size_t)IN_H * IN_W, brain = 0;
    for (size_t i = 0; i < n; i++)
        brain += oa[n + i] > 0.5f;
    fprintf(stderr, "default model: %zu of %zu pixels brain\n", brain, n);
    assert_true(brain > 0 && brain < n);

    check_ort(onnx, x, oa, &ya);
    free(oa);
    free(ob);
    graph_free(&a);
    graph_free(&imp);
    graph_free(&b);
}

/* .sslim -> .sslim keeps everything; given options replace their fields;
 * a .sslim under another name is found by its magic. */
static void test_sslim_to_sslim(void **state)
{
    (void)state;
    char copy[300], renamed[300], bin[300], args[1200];
    tmp_file("copy.sslim", copy, sizeof copy);
    tmp_file("renamed.sslim", renamed, sizeof renamed);
    tmp_file("model.bin", bin, sizeof bin);
    unlink(copy);
    unlink(renamed);
    snprintf(args, sizeof args, "cp %s %s", DEFAULT_MODEL, bin);
    assert_int_equal(system(args), 0);
    snprintf(args, sizeof args, "--no-finetune %s %s", bin, copy);
    compress_ok(args);
    snprintf(args, sizeof args,
             "--no-finetune --classes bg,fg --normalize ct:-100,200 "
             "--order nibabel --axis 1 %s %s",
             DEFAULT_MODEL, renamed);
    compress_ok(args);

    Graph a, c, r;
    read_ok(DEFAULT_MODEL, &a);
    read_ok(copy, &c);
    read_ok(renamed, &r);
    assert_meta_equal(&a.meta, &c.meta);
    assert_string_equal(r.meta.class_names[1], "fg");
    assert_string_equal(r.meta.modality_names[0], a.meta.modality_names[0]);
    assert_int_equal(r.meta.normalize[0].kind, NORMALIZE_CT);
    assert_true(r.meta.normalize[0].lo == -100.0f);
    assert_true(r.meta.normalize[0].hi == 200.0f);
    assert_int_equal(r.meta.order, ORDER_NIBABEL);
    assert_int_equal(r.meta.axis, 1);
    assert_memory_equal(r.meta.source_sha256, a.meta.source_sha256, 32);

    static float x[IN_H * IN_W];
    make_input(x);
    Shape ya, yc;
    float *oa = run_model(&a, x, &ya);
    float *oc = run_model(&c, x, &yc);
    assert_true(shape_equal(&ya, &yc));
    assert_identical(oa, oc, &ya, ".sslim vs its .sslim copy");
    free(oa);
    free(oc);
    graph_free(&a);
    graph_free(&c);
    graph_free(&r);
}

/* An ONNX with embedded metadata: each option given replaces its field,
 * the others stay; a list of the wrong length is refused. */
static void test_onnx_options_override(void **state)
{
    (void)state;
    char onnx[300], out[300], args[1200];
    tmp_file("override.onnx", onnx, sizeof onnx);
    tmp_file("override.sslim", out, sizeof out);
    unlink(onnx);
    unlink(out);
    snprintf(args, sizeof args, "--no-finetune %s %s", DEFAULT_MODEL, onnx);
    compress_ok(args);
    snprintf(args, sizeof args, "--no-finetune --classes a,b,c %s %s", onnx,
             out);
    compress_refused(args, "--classes", out);
    snprintf(args, sizeof args,
             "--no-finetune --classes bg,fg --normalize ct:-100,200 "
             "--order nibabel --axis 1 %s %s",
             onnx, out);
    compress_ok(args);

    Graph a, r;
    read_ok(DEFAULT_MODEL, &a);
    read_ok(out, &r);
    assert_int_equal(r.meta.n_classes, 2);
    assert_string_equal(r.meta.class_names[0], "bg");
    assert_string_equal(r.meta.class_names[1], "fg");
    assert_int_equal(r.meta.normalize[0].kind, NORMALIZE_CT);
    assert_true(r.meta.normalize[0].lo == -100.0f);
    assert_true(r.meta.normalize[0].hi == 200.0f);
    assert_int_equal(r.meta.order, ORDER_NIBABEL);
    assert_int_equal(r.meta.axis, 1);
    /* not given: kept from the ONNX */
    assert_int_equal(r.meta.n_modalities, 1);
    assert_string_equal(r.meta.modality_names[0], a.meta.modality_names[0]);
    assert_memory_equal(r.meta.source_sha256, a.meta.source_sha256, 32);
    assert_string_equal(r.meta.source_name, a.meta.source_name);
    graph_free(&a);
    graph_free(&r);
}

/* An ONNX without sauron.* metadata (a torch export) gets the options'
 * defaults, as before embedded metadata was kept. */
static void test_plain_onnx_defaults(void **state)
{
    (void)state;
    char in[300], out[300], args[1200];
    fixture_path("torch/classic2d.onnx", in, sizeof in);
    tmp_file("plain.sslim", out, sizeof out);
    unlink(out);
    snprintf(args, sizeof args, "--no-finetune %s %s", in, out);
    compress_ok(args);
    Graph g;
    read_ok(out, &g);
    assert_true(g.meta.n_classes >= 2);
    for (int k = 0; k < g.meta.n_classes; k++) {
        char want[32];
        snprintf(want, sizeof want, "class%d", k);
        assert_string_equal(g.meta.class_names[k], want);
    }
    assert_int_equal(g.meta.n_modalities, 1);
    assert_string_equal(g.meta.modality_names[0], "mod0");
    assert_int_equal(g.meta.normalize[0].kind, NORMALIZE_ZSCORE);
    assert_int_equal(g.meta.axis, 2);
    assert_int_equal(g.meta.order, ORDER_NNUNET);
    assert_string_equal(g.meta.source_name, "classic2d.onnx");
    graph_free(&g);
}

/* 3D: the export's input dims are symbolic, so a re-import alone would
 * take the importer's default size; the embedded patch stays unless
 * --patch is given. */
static void test_onnx_3d_patch(void **state)
{
    (void)state;
    char in[300], onnx[300], kept[300], other[300], args[1200];
    fixture_path("torch/nnunet3d.onnx", in, sizeof in);
    tmp_file("p3d.onnx", onnx, sizeof onnx);
    tmp_file("p3d_kept.sslim", kept, sizeof kept);
    tmp_file("p3d_other.sslim", other, sizeof other);
    unlink(onnx);
    unlink(kept);
    unlink(other);
    snprintf(args, sizeof args,
             "--no-finetune --patch 32,16,16 --classes bg,fg %s %s", in,
             onnx);
    compress_ok(args);
    snprintf(args, sizeof args, "--no-finetune %s %s", onnx, kept);
    compress_ok(args);
    snprintf(args, sizeof args, "--no-finetune --patch 16,16,16 %s %s", onnx,
             other);
    compress_ok(args);
    Graph k, o;
    read_ok(kept, &k);
    read_ok(other, &o);
    assert_int_equal(k.meta.dims, 3);
    assert_int_equal(k.meta.patch[0], 32);
    assert_int_equal(k.meta.patch[1], 16);
    assert_int_equal(k.meta.patch[2], 16);
    assert_string_equal(k.meta.class_names[1], "fg");
    for (int t = 0; t < 3; t++)
        assert_int_equal(o.meta.patch[t], 16);
    assert_string_equal(o.meta.class_names[1], "fg");
    graph_free(&k);
    graph_free(&o);
}

/* Each refusal: non-zero exit, one stderr line, nothing written, the
 * input untouched. */
static void test_refusals(void **state)
{
    (void)state;
    char in[300], out[300], trunc[300], data[300], args[1500];
    tmp_file("input.sslim", in, sizeof in);
    tmp_file("refused.onnx", out, sizeof out);
    tmp_file("truncated.sslim", trunc, sizeof trunc);
    tmp_file("data", data, sizeof data);
    unlink(out);
    snprintf(args, sizeof args,
             "cp %s %s && head -c 100000 %s > %s && "
             "mkdir -p %s",
             DEFAULT_MODEL, in, DEFAULT_MODEL, trunc, data);
    assert_int_equal(system(args), 0);

    /* training from a .sslim */
    snprintf(args, sizeof args, "--data %s %s %s", data, in, out);
    compress_refused(args, "--no-finetune", out);
    snprintf(args, sizeof args, "%s %s", in, out);
    compress_refused(args, "--no-finetune", out);
    /* a damaged model */
    snprintf(args, sizeof args, "--no-finetune %s %s", trunc, out);
    compress_refused(args, "truncated", out);
    /* import-only options */
    snprintf(args, sizeof args, "--no-finetune --output probs %s %s", in,
             out);
    compress_refused(args, "--output", out);
    snprintf(args, sizeof args, "--no-finetune --patch 1,64,64 %s %s", in,
             out);
    compress_refused(args, "--patch", out);
    snprintf(args, sizeof args, "--no-finetune --classes a,b,c %s %s", in,
             out);
    compress_refused(args, "--classes", out);
    /* the input is never the output, even with --force */
    snprintf(args, sizeof args, "--no-finetune --force %s %s", in, in);
    compress_refused(args, "input", NULL);
    snprintf(args, sizeof args, "cmp -s %s %s", in, DEFAULT_MODEL);
    assert_int_equal(system(args), 0);
    /* an existing output needs --force */
    snprintf(args, sizeof args, "--no-finetune %s %s", in, out);
    compress_ok(args);
    compress_refused(args, "--force", NULL);
    snprintf(args, sizeof args, "--no-finetune --force %s %s", in, out);
    compress_ok(args);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_to_onnx),
        cmocka_unit_test(test_sslim_to_sslim),
        cmocka_unit_test(test_onnx_options_override),
        cmocka_unit_test(test_plain_onnx_defaults),
        cmocka_unit_test(test_onnx_3d_patch),
        cmocka_unit_test(test_refusals),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* the copies of the model weigh megabytes; keep them only to debug */
    if (!failed) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_tmpdir());
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", test_tmpdir());
    }
    return failed;
}
