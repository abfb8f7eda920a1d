/* ONNX import of malformed models: every one is refused with one error
 * line (or imported), never a crash, an out-of-range read or a leak (the
 * sanitizer build, `make asan`, checks the last two).
 *
 * Three sources of bad models:
 * - tests/fixtures/fuzz/onnx/: inputs that once crashed the importer
 *   (found by coverage-guided fuzzing), replayed as they are;
 * - small models built here with protobuf-c, each aimed at one class of
 *   flaw (an absent operand, an attribute without a name, a folded
 *   constant where an activation is expected, ...);
 * - every committed fixture with each optional protobuf field removed in
 *   turn, each repeated field emptied and each repeated string made empty:
 *   the importer must cope with any field being absent, not only the ones
 *   a fuzzer happened to find. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor/onnx/onnx_import.h"
#include "onnx.pb-c.h"
#include "runtime/common.h"
#include "runtime/graph.h"
#include "tests/testutil.h"

/* ---- checks ---- */

/* No control characters and no bytes >= 0x80 that are not valid UTF-8:
 * what an error line may show on a terminal. */
static int printable_line(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x20 || *p == 0x7f) return 0;
        if (*p < 0x80) {
            p++;
            continue;
        }
        int n = (*p & 0xe0) == 0xc0   ? 1
                : (*p & 0xf0) == 0xe0 ? 2
                : (*p & 0xf8) == 0xf0 ? 3
                                      : -1;
        if (n < 0) return 0;
        for (int k = 1; k <= n; k++)
            if ((p[k] & 0xc0) != 0x80) return 0;
        p += n + 1;
    }
    return 1;
}

/* Import path; return the code.  On failure: one reported line that a
 * terminal shows as it is, and an empty graph; on success a valid graph. */
static int import_any(const char *path)
{
    Graph g;
    graph_init(&g);
    sl_error_reset();
    int rc = onnx_import(path, NULL, &g);
    if (rc) {
        if (!sl_error_reported() || !printable_line(sl_error_last()))
            fprintf(stderr, "%s: rc %d, message '%s'\n", path, rc,
                    sl_error_last());
        assert_true(rc < 0);
        assert_true(sl_error_reported());
        assert_true(printable_line(sl_error_last()));
        assert_int_equal(g.n_values, 0);
    } else {
        assert_int_equal(graph_validate(&g, path), 0);
    }
    graph_free(&g);
    return rc;
}

static void copy_file(const char *from, const char *to)
{
    uint8_t *b;
    size_t n;
    assert_int_equal(sl_read_file(from, &b, &n), 0);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    sl_free(b);
}

/* ---- a tiny model builder (malloc'd, freed by free_unpacked) ---- */

static char *dup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

static void *grow(void *arr, size_t *n, size_t elem)
{
    void *p = realloc(arr, (*n + 1) * elem);
    assert_non_null(p);
    (*n)++;
    return p;
}

static Onnx__ValueInfoProto *value_info(const char *name, int ndim,
                                        const int64_t *dims)
{
    Onnx__ValueInfoProto *v = calloc(1, sizeof *v);
    Onnx__TypeProto *t = calloc(1, sizeof *t);
    Onnx__TypeProto__Tensor *tt = calloc(1, sizeof *tt);
    Onnx__TensorShapeProto *sp = calloc(1, sizeof *sp);
    assert_true(v && t && tt && sp);
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(t);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sp);
    v->name = dup(name);
    v->type = t;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sp;
    sp->n_dim = (size_t)ndim;
    sp->dim = calloc((size_t)ndim + 1, sizeof *sp->dim);
    assert_non_null(sp->dim);
    for (int k = 0; k < ndim; k++) {
        Onnx__TensorShapeProto__Dimension *d = calloc(1, sizeof *d);
        assert_non_null(d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[k] >= 0) {
            d->value_case =
                ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[k];
        } else {
            d->value_case =
                ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = dup("dyn");
        }
        sp->dim[k] = d;
    }
    return v;
}

