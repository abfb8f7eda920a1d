#!/usr/bin/python3
"""Segment a whole NIfTI volume with a 2D U-Net ONNX model in PyTorch, the
way our `segment` does (bench peer: same scan, same model, same labels).

  /usr/bin/python3 tools/torch_segment.py MODEL.onnx scan.nii.gz out.nii.gz
      [--threads N] [--batch B] [--repeat R] [--force] [--check OURS.nii.gz]

PyTorch runs the ONNX graph through a small interpreter: the nodes in
order, each mapped to torch.nn.functional, weights from the initializers,
under torch.inference_mode().  It covers what U-Net exports hold (Conv,
ConvTranspose, Instance/BatchNormalization, activations, pooling, Resize,
Concat, Pad, arithmetic and the Shape/Gather/Slice/Reshape glue); any
other op is refused with one line.  Not a general ONNX runtime.  Tested
against the torch module itself on an export with MaxPool, AveragePool,
Pad, Resize nearest and bilinear, Shape/Gather/Slice/Cast glue.

Pre/post-processing follows runtime/segment.c, volume.c and nifti_io.c:
voxels to float32 with scl_slope/scl_inter applied as libnifti does; the
model's sauron.* metadata_props or, without them, segment's defaults
(z-score, nnunet order, slicing axis 2); z-score over all voxels in double
(sequential sums, population sd, floor 1e-8); slices zero-padded at the
high end to the smallest size the network accepts (found by running it on
small inputs); batches of B slices, a short last batch zero-filled; the
final Softmax skipped as segment skips it (argmax of the logits, first
class wins ties, NaN scores skipped); a uint8 (int16 above 255 classes)
label NIfTI with segment's header, written to a temporary file and renamed.

stdout: "volume_ms <median> runs <R> load_ms <median> peak_rss_mb <MB>
base_rss_mb <MB>": volume_ms is the whole pipeline (read, build the model
from the ONNX file, normalise, all slices, argmax, write), load_ms its
model-building part, base_rss_mb the RSS before the first model load
(python, torch, onnx, nibabel imported) and peak_rss_mb ru_maxrss at the
end; with --check also "agree <fraction> differ <n> of <voxels>".
OMP_WAIT_POLICY is passive and GOMP_SPINCOUNT 1000 unless the caller set
them (segment's policy).
Exit 1 with one "error: torch_segment: ..." line on failure.
"""
import gzip
import math
import os
import resource
import statistics
import sys
import time

TOOL = "torch_segment"
DEFAULT_THREADS = 2
DEFAULT_BATCH = 4  # SEG_DEFAULT_BATCH in runtime/segment.c
MAX_PROBE = 2048  # SEG_MAX_PROBE
PROBE_SPAN = 1024  # graph_valid_size tries want .. want + 1024
SUM_CHUNK = 1 << 20  # voxels per chunk of the sequential sums


class ToolError(Exception):
    pass


def die(msg):
    sys.stderr.write("error: %s: %s\n" % (TOOL, msg))
    sys.exit(1)


# Before libgomp starts (torch's CPU kernels use it): idle threads spin
# briefly, then block, the policy segment selects for itself
# (exec_reexec_passive_wait); threads spinning for long crawl when other
# processes hold the cores.  The caller's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

try:
    import numpy as np
    import nibabel as nib
    import onnx
    from onnx import numpy_helper
    import torch
    import torch.nn.functional as F
    import otsu  # tools/otsu.py: the runtime's head/air threshold
except ImportError as e:
    die("%s; run with /usr/bin/python3 (python3-torch, python3-onnx, "
        "python3-nibabel)" % e)


def rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- ONNX ops

