"""Another Precomputed layer as an ingest source (mip 0)."""

from __future__ import annotations

from ...geometry import Bbox
from ..layer import Layer
from .base import Source


class PrecomputedSource(Source):
    def __init__(self, url: str):
        self.layer = Layer.open(url)
        scale = self.layer.info.scale(0)
        super().__init__(kind="Precomputed", path=url, shape=scale.size, channels=self.layer.info.num_channels,
                         dtype=self.layer.info.dtype, resolution=scale.resolution, voxel_offset=scale.voxel_offset,
                         layer_type=self.layer.info.type, fingerprint={"info": self.layer.info.to_json()})

    def read(self, bbox: Bbox):
        return self.layer.read(bbox.translate(self.voxel_offset), 0)
