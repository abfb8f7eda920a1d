/* ONNX export: Graph -> ModelProto (protobuf-c) -> file.
 *
 * Every protobuf message, array and string made here is recorded in
 * Ex.owned and freed in one place after packing; the messages borrow
 * nothing from the graph except through copies, so the graph stays
 * untouched.  See onnx_export.h for the mapping. */
#include "onnx_export.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "onnx_meta.h"
#include "runtime/common.h"
#include "runtime/ops/ops.h"

#define PRODUCER "sauron-compress"
#define PRODUCER_VERSION "0.1.0"
#define MAX_ATTRS 8 /* Conv/pool need at most 7 */

typedef struct {
    char **s;
    int n, cap;
} NameSet;

typedef struct {
    const Graph *g;
    const char *path;
    int fail; /* sticky: an allocation failed */
    void **owned;
    int n_owned, cap_owned;
    Onnx__NodeProto **nodes;
    int n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    int n_inits, cap_inits;
    char **vname;   /* ONNX name per IR value, NULL until first use */
    char *inited;   /* per IR value: initializer emitted */
    NameSet values; /* value names in use (owned strings in `owned`) */
    NameSet nodenames;
    int rank;       /* rank of every activation (ops keep the rank) */
    Shape *shapes;  /* inferred shapes per value, or NULL */
    Shape in_shape; /* the shape `shapes` were inferred at */
} Ex;

/* ---- allocation bookkeeping ---- */

static int grow(void *arr, int *cap, int n, size_t elem)
{
    void **a = arr;
    if (n < *cap) return 0;
    int nc = *cap ? 2 * *cap : 16;
    void *p = sl_realloc(*a, (size_t)nc * elem);
    if (!p) return ERR_NOMEM;
    *a = p;
    *cap = nc;
    return 0;
}

static void *ex_own(Ex *e, void *p)
{
    if (!p || grow(&e->owned, &e->cap_owned, e->n_owned, sizeof(void *))) {
        sl_free(p);
        e->fail = 1;
        return NULL;
    }
    e->owned[e->n_owned++] = p;
    return p;
}

static void *ex_new(Ex *e, size_t size)
{
    return e->fail ? NULL : ex_own(e, sl_calloc(1, size));
}

static char *ex_strdup(Ex *e, const char *s)
{
    return e->fail ? NULL : ex_own(e, sl_strdup(s));
}

/* ---- names ---- */

static int name_used(const NameSet *ns, const char *s)
{
    for (int k = 0; k < ns->n; k++)
        if (!strcmp(ns->s[k], s)) return 1;
    return 0;
}

/* A name from `base` (characters outside [A-Za-z0-9_.:/-] replaced by '_',
 * `fallback` if empty) not yet in ns, with "_2", "_3"... if needed. */
static char *ex_unique(Ex *e, NameSet *ns, const char *base,
                       const char *fallback)
{
    char clean[200], buf[220];
    if (e->fail) return NULL;
    if (!base || !*base) base = fallback;
    snprintf(clean, sizeof clean, "%s", base);
    for (char *p = clean; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
                 c == '/' || c == '-';
        if (!ok) *p = '_';
    }
    snprintf(buf, sizeof buf, "%s", clean);
    for (int k = 2; name_used(ns, buf); k++)
        snprintf(buf, sizeof buf, "%s_%d", clean, k);
    if (grow(&ns->s, &ns->cap, ns->n, sizeof(char *))) {
        e->fail = 1;
        return NULL;
    }
    char *s = ex_strdup(e, buf);
    if (s) ns->s[ns->n++] = s;
    return s;
}

static const char *value_name(Ex *e, int v)
{
    if (!e->vname[v]) {
        char fb[32];
        snprintf(fb, sizeof fb, "v%d", v);
        e->vname[v] = ex_unique(e, &e->values, e->g->values[v].name, fb);
    }
    return e->vname[v];
}

/* ---- initializers ---- */

