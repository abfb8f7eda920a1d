#!/usr/bin/python3
"""Generate a synthetic nnU-Net raw dataset ("phantom") for training tests.

Each case is a 3D volume (default 64x64x32 voxels of 1 mm) holding a body
ellipsoid with one or two ellipsoid "organs" of distinct intensities, a
smooth multiplicative bias field and Gaussian noise.  Positions, radii,
intensities and the bias vary per case, so a network has to learn shape
and contrast rather than memorise voxels.  Classes: background 0, organ1
1, organ2 2 (with --classes 3, the default).  With --modalities 2 the
second channel has a different contrast (organ1 dark, organ2 bright).

Layout written (nnU-Net v2 raw):
    OUT/dataset.json
    OUT/imagesTr/phantom_000_0000.nii.gz  (one file per modality)
    OUT/labelsTr/phantom_000.nii.gz
    OUT/imagesTs/..., OUT/labelsTs/...    (with --test M > 0)

Deterministic: case i depends only on (--seed, i, the options), so
--cases 4 gives the first four cases of --cases 8.

Needs numpy and nibabel (Debian: python3-numpy, python3-nibabel); run
with /usr/bin/python3.  Example (CI-sized):
    /usr/bin/python3 tools/make_phantom.py /tmp/Dataset900_Phantom \
        --cases 6 --test 2 --size 32,32,16
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

try:
    import nibabel as nib
except ImportError:  # pragma: no cover
    sys.exit("error: make_phantom.py needs nibabel (Debian: python3-nibabel); "
             "run it with /usr/bin/python3")

MODALITY_NAMES = ["T1", "T2"]
CLASS_NAMES = ["background", "organ1", "organ2"]
# Mean intensity of (body, organ1, organ2) per modality; outside the body
# is air (0).  Distinct enough that a small U-Net separates them, close
# enough (with bias and noise) that thresholding alone is not perfect.
CONTRAST = [
    (100.0, 170.0, 55.0),
    (80.0, 35.0, 160.0),
]


def ellipsoid(grid, centre, radii):
    """Boolean mask of the ellipsoid sum(((x - c) / r)^2) <= 1."""
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    return d <= 1.0


def make_case(idx, args):
    """Image [n_mod, nx, ny, nz] float32 and label [nx, ny, nz] uint8."""
    rng = np.random.default_rng([args.seed, idx])
    n = np.array(args.size, dtype=np.float64)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in args.size],
                       indexing="ij")
    mid = (n - 1) / 2.0
    body_c = mid + rng.uniform(-0.05, 0.05, 3) * n
    body_r = n * rng.uniform(0.36, 0.44, 3)
    body = ellipsoid(grid, body_c, body_r)

    label = np.zeros(args.size, dtype=np.uint8)
    # organ1 left of centre along i, organ2 right: they never overlap.
    o1_c = body_c + np.array([-0.35, rng.uniform(-0.15, 0.15),
                              rng.uniform(-0.1, 0.1)]) * body_r
    o1_r = body_r * rng.uniform(0.28, 0.40, 3)
    label[ellipsoid(grid, o1_c, o1_r) & body] = 1
    if args.classes >= 3:
        o2_c = body_c + np.array([0.45, rng.uniform(-0.2, 0.2),
                                  rng.uniform(-0.1, 0.1)]) * body_r
        o2_r = body_r * rng.uniform(0.18, 0.28, 3)
        label[ellipsoid(grid, o2_c, o2_r) & body & (label == 0)] = 2

    # Smooth bias: 1 + a low-order polynomial in normalised coordinates,
    # up to about +-15 %, shared by the modalities (one coil).
    u = [(g - m) / (s / 2.0) for g, m, s in zip(grid, mid, n)]
    coef = rng.uniform(-0.08, 0.08, 6)
    bias = (1.0 + coef[0] * u[0] + coef[1] * u[1] + coef[2] * u[2]
            + coef[3] * u[0] * u[1] + coef[4] * u[0] ** 2
            + coef[5] * u[2] ** 2)

    img = np.zeros((args.modalities,) + tuple(args.size), dtype=np.float32)
    for m in range(args.modalities):
        means = np.array(CONTRAST[m]) * rng.uniform(0.9, 1.1, 3)
        v = np.zeros(args.size, dtype=np.float64)
        v[body] = means[0]
        v[label == 1] = means[1]
        v[label == 2] = means[2]
        v = v * bias + rng.normal(0.0, args.noise, args.size)
        img[m] = v.astype(np.float32)
    return img, label


def affine(args):
    a = np.diag(list(args.spacing) + [1.0])
    # Origin at the volume centre, as scanners typically report it.
    a[:3, 3] = -np.array(args.spacing) * (np.array(args.size) - 1) / 2.0
    return a


def save(path, data, aff):
    im = nib.Nifti1Image(data, aff)
    im.set_qform(aff, code=1)
    im.set_sform(aff, code=1)
    nib.save(im, path)


def write_set(out, images, labels, names, first, count, args, with_labels):
    aff = affine(args)
    for k in range(count):
        name = "phantom_%03d" % (first + k)
        img, lab = make_case(first + k, args)
        for m in range(args.modalities):
            save(os.path.join(out, images, "%s_%04d.nii.gz" % (name, m)),
                 img[m], aff)
        if with_labels:
            save(os.path.join(out, labels, name + ".nii.gz"), lab, aff)
        names.append(name)


def parse_triple(text, kind):
    try:
        v = [kind(x) for x in text.split(",")]
    except ValueError:
        v = []
    if len(v) != 3 or min(v) <= 0:
        raise argparse.ArgumentTypeError(
            "give three positive numbers joined by commas, e.g. 64,64,32")
    return v


def main():
    ap = argparse.ArgumentParser(
        description="Write a synthetic nnU-Net raw dataset (ellipsoid "
                    "organs, bias field, noise).")
    ap.add_argument("out", help="dataset folder to create")
    ap.add_argument("--cases", type=int, default=10,
                    help="training cases (default 10)")
    ap.add_argument("--test", type=int, default=2,
                    help="test cases in imagesTs/labelsTs (default 2)")
    ap.add_argument("--size", type=lambda s: parse_triple(s, int),
                    default=[64, 64, 32],
                    help="voxels along i,j,k (default 64,64,32)")
    ap.add_argument("--spacing", type=lambda s: parse_triple(s, float),
                    default=[1.0, 1.0, 1.0],
                    help="voxel size in mm (default 1,1,1)")
    ap.add_argument("--classes", type=int, choices=[2, 3], default=3,
                    help="2: background + organ1; 3: + organ2 (default)")
    ap.add_argument("--modalities", type=int, choices=[1, 2], default=1)
    ap.add_argument("--noise", type=float, default=8.0,
                    help="noise standard deviation (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true",
                    help="replace an existing output folder")
    args = ap.parse_args()
    if args.cases < 1 or args.test < 0 or min(args.size) < 8:
        ap.error("need --cases >= 1, --test >= 0 and sizes >= 8")
    if os.path.exists(args.out):
        if not args.force:
            sys.exit("error: '%s' exists; pass --force to replace it"
                     % args.out)
        shutil.rmtree(args.out)
    tmp = args.out.rstrip("/") + ".tmp%d" % os.getpid()
    for sub in ("imagesTr", "labelsTr") + (
            ("imagesTs", "labelsTs") if args.test else ()):
        os.makedirs(os.path.join(tmp, sub))
    train, test = [], []
    write_set(tmp, "imagesTr", "labelsTr", train, 0, args.cases, args, True)
    write_set(tmp, "imagesTs", "labelsTs", test, args.cases, args.test, args,
              True)
    meta = {
        "name": "Phantom",
        "description": "synthetic ellipsoid phantom (tools/make_phantom.py "
                       "--seed %d)" % args.seed,
        "channel_names": {str(m): MODALITY_NAMES[m]
                          for m in range(args.modalities)},
        "labels": {CLASS_NAMES[c]: c for c in range(args.classes)},
        "numTraining": args.cases,
        "file_ending": ".nii.gz",
    }
    with open(os.path.join(tmp, "dataset.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    # Written under a temporary name and renamed: an interrupted run never
    # leaves a half-written dataset behind.
    os.rename(tmp, args.out)
    print("wrote %s: %d training, %d test cases of %s voxels"
          % (args.out, args.cases, args.test, "x".join(map(str, args.size))))


if __name__ == "__main__":
    main()
