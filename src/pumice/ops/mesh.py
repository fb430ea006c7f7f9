"""Mesh: forge surface fragments per block with zmesh, then merge them into one mesh per object.

forge: each task meshes its block plus one voxel on the high side (so neighbouring fragments share
their boundary vertices exactly and weld without gaps), closes objects at the volume's faces,
simplifies within ``max_error`` nm (zmesh keeps block-boundary vertices fixed) and writes its
fragments grouped by merge partition: ``<mesh dir>/.forge/<job>/<partition>/<block>``. These files
are the spatial index: which ids occur in which block, already sorted by who needs them. For the
sharded format it also makes the coarser levels of detail there: each fragment simplified again
by zmesh, from the level below, within the level's error (``lod_scale * 2**level`` nm, what the
manifest's ``lod_scales`` tell Neuroglancer; see ``_coarser``). A fragment is small: the levels
cost a few percent of level 0's simplification.

merge: one task per partition (a shard, in the sharded format) reads only its own directory,
welds each object's fragments and writes either legacy files (``<id>:0`` manifest plus one
fragment) or the multi-resolution sharded Draco format with ``lods`` levels of detail. Partition =
the sharding hash of the id, so a merge task's memory is bounded by its partition, never the
volume. ``.pumice/objects/<partition>.json`` records which objects are meshed; runs with
``ids`` add or replace those objects and keep the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, choose_block, count_grid_blocks, format_bytes, format_vec, vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import meshes, records, sharding, urls
from ..storage.kv import open_kv
from ..storage.layer import Layer
from . import objects, stats

DEFAULT_MEMORY = 768 * 2**20
FORGE_BYTES_PER_VOXEL = 40  # the block, its padded copy and zmesh's working memory (measured on pinky40)
# Default forge block: zmesh's simplifier costs more per triangle as objects grow (cache), while
# bigger blocks leave fewer triangles pinned at block faces. 128^3 balanced the two on pinky40
# (a 256^3 region: 64^3 blocks 21 s / 1.15M triangles, 128^3 28 s / 0.99M, 256^3 42 s / 0.90M).
FORGE_VOXELS = 128**3
LEGACY_FRAGMENT = "{id}:0:all"
DEFAULT_REDUCTION = 100  # zmesh's triangle target (1/100): the error bound stops it first
LOD_GRID = 64  # coarser levels of detail: zmesh simplifies them on a grid this much finer (see _coarser)


@register("mesh.forge")
@dataclass(frozen=True)
class MeshForgeTask(Task):
    layer: str
    mip: int
    bbox: tuple
    work: str  # the job's forge directory, relative to the layer
    partition_bits: int
    minishard_bits: int
    max_error: float = 40.0
    simplify: bool = True
    reduction: int = DEFAULT_REDUCTION
    dust_threshold: int = 0
    ids: tuple = ()
    exclude_ids: tuple = ()
    fill_missing: bool = False
    dust_global: int = 0  # objects under this many voxels in the volume (stats' counts) are not meshed
    mapping: str | None = None  # staged supervoxel -> body table: one mesh per body
    lods: int = 1  # levels of detail to forge (sharded format)
    lod_scale: float = 1.0  # level k >= 1 is simplified within lod_scale * 2**k nm

    def run(self) -> dict[str, Any]:
        import fastremap

        started = time.perf_counter()
        layer = Layer.open(self.layer)
        scale = layer.info.scale(self.mip)
        box = Bbox.from_list(self.bbox)
        bounds = scale.bounds
        labels, read_box = objects.read_block(layer, self.mip, box, ids=self.ids, exclude_ids=self.exclude_ids,
                                              fill_missing=self.fill_missing, mapping=self.mapping)
        if self.dust_global:
            labels, _ = stats.without_small_objects(labels, self.layer, self.mip, self.dust_global)
        # Voxels of each object in this block's own part (not the overlap), for --dust-global.
        own = labels[: box.shape[0], : box.shape[1], : box.shape[2]]
        own_ids, own_counts = fastremap.unique(own, return_counts=True)
        own_voxels = dict(zip(own_ids.tolist(), own_counts.tolist()))
        if self.dust_threshold:
            present, counts = fastremap.unique(labels, return_counts=True)
            small = present[(counts < self.dust_threshold) & (present != 0)]
            if len(small):
                labels = fastremap.mask(labels, small.tolist(), in_place=True)
        # Close objects at the volume's faces: a ring of background where the block meets them.
        before = [1 if lo == blo else 0 for lo, blo in zip(read_box.minpt, bounds.minpt)]
        after = [1 if hi == bhi else 0 for hi, bhi in zip(read_box.maxpt, bounds.maxpt)]
        if any(before) or any(after):
            labels = np.pad(labels, list(zip(before, after)))
        origin = np.array(read_box.minpt, dtype=np.float64) - before
        resolution = np.array(scale.resolution, dtype=np.float64)

        fragments = []
        clock: dict[str, float] = {"marching_cubes_seconds": 0.0, "simplify_seconds": 0.0}
        errors = [self.lod_scale * 2**level for level in range(1, self.lods)]
        for label, corner, levels in _mesh_objects(labels, tuple(scale.resolution), self.reduction if self.simplify else 0,
                                                   self.max_error if self.simplify else 0, clock, errors):
            for level, mesh in enumerate(levels):
                fragments.append((label, own_voxels.get(label, 0) if level == 0 else 0, level,
                                  _to_global(mesh.vertices, origin + corner, resolution), mesh.faces))
        del labels

        objects.write_fragments(open_kv(self.layer), self.work, box, fragments, self.partition_bits, self.minishard_bits,
                                pack_fragments)
        return {"voxels": box.size, "fragments": sum(f[2] == 0 for f in fragments),
                "fragment_triangles": sum(len(f[4]) for f in fragments if f[2] == 0),
                "seconds": time.perf_counter() - started, **clock}


def _mesh_objects(labels: np.ndarray, resolution: tuple, reduction: int, max_error: float, clock: dict[str, float],
                  level_errors: Sequence[float] = ()):
    """(label, crop corner in voxels, [mesh of each level]) for each object, in label order, each
    meshed and simplified by a fresh zmesh.Mesher on its own bounding box (plus one voxel of
    background). Level 0 is simplified within ``max_error``; level k within ``level_errors[k - 1]``,
    from level k - 1 (see ``_coarser``).

    Not one Mesher for the whole block: its simplifier keeps vertex state from the previous
    object (the vertex table is resized, not cleared), so earlier objects' open-edge counts mark
    later objects' vertices as border, which cannot collapse. On pinky40 a shared Mesher left
    23-33% more triangles for the same max error, and took as long or longer.
    """
    import cc3d
    import fastremap
    import zmesh

    dense, mapping = fastremap.renumber(labels, in_place=True)  # cc3d sizes its tables by the largest id
    original = {int(v): int(k) for k, v in mapping.items()}
    boxes = cc3d.statistics(dense)["bounding_boxes"]
    objects = sorted((original[i], i, box) for i, box in enumerate(boxes) if i and box is not None and original.get(i, 0))
    for label, index, box in objects:
        crop = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)  # the block's own faces stay open
        start = time.perf_counter()
        mesher = zmesh.Mesher(resolution)
        mesher.mesh(np.asfortranarray(dense[crop] == index).view(np.uint8), close=False)
        meshed = time.perf_counter()
        mesh = mesher.get(1, normals=False, reduction_factor=reduction, max_error=max_error, voxel_centered=True)
        clock["marching_cubes_seconds"] += meshed - start
        clock["simplify_seconds"] += time.perf_counter() - meshed  # with reduction 0: only extraction
        if len(mesh.faces):
            levels = [mesh]
            started = time.perf_counter()
            for error in level_errors:
                levels.append(_coarser(levels[-1], resolution, reduction or DEFAULT_REDUCTION, error))
            clock["levels_seconds"] = clock.get("levels_seconds", 0.0) + time.perf_counter() - started
            yield label, np.array([c.start for c in crop], dtype=np.float64), levels


def _coarser(mesh, resolution: tuple, reduction: int, max_error: float):
    """``mesh`` simplified again within ``max_error`` nm by zmesh's simplifier, told a grid
    ``LOD_GRID`` times finer than the voxels.

    zmesh's ``Mesher.simplify`` takes a mesh's vertices onto a grid of half voxels (it truncates
    ``2 * vertex / resolution`` to integers and knows vertices by those keys). Marching cubes'
    vertices lie on that grid; a simplified mesh's do not, two of them in one cell became one
    vertex, and the simplifier then looped forever (pinky40: a clean 46-triangle cap at a block
    face) or returned non-finite vertices (15 of 177 objects of a dense block), besides moving
    every vertex by up to half a voxel. Told ``resolution / LOD_GRID`` and ``max_error / LOD_GRID``
    (its error is counted in that grid's units), the cells are 1/128 voxel and the error means nm
    again: on a dense 128^3 block of pinky40 its 20 largest objects came out within 73 nm at level
    1 and 145 nm at level 2 (80 and 160 asked), with 1.6x and 2.7x fewer triangles than level 0.
    Where it still returns nothing usable, the fragment keeps ``mesh``. Triangles with a repeated
    vertex go, before and after (they cover no area)."""
    import zmesh

    mesher = zmesh.Mesher(tuple(r / LOD_GRID for r in resolution))
    coarser = mesher.simplify(zmesh.Mesh(mesh.vertices, _without_degenerate(mesh.faces), None), reduction_factor=reduction,
                              max_error=max_error / LOD_GRID)
    faces = _without_degenerate(coarser.faces)
    if not len(faces) or not np.isfinite(coarser.vertices[faces.reshape(-1)]).all():
        return mesh
    return zmesh.Mesh(coarser.vertices, faces, None)


def _to_global(vertices: np.ndarray, origin: np.ndarray, resolution: np.ndarray) -> np.ndarray:
    """Block-local nm -> volume nm. Vertices on half-voxel positions (all block-boundary ones)
    are snapped there first, so two blocks compute bit-identical shared vertices for any
    resolution."""
    units = vertices.astype(np.float64) / resolution
    halves = np.round(units * 2) / 2
    units = np.where(np.abs(units - halves) < 1e-3, halves, units)
    return ((units + origin) * resolution).astype(np.float32)


def pack_fragments(fragments: Sequence[tuple]) -> bytes:
    """Forge's intermediate file: a count, a table of (id, voxels, level, vertices, triangles), the data."""
    table = np.array([(f[0], f[1], f[2], len(f[3]), len(f[4])) for f in fragments], dtype="<u8").reshape(-1, 5)
    body = b"".join(np.ascontiguousarray(f[3], dtype="<f4").tobytes() + np.ascontiguousarray(f[4], dtype="<u4").tobytes()
                    for f in fragments)
    return np.array([len(fragments)], dtype="<u8").tobytes() + table.tobytes() + body


def unpack_fragments(blob: bytes):
    """(id, voxels, level, vertices, faces) of each fragment of a forge file."""
    count = int(np.frombuffer(blob[:8], dtype="<u8")[0])
    table = np.frombuffer(blob[8 : 8 + 40 * count], dtype="<u8").reshape(count, 5)
    position = 8 + 40 * count
    for label, voxels, level, nv, nf in table:
        vertices = np.frombuffer(blob[position : position + 12 * int(nv)], dtype="<f4").reshape(-1, 3)
        position += 12 * int(nv)
        faces = np.frombuffer(blob[position : position + 12 * int(nf)], dtype="<u4").reshape(-1, 3)
        position += 12 * int(nf)
        yield int(label), int(voxels), int(level), vertices, faces


@register("mesh.merge")
@dataclass(frozen=True)
class MeshMergeTask(Task):
    layer: str
    mesh_dir: str
    work: str
    partition: int
    partition_bits: int
    minishard_bits: int
    sharded: bool
    lods: int = 3
    lod_scale: float = 1.0
    grid_origin: tuple = (0.0, 0.0, 0.0)  # nm: level-0 octree nodes are forge blocks (see meshes.multires_mesh)
    grid_chunk: tuple = (1.0, 1.0, 1.0)
    dust_global: int = 0
    keep_others: bool = False  # an --ids run: objects meshed before and not named now stay

    def run(self) -> dict[str, Any]:
        import zmesh

        kv = open_kv(self.layer)
        pieces: dict[int, list[list]] = {}  # id -> level -> fragments
        voxels: dict[int, int] = {}
        for key in sorted(kv.list(f"{self.work}/{self.partition}/")):
            for label, count, level, vertices, faces in unpack_fragments(kv.get(key)):
                levels = pieces.setdefault(label, [[] for _ in range(max(self.lods, 1))])
                levels[level].append(zmesh.Mesh(vertices, faces, None))
                voxels[label] = voxels.get(label, 0) + count
        labels = sorted(label for label in pieces if voxels[label] >= self.dust_global)
        dust = len(pieces) - len(labels)
        record_key = records.record_key(self.mesh_dir, self.partition)
        previous = set(kv.get_json(record_key) or [])
        triangles = 0
        if self.sharded:
            spec = sharding.object_sharding(self.partition_bits, self.minishard_bits)
            shard_key = f"{self.mesh_dir}/{sharding.shard_name(self.partition, spec)}"
            entries: dict[int, tuple[bytes, bytes]] = {}
            if self.keep_others and previous:
                old = kv.get(shard_key) or b""
                for label, (start, end) in (meshes.decode_shard(old, spec).items() if old else []):
                    if label not in pieces:
                        manifest = old[start:end]
                        entries[label] = (old[start - meshes.fragment_data_size(manifest) : start], manifest)
            for label in labels:
                lods = [_weld(fragments) for fragments in pieces.pop(label)]
                triangles += len(lods[0].faces)
                entries[label] = meshes.multires_mesh(lods, self.lod_scale, self.grid_origin, self.grid_chunk)
            if entries:
                kv.put(shard_key, meshes.encode_shard(entries, spec))
            else:
                kv.delete(shard_key)
            objects = sorted(entries)
        else:
            for label in labels:
                mesh = _weld(pieces.pop(label)[0])
                triangles += len(mesh.faces)
                fragment = LEGACY_FRAGMENT.format(id=label)
                kv.put(f"{self.mesh_dir}/{fragment}", meshes.legacy_fragment(mesh.vertices, mesh.faces))
                kv.put_json(f"{self.mesh_dir}/{label}:0", meshes.legacy_manifest([fragment]))
            objects = sorted(set(labels) | (previous if self.keep_others else set()))
        kv.put_json(record_key, objects)
        return {"objects": len(labels), "triangles": triangles, "dust_objects": dust}


def _weld(fragments: list):
    """One mesh from an object's block fragments: vertices at the same position (block-boundary
    vertices, bit-identical by construction) become one; triangles left with a repeated vertex go.

    Not zmesh's ``Mesh.consolidate``: it also drops every triangle whose vertex set repeats another's,
    and simplification leaves such back-to-back pairs where thin parts collapse (a flat pocket, a
    lone voxel): dropping them opened holes in real neurites (pinky40: 10,728 open edges on one
    object)."""
    import zmesh

    vertices = np.concatenate([f.vertices for f in fragments]) + np.float32(0)  # -0.0 -> 0.0: unique compares bytes
    offsets = np.cumsum([0] + [len(f.vertices) for f in fragments[:-1]])
    faces = np.concatenate([f.faces.astype(np.int64) + o for f, o in zip(fragments, offsets)])
    welded, inverse = np.unique(vertices, axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    return zmesh.Mesh(welded, _without_degenerate(faces).astype(np.uint32), None)


def _without_degenerate(faces: np.ndarray) -> np.ndarray:
    """The triangles whose three vertices are distinct."""
    return faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]


# -- planning ------------------------------------------------------------------------------------
@planner
def plan(
    path: str,
    *,
    mip: int = 0,
    shape: Sequence[int] | None = None,
    max_error: float = 40.0,
    simplify: bool = True,
    dust_threshold: int = 0,
    dust_global: int = 0,
    ids: Sequence[int] = (),
    exclude_ids: Sequence[int] = (),
    fill_missing: bool = False,
    mesh_dir: str | None = None,
    sharded: bool = False,
    lods: int | None = None,
    mapping: str | None = None,
    memory: int = DEFAULT_MEMORY,
) -> tuple[Plan, list[str]]:
    """Meshes of every object of ``path``; with ``mapping`` (supervoxel -> body), of every body, from
    the supervoxels relabelled block by block (no remapped layer is written), into their own directory
    (default ``mesh_bodies``) that the layer's info does not name: the layer's meshes stay its
    supervoxels'."""
    notes: list[str] = []
    layer = objects.open_segmentation(path, "meshes")
    info = layer.info
    scale = info.scale(mip)
    if max_error < 0:
        raise PumiceError(f"--max-error must be zero or more nm, got {max_error}")
    if lods is not None and lods < 1:
        raise PumiceError(f"--lods must be at least 1, got {lods}")
    if lods is not None and lods > 1 and not sharded:
        notes.append("--lods applies to the sharded multi-resolution format; legacy meshes have one level")
    lods = lods or 3
    if dust_threshold < 0 or dust_global < 0:
        raise PumiceError("dust thresholds are voxel counts, zero or more")
    staged = objects.staged_mapping(mapping, layer.url)
    mesh_dir = objects.output_dir(info, mesh_dir or ("mesh_bodies" if staged else None), "mesh", "mesh")
    if staged is not None and mesh_dir == info.extra.get("mesh"):
        raise PumiceError(f"--dir {mesh_dir} holds the layer's own (supervoxel) meshes; body meshes go elsewhere "
                          f"(default mesh_bodies)")
    ids = tuple(sorted({int(i) for i in ids}))
    exclude_ids = tuple(sorted({int(i) for i in exclude_ids}))
    max_error, dust_threshold, dust_global = float(max_error), int(dust_threshold), int(dust_global)  # one job id for 40 and 40.0

    region = scale.bounds
    if shape is not None:
        block = vec(shape)
    else:
        per_voxel = FORGE_BYTES_PER_VOXEL + info.dtype.itemsize
        block = choose_block(region, scale.chunk_size, per_voxel, min(memory, int(FORGE_VOXELS * per_voxel)))
    blocks = count_grid_blocks(region, block, scale.voxel_offset)

    kv = open_kv(layer.url)
    existing = kv.get_json(f"{mesh_dir}/info")
    fmt = meshes.MULTIRES_TYPE if sharded else meshes.LEGACY_INFO["@type"]
    if existing is not None and existing.get("@type") != fmt:
        raise PumiceError(f"{urls.display(layer.url)}/{mesh_dir} already holds {existing.get('@type')} meshes; "
                          f"choose another --dir or delete that directory first")
    bits, minishard_bits = objects.partitions(existing, blocks, region.size, sharded)
    lod_scale = float(max(min(scale.resolution), max_error if simplify else 0))
    # Forge's fragments of a block lie between the centres of its first voxel and of the next
    # block's first voxel (caps at the volume's low faces reach half a voxel lower, into the node
    # before): level-0 nodes on that grid need no cutting.
    grid_chunk = tuple(float(b * r) for b, r in zip(block, scale.resolution))
    grid_origin = tuple(float((o + 0.5) * r - c) for o, r, c in zip(scale.voxel_offset, scale.resolution, grid_chunk))
    mesh_info = (meshes.multires_info(sharding.object_sharding(bits, minishard_bits), {"mip": mip, "chunk_size": list(block)})
                 if sharded else {**meshes.LEGACY_INFO, "mip": mip, "chunk_size": list(block)})
    mesh_info["pumice_partition"] = [bits, minishard_bits]

    params = {"mip": mip, "block": list(block), "max_error": max_error, "simplify": simplify, "dust_threshold": dust_threshold,
              "dust_global": dust_global, "ids": list(ids), "exclude_ids": list(exclude_ids), "dir": mesh_dir,
              "sharded": sharded, "lods": lods if sharded else 1, "partition": [bits, minishard_bits],
              "mapping": staged.digest if staged else None}
    url = layer.url

    def prepare() -> None:
        if staged is None:
            objects.create_output_dir(layer, "mesh", mesh_dir, mesh_info)
        else:  # body meshes: a mesh source of their own, not the layer's
            staged.put()
            layer.kv.put_json(f"{mesh_dir}/info", mesh_info)

    result = Plan("mesh", url, params, provenance="mesh", prepare=prepare)
    if staged is not None:
        result.inputs = {"mapping": staged.url}
    work = objects.forge_dir(result, mesh_dir)
    # --dust-global: with stats' counts, forge leaves small objects out (no meshing them); merge's own
    # count (forge's voxels per block) decides otherwise, and agrees.
    counted = dust_global if dust_global and not staged and stats.has_counts(layer.url, mip) else 0  # stats count supervoxels
    params["dust_global_from_stats"] = bool(counted)
    forge_options = dict(max_error=float(max_error), simplify=simplify, dust_threshold=dust_threshold, ids=ids,
                         exclude_ids=exclude_ids, fill_missing=fill_missing, dust_global=counted,
                         mapping=staged.url if staged else None)

    def forge_task(box: Bbox) -> MeshForgeTask:
        return MeshForgeTask(layer=url, mip=mip, bbox=tuple(box.to_list()), work=work(), partition_bits=bits,
                             minishard_bits=minishard_bits, lods=lods if sharded else 1, lod_scale=lod_scale,
                             **forge_options)

    def merge_task(part: int) -> MeshMergeTask:
        return MeshMergeTask(layer=url, mesh_dir=mesh_dir, work=work(), partition=part, partition_bits=bits,
                             minishard_bits=minishard_bits, sharded=sharded, lods=lods if sharded else 1,
                             lod_scale=lod_scale, grid_origin=grid_origin, grid_chunk=grid_chunk, dust_global=dust_global,
                             keep_others=bool(ids))

    result.stages = [Stage.grid("forge", region, block, forge_task, scale.voxel_offset),
                     Stage.each("merge", range(1 << bits), merge_task)]
    result.description = {
        "layer": f"{urls.display(url)}: segmentation {info.data_type}, mip {mip} {scale.key} size {format_vec(scale.size)}",
        "meshes": f"{url.rstrip('/')}/{mesh_dir}: " + (f"multi-resolution sharded Draco, {lods} level(s) of detail, "
                                                        f"{1 << bits} shard(s)" if sharded else "legacy (one file per object)"),
        "simplification": f"max error {max_error:g} nm" if simplify else "none",
        "block": format_vec(block),
        "memory_per_task": format_bytes(float(np.prod(block)) * (FORGE_BYTES_PER_VOXEL + info.dtype.itemsize)),
        "voxels": region.size,
    }

    def finish() -> list[str]:
        messages = objects.missing_ids_warning(kv, mesh_dir, ids, f"are not in mip {mip} of the layer (or are dust)")
        return messages

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        text = f"{int(totals['merge'].get('objects', 0))} object(s) meshed, {int(totals['merge'].get('triangles', 0)):,} triangles"
        text += " at level 0" if sharded else ""
        forge = totals["forge"]
        if forge.get("seconds"):
            mc, simple = forge.get("marching_cubes_seconds", 0), forge.get("simplify_seconds", 0)
            levels = forge.get("levels_seconds", 0)
            rest = max(forge["seconds"] - mc - simple - levels, 0)
            text += (f"; forge task time {forge['seconds']:.0f} s: simplification {simple:.0f} s, marching cubes {mc:.0f} s, "
                     + (f"coarser levels of detail {levels:.0f} s, " if sharded and lods > 1 else "")
                     + f"reading and writing {rest:.0f} s")
        return text

    result.finish = finish
    result.cleanup = lambda: kv.delete_prefix(work() + "/")
    result.outcome = outcome
    return result, notes


def meshed_objects(path: str, mesh_dir: str = "mesh") -> list[int]:
    """Every object the record says is meshed in ``mesh_dir``."""
    return records.recorded(open_kv(Layer.open(path).url), mesh_dir)
