#!/usr/bin/python3
"""Train the baseline 2D nnU-Net-style U-Net and export it to ONNX.

    /usr/bin/python3 tools/train_baseline.py DATASET_DIR OUT.onnx \
        [--iters 600] [--batch 4] [--threads 1] [--seed 0] [--pred-dir DIR]

DATASET_DIR is an nnU-Net raw dataset made by tools/make_datasets.py
(Dataset001_BrainExtraction by default; Dataset002_Anatomy works too: the
class count is read from dataset.json).  The recipe follows nnU-Net's 2D
configuration where it matters for the exported graph and its input:

  * slices along k: the volume is read with nibabel ([i, j, k]) and
    transposed to [k, j, i] (SimpleITK order), so a slice is [1, j, i],
    H = j, W = i;
  * z-score per case: (v - mean) / max(std, 1e-8), population std, double;
    with --normalize zscore-fg the mean and std are the head's (voxels at
    or above the Otsu threshold, tools/otsu.py, as segment computes it),
    so the amount of air or neck in the field of view does not move them;
  * slices padded with 0 (after normalisation) to a multiple of 16, the
    total downsampling of the five levels; in training the slice is placed
    at a random offset inside the padded canvas so that the model does not
    depend on where the padding goes;
  * per stage two [Conv3x3 -> InstanceNorm(affine) -> LeakyReLU(0.01)],
    stride-2 conv downsampling, ConvTranspose(k=s=2) up, concatenated
    skips, 1x1 head; 5 levels, 32 base features doubling, capped at 256;
  * loss = cross-entropy + soft Dice (batch Dice over foreground classes);
    Adam, learning rate decayed polynomially (nnU-Net's poly, power 0.9);
  * one third of the slices in each batch are forced to contain
    foreground (nnU-Net's oversampling), the rest are uniform;
  * --fov-aug P and --crop-aug Q: fractions of the batches that see
    another field of view or a crop close around the labelled region, as
    sauron-compress's options of the same names (tools/slice_batches.py).

After training it predicts every imagesTs case slice by slice with the
PyTorch model, reports per-case and mean Dice against labelsTs, optionally
writes the predictions as NIfTI (--pred-dir), and exports OUT.onnx
(opset 17, Softmax at the end, dynamic N/H/W; H and W must be multiples of
16).  Seeded (numpy and torch); bit-identical reruns for a fixed --seed and
--threads are expected on CPU but were not verified.
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import nibabel as nib
import torch
import torch.nn as nn
import torch.nn.functional as F

import otsu  # tools/otsu.py
import slice_batches as sb  # tools/slice_batches.py
from slice_batches import padded


class ConvNormAct(nn.Sequential):
    def __init__(self, cin, cout, stride=1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                         nn.InstanceNorm2d(cout, eps=1e-5, affine=True),
                         nn.LeakyReLU(0.01, inplace=True))


class UNet2D(nn.Module):
    """PlainConvUNet-like 2D U-Net returning logits (softmax added at
    export)."""

    def __init__(self, in_ch=1, classes=2, levels=5, base=32, max_feat=256):
        super().__init__()
        f = [min(base * 2**i, max_feat) for i in range(levels)]
        self.enc = nn.ModuleList()
        cin = in_ch
        for s in range(levels):
            self.enc.append(nn.Sequential(
                ConvNormAct(cin, f[s], 1 if s == 0 else 2),
                ConvNormAct(f[s], f[s])))
            cin = f[s]
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for s in range(levels - 1, 0, -1):
            self.up.append(nn.ConvTranspose2d(f[s], f[s - 1], 2, stride=2))
            self.dec.append(nn.Sequential(ConvNormAct(2 * f[s - 1], f[s - 1]),
                                          ConvNormAct(f[s - 1], f[s - 1])))
        self.head = nn.Conv2d(f[0], classes, 1)

    def forward(self, x):
        skips = []
        for stage in self.enc:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], 1))
        return self.head(x)


class WithSoftmax(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x), 1)


def load_case(img_path, lab_path, normalize="zscore"):
    """-> image [K, J, I] float32 z-scored, label [K, J, I] uint8 or None,
    the nibabel image (for geometry) and the value intensity 0 (air)
    takes after normalisation."""
    nimg = nib.load(img_path)
    v = np.asarray(nimg.dataobj, dtype=np.float64)  # scl_* applied
    head = v
    if normalize == "zscore-fg":
        flat = np.asarray(nimg.dataobj, dtype=np.float32).reshape(-1)
        head = v.reshape(-1)[flat.astype(np.float64) >= otsu.threshold(flat)]
    mean = head.mean()
    std = max(head.std(), 1e-8)  # population std, as nnU-Net
    x = ((v - mean) / std).astype(np.float32).transpose(2, 1, 0)
    air = np.float32((0.0 - mean) / std)  # what intensity 0 becomes
    y = None
    if lab_path is not None:
        y = np.asarray(nib.load(lab_path).dataobj).astype(np.uint8)
        y = np.ascontiguousarray(y.transpose(2, 1, 0))
    return np.ascontiguousarray(x), y, nimg, air


def list_cases(ds, split):
    imgs = sorted(glob.glob(os.path.join(ds, "images" + split, "*_0000.nii.gz")))
    out = []
    for p in imgs:
        case = os.path.basename(p)[:-len("_0000.nii.gz")]
        out.append((case, p, os.path.join(ds, "labels" + split,
                                          case + ".nii.gz")))
    return out


def dice_loss(logits, target, classes):
    """Soft Dice over the batch, foreground classes only (nnU-Net's
    batch_dice with do_bg=False)."""
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(target.long(), classes).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    inter = (p * onehot).sum(dims)
    denom = p.sum(dims) + onehot.sum(dims)
    dc = (2 * inter + 1e-5) / (denom + 1e-5)
    return 1 - dc[1:].mean()


def sample_batch(rng, vols, fg_slices, batch, hp, wp):
    """Whole slices as tensors (tools/slice_batches.py)."""
    x, y = sb.sample_batch(rng, vols, fg_slices, batch, hp, wp)
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def predict_volume(net, img, chunk=8):
    """img [K, J, I] -> labels [K, J, I]; padding at the end of H and W."""
    k, h, w = img.shape
    hp, wp = padded(h), padded(w)
    out = np.zeros((k, h, w), np.uint8)
    for s in range(0, k, chunk):
        e = min(k, s + chunk)
        x = torch.zeros((e - s, 1, hp, wp))
        x[:, 0, :h, :w] = torch.from_numpy(img[s:e])
        out[s:e] = net(x)[:, :, :h, :w].argmax(1).numpy().astype(np.uint8)
    return out


def dice_per_class(pred, gt, classes):
    d = []
    for c in range(1, classes):
        p, g = pred == c, gt == c
        s = p.sum() + g.sum()
        d.append(1.0 if s == 0 else 2.0 * (p & g).sum() / s)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("out_onnx")
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pred-dir", help="write test predictions (NIfTI) here")
    ap.add_argument("--normalize", choices=("zscore", "zscore-fg"),
                    default="zscore",
                    help="z-score over all voxels (default) or over the "
                    "head only (convert with sauron-compress --normalize "
                    "zscore-fg)")
    ap.add_argument("--fov-aug", type=float, default=0.0, metavar="P",
                    help="fraction of the batches that see another field "
                    "of view (cropped, or with more air; default 0)")
    ap.add_argument("--crop-aug", type=float, default=0.0, metavar="Q",
                    help="fraction of the batches that see each slice cut "
                    "close around the case's labelled region (0 to 12 "
                    "voxels of margin a side); P + Q <= 1 (default 0)")
    ap.add_argument("--init-only", action="store_true",
                    help="export the seeded, randomly initialised network "
                    "without training or evaluating it: the start of a "
                    "baseline trained by our own trainer "
                    "(tools/train_baseline2d.sh)")
    ap.add_argument("--max-test", type=int, default=0,
                    help="evaluate only the first N test cases (0 = all)")
    args = ap.parse_args()
    for name, v in (("--fov-aug", args.fov_aug),
                    ("--crop-aug", args.crop_aug)):
        if not 0.0 <= v <= 1.0:
            sys.exit(f"error: {name} {v}: give a fraction in [0, 1]")
    # 1e-12: 0.7 + 0.3 may round just above 1
    if args.fov_aug + args.crop_aug > 1.0 + 1e-12:
        sys.exit(f"error: --fov-aug {args.fov_aug} plus --crop-aug "
                 f"{args.crop_aug} is more than 1 (fractions of the same "
                 "batches); lower one of them")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    with open(os.path.join(args.dataset, "dataset.json")) as f:
        meta = json.load(f)
    classes = len(meta["labels"])

    train = list_cases(args.dataset, "Tr")
    if not train:
        sys.exit(f"error: no imagesTr/*_0000.nii.gz in {args.dataset}; "
                 "run tools/make_datasets.py first")
    vols, fg, airs, boxes = [], [], [], []
    for _, ip, lp in train:
        x, y, _, air = load_case(ip, lp, args.normalize)
        vols.append((x, y))
        airs.append(air)
        boxes.append(sb.label_box(y))
        fg.append(np.nonzero(y.reshape(y.shape[0], -1).any(1))[0])
    hp, wp = padded(vols[0][0].shape[1]), padded(vols[0][0].shape[2])
    print(f"{len(train)} training cases, slices {vols[0][0].shape[1:]} "
          f"padded to ({hp}, {wp}), {classes} classes, "
          f"{args.threads} thread(s); loaded in {time.time() - t0:.0f} s",
          file=sys.stderr)

    net = UNet2D(classes=classes)
    nparam = sum(p.numel() for p in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    t1 = time.time()
    net.train()
    iters = 0 if args.init_only else args.iters
    for it in range(iters):
        lr = args.lr * (1 - it / iters) ** 0.9
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, _ = sb.draw_batch(rng, vols, fg, args.batch, hp, wp, airs,
                                boxes, args.fov_aug, args.crop_aug)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        logits = net(x)
        loss = F.cross_entropy(logits, y) + dice_loss(logits, y, classes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 20 == 0 or it == iters - 1:
            el = time.time() - t1
            eta = el / (it + 1) * (iters - it - 1)
            print(f"iter {it:5d}  loss {loss.item():.4f}  lr {lr:.2e}  "
                  f"{el:.0f} s  eta {eta:.0f} s", file=sys.stderr, flush=True)
    train_s = time.time() - t1

    net.eval()
    test = [] if args.init_only else list_cases(args.dataset, "Ts")
    if args.max_test:
        test = test[:args.max_test]
    scores = []
    if args.pred_dir:
        os.makedirs(args.pred_dir, exist_ok=True)
    for case, ip, lp in test:
        x, y, nimg, _ = load_case(ip, lp if os.path.exists(lp) else None,
                               args.normalize)
        pred = predict_volume(net, x)
        if args.pred_dir:
            arr = np.ascontiguousarray(pred.transpose(2, 1, 0))
            hdr = nimg.header.copy()
            hdr.set_data_dtype(np.uint8)
            out = nib.Nifti1Image(arr, None, hdr)
            out.set_qform(nimg.header.get_qform(), int(nimg.header["qform_code"]))
            out.set_sform(nimg.header.get_sform(), int(nimg.header["sform_code"]))
            out.header["scl_slope"] = 1.0
            out.header["scl_inter"] = 0.0
            nib.save(out, os.path.join(args.pred_dir, case + ".nii.gz"))
        if y is not None:
            d = dice_per_class(pred, y, classes)
            scores.append(d)
            print(f"test {case}: Dice " + " ".join(f"{v:.4f}" for v in d),
                  file=sys.stderr, flush=True)
    if scores:
        mean = np.mean(np.array(scores), axis=0)
        print("mean held-out Dice per foreground class: "
              + " ".join(f"{v:.4f}" for v in mean)
              + f"  (over {len(scores)} cases)", file=sys.stderr)

    os.makedirs(os.path.dirname(os.path.abspath(args.out_onnx)), exist_ok=True)
    dummy = torch.zeros(1, 1, hp, wp)
    torch.onnx.export(WithSoftmax(net), dummy, args.out_onnx, opset_version=17,
                      input_names=["input"], output_names=["probabilities"],
                      dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                    "probabilities": {0: "n", 2: "h", 3: "w"}},
                      do_constant_folding=True)
    print(f"params {nparam}, iters {iters}, batch {args.batch}, "
          f"threads {args.threads}, train {train_s:.0f} s, total "
          f"{time.time() - t0:.0f} s -> {args.out_onnx}", file=sys.stderr)


if __name__ == "__main__":
    main()
