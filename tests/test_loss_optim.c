/* Losses, optimisers and whole training steps: CE + Dice against PyTorch
 * and finite differences, label downscaling, hard Dice, Adam / SGD steps
 * against PyTorch, poly LR, clipping, slicing optimiser state,
 * determinism 1 vs 2 threads, gradient injection, a small overfit run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/train/loss.h"
#include "compressor/train/optim.h"
#include "compressor/train/slice.h"
#include "compressor/train/train_exec.h"
#include "runtime/common.h"
#include "tests/graphbuild.h"
#include "tests/testutil.h"

/* |a - b| <= eps in double (cmocka's assert_float_equal works in float) */
#define assert_near(a, b, eps)                                               \
    assert_true(fabs((double)(a) - (double)(b)) <= (double)(eps))

static float *load_grad_tensor(const char *file, Shape *s)
{
    char rel[256], path[300];
    snprintf(rel, sizeof rel, "grad/%s", file);
    int nd = 0;
    float *t = load_tensor(fixture_path(rel, path, sizeof path), s->d, &nd);
    s->ndim = nd;
    assert_non_null(t);
    return t;
}

static float max_abs(const float *x, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++)
        m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

/* ---- loss against PyTorch (float64 reference) ---- */

static void test_loss_vs_torch(void **state)
{
    (void)state;
    Shape xs, ps, ls, cs;
    float *x = load_grad_tensor("loss2d.x.f32", &xs);
    float *probs = load_grad_tensor("loss2d.probs.f32", &ps);
    float *labf = load_grad_tensor("loss2d.labels.f32", &ls);
    float *cases = load_grad_tensor("loss2d.cases.f32", &cs);
    int64_t n = shape_numel(&xs), nl = shape_numel(&ls);
    assert_int_equal(cs.d[0], 4);
    assert_int_equal(cs.d[1], 3 + n);
    uint8_t *lab = malloc((size_t)nl);
    float *dx = malloc((size_t)n * sizeof *dx);
    for (int64_t i = 0; i < nl; i++)
        lab[i] = (uint8_t)labf[i];
    const int flags[4][2] = {{1, 1}, {1, 0}, {0, 1}, {0, 0}};
    for (int c = 0; c < 4; c++) {
        LossOptions o;
        loss_options_default(&o, 2);
        o.from_logits = flags[c][0];
        o.batch_dice = flags[c][1];
        LossValue v = {0, 0, 0};
        memset(dx, 0, (size_t)n * sizeof *dx);
        assert_int_equal(loss_ce_dice(&v, dx, o.from_logits ? x : probs, &xs,
                                      lab, &o, 1.0f),
                         0);
        const float *row = cases + c * cs.d[1];
        float got[3] = {(float)v.total, (float)v.ce, (float)v.dice};
        /* inputs are the float32 roundings of PyTorch's float64 tensors:
         * ~1e-7 relative, amplified little by the smooth loss */
        assert_true(allclose(got, row, 3, 1e-6, 1e-5, "loss value"));
        assert_true(allclose(dx, row + 3, (size_t)n,
                             1e-5 * (double)max_abs(row + 3, n), 1e-4,
                             "loss gradient"));
    }
    free(x);
    free(probs);
    free(labf);
    free(cases);
    free(lab);
    free(dx);
}

/* ---- loss against central differences ---- */

static double loss_at(const float *x, const Shape *xs, const uint8_t *lab,
                      const LossOptions *o)
{
    LossValue v = {0, 0, 0};
    assert_int_equal(loss_ce_dice(&v, NULL, x, xs, lab, o, 0.75f), 0);
    return v.total;
}

