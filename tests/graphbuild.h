/* Small graphs built in C for test_graph, test_exec and test_sslim: a tiny
 * 2D/3D U-Net (conv + instance norm + leaky relu, strided conv, conv
 * transpose, concat, softmax) and a graph that uses every op type.
 * Header-only (static inline) so each test program stays one file. */
#ifndef SL_TEST_GRAPHBUILD_H
#define SL_TEST_GRAPHBUILD_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/ops/ops.h"
#include "tests/testutil.h"

typedef struct {
    Graph *g;
    TestRng rng;
    int count; /* for unique names */
    int fail;  /* any add failed */
} GBuild;

static inline int gb_weight(GBuild *b, const char *what, int ndim,
                            const int64_t *dims, float lo, float hi)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s.d[i] = dims[i];
    size_t n = (size_t)shape_numel(&s);
    float *d = sl_alloc(n * sizeof(float));
    if (!d) {
        b->fail = 1;
        return -1;
    }
    trng_fill(&b->rng, d, n, lo, hi);
    char name[64];
    snprintf(name, sizeof name, "%s_%d", what, b->count++);
    int v = graph_add_value(b->g, name, &s, d);
    if (v < 0) b->fail = 1;
    return v;
}

/* A node with one new activation output; params copied from *p. */
static inline int gb_node(GBuild *b, OpType op, const int *in, int n_in,
                          const Node *p)
{
    if (b->fail) return -1;
    char name[64];
    Shape s;
    memset(&s, 0, sizeof s);
    snprintf(name, sizeof name, "t%d", b->count++);
    int out = graph_add_value(b->g, name, &s, NULL);
    if (out < 0) {
        b->fail = 1;
        return -1;
    }
    Node n;
    if (p)
        n = *p;
    else
        memset(&n, 0, sizeof n);
    snprintf(name, sizeof name, "n%d_%s", b->count++, op_name(op));
    n.op = op;
    n.name = name;
    n.n_in = n_in;
    for (int i = 0; i < n_in; i++)
        n.in[i] = in[i];
    n.out = out;
    if (graph_add_node(b->g, &n) < 0) {
        b->fail = 1;
        return -1;
    }
    return out;
}

static inline void gb_geom(int nsp, int k, int stride, int pad, int *kernel,
                           int *st, int *dil, int *lo, int *hi)
{
    for (int i = 0; i < 3; i++) {
        kernel[i] = i < nsp ? k : 0;
        st[i] = i < nsp ? stride : 0;
        dil[i] = i < nsp ? 1 : 0;
        lo[i] = hi[i] = i < nsp ? pad : 0;
    }
}

static inline int gb_conv(GBuild *b, int x, int ic, int oc, int nsp, int k,
                          int stride, int pad, int bias)
{
    Node n;
    memset(&n, 0, sizeof n);
    ConvParams *p = &n.p.conv;
    p->nsp = nsp;
    p->group = 1;
    gb_geom(nsp, k, stride, pad, p->kernel, p->stride, p->dilation, p->pad_lo,
            p->pad_hi);
    int64_t wd[5] = {oc, ic, k, k, k};
    float sc = 1.0f / sqrtf((float)(ic * k * k * (nsp == 3 ? k : 1)));
    int in[3] = {x, gb_weight(b, "w", nsp + 2, wd, -sc, sc), -1};
    if (bias) in[2] = gb_weight(b, "b", 1, wd, -0.1f, 0.1f);
    return gb_node(b, OP_CONV, in, bias ? 3 : 2, &n);
}

/* ConvTranspose with kernel k, stride s, no padding: size * s when k == s */
static inline int gb_conv_t(GBuild *b, int x, int ic, int oc, int nsp, int k,
                            int stride, int pad)
{
    Node n;
    memset(&n, 0, sizeof n);
    ConvParams *p = &n.p.conv;
    p->nsp = nsp;
    p->group = 1;
    gb_geom(nsp, k, stride, pad, p->kernel, p->stride, p->dilation, p->pad_lo,
            p->pad_hi);
    int64_t wd[5] = {ic, oc, k, k, k};
    float sc = 1.0f / sqrtf((float)(ic * k));
    int64_t bd[1] = {oc};
    int in[3] = {x, gb_weight(b, "wt", nsp + 2, wd, -sc, sc),
                 gb_weight(b, "bt", 1, bd, -0.1f, 0.1f)};
    return gb_node(b, OP_CONV_TRANSPOSE, in, 3, &n);
}

