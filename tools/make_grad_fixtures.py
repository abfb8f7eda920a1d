#!/usr/bin/python3
"""Make the PyTorch training references used by tests/test_train.c and
tests/test_loss_optim.c.  Run with Debian's /usr/bin/python3:

    /usr/bin/python3 tools/make_grad_fixtures.py tests/fixtures

Writes into <dir>/grad/ (SLTENSOR files as tools/make_fixtures.py):

  <net>.onnx           the model before the step (eval-mode export; the
                       BatchNorm net is exported with TrainingMode.PRESERVE
                       so its BatchNormalization nodes survive)
  <net>.in.f32         input batch
  <net>.labels.f32     label map [B, sp...] (class indices as floats)
  <net>.loss.f32       [total, ce, dice] in train mode (float64 maths on the
                       float32 outputs)
  <net>.grads.f32      every parameter gradient, flattened and concatenated
  <net>.grads.txt      one line per parameter: "<initializer name> <numel>",
                       in the order of .grads.f32
  <net>.bnstats.f32    (BatchNorm net) running mean/var after the training
                       forward, in .bnstats.txt order
  loss2d.*             loss-only cases: logits/probabilities, batch or
                       per-sample Dice (see make_loss)
  optim.*              three Adam (weight decay) and SGD-Nesterov steps

The loss is nnU-Net's CE + soft Dice (smooth 1e-5, background excluded,
1 - mean dc), deep-supervision heads weighted 2^-h normalised, each against
the labels downscaled with F.interpolate(mode="nearest-exact").  Written
here from the definitions, independently of compressor/train/loss.c.
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unets  # noqa: E402
from sltensor import write_tensor  # noqa: E402


def ce_dice(out, labels, from_logits, batch_dice, smooth=1e-5):
    """nnU-Net DC_and_CE_loss (do_bg=False), Dice as 1 - mean dc."""
    k = out.shape[1]
    if from_logits:
        logp = F.log_softmax(out, 1)
        p = logp.exp()
    else:
        p = out
        logp = torch.log(p.clamp_min(1e-30))
    ce = F.nll_loss(logp, labels)
    onehot = F.one_hot(labels, k).movedim(-1, 1).to(out.dtype)
    sp = list(range(2, out.dim()))
    axes = [0] + sp if batch_dice else sp
    inter = (p * onehot).sum(axes)
    psum = p.sum(axes)
    gsum = onehot.sum(axes)
    dc = (2 * inter + smooth) / (gsum + psum + smooth).clamp_min(1e-8)
    dc = dc[1:] if batch_dice else dc[:, 1:]
    dice = 1 - dc.mean()
    return ce + dice, ce, dice


def ds_loss(outs, labels, from_logits, batch_dice):
    w = np.array([0.5 ** h for h in range(len(outs))])
    w = w / w.sum()
    tot = ce_sum = dice_sum = 0
    for h, o in enumerate(outs):
        lab = labels
        if o.shape[2:] != labels.shape[1:]:
            lab = F.interpolate(labels[:, None].double(), size=o.shape[2:],
                                mode="nearest-exact")[:, 0].long()
        t, c, d = ce_dice(o.double(), lab, from_logits, batch_dice)
        tot = tot + w[h] * t
        ce_sum = ce_sum + w[h] * c
        dice_sum = dice_sum + w[h] * d
    return tot, ce_sum, dice_sum


NETS = {
    # name: (builder, input shape, classes, batch_dice, export options)
    "unet2d": (lambda: unets.NnUNet(2, 1, 3, 3, 4, 16), (2, 1, 16, 16), 3,
               True, {}),
    "unet2d_ds": (lambda: unets.NnUNet(2, 1, 3, 3, 4, 16, deep_supervision=1),
                  (2, 1, 16, 12), 3, True, {}),
    "unet3d": (lambda: unets.NnUNet(3, 1, 2, 2, 4, 8), (2, 1, 8, 8, 6), 2,
               False, {}),
    "classic2d_bn": (lambda: unets.ClassicUNet(2, 1, 2, 2, 4, 8),
                     (3, 1, 12, 12), 2, True, {"preserve": True}),
}


def labels_for(shape, classes, gen):
    """Blobs rather than noise: a few boxes of each class on background."""
    b, sp = shape[0], shape[2:]
    lab = torch.zeros((b,) + tuple(sp), dtype=torch.long)
    for i in range(b):
        for c in range(1, classes):
            for _ in range(2):
                lo = [int(torch.randint(0, s - 2, (1,), generator=gen)) for s in sp]
                ext = [int(torch.randint(2, max(3, s // 2), (1,), generator=gen)) for s in sp]
                idx = (i,) + tuple(slice(l, l + e) for l, e in zip(lo, ext))
                lab[idx] = c
    return lab


def make_net(out, name, seed):
    build, shape, classes, batch_dice, opts = NETS[name]
    model, gen = unets.seeded_model(build, seed)
    x = torch.randn(shape, generator=gen)
    lab = labels_for(shape, classes, gen)
    base = os.path.join(out, name)
    with torch.no_grad():
        y = model(x)
    n_out = len(y) if isinstance(y, tuple) else 1
    unets.export_onnx(model, x, base + ".onnx", 13, n_out, **opts)
    model.train()
    y = model(x)
    outs = list(y) if isinstance(y, tuple) else [y]
    tot, ce, dice = ds_loss(outs, lab, False, batch_dice)
    tot.backward()
    write_tensor(base + ".in.f32", x.numpy())
    write_tensor(base + ".labels.f32", lab.numpy().astype(np.float32))
    write_tensor(base + ".loss.f32",
                 np.array([tot.item(), ce.item(), dice.item()]))
    names, flat = [], []
    for pname, p in model.named_parameters():
        names.append("%s %d" % (pname, p.numel()))
        flat.append(p.grad.detach().numpy().ravel())
    write_tensor(base + ".grads.f32", np.concatenate(flat))
    with open(base + ".grads.txt", "w") as f:
        f.write("\n".join(names) + "\n")
    bn = [(n, b) for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    if bn:
        write_tensor(base + ".bnstats.f32",
                     np.concatenate([b.numpy().ravel() for _, b in bn]))
        with open(base + ".bnstats.txt", "w") as f:
            f.write("\n".join("%s %d" % (n, b.numel()) for n, b in bn) + "\n")
    print("fixture %s: loss %.6f (ce %.6f dice %.6f), %d params"
          % (name, tot.item(), ce.item(), dice.item(), unets.count_params(model)))


def make_loss(out, seed):
    """loss2d: x [2,3,5,6] logits, labels; four cases in .cases.f32 rows:
    (from_logits, batch_dice) = (1,1), (1,0), (0,1), (0,0); for the
    probability cases the input is softmax(x) (in .probs.f32).  Each case
    stores [total, ce, dice] then d total / d input (float64 maths)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, 3, 5, 6), generator=gen, dtype=torch.float64) * 2
    lab = labels_for((2, 3, 5, 6), 3, gen)
    probs = torch.softmax(x, 1)
    rows = []
    for from_logits, batch_dice in ((1, 1), (1, 0), (0, 1), (0, 0)):
        inp = (x if from_logits else probs).clone().requires_grad_(True)
        tot, ce, dice = ce_dice(inp, lab, from_logits, batch_dice)
        tot.backward()
        rows.append(np.concatenate([[tot.item(), ce.item(), dice.item()],
                                    inp.grad.numpy().ravel()]))
    base = os.path.join(out, "loss2d")
    write_tensor(base + ".x.f32", x.numpy())
    write_tensor(base + ".probs.f32", probs.numpy())
    write_tensor(base + ".labels.f32", lab.numpy().astype(np.float32))
    write_tensor(base + ".cases.f32", np.stack(rows))


