"""Neuroglancer's uint64 sharded format: the one place that builds sharding specs, names shard
files, and says which shard and minishard a key belongs to.

Volume scales use identity hashing of compressed Morton codes (a shard is an aligned box of 2^k
chunks, so tasks own whole shards); meshes and skeletons hash object ids with murmurhash (our own
shard writer for meshes, TensorStore's sharded kvstore for skeletons).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

SHARDING_TYPE = "neuroglancer_uint64_sharded_v1"


def spec(*, hash: str, preshift_bits: int, minishard_bits: int, shard_bits: int, data_encoding: str) -> dict:
    """A sharding spec, its keys in the order Pumice always writes them."""
    return {"@type": SHARDING_TYPE, "preshift_bits": preshift_bits, "hash": hash, "minishard_bits": minishard_bits,
            "shard_bits": shard_bits, "minishard_index_encoding": "gzip", "data_encoding": data_encoding}


def volume_sharding(inside_bits: int, grid_bits: int, data_encoding: str) -> dict:
    """Identity hashing for a volume scale: ``inside_bits`` of the chunk grid's ``grid_bits`` inside a
    shard (minishards of up to 8 chunks: a small index to read per chunk)."""
    preshift = min(inside_bits, 3)
    return spec(hash="identity", preshift_bits=preshift, minishard_bits=inside_bits - preshift,
                shard_bits=max(0, grid_bits - inside_bits), data_encoding=data_encoding)


def volume_data_encoding(encoding: str) -> str:
    """Chunks already compressed (jpeg, png) are stored raw in shards; the others gzipped."""
    return "raw" if encoding in ("jpeg", "png") else "gzip"


def grid_bits(size: Sequence[int], chunk: Sequence[int]) -> int:
    """Bits of the compressed Morton code of a scale's chunk grid."""
    return sum(max(0, math.ceil(math.log2(math.ceil(s / c)))) for s, c in zip(size, chunk))


def choose_volume_sharding(size: Sequence[int], chunk: Sequence[int], bytes_per_voxel: int, encoding: str,
                           shard_bytes: int = 256 * 1024 * 1024) -> dict:
    """Shard parameters for a volume scale: the most chunks per shard whose uncompressed bytes stay
    within ``shard_bytes``."""
    bits = grid_bits(size, chunk)
    chunk_bytes = int(np.prod(chunk)) * bytes_per_voxel
    inside = max(0, min(bits, int(math.floor(math.log2(max(1, shard_bytes // chunk_bytes))))))
    return volume_sharding(inside, bits, volume_data_encoding(encoding))


def object_sharding(shard_bits: int, minishard_bits: int, data_encoding: str = "raw") -> dict:
    """Murmurhash sharding of object ids (meshes, skeletons)."""
    return spec(hash="murmurhash3_x86_128", preshift_bits=0, minishard_bits=minishard_bits, shard_bits=shard_bits,
                data_encoding=data_encoding)


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
    """The file of shard number ``shard``: lowercase hex, as many digits as the shard bits need."""
    digits = -(-spec["shard_bits"] // 4)
    return f"{shard:0{digits}x}.shard" if digits else "0.shard"


def partition_bits(blocks: int, voxels: float, voxels_per_object: float, sharded: bool) -> tuple[int, int]:
    """Shard (= merge partition) bits from the forge block count, two blocks per partition; minishard
    bits from an estimate of the objects per shard, about 64 per minishard."""
    import math

    bits = max(0, math.ceil(math.log2(max(1, blocks // 2))))
    per_shard = voxels / voxels_per_object / (1 << bits)
    minishard_bits = min(12, max(0, math.ceil(math.log2(max(1.0, per_shard / 64))))) if sharded else 0
    return bits, minishard_bits