def attrs_of(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def same_pads(x, k, s, d, mode):
    """auto_pad SAME_UPPER/LOWER -> [lo..., hi...]."""
    lo, hi = [], []
    for t in range(len(k)):
        n = x.shape[2 + t]
        out = -(-n // s[t])
        total = max((out - 1) * s[t] + (k[t] - 1) * d[t] + 1 - n, 0)
        small = total // 2
        lo.append(small if mode == b"SAME_UPPER" else total - small)
        hi.append(total - lo[-1])
    return lo + hi


def conv_pads(a, x, k, s, d):
    ap = a.get("auto_pad", b"NOTSET")
    nd = len(k)
    if ap in (b"SAME_UPPER", b"SAME_LOWER"):
        return same_pads(x, k, s, d, ap)
    if ap == b"VALID":
        return [0] * (2 * nd)
    return list(a.get("pads", [0] * (2 * nd)))


def torch_pad_arg(p):
    """ONNX [lo..., hi...] -> F.pad order (last dim first)."""
    nd = len(p) // 2
    out = []
    for t in reversed(range(nd)):
        out += [p[t], p[nd + t]]
    return out


def op_conv(a, x, w, b=None):
    nd = w.dim() - 2
    k = list(w.shape[2:])
    s = list(a.get("strides", [1] * nd))
    d = list(a.get("dilations", [1] * nd))
    p = conv_pads(a, x, k, s, d)
    fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    g = a.get("group", 1)
    if p[:nd] == p[nd:]:
        return fn(x, w, b, s, p[:nd], d, g)
    return fn(F.pad(x, torch_pad_arg(p)), w, b, s, 0, d, g)


def op_conv_transpose(a, x, w, b=None):
    nd = w.dim() - 2
    if "output_shape" in a:
        raise ToolError("ConvTranspose with output_shape is not supported")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        raise ToolError("ConvTranspose with auto_pad SAME is not supported")
    s = list(a.get("strides", [1] * nd))
    d = list(a.get("dilations", [1] * nd))
    p = list(a.get("pads", [0] * (2 * nd)))
    op = list(a.get("output_padding", [0] * nd))
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    g = a.get("group", 1)
    if p[:nd] == p[nd:]:
        return fn(x, w, b, s, p[:nd], op, g, d)
    y = fn(x, w, b, s, 0, op, g, d)
    idx = [slice(None), slice(None)]
    for t in range(nd):
        idx.append(slice(p[t], y.shape[2 + t] - p[nd + t]))
    return y[tuple(idx)]


def op_pool(kind):
    def run(a, x):
        k = list(a["kernel_shape"])
        nd = len(k)
        s = list(a.get("strides", [1] * nd))
        d = list(a.get("dilations", [1] * nd))
        p = conv_pads(a, x, k, s, d)
        ceil = bool(a.get("ceil_mode", 0))
        sym = p[:nd] == p[nd:]
        if kind == "max":
            fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
            if sym:
                return fn(x, k, s, p[:nd], d, ceil)
            xp = F.pad(x, torch_pad_arg(p), value=-math.inf)
            return fn(xp, k, s, 0, d, ceil)
        if d != [1] * nd:
            raise ToolError("AveragePool with dilations is not supported")
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        inc = bool(a.get("count_include_pad", 0))
        if sym:
            return fn(x, k, s, p[:nd], ceil, inc)
        if not inc:
            raise ToolError("AveragePool with asymmetric pads is not "
                            "supported")
        return fn(F.pad(x, torch_pad_arg(p)), k, s, 0, ceil, True)
    return run


def op_softmax(opset):
    def run(a, x):
        if opset >= 13:
            return torch.softmax(x, a.get("axis", -1))
        ax = a.get("axis", 1) % x.dim()
        shp = x.shape
        return torch.softmax(x.reshape(math.prod(shp[:ax]), -1), 1).reshape(
            shp)
    return run


def op_resize(a, x, roi=None, scales=None, sizes=None):
    mode = a.get("mode", b"nearest")
    ctm = a.get("coordinate_transformation_mode", b"half_pixel")
    nd = x.dim() - 2
    if sizes is not None and sizes.numel() > 0:
        size = [int(v) for v in sizes.tolist()[2:]]
    elif scales is not None and scales.numel() > 0:
        sc = scales.tolist()
        if sc[0] != 1 or sc[1] != 1:
            raise ToolError("Resize over batch or channels is not supported")
        size = [int(math.floor(x.shape[2 + t] * sc[2 + t]))
                for t in range(nd)]
    else:
        raise ToolError("Resize without scales or sizes")
    if mode == b"nearest":
        nm = a.get("nearest_mode", b"round_prefer_floor")
        if ctm == b"asymmetric" and nm == b"floor":
            return F.interpolate(x, size=size, mode="nearest")
        if ctm in (b"half_pixel", b"pytorch_half_pixel") and \
                all(size[t] % x.shape[2 + t] == 0 for t in range(nd)):
            # integer upsampling: every rounding rule picks the same source
            return F.interpolate(x, size=size, mode="nearest")
        raise ToolError("Resize nearest with %s/%s is not supported"
                        % (ctm.decode(), nm.decode()))
    if mode == b"linear":
        lin = ("linear", "bilinear", "trilinear")[nd - 1]
        if ctm == b"align_corners":
            return F.interpolate(x, size=size, mode=lin, align_corners=True)
        if ctm == b"half_pixel" or (ctm == b"pytorch_half_pixel" and
                                    all(s > 1 for s in size)):
            return F.interpolate(x, size=size, mode=lin, align_corners=False)
        raise ToolError("Resize linear with %s is not supported"
                        % ctm.decode())
    raise ToolError("Resize mode %s is not supported" % mode.decode())


def op_upsample(a, x, scales=None):
    sc = scales.tolist() if scales is not None else list(a["scales"])
    if a.get("mode", b"nearest") != b"nearest":
        raise ToolError("Upsample other than nearest is not supported")
    size = [int(math.floor(x.shape[2 + t] * sc[2 + t]))
            for t in range(x.dim() - 2)]
    return F.interpolate(x, size=size, mode="nearest")


def op_instance_norm(a, x, scale, bias):
    if math.prod(x.shape[2:]) == 1:
        # one voxel per channel: x - mean = 0, so the output is the bias
        # (torch refuses this case; ONNX and segment allow it)
        return x * 0 + bias.reshape((1, -1) + (1,) * (x.dim() - 2))
    return F.instance_norm(x, weight=scale, bias=bias,
                           eps=a.get("epsilon", 1e-5))


def op_batch_norm(a, x, scale, bias, mean, var):
    if a.get("training_mode", 0):
        raise ToolError("BatchNormalization in training mode (batch "
                        "statistics) is not supported")
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0,
                        a.get("epsilon", 1e-5))


def axes_arg(a, axes):
    if axes is not None:
        return [int(v) for v in axes.tolist()]
    return list(a.get("axes", []))


def op_unsqueeze(a, x, axes=None):
    ax = axes_arg(a, axes)
    nd = x.dim() + len(ax)
    for t in sorted(v % nd for v in ax):
        x = x.unsqueeze(t)
    return x


def op_squeeze(a, x, axes=None):
    ax = axes_arg(a, axes)
    if not ax:
        return x.squeeze()
    for t in sorted((v % x.dim() for v in ax), reverse=True):
        x = x.squeeze(t)
    return x


def op_gather(a, x, idx):
    ax = a.get("axis", 0) % x.dim()
    i = idx.long() % x.shape[ax]
    y = torch.index_select(x, ax, i.reshape(-1))
    return y.reshape(tuple(x.shape[:ax]) + tuple(i.shape) +
                     tuple(x.shape[ax + 1:]))


def op_slice(a, x, starts=None, ends=None, axes=None, steps=None):
    if starts is None:  # opset < 10: attributes
        st, en = list(a["starts"]), list(a["ends"])
        ax = list(a.get("axes", range(len(st))))
        sp = [1] * len(st)
    else:
        st, en = starts.tolist(), ends.tolist()
        ax = axes.tolist() if axes is not None else list(range(len(st)))
        sp = steps.tolist() if steps is not None else [1] * len(st)
    idx = [slice(None)] * x.dim()
    for s, e, t, k in zip(st, en, ax, sp):
        if k < 1:
            raise ToolError("Slice with a step below 1 is not supported")
        n = x.shape[t]
        s = max(0, min(n, s + n if s < 0 else s))
        e = max(0, min(n, e + n if e < 0 else e))
        idx[t % x.dim()] = slice(s, e, k)
    return x[tuple(idx)]


def op_pad(a, x, pads=None, value=None, axes=None):
    mode = a.get("mode", b"constant")
    if mode != b"constant" or axes is not None:
        raise ToolError("Pad other than constant over all axes is not "
                        "supported")
    p = [int(v) for v in (pads.tolist() if pads is not None
                          else a["pads"])]
    v = value.item() if value is not None and value.numel() else \
        a.get("value", 0.0)
    if min(p) < 0:
        raise ToolError("Pad with negative pads is not supported")
    return F.pad(x, torch_pad_arg(p), value=v)


def op_reshape(a, x, shape):
    shp = [int(v) for v in shape.tolist()]
    if not a.get("allowzero", 0):
        shp = [x.shape[i] if v == 0 else v for i, v in enumerate(shp)]
    return x.reshape(shp)


def op_flatten(a, x):
    ax = a.get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    return x.reshape(math.prod(x.shape[:ax]), -1)


CAST = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool,
        11: torch.float64, 10: torch.float16}


