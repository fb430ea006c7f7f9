"""2D image stacks (PNG, TIFF, JPEG; a folder or a glob) and multipage / 3D TIFF files."""

from __future__ import annotations

import glob as globmod
import logging
import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ...errors import SourceError
from ...geometry import Bbox
from .base import Source

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
Image.MAX_IMAGE_PIXELS = None  # EM sections are routinely larger than Pillow's bomb guard


def natural_key(name: str) -> list:
    """Sort key that puts img2 before img10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_stack(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_file():
        return [path]
    if any(ch in pattern for ch in "*?["):
        files = [Path(p) for p in globmod.glob(pattern) if Path(p).is_file()]
        where = f"the pattern {pattern}"
    else:
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
        where = f"the folder {pattern}"
    if not files:
        raise SourceError(f"no PNG, TIFF or JPEG images in {where}; point ingest at a folder or glob of 2D images")
    return sorted(files, key=lambda p: natural_key(p.name))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_warnings():
    """Collect what tifffile logs about a damaged file instead of letting it reach stderr.

    tifffile warns (rather than raises) about a truncated file and then reports fewer pages.
    """
    logger = logging.getLogger("tifffile")
    handler = _Collect()
    logger.addHandler(handler)  # with a handler attached, logging's last-resort print to stderr stays silent
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape (Y, X[, C]) and dtype from an image's header, without decoding it."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with _tifffile_warnings(), tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return tuple(page.shape), np.dtype(page.dtype)
        with Image.open(path) as img:
            mode_types = {"L": (np.uint8, 1), "P": (np.uint8, 1), "I;16": (np.uint16, 1), "I;16B": (np.uint16, 1),
                          "I;16L": (np.uint16, 1), "I": (np.int32, 1), "F": (np.float32, 1), "RGB": (np.uint8, 3),
                          "RGBA": (np.uint8, 4), "LA": (np.uint8, 2), "1": (np.bool_, 1)}
            if img.mode not in mode_types:
                raise SourceError(f"{path} has image mode {img.mode}, which Pumice cannot ingest; convert it to greyscale or RGB")
            dtype, channels = mode_types[img.mode]
            shape = (img.height, img.width) if channels == 1 else (img.height, img.width, channels)
            return shape, np.dtype(dtype)
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - every decoder failure means the same to the user
        raise SourceError(f"cannot read image {path}: {_why(e)}; replace or remove the file") from None


def _decode(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with _tifffile_warnings():
                return tifffile.imread(path, key=0)
        with Image.open(path) as img:
            if img.mode == "P":
                img = img.convert("L")
            return np.asarray(img)
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read image {path}: {_why(e)}; replace or remove the file") from None


def _why(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


class ImageStack(Source):
    """One file per z section, in natural order. ``pad``: sections may differ in size; the stack is
    as large as the largest and each section is centred in it (zeros around)."""

    def __init__(self, pattern: str, pad: bool = False):
        files = list_stack(pattern)
        shape, dtype = _header(files[0])
        shapes = [shape]
        for f in files[1:]:
            other_shape, other_dtype = _header(f)
            differs = other_dtype != dtype or len(other_shape) != len(shape) or (other_shape != shape and not pad)
            if differs:
                hint = " (pumice align --pad centres them in the largest)" if other_dtype == dtype else ""
                raise SourceError(
                    f"images differ: {files[0].name} is {_describe(shape, dtype)} but {f.name} is "
                    f"{_describe(other_shape, other_dtype)}; every section of a stack must match{hint}"
                )
            shapes.append(other_shape)
        self.files = files
        self.section_shapes = [s[:2] for s in shapes]
        shape = (max(s[0] for s in shapes), max(s[1] for s in shapes), *shape[2:])
        super().__init__(
            kind="image stack", path=pattern, shape=(shape[1], shape[0], len(files)),
            channels=shape[2] if len(shape) == 3 else 1, dtype=dtype, full_xy=True,
            fingerprint={"files": len(files), "first": files[0].name, "last": files[-1].name,
                         "bytes": sum(f.stat().st_size for f in files), **({"padded": True} if pad else {})},
        )

    def read(self, bbox: Bbox) -> np.ndarray:
        # Fortran order (x fastest) is Precomputed's own: the section copy and the write are memcpy-like.
        out = np.zeros((*bbox.shape, self.channels), dtype=self.dtype, order="F")
        (x0, y0, z0), (x1, y1, z1) = bbox.minpt, bbox.maxpt
        for z in range(z0, z1):
            section = _decode(self.files[z])
            if section.shape[:2] != self.section_shapes[z]:
                raise SourceError(f"{self.files[z]} decodes to {section.shape}, not the shape its header says; replace the file")
            section = section.reshape(section.shape[0], section.shape[1], -1)
            # centred in the stack's shape (the same place when every section is that large)
            top, left = (self.shape[1] - section.shape[0]) // 2, (self.shape[0] - section.shape[1]) // 2
            sy0, sy1 = max(y0 - top, 0), min(y1 - top, section.shape[0])
            sx0, sx1 = max(x0 - left, 0), min(x1 - left, section.shape[1])
            if sy1 > sy0 and sx1 > sx0:
                out[sx0 + left - x0:sx1 + left - x0, sy0 + top - y0:sy1 + top - y0, z - z0, :] = \
                    section[sy0:sy1, sx0:sx1, :].transpose(1, 0, 2)
        return out


def _describe(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{shape[1]}x{shape[0]}{'x' + str(shape[2]) if len(shape) == 3 else ''} {dtype}"


class TiffVolume(Source):
    """A multipage TIFF (one page per z) or a single 2D TIFF."""

    def __init__(self, path: str):
        try:
            with _tifffile_warnings() as warnings, tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
                pages = len(series.pages) if hasattr(series, "pages") else 1
        except Exception as e:  # noqa: BLE001
            raise SourceError(f"cannot read TIFF {path}: {_why(e)}; check the file") from None
        if not all(shape):  # tifffile calls the axes of a zero-size series Q, so say what is really wrong
            raise SourceError(f"{path} is empty: its TIFF series has shape {shape}; a volume needs at least one voxel "
                              f"along every axis: check the file")
        channels = 1
        if axes.endswith("S"):  # samples per pixel (RGB)
            channels, axes, shape = shape[-1], axes[:-1], shape[:-1]
        if axes[-2:] != "YX" or len(axes) > 3:
            raise SourceError(f"{path} has TIFF axes {series.axes}; Pumice reads 2D or Z,Y,X TIFFs — save it as a plain stack")
        depth = shape[0] if len(shape) == 3 else 1
        if depth != pages and warnings:
            raise SourceError(f"cannot read TIFF {path}: {warnings[0][:200]}; the file looks truncated or damaged")
        if depth != pages and axes.startswith("S"):
            raise SourceError(f"{path} is one page with {depth} samples per pixel (planar colour); if they are z sections, "
                              f"save them with photometric='minisblack', one page each")
        if depth != pages:
            raise SourceError(f"{path} stores its {depth} sections in {pages} pages; save it with one page per section")
        self.file = path
        super().__init__(kind="TIFF", path=path, shape=(shape[-1], shape[-2], depth), channels=channels, dtype=dtype,
                         full_xy=True, fingerprint={"bytes": Path(path).stat().st_size, "shape": list(shape)})

    def read(self, bbox: Bbox) -> np.ndarray:
        (x0, y0, z0), (x1, y1, z1) = bbox.minpt, bbox.maxpt
        try:
            with _tifffile_warnings(), tifffile.TiffFile(self.file) as tif:
                data = tif.asarray(key=list(range(z0, z1)), series=0)
        except Exception as e:  # noqa: BLE001
            raise SourceError(f"cannot read sections {z0}-{z1} of {self.file}: {_why(e)}; check the file") from None
        data = data.reshape(z1 - z0, self.shape[1], self.shape[0], self.channels)
        return data[:, y0:y1, x0:x1, :].transpose(2, 1, 0, 3)  # a view: X, Y, Z, C in Fortran order


@lru_cache(maxsize=8)
def open_stack(pattern: str) -> ImageStack:
    return ImageStack(pattern)
