"""The Neuroglancer Precomputed ``info`` model: scales, encodings, sharding; validation.

Unknown keys are kept as they are (``extra``), so an info written by another tool survives a
round trip through Pumice unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, Vec, vec
from .sharding import SHARDING_TYPE, choose_volume_sharding

LAYER_TYPES = ("image", "segmentation")
DTYPES = ("uint8", "uint16", "uint32", "uint64", "float32")
ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation")


def check_encoding(layer_type: str, dtype: str, encoding: str, channels: int) -> None:
    """Raise a PumiceError if Neuroglancer cannot store this combination."""
    if layer_type not in LAYER_TYPES:
        raise PumiceError(f"layer type must be image or segmentation, got {layer_type!r}")
    if dtype not in DTYPES:
        raise PumiceError(f"unsupported data type {dtype}; Precomputed layers hold {', '.join(DTYPES)}")
    if encoding not in ENCODINGS:
        raise PumiceError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    if channels < 1:
        raise PumiceError(f"a layer needs at least one channel, got {channels}")
    if layer_type == "segmentation":
        if dtype not in ("uint8", "uint16", "uint32", "uint64"):
            raise PumiceError(f"a segmentation must hold unsigned integers, not {dtype}; ingest it with --type image")
        if channels != 1:
            raise PumiceError(f"a segmentation has one channel, this data has {channels}; ingest it with --type image")
    if encoding == "jpeg" and (dtype != "uint8" or channels not in (1, 3)):
        raise PumiceError(f"jpeg encoding needs uint8 data with 1 or 3 channels, not {dtype} x {channels}; use --encoding raw or png")
    # 16-bit png is valid Precomputed, but CloudVolume's decoder (pyspng) misreads it as two
    # channels; Pumice writes only what every reader reads.
    if encoding == "png" and (dtype != "uint8" or channels > 4):
        raise PumiceError(f"png encoding needs uint8 data with at most 4 channels, not {dtype} x {channels} "
                          f"(CloudVolume cannot read 16-bit png chunks); use --encoding raw")
    if encoding == "compressed_segmentation" and dtype not in ("uint32", "uint64"):
        raise PumiceError(f"compressed_segmentation needs uint32 or uint64 data, not {dtype}; use --encoding raw")


def default_encoding(layer_type: str, dtype: str) -> str:
    if layer_type == "segmentation" and dtype in ("uint32", "uint64"):
        return "compressed_segmentation"
    return "raw"


def scale_key(resolution: Sequence[float]) -> str:
    """CloudVolume's key convention, e.g. ``4_4_40``."""
    return "_".join(str(int(r)) if float(r).is_integer() else f"{r:g}" for r in resolution)


@dataclass(frozen=True)
class Scale:
    key: str
    size: Vec
    resolution: tuple[float, float, float]
    voxel_offset: Vec
    chunk_size: Vec
    encoding: str
    sharding: dict | None = None
    compressed_segmentation_block_size: Vec | None = None
    extra: dict = field(default_factory=dict)

    @property
    def bounds(self) -> Bbox:
        return Bbox.from_shape(self.voxel_offset, self.size)

    @classmethod
    def from_json(cls, d: dict, where: str) -> "Scale":
        try:
            chunk_sizes = d["chunk_sizes"]
            if not chunk_sizes:
                raise ValueError("chunk_sizes is empty")
            known = {"key", "size", "resolution", "voxel_offset", "chunk_sizes", "encoding", "sharding",
                     "compressed_segmentation_block_size"}
            scale = cls(
                key=str(d["key"]),
                size=vec(d["size"]),
                resolution=tuple(float(r) for r in d["resolution"]),  # type: ignore[arg-type]
                voxel_offset=vec(d.get("voxel_offset", (0, 0, 0))),
                chunk_size=vec(chunk_sizes[0]),
                encoding=str(d["encoding"]),
                sharding=d.get("sharding"),
                compressed_segmentation_block_size=(
                    vec(d["compressed_segmentation_block_size"]) if "compressed_segmentation_block_size" in d else None
                ),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LayerError(f"{where}: malformed scale ({type(e).__name__}: {e}); fix or recreate the info") from None
        if len(scale.resolution) != 3 or any(not (r > 0 and math.isfinite(r)) for r in scale.resolution):
            raise LayerError(f"{where}: scale {scale.key} has a non-positive resolution {scale.resolution}")
        if any(s <= 0 for s in scale.size) or any(c <= 0 for c in scale.chunk_size):
            raise LayerError(f"{where}: scale {scale.key} has a non-positive size or chunk size")
        if scale.encoding not in ENCODINGS:
            raise LayerError(f"{where}: scale {scale.key} has unknown encoding {scale.encoding!r}")
        if scale.sharding is not None:
            check_sharding(scale.sharding, where)
        return scale

    def to_json(self) -> dict:
        d: dict[str, Any] = {
            "key": self.key,
            "size": list(self.size),
            "resolution": [int(r) if float(r).is_integer() else r for r in self.resolution],
            "voxel_offset": list(self.voxel_offset),
            "chunk_sizes": [list(self.chunk_size)],
            "encoding": self.encoding,
        }
        if self.encoding == "compressed_segmentation":
            d["compressed_segmentation_block_size"] = list(self.compressed_segmentation_block_size or (8, 8, 8))
        if self.sharding is not None:
            d["sharding"] = dict(self.sharding)
        d.update(self.extra)
        return d


def check_sharding(spec: dict, where: str) -> None:
    if not isinstance(spec, dict) or spec.get("@type") != SHARDING_TYPE:
        raise LayerError(f"{where}: sharding must be a {SHARDING_TYPE} object")
    for name in ("preshift_bits", "minishard_bits", "shard_bits"):
        if not isinstance(spec.get(name), int) or spec[name] < 0:
            raise LayerError(f"{where}: sharding.{name} must be a non-negative integer")
    if spec["preshift_bits"] + spec["minishard_bits"] + spec["shard_bits"] > 64:
        raise LayerError(f"{where}: sharding uses more than 64 bits")
    if spec.get("hash") not in ("identity", "murmurhash3_x86_128"):
        raise LayerError(f"{where}: sharding.hash must be identity or murmurhash3_x86_128")


@dataclass(frozen=True)
class LayerInfo:
    type: str
    data_type: str
    num_channels: int
    scales: tuple[Scale, ...]
    extra: dict = field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data_type)

    def scale(self, mip: int) -> Scale:
        if not 0 <= mip < len(self.scales):
            have = "mip 0" if len(self.scales) == 1 else f"mips 0-{len(self.scales) - 1}"
            raise LayerError(f"the layer has no mip {mip}; it has {have} (downsample it first)")
        return self.scales[mip]

    @classmethod
    def from_json(cls, d: Any, where: str = "info") -> "LayerInfo":
        if not isinstance(d, dict):
            raise LayerError(f"{where} is not a JSON object; it is not a Precomputed layer")
        if d.get("@type", "neuroglancer_multiscale_volume") != "neuroglancer_multiscale_volume":
            raise LayerError(f"{where} has @type {d.get('@type')!r}, not a Precomputed volume")
        layer_type = d.get("type")
        if layer_type not in LAYER_TYPES:
            raise LayerError(f"{where}: type must be image or segmentation, got {layer_type!r}")
        dtype = d.get("data_type")
        if dtype not in DTYPES:
            raise LayerError(f"{where}: unsupported data_type {dtype!r}; Pumice handles {', '.join(DTYPES)}")
        channels = d.get("num_channels", 1)
        if not isinstance(channels, int) or channels < 1:
            raise LayerError(f"{where}: num_channels must be a positive integer, got {channels!r}")
        if not isinstance(d.get("scales"), list) or not d["scales"]:
            raise LayerError(f"{where} has no scales")
        scales = tuple(Scale.from_json(s, where) for s in d["scales"])
        known = {"@type", "type", "data_type", "num_channels", "scales"}
        return cls(layer_type, dtype, channels, scales, {k: v for k, v in d.items() if k not in known})

    def to_json(self) -> dict:
        d = {
            "@type": "neuroglancer_multiscale_volume",
            "type": self.type,
            "data_type": self.data_type,
            "num_channels": self.num_channels,
            "scales": [s.to_json() for s in self.scales],
        }
        d.update(self.extra)
        return d

    def replace_scale(self, mip: int, scale: Scale) -> "LayerInfo":
        scales = list(self.scales)
        scales[mip] = scale
        return replace(self, scales=tuple(scales))


