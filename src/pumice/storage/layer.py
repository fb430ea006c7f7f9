"""Precomputed layers: open, create, read any box, write chunk-aligned boxes.

TensorStore's ``neuroglancer_precomputed`` driver does the encoding, sharding and I/O; this module
owns the info (written by Pumice before any task runs) and the rules for boxes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorstore as ts

from ..errors import LayerError
from ..geometry import Bbox, Vec, vec
from . import urls
from .info import LayerInfo, write_unit
from .kv import KV, context, open_kv


class Layer:
    def __init__(self, url: str, info: LayerInfo):
        self.url = urls.normalize(url)
        self.info = info
        self._stores: dict[int, ts.TensorStore] = {}

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str) -> "Layer":
        kv = open_kv(urls.normalize(url))
        try:
            raw = kv.get_json("info")
        except ValueError as e:  # e.g. an unreachable store
            raise LayerError(f"cannot read {urls.display(url)}: {str(e).splitlines()[0]}") from None
        if raw is None:
            raise LayerError(f"no Precomputed layer at {urls.display(url)} (no info file); check the path")
        return cls(url, LayerInfo.from_json(raw, where=f"{urls.display(url)}/info"))

    @classmethod
    def exists(cls, url: str) -> bool:
        return open_kv(urls.normalize(url)).exists("info")

    @classmethod
    def check_compatible(cls, url: str, info: LayerInfo) -> bool:
        """Raise if a different layer is at ``url``; return whether any layer is there."""
        url = urls.normalize(url)
        existing = open_kv(url).get_json("info")
        if existing is None:
            return False
        old = LayerInfo.from_json(existing, where=f"{urls.display(url)}/info")
        problem = incompatibility(old, info)
        if problem:
            raise LayerError(
                f"{urls.display(url)} already holds a different layer ({problem}); choose another destination or delete it first"
            )
        return True

    @classmethod
    def create(cls, url: str, info: LayerInfo) -> "Layer":
        """Write ``info`` unless an equal one is there; an incompatible one is an error.

        Keys a later step added (mesh, skeletons, more scales) do not make an info incompatible.
        """
        url = urls.normalize(url)
        if not urls.is_writable(url):
            raise LayerError(f"cannot write to {url}: http(s) locations are read-only")
        kv = open_kv(url)
        if cls.check_compatible(url, info):
            return cls.open(url)
        try:
            kv.put_json("info", info.to_json())
        except (ValueError, OSError) as e:
            raise LayerError(f"cannot write to {urls.display(url)}: {str(e).splitlines()[0]}") from None
        return cls(url, info)

    def save_info(self) -> None:
        open_kv(self.url).put_json("info", self.info.to_json())
        self._stores.clear()

    @property
    def kv(self) -> KV:
        return open_kv(self.url)

    # -- geometry ------------------------------------------------------------------------------
    def bounds(self, mip: int = 0) -> Bbox:
        return self.info.scale(mip).bounds

    def chunk_size(self, mip: int = 0) -> Vec:
        return self.info.scale(mip).chunk_size

    def write_block(self, mip: int = 0) -> Vec:
        """The unit that must be written whole: a chunk, or a shard's box for sharded scales."""
        return write_unit(self.info.scale(mip))

    # -- data ----------------------------------------------------------------------------------
    def store(self, mip: int = 0) -> ts.TensorStore:
        if mip not in self._stores:
            self.info.scale(mip)  # a clear error for a missing mip
            spec = {
                "driver": "neuroglancer_precomputed",
                "kvstore": urls.kvstore_spec(self.url),
                "scale_index": mip,
                "recheck_cached_data": False,
                "recheck_cached_metadata": False,
            }
            try:
                self._stores[mip] = ts.open(spec, open=True, context=context()).result()
            except ValueError as e:
                raise LayerError(f"cannot open mip {mip} of {urls.display(self.url)}: {str(e).splitlines()[0]}") from None
        return self._stores[mip]

    def read(self, bbox: Bbox, mip: int = 0) -> np.ndarray:
        """Voxels of ``bbox`` as an X, Y, Z, channel array; parts outside the volume are zero."""
        bounds = self.bounds(mip)
        inside = bbox.intersection(bounds)
        if inside == bbox:
            return self._read_inside(bbox, mip)
        out = np.zeros((*bbox.shape, self.info.num_channels), dtype=self.info.dtype)
        if not inside.empty():
            out[inside.slices(bbox.minpt)] = self._read_inside(inside, mip)
        return out

    def _read_inside(self, bbox: Bbox, mip: int) -> np.ndarray:
        view = self.store(mip)[bbox.minpt[0] : bbox.maxpt[0], bbox.minpt[1] : bbox.maxpt[1], bbox.minpt[2] : bbox.maxpt[2]]
        return view.read(order="F").result()

    def write(self, bbox: Bbox, data: np.ndarray, mip: int = 0) -> None:
        """Write whole chunks (whole shards for sharded scales); edges may stop at the volume's edge."""
        bounds = self.bounds(mip)
        if not bounds.contains(bbox):
            raise LayerError(f"box {bbox} lies outside the layer's bounds {bounds} at mip {mip}")
        block = self.write_block(mip)
        if not bbox.is_aligned(block, bounds.minpt, bounds):
            raise LayerError(f"box {bbox} is not aligned to the write grid {block} of mip {mip}")
        if data.ndim == 3:
            data = data[..., np.newaxis]
        if tuple(data.shape) != (*bbox.shape, self.info.num_channels):
            raise LayerError(f"data shape {data.shape} does not match box {bbox} x {self.info.num_channels} channels")
        view = self.store(mip)[bbox.minpt[0] : bbox.maxpt[0], bbox.minpt[1] : bbox.maxpt[1], bbox.minpt[2] : bbox.maxpt[2]]
        view.write(np.asarray(data, dtype=self.info.dtype)).result()


def incompatibility(old: LayerInfo, new: LayerInfo) -> str | None:
    """Why ``new`` cannot be written where ``old`` is, or None if the data would agree."""
    for name in ("type", "data_type", "num_channels"):
        if getattr(old, name) != getattr(new, name):
            return f"{name} {getattr(old, name)} there, {getattr(new, name)} requested"
    for mip, scale in enumerate(new.scales):
        if mip >= len(old.scales):
            return f"it has no mip {mip}"
        was = old.scales[mip]
        for name in ("size", "resolution", "voxel_offset", "chunk_size", "encoding", "sharding"):
            if getattr(was, name) != getattr(scale, name):
                return f"mip {mip} {name} {_fmt(getattr(was, name))} there, {_fmt(getattr(scale, name))} requested"
    return None


def _fmt(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def snap_block(block: Sequence[int], unit: Sequence[int]) -> Vec:
    """Round a task block down to a positive multiple of the write unit."""
    return vec([max(u, (b // u) * u) for b, u in zip(block, unit)])
