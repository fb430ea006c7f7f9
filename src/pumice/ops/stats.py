"""``pumice stats PATH``: per object of a segmentation, its voxel count, bounding box and centroid,
as a Parquet table beside the layer, Neuroglancer segment properties, and a spatial index.

forge: each task counts its block (``fastremap.renumber`` then ``cc3d.statistics``: count, box and
centroid per label present) and leaves, per merge partition (the object id's hash), one small table
of partial sums; it also writes the block's ids, the spatial index that ``pumice objects`` reads.
merge: each task sums its partition's tables over all blocks and writes one Parquet part,
``stats/<mip>/table/part-<partition>.parquet`` (one row per object; the directory reads as one
table with PyArrow or pandas), and the ids and counts of its largest objects. finish: the largest objects
of every partition become the layer's segment properties (``segment_properties/info``, named in the
info), which the Neuroglancer client lists, searches and sorts. No process holds every object: a
merge task holds its partition's, the finish step the largest ``--properties`` of each partition.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, choose_block, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import bookkeeping, inputs, sharding, urls
from ..storage.kv import open_kv
from ..storage.layer import Layer
from . import objects

DEFAULT_MEMORY = 256 * 2**20
PROPERTIES = 100_000  # objects listed in the segment properties (the largest)
BYTES_PER_VOXEL = 24  # the block, its renumbered copy, cc3d's work


def stats_dir(mip: int) -> str:
    return f"stats/{mip}"


def table_dir(mip: int) -> str:
    """The Parquet parts of the table: the directory reads as one table (PyArrow, pandas)."""
    return f"{stats_dir(mip)}/table"


def counts_key(mip: int, partition: int) -> str:
    """A merge partition's objects and voxel counts as a paged table (``storage.inputs``): a task
    looks up its objects' counts reading only the pages they fall in."""
    return f"{stats_dir(mip)}/voxels/{partition}"


def index_key(mip: int, box: Bbox) -> str:
    """The ids present in a forge block, as little-endian uint64: the spatial index."""
    return f"{stats_dir(mip)}/index/" + "_".join(f"{lo}-{hi}" for lo, hi in zip(box.minpt, box.maxpt))


def block_statistics(labels: np.ndarray, origin: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero ids of an X, Y, Z block (uint64) and, per id, a row of partial sums (float64):
    voxels, box min x, y, z (inclusive), box max x, y, z (exclusive), and the sums of x, y, z, in the
    volume's voxels (the block's first voxel is ``origin``)."""
    import cc3d
    import fastremap

    dense, remap = fastremap.renumber(np.asfortranarray(labels), preserve_zero=True, in_place=False)
    original = np.zeros(int(dense.max()) + 1 if dense.size else 1, dtype=np.uint64)
    for old, new in remap.items():
        original[new] = old
    found = cc3d.statistics(dense)
    counts = np.asarray(found["voxel_counts"], dtype=np.float64)
    keep = [n for n in range(1, len(counts)) if counts[n] > 0 and original[n] != 0]
    table = np.zeros((len(keep), 10), dtype=np.float64)
    for row, n in enumerate(keep):
        box = found["bounding_boxes"][n]
        table[row, 0] = counts[n]
        table[row, 1:4] = [int(s.start) + o for s, o in zip(box, origin)]
        table[row, 4:7] = [int(s.stop) + o for s, o in zip(box, origin)]
        table[row, 7:10] = (np.asarray(found["centroids"][n], dtype=np.float64) + origin) * counts[n]
    return original[keep], table


def block_surface(labels: np.ndarray, own: Sequence[int], below: Sequence[bool], above: Sequence[bool],
                  resolution: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Exposed voxel faces per object, in nm^2: every face between two different labels (background
    and other objects alike) or between an object and the volume's outside counts once for each
    object on it. ``labels`` is the block (``own`` voxels) plus, where ``above`` is false, one more
    plane of the next block along each axis; ``below``/``above``: the block touches the volume's
    lower/upper face there. Each face belongs to the block holding its lower voxel (or, on the
    volume's lower face, to the block there). Returns ids (nonzero) and their areas."""
    import fastremap

    dense, remap = fastremap.renumber(np.asfortranarray(labels), preserve_zero=True, in_place=False)
    original = np.zeros(len(remap) + 1, dtype=np.uint64)
    for old, new in remap.items():
        original[new] = old
    area = np.zeros(len(original), np.float64)
    face = [resolution[1] * resolution[2], resolution[0] * resolution[2], resolution[0] * resolution[1]]
    inside = tuple(slice(0, n) for n in own)
    block = dense[inside]
    for a in range(3):
        n = own[a]
        lower = [slice(0, m) for m in own]
        upper = list(lower)
        reach = n if above[a] else n + 1
        lower[a], upper[a] = slice(0, reach - 1), slice(1, reach)
        lo, hi = dense[tuple(lower)], dense[tuple(upper)]
        cut = lo != hi
        count = np.bincount(lo[cut], minlength=len(area)) + np.bincount(hi[cut], minlength=len(area))
        edges = []
        if below[a]:
            edges.append(np.take(block, 0, axis=a))
        if above[a]:
            edges.append(np.take(block, n - 1, axis=a))
        for plane in edges:  # faces on the volume's outside
            count = count + np.bincount(plane.ravel(), minlength=len(area))
        area += count[: len(area)] * face[a]
    keep = np.flatnonzero(area > 0)
    keep = keep[keep > 0]
    return original[keep], area[keep]


