/* Segmentation driver and the `segment` CLI on tiny models with known
 * behaviour:
 *   threshold: a 1x1 conv whose two logits are +-(x - t): label = x > t
 *              on the normalised intensity, optionally then Softmax;
 *   shift:     a 3x3(x3) conv with one tap: the label of a voxel is the
 *              threshold of a neighbour along known tensor axes, which
 *              pins down the NIfTI axis <-> tensor axis mapping;
 *   down/up:   optionally a zero-weight strided conv + transposed conv
 *              path added to the output: values unchanged, but the
 *              network then only accepts even sizes, so padding and
 *              cropping are exercised.
 * Expected labels are computed here independently (double statistics).
 */
#include "testutil.h"
#include "niftifixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nifti2_io.h>

#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/nifti_io.h"
#include "runtime/segment.h"
#include "runtime/sslim.h"
#include "runtime/volume.h"

enum { KIND_THRESH, KIND_SHIFT };

typedef struct {
    int dims, axis, nmod, kind, downup, softmax;
    VoxelOrder order;
    int patch[3];
    float t; /* threshold on the normalised first modality */
    NormalizeKind norm;
    float lo, hi; /* CT window */
} ModelSpec;

static float *weights(size_t n)
{
    float *w = sl_calloc(n ? n : 1, sizeof(float));
    assert_non_null(w);
    return w;
}

static int add_value(Graph *g, const char *name, int ndim, const int64_t *d,
                     float *data)
{
    Shape s = {.ndim = ndim};
    for (int i = 0; i < ndim; i++) s.d[i] = d[i];
    int v = graph_add_value(g, name, &s, data);
    assert_true(v >= 0);
    return v;
}

static int add_conv(Graph *g, const char *name, int x, int w, int b,
                    int out, int nsp, int k, int stride, int pad,
                    int transpose)
{
    Node n;
    memset(&n, 0, sizeof n);
    n.op = transpose ? OP_CONV_TRANSPOSE : OP_CONV;
    n.name = (char *)(uintptr_t)name;
    n.n_in = 3;
    n.in[0] = x;
    n.in[1] = w;
    n.in[2] = b;
    n.out = out;
    n.p.conv.nsp = nsp;
    n.p.conv.group = 1;
    for (int t = 0; t < nsp; t++) {
        n.p.conv.kernel[t] = k;
        n.p.conv.stride[t] = stride;
        n.p.conv.dilation[t] = 1;
        n.p.conv.pad_lo[t] = pad;
        n.p.conv.pad_hi[t] = pad;
    }
    int r = graph_add_node(g, &n);
    assert_true(r >= 0);
    return r;
}

static char *sdup(const char *s)
{
    char *d = sl_strdup(s);
    assert_non_null(d);
    return d;
}

/* Build the model described by `ms` into an initialised graph. */
static void build_model(Graph *g, const ModelSpec *ms)
{
    int nsp = ms->dims, C = ms->nmod;
    int64_t d[5] = {1, C, 1, 1, 1};
    int x = add_value(g, "input", 2 + nsp, d, NULL);
    g->input = x;
    /* Main path: OC=2 conv on modality 0 only. */
    int k = ms->kind == KIND_SHIFT ? 3 : 1;
    size_t taps = (size_t)(nsp == 3 ? k * k * k : k * k);
    float *w = weights(2 * (size_t)C * taps);
    /* The single tap: 1x1 -> 0; shift -> offset +1 along the first
     * spatial axis, -1 along the last, 0 along a middle one. */
    size_t tap = 0;
    if (ms->kind == KIND_SHIFT)
        tap = nsp == 3 ? (size_t)(2 * 9 + 1 * 3 + 0) : (size_t)(2 * 3 + 0);
    w[0 * C * taps + tap] = -1.0f; /* class 0: t - x */
    w[1 * C * taps + tap] = 1.0f;  /* class 1: x - t */
    float *b = weights(2);
    b[0] = ms->t;
    b[1] = -ms->t;
    int64_t wd[5] = {2, C, k, k, k};
    int wv = add_value(g, "w_main", 2 + nsp, wd, w);
    int64_t bd[1] = {2};
    int bv = add_value(g, "b_main", 1, bd, b);
    int64_t ad[5] = {1, 2, 1, 1, 1};
    int main_out = add_value(g, "main", 2 + nsp, ad, NULL);
    add_conv(g, "conv_main", x, wv, bv, main_out, nsp, k, 1,
             ms->kind == KIND_SHIFT ? 1 : 0, 0);
    int last = main_out;
    if (ms->downup) {
        int64_t wd2[5] = {4, C, 2, 2, 2}, bd2[1] = {4};
        int w2 = add_value(g, "w_down", 2 + nsp, wd2,
                           weights(4 * (size_t)C * (nsp == 3 ? 8 : 4)));
        int b2 = add_value(g, "b_down", 1, bd2, weights(4));
        int down = add_value(g, "down", 2 + nsp, ad, NULL);
        add_conv(g, "conv_down", x, w2, b2, down, nsp, 2, 2, 0, 0);
        int64_t wd3[5] = {4, 2, 2, 2, 2}, bd3[1] = {2};
        int w3 = add_value(g, "w_up", 2 + nsp, wd3,
                           weights(8 * (size_t)(nsp == 3 ? 8 : 4)));
        int b3 = add_value(g, "b_up", 1, bd3, weights(2));
        int up = add_value(g, "up", 2 + nsp, ad, NULL);
        add_conv(g, "conv_up", down, w3, b3, up, nsp, 2, 2, 0, 1);
        int sum = add_value(g, "sum", 2 + nsp, ad, NULL);
        Node n;
        memset(&n, 0, sizeof n);
        n.op = OP_ADD;
        n.name = (char *)(uintptr_t)"add";
        n.n_in = 2;
        n.in[0] = main_out;
        n.in[1] = up;
        n.out = sum;
        assert_true(graph_add_node(g, &n) >= 0);
        last = sum;
    }
    if (ms->softmax) {
        int sm = add_value(g, "probs", 2 + nsp, ad, NULL);
        Node n;
        memset(&n, 0, sizeof n);
        n.op = OP_SOFTMAX;
        n.name = (char *)(uintptr_t)"softmax";
        n.n_in = 1;
        n.in[0] = last;
        n.out = sm;
        n.p.softmax.axis = 1;
        assert_true(graph_add_node(g, &n) >= 0);
        last = sm;
    }
    g->outputs[0] = last;
    g->n_outputs = 1;
    ModelMeta *m = &g->meta;
    m->n_classes = 2;
    m->class_names = sl_calloc(2, sizeof(char *));
    m->class_names[0] = sdup("background");
    m->class_names[1] = sdup("bright");
    m->n_modalities = C;
    m->modality_names = sl_calloc((size_t)C, sizeof(char *));
    m->normalize = sl_calloc((size_t)C, sizeof(Normalize));
    for (int i = 0; i < C; i++) {
        m->modality_names[i] = sdup(i == 0 ? "t1" : "t2");
        m->normalize[i].kind = ms->norm;
        m->normalize[i].lo = ms->lo;
        m->normalize[i].hi = ms->hi;
    }
    m->dims = ms->dims;
    m->axis = ms->axis;
    m->order = ms->order;
    for (int t = 0; t < 3; t++) m->patch[t] = ms->patch[t];
    m->source_name = sdup("test_segment.c");
    assert_int_equal(graph_validate(g, "test model"), 0);
}