/* Model with input "x" of dims (-1: dynamic) and output "y". */
static Onnx__ModelProto *model_new(int ndim, const int64_t *dims)
{
    Onnx__ModelProto *m = calloc(1, sizeof *m);
    Onnx__GraphProto *g = calloc(1, sizeof *g);
    Onnx__OperatorSetIdProto *o = calloc(1, sizeof *o);
    assert_true(m && g && o);
    onnx__model_proto__init(m);
    onnx__graph_proto__init(g);
    onnx__operator_set_id_proto__init(o);
    m->has_ir_version = 1;
    m->ir_version = 8;
    o->has_version = 1;
    o->version = 17;
    m->opset_import = grow(NULL, &m->n_opset_import, sizeof o);
    m->opset_import[0] = o;
    m->graph = g;
    g->name = dup("malformed");
    g->input = grow(NULL, &g->n_input, sizeof *g->input);
    g->input[0] = value_info("x", ndim, dims);
    int64_t od[1] = {1};
    g->output = grow(NULL, &g->n_output, sizeof *g->output);
    g->output[0] = value_info("y", 1, od);
    return m;
}

/* Split a comma-separated list keeping empty names ("a,,b" has 3). */
static char **names(const char *list, size_t *n)
{
    char **v = NULL;
    *n = 0;
    if (!*list) return NULL;
    for (const char *p = list;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        v = grow(v, n, sizeof *v);
        v[*n - 1] = strndup(p, len);
        assert_non_null(v[*n - 1]);
        if (!e) break;
        p = e + 1;
    }
    return v;
}

static Onnx__NodeProto *add_node(Onnx__ModelProto *m, const char *op,
                                 const char *ins, const char *outs)
{
    Onnx__GraphProto *g = m->graph;
    Onnx__NodeProto *n = calloc(1, sizeof *n);
    assert_non_null(n);
    onnx__node_proto__init(n);
    n->op_type = dup(op);
    n->name = dup(op);
    n->input = names(ins, &n->n_input);
    n->output = names(outs, &n->n_output);
    g->node = grow(g->node, &g->n_node, sizeof *g->node);
    g->node[g->n_node - 1] = n;
    return n;
}

/* An integer attribute; name NULL: an attribute without a name. */
static Onnx__AttributeProto *add_attr_i(Onnx__NodeProto *n, const char *name,
                                        int64_t v)
{
    Onnx__AttributeProto *a = calloc(1, sizeof *a);
    assert_non_null(a);
    onnx__attribute_proto__init(a);
    a->name = name ? dup(name) : NULL;
    a->has_type = 1;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = v;
    n->attribute = grow(n->attribute, &n->n_attribute, sizeof *n->attribute);
    n->attribute[n->n_attribute - 1] = a;
    return a;
}

/* A float initializer filled with `fill` (raw data). */
static Onnx__TensorProto *add_init(Onnx__ModelProto *m, const char *name,
                                   int ndim, const int64_t *dims, float fill)
{
    Onnx__GraphProto *g = m->graph;
    Onnx__TensorProto *t = calloc(1, sizeof *t);
    assert_non_null(t);
    onnx__tensor_proto__init(t);
    t->name = dup(name);
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    size_t numel = 1;
    t->dims = calloc((size_t)ndim + 1, sizeof *t->dims);
    assert_non_null(t->dims);
    t->n_dims = (size_t)ndim;
    for (int k = 0; k < ndim; k++) {
        t->dims[k] = dims[k];
        numel *= (size_t)dims[k];
    }
    t->has_raw_data = 1;
    t->raw_data.len = numel * 4;
    t->raw_data.data = malloc(numel * 4 + 1);
    assert_non_null(t->raw_data.data);
    for (size_t k = 0; k < numel; k++)
        memcpy(t->raw_data.data + 4 * k, &fill, 4);
    g->initializer =
        grow(g->initializer, &g->n_initializer, sizeof *g->initializer);
    g->initializer[g->n_initializer - 1] = t;
    return t;
}

static void write_model(const Onnx__ModelProto *m, const char *path)
{
    size_t n = onnx__model_proto__get_packed_size(m);
    uint8_t *b = malloc(n + 1);
    assert_non_null(b);
    assert_int_equal(onnx__model_proto__pack(m, b), n);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    free(b);
}

/* Write m, import it, free it; return the import's code. */
static int try_model(Onnx__ModelProto *m)
{
    const char *path = test_tmp_path("built.onnx");
    write_model(m, path);
    onnx__model_proto__free_unpacked(m, NULL);
    return import_any(path);
}

/* x [1, 2, 8, 8] -> Conv 3x3 pad 1 (2 -> 2 channels) -> "c". */
static Onnx__ModelProto *conv_model(void)
{
    const int64_t xd[4] = {1, 2, 8, 8}, wd[4] = {2, 2, 3, 3};
    Onnx__ModelProto *m = model_new(4, xd);
    add_init(m, "w", 4, wd, 0.5f);
    Onnx__NodeProto *n = add_node(m, "Conv", "x,w", "c");
    (void)n;
    return m;
}

