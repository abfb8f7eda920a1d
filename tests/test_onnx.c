/* ONNX import, sha256, the sauron-compress option parser and conversion,
 * and sauron-inspect --json.
 *
 * Fixtures: tests/fixtures/onnx/, written by tools/make_onnx_fixtures.py
 * (onnx.helper models that each exercise one importer feature or one
 * failure, plus tiny torch.onnx exports at opsets 11, 13 and 17). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compressor/compress_cli.h"
#include "compressor/onnx/onnx_import.h"
#include "compressor/sha256.h"
#include "runtime/common.h"
#include "runtime/exec.h"
#include "runtime/graph.h"
#include "runtime/sslim.h"
#include "tests/testutil.h"

static const char *fx(const char *name)
{
    static char buf[8][300];
    static int k;
    char rel[200];
    snprintf(rel, sizeof rel, "onnx/%s", name);
    return fixture_path(rel, buf[k++ % 8], sizeof buf[0]);
}

/* Import a fixture that must succeed. */
static void import_ok(const char *name, const OnnxImportOptions *opt,
                      Graph *g)
{
    sl_error_reset();
    graph_init(g);
    int rc = onnx_import(fx(name), opt, g);
    if (rc) fprintf(stderr, "import %s: %d %s\n", name, rc, sl_error_last());
    assert_int_equal(rc, 0);
}

/* Import that must fail with `code` and a message containing both needles
 * (NULL: not checked); the graph must be left empty. */
static void import_fails(const char *path, int code, const char *needle1,
                         const char *needle2)
{
    Graph g;
    graph_init(&g);
    sl_error_reset();
    int rc = onnx_import(path, NULL, &g);
    if (rc != code || (needle1 && !strstr(sl_error_last(), needle1)) ||
        (needle2 && !strstr(sl_error_last(), needle2)))
        fprintf(stderr, "%s: rc %d (want %d), message: %s\n", path, rc, code,
                sl_error_last());
    assert_int_equal(rc, code);
    if (needle1) assert_non_null(strstr(sl_error_last(), needle1));
    if (needle2) assert_non_null(strstr(sl_error_last(), needle2));
    assert_int_equal(g.n_nodes, 0);
    assert_int_equal(g.n_values, 0);
    graph_free(&g);
}

static void assert_ops(const Graph *g, const OpType *ops, int n)
{
    if (g->n_nodes != n)
        fprintf(stderr, "%d nodes, want %d\n", g->n_nodes, n);
    assert_int_equal(g->n_nodes, n);
    for (int k = 0; k < n; k++)
        assert_int_equal(g->nodes[k].op, ops[k]);
}

static const float *weight(const Graph *g, int node, int input)
{
    const Value *v = &g->values[g->nodes[node].in[input]];
    assert_non_null(v->data);
    return v->data;
}

/* Run graph g on fixture input `in` and compare output 0 with `out`. */
static void run_and_compare(Graph *g, const char *in, const char *out,
                            double atol)
{
    Executor *e = NULL;
    int64_t di[8], dout[8];
    int ni, no;
    float *x = load_tensor(fx(in), di, &ni);
    float *ref = load_tensor(fx(out), dout, &no);
    assert_non_null(x);
    assert_non_null(ref);
    Shape s = {ni, {0}};
    for (int k = 0; k < ni; k++)
        s.d[k] = di[k];
    assert_int_equal(exec_create(g, &s, 1, &e), 0);
    const float *outs[SL_MAX_OUTPUTS];
    assert_int_equal(exec_run(e, x, outs), 0);
    size_t n = 1;
    for (int k = 0; k < no; k++)
        n *= (size_t)dout[k];
    assert_int_equal((int64_t)n, shape_numel(exec_output_shape(e, 0)));
    assert_allclose(outs[0], ref, n, atol, 0);
    exec_free(e);
    free(x);
    free(ref);
}

/* ---- sha256 ---- */

