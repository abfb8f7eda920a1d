#!/usr/bin/python3
"""Make the small ONNX fixtures of tests/test_onnx.c.  Run with Debian's
/usr/bin/python3 (python3-onnx, python3-torch):

    /usr/bin/python3 tools/make_onnx_fixtures.py tests/fixtures/onnx

Most models are written with onnx.helper so that each one exercises one
importer feature (typed initializer fields, external data, shape glue,
exporter patterns, attributes) or one failure (unsupported op, missing
initializer, short initializer, inconsistent shapes, external data outside
the folder).  A few are real torch.onnx exports of a tiny U-Net at opsets
11, 13 and 17; one of them comes with an input and PyTorch's output
(SLTENSOR files, see tests/testutil.h) for a numeric sanity check.
Everything is seeded and tiny (a few KB per file).
"""

import os
import sys
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sltensor import write_tensor  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/onnx"
F = TensorProto.FLOAT


def rng(seed):
    return np.random.default_rng(seed)


def w(r, *shape):
    return (r.standard_normal(shape) * 0.3).astype(np.float32)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def ints(name, vals):
    return numpy_helper.from_array(np.asarray(vals, dtype=np.int64), name)


def save(name, nodes, inputs, outputs, inits, opset=13, extra_inputs=()):
    g = helper.make_graph(nodes, name, list(inputs) + list(extra_inputs),
                          outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="make_onnx_fixtures")
    m.ir_version = 7
    onnx.save(m, os.path.join(OUT, name + ".onnx"))
    return m


def vi(name, shape):
    return helper.make_tensor_value_info(name, F, shape)


def conv_relu():
    """Conv-Relu-Conv-Softmax, raw_data initializers, opset 13."""
    r = rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Softmax", ["c2"], ["y"], name="softmax", axis=1),
    ]
    save("conv_relu", nodes, [vi("x", [1, 1, 8, 8])], [vi("y", [1, 3, 8, 8])],
         [init("w1", w(r, 2, 1, 3, 3)), init("b1", w(r, 2)),
          init("w2", w(r, 3, 2, 1, 1)), init("b2", w(r, 3))])


def typed_fields():
    """Initializers in float_data / double_data / float16 int32_data, also
    listed as graph inputs (old exporters); dynamic N, H, W; opset 11."""
    r = rng(2)
    w1 = w(r, 4, 2, 3, 3)
    b1 = w(r, 4)
    sc = np.array([1.0, 0.5, 2.0, -1.0], np.float16)
    bi = np.array([0.0, 0.25, -0.5, 1.0], np.float64)
    inits = [
        helper.make_tensor("w1", F, w1.shape, w1.flatten().tolist()),
        helper.make_tensor("b1", F, b1.shape, b1.tolist()),
        # make_tensor stores FLOAT16 values as their bit patterns in
        # int32_data (it converts the floats itself).
        helper.make_tensor("sc", TensorProto.FLOAT16, [4], sc.tolist()),
        helper.make_tensor("bi", TensorProto.DOUBLE, [4], bi.tolist()),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv",
                         kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
        helper.make_node("InstanceNormalization", ["c1", "sc", "bi"], ["n1"],
                         name="inorm", epsilon=1e-5),
        helper.make_node("LeakyRelu", ["n1"], ["y"], name="lrelu", alpha=0.2),
    ]
    extra = [vi("w1", [4, 2, 3, 3]), vi("b1", [4]),
             helper.make_tensor_value_info("sc", TensorProto.FLOAT16, [4]),
             helper.make_tensor_value_info("bi", TensorProto.DOUBLE, [4])]
    save("typed_fields", nodes, [vi("x", ["N", 2, "H", "W"])],
         [vi("y", ["N", 4, "H", "W"])], inits, opset=11, extra_inputs=extra)


