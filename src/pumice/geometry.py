"""Vectors, bounding boxes and chunk grids.

Boxes are half-open ``[minpt, maxpt)`` in voxels, in X, Y, Z order (Precomputed's order).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .errors import PumiceError

Vec = tuple[int, int, int]


def vec(values: Sequence[int | float] | np.ndarray) -> Vec:
    """Three ints as a tuple (the one vector type we pass around)."""
    values = tuple(int(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"expected 3 values, got {len(values)}")
    return values  # type: ignore[return-value]


def format_vec(values: Sequence) -> str:
    """``1,2,3`` (floats without trailing zeros): how vectors are shown and typed."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(int(v)) for v in values)


def parse_vec(text: str, name: str, *, kind: type = int, positive: bool = False) -> tuple:
    """Parse a user's ``X,Y,Z`` option; bad text raises a PumiceError naming the option."""
    parts = [p.strip() for p in str(text).split(",")]
    example = "4,4,40" if kind is float else "64,64,64"
    if len(parts) != 3 or any(p == "" for p in parts):
        raise PumiceError(f"{name} must be three comma-separated numbers X,Y,Z (e.g. {example}), got {text!r}")
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        raise PumiceError(
            f"{name} must be three comma-separated {'numbers' if kind is float else 'integers'} X,Y,Z "
            f"(e.g. {example}), got {text!r}"
        ) from None
    if kind is float and not all(math.isfinite(v) for v in values):
        raise PumiceError(f"{name} must be finite numbers, got {text!r}")
    if positive and any(v <= 0 for v in values):
        raise PumiceError(f"{name} must be positive in every axis, got {text!r}")
    return values


