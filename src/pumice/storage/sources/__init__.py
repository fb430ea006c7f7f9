"""Readers for what users bring: image stacks, TIFF, HDF5, Zarr, N5, NumPy, Precomputed.

``open_source(path, dataset, axes)`` looks at the path and picks the reader; every reader returns
X, Y, Z, channel arrays for any box, so ingest never cares where the data came from.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from ...errors import SourceError
from .. import urls
from .base import AXES_CHOICES, Source

ARRAY_CONTAINER = re.compile(r"^(?P<file>.+?\.(?:h5|hdf5|hdf|he5|zarr|n5))(?::/?(?P<dataset>.*))?$", re.IGNORECASE)


def split_dataset(path: str) -> tuple[str, str | None]:
    """``file.h5:/raw`` -> (``file.h5``, ``raw``)."""
    match = ARRAY_CONTAINER.match(path)
    if match and match.group("dataset") is not None:
        return match.group("file"), match.group("dataset") or None
    return path, None


def open_source(path: str, dataset: str | None = None, axes: str | None = None, *, pad: bool = False) -> Source:
    """Open whatever ``path`` names; a SourceError says what is wrong with it. ``pad``: a folder (or
    glob) of sections of different sizes is read as the largest, each section centred in it.

    Opened sources are cached per process (tasks of one job reopen the same source many times),
    keyed by the path's modification time so that a long-lived worker sees a changed source.
    """
    local, _ = split_dataset(str(path))
    try:
        stamp = os.stat(urls.local_path(local) if local.startswith("file://") else local).st_mtime_ns
    except (OSError, ValueError):
        stamp = None
    return _open_source(str(path), dataset, axes, stamp, pad)


@lru_cache(maxsize=16)
def _open_source(path: str, dataset: str | None, axes: str | None, stamp: int | None, pad: bool = False) -> Source:
    from .arrays import open_chunked, open_hdf5, open_npy
    from .images import ImageStack, TiffVolume, IMAGE_SUFFIXES
    from .precomputed import PrecomputedSource

    if axes is not None and axes not in AXES_CHOICES:
        raise SourceError(f"--axes must be one of {', '.join(AXES_CHOICES)}, got {axes!r}")
    path, inline = split_dataset(str(path))
    dataset = dataset or inline
    if "://" in path and not path.startswith("file://"):
        return PrecomputedSource(path)
    if path.startswith("file://") or path.startswith("precomputed://"):
        local = urls.local_path(path)
        if local is not None and (local / "info").is_file():
            return PrecomputedSource(path)
        path = str(local)
    if any(ch in path for ch in "*?["):
        return ImageStack(path, pad=pad)
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"no such file or folder: {path}")
    if p.is_dir():
        if (p / "info").is_file():
            return PrecomputedSource(str(p))
        markers = (".zarray", "zarr.json", "attributes.json", ".zgroup")
        if any((p / m).is_file() for m in markers) or p.suffix.lower() in (".zarr", ".n5"):
            return open_chunked(str(p), dataset, axes)
        return ImageStack(str(p), pad=pad)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return open_npy(str(p), axes)
    if suffix in (".h5", ".hdf5", ".hdf", ".he5"):
        return open_hdf5(str(p), dataset, axes)
    if suffix in (".tif", ".tiff"):
        return TiffVolume(str(p))
    if suffix in IMAGE_SUFFIXES:
        return ImageStack(str(p))  # a single section: a glob that matches one file
    raise SourceError(
        f"do not know how to read {path}; Pumice ingests folders or globs of 2D images, TIFF, HDF5 (.h5), Zarr, N5, .npy and Precomputed layers"
    )


__all__ = ["Source", "open_source", "split_dataset"]