static void test_loss_finite_differences(void **state)
{
    (void)state;
    TestRng rng = {77};
    Shape xs = {5, {2, 3, 3, 4, 2}}; /* 3D, odd sizes */
    const int64_t n = shape_numel(&xs), nl = n / 3;
    float *x = malloc((size_t)n * sizeof *x);
    float *dx = malloc((size_t)n * sizeof *dx);
    uint8_t *lab = malloc((size_t)nl);
    for (int64_t i = 0; i < nl; i++)
        lab[i] = (uint8_t)(trng_next(&rng) % 3);
    for (int c = 0; c < 8; c++) {
        LossOptions o;
        loss_options_default(&o, 3);
        o.from_logits = c & 1;
        o.batch_dice = (c >> 1) & 1;
        o.include_background = (c >> 2) & 1;
        if (o.from_logits)
            trng_fill(&rng, x, (size_t)n, -2.0f, 2.0f);
        else /* any positive input is valid for the probability form */
            trng_fill(&rng, x, (size_t)n, 0.05f, 1.0f);
        memset(dx, 0, (size_t)n * sizeof *dx);
        LossValue v = {0, 0, 0};
        assert_int_equal(loss_ce_dice(&v, dx, x, &xs, lab, &o, 0.75f), 0);
        /* h = 2^-10 keeps x +- h exact in float for |x| < 2, so the
         * difference sees only the O(h^2) truncation (~1e-6) and double
         * rounding: 1e-4 relative is ample and catches any wrong term. */
        const float h = 1.0f / 1024.0f;
        float *fd = malloc((size_t)n * sizeof *fd);
        for (int64_t i = 0; i < n; i++) {
            float x0 = x[i];
            x[i] = x0 + h;
            double lp = loss_at(x, &xs, lab, &o);
            x[i] = x0 - h;
            double lm = loss_at(x, &xs, lab, &o);
            x[i] = x0;
            fd[i] = (float)((lp - lm) / (2.0 * (double)h));
        }
        char what[64];
        snprintf(what, sizeof what, "loss fd case %d", c);
        assert_true(allclose(dx, fd, (size_t)n, 1e-4 * (double)max_abs(fd, n),
                             1e-3, what));
        free(fd);
    }
    free(x);
    free(dx);
    free(lab);
}

static void test_bad_label(void **state)
{
    (void)state;
    Shape xs = {3, {1, 2, 4}};
    float x[8] = {0};
    uint8_t lab[4] = {0, 1, 2, 0};
    LossOptions o;
    loss_options_default(&o, 1);
    LossValue v = {0, 0, 0};
    sl_error_quiet(1);
    assert_int_equal(loss_ce_dice(&v, NULL, x, &xs, lab, &o, 1.0f), ERR_ARG);
    sl_error_quiet(0);
    assert_non_null(strstr(sl_error_last(), "label value 2"));
    sl_error_reset();
}

/* ---- deep supervision pieces ---- */

static void test_downsample_and_weights(void **state)
{
    (void)state;
    /* 1 x 4 x 5 -> 1 x 2 x 3: rows 1, 3; columns floor((2j+1)*5/6) = 0,2,4 */
    uint8_t src[20], dst[6];
    for (int i = 0; i < 20; i++)
        src[i] = (uint8_t)i;
    int64_t ss[2] = {4, 5}, ds[2] = {2, 3};
    loss_downsample_labels(dst, src, 1, 2, ss, ds);
    const uint8_t want[6] = {5, 7, 9, 15, 17, 19};
    assert_memory_equal(dst, want, 6);
    float w[3];
    loss_ds_weights(w, 3, 0);
    assert_near(w[0], 4.0 / 7.0, 1e-7);
    assert_near(w[1], 2.0 / 7.0, 1e-7);
    assert_near(w[2], 1.0 / 7.0, 1e-7);
    loss_ds_weights(w, 3, 1);
    assert_near(w[0], 2.0 / 3.0, 1e-7);
    assert_near(w[2], 0.0, 0.0);
}

