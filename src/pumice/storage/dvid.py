"""DVID's formats, for writing what a DVID labelmap instance loads (Pumice cannot run DVID itself).

- **Block keys**: a 64^3 block's coordinates (voxel // 64, floor) packed as ``Z<<42 | Y<<21 | X``,
  21 bits each, the top bit of the uint64 zero. DVID's ``labels.EncodeBlockIndex`` stores a negative
  coordinate as sign and magnitude (bit 20 set, the magnitude in bits 0-19); some Python readers
  (neuclease) sign-extend instead, so negative block coordinates read back differently there.
- **LabelIndex / LabelIndices** (``labelops.proto``): per label, each block's supervoxel counts.
- **MappingOp / MappingOps**: what ``POST .../mappings`` takes (a body and its supervoxels).

The messages are built at run time from their field numbers with the protobuf runtime, so no
generated code or ``protoc`` is needed; tests decode them with classes ``protoc`` generates from a
``.proto`` file of their own.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import numpy as np

BLOCK = 64  # DVID labelmap's block edge, voxels
_MAGNITUDE = (1 << 20) - 1
_SIGN = 1 << 20


def block_keys(block_coords: np.ndarray) -> np.ndarray:
    """DVID block keys (uint64) of N x 3 block coordinates (x, y, z: voxel // 64)."""
    coords = np.asarray(block_coords, dtype=np.int64).reshape(-1, 3)
    if len(coords) and np.abs(coords).max() > _MAGNITUDE:
        raise ValueError(f"block coordinates beyond +-{_MAGNITUDE} do not fit DVID's 21-bit block keys")
    packed = np.where(coords < 0, _SIGN, 0) | np.abs(coords)
    packed = packed.astype(np.uint64)
    return (packed[:, 2] << np.uint64(42)) | (packed[:, 1] << np.uint64(21)) | packed[:, 0]


def block_coords(keys: np.ndarray) -> np.ndarray:
    """N x 3 block coordinates (x, y, z) of DVID block keys."""
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
    out = np.empty((len(keys), 3), dtype=np.int64)
    for axis, shift in enumerate((0, 21, 42)):
        field = (keys >> np.uint64(shift)).astype(np.int64) & ((1 << 21) - 1)
        out[:, axis] = np.where(field & _SIGN, -(field & _MAGNITUDE), field & _MAGNITUDE)
    return out


# -- protobuf messages ----------------------------------------------------------------------------
# (message, [(field, number, type, label, message type or None)]): labelops.proto's field numbers.
_UINT64, _UINT32, _STRING, _MESSAGE = 4, 13, 9, 11  # FieldDescriptorProto.Type
_OPTIONAL, _REPEATED = 1, 3
_MESSAGES = [
    ("SVCount", [("counts", 1, _MESSAGE, _REPEATED, "SVCount.CountsEntry"), ("surface_mutid", 2, _UINT64, _OPTIONAL, None)],
     ("CountsEntry", _UINT64, _UINT32)),
    ("LabelIndex", [("blocks", 1, _MESSAGE, _REPEATED, "LabelIndex.BlocksEntry"), ("label", 2, _UINT64, _OPTIONAL, None),
                    ("last_mutid", 3, _UINT64, _OPTIONAL, None), ("last_mod_time", 4, _STRING, _OPTIONAL, None),
                    ("last_mod_user", 5, _STRING, _OPTIONAL, None), ("last_mod_app", 6, _STRING, _OPTIONAL, None)],
     ("BlocksEntry", _UINT64, "SVCount")),
    ("LabelIndices", [("indices", 1, _MESSAGE, _REPEATED, "LabelIndex")], None),
    ("MappingOp", [("mutid", 1, _UINT64, _OPTIONAL, None), ("mapped", 2, _UINT64, _OPTIONAL, None),
                   ("original", 3, _UINT64, _REPEATED, None)], None),
    ("MappingOps", [("mappings", 1, _MESSAGE, _REPEATED, "MappingOp")], None),
]
_PACKAGE = "pumice.dvid"


@functools.cache
def messages() -> dict[str, Any]:
    """The message classes by name: SVCount, LabelIndex, LabelIndices, MappingOp, MappingOps."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="pumice_dvid_labelops.proto", package=_PACKAGE, syntax="proto3")
    for name, fields, entry in _MESSAGES:
        message = proto.message_type.add(name=name)
        for field, number, kind, label, type_name in fields:
            spec = message.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                spec.type_name = f".{_PACKAGE}.{type_name}"
        if entry:  # a map<k, v> field is a repeated nested entry message with map_entry set
            entry_name, key_type, value_type = entry
            nested = message.nested_type.add(name=entry_name)
            nested.options.map_entry = True
            nested.field.add(name="key", number=1, type=key_type, label=_OPTIONAL)
            value = nested.field.add(name="value", number=2, label=_OPTIONAL,
                                     type=_MESSAGE if isinstance(value_type, str) else value_type)
            if isinstance(value_type, str):
                value.type_name = f".{_PACKAGE}.{value_type}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name, _, _ in _MESSAGES}


def label_index(label: int, keys: np.ndarray, svs: np.ndarray, counts: np.ndarray, *, mod_time: str = "",
                user: str = "", app: str = "pumice") -> Any:
    """One LabelIndex: rows (block key, supervoxel, voxels) of one label."""
    index = messages()["LabelIndex"](label=int(label), last_mod_time=mod_time, last_mod_user=user, last_mod_app=app)
    keys, svs, counts = (np.asarray(a) for a in (keys, svs, counts))
    order = np.lexsort((svs, keys))
    keys, svs, counts = keys[order], svs[order], counts[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    for start, stop in zip(starts, [*starts[1:], len(keys)]):
        block = index.blocks[int(keys[start])]
        block.counts.update(zip(svs[start:stop].tolist(), counts[start:stop].tolist()))
    return index


def label_indices_bytes(indices: Iterable[Any]) -> bytes:
    batch = messages()["LabelIndices"]()
    batch.indices.extend(indices)
    return batch.SerializeToString()


def mapping_ops_bytes(bodies: Sequence[int], supervoxels: Sequence[np.ndarray]) -> bytes:
    """MappingOps: each body with its supervoxels (what ``POST .../mappings`` loads)."""
    ops = messages()["MappingOps"]()
    for body, svs in zip(bodies, supervoxels):
        ops.mappings.add(mutid=0, mapped=int(body), original=np.asarray(svs, dtype=np.uint64).tolist())
    return ops.SerializeToString()
