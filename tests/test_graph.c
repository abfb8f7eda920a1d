/* graph.c: shape helpers, building, validation, shape inference, FLOPs and
 * parameters, cloning, and graph_valid_size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/graph.h"
#include "runtime/ops/ops.h"
#include "tests/graphbuild.h"
#include "tests/testutil.h"

static Shape mk(int ndim, int64_t a, int64_t b, int64_t c, int64_t d,
                int64_t e)
{
    Shape s = {ndim, {a, b, c, d, e}};
    return s;
}

static void test_shape_helpers(void **state)
{
    (void)state;
    Shape s = mk(4, 1, 3, 5, 7, 0);
    assert_int_equal(shape_numel(&s), 105);
    Shape z = mk(0, 0, 0, 0, 0, 0);
    assert_int_equal(shape_numel(&z), 1);
    Shape neg = mk(2, 4, -1, 0, 0, 0);
    assert_int_equal(shape_numel(&neg), -1);
    Shape big = mk(5, 1LL << 40, 1LL << 40, 1, 1, 1);
    assert_int_equal(shape_numel(&big), -1); /* overflow reported, not UB */
    Shape t = s;
    assert_true(shape_equal(&s, &t));
    t.d[3] = 8;
    assert_false(shape_equal(&s, &t));
    t = s;
    t.ndim = 3;
    assert_false(shape_equal(&s, &t));
    char buf[64];
    assert_string_equal(shape_str(&s, buf, sizeof buf), "[1,3,5,7]");
    assert_string_equal(shape_str(&z, buf, sizeof buf), "[]");
    char small[5];
    shape_str(&s, small, sizeof small); /* truncates, stays terminated */
    assert_true(strlen(small) < sizeof small);
}

static void test_add_and_find(void **state)
{
    (void)state;
    Graph g;
    graph_init(&g);
    assert_int_equal(g.input, -1);
    Shape s = mk(1, 4, 0, 0, 0, 0);
    /* Enough values and nodes to make the arrays grow several times. */
    for (int i = 0; i < 300; i++) {
        char name[32];
        snprintf(name, sizeof name, "v%d", i);
        float *d = i % 2 ? sl_calloc(4, sizeof(float)) : NULL;
        assert_int_equal(graph_add_value(&g, name, &s, d), i);
    }
    assert_int_equal(g.n_values, 300);
    assert_int_equal(graph_find_value(&g, "v123"), 123);
    assert_int_equal(graph_find_value(&g, "nope"), -1);
    assert_int_equal(graph_find_value(&g, NULL), -1);
    Node n;
    memset(&n, 0, sizeof n);
    n.op = OP_RELU;
    n.n_in = 1;
    char nm[16] = "relu";
    n.name = nm;
    for (int i = 0; i < 100; i++) {
        n.in[0] = 2 * i;
        n.out = 2 * i + 2;
        assert_int_equal(graph_add_node(&g, &n), i);
        assert_int_equal(g.values[2 * i + 2].producer, i);
    }
    /* the name was duplicated, not borrowed */
    nm[0] = 'X';
    assert_string_equal(g.nodes[5].name, "relu");
    /* an output index out of range is refused */
    sl_error_quiet(1);
    n.out = 10000;
    assert_int_equal(graph_add_node(&g, &n), ERR_ARG);
    sl_error_reset();
    sl_error_quiet(0);
    graph_free(&g);
    assert_int_equal(g.n_values, 0);
    assert_null(g.values);
    graph_free(&g); /* freeing twice is harmless */
}

static void test_add_value_nomem(void **state)
{
    (void)state;
    Graph g;
    graph_init(&g);
    Shape s = mk(1, 4, 0, 0, 0, 0);
    sl_error_quiet(1);
    /* k = 0: name copy fails; k = 1: array growth fails.  Either way the
     * data passed in is released (ASan would report a leak otherwise). */
    for (int k = 0; k < 2; k++) {
        float *d = sl_alloc(16);
        assert_non_null(d);
        sl_alloc_fail_after(k);
        assert_int_equal(graph_add_value(&g, "w", &s, d), ERR_NOMEM);
        sl_alloc_fail_after(-1);
        sl_error_reset();
    }
    sl_error_quiet(0);
    assert_int_equal(g.n_values, 0);
    graph_free(&g);
}

static void test_validate_good(void **state)
{
    (void)state;
    Graph g;
    for (int nsp = 2; nsp <= 3; nsp++) {
        assert_int_equal(build_unet(&g, nsp, 1, 4, 3, nsp == 2, 7), 0);
        assert_int_equal(graph_validate(&g, "unet"), 0);
        graph_free(&g);
    }
    assert_int_equal(build_all_ops(&g, 3), 0);
    assert_int_equal(graph_validate(&g, "all ops"), 0);
    graph_free(&g);
}

