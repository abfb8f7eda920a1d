#!/usr/bin/python3
"""Make a coarser copy of an nnU-Net raw dataset by integer block averaging.

    /usr/bin/python3 tools/downsample_dataset.py SRC_DATASET DST_DATASET \
        [--factor 2] [--name NAME] [--force]

Written for the 3D task of the real-data benchmark: Dataset001 (1 mm,
181x217x181) at factor 2 becomes a 2 mm, 91x109x91 dataset that a 3D U-Net
trains on in reach of two cores.  Same cases, same split (imagesTr/labelsTr,
imagesTs/labelsTs keep their file names), dataset.json copied with the new
name and the rule below recorded.

Rule, per block of f x f x f source voxels (the last block along an axis of
odd size holds fewer voxels; only the voxels present count):
  * image: the mean of the voxels present (scl_slope/scl_inter applied),
    rounded to the source's integer type when it has one;
  * label: the class with the most voxels in the block; ties go to the
    lowest foreground class (so for brain extraction a block that is at
    least half brain is brain), background only when it is a strict
    majority;
  * geometry: voxel sizes multiplied by f and the origin moved to the
    centre of the first block (new affine = old affine @ [f*I, (f-1)/2]),
    in both the qform and the sform, their codes kept.
Deterministic: gzip mtime 0 (nibabel's default), no randomness.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import nibabel as nib


def block_sums(v, f):
    """Sum over f x f x f blocks (zero-padded to a multiple of f) and the
    number of source voxels in each block."""
    pad = [(0, (-n) % f) for n in v.shape]
    p = np.pad(v, pad)
    s = [n // f for n in p.shape]
    sums = p.reshape(s[0], f, s[1], f, s[2], f).sum(axis=(1, 3, 5))
    ones = np.pad(np.ones(v.shape, np.int32), pad)
    count = ones.reshape(s[0], f, s[1], f, s[2], f).sum(axis=(1, 3, 5))
    return sums, count


def down_image(v, f, dtype):
    sums, count = block_sums(v.astype(np.float64), f)
    m = sums / count
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(m), info.min, info.max).astype(dtype)
    return m.astype(dtype)


def down_label(y, f, classes):
    best = None
    votes = None
    # background first, then foreground in increasing order, with ">="
    # for foreground: ties go to the lowest foreground class
    for c in [0] + list(range(1, classes)):
        n, _ = block_sums((y == c).astype(np.int32), f)
        if best is None:
            best = np.zeros(n.shape, np.uint8)
            votes = n
            continue
        # a later class wins a tie only against background
        win = (n > votes) | ((n == votes) & (best == 0))
        best[win] = c
        votes = np.where(win, n, votes)
    return best


def scaled_affine(aff, f):
    s = np.diag([float(f)] * 3 + [1.0])
    s[:3, 3] = (f - 1) / 2.0
    return aff @ s


def write_like(arr, ref, f, path, descrip):
    hdr = ref.header.copy()
    hdr.set_data_dtype(arr.dtype)
    img = nib.Nifti1Image(arr, None, hdr)
    img.set_qform(scaled_affine(ref.header.get_qform(), f),
                  int(ref.header["qform_code"]))
    img.set_sform(scaled_affine(ref.header.get_sform(), f),
                  int(ref.header["sform_code"]))
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    img.header["descrip"] = descrip
    tmp = path + ".tmp.nii.gz"
    nib.save(img, tmp)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--name", help="dataset.json name (default: DST's "
                    "folder name)")
    ap.add_argument("--force", action="store_true",
                    help="write into DST even if it holds a dataset.json")
    args = ap.parse_args()
    f = args.factor
    if f < 2:
        sys.exit(f"error: --factor {f}: give an integer of 2 or more")
    src, dst = os.path.abspath(args.src), os.path.abspath(args.dst)
    if src == dst:
        sys.exit("error: the destination is the source; give another folder")
    try:
        with open(os.path.join(src, "dataset.json")) as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot read {src}/dataset.json ({e}); give an "
                 "nnU-Net raw dataset (tools/make_datasets.py makes one)")
    if os.path.exists(os.path.join(dst, "dataset.json")) and not args.force:
        sys.exit(f"error: {dst} already holds a dataset; give --force to "
                 "rewrite it")
    classes = len(meta["labels"])
    t0 = time.time()
    n = 0
    descrip = f"sauron downsample_dataset.py x{f}".encode()
    for split in ("Tr", "Ts"):
        idir = os.path.join(src, "images" + split)
        if not os.path.isdir(idir):
            continue
        for sub in ("images", "labels"):
            os.makedirs(os.path.join(dst, sub + split), exist_ok=True)
        for name in sorted(os.listdir(idir)):
            if not name.endswith(".nii.gz"):
                continue
            img = nib.load(os.path.join(idir, name))
            v = np.asarray(img.dataobj, dtype=np.float64)  # scl_* applied
            write_like(down_image(v, f, img.get_data_dtype()), img, f,
                       os.path.join(dst, "images" + split, name), descrip)
            case = name[:-len(".nii.gz")]
            case = case[:case.rfind("_")]  # drop the channel suffix _0000
            lp = os.path.join(src, "labels" + split, case + ".nii.gz")
            if os.path.exists(lp):
                lab = nib.load(lp)
                y = np.asarray(lab.dataobj).astype(np.int64)
                write_like(down_label(y, f, classes), lab, f,
                           os.path.join(dst, "labels" + split,
                                        case + ".nii.gz"), descrip)
            n += 1
            print(f"{split} {case}  {time.time() - t0:.1f} s",
                  file=sys.stderr, flush=True)
    if n == 0:
        sys.exit(f"error: no images in {src}/imagesTr or imagesTs")
    meta["name"] = args.name or os.path.basename(dst.rstrip("/"))
    meta["downsampled"] = {
        "from": os.path.basename(src.rstrip("/")), "factor": f,
        "image": "mean of each f^3 block (voxels present only)",
        "label": "majority class per block; ties to the lowest foreground "
                 "class",
        "affine": "old affine @ [f*I, (f-1)/2]"}
    tmp = os.path.join(dst, "dataset.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, os.path.join(dst, "dataset.json"))
    print(f"done: {n} cases in {time.time() - t0:.1f} s -> {dst}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
