"""``pumice evaluate SEG --truth GT``: how far a segmentation is from ground truth, by the measures
connectomics papers report: variation of information (split and merge) and the adapted Rand error.

Both come from the contingency table: n_st, the voxels labelled s in SEG and t in GT. Voxels where
GT is 0 (unlabelled, or boundary in most ground truth) are left out unless ``--keep-truth-zero``,
and so are voxels where ``--mask`` is 0. SEG's 0 is a label like any other. With N the voxels
compared, n_s and n_t the table's row and column sums, in bits:

- VOI split  = H(SEG | GT) = (sum n_t log n_t - sum n_st log n_st) / N  (GT objects cut in pieces)
- VOI merge  = H(GT | SEG) = (sum n_s log n_s - sum n_st log n_st) / N  (GT objects joined)
- adapted Rand error = 1 - F, with precision = (sum n_st^2 - N) / (sum n_s^2 - N) and recall =
  (sum n_st^2 - N) / (sum n_t^2 - N) (as scikit-image's ``adapted_rand_error``, GT as the truth).

Stages, so that no process holds the whole table: **count** (per block: the block's pairs and their
voxels, left per partition of SEG's id), **rows** (per partition: its pairs summed over blocks; the
sums over pairs and over SEG ids; GT ids' voxels left per partition of GT's id), **columns** (per
partition: the sums over GT ids). The finish step adds the partitions' sums and writes
``SEG/evaluations/<name>.json`` (``--name``; default the GT layer's folder name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, choose_block, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import sharding, urls
from ..storage.blobs import pack, unpack
from ..storage.kv import open_kv
from ..storage.layer import Layer
from . import objects

DEFAULT_MEMORY = 256 * 2**20
BYTES_PER_VOXEL = 64  # both labels as uint64, their renumbered copies, the pair keys and their sort
SUMS = ("voxels", "pairs_nlogn", "pairs_n2", "seg_nlogn", "seg_n2", "truth_nlogn", "truth_n2", "seg_ids", "truth_ids",
        "pairs")


def results_key(name: str) -> str:
    return f"evaluations/{name}.json"


def default_name(truth: str, mask: str | None) -> str:
    """The result's name: the ground truth layer's folder name (and the mask's)."""
    def base(url: str) -> str:
        return urls.normalize(url).rstrip("/").rsplit("/", 1)[-1] or "truth"

    return base(truth) + (f"_mask-{base(mask)}" if mask else "")


def id_parts(ids: np.ndarray, bits: int) -> np.ndarray:
    """The partition of each id (its hash): how rows and columns are split between tasks."""
    if not len(ids) or bits == 0:
        return np.zeros(len(ids), np.int64)
    return sharding.shard_numbers(ids.tolist(), sharding.object_sharding(bits, 0)).astype(np.int64)


def contingency(seg: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (seg id, truth id) present in two equal arrays of labels, and their voxels."""
    import fastremap

    if not seg.size:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)
    s_ids, s_local = np.unique(seg, return_inverse=True) if seg.size < 4096 else _renumbered(seg)
    t_ids, t_local = np.unique(truth, return_inverse=True) if truth.size < 4096 else _renumbered(truth)
    keys = (s_local.astype(np.uint64) << np.uint64(32)) | t_local.astype(np.uint64)
    pairs, counts = fastremap.unique(keys, return_counts=True)
    return (s_ids[(pairs >> np.uint64(32)).astype(np.int64)], t_ids[(pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)],
            counts.astype(np.int64))


def _renumbered(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values, each voxel's index among them), without sorting every voxel."""
    import fastremap

    local, table = fastremap.renumber(values, start=0, preserve_zero=False)
    ids = np.zeros(len(table), values.dtype)
    ids[np.fromiter(table.values(), np.int64, len(table))] = np.fromiter(table.keys(), values.dtype, len(table))
    return ids, local


def summed(keys: list[np.ndarray], counts: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Rows of equal keys (one array per key column) with their counts added, sorted by the keys."""
    if not len(counts):
        return keys, counts
    order = np.lexsort(tuple(reversed(keys)))
    keys = [k[order] for k in keys]
    counts = counts[order]
    change = np.zeros(len(counts), bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    return [k[starts] for k in keys], np.add.reduceat(counts, starts)


def nlogn(n: np.ndarray) -> float:
    n = n.astype(np.float64)
    return float(np.sum(n * np.log2(n))) if len(n) else 0.0


def square_sum(n: np.ndarray) -> float:
    return float(np.sum(n.astype(np.float64) ** 2))


# -- tasks ----------------------------------------------------------------------------------------
@register("evaluate.count")
@dataclass(frozen=True)
class CountTask(Task):
    seg: str
    truth: str
    mask: str | None
    mip: int
    bbox: tuple
    work: str
    bits: int
    keep_truth_zero: bool = False
    fill_missing: bool = False

    def run(self) -> dict[str, Any]:
        box = Bbox.from_list(self.bbox)
        seg = Layer.open(self.seg).read(box, self.mip, fill_missing=self.fill_missing)[..., 0]
        truth = Layer.open(self.truth).read(box, self.mip, fill_missing=self.fill_missing)[..., 0]
        keep = np.ones(seg.shape, bool) if self.keep_truth_zero else truth != 0
        if self.mask is not None:
            keep &= Layer.open(self.mask).read(box, self.mip, fill_missing=self.fill_missing)[..., 0] != 0
        s, t, n = contingency(seg[keep].astype(np.uint64), truth[keep].astype(np.uint64))
        parts = id_parts(s, self.bits)
        name = "_".join(f"{lo}-{hi}" for lo, hi in zip(box.minpt, box.maxpt))
        open_kv(self.work).put_many([(f"pairs/{int(p)}/{name}", pack(s=s[parts == p], t=t[parts == p], n=n[parts == p]))
                                     for p in np.unique(parts)])
        return {"voxels": box.size, "voxels_compared": int(n.sum())}


@register("evaluate.rows")
@dataclass(frozen=True)
class RowsTask(Task):
    work: str
    part: int
    bits: int

    def run(self) -> dict[str, Any]:
        kv = open_kv(self.work)
        blobs = [unpack(b) for b in kv.get_many(kv.list(f"pairs/{self.part}/"))]
        s = np.concatenate([b["s"] for b in blobs]) if blobs else np.zeros(0, np.uint64)
        t = np.concatenate([b["t"] for b in blobs]) if blobs else np.zeros(0, np.uint64)
        n = np.concatenate([b["n"] for b in blobs]) if blobs else np.zeros(0, np.int64)
        (s, t), n = summed([s, t], n)
        (rows,), row_n = summed([s], n)
        (cols,), col_n = summed([t], n)  # this partition's share of each GT id's voxels
        parts = id_parts(cols, self.bits)
        items = [(f"columns/{int(q)}/{self.part}", pack(t=cols[parts == q], n=col_n[parts == q])) for q in np.unique(parts)]
        sums = {"voxels": int(n.sum()), "pairs_nlogn": nlogn(n), "pairs_n2": square_sum(n), "seg_nlogn": nlogn(row_n),
                "seg_n2": square_sum(row_n), "seg_ids": len(rows), "pairs": len(n)}
        items.append((f"sums/rows/{self.part}", json.dumps(sums).encode()))
        kv.put_many(items)
        return {"pairs": len(n)}


@register("evaluate.columns")
@dataclass(frozen=True)
class ColumnsTask(Task):
    work: str
    part: int

    def run(self) -> dict[str, Any]:
        kv = open_kv(self.work)
        blobs = [unpack(b) for b in kv.get_many(kv.list(f"columns/{self.part}/"))]
        t = np.concatenate([b["t"] for b in blobs]) if blobs else np.zeros(0, np.uint64)
        n = np.concatenate([b["n"] for b in blobs]) if blobs else np.zeros(0, np.int64)
        (t,), n = summed([t], n)
        kv.put(f"sums/columns/{self.part}", json.dumps({"truth_nlogn": nlogn(n), "truth_n2": square_sum(n),
                                                        "truth_ids": len(t)}).encode())
        return {}


def scores(sums: dict[str, float]) -> dict[str, float]:
    """VOI split and merge (bits) and the adapted Rand error from the table's sums."""
    total = sums["voxels"]
    if total == 0:
        raise PumiceError("no voxels to compare: the ground truth is 0 everywhere (or the mask is empty); "
                          "--keep-truth-zero compares GT's 0 too")
    split = (sums["truth_nlogn"] - sums["pairs_nlogn"]) / total
    merge = (sums["seg_nlogn"] - sums["pairs_nlogn"]) / total
    agree = sums["pairs_n2"] - total
    precision = agree / (sums["seg_n2"] - total) if sums["seg_n2"] > total else 1.0
    recall = agree / (sums["truth_n2"] - total) if sums["truth_n2"] > total else 1.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"voi_split": max(0.0, split), "voi_merge": max(0.0, merge), "voi": max(0.0, split) + max(0.0, merge),
            "adapted_rand_error": 1 - f, "rand_precision": precision, "rand_recall": recall,
            "voxels": int(total), "seg_objects": int(sums["seg_ids"]), "truth_objects": int(sums["truth_ids"]),
            "pairs": int(sums["pairs"])}


# -- the planner ----------------------------------------------------------------------------------
def _labels(path: str, what: str) -> Layer:
    layer = Layer.open(path)
    info = layer.info
    if info.num_channels != 1 or info.dtype.kind not in "ui":
        raise LayerError(f"{what} {urls.display(layer.url)} is {info.type} {info.data_type} x {info.num_channels}: "
                         f"evaluate compares labels (one channel of integers)")
    return layer


def _same_geometry(a: Layer, b: Layer, mip: int, what: str) -> None:
    sa, sb = a.info.scale(mip), b.info.scale(mip)
    if tuple(sa.size) != tuple(sb.size) or tuple(sa.voxel_offset) != tuple(sb.voxel_offset):
        raise LayerError(f"{what} {urls.display(b.url)} covers {b.bounds(mip)} at mip {mip}, SEG covers {a.bounds(mip)}: "
                         f"they must be the same voxels (crop one with `pumice transfer --bounds`)")
    if not np.allclose(sa.resolution, sb.resolution):
        raise LayerError(f"{what} {urls.display(b.url)} has resolution {format_vec(sb.resolution)} nm at mip {mip}, SEG "
                         f"{format_vec(sa.resolution)} nm: compare layers of the same voxels")


@planner
def plan(seg: str, *, truth: str, mask: str | None = None, keep_truth_zero: bool = False, name: str | None = None,
         mip: int = 0,
         fill_missing: bool = False, shape: Sequence[int] | None = None,
         memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    name = name or default_name(truth, mask)
    if "/" in name or name in ("", ".", ".."):
        raise PumiceError(f"--name {name!r} must be a plain file name")
    layer = _labels(seg, "SEG")
    truth_layer = _labels(truth, "--truth")
    _same_geometry(layer, truth_layer, mip, "--truth")
    mask_layer = None
    if mask is not None:
        mask_layer = Layer.open(mask)
        if mask_layer.info.num_channels != 1:
            raise LayerError(f"--mask {urls.display(mask_layer.url)} has {mask_layer.info.num_channels} channels; a mask "
                             f"has one (nonzero: compared)")
        _same_geometry(layer, mask_layer, mip, "--mask")
    if not urls.is_writable(layer.url):
        raise LayerError(f"{urls.display(layer.url)} is read-only (http): the evaluation is stored beside the layer; "
                         f"copy it with `pumice transfer` first")
    scale = layer.info.scale(mip)
    region = scale.bounds
    block = tuple(shape) if shape is not None else choose_block(region, scale.chunk_size, BYTES_PER_VOXEL, memory)
    blocks = Stage.grid("count", region, block, lambda b: b, scale.voxel_offset).count
    bits, _ = sharding.partition_bits(blocks, region.size, objects.VOXELS_PER_OBJECT, False)
    url = layer.url
    result = Plan("evaluate", url, {"mip": mip, "block": list(block), "partition_bits": bits, "truth": truth_layer.url,
                                    "mask": mask_layer.url if mask_layer else None, "keep_truth_zero": keep_truth_zero,
                                    "name": name},
                  provenance=None)
    forge = objects.forge_dir(result, "evaluations")

    def work() -> str:
        return urls.join(url, forge())

    def count(box: Bbox) -> CountTask:
        return CountTask(url, truth_layer.url, mask_layer.url if mask_layer else None, mip, tuple(box.to_list()), work(),
                         bits, keep_truth_zero, fill_missing)

    partitions = range(1 << bits)
    result.stages = [Stage.grid("count", region, block, count, scale.voxel_offset),
                     Stage.each("rows", partitions, lambda p: RowsTask(work(), p, bits)),
                     Stage.each("columns", partitions, lambda p: ColumnsTask(work(), p))]
    result.description = {
        "segmentation": f"{urls.display(url)}: mip {mip} {scale.key} size {format_vec(scale.size)}",
        "truth": urls.display(truth_layer.url) + ("" if keep_truth_zero else " (its 0 voxels left out)"),
        "mask": urls.display(mask_layer.url) if mask_layer else "none",
        "block": format_vec(block),
        "partitions": 1 << bits,
        "output": f"{urls.display(url)}/{results_key(name)}",
    }

    def finish() -> list[str]:
        kv = open_kv(work())
        totals = dict.fromkeys(SUMS, 0.0)
        for key in kv.list("sums/"):
            for sum_name, value in json.loads(kv.get(key)).items():
                totals[sum_name] += value
        # No paths or job ids: the same layers compared anywhere give the same bytes.
        record = {"mask": mask_layer is not None, "mip": mip,
                  "truth_zero": "compared" if keep_truth_zero else "left out", "log_base": 2, **scores(totals)}
        open_kv(url).put_json(results_key(name), record)
        return []

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        record = read_result(url, name)
        return text(record) if record else "no evaluation written"

    result.finish, result.outcome = finish, outcome
    result.cleanup = lambda: open_kv(work()).delete_prefix("")
    result.result = lambda: read_result(url, name)
    return result, []


def read_result(seg: str, name: str) -> dict[str, Any] | None:
    return open_kv(urls.normalize(seg)).get_json(results_key(name))


def text(record: dict[str, Any]) -> str:
    return (f"VOI split {record['voi_split']:.4f} + merge {record['voi_merge']:.4f} = {record['voi']:.4f} bits; "
            f"adapted Rand error {record['adapted_rand_error']:.4f} (precision {record['rand_precision']:.4f}, recall "
            f"{record['rand_recall']:.4f}); {record['voxels']:,} voxels, {record['seg_objects']:,} SEG and "
            f"{record['truth_objects']:,} GT objects")