static void test_metric_dice(void **state)
{
    (void)state;
    /* 1 sample, 3 classes, 4 voxels; argmax = 0, 1, 1, 2 (voxel 3 ties
     * 2 vs 2 between classes 1 and 2 -> no, class 2 is larger) */
    Shape xs = {3, {1, 3, 4}};
    const float x[12] = {/* k0 */ 5, 0, 0, 0, /* k1 */ 0, 5, 5, 1,
                         /* k2 */ 0, 0, 1, 2};
    const uint8_t lab[4] = {0, 1, 2, 2};
    int64_t tp[3] = {0}, fp[3] = {0}, fn[3] = {0};
    assert_int_equal(metric_confusion(tp, fp, fn, x, &xs, lab), 0);
    double d[3];
    metric_dice(d, tp, fp, fn, 3);
    assert_near(d[0], 1.0, 1e-12);
    assert_near(d[1], 2.0 / 3.0, 1e-12); /* tp 1, fp 1 */
    assert_near(d[2], 2.0 / 3.0, 1e-12); /* tp 1, fn 1 */
    int64_t z[1] = {0};
    metric_dice(d, z, z, z, 1);
    assert_true(isnan(d[0]));
}

/* ---- optimisers ---- */

static void optim_vs_torch(OptimKind kind, const char *file)
{
    Shape ws, gs, rs;
    float *w0 = load_grad_tensor("optim.w0.f32", &ws);
    float *grads = load_grad_tensor("optim.grads.f32", &gs);
    float *ref = load_grad_tensor(file, &rs);
    int64_t n = ws.d[0];
    OptimOptions oo;
    optim_options_default(&oo, kind);
    if (kind == OPTIM_ADAM) oo.weight_decay = 1e-2f; /* as the fixture */
    oo.lr = 1e-2f;
    Optim *opt = NULL;
    assert_int_equal(optim_create(&oo, &opt), 0);
    TrainParam p = {5, ws, n, w0, NULL};
    for (int s = 0; s < 3; s++) {
        p.grad = grads + s * n;
        assert_int_equal(optim_step(opt, &p, 1, oo.lr), 0);
        /* same float32 formulas as PyTorch; the order of a few roundings
         * differs (1-2 ulp of the update), far below a step's size */
        assert_true(allclose(w0, ref + s * n, (size_t)n, 1e-7, 1e-6, file));
    }
    assert_int_equal(optim_find(opt, 5)->step, 3);
    optim_free(opt);
    free(w0);
    free(grads);
    free(ref);
}

static void test_adam_vs_torch(void **state)
{
    (void)state;
    optim_vs_torch(OPTIM_ADAM, "optim.adam.f32");
}

static void test_sgd_nesterov_vs_torch(void **state)
{
    (void)state;
    optim_vs_torch(OPTIM_SGD, "optim.sgd.f32");
}

static void test_poly_lr(void **state)
{
    (void)state;
    assert_near(optim_poly_lr(1e-2f, 0, 100), 1e-2, 1e-9);
    assert_near(optim_poly_lr(1e-2f, 50, 100), 1e-2 * pow(0.5, 0.9), 1e-8);
    assert_near(optim_poly_lr(1e-2f, 99, 100), 1e-2 * pow(0.01, 0.9), 1e-9);
    assert_near(optim_poly_lr(1e-2f, 100, 100), 0.0, 0.0);
}

/* The default rate by run length: Adam's full 1e-3 up to 1000
 * iterations, then 1e-3 x 1000 / iterations (the brain default, 20 x
 * 250, gets 2e-4); SGD's 1e-2 at any length.  Tolerance: the float
 * rounding of 1e-2 (2e-10). */
static void test_default_lr(void **state)
{
    (void)state;
    assert_near(optim_default_lr(OPTIM_ADAM, 1), 1e-3, 1e-9);
    assert_near(optim_default_lr(OPTIM_ADAM, 120), 1e-3, 1e-9);
    assert_near(optim_default_lr(OPTIM_ADAM, 1000), 1e-3, 1e-9);
    assert_near(optim_default_lr(OPTIM_ADAM, 1250), 8e-4, 1e-9);
    assert_near(optim_default_lr(OPTIM_ADAM, 5000), 2e-4, 1e-9);
    assert_near(optim_default_lr(OPTIM_SGD, 5000), 1e-2, 1e-9);
}