def op_cast(a, x):
    to = a["to"]
    if to not in CAST:
        raise ToolError("Cast to ONNX type %d is not supported" % to)
    return x.to(CAST[to])


def op_constant(a):
    if "value" not in a:
        raise ToolError("Constant without a tensor value is not supported")
    return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())


def make_ops(opset):
    """op name -> f(attrs, *inputs) -> output (one output each)."""
    return {
        "Conv": op_conv,
        "ConvTranspose": op_conv_transpose,
        "InstanceNormalization": op_instance_norm,
        "BatchNormalization": op_batch_norm,
        "Relu": lambda a, x: F.relu(x),
        "LeakyRelu": lambda a, x: F.leaky_relu(x, a.get("alpha", 0.01)),
        "Sigmoid": lambda a, x: torch.sigmoid(x),
        "Tanh": lambda a, x: torch.tanh(x),
        "Softmax": op_softmax(opset),
        "Concat": lambda a, *xs: torch.cat(xs, a["axis"]),
        "Add": lambda a, x, y: x + y,
        "Sub": lambda a, x, y: x - y,
        "Mul": lambda a, x, y: x * y,
        "Div": lambda a, x, y: x / y if x.is_floating_point()
        else torch.div(x, y, rounding_mode="trunc"),
        "MaxPool": op_pool("max"),
        "AveragePool": op_pool("avg"),
        "Resize": op_resize,
        "Upsample": op_upsample,
        "Identity": lambda a, x: x,
        "Dropout": lambda a, x, *rest: x,
        "Constant": op_constant,
        "Shape": lambda a, x: torch.tensor(list(x.shape), dtype=torch.int64),
        "Gather": op_gather,
        "Unsqueeze": op_unsqueeze,
        "Squeeze": op_squeeze,
        "Cast": op_cast,
        "Slice": op_slice,
        "Reshape": op_reshape,
        "Pad": op_pad,
        "Flatten": op_flatten,
        "Transpose": lambda a, x: x.permute(
            list(a.get("perm", reversed(range(x.dim()))))),
    }


