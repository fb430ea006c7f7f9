"""Downsampling kernels and pyramid geometry, shared by downsample, ingest and transfer.

Kernels: tinybrain for average and mode (once per run of equal factors, with that run's
num_mips, because tinybrain's multi-mip averaging keeps precision across levels and differs
from chained single calls); NumPy for min, max and striding. Edge windows that the volume cuts
short use the voxels that exist, as tinybrain does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, Vec, choose_block, vec
from ..storage.info import LayerInfo, Scale, SHARDING_TYPE, choose_sharding, scale_key, write_unit

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
    size, resolution = list(scale.size), list(scale.resolution)
    limit = num_mips if num_mips is not None else 32
    while len(factors) < limit:
        f = auto_factor(resolution) if factor == "auto" else vec(factor)
        shrinking = [a for a in range(3) if f[a] > 1]
        if num_mips is None and all(size[a] <= scale.chunk_size[a] for a in shrinking):
            break
        if any(size[a] == 1 for a in shrinking):
            if num_mips is None:
                break
            raise PumiceError(f"the volume is only {','.join(map(str, size))} voxels at mip {len(factors)}: it cannot be "
                              f"downsampled {num_mips} times by {','.join(map(str, f))}; ask for fewer --num-mips")
        factors.append(f)
        size = [math.ceil(s / k) for s, k in zip(size, f)]
        resolution = [r * k for r, k in zip(resolution, f)]
    return factors


def next_scale(scale: Scale, factor: Sequence[int], chunk_size: Sequence[int], encoding: str) -> Scale:
    """The scale one level up, with CloudVolume's rule: offset floor-divided, size rounded up."""
    resolution = tuple(r * f for r, f in zip(scale.resolution, factor))
    return Scale(
        key=scale_key(resolution),
        size=vec([math.ceil(s / f) for s, f in zip(scale.size, factor)]),
        resolution=resolution,  # type: ignore[arg-type]
        voxel_offset=vec([o // f for o, f in zip(scale.voxel_offset, factor)]),
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
    grid = [math.ceil(s / c) for s, c in zip(scale.size, scale.chunk_size)]
    grid_bits = sum(max(0, (g - 1).bit_length()) for g in grid)
    best = 0
    for bits in range(grid_bits + 1):
        sharding = _sharding(bits, grid_bits, data_encoding)
        unit = write_unit(replace(scale, sharding=sharding))
        # A shard may span an axis only where the task block spans it too.
        if all(b % u == 0 or b >= s for b, u, s in zip(block, unit, scale.size)):
            best = bits
    return _sharding(best, grid_bits, data_encoding)


def _sharding(inside_bits: int, grid_bits: int, data_encoding: str) -> dict:
    preshift = min(inside_bits, 3)
    return {"@type": SHARDING_TYPE, "preshift_bits": preshift, "hash": "identity",
            "minishard_bits": inside_bits - preshift, "shard_bits": max(0, grid_bits - inside_bits),
            "minishard_index_encoding": "gzip", "data_encoding": data_encoding}


def level_box(box: Bbox, source: Scale, level: Scale, stride: Sequence[int]) -> Bbox:
    """Where the downsampled image of ``box`` (a block of ``source``) lands in ``level``."""
    lo = [level.voxel_offset[a] + (box.minpt[a] - source.voxel_offset[a]) // stride[a] for a in range(3)]
    hi = [level.voxel_offset[a] + -(-(box.maxpt[a] - source.voxel_offset[a]) // stride[a]) for a in range(3)]
    return Bbox(vec(lo), vec(hi)).intersection(level.bounds)


def downsample(data: np.ndarray, factors: Sequence[Sequence[int]], method: str, sparse: bool = False) -> list[np.ndarray]:
    """Every level of ``data`` (X, Y, Z, C), one array per factor."""
    import tinybrain

    levels: list[np.ndarray] = []
    current = data
    i = 0
    while i < len(factors):
        run = 1
        while i + run < len(factors) and tuple(factors[i + run]) == tuple(factors[i]):
            run += 1
        f = tuple(int(x) for x in factors[i])
        if method == "average" and min(current.shape[a] for a in range(3) if f[a] > 1) < 2**run:
            # tinybrain refuses to average fewer than 2^run voxels in n mips; only a volume that
            # small gets here (the planner merges thin blocks): single steps, and a plain mean of
            # the voxels present once an axis is down to one voxel.
            out = []
            for _ in range(run):
                prev = out[-1] if out else current
                thin = min(prev.shape[a] for a in range(3) if f[a] > 1) < 2
                out.append(_numpy_reduce(prev, f, "mean") if thin else tinybrain.downsample_with_averaging(prev, f)[0])
        elif method == "average":
            out = tinybrain.downsample_with_averaging(current, f, num_mips=run)
        elif method == "mode":
            out = tinybrain.downsample_segmentation(current, f, sparse=sparse, num_mips=run)
        else:
            out = []
            for _ in range(run):
                out.append(_numpy_reduce(out[-1] if out else current, f, method))
        levels.extend(np.asfortranarray(o) for o in out)
        current = levels[-1]
        i += run
    return levels


def _numpy_reduce(data: np.ndarray, factor: Sequence[int], method: str) -> np.ndarray:
    if method == "striding":
        return data[:: factor[0], :: factor[1], :: factor[2]]
    shape = data.shape
    if method == "mean":
        out = data.astype(np.float64)
        for axis, f in enumerate(factor):
            edges = np.arange(0, shape[axis], f)
            sums = np.add.reduceat(out, edges, axis=axis)
            counts = np.diff(np.append(edges, shape[axis])).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
            out = sums / counts
        return out.astype(data.dtype) if data.dtype.kind == "f" else np.floor(out).astype(data.dtype)
    out_shape = [math.ceil(s / f) for s, f in zip(shape[:3], factor)]
    if np.issubdtype(data.dtype, np.floating):
        pad_value = np.inf if method == "min" else -np.inf
    else:
        info = np.iinfo(data.dtype)
        pad_value = info.max if method == "min" else info.min
    padded = np.full([o * f for o, f in zip(out_shape, factor)] + list(shape[3:]), pad_value, dtype=data.dtype)
    padded[: shape[0], : shape[1], : shape[2]] = data
    windows = padded.reshape(out_shape[0], factor[0], out_shape[1], factor[1], out_shape[2], factor[2], *shape[3:])
    reduce = np.min if method == "min" else np.max
    return reduce(windows, axis=(1, 3, 5))


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
        data_encoding = "raw" if (encoding or source.encoding) in ("jpeg", "png") else "gzip"
        scales = [replace(s, sharding=shard_for_block(s, [b // st for b, st in zip(block, stv)], data_encoding))
                  for s, stv in zip(scales, level_strides)]
    return Pyramid(factors, scales, block, unit)


def plan_new_layer(info: LayerInfo, factors: list[Vec], *, sharded: bool, budget: int, bytes_per_voxel: float,
                   full_xy: bool = False) -> tuple[LayerInfo, Vec, Vec]:
    """A new layer written from another's data in one pass: its scales and the task grid.

    ``info`` holds the new mip 0 only; ``factors`` (possibly none) add a pyramid above it, made
    by the same tasks. Returns the full info, the task block and the tail (a last block thinner
    than it joins its neighbour: tinybrain cannot average fewer voxels than the pyramid's stride).
    """
    base = info.scales[0]
    data_encoding = "raw" if base.encoding in ("jpeg", "png") else "gzip"
    if factors:
        pyramid = plan_pyramid(info, 0, factors, chunk_size=None, encoding=None, sharded=sharded, budget=budget,
                               bytes_per_voxel=bytes_per_voxel, full_xy=full_xy)
        if sharded:
            base = replace(base, sharding=shard_for_block(base, pyramid.block, data_encoding))
        return replace(info, scales=(base, *pyramid.scales)), pyramid.block, strides(factors)[-1]
    if sharded:
        base = replace(base, sharding=choose_sharding(base.size, base.chunk_size, info.dtype.itemsize * info.num_channels,
                                                      base.encoding, shard_bytes=max(base.chunk_size[0], int(budget // bytes_per_voxel))))
    block = choose_block(base.bounds, write_unit(base), bytes_per_voxel, budget, full_xy=full_xy)
    return replace(info, scales=(base,)), block, (0, 0, 0)
