#!/usr/bin/python3
"""PyTorch references for Sauron's distances (compressor/sauron/distance.h).

Usage: /usr/bin/python3 tools/make_sauron_fixtures.py tests/fixtures/sauron

For each case NAME it writes, in the SLTENSOR format of tests/testutil.h:
  NAME.F.f32     the activation F [N, C, sp...] (float32)
  NAME.meta.f32  [sf, scale, r, term]: pool factor, gradient scale, the
                 delta_prune reference channel, and the delta_opt term
  NAME.dist.f32  d [N, C] (entry c = 0 is 0)
  NAME.grad.f32  d(scale * term)/dF by autograd, shape of F
  NAME.e.f32     delta_prune e [C] for reference r

Everything is computed in float64 from the float32 F, with the same rules
as the C code: min/max by gather at numpy's first argmin/argmax (ties: the
first index in scan order gets the gradient; torch.amin would split it),
flat channel (R <= 1e-6 * max(1, |m|, |M|)) -> normalised map 0 and no
gradient, d = 0 -> value 0 and gradient 0 (torch.sqrt would give NaN),
pool kernel = stride = min(sf, size) per spatial dim with floor.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sltensor import write_tensor  # noqa: E402

RANGE_EPS = 1e-6
PRUNE_EPS = 1e-15


def pool(x, sf):
    """Average pool [N, C, sp...] by min(sf, size) per spatial dim, floor."""
    k = [min(sf, s) for s in x.shape[2:]]
    fn = {1: tf.avg_pool1d, 2: tf.avg_pool2d, 3: tf.avg_pool3d}[len(k)]
    return fn(x, kernel_size=k, stride=k)


def delta_opt(F, sf):
    """Returns (term, d [N, C]) as float64 tensors differentiable in F."""
    N, C = F.shape[:2]
    flat = F.reshape(N, C, -1)
    x = flat.detach().numpy()
    imn = torch.from_numpy(np.argmin(x, axis=2)[..., None])
    imx = torch.from_numpy(np.argmax(x, axis=2)[..., None])
    m = flat.gather(2, imn)
    M = flat.gather(2, imx)
    R = M - m
    big = torch.clamp(torch.maximum(m.abs(), M.abs()).detach(), min=1.0)
    flat_ch = R.detach() <= RANGE_EPS * big
    nrm = torch.where(flat_ch, torch.zeros_like(flat),
                      (flat - m) / torch.where(flat_ch, torch.ones_like(R), R))
    p = pool(nrm.reshape(F.shape), sf).reshape(N, C, -1)
    u = ((p[:, :1] - p[:, 1:]) ** 2).mean(2)
    pos = u > 0
    d = torch.where(pos, torch.sqrt(torch.where(pos, u, torch.ones_like(u))),
                    torch.zeros_like(u))
    dist = torch.cat([torch.zeros(N, 1, dtype=d.dtype), d], 1)
    term = d.mean() if C > 1 else (F * 0).sum()
    return term, dist


def delta_prune(F, sf, r):
    N, C = F.shape[:2]
    P = pool(F, sf).reshape(N, C, -1)
    e = torch.sqrt(((P[:, r:r + 1] - P) ** 2).mean(2))
    e = e / (e.max(1, keepdim=True).values + PRUNE_EPS)
    return e.mean(0)


def write_case(out, name, F32, sf, scale, r):
    F = torch.from_numpy(F32.astype(np.float64)).requires_grad_(True)
    term, dist = delta_opt(F, sf)
    (scale * term).backward()
    grad = F.grad.numpy()
    assert np.all(np.isfinite(grad)), name
    e = delta_prune(F.detach(), sf, r).numpy()
    base = os.path.join(out, name)
    write_tensor(base + ".F.f32", F32)
    write_tensor(base + ".meta.f32", [sf, scale, r, term.item()])
    write_tensor(base + ".dist.f32", dist.detach().numpy())
    write_tensor(base + ".grad.f32", grad)
    write_tensor(base + ".e.f32", e)
    print("%-12s F %-18s term %.6f |grad|max %.3g e %s" %
          (name, list(F32.shape), term.item(), np.abs(grad).max(),
           np.array2string(e, precision=3)))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sauron"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(4)

    # 2D, odd sizes, with every guard: a flat channel (2), a channel equal
    # to channel 0 (3: d = 0), an identical pair (4, 5), ties at the min and
    # max (sample 1, channel 1), a minimum in the dropped remainder.
    F = rng.uniform(-1, 2, size=(2, 6, 9, 7)).astype(np.float32)
    F[0, 2] = 0.37
    F[1, 2] = 0.0
    F[:, 3] = F[:, 0]
    F[:, 5] = F[:, 4]
    t = F[1, 1].reshape(-1)
    t[5] = t[20] = -1.5
    t[3] = t[40] = 2.5
    F[0, 4, 8, 6] = -3.0
    F[0, 1, 3, 6] = 4.0
    write_case(out, "opt2d", F, 2, 0.7, 2)

    # 3D, odd sizes, one sample, a tie at the max.
    F = rng.uniform(-2, 1, size=(1, 4, 5, 6, 7)).astype(np.float32)
    F[0, 2, 4, 5, 6] = F[0, 2, 1, 1, 1] = 3.0
    write_case(out, "opt3d", F, 2, 1.3, 1)

    # 3D with a depth of 1 (smaller than sf: pooled whole).
    F = rng.uniform(0, 1, size=(2, 3, 1, 8, 9)).astype(np.float32)
    write_case(out, "opt3d_thin", F, 2, 1.0, 0)

    # sf = 3 on sizes that leave a remainder.
    F = rng.normal(size=(1, 3, 10, 8)).astype(np.float32)
    write_case(out, "opt2d_sf3", F, 3, 0.5, 2)

    # One channel: term 0, no gradient, e = [0].
    F = rng.uniform(-1, 1, size=(2, 1, 6, 5)).astype(np.float32)
    write_case(out, "opt_c1", F, 2, 1.0, 0)


if __name__ == "__main__":
    main()
