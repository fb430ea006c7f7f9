"""``pumice edges SEG [--boundary IMAGE | --affinities AFF]``: the supervoxel adjacency table.

One row per pair of supervoxels that touch across a voxel face (6-connected): ``id_a < id_b``, the
contact ``area`` (faces), and the ``score``, a cost (lower: more likely the same body), which is

- with ``--boundary`` (a one-channel map, high on membranes): the mean over the contact's faces of
  the two voxels' mean boundary value;
- with ``--affinities`` (channels x, y, z; channel d of voxel v is the affinity between v and its
  neighbour one step lower along d, high inside objects): 1 - the mean affinity of the faces;
- with neither: 1 / area (a bigger contact costs less).

``mean_boundary`` or ``mean_affinity`` are kept as columns too, with ``max_score`` (the contact's highest
face cost, which ``pumice agglomerate --score max`` uses), and one voxel on each side of the
contact (``xa, ya, za`` in ``id_a``, ``xb, yb, zb`` in ``id_b``): of the contact's faces, the one
whose lower voxel comes first in z, y, x order, then axis x, y, z — the same whatever the blocks.

- **forge** (per block): each face between a voxel of the block and its neighbour one step higher
  (read one voxel beyond the block) that separates two non-zero supervoxels; per pair: faces, score
  sum, first face; left per partition (the pair's hash).
- **merge** (per partition): sums, the first face, one Parquet part
  ``<SEG>/<name>/part-<p>.parquet`` and one merge-table part.
- **finish**: the parts of neuclease's merge table (``id_a,id_b,xa,ya,za,xb,yb,zb,score``) joined
  into ``<SEG>/<name>/merge-table.csv`` (or ``--csv FILE``), one partition at a time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, choose_block, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import sharding, urls
from ..storage.blobs import pack, unpack
from ..storage.kv import open_kv, write_joined
from ..storage.layer import Layer
from . import objects

DEFAULT_MEMORY = 256 * 2**20
BYTES_PER_VOXEL = 96  # labels, the score map as float64 (x3 for affinities), per-axis face arrays
CSV_HEADER = "id_a,id_b,xa,ya,za,xb,yb,zb,score\n"
COLUMNS = ("id_a", "id_b", "area", "score", "xa", "ya", "za", "xb", "yb", "zb")
BINS = 256  # a face cost c falls in bin min(255, floor(256 c)): each contact's cost histogram (quantile scores)


def face_rows(labels: np.ndarray, values: np.ndarray | None, kind: str, own: Sequence[int], origin: Sequence[int],
              span: Sequence[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per pair of supervoxels touching across a face whose lower voxel lies in the block's own part
    (``own``: its shape; ``labels`` may hold one more voxel on the high sides): faces, score sum and
    first face (a global ordering key). ``values``: X, Y, Z boundary or X, Y, Z, 3 affinities.
    Also each pair's face-cost histogram as rows (a, b, bin, count), summed."""
    out: dict[str, list] = {k: [] for k in ("a", "b", "faces", "total", "high", "first", "a_low")}
    for axis in range(3):
        if labels.shape[axis] < 2:
            continue
        lo = tuple(slice(0, min(own[a], labels.shape[a] - (1 if a == axis else 0))) for a in range(3))
        hi = tuple(slice(s.start + (1 if a == axis else 0), s.stop + (1 if a == axis else 0)) for a, s in enumerate(lo))
        below, above = labels[lo], labels[hi]
        touching = (below != above) & (below != 0) & (above != 0)
        if not touching.any():
            continue
        where = np.nonzero(touching)
        u, v = below[where].astype(np.uint64), above[where].astype(np.uint64)
        if kind == "boundary":
            score = (values[lo][where].astype(np.float64) + values[hi][where].astype(np.float64)) / 2
        elif kind == "affinities":
            score = values[hi + (axis,)][where].astype(np.float64)
        else:
            score = np.zeros(len(u))
        coords = [where[a].astype(np.int64) + int(origin[a]) for a in range(3)]  # the lower voxel, in the volume
        key = ((coords[2] * span[1] + coords[1]) * span[0] + coords[0]) * 3 + axis
        swap = u > v
        out["a"].append(np.where(swap, v, u))
        out["b"].append(np.where(swap, u, v))
        out["faces"].append(np.ones(len(u), np.int64))
        out["total"].append(score)
        out["high"].append(1 - score if kind == "affinities" else score)  # the face's cost
        out["first"].append(key)
        out["a_low"].append(~swap)  # id_a is the lower voxel's
    if not out["a"]:
        return empty_rows(), empty_histograms()
    faces = {k: np.concatenate(v) for k, v in out.items()}
    cost = faces["high"]
    bins = np.minimum(BINS - 1, np.floor(cost * BINS)).astype(np.int64) if kind != "area" else np.zeros(len(cost), np.int64)
    return reduce_pairs(**faces), reduce_histograms(faces["a"], faces["b"], bins, np.ones(len(bins), np.int64))