class OnnxNet:
    """The ONNX graph as a list of torch calls; weights as torch tensors."""

    def __init__(self, path):
        try:
            m = onnx.load(path)
        except Exception as e:  # protobuf raises several types
            raise ToolError("cannot load ONNX model %s: %s" % (path, e))
        g = m.graph
        self.opset = next((o.version for o in m.opset_import
                           if o.domain in ("", "ai.onnx")), 13)
        ops = make_ops(self.opset)
        self.props = {p.key: p.value for p in m.metadata_props}
        self.consts = {}
        for t in g.initializer:
            self.consts[t.name] = torch.from_numpy(
                numpy_helper.to_array(t).copy())
        init = set(self.consts)
        ins = [i for i in g.input if i.name not in init]
        if len(ins) != 1 or not g.output:
            raise ToolError("%s: expected one input and an output, found "
                            "%d inputs" % (path, len(ins)))
        self.input = ins[0].name
        dims = ins[0].type.tensor_type.shape.dim
        self.in_channels = dims[1].dim_value if len(dims) > 1 else 0
        self.output = g.output[0].name
        self.nodes = []
        for i, n in enumerate(g.node):
            if n.domain not in ("", "ai.onnx") or n.op_type not in ops:
                raise ToolError("%s: op %s (node '%s', #%d) is not supported "
                                "by this interpreter" % (path, n.op_type,
                                                         n.name, i))
            self.nodes.append((ops[n.op_type], attrs_of(n), list(n.input),
                               n.output[0], n.op_type, n.name))
        # segment skips a final Softmax over the classes (labels only)
        last = self.nodes[-1] if self.nodes else None
        self.skip_last = (last is not None and last[4] == "Softmax" and
                          last[3] == self.output and self.opset >= 13)
        # free each activation after its last use
        last_use = {}
        for i, n in enumerate(self.nodes):
            for v in n[2]:
                last_use[v] = i
        self.frees = [[v for v in n[2] if last_use.get(v) == i and
                       v not in self.consts and v != self.output]
                      for i, n in enumerate(self.nodes)]

    def meta_copy(self):
        """The same graph with its float weights as meta tensors."""
        m = object.__new__(OnnxNet)
        m.__dict__.update(self.__dict__)
        m.consts = {k: (torch.empty_like(v, device="meta")
                        if v.is_floating_point() else v)
                    for k, v in self.consts.items()}
        return m

    def __call__(self, x):
        env = {self.input: x}
        for i, (fn, a, ins, o, op, name) in enumerate(self.nodes):
            args = [None if not v else
                    (env[v] if v in env else self.consts[v]) for v in ins]
            if self.skip_last and i == len(self.nodes) - 1 and \
                    a.get("axis", -1) % args[0].dim() == 1:
                return args[0]
            env[o] = fn(a, *args)
            for v in self.frees[i]:
                env.pop(v, None)
        return env[self.output]


