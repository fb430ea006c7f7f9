"""Work files: named arrays in one blob (a JSON header of names, dtypes and shapes, then the bytes).

Operations leave many small intermediate files between stages (ccl, label-index, edges, align);
NumPy's .npz (a zip) cost more than their data.
"""

from __future__ import annotations

import json

import numpy as np


def pack(**arrays: np.ndarray) -> bytes:
    """Named arrays as one blob: a JSON header (names, dtypes, shapes), then their bytes. Work files
    are many and small; NumPy's .npz (a zip) cost more than the data."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    header = json.dumps([[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()]).encode()
    return b"".join([len(header).to_bytes(4, "little"), header, *(v.tobytes() for v in arrays.values())])


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    size = int.from_bytes(blob[:4], "little")
    out, at = {}, 4 + size
    for name, dtype, shape in json.loads(blob[4:at]):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        out[name] = np.frombuffer(blob, dtype, count, at).reshape(shape)
        at += count * dtype.itemsize
    return out