def shape_glue():
    """Resize to 2x the conv output computed by Shape/Gather/Mul/Cast/
    Concat/Unsqueeze glue, plus Identity and Dropout, opset 11."""
    r = rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv",
                         kernel_shape=[1, 1]),
        helper.make_node("Identity", ["c1"], ["id1"], name="ident"),
        helper.make_node("Dropout", ["id1"], ["d1"], name="drop"),
        helper.make_node("Shape", ["d1"], ["sh"], name="shape"),
        helper.make_node("Gather", ["sh", "i23"], ["hw"], name="gather", axis=0),
        helper.make_node("Cast", ["hw"], ["hwf"], name="castf", to=F),
        helper.make_node("Mul", ["hwf", "two"], ["hw2f"], name="mul2"),
        helper.make_node("Floor", ["hw2f"], ["hw2fl"], name="floor"),
        helper.make_node("Cast", ["hw2fl"], ["hw2"], name="casti",
                         to=TensorProto.INT64),
        helper.make_node("Slice", ["sh", "s0", "s2"], ["nc"], name="slice"),
        helper.make_node("Concat", ["nc", "hw2"], ["sizes"], name="concat",
                         axis=0),
        helper.make_node("Constant", [], ["roi"], name="roi",
                         value=helper.make_tensor("roi", F, [0], [])),
        helper.make_node("Constant", [], ["scales"], name="scales",
                         value=helper.make_tensor("scales", F, [0], [])),
        helper.make_node("Resize", ["d1", "roi", "scales", "sizes"], ["y"],
                         name="resize", mode="linear",
                         coordinate_transformation_mode="align_corners"),
    ]
    save("shape_glue", nodes, [vi("x", [1, 2, 6, 5])], [vi("y", None)],
         [init("w1", w(r, 3, 2, 1, 1)), ints("i23", [2, 3]),
          init("two", np.array([2.0], np.float32)), ints("s0", [0]),
          ints("s2", [2])], opset=11)


def softmax_transpose():
    """torch.onnx (opset < 13) softmax(dim=1): Transpose-Softmax-Transpose."""
    r = rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv",
                         kernel_shape=[1, 1]),
        helper.make_node("Transpose", ["c1"], ["t1"], name="tr1",
                         perm=[0, 2, 3, 1]),
        helper.make_node("Softmax", ["t1"], ["s1"], name="softmax", axis=3),
        helper.make_node("Transpose", ["s1"], ["y"], name="tr2",
                         perm=[0, 3, 1, 2]),
    ]
    save("softmax_transpose", nodes, [vi("x", [1, 2, 4, 4])],
         [vi("y", [1, 3, 4, 4])], [init("w1", w(r, 3, 2, 1, 1))], opset=11)
    # The opset-11 meaning of a plain Softmax(axis=1): flattened over C*H*W.
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv",
                         kernel_shape=[1, 1]),
        helper.make_node("Softmax", ["c1"], ["y"], name="softmax", axis=1),
    ]
    save("softmax_flat11", nodes, [vi("x", [1, 2, 4, 4])],
         [vi("y", [1, 3, 4, 4])], [init("w1", w(r, 3, 2, 1, 1))], opset=11)


def instnorm_bn():
    """Instance norm as exporters emit it: Reshape [1, N*C, -1] ->
    BatchNormalization(training_mode=1) -> Reshape back -> Mul -> Add."""
    r = rng(5)
    C = 3
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv",
                         kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["c1", "flat"], ["rs"], name="reshape1"),
        helper.make_node("BatchNormalization",
                         ["rs", "ones", "zeros", "zeros", "ones"], ["bn"],
                         name="bn", epsilon=1e-5, training_mode=1),
        helper.make_node("Shape", ["c1"], ["sh"], name="shape"),
        helper.make_node("Reshape", ["bn", "sh"], ["rb"], name="reshape2"),
        helper.make_node("Mul", ["rb", "gamma"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "beta"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
    ]
    save("instnorm_bn", nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, C, 4, 4])],
         [init("w1", w(r, C, 2, 1, 1)), ints("flat", [1, C, -1]),
          init("ones", np.ones(C, np.float32)),
          init("zeros", np.zeros(C, np.float32)),
          init("gamma", np.array([2.0, 3.0, 4.0], np.float32).reshape(C, 1, 1)),
          init("beta", np.array([0.5, -0.5, 1.0], np.float32).reshape(C, 1, 1))],
         opset=15)
    import torch
    import torch.nn.functional as Fn
    prm = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in
           onnx.load(os.path.join(OUT, "instnorm_bn.onnx")).graph.initializer}
    x = rng(13).standard_normal((1, 2, 4, 4)).astype(np.float32)
    y = Fn.conv2d(torch.from_numpy(x), prm["w1"])
    y = Fn.instance_norm(y, eps=1e-5) * prm["gamma"] + prm["beta"]
    write_tensor(os.path.join(OUT, "instnorm_bn.in.f32"), x)
    write_tensor(os.path.join(OUT, "instnorm_bn.out.f32"), Fn.relu(y).numpy())
    # Batch of 2, opset 9: the training form is the one with extra outputs.
    N = 2
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["rs"], name="reshape1"),
        helper.make_node("BatchNormalization",
                         ["rs", "sc", "bi", "zeros", "ones"],
                         ["bn", "rm", "rv", "sm", "sv"], name="bn_n2"),
        helper.make_node("Shape", ["x"], ["sh"], name="shape"),
        helper.make_node("Reshape", ["bn", "sh"], ["y"], name="reshape2"),
    ]
    save("instnorm_bn_n2", nodes, [vi("x", [N, C, 4, 4])], [vi("y", None)],
         [ints("flat", [1, N * C, -1]),
          init("sc", np.tile(np.array([1.0, 2.0, 3.0], np.float32), N)),
          init("bi", np.tile(np.array([0.0, 0.5, 1.0], np.float32), N)),
          init("ones", np.ones(N * C, np.float32)),
          init("zeros", np.zeros(N * C, np.float32))], opset=9)