# ------------------------------------------------------------ model meta

def model_meta(props, path):
    """ModelMeta as segment sees it: metadata or the documented defaults."""
    m = {"axis": 2, "order": "nnunet", "n_classes": 0, "n_mod": 0,
         "normalize": None}
    if "sauron.meta_version" not in props:
        return m

    def num(key, lo, hi):
        v = props.get(key, "")
        try:
            x = int(v)
        except ValueError:
            x = lo - 1
        if not lo <= x <= hi:
            raise ToolError("%s: metadata property %s is missing or "
                            "malformed; re-export the model" % (path, key))
        return x
    m["n_classes"] = num("sauron.n_classes", 1, 65536)
    m["n_mod"] = num("sauron.n_modalities", 1, 1024)
    dims = num("sauron.dims", 1, 3)
    m["axis"] = num("sauron.axis", 0, 2)
    m["order"] = props.get("sauron.order")
    if m["order"] not in ("nnunet", "nibabel"):
        raise ToolError("%s: metadata property sauron.order is malformed"
                        % path)
    m["normalize"] = []
    for k in range(m["n_mod"]):
        v = props.get("sauron.normalize.%d" % k, "")
        if v in ("zscore", "none"):
            m["normalize"].append((v, 0.0, 0.0))
        elif v == "zscore-fg":
            m["normalize"].append((v, 0.0, 1.0))  # offset, gain
        elif v.startswith("zscore-fg:"):
            g, o = (float(np.float32(t)) for t in v[10:].split(","))
            if not g > 0:
                raise ToolError("%s: bad sauron.normalize.%d" % (path, k))
            m["normalize"].append(("zscore-fg", o, g))
        elif v.startswith("ct:"):
            lo, hi = (float(np.float32(t)) for t in v[3:].split(","))
            if not lo < hi:
                raise ToolError("%s: bad sauron.normalize.%d" % (path, k))
            m["normalize"].append(("ct", lo, hi))
        else:
            raise ToolError("%s: metadata property sauron.normalize.%d is "
                            "missing or malformed" % (path, k))
    if dims != 2:
        raise ToolError("%s is a %dD model; torch_segment runs 2D models "
                        "only" % (path, dims))
    return m


# ------------------------------------------------------------------ NIfTI

def scaling(slope, inter):
    """libnifti: non-finite scl_* become 0; slope 0 means unscaled."""
    s, i = float(slope), float(inter)
    s = s if math.isfinite(s) else 0.0
    i = i if math.isfinite(i) else 0.0
    return (1.0, 0.0) if s == 0.0 else (s, i)


