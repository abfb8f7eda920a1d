"""Otsu's head/air threshold, as runtime/volume.c computes it
(volume_otsu_threshold): a 256-bin histogram between the minimum and the
maximum, bin floor((v - min) / (max - min) * 256) (the maximum in the
last), the split t in 1..255 maximising w0 * w1 * (mu0 - mu1)^2 over bin
indices (the first on ties), threshold min + t * (max - min) / 256; in
double, sums in index order, so the C runtime and the Python peers
(torch_segment.py, train_baseline.py) pick the same voxels.
"""
import math

import numpy as np

BINS = 256


def threshold(flat):
    """-> the threshold of a 1-D array; -inf if it is constant."""
    mn = float(flat.min())
    mx = float(flat.max())
    if not mx > mn:
        return -math.inf
    b = np.floor((flat.astype(np.float64) - mn) / (mx - mn) * BINS)
    h = np.bincount(np.clip(b, 0, BINS - 1).astype(np.int64),
                    minlength=BINS).astype(np.float64)
    tot = 0.0
    tot_m = 0.0
    for k in range(BINS):
        tot += h[k]
        tot_m += float(k) * h[k]
    c0 = m0 = 0.0
    best, bt = -1.0, 1
    for t in range(1, BINS):
        c0 += h[t - 1]
        m0 += float(t - 1) * h[t - 1]
        c1 = tot - c0
        if c0 <= 0.0 or c1 <= 0.0:
            continue
        d = m0 / c0 - (tot_m - m0) / c1
        var = (c0 / tot) * (c1 / tot) * d * d
        if var > best:
            best, bt = var, t
    return mn + float(bt) * (mx - mn) / BINS