def conv_transpose_geometry():
    """ConvTranspose with output_shape (pads derived), output_padding, and
    strided Conv with auto_pad SAME_LOWER; MaxPool/AveragePool attributes."""
    r = rng(6)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv_same",
                         kernel_shape=[3, 3], strides=[2, 2],
                         auto_pad="SAME_LOWER"),
        helper.make_node("ConvTranspose", ["c1", "wt", "bt"], ["u1"],
                         name="up_outshape", strides=[2, 2],
                         kernel_shape=[3, 3], output_shape=[10, 10]),
        helper.make_node("ConvTranspose", ["c1", "wt"], ["u2"],
                         name="up_outpad", strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1]),
        helper.make_node("MaxPool", ["u1"], ["p1"], name="maxpool",
                         kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["u2"], ["p2"], name="avgpool",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("Add", ["p1", "p2"], ["y"], name="add"),
    ]
    save("conv_transpose", nodes, [vi("x", [1, 1, 10, 10])], [vi("y", None)],
         [init("w1", w(r, 2, 1, 3, 3)), init("wt", w(r, 2, 2, 3, 3)),
          init("bt", w(r, 2))], opset=13)


def multi_output():
    """Two heads (low-res first) and a dead branch; the default output is
    the high-resolution one."""
    r = rng(7)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1",
                         kernel_shape=[1, 1]),
        helper.make_node("MaxPool", ["c1"], ["p1"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "wl"], ["low"], name="head_low",
                         kernel_shape=[1, 1]),
        helper.make_node("Conv", ["c1", "wh"], ["high"], name="head_high",
                         kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["dead"], name="dead_branch"),
    ]
    save("multi_output", nodes, [vi("x", [1, 1, 8, 8])],
         [vi("low", None), vi("high", None)],
         [init("w1", w(r, 2, 1, 1, 1)), init("wl", w(r, 3, 2, 1, 1)),
          init("wh", w(r, 3, 2, 1, 1))])