def run_starts(*columns: np.ndarray) -> np.ndarray:
    """For rows sorted by ``columns``: True where a row differs from the one before in any column
    (the first of each run of equal rows)."""
    if not len(columns[0]):
        return np.zeros(0, bool)
    return np.r_[True, np.logical_or.reduce([c[1:] != c[:-1] for c in columns])]


def empty_histograms() -> dict[str, np.ndarray]:
    return {"a": np.zeros(0, np.uint64), "b": np.zeros(0, np.uint64), "bin": np.zeros(0, np.int64),
            "count": np.zeros(0, np.int64)}


def reduce_histograms(a: np.ndarray, b: np.ndarray, bin: np.ndarray, count: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of equal (a, b, bin) with their counts added, sorted by (a, b, bin)."""
    if not len(a):
        return empty_histograms()
    order = np.lexsort((bin, b, a))
    a, b, bin, count = a[order], b[order], bin[order], count[order]
    starts = np.flatnonzero(run_starts(a, b, bin))
    return {"a": a[starts], "b": b[starts], "bin": bin[starts], "count": np.add.reduceat(count, starts)}


def empty_rows() -> dict[str, np.ndarray]:
    return {"a": np.zeros(0, np.uint64), "b": np.zeros(0, np.uint64), "faces": np.zeros(0, np.int64),
            "total": np.zeros(0), "high": np.zeros(0), "first": np.zeros(0, np.int64), "a_low": np.zeros(0, bool)}


def reduce_pairs(a: np.ndarray, b: np.ndarray, faces: np.ndarray, total: np.ndarray, high: np.ndarray,
                 first: np.ndarray, a_low: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of equal (a, b) summed (faces, total), their highest face cost (``high``), their first
    face (smallest ``first``) and which side of it ``a`` is; sorted by (a, b)."""
    if not len(a):
        return empty_rows()
    order = np.lexsort((first, b, a))
    a, b, faces, total, high, first, a_low = (x[order] for x in (a, b, faces, total, high, first, a_low))
    starts = np.flatnonzero(run_starts(a, b))
    return {"a": a[starts], "b": b[starts], "faces": np.add.reduceat(faces, starts),
            "total": np.add.reduceat(total, starts), "high": np.maximum.reduceat(high, starts), "first": first[starts],
            "a_low": a_low[starts]}


def decode_first(first: np.ndarray, span: Sequence[int], low: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel coordinates (N x 3) of the lower voxel of each key's face, and the face's axis."""
    axis = first % 3
    rest = first // 3
    x = rest % span[0]
    rest = rest // span[0]
    y, z = rest % span[1], rest // span[1]
    return np.stack([x, y, z], axis=1) + np.asarray(low), axis


# -- tasks ----------------------------------------------------------------------------------------
@register("edges.forge")
@dataclass(frozen=True)
class EdgesForgeTask(Task):
    layer: str
    bbox: tuple
    work: str
    bits: int
    scores: str | None = None  # the boundary or affinity layer
    kind: str = "area"
    invert: bool = False
    fill_missing: bool = False

    def run(self) -> dict[str, Any]:
        layer = Layer.open(self.layer)
        box = Bbox.from_list(self.bbox)
        volume = layer.bounds(0)
        read = Bbox(box.minpt, [min(h + 1, v) for h, v in zip(box.maxpt, volume.maxpt)])
        labels = layer.read(read, 0, fill_missing=self.fill_missing)[..., 0]
        values = None
        if self.scores is not None:
            values = score_values(Layer.open(self.scores), read, self.kind, self.invert, self.fill_missing)
        span = [int(s) for s in volume.shape]
        origin = [int(m) - int(lo) for m, lo in zip(read.minpt, volume.minpt)]  # the read box within the volume
        rows, histograms = face_rows(labels, values, self.kind, box.shape, origin, span)
        parts = pair_parts(rows["a"], rows["b"], self.bits)
        name = "_".join(f"{lo}-{hi}" for lo, hi in zip(box.minpt, box.maxpt))
        items = [(f"{int(p)}/{name}", pack(**{k: v[parts == p] for k, v in rows.items()})) for p in np.unique(parts)]
        if self.kind != "area":
            hparts = pair_parts(histograms["a"], histograms["b"], self.bits)
            items += [(f"hist/{int(p)}/{name}", pack(**{k: v[hparts == p] for k, v in histograms.items()}))
                      for p in np.unique(hparts)]
        open_kv(self.work).put_many(items)
        return {"voxels": box.size, "block_pairs": len(rows["a"])}


def score_values(layer: Layer, box: Bbox, kind: str, invert: bool, fill_missing: bool) -> np.ndarray:
    """Boundary (X, Y, Z) or affinities (X, Y, Z, 3) as float64, in [0, 1] for integer maps."""
    data = layer.read(box, 0, fill_missing=fill_missing).astype(np.float64)
    if layer.info.dtype.kind in "ui":
        data /= float(np.iinfo(layer.info.dtype).max)
    if invert:
        data = 1 - data
    return data[..., 0] if kind == "boundary" else data


def pair_parts(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    if not len(a) or bits == 0:
        return np.zeros(len(a), np.int64)
    keys = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ b.astype(np.uint64)  # wraps: a hash, not a sum
    return sharding.shard_numbers(keys.tolist(), sharding.object_sharding(bits, 0)).astype(np.int64)


@register("edges.merge")
@dataclass(frozen=True)
class EdgesMergeTask(Task):
    layer: str
    work: str
    part: int
    out_dir: str
    kind: str
    span: tuple
    low: tuple

    def run(self) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        kv = open_kv(self.work)
        pieces = [unpack(blob) for blob in kv.get_many(sorted(k for k in kv.list(f"{self.part}/")))]
        rows = reduce_pairs(**{k: np.concatenate([p[k] for p in pieces]) for k in empty_rows()}) if pieces else empty_rows()
        lower, axis = decode_first(rows["first"], self.span, self.low)
        upper = lower + np.eye(3, dtype=np.int64)[axis]
        a_is_low = rows["a_low"].astype(bool)
        side_a = np.where(a_is_low[:, None], lower, upper)
        side_b = np.where(a_is_low[:, None], upper, lower)
        mean = rows["total"] / np.maximum(rows["faces"], 1)
        score = {"boundary": mean, "affinities": 1 - mean}.get(self.kind, 1 / np.maximum(rows["faces"], 1))
        columns = {"id_a": pa.array(rows["a"], pa.uint64()), "id_b": pa.array(rows["b"], pa.uint64()),
                   "area": pa.array(rows["faces"], pa.int64()), "score": pa.array(score, pa.float64())}
        if self.kind in ("boundary", "affinities"):
            columns[f"mean_{'boundary' if self.kind == 'boundary' else 'affinity'}"] = pa.array(mean, pa.float64())
            columns["max_score"] = pa.array(rows["high"], pa.float64())  # the contact's highest face cost
            blobs = [unpack(blob) for blob in kv.get_many(sorted(kv.list(f"hist/{self.part}/")))]
            hist = reduce_histograms(*(np.concatenate([h[k] for h in blobs]) for k in ("a", "b", "bin", "count"))) \
                if blobs else empty_histograms()
            # Sorted like the rows, and every contact has faces: the row of each (a, b, bin) counts up.
            new = run_starts(hist["a"], hist["b"])
            offsets = np.r_[np.flatnonzero(new), len(new)].astype(np.int32)
            columns["cost_bins"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(hist["bin"].astype(np.uint8)))
            columns["cost_counts"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(hist["count"].astype(np.uint32)))
        for i, axis_name in enumerate("xyz"):
            columns[f"{axis_name}a"] = pa.array(side_a[:, i], pa.int64())
        for i, axis_name in enumerate("xyz"):
            columns[f"{axis_name}b"] = pa.array(side_b[:, i], pa.int64())
        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer, compression="zstd")
        out = open_kv(self.out_dir)
        out.put(f"part-{self.part:05d}.parquet", buffer.getvalue())
        text = "".join(f"{a},{b},{xa},{ya},{za},{xb},{yb},{zb},{s!r}\n" for a, b, (xa, ya, za), (xb, yb, zb), s in
                       zip(rows["a"].tolist(), rows["b"].tolist(), side_a.tolist(), side_b.tolist(), score.tolist()))
        kv.put(f"csv/{self.part:05d}", text.encode())
        return {"edges": len(rows["a"]), "faces": int(rows["faces"].sum())}


# -- the planner ----------------------------------------------------------------------------------
@planner
def plan(path: str, *, boundary: str | None = None, affinities: str | None = None, invert: bool = False,
         name: str = "edges", csv: str | None = None, fill_missing: bool = False, shape: Sequence[int] | None = None,
         memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    layer = objects.open_segmentation(path, "edge tables")
    if layer.info.dtype.kind != "u":
        raise LayerError(f"{urls.display(layer.url)} holds {layer.info.data_type}; supervoxel ids are unsigned integers")
    if boundary and affinities:
        raise PumiceError("--boundary and --affinities are two ways to score edges: give one")
    if "/" in name or name in ("", ".", ".."):
        raise PumiceError(f"--name {name!r} must be a plain directory name")
    kind, scores = ("boundary", boundary) if boundary else ("affinities", affinities) if affinities else ("area", None)
    scale = layer.info.scale(0)
    score_url = None
    if scores is not None:
        other = Layer.open(scores)
        want = 1 if kind == "boundary" else 3
        if other.info.num_channels != want:
            raise LayerError(f"--{kind} {urls.display(other.url)} has {other.info.num_channels} channel(s); "
                             f"{'a boundary map has 1' if want == 1 else 'affinities have 3 (x, y, z)'}")
        theirs = other.info.scale(0)
        if tuple(theirs.size) != tuple(scale.size) or tuple(theirs.voxel_offset) != tuple(scale.voxel_offset):
            raise LayerError(f"--{kind} {urls.display(other.url)} covers {theirs.bounds}, the segmentation {scale.bounds}: "
                             f"they must be the same voxels")
        score_url = other.url
    elif invert:
        raise PumiceError("--invert applies to a --boundary or --affinities map")
    region = scale.bounds
    block = tuple(int(s) for s in shape) if shape is not None else tuple(
        int(b) for b in choose_block(region, scale.chunk_size, BYTES_PER_VOXEL, memory))
    blocks = Stage.grid("forge", region, block, lambda b: b, scale.voxel_offset).count
    bits, _ = sharding.partition_bits(blocks, region.size, objects.VOXELS_PER_OBJECT, False)
    url = layer.url
    out_dir = urls.join(url, name)
    params = {"layer": url, "block": list(block), "partition_bits": bits, "scores": score_url, "kind": kind}
    result = Plan("edges", url, params, provenance="edges")
    work = objects.forge_dir(result, name)
    span = tuple(int(s) for s in region.shape)
    low = tuple(int(v) for v in region.minpt)

    def work_url() -> str:
        return urls.join(url, work())

    result.stages = [
        Stage.grid("forge", region, block, lambda box: EdgesForgeTask(url, tuple(box.to_list()), work_url(), bits, score_url,
                                                                      kind, invert, fill_missing), scale.voxel_offset),
        Stage.each("merge", range(1 << bits), lambda p: EdgesMergeTask(url, work_url(), p, out_dir, kind, span, low)),
    ]
    csv_target = urls.normalize(csv) if csv else urls.join(out_dir, "merge-table.csv")
    result.description = {
        "segmentation": f"{urls.display(url)}: {layer.info.data_type}, size {format_vec(scale.size)}",
        "score": {"boundary": f"mean boundary of {urls.display(score_url or '')}" + (" (inverted)" if invert else ""),
                  "affinities": f"1 - mean affinity of {urls.display(score_url or '')}" + (" (inverted)" if invert else ""),
                  "area": "1 / contact area (no map given)"}[kind],
        "output": f"{urls.display(out_dir)}/part-*.parquet and {urls.display(csv_target)}",
        "block": format_vec(block),
        "partitions": 1 << bits,
    }

    def prepare() -> None:
        kv = open_kv(out_dir)
        ours = {f"part-{p:05d}.parquet" for p in range(1 << bits)}
        for key in kv.list("part-"):  # an earlier run's parts beyond this run's partitions: none outlives it
            if key not in ours:
                kv.delete(key)

    def finish() -> list[str]:
        kv = open_kv(work_url())
        counted = [0]

        def chunks():
            yield CSV_HEADER.encode()
            for p in range(1 << bits):
                chunk = kv.get(f"csv/{p:05d}")
                counted[0] += chunk.count(b"\n")
                yield chunk

        write_joined(csv_target, chunks())
        return [f"merge table: {urls.display(csv_target)} ({counted[0]:,} edges)"]

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        merged = totals.get("merge", {})
        return f"{int(merged.get('edges', 0)):,} edges over {int(merged.get('faces', 0)):,} faces"

    result.prepare, result.finish, result.outcome = prepare, finish, outcome
    result.cleanup = lambda: open_kv(work_url()).delete_prefix("")
    return result, []


def read_edges(path: str, name: str = "edges"):
    """The edge table beside the segmentation at ``path`` as one PyArrow table."""
    import pyarrow.parquet as pq

    layer = Layer.open(path)
    kv = open_kv(urls.join(layer.url, name))
    parts = sorted(k for k in kv.list("part-") if k.endswith(".parquet"))
    if not parts:
        raise PumiceError(f"no edge table at {urls.display(urls.join(layer.url, name))}: run `pumice edges` first")
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(io.BytesIO(kv.get(k))) for k in parts])
