"""``pumice label-index SEG [--mapping FILE]``: DVID-style label indexes of a supervoxel segmentation.

For every body (a supervoxel's body comes from the mapping; without one each supervoxel is its own
body) the index lists the 64^3 blocks of DVID's global grid it touches and, in each, every one of
its supervoxels' voxel counts.

- **count** (one task per block of whole 64^3 DVID blocks, on the grid anchored at voxel 0, so any
  voxel offset works): each DVID block's supervoxels and their counts (``fastremap.unique``), their
  bodies from the staged mapping (only the pages the block's supervoxels fall in), rows
  ``body, block key, supervoxel, voxels`` left per body partition (the body's hash).
- **merge** (one task per partition): the partition's rows replace its rows in the database in one
  transaction (SQLite beside a local layer, or ``--db URL``), with each body's totals. The mapping's
  supervoxels of the partition's bodies that no block held are counted (a mapping for another
  segmentation is a mistake worth saying).

A new mapping for an index that exists (the same layer, counted already) is an **update**: only the
supervoxels whose body changed are moved (``UPDATE`` by supervoxel) and only the bodies they left or
joined are recounted; the segmentation is not read again.

Exports (``plan_export``): DVID's ``LabelIndices`` protobuf batches for ``POST .../indices``, the
mapping as ``MappingOps`` for ``POST .../mappings`` and as ``GET .../mappings`` text, a ``load.sh``
that posts them; and flyemflows' block statistics (HDF5 ``stats``: segment_id, z, y, x, count).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, choose_block, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import dvid, inputs, sharding, urls
from ..storage.blobs import pack, unpack
from ..storage.kv import open_kv
from ..storage.label_db import LabelDB, default_url, open_db
from ..storage.layer import Layer
from . import objects
from .remap import MappingError, read_mapping

DEFAULT_MEMORY = 256 * 2**20
BYTES_PER_VOXEL = 16  # the block and fastremap's work
WORK_DIR = "label_index"
INDICES_PER_FILE = 1000  # LabelIndex messages per POST .../indices batch
MAPPINGS_PER_FILE = 1_000_000  # supervoxels per POST .../mappings batch


def part_of(bodies: np.ndarray, bits: int) -> np.ndarray:
    """The partition of each body: its murmurhash, as for stats and sharded meshes."""
    bodies = np.asarray(bodies, dtype=np.uint64)
    if not len(bodies):
        return np.zeros(0, np.int64)
    return sharding.shard_numbers(bodies.tolist(), sharding.object_sharding(bits, 0)).astype(np.int64)


def dvid_blocks(box: Bbox) -> list[Bbox]:
    """The 64^3 DVID blocks (clipped to ``box``) that ``box`` covers, in x-fastest order."""
    lo = np.floor_divide(box.minpt, dvid.BLOCK)
    hi = -np.floor_divide(-np.asarray(box.maxpt), dvid.BLOCK)
    out = []
    for z in range(lo[2], hi[2]):
        for y in range(lo[1], hi[1]):
            for x in range(lo[0], hi[0]):
                corner = np.array([x, y, z]) * dvid.BLOCK
                out.append(Bbox(corner, corner + dvid.BLOCK).intersection(box))
    return out


def block_rows(labels: np.ndarray, box: Bbox) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(block key, supervoxel, voxels) of every non-zero supervoxel in every DVID block of ``labels``
    (X, Y, Z voxels of ``box``)."""
    import fastremap

    keys, svs, counts = [], [], []
    for sub in dvid_blocks(box):
        values, n = fastremap.unique(labels[sub.slices(box.minpt)], return_counts=True)
        keep = values != 0
        if not keep.any():
            continue
        key = dvid.block_keys(np.floor_divide(sub.minpt, dvid.BLOCK)[None])[0]
        keys.append(np.full(int(keep.sum()), key, np.uint64))
        svs.append(values[keep].astype(np.uint64))
        counts.append(n[keep].astype(np.uint64))
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate(keys), np.concatenate(svs), np.concatenate(counts)