static void test_clip_grad_norm(void **state)
{
    (void)state;
    float g1[2] = {3, 0}, g2[1] = {4}, w[3] = {0};
    TrainParam p[2] = {{1, {1, {2}}, 2, w, g1}, {2, {1, {1}}, 1, w + 2, g2}};
    assert_near(optim_clip_grad_norm(p, 2, 10.0), 5.0, 1e-12);
    assert_near(g1[0], 3.0, 0.0); /* below the bound: unchanged */
    assert_near(optim_clip_grad_norm(p, 2, 1.0), 5.0, 1e-12);
    assert_near(g1[0], 3.0 / (5.0 + 1e-6), 1e-7);
    assert_near(g2[0], 4.0 / (5.0 + 1e-6), 1e-7);
    assert_near(optim_clip_grad_norm(p, 2, 0.0), 1.0, 1e-6);
}

static void test_slice_state(void **state)
{
    (void)state;
    /* parameter [3, 2]: keep rows 0 and 2, then column 1 */
    float w[6] = {1, 2, 3, 4, 5, 6}, g[6] = {1, 1, 1, 1, 1, 1};
    TrainParam p = {7, {2, {3, 2}}, 6, w, g};
    OptimOptions oo;
    optim_options_default(&oo, OPTIM_ADAM);
    Optim *opt = NULL;
    assert_int_equal(optim_create(&oo, &opt), 0);
    assert_int_equal(optim_step(opt, &p, 1, 0.1f), 0);
    OptimState *s = optim_find(opt, 7);
    assert_non_null(s);
    for (int i = 0; i < 6; i++)
        s->m[i] = (float)i; /* recognisable */
    const int rows[2] = {0, 2}, col[1] = {1};
    TensorSlice ts[2] = {{7, 0, 2, rows}, {7, 1, 1, col}};
    assert_int_equal(optim_slice_all(opt, ts, 2), 0);
    s = optim_find(opt, 7);
    assert_int_equal(s->numel, 2);
    assert_near(s->m[0], 1.0, 0.0);
    assert_near(s->m[1], 5.0, 0.0);
    /* the weights sliced with the same list */
    float *wd = w;
    Shape sh = p.shape;
    assert_int_equal(tensor_slice_apply(&wd, &sh, &ts[0]), 0);
    assert_int_equal(tensor_slice_apply(&wd, &sh, &ts[1]), 0);
    assert_near(w[0], 2.0f - 0.1f, 1e-6); /* Adam's first step: lr */
    assert_int_equal(sh.d[0], 2);
    assert_int_equal(sh.d[1], 1);
    /* a stale (unsliced) parameter shape is an error, not a reset */
    sl_error_quiet(1);
    assert_int_equal(optim_step(opt, &p, 1, 0.1f), ERR_SHAPE);
    p.shape = sh;
    p.numel = 2;
    assert_int_equal(optim_step(opt, &p, 1, 0.1f), 0);
    assert_int_equal(optim_find(opt, 7)->step, 2);
    /* bad keep lists change nothing */
    const int bad[2] = {1, 1};
    TensorSlice bs = {7, 0, 2, bad};
    assert_int_equal(optim_slice(opt, &bs), ERR_ARG);
    TensorSlice ax = {7, 2, 1, col};
    assert_int_equal(tensor_slice_apply(&wd, &sh, &ax), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
    /* renumbering */
    int map[8] = {-1, -1, -1, -1, -1, -1, -1, 3};
    optim_remap(opt, map, 8);
    assert_non_null(optim_find(opt, 3));
    assert_null(optim_find(opt, 7));
    optim_free(opt);
}

/* ---- whole training steps ---- */

/* Labels [B, H, W]: a box of class 1 and one of class 2 per sample. */
static void box_labels(uint8_t *lab, int64_t b_n, int64_t h, int64_t w)
{
    for (int64_t b = 0; b < b_n; b++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                uint8_t v = 0;
                if (y >= 2 + b && y < h / 2 && x >= 2 && x < w / 2) v = 1;
                if (y >= h / 2 && y < h - 2 && x >= w / 2 - b && x < w - 1)
                    v = 2;
                lab[(b * h + y) * w + x] = v;
            }
}

/* One step: zero, forward, loss, backward, Adam.  Returns the loss. */
static double train_step(TrainExec *t, Optim *opt, const float *x,
                         const uint8_t *lab, float lr)
{
    LossOptions lo;
    loss_options_default(&lo, 2);
    LossValue v;
    train_zero_grads(t);
    assert_int_equal(train_forward(t, x), 0);
    assert_int_equal(train_loss_outputs(t, &v, lab, NULL, &lo), 0);
    assert_int_equal(train_backward(t), 0);
    assert_int_equal(optim_step(opt, train_params(t), train_n_params(t), lr),
                     0);
    return v.total;
}

static void test_determinism_threads(void **state)
{
    (void)state;
    /* every op type, BatchNorm in training mode included */
    Graph g1, g2;
    assert_int_equal(build_all_ops(&g1, 5), 0);
    assert_int_equal(graph_clone(&g2, &g1), 0);
    Shape xs = {4, {2, 2, 12, 10}};
    int64_t n = shape_numel(&xs);
    float *x = malloc((size_t)n * sizeof *x);
    uint8_t lab[2 * 12 * 10];
    TestRng rng = {9};
    trng_fill(&rng, x, (size_t)n, -1.0f, 1.0f);
    box_labels(lab, 2, 12, 10);
    TrainExec *t1 = NULL, *t2 = NULL;
    assert_int_equal(train_exec_create(&g1, &xs, 1, &t1), 0);
    assert_int_equal(train_exec_create(&g2, &xs, 2, &t2), 0);
    OptimOptions oo;
    optim_options_default(&oo, OPTIM_ADAM);
    Optim *o1 = NULL, *o2 = NULL;
    assert_int_equal(optim_create(&oo, &o1), 0);
    assert_int_equal(optim_create(&oo, &o2), 0);
    for (int s = 0; s < 2; s++) {
        double l1 = train_step(t1, o1, x, lab, 1e-3f);
        double l2 = train_step(t2, o2, x, lab, 1e-3f);
        assert_memory_equal(&l1, &l2, sizeof l1);
    }
    /* bit-identical weights (running statistics included) and gradients */
    assert_int_equal(g1.n_values, g2.n_values);
    for (int v = 0; v < g1.n_values; v++) {
        if (!g1.values[v].data) continue;
        size_t bytes = (size_t)shape_numel(&g1.values[v].shape) * 4;
        assert_memory_equal(g1.values[v].data, g2.values[v].data, bytes);
    }
    for (int i = 0; i < train_n_params(t1); i++) {
        TrainParam *p1 = &train_params(t1)[i], *p2 = &train_params(t2)[i];
        assert_memory_equal(p1->grad, p2->grad, (size_t)p1->numel * 4);
    }
    train_exec_free(t1);
    train_exec_free(t2);
    optim_free(o1);
    optim_free(o2);
    graph_free(&g1);
    graph_free(&g2);
    free(x);
}

/* Gradient injected into an activation's grad before train_backward is
 * propagated together with the loss's: grads(loss + inject) = grads(loss)
 * + grads(inject), and parameters downstream of the activation get none
 * from the injection alone. */
static void test_gradient_injection(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 21), 0);
    Shape xs = {4, {2, 1, 8, 8}};
    int64_t n = shape_numel(&xs);
    float x[2 * 8 * 8];
    uint8_t lab[2 * 8 * 8];
    TestRng rng = {4};
    trng_fill(&rng, x, (size_t)n, -1.0f, 1.0f);
    box_labels(lab, 2, 8, 8);
    TrainExec *t = NULL;
    assert_int_equal(train_exec_create(&g, &xs, 2, &t), 0);
    /* the point: output of the first LeakyReLU (the encoder block) */
    int point = -1;
    for (int i = 0; i < g.n_nodes && point < 0; i++)
        if (g.nodes[i].op == OP_LEAKY_RELU) point = g.nodes[i].out;
    assert_true(point >= 0);
    assert_non_null(train_value(t, point));
    const Shape *ps = train_shape(t, point);
    int64_t pn = shape_numel(ps);
    float *r = malloc((size_t)pn * sizeof *r);
    trng_fill(&rng, r, (size_t)pn, -0.01f, 0.01f);
    int np = train_n_params(t);
    int64_t total = 0;
    for (int i = 0; i < np; i++)
        total += train_params(t)[i].numel;
    float *ga = calloc((size_t)total, 4), *gb = calloc((size_t)total, 4),
          *gc = calloc((size_t)total, 4);
    LossOptions lo;
    loss_options_default(&lo, 2);
    for (int run = 0; run < 3; run++) {
        LossValue v;
        train_zero_grads(t);
        assert_int_equal(train_forward(t, x), 0);
        if (run != 2)
            assert_int_equal(train_loss_outputs(t, &v, lab, NULL, &lo), 0);
        if (run != 0) {
            float *gp = train_grad(t, point);
            for (int64_t i = 0; i < pn; i++)
                gp[i] += r[i];
        }
        assert_int_equal(train_backward(t), 0);
        float *dst = run == 0 ? ga : run == 1 ? gb : gc;
        int64_t off = 0;
        for (int i = 0; i < np; i++) {
            TrainParam *p = &train_params(t)[i];
            memcpy(dst + off, p->grad, (size_t)p->numel * 4);
            off += p->numel;
        }
    }
    /* Conv biases before an InstanceNorm have a true gradient of 0 that
     * float sums leave at ~1e-9: the absolute tolerance follows the
     * largest gradient of the whole network, not of the tensor. */
    const double scale = (double)max_abs(gb, total);
    int64_t off = 0, upstream = 0, downstream = 0;
    for (int i = 0; i < np; i++) {
        TrainParam *p = &train_params(t)[i];
        /* parameters of nodes before the point's producer are upstream */
        int up = 0;
        for (int k = 0; k < g.n_nodes; k++)
            for (int j = 0; j < g.nodes[k].n_in; j++)
                if (g.nodes[k].in[j] == p->value &&
                    k < g.values[point].producer)
                    up = 1;
        float sum[4096];
        assert_true(p->numel <= 4096);
        for (int64_t j = 0; j < p->numel; j++)
            sum[j] = ga[off + j] + gc[off + j];
        /* float sums of two accumulations: rounding of the larger term */
        assert_true(allclose(gb + off, sum, (size_t)p->numel, 1e-6 * scale,
                             1e-4, "injected = loss + injection"));
        float m = max_abs(gc + off, p->numel);
        if (up) {
            upstream++;
            assert_true(m > 0.0f || p->shape.ndim == 1);
        } else {
            downstream++;
            assert_near(m, 0.0, 0.0);
        }
        off += p->numel;
    }
    assert_true(upstream >= 2 && downstream >= 2);
    free(r);
    free(ga);
    free(gb);
    free(gc);
    train_exec_free(t);
    graph_free(&g);
}

