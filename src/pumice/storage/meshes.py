"""Mesh formats of Neuroglancer Precomputed: legacy fragments, multi-resolution Draco, sharded files.

Encoders only (readers in tests are the real ones: CloudVolume, TensorStore, Neuroglancer). The
sharded writer is our own because the multi-resolution mesh format puts each object's fragment
data immediately before its manifest in the shard file, a layout TensorStore's sharded kvstore
cannot produce (it writes exactly the value it is given).
"""

from __future__ import annotations

import gzip
import struct
from typing import Sequence

import numpy as np

from .sharding import hashed

LEGACY_INFO = {"@type": "neuroglancer_legacy_mesh"}
MULTIRES_TYPE = "neuroglancer_multilod_draco"
QUANTIZATION_BITS = 16


# -- legacy single-resolution -------------------------------------------------------------------
def legacy_fragment(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """uint32 vertex count, float32 x,y,z per vertex (nm), uint32 triangle indices."""
    return (struct.pack("<I", len(vertices)) + np.ascontiguousarray(vertices, dtype="<f4").tobytes()
            + np.ascontiguousarray(faces, dtype="<u4").tobytes())


def legacy_manifest(fragments: Sequence[str]) -> dict:
    return {"fragments": list(fragments)}


# -- sharding ------------------------------------------------------------------------------------
def encode_shard(entries: dict[int, tuple[bytes, bytes]], spec: dict) -> bytes:
    """One shard file: ``entries`` maps id -> (data placed before the value, the value).

    The minishard index points at the value; the prefix (a mesh's fragments) lies just before it.
    """
    ids = sorted(entries)
    minishards = hashed(ids, spec) & np.uint64((1 << spec["minishard_bits"]) - 1)
    data = bytearray()
    indices: list[bytes] = []
    for m in range(1 << spec["minishard_bits"]):
        members = [i for i, ms in zip(ids, minishards) if int(ms) == m]
        rows = np.zeros((3, len(members)), dtype="<u8")
        previous_end = 0
        for k, key in enumerate(members):
            prefix, value = entries[key]
            data += prefix
            start = len(data)
            data += value
            rows[0, k] = key - (members[k - 1] if k else 0)
            rows[1, k] = start - previous_end
            rows[2, k] = len(value)
            previous_end = start + len(value)
        raw = rows.tobytes()
        indices.append(gzip.compress(raw, mtime=0) if spec.get("minishard_index_encoding") == "gzip" else raw)
    table = np.zeros((len(indices), 2), dtype="<u8")
    position = len(data)
    for m, index in enumerate(indices):
        table[m] = (position, position + len(index))
        position += len(index)
    return table.tobytes() + bytes(data) + b"".join(indices)


def decode_shard(shard: bytes, spec: dict) -> dict[int, tuple[int, int]]:
    """id -> (start, end) of each value, as absolute offsets in the shard file."""
    count = 1 << spec["minishard_bits"]
    header = 16 * count
    table = np.frombuffer(shard[:header], dtype="<u8").reshape(count, 2)
    out: dict[int, tuple[int, int]] = {}
    for start, end in table:
        if end <= start:
            continue
        raw = shard[header + int(start) : header + int(end)]
        if spec.get("minishard_index_encoding") == "gzip":
            raw = gzip.decompress(raw)
        rows = np.frombuffer(raw, dtype="<u8").reshape(3, -1)
        ids = np.cumsum(rows[0])
        position = 0
        for key, gap, size in zip(ids, rows[1], rows[2]):
            begin = position + int(gap)
            out[int(key)] = (header + begin, header + begin + int(size))
            position = begin + int(size)
    return out


# -- multi-resolution Draco ------------------------------------------------------------------------
def multires_info(sharding: dict | None, extra: dict | None = None) -> dict:
    info = {"@type": MULTIRES_TYPE, "vertex_quantization_bits": QUANTIZATION_BITS,
            "transform": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], "lod_scale_multiplier": 1.0}
    if sharding is not None:
        info["sharding"] = sharding
    info.update(extra or {})
    return info


