"""``pumice contrast clahe``: OpenCV's CLAHE on each section, into a new image layer.

A block reads one tile of context on every side, on a tile grid anchored at the volume's origin,
so every block computes exactly what one block holding the whole section would.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, format_vec
from ..plan import Plan, planner, register
from ..storage.layer import Layer
from .blockwise import BlockTask, OutputOptions, plan_block_operation
from .levels import require_grey

DEFAULT_MEMORY = 256 * 2**20


def clahe_sections(data: np.ndarray, clip_limit: float, tile_size: int, pad: tuple[int, int]) -> np.ndarray:
    """OpenCV's CLAHE on every section of an X, Y, Z array whose x/y extents are whole tiles once
    ``pad`` (x, y) voxels are added at the high ends (by reflection, as OpenCV itself would)."""
    import cv2

    nx, ny = data.shape[0] + pad[0], data.shape[1] + pad[1]
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(nx // tile_size, ny // tile_size))
    out = np.empty(data.shape, dtype=data.dtype, order="F")
    for z in range(data.shape[2]):
        section = np.ascontiguousarray(data[:, :, z].T)  # OpenCV: rows are y
        if pad != (0, 0):
            section = np.pad(section, ((0, pad[1]), (0, pad[0])), mode="reflect")
        out[:, :, z] = clahe.apply(section)[: data.shape[1], : data.shape[0]].T
    return out


def clahe_context(box: Bbox, bounds: Bbox, tile_size: int) -> tuple[Bbox, tuple[int, int]]:
    """The region a CLAHE block must read, and the padding that completes its last tiles.

    A voxel's result blends the tables of the tiles around it, so one whole tile of context on
    each side suffices; the region starts on the tile grid (anchored at the volume's origin), so
    its tiles are the whole section's tiles, and ends on it or at the volume's edge.
    """
    t = tile_size
    lo, hi = list(box.minpt), list(box.maxpt)
    pad = [0, 0]
    for a in (0, 1):
        origin, end = bounds.minpt[a], bounds.maxpt[a]
        lo[a] = max(origin + ((box.minpt[a] - origin) // t - 1) * t, origin)
        hi[a] = min(origin + (-(-(box.maxpt[a] - origin) // t) + 1) * t, end)
        pad[a] = (-(hi[a] - lo[a])) % t
    return Bbox(tuple(lo), tuple(hi)), (pad[0], pad[1])


@register("contrast.clahe")
@dataclass(frozen=True)
class ClaheTask(BlockTask):
    clip_limit: float = 2.0
    tile_size: int = 128

    def region(self, read: Bbox, source: Layer) -> Bbox:
        return clahe_context(read, source.bounds(self.mip), self.tile_size)[0]

    def compute(self, data: np.ndarray, region: Bbox, read: Bbox, source: Layer) -> tuple[np.ndarray, dict]:
        _, pad = clahe_context(read, source.bounds(self.mip), self.tile_size)
        out = clahe_sections(data[..., 0], self.clip_limit, self.tile_size, pad)[read.slices(region.minpt)]
        return out, {"voxels_read": region.size}


@planner
def plan(src: str, dest: str, *, clip_limit: float = 2.0, tile_size: int = 128, mip: int = 0, bounds: Bbox | None = None,
         fill_missing: bool = False, chunk_size: Sequence[int] | None = None, encoding: str | None = None,
         sharded: bool | None = None, num_mips: int = 0, factor: str | Sequence[int] = "auto", method: str = "auto",
         sparse: bool = False, force: bool = False, memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    source, dest = Layer.open_with_destination(src, dest, "write CLAHE's result")
    require_grey(source, "CLAHE")
    if not (clip_limit > 0 and math.isfinite(clip_limit)):
        raise PumiceError(f"--clip-limit must be a positive number (OpenCV's contrast limit, e.g. 2), got {clip_limit:g}")
    if not (8 <= tile_size <= 4096 and tile_size & (tile_size - 1) == 0):
        raise PumiceError(f"--tile-size must be a power of two from 8 to 4096 (so that every task block computes the same "
                          f"tile grid bit for bit), got {tile_size}")
    itemsize = source.info.dtype.itemsize
    bytes_per_voxel = itemsize * (5 if num_mips else 3) + (4 if num_mips else 0)
    clip_limit, tile_size = float(clip_limit), int(tile_size)
    output = OutputOptions(chunk_size=chunk_size, encoding=encoding, sharded=sharded, num_mips=num_mips, factor=factor,
                           method=method, sparse=sparse, force=force)
    result = plan_block_operation(
        "clahe", source, dest, mip=mip, bounds=bounds, task=functools.partial(ClaheTask, clip_limit=clip_limit, tile_size=tile_size),
        layer_type="image", data_type=source.info.data_type, channels=1, output=output, fill_missing=fill_missing,
        memory=memory, bytes_per_voxel=bytes_per_voxel, full_xy=True, params={"clip_limit": clip_limit, "tile_size": tile_size},
        description={"rule": f"OpenCV CLAHE per section: clip limit {clip_limit:g}, tiles of {tile_size}x{tile_size} voxels "
                             f"anchored at the volume's origin; each block reads one tile of context on every side"},
        provenance="contrast clahe", notes=notes,
        outcome=lambda totals: (f"read {totals['clahe'].get('voxels_read', 0) / max(totals['clahe'].get('voxels', 1), 1):.2f}x "
                                f"the volume (blocks and their context)"))
    first = Bbox.from_shape(source.bounds(mip).minpt, result.params["block"]).intersection(source.bounds(mip))
    result.description["read_per_block"] = f"up to {format_vec(clahe_context(first, source.bounds(mip), tile_size)[0].shape)}"
    return result, notes
