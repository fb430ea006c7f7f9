"""What every input source offers ingest: shape, dtype, optional metadata, and reads of any box."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import SourceError
from ...geometry import Bbox, Vec

AXES_CHOICES = ("zyx", "xyz", "zyxc", "czyx", "xyzc", "cxyz", "yx", "xy", "yxc")


@dataclass
class Source:
    """A volume to ingest. Arrays come back X, Y, Z, channel; boxes start at (0, 0, 0)."""

    kind: str
    path: str
    shape: Vec  # X, Y, Z
    channels: int
    dtype: np.dtype
    resolution: tuple[float, float, float] | None = None
    voxel_offset: Vec | None = None
    layer_type: str | None = None
    full_xy: bool = False  # only whole sections can be decoded (2D image files)
    fingerprint: dict[str, Any] = field(default_factory=dict)  # identifies the data, for the job id

    def __post_init__(self) -> None:
        # Every reader builds its Source here, so an empty volume is refused once, before any
        # planner writes an info with a zero extent.
        empty = [f"along {axis}" for axis, size in zip("xyz", self.shape) if size < 1]
        empty += ["in its channel axis"] if self.channels < 1 else []
        if empty:
            raise SourceError(
                f"{self.path} is empty: it has no voxels {' or '.join(empty)} (X,Y,Z size "
                f"{','.join(map(str, self.shape))}, {self.channels} channel(s)); a volume needs at least one voxel "
                f"along every axis: check the data (and --axes or --dataset)"
            )

    @property
    def bounds(self) -> Bbox:
        return Bbox((0, 0, 0), self.shape)

    def read(self, bbox: Bbox) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class ArraySource(Source):
    """A source backed by an array-like (h5py dataset, NumPy memmap, TensorStore) in any axis order."""

    def __init__(self, kind: str, path: str, array: Any, axes: str, **meta: Any):
        ndim = len(array.shape)
        if axes is None:
            axes = default_axes(ndim, kind)
        if len(axes) != ndim:
            raise SourceError(
                f"{path} has {ndim} dimensions {tuple(array.shape)} but --axes {axes} names {len(axes)}; "
                f"pass --axes with {ndim} letters (e.g. {default_axes(ndim, kind) or 'zyx'})"
            )
        if sorted(axes) not in (sorted("xyz"), sorted("xyzc"), sorted("xy"), sorted("xyc")):
            raise SourceError(f"--axes {axes} must use x, y, z once each, plus c for channels")
        self.array = array
        self.axes = axes
        sizes = dict(zip(axes, (int(s) for s in array.shape)))
        shape = (sizes["x"], sizes["y"], sizes.get("z", 1))
        super().__init__(kind=kind, path=path, shape=shape, channels=sizes.get("c", 1),
                         dtype=np.dtype(getattr(array.dtype, "numpy_dtype", array.dtype)), **meta)

    def read(self, bbox: Bbox) -> np.ndarray:
        ranges = dict(zip("xyz", zip(bbox.minpt, bbox.maxpt)))
        index = tuple(slice(*ranges[a]) if a in ranges else slice(None) for a in self.axes)
        data = np.asarray(self._get(index))
        present = [a for a in "xyzc" if a in self.axes]
        data = np.transpose(data, [self.axes.index(a) for a in present])
        if "z" not in self.axes:
            data = data[:, :, np.newaxis, ...]
        if "c" not in self.axes:
            data = data[..., np.newaxis]
        return data

    def _get(self, index: tuple) -> np.ndarray:
        return self.array[index]


def default_axes(ndim: int, kind: str) -> str | None:
    # N5 lists dimensions fastest-first, and TensorStore presents them in that order: x, y, z.
    if kind == "N5":
        return {2: "xy", 3: "xyz", 4: "xyzc"}.get(ndim)
    return {2: "yx", 3: "zyx", 4: "zyxc"}.get(ndim)