/* 50 Adam steps (lr 1e-2, poly decay) on one fixed batch must cut the
 * loss at least 4x: the tiny U-Net memorises two boxes (measured 1.855 ->
 * 0.245, 7.6x; the margin absorbs initialisation changes, while a wrong
 * gradient sign or a dead optimiser leaves the loss near 1.8). */
static void test_overfit(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 8, 3, 0, 33), 0);
    Shape xs = {4, {2, 1, 16, 16}};
    int64_t n = shape_numel(&xs);
    float *x = malloc((size_t)n * sizeof *x);
    uint8_t lab[2 * 16 * 16];
    box_labels(lab, 2, 16, 16);
    TestRng rng = {12};
    for (int64_t i = 0; i < n; i++) /* image = labels + noise */
        x[i] = (float)lab[i] + trng_uniform(&rng, -0.3f, 0.3f);
    TrainExec *t = NULL;
    assert_int_equal(train_exec_create(&g, &xs, 2, &t), 0);
    OptimOptions oo;
    optim_options_default(&oo, OPTIM_ADAM);
    oo.lr = 1e-2f;
    Optim *opt = NULL;
    assert_int_equal(optim_create(&oo, &opt), 0);
    double first = 0, last = 0;
    for (int s = 0; s < 50; s++) {
        last = train_step(t, opt, x, lab, optim_poly_lr(oo.lr, s, 50));
        if (s == 0) first = last;
        assert_true(isfinite(last));
    }
    if (!(last < 0.25 * first))
        fail_msg("overfit: loss %.4f -> %.4f, expected a 4x cut", first,
                 last);
    fprintf(stderr, "overfit: loss %.4f -> %.4f after 50 Adam steps\n", first,
            last);
    optim_free(opt);
    train_exec_free(t);
    graph_free(&g);
    free(x);
}

