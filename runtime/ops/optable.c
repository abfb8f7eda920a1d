/* The op table: one row per OpType, in enum order, mapping each op to its
 * name (as in ONNX), shape inference, FLOP count, scratch need and
 * forward.  The hooks live in each op family's file. */
#include "ops.h"

#define OP_ROW(NAME, X)                                                      \
    {                                                                        \
        NAME, X##_infer, X##_flops, X##_scratch, X##_node_forward            \
    }

/* Designated indices keep each row tied to its enum value even if the
 * enum is reordered. */
const OpInfo op_table[OP_COUNT] = {
    [OP_CONV] = OP_ROW("Conv", conv),
    [OP_CONV_TRANSPOSE] = OP_ROW("ConvTranspose", conv_transpose),
    [OP_INSTANCE_NORM] = OP_ROW("InstanceNormalization", instance_norm),
    [OP_BATCH_NORM] = OP_ROW("BatchNormalization", batch_norm),
    [OP_RELU] = OP_ROW("Relu", relu),
    [OP_LEAKY_RELU] = OP_ROW("LeakyRelu", leaky_relu),
    [OP_SIGMOID] = OP_ROW("Sigmoid", sigmoid),
    [OP_SOFTMAX] = OP_ROW("Softmax", softmax),
    [OP_CONCAT] = OP_ROW("Concat", concat),
    [OP_ADD] = OP_ROW("Add", add),
    [OP_MAX_POOL] = OP_ROW("MaxPool", max_pool),
    [OP_AVG_POOL] = OP_ROW("AveragePool", avg_pool),
    [OP_RESIZE] = OP_ROW("Resize", resize),
    [OP_IDENTITY] = OP_ROW("Identity", identity),
};

const char *op_name(OpType op)
{
    if ((unsigned)op >= OP_COUNT || !op_table[op].name) return "(unknown op)";
    return op_table[op].name;
}
