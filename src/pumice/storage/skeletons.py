"""Skeletons of Neuroglancer Precomputed: the info, one object's bytes, and the sharded kvstore.

Objects are encoded and decoded by osteoid (the Skeleton class kimimaro returns): vertex count,
edge count, float32 positions in nm, uint32 edge pairs, then each vertex attribute in the order
the info lists them. Sharded skeleton files are written by TensorStore's sharded kvstore.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

import numpy as np

SKELETON_TYPE = "neuroglancer_skeletons"
IDENTITY = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]


def vertex_attributes(cross_sections: bool = False) -> list[dict]:
    """radius (nm); optionally the cross-sectional area (nm^2) of the object's section normal to
    the skeleton at each vertex. float32 only: Neuroglancer (2.41) refuses a whole skeleton layer
    whose info lists a uint8 attribute ("Data type not supported by WebGL"), so CloudVolume's
    uint8 vertex_types (all 0 from kimimaro anyway) is left out."""
    out = [{"id": "radius", "data_type": "float32", "num_components": 1}]
    if cross_sections:
        out.append({"id": "cross_sectional_area", "data_type": "float32", "num_components": 1})
    return out


def skeleton_info(attributes: list[dict], sharding: dict | None = None, extra: dict | None = None) -> dict:
    info: dict[str, Any] = {"@type": SKELETON_TYPE, "transform": IDENTITY, "vertex_attributes": attributes,
                            "spatial_index": None}
    if sharding is not None:
        info["sharding"] = sharding
    info.update(extra or {})
    return info


def encode(skeleton, attributes: list[dict]) -> bytes:
    skeleton.extra_attributes = attributes
    for attribute in attributes:  # an attribute the skeleton lacks (e.g. an empty one) is written as zeros
        if getattr(skeleton, attribute["id"], None) is None:
            setattr(skeleton, attribute["id"], np.zeros(len(skeleton.vertices), dtype=attribute["data_type"]))
    return skeleton.to_precomputed()


def decode(blob: bytes, attributes: list[dict], label: int | None = None):
    from osteoid import Skeleton

    return Skeleton.from_precomputed(blob, segid=label, vertex_attributes=attributes)


def pack(encoded: Iterable[tuple[int, bytes]]) -> bytes:
    """Forge's intermediate file: a count, (id, size) pairs, then the encoded skeletons."""
    items = list(encoded)
    table = np.array([(label, len(blob)) for label, blob in items], dtype="<u8").reshape(-1, 2)
    return struct.pack("<Q", len(items)) + table.tobytes() + b"".join(blob for _, blob in items)


def unpack(blob: bytes):
    count = struct.unpack_from("<Q", blob)[0]
    table = np.frombuffer(blob, dtype="<u8", count=2 * count, offset=8).reshape(count, 2)
    position = 8 + 16 * count
    for label, size in table.tolist():
        yield int(label), blob[position : position + size]
        position += size


def shard_key(label: int) -> bytes:
    return struct.pack(">Q", int(label))


def sharded_kvstore(kvstore_spec: dict, spec: dict):
    """TensorStore's neuroglancer_uint64_sharded kvstore over a skeleton directory."""
    import tensorstore as ts

    return ts.KvStore.open({"driver": "neuroglancer_uint64_sharded", "base": kvstore_spec, "metadata": spec}).result()