/* ---- the committed reproducers ---- */

static void test_fuzz_reproducers(void **state)
{
    (void)state;
    char dirp[300], path[600];
    fixture_path("fuzz/onnx", dirp, sizeof dirp);
    /* Replayed from a copy beside their external data (external.bin). */
    copy_file(fixture_path("fuzz/onnx/external.bin", path, sizeof path),
              test_tmp_path("external.bin"));
    DIR *d = opendir(dirp);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".onnx")) continue;
        snprintf(path, sizeof path, "%s/%s", dirp, e->d_name);
        const char *copy = test_tmp_path(e->d_name);
        copy_file(path, copy);
        assert_true(import_any(copy) < 0);
        n++;
    }
    closedir(d);
    assert_true(n >= 3);
}

/* ---- built models, one class of flaw each ---- */

/* An arithmetic node whose operand name is empty (absent): the per-channel
 * path read the missing constant (channel_vector on NULL). */
static void test_absent_operand(void **state)
{
    (void)state;
    static const char *const ops[] = {"Add", "Sub", "Mul", "Div"};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        Onnx__ModelProto *m = conv_model();
        add_node(m, ops[k], "c,", "y");
        assert_int_equal(try_model(m), ERR_FORMAT);
        assert_non_null(strstr(sl_error_last(), "2 inputs"));
        m = conv_model();
        add_node(m, ops[k], ",c", "y");
        assert_int_equal(try_model(m), ERR_FORMAT);
    }
}

/* Attributes without a name are ignored, also by the search for the
 * channel count of a dynamic input (strcmp on NULL before); a group that
 * would overflow the channel count is refused. */
static void test_nameless_attribute(void **state)
{
    (void)state;
    const int64_t xd[4] = {1, -1, 8, 8}, wd[4] = {2, 2, 3, 3};
    Onnx__ModelProto *m = model_new(4, xd);
    add_init(m, "w", 4, wd, 0.5f);
    Onnx__NodeProto *n = add_node(m, "Conv", "x,w", "y");
    add_attr_i(n, NULL, 7);
    add_attr_i(n, "group", 1);
    add_attr_i(n, NULL, 3);
    assert_int_equal(try_model(m), 0);

    m = model_new(4, xd);
    add_init(m, "w", 4, wd, 0.5f);
    n = add_node(m, "Conv", "x,w", "y");
    add_attr_i(n, "group", INT64_MAX / 2 + 1);
    assert_int_equal(try_model(m), ERR_SHAPE);
}

/* A folded constant as the first input of an op that lowers activations:
 * it has no IR value yet (a read before g->values in lw_sym_dims before).
 * Nine inputs keep the folder away (it takes at most eight), so every
 * lowering function meets the constant. */
static void test_constant_where_activation_expected(void **state)
{
    (void)state;
    static const char *const ops[] = {"Reshape",
                                      "Squeeze",
                                      "Unsqueeze",
                                      "Flatten",
                                      "Transpose",
                                      "Pad",
                                      "Slice",
                                      "Cast",
                                      "Shape",
                                      "Identity",
                                      "Dropout",
                                      "Relu",
                                      "LeakyRelu",
                                      "Sigmoid",
                                      "Softmax",
                                      "Concat",
                                      "Add",
                                      "Mul",
                                      "Resize",
                                      "Upsample",
                                      "MaxPool",
                                      "Conv",
                                      "AveragePool",
                                      "ConvTranspose",
                                      "InstanceNormalization",
                                      "BatchNormalization"};
    const int64_t kd[4] = {1, 2, 8, 8};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        Onnx__ModelProto *m = conv_model();
        add_init(m, "k", 4, kd, 1.0f);
        add_node(m, ops[k], "k,k,k,k,k,k,k,k,k", "y");
        assert_true(try_model(m) < 0);
    }
    /* Pad and Reshape of a constant by an activation-derived operand do
     * not fold either. */
    Onnx__ModelProto *m = conv_model();
    add_init(m, "k", 4, kd, 1.0f);
    add_node(m, "Pad", "k,c", "y");
    assert_int_equal(try_model(m), ERR_UNSUPPORTED);
    assert_non_null(strstr(sl_error_last(), "constant where an activation"));
    m = conv_model();
    add_init(m, "k", 4, kd, 1.0f);
    add_node(m, "Reshape", "k,c", "y");
    assert_int_equal(try_model(m), ERR_UNSUPPORTED);
}