@dataclass(frozen=True)
class Bbox:
    """Half-open box [minpt, maxpt) in voxels."""

    minpt: Vec
    maxpt: Vec

    def __post_init__(self) -> None:
        object.__setattr__(self, "minpt", vec(self.minpt))
        object.__setattr__(self, "maxpt", vec(self.maxpt))

    @classmethod
    def from_shape(cls, offset: Sequence[int], shape: Sequence[int]) -> "Bbox":
        return cls(vec(offset), vec(np.add(offset, shape)))

    @classmethod
    def from_list(cls, values: Sequence[int]) -> "Bbox":
        return cls(vec(values[:3]), vec(values[3:6]))

    def to_list(self) -> list[int]:
        return [*self.minpt, *self.maxpt]

    @property
    def shape(self) -> Vec:
        return vec(np.maximum(np.subtract(self.maxpt, self.minpt), 0))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def empty(self) -> bool:
        return any(s <= 0 for s in self.shape)

    def intersection(self, other: "Bbox") -> "Bbox":
        lo = np.maximum(self.minpt, other.minpt)
        hi = np.maximum(np.minimum(self.maxpt, other.maxpt), lo)
        return Bbox(vec(lo), vec(hi))

    def contains(self, other: "Bbox") -> bool:
        return all(a <= b for a, b in zip(self.minpt, other.minpt)) and all(
            a >= b for a, b in zip(self.maxpt, other.maxpt)
        )

    def translate(self, delta: Sequence[int]) -> "Bbox":
        return Bbox(vec(np.add(self.minpt, delta)), vec(np.add(self.maxpt, delta)))

    def slices(self, origin: Sequence[int] = (0, 0, 0)) -> tuple[slice, slice, slice]:
        """Slices that cut this box out of an array whose first voxel is at ``origin``."""
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.minpt, self.maxpt, origin))  # type: ignore[return-value]

    def snap_out(self, grid: Sequence[int], origin: Sequence[int]) -> "Bbox":
        """Grow to the enclosing grid lines of a grid of cell size ``grid`` anchored at ``origin``."""
        g, o = np.asarray(grid), np.asarray(origin)
        lo = o + ((np.asarray(self.minpt) - o) // g) * g
        hi = o - ((o - np.asarray(self.maxpt)) // g) * g
        return Bbox(vec(lo), vec(hi))

    def is_aligned(self, grid: Sequence[int], origin: Sequence[int], bounds: "Bbox") -> bool:
        """True if every face lies on a grid line or on the matching face of ``bounds``."""
        for lo, hi, g, o, blo, bhi in zip(self.minpt, self.maxpt, grid, origin, bounds.minpt, bounds.maxpt):
            if (lo - o) % g != 0 and lo != blo:
                return False
            if (hi - o) % g != 0 and hi != bhi:
                return False
        return True

    def __str__(self) -> str:
        return "{},{},{} - {},{},{}".format(*self.minpt, *self.maxpt)


def _axis_starts(lo: int, hi: int, step: int, origin: int, min_tail: int) -> list[tuple[int, int]]:
    first = origin + ((lo - origin) // step) * step
    edges = list(range(first, hi, step)) + [hi]
    spans = [(max(a, lo), min(b, hi)) for a, b in zip(edges[:-1], edges[1:])]
    spans = [(a, b) for a, b in spans if b > a]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_tail:
        spans[-2:] = [(spans[-2][0], spans[-1][1])]  # a sliver joins its neighbour
    return spans


def grid_blocks(bounds: Bbox, block: Sequence[int], origin: Sequence[int],
                min_tail: Sequence[int] = (0, 0, 0)) -> Iterator[Bbox]:
    """Boxes of a grid of cell size ``block`` anchored at ``origin``, clipped to ``bounds``.

    A last box thinner than ``min_tail`` along an axis joins the one before it. Lazy and in
    x-fastest order, so a plan of millions of blocks is never held in memory.
    """
    spans = [_axis_starts(lo, hi, b, o, t) for lo, hi, b, o, t in zip(bounds.minpt, bounds.maxpt, block, origin, min_tail)]
    for (z0, z1), (y0, y1), (x0, x1) in itertools.product(*reversed(spans)):
        yield Bbox((x0, y0, z0), (x1, y1, z1))


def count_grid_blocks(bounds: Bbox, block: Sequence[int], origin: Sequence[int],
                      min_tail: Sequence[int] = (0, 0, 0)) -> int:
    return int(np.prod([len(_axis_starts(lo, hi, b, o, t))
                        for lo, hi, b, o, t in zip(bounds.minpt, bounds.maxpt, block, origin, min_tail)]))


def choose_block(bounds: Bbox, unit: Sequence[int], bytes_per_voxel: float, budget: int, *,
                 full_xy: bool = False) -> Vec:
    """The largest task block, in multiples of ``unit``, whose memory stays within ``budget``.

    ``full_xy`` (sources that decode whole sections) first widens the block to whole sections,
    then deepens it in z; otherwise x, y and z grow in turn. A block never shrinks below one unit.
    """
    unit = vec(unit)
    cover = [max(u, -(-s // u) * u) for s, u in zip(bounds.shape, unit)]  # whole extent, in units
    block = list(unit)

    def fits(candidate: list[int]) -> bool:
        return float(np.prod(candidate, dtype=np.float64)) * bytes_per_voxel <= budget

    if full_xy:
        for axis in (0, 1):
            while block[axis] < cover[axis] and fits([*block[:axis], min(block[axis] * 2, cover[axis]), *block[axis + 1:]]):
                block[axis] = min(block[axis] * 2, cover[axis])
        order = (2,)
    else:
        order = (0, 1, 2)
    grown = True
    while grown:
        grown = False
        for axis in order:
            if block[axis] >= cover[axis]:
                continue
            candidate = list(block)
            candidate[axis] = min(block[axis] * 2, cover[axis])
            if fits(candidate):
                block = candidate
                grown = True
    return vec(block)


def parse_bytes(text: str) -> int:
    """``512MiB``, ``2G``, ``1000000`` -> bytes."""
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
             "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}
    import re

    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in units:
        raise PumiceError(f"--memory must be a size such as 512MiB or 2GiB, got {text!r}")
    value = float(match.group(1)) * units[match.group(2).lower()]
    if value <= 0:
        raise PumiceError(f"--memory must be positive, got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