/* Every allocation of executor creation, the loss and the optimiser
 * failing in turn: ERR_NOMEM, nothing leaked (ASan), then success. */
static void test_alloc_failures(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 1, 8), 0);
    Shape xs = {4, {1, 1, 8, 8}};
    float x[64];
    uint8_t lab[64];
    TestRng rng = {2};
    trng_fill(&rng, x, 64, -1.0f, 1.0f);
    box_labels(lab, 1, 8, 8);
    OptimOptions oo;
    optim_options_default(&oo, OPTIM_ADAM);
    sl_error_quiet(1);
    int rc = ERR_NOMEM, n = 0;
    for (; rc != 0; n++) {
        TrainExec *t = NULL;
        Optim *opt = NULL;
        LossOptions lo;
        LossValue v;
        loss_options_default(&lo, 2);
        sl_alloc_fail_after(n);
        rc = train_exec_create(&g, &xs, 1, &t);
        if (!rc) rc = optim_create(&oo, &opt);
        if (!rc) {
            train_zero_grads(t);
            rc = train_forward(t, x);
        }
        if (!rc) rc = train_loss_outputs(t, &v, lab, NULL, &lo);
        if (!rc) rc = train_backward(t);
        if (!rc)
            rc = optim_step(opt, train_params(t), train_n_params(t), 0.1f);
        sl_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == ERR_NOMEM);
        if (rc) assert_true(t == NULL || opt == NULL || n > 0);
        optim_free(opt);
        train_exec_free(t);
        assert_true(n < 10000);
    }
    sl_error_quiet(0);
    sl_error_reset();
    assert_true(n > 10); /* many allocation points were exercised */
    graph_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_vs_torch),
        cmocka_unit_test(test_loss_finite_differences),
        cmocka_unit_test(test_bad_label),
        cmocka_unit_test(test_downsample_and_weights),
        cmocka_unit_test(test_metric_dice),
        cmocka_unit_test(test_adam_vs_torch),
        cmocka_unit_test(test_sgd_nesterov_vs_torch),
        cmocka_unit_test(test_poly_lr),
        cmocka_unit_test(test_default_lr),
        cmocka_unit_test(test_clip_grad_norm),
        cmocka_unit_test(test_slice_state),
        cmocka_unit_test(test_determinism_threads),
        cmocka_unit_test(test_gradient_injection),
        cmocka_unit_test(test_overfit),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
