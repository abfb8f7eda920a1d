/* Training executor + loss against PyTorch: loss value and every
 * parameter gradient of small U-Nets (tools/make_grad_fixtures.py), in 2D
 * and 3D, with InstanceNorm, deep supervision, and BatchNorm in training
 * mode (running statistics checked too). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/onnx/onnx_import.h"
#include "compressor/train/loss.h"
#include "compressor/train/train_exec.h"
#include "runtime/common.h"
#include "tests/testutil.h"

static float *load_grad_tensor(const char *name, const char *suffix, Shape *s)
{
    char rel[256], path[300];
    snprintf(rel, sizeof rel, "grad/%s%s", name, suffix);
    int nd = 0;
    float *t = load_tensor(fixture_path(rel, path, sizeof path), s->d, &nd);
    s->ndim = nd;
    return t;
}

/* NULL if absent (optional files are probed). */
static FILE *open_index(const char *name, const char *suffix)
{
    char rel[256], path[300];
    snprintf(rel, sizeof rel, "grad/%s%s", name, suffix);
    return fopen(fixture_path(rel, path, sizeof path), "r");
}

static float max_abs(const float *x, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++)
        m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

/* Compare one fixture: import, one training forward + loss + backward with
 * n_threads, loss and every parameter gradient against PyTorch. */
static void check_net(const char *name, int batch_dice)
{
    Graph g;
    Shape xs, ls, fs;
    graph_init(&g);
    float *x = load_grad_tensor(name, ".in.f32", &xs);
    float *labf = load_grad_tensor(name, ".labels.f32", &ls);
    float *ref_loss = load_grad_tensor(name, ".loss.f32", &fs);
    float *ref_grads = load_grad_tensor(name, ".grads.f32", &fs);
    assert_non_null(x);
    assert_non_null(labf);
    assert_non_null(ref_loss);
    assert_non_null(ref_grads);
    int64_t n_lab = shape_numel(&ls);
    uint8_t *lab = malloc((size_t)n_lab);
    assert_non_null(lab);
    for (int64_t i = 0; i < n_lab; i++)
        lab[i] = (uint8_t)labf[i];

    char rel[256], path[300];
    snprintf(rel, sizeof rel, "grad/%s.onnx", name);
    OnnxImportOptions io = {NULL, &xs, 0};
    sl_error_reset();
    int rc = onnx_import(fixture_path(rel, path, sizeof path), &io, &g);
    if (rc) fprintf(stderr, "onnx_import(%s): %s\n", path, sl_error_last());
    assert_int_equal(rc, 0);

    TrainExec *t = NULL;
    rc = train_exec_create(&g, &xs, 2, &t);
    if (rc) fprintf(stderr, "train_exec_create: %s\n", sl_error_last());
    assert_int_equal(rc, 0);
    LossOptions lo;
    loss_options_default(&lo, xs.ndim - 2);
    assert_int_equal(lo.batch_dice, batch_dice); /* fixture uses default */
    LossValue lv;
    train_zero_grads(t);
    assert_int_equal(train_forward(t, x), 0);
    assert_int_equal(train_loss_outputs(t, &lv, lab, NULL, &lo), 0);
    assert_int_equal(train_backward(t), 0);

    /* Loss: float32 network outputs differ from PyTorch's by ~1e-6
     * relative (summation order); the loss sums them in double. */
    float got[3] = {(float)lv.total, (float)lv.ce, (float)lv.dice};
    assert_true(allclose(got, ref_loss, 3, 1e-5, 1e-4, name));

    /* Gradients: float32 backward through up to ~10 layers whose
     * reductions (conv weight sums over B*S positions, norm statistics)
     * run in a different order than PyTorch's; cancellations in the norm
     * backward make small entries noisy relative to themselves, so the
     * absolute part scales with the tensor's largest entry. */
    FILE *f = open_index(name, ".grads.txt");
    assert_non_null(f);
    char pname[200];
    long long numel;
    int64_t off = 0;
    int checked = 0;
    while (fscanf(f, "%199s %lld", pname, &numel) == 2) {
        int v = graph_find_value(&g, pname);
        if (v < 0) fprintf(stderr, "%s: no graph value '%s'\n", name, pname);
        assert_true(v >= 0);
        float *gr = train_grad(t, v);
        assert_non_null(gr);
        assert_int_equal(shape_numel(&g.values[v].shape), numel);
        const float *rg = ref_grads + off;
        double atol = 1e-4 * (double)max_abs(rg, numel) + 1e-7;
        char what[300];
        snprintf(what, sizeof what, "%s: grad of %s", name, pname);
        assert_true(allclose(gr, rg, (size_t)numel, atol, 2e-3, what));
        off += numel;
        checked++;
    }
    fclose(f);
    assert_int_equal(off, shape_numel(&fs));
    /* every trainable parameter in the graph was checked */
    assert_int_equal(checked, train_n_params(t));

    /* BatchNorm running statistics after the training forward: PyTorch
     * momentum 0.1 (ONNX 0.9), unbiased batch variance. */
    f = open_index(name, ".bnstats.txt");
    if (!f && strstr(name, "_bn")) fail_msg("%s: missing bnstats", name);
    if (f) {
        float *ref_bn = load_grad_tensor(name, ".bnstats.f32", &fs);
        assert_non_null(ref_bn);
        off = 0;
        while (fscanf(f, "%199s %lld", pname, &numel) == 2) {
            int v = graph_find_value(&g, pname);
            assert_true(v >= 0);
            assert_true(allclose(g.values[v].data, ref_bn + off,
                                 (size_t)numel, 1e-6, 1e-5, pname));
            off += numel;
        }
        assert_true(off > 0);
        fclose(f);
        free(ref_bn);
    }
    train_exec_free(t);
    graph_free(&g);
    free(x);
    free(labf);
    free(lab);
    free(ref_loss);
    free(ref_grads);
}

static void test_unet2d(void **state)
{
    (void)state;
    check_net("unet2d", 1);
}

static void test_unet2d_deep_supervision(void **state)
{
    (void)state;
    check_net("unet2d_ds", 1);
}

static void test_unet3d(void **state)
{
    (void)state;
    check_net("unet3d", 0);
}

static void test_batchnorm_train_mode(void **state)
{
    (void)state;
    check_net("classic2d_bn", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unet2d),
        cmocka_unit_test(test_unet2d_deep_supervision),
        cmocka_unit_test(test_unet3d),
        cmocka_unit_test(test_batchnorm_train_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