def read_nifti(path):
    """-> (img, data float32 [mod][k][j][i])"""
    try:
        img = nib.load(path)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ToolError("%s is not a NIfTI-1/NIfTI-2 file" % path)
        raw = np.asanyarray(img.dataobj.get_unscaled())
    except ToolError:
        raise
    except Exception as e:  # nibabel raises many types on bad files
        raise ToolError("cannot read %s: %s; give a .nii or .nii.gz scan"
                        % (path, e))
    while raw.ndim > 4 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.dtype.kind not in "uif" or raw.ndim < 1 or raw.ndim > 4:
        raise ToolError("%s has datatype %s or %d dimensions, which "
                        "torch_segment does not read" % (path, raw.dtype,
                                                         raw.ndim))
    while raw.ndim < 3:
        raw = raw[..., None]
    if raw.ndim == 3:
        raw = raw[..., None]
    # nibabel moves scl_* from the header into dataobj on load (the header
    # then holds NaN), so the scaling must be read from there
    slope, inter = scaling(img.dataobj.slope, img.dataobj.inter)
    nm = raw.shape[3]
    out = np.empty((nm,) + raw.shape[2::-1], dtype=np.float32)
    for m in range(nm):
        for k in range(raw.shape[2]):
            # (float)((double)x * slope + inter), as nifti_io.c
            out[m, k] = (raw[:, :, k, m].T.astype(np.float64) * slope +
                         inter).astype(np.float32)
    return img, out


def seq_sum(x64_chunks):
    """Sum in index order (the C loop's rounding), chunk by chunk."""
    s = 0.0
    for c in x64_chunks:
        s = float(np.cumsum(np.concatenate(([s], c)))[-1])
    return s


def norm_affine(x, z):
    """volume_norm_affine: (lo, hi, shift, scale) in double."""
    kind = z[0] if z else "zscore"
    if kind == "none":
        return (-math.inf, math.inf, 0.0, 1.0)
    if kind == "ct":
        lo, hi = z[1], z[2]
        return (lo, hi, 0.5 * (lo + hi), 2.0 / (hi - lo))
    flat = x.reshape(-1)
    if kind == "zscore-fg":
        # the head only: voxels at or above the Otsu threshold, in order
        flat = flat[flat.astype(np.float64) >= otsu.threshold(flat)]
    n = flat.size

    def chunks(f):
        for i in range(0, n, SUM_CHUNK):
            yield f(flat[i:i + SUM_CHUNK].astype(np.float64))
    mean = seq_sum(chunks(lambda c: c)) / n
    ss = seq_sum(chunks(lambda c: (c - mean) * (c - mean)))
    sd = math.sqrt(ss / n)
    scale = 1.0 / (sd if sd > 1e-8 else 1e-8)
    if kind == "zscore-fg":
        offset, gain = z[1], z[2]
        return (-math.inf, math.inf, mean - offset / (scale * gain),
                scale * gain)
    return (-math.inf, math.inf, mean, scale)


def volume_axes(order, axis):
    """tensor axes [slice, H, W] -> NIfTI axes (0 = i, fastest)."""
    a = 1 if axis == 0 else 0
    b = 1 if axis == 2 else 2
    return [axis, b, a] if order == "nnunet" else [axis, a, b]


def label_bytes(img, labels, n_classes):
    """Header and voxels as nio_write_labels (libnifti) writes them."""
    h = img.header.copy()
    if h.endianness != "<":
        h = h.as_byteswapped("<")
    v2 = isinstance(h, nib.Nifti2Header)
    dt = np.uint8 if n_classes <= 255 else np.int16
    dim = h["dim"].copy()
    dim[0] = min(dim[0], 3)
    for i in range(1, 4):
        if i > dim[0]:
            dim[i] = 1
    dim[4:] = 1
    h["dim"] = dim
    h["datatype"] = 2 if dt == np.uint8 else 4
    h["bitpix"] = 8 if dt == np.uint8 else 16
    h["scl_slope"] = 1.0
    h["scl_inter"] = 0.0
    h["cal_min"] = 0.0
    h["cal_max"] = max(n_classes - 1, 0)
    h["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    h["intent_name"] = b""
    h["aux_file"] = b""
    h["descrip"] = b"sauron segment"
    pix = h["pixdim"].copy()
    # libnifti writes the qform only when qform_code > 0 (pixdim[0] is
    # then qfac, else 0), the sform only when sform_code > 0
    if h["qform_code"] > 0:
        pix[0] = -1.0 if pix[0] < 0 else 1.0
    else:
        pix[0] = 0.0
        for f in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                  "qoffset_y", "qoffset_z"):
            h[f] = 0.0
    h["pixdim"] = pix
    if not h["sform_code"] > 0:
        for f in ("srow_x", "srow_y", "srow_z"):
            h[f] = 0.0
    if v2:
        h["vox_offset"] = 544
        h["magic"] = b"n+2\0\r\n\x1a\n"
    else:
        for f in ("data_type", "db_name"):
            h[f] = b""
        for f in ("extents", "session_error", "glmax", "glmin"):
            h[f] = 0
        h["regular"] = b"r"
        h["vox_offset"] = 352
        h["magic"] = b"n+1"
    return h.binaryblock + b"\0" * 4 + labels.astype(dt).tobytes()