/* Names from the file reach the terminal escaped, in one line: the
 * importer's own message and the CLI's stderr as a whole. */
static void test_names_escaped(void **state)
{
    (void)state;
    static const char evil[] = "n\x1b[2J\v\f\r\n'\xff\xc2\x85";
    /* An unsupported operator whose type and node name are hostile. */
    Onnx__ModelProto *m = conv_model();
    Onnx__NodeProto *n = add_node(m, "Relu", "c", "y");
    free(n->op_type);
    n->op_type = dup(evil);
    free(n->name);
    n->name = dup(evil);
    const char *path = test_tmp_path("evil.onnx");
    write_model(m, path);
    onnx__model_proto__free_unpacked(m, NULL);
    assert_int_equal(import_any(path), ERR_UNSUPPORTED);
    assert_non_null(strstr(sl_error_last(),
                           "n\\x1b[2J\\x0b\\x0c\\x0d\\x0a\\'\\xff"
                           "\\xc2\\x85"));
    /* A tensor name in a data error, an input name in a shape error. */
    m = conv_model();
    free(m->graph->initializer[0]->name);
    m->graph->initializer[0]->name = dup(evil);
    m->graph->initializer[0]->raw_data.len -= 4;
    free(m->graph->node[0]->input[1]);
    m->graph->node[0]->input[1] = dup(evil);
    assert_int_equal(try_model(m), ERR_FORMAT);
    assert_non_null(strstr(sl_error_last(), "'n\\x1b[2J"));
    /* The whole program: exactly one line on stderr, nothing else. */
    char bin[512], cmd[2048], first[512];
    snprintf(cmd, sizeof cmd, "%s --no-finetune %s %s",
             bin_path("sauron-compress", bin, sizeof bin), path,
             test_tmp_path("evil.sslim"));
    assert_int_not_equal(run_cmd(cmd, first, sizeof first), 0);
    char *err = slurp_text(test_tmp_path("stderr.txt"));
    assert_non_null(err);
    size_t len = strlen(err);
    assert_true(len > 1 && err[len - 1] == '\n');
    err[len - 1] = '\0';
    if (!printable_line(err)) fprintf(stderr, "stderr: %s\n", err);
    assert_true(printable_line(err));
    assert_non_null(strstr(err, "error: "));
    free(err);
}

/* ---- resource claims ---- */

/* Import that must be refused with `code` while no single allocation
 * exceeds 1 MiB: every model here is a few hundred bytes, so a larger
 * request means a claim was believed before it was checked. */
static void refused_small(Onnx__ModelProto *m, int code, const char *needle)
{
    sl_alloc_track(1);
    int rc = try_model(m);
    size_t largest = sl_alloc_largest();
    sl_alloc_track(0);
    if (rc != code || largest > ((size_t)1 << 20) ||
        (needle && !strstr(sl_error_last(), needle)))
        fprintf(stderr, "rc %d (want %d), largest allocation %zu: %s\n", rc,
                code, largest, sl_error_last());
    assert_int_equal(rc, code);
    assert_true(largest <= ((size_t)1 << 20));
    if (needle) assert_non_null(strstr(sl_error_last(), needle));
}

/* Conv model whose weight "w" claims dims (data: 4 floats or none). */
static Onnx__ModelProto *claim_model(int ndim, const int64_t *dims,
                                     int with_data)
{
    const int64_t xd[4] = {1, 2, 8, 8}, small[1] = {4};
    Onnx__ModelProto *m = model_new(4, xd);
    Onnx__TensorProto *t = add_init(m, "w", 1, small, 1.0f);
    free(t->dims);
    t->dims = calloc((size_t)ndim + 1, sizeof *t->dims);
    assert_non_null(t->dims);
    memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    t->n_dims = (size_t)ndim;
    if (!with_data) {
        t->has_raw_data = 0;
        free(t->raw_data.data);
        t->raw_data.data = NULL;
        t->raw_data.len = 0;
    }
    add_node(m, "Conv", "x,w", "y");
    return m;
}

static void set_external(Onnx__TensorProto *t, const char *offset,
                         const char *length)
{
    static const char *const keys[] = {"location", "offset", "length"};
    const char *vals[] = {"external.bin", offset, length};
    t->has_raw_data = 0;
    free(t->raw_data.data);
    t->raw_data.data = NULL;
    t->raw_data.len = 0;
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    for (int k = 0; k < 3; k++) {
        if (!vals[k]) continue;
        Onnx__StringStringEntryProto *e = calloc(1, sizeof *e);
        assert_non_null(e);
        onnx__string_string_entry_proto__init(e);
        e->key = dup(keys[k]);
        e->value = dup(vals[k]);
        t->external_data = grow(t->external_data, &t->n_external_data,
                                sizeof *t->external_data);
        t->external_data[t->n_external_data - 1] = e;
    }
}