static inline int gb_inorm(GBuild *b, int x, int c)
{
    Node n;
    memset(&n, 0, sizeof n);
    n.p.norm.eps = 1e-5f;
    int64_t d[1] = {c};
    int in[3] = {x, gb_weight(b, "g", 1, d, 0.5f, 1.5f),
                 gb_weight(b, "beta", 1, d, -0.2f, 0.2f)};
    return gb_node(b, OP_INSTANCE_NORM, in, 3, &n);
}

static inline int gb_bnorm(GBuild *b, int x, int c)
{
    Node n;
    memset(&n, 0, sizeof n);
    n.p.norm.eps = 1e-5f;
    n.p.norm.momentum = 0.1f;
    int64_t d[1] = {c};
    int in[5] = {x, gb_weight(b, "bn_g", 1, d, 0.5f, 1.5f),
                 gb_weight(b, "bn_b", 1, d, -0.2f, 0.2f),
                 gb_weight(b, "bn_m", 1, d, -0.5f, 0.5f),
                 gb_weight(b, "bn_v", 1, d, 0.5f, 2.0f)};
    return gb_node(b, OP_BATCH_NORM, in, 5, &n);
}

static inline int gb_unary(GBuild *b, OpType op, int x, float alpha)
{
    Node n;
    memset(&n, 0, sizeof n);
    n.p.act.alpha = alpha;
    return gb_node(b, op, &x, 1, &n);
}

static inline int gb_pool(GBuild *b, OpType op, int x, int nsp, int k,
                          int stride, int pad)
{
    Node n;
    memset(&n, 0, sizeof n);
    PoolParams *p = &n.p.pool;
    p->nsp = nsp;
    gb_geom(nsp, k, stride, pad, p->kernel, p->stride, p->dilation, p->pad_lo,
            p->pad_hi);
    return gb_node(b, op, &x, 1, &n);
}

static inline int gb_concat(GBuild *b, int x, int y)
{
    Node n;
    memset(&n, 0, sizeof n);
    n.p.concat.axis = 1;
    int in[2] = {x, y};
    return gb_node(b, OP_CONCAT, in, 2, &n);
}

static inline int gb_softmax(GBuild *b, int x)
{
    Node n;
    memset(&n, 0, sizeof n);
    n.p.softmax.axis = 1;
    return gb_node(b, OP_SOFTMAX, &x, 1, &n);
}

/* ref < 0: scale by 2; else resize to ref's spatial size. */
static inline int gb_resize(GBuild *b, int x, int nsp, ResizeMode mode,
                            int ref)
{
    Node n;
    memset(&n, 0, sizeof n);
    ResizeParams *p = &n.p.resize;
    p->nsp = nsp;
    p->mode = mode;
    p->coord = mode == RESIZE_LINEAR ? COORD_HALF_PIXEL : COORD_ASYMMETRIC;
    p->nearest = NEAREST_FLOOR;
    for (int i = 0; i < 3; i++)
        p->scale[i] = i < nsp ? 2.0 : 1.0;
    int in[2] = {x, ref};
    return gb_node(b, OP_RESIZE, in, ref >= 0 ? 2 : 1, &n);
}

static inline int gb_input(GBuild *b, int nsp, int c)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.ndim = 2 + nsp;
    s.d[1] = c; /* batch and spatial dims dynamic */
    int v = graph_add_value(b->g, "input", &s, NULL);
    if (v < 0) b->fail = 1;
    b->g->input = v;
    return v;
}

static inline int gb_block(GBuild *b, int x, int ic, int oc, int nsp,
                           int stride)
{
    int y = gb_conv(b, x, ic, oc, nsp, 3, stride, 1, 1);
    y = gb_inorm(b, y, oc);
    return gb_unary(b, OP_LEAKY_RELU, y, 0.01f);
}

