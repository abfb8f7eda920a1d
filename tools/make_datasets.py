#!/usr/bin/python3
"""Build two small real-MRI datasets in nnU-Net raw layout from one subject.

    /usr/bin/python3 tools/make_datasets.py OUTDIR [--quick]

Source: Debian's mricron-data templates (Colin27 "ch2" T1 with skull, its
skull-stripped "ch2bet", and the AAL atlas, all on the same 181x217x181 1 mm
grid).  Every case is a random variation of that ONE subject (smooth
deformation, bias field, gamma contrast change, Rician noise), so the
datasets are good for checking that a pipeline learns and runs on real MRI
anatomy and geometry, not for claiming anything about generalisation.

Outputs (OUTDIR/):
  Dataset001_BrainExtraction: T1 with skull -> brain mask (2 classes)
  Dataset002_Anatomy:         T1 with skull -> 5 classes grouped from AAL
Both share the same images (hard-linked when the file system allows).
Train and test cases come from disjoint seeds.  The output is byte-identical
on every run (numpy PCG64 streams, single-threaded torch, gzip mtime 0).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import nibabel as nib
import torch

TEMPLATES = "/usr/share/mricron/templates"
N_TRAIN, N_TEST = 20, 5
N_TRAIN_QUICK, N_TEST_QUICK = 4, 2
TRAIN_SEED0, TEST_SEED0 = 1000, 9000  # disjoint seed ranges
# Images are stored as int16: T1 (0..254) is scaled by this so that noise
# and bias have sub-level resolution, like a scanner's 12-bit output.
OUT_SCALE = 4.0

# AAL (aal.nii.txt, 116 regions) grouped into four lobes/structures.  AAL
# labels grey matter only: white matter and CSF stay background.
ANATOMY_GROUPS = [
    ("frontal", "Precentral, Frontal_*, Rolandic_Oper, Supp_Motor_Area, "
     "Olfactory, Rectus, Insula, Cingulum_Ant, Cingulum_Mid",
     list(range(1, 35))),
    ("parietal_occipital", "Cingulum_Post, Calcarine, Cuneus, Lingual, "
     "Occipital_*, Postcentral, Parietal_*, SupraMarginal, Angular, "
     "Precuneus, Paracentral_Lobule",
     [35, 36] + list(range(43, 55)) + list(range(57, 71))),
    ("temporal", "Hippocampus, ParaHippocampal, Amygdala, Fusiform, Heschl, "
     "Temporal_*", list(range(37, 43)) + [55, 56] + list(range(79, 91))),
    ("subcortical_cerebellum", "Caudate, Putamen, Pallidum, Thalamus, "
     "Cerebelum_*, Vermis_*", list(range(71, 79)) + list(range(91, 117))),
]

DESCRIPTION = ("Synthetic variations of ONE subject (Colin27 'ch2' T1 from "
               "Debian mricron-data): random smooth deformation, bias field, "
               "gamma contrast and Rician noise. Not independent subjects; "
               "for software testing and benchmarks only, not for clinical "
               "or scientific conclusions.")


def load(name):
    img = nib.load(os.path.join(TEMPLATES, name))
    return img, np.asarray(img.dataobj)


def check_same_grid(ref, other, name):
    if ref.shape != other.shape or not np.allclose(ref.affine, other.affine):
        sys.exit(f"error: {name} grid {other.shape} does not match ch2 "
                 f"{ref.shape}; reinstall mricron-data")


def largest_component(mask):
    """Largest 6-connected component (drops the ~100 specks BET left)."""
    try:
        import scipy.ndimage as ndi
    except ImportError:
        sys.exit("error: scipy is missing; install Debian's python3-scipy")
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def group_aal(aal):
    lut = np.zeros(256, np.uint8)
    for cls, (_, _, ids) in enumerate(ANATOMY_GROUPS, start=1):
        lut[ids] = cls
    return lut[aal]


def smooth_field(rng, shape, n_ctrl, amp):
    """Low-frequency random field: n_ctrl^3 Gaussian control values spread
    by separable Gaussian radial basis weights (C-infinity smooth, cheap:
    three small matrix products instead of a full-volume filter)."""
    ctrl = rng.standard_normal((n_ctrl,) * 3) * amp
    mats = []
    for n in shape:
        x = np.linspace(0.0, n_ctrl - 1.0, n)[:, None]
        c = np.arange(n_ctrl)[None, :]
        w = np.exp(-0.5 * ((x - c) / 0.8) ** 2)
        mats.append(w / w.sum(axis=1, keepdims=True))
    f = np.einsum("ia,abc->ibc", mats[0], ctrl)
    f = np.einsum("jb,ibc->ijc", mats[1], f)
    return np.einsum("kc,ijc->ijk", mats[2], f)


def random_case(rng, shape):
    """Sampling coordinates (voxel units, [3, i, j, k]) of one variation:
    a small random affine about the centre plus a smooth displacement."""
    ang = np.deg2rad(rng.uniform(-6, 6, 3))
    scale = rng.uniform(0.93, 1.07, 3)
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    a = rz @ ry @ rx @ np.diag(scale)
    shift = rng.uniform(-4, 4, 3)
    centre = (np.array(shape) - 1) / 2.0
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape],
                        indexing="ij")
    coords = []
    for d in range(3):
        c = centre[d] + shift[d]
        for e in range(3):
            c = c + a[d, e] * (grids[e] - centre[e])
        # 3 mm typical amplitude: visibly different folds, same anatomy
        c = c + smooth_field(rng, shape, 6, 3.0)
        coords.append(c.astype(np.float32))
    return np.stack(coords)


def warp(vol, coords, mode):
    """Resample vol [i, j, k] at coords [3, i, j, k] (voxel units);
    outside the volume reads 0."""
    shape = vol.shape
    # grid_sample wants (x, y, z) = (k, j, i) order normalised to [-1, 1]
    norm = [coords[d] * (2.0 / (shape[d] - 1)) - 1.0 for d in range(3)]
    grid = torch.from_numpy(np.stack(norm[::-1], axis=-1))[None]
    src = torch.from_numpy(np.ascontiguousarray(vol, np.float32))[None, None]
    out = torch.nn.functional.grid_sample(src, grid, mode=mode,
                                          padding_mode="zeros",
                                          align_corners=True)
    return out[0, 0].numpy()


def make_image(rng, t1, coords):
    img = warp(t1, coords, "bilinear") / 255.0
    gamma = rng.uniform(0.75, 1.4)
    img = np.clip(img, 0.0, None) ** gamma
    img = img * np.exp(smooth_field(rng, img.shape, 4, 0.15))
    sigma = rng.uniform(0.01, 0.035)
    n1 = rng.standard_normal(img.shape) * sigma
    n2 = rng.standard_normal(img.shape) * sigma
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
    return np.clip(np.rint(img * 255.0 * OUT_SCALE), 0, 32767).astype(np.int16)


def save(arr, ref, path):
    hdr = ref.header.copy()
    hdr.set_data_dtype(arr.dtype)
    img = nib.Nifti1Image(arr, None, hdr)
    # keep the source geometry exactly (codes and matrices)
    img.set_qform(ref.header.get_qform(), int(ref.header["qform_code"]))
    img.set_sform(ref.header.get_sform(), int(ref.header["sform_code"]))
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    img.header["descrip"] = b"sauron make_datasets.py (Colin27 variant)"
    nib.save(img, path)


def link_or_copy(src, dst):
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())


def write_json(path, name, labels, n_train, n_test):
    d = {
        "name": name,
        "description": DESCRIPTION,
        "reference": "Colin27 (Holmes et al. 1998) via Debian mricron-data; "
                     "AAL (Tzourio-Mazoyer et al. 2002)",
        "channel_names": {"0": "T1"},
        "labels": labels,
        "numTraining": n_train,
        "numTest": n_test,
        "file_ending": ".nii.gz",
    }
    if name.endswith("Anatomy"):
        d["label_groups_from_aal"] = {g[0]: g[1] for g in ANATOMY_GROUPS}
    with open(path, "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--quick", action="store_true",
                    help=f"{N_TRAIN_QUICK} train + {N_TEST_QUICK} test cases")
    args = ap.parse_args()
    torch.set_num_threads(1)  # determinism and a shared machine
    t0 = time.time()

    t1_img, t1 = load("ch2.nii.gz")
    bet_img, bet = load("ch2bet.nii.gz")
    aal_img, aal = load("aal.nii.gz")
    check_same_grid(t1_img, bet_img, "ch2bet.nii.gz")
    check_same_grid(t1_img, aal_img, "aal.nii.gz")
    brain = largest_component(bet > 0).astype(np.float32)
    anat = group_aal(aal).astype(np.float32)
    t1 = t1.astype(np.float32)

    n_train, n_test = ((N_TRAIN_QUICK, N_TEST_QUICK) if args.quick
                       else (N_TRAIN, N_TEST))
    ds1 = os.path.join(args.outdir, "Dataset001_BrainExtraction")
    ds2 = os.path.join(args.outdir, "Dataset002_Anatomy")
    for ds in (ds1, ds2):
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.makedirs(os.path.join(ds, sub), exist_ok=True)

    cases = ([("Tr", f"colin_{i:03d}", TRAIN_SEED0 + i) for i in range(n_train)]
             + [("Ts", f"colin_{100 + i:03d}", TEST_SEED0 + i)
                for i in range(n_test)])
    for split, case, seed in cases:
        rng = np.random.default_rng(seed)
        coords = random_case(rng, t1.shape)
        image = make_image(rng, t1, coords)
        # nearest on the label maps keeps them integer and consistent
        mask = warp(brain, coords, "nearest").astype(np.uint8)
        lab = warp(anat, coords, "nearest").astype(np.uint8)
        img1 = os.path.join(ds1, "images" + split, case + "_0000.nii.gz")
        save(image, t1_img, img1)
        link_or_copy(img1, os.path.join(ds2, "images" + split,
                                        case + "_0000.nii.gz"))
        save(mask, t1_img, os.path.join(ds1, "labels" + split,
                                        case + ".nii.gz"))
        save(lab, t1_img, os.path.join(ds2, "labels" + split,
                                       case + ".nii.gz"))
        print(f"{split} {case} seed {seed}  {time.time() - t0:.1f} s",
              file=sys.stderr)

    write_json(os.path.join(ds1, "dataset.json"), "Dataset001_BrainExtraction",
               {"background": 0, "brain": 1}, n_train, n_test)
    labels = {"background": 0}
    for cls, g in enumerate(ANATOMY_GROUPS, start=1):
        labels[g[0]] = cls
    write_json(os.path.join(ds2, "dataset.json"), "Dataset002_Anatomy",
               labels, n_train, n_test)
    print(f"done: {len(cases)} cases in {time.time() - t0:.1f} s -> "
          f"{args.outdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