static void test_sha256_vectors(void **state)
{
    (void)state;
    /* FIPS 180-4 / NIST example vectors. */
    static const struct {
        const char *msg, *hex;
    } v[] = {
        {"",
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc",
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijk"
         "lmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    uint8_t d[32];
    char hex[65];
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        sha256(v[k].msg, strlen(v[k].msg), d);
        sha256_hex(d, hex);
        assert_string_equal(hex, v[k].hex);
    }
    /* One million 'a', fed in odd-sized pieces to cross block edges. */
    static char a[1000];
    memset(a, 'a', sizeof a);
    Sha256 s;
    sha256_init(&s);
    size_t left = 1000000, step = 1;
    while (left) {
        size_t n = step < left ? step : left;
        sha256_update(&s, a, n);
        left -= n;
        step = step % 900 + 61; /* pieces of 1..960 bytes, within a[] */
    }
    sha256_final(&s, d);
    sha256_hex(d, hex);
    assert_string_equal(
        hex,
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ---- structure of imported fixtures ---- */

static void test_conv_relu(void **state)
{
    (void)state;
    Graph g;
    import_ok("conv_relu.onnx", NULL, &g);
    const OpType ops[] = {OP_CONV, OP_RELU, OP_CONV, OP_SOFTMAX};
    assert_ops(&g, ops, 4);
    const ConvParams *p = &g.nodes[0].p.conv;
    assert_int_equal(p->nsp, 2);
    assert_int_equal(p->kernel[0], 3);
    assert_int_equal(p->pad_lo[1], 1);
    assert_int_equal(p->pad_hi[0], 1);
    assert_int_equal(p->stride[0], 1);
    assert_int_equal(p->group, 1);
    assert_int_equal(g.nodes[0].n_in, 3);
    assert_string_equal(g.nodes[0].name, "conv1");
    assert_int_equal(g.nodes[3].p.softmax.axis, 1);
    assert_int_equal(g.nodes[3].p.softmax.flatten, 0);
    const Shape *in = &g.values[g.input].shape,
                *out = &g.values[g.outputs[0]].shape;
    assert_int_equal(in->ndim, 4);
    assert_int_equal(in->d[2], 8);
    assert_int_equal(out->d[1], 3);
    assert_string_equal(g.values[g.outputs[0]].name, "y");
    assert_int_equal(g.n_outputs, 1);
    assert_int_equal(graph_params(&g), 2 * 9 + 2 + 3 * 2 + 3);
    assert_int_equal(g.meta.dims, 2);
    assert_string_equal(g.meta.source_name, "conv_relu.onnx");
    /* The recorded hash is that of the file's bytes. */
    uint8_t *bytes;
    size_t size;
    uint8_t d[32];
    assert_int_equal(sl_read_file(fx("conv_relu.onnx"), &bytes, &size), 0);
    sha256(bytes, size, d);
    assert_memory_equal(d, g.meta.source_sha256, 32);
    sl_free(bytes);
    graph_free(&g);
}

static void test_typed_fields_and_dynamic_dims(void **state)
{
    (void)state;
    Graph g;
    import_ok("typed_fields.onnx", NULL, &g);
    const OpType ops[] = {OP_CONV, OP_INSTANCE_NORM, OP_LEAKY_RELU};
    assert_ops(&g, ops, 3);
    /* Dynamic N, H, W: N = 1, spatial = ONNX_DEFAULT_SPATIAL. */
    const Shape *in = &g.values[g.input].shape;
    assert_int_equal(in->d[0], 1);
    assert_int_equal(in->d[1], 2);
    assert_int_equal(in->d[2], ONNX_DEFAULT_SPATIAL);
    assert_int_equal(in->d[3], ONNX_DEFAULT_SPATIAL);
    /* SAME_UPPER with a 3x3 kernel, stride 1: one pixel each side. */
    assert_int_equal(g.nodes[0].p.conv.pad_lo[0], 1);
    assert_int_equal(g.nodes[0].p.conv.pad_hi[1], 1);
    /* float16 scale and double bias decoded exactly (representable). */
    const float sc[4] = {1.0f, 0.5f, 2.0f, -1.0f},
                bi[4] = {0.0f, 0.25f, -0.5f, 1.0f};
    assert_memory_equal(weight(&g, 1, 1), sc, sizeof sc);
    assert_memory_equal(weight(&g, 1, 2), bi, sizeof bi);
    assert_true(g.nodes[2].p.act.alpha == 0.2f);
    assert_true(g.nodes[1].p.norm.eps == 1e-5f);
    graph_free(&g);

    /* An explicit import shape overrides the default. */
    Shape s = {4, {1, 2, 40, 24}};
    OnnxImportOptions o = {NULL, &s, 0};
    import_ok("typed_fields.onnx", &o, &g);
    assert_int_equal(g.values[g.outputs[0]].shape.d[2], 40);
    assert_int_equal(g.values[g.outputs[0]].shape.d[3], 24);
    graph_free(&g);
}

static void test_shape_glue_folded(void **state)
{
    (void)state;
    Graph g;
    import_ok("shape_glue.onnx", NULL, &g);
    const OpType ops[] = {OP_CONV, OP_RESIZE};
    assert_ops(&g, ops, 2); /* Identity, Dropout and all glue are gone */
    const ResizeParams *p = &g.nodes[1].p.resize;
    assert_int_equal(p->nsp, 2);
    assert_int_equal(p->mode, RESIZE_LINEAR);
    assert_int_equal(p->coord, COORD_ALIGN_CORNERS);
    assert_true(p->scale[0] == 2.0 && p->scale[1] == 2.0);
    const Shape *out = &g.values[g.outputs[0]].shape;
    assert_int_equal(out->d[1], 3);
    assert_int_equal(out->d[2], 12);
    assert_int_equal(out->d[3], 10);
    graph_free(&g);
}

static void test_softmax_semantics(void **state)
{
    (void)state;
    Graph g;
    /* Transpose -> Softmax(last) -> Transpose back: softmax over C. */
    import_ok("softmax_transpose.onnx", NULL, &g);
    const OpType ops[] = {OP_CONV, OP_SOFTMAX};
    assert_ops(&g, ops, 2);
    assert_int_equal(g.nodes[1].p.softmax.axis, 1);
    assert_int_equal(g.nodes[1].p.softmax.flatten, 0);
    assert_string_equal(g.values[g.outputs[0]].name, "y");
    graph_free(&g);
    /* Opset 11 Softmax(axis=1) on [N,C,H,W]: one softmax over C*H*W. */
    import_ok("softmax_flat11.onnx", NULL, &g);
    assert_ops(&g, ops, 2);
    assert_int_equal(g.nodes[1].p.softmax.axis, 1);
    assert_int_equal(g.nodes[1].p.softmax.flatten, 1);
    graph_free(&g);
    /* torch.onnx at opset 11 (Transpose perm 0,3,2,1 around the softmax). */
    import_ok("torch_unet2d_op11.onnx", NULL, &g);
    const Node *last = &g.nodes[g.n_nodes - 1];
    assert_int_equal(last->op, OP_SOFTMAX);
    assert_int_equal(last->p.softmax.axis, 1);
    assert_int_equal(last->p.softmax.flatten, 0);
    graph_free(&g);
}

static void test_instance_norm_pattern(void **state)
{
    (void)state;
    Graph g;
    import_ok("instnorm_bn.onnx", NULL, &g);
    const OpType ops[] = {OP_CONV, OP_INSTANCE_NORM, OP_RELU};
    assert_ops(&g, ops, 3);
    /* BN scale 1, bias 0, then Mul gamma and Add beta folded in. */
    const float sc[3] = {2.0f, 3.0f, 4.0f}, bi[3] = {0.5f, -0.5f, 1.0f};
    assert_memory_equal(weight(&g, 1, 1), sc, sizeof sc);
    assert_memory_equal(weight(&g, 1, 2), bi, sizeof bi);
    assert_int_equal(g.nodes[1].in[0], g.nodes[0].out);
    assert_true(g.nodes[1].p.norm.eps == 1e-5f);
    /* Against torch's instance_norm: statistics over 16 values, O(1)
     * outputs; 1e-5 absolute is ~50x float32 rounding. */
    run_and_compare(&g, "instnorm_bn.in.f32", "instnorm_bn.out.f32", 1e-5);
    graph_free(&g);
    /* N = 2 (view [1, 6, 16]) and the opset-9 five-output training form:
     * still one InstanceNorm with the per-channel half of the scale. */
    import_ok("instnorm_bn_n2.onnx", NULL, &g);
    assert_int_equal(g.n_nodes, 1);
    assert_int_equal(g.nodes[0].op, OP_INSTANCE_NORM);
    const float sc2[3] = {1.0f, 2.0f, 3.0f};
    assert_int_equal(g.values[g.nodes[0].in[1]].shape.d[0], 3);
    assert_memory_equal(weight(&g, 0, 1), sc2, sizeof sc2);
    assert_int_equal(g.values[g.outputs[0]].shape.d[0], 2);
    graph_free(&g);
}

static void test_conv_pool_geometry(void **state)
{
    (void)state;
    Graph g;
    import_ok("conv_transpose.onnx", NULL, &g);
    const OpType ops[] = {OP_CONV,     OP_CONV_TRANSPOSE, OP_CONV_TRANSPOSE,
                          OP_MAX_POOL, OP_AVG_POOL,       OP_ADD};
    assert_ops(&g, ops, 6);
    /* Conv 3x3 stride 2 SAME_LOWER on 10: out 5, total pad 1, at the start.
     */
    const ConvParams *c = &g.nodes[0].p.conv;
    assert_int_equal(c->stride[0], 2);
    assert_int_equal(c->pad_lo[0], 1);
    assert_int_equal(c->pad_hi[0], 0);
    /* ConvTranspose output_shape 10 from 5 (stride 2, K 3): total pad
     * 2*4 + 3 - 10 = 1, NOTSET puts the odd one at the start. */
    c = &g.nodes[1].p.conv;
    assert_int_equal(c->pad_lo[0], 1);
    assert_int_equal(c->pad_hi[0], 0);
    assert_int_equal(c->out_pad[0], 0);
    assert_int_equal(g.values[g.nodes[1].out].shape.d[2], 10);
    c = &g.nodes[2].p.conv;
    assert_int_equal(c->out_pad[1], 1);
    assert_int_equal(c->pad_lo[1], 1);
    assert_int_equal(g.values[g.nodes[2].out].shape.d[3], 10);
    const PoolParams *p = &g.nodes[3].p.pool;
    assert_int_equal(p->ceil_mode, 1);
    assert_int_equal(p->kernel[0], 2);
    p = &g.nodes[4].p.pool;
    assert_int_equal(p->count_include_pad, 1);
    assert_int_equal(p->pad_lo[0], 1);
    assert_int_equal(p->stride[1], 2);
    assert_int_equal(g.values[g.outputs[0]].shape.d[2], 5);
    graph_free(&g);
}

static void test_multi_output(void **state)
{
    (void)state;
    Graph g;
    import_ok("multi_output.onnx", NULL, &g);
    /* Default: the high-resolution head, listed second; the dead
     * Sigmoid branch is dropped, the low head kept. */
    assert_int_equal(g.n_outputs, 2);
    assert_string_equal(g.values[g.outputs[0]].name, "high");
    assert_string_equal(g.values[g.outputs[1]].name, "low");
    assert_int_equal(g.n_nodes, 4);
    for (int k = 0; k < g.n_nodes; k++)
        assert_int_not_equal(g.nodes[k].op, OP_SIGMOID);
    graph_free(&g);
    OnnxImportOptions o = {"low", NULL, 0};
    import_ok("multi_output.onnx", &o, &g);
    assert_string_equal(g.values[g.outputs[0]].name, "low");
    assert_int_equal(g.values[g.outputs[0]].shape.d[2], 4);
    graph_free(&g);
    o.output_name = "nope";
    sl_error_reset();
    graph_init(&g);
    assert_int_equal(onnx_import(fx("multi_output.onnx"), &o, &g), ERR_ARG);
    assert_non_null(strstr(sl_error_last(), "nope"));
    assert_int_equal(g.n_nodes, 0);
    graph_free(&g);
}

static void test_torch_exports(void **state)
{
    (void)state;
    Graph g;
    import_ok("torch_unet2d_op13.onnx", NULL, &g);
    const OpType ops[] = {OP_CONV,     OP_INSTANCE_NORM,  OP_LEAKY_RELU,
                          OP_MAX_POOL, OP_CONV,           OP_INSTANCE_NORM,
                          OP_RELU,     OP_CONV_TRANSPOSE, OP_CONCAT,
                          OP_CONV,     OP_RELU,           OP_CONV,
                          OP_SOFTMAX};
    assert_ops(&g, ops, 13);
    assert_int_equal(g.nodes[8].p.concat.axis, 1);
    assert_true(g.nodes[2].p.act.alpha == 0.01f);
    assert_int_equal(g.nodes[7].p.conv.stride[0], 2);
    graph_free(&g);
    /* 3D at opset 17 (BatchNorm folded into the conv by the exporter). */
    import_ok("torch_unet3d_op17.onnx", NULL, &g);
    assert_int_equal(g.meta.dims, 3);
    assert_int_equal(g.nodes[0].p.conv.nsp, 3);
    assert_int_equal(g.nodes[g.n_nodes - 1].op, OP_SOFTMAX);
    assert_int_equal(g.nodes[g.n_nodes - 1].p.softmax.axis, 1);
    assert_int_equal(g.values[g.outputs[0]].shape.ndim, 5);
    graph_free(&g);
    /* Opset 11 with F.interpolate(size=skip): Resize with folded sizes. */
    import_ok("torch_unet2d_op11.onnx", NULL, &g);
    int resize = -1;
    for (int k = 0; k < g.n_nodes; k++)
        if (g.nodes[k].op == OP_RESIZE) resize = k;
    assert_true(resize >= 0);
    assert_int_equal(g.nodes[resize].p.resize.mode, RESIZE_NEAREST);
    assert_int_equal(g.nodes[resize].p.resize.coord, COORD_ASYMMETRIC);
    assert_int_equal(g.nodes[resize].p.resize.nearest, NEAREST_FLOOR);
    assert_true(g.nodes[resize].p.resize.scale[0] == 2.0);
    graph_free(&g);
}

/* The opset-13 export run by the runtime equals PyTorch's output. */
static void test_torch_numeric(void **state)
{
    (void)state;
    Graph g;
    import_ok("torch_unet2d_op13.onnx", NULL, &g);
    /* Softmax probabilities of a 13-layer float32 net: rounding differs
     * from PyTorch's by ~1e-7 per op; 1e-5 absolute leaves a wide margin
     * while a wrong axis, pad or fold gives errors of 1e-2 and more. */
    run_and_compare(&g, "torch_unet2d_op13.in.f32",
                    "torch_unet2d_op13.out.f32", 1e-5);
    graph_free(&g);
}

static void test_misc_ops(void **state)
{
    (void)state;
    Graph g;
    import_ok("misc_ops.onnx", NULL, &g);
    const OpType ops[] = {
        OP_CONV,   OP_RELU,       OP_CONV,   OP_BATCH_NORM, OP_LEAKY_RELU,
        OP_RESIZE, OP_BATCH_NORM, OP_CONCAT, OP_ADD,        OP_MAX_POOL};
    assert_ops(&g, ops, 10);
    /* SAME_UPPER, K 3, stride 2 on 8: out 4, total pad 1, at the end. */
    assert_int_equal(g.nodes[2].p.conv.pad_lo[0], 0);
    assert_int_equal(g.nodes[2].p.conv.pad_hi[0], 1);
    /* BN then "- k" then "/ k2" per channel, folded into BN:
     * scale s/k2 = [0.5, 0.5], bias (b - k)/k2 = [-0.25, -0.75]. */
    const Node *bn = &g.nodes[3];
    assert_int_equal(bn->p.norm.use_batch_stats, 0);
    assert_true(bn->p.norm.eps == 1e-3f);
    assert_true(bn->p.norm.momentum == 0.8f);
    const float sc[2] = {0.5f, 0.5f}, bi[2] = {-0.25f, -0.75f};
    const float mean[2] = {0.1f, 0.2f}, var[2] = {1.5f, 0.5f};
    assert_memory_equal(weight(&g, 3, 1), sc, sizeof sc);
    assert_memory_equal(weight(&g, 3, 2), bi, sizeof bi);
    assert_memory_equal(weight(&g, 3, 3), mean, sizeof mean);
    assert_memory_equal(weight(&g, 3, 4), var, sizeof var);
    /* The Unsqueeze/Squeeze pair vanished; LeakyRelu default alpha. */
    assert_int_equal(g.nodes[4].in[0], g.nodes[3].out);
    assert_true(g.nodes[4].p.act.alpha == 0.01f);
    const ResizeParams *rp = &g.nodes[5].p.resize;
    assert_int_equal(rp->coord, COORD_HALF_PIXEL);
    assert_int_equal(rp->nearest, NEAREST_ROUND_PREFER_FLOOR);
    assert_true(rp->scale[0] == 2.0 && rp->scale[1] == 2.0);
    /* training_mode=1 on a plain tensor: batch statistics. */
    assert_int_equal(g.nodes[6].p.norm.use_batch_stats, 1);
    assert_int_equal(g.nodes[7].p.concat.axis, 1); /* -3 of rank 4 */
    /* Bias after a Concat cannot fold: an Add with a [4,1,1] weight. */
    const Value *b = &g.values[g.nodes[8].in[1]];
    assert_non_null(b->data);
    assert_int_equal(b->shape.ndim, 3);
    assert_int_equal(b->shape.d[0], 4);
    assert_int_equal(g.nodes[9].p.pool.dilation[1], 2);
    /* Against the same computation in PyTorch: ~10 float32 ops on O(1)
     * values; 1e-5 absolute is far above rounding (~1e-6) and far below
     * what a wrong fold, pad or mode would give (>1e-2). */
    run_and_compare(&g, "misc_ops.in.f32", "misc_ops.out.f32", 1e-5);
    graph_free(&g);
}

static void test_upsample_and_resize_to_skip(void **state)
{
    (void)state;
    Graph g;
    import_ok("upsample9.onnx", NULL, &g);
    assert_int_equal(g.n_nodes, 1);
    const ResizeParams *p = &g.nodes[0].p.resize;
    assert_int_equal(p->mode, RESIZE_NEAREST);
    assert_int_equal(p->coord, COORD_ASYMMETRIC);
    assert_int_equal(p->nearest, NEAREST_FLOOR);
    assert_true(p->scale[0] == 2.0 && p->scale[1] == 3.0);
    assert_int_equal(g.values[g.outputs[0]].shape.d[3], 12);
    graph_free(&g);
    /* sizes from Shape(skip), 2x2 -> 5x5: the Resize takes the skip as a
     * second input so it follows the skip at every input size. */
    import_ok("resize_sizes.onnx", NULL, &g);
    assert_int_equal(g.nodes[2].op, OP_RESIZE);
    assert_int_equal(g.nodes[2].n_in, 2);
    assert_int_equal(g.nodes[2].in[1], g.nodes[0].out);
    Shape s = {4, {1, 1, 14, 14}};
    assert_int_equal(graph_infer_shapes(&g, &s), 0);
    assert_int_equal(g.values[g.outputs[0]].shape.d[2], 7);
    graph_free(&g);
}

static void test_noop_glue(void **state)
{
    (void)state;
    Graph g;
    import_ok("noop_glue.onnx", NULL, &g);
    const OpType ops[] = {OP_CONV, OP_CONV, OP_CONCAT};
    assert_ops(&g, ops, 3);
    assert_int_equal(g.nodes[2].in[1], g.nodes[1].out);
    graph_free(&g);
    import_fails(fx("bad_pad.onnx"), ERR_UNSUPPORTED, "pad_real", "non-zero");
}

/* ---- external data ---- */

static void test_external_data(void **state)
{
    (void)state;
    Graph g;
    import_ok("external.onnx", NULL, &g);
    assert_int_equal(graph_params(&g), 18);
    graph_free(&g);
    import_fails(fx("external_abs.onnx"), ERR_UNSUPPORTED,
                 "external_abs.onnx", "outside");
    import_fails(fx("external_dotdot.onnx"), ERR_UNSUPPORTED,
                 "external_dotdot.onnx", "outside");
    import_fails(fx("external_oob.onnx"), ERR_FORMAT, "external_oob.onnx",
                 "offset 64");
    /* A data file that is a symlink out of the model's folder. */
    char model[512], link[512], target[512], cwd[256];
    snprintf(model, sizeof model, "%s/external.onnx", test_tmpdir());
    snprintf(link, sizeof link, "%s/external.bin", test_tmpdir());
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(target, sizeof target, "%s/%s", cwd, fx("external.bin"));
    uint8_t *bytes;
    size_t size;
    assert_int_equal(sl_read_file(fx("external.onnx"), &bytes, &size), 0);
    assert_int_equal(sl_write_file_atomic(model, bytes, size, 1), 0);
    sl_free(bytes);
    unlink(link);
    assert_int_equal(symlink(target, link), 0);
    import_fails(model, ERR_UNSUPPORTED, "external.onnx", "resolves outside");
    /* Missing data file. */
    unlink(link);
    import_fails(model, ERR_IO, "external.bin", NULL);
}

/* ---- bad models ---- */

static void test_bad_models(void **state)
{
    (void)state;
    import_fails(fx("bad_gemm.onnx"), ERR_UNSUPPORTED,
                 "'Gemm' at node 'fc' (#2)", "bad_gemm.onnx");
    import_fails(fx("bad_missing_init.onnx"), ERR_FORMAT, "w_missing",
                 "bad_missing_init.onnx");
    import_fails(fx("bad_short_init.onnx"), ERR_FORMAT, "'w1'",
                 "bad_short_init.onnx");
    import_fails(fx("bad_shapes.onnx"), ERR_SHAPE, "add_mismatch", NULL);
    import_fails(fx("bad_conv_channels.onnx"), ERR_SHAPE, "conv_ic", NULL);
    import_fails("tests/fixtures/onnx/no_such_model.onnx", ERR_IO,
                 "no_such_model.onnx", NULL);
    /* 2^30 floats declared, none stored: refused before any allocation. */
    import_fails(fx("bad_huge_init.onnx"), ERR_FORMAT, "'w_huge'",
                 "bad_huge_init.onnx");
    import_fails(fx("bad_huge_input.onnx"), ERR_SHAPE, "bad_huge_input.onnx",
                 "dim 2");
    import_fails(fx("bad_opset.onnx"), ERR_UNSUPPORTED, "opset 5",
                 "bad_opset.onnx");
}

static void write_bytes(const char *path, const uint8_t *b, size_t n)
{
    assert_int_equal(sl_write_file_atomic(path, b, n, 1), 0);
}

static void test_truncated_and_random(void **state)
{
    (void)state;
    uint8_t *bytes;
    size_t size;
    char path[512];
    snprintf(path, sizeof path, "%s/cut.onnx", test_tmpdir());
    assert_int_equal(sl_read_file(fx("conv_relu.onnx"), &bytes, &size), 0);
    write_bytes(path, bytes, 0);
    import_fails(path, ERR_FORMAT, "not an ONNX model", "cut.onnx");
    /* Every truncation must fail cleanly (ASan/UBSan watch for the rest). */
    sl_error_quiet(1);
    for (size_t n = 1; n < size; n++) {
        Graph g;
        graph_init(&g);
        write_bytes(path, bytes, n);
        sl_error_reset();
        int rc = onnx_import(path, NULL, &g);
        if (rc == 0) fprintf(stderr, "truncation to %zu bytes imported\n", n);
        assert_true(rc < 0);
        assert_true(sl_error_reported());
        assert_int_equal(g.n_values, 0);
        graph_free(&g);
    }
    sl_error_quiet(0);
    write_bytes(path, bytes, size / 2);
    import_fails(path, ERR_FORMAT, "not an ONNX model", NULL);
    sl_free(bytes);
    /* Random bytes, a few seeds. */
    TestRng r = {42};
    uint8_t rnd[4096];
    for (int t = 0; t < 8; t++) {
        for (size_t k = 0; k < sizeof rnd; k++)
            rnd[k] = (uint8_t)trng_next(&r);
        write_bytes(path, rnd, sizeof rnd);
        import_fails(path, ERR_FORMAT, "cut.onnx", NULL);
    }
}

/* Random byte corruptions of real models: any outcome but a crash, a hang
 * or a leak (the sanitizer build checks the last two). */
static void test_corrupted_bytes(void **state)
{
    (void)state;
    static const char *names[] = {"torch_unet2d_op11.onnx", "misc_ops.onnx",
                                  "instnorm_bn.onnx", "shape_glue.onnx"};
    char path[512];
    snprintf(path, sizeof path, "%s/mut.onnx", test_tmpdir());
    TestRng r = {7};
    int failed = 0, total = 0;
    sl_error_quiet(1);
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        uint8_t *bytes;
        size_t size;
        assert_int_equal(sl_read_file(fx(names[f]), &bytes, &size), 0);
        for (int t = 0; t < 150; t++) {
            uint8_t *m = sl_alloc(size);
            memcpy(m, bytes, size);
            int flips = 1 + (int)(trng_next(&r) % 4);
            for (int k = 0; k < flips; k++)
                m[trng_next(&r) % size] = (uint8_t)trng_next(&r);
            write_bytes(path, m, size);
            sl_free(m);
            Graph g;
            graph_init(&g);
            sl_error_reset();
            int rc = onnx_import(path, NULL, &g);
            total++;
            if (rc) {
                failed++;
                assert_true(sl_error_reported());
                assert_int_equal(g.n_values, 0);
            } else {
                assert_int_equal(graph_validate(&g, path), 0);
            }
            graph_free(&g);
        }
        sl_free(bytes);
    }
    sl_error_quiet(0);
    /* Most corruptions must be caught; a flip inside a weight is not one. */
    assert_true(failed > 0 && failed <= total);
}

/* Every allocation failing in turn: an error, never a crash or a leak. */
static void test_allocation_failures(void **state)
{
    (void)state;
    int ok = 0;
    sl_error_quiet(1);
    for (long k = 0; k < 100000 && !ok; k++) {
        Graph g;
        graph_init(&g);
        sl_error_reset();
        sl_alloc_fail_after(k);
        int rc = onnx_import(fx("instnorm_bn.onnx"), NULL, &g);
        sl_alloc_fail_after(-1);
        if (rc == 0)
            ok = 1;
        else {
            assert_true(sl_error_reported());
            assert_int_equal(g.n_values, 0);
        }
        graph_free(&g);
    }
    sl_error_quiet(0);
    assert_true(ok);
}

/* ---- sauron-compress ---- */

static int parse(CompressOptions *o, const char *line)
{
    char buf[512], *argv[32], *save = NULL;
    int argc = 0;
    snprintf(buf, sizeof buf, "sauron-compress %s", line);
    for (char *t = strtok_r(buf, " ", &save); t && argc < 31;
         t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    argv[argc] = NULL;
    sl_error_reset();
    sl_error_quiet(1);
    int rc = compress_parse_args(argc, argv, o);
    sl_error_quiet(0);
    /* Borrowed strings point into buf: copy what the tests look at. */
    o->in_path = o->out_path = NULL;
    o->classes = o->modalities = o->output_name = o->data_dir = NULL;
    return rc;
}

static void test_cli_parse(void **state)
{
    (void)state;
    CompressOptions o;
    assert_int_equal(parse(&o, "a.onnx b.sslim"), 0);
    assert_int_equal(o.axis, 2);
    assert_int_equal(o.normalize.kind, NORMALIZE_ZSCORE);
    assert_int_equal(o.order, ORDER_NNUNET);
    assert_int_equal(o.no_finetune, 0);
    assert_int_equal(o.patch[0], 0);
    assert_int_equal(
        parse(&o, "--no-finetune --axis 1 --order nibabel --force a b"), 0);
    assert_int_equal(o.axis, 1);
    assert_int_equal(o.order, ORDER_NIBABEL);
    assert_int_equal(o.force, 1);
    assert_int_equal(o.no_finetune, 1);
    assert_int_equal(
        parse(&o, "--axis=0 --patch 32,64,48 --normalize ct:-100,250 a b"),
        0);
    assert_int_equal(o.axis, 0);
    assert_int_equal(o.patch[0], 32);
    assert_int_equal(o.patch[2], 48);
    assert_int_equal(o.normalize.kind, NORMALIZE_CT);
    assert_true(o.normalize.lo == -100.0f && o.normalize.hi == 250.0f);
    assert_int_equal(parse(&o, "--normalize none a b"), 0);
    assert_int_equal(o.normalize.kind, NORMALIZE_NONE);
    assert_int_equal(parse(&o, "--help"), 0);
    assert_int_equal(o.help, 1);
    assert_int_equal(parse(&o, "--version"), 0);
    assert_int_equal(o.version, 1);
    static const char *bad[] = {
        "a.onnx",
        "",
        "--axis 3 a b",
        "--axis x a b",
        "--patch 1,2 a b",
        "--patch 0,8,8 a b",
        "--normalize ct:5,1 a b",
        "--normalize zz a b",
        "--order ijk a b",
        "--bogus a b",
        "a b c",
        "--axis",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int rc = parse(&o, bad[k]);
        if (rc != ERR_ARG) fprintf(stderr, "accepted: '%s'\n", bad[k]);
        assert_int_equal(rc, ERR_ARG);
        assert_true(strlen(sl_error_last()) > 0);
    }
}

static int run_main(const char *line)
{
    char buf[1024], *argv[32], *save = NULL;
    int argc = 0;
    snprintf(buf, sizeof buf, "sauron-compress %s", line);
    for (char *t = strtok_r(buf, " ", &save); t && argc < 31;
         t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    argv[argc] = NULL;
    sl_error_reset();
    sl_error_quiet(1);
    fflush(stdout);
    int rc = compress_main(argc, argv);
    sl_error_quiet(0);
    return rc;
}

static void test_cli_convert(void **state)
{
    (void)state;
    char out[400], line[1024];
    Graph g;
    snprintf(out, sizeof out, "%s/conv_relu.sslim", test_tmpdir());
    unlink(out);
    /* Without --no-finetune or --data: usage error, nothing written. */
    snprintf(line, sizeof line, "%s %s", fx("conv_relu.onnx"), out);
    assert_int_equal(run_main(line), 2);
    assert_false(sl_file_exists(out));
    snprintf(line, sizeof line, "--data /nonexistent %s %s",
             fx("conv_relu.onnx"), out);
    assert_int_equal(run_main(line), 2);
    assert_false(sl_file_exists(out));
    /* Class count must match the network's 3 output channels. */
    snprintf(line, sizeof line, "--no-finetune --classes bg,fg %s %s",
             fx("conv_relu.onnx"), out);
    assert_int_equal(run_main(line), 2);
    assert_non_null(strstr(sl_error_last(), "--classes"));
    assert_false(sl_file_exists(out));
    snprintf(line, sizeof line,
             "--no-finetune --classes bg,liver,tumour --modalities ct "
             "--normalize ct:-100,200 "
             "--axis 1 %s %s",
             fx("conv_relu.onnx"), out);
    assert_int_equal(run_main(line), 0);
    assert_int_equal(sslim_read(out, &g), 0);
    assert_int_equal(g.meta.n_classes, 3);
    assert_string_equal(g.meta.class_names[1], "liver");
    assert_int_equal(g.meta.n_modalities, 1);
    assert_string_equal(g.meta.modality_names[0], "ct");
    assert_int_equal(g.meta.normalize[0].kind, NORMALIZE_CT);
    assert_int_equal(g.meta.dims, 2);
    assert_int_equal(g.meta.axis, 1);
    assert_string_equal(g.meta.source_name, "conv_relu.onnx");
    assert_int_equal(g.n_nodes, 4);
    graph_free(&g);
    /* Existing output: refused without --force, replaced with it. */
    assert_int_equal(run_main(line), 1);
    assert_non_null(strstr(sl_error_last(), "--force"));
    strcat(line, " --force");
    assert_int_equal(run_main(line), 0);
    /* Never overwrite the input, even with --force. */
    char copy[400];
    uint8_t *bytes;
    size_t size;
    snprintf(copy, sizeof copy, "%s/in.onnx", test_tmpdir());
    assert_int_equal(sl_read_file(fx("conv_relu.onnx"), &bytes, &size), 0);
    write_bytes(copy, bytes, size);
    snprintf(line, sizeof line, "--no-finetune --force %s %s/./in.onnx", copy,
             test_tmpdir());
    assert_int_equal(run_main(line), 2);
    uint8_t *after;
    size_t size2;
    assert_int_equal(sl_read_file(copy, &after, &size2), 0);
    assert_int_equal(size, size2);
    assert_memory_equal(bytes, after, size);
    sl_free(bytes);
    sl_free(after);
    /* 3D: default patch = import shape; --patch re-imports at that size;
     * --patch on a 2D model is refused. */
    snprintf(out, sizeof out, "%s/unet3d.sslim", test_tmpdir());
    snprintf(line, sizeof line, "--no-finetune --patch 8,16,16 %s %s",
             fx("torch_unet3d_op17.onnx"), out);
    assert_int_equal(run_main(line), 0);
    assert_int_equal(sslim_read(out, &g), 0);
    assert_int_equal(g.meta.dims, 3);
    assert_int_equal(g.meta.patch[0], 8);
    assert_int_equal(g.meta.patch[2], 16);
    assert_int_equal(g.values[g.input].shape.d[3], 16);
    graph_free(&g);
    snprintf(line, sizeof line, "--no-finetune --force --patch 8,16,16 %s %s",
             fx("conv_relu.onnx"), out);
    assert_int_equal(run_main(line), 2);
    assert_non_null(strstr(sl_error_last(), "--patch"));
}

static void test_inspect_json(void **state)
{
    (void)state;
    char bin[256], cmd[1024], path[400];
    snprintf(path, sizeof path, "%s/inspect.json", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s --json > %s",
             bin_path("sauron-inspect", bin, sizeof bin),
             fx("conv_relu.onnx"), path);
    assert_int_equal(run_cmd(cmd, NULL, 0), 0);
    uint8_t *b;
    size_t n;
    assert_int_equal(sl_read_file(path, &b, &n), 0);
    char *s = sl_alloc(n + 1);
    memcpy(s, b, n);
    s[n] = '\0';
    assert_non_null(strstr(s, "\"params\": 29,"));
    assert_non_null(strstr(s, "\"flops\": "));
    assert_non_null(strstr(s, "\"layers\": ["));
    assert_non_null(strstr(
        s, "\"name\": \"conv1\", \"op\": \"Conv\", \"shape\": [1, 2, 8, 8]"));
    assert_non_null(strstr(s, "\"meta\": {"));
    sl_free(s);
    sl_free(b);
    /* Garbage in: one error line, non-zero exit. */
    char err[512];
    snprintf(cmd, sizeof cmd, "%s %s", bin, fx("bad_gemm.onnx"));
    assert_int_not_equal(run_cmd(cmd, err, sizeof err), 0);
    assert_non_null(strstr(err, "Gemm"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_conv_relu),
        cmocka_unit_test(test_typed_fields_and_dynamic_dims),
        cmocka_unit_test(test_shape_glue_folded),
        cmocka_unit_test(test_softmax_semantics),
        cmocka_unit_test(test_instance_norm_pattern),
        cmocka_unit_test(test_conv_pool_geometry),
        cmocka_unit_test(test_multi_output),
        cmocka_unit_test(test_torch_exports),
        cmocka_unit_test(test_torch_numeric),
        cmocka_unit_test(test_misc_ops),
        cmocka_unit_test(test_upsample_and_resize_to_skip),
        cmocka_unit_test(test_noop_glue),
        cmocka_unit_test(test_external_data),
        cmocka_unit_test(test_bad_models),
        cmocka_unit_test(test_truncated_and_random),
        cmocka_unit_test(test_corrupted_bytes),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_cli_parse),
        cmocka_unit_test(test_cli_convert),
        cmocka_unit_test(test_inspect_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