def external_data():
    """Weights in an external file next to the model, and bad locations."""
    r = rng(8)
    w1 = w(r, 2, 1, 3, 3)
    blob = w1.astype("<f4").tobytes()
    with open(os.path.join(OUT, "external.bin"), "wb") as f:
        f.write(b"\0" * 16 + blob)
    for name, loc, off in [("external", "external.bin", 16),
                           ("external_abs", "/etc/hostname", 0),
                           ("external_dotdot", "../onnx/external.bin", 16),
                           ("external_oob", "external.bin", 64)]:
        t = TensorProto()
        t.name = "w1"
        t.data_type = F
        t.dims.extend(w1.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in [("location", loc), ("offset", str(off)),
                     ("length", str(len(blob)))]:
            e = t.external_data.add()
            e.key, e.value = k, v
        nodes = [helper.make_node("Conv", ["x", "w1"], ["y"], name="conv",
                                  kernel_shape=[3, 3])]
        save(name, nodes, [vi("x", [1, 1, 6, 6])], [vi("y", None)], [t])


def bad_models():
    r = rng(9)
    # An operator we do not support, at node #2.
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv",
                         kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Gemm", ["r1", "wg"], ["y"], name="fc"),
    ]
    save("bad_gemm", nodes, [vi("x", [1, 1, 4, 4])], [vi("y", None)],
         [init("w1", w(r, 2, 1, 1, 1)), init("wg", w(r, 2, 2))])
    # A weight nobody provides.
    nodes = [helper.make_node("Conv", ["x", "w_missing"], ["y"], name="conv",
                              kernel_shape=[1, 1])]
    save("bad_missing_init", nodes, [vi("x", [1, 1, 4, 4])], [vi("y", None)], [])
    # Initializer dims larger than its data.
    t = helper.make_tensor("w1", F, [1, 1, 3, 3], w(r, 9).tolist())
    t.dims[0] = 2  # dims say 18 floats, the data holds 9
    nodes = [helper.make_node("Conv", ["x", "w1"], ["y"], name="conv",
                              kernel_shape=[3, 3])]
    save("bad_short_init", nodes, [vi("x", [1, 1, 6, 6])], [vi("y", None)], [t])
    # Channels that do not add up: Add of 2 and 3 channels.
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_a",
                         kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="conv_b",
                         kernel_shape=[1, 1]),
        helper.make_node("Add", ["a", "b"], ["y"], name="add_mismatch"),
    ]
    save("bad_shapes", nodes, [vi("x", [1, 1, 4, 4])], [vi("y", None)],
         [init("w1", w(r, 2, 1, 1, 1)), init("w2", w(r, 3, 1, 1, 1))])
    # Conv weight expecting 3 input channels on a 1-channel input.
    nodes = [helper.make_node("Conv", ["x", "w3"], ["y"], name="conv_ic",
                              kernel_shape=[1, 1])]
    save("bad_conv_channels", nodes, [vi("x", [1, 1, 4, 4])], [vi("y", None)],
         [init("w3", w(r, 2, 3, 1, 1))])


