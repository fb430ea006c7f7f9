"""Downsampling kernels and pyramid geometry, shared by downsample, ingest and transfer.

Levels lie on the global grid (voxel j of a level of stride s covers source voxels [j*s, (j+1)*s)),
so a layer lines up with every other layer at every mip whatever its voxel_offset. Kernels:
tinybrain for average and mode (once per run of equal factors, with that run's num_mips, because
tinybrain's multi-mip averaging keeps precision across levels and differs from chained single
calls); NumPy for min, max and striding. Groups that the volume's faces cut use the voxels that
exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, Vec, choose_block, vec
from ..storage import sharding
from ..storage.info import LayerInfo, Scale, scale_key, write_unit

METHODS = ("auto", "average", "mode", "min", "max", "striding")


def resolve_method(layer_type: str, dtype: str, method: str, force: bool) -> str:
    if method not in METHODS:
        raise PumiceError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        return "mode" if layer_type == "segmentation" else "average"
    if method == "average" and layer_type == "segmentation" and not force:
        raise PumiceError("averaging a segmentation mixes unrelated label ids; use --method mode (the default), "
                          "or add --force if you really want averages")
    if method == "mode" and dtype == "float32" and not force:
        raise PumiceError("the mode of float32 values is rarely meaningful; use --method average, or add --force")
    return method


def auto_factor(resolution: Sequence[float]) -> Vec:
    """Halve z only once x and y have caught up with it: anisotropic EM goes 2,2,1 first."""
    return (2, 2, 2) if resolution[0] * 2 > resolution[2] else (2, 2, 1)


def plan_factors(scale: Scale, factor: str | Sequence[int], num_mips: int | None) -> list[Vec]:
    """The factor of each new level; by default, levels until the volume fits in about one chunk."""
    factors: list[Vec] = []
    current = scale
    limit = num_mips if num_mips is not None else 32
    while len(factors) < limit:
        f = auto_factor(current.resolution) if factor == "auto" else vec(factor)
        shrinking = [a for a in range(3) if f[a] > 1]
        size = current.size
        if num_mips is None and all(size[a] <= scale.chunk_size[a] for a in shrinking):
            break
        if any(size[a] == 1 for a in shrinking):
            if num_mips is None:
                break
            raise PumiceError(f"the volume is only {','.join(map(str, size))} voxels at mip {len(factors)}: it cannot be "
                              f"downsampled {num_mips} times by {','.join(map(str, f))}; ask for fewer --num-mips")
        factors.append(f)
        current = next_scale(current, f, current.chunk_size, current.encoding)
    return factors


def next_scale(scale: Scale, factor: Sequence[int], chunk_size: Sequence[int], encoding: str) -> Scale:
    """The scale one level up, on the global grid: voxel j covers voxels [j*f, (j+1)*f) below it.

    So the first voxel is ``floor(offset / f)`` and the last covers the volume's last voxel;
    CloudVolume's ``ceil(size / f)`` counts groups from the volume's first voxel instead, which
    puts the level up to ``offset mod f`` voxels off wherever the offset is not a multiple of f.
    """
    resolution = tuple(r * f for r, f in zip(scale.resolution, factor))
    lo = [o // f for o, f in zip(scale.voxel_offset, factor)]
    hi = [-(-(o + s) // f) for o, s, f in zip(scale.voxel_offset, scale.size, factor)]
    return Scale(
        key=scale_key(resolution),
        size=vec(np.subtract(hi, lo)),
        resolution=resolution,  # type: ignore[arg-type]
        voxel_offset=vec(lo),
        chunk_size=vec(chunk_size),
        encoding=encoding,
        compressed_segmentation_block_size=(8, 8, 8) if encoding == "compressed_segmentation" else None,
    )


def strides(factors: Sequence[Sequence[int]]) -> list[Vec]:
    """Cumulative factor of each level relative to the source."""
    out, s = [], np.ones(3, dtype=np.int64)
    for f in factors:
        s = s * np.asarray(f)
        out.append(vec(s))
    return out


def lcm_unit(units: Sequence[Sequence[int]]) -> Vec:
    return vec([math.lcm(*(int(u[a]) for u in units)) for a in range(3)])


def shard_for_block(scale: Scale, block: Sequence[int], data_encoding: str) -> dict:
    """The largest identity-hash sharding whose shard box divides ``block`` (or spans the axis)."""
    bits = sharding.grid_bits(scale.size, scale.chunk_size)
    best = 0
    for inside in range(bits + 1):
        unit = write_unit(replace(scale, sharding=sharding.volume_sharding(inside, bits, data_encoding)))
        # A shard may span an axis only where the task block spans it too.
        if all(b % u == 0 or b >= s for b, u, s in zip(block, unit, scale.size)):
            best = inside
    return sharding.volume_sharding(best, bits, data_encoding)


# -- which voxels a task makes, and how --------------------------------------------------------------------
# Levels sit on the global grid: voxel j of a level with cumulative stride s covers source voxels
# [j*s, (j+1)*s), wherever the volume starts. Tasks are blocks of the source level on its chunk grid
# (anchored at the volume's first voxel); a level's chunk grid starts at floor(offset / s) instead, so
# when the offset is not a multiple of s, a block owns at each level the voxels whose footprint starts
# in the block moved down to that level's grid. Block edges then fall on chunk edges of every level,
# every level voxel has one owner, and a block reads at most s - 1 voxels of its lower neighbour.

def level_boxes(box: Bbox, volume: Bbox, factors: Sequence[Sequence[int]]) -> list[Bbox]:
    """The voxels of each level (in that level's voxels) that the task block ``box`` of ``volume`` writes."""
    out = []
    for s in strides(factors):
        lo, hi = [], []
        for a in range(3):
            o, e = volume.minpt[a], volume.maxpt[a]
            shift = (o // s[a]) * s[a] - o  # from the block grid to this level's chunk grid, <= 0
            lo.append(o // s[a] if box.minpt[a] <= o else (box.minpt[a] + shift) // s[a])
            hi.append(-(-e // s[a]) if box.maxpt[a] >= e else (box.maxpt[a] + shift) // s[a])
        out.append(Bbox(vec(lo), vec(hi)))
    return out


def read_box(box: Bbox, volume: Bbox, factors: Sequence[Sequence[int]]) -> Bbox:
    """The source voxels that the block ``box`` and the level voxels it owns are made from."""
    lo = list(box.minpt)
    for level, s in zip(level_boxes(box, volume, factors), strides(factors)):
        lo = [min(v, level.minpt[a] * s[a]) for a, v in enumerate(lo)]
    return Bbox(vec(lo), box.maxpt).intersection(volume)


def make_levels(data: np.ndarray, read: Bbox, volume: Bbox, factors: Sequence[Sequence[int]], method: str,
                sparse: bool = False) -> tuple[list[Vec], list[np.ndarray]]:
    """Every level of ``data`` (the voxels of ``read``, X, Y, Z, C) on the global grid.

    Returns each level's array and the level voxel its first element is. Groups wholly inside the
    volume are tinybrain's (average, mode) or NumPy's (min, max, striding) result; a group the
    volume's faces cut holds the average, mode (ties: the smaller label), min, max or first of the
    voxels that exist.
    """
    steps = strides(factors)
    padded = read.snap_out(steps[-1], (0, 0, 0))
    if padded != read:
        full = np.zeros((*padded.shape, data.shape[3]), dtype=data.dtype, order="F")
        full[read.slices(padded.minpt)] = data
    else:
        full = np.asfortranarray(data)
    levels = _reduce_levels(full, factors, method, sparse)
    for level, s in zip(levels, steps):
        _fill_cut_groups(level, full, padded, volume, s, method, sparse)
    return [vec(np.floor_divide(padded.minpt, s)) for s in steps], levels


def _reduce_levels(data: np.ndarray, factors: Sequence[Sequence[int]], method: str, sparse: bool) -> list[np.ndarray]:
    """Each level of ``data``, whose shape is a whole number of groups of every level."""
    import tinybrain

    levels: list[np.ndarray] = []
    current = data
    i = 0
    while i < len(factors):
        run = 1
        while i + run < len(factors) and tuple(factors[i + run]) == tuple(factors[i]):
            run += 1
        f = tuple(int(x) for x in factors[i])
        if method == "average":
            out = tinybrain.downsample_with_averaging(current, f, num_mips=run)
        elif method == "mode":
            out = tinybrain.downsample_segmentation(current, f, sparse=sparse, num_mips=run)
        else:
            out = []
            for _ in range(run):
                out.append(_reduce_whole_groups(out[-1] if out else current, f, method))
        # copies, never views of ``data``: the cut groups are filled in afterwards from ``data``
        levels.extend(np.array(o, order="F", copy=True) for o in out)
        current = levels[-1]
        i += run
    return levels


def _reduce_whole_groups(data: np.ndarray, factor: Sequence[int], method: str) -> np.ndarray:
    if method == "striding":
        return data[:: factor[0], :: factor[1], :: factor[2]]
    shape = data.shape
    groups = data.reshape(shape[0] // factor[0], factor[0], shape[1] // factor[1], factor[1],
                          shape[2] // factor[2], factor[2], *shape[3:])
    return (np.min if method == "min" else np.max)(groups, axis=(1, 3, 5))


def _fill_cut_groups(level: np.ndarray, data: np.ndarray, padded: Bbox, volume: Bbox, stride: Vec, method: str,
                     sparse: bool) -> None:
    """Recompute the level voxels whose footprint a face of the volume cuts, from the voxels that exist."""
    inside = [(np.arange(padded.minpt[b], padded.maxpt[b]) >= volume.minpt[b])
              & (np.arange(padded.minpt[b], padded.maxpt[b]) < volume.maxpt[b]) for b in range(3)]
    for a in range(3):
        s = stride[a]
        for face in {volume.minpt[a], volume.maxpt[a]}:
            if face % s == 0:
                continue
            j = face // s  # the level voxel this face cuts
            start = j * s - padded.minpt[a]
            if not 0 <= start < data.shape[a]:
                continue  # this block does not reach that face
            cut = [slice(None)] * 3
            cut[a] = slice(start, start + s)
            present = list(inside)
            present[a] = inside[a][cut[a]]
            values = reduce_present(data[tuple(cut)], present, stride, method, sparse)
            at = [slice(None)] * 3
            at[a] = slice(j - padded.minpt[a] // s, j - padded.minpt[a] // s + 1)
            level[tuple(at)] = values


def reduce_present(data: np.ndarray, present: Sequence[np.ndarray], stride: Sequence[int], method: str,
                   sparse: bool = False) -> np.ndarray:
    """Reduce each group of ``stride`` voxels of ``data`` (X, Y, Z, C) over its present voxels only.

    ``present`` holds one mask per axis (the volume is a box, so presence is separable). A group with
    no present voxel is 0; ``sparse`` (mode) also leaves zeros out, as tinybrain's sparse mode does.
    """
    n = [data.shape[b] // stride[b] for b in range(3)]
    channels = data.shape[3]
    groups = np.reshape(data, (n[0], stride[0], n[1], stride[1], n[2], stride[2], channels))
    masks = [present[b].reshape(n[b], stride[b]) for b in range(3)]
    mask = (masks[0][:, :, None, None, None, None] & masks[1][None, None, :, :, None, None]
            & masks[2][None, None, None, None, :, :])[..., None]
    counts = mask.sum(axis=(1, 3, 5))
    if method == "average":
        if data.dtype.kind == "f":
            sums = np.where(mask, groups, 0).sum(axis=(1, 3, 5), dtype=np.float64)
            out = np.where(counts > 0, sums / np.maximum(counts, 1), 0)
        else:  # floor of the mean, as tinybrain's integer averages are
            acc = np.uint64 if data.dtype.itemsize >= 8 else np.int64
            sums = np.where(mask, groups, 0).sum(axis=(1, 3, 5), dtype=acc)
            out = np.where(counts > 0, sums // np.maximum(counts, 1).astype(acc), 0)
    elif method in ("min", "max"):
        if data.dtype.kind == "f":
            fill = np.inf if method == "min" else -np.inf
        else:
            fill = np.iinfo(data.dtype).max if method == "min" else np.iinfo(data.dtype).min
        reduced = (np.min if method == "min" else np.max)(np.where(mask, groups, fill), axis=(1, 3, 5))
        out = np.where(counts > 0, reduced, 0)
    elif method == "striding":  # the group's first voxel that exists
        first = [np.argmax(m, axis=1) for m in masks]
        ix = np.ix_(np.arange(n[0]), np.arange(n[1]), np.arange(n[2]))
        out = groups[ix[0], first[0][:, None, None], ix[1], first[1][None, :, None], ix[2], first[2][None, None, :]]
        out = np.where(counts > 0, out, 0)
    elif method == "mode":
        rows = groups.transpose(0, 2, 4, 6, 1, 3, 5).reshape(-1, stride[0] * stride[1] * stride[2])
        keep = np.broadcast_to(mask, groups.shape).transpose(0, 2, 4, 6, 1, 3, 5).reshape(rows.shape)
        if sparse:
            keep = keep & (rows != 0)
        out = rows_mode(rows, keep).reshape(n[0], n[1], n[2], channels)
    else:
        raise ValueError(f"unknown method {method}")
    return np.asarray(out).astype(data.dtype, copy=False)


def rows_mode(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The most frequent kept value of each row (ties: the smallest), 0 for rows with none kept."""
    count, width = values.shape
    if count == 0:
        return values[:, 0] if width else np.zeros(0, values.dtype)
    order = np.lexsort((values, ~keep), axis=1)  # kept values first, ascending
    v = np.take_along_axis(values, order, axis=1)
    k = np.take_along_axis(keep, order, axis=1)
    starts_run = np.ones(v.shape, dtype=bool)
    starts_run[:, 1:] = (v[:, 1:] != v[:, :-1]) | (k[:, 1:] != k[:, :-1])
    starts = np.flatnonzero(starts_run)
    lengths = np.diff(np.append(starts, v.size))
    lengths[~k.ravel()[starts]] = 0
    rows = starts // width
    ranked = np.lexsort((starts, -lengths, rows))  # per row: longest run first, then the smallest value
    best = ranked[np.searchsorted(rows[ranked], np.arange(count))]
    return np.where(lengths[best] > 0, v.ravel()[starts[best]], 0).astype(values.dtype)


def global_grid_record(scales: Sequence[Scale]) -> dict:
    """What a plan that writes pyramid levels records in its parameters, and so in the layer's
    provenance: those levels lie on the global grid. Levels of a layer whose offset is not a multiple
    of their stride lacking this record were made with the old rule (`pumice info` warns)."""
    return {"pyramid_grid": "global", "pyramid_scales": [s.key for s in scales]} if scales else {}


def off_grid_mips(info: LayerInfo, processing: Sequence[Any]) -> list[tuple[int, Vec]]:
    """Mips above 0 that may lie off the global grid, each with how far (mip-0 voxels, per axis) at most.

    Where mip 0's offset is a multiple of a mip's stride both rules agree. Elsewhere a mip counts as
    on the grid only if its geometry is the global grid's and a provenance entry (``processing``, as
    any tool wrote it) records it with ``global_grid_record``; CloudVolume, Igneous and Pumice before
    this rule grouped voxels from the layer's first voxel.
    """
    recorded: set[str] = set()
    for entry in processing:
        method = entry.get("method") if isinstance(entry, dict) else None
        if isinstance(method, dict) and method.get("pyramid_grid") == "global" and isinstance(method.get("pyramid_scales"), list):
            recorded.update(str(k) for k in method["pyramid_scales"])
    base = info.scales[0]
    suspect = []
    for mip, scale in enumerate(info.scales[1:], start=1):
        ratio = [r / r0 for r, r0 in zip(scale.resolution, base.resolution)]
        if any(abs(r - round(r)) > 1e-6 or round(r) < 1 for r in ratio):
            continue  # not a whole-number downsampling of mip 0
        stride = [round(r) for r in ratio]
        off = vec([o % f for o, f in zip(base.voxel_offset, stride)])
        if not any(off):
            continue
        lo = [o // f for o, f in zip(base.voxel_offset, stride)]
        hi = [-(-(o + n) // f) for o, n, f in zip(base.voxel_offset, base.size, stride)]
        on_grid = list(scale.voxel_offset) == lo and list(scale.size) == [b - a for a, b in zip(lo, hi)]
        if not (on_grid and scale.key in recorded):
            suspect.append((mip, off))
    return suspect


@dataclass(frozen=True)
class Pyramid:
    """The new scales of a pyramid and the task block that owns whole chunks (or shards) of each."""

    factors: list[Vec]
    scales: list[Scale]
    block: Vec  # at the source mip
    unit: Vec  # the block's smallest legal size


def plan_pyramid(info: LayerInfo, mip: int, factors: list[Vec], *, chunk_size: Sequence[int] | None,
                 encoding: str | None, sharded: bool, budget: int, bytes_per_voxel: float,
                 full_xy: bool = False) -> Pyramid:
    source = info.scale(mip)
    scales, current = [], source
    for f in factors:
        current = next_scale(current, f, chunk_size or source.chunk_size, encoding or source.encoding)
        scales.append(current)
    level_strides = strides(factors)
    units = [source.chunk_size] + [vec(np.multiply(s.chunk_size, st)) for s, st in zip(scales, level_strides)]
    unit = lcm_unit(units)
    block = choose_block(source.bounds, unit, bytes_per_voxel, budget, full_xy=full_xy)
    if sharded:
        data_encoding = sharding.volume_data_encoding(encoding or source.encoding)
        scales = [replace(s, sharding=shard_for_block(s, [b // st for b, st in zip(block, stv)], data_encoding))
                  for s, stv in zip(scales, level_strides)]
    return Pyramid(factors, scales, block, unit)


def plan_new_layer(info: LayerInfo, factors: list[Vec], *, sharded: bool, budget: int, bytes_per_voxel: float,
                   full_xy: bool = False) -> tuple[LayerInfo, Vec]:
    """A new layer written from another's data in one pass: its scales and the task block.

    ``info`` holds the new mip 0 only; ``factors`` (possibly none) add a pyramid above it, made
    by the same tasks (see ``level_boxes`` for which voxels each task makes).
    """
    base = info.scales[0]
    data_encoding = sharding.volume_data_encoding(base.encoding)
    if factors:
        pyramid = plan_pyramid(info, 0, factors, chunk_size=None, encoding=None, sharded=sharded, budget=budget,
                               bytes_per_voxel=bytes_per_voxel, full_xy=full_xy)
        if sharded:
            base = replace(base, sharding=shard_for_block(base, pyramid.block, data_encoding))
        return replace(info, scales=(base, *pyramid.scales)), pyramid.block
    if sharded:
        base = replace(base, sharding=sharding.choose_volume_sharding(
            base.size, base.chunk_size, info.dtype.itemsize * info.num_channels, base.encoding,
            shard_bytes=max(base.chunk_size[0], int(budget // bytes_per_voxel))))
    block = choose_block(base.bounds, write_unit(base), bytes_per_voxel, budget, full_xy=full_xy)
    return replace(info, scales=(base,)), block
