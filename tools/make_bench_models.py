#!/usr/bin/python3
"""Export the benchmark U-Nets (not committed; timing does not depend on
the weights, which are random but seeded):

    /usr/bin/python3 tools/make_bench_models.py build/bench

  bench2d  nnU-Net-style 2D, input 1x1x256x256, five levels,
           32..320 features, 4 classes
  bench3d  nnU-Net-style 3D, input 1x1x96x96x96, four levels,
           16..128 features, 4 classes
  slim2d   the shape of a Sauron-pruned 2D nnU-Net: input 1x1x256x256,
           five levels, 4..16 features (4, 8, 16, 16, 16), 4 classes,
           about 0.15 GFLOP: small channel counts make it overhead and
           memory bound, which is what the runtime must be fast at
  slim3d   the same for 3D: bench3d's input (1x1x96x96x96) and four
           levels at 4..16 features (4, 8, 16, 16), 4 classes

For each: <name>.onnx, <name>.in.bin (raw little-endian float32, the
input), <name>.shape (e.g. "1,1,256,256").  Existing files are kept unless
--force, so repeated benchmark runs reuse them.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unets  # noqa: E402

MODELS = {
    "bench2d": (lambda: unets.NnUNet(2, 1, 4, 5, 32, 320), (1, 1, 256, 256)),
    "bench3d": (lambda: unets.NnUNet(3, 1, 4, 4, 16, 128), (1, 1, 96, 96, 96)),
    "slim2d": (lambda: unets.NnUNet(2, 1, 4, 5, 4, 16), (1, 1, 256, 256)),
    "slim3d": (lambda: unets.NnUNet(3, 1, 4, 4, 4, 16), (1, 1, 96, 96, 96)),
}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    force = "--force" in sys.argv
    out = args[0] if args else "build/bench"
    os.makedirs(out, exist_ok=True)
    for seed, (name, (build, shape)) in enumerate(MODELS.items()):
        base = os.path.join(out, name)
        if not force and all(os.path.exists(base + e)
                             for e in (".onnx", ".in.bin", ".shape")):
            continue
        model, gen = unets.seeded_model(build, seed, gen_offset=100)
        x = torch.randn(shape, generator=gen)
        unets.export_onnx(model, x, base + ".onnx", 13, 1)
        x.numpy().astype("<f4").tofile(base + ".in.bin")
        with open(base + ".shape", "w") as f:
            f.write(",".join(str(d) for d in shape) + "\n")
        print("bench model %s: %d params, input %s"
              % (name, unets.count_params(model), shape), file=sys.stderr)


if __name__ == "__main__":
    main()
