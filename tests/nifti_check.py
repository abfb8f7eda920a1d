#!/usr/bin/python3
"""Independent NIfTI geometry check with nibabel (run by test_segment_cli).

usage: nifti_check.py INPUT OUTPUT [--labels N]

Exit 0 if OUTPUT has INPUT's grid and geometry: spatial shape, voxel
sizes, qform and sform codes and matrices, xyzt units; with --labels N
also that OUTPUT holds integers in 0..N-1.  Otherwise print what differs
(one line each) and exit 1.  Exit 2 on usage errors.
"""
import sys

import numpy as np
import nibabel as nib


def main(argv):
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--labels"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    a, b = nib.load(argv[1]), nib.load(argv[2])
    ha, hb = a.header, b.header
    bad = []
    if a.shape[:3] != b.shape[:3]:
        bad.append(f"shape {a.shape[:3]} != {b.shape[:3]}")
    if not np.allclose(ha.get_zooms()[:3], hb.get_zooms()[:3], rtol=0,
                       atol=1e-6):
        bad.append(f"zooms {ha.get_zooms()[:3]} != {hb.get_zooms()[:3]}")
    for name in ("qform", "sform"):
        ma, ca = getattr(ha, "get_" + name)(coded=True)
        mb, cb = getattr(hb, "get_" + name)(coded=True)
        if int(ca) != int(cb):
            bad.append(f"{name} code {int(ca)} != {int(cb)}")
        elif ma is not None and not np.allclose(ma, mb, rtol=0, atol=1e-5):
            bad.append(f"{name} matrix differs:\n{ma}\n{mb}")
    if ha.get_xyzt_units() != hb.get_xyzt_units():
        bad.append(f"units {ha.get_xyzt_units()} != {hb.get_xyzt_units()}")
    if len(argv) == 5:
        n = int(argv[4])
        d = np.asanyarray(b.dataobj)
        if not np.issubdtype(d.dtype, np.integer):
            bad.append(f"labels stored as {d.dtype}, not an integer type")
        elif d.size and (d.min() < 0 or d.max() >= n):
            bad.append(f"labels outside 0..{n - 1}: {d.min()}..{d.max()}")
    for line in bad:
        print(f"{argv[2]}: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