/* Voxel values on a coarse grid (multiples of 10) so that a threshold
 * half-way between two levels is far from every voxel. */
static void fill_volume(Volume *v, int64_t nx, int64_t ny, int64_t nz,
                        int nmod, int seed)
{
    assert_int_equal(volume_alloc(v, nx, ny, nz, nmod), 0);
    TestRng r = {(uint64_t)seed};
    int64_t n = volume_voxels(v) * nmod;
    for (int64_t i = 0; i < n; i++)
        v->data[i] = 10.0f * (float)(trng_next(&r) % 7) - 20.0f;
}

/* Normalised intensity of modality 0 as the model should see it. */
static double *normalised(const Volume *v, const ModelSpec *ms)
{
    int64_t n = volume_voxels(v);
    double *o = malloc(sizeof(double) * (size_t)n);
    assert_non_null(o);
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) s += (double)v->data[i];
    double mean = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        ss += ((double)v->data[i] - mean) * ((double)v->data[i] - mean);
    double sd = sqrt(ss / (double)n);
    for (int64_t i = 0; i < n; i++) {
        double x = (double)v->data[i];
        double lo = (double)ms->lo, hi = (double)ms->hi;
        if (ms->norm == NORMALIZE_ZSCORE)
            x = (x - mean) / (sd > 1e-8 ? sd : 1e-8);
        else if (ms->norm == NORMALIZE_CT) {
            x = x < lo ? lo : x > hi ? hi : x;
            x = (x - lo) / (hi - lo) * 2 - 1;
        }
        o[i] = x;
    }
    return o;
}

/* Threshold half-way between raw levels 10 and 20, in normalised units. */
static float mid_threshold(const Volume *v, const ModelSpec *ms)
{
    Volume one = *v;
    one.n_mod = 1;
    double *nv = normalised(&one, ms);
    /* Find the normalised values of two voxels at 10 and 20. */
    double a = NAN, b = NAN;
    for (int64_t i = 0; i < volume_voxels(v); i++) {
        if (v->data[i] == 10.0f) a = nv[i];
        if (v->data[i] == 20.0f) b = nv[i];
    }
    free(nv);
    assert_false(isnan(a) || isnan(b));
    return (float)(0.5 * (a + b));
}

/* The tensor axis -> NIfTI axis table written out from the design (not
 * from volume_axes, so a bug there cannot hide in the expectation). */
static void test_axes(const ModelSpec *ms, int ax[3])
{
    static const int t3[2][3] = {{2, 1, 0}, {0, 1, 2}};
    static const int t2[2][3][3] = {
        {{0, 2, 1}, {1, 2, 0}, {2, 1, 0}}, /* nnU-Net: slowest first */
        {{0, 1, 2}, {1, 0, 2}, {2, 0, 1}}, /* nibabel: i, j, k order */
    };
    const int *src = ms->dims == 3 ? t3[ms->order] : t2[ms->order][ms->axis];
    memcpy(ax, src, 3 * sizeof(int));
}

/* Expected label map: threshold of the normalised value at the voxel
 * (threshold kind) or at its neighbour +1 along tensor axis ax[first],
 * -1 along ax[last] (shift kind; outside the volume reads 0). */
static int16_t *expected(const Volume *v, const ModelSpec *ms)
{
    Volume one = *v;
    one.n_mod = 1;
    double *nv = normalised(&one, ms);
    int ax[3];
    test_axes(ms, ax);
    int64_t n = volume_voxels(v);
    int16_t *e = malloc(sizeof(int16_t) * (size_t)n);
    assert_non_null(e);
    for (int64_t k = 0; k < v->dim[2]; k++)
        for (int64_t j = 0; j < v->dim[1]; j++)
            for (int64_t i = 0; i < v->dim[0]; i++) {
                int64_t c[3] = {i, j, k};
                if (ms->kind == KIND_SHIFT) {
                    int first = ms->dims == 3 ? 0 : 1;
                    c[ax[first]] += 1;
                    c[ax[2]] -= 1;
                }
                double x = 0.0;
                if (c[0] >= 0 && c[0] < v->dim[0] && c[1] >= 0 &&
                    c[1] < v->dim[1] && c[2] >= 0 && c[2] < v->dim[2])
                    x = nv[(c[2] * v->dim[1] + c[1]) * v->dim[0] + c[0]];
                e[(k * v->dim[1] + j) * v->dim[0] + i] = x > (double)ms->t;
            }
    free(nv);
    return e;
}