# -- tasks ----------------------------------------------------------------------------------------
@register("label_index.count")
@dataclass(frozen=True)
class CountTask(Task):
    layer: str
    bbox: tuple
    work: str
    bits: int
    mapping: str | None = None  # the staged table
    fill_missing: bool = False

    def run(self) -> dict[str, Any]:
        layer = Layer.open(self.layer)
        box = Bbox.from_list(self.bbox)
        labels = layer.read(box, 0, fill_missing=self.fill_missing)[..., 0]
        keys, svs, counts = block_rows(labels, box)
        bodies = svs.copy()
        if self.mapping is not None and len(svs):
            unique, inverse = np.unique(svs, return_inverse=True)
            mapped, found = inputs.lookup(self.mapping, unique)
            bodies = np.where(found, mapped, unique)[inverse]
        parts = part_of(bodies, self.bits)
        name = "_".join(f"{lo}-{hi}" for lo, hi in zip(box.minpt, box.maxpt))
        kv = open_kv(self.work)
        kv.put_many([(f"rows/{int(p)}/{name}", pack(body=bodies[parts == p], block=keys[parts == p],
                                                     sv=svs[parts == p], voxels=counts[parts == p]))
                     for p in np.unique(parts)])
        return {"voxels": box.size, "rows": len(svs)}


@register("label_index.merge")
@dataclass(frozen=True)
class MergeTask(Task):
    work: str
    db: str
    part: int

    def run(self) -> dict[str, Any]:
        kv = open_kv(self.work)
        pieces = [unpack(blob) for blob in kv.get_many(kv.list(f"rows/{self.part}/"))]
        columns = {name: (np.concatenate([p[name] for p in pieces]) if pieces else np.zeros(0, np.uint64))
                   for name in ("body", "block", "sv", "voxels")}
        open_db(self.db).replace_partition(self.part, **columns)
        blob = kv.get(f"mapped/{self.part}")  # the mapping's supervoxels of this partition's bodies
        unknown = np.zeros(0, np.uint64)
        if blob is not None:
            unknown = np.setdiff1d(unpack(blob)["sv"], columns["sv"])
        kv.put(f"unknown/{self.part}", pack(count=np.array(len(unknown), np.uint64), examples=unknown[:5]))
        return {"bodies": len(np.unique(columns["body"])), "rows": len(columns["sv"])}


@register("label_index.move")
@dataclass(frozen=True)
class MoveTask(Task):
    """An update: supervoxels whose body changed (a slice of the staged change list) move."""

    db: str
    changes: str  # staged table: supervoxel -> new body, of the changed supervoxels only
    start: int
    stop: int
    bits: int

    def run(self) -> dict[str, Any]:
        svs, bodies = inputs.table_slice(self.changes, self.start, self.stop)
        open_db(self.db).move_supervoxels(svs, bodies, part_of(bodies, self.bits))
        return {"supervoxels_moved": len(svs)}


@register("label_index.recount")
@dataclass(frozen=True)
class RecountTask(Task):
    db: str
    bodies: str  # staged table of the bodies to recount (keys)
    start: int
    stop: int

    def run(self) -> dict[str, Any]:
        bodies, _ = inputs.table_slice(self.bodies, self.start, self.stop)
        open_db(self.db).summarize(bodies)
        return {"bodies_recounted": len(bodies)}


# -- the planner ----------------------------------------------------------------------------------
def database_url(layer: Layer, db: str | None) -> str:
    if db:
        return db
    url = default_url(layer.url)
    if url is None:
        raise PumiceError(f"{urls.display(layer.url)} is not on this machine: give the label index a database with "
                          f"--db (e.g. sqlite:////path/index.sqlite or postgresql://host/name)")
    return url


def check_segmentation(layer: Layer) -> None:
    info = layer.info
    if info.type != "segmentation" or info.dtype.kind != "u" or info.num_channels != 1:
        raise LayerError(f"{urls.display(layer.url)} is {info.type} {info.data_type} x {info.num_channels}: label "
                         f"indexes are made from a supervoxel segmentation (one channel of unsigned ids)")


def load_mapping(path: str) -> tuple[np.ndarray, np.ndarray]:
    svs, bodies = read_mapping(path)
    where = urls.display(urls.normalize(str(path)))
    if len(svs) and svs[0] == 0:
        if bodies[0] != 0:
            raise MappingError(f"{where} maps supervoxel 0, which is background, to body {int(bodies[0])}: remove "
                               f"that row")
        svs, bodies = svs[1:], bodies[1:]  # background to background, as many tools write it
    if len(bodies) and (bodies == 0).any():
        sv = int(svs[np.argmax(bodies == 0)])
        raise MappingError(f"{where} maps supervoxel {sv} to body 0, which is background: give it a body id")
    return svs, bodies