def misc_ops():
    """BatchNormalization (inference and batch statistics), Sub/Div by
    per-channel constants folded into it, Unsqueeze/Squeeze round trip,
    default LeakyRelu alpha, Resize by scales, Concat with a negative axis,
    dilated MaxPool, SAME_UPPER strided conv, an unfoldable bias Add."""
    r = rng(10)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv_su",
                         kernel_shape=[3, 3], strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"],
                         ["bn"], name="bn", epsilon=1e-3, momentum=0.8),
        helper.make_node("Sub", ["bn", "k"], ["sub"], name="sub"),
        helper.make_node("Div", ["sub", "k2"], ["div"], name="div"),
        helper.make_node("Unsqueeze", ["div", "ax0"], ["us"], name="unsq"),
        helper.make_node("Squeeze", ["us", "ax0"], ["sq"], name="sq"),
        helper.make_node("LeakyRelu", ["sq"], ["lr"], name="lrelu"),
        helper.make_node("Resize", ["lr", "", "sc"], ["up"], name="resize"),
        helper.make_node("BatchNormalization", ["up", "s", "b", "m", "v"],
                         ["bt"], name="bn_train", training_mode=1),
        helper.make_node("Concat", ["bt", "lr2"], ["cat"], name="cat", axis=-3),
        helper.make_node("Add", ["cat", "bias4"], ["add"], name="bias_add"),
        helper.make_node("MaxPool", ["add"], ["y"], name="pool_dil",
                         kernel_shape=[2, 2], dilations=[2, 2]),
        helper.make_node("Conv", ["x", "w2"], ["c2"], name="conv2",
                         kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c2"], ["lr2"], name="relu2"),
    ]
    # Nodes must be topologically sorted: move the side branch first.
    nodes = nodes[-2:] + nodes[:-2]
    save("misc_ops", nodes, [vi("x", [1, 1, 8, 8])], [vi("y", None)],
         [init("w1", w(r, 2, 1, 3, 3)), init("w2", w(r, 2, 1, 1, 1)),
          init("s", np.array([1.0, 2.0], np.float32)),
          init("b", np.array([0.5, -1.0], np.float32)),
          init("m", np.array([0.1, 0.2], np.float32)),
          init("v", np.array([1.5, 0.5], np.float32)),
          init("k", np.array([1.0, 2.0], np.float32).reshape(1, 2, 1, 1)),
          init("k2", np.array([2.0, 4.0], np.float32).reshape(2, 1, 1)),
          ints("ax0", [0]),
          init("sc", np.array([1, 1, 2, 2], np.float32)),
          init("bias4", np.arange(4, dtype=np.float32).reshape(4, 1, 1))])
    # The same computation in PyTorch, for a numeric check of the folds.
    import torch
    import torch.nn.functional as Fn
    def T(a):
        return torch.from_numpy(np.array(a))
    x = rng(11).standard_normal((1, 1, 8, 8)).astype(np.float32)
    prm = {t.name: numpy_helper.to_array(t) for t in onnx.load(
        os.path.join(OUT, "misc_ops.onnx")).graph.initializer}
    xt = T(x)
    c1 = Fn.conv2d(Fn.pad(xt, (0, 1, 0, 1)), T(prm["w1"]), stride=2)
    s_, b_, m_, v_ = (T(prm[k]) for k in "sbmv")
    bn = Fn.batch_norm(c1, m_, v_, s_, b_, False, 0.0, 1e-3)
    div = (bn - T(prm["k"])) / T(prm["k2"])
    lr = Fn.leaky_relu(div, 0.01)
    up = Fn.interpolate(lr, scale_factor=2, mode="nearest")
    bt = Fn.batch_norm(up, None, None, s_, b_, True, 0.0, 1e-5)
    lr2 = Fn.relu(Fn.conv2d(xt, T(prm["w2"])))
    add = torch.cat([bt, lr2], 1) + T(prm["bias4"])
    y = Fn.max_pool2d(add, 2, stride=1, dilation=2)
    write_tensor(os.path.join(OUT, "misc_ops.in.f32"), x)
    write_tensor(os.path.join(OUT, "misc_ops.out.f32"), y.numpy())
    # Opset 9 Upsample with a scales input.
    nodes = [helper.make_node("Upsample", ["x", "sc"], ["y"], name="up",
                              mode="nearest")]
    save("upsample9", nodes, [vi("x", [1, 1, 4, 4])], [vi("y", None)],
         [init("sc", np.array([1, 1, 2, 3], np.float32))], opset=9)
    # Resize to the size of a skip (5x5 from 2x2: not an integer scale).
    nodes = [
        helper.make_node("Conv", ["x", "w3"], ["skip"], name="conv_s2",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["skip"], ["low"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["skip"], ["sh"], name="shape"),
        helper.make_node("Resize", ["low", "", "", "sh"], ["up"],
                         name="resize_to_skip"),
        helper.make_node("Add", ["up", "skip"], ["y"], name="add"),
    ]
    save("resize_sizes", nodes, [vi("x", [1, 1, 10, 10])], [vi("y", None)],
         [init("w3", w(r, 2, 1, 2, 2))])


def noop_glue():
    """Pad/Slice/Cast on activations that do nothing at the import shape
    (Pytorch-UNet pads the upsampled tensor by the size difference to the
    skip, which is zero at sizes the network takes), and a real Pad."""
    r = rng(12)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["skip"], name="conv",
                         kernel_shape=[1, 1]),
        helper.make_node("Shape", ["skip"], ["s1"], name="shape1"),
        helper.make_node("Shape", ["x2"], ["s2"], name="shape2"),
        helper.make_node("Sub", ["s1", "s2"], ["diff"], name="diff"),
        helper.make_node("Concat", ["diff", "diff"], ["pads"], name="pads", axis=0),
        helper.make_node("Conv", ["x", "w2"], ["x2"], name="conv2",
                         kernel_shape=[1, 1]),
    ]
    nodes = [nodes[0], nodes[5]] + nodes[1:5] + [
        helper.make_node("Pad", ["x2", "pads"], ["padded"], name="pad0"),
        helper.make_node("Cast", ["padded"], ["cast"], name="castf", to=F),
        helper.make_node("Slice", ["cast", "st", "en", "ax"], ["sl"],
                         name="slice_all"),
        helper.make_node("Concat", ["skip", "sl"], ["y"], name="cat", axis=1),
    ]
    save("noop_glue", nodes, [vi("x", [1, 1, 6, 6])], [vi("y", None)],
         [init("w1", w(r, 2, 1, 1, 1)), init("w2", w(r, 2, 1, 1, 1)),
          ints("st", [0, 0]), ints("en", [1 << 62, 1 << 62]), ints("ax", [2, 3])])
    nodes = [helper.make_node("Pad", ["x", "p"], ["y"], name="pad_real")]
    save("bad_pad", nodes, [vi("x", [1, 1, 6, 6])], [vi("y", None)],
         [ints("p", [0, 0, 1, 1, 0, 0, 1, 1])])