static int count_diff(const int16_t *a, const int16_t *b, int64_t n)
{
    int d = 0;
    for (int64_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

/* Run the library on v with model ms; compare with the expected map. */
static void check_lib(const ModelSpec *ms0, int64_t nx, int64_t ny,
                      int64_t nz, int with_probs)
{
    ModelSpec ms = *ms0;
    Volume v;
    fill_volume(&v, nx, ny, nz, ms.nmod, (int)(nx * 131 + ny * 7 + nz));
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    int64_t n = volume_voxels(&v);
    int16_t *lab = malloc(sizeof(int16_t) * (size_t)n);
    float *probs = with_probs ? malloc(sizeof(float) * 2 * (size_t)n) : NULL;
    sl_error_reset();
    assert_int_equal(segment_volume(&g, &v, NULL, lab, probs), 0);
    int16_t *e = expected(&v, &ms);
    int bad = count_diff(lab, e, n);
    if (bad)
        fail_msg("dims %d axis %d order %d kind %d downup %d: %d of %lld "
                 "labels differ", ms.dims, ms.axis, ms.order, ms.kind,
                 ms.downup, bad, (long long)n);
    if (probs) {
        /* p1 = softmax(x - t, t - x) = 1 / (1 + exp(-2 (x - t))); the
         * network computes it in float32: 1e-5 absolute covers the
         * rounding of the conv, the exp and (3D) the weighted fusion. */
        Volume one = v;
        one.n_mod = 1;
        double *nv = normalised(&one, &ms);
        float *want = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            want[i] = (float)(1.0 / (1.0 + exp(-2.0 * (nv[i] - (double)ms.t))));
        assert_allclose(probs + n, want, (size_t)n, 1e-5, 0);
        for (int64_t i = 0; i < n; i++)
            assert_true(fabsf(probs[i] + probs[n + i] - 1.0f) < 1e-5f);
        free(want);
        free(nv);
    }
    free(e);
    free(lab);
    free(probs);
    graph_free(&g);
    volume_free(&v);
}

/* ---- volume.c units ---- */

static void test_volume_axes(void **state)
{
    (void)state;
    static const struct {
        VoxelOrder o;
        int dims, axis, ax[3];
    } cases[] = {
        {ORDER_NNUNET, 3, 0, {2, 1, 0}},  {ORDER_NIBABEL, 3, 0, {0, 1, 2}},
        {ORDER_NNUNET, 2, 2, {2, 1, 0}},  {ORDER_NNUNET, 2, 1, {1, 2, 0}},
        {ORDER_NNUNET, 2, 0, {0, 2, 1}},  {ORDER_NIBABEL, 2, 2, {2, 0, 1}},
        {ORDER_NIBABEL, 2, 1, {1, 0, 2}}, {ORDER_NIBABEL, 2, 0, {0, 1, 2}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int ax[3];
        assert_int_equal(
            volume_axes(cases[c].o, cases[c].dims, cases[c].axis, ax), 0);
        assert_memory_equal(ax, cases[c].ax, sizeof ax);
    }
    int ax[3];
    sl_error_quiet(1);
    assert_int_equal(volume_axes(ORDER_NNUNET, 2, 3, ax), ERR_ARG);
    assert_int_equal(volume_axes(ORDER_NNUNET, 4, 0, ax), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();

    /* Gather then argmax-scatter a box: every voxel lands where it came
     * from (2 "classes" = value and its negation). */
    Volume v;
    assert_int_equal(volume_alloc(&v, 5, 4, 3, 1), 0);
    for (int i = 0; i < 60; i++) v.data[i] = (float)(i % 7) - 3.0f;
    int64_t off[3] = {1, 1, 0}, box[3] = {2, 3, 2}, pad[3] = {3, 4, 4};
    assert_int_equal(volume_axes(ORDER_NNUNET, 3, 0, ax), 0);
    float buf[2 * 48];
    volume_gather(buf, &v, NULL, ax, off, box, pad);
    for (int i = 0; i < 48; i++) buf[48 + i] = -buf[i];
    int16_t lab[60];
    for (int i = 0; i < 60; i++) lab[i] = 7;
    volume_argmax_scatter(lab, v.dim, buf, 2, ax, off, box, pad);
    int touched = 0;
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < 5; i++) {
                int idx = (k * 4 + j) * 5 + i;
                /* ax = (k, j, i): the box spans k 1..2, j 1..3, i 0..1 */
                int in = k >= 1 && k <= 2 && j >= 1 && j <= 3 && i <= 1;
                if (!in) {
                    assert_int_equal(lab[idx], 7);
                    continue;
                }
                touched++;
                assert_int_equal(lab[idx], v.data[idx] >= 0 ? 0 : 1);
            }
    assert_int_equal(touched, 12);
    /* Padding is zero. */
    assert_true(buf[(0 * 4 + 3) * 4 + 0] == 0.0f);
    assert_true(buf[(2 * 4 + 0) * 4 + 0] == 0.0f);
    volume_free(&v);
}

static void test_normalisation(void **state)
{
    (void)state;
    Volume v;
    assert_int_equal(volume_alloc(&v, 3, 2, 2, 2), 0);
    for (int i = 0; i < 12; i++) {
        v.data[i] = 1000.0f + (float)i; /* large offset: two-pass stats */
        v.data[12 + i] = 7.0f;          /* constant: std 0 -> 1e-8 */
    }
    Normalize nz[2] = {{NORMALIZE_ZSCORE, 0, 0}, {NORMALIZE_ZSCORE, 0, 0}};
    assert_int_equal(volume_normalize(&v, nz), 0);
    /* mean 1005.5, population std sqrt((144-1)/12) */
    double sd = sqrt(143.0 / 12.0);
    for (int i = 0; i < 12; i++) {
        float want = (float)(((double)i - 5.5) / sd);
        assert_true(fabsf(v.data[i] - want) <= 1e-6f);
        assert_true(v.data[12 + i] == 0.0f);
    }
    /* CT: clip to [-100, 300] then (v - lo) / (hi - lo) * 2 - 1. */
    float raw[4] = {-1000.0f, -100.0f, 100.0f, 2000.0f};
    Normalize ct = {NORMALIZE_CT, -100.0f, 300.0f};
    NormAffine a;
    Volume one = {.dim = {4, 1, 1}, .n_mod = 1, .data = raw};
    assert_int_equal(volume_norm_affine(&one, 0, &ct, &a), 0);
    float want[4] = {-1.0f, -1.0f, 0.0f, 1.0f};
    for (int i = 0; i < 4; i++)
        assert_true(fabsf(norm_apply(&a, raw[i]) - want[i]) <= 1e-7f);
    Normalize bad = {NORMALIZE_CT, 5.0f, 5.0f};
    sl_error_quiet(1);
    assert_int_equal(volume_norm_affine(&one, 0, &bad, &a), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
    assert_int_equal(volume_norm_affine(&one, 0, NULL, &a), 0);
    assert_true(norm_apply(&a, 123.5f) == 123.5f);
    volume_free(&v);
}

/* zscore-fg: Otsu splits air from head; the statistics are the head's,
 * so padding the scan with air (a wider field of view) or with noisy air
 * changes nothing, where the plain zscore moves. */
static void test_foreground_normalisation(void **state)
{
    (void)state;
    TestRng r = {5};
    /* a 10^3 "head" of values 80..120 inside 20^3 of air 0..4 */
    Volume v, w;
    assert_int_equal(volume_alloc(&v, 20, 20, 20, 1), 0);
    assert_int_equal(volume_alloc(&w, 40, 40, 40, 1), 0);
    double s = 0, ss = 0;
    int n = 0;
    for (int k = 0; k < 20; k++)
        for (int j = 0; j < 20; j++)
            for (int i = 0; i < 20; i++) {
                int in = i >= 5 && i < 15 && j >= 5 && j < 15 && k >= 5 &&
                         k < 15;
                float x = in ? trng_uniform(&r, 80, 120)
                             : trng_uniform(&r, 0, 4);
                v.data[(k * 20 + j) * 20 + i] = x;
                w.data[((k + 10) * 40 + j + 10) * 40 + i + 10] = x;
                if (in) {
                    s += (double)x;
                    n++;
                }
            }
    double mean = s / n;
    for (int i = 0; i < 8000; i++) {
        double x = (double)v.data[i];
        if (x >= 80) ss += (x - mean) * (x - mean);
    }
    double thr = volume_otsu_threshold(v.data, 8000);
    assert_true(thr > 4.0 && thr <= 80.0);
    Normalize fg = {NORMALIZE_ZSCORE_FG, 0, 1}, z = {NORMALIZE_ZSCORE, 0, 0};
    NormAffine a, b, za, zb;
    assert_int_equal(volume_norm_affine(&v, 0, &fg, &a), 0);
    /* the head's own mean and population std */
    assert_true(fabs(a.shift - mean) < 1e-9 * mean);
    assert_true(fabs(1.0 / a.scale - sqrt(ss / n)) < 1e-9 * sqrt(ss / n));
    /* 7x the voxels, all air (exact zeros): the same statistics */
    assert_int_equal(volume_norm_affine(&w, 0, &fg, &b), 0);
    assert_true(a.shift == b.shift && a.scale == b.scale);
    assert_int_equal(volume_norm_affine(&v, 0, &z, &za), 0);
    assert_int_equal(volume_norm_affine(&w, 0, &z, &zb), 0);
    assert_true(fabs(za.shift - zb.shift) > 10.0); /* plain zscore moves */
    /* noisy air instead of zeros: still the head's statistics */
    for (int k = 0; k < 40; k++)
        for (int j = 0; j < 40; j++)
            for (int i = 0; i < 40; i++)
                if (i < 10 || i >= 30 || j < 10 || j >= 30 || k < 10 ||
                    k >= 30)
                    w.data[(k * 40 + j) * 40 + i] = trng_uniform(&r, 0, 4);
    assert_int_equal(volume_norm_affine(&w, 0, &fg, &b), 0);
    assert_true(a.shift == b.shift && a.scale == b.scale);
    /* gain and offset: (v - mean) / sd * 0.5 + 2 */
    Normalize cal = {NORMALIZE_ZSCORE_FG, 2.0f, 0.5f};
    assert_int_equal(volume_norm_affine(&v, 0, &cal, &b), 0);
    for (int i = 0; i < 8000; i += 97) {
        double want = ((double)v.data[i] - mean) / sqrt(ss / n) * 0.5 + 2.0;
        assert_true(fabs((double)norm_apply(&b, v.data[i]) - want) < 1e-5);
    }
    Normalize bad = {NORMALIZE_ZSCORE_FG, 0, 0};
    sl_error_quiet(1);
    assert_int_equal(volume_norm_affine(&v, 0, &bad, &b), ERR_ARG);
    sl_error_quiet(0);
    sl_error_reset();
    /* a constant modality: all voxels, std floor */
    float c[5] = {3, 3, 3, 3, 3};
    Volume cv = {.dim = {5, 1, 1}, .n_mod = 1, .data = c};
    assert_true(isinf(volume_otsu_threshold(c, 5)));
    assert_int_equal(volume_norm_affine(&cv, 0, &fg, &a), 0);
    assert_true(a.shift == 3.0 && a.scale == 1e8);
    volume_free(&v);
    volume_free(&w);
}

static void test_gaussian_and_windows(void **state)
{
    (void)state;
    int64_t p[3] = {8, 6, 5};
    float w[240];
    gaussian_map(w, p);
    float mx = 0, mn = 2;
    for (int i = 0; i < 240; i++) {
        mx = w[i] > mx ? w[i] : mx;
        mn = w[i] < mn ? w[i] : mn;
    }
    assert_true(mx == 1.0f);
    assert_true(w[(4 * 6 + 3) * 5 + 2] == 1.0f); /* centre p/2 */
    assert_true(mn > 0.0f);
    /* sigma = p/8: one step from the centre along dim 0 (sigma 1) is
     * exp(-1/2). */
    assert_true(fabsf(w[(5 * 6 + 3) * 5 + 2] - expf(-0.5f)) < 1e-6f);
    /* Symmetric about the centre where both sides exist. */
    assert_true(w[(3 * 6 + 3) * 5 + 2] == w[(5 * 6 + 3) * 5 + 2]);

    int64_t st[32];
    assert_int_equal(window_starts(10, 4, 0.5, st, 32), 4);
    int64_t w10[4] = {0, 2, 4, 6};
    assert_memory_equal(st, w10, sizeof w10);
    /* nnU-Net: 5 steps of 7/4, rounded half to even. */
    assert_int_equal(window_starts(11, 4, 0.5, st, 32), 5);
    int64_t w11[5] = {0, 2, 4, 5, 7};
    assert_memory_equal(st, w11, sizeof w11);
    assert_int_equal(window_starts(3, 8, 0.5, st, 32), 1);
    assert_int_equal(st[0], 0);
    assert_int_equal(window_starts(8, 8, 0.5, st, 32), 1);
}

/* ---- library runs ---- */

static void test_2d_threshold(void **state)
{
    (void)state;
    ModelSpec ms = {.dims = 2, .axis = 2, .nmod = 1, .kind = KIND_THRESH,
                    .softmax = 1, .norm = NORMALIZE_ZSCORE};
    check_lib(&ms, 13, 11, 7, 1);
    ms.softmax = 0; /* logits: same labels, probabilities via softmax */
    check_lib(&ms, 13, 11, 7, 1);
    ms.downup = 1; /* odd sizes: padded to even and cropped back */
    check_lib(&ms, 13, 11, 7, 1);
    ms.norm = NORMALIZE_CT;
    ms.lo = -15.0f;
    ms.hi = 35.0f;
    check_lib(&ms, 9, 5, 4, 0);
}

static void test_2d_axes_and_orders(void **state)
{
    (void)state;
    for (int order = 0; order < 2; order++)
        for (int axis = 0; axis < 3; axis++)
            for (int du = 0; du < 2; du++) {
                ModelSpec ms = {.dims = 2, .axis = axis, .nmod = 1,
                                .kind = KIND_SHIFT, .downup = du,
                                .order = (VoxelOrder)order,
                                .norm = NORMALIZE_ZSCORE};
                check_lib(&ms, 9, 8, 7, 0);
            }
}

static void test_3d_sliding_window(void **state)
{
    (void)state;
    /* Larger than the patch, sizes not multiples of it nor of the step;
     * 1x1x1 threshold so every window agrees and the fused argmax is
     * exact; down/up path makes the patch the only accepted shape. */
    ModelSpec ms = {.dims = 3, .nmod = 1, .kind = KIND_THRESH, .downup = 1,
                    .softmax = 0, .patch = {8, 6, 10},
                    .norm = NORMALIZE_ZSCORE};
    check_lib(&ms, 23, 17, 13, 1);
    /* Smaller than the patch along some dims: padded. */
    check_lib(&ms, 5, 20, 7, 0);
    ms.order = ORDER_NIBABEL;
    ms.softmax = 1;
    check_lib(&ms, 21, 9, 4, 1);

    /* The shift kernel in one window (volume <= patch) pins the 3D axis
     * mapping for both orders. */
    for (int order = 0; order < 2; order++) {
        ModelSpec sh = {.dims = 3, .nmod = 1, .kind = KIND_SHIFT,
                        .order = (VoxelOrder)order, .patch = {8, 8, 8},
                        .norm = NORMALIZE_ZSCORE};
        check_lib(&sh, 7, 6, 5, 0);
    }

    /* The slab bound: (nc + 1) * min(P0, S0) * S1 * S2 floats. */
    Volume v;
    fill_volume(&v, 23, 17, 13, 1, 5);
    ms.order = ORDER_NNUNET;
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    Segmenter *s = NULL;
    assert_int_equal(segmenter_create(&g, NULL, &s), 0);
    int16_t *lab = malloc(sizeof(int16_t) * 23 * 17 * 13);
    assert_int_equal(segmenter_run(s, &v, lab, NULL), 0);
    /* tensor order (k, j, i) = (13, 17, 23); P0 = 8 */
    assert_int_equal(segmenter_accum_bytes(s), 3 * 8 * 17 * 23 * 4);
    assert_true(segmenter_accum_bytes(s) < 2 * 23 * 17 * 13 * 4);
    /* A second case with the same grid reuses the executor. */
    assert_int_equal(segmenter_run(s, &v, lab, NULL), 0);
    assert_int_equal(segmenter_exec_count(s), 1);
    /* Modality mismatch is refused. */
    Volume two;
    fill_volume(&two, 4, 4, 4, 2, 1);
    sl_error_reset();
    sl_error_quiet(1);
    assert_int_equal(segmenter_run(s, &two, lab, NULL), ERR_SHAPE);
    sl_error_quiet(0);
    assert_non_null(strstr(sl_error_last(), "expects 1 modalities"));
    sl_error_reset();
    volume_free(&two);
    segmenter_free(s);
    free(lab);
    graph_free(&g);
    volume_free(&v);
}

/* Windows disagree near their borders (the shift kernel reads zero
 * padding there), so the fused probabilities depend on every window
 * position and Gaussian weight: compare with a double-precision
 * whole-volume reference written independently here. */
static void test_3d_fusion_reference(void **state)
{
    (void)state;
    ModelSpec ms = {.dims = 3, .nmod = 1, .kind = KIND_SHIFT,
                    .patch = {6, 8, 4}, .norm = NORMALIZE_ZSCORE};
    const int64_t nx = 11, ny = 13, nz = 9;
    Volume v;
    fill_volume(&v, nx, ny, nz, 1, 77);
    ms.t = mid_threshold(&v, &ms);
    double *xn = normalised(&v, &ms);
    int64_t n = volume_voxels(&v);
    double *num = calloc((size_t)n, sizeof(double));
    double *den = calloc((size_t)n, sizeof(double));
    /* Tensor order (k, j, i); window starts as nnU-Net places them. */
    const int64_t S[3] = {nz, ny, nx}, P[3] = {6, 8, 4};
    int64_t st[3][16];
    int ns[3];
    for (int t = 0; t < 3; t++) {
        if (S[t] <= P[t]) {
            ns[t] = 1;
            st[t][0] = 0;
            continue;
        }
        int64_t steps =
            (int64_t)ceil((double)(S[t] - P[t]) / (0.5 * (double)P[t])) + 1;
        ns[t] = (int)steps;
        for (int64_t i = 0; i < steps; i++)
            st[t][i] = (int64_t)nearbyint((double)(S[t] - P[t]) /
                                          (double)(steps - 1) * (double)i);
    }
    for (int a = 0; a < ns[0]; a++)
        for (int b = 0; b < ns[1]; b++)
            for (int c = 0; c < ns[2]; c++) {
                int64_t o[3] = {st[0][a], st[1][b], st[2][c]};
                int64_t B[3];
                for (int t = 0; t < 3; t++)
                    B[t] = S[t] < P[t] ? S[t] : P[t];
                for (int64_t x0 = 0; x0 < B[0]; x0++)
                    for (int64_t x1 = 0; x1 < B[1]; x1++)
                        for (int64_t x2 = 0; x2 < B[2]; x2++) {
                            /* out(d,h,w) = x(d+1, h, w-1) inside the
                             * window's box, else zero padding. */
                            int64_t y0 = x0 + 1, y2 = x2 - 1;
                            double val = 0.0;
                            if (y0 < B[0] && y2 >= 0)
                                val = xn[((o[0] + y0) * ny + o[1] + x1) * nx +
                                         o[2] + y2];
                            double p1 =
                                1.0 / (1.0 + exp(-2.0 * (val - (double)ms.t)));
                            double e = 0.0;
                            int64_t x[3] = {x0, x1, x2};
                            for (int t = 0; t < 3; t++) {
                                double sg = (double)P[t] / 8.0;
                                double d = (double)(x[t] - P[t] / 2);
                                e += d * d / (2 * sg * sg);
                            }
                            double w = exp(-e);
                            int64_t gi = ((o[0] + x0) * ny + o[1] + x1) * nx +
                                         o[2] + x2;
                            num[gi] += w * p1;
                            den[gi] += w;
                        }
            }
    float *want = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) want[i] = (float)(num[i] / den[i]);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    int16_t *lab = malloc(sizeof(int16_t) * (size_t)n);
    float *probs = malloc(sizeof(float) * 2 * (size_t)n);
    assert_int_equal(segment_volume(&g, &v, NULL, lab, probs), 0);
    /* float32 accumulation of at most 8 overlapping windows with weights
     * >= exp(-8*3): 1e-5 absolute is ~100 ulps of a probability. */
    assert_allclose(probs + n, want, (size_t)n, 1e-5, 0);
    int mixed = 0;
    for (int64_t i = 0; i < n; i++) {
        if (want[i] > 0.01f && want[i] < 0.99f) mixed++;
        if (fabsf(want[i] - 0.5f) > 1e-4f)
            assert_int_equal(lab[i], want[i] > 0.5f);
    }
    assert_true(mixed > 0); /* the windows really disagreed somewhere */
    free(lab);
    free(probs);
    free(want);
    free(num);
    free(den);
    free(xn);
    graph_free(&g);
    volume_free(&v);
}

static void test_batching_and_threads_agree(void **state)
{
    (void)state;
    /* Shift model with down/up path on odd sizes: labels must not depend
     * on the slice batch nor on the thread count. */
    ModelSpec ms = {.dims = 2, .axis = 1, .nmod = 1, .kind = KIND_SHIFT,
                    .downup = 1, .norm = NORMALIZE_ZSCORE};
    Volume v;
    fill_volume(&v, 15, 9, 11, 1, 3);
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    int64_t n = volume_voxels(&v);
    int16_t *ref = malloc(sizeof(int16_t) * (size_t)n);
    int16_t *lab = malloc(sizeof(int16_t) * (size_t)n);
    SegmentOptions o = {.n_threads = 1, .batch = 1};
    assert_int_equal(segment_volume(&g, &v, &o, ref, NULL), 0);
    /* 9 slices: 9 | 2 leaves a short batch; 0: chosen by slice size */
    int batches[4] = {2, 4, 9, 0};
    for (int b = 0; b < 4; b++)
        for (int t = 1; t <= 2; t++) {
            SegmentOptions ob = {.n_threads = t, .batch = batches[b]};
            assert_int_equal(segment_volume(&g, &v, &ob, lab, NULL), 0);
            assert_int_equal(count_diff(lab, ref, n), 0);
        }
    int16_t *e = expected(&v, &ms);
    assert_int_equal(count_diff(ref, e, n), 0);
    free(e);
    free(ref);
    free(lab);
    graph_free(&g);
    volume_free(&v);
}

/* ---- the CLI ---- */

static const char *tmp(const char *name)
{
    /* A ring large enough that no test holds a stale name. */
    static char buf[64][512];
    static int k;
    k = (k + 1) % 64;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

/* Write v as a float32 NIfTI-1 with an oblique qform and an sform. */
static void write_scan(const char *path, const Volume *v)
{
    int64_t dims[8] = {v->n_mod > 1 ? 4 : 3, v->dim[0], v->dim[1],
                       v->dim[2], v->n_mod, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, DT_FLOAT32, 1);
    assert_non_null(nim);
    memcpy(nim->data, v->data,
           sizeof(float) * (size_t)(volume_voxels(v) * v->n_mod));
    nifti_fixture_geometry(nim);
    assert_int_equal(nifti_set_filenames(nim, path, 0, 1), 0);
    nifti_image_write(nim);
    nifti_image_free(nim);
    assert_true(sl_file_exists(path));
}

static int16_t *read_labels(const char *path, int64_t n)
{
    Volume r;
    sl_error_reset();
    assert_int_equal(nio_read(path, &r, NULL), 0);
    assert_int_equal(volume_voxels(&r), n);
    int16_t *l = malloc(sizeof(int16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) l[i] = (int16_t)r.data[i];
    volume_free(&r);
    return l;
}

static void assert_geometry(const char *in, const char *out)
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
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            assert_true(x->qto_xyz.m[r][c] == y->qto_xyz.m[r][c]);
            assert_true(x->sto_xyz.m[r][c] == y->sto_xyz.m[r][c]);
        }
    nifti_image_free(x);
    nifti_image_free(y);
    /* And with an independent reader. */
    char cmd[2048], err[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tests/nifti_check.py '%s' '%s' --labels 2",
             in, out);
    int rc = run_cmd(cmd, err, sizeof err);
    if (rc != 0) fail_msg("nifti_check.py %s %s: exit %d %s", in, out, rc, err);
}

static int segment_cmd(const char *args, char *err, size_t len)
{
    char bin[512], cmd[5000];
    bin_path("segment", bin, sizeof bin);
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null", bin, args);
    return run_cmd(cmd, err, len);
}

static void test_cli(void **state)
{
    (void)state;
    char args[4096], err[512];
    /* 2D model on odd sizes (padding), threshold with softmax. */
    ModelSpec ms = {.dims = 2, .axis = 2, .nmod = 1, .kind = KIND_SHIFT,
                    .downup = 1, .softmax = 1, .norm = NORMALIZE_ZSCORE};
    Volume v;
    fill_volume(&v, 19, 14, 9, 1, 11);
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    const char *model = tmp("m2d.sslim");
    assert_int_equal(sslim_write(&g, model, 1), 0);
    const char *scan = tmp("case1.nii.gz");
    write_scan(scan, &v);
    int64_t n = volume_voxels(&v);
    int16_t *e = expected(&v, &ms);

    /* Default output beside the scan. */
    const char *def = tmp("case1_seg.nii.gz");
    unlink(def);
    snprintf(args, sizeof args, "-q -m %s %s", model, scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int16_t *lab = read_labels(def, n);
    assert_int_equal(count_diff(lab, e, n), 0);
    free(lab);
    assert_geometry(scan, def);

    /* Existing output refused without --force, accepted with it. */
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "--force"));
    snprintf(args, sizeof args, "-q --force -m %s %s", model, scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);

    /* -o, probabilities, threads 1 vs 2. */
    const char *o1 = tmp("t1.nii"), *o2 = tmp("t2.nii.gz");
    const char *pr = tmp("probs.nii.gz");
    unlink(o1);
    unlink(o2);
    unlink(pr);
    snprintf(args, sizeof args, "-q --threads 1 -m %s -o %s %s", model, o1,
             scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    snprintf(args, sizeof args,
             "-q --threads 2 -m %s -o %s --probabilities %s %s", model, o2,
             pr, scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int16_t *l1 = read_labels(o1, n), *l2 = read_labels(o2, n);
    assert_int_equal(count_diff(l1, l2, n), 0);
    assert_int_equal(count_diff(l1, e, n), 0);
    free(l1);
    free(l2);
    assert_geometry(scan, o1);
    Volume pv;
    assert_int_equal(nio_read(pr, &pv, NULL), 0);
    assert_int_equal(pv.n_mod, 2);
    volume_free(&pv);

    /* Several cases in one call. */
    Volume v2;
    fill_volume(&v2, 12, 10, 6, 1, 12);
    const char *scan2 = tmp("case2.nii");
    write_scan(scan2, &v2);
    const char *def2 = tmp("case2_seg.nii.gz");
    unlink(def);
    unlink(def2);
    snprintf(args, sizeof args, "-q -m %s %s %s", model, scan, scan2);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    assert_true(sl_file_exists(def) && sl_file_exists(def2));
    assert_geometry(scan2, def2);

    /* Failures: one line, non-zero exit. */
    snprintf(args, sizeof args, "-q -m %s -o %s %s %s", model, o1, scan,
             scan2);
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "one scan"));
    snprintf(args, sizeof args, "-q --force -m %s -o %s %s", model, scan,
             scan);
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "input"));
    snprintf(args, sizeof args, "-q -m %s %s", model,
             tmp("missing.nii.gz"));
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "cannot open"));
    snprintf(args, sizeof args, "-q -m %s %s", tmp("nomodel.sslim"), scan);
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    assert_non_null(strstr(err, "nomodel.sslim"));
    assert_int_not_equal(segment_cmd("--threads x a.nii", err, sizeof err),
                         0);
    assert_non_null(strstr(err, "--threads"));
    assert_int_equal(segment_cmd("--help", err, sizeof err), 0);
    assert_int_equal(segment_cmd("--version", err, sizeof err), 0);

    /* A 2-modality model: mismatch names the modalities; 4D file and
     * comma-joined files both work. */
    ModelSpec m2 = ms;
    m2.nmod = 2;
    m2.kind = KIND_THRESH;
    Volume v4;
    fill_volume(&v4, 8, 7, 6, 2, 21);
    Volume first = v4;
    first.n_mod = 1;
    m2.t = mid_threshold(&first, &m2);
    Graph g2;
    graph_init(&g2);
    build_model(&g2, &m2);
    const char *model2 = tmp("m2mod.sslim");
    assert_int_equal(sslim_write(&g2, model2, 1), 0);
    snprintf(args, sizeof args, "-q -m %s -o %s %s", model2, tmp("x.nii"),
             scan);
    assert_int_not_equal(segment_cmd(args, err, sizeof err), 0);
    if (!strstr(err, "model expects 2 modalities (t1, t2)") ||
        !strstr(err, "has 1"))
        fail_msg("unexpected message: %s", err);
    const char *s4 = tmp("four.nii.gz"), *o4 = tmp("four_seg.nii.gz");
    write_scan(s4, &v4);
    unlink(o4);
    snprintf(args, sizeof args, "-q -m %s %s", model2, s4);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int16_t *e4 = expected(&v4, &m2);
    int64_t n4 = volume_voxels(&v4);
    int16_t *l4 = read_labels(o4, n4);
    assert_int_equal(count_diff(l4, e4, n4), 0);
    free(l4);
    Volume ma = {.dim = {8, 7, 6}, .n_mod = 1, .data = v4.data};
    Volume mb = {.dim = {8, 7, 6}, .n_mod = 1, .data = v4.data + n4};
    const char *sa = tmp("ja.nii.gz"), *sb = tmp("jb.nii.gz");
    write_scan(sa, &ma);
    write_scan(sb, &mb);
    const char *oj = tmp("joined_seg.nii.gz");
    unlink(oj);
    snprintf(args, sizeof args, "-q -m %s -o %s %s,%s", model2, oj, sa, sb);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    l4 = read_labels(oj, n4);
    assert_int_equal(count_diff(l4, e4, n4), 0);
    free(l4);
    free(e4);

    free(e);
    graph_free(&g);
    graph_free(&g2);
    volume_free(&v);
    volume_free(&v2);
    volume_free(&v4);
}

