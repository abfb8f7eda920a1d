#!/usr/bin/python3
"""Write the seed corpus of the fuzz targets (tests/fuzz/corpus/).

Usage: /usr/bin/python3 tools/make_fuzz_corpus.py [BUILD]

nifti: small phantoms of every reader path (datatypes, scaling, sform,
4D, NIfTI-2, big-endian), one file or a comma-joined pair, .nii or
.nii.gz (first byte: the flags of tests/fuzz/fuzz_targets.h).
dataset: dataset.json variants (nnU-Net v1 and v2 forms, file endings).
onnx: the small ONNX fixtures (tests/fixtures/onnx), the external-data
one with its data file after the separator.
sslim: those ONNX fixtures converted by BUILD/bin/sauron-compress.
"""
import io
import os
import shutil
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np

SEP = b"\n--fuzz-next-file--\n"
ROOT = "tests/fuzz/corpus"
ONNX_FIXTURES = ["conv_relu", "conv_transpose", "instnorm_bn", "misc_ops",
                 "multi_output", "noop_glue", "resize_sizes", "shape_glue",
                 "softmax_flat11", "softmax_transpose", "typed_fields",
                 "upsample9", "torch_unet2d_op13", "bad_shapes", "bad_pad",
                 "bad_short_init", "external_oob", "external_dotdot"]


def nii_bytes(img):
    bio = io.BytesIO()
    fh = nib.FileHolder(fileobj=bio)
    img.to_file_map({"image": fh, "header": fh})
    return bio.getvalue()


def write(target, name, data):
    os.makedirs(f"{ROOT}/{target}", exist_ok=True)
    with open(f"{ROOT}/{target}/{name}", "wb") as f:
        f.write(data)


def nifti():
    rng = np.random.default_rng(1)
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    f32 = (rng.random((8, 6, 4)) * 100).astype(np.float32)
    i16 = nib.Nifti1Image(rng.integers(-50, 200, (7, 5, 3)).astype(np.int16),
                          aff)
    i16.header.set_slope_inter(0.5, -3)
    u8 = nib.Nifti1Image(rng.integers(0, 3, (6, 6, 2)).astype(np.uint8), aff)
    u8.set_qform(aff, code=1)
    u8.set_sform(aff, code=2)
    one = {
        "f32_3d": nib.Nifti1Image(f32, aff),
        "i16_scaled": i16,
        "u8_sform": u8,
        "f32_4d": nib.Nifti1Image(rng.random((5, 4, 3, 2)).astype(np.float32),
                                  aff),
        "nifti2_f64": nib.Nifti2Image(rng.random((4, 4, 3)), aff),
        "nifti2_i8": nib.Nifti2Image(
            rng.integers(-5, 5, (5, 3, 2)).astype(np.int8), aff),
        "u16_2d": nib.Nifti1Image(
            rng.integers(0, 1000, (9, 7, 1)).astype(np.uint16), aff),
        "f32_bigendian": nib.Nifti1Image(f32.astype(">f4"), aff),
    }
    for name, img in one.items():
        write("nifti", name + ".bin", bytes([0]) + nii_bytes(img))
    a = nii_bytes(one["f32_3d"])
    f32b = (rng.random((8, 6, 4)) * 10).astype(np.float32)
    b = nii_bytes(nib.Nifti1Image(f32b, aff))
    write("nifti", "f32_3d_gz.bin", bytes([1]) + a)
    write("nifti", "pair_nii.bin", bytes([4]) + a + SEP + b)
    write("nifti", "pair_gz_nii.bin", bytes([5]) + a + SEP + b)
    write("nifti", "pair_gz_gz.bin", bytes([7]) + a + SEP +
          nii_bytes(nib.Nifti1Image(f32b.astype(np.int16), aff)))
    write("nifti", "pair_same.bin", bytes([6]) + nii_bytes(i16))


def dataset():
    seeds = {
        "v2.json": '{"channel_names": {"0": "T1", "1": "T2"}, '
                   '"labels": {"background": 0, "brain": 1}, '
                   '"numTraining": 1, "file_ending": ".nii.gz"}',
        "v2_nii.json": '{"channel_names": {"0": "CT"}, "labels": '
                       '{"background": 0, "a": 1, "b": 2}, '
                       '"file_ending": ".nii"}',
        "v1.json": '{"modality": {"0": "MRI"}, "labels": {"0": "background",'
                   ' "1": "tumour"}, "numTraining": 1}',
        "escapes.json": '{"channel_names": {"0": "T\\u00e9\\ud83d\\ude00\\n"},'
                        ' "labels": {"background": 0, "x\\"y": 1.0e0},'
                        ' "extra": [null, true, false, -0.5e-3, {}, []]}',
        "region.json": '{"channel_names": {"0": "T1"}, "labels": '
                       '{"background": 0, "whole": [1, 2], "ignore": 3}}',
    }
    for name, text in seeds.items():
        write("dataset", name, text.encode())


def onnx():
    for f in ONNX_FIXTURES:
        with open(f"tests/fixtures/onnx/{f}.onnx", "rb") as fh:
            write("onnx", f + ".onnx", fh.read())
    with open("tests/fixtures/onnx/external.onnx", "rb") as fh:
        model = fh.read()
    with open("tests/fixtures/onnx/external.bin", "rb") as fh:
        ext = fh.read()
    write("onnx", "external.onnx", model + SEP + ext)


def sslim(build):
    tool = f"{build}/bin/sauron-compress"
    tmp = tempfile.mkdtemp()
    try:
        for f in ["conv_relu", "misc_ops", "multi_output", "conv_transpose",
                  "instnorm_bn", "torch_unet2d_op13", "resize_sizes"]:
            out = f"{tmp}/{f}.sslim"
            r = subprocess.run([tool, "--no-finetune",
                                f"tests/fixtures/onnx/{f}.onnx", out],
                               capture_output=True, text=True)
            if r.returncode:
                print(f"skip {f}: {r.stderr.strip()}", file=sys.stderr)
                continue
            with open(out, "rb") as fh:
                write("sslim", f + ".sslim", fh.read())
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    nifti()
    dataset()
    onnx()
    sslim(sys.argv[1] if len(sys.argv) > 1 else "build")