def with_surface(ids: np.ndarray, table: np.ndarray, surface_ids: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A block's rows with an 11th column, the surface area; objects with faces here but no voxels
    (the next block's, across this block's upper faces) get rows that add nothing else."""
    every = np.union1d(ids, surface_ids)
    out = np.zeros((len(every), 11))
    out[:, 1:4], out[:, 4:7] = np.inf, -np.inf
    out[np.searchsorted(every, ids), :10] = table
    out[np.searchsorted(every, surface_ids), 10] = area
    return every, out


def pack(ids: np.ndarray, table: np.ndarray) -> bytes:
    """Ids (uint64, exact) and their rows of float64 numbers."""
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.asarray(ids, dtype=np.uint64), table=np.asarray(table, dtype=np.float64))
    return buffer.getvalue()


def unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(io.BytesIO(blob))
    return data["ids"], data["table"]


@register("stats.forge")
@dataclass(frozen=True)
class StatsForgeTask(Task):
    layer: str
    mip: int
    bbox: tuple
    work: str
    partition_bits: int
    fill_missing: bool = False
    surface_area: bool = False

    def run(self) -> dict[str, Any]:
        layer = Layer.open(self.layer)
        box = Bbox.from_list(self.bbox)
        scale = layer.info.scale(self.mip)
        volume = scale.bounds
        read = Bbox(box.minpt, [min(h + 1, v) for h, v in zip(box.maxpt, volume.maxpt)]) if self.surface_area else box
        labels = layer.read(read, self.mip, fill_missing=self.fill_missing)[..., 0]
        own = tuple(box.shape)
        ids, table = block_statistics(labels[: own[0], : own[1], : own[2]], box.minpt)
        if self.surface_area:
            ids, table = with_surface(ids, table, *block_surface(
                labels, own, [lo == v for lo, v in zip(box.minpt, volume.minpt)],
                [hi == v for hi, v in zip(box.maxpt, volume.maxpt)], scale.resolution))
        kv = open_kv(layer.url)
        kv.put(index_key(self.mip, box), np.sort(ids).astype("<u8").tobytes())
        spec = sharding.object_sharding(self.partition_bits, 0)
        parts = sharding.shard_numbers(ids.tolist(), spec) if len(ids) else np.zeros(0, np.uint64)
        name = "_".join(f"{lo}-{hi}" for lo, hi in zip(box.minpt, box.maxpt))
        for part in np.unique(parts):
            mine = parts == part
            kv.put(f"{self.work}/{int(part)}/{name}", pack(ids[mine], table[mine]))
        return {"voxels": box.size, "objects_in_blocks": int(len(ids))}


@register("stats.merge")
@dataclass(frozen=True)
class StatsMergeTask(Task):
    layer: str
    mip: int
    work: str
    partition: int
    top: int = PROPERTIES
    surface_area: bool = False

    def run(self) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        layer = Layer.open(self.layer)
        kv = open_kv(layer.url)
        keys = kv.list(f"{self.work}/{self.partition}/")
        all_ids, tables = [], []
        for blob in kv.get_many(keys):
            ids, table = unpack(blob)
            all_ids.append(ids)
            tables.append(table)
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.uint64)
        table = np.concatenate(tables) if tables else np.zeros((0, 11 if self.surface_area else 10))
        objects_, inverse = np.unique(ids, return_inverse=True)
        n = len(objects_)
        voxels = np.zeros(n)
        np.add.at(voxels, inverse, table[:, 0])
        lo = np.full((n, 3), np.inf)
        hi = np.full((n, 3), -np.inf)
        sums = np.zeros((n, 3))
        for a in range(3):
            np.minimum.at(lo[:, a], inverse, table[:, 1 + a])
            np.maximum.at(hi[:, a], inverse, table[:, 4 + a])
            np.add.at(sums[:, a], inverse, table[:, 7 + a])
        scale = layer.info.scale(self.mip)
        resolution = np.asarray(scale.resolution, dtype=np.float64)
        centroid = sums / np.maximum(voxels, 1)[:, None]
        columns = {"id": pa.array(objects_, pa.uint64()), "voxels": pa.array(voxels.astype(np.uint64), pa.uint64())}
        for a, axis in enumerate("xyz"):
            columns[f"{axis}0"] = pa.array(lo[:, a].astype(np.int64), pa.int64())
        for a, axis in enumerate("xyz"):
            columns[f"{axis}1"] = pa.array(hi[:, a].astype(np.int64), pa.int64())
        for a, axis in enumerate("xyz"):
            columns[f"centroid_{axis}"] = pa.array(centroid[:, a], pa.float64())
        for a, axis in enumerate("xyz"):
            columns[f"centroid_{axis}_nm"] = pa.array((centroid[:, a] + 0.5) * resolution[a], pa.float64())
        columns["volume_nm3"] = pa.array(voxels * float(np.prod(resolution)), pa.float64())
        if self.surface_area:
            surface = np.zeros(n)
            np.add.at(surface, inverse, table[:, 10])
            columns["surface_nm2"] = pa.array(surface, pa.float64())
        kv.put(counts_key(self.mip, self.partition), inputs.table_bytes(objects_, voxels.astype(np.uint64)))
        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer, compression="zstd")
        kv.put(f"{table_dir(self.mip)}/part-{self.partition:05d}.parquet", buffer.getvalue())
        largest = np.argsort(-voxels, kind="stable")[: self.top]
        kv.put(f"{self.work}/top/{self.partition}", pack(objects_[largest], np.stack(
            [voxels[largest], np.full(len(largest), n, dtype=np.float64)], axis=1)))  # and the partition's count
        return {"objects": n, "voxels_counted": float(voxels.sum())}


@planner
def plan(path: str, *, mip: int = 0, fill_missing: bool = False, shape: Sequence[int] | None = None,
         properties: int = PROPERTIES, surface_area: bool = False, memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    layer = Layer.open(path)
    info = layer.info
    if info.type != "segmentation" or info.dtype.kind != "u" or info.num_channels != 1:
        raise LayerError(f"{urls.display(layer.url)} is {info.type} {info.data_type} x {info.num_channels}: stats count "
                         f"the objects of a segmentation (one channel of unsigned ids)")
    if properties < 0:
        raise PumiceError(f"--properties must be zero or more, got {properties}")
    if not urls.is_writable(layer.url):
        raise LayerError(f"{urls.display(layer.url)} is read-only (http): stats are stored beside the layer; "
                         f"copy it with `pumice transfer` first")
    scale = info.scale(mip)
    region = scale.bounds
    block = tuple(shape) if shape is not None else choose_block(region, scale.chunk_size, BYTES_PER_VOXEL, memory)
    blocks = Stage.grid("forge", region, block, lambda b: b, scale.voxel_offset).count
    bits, _ = sharding.partition_bits(blocks, region.size, objects.VOXELS_PER_OBJECT, False)
    url = layer.url
    result = Plan("stats", url, {"mip": mip, "block": list(block), "partition_bits": bits}, provenance="stats")
    work = objects.forge_dir(result, stats_dir(mip))

    def forge(box: Bbox) -> StatsForgeTask:
        return StatsForgeTask(url, mip, tuple(box.to_list()), work(), bits, fill_missing, surface_area)

    def merge(part: int) -> StatsMergeTask:
        return StatsMergeTask(url, mip, work(), part, int(properties), surface_area)

    result.stages = [Stage.grid("forge", region, block, forge, scale.voxel_offset),
                     Stage.each("merge", range(1 << bits), merge)]
    result.description = {
        "layer": f"{urls.display(url)}: segmentation {info.data_type}, mip {mip} {scale.key} size {format_vec(scale.size)}",
        "output": f"{url.rstrip('/')}/{table_dir(mip)}/part-*.parquet (one row per object), segment properties of the "
                  f"{properties:,} largest, and the ids of each block (the spatial index)",
        "block": format_vec(block),
        "partitions": 1 << bits,
    }

    def prepare() -> None:
        kv = open_kv(url)
        record = kv.get_json(f"{stats_dir(mip)}/pumice.json")
        if isinstance(record, dict) and record.get("job") != result.job_id:
            # Another run's table and index (other blocks, other partitions): gone, so none of their
            # files outlives this run, and this job's ledger no longer describes what is stored.
            kv.delete_prefix(f"{stats_dir(mip)}/")
            bookkeeping.forget_job(url, result.job_id)

    def finish() -> list[str]:
        kv = open_kv(url)
        ids, voxels, total = [], [], 0
        for blob in kv.get_many(kv.list(f"{work()}/top/")):
            part_ids, table = unpack(blob)
            ids.append(part_ids)
            voxels.append(table[:, 0])
            total += int(table[0, 1]) if len(table) else 0
        ids = np.concatenate(ids) if ids else np.zeros(0, np.uint64)
        voxels = np.concatenate(voxels) if voxels else np.zeros(0)
        largest = np.argsort(-voxels, kind="stable")[: int(properties)]
        kv.put_json(f"{stats_dir(mip)}/pumice.json", {"mip": mip, "block": list(block), "job": result.job_id,
                                                       "partition_bits": bits,
                                                       "resolution": list(scale.resolution)})
        notes = []
        if properties:
            write_segment_properties(layer, ids[largest], voxels[largest], float(np.prod(scale.resolution)))
            if total > properties:
                notes.append(f"segment properties list the {properties:,} largest of {total:,} objects "
                             f"(--properties to change); the Parquet table has them all")
        return notes

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        merged = totals["merge"]
        return f"{int(merged.get('objects', 0)):,} object(s), {int(merged.get('voxels_counted', 0)):,} labelled voxel(s)"

    result.prepare, result.finish, result.outcome = prepare, finish, outcome
    result.cleanup = lambda: open_kv(url).delete_prefix(work() + "/")
    return result, []


def write_segment_properties(layer: Layer, ids: np.ndarray, voxels: np.ndarray, voxel_volume: float,
                             directory: str = "segment_properties") -> None:
    """Neuroglancer's inline segment properties: each listed object's voxel count and volume."""
    order = np.argsort(ids, kind="stable")
    ids, voxels = ids[order], voxels[order]
    big = voxels.size and voxels.max() >= 2**32
    info = {"@type": "neuroglancer_segment_properties", "inline": {
        "ids": [str(int(i)) for i in ids],
        "properties": [
            {"id": "voxels", "type": "number", "data_type": "float32" if big else "uint32",
             "description": "voxels of the object", "values": [float(v) if big else int(v) for v in voxels]},
            {"id": "volume_um3", "type": "number", "data_type": "float32", "description": "volume in cubic micrometres",
             "values": [float(np.float32(v * voxel_volume / 1e9)) for v in voxels]},
        ]}}
    kv = open_kv(layer.url)
    kv.put_json(f"{directory}/info", info)
    objects.link(layer, "segment_properties", directory)


def read_table(path: str, mip: int = 0, columns: Sequence[str] | None = None):
    """The stats table of a layer (a pyarrow Table), read part by part."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    layer = Layer.open(path)
    kv = open_kv(layer.url)
    parts = kv.list(f"{table_dir(mip)}/")
    if not parts:
        raise PumiceError(f"{urls.display(layer.url)} has no stats for mip {mip}; run `pumice stats {urls.display(layer.url)}` first")
    tables = [pq.read_table(io.BytesIO(kv.get(k)), columns=list(columns) if columns else None, use_threads=False) for k in parts]
    return pa.concat_tables(tables)


def largest(path: str, count: int, mip: int = 0) -> list[dict[str, Any]]:
    """The ``count`` largest objects, read one part at a time (memory: one part plus ``count`` rows)."""
    import pyarrow.parquet as pq

    layer = Layer.open(path)
    kv = open_kv(layer.url)
    parts = kv.list(f"{table_dir(mip)}/")
    if not parts:
        raise PumiceError(f"{urls.display(layer.url)} has no stats for mip {mip}; run `pumice stats {urls.display(layer.url)}` first")
    best: list[dict[str, Any]] = []
    for key in parts:
        rows = pq.read_table(io.BytesIO(kv.get(key)), use_threads=False).to_pylist()
        best = sorted(best + rows, key=lambda r: (-r["voxels"], r["id"]))[:count]
    return best


def objects_in(path: str, bounds: Bbox, mip: int = 0) -> np.ndarray:
    """The ids present in ``bounds`` (voxels of ``mip``): blocks wholly inside from the spatial index,
    the parts of blocks it cuts read from the layer; time grows with the box, not the volume."""
    layer = Layer.open(path)
    record = open_kv(layer.url).get_json(f"{stats_dir(mip)}/pumice.json")
    if record is None:
        raise PumiceError(f"{urls.display(layer.url)} has no spatial index for mip {mip}; run `pumice stats "
                          f"{urls.display(layer.url)}{' --mip ' + str(mip) if mip else ''}` first")
    scale = layer.info.scale(mip)
    if bounds.empty() or not scale.bounds.contains(bounds):
        raise PumiceError(f"--bounds {bounds} lies outside mip {mip}'s volume {scale.bounds}; choose bounds inside it")
    import fastremap

    block = record["block"]
    region = bounds.snap_out(block, scale.voxel_offset).intersection(scale.bounds)
    found: list[np.ndarray] = []
    inside, cut = [], []
    for box in Stage.grid("blocks", region, block, lambda b: b, scale.voxel_offset).tasks():
        full = Bbox(tuple(max(a, o) for a, o in zip(box.minpt, scale.voxel_offset)), box.maxpt)
        (inside if bounds.contains(full) else cut).append(full)
    kv = open_kv(layer.url)
    for blob in kv.get_many([index_key(mip, b) for b in inside]):
        if blob is None:
            raise PumiceError(f"the spatial index of {urls.display(layer.url)} mip {mip} is incomplete; "
                              f"rerun `pumice stats {urls.display(layer.url)}`")
        found.append(np.frombuffer(blob, dtype="<u8"))
    for box in cut:
        labels = layer.read(box.intersection(bounds), mip, fill_missing=True)
        found.append(fastremap.unique(labels).astype(np.uint64))
    ids = np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)
    return ids[ids != 0]


