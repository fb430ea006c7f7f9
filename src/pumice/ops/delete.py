"""Delete: remove chunks (or whole shards) in parallel; whole scales also leave the info.

Without --mip the whole layer goes. With --mip M [--num-mips N], those mips' data goes and, when
they are the top of the pyramid, their scales leave the info. With --bounds only the chunks (or
shards) lying entirely inside the region are removed. Every job ledger of the layer is cleared
afterwards: their record of finished work no longer describes what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, grid_blocks, vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import bookkeeping, urls
from ..storage.info import write_unit
from ..storage.layer import Layer

UNITS_PER_TASK = 4096  # chunks (or shards) one task deletes


@register("delete")
@dataclass(frozen=True)
class DeleteTask(Task):
    layer: str
    mip: int
    bbox: tuple  # whole write units (chunks or shards) of ``mip``

    def run(self) -> dict[str, Any]:
        layer = Layer.open(self.layer)
        box = Bbox.from_list(self.bbox)
        scale = layer.info.scale(self.mip)
        if scale.sharding is None:
            keys = [layer.chunk_key(c, self.mip) for c in layer.chunk_boxes(box, self.mip)]
            keys += [k + suffix for k in keys for suffix in (".gz", ".br")]  # CloudVolume's compressed chunks
        else:
            unit = write_unit(scale)
            keys = [layer.shard_file(s, self.mip) for s in grid_blocks(box, unit, scale.voxel_offset)]
        layer.kv.delete_many(keys)
        return {"voxels": box.size}


@planner
def plan(path: str, *, mip: int | None = None, num_mips: int | None = None, bounds: Bbox | None = None) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    layer = Layer.open(path)
    info = layer.info
    count = len(info.scales)
    first = 0 if mip is None else mip
    info.scale(first)  # a clear error for a missing mip
    if num_mips is not None and num_mips < 1:
        raise PumiceError(f"--num-mips must be at least 1, got {num_mips}")
    last = count if num_mips is None else first + num_mips
    if last > count:
        raise PumiceError(f"the layer has mips 0-{count - 1}; --mip {first} --num-mips {num_mips} goes beyond them")
    whole_layer = mip is None and num_mips is None and bounds is None
    whole_scales = bounds is None and not whole_layer
    if whole_scales and last != count:
        raise PumiceError(f"removing mips {first}-{last - 1} would renumber mips {last}-{count - 1} above them; "
                          f"delete from mip {first} to the top (drop --num-mips), or use --bounds to clear data only")
    if whole_scales and first == 0:
        raise PumiceError("removing every scale removes the layer: run `pumice delete PATH` without --mip for that")
    base = info.scale(first)
    if bounds is not None and (bounds.empty() or not base.bounds.contains(bounds)):
        raise PumiceError(f"--bounds {bounds} lies outside mip {first}'s volume {base.bounds}; choose bounds inside it")

    work: list[tuple[int, Bbox, tuple]] = []  # mip, region of whole units, task block
    for m in range(first, last):
        scale = info.scale(m)
        unit = write_unit(scale)
        region = scale.bounds if bounds is None else _inner_units(_at_mip(bounds, base, scale), unit, scale)
        if bounds is not None and region.empty():
            notes.append(f"mip {m}: no whole {'shard' if scale.sharding else 'chunk'} lies inside --bounds; nothing removed there")
            continue
        per_axis = max(1, int(round(UNITS_PER_TASK ** (1 / 3))))
        work.append((m, region, vec(np.multiply(unit, per_axis))))

    url = layer.url

    def stage(m: int, region: Bbox, block: Sequence[int]) -> Stage:
        return Stage.grid(f"mip{m}", region, block, lambda b: DeleteTask(url, m, tuple(b.to_list())), info.scale(m).voxel_offset)

    stages = [stage(m, region, block) for m, region, block in work]

    def finish() -> None:
        kv = layer.kv
        if whole_layer:
            kv.delete_prefix("")
            return
        if whole_scales:
            for m in range(first, last):
                kv.delete_prefix(info.scale(m).key + "/")
            fresh = Layer.open(url)
            fresh.info = replace(fresh.info, scales=fresh.info.scales[:first])
            fresh.save_info()
        bookkeeping.forget_jobs(url)

    what = "the whole layer" if whole_layer else (
        f"mips {first}-{last - 1} (scales leave the info)" if whole_scales else f"data of mips {first}-{last - 1} inside {bounds}")
    description = {"layer": urls.display(url), "removes": what,
                   "regions": [f"mip {m}: {r}" for m, r, _ in work]}
    return Plan("delete", url, {}, stages, finish=finish, description=description, resumable=False), notes


def _at_mip(bounds: Bbox, base, scale) -> Bbox:
    """``bounds`` (voxels of ``base``) in voxels of ``scale``: the same physical region, grown to voxels."""
    ratio = np.asarray(base.resolution) / np.asarray(scale.resolution)
    lo = np.floor(np.asarray(bounds.minpt) * ratio)
    hi = np.ceil(np.asarray(bounds.maxpt) * ratio)
    return Bbox(vec(lo), vec(hi)).intersection(scale.bounds)


def _inner_units(region: Bbox, unit, scale) -> Bbox:
    """The largest box of whole write units inside ``region`` (edge units end at the volume's edge)."""
    o, b = np.asarray(scale.voxel_offset), scale.bounds
    lo = o + -(-(np.asarray(region.minpt) - o) // unit) * unit
    hi = o + ((np.asarray(region.maxpt) - o) // unit) * unit
    hi = np.where(np.asarray(region.maxpt) == np.asarray(b.maxpt), b.maxpt, hi)
    return Bbox(vec(lo), vec(np.maximum(hi, lo)))