@planner
def plan(path: str, *, mapping: str | None = None, db: str | None = None, fill_missing: bool = False,
         shape: Sequence[int] | None = None, rebuild: bool = False,
         memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    """Build (or, for a changed mapping, update) the label index of the segmentation at ``path``;
    ``rebuild``: count the segmentation again even so."""
    layer = Layer.open(path)
    check_segmentation(layer)
    db_url = database_url(layer, db)
    scale = layer.info.scale(0)
    region = scale.bounds
    unit = np.lcm(np.asarray(scale.chunk_size), dvid.BLOCK)
    if shape is not None:
        if any(s % dvid.BLOCK for s in shape):
            raise PumiceError(f"--shape {format_vec(shape)} is not a multiple of DVID's 64^3 blocks")
        block = tuple(int(s) for s in shape)
    else:
        block = tuple(int(b) for b in choose_block(region, unit, BYTES_PER_VOXEL, memory))
    svs = bodies = None
    if mapping is not None:
        svs, bodies = load_mapping(mapping)
    staged = inputs.of_bytes(inputs.table_bytes(svs, bodies), "mapping", layer.url) if svs is not None else None
    digest = staged.digest if staged is not None else None
    previous = None if rebuild else _complete_index(db_url, layer)
    if previous is not None and previous.get("updating") not in (None, digest):
        previous = None  # an update to another mapping stopped midway: only a full count is sure
    if previous is not None and previous.get("mapping_digest") != digest:
        return _update_plan(layer, db_url, previous, svs, bodies, staged)

    origin = (0, 0, 0)  # DVID's global grid
    blocks = Stage.grid("count", region, block, lambda b: b, origin).count
    bits, _ = sharding.partition_bits(blocks, region.size, objects.VOXELS_PER_OBJECT, False)
    params: dict[str, Any] = {"layer": layer.url, "block": list(block), "partition_bits": bits, "db": _db_param(db_url),
                              "mapping": digest}
    result = Plan("label-index", layer.url, params, provenance="label-index")
    if staged is not None:
        result.inputs = {"mapping": staged.url}
    work = objects.forge_dir(result, WORK_DIR)
    url = layer.url

    def work_url() -> str:
        return urls.join(url, work())

    def count(box: Bbox) -> CountTask:
        return CountTask(url, tuple(box.to_list()), work_url(), bits, staged.url if staged else None, fill_missing)

    result.stages = [Stage.grid("count", region, block, count, origin),
                     Stage.each("merge", range(1 << bits), lambda p: MergeTask(work_url(), db_url, p))]
    result.description = {
        "segmentation": f"{urls.display(url)}: {layer.info.data_type}, size {format_vec(scale.size)}, offset "
                        f"{format_vec(scale.voxel_offset)}",
        "bodies": f"from the mapping {urls.display(urls.normalize(str(mapping)))} ({len(svs):,} supervoxels)"
                  if mapping else "each supervoxel is its own body (no --mapping)",
        "database": _db_param(db_url),
        "block": format_vec(block),
        "partitions": 1 << bits,
    }

    def prepare() -> None:
        if staged is not None:
            staged.put()
            mapped = svs[bodies != svs]
            parts = part_of(bodies[bodies != svs], bits)
            open_kv(work_url()).put_many([(f"mapped/{int(p)}", pack(sv=mapped[parts == p])) for p in range(1 << bits)])
        index = open_db(db_url)
        if (index.meta("index") or {}).get("job") != result.job_id:  # this job's finish done: a rerun keeps it
            index.set_meta("index", None)  # incomplete until finish

    def finish() -> list[str]:
        kv = open_kv(work_url())
        unknown, examples = 0, []
        for blob in kv.get_many(kv.list("unknown/")):
            found = unpack(blob)
            unknown += int(found["count"])
            examples += found["examples"].tolist()
        record = {"layer": url, "job": result.job_id, "partition_bits": bits, "mapping_digest": digest,
                  "mapping": staged.url if staged else None, "unknown_supervoxels": unknown,
                  "unknown_examples": sorted(examples)[:5], "block": dvid.BLOCK,
                  "made": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        index = open_db(db_url)
        index.drop_partitions_from(1 << bits)
        index.set_meta("index", record)
        return unknown_note(record)

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        merged = totals.get("merge", {})
        return (f"{int(merged.get('bodies', 0)):,} bodies, {int(merged.get('rows', 0)):,} (body, block, supervoxel) "
                f"rows in {_db_param(db_url)}")

    result.prepare, result.finish, result.outcome = prepare, finish, outcome
    result.cleanup = lambda: open_kv(work_url()).delete_prefix("")
    return result, []


def unknown_note(record: dict) -> list[str]:
    if not record.get("unknown_supervoxels"):
        return []
    return [f"the mapping names {record['unknown_supervoxels']:,} supervoxel(s) the segmentation does not hold "
            f"(e.g. {', '.join(str(e) for e in record['unknown_examples'])})"]


def _db_param(url: str) -> str:
    """The database URL as recorded (job params, provenance): without a password."""
    from ..storage.label_db import _shown

    return _shown(url)


def _complete_index(db_url: str, layer: Layer) -> dict | None:
    """The index record of a finished build of this layer in the database, if any."""
    try:
        record = open_db(db_url).meta("index")
    except PumiceError:
        raise
    if isinstance(record, dict) and record.get("layer") == layer.url:
        return record
    return None


def _update_plan(layer: Layer, db_url: str, previous: dict, svs: np.ndarray | None, bodies: np.ndarray | None,
                 staged: inputs.SideInput | None) -> tuple[Plan, list[str]]:
    """A new mapping for a finished index: move only the supervoxels whose body changed."""
    old_svs, old_bodies = (np.zeros(0, np.uint64),) * 2
    if previous.get("mapping"):
        old_svs, old_bodies = read_mapping(previous["mapping"])  # the staged table of the previous build
    new_svs = svs if svs is not None else np.zeros(0, np.uint64)
    new_bodies = bodies if bodies is not None else np.zeros(0, np.uint64)
    every = np.union1d(old_svs, new_svs)
    before = _mapped(every, old_svs, old_bodies)
    after = _mapped(every, new_svs, new_bodies)
    changed = before != after
    moved_svs, moved_to = every[changed], after[changed]
    touched = np.union1d(before[changed], after[changed])
    bits = int(previous["partition_bits"])
    digest = staged.digest if staged is not None else None
    change_table = inputs.of_bytes(inputs.table_bytes(moved_svs, moved_to), "moved", layer.url)
    body_table = inputs.of_bytes(inputs.table_bytes(touched, touched), "recount", layer.url)
    params = {"layer": layer.url, "db": _db_param(db_url), "update_from": previous.get("mapping_digest"),
              "mapping": digest, "moved": change_table.digest}
    result = Plan("label-index", layer.url, params, provenance="label-index")
    result.inputs = {"mapping": staged.url} if staged is not None else {}
    step = 100_000
    result.stages = [
        Stage.each("move", range(0, max(1, len(moved_svs)), step),
                   lambda s: MoveTask(db_url, change_table.url, s, s + step, bits)),
        Stage.each("recount", range(0, max(1, len(touched)), step),
                   lambda s: RecountTask(db_url, body_table.url, s, s + step)),
    ]
    result.description = {
        "segmentation": urls.display(layer.url),
        "update": f"{len(moved_svs):,} supervoxel(s) change body; {len(touched):,} bodies recounted; the "
                  f"segmentation is not read again",
        "database": _db_param(db_url),
    }

    def prepare() -> None:
        for table in (staged, change_table, body_table):
            if table is not None:
                table.put()
        # Still the previous index's record, marked: a rerun plans this same update and resumes it,
        # and queries meanwhile are told the index is changing.
        open_db(db_url).set_meta("index", {**previous, "updating": digest})

    def finish() -> list[str]:
        record = {**{k: v for k, v in previous.items() if k != "updating"}, "job": result.job_id, "mapping_digest": digest,
                  "mapping": staged.url if staged else None,
                  "made": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        record["unknown_supervoxels"], record["unknown_examples"] = 0, []  # counted by a full build only
        open_db(db_url).set_meta("index", record)
        return [f"updated from the previous mapping: {len(moved_svs):,} supervoxel(s) moved, {len(touched):,} "
                f"bodies recounted"]

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        return (f"{int(totals.get('move', {}).get('supervoxels_moved', 0)):,} supervoxel(s) moved, "
                f"{int(totals.get('recount', {}).get('bodies_recounted', 0)):,} bodies recounted")

    result.prepare, result.finish, result.outcome = prepare, finish, outcome
    return result, []


def _mapped(ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """ids through a sorted (keys -> values) table; ids not in it map to themselves."""
    at = np.searchsorted(keys, ids)
    hit = (at < len(keys)) & (keys[np.minimum(at, max(len(keys) - 1, 0))] == ids) if len(keys) else np.zeros(len(ids), bool)
    out = ids.copy()
    out[hit] = values[at[hit]]
    return out


# -- reading: the Python API ----------------------------------------------------------------------
def open_index(path: str, db: str | None = None) -> LabelDB:
    """The finished label index of the segmentation at ``path`` (a one-line error if there is none)."""
    layer = Layer.open(path)
    url = database_url(layer, db)
    index = open_db(url)
    record = _complete_index(url, layer)
    if record is None:
        raise PumiceError(f"no finished label index of {urls.display(layer.url)} in {_db_param(url)}: run "
                          f"`pumice label-index {urls.display(layer.url)}` first")
    if record.get("updating"):
        raise PumiceError(f"the label index of {urls.display(layer.url)} is being updated to a new mapping (or an update "
                          f"stopped midway): run that `pumice label-index ... --mapping` again to finish it")
    return index


def body_index(path: str, body: int, db: str | None = None) -> dict[str, Any]:
    """A body's index: its blocks (coordinates and DVID keys) and each block's supervoxel counts."""
    index = open_index(path, db)
    keys, svs, voxels = index.index_of(body)
    if not len(keys):
        found = index.body_of(np.array([body], np.uint64))[0]
        hint = f"; supervoxel {body} belongs to body {int(found)}" if found else ""
        raise PumiceError(f"body {body} is not in the label index{hint}")
    blocks: dict[str, dict[str, int]] = {}
    coords = dvid.block_coords(keys)
    for (x, y, z), sv, n in zip(coords.tolist(), svs.tolist(), voxels.tolist()):
        blocks.setdefault(f"{x},{y},{z}", {})[str(sv)] = int(n)
    return {"body": int(body), "voxels": int(voxels.sum()), "supervoxels": sorted(set(int(s) for s in svs)),
            "blocks": blocks, "block_keys": sorted(set(int(k) for k in keys))}


def supervoxels_of(path: str, body: int, db: str | None = None) -> np.ndarray:
    _, svs, _ = open_index(path, db).index_of(body)
    return np.unique(svs)


def bodies_of(path: str, svs: Sequence[int], db: str | None = None) -> np.ndarray:
    return open_index(path, db).body_of(np.asarray(svs, dtype=np.uint64))


# -- exports --------------------------------------------------------------------------------------
@register("label_index.export_dvid")
@dataclass(frozen=True)
class ExportDvidTask(Task):
    db: str
    part: int
    target: str  # a directory URL
    mod_time: str = ""

    def run(self) -> dict[str, Any]:
        index = open_db(self.db)
        kv = open_kv(self.target)
        batch, files, written, mapping_bodies, mapping_svs = [], 0, 0, [], []
        items = []
        for body, keys, svs, voxels in index.partition_rows(self.part):
            batch.append(dvid.label_index(body, keys, svs, voxels, mod_time=self.mod_time))
            written += 1
            others = np.unique(svs[svs != body])
            if len(others):
                mapping_bodies.append(body)
                mapping_svs.append(others)
            if len(batch) == INDICES_PER_FILE:
                items.append((f"indices/{self.part:05d}-{files:04d}.pb", dvid.label_indices_bytes(batch)))
                batch, files = [], files + 1
        if batch:
            items.append((f"indices/{self.part:05d}-{files:04d}.pb", dvid.label_indices_bytes(batch)))
        text = "".join(f"{int(sv)} {body}\n" for body, svs in zip(mapping_bodies, mapping_svs) for sv in svs)
        items.append((f"mappings/{self.part:05d}.txt", text.encode()))
        items.append((f"mappings/{self.part:05d}.pb", dvid.mapping_ops_bytes(mapping_bodies, mapping_svs)))
        kv.put_many(items)
        return {"bodies": written, "mapped_supervoxels": sum(len(s) for s in mapping_svs)}


LOAD_SCRIPT = """#!/bin/sh
# Load Pumice's label indexes and mapping into a DVID labelmap instance:
#   sh load.sh http://dvid-host:8000 <uuid> <labelmap instance>
set -e
SERVER=${1:?DVID server URL}; UUID=${2:?node UUID}; INSTANCE=${3:?labelmap instance name}
for f in "$(dirname "$0")"/mappings/*.pb; do
  curl -sf -X POST --data-binary @"$f" "$SERVER/api/node/$UUID/$INSTANCE/mappings"
done
for f in "$(dirname "$0")"/indices/*.pb; do
  curl -sf -X POST --data-binary @"$f" "$SERVER/api/node/$UUID/$INSTANCE/indices"
done
"""


@planner
def plan_export(path: str, *, dvid_dir: str | None = None, block_stats: str | None = None,
                db: str | None = None) -> tuple[Plan, list[str]]:
    """Exports of a finished index: DVID's messages into ``dvid_dir``, flyemflows' block statistics
    into ``block_stats`` (.h5)."""
    layer = Layer.open(path)
    db_url = database_url(layer, db)
    index = open_index(path, db)
    record = index.meta("index")
    if not dvid_dir and not block_stats:
        raise PumiceError("nothing to export: give --export dvid DIR and/or --export block-stats FILE.h5")
    if block_stats and not str(block_stats).lower().endswith((".h5", ".hdf5")):
        raise PumiceError(f"--export block-stats writes HDF5: name the file .h5, not {block_stats}")
    parts = list(range(1 << int(record["partition_bits"])))
    target = urls.normalize(dvid_dir) if dvid_dir else None
    params = {"index_job": record["job"], "dvid_dir": target, "block_stats": block_stats, "db": _db_param(db_url)}
    result = Plan("label-index-export", layer.url, params)
    stamp = record.get("made", "")
    result.stages = [Stage.each("dvid", parts if target else [], lambda p: ExportDvidTask(db_url, p, target, stamp))]

    def finish() -> list[str]:
        notes = []
        if target:
            open_kv(target).put("load.sh", LOAD_SCRIPT.encode())
            notes.append(f"DVID: {urls.display(target)} (indices/*.pb for POST .../indices, mappings/*.pb for POST "
                         f".../mappings, mappings/*.txt as GET .../mappings prints them; load.sh posts them all)")
        if block_stats:
            rows = write_block_stats(index, parts, block_stats)
            notes.append(f"block statistics: {block_stats} ({rows:,} rows)")
        return notes

    result.finish = finish
    result.outcome = lambda totals: f"{int(totals.get('dvid', {}).get('bodies', 0)):,} label indexes exported" \
        if target else "exported"
    return result, []


BLOCK_STATS_DTYPE = np.dtype([("segment_id", "<u8"), ("z", "<i4"), ("y", "<i4"), ("x", "<i4"), ("count", "<u4")])


def write_block_stats(index: LabelDB, parts: list[int], path: str) -> int:
    """flyemflows' ``ingest_label_indexes`` input: HDF5 dataset ``stats``, one row per supervoxel and
    block (z, y, x: the block's first voxel), written a partition at a time."""
    import h5py

    local = urls.local_path(urls.normalize(path))
    if local is None:
        raise PumiceError(f"--export block-stats writes a local HDF5 file; {path} is not on this machine")
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(local.name + ".partial")
    total = 0
    with h5py.File(partial, "w") as f:
        stats = f.create_dataset("stats", shape=(0,), maxshape=(None,), dtype=BLOCK_STATS_DTYPE, chunks=(65536,))
        for part in parts:
            for _, keys, svs, voxels in index.partition_rows(part):
                rows = np.zeros(len(svs), BLOCK_STATS_DTYPE)
                corner = dvid.block_coords(keys) * dvid.BLOCK
                rows["segment_id"], rows["count"] = svs, voxels
                rows["x"], rows["y"], rows["z"] = corner[:, 0], corner[:, 1], corner[:, 2]
                stats.resize((total + len(rows),))
                stats[total:] = rows
                total += len(rows)
    partial.replace(local)  # complete or absent: never a half-written file under the asked name
    return total