def new_info(*, layer_type: str, dtype: str, num_channels: int, size: Sequence[int], resolution: Sequence[float],
             voxel_offset: Sequence[int], chunk_size: Sequence[int], encoding: str, sharded: bool = False) -> LayerInfo:
    """An info with one scale, validated."""
    check_encoding(layer_type, dtype, encoding, num_channels)
    if any(s <= 0 for s in size):
        raise PumiceError(f"the volume is empty (size {','.join(map(str, size))}); a layer needs at least one voxel "
                          f"along every axis: check the input's shape or --bounds")
    if any(c <= 0 for c in chunk_size):
        raise PumiceError(f"--chunk-size must be positive in every axis, got {','.join(map(str, chunk_size))}")
    if any(r <= 0 for r in resolution):
        raise PumiceError(f"--resolution must be positive in every axis, got {','.join(map(str, resolution))}")
    sharding = None
    if sharded:
        sharding = choose_volume_sharding(size, chunk_size, np.dtype(dtype).itemsize * num_channels, encoding)
    scale = Scale(
        key=scale_key(resolution),
        size=vec(size),
        resolution=tuple(float(r) for r in resolution),  # type: ignore[arg-type]
        voxel_offset=vec(voxel_offset),
        chunk_size=vec(chunk_size),
        encoding=encoding,
        sharding=sharding,
        compressed_segmentation_block_size=(8, 8, 8) if encoding == "compressed_segmentation" else None,
    )
    return LayerInfo(layer_type, dtype, num_channels, (scale,))


def write_unit(scale: Scale) -> Vec:
    """The box that must be written whole: a chunk, or for sharded scales the box of one shard.

    With identity hashing, a shard holds the chunks whose compressed Morton codes share their
    high bits, so it is an aligned box of 2^k chunks per axis; the low preshift+minishard bits
    of the code say how many of each axis's bits stay inside one shard.
    """
    if scale.sharding is None:
        return scale.chunk_size
    if scale.sharding.get("hash") != "identity":
        return scale.size  # hashed shards scatter chunks: only the whole scale is safe
    grid = [math.ceil(s / c) for s, c in zip(scale.size, scale.chunk_size)]
    bits = [max(0, math.ceil(math.log2(g))) if g > 1 else 0 for g in grid]
    inside = scale.sharding["preshift_bits"] + scale.sharding["minishard_bits"]
    per_axis = [0, 0, 0]
    level = 0
    while inside > 0 and any(per_axis[d] < bits[d] for d in range(3)):
        for d in range(3):
            if inside > 0 and level < bits[d]:
                per_axis[d] += 1
                inside -= 1
        level += 1
    return vec([min(c * 2**k, c * g) for c, k, g in zip(scale.chunk_size, per_axis, grid)])