static Onnx__TensorProto *ex_tensor(Ex *e, const char *name, int ndim,
                                    const int64_t *dims, int dtype,
                                    size_t bytes)
{
    Onnx__TensorProto *t = ex_new(e, sizeof *t);
    int64_t *d = ex_new(e, (size_t)(ndim ? ndim : 1) * sizeof *d);
    uint8_t *raw = ex_new(e, bytes ? bytes : 1);
    if (!t || !d || !raw ||
        grow(&e->inits, &e->cap_inits, e->n_inits, sizeof *e->inits)) {
        e->fail = 1;
        return NULL;
    }
    onnx__tensor_proto__init(t);
    memcpy(d, dims, (size_t)ndim * sizeof *d);
    t->n_dims = (size_t)ndim;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = dtype;
    t->name =
        (char *)(uintptr_t)name; /* owned by e (protobuf-c wants char *) */
    t->has_raw_data = 1;
    t->raw_data.len = bytes;
    t->raw_data.data = raw;
    e->inits[e->n_inits++] = t;
    return t;
}

static void put_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    sl_wr32(p, u);
}

/* A float32 initializer of n values named `name`. */
static void ex_init_f32(Ex *e, const char *name, int ndim,
                        const int64_t *dims, const float *x, size_t n)
{
    Onnx__TensorProto *t = ex_tensor(
        e, name, ndim, dims, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4 * n);
    if (!t) return;
    for (size_t i = 0; i < n; i++)
        put_f32(t->raw_data.data + 4 * i, x[i]);
}

/* A float64 initializer (run-time size arithmetic). */
static void ex_init_f64(Ex *e, const char *name, int64_t n, const double *x)
{
    Onnx__TensorProto *t = ex_tensor(
        e, name, 1, &n, ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, 8 * (size_t)n);
    if (!t) return;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &x[i], sizeof u);
        sl_wr64(t->raw_data.data + 8 * i, u);
    }
}

/* Name of IR value v as a node input; a weight's initializer is emitted
 * on first use. */
static const char *input_name(Ex *e, int v)
{
    const Value *val = &e->g->values[v];
    const char *nm = value_name(e, v);
    if (nm && val->data && !e->inited[v]) {
        int64_t dims[SL_MAX_DIMS];
        for (int k = 0; k < val->shape.ndim; k++)
            dims[k] = val->shape.d[k];
        ex_init_f32(e, nm, val->shape.ndim, dims, val->data,
                    (size_t)shape_numel(&val->shape));
        e->inited[v] = 1;
    }
    return nm;
}

/* ---- nodes and attributes ---- */

static Onnx__NodeProto *ex_node(Ex *e, const char *op, const char *name,
                                int n_in, const char *const *in,
                                const char *out)
{
    Onnx__NodeProto *n = ex_new(e, sizeof *n);
    char **ins = ex_new(e, (size_t)(n_in ? n_in : 1) * sizeof(char *));
    char **outs = ex_new(e, sizeof(char *));
    Onnx__AttributeProto **attrs =
        ex_new(e, MAX_ATTRS * sizeof(Onnx__AttributeProto *));
    char *nm = ex_unique(e, &e->nodenames, name, op);
    if (!n || !ins || !outs || !attrs || !nm || !out ||
        grow(&e->nodes, &e->cap_nodes, e->n_nodes, sizeof *e->nodes)) {
        e->fail = 1;
        return NULL;
    }
    onnx__node_proto__init(n);
    for (int j = 0; j < n_in; j++) {
        if (!in[j]) {
            e->fail = 1;
            return NULL;
        }
        ins[j] = (char *)(uintptr_t)in[j];
    }
    outs[0] = (char *)(uintptr_t)out;
    n->n_input = (size_t)n_in;
    n->input = ins;
    n->n_output = 1;
    n->output = outs;
    n->name = nm;
    n->op_type = (char *)(uintptr_t)op; /* string literal, never freed */
    n->attribute = attrs;
    e->nodes[e->n_nodes++] = n;
    return n;
}