def write_atomic(path, data):
    gz = path.endswith(".nii.gz")
    ext = ".nii.gz" if gz else ".nii"
    tmp = "%s.tmp.%d%s" % (path[:-len(ext)], os.getpid(), ext)
    try:
        # zlib's default level, as znzlib (segment) uses
        body = gzip.compress(data, compresslevel=6, mtime=0) if gz else data
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ToolError("cannot write %s: %s; check the folder exists, is "
                        "writable and has free space" % (path, e))


# ---------------------------------------------------------------- pipeline

def size_ok(net, c, h, w, dev):
    try:
        y = net(torch.zeros(1, c, h, w, device=dev))
    except (RuntimeError, ValueError, IndexError):
        return False
    return y.dim() == 4 and y.shape[2] == h and y.shape[3] == w


def valid_sizes(net, c, want):
    """valid_sizes in runtime/segment.c: the smallest accepted square,
    then each dim grown on its own (the other at the square size).  The
    probes run on meta tensors (shapes only, no arithmetic), as segment
    uses shape inference; an op without a meta kernel falls back to real
    runs on one thread."""
    probe, dev = net.meta_copy(), "meta"
    try:
        size_ok(probe, c, 64, 64, dev)
    except NotImplementedError:
        probe, dev = net, "cpu"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny runs: thread start-up dominates
    try:
        cube = next((s for s in range(1, MAX_PROBE + 1)
                     if size_ok(probe, c, s, s, dev)), -1)
        if cube < 0:
            raise ToolError("the model accepts no 2D input up to %d voxels "
                            "per side; check its input shape" % MAX_PROBE)
        got = []
        for t in range(2):
            for v in range(max(want[t], 1), want[t] + PROBE_SPAN + 1):
                if size_ok(probe, c, v, cube, dev) if t == 0 else \
                        size_ok(probe, c, cube, v, dev):
                    got.append(v)
                    break
            else:
                raise ToolError("no input size >= %d along spatial dim %d "
                                "suits the model" % (want[t], t))
    finally:
        torch.set_num_threads(threads)
    return got


