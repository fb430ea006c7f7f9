"""Neuroglancer's uint64 sharded format: which shard and minishard an id belongs to.

Shared by meshes (our own shard writer) and skeletons (TensorStore's sharded kvstore writes them).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def hashed(ids: Iterable[int], spec: dict) -> np.ndarray:
    """The sharding hash of each id (after preshift), as uint64."""
    values = [int(i) >> spec.get("preshift_bits", 0) for i in ids]
    if spec["hash"] == "identity":
        return np.array(values, dtype=np.uint64)
    import mmh3

    mask = (1 << 64) - 1
    return np.array([mmh3.hash128(v.to_bytes(8, "little"), 0, False, signed=False) & mask for v in values], dtype=np.uint64)


def shard_numbers(ids: Iterable[int], spec: dict) -> np.ndarray:
    h = hashed(ids, spec)
    return (h >> np.uint64(spec["minishard_bits"])) & np.uint64((1 << spec["shard_bits"]) - 1)


def shard_name(shard: int, spec: dict) -> str:
    digits = -(-spec["shard_bits"] // 4)
    return f"{shard:0{digits}x}.shard" if digits else "0.shard"


def uint64_sharding(shard_bits: int, minishard_bits: int, data_encoding: str = "raw") -> dict:
    return {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0, "hash": "murmurhash3_x86_128",
            "minishard_bits": minishard_bits, "shard_bits": shard_bits, "minishard_index_encoding": "gzip",
            "data_encoding": data_encoding}


def partition_bits(blocks: int, voxels: float, voxels_per_object: float, sharded: bool) -> tuple[int, int]:
    """Shard (= merge partition) bits from the forge block count, two blocks per partition; minishard
    bits from an estimate of the objects per shard, about 64 per minishard."""
    import math

    bits = max(0, math.ceil(math.log2(max(1, blocks // 2))))
    per_shard = voxels / voxels_per_object / (1 << bits)
    minishard_bits = min(12, max(0, math.ceil(math.log2(max(1.0, per_shard / 64))))) if sharded else 0
    return bits, minishard_bits
