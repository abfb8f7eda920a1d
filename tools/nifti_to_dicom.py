#!/usr/bin/python3
"""Write a 3D integer NIfTI scan as a DICOM MR series (one file per slice),
the way a scanner would hand it over, to test the DICOM route
(dcm2niix -> segment) end to end.

Usage: /usr/bin/python3 tools/nifti_to_dicom.py scan.nii[.gz] OUT_DIR

Needs Debian's python3-pydicom, python3-nibabel and python3-numpy.  Slices
run along the NIfTI k axis.  DICOM rows run opposite to NIfTI j (row 0
holds j = ny-1): dcm2niix stores rows bottom-up, flipping them, so its
NIfTI has the original voxel order as well as the original world
positions.  Geometry comes from the sform (or qform) through nibabel's
affine; RAS becomes DICOM's LPS.  Voxel values are the stored integers,
scl_slope/scl_inter become RescaleSlope/RescaleIntercept, so the scaled
values are unchanged.  UIDs derive from the input file's name and size:
the same input gives the same series.
"""
import os
import sys

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def fail(msg):
    print("error: " + msg, file=sys.stderr)
    sys.exit(1)


def ds(x):
    """A decimal string DICOM accepts (at most 16 characters)."""
    s = "%.10g" % x
    return s if len(s) <= 16 else "%.8g" % x


def main():
    if len(sys.argv) != 3:
        fail("usage: nifti_to_dicom.py scan.nii[.gz] OUT_DIR")
    src, out = sys.argv[1], sys.argv[2]
    try:
        img = nib.load(src)
    except Exception as e:  # nibabel raises many kinds on a bad file
        fail("cannot read '%s': %s" % (src, e))
    if len(img.shape) != 3:
        fail("'%s' is %dD; give a 3D scan" % (src, len(img.shape)))
    raw = np.asanyarray(img.dataobj.get_unscaled())
    if raw.dtype.kind not in "iu" or raw.dtype.itemsize > 2:
        fail("'%s' holds %s voxels; give an 8- or 16-bit integer scan"
             % (src, raw.dtype))
    signed = raw.dtype.kind == "i"
    slope, inter = img.dataobj.slope, img.dataobj.inter
    a = img.affine
    lps = np.diag([-1.0, -1.0, 1.0])
    nx, ny, nz = img.shape
    col = lps @ a[:3, 0]
    row = lps @ a[:3, 1]
    dx, dy = np.linalg.norm(col), np.linalg.norm(row)
    dz = np.linalg.norm(a[:3, 2])
    x_dir = col / dx
    y_dir = -row / dy  # DICOM row index r holds j = ny-1-r
    os.makedirs(out, exist_ok=True)
    seed = [os.path.basename(src), str(os.path.getsize(src))]
    study = generate_uid(entropy_srcs=seed + ["study"])
    series = generate_uid(entropy_srcs=seed + ["series"])
    frame = generate_uid(entropy_srcs=seed + ["frame"])
    dtype = np.int16 if signed else np.uint16
    for k in range(nz):
        pos = lps @ (a[:3, :3] @ np.array([0.0, ny - 1.0, k]) + a[:3, 3])
        pix = np.ascontiguousarray(raw[:, ::-1, k].T.astype(dtype))
        sop = generate_uid(entropy_srcs=seed + ["slice", str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = os.path.join(out, "slice%04d.dcm" % k)
        d = FileDataset(path, Dataset(), file_meta=meta, preamble=b"\0" * 128)
        d.is_little_endian = True
        d.is_implicit_VR = False
        d.SOPClassUID = MRImageStorage
        d.SOPInstanceUID = sop
        d.StudyInstanceUID = study
        d.SeriesInstanceUID = series
        d.FrameOfReferenceUID = frame
        d.Modality = "MR"
        d.PatientName = "Phantom^Test"
        d.PatientID = "PHANTOM"
        d.StudyID = "1"
        d.SeriesNumber = 1
        d.AcquisitionNumber = 1
        d.InstanceNumber = k + 1
        d.SeriesDescription = "T1 from NIfTI"
        d.ProtocolName = "T1"
        d.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        d.ImagePositionPatient = [ds(v) for v in pos]
        d.ImageOrientationPatient = [ds(v) for v in np.concatenate(
            [x_dir, y_dir])]
        d.PixelSpacing = [ds(dy), ds(dx)]  # row spacing, column spacing
        d.SliceThickness = ds(dz)
        d.SpacingBetweenSlices = ds(dz)
        d.Rows, d.Columns = ny, nx
        d.SamplesPerPixel = 1
        d.PhotometricInterpretation = "MONOCHROME2"
        d.BitsAllocated = 16
        d.BitsStored = 16
        d.HighBit = 15
        d.PixelRepresentation = 1 if signed else 0
        d.RescaleSlope = ds(1.0 if slope is None or np.isnan(slope)
                            else slope)
        d.RescaleIntercept = ds(0.0 if inter is None or np.isnan(inter)
                                else inter)
        d.PixelData = pix.tobytes()
        d.save_as(path, write_like_original=False)
    print("%s -> %s (%d slices)" % (src, out, nz))


if __name__ == "__main__":
    main()
