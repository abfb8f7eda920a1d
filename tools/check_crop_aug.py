#!/usr/bin/python3
"""Check train_baseline.py's --crop-aug windows (tools/slice_batches.py)
against the rule sauron-compress follows (compressor/data/sampler.h), on
tiny cases whose voxel values are their own flat index + 1 and air -7.

    /usr/bin/python3 tools/check_crop_aug.py

Exits non-zero with one line naming the first mismatch.  Run by
tests/test_sampler.c (numpy only).  Checks:
  * label_box is the bounding box of the non-background voxels (the
    whole case without any);
  * a crop batch's window (the non-zero region of each sample) has one
    size; sample 0's window is its case box widened by 0..12 on each
    side, the others' are centred on their own box; inside, the slice's
    voxels (one slice, labels with them) or air -7 with label 0 where the
    window runs past the slice; zeros around it;
  * draw_batch: about Q of the batches are crops (2000 draws, sd 0.011,
    tolerance 0.05); with Q = 0 it draws exactly what the rule before
    --crop-aug drew ("fov" when u < P, else whole slices).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slice_batches as sb  # noqa: E402

K, H, W = 5, 30, 26
AIR = -7.0


def fail(msg):
    sys.exit(f"check_crop_aug: {msg}")


def cases():
    vols, fg, airs, boxes, truth = [], [], [], [], []
    cubes = [((1, 2, 3), 6), ((0, 20, 18), 5), None, ((2, 0, 0), 4)]
    for i, cube in enumerate(cubes):
        x = (np.arange(K * H * W, dtype=np.float32) + 1 +
             i * K * H * W).reshape(K, H, W)
        y = np.zeros((K, H, W), np.uint8)
        if cube:
            (a, b, d), s = cube
            y[a:a + 2, b:b + s, d:d + s] = 1
            truth.append(((a, b, d), (a + 2, b + s, d + s)))
        else:
            truth.append(((0, 0, 0), (K, H, W)))
        vols.append((x, y))
        airs.append(np.float32(AIR))
        boxes.append(sb.label_box(y))
        fg.append(np.nonzero(y.reshape(K, -1).any(1))[0])
    for i in range(len(cubes)):
        if boxes[i] != truth[i]:
            fail(f"label_box of case {i} is {boxes[i]}, want {truth[i]}")
    return vols, fg, airs, boxes


def check_crop(x, y, where, vols, boxes, margin):
    size = None
    for b in range(x.shape[0]):
        xb, yb = x[b, 0], y[b]
        c, _, _ = where[b]
        img, lab = vols[c]
        nz = np.nonzero(xb)
        if np.any(yb[xb == 0]):
            fail(f"sample {b}: labels outside the window")
        r0, q0 = nz[0].min(), nz[1].min()
        hr, wr = nz[0].max() - r0 + 1, nz[1].max() - q0 + 1
        if size is None:
            size = (hr, wr)
        if (hr, wr) != size:
            fail(f"sample {b}: window {hr}x{wr}, sample 0's {size}")
        # window corner in slice coordinates, from one slice voxel
        win = xb[r0:r0 + hr, q0:q0 + wr]
        inside = np.argwhere(win != AIR)
        a, d = inside[0]
        v = int(win[a, d]) - 1 - c * K * H * W
        k = v // (H * W)
        org = (v // W % H - a, v % W - d)
        lo, hi = boxes[c]
        ext = (hi[1] - lo[1], hi[2] - lo[2])
        if b == 0:
            m = (lo[1] - org[0], hr - ext[0] - (lo[1] - org[0]),
                 lo[2] - org[1], wr - ext[1] - (lo[2] - org[1]))
            if not all(0 <= mi <= margin for mi in m):
                fail(f"sample 0: margins {m} outside 0..{margin}")
        else:
            want = (lo[1] + (ext[0] - hr) // 2, lo[2] + (ext[1] - wr) // 2)
            if org != want:
                fail(f"sample {b}: window at {org}, centred is {want}")
        for i in range(hr):
            for j in range(wr):
                si, sj = org[0] + i, org[1] + j
                if 0 <= si < H and 0 <= sj < W:
                    ok = (win[i, j] == img[k, si, sj] and
                          yb[r0 + i, q0 + j] == lab[k, si, sj])
                else:
                    ok = win[i, j] == AIR and yb[r0 + i, q0 + j] == 0
                if not ok:
                    fail(f"sample {b}: window voxel ({i}, {j}) is wrong")
    return size


def main():
    vols, fg, airs, boxes = cases()
    margin = sb.CROP_MARGIN
    rng = np.random.default_rng(7)
    sizes = set()
    for _ in range(200):
        x, y, where = sb.sample_batch_crop(rng, vols, fg, 3, airs, boxes)
        sizes.add(check_crop(x, y, where, vols, boxes, margin))
    if len(sizes) < 10:
        fail(f"only {len(sizes)} window sizes in 200 crop batches")

    hp, wp = sb.padded(H), sb.padded(W)
    rng = np.random.default_rng(8)
    kinds = [sb.draw_batch(rng, vols, fg, 2, hp, wp, airs, boxes, 0.3,
                           0.4)[2] for _ in range(2000)]
    for kind, p in (("crop", 0.4), ("fov", 0.3)):
        f = kinds.count(kind) / len(kinds)
        if abs(f - p) > 0.05:
            fail(f"{kind} batches: {f:.3f} of 2000, want about {p}")

    for p in (0.0, 0.5):
        ra, rb = np.random.default_rng(9), np.random.default_rng(9)
        for it in range(100):
            if p and ra.uniform() < p:
                xa, ya = sb.sample_batch_fov(ra, vols, fg, 3, airs)
            else:
                xa, ya = sb.sample_batch(ra, vols, fg, 3, hp, wp)
            xb, yb, _ = sb.draw_batch(rb, vols, fg, 3, hp, wp, airs, boxes,
                                      p, 0.0)
            if not (np.array_equal(xa, xb) and np.array_equal(ya, yb)):
                fail(f"--fov-aug {p} --crop-aug 0: batch {it} differs "
                     "from the draws before --crop-aug")
    print("check_crop_aug: crop windows follow the rule; --crop-aug 0 "
          "draws as before")


if __name__ == "__main__":
    main()
