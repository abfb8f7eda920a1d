#!/usr/bin/python3
"""Export a randomly initialised 3D nnU-Net-style U-Net to ONNX, the
starting point of a baseline trained by sauron-compress --no-prune.

    /usr/bin/python3 tools/init_unet3d.py OUT.onnx [--patch 64] \
        [--levels 4] [--base 8] [--max-feat 64] [--classes 2] [--seed 0]

The network is tools/unets.py's NnUNet (dims 3): per stage two
[Conv3x3x3 -> InstanceNorm(affine) -> LeakyReLU(0.01)], stride-2 conv
down, ConvTranspose(k=s=2) up, concatenated skips, 1x1x1 head, Softmax.
Weights are PyTorch's default initialisation under --seed (the same
Kaiming-uniform nnU-Net starts from, without its custom 1e-2 slope).
The input is fixed at 1 x 1 x P x P x P: sauron-compress takes the 3D
patch from the model's input, and segment slides a window of that size.
P must be a multiple of 2^(levels-1).  Prints the parameter count.
"""
import argparse
import os
import sys

import torch

import unets  # tools/unets.py


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_onnx")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--max-feat", type=int, default=64)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    div = 2 ** (args.levels - 1)
    if args.levels < 2 or args.patch < div or args.patch % div:
        sys.exit(f"error: --patch {args.patch} with --levels {args.levels}: "
                 f"give a patch that is a multiple of {div}")
    if os.path.exists(args.out_onnx) and not args.force:
        sys.exit(f"error: {args.out_onnx} exists; give --force to replace it")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    net = unets.NnUNet(dims=3, in_ch=1, classes=args.classes,
                       levels=args.levels, base=args.base,
                       max_feat=args.max_feat).eval()
    x = torch.zeros(1, 1, args.patch, args.patch, args.patch)
    tmp = args.out_onnx + ".tmp.onnx"
    unets.export_onnx(net, x, tmp, opset=17, n_out=1)
    os.replace(tmp, args.out_onnx)
    print(f"params {unets.count_params(net)}, features "
          f"{unets.features_per_stage(args.levels, args.base, args.max_feat)}"
          f", patch {args.patch}^3 -> {args.out_onnx}", file=sys.stderr)


if __name__ == "__main__":
    main()