static inline void gb_meta(Graph *g, int classes, int modalities, int nsp)
{
    ModelMeta *m = &g->meta;
    m->n_classes = classes;
    m->class_names = sl_calloc((size_t)classes, sizeof(char *));
    for (int i = 0; m->class_names && i < classes; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, i ? "class %d" : "background", i);
        m->class_names[i] = sl_strdup(nm);
    }
    m->n_modalities = modalities;
    m->modality_names = sl_calloc((size_t)modalities, sizeof(char *));
    m->normalize = sl_calloc((size_t)modalities, sizeof *m->normalize);
    for (int i = 0; m->modality_names && m->normalize && i < modalities;
         i++) {
        m->modality_names[i] = sl_strdup(i ? "CT" : "T1");
        m->normalize[i].kind = i ? NORMALIZE_CT : NORMALIZE_ZSCORE;
        m->normalize[i].lo = i ? -1000.0f : 0.0f;
        m->normalize[i].hi = i ? 1000.0f : 0.0f;
    }
    m->dims = nsp;
    m->axis = 2;
    if (nsp == 3) m->patch[0] = m->patch[1] = m->patch[2] = 16;
    m->order = ORDER_NIBABEL;
    for (int i = 0; i < 32; i++)
        m->source_sha256[i] = (uint8_t)(i * 7 + 1);
    m->source_name = sl_strdup("tiny_unet.onnx");
    m->notes = sl_strdup("{\"pruned\": [8, 4]}");
}

/* Tiny U-Net, input [N, in_c, sp...] with sp divisible by 2:
 *   enc = block(in_c -> c), down = block(c -> 2c, stride 2),
 *   up = convT(2c -> c, k2 s2), cat = concat(enc, up),
 *   dec = block(2c -> c), out = softmax(conv1x1(c -> classes)).
 * deep: also output a second head (sigmoid of a 1x1 conv on down).
 * Returns 0, or -1 if an allocation failed (graph then partially built). */
static inline int build_unet(Graph *g, int nsp, int in_c, int c, int classes,
                             int deep, uint64_t seed)
{
    GBuild b = {g, {seed}, 0, 0};
    graph_init(g);
    int x = gb_input(&b, nsp, in_c);
    int enc = gb_block(&b, x, in_c, c, nsp, 1);
    int down = gb_block(&b, enc, c, 2 * c, nsp, 2);
    int up = gb_conv_t(&b, down, 2 * c, c, nsp, 2, 2, 0);
    int cat = gb_concat(&b, enc, up);
    int dec = gb_block(&b, cat, 2 * c, c, nsp, 1);
    int logits = gb_conv(&b, dec, c, classes, nsp, 1, 1, 0, 1);
    int out = gb_softmax(&b, logits);
    g->outputs[0] = out;
    g->n_outputs = 1;
    if (deep) {
        int h = gb_conv(&b, down, 2 * c, classes, nsp, 1, 1, 0, 0);
        g->outputs[g->n_outputs++] = gb_unary(&b, OP_SIGMOID, h, 0);
    }
    gb_meta(g, classes, in_c, nsp);
    return b.fail ? -1 : 0;
}

/* Every op type once or more, 2D, input [N, 2, H, W] with H, W even:
 * conv, batch norm, relu, max pool, instance norm, leaky relu, resize
 * (scale and to-size), add, sigmoid, avg pool, identity, concat, conv
 * transpose (stride 1), softmax. */
static inline int build_all_ops(Graph *g, uint64_t seed)
{
    GBuild b = {g, {seed}, 0, 0};
    graph_init(g);
    int x = gb_input(&b, 2, 2);
    int a = gb_conv(&b, x, 2, 4, 2, 3, 1, 1, 1);
    a = gb_bnorm(&b, a, 4);
    a = gb_unary(&b, OP_RELU, a, 0);
    int p = gb_pool(&b, OP_MAX_POOL, a, 2, 2, 2, 0);
    p = gb_conv(&b, p, 4, 4, 2, 3, 1, 1, 0);
    p = gb_inorm(&b, p, 4);
    p = gb_unary(&b, OP_LEAKY_RELU, p, 0.1f);
    int r1 = gb_resize(&b, p, 2, RESIZE_NEAREST, -1);
    int r2 = gb_resize(&b, p, 2, RESIZE_LINEAR, a);
    int in[2] = {r1, r2};
    int s = gb_node(&b, OP_ADD, in, 2, NULL);
    in[0] = s;
    in[1] = a;
    s = gb_node(&b, OP_ADD, in, 2, NULL);
    s = gb_unary(&b, OP_SIGMOID, s, 0);
    s = gb_pool(&b, OP_AVG_POOL, s, 2, 3, 1, 1);
    s = gb_unary(&b, OP_IDENTITY, s, 0);
    int c = gb_concat(&b, s, a);
    int t = gb_conv_t(&b, c, 8, 3, 2, 3, 1, 1);
    g->outputs[0] = gb_softmax(&b, t);
    g->n_outputs = 1;
    gb_meta(g, 3, 2, 2);
    return b.fail ? -1 : 0;
}

#endif
