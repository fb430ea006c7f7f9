"""Downsample: a layer's resolution pyramid, one task per block, every new mip from one read.

The planner picks the factors (2,2,1 until x/y catch up with z, then 2,2,2, unless told) and the
number of mips (until the volume fits in about one chunk), adds the scales to the info, and
sizes task blocks from the memory budget so that each block maps onto whole chunks (or whole
shards) of every new mip. A task reads its block once and writes all the mips it makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, format_bytes, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import urls
from ..storage.info import LayerInfo, check_encoding
from ..storage.layer import Layer
from .pyramid import global_grid_record, level_boxes, make_levels, plan_factors, plan_pyramid, read_box, resolve_method

DEFAULT_MEMORY = 256 * 2**20


@register("downsample")
@dataclass(frozen=True)
class DownsampleTask(Task):
    layer: str
    mip: int
    bbox: tuple  # at ``mip``
    factors: tuple  # one (fx, fy, fz) per new mip
    method: str
    sparse: bool = False
    fill_missing: bool = False
    background: int | None = None  # chunks holding only this value are not stored

    def run(self) -> dict[str, Any]:
        layer = Layer.open(self.layer)
        box = Bbox.from_list(self.bbox)
        factors = [tuple(f) for f in self.factors]
        read = read_box(box, layer.bounds(self.mip), factors)
        data = layer.read(read, self.mip, fill_missing=self.fill_missing)
        written = write_levels(layer, self.mip, box, read, data, factors, self.method, self.sparse, self.background)
        return {"voxels": box.size, "voxels_written": written}


def write_with_levels(layer: Layer, box: Bbox, read: Bbox, data: np.ndarray, factors: Sequence[Sequence[int]],
                      method: str = "average", sparse: bool = False) -> int:
    """Write the block ``box`` of mip 0 of a new layer and the mips ``factors`` make from it; voxels written.

    ``data`` holds the voxels of ``read`` (X, Y, Z, C): ``read_box(box, ...)``, which reaches below
    ``box`` where the layer's offset is not a multiple of the pyramid's stride.
    """
    layer.write(box, data[box.slices(read.minpt)], 0)
    return box.size + (write_levels(layer, 0, box, read, data, factors, method, sparse) if factors else 0)


def write_levels(layer: Layer, mip: int, box: Bbox, read: Bbox, data: np.ndarray, factors: Sequence[Sequence[int]],
                 method: str, sparse: bool = False, background: int | None = None) -> int:
    """Make the mips above ``mip`` that the block ``box`` owns from ``data`` (the voxels of ``read``) and write them."""
    volume = layer.bounds(mip)
    origins, arrays = make_levels(data, read, volume, factors, method, sparse)
    written = 0
    for level, (target, origin, array) in enumerate(zip(level_boxes(box, volume, factors), origins, arrays), start=1):
        if target.empty():
            continue
        layer.write(target, array[target.slices(origin)], mip + level, skip_value=background)
        written += target.size
    return written


@planner
def plan(
    path: str,
    *,
    mip: int = 0,
    num_mips: int | None = None,
    factor: str | Sequence[int] = "auto",
    method: str = "auto",
    sparse: bool = False,
    chunk_size: Sequence[int] | None = None,
    encoding: str | None = None,
    sharded: bool = False,
    bounds: Bbox | None = None,
    fill_missing: bool = False,
    delete_background: bool = False,
    background_color: int = 0,
    force: bool = False,
    memory: int = DEFAULT_MEMORY,
) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    layer = Layer.open(path)
    info = layer.info
    source = info.scale(mip)
    method = resolve_method(info.type, info.data_type, method, force)
    if sparse and method != "mode":
        raise PumiceError("--sparse applies to --method mode (segmentations) only")
    if num_mips is not None and num_mips < 1:
        raise PumiceError(f"--num-mips must be at least 1, got {num_mips}")
    if encoding:
        check_encoding(info.type, info.data_type, encoding, info.num_channels)
    if delete_background and sharded and background_color != 0:
        raise PumiceError("--delete-background with a non-zero --background-color needs unsharded output; drop --sharded")
    factors = plan_factors(source, factor, num_mips)
    url = layer.url
    if not factors:
        notes.append(f"mip {mip} already fits in about one chunk: no mips to add (ask for them with --num-mips)")
        return Plan("downsample", url, {"mip": mip, "factors": []}), notes

    bytes_per_voxel = info.num_channels * info.dtype.itemsize * 3 + 4  # the block, tinybrain's sums, the mips
    pyramid = plan_pyramid(info, mip, factors, chunk_size=chunk_size, encoding=encoding, sharded=sharded,
                           budget=memory, bytes_per_voxel=bytes_per_voxel)
    new_info = _with_scales(info, mip, pyramid.scales, url)
    region = source.bounds
    if bounds is not None:
        if not source.bounds.contains(bounds) or bounds.empty():
            raise PumiceError(f"--bounds {bounds} lies outside mip {mip}'s volume {source.bounds}; choose bounds inside it")
        region = bounds.snap_out(pyramid.unit, source.voxel_offset).intersection(source.bounds)
        if region != bounds:
            notes.append(f"--bounds grown to {region} so that every new mip is made of whole chunks")
    task_memory = float(np.prod(pyramid.block)) * bytes_per_voxel
    if task_memory > memory:
        notes.append(f"one task needs about {format_bytes(task_memory)}, above --memory {format_bytes(memory)}: "
                     f"whole chunks of every mip need a block of at least {','.join(map(str, pyramid.unit))}")
    options = dict(method=method, sparse=sparse, fill_missing=fill_missing,
                   background=background_color if delete_background else None)
    frozen_factors = tuple(tuple(f) for f in factors)

    def task(box: Bbox) -> DownsampleTask:
        return DownsampleTask(layer=url, mip=mip, bbox=tuple(box.to_list()), factors=frozen_factors, **options)

    params = {"mip": mip, "factors": [list(f) for f in factors], "region": region.to_list(), "block": list(pyramid.block),
              "scales": [s.to_json() for s in pyramid.scales], **options,
              **global_grid_record(new_info.scales[mip + 1: mip + 1 + len(factors)])}
    description = {
        "layer": f"{urls.display(url)}: {info.type} {info.data_type}, mip {mip} {source.key} size {format_vec(source.size)}",
        "method": method + (" (sparse)" if sparse else ""),
        "scales": [f"mip {mip + i + 1} {s.key}: factor {format_vec(f)}, size {format_vec(s.size)}, chunk {format_vec(s.chunk_size)}, "
                   f"{s.encoding}{', sharded' if s.sharding else ''}" for i, (s, f) in enumerate(zip(pyramid.scales, factors))],
        "block": format_vec(pyramid.block),
        "memory_per_task": format_bytes(task_memory),
        "voxels": region.size,
    }
    return Plan("downsample", url, params, [Stage.grid("downsample", region, pyramid.block, task, source.voxel_offset)],
                description=description, provenance="downsample", prepare=lambda: _save_info(layer, new_info)), notes


def _save_info(layer: Layer, info: LayerInfo) -> None:
    layer.info = info
    layer.save_info()


def _with_scales(info: LayerInfo, mip: int, scales: list, url: str) -> LayerInfo:
    """Add (or confirm) the new scales after ``mip``; existing different ones are an error."""
    from dataclasses import replace

    merged = list(info.scales)
    for i, scale in enumerate(scales, start=mip + 1):
        if i < len(merged):
            old = merged[i]
            same = all(getattr(old, k) == getattr(scale, k) for k in
                       ("size", "resolution", "voxel_offset", "chunk_size", "encoding", "sharding"))
            if not same:
                raise LayerError(f"{urls.display(url)} already has a different mip {i} ({old.key}, chunk {format_vec(old.chunk_size)}, "
                                 f"{old.encoding}{', sharded' if old.sharding else ''}); delete it first with "
                                 f"`pumice delete {urls.display(url)} --mip {i}`")
            merged[i] = replace(scale, key=old.key, extra=old.extra)
        else:
            if any(s.key == scale.key for s in merged):
                scale = replace(scale, key=f"{scale.key}_{i}")
            merged.append(scale)
    return replace(info, scales=tuple(merged))