def segment_once(args, timing):
    img, vol = read_nifti(args.scan)
    t0 = time.perf_counter()
    net = OnnxNet(args.model)
    timing["load"] = (time.perf_counter() - t0) * 1e3
    meta = model_meta(net.props, args.model)
    n_mod = vol.shape[0]
    c = meta["n_mod"] or net.in_channels or n_mod
    if c != n_mod:
        raise ToolError("model expects %d modalities, the scan has %d"
                        % (c, n_mod))
    ax = volume_axes(meta["order"], meta["axis"])
    # numpy axis of NIfTI axis n in [k][j][i] is 2 - n
    perm = [2 - t for t in ax]
    norms = [norm_affine(vol[m], meta["normalize"][m]
                         if meta["normalize"] else None) for m in range(c)]
    views = [vol[m].transpose(perm) for m in range(c)]
    n_sl, want = views[0].shape[0], list(views[0].shape[1:])
    hw = valid_sizes(net, c, want)
    bsz = min(args.batch, n_sl)
    x = np.zeros((bsz, c, hw[0], hw[1]), dtype=np.float32)
    labels = np.zeros(vol.shape[1:], dtype=np.int16)
    lview = labels.transpose(perm)
    nc = meta["n_classes"]
    for s0 in range(0, n_sl, bsz):
        nb = min(bsz, n_sl - s0)
        x.fill(0.0)  # padding and a short last batch's unused slots
        for m in range(c):
            lo, hi, shift, scale = norms[m]
            sl = views[m][s0:s0 + nb].astype(np.float64)
            np.clip(sl, lo, hi, out=sl)
            x[:nb, m, :want[0], :want[1]] = (sl - shift) * scale
        try:
            y = net(torch.from_numpy(x))
        except ToolError:
            raise
        except Exception as e:
            raise ToolError("PyTorch failed running %s: %s"
                            % (args.model, e))
        nc = nc or y.shape[1]
        if tuple(y.shape) != (bsz, nc, hw[0], hw[1]):
            raise ToolError("model output %s does not match input %s with "
                            "%d classes" % (list(y.shape), list(x.shape), nc))
        y = y[:nb, :, :want[0], :want[1]]
        # first class wins ties (torch.argmax), NaN scores never win
        y = torch.where(torch.isnan(y), torch.tensor(-math.inf), y)
        lview[s0:s0 + nb] = y.argmax(1).numpy()
    write_atomic(args.out, label_bytes(img, labels, nc))
    return labels


class Args:
    pass


def parse_args(argv):
    a = Args()
    a.threads, a.batch, a.repeat = DEFAULT_THREADS, DEFAULT_BATCH, 1
    a.force, a.check = False, None
    pos = []
    it = iter(argv)
    for s in it:
        if s in ("--threads", "--batch", "--repeat"):
            v = next(it, None)
            if v is None or not v.isdigit() or not 1 <= int(v) <= 4096:
                raise ToolError("%s needs an integer 1..4096, got %s"
                                % (s, v))
            setattr(a, s[2:], int(v))
        elif s == "--force":
            a.force = True
        elif s == "--check":
            a.check = next(it, None)
            if not a.check:
                raise ToolError("--check needs a label map")
        elif s.startswith("--"):
            raise ToolError("unknown option %s" % s)
        else:
            pos.append(s)
    if len(pos) != 3:
        raise ToolError("usage: /usr/bin/python3 tools/torch_segment.py "
                        "MODEL.onnx scan.nii.gz out_labels.nii.gz "
                        "[--threads N] [--batch B] [--repeat R] [--force] "
                        "[--check OURS.nii.gz]")
    a.model, a.scan, a.out = pos
    return a


def same_file(p, q):
    try:
        return os.path.samefile(p, q)
    except OSError:
        return os.path.abspath(p) == os.path.abspath(q)


def main():
    args = parse_args(sys.argv[1:])
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    base = rss_mb()
    if not (args.out.endswith(".nii") or args.out.endswith(".nii.gz")):
        raise ToolError("output %s must end in .nii or .nii.gz" % args.out)
    if same_file(args.out, args.scan) or same_file(args.out, args.model):
        raise ToolError("output %s is an input; choose another name"
                        % args.out)
    if not args.force and os.path.exists(args.out):
        raise ToolError("output %s exists; pass --force to overwrite it"
                        % args.out)
    ms, loads = [], []
    with torch.inference_mode():
        for _ in range(args.repeat):
            t = {}
            t0 = time.perf_counter()
            labels = segment_once(args, t)
            ms.append((time.perf_counter() - t0) * 1e3)
            loads.append(t["load"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("volume_ms %.1f runs %d load_ms %.1f peak_rss_mb %.1f "
          "base_rss_mb %.1f" % (statistics.median(ms), args.repeat,
                                statistics.median(loads), peak, base))
    if args.check:
        _, ref = read_nifti(args.check)
        if ref.shape[1:] != labels.shape:
            raise ToolError("%s has shape %s, the output %s; give a label "
                            "map of the same scan" % (args.check,
                                                      ref.shape[1:],
                                                      labels.shape))
        same = int(np.count_nonzero(ref[0] == labels))
        n = labels.size
        print("agree %.8f differ %d of %d" % (same / n, n - same, n))


if __name__ == "__main__":
    try:
        main()
    except ToolError as e:
        die(str(e))
    except MemoryError:
        die("out of memory")