static void test_cli_3d_threads(void **state)
{
    (void)state;
    char args[4096], err[512];
    ModelSpec ms = {.dims = 3, .nmod = 1, .kind = KIND_THRESH, .downup = 1,
                    .patch = {8, 8, 8}, .norm = NORMALIZE_ZSCORE};
    Volume v;
    fill_volume(&v, 21, 18, 11, 1, 31);
    ms.t = mid_threshold(&v, &ms);
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    const char *model = tmp("m3d.sslim");
    assert_int_equal(sslim_write(&g, model, 1), 0);
    const char *scan = tmp("vol3d.nii.gz");
    write_scan(scan, &v);
    const char *o1 = tmp("v3_1.nii.gz"), *o2 = tmp("v3_2.nii.gz");
    unlink(o1);
    unlink(o2);
    snprintf(args, sizeof args, "-q --threads 1 -m %s -o %s %s", model, o1,
             scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    snprintf(args, sizeof args, "-q --threads 2 -m %s -o %s %s", model, o2,
             scan);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int64_t n = volume_voxels(&v);
    int16_t *l1 = read_labels(o1, n), *l2 = read_labels(o2, n);
    int16_t *e = expected(&v, &ms);
    assert_int_equal(count_diff(l1, l2, n), 0);
    assert_int_equal(count_diff(l1, e, n), 0);
    assert_geometry(scan, o1);
    free(l1);
    free(l2);
    free(e);
    graph_free(&g);
    volume_free(&v);
}

/* The real T1 template: 181 x 217 x 181, odd sizes, through the CLI. */
static void test_ch2(void **state)
{
    (void)state;
    const char *ch2 = "/usr/share/mricron/templates/ch2.nii.gz";
    if (!sl_file_exists(ch2))
        fail_msg("%s missing: apt-get install mricron-data", ch2);
    Volume v;
    assert_int_equal(nio_read(ch2, &v, NULL), 0);
    assert_int_equal(v.dim[0], 181);
    assert_int_equal(v.dim[1], 217);
    assert_int_equal(v.dim[2], 181);
    ModelSpec ms = {.dims = 2, .axis = 2, .nmod = 1, .kind = KIND_THRESH,
                    .downup = 1, .softmax = 1, .norm = NORMALIZE_ZSCORE};
    /* ch2 holds integers: a threshold half-way between raw 100 and 101
     * is >= 0.5 / std away from every voxel. */
    {
        Volume one = v;
        double *nv = normalised(&one, &ms);
        double a = NAN, b = NAN;
        for (int64_t i = 0; i < volume_voxels(&v); i++) {
            if (v.data[i] == 100.0f) a = nv[i];
            if (v.data[i] == 101.0f) b = nv[i];
        }
        free(nv);
        assert_false(isnan(a) || isnan(b));
        ms.t = (float)(0.5 * (a + b));
    }
    Graph g;
    graph_init(&g);
    build_model(&g, &ms);
    const char *model = tmp("ch2.sslim");
    assert_int_equal(sslim_write(&g, model, 1), 0);
    const char *out = tmp("ch2_seg.nii.gz");
    unlink(out);
    char args[2048], err[512];
    snprintf(args, sizeof args, "-q -m %s -o %s %s", model, out, ch2);
    assert_int_equal(segment_cmd(args, err, sizeof err), 0);
    int64_t n = volume_voxels(&v);
    int16_t *lab = read_labels(out, n);
    int16_t *e = expected(&v, &ms);
    assert_int_equal(count_diff(lab, e, n), 0);
    int64_t ones = 0;
    for (int64_t i = 0; i < n; i++) ones += lab[i];
    assert_true(ones > n / 20 && ones < n / 2); /* a brain-sized mask */
    assert_geometry(ch2, out);
    free(lab);
    free(e);
    graph_free(&g);
    volume_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_volume_axes),
        cmocka_unit_test(test_normalisation),
        cmocka_unit_test(test_foreground_normalisation),
        cmocka_unit_test(test_gaussian_and_windows),
        cmocka_unit_test(test_2d_threshold),
        cmocka_unit_test(test_2d_axes_and_orders),
        cmocka_unit_test(test_3d_sliding_window),
        cmocka_unit_test(test_3d_fusion_reference),
        cmocka_unit_test(test_batching_and_threads_agree),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_cli_3d_threads),
        cmocka_unit_test(test_ch2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