/* Breaks a fresh 2D U-Net with `how` and checks validate rejects it with
 * a message naming `what` and (if given) `needle`. */
static void expect_invalid(int how, const char *needle)
{
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 11), 0);
    /* node 0 is the first conv; node 1 its instance norm */
    switch (how) {
    case 0:
        g.nodes[1].in[0] = g.n_values + 5;
        break; /* index */
    case 1:
        g.nodes[0].p.conv.stride[1] = 0;
        break; /* params */
    case 2:
        g.nodes[1].out = g.nodes[0].out;
        break; /* twice */
    case 3: {  /* order */
        Node t = g.nodes[0];
        g.nodes[0] = g.nodes[1];
        g.nodes[1] = t;
        break;
    }
    case 4:
        g.n_outputs = 0;
        break;
    case 5:
        g.input = -1;
        break;
    case 6: { /* no data */
        int w = g.nodes[0].in[1];
        sl_free(g.values[w].data);
        g.values[w].data = NULL;
        break;
    }
    case 7:
        g.values[g.nodes[0].in[1]].shape.d[2] = 5;
        break; /* K */
    case 8:
        g.nodes[0].op = OP_COUNT;
        break;
    case 9:
        g.nodes[1].n_in = 1;
        break; /* arity */
    case 10:
        g.nodes[g.n_nodes - 1].p.softmax.axis = 9;
        break; /* last */
    case 11:
        g.outputs[0] = g.nodes[0].in[1];
        break; /* weight out */
    default:
        fail();
    }
    sl_error_quiet(1);
    sl_error_reset();
    int rc = graph_validate(&g, "model.sslim");
    if (rc != ERR_FORMAT) fprintf(stderr, "case %d accepted\n", how);
    assert_int_equal(rc, ERR_FORMAT);
    const char *msg = sl_error_last();
    if (!strstr(msg, "model.sslim") || (needle && !strstr(msg, needle)))
        fprintf(stderr, "case %d: message '%s' lacks '%s'\n", how, msg,
                needle ? needle : "model.sslim");
    assert_non_null(strstr(msg, "model.sslim"));
    if (needle) assert_non_null(strstr(msg, needle));
    sl_error_reset();
    sl_error_quiet(0);
    graph_free(&g);
}

static void test_validate_bad(void **state)
{
    (void)state;
    const char *name0 = "n"; /* node names start with n<count>_ */
    expect_invalid(0, "input 0");
    expect_invalid(1, "Conv");
    expect_invalid(2, "already produced");
    expect_invalid(3, "before it is produced");
    expect_invalid(4, "outputs");
    expect_invalid(5, "input");
    expect_invalid(6, "weight");
    expect_invalid(7, "Conv");
    expect_invalid(8, "unknown op");
    expect_invalid(9, "InstanceNormalization");
    expect_invalid(10, name0);
    expect_invalid(11, "output");
}

static void test_infer_unet2d(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 1, 5), 0);
    Shape in = mk(4, 2, 1, 24, 32, 0);
    assert_int_equal(graph_infer_shapes(&g, &in), 0);
    const Shape *o = &g.values[g.outputs[0]].shape;
    Shape want = mk(4, 2, 3, 24, 32, 0);
    assert_true(shape_equal(o, &want));
    /* the strided block halves H and W and doubles channels */
    Shape down = mk(4, 2, 8, 12, 16, 0);
    int found = 0;
    for (int i = 0; i < g.n_nodes; i++)
        found += shape_equal(&g.values[g.nodes[i].out].shape, &down);
    assert_true(found >= 3); /* conv, norm, leaky relu */
    /* deep-supervision head at half resolution */
    Shape head = mk(4, 2, 3, 12, 16, 0);
    assert_true(shape_equal(&g.values[g.outputs[1]].shape, &head));
    graph_free(&g);
}

static void test_infer_unet3d(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 3, 2, 4, 2, 0, 5), 0);
    Shape in = mk(5, 1, 2, 8, 12, 16);
    assert_int_equal(graph_infer_shapes(&g, &in), 0);
    Shape want = mk(5, 1, 2, 8, 12, 16);
    assert_true(shape_equal(&g.values[g.outputs[0]].shape, &want));
    /* every activation got a concrete shape */
    for (int i = 0; i < g.n_nodes; i++)
        assert_true(shape_numel(&g.values[g.nodes[i].out].shape) > 0);
    graph_free(&g);
}