def _morton(positions: np.ndarray) -> np.ndarray:
    """Z-curve order key of integer x, y, z positions (x in the lowest bit)."""
    code = np.zeros(len(positions), dtype=np.uint64)
    for bit in range(21):
        for axis in range(3):
            code |= ((positions[:, axis].astype(np.uint64) >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return code


def _draco(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, size: np.ndarray) -> bytes:
    import DracoPy

    top = (1 << QUANTIZATION_BITS) - 1
    q = np.clip(np.round((vertices - origin) / size * top), 0, top)
    # Triangles whose corners quantize to one point (slivers from cutting, or tiny ones): Draco
    # drops them anyway, and refuses a fragment made only of them. Empty fragments are valid.
    corners = q[faces]
    flat = ((corners[:, 0] == corners[:, 1]).all(1) | (corners[:, 1] == corners[:, 2]).all(1)
            | (corners[:, 2] == corners[:, 0]).all(1))
    if flat.all():
        return b""
    faces = faces[~flat]
    return DracoPy.encode(q.astype(np.float32), faces.astype(np.uint32), quantization_bits=QUANTIZATION_BITS,
                          quantization_range=top, quantization_origin=[0, 0, 0], compression_level=5)


def _snap_to_grid(vertices: np.ndarray, origin: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Vertices within a hair of a grid plane moved onto it, so cutting makes no slivers (seen on
    a flat cap that simplification left 1e-4 nm either side of a plane)."""
    relative = (vertices - origin) / grid
    nearest = np.round(relative)
    return np.where(np.abs(relative - nearest) < 1e-4, origin + nearest * grid, vertices)


def cut_into_cells(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray,
                   grid: np.ndarray) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """Split a mesh at every plane of the grid (``origin`` + k * ``grid``) and group its triangles
    by the cell holding each: {cell: (vertices, faces)}.

    A triangle crossing a plane becomes two (a corner on the plane) or three; the new vertex on
    an edge is computed once from the edge's two vertices, so the triangles on both sides of an
    edge share it and the pieces weld exactly. Planes are taken one at a time over all triangles,
    so an edge crossing several planes is cut at each by the same computation from both sides.
    Not zmesh.chunk_mesh: it left a zero-area sliver in the neighbouring cell and no triangle in
    its own for a triangle with an edge on one plane and a corner on another, opening holes.
    """
    v = _snap_to_grid(np.asarray(vertices, dtype=np.float64), origin, grid)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    tolerance = 1e-7
    for axis in range(3):
        position = (v[:, axis] - origin[axis]) / grid[axis]
        if not len(f):
            break
        corners = position[f]
        planes = np.arange(np.floor(corners.min()) + 1, np.ceil(corners.max()))
        for plane in planes:
            position = (v[:, axis] - origin[axis]) / grid[axis]
            side = position[f] - plane
            side = np.where(np.abs(side) < tolerance, 0.0, np.sign(side))
            crossing = (side < 0).any(axis=1) & (side > 0).any(axis=1)
            if not crossing.any():
                continue
            tri, sides = f[crossing], side[crossing]
            # Rotate each triangle (keeping its orientation) so its pivot comes first: the corner on
            # the plane when there is one, else the corner alone on its side.
            on_plane = sides == 0
            alone = (sides != np.roll(sides, 1, axis=1)) & (sides != np.roll(sides, -1, axis=1))
            pivot = np.where(on_plane.any(axis=1), np.argmax(on_plane, axis=1), np.argmax(alone, axis=1))
            order = (pivot[:, None] + np.arange(3)) % 3
            tri = np.take_along_axis(tri, order, axis=1)
            one_cut = np.take_along_axis(on_plane, order, axis=1)[:, 0]
            # Edges to cut: b-c for a corner on the plane, a-b and a-c otherwise.
            a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
            edges = np.concatenate([np.stack([b[one_cut], c[one_cut]], 1),
                                    np.stack([a[~one_cut], b[~one_cut]], 1), np.stack([a[~one_cut], c[~one_cut]], 1)])
            low, high = edges.min(axis=1), edges.max(axis=1)
            keys, inverse = np.unique(np.stack([low, high], 1), axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            p, q = v[keys[:, 0]], v[keys[:, 1]]
            t = (plane - position[keys[:, 0]]) / (position[keys[:, 1]] - position[keys[:, 0]])
            new = p + (q - p) * t[:, None]
            new[:, axis] = origin[axis] + plane * grid[axis]
            ids = len(v) + inverse
            v = np.concatenate([v, new])
            n1 = int(one_cut.sum())
            x = ids[:n1]
            ab, ac = ids[n1 : n1 + int((~one_cut).sum())], ids[n1 + int((~one_cut).sum()) :]
            a1, b1, c1 = a[one_cut], b[one_cut], c[one_cut]
            a2, b2, c2 = a[~one_cut], b[~one_cut], c[~one_cut]
            pieces = [np.stack([a1, b1, x], 1), np.stack([a1, x, c1], 1),
                      np.stack([a2, ab, ac], 1), np.stack([ab, b2, c2], 1), np.stack([ab, c2, ac], 1)]
            f = np.concatenate([f[~crossing], *pieces])
    out: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    if not len(f):
        return out
    cell = np.floor(((v[f].mean(axis=1)) - origin) / grid).astype(np.int64)
    order = np.lexsort(cell.T[::-1])
    cell, f = cell[order], f[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(cell, axis=0) != 0).any(axis=1)])
    for start, end in zip(starts, np.r_[starts[1:], len(f)]):
        used, local = np.unique(f[start:end], return_inverse=True)
        out[tuple(int(c) for c in cell[start])] = (v[used], local.reshape(-1, 3))
    return out


def multires_mesh(lods: Sequence, lod_scale: float, grid_origin: Sequence[float], chunk: Sequence[float]) -> tuple[bytes, bytes]:
    """Encode one object: (fragment data, manifest) from its meshes, finest first.

    Level 0's octree nodes are ``chunk`` (nm) on a grid from ``grid_origin``; forge's blocks on
    that grid leave few triangles crossing a node boundary (simplified caps at the volume's low
    faces), which are cut. Every coarser level is cut on its children's grid (the format requires
    that no triangle of a level above 0 crosses that 2x2x2 partition), and each node holds the
    pieces of its 8 children. Every node's parent is listed, empty if need be, so the viewer's
    descent from the top reaches every fragment.
    """
    num_lods = len(lods)
    chunk = np.asarray(chunk, dtype=np.float64)
    everything = np.concatenate([m.vertices for m in lods if len(m.vertices)]).astype(np.float64)
    # The object's own origin: the grid node (at the coarsest level) holding its lowest corner.
    top = chunk * (1 << (num_lods - 1))
    lo = np.asarray(grid_origin, dtype=np.float64) + np.floor((everything.min(axis=0) - grid_origin) / top) * top
    per_lod: list[dict[tuple, bytes]] = []
    for lod, mesh in enumerate(lods):
        pieces: dict[tuple, tuple] = {}
        if len(mesh.faces):
            grid = chunk * (1 << max(lod - 1, 0))
            for child, piece in cut_into_cells(mesh.vertices, mesh.faces, lo, grid).items():
                pieces.setdefault(tuple(int(c) >> (1 if lod else 0) for c in child), []).append(piece)
        size = chunk * (1 << lod)
        encoded = {}
        for node, parts in pieces.items():
            v = np.concatenate([p[0] for p in parts]).astype(np.float64)
            f, offset = [], 0
            for p in parts:
                f.append(p[1] + offset)
                offset += len(p[0])
            encoded[node] = _draco(v, np.concatenate(f), lo + np.array(node) * size, size)
        if per_lod:  # parents of the finer level's nodes, empty where this level has nothing
            for node in per_lod[-1]:
                encoded.setdefault(tuple(c >> 1 for c in node), b"")
        per_lod.append(encoded)

    manifest = [struct.pack("<3f", *chunk), struct.pack("<3f", *lo), struct.pack("<I", num_lods),
                np.array([lod_scale * (1 << i) for i in range(num_lods)], dtype="<f4").tobytes(),
                np.zeros((num_lods, 3), dtype="<f4").tobytes(),
                np.array([len(n) for n in per_lod], dtype="<u4").tobytes()]
    data = bytearray()
    for nodes in per_lod:
        positions = np.array(sorted(nodes), dtype=np.int64).reshape(-1, 3)
        order = np.argsort(_morton(positions), kind="stable")
        positions = positions[order]
        manifest.append(np.ascontiguousarray(positions.T, dtype="<u4").tobytes())
        sizes = []
        for p in positions:
            blob = nodes[tuple(int(c) for c in p)]
            data += blob
            sizes.append(len(blob))
        manifest.append(np.array(sizes, dtype="<u4").tobytes())
    return bytes(data), b"".join(manifest)


def fragment_data_size(manifest: bytes) -> int:
    """Total bytes of the fragments a multi-resolution manifest lists (they precede it in a shard)."""
    num_lods = struct.unpack_from("<I", manifest, 24)[0]
    position = 28 + 4 * num_lods + 12 * num_lods
    counts = np.frombuffer(manifest, dtype="<u4", count=num_lods, offset=position)
    position += 4 * num_lods
    total = 0
    for n in counts.tolist():
        position += 12 * n
        total += int(np.frombuffer(manifest, dtype="<u4", count=n, offset=position).sum())
        position += 4 * n
    return total
