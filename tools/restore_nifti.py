#!/usr/bin/python3
"""Store a NIfTI scan again with its voxel axes permuted and flipped, the
affine columns permuted and negated to match, so every voxel keeps its
world position: the same head, another storage order.  Used to check that
segment --overlay draws the same picture for any storage.

usage: /usr/bin/python3 tools/restore_nifti.py IN OUT --perm 2,0,1 --flip 0,1,1
  --perm a,b,c: new voxel axis n is old axis perm[n]
  --flip x,y,z: reverse new axis n when its entry is 1
The qform and sform are both replaced by the new affine (codes kept)."""
import argparse
import sys

import nibabel as nib
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--perm", default="0,1,2")
    ap.add_argument("--flip", default="0,0,0")
    a = ap.parse_args()
    perm = [int(x) for x in a.perm.split(",")]
    flip = [int(x) for x in a.flip.split(",")]
    if sorted(perm) != [0, 1, 2] or len(flip) != 3:
        sys.exit("error: --perm must be a permutation of 0,1,2 and --flip three 0/1 values")
    img = nib.load(a.inp)
    data = np.asanyarray(img.dataobj)
    aff = img.affine.copy()
    extra = list(range(3, data.ndim))
    data = np.transpose(data, perm + extra)
    new = np.eye(4)
    new[:3, 3] = aff[:3, 3]
    for n in range(3):
        col = aff[:3, perm[n]]
        if flip[n]:
            data = np.flip(data, axis=n)
            new[:3, n] = -col
            new[:3, 3] += col * (data.shape[n] - 1)
        else:
            new[:3, n] = col
    hdr = img.header.copy()
    out = nib.Nifti1Image(np.ascontiguousarray(data), new, hdr)
    qc = int(img.header["qform_code"]) or 1
    sc = int(img.header["sform_code"]) or 1
    out.set_qform(new, code=qc)
    out.set_sform(new, code=sc)
    nib.save(out, a.out)


if __name__ == "__main__":
    main()