def hostile_models():
    """Declared sizes far beyond the data, and an opset we refuse."""
    t = TensorProto()
    t.name = "w_huge"
    t.data_type = F
    t.dims.extend([1 << 14, 1 << 14, 4])  # 2^30 floats declared, none stored
    nodes = [helper.make_node("Conv", ["x", "w_huge"], ["y"], name="conv",
                              kernel_shape=[1, 1])]
    save("bad_huge_init", nodes, [vi("x", [1, 1, 4, 4])], [vi("y", None)], [t])
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    save("bad_huge_input", nodes, [vi("x", [1, 1, 1 << 30, 1 << 30])],
         [vi("y", None)], [])
    save("bad_opset", nodes, [vi("x", [1, 1, 4, 4])], [vi("y", None)], [],
         opset=5)


def torch_exports():
    import torch
    import torch.nn as nn
    import torch.nn.functional as Fn

    class TinyUNet(nn.Module):
        def __init__(self, nd=2, interp=False):
            super().__init__()
            Conv = nn.Conv2d if nd == 2 else nn.Conv3d
            ConvT = nn.ConvTranspose2d if nd == 2 else nn.ConvTranspose3d
            Norm = nn.InstanceNorm2d if nd == 2 else nn.BatchNorm3d
            Pool = nn.MaxPool2d if nd == 2 else nn.MaxPool3d
            self.interp = interp
            self.e1 = nn.Sequential(Conv(1, 4, 3, padding=1),
                                    Norm(4, affine=True), nn.LeakyReLU(0.01))
            self.pool = Pool(2)
            self.e2 = nn.Sequential(Conv(4, 8, 3, padding=1),
                                    Norm(8, affine=True), nn.ReLU())
            self.up = ConvT(8, 4, 2, stride=2)
            self.d1 = nn.Sequential(Conv(12 if interp else 8, 4, 3, padding=1),
                                    nn.ReLU())
            self.head = Conv(4, 3, 1)

        def forward(self, x):
            a = self.e1(x)
            b = self.e2(self.pool(a))
            if self.interp:
                u = Fn.interpolate(b, size=a.shape[2:], mode="nearest")
            else:
                u = self.up(b)
            y = self.head(self.d1(torch.cat([a, u], 1)))
            return torch.softmax(y, dim=1)

    for opset, nd, interp in [(11, 2, True), (13, 2, False), (17, 3, False)]:
        torch.manual_seed(opset)
        net = TinyUNet(nd, interp).eval()
        with torch.no_grad():
            for mod in net.modules():
                if isinstance(mod, nn.BatchNorm3d):
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 1.5)
        shape = (1, 1, 8, 8) if nd == 2 else (1, 1, 4, 8, 8)
        x = torch.randn(*shape)
        name = "torch_unet%dd_op%d" % (nd, opset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, x, os.path.join(OUT, name + ".onnx"),
                              opset_version=opset, input_names=["input"],
                              output_names=["probs"],
                              do_constant_folding=opset != 11)
        if opset == 13:
            with torch.no_grad():
                write_tensor(os.path.join(OUT, name + ".in.f32"), x.numpy())
                write_tensor(os.path.join(OUT, name + ".out.f32"),
                             net(x).numpy())


def main():
    os.makedirs(OUT, exist_ok=True)
    conv_relu()
    typed_fields()
    shape_glue()
    softmax_transpose()
    instnorm_bn()
    conv_transpose_geometry()
    multi_output()
    external_data()
    bad_models()
    misc_ops()
    hostile_models()
    noop_glue()
    torch_exports()
    for f in sorted(os.listdir(OUT)):
        print("%8d %s" % (os.path.getsize(os.path.join(OUT, f)), f))


if __name__ == "__main__":
    main()