/* The largest claims an initializer, external data, the input or a
 * folded constant can make: refused with one line before any large
 * allocation, and no product of dims overflows (UBSan checks). */
static void test_resource_claims(void **state)
{
    (void)state;
    const int64_t big = (int64_t)1 << 31;
    const int64_t claims[][3] = {
        {INT64_MAX, 2, 1}, /* product overflows at once */
        {big, big, big},   /* overflows on the second factor */
        {(int64_t)1 << 40, 1, 1},
        {big + 1, 1, 1}, /* one past the largest tensor */
        {-1, 4, 1},      /* negative */
        {big, 1, 1},     /* the largest tensor, with 4 floats of data */
    };
    for (size_t k = 0; k < sizeof claims / sizeof claims[0]; k++) {
        refused_small(claim_model(3, claims[k], 1), ERR_FORMAT, "'w'");
        refused_small(claim_model(3, claims[k], 0), ERR_FORMAT, "'w'");
    }
    /* External data: the file beside the model holds 88 bytes. */
    char path[300];
    copy_file(fixture_path("onnx/external.bin", path, sizeof path),
              test_tmp_path("external.bin"));
    static const char *const ext[][2] = {
        {"9223372036854775807", NULL},  /* offset INT64_MAX */
        {"99999999999999999999", NULL}, /* offset past int64 */
        {"0", "9223372036854775807"},   /* length INT64_MAX */
        {"0", "1099511627776"},         /* 1 TiB */
        {"80", "16"},                   /* past the end */
        {"-8", NULL},                   /* negative offset */
        {"0", "-1"},                    /* negative length */
        {"0", "16x"},                   /* not a number */
    };
    const int64_t wd[1] = {4};
    for (size_t k = 0; k < sizeof ext / sizeof ext[0]; k++) {
        const int64_t xd[4] = {1, 2, 8, 8};
        Onnx__ModelProto *m = model_new(4, xd);
        set_external(add_init(m, "w", 1, wd, 1.0f), ext[k][0], ext[k][1]);
        add_node(m, "Conv", "x,w", "y");
        refused_small(m, ERR_FORMAT, "'w'");
    }
    /* A claim of 2^31 floats (8 GiB) from the 88-byte file, no length. */
    const int64_t xd[4] = {1, 2, 8, 8}, hd[1] = {big};
    Onnx__ModelProto *m = model_new(4, xd);
    Onnx__TensorProto *t = add_init(m, "w", 1, wd, 1.0f);
    t->dims[0] = hd[0];
    set_external(t, "0", NULL);
    add_node(m, "Conv", "x,w", "y");
    refused_small(m, ERR_FORMAT, "does not fit");
    /* The input: five dims of 2^16 (their product overflows int64), and
     * INT64_MAX. */
    const int64_t in5[5] = {65536, 65536, 65536, 65536, 65536};
    m = model_new(5, in5);
    add_node(m, "Relu", "x", "y");
    refused_small(m, ERR_SHAPE, "not a scan");
    const int64_t inmax[4] = {1, 1, INT64_MAX, INT64_MAX};
    m = model_new(4, inmax);
    add_node(m, "Relu", "x", "y");
    refused_small(m, ERR_SHAPE, "at most");
    /* Folded constants: ConstantOfShape of [2^40, 2^40] and Range over
     * 2^62 values. */
    const int64_t one[1] = {2};
    m = conv_model();
    Onnx__TensorProto *sh = add_init(m, "shape", 1, one, 0.0f);
    sh->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    free(sh->raw_data.data);
    sh->raw_data.len = 16;
    sh->raw_data.data = calloc(1, 16);
    assert_non_null(sh->raw_data.data);
    sh->raw_data.data[5] = 1; /* 2^40, little-endian */
    sh->raw_data.data[13] = 1;
    add_node(m, "ConstantOfShape", "shape", "k");
    add_node(m, "Add", "c,k", "y");
    refused_small(m, ERR_UNSUPPORTED, "too large");
    m = conv_model();
    const int64_t scalar[1] = {1};
    add_init(m, "r0", 0, scalar, 0.0f);
    add_init(m, "r1", 0, scalar, 4.6e18f);
    add_init(m, "r2", 0, scalar, 1.0f);
    add_node(m, "Range", "r0,r1,r2", "k");
    add_node(m, "Add", "c,k", "y");
    refused_small(m, ERR_FORMAT, "Range too long");
}

