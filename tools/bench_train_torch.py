#!/usr/bin/python3
"""PyTorch peer of bench-train: time one training step (forward, CE + soft
Dice, backward, Adam) of the same U-Net architecture on the same batch
shape, on CPU with a fixed thread count.

    /usr/bin/python3 tools/bench_train_torch.py bench2d --shape 4,1,256,256 \
        [--steps N] [--warmup W] [--threads 2]

The model name is one of tools/make_bench_models.py's MODELS (the same
builders the exported ONNX came from).  As in our engine: the network ends
in Softmax, CE is the NLL of its log, the soft Dice skips the background
class and sums over the batch too in 2D (nnU-Net's batch Dice), Adam with
lr 1e-3.  Prints "key value" lines like bench-train: step_ms (median wall),
step_cpu_ms (median process CPU time), min_ms, loss_first, loss_last,
peak_mb (the process's maximum resident set, torch itself included),
omp_wait_policy (OMP_WAIT_POLICY: passive, with GOMP_SPINCOUNT 1000, unless
the caller set them).
"""

import argparse
import os
import resource
import statistics
import sys
import time

# libgomp reads this when torch loads it: passive unless the caller chose,
# as our programs do (exec_reexec_passive_wait), so both sides wait alike
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_bench_models import MODELS  # noqa: E402


def ce_dice(probs, labels, batch_dice, smooth=1e-5):
    ce = F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels)
    k = probs.shape[1]
    onehot = F.one_hot(labels, k).movedim(-1, 1).to(probs.dtype)
    dims = ([0] if batch_dice else []) + list(range(2, probs.ndim))
    inter = (probs * onehot).sum(dims)
    den = probs.sum(dims) + onehot.sum(dims)
    dc = (2 * inter + smooth) / (den + smooth)
    dc = dc[1:] if batch_dice else dc[:, 1:]
    return ce + (1 - dc.mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--shape", required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    model = MODELS[a.model][0]().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(shape)
    # the class count is the last head conv's width (heads come last)
    k = [m for m in model.modules()
         if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))][-1].out_channels
    labels = torch.randint(0, k, (shape[0],) + shape[2:])
    batch_dice = len(shape) == 4

    def step():
        opt.zero_grad(set_to_none=False)
        loss = ce_dice(model(x), labels, batch_dice)
        loss.backward()
        opt.step()
        return float(loss)

    for _ in range(a.warmup):
        step()
    wall, cpu, losses = [], [], []
    for i in range(a.steps):
        w0, c0 = time.perf_counter(), time.process_time()
        losses.append(step())
        cpu.append(1e3 * (time.process_time() - c0))
        wall.append(1e3 * (time.perf_counter() - w0))
        print("bench-train-torch: step %d: %.1f ms (cpu %.1f ms), loss %.5f"
              % (i + 1, wall[-1], cpu[-1], losses[-1]), file=sys.stderr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("model %s\nshape %s\nthreads %d\nsteps %d" % (
        a.model, a.shape, torch.get_num_threads(), a.steps))
    print("omp_wait_policy %s" % os.environ["OMP_WAIT_POLICY"])
    print("step_ms %.1f\nstep_cpu_ms %.1f\nmin_ms %.1f" % (
        statistics.median(wall), statistics.median(cpu), min(wall)))
    print("loss_first %.6f\nloss_last %.6f\npeak_mb %.1f" % (
        losses[0], losses[-1], peak))


if __name__ == "__main__":
    main()
