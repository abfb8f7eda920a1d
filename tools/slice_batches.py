"""Training batches of 2D slices for tools/train_baseline.py (numpy only,
so tools/check_crop_aug.py can check them without PyTorch).

A case is (image [K, J, I] float32, label [K, J, I] uint8); a slice is
[J, I] (H = J, W = I).  Every batch is padded with 0 to a multiple of
DIVISOR at a random offset.  One uniform draw per batch (only when --fov-aug
or --crop-aug is on, so a run with neither draws what it always drew)
picks what the batch sees: u < P another field of view
(sample_batch_fov), u < P + Q a crop around the labelled region
(sample_batch_crop), else whole slices (sample_batch).  The same rule as
sauron-compress (compressor/data/sampler.h); the random streams differ.
"""
import numpy as np

DIVISOR = 16  # 2^(levels-1): every stride-2 stage must see an even size
# Crop margin, voxels a side: geom_check.py's cropped copy keeps 5, inside
# the range drawn (CROP_DEFAULT_MARGIN in compressor/data/sampler.h).
CROP_MARGIN = 12


def padded(n):
    return (n + DIVISOR - 1) // DIVISOR * DIVISOR


def label_box(y):
    """Bounding box [lo, hi) per axis of the non-background voxels of
    label y ([K, J, I]); the whole volume when there are none."""
    nz = np.nonzero(y)
    if not len(nz[0]):
        return (0, 0, 0), tuple(y.shape)
    return (tuple(int(a.min()) for a in nz),
            tuple(int(a.max()) + 1 for a in nz))


