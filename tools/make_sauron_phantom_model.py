#!/usr/bin/python3
"""Train a small, converged 2D U-Net on a phantom dataset and export it to
ONNX: the pretrained starting model for Sauron's end-to-end test and
experiments (sauron-compress fine-tunes *trained* models).

    /usr/bin/python3 tools/make_sauron_phantom_model.py DATASET OUT.onnx \
        [--levels 3] [--base 16] [--iters 400] [--batch 8] [--seed 0]

DATASET is a phantom made by tools/make_phantom.py (made here first when
the folder does not exist, with --cases/--test/--size).  The network and
the preprocessing are tools/train_baseline.py's (slices along k in
SimpleITK order, per-case z-score, padding to a multiple of 16, CE + batch
soft Dice, Adam with poly decay), only smaller (--levels, --base), so that
the C trainer sees exactly the inputs the model was trained on.

The committed fixture tests/fixtures/sauron/phantom_unet.onnx was made by

    /usr/bin/python3 tools/make_sauron_phantom_model.py \
        /tmp/Dataset910_SauronPhantom tests/fixtures/sauron/phantom_unet.onnx

(phantom: --cases 8 --test 2 --size 32,32,16, seed 0; 3 levels, base 16,
400 iterations of batch 8, one thread).
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_baseline as tb  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("out_onnx")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--test", type=int, default=2)
    ap.add_argument("--size", default="32,32,16")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isdir(args.dataset):
        subprocess.run([sys.executable, os.path.join(here, "make_phantom.py"),
                        args.dataset, "--cases", str(args.cases), "--test",
                        str(args.test), "--size", args.size], check=True)
    import json
    with open(os.path.join(args.dataset, "dataset.json")) as f:
        classes = len(json.load(f)["labels"])
    vols, fg = [], []
    for _, ip, lp in tb.list_cases(args.dataset, "Tr"):
        x, y, _, _ = tb.load_case(ip, lp)
        vols.append((x, y))
        fg.append(np.nonzero(y.reshape(y.shape[0], -1).any(1))[0])
    hp, wp = tb.padded(vols[0][0].shape[1]), tb.padded(vols[0][0].shape[2])
    net = tb.UNet2D(classes=classes, levels=args.levels, base=args.base)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    t0 = time.time()
    net.train()
    for it in range(args.iters):
        lr = args.lr * (1 - it / args.iters) ** 0.9
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = tb.sample_batch(rng, vols, fg, args.batch, hp, wp)
        logits = net(x)
        loss = F.cross_entropy(logits, y) + tb.dice_loss(logits, y, classes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 50 == 0 or it == args.iters - 1:
            print(f"iter {it:4d} loss {loss.item():.4f}", file=sys.stderr)
    net.eval()
    scores = []
    for case, ip, lp in tb.list_cases(args.dataset, "Ts"):
        x, y, _, _ = tb.load_case(ip, lp)
        scores.append(tb.dice_per_class(tb.predict_volume(net, x), y, classes))
    if scores:
        print("held-out Dice per class: " +
              " ".join(f"{v:.4f}" for v in np.mean(scores, axis=0)),
              file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.out_onnx)), exist_ok=True)
    torch.onnx.export(tb.WithSoftmax(net), torch.zeros(1, 1, hp, wp),
                      args.out_onnx, opset_version=17, input_names=["input"],
                      output_names=["probabilities"],
                      dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                    "probabilities": {0: "n", 2: "h", 3: "w"}},
                      do_constant_folding=True)
    n = sum(p.numel() for p in net.parameters())
    print(f"params {n}, {time.time() - t0:.0f} s -> {args.out_onnx}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
