"""``pumice contrast normalize``: each section stretched through a lookup table made from its levels
(or one table for the whole volume, or a window the user gives), into a new image layer."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox
from ..plan import Plan, planner, register
from ..storage import levels as stored
from ..storage.layer import Layer
from .blockwise import BlockTask, OutputOptions, plan_block_operation
from .levels import check_levels, clip_window, require_grey, volume_levels

DEFAULT_MEMORY = 256 * 2**20


def stretch_table(window: Sequence[int] | None, in_dtype: np.dtype, out_dtype: np.dtype) -> np.ndarray:
    """Lookup table of ``clip(round((v - lo) * max_out / (hi - lo)), 0, max_out)`` for every input v.

    Rounding is NumPy's (halves to even) in float64. A window that is None or empty (a blank or
    flat section) becomes the whole input range, so such sections are only rescaled.
    """
    max_in, max_out = np.iinfo(in_dtype).max, np.iinfo(out_dtype).max
    lo, hi = (int(window[0]), int(window[1])) if window is not None and window[1] > window[0] else (0, int(max_in))
    values = np.arange(max_in + 1, dtype=np.float64)
    return np.clip(np.round((values - lo) * max_out / (hi - lo)), 0, max_out).astype(out_dtype)


def lookup(table: np.ndarray, section: np.ndarray) -> np.ndarray:
    """``table[section]`` for one X, Y section: OpenCV's LUT for 8-bit input (6x NumPy's take), else NumPy."""
    if section.dtype == np.uint8:
        import cv2

        return cv2.LUT(np.ascontiguousarray(section.T), table).T
    return np.take(table, section)


@register("contrast.normalize")
@dataclass(frozen=True)
class NormalizeTask(BlockTask):
    window: tuple = ()  # (lo, hi) for every section; empty: each section's own, from its levels
    clip_fraction: float = 0.01
    count_zeros: bool = False
    dtype: str = "uint8"  # of the output

    def compute(self, data: np.ndarray, region: Bbox, read: Bbox, source: Layer) -> np.ndarray:
        out_dtype = np.dtype(self.dtype)
        if self.window:
            tables = [stretch_table(self.window, data.dtype, out_dtype)] * read.shape[2]
        else:
            tables = [stretch_table(clip_window(counts, self.clip_fraction, self.count_zeros), data.dtype, out_dtype)
                      for counts in stored.read(source.url, self.mip, read.minpt[2], read.maxpt[2])]
        out = np.empty(data.shape, dtype=out_dtype, order="F")
        for z, table in enumerate(tables):
            out[:, :, z, 0] = lookup(table, data[:, :, z, 0])
        return out


@planner
def plan(src: str, dest: str, *, clip_fraction: float = 0.01, whole_volume: bool = False, minval: int | None = None,
         maxval: int | None = None, count_zeros: bool = False, dtype: str = "uint8", mip: int = 0,
         bounds: Bbox | None = None, fill_missing: bool = False, chunk_size: Sequence[int] | None = None,
         encoding: str | None = None, sharded: bool | None = None, num_mips: int = 0, factor: str | Sequence[int] = "auto",
         method: str = "auto", sparse: bool = False, force: bool = False,
         memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    source, dest = Layer.open_with_destination(src, dest, "normalize")
    require_grey(source, "contrast normalize")
    if dtype not in ("uint8", "uint16"):
        raise PumiceError(f"--dtype must be uint8 or uint16, got {dtype!r}")
    if not 0 <= clip_fraction < 0.5:
        raise PumiceError(f"--clip-fraction must lie in [0, 0.5) (the fraction cut off each end), got {clip_fraction:g}")
    max_in = int(np.iinfo(source.info.dtype).max)
    manual = minval is not None or maxval is not None
    if manual:
        if minval is None or maxval is None:
            raise PumiceError("--minval and --maxval go together: give both (the grey levels that become 0 and the maximum)")
        if whole_volume:
            raise PumiceError("--global and --minval/--maxval each choose the window; pass one of them")
        if not 0 <= minval < maxval <= max_in:
            raise PumiceError(f"--minval must be below --maxval, both within 0..{max_in} for {source.info.data_type} data; "
                              f"got {minval}..{maxval}")
    window: tuple = ()
    levels_record = None
    if manual:
        window = (int(minval), int(maxval))
        rule = f"{minval}..{maxval} -> 0..{np.iinfo(dtype).max} for every section"
    else:
        check_levels(source, mip)
        levels_record = stored.read_record(source.url, mip)
        zeros = "zeros counted" if count_zeros else "zeros not counted"
        if whole_volume:
            found = clip_window(volume_levels(source, mip), clip_fraction, count_zeros)
            window = tuple(found) if found and found[1] > found[0] else (0, max_in)
            rule = (f"one window for the volume: {window[0]}..{window[1]} -> 0..{np.iinfo(dtype).max} "
                    f"(clip {clip_fraction:g} of its levels at each end, {zeros})")
        else:
            rule = f"per section: clip {clip_fraction:g} of its levels at each end ({zeros}), stretch to 0..{np.iinfo(dtype).max}"
    # the block, its output, and TensorStore's copy of the output while it writes (measured)
    out_bytes = np.dtype(dtype).itemsize
    bytes_per_voxel = source.info.dtype.itemsize + out_bytes * (4 if num_mips else 2) + (4 if num_mips else 0)
    task = functools.partial(NormalizeTask, window=window, clip_fraction=float(clip_fraction), count_zeros=count_zeros,
                             dtype=dtype)
    output = OutputOptions(chunk_size=chunk_size, encoding=encoding, sharded=sharded, num_mips=num_mips, factor=factor,
                           method=method, sparse=sparse, force=force)
    result = plan_block_operation(
        "normalize", source, dest, mip=mip, bounds=bounds, task=task, layer_type="image", data_type=dtype, channels=1,
        output=output, fill_missing=fill_missing, memory=memory, bytes_per_voxel=bytes_per_voxel, full_xy=True,
        params={"window": list(window), "clip_fraction": float(clip_fraction), "levels": levels_record},
        description={"rule": rule}, provenance="contrast normalize", notes=notes)
    return result, notes