def make_optim(out, seed):
    """optim: w0 [37], grads [3, 37]; Adam (lr 1e-2, wd 1e-2, default
    betas/eps) and SGD (lr 1e-2, momentum 0.99, nesterov, wd 3e-5) after
    each step: rows of .adam.f32 / .sgd.f32 [3, 37]."""
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(37, generator=gen)
    grads = torch.randn((3, 37), generator=gen)
    base = os.path.join(out, "optim")
    write_tensor(base + ".w0.f32", w0.numpy())
    write_tensor(base + ".grads.f32", grads.numpy())
    for tag, mk in (("adam", lambda p: torch.optim.Adam([p], lr=1e-2, weight_decay=1e-2)),
                    ("sgd", lambda p: torch.optim.SGD([p], lr=1e-2, momentum=0.99,
                                                      nesterov=True, weight_decay=3e-5))):
        p = torch.nn.Parameter(w0.clone())
        opt = mk(p)
        rows = []
        for s in range(3):
            p.grad = grads[s].clone()
            opt.step()
            rows.append(p.detach().numpy().copy())
        write_tensor(base + "." + tag + ".f32", np.stack(rows))


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    out = os.path.join(top, "grad")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    for seed, name in enumerate(NETS):
        make_net(out, name, 3000 + 10 * seed)
    make_loss(out, 4000)
    make_optim(out, 4100)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print("total %.0f kB in %s" % (total / 1024, out))


if __name__ == "__main__":
    main()