static void expect_shape_error(Graph *g, Shape in, const char *needle)
{
    sl_error_quiet(1);
    sl_error_reset();
    assert_int_equal(graph_infer_shapes(g, &in), ERR_SHAPE);
    if (needle && !strstr(sl_error_last(), needle))
        fprintf(stderr, "message '%s' lacks '%s'\n", sl_error_last(), needle);
    if (needle) assert_non_null(strstr(sl_error_last(), needle));
    sl_error_reset();
    sl_error_quiet(0);
}

static void test_infer_bad(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 5), 0);
    /* odd size: the up path gives 32 where the skip has 33 -> Concat */
    expect_shape_error(&g, mk(4, 1, 1, 33, 32, 0), "Concat");
    /* wrong channel count and wrong rank, against the declared input */
    expect_shape_error(&g, mk(4, 1, 2, 32, 32, 0), "channels");
    expect_shape_error(&g, mk(5, 1, 1, 8, 32, 32), "rank");
    expect_shape_error(&g, mk(4, 1, 1, 0, 32, 0), "empty");
    /* a good shape still works afterwards */
    assert_int_equal(graph_infer_shapes(&g, &(Shape){4, {1, 1, 8, 8}}), 0);
    /* a weight whose channel count disagrees with its input */
    int w = g.nodes[0].in[1];
    g.values[w].shape.d[1] = 2;
    expect_shape_error(&g, mk(4, 1, 1, 8, 8, 0), "Conv");
    graph_free(&g);
}

static void test_valid_size(void **state)
{
    (void)state;
    Graph g;
    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 5), 0);
    Shape base = mk(4, 1, 1, 32, 32, 0);
    /* One stride-2 level: sizes must be even. */
    sl_error_reset();
    sl_error_quiet(1);
    sl_error("earlier failure");
    sl_error_quiet(0);
    assert_int_equal(graph_valid_size(&g, &base, 0, 33), 34);
    assert_int_equal(graph_valid_size(&g, &base, 1, 32), 32);
    assert_int_equal(graph_valid_size(&g, &base, 1, 1), 2);
    assert_int_equal(graph_valid_size(&g, &base, 5, 32), -1); /* no dim */
    /* the caller's error state and quiet flag are as before */
    assert_true(sl_error_reported());
    assert_string_equal(sl_error_last(), "earlier failure");
    assert_int_equal(sl_error_is_quiet(), 0);
    sl_error_reset();
    sl_error_quiet(1);
    assert_int_equal(graph_valid_size(&g, &base, 0, 33), 34);
    assert_int_equal(sl_error_is_quiet(), 1);
    assert_false(sl_error_reported());
    sl_error_quiet(0);
    graph_free(&g);

    /* 3D: three dims, the depth probed */
    assert_int_equal(build_unet(&g, 3, 1, 2, 2, 0, 5), 0);
    Shape b3 = mk(5, 1, 1, 8, 8, 8);
    assert_int_equal(graph_valid_size(&g, &b3, 0, 9), 10);
    assert_int_equal(graph_valid_size(&g, &b3, 2, 8), 8);
    graph_free(&g);

    /* An unpadded 3x3 conv shrinks every size: nothing keeps the size. */
    GBuild b = {&g, {1}, 0, 0};
    graph_init(&g);
    int x = gb_input(&b, 2, 1);
    g.outputs[0] = gb_conv(&b, x, 1, 1, 2, 3, 1, 0, 0);
    g.n_outputs = 1;
    assert_int_equal(graph_valid_size(&g, &base, 0, 20), -1);
    assert_false(sl_error_reported());
    graph_free(&g);
}

static void test_flops_params(void **state)
{
    (void)state;
    Graph g;
    GBuild b = {&g, {1}, 0, 0};
    graph_init(&g);
    int x = gb_input(&b, 2, 3);
    g.outputs[0] = gb_conv(&b, x, 3, 5, 2, 3, 1, 1, 1);
    g.n_outputs = 1;
    assert_int_equal(graph_params(&g), 5 * 3 * 9 + 5);
    assert_int_equal(graph_infer_shapes(&g, &(Shape){4, {1, 3, 10, 12}}), 0);
    /* 2 FLOPs per multiply-add; the bias may add one per output */
    int64_t macs = 5LL * 10 * 12 * 3 * 9;
    int64_t f = graph_flops(&g);
    assert_true(f >= 2 * macs && f <= 2 * macs + 5 * 10 * 12);
    graph_free(&g);

    assert_int_equal(build_unet(&g, 2, 1, 4, 3, 0, 5), 0);
    int64_t p = 0;
    for (int i = 0; i < g.n_values; i++)
        if (g.values[i].data) p += shape_numel(&g.values[i].shape);
    assert_int_equal(graph_params(&g), p);
    assert_int_equal(graph_infer_shapes(&g, &(Shape){4, {1, 1, 16, 16}}), 0);
    int64_t f16 = graph_flops(&g);
    assert_int_equal(graph_infer_shapes(&g, &(Shape){4, {1, 1, 32, 32}}), 0);
    /* conv work scales with pixels: 4x the pixels, about 4x the FLOPs */
    int64_t f32 = graph_flops(&g);
    assert_true(f32 > 3 * f16 && f32 <= 4 * f16 + 4096);
    graph_free(&g);
}