def pick_slice(rng, vols, fg_slices, b, batch):
    """Case and slice of sample b: the first third of a batch (at least
    one) on a slice holding foreground."""
    c = int(rng.integers(len(vols)))
    if b < max(1, batch // 3) and len(fg_slices[c]):
        return c, int(fg_slices[c][rng.integers(len(fg_slices[c]))])
    return c, int(rng.integers(vols[c][0].shape[0]))


def put(rng, x, y, b, win, wl):
    """Sample b of the batch: window win (labels wl) at a random offset
    inside the padded size, 0 around it."""
    hr, wr = win.shape
    hp, wp = y.shape[1], y.shape[2]
    oh = int(rng.integers(hp - hr + 1))
    ow = int(rng.integers(wp - wr + 1))
    x[b, 0, oh:oh + hr, ow:ow + wr] = win
    y[b, oh:oh + hr, ow:ow + wr] = wl


def sample_batch(rng, vols, fg_slices, batch, hp, wp):
    x = np.zeros((batch, 1, hp, wp), np.float32)
    y = np.zeros((batch, hp, wp), np.int64)
    for b in range(batch):
        c, k = pick_slice(rng, vols, fg_slices, b, batch)
        img, lab = vols[c]
        put(rng, x, y, b, img[k], lab[k])
    return x, y


def cut(img, lab, k, air, org, hr, wr):
    """Slice k seen through an hr x wr window whose corner sits at org
    (slice coordinates, may be outside): slice voxels where they overlap,
    air (label 0) elsewhere."""
    h, w = img.shape[1], img.shape[2]
    win = np.full((hr, wr), air, np.float32)
    wl = np.zeros((hr, wr), np.int64)
    s0h, s0w = max(org[0], 0), max(org[1], 0)
    e0h, e0w = min(org[0] + hr, h), min(org[1] + wr, w)
    if e0h > s0h and e0w > s0w:
        dh, dw = s0h - org[0], s0w - org[1]
        win[dh:dh + e0h - s0h, dw:dw + e0w - s0w] = img[k, s0h:e0h, s0w:e0w]
        wl[dh:dh + e0h - s0h, dw:dw + e0w - s0w] = lab[k, s0h:e0h, s0w:e0w]
    return win, wl


def sample_batch_fov(rng, vols, fg_slices, batch, airs):
    """One batch whose slices see another field of view: a window of
    Hr x Wr voxels (each 0.7 to 1.4 times the slice, the same for the
    whole batch) cut from the slice where it is smaller and filled with
    the case's air (its darkest voxel after normalisation) where it is larger,
    the slice at a random place inside, then padded with 0 to a multiple
    of 16 at a random offset as in sample_batch.  InstanceNorm takes its
    statistics over the whole slice, so without this the network learns
    the training scans' ratio of air to head (measured: Dice 0.58 on the
    Colin27 head with 40 voxels of air added, tools/geom_check.py)."""
    h, w = vols[0][0].shape[1], vols[0][0].shape[2]
    hr = int(round(h * rng.uniform(0.7, 1.4)))
    wr = int(round(w * rng.uniform(0.7, 1.4)))
    hp, wp = padded(hr), padded(wr)
    x = np.zeros((batch, 1, hp, wp), np.float32)
    y = np.zeros((batch, hp, wp), np.int64)
    for b in range(batch):
        c, k = pick_slice(rng, vols, fg_slices, b, batch)
        img, lab = vols[c]
        h, w = img.shape[1], img.shape[2]
        sh = int(rng.integers(abs(h - hr) + 1))
        sw = int(rng.integers(abs(w - wr) + 1))
        org = (sh if h > hr else -sh, sw if w > wr else -sw)
        win, wl = cut(img, lab, k, airs[c], org, hr, wr)
        put(rng, x, y, b, win, wl)
    return x, y


def sample_batch_crop(rng, vols, fg_slices, batch, airs, boxes,
                      margin=CROP_MARGIN):
    """One batch whose slices are cut close around the labelled region,
    as a scan cropped around the organ: the in-plane extent of the case's
    3D label box (boxes[c] = (lo, hi), label_box) widened on each side by
    its own margin 0..margin, drawn once per batch; the window size comes
    from the first sample and is the batch's; the other samples' windows
    are centred on their own case's box (corner lo + floor((extent -
    size) / 2)).  Air where the window runs past the slice, then padded
    as sample_batch_fov.  Returns x, y and, for the checks, each sample's
    (case, slice, window corner)."""
    x = y = None
    where = []
    for b in range(batch):
        c, k = pick_slice(rng, vols, fg_slices, b, batch)
        img, lab = vols[c]
        lo, hi = boxes[c]
        if b == 0:
            m = [int(rng.integers(margin + 1)) for _ in range(4)]
            hr = hi[1] - lo[1] + m[0] + m[1]
            wr = hi[2] - lo[2] + m[2] + m[3]
            hp, wp = padded(hr), padded(wr)
            x = np.zeros((batch, 1, hp, wp), np.float32)
            y = np.zeros((batch, hp, wp), np.int64)
            org = (lo[1] - m[0], lo[2] - m[2])
        else:
            org = (lo[1] + (hi[1] - lo[1] - hr) // 2,
                   lo[2] + (hi[2] - lo[2] - wr) // 2)
        win, wl = cut(img, lab, k, airs[c], org, hr, wr)
        put(rng, x, y, b, win, wl)
        where.append((c, k, org))
    return x, y, where


def draw_batch(rng, vols, fg_slices, batch, hp, wp, airs, boxes, fov_aug,
               crop_aug):
    """One training batch (x [B, 1, H, W] float32, y [B, H, W] int64) and
    what it saw: "fov", "crop" or "whole"."""
    u = rng.uniform() if fov_aug or crop_aug else 1.0
    if u < fov_aug:
        x, y = sample_batch_fov(rng, vols, fg_slices, batch, airs)
        return x, y, "fov"
    if u < fov_aug + crop_aug:
        x, y, _ = sample_batch_crop(rng, vols, fg_slices, batch, airs, boxes)
        return x, y, "crop"
    x, y = sample_batch(rng, vols, fg_slices, batch, hp, wp)
    return x, y, "whole"
