#!/usr/bin/python3
"""Make the PyTorch reference fixtures used by tests/test_torch.c and
tests/test_cli.c.  Run with Debian's /usr/bin/python3 (python3-torch,
python3-onnx, python3-nibabel):

    /usr/bin/python3 tools/make_fixtures.py tests/fixtures

Writes into <dir>/torch/:
  <name>.onnx              the model, exported by torch.onnx in eval mode
  <name>.in.f32            the input tensor            (SLTENSOR, see below)
  <name>.out.f32           PyTorch's first output
  <name>.out<k>.f32        further outputs (deep supervision), k = 1, 2, ...
  <name>.json              {"params": ..., "opset": ..., "outputs": ...}
  e2e_scan.nii.gz          a small int16 scan with scl_slope/scl_inter and an
                           oblique affine, for the end-to-end test
  e2e_prob.f32             PyTorch probabilities for that scan, slice by
                           slice along k, tensor [K, classes, J, I]
  e2e3d_scan.nii.gz        a float32 16^3 scan (the nnunet3d patch size, so
                           one window covers it) and e2e3d_prob.f32, the
                           nnunet3d probabilities for it, [classes, K, J, I]
  e2e2mod_mod0.nii.gz, e2e2mod_mod1.nii.gz, e2e2mod_prob.f32
                           two modalities of one 32^2 x 3 case (float32,
                           different intensity ranges) and the nnunet2d_2mod
                           probabilities, slices along k, [K, classes, J, I]

SLTENSOR files: see tools/sltensor.py (tests/testutil.h load_tensor).

Every fixture is seeded on its own, so adding one does not change the
others.  Sizes are tiny so the committed folder stays well under 2 MB.
"""

import json
import os
import struct
import sys
import gzip

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unets  # noqa: E402
from sltensor import write_tensor  # noqa: E402


# name: (builder, input shape, opset, export options)
FIXTURES = {
    "nnunet2d_op11": (lambda: unets.NnUNet(2, 1, 3, 3, 4, 16), (1, 1, 32, 32), 11, {}),
    "nnunet2d_op13": (lambda: unets.NnUNet(2, 1, 3, 3, 4, 16), (1, 1, 32, 32), 13, {}),
    "nnunet2d_op17": (lambda: unets.NnUNet(2, 1, 3, 3, 4, 16), (1, 1, 32, 32), 17, {}),
    "nnunet2d_2mod": (lambda: unets.NnUNet(2, 2, 3, 3, 4, 16), (1, 2, 32, 32), 13, {}),
    "nnunet3d": (lambda: unets.NnUNet(3, 1, 2, 3, 4, 16), (1, 1, 16, 16, 16), 13, {}),
    "classic2d": (lambda: unets.ClassicUNet(2, 1, 2, 3, 4, 16), (1, 1, 32, 32), 13, {}),
    "classic2d_bn": (lambda: unets.ClassicUNet(2, 1, 2, 3, 4, 16), (1, 1, 32, 32), 15,
                     {"preserve": True}),
    "resize2d": (lambda: unets.ResizeUNet(2, 1, 3, 3, 4, 16, ("bilinear", "nearest")),
                 (1, 1, 32, 32), 13, {}),
    "resize2d_size": (lambda: unets.ResizeUNet(2, 1, 3, 3, 4, 16,
                                               ("bilinear-size", "nearest-size")),
                      (1, 1, 24, 32), 11, {}),
    "resize3d": (lambda: unets.ResizeUNet(3, 1, 2, 2, 4, 8, ("bilinear",)),
                 (1, 1, 8, 12, 8), 17, {}),
    "deepsup2d": (lambda: unets.NnUNet(2, 1, 3, 4, 4, 16, deep_supervision=2),
                  (1, 1, 32, 32), 13, {}),
    "e2e2d": (lambda: unets.NnUNet(2, 1, 2, 3, 4, 16), (1, 1, 32, 32), 13,
              {"dynamic": True}),
}


def make_fixture(out, name, seed):
    build, shape, opset, opts = FIXTURES[name]
    model, gen = unets.seeded_model(build, seed)
    x = torch.randn(shape, generator=gen)
    with torch.no_grad():
        y = model(x)
    ys = list(y) if isinstance(y, tuple) else [y]
    base = os.path.join(out, name)
    unets.export_onnx(model, x, base + ".onnx", opset, len(ys), **opts)
    write_tensor(base + ".in.f32", x.numpy())
    for k, t in enumerate(ys):
        write_tensor(base + (".out.f32" if k == 0 else ".out%d.f32" % k), t.numpy())
    meta = {"params": unets.count_params(model), "opset": opset,
            "outputs": len(ys), "input": list(shape)}
    with open(base + ".json", "w") as f:
        json.dump(meta, f)
        f.write("\n")
    return model


def zscore(v):
    # nnU-Net: per case, population std, statistics in double
    v = v.astype(np.float64)
    return ((v - v.mean()) / max(v.std(), 1e-8)).astype(np.float32)