static void expect_same_graph(const Graph *a, const Graph *b)
{
    assert_int_equal(a->n_values, b->n_values);
    assert_int_equal(a->n_nodes, b->n_nodes);
    for (int i = 0; i < a->n_values; i++) {
        assert_string_equal(a->values[i].name, b->values[i].name);
        assert_true(shape_equal(&a->values[i].shape, &b->values[i].shape));
        assert_int_equal(a->values[i].producer, b->values[i].producer);
        assert_int_equal(!a->values[i].data, !b->values[i].data);
        if (a->values[i].data) {
            assert_ptr_not_equal(a->values[i].data, b->values[i].data);
            assert_memory_equal(a->values[i].data, b->values[i].data,
                                (size_t)shape_numel(&a->values[i].shape) * 4);
        }
    }
    for (int i = 0; i < a->n_nodes; i++) {
        assert_string_equal(a->nodes[i].name, b->nodes[i].name);
        assert_ptr_not_equal(a->nodes[i].name, b->nodes[i].name);
        assert_int_equal(a->nodes[i].op, b->nodes[i].op);
        assert_int_equal(a->nodes[i].n_in, b->nodes[i].n_in);
        assert_memory_equal(a->nodes[i].in, b->nodes[i].in,
                            sizeof a->nodes[i].in);
        assert_int_equal(a->nodes[i].out, b->nodes[i].out);
        assert_memory_equal(&a->nodes[i].p, &b->nodes[i].p,
                            sizeof a->nodes[i].p);
    }
    assert_int_equal(a->input, b->input);
    assert_int_equal(a->n_outputs, b->n_outputs);
    const ModelMeta *m = &a->meta, *n = &b->meta;
    assert_int_equal(m->n_classes, n->n_classes);
    for (int i = 0; i < m->n_classes; i++)
        assert_string_equal(m->class_names[i], n->class_names[i]);
    assert_int_equal(m->n_modalities, n->n_modalities);
    for (int i = 0; i < m->n_modalities; i++) {
        assert_string_equal(m->modality_names[i], n->modality_names[i]);
        assert_memory_equal(&m->normalize[i], &n->normalize[i],
                            sizeof m->normalize[i]);
    }
    assert_string_equal(m->source_name, n->source_name);
    assert_string_equal(m->notes, n->notes);
    assert_memory_equal(m->source_sha256, n->source_sha256, 32);
    assert_int_equal(m->dims, n->dims);
}

static void test_clone(void **state)
{
    (void)state;
    Graph g, c;
    assert_int_equal(build_all_ops(&g, 9), 0);
    assert_int_equal(graph_clone(&c, &g), 0);
    expect_same_graph(&g, &c);
    assert_int_equal(graph_validate(&c, "clone"), 0);
    /* independent: changing the copy leaves the original alone */
    int w = c.nodes[0].in[1];
    float before = g.values[w].data[0];
    c.values[w].data[0] += 1.0f;
    assert_true(g.values[w].data[0] == before);
    graph_free(&c);

    /* Every allocation failing in turn gives ERR_NOMEM and an empty dst
     * (leaks would show under ASan), until the clone succeeds. */
    sl_error_quiet(1);
    int k;
    for (k = 0; k < 10000; k++) {
        sl_error_reset();
        sl_alloc_fail_after(k);
        int rc = graph_clone(&c, &g);
        sl_alloc_fail_after(-1);
        if (rc == 0) break;
        assert_int_equal(rc, ERR_NOMEM);
        assert_int_equal(c.n_values, 0);
        assert_null(c.values);
    }
    sl_error_reset();
    sl_error_quiet(0);
    assert_true(k > 10 && k < 10000);
    expect_same_graph(&g, &c);
    graph_free(&c);
    graph_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_helpers),
        cmocka_unit_test(test_add_and_find),
        cmocka_unit_test(test_add_value_nomem),
        cmocka_unit_test(test_validate_good),
        cmocka_unit_test(test_validate_bad),
        cmocka_unit_test(test_infer_unet2d),
        cmocka_unit_test(test_infer_unet3d),
        cmocka_unit_test(test_infer_bad),
        cmocka_unit_test(test_valid_size),
        cmocka_unit_test(test_flops_params),
        cmocka_unit_test(test_clone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