static Onnx__AttributeProto *ex_attr(Ex *e, Onnx__NodeProto *n,
                                     const char *name,
                                     Onnx__AttributeProto__AttributeType t)
{
    if (!n) return NULL;
    CHECK(n->n_attribute < MAX_ATTRS);
    Onnx__AttributeProto *a = ex_new(e, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = (char *)(uintptr_t)name; /* string literal */
    a->has_type = 1;
    a->type = t;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void attr_int(Ex *e, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a =
        ex_attr(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!a) return;
    a->has_i = 1;
    a->i = v;
}

static void attr_float(Ex *e, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a =
        ex_attr(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (!a) return;
    a->has_f = 1;
    a->f = v;
}

static void attr_str(Ex *e, Onnx__NodeProto *n, const char *name,
                     const char *v)
{
    Onnx__AttributeProto *a =
        ex_attr(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    if (!a) return;
    a->has_s = 1;
    a->s.len = strlen(v);
    a->s.data = (uint8_t *)(uintptr_t)v; /* string literal */
}

/* ints attribute from n ints, or from two arrays back to back (pads). */
static void attr_ints2(Ex *e, Onnx__NodeProto *n, const char *name,
                       const int *a0, const int *a1, int cnt)
{
    Onnx__AttributeProto *a =
        ex_attr(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int total = a1 ? 2 * cnt : cnt;
    int64_t *v = ex_new(e, (size_t)total * sizeof *v);
    if (!a || !v) return;
    for (int k = 0; k < cnt; k++) {
        v[k] = a0[k];
        if (a1) v[cnt + k] = a1[k];
    }
    a->n_ints = (size_t)total;
    a->ints = v;
}

/* ---- per-op export ---- */

static int geom_ok(const int *v, int nsp, int lo)
{
    for (int k = 0; k < nsp; k++)
        if (v[k] < lo) return 0;
    return 1;
}

static int bad_node(const Ex *e, const Node *n, int code, const char *what)
{
    sl_error("cannot export node '%s' (%s) to '%s': %s", sl_esc(n->name).s,
             op_name(n->op), e->path, what);
    return code;
}

static void conv_attrs(Ex *e, Onnx__NodeProto *o, const ConvParams *p,
                       int transpose)
{
    attr_ints2(e, o, "kernel_shape", p->kernel, NULL, p->nsp);
    attr_ints2(e, o, "strides", p->stride, NULL, p->nsp);
    attr_ints2(e, o, "dilations", p->dilation, NULL, p->nsp);
    attr_ints2(e, o, "pads", p->pad_lo, p->pad_hi, p->nsp);
    attr_int(e, o, "group", p->group);
    if (transpose)
        attr_ints2(e, o, "output_padding", p->out_pad, NULL, p->nsp);
}

static int export_conv(Ex *e, const Node *n, const char *const *in,
                       const char *out)
{
    const ConvParams *p = &n->p.conv;
    int tr = n->op == OP_CONV_TRANSPOSE;
    if (p->nsp < 1 || p->nsp > 3 || p->group < 1 ||
        !geom_ok(p->kernel, p->nsp, 1) || !geom_ok(p->stride, p->nsp, 1) ||
        !geom_ok(p->dilation, p->nsp, 1) || !geom_ok(p->pad_lo, p->nsp, 0) ||
        !geom_ok(p->pad_hi, p->nsp, 0) ||
        (tr && !geom_ok(p->out_pad, p->nsp, 0)) || n->n_in < 2 || n->n_in > 3)
        return bad_node(e, n, ERR_ARG, "malformed convolution parameters");
    Onnx__NodeProto *o =
        ex_node(e, tr ? "ConvTranspose" : "Conv", n->name, n->n_in, in, out);
    conv_attrs(e, o, p, tr);
    return 0;
}

static int export_pool(Ex *e, const Node *n, const char *const *in,
                       const char *out)
{
    const PoolParams *p = &n->p.pool;
    int mx = n->op == OP_MAX_POOL;
    if (p->nsp < 1 || p->nsp > 3 || !geom_ok(p->kernel, p->nsp, 1) ||
        !geom_ok(p->stride, p->nsp, 1) || !geom_ok(p->dilation, p->nsp, 1) ||
        !geom_ok(p->pad_lo, p->nsp, 0) || !geom_ok(p->pad_hi, p->nsp, 0))
        return bad_node(e, n, ERR_ARG, "malformed pooling parameters");
    for (int k = 0; !mx && k < p->nsp; k++)
        if (p->dilation[k] != 1)
            return bad_node(e, n, ERR_UNSUPPORTED,
                            "AveragePool with dilation needs opset 19; "
                            "export as .sslim instead");
    Onnx__NodeProto *o =
        ex_node(e, mx ? "MaxPool" : "AveragePool", n->name, 1, in, out);
    attr_ints2(e, o, "kernel_shape", p->kernel, NULL, p->nsp);
    attr_ints2(e, o, "strides", p->stride, NULL, p->nsp);
    attr_ints2(e, o, "pads", p->pad_lo, p->pad_hi, p->nsp);
    attr_int(e, o, "ceil_mode", p->ceil_mode ? 1 : 0);
    if (mx)
        attr_ints2(e, o, "dilations", p->dilation, NULL, p->nsp);
    else
        attr_int(e, o, "count_include_pad", p->count_include_pad ? 1 : 0);
    return 0;
}

static int export_norm(Ex *e, const Node *n, const char *const *in,
                       const char *out)
{
    const NormParams *p = &n->p.norm;
    if (n->op == OP_INSTANCE_NORM) {
        if (n->n_in != 3)
            return bad_node(e, n, ERR_ARG, "InstanceNorm needs 3 inputs");
        Onnx__NodeProto *o =
            ex_node(e, "InstanceNormalization", n->name, 3, in, out);
        attr_float(e, o, "epsilon", p->eps);
        return 0;
    }
    if (n->n_in != 5)
        return bad_node(e, n, ERR_ARG, "BatchNorm needs 5 inputs");
    if (p->use_batch_stats)
        return bad_node(
            e, n, ERR_UNSUPPORTED,
            "BatchNorm uses batch statistics (training mode), which ONNX "
            "Runtime cannot run for inference (it equals InstanceNorm only "
            "for batch 1); export as .sslim instead");
    Onnx__NodeProto *o =
        ex_node(e, "BatchNormalization", n->name, 5, in, out);
    attr_float(e, o, "epsilon", p->eps);
    /* Stored in the ONNX convention already (importer, backward.h). */
    attr_float(e, o, "momentum", p->momentum);
    return 0;
}

static int export_softmax(Ex *e, const Node *n, const char *const *in,
                          const char *out)
{
    const SoftmaxParams *p = &n->p.softmax;
    if (p->axis < 0 || p->axis >= e->rank)
        return bad_node(e, n, ERR_ARG, "Softmax axis out of range");
    if (!p->flatten || p->axis == e->rank - 1) {
        Onnx__NodeProto *o = ex_node(e, "Softmax", n->name, 1, in, out);
        attr_int(e, o, "axis", p->axis);
        return 0;
    }
    /* One softmax over all dims from axis on (opset < 13 meaning). */
    const char *flat = ex_unique(e, &e->values, out, "softmax");
    const char *sm = ex_unique(e, &e->values, out, "softmax");
    const char *shp = ex_unique(e, &e->values, out, "softmax");
    Onnx__NodeProto *o = ex_node(e, "Flatten", NULL, 1, in, flat);
    attr_int(e, o, "axis", p->axis);
    o = ex_node(e, "Softmax", n->name, 1, &flat, sm);
    attr_int(e, o, "axis", 1);
    ex_node(e, "Shape", NULL, 1, in, shp);
    const char *rin[2] = {sm, shp};
    ex_node(e, "Reshape", NULL, 2, rin, out);
    return 0;
}

static const char *coord_name(ResizeCoord c)
{
    switch (c) {
    case COORD_HALF_PIXEL:
        return "half_pixel";
    case COORD_PYTORCH_HALF_PIXEL:
        return "pytorch_half_pixel";
    case COORD_ALIGN_CORNERS:
        return "align_corners";
    case COORD_ASYMMETRIC:
        return "asymmetric";
    }
    return NULL;
}

static const char *nearest_name(ResizeNearest m)
{
    switch (m) {
    case NEAREST_ROUND_PREFER_FLOOR:
        return "round_prefer_floor";
    case NEAREST_ROUND_PREFER_CEIL:
        return "round_prefer_ceil";
    case NEAREST_FLOOR:
        return "floor";
    case NEAREST_CEIL:
        return "ceil";
    }
    return NULL;
}

/* sizes = [N, C] of x ++ floor(spatial * scale + 1e-6), our runtime's
 * output size, computed at run time in double.  With sizes, ONNX maps
 * coordinates with out/in as our runtime does; with a non-integral
 * in * scale, a scales input would map them with the scale itself. */
static const char *scaled_sizes(Ex *e, const char *x, const double *sc,
                                int nsp)
{
    const char *nc = ex_unique(e, &e->values, x, "resize");
    const char *sp = ex_unique(e, &e->values, x, "resize");
    const char *f = ex_unique(e, &e->values, x, "resize");
    const char *m = ex_unique(e, &e->values, x, "resize");
    const char *a = ex_unique(e, &e->values, x, "resize");
    const char *fl = ex_unique(e, &e->values, x, "resize");
    const char *i = ex_unique(e, &e->values, x, "resize");
    const char *sz = ex_unique(e, &e->values, x, "resize");
    const char *scn = ex_unique(e, &e->values, x, "scales");
    const char *epn = ex_unique(e, &e->values, x, "eps");
    double eps = 1e-6;
    ex_init_f64(e, scn, nsp, sc);
    ex_init_f64(e, epn, 1, &eps);
    Onnx__NodeProto *o = ex_node(e, "Shape", NULL, 1, &x, nc);
    attr_int(e, o, "end", 2);
    o = ex_node(e, "Shape", NULL, 1, &x, sp);
    attr_int(e, o, "start", 2);
    o = ex_node(e, "Cast", NULL, 1, &sp, f);
    attr_int(e, o, "to", ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE);
    const char *min[2] = {f, scn}, *ain[2] = {m, epn}, *cin[2] = {nc, i};
    ex_node(e, "Mul", NULL, 2, min, m);
    ex_node(e, "Add", NULL, 2, ain, a);
    ex_node(e, "Floor", NULL, 1, &a, fl);
    o = ex_node(e, "Cast", NULL, 1, &fl, i);
    attr_int(e, o, "to", ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
    o = ex_node(e, "Concat", NULL, 2, cin, sz);
    attr_int(e, o, "axis", 0);
    return sz;
}

static int export_resize(Ex *e, const Node *n, const char *const *in,
                         const char *out)
{
    const ResizeParams *p = &n->p.resize;
    const char *ct = coord_name(p->coord), *nm = nearest_name(p->nearest);
    if (p->nsp < 1 || p->nsp > 3 || p->nsp != e->rank - 2 || !ct || !nm ||
        (p->mode != RESIZE_NEAREST && p->mode != RESIZE_LINEAR) ||
        n->n_in < 1 || n->n_in > 2)
        return bad_node(e, n, ERR_ARG, "malformed Resize parameters");
    const char *rin[4] = {in[0], "", "", ""};
    int n_rin;
    if (n->n_in == 2) {
        /* sizes = [N, C] of x ++ spatial dims of the reference, computed
         * at run time so the relation holds at every input size. */
        const char *s0 = ex_unique(e, &e->values, out, "resize");
        const char *s1 = ex_unique(e, &e->values, out, "resize");
        const char *sz = ex_unique(e, &e->values, out, "resize");
        Onnx__NodeProto *o = ex_node(e, "Shape", NULL, 1, &in[0], s0);
        attr_int(e, o, "end", 2);
        o = ex_node(e, "Shape", NULL, 1, &in[1], s1);
        attr_int(e, o, "start", 2);
        const char *cin[2] = {s0, s1};
        o = ex_node(e, "Concat", NULL, 2, cin, sz);
        attr_int(e, o, "axis", 0);
        rin[3] = sz;
        n_rin = 4;
    } else {
        float sc[SL_MAX_DIMS] = {1.0f, 1.0f};
        int64_t dim = e->rank;
        int integral = 1;
        for (int k = 0; k < p->nsp; k++) {
            if (!(p->scale[k] > 0 && p->scale[k] <= 1024))
                return bad_node(e, n, ERR_ARG, "Resize scale out of range");
            sc[2 + k] = (float)p->scale[k];
            integral &= p->scale[k] == floor(p->scale[k]);
        }
        if (integral) {
            /* in * scale is exact: ONNX's scale-based mapping is ours */
            const char *sn = ex_unique(e, &e->values, out, "scales");
            ex_init_f32(e, sn, 1, &dim, sc, (size_t)e->rank);
            rin[2] = sn;
            n_rin = 3;
        } else {
            rin[3] = scaled_sizes(e, in[0], p->scale, p->nsp);
            n_rin = 4;
        }
    }
    Onnx__NodeProto *o = ex_node(e, "Resize", n->name, n_rin, rin, out);
    attr_str(e, o, "mode", p->mode == RESIZE_LINEAR ? "linear" : "nearest");
    attr_str(e, o, "coordinate_transformation_mode", ct);
    attr_str(e, o, "nearest_mode", nm);
    return 0;
}

static int export_node(Ex *e, const Node *n)
{
    const char *in[SL_MAX_INPUTS];
    for (int j = 0; j < n->n_in; j++)
        in[j] = input_name(e, n->in[j]);
    const char *out = value_name(e, n->out);
    if (e->fail) return ERR_NOMEM;
    Onnx__NodeProto *o;
    switch (n->op) {
    case OP_CONV:
    case OP_CONV_TRANSPOSE:
        return export_conv(e, n, in, out);
    case OP_INSTANCE_NORM:
    case OP_BATCH_NORM:
        return export_norm(e, n, in, out);
    case OP_RELU:
        ex_node(e, "Relu", n->name, 1, in, out);
        return 0;
    case OP_SIGMOID:
        ex_node(e, "Sigmoid", n->name, 1, in, out);
        return 0;
    case OP_IDENTITY:
        ex_node(e, "Identity", n->name, 1, in, out);
        return 0;
    case OP_LEAKY_RELU:
        o = ex_node(e, "LeakyRelu", n->name, 1, in, out);
        attr_float(e, o, "alpha", n->p.act.alpha);
        return 0;
    case OP_SOFTMAX:
        return export_softmax(e, n, in, out);
    case OP_CONCAT:
        if (n->p.concat.axis < 0 || n->p.concat.axis >= e->rank)
            return bad_node(e, n, ERR_ARG, "Concat axis out of range");
        o = ex_node(e, "Concat", n->name, n->n_in, in, out);
        attr_int(e, o, "axis", n->p.concat.axis);
        return 0;
    case OP_ADD:
        if (n->n_in != 2)
            return bad_node(e, n, ERR_ARG, "Add needs 2 inputs");
        ex_node(e, "Add", n->name, 2, in, out);
        return 0;
    case OP_MAX_POOL:
    case OP_AVG_POOL:
        return export_pool(e, n, in, out);
    case OP_RESIZE:
        return export_resize(e, n, in, out);
    case OP_COUNT:
        break;
    }
    return bad_node(e, n, ERR_ARG, "unknown operator");
}

/* ---- graph input/output types ---- */

/* Shapes of every value at a valid input size (on a copy of the value
 * array, so g stays untouched); e->shapes stays NULL if the graph has no
 * valid size (the outputs then get symbolic dims only).  Returns 0 or
 * ERR_NOMEM. */
static int infer_shapes(Ex *e)
{
    const Graph *g = e->g;
    Graph t = *g;
    char saved[1024];
    int had_error = sl_error_reported(), was_quiet = sl_error_is_quiet();
    Shape base = g->values[g->input].shape;
    int rc = ERR_NOMEM;
    if (base.ndim < 3 || base.d[1] <= 0) return 0;
    t.values = sl_alloc((size_t)g->n_values * sizeof *t.values);
    e->shapes = sl_alloc((size_t)g->n_values * sizeof *e->shapes);
    if (!t.values || !e->shapes) goto fail;
    memcpy(t.values, g->values, (size_t)g->n_values * sizeof *t.values);
    /* Probing fails on purpose: keep the caller's error state. */
    snprintf(saved, sizeof saved, "%s", sl_error_last());
    sl_error_quiet(1);
    int dyn[SL_MAX_DIMS] = {0};
    for (int k = 0; k < base.ndim; k++)
        if (base.d[k] <= 0) {
            dyn[k] = 1;
            base.d[k] = k == 0 ? 1 : 64;
        }
    for (int k = 2; k < base.ndim; k++) {
        int64_t s = dyn[k] ? graph_valid_size(&t, &base, k - 2, 64) : -1;
        if (s > 0) base.d[k] = s;
    }
    rc = graph_infer_shapes(&t, &base) ? 1 : 0;
    sl_error_reset();
    if (had_error) sl_error("%s", saved);
    sl_error_quiet(was_quiet);
    if (rc) goto fail;
    for (int v = 0; v < g->n_values; v++)
        e->shapes[v] = t.values[v].shape;
    e->in_shape = base;
fail:
    sl_free(t.values);
    if (rc) {
        sl_free(e->shapes);
        e->shapes = NULL;
    }
    return rc == ERR_NOMEM ? ERR_NOMEM : 0;
}

static const char *spatial_param(int rank, int k)
{
    static const char *const names[3] = {"D", "H", "W"};
    return names[3 - (rank - 2) + (k - 2)];
}

/* ValueInfo for graph input/output value v. */
static Onnx__ValueInfoProto *ex_value_info(Ex *e, int v, int is_input)
{
    Onnx__ValueInfoProto *vi = ex_new(e, sizeof *vi);
    Onnx__TypeProto *tp = ex_new(e, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = ex_new(e, sizeof *tt);
    Onnx__TensorShapeProto *sp = ex_new(e, sizeof *sp);
    Onnx__TensorShapeProto__Dimension **dims =
        ex_new(e, (size_t)e->rank * sizeof *dims);
    const char *name = value_name(e, v);
    if (!vi || !tp || !tt || !sp || !dims || !name) return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sp);
    const Shape *s = e->shapes ? &e->shapes[v] : NULL;
    for (int k = 0; k < e->rank; k++) {
        Onnx__TensorShapeProto__Dimension *d = ex_new(e, sizeof *d);
        if (!d) return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        int64_t fixed = 0;
        const char *param = NULL;
        char buf[240];
        if (k == 0) {
            param = "N";
        } else if (k == 1) {
            fixed = is_input ? e->g->values[v].shape.d[1] : s ? s->d[1] : 0;
            snprintf(buf, sizeof buf, "%s_C", name);
            if (fixed <= 0) param = ex_strdup(e, buf);
        } else if (is_input || (s && s->d[k] == e->in_shape.d[k])) {
            param = spatial_param(e->rank, k);
        } else {
            snprintf(buf, sizeof buf, "%s_%s", name,
                     spatial_param(e->rank, k));
            param = ex_strdup(e, buf);
        }
        if (param) {
            d->value_case =
                ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = (char *)(uintptr_t)param; /* literal or owned */
        } else {
            d->value_case =
                ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = fixed;
        }
        dims[k] = d;
    }
    if (e->fail) return NULL;
    sp->n_dim = (size_t)e->rank;
    sp->dim = dims;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = (char *)(uintptr_t)name;
    vi->type = tp;
    return vi;
}

/* ---- driver ---- */

static void ex_free(Ex *e)
{
    for (int k = 0; k < e->n_owned; k++)
        sl_free(e->owned[k]);
    sl_free(e->owned);
    sl_free(e->nodes);
    sl_free(e->inits);
    sl_free(e->vname);
    sl_free(e->inited);
    sl_free(e->values.s);
    sl_free(e->nodenames.s);
    sl_free(e->shapes);
}

/* Build the model proto in e's memory; m and its graph are e-owned. */
static int build_model(Ex *e, Onnx__ModelProto *m, Onnx__GraphProto *gp,
                       Onnx__ValueInfoProto **ins,
                       Onnx__ValueInfoProto **outs)
{
    const Graph *g = e->g;
    int rc;
    /* Input and output names first so they keep their names. */
    value_name(e, g->input);
    for (int k = 0; k < g->n_outputs; k++)
        value_name(e, g->outputs[k]);
    for (int i = 0; i < g->n_nodes; i++) {
        rc = export_node(e, &g->nodes[i]);
        if (rc) return rc;
        if (e->fail) return ERR_NOMEM;
    }
    ins[0] = ex_value_info(e, g->input, 1);
    for (int k = 0; k < g->n_outputs; k++)
        outs[k] = ex_value_info(e, g->outputs[k], 0);
    if (e->fail) return ERR_NOMEM;
    gp->name = (char *)(uintptr_t) "sauron";
    gp->n_node = (size_t)e->n_nodes;
    gp->node = e->nodes;
    gp->n_initializer = (size_t)e->n_inits;
    gp->initializer = e->inits;
    gp->n_input = 1;
    gp->input = ins;
    gp->n_output = (size_t)g->n_outputs;
    gp->output = outs;
    m->has_ir_version = 1;
    m->ir_version = ONNX_EXPORT_IR_VERSION;
    m->producer_name = (char *)(uintptr_t)PRODUCER;
    m->producer_version = (char *)(uintptr_t)PRODUCER_VERSION;
    m->graph = gp;
    return 0;
}

int onnx_export(const Graph *g, const char *path, int force)
{
    Ex e;
    Onnx__ModelProto m;
    Onnx__GraphProto gp;
    Onnx__OperatorSetIdProto ops;
    Onnx__OperatorSetIdProto *opsp = &ops;
    Onnx__ValueInfoProto *ins[1] = {NULL}, *outs[SL_MAX_OUTPUTS] = {NULL};
    Onnx__StringStringEntryProto *pe = NULL, **pp = NULL;
    MetaProp *props = NULL;
    int n_props = 0, rc;
    uint8_t *buf = NULL;
    memset(&e, 0, sizeof e);
    onnx__model_proto__init(&m);
    onnx__graph_proto__init(&gp);
    onnx__operator_set_id_proto__init(&ops);
    e.g = g;
    e.path = path;
    if (!force && sl_file_exists(path)) {
        sl_error("output '%s' exists; pass --force to overwrite it", path);
        return ERR_EXISTS;
    }
    rc = graph_validate(g, path);
    if (rc) goto fail;
    if (g->n_outputs < 1 || g->n_outputs > SL_MAX_OUTPUTS) {
        sl_error("cannot export '%s': the graph has no output", path);
        rc = ERR_ARG;
        goto fail;
    }
    e.rank = g->values[g->input].shape.ndim;
    if (e.rank < 3 || e.rank > SL_MAX_DIMS) {
        sl_error("cannot export '%s': input rank %d (expected 3 to 5)", path,
                 e.rank);
        rc = ERR_ARG;
        goto fail;
    }
    rc = ERR_NOMEM;
    e.vname = sl_calloc((size_t)g->n_values, sizeof *e.vname);
    e.inited = sl_calloc((size_t)g->n_values, 1);
    if (!e.vname || !e.inited) goto fail;
    rc = infer_shapes(&e);
    if (rc) goto fail;
    rc = build_model(&e, &m, &gp, ins, outs);
    if (rc) goto fail;
    ops.domain = (char *)(uintptr_t) "";
    ops.has_version = 1;
    ops.version = ONNX_EXPORT_OPSET;
    m.n_opset_import = 1;
    m.opset_import = &opsp;
    rc = onnx_meta_encode(&g->meta, &props, &n_props);
    if (rc) goto fail;
    rc = ERR_NOMEM;
    if (n_props) {
        pe = sl_calloc((size_t)n_props, sizeof *pe);
        pp = sl_calloc((size_t)n_props, sizeof *pp);
        if (!pe || !pp) goto fail;
        for (int k = 0; k < n_props; k++) {
            onnx__string_string_entry_proto__init(&pe[k]);
            pe[k].key = props[k].key;
            pe[k].value = props[k].value;
            pp[k] = &pe[k];
        }
        m.n_metadata_props = (size_t)n_props;
        m.metadata_props = pp;
    }
    size_t size = onnx__model_proto__get_packed_size(&m);
    buf = sl_alloc(size);
    if (!buf) goto fail;
    if (onnx__model_proto__pack(&m, buf) != size) {
        sl_error("internal error packing '%s'", path);
        rc = ERR_IO;
        goto fail;
    }
    rc = sl_write_file_atomic(path, buf, size, force);
fail:
    if (rc == ERR_NOMEM && !sl_error_reported())
        sl_error("out of memory exporting '%s'", path);
    sl_free(buf);
    sl_free(pe);
    sl_free(pp);
    onnx_meta_props_free(props, n_props);
    ex_free(&e);
    return rc;
}