def make_e2e_scan(out, model):
    """A 32 x 24 x 5 (i, j, k) int16 scan with scl_slope/scl_inter, oblique
    qform/sform, and PyTorch's probabilities for it, slice by slice along k
    in nnU-Net order (a slice is [j, i]).  The slice size differs from the
    export size so the test also covers a dynamic-shape model."""
    import nibabel as nib
    ni, nj, nk = 32, 24, 5
    rng = np.random.default_rng(7)
    ii, jj, kk = np.meshgrid(np.arange(ni), np.arange(nj), np.arange(nk),
                             indexing="ij")
    blob = 400.0 * np.exp(-((ii - 18) ** 2 + (jj - 10) ** 2) / 40.0 - (kk - 2) ** 2 / 4.0)
    raw = np.round(100 + blob + 30 * rng.standard_normal((ni, nj, nk))).astype(np.int16)
    slope, inter = 0.5, -20.0
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[0.8 * c, -0.9 * s, 0, -12.5],
                       [0.8 * s, 0.9 * c, 0, 30.25],
                       [0, 0, 3.0, -7.0],
                       [0, 0, 0, 1]])
    img = nib.Nifti1Image(raw, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    img.header.set_data_dtype(np.int16)
    tmp = os.path.join(out, "e2e_scan.nii")
    nib.save(img, tmp)
    # nibabel rescales on save; write the int16 data and scaling ourselves so
    # the file holds exactly raw with slope/inter (header bytes 112 and 116)
    with open(tmp, "rb") as f:
        b = bytearray(f.read())
    vox = int(struct.unpack_from("<f", b, 108)[0])
    b[112:120] = struct.pack("<ff", slope, inter)
    b[vox:] = raw.tobytes(order="F")
    with open(tmp, "wb") as f:
        f.write(bytes(b))
    with open(tmp, "rb") as f, gzip.GzipFile(tmp + ".gz", "wb", mtime=0) as g:
        g.write(f.read())
    os.remove(tmp)
    vol = nib.load(tmp + ".gz").get_fdata(dtype=np.float64)
    assert np.array_equal(vol, raw * slope + inter), "scaling not as written"
    x = zscore(vol)
    slices = np.stack([x[:, :, k].T for k in range(nk)])[:, None]  # [K,1,J,I]
    with torch.no_grad():
        prob = model(torch.from_numpy(slices)).numpy()
    write_tensor(os.path.join(out, "e2e_prob.f32"), prob)
    margin = np.abs(prob[:, 1] - prob[:, 0])
    labels = prob.argmax(1)
    print("e2e: %d voxels, label counts %s, %d with margin < 1e-3"
          % (labels.size, np.bincount(labels.ravel(), minlength=2).tolist(),
             int((margin < 1e-3).sum())))


def make_e2e3d_scan(out, model):
    """A 16^3 float32 scan, exactly one patch of nnunet3d: the sliding
    window then reduces to one network run whatever its overlap and
    weighting, so PyTorch's output on the whole normalised volume is the
    reference.  Tensor order [k, j, i] (nnU-Net)."""
    import nibabel as nib
    n = 16
    rng = np.random.default_rng(11)
    ii, jj, kk = np.meshgrid(np.arange(n), np.arange(n), np.arange(n),
                             indexing="ij")
    vol = (50.0 * np.exp(-((ii - 5) ** 2 + (jj - 9) ** 2 + (kk - 11) ** 2) / 20.0)
           + 0.02 * ii * jj + 5 * rng.standard_normal((n, n, n))).astype(np.float32)
    affine = np.array([[-1.2, 0, 0, 20.0],
                       [0, 1.1, 0.1, -14.0],
                       [0, 0, 1.5, 3.0],
                       [0, 0, 0, 1]])
    img = nib.Nifti1Image(vol, affine)
    img.set_qform(affine, code=1)
    img.set_sform(None, code=0)
    path = os.path.join(out, "e2e3d_scan.nii.gz")
    nib.save(img, path)
    x = zscore(nib.load(path).get_fdata(dtype=np.float64))
    t = np.ascontiguousarray(x.transpose(2, 1, 0))[None, None]  # [1,1,K,J,I]
    with torch.no_grad():
        prob = model(torch.from_numpy(t)).numpy()[0]
    write_tensor(os.path.join(out, "e2e3d_prob.f32"), prob)


def make_e2e2mod_scans(out, model):
    """Two modalities on one grid, very different intensity ranges, so a
    runtime that normalises them jointly or swaps them fails."""
    import nibabel as nib
    ni, nj, nk = 32, 32, 3
    rng = np.random.default_rng(23)
    ii, jj, kk = np.meshgrid(np.arange(ni), np.arange(nj), np.arange(nk),
                             indexing="ij")
    m0 = 1000.0 + 300.0 * np.exp(-((ii - 12) ** 2 + (jj - 20) ** 2) / 50.0) \
        + 40 * rng.standard_normal((ni, nj, nk))
    m1 = 2.0 * np.sin(ii / 5.0) + 0.1 * kk + 0.5 * rng.standard_normal((ni, nj, nk))
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    norm = []
    for idx, m in enumerate((m0, m1)):
        img = nib.Nifti1Image(m.astype(np.float32), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        path = os.path.join(out, "e2e2mod_mod%d.nii.gz" % idx)
        nib.save(img, path)
        norm.append(zscore(nib.load(path).get_fdata(dtype=np.float64)))
    # [K, 2, J, I]: slice k of modality c is norm[c][:, :, k].T
    x = np.stack([np.stack([n[:, :, k].T for n in norm]) for k in range(nk)])
    with torch.no_grad():
        prob = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    write_tensor(os.path.join(out, "e2e2mod_prob.f32"), prob)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    out = os.path.join(top, "torch")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    models = {}
    for seed, name in enumerate(FIXTURES):
        models[name] = make_fixture(out, name, 1000 + 10 * seed)
        print("fixture", name)
    make_e2e_scan(out, models["e2e2d"])
    make_e2e3d_scan(out, models["nnunet3d"])
    make_e2e2mod_scans(out, models["nnunet2d_2mod"])
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print("total %.0f kB in %s" % (total / 1024, out))


if __name__ == "__main__":
    main()