/* ---- every optional field absent, every list empty ---- */

typedef struct {
    ProtobufCMessage *root;
    const char *path;
    int tried, imported;
} Walk;

static void try_root(Walk *w)
{
    write_model((const Onnx__ModelProto *)w->root, w->path);
    w->tried++;
    w->imported += import_any(w->path) == 0;
}

/* For each field of msg (depth first): remove it, import, put it back. */
static void walk(Walk *w, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned f = 0; f < d->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[f];
        char *base = (char *)msg;
        void *member = base + fd->offset;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t *np = (size_t *)(void *)(base + fd->quantifier_offset);
            size_t n = *np;
            if (!n) continue;
            *np = 0;
            try_root(w);
            *np = n;
            if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                ProtobufCMessage **arr = *(ProtobufCMessage ***)member;
                for (size_t k = 0; k < n; k++)
                    walk(w, arr[k]);
            } else if (fd->type == PROTOBUF_C_TYPE_STRING) {
                char **arr = *(char ***)member;
                static char empty[] = "";
                for (size_t k = 0; k < n; k++) {
                    char *keep = arr[k];
                    arr[k] = empty;
                    try_root(w);
                    arr[k] = keep;
                }
            }
            continue;
        }
        if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *cs = (uint32_t *)(void *)(base + fd->quantifier_offset);
            if (*cs != fd->id) continue;
            *cs = 0;
            try_root(w);
            *cs = fd->id;
            if (fd->type == PROTOBUF_C_TYPE_MESSAGE)
                walk(w, *(ProtobufCMessage **)member);
            continue;
        }
        if (fd->type == PROTOBUF_C_TYPE_STRING ||
            fd->type == PROTOBUF_C_TYPE_MESSAGE) {
            void **p = (void **)member;
            void *keep = *p;
            if (!keep) continue;
            *p = NULL;
            try_root(w);
            *p = keep;
            if (fd->type == PROTOBUF_C_TYPE_MESSAGE)
                walk(w, (ProtobufCMessage *)keep);
            continue;
        }
        /* Optional scalars and bytes carry a has_ flag. */
        protobuf_c_boolean *has =
            (protobuf_c_boolean *)(void *)(base + fd->quantifier_offset);
        if (!*has) continue;
        *has = 0;
        try_root(w);
        *has = 1;
    }
}

static void test_every_field_absent(void **state)
{
    (void)state;
    static const char *const models[] = {
        "onnx/conv_relu.onnx",    "onnx/shape_glue.onnx",
        "onnx/instnorm_bn.onnx",  "onnx/misc_ops.onnx",
        "onnx/typed_fields.onnx", "onnx/external.onnx",
        "onnx/resize_sizes.onnx", "onnx/softmax_transpose.onnx",
        "onnx/noop_glue.onnx",    "onnx/torch_unet2d_op13.onnx"};
    char path[300];
    copy_file(fixture_path("onnx/external.bin", path, sizeof path),
              test_tmp_path("external.bin"));
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        uint8_t *b;
        size_t n;
        assert_int_equal(
            sl_read_file(fixture_path(models[k], path, sizeof path), &b, &n),
            0);
        Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, b);
        sl_free(b);
        assert_non_null(m);
        Walk w = {&m->base, test_tmp_path("field.onnx"), 0, 0};
        walk(&w, &m->base);
        onnx__model_proto__free_unpacked(m, NULL);
        /* Some removals are harmless (names, doc strings): each model
         * must have been both refused and imported at least once. */
        if (w.tried < 20 || w.imported == 0 || w.imported == w.tried)
            fprintf(stderr, "%s: %d tried, %d imported\n", models[k], w.tried,
                    w.imported);
        assert_true(w.tried >= 20);
        assert_true(w.imported > 0 && w.imported < w.tried);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_reproducers),
        cmocka_unit_test(test_absent_operand),
        cmocka_unit_test(test_nameless_attribute),
        cmocka_unit_test(test_constant_where_activation_expected),
        cmocka_unit_test(test_names_escaped),
        cmocka_unit_test(test_resource_claims),
        cmocka_unit_test(test_every_field_absent),
    };
    /* Every model here is meant to fail: the lines are checked through
     * sl_error_last(), and a failing check prints its own. */
    sl_error_quiet(1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