def has_counts(url: str, mip: int) -> bool:
    """Whether a finished `pumice stats` left voxel counts for this mip."""
    record = open_kv(url).get_json(f"{stats_dir(mip)}/pumice.json")
    return isinstance(record, dict) and "partition_bits" in record


def voxel_counts(url: str, mip: int, ids: np.ndarray) -> np.ndarray:
    """Each object's voxels in the whole volume, from the stats table (0 for ids it does not hold),
    reading only the pages of the partitions and pages the ids fall in: memory follows ``ids``."""
    record = open_kv(url).get_json(f"{stats_dir(mip)}/pumice.json")
    ids = np.asarray(ids, dtype=np.uint64)
    counts = np.zeros(len(ids), dtype=np.uint64)
    if not len(ids):
        return counts
    parts = sharding.shard_numbers(ids.tolist(), sharding.object_sharding(int(record["partition_bits"]), 0))
    for part in np.unique(parts):
        mine = parts == part
        counts[mine] = inputs.lookup(f"{url.rstrip('/')}/{counts_key(mip, int(part))}", ids[mine])[0]
    return counts


def without_small_objects(labels: np.ndarray, url: str, mip: int, threshold: int) -> tuple[np.ndarray, int]:
    """``labels`` with the objects under ``threshold`` voxels in the whole volume (stats' counts) set
    to 0, and how many there were."""
    import fastremap

    ids = fastremap.unique(labels)
    ids = ids[ids != 0]
    small = ids[voxel_counts(url, mip, ids) < threshold]
    if len(small):
        labels = fastremap.mask(labels, small.tolist(), in_place=False)
    return labels, int(len(small))
