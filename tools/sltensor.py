"""SLTENSOR writer shared by the fixture makers (tools/make_*fixtures.py).

Format: "SLTENSOR", u32 version 1, u32 ndim, ndim x i64 dims, float32
data, all little-endian; read by load_tensor in tests/testutil.h.
Only numpy is needed, so scripts without torch can use it too.
"""

import struct

import numpy as np


def write_tensor(path, arr):
    """Write arr (anything numpy turns into an array) as float32."""
    arr = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
    with open(path, "wb") as f:
        f.write(b"SLTENSOR")
        f.write(struct.pack("<II", 1, arr.ndim))
        for d in arr.shape:
            f.write(struct.pack("<q", d))
        f.write(arr.tobytes())
