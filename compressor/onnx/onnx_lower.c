/* The lowering pass: ONNX nodes to IR nodes, in the file's (topological)
 * order.  Each node is first offered to the constant folder; what does not
 * fold is lowered by the function the op table names.
 *
 * Each ONNX tensor name maps to a symbol: a folded constant, an IR value,
 * or a "view" (a Reshape/Transpose of an IR value that is pending).  Views
 * exist because exporters wrap single operations in layout changes:
 * Transpose -> Softmax(last axis) -> Transpose back (torch, opset < 13) and
 * Reshape [1, N*C, ...] -> BatchNormalization(batch stats) -> Reshape back
 * (instance norm).  A view consumed by anything else is an error naming
 * the node that made it.  Shapes are inferred node by node with the
 * runtime's op table at the import shape, so Shape nodes fold. */
#include "onnx_lower.h"

#include <string.h>

#include "onnx_fold.h"
#include "onnx_lower_ops.h"
#include "runtime/common.h"

static const char SUPPORTED[] =
    "Conv, ConvTranspose, InstanceNormalization, BatchNormalization, Relu, "
    "LeakyRelu, Sigmoid, Softmax, Concat, Add, Sub/Mul/Div by constants, "
    "MaxPool, AveragePool, Resize, Upsample, Identity, Dropout, zero Pad, "
    "full Slice, and shape "
    "glue on constants (Constant, Shape, Gather, Unsqueeze, Squeeze, Cast, "
    "Concat, Slice, Reshape, Transpose, Range, ConstantOfShape, ...)";

/* Op type -> lowering function and the variant it lowers. */
typedef struct {
    const char *op;
    LowerFn fn;
    int arg;
} LowerEntry;

static const LowerEntry LOWER_TABLE[] = {
    {"Conv", onnx_lower_conv, 0},
    {"ConvTranspose", onnx_lower_conv, 1},
    {"InstanceNormalization", onnx_lower_instance_norm, 0},
    {"BatchNormalization", onnx_lower_batch_norm, 0},
    {"Relu", onnx_lower_unary, OP_RELU},
    {"LeakyRelu", onnx_lower_unary, OP_LEAKY_RELU},
    {"Sigmoid", onnx_lower_unary, OP_SIGMOID},
    {"Softmax", onnx_lower_softmax, 0},
    {"Concat", onnx_lower_concat, 0},
    {"Add", onnx_lower_arith, ARITH_ADD},
    {"Sub", onnx_lower_arith, ARITH_SUB},
    {"Mul", onnx_lower_arith, ARITH_MUL},
    {"Div", onnx_lower_arith, ARITH_DIV},
    {"MaxPool", onnx_lower_pool, 1},
    {"AveragePool", onnx_lower_pool, 0},
    {"Resize", onnx_lower_resize, 0},
    {"Upsample", onnx_lower_resize, 1},
    {"Shape", onnx_lower_shape, 0},
    {"Identity", onnx_lower_identity, 0},
    {"Dropout", onnx_lower_identity, 0},
    {"Reshape", onnx_lower_reshape, LAYOUT_RESHAPE},
    {"Flatten", onnx_lower_reshape, LAYOUT_FLATTEN},
    {"Squeeze", onnx_lower_reshape, LAYOUT_SQUEEZE},
    {"Unsqueeze", onnx_lower_reshape, LAYOUT_UNSQUEEZE},
    {"Transpose", onnx_lower_transpose, 0},
    {"Pad", onnx_lower_noop, NOOP_PAD},
    {"Slice", onnx_lower_noop, NOOP_SLICE},
    {"Cast", onnx_lower_noop, NOOP_CAST},
};

static const LowerEntry *lower_entry(const char *op)
{
    for (size_t k = 0; k < sizeof LOWER_TABLE / sizeof LOWER_TABLE[0]; k++)
        if (!strcmp(op, LOWER_TABLE[k].op)) return &LOWER_TABLE[k];
    return NULL;
}

static int unsupported(Lw *l)
{
    sl_error(
        "unsupported operator '%s' at node '%s' (#%d) in '%s'; supported: %s",
        sl_esc(l->n->op_type).s, sl_esc(onnx_node_name(l->n)).s, l->idx,
        l->c->path, SUPPORTED);
    return ERR_UNSUPPORTED;
}

int onnx_lower(OnnxCtx *c)
{
    for (size_t i = 0; i < c->gp->n_node; i++) {
        const Onnx__NodeProto *n = c->gp->node[i];
        Lw l = {c, (int)i, n, {0}, 0};
        int rc;
        if (!n->op_type || !*n->op_type)
            return onnx_node_fail(c, l.idx, ERR_FORMAT,
                                  "node without an operator type");
        if (n->domain && *n->domain && strcmp(n->domain, "ai.onnx"))
            return onnx_node_fail(
                c, l.idx, ERR_UNSUPPORTED,
                "operator domain '%s' not supported (only the default "
                "ONNX domain)",
                sl_esc(n->domain).s);
        if (n->n_output < 1 || !n->output[0] || !*n->output[0])
            return onnx_node_fail(c, l.idx, ERR_FORMAT,
                                  "node without an output");
        if (n->n_input > SL_MAX_INPUTS)
            return onnx_node_fail(c, l.idx, ERR_UNSUPPORTED,
                                  "too many inputs (%zu)", n->n_input);
        l.n_in = (int)n->n_input;
        for (int j = 0; j < l.n_in; j++) {
            l.in[j] = -1;
            if (!n->input[j] || !*n->input[j]) continue;
            l.in[j] = sym_find(c, n->input[j]);
            if (l.in[j] < 0)
                return onnx_node_fail(
                    c, l.idx, ERR_FORMAT,
                    "input '%s' is produced by no node and is no "
                    "initializer (corrupted or unsorted graph)",
                    sl_esc(n->input[j]).s);
        }
        rc = onnx_fold(c, l.idx);
        if (rc < 0) return rc;
        if (rc == 0) continue;
        const LowerEntry *e = lower_entry(n->op_type);
        if (!e) return unsupported(&l);
        if (l.n_in < 1 || l.in[0] < 0)
            return onnx_node_fail(c, l.idx, ERR_FORMAT,
                                  "missing first input");
        rc = e->fn(&l, e->arg);
        if (rc) return rc;
    }
    return 0;
}
