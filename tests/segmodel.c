/* Tiny segmentation models and their expected labels (segmodel.h). */
#include "segmodel.h"

#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/segment.h"

float *weights(size_t n)
{
    float *w = sl_calloc(n ? n : 1, sizeof(float));
    assert_non_null(w);
    return w;
}

int seg_add_value(Graph *g, const char *name, int ndim, const int64_t *d,
                  float *data)
{
    Shape s = {.ndim = ndim};
    for (int i = 0; i < ndim; i++)
        s.d[i] = d[i];
    int v = graph_add_value(g, name, &s, data);
    assert_true(v >= 0);
    return v;
}

static int add_conv(Graph *g, const char *name, int x, int w, int b, int out,
                    int nsp, int k, int stride, int pad, int transpose)
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

char *seg_strdup(const char *s)
{
    char *d = sl_strdup(s);
    assert_non_null(d);
    return d;
}

/* Build the model described by `ms` into an initialised graph. */
void build_model(Graph *g, const ModelSpec *ms)
{
    int nsp = ms->dims, C = ms->nmod;
    int64_t d[5] = {1, C, 1, 1, 1};
    int x = seg_add_value(g, "input", 2 + nsp, d, NULL);
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
    int wv = seg_add_value(g, "w_main", 2 + nsp, wd, w);
    int64_t bd[1] = {2};
    int bv = seg_add_value(g, "b_main", 1, bd, b);
    int64_t ad[5] = {1, 2, 1, 1, 1};
    int main_out = seg_add_value(g, "main", 2 + nsp, ad, NULL);
    add_conv(g, "conv_main", x, wv, bv, main_out, nsp, k, 1,
             ms->kind == KIND_SHIFT ? 1 : 0, 0);
    int last = main_out;
    if (ms->downup) {
        int64_t wd2[5] = {4, C, 2, 2, 2}, bd2[1] = {4};
        int w2 = seg_add_value(g, "w_down", 2 + nsp, wd2,
                               weights(4 * (size_t)C * (nsp == 3 ? 8 : 4)));
        int b2 = seg_add_value(g, "b_down", 1, bd2, weights(4));
        int down = seg_add_value(g, "down", 2 + nsp, ad, NULL);
        add_conv(g, "conv_down", x, w2, b2, down, nsp, 2, 2, 0, 0);
        int64_t wd3[5] = {4, 2, 2, 2, 2}, bd3[1] = {2};
        int w3 = seg_add_value(g, "w_up", 2 + nsp, wd3,
                               weights(8 * (size_t)(nsp == 3 ? 8 : 4)));
        int b3 = seg_add_value(g, "b_up", 1, bd3, weights(2));
        int up = seg_add_value(g, "up", 2 + nsp, ad, NULL);
        add_conv(g, "conv_up", down, w3, b3, up, nsp, 2, 2, 0, 1);
        int sum = seg_add_value(g, "sum", 2 + nsp, ad, NULL);
        Node n;
        memset(&n, 0, sizeof n);
        n.op = OP_ADD;
        n.name = (char *)(uintptr_t) "add";
        n.n_in = 2;
        n.in[0] = main_out;
        n.in[1] = up;
        n.out = sum;
        assert_true(graph_add_node(g, &n) >= 0);
        last = sum;
    }
    if (ms->softmax) {
        int sm = seg_add_value(g, "probs", 2 + nsp, ad, NULL);
        Node n;
        memset(&n, 0, sizeof n);
        n.op = OP_SOFTMAX;
        n.name = (char *)(uintptr_t) "softmax";
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
    m->class_names[0] = seg_strdup("background");
    m->class_names[1] = seg_strdup("bright");
    m->n_modalities = C;
    m->modality_names = sl_calloc((size_t)C, sizeof(char *));
    m->normalize = sl_calloc((size_t)C, sizeof(Normalize));
    for (int i = 0; i < C; i++) {
        m->modality_names[i] = seg_strdup(i == 0 ? "t1" : "t2");
        m->normalize[i].kind = ms->norm;
        m->normalize[i].lo = ms->lo;
        m->normalize[i].hi = ms->hi;
    }
    m->dims = ms->dims;
    m->axis = ms->axis;
    m->order = ms->order;
    for (int t = 0; t < 3; t++)
        m->patch[t] = ms->patch[t];
    m->source_name = seg_strdup("test_segment.c");
    assert_int_equal(graph_validate(g, "test model"), 0);
}

/* Voxel values on a coarse grid (multiples of 10) so that a threshold
 * half-way between two levels is far from every voxel. */
void fill_volume(Volume *v, int64_t nx, int64_t ny, int64_t nz, int nmod,
                 int seed)
{
    assert_int_equal(volume_alloc(v, nx, ny, nz, nmod), 0);
    TestRng r = {(uint64_t)seed};
    int64_t n = volume_voxels(v) * nmod;
    for (int64_t i = 0; i < n; i++)
        v->data[i] = 10.0f * (float)(trng_next(&r) % 7) - 20.0f;
}

/* Normalised intensity of modality 0 as the model should see it. */
double *normalised(const Volume *v, const ModelSpec *ms)
{
    int64_t n = volume_voxels(v);
    double *o = malloc(sizeof(double) * (size_t)n);
    assert_non_null(o);
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)v->data[i];
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
float mid_threshold(const Volume *v, const ModelSpec *ms)
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
int16_t *expected(const Volume *v, const ModelSpec *ms)
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

int count_diff(const int16_t *a, const int16_t *b, int64_t n)
{
    int d = 0;
    for (int64_t i = 0; i < n; i++)
        d += a[i] != b[i];
    return d;
}
