"""U-Net builders shared by the fixture maker and the benchmark exporter.

The architectures mirror what the field exports, so the importer sees the
same node patterns it will meet in real models:

  nnunet(dims=2|3)  nnU-Net's PlainConvUNet: per stage two
                    [Conv3x3 -> InstanceNorm(affine) -> LeakyReLU(0.01)],
                    downsampling by the first conv of a stage (stride 2),
                    upsampling by ConvTranspose (kernel = stride = 2),
                    skips joined by torch.cat([up, skip], 1), 1x1 class conv,
                    Softmax over channels; optional deep-supervision heads.
  classic           Ronneberger-style: Conv -> BatchNorm -> ReLU, MaxPool
                    down, ConvTranspose up.
  resize            nnU-Net blocks, but upsampling with F.interpolate
                    (bilinear align_corners=False, nearest, optionally "to
                    the size of the skip") followed by a 1x1 conv.

seeded_model and export_onnx hold the seeding and export steps the fixture
and benchmark makers share; the callers pick the seeds and options.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(dims):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _convt(dims):
    return nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d


def _inorm(dims):
    return nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d


def _bnorm(dims):
    return nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d


def features_per_stage(levels, base, max_feat):
    return [min(base * 2**i, max_feat) for i in range(levels)]


class ConvNormAct(nn.Sequential):
    """Conv3 -> norm -> activation, the unit every U-Net here is made of."""

    def __init__(self, dims, cin, cout, stride=1, norm="instance"):
        layers = [_conv(dims)(cin, cout, 3, stride=stride, padding=1)]
        if norm == "instance":
            layers += [_inorm(dims)(cout, eps=1e-5, affine=True),
                       nn.LeakyReLU(0.01, inplace=True)]
        else:
            layers += [_bnorm(dims)(cout, eps=1e-5), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class Stage(nn.Sequential):
    def __init__(self, dims, cin, cout, stride=1, norm="instance"):
        super().__init__(ConvNormAct(dims, cin, cout, stride, norm),
                         ConvNormAct(dims, cout, cout, 1, norm))


class NnUNet(nn.Module):
    """nnU-Net PlainConvUNet.  deep_supervision = number of extra heads at
    lower decoder resolutions (0 = one output).  Outputs are softmax
    probabilities, highest resolution first."""

    def __init__(self, dims=2, in_ch=1, classes=3, levels=3, base=4,
                 max_feat=16, deep_supervision=0):
        super().__init__()
        f = features_per_stage(levels, base, max_feat)
        self.enc = nn.ModuleList()
        cin = in_ch
        for s in range(levels):
            self.enc.append(Stage(dims, cin, f[s], 1 if s == 0 else 2))
            cin = f[s]
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        # heads only where an output is taken, so that the parameter count
        # equals what the exported ONNX holds
        n_heads = 1 + min(deep_supervision, levels - 2)
        self.heads = nn.ModuleDict()
        for i, s in enumerate(range(levels - 1, 0, -1)):
            self.up.append(_convt(dims)(f[s], f[s - 1], 2, stride=2))
            self.dec.append(Stage(dims, 2 * f[s - 1], f[s - 1]))
            if i >= levels - 1 - n_heads:
                self.heads[str(i)] = _conv(dims)(f[s - 1], classes, 1)

    def forward(self, x):
        skips = []
        for stage in self.enc:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        logits = []
        for i, (up, dec) in enumerate(zip(self.up, self.dec)):
            x = dec(torch.cat([up(x), skips.pop()], 1))
            if str(i) in self.heads:
                logits.append(self.heads[str(i)](x))
        # the last decoder stage is the full-resolution one: first output
        outs = [torch.softmax(t, 1) for t in reversed(logits)]
        return outs[0] if len(outs) == 1 else tuple(outs)


class ClassicUNet(nn.Module):
    """Conv -> BatchNorm -> ReLU blocks, MaxPool down, ConvTranspose up."""

    def __init__(self, dims=2, in_ch=1, classes=2, levels=3, base=4,
                 max_feat=16):
        super().__init__()
        f = features_per_stage(levels, base, max_feat)
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        self.pool = pool(2)
        self.enc = nn.ModuleList()
        cin = in_ch
        for s in range(levels):
            self.enc.append(Stage(dims, cin, f[s], 1, norm="batch"))
            cin = f[s]
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for s in range(levels - 1, 0, -1):
            self.up.append(_convt(dims)(f[s], f[s - 1], 2, stride=2))
            self.dec.append(Stage(dims, 2 * f[s - 1], f[s - 1], norm="batch"))
        self.head = _conv(dims)(f[0], classes, 1)

    def forward(self, x):
        skips = []
        for s, stage in enumerate(self.enc):
            x = stage(x if s == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], 1))
        return torch.softmax(self.head(x), 1)


class ResizeUNet(nn.Module):
    """nnU-Net blocks with interpolation instead of ConvTranspose.
    up_modes[i] is used by the i-th decoder stage (deepest first): one of
    "bilinear", "nearest" (scale_factor=2) or "bilinear-size",
    "nearest-size" (interpolate to the skip's size, which exporters turn
    into Shape/Gather/... glue feeding Resize)."""

    def __init__(self, dims=2, in_ch=1, classes=3, levels=3, base=4,
                 max_feat=16, up_modes=("bilinear", "nearest")):
        super().__init__()
        f = features_per_stage(levels, base, max_feat)
        self.dims = dims
        self.up_modes = list(up_modes)
        assert len(self.up_modes) == levels - 1
        self.enc = nn.ModuleList()
        cin = in_ch
        for s in range(levels):
            self.enc.append(Stage(dims, cin, f[s], 1 if s == 0 else 2))
            cin = f[s]
        self.reduce = nn.ModuleList()
        self.dec = nn.ModuleList()
        for s in range(levels - 1, 0, -1):
            self.reduce.append(_conv(dims)(f[s], f[s - 1], 1))
            self.dec.append(Stage(dims, 2 * f[s - 1], f[s - 1]))
        self.head = _conv(dims)(f[0], classes, 1)

    def _upsample(self, x, skip, mode):
        kind, _, to_size = mode.partition("-")
        if kind == "bilinear" and self.dims == 3:
            kind = "trilinear"
        corners = None if kind == "nearest" else False
        if to_size:
            return F.interpolate(x, size=skip.shape[2:], mode=kind,
                                 align_corners=corners)
        return F.interpolate(x, scale_factor=2.0, mode=kind,
                             align_corners=corners)

    def forward(self, x):
        skips = []
        for stage in self.enc:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for red, dec, mode in zip(self.reduce, self.dec, self.up_modes):
            skip = skips.pop()
            x = dec(torch.cat([red(self._upsample(x, skip, mode)), skip], 1))
        return torch.softmax(self.head(x), 1)


def randomise_norms(model, gen):
    """Give norm layers affine parameters (and BatchNorm running statistics)
    far from their identity defaults so that a kernel ignoring them fails
    the cross-check."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.InstanceNorm2d, nn.InstanceNorm3d,
                              nn.BatchNorm2d, nn.BatchNorm3d)):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.6 * torch.rand(c, generator=gen) - 0.3)
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                c = m.num_features
                m.running_mean.copy_(0.4 * torch.rand(c, generator=gen) - 0.2)
                m.running_var.copy_(0.3 + torch.rand(c, generator=gen))
    return model


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def seeded_model(build, seed, gen_offset=1):
    """build() under torch.manual_seed(seed), norms randomised from a
    generator seeded seed + gen_offset; returns (eval model, generator),
    the generator to draw the inputs from, so each fixture is seeded on
    its own and adding one does not change the others."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + gen_offset)
    return randomise_norms(build(), gen).eval(), gen


def export_onnx(model, x, path, opset, n_out, dynamic=False, preserve=False):
    """Export with input "input" and outputs "output", "output1", ...;
    dynamic: spatial axes symbolic; preserve: keep BatchNormalization
    nodes (the EVAL export folds them into Conv).  The file must pass
    onnx.checker."""
    import warnings

    import onnx

    names = ["output"] + ["output%d" % k for k in range(1, n_out)]
    kw = {}
    if dynamic:
        sp = {i: "sp%d" % i for i in range(2, x.dim())}
        kw["dynamic_axes"] = {"input": dict(sp), **{n: dict(sp) for n in names}}
    if preserve:
        kw["training"] = torch.onnx.TrainingMode.PRESERVE
        kw["do_constant_folding"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, path, opset_version=opset,
                          input_names=["input"], output_names=names, **kw)
    onnx.checker.check_model(onnx.load(path))
