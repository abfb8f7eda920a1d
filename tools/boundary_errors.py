#!/usr/bin/python3
"""Where a binary segmentation is wrong: false positives and false
negatives counted by their distance (in voxels) from the reference mask.

    /usr/bin/python3 tools/boundary_errors.py LABELS_DIR PRED_DIR [PRED_DIR ...]

LABELS_DIR holds the reference label maps (e.g. a dataset's labelsTs/),
each PRED_DIR predictions of the same names (e.g. the WORK_DIR of
tools/heldout_dice.sh).  Foreground is every label > 0.  A false positive
at distance 1 touches the reference mask: a boundary one voxel too wide.
Prints one line per PRED_DIR: the counts summed over its cases, by
distance <= 1, (1, 2], (2, 3], (3, 5], (5, 10] and > 10 voxels.
"""
import glob
import os
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

BINS = [(0, 1), (1, 2), (2, 3), (3, 5), (5, 10), (10, np.inf)]


def counts(d):
    return [int(((d > lo) & (d <= hi)).sum()) for lo, hi in BINS]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    labels = sys.argv[1]
    for pd in sys.argv[2:]:
        fp = np.zeros(len(BINS), np.int64)
        fn = np.zeros(len(BINS), np.int64)
        n = 0
        for ref in sorted(glob.glob(os.path.join(labels, "*.nii*"))):
            pred = os.path.join(pd, os.path.basename(ref))
            if not os.path.exists(pred):
                sys.exit("error: boundary_errors: no prediction '%s' for '%s'"
                         % (pred, ref))
            g = np.asarray(nib.load(ref).dataobj) > 0
            p = np.asarray(nib.load(pred).dataobj) > 0
            if p.shape != g.shape:
                sys.exit("error: boundary_errors: '%s' is %s, its reference %s"
                         % (pred, p.shape, g.shape))
            # distance of each outside voxel to the mask, of each inside
            # voxel to the outside (1 = adjacent)
            fp += counts(ndimage.distance_transform_edt(~g)[p & ~g])
            fn += counts(ndimage.distance_transform_edt(g)[~p & g])
            n += 1
        if n == 0:
            sys.exit("error: boundary_errors: no .nii/.nii.gz in '%s'" % labels)
        print("%s (%d cases): FP at <=1, <=2, <=3, <=5, <=10, >10 voxels: %s; "
              "FN: %s" % (pd, n, " ".join(map(str, fp)),
                          " ".join(map(str, fn))))


if __name__ == "__main__":
    main()
