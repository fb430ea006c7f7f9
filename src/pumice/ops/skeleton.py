"""Skeleton: forge skeleton fragments per block with kimimaro (TEASAR), then fuse them per object.

forge: each task skeletonizes its block plus one voxel on the high side. kimimaro's fix_borders
centres every skeleton that crosses a block face on the object's cross-section in that face, and
the face's voxel plane is in both neighbouring blocks, so their fragments end on the same vertex.
Fragments are written grouped by merge partition: ``<skeleton dir>/.forge/<job>/<partition>/<block>``
(the spatial index, as for meshes).

merge: one task per partition (a shard in the sharded format) fuses each object's fragments
(osteoid's simple_merge), then kimimaro's postprocess welds duplicate border vertices, removes
loops, joins close components and prunes ticks shorter than ``tick_threshold`` nm; objects with
less cable than ``min_cable`` nm are dropped. Output: one file per object, or Neuroglancer's
sharded skeleton format through TensorStore's sharded kvstore.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, choose_block, count_grid_blocks, format_bytes, format_vec, vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import records, sharding, skeletons, urls
from ..storage.kv import open_kv
from ..storage.layer import Layer
from . import objects, stats

DEFAULT_MEMORY = 768 * 2**20
FORGE_BYTES_PER_VOXEL = 60  # the block, kimimaro's distance transforms (float32) and path fields
# Default forge block: kimimaro's cost per voxel grows with the block (pinky40, 2 workers: 256^3
# blocks 317 s, 555 s of kimimaro, 494 MiB per worker; 128^3 blocks 150 s, 270 s, 237 MiB, with
# 1617 instead of 1626 skeletons and 1.2% more cable).
FORGE_VOXELS = 128**3
JOIN_NM = 1000.0  # merge: pieces of one object closer than this are joined into one tree


@register("skeleton.forge")
@dataclass(frozen=True)
class SkeletonForgeTask(Task):
    layer: str
    mip: int
    bbox: tuple
    work: str
    partition_bits: int
    minishard_bits: int
    teasar_scale: float = 1.5
    teasar_const: float = 300.0
    dust_threshold: int = 1000
    ids: tuple = ()
    exclude_ids: tuple = ()
    fix_branching: bool = True
    fix_borders: bool = True
    fill_missing: bool = False
    cross_sections: bool = False
    dust_global: int = 0  # objects under this many voxels in the volume (stats' counts) are skipped

    def run(self) -> dict[str, Any]:
        import kimimaro

        started = time.perf_counter()
        layer = Layer.open(self.layer)
        scale = layer.info.scale(self.mip)
        box = Bbox.from_list(self.bbox)
        labels, read_box = objects.read_block(layer, self.mip, box, ids=self.ids, exclude_ids=self.exclude_ids,
                                              fill_missing=self.fill_missing)
        if self.dust_global:
            labels, _ = stats.without_small_objects(labels, self.layer, self.mip, self.dust_global)
        if self.dust_threshold:
            labels = _remove_dust(labels, self.dust_threshold)
        resolution = np.array(scale.resolution, dtype=np.float32)
        found = kimimaro.skeletonize(
            labels, teasar_params={"scale": self.teasar_scale, "const": self.teasar_const}, anisotropy=resolution,
            dust_threshold=0, fix_branching=self.fix_branching, fix_borders=self.fix_borders, progress=False, parallel=1)
        traced = time.perf_counter()
        if self.cross_sections and found:
            found = kimimaro.cross_sectional_area(labels, found, anisotropy=resolution)
        del labels
        attributes = skeletons.vertex_attributes(self.cross_sections)
        # Block-local voxel index * resolution -> the volume's nm, through voxel centres.
        shift = (np.array(read_box.minpt, dtype=np.float64) + 0.5) * resolution
        encoded = []
        for label in sorted(found):
            skeleton = found[label]
            if not len(skeleton.vertices):
                continue
            skeleton.vertices = (skeleton.vertices.astype(np.float64) + shift).astype(np.float32)
            encoded.append((int(label), skeletons.encode(skeleton, attributes)))
        objects.write_fragments(open_kv(self.layer), self.work, box, encoded, self.partition_bits, self.minishard_bits,
                                skeletons.pack)
        return {"voxels": box.size, "fragments": len(encoded), "seconds": time.perf_counter() - started,
                "teasar_seconds": traced - started}


def _remove_dust(labels: np.ndarray, threshold: int) -> np.ndarray:
    """Background for connected pieces under ``threshold`` voxels that do not touch the block's
    faces. A piece at a face may be the tip of an object that goes on in the next block: dropped
    (as kimimaro's own dust threshold does), it left a gap, and 9% of pinky40's connected objects
    came out as several skeletons."""
    import cc3d
    import fastremap

    pieces = cc3d.connected_components(labels, connectivity=26)
    ids, counts = fastremap.unique(pieces, return_counts=True)
    faces = np.concatenate([np.unique(f) for f in (pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1],
                                                   pieces[:, :, 0], pieces[:, :, -1])])
    small = ids[(counts < threshold) & (ids != 0) & ~np.isin(ids, faces)]
    if len(small):
        pieces = fastremap.mask(pieces, small.tolist(), in_place=True)
        labels[pieces == 0] = 0  # background stays background; the small pieces join it
    return labels


@register("skeleton.merge")
@dataclass(frozen=True)
class SkeletonMergeTask(Task):
    layer: str
    skeleton_dir: str
    work: str
    partition: int
    partition_bits: int
    minishard_bits: int
    sharded: bool
    cross_sections: bool = False
    tick_threshold: float = 3500.0
    min_cable: float = 1000.0
    keep_others: bool = False

    def run(self) -> dict[str, Any]:
        import kimimaro
        from osteoid import Skeleton

        kv = open_kv(self.layer)
        attributes = skeletons.vertex_attributes(self.cross_sections)
        pieces: dict[int, list] = {}
        for key in sorted(kv.list(f"{self.work}/{self.partition}/")):
            for label, blob in skeletons.unpack(kv.get(key)):
                pieces.setdefault(label, []).append(skeletons.decode(blob, attributes, label))
        record_key = records.record_key(self.skeleton_dir, self.partition)
        previous = set(kv.get_json(record_key) or [])
        written: dict[int, bytes] = {}
        cable = 0.0
        short = 0
        for label in sorted(pieces):
            fused = Skeleton.simple_merge(pieces.pop(label))
            fused.extra_attributes = attributes
            fused = kimimaro.postprocess(fused, dust_threshold=0, tick_threshold=self.tick_threshold)
            if len(fused.vertices) and len(fused.components()) > 1:
                # Pieces that postprocess left apart (its joins are limited to twice the largest
                # radius): join those within JOIN_NM, nearest vertices first.
                fused = kimimaro.join_close_components(fused, radius=JOIN_NM)
            length = float(fused.cable_length()) if len(fused.vertices) else 0.0
            if length < self.min_cable:
                short += 1
                continue
            fused.id = label
            cable += length
            written[label] = skeletons.encode(fused, attributes)
        if self.sharded:
            spec = sharding.object_sharding(self.partition_bits, self.minishard_bits, "gzip")
            shard_file = f"{self.skeleton_dir}/{sharding.shard_name(self.partition, spec)}"
            if not (self.keep_others and previous):
                kv.delete(shard_file)  # a whole run rewrites its shard: no stale objects survive
            store = skeletons.sharded_kvstore(_dir_spec(self.layer, self.skeleton_dir), spec)
            if written:
                import tensorstore as ts

                txn = ts.Transaction()
                for label, blob in written.items():
                    store.with_transaction(txn).write(skeletons.shard_key(label), blob).result()
                txn.commit_sync()
        else:
            for label, blob in written.items():
                kv.put(f"{self.skeleton_dir}/{label}", blob)
        objects = sorted(set(written) | (previous if self.keep_others else set()))
        kv.put_json(record_key, objects)
        return {"objects": len(written), "cable_nm": cable, "short_objects": short}


def _dir_spec(layer_url: str, directory: str) -> dict:
    spec = urls.kvstore_spec(layer_url)
    return {**spec, "path": spec.get("path", "") + f"{directory}/"}


# -- planning ------------------------------------------------------------------------------------
@planner
def plan(
    path: str,
    *,
    mip: int = 0,
    shape: Sequence[int] | None = None,
    teasar_scale: float = 1.5,
    teasar_const: float = 300.0,
    dust_threshold: int = 1000,
    dust_global: int = 0,
    ids: Sequence[int] = (),
    exclude_ids: Sequence[int] = (),
    fix_branching: bool = True,
    fix_borders: bool = True,
    fill_missing: bool = False,
    cross_sections: bool = False,
    tick_threshold: float = 3500.0,
    min_cable: float = 1000.0,
    skeleton_dir: str | None = None,
    sharded: bool = False,
    memory: int = DEFAULT_MEMORY,
) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    layer = objects.open_segmentation(path, "skeletons")
    info = layer.info
    scale = info.scale(mip)
    for name, value in (("--teasar-scale", teasar_scale), ("--teasar-const", teasar_const),
                        ("--tick-threshold", tick_threshold), ("--min-cable", min_cable),
                        ("--dust-threshold", dust_threshold), ("--dust-global", dust_global)):
        if value < 0:
            raise PumiceError(f"{name} must be zero or more, got {value}")
    skeleton_dir = objects.output_dir(info, skeleton_dir, "skeletons", "skeletons")
    ids = tuple(sorted({int(i) for i in ids}))
    exclude_ids = tuple(sorted({int(i) for i in exclude_ids}))
    # One job id for equal settings however they were written (1000 or 1000.0).
    teasar_scale, teasar_const, tick_threshold, min_cable = map(float, (teasar_scale, teasar_const, tick_threshold, min_cable))
    dust_threshold, dust_global = int(dust_threshold), int(dust_global)
    if dust_global and not stats.has_counts(layer.url, mip):
        raise PumiceError(f"--dust-global reads each object's size from `pumice stats`; run `pumice stats "
                          f"{urls.display(layer.url)}{' --mip ' + str(mip) if mip else ''}` first")

    region = scale.bounds
    per_voxel = FORGE_BYTES_PER_VOXEL + info.dtype.itemsize
    block = vec(shape) if shape is not None else choose_block(region, scale.chunk_size, per_voxel,
                                                               min(memory, int(FORGE_VOXELS * per_voxel)))
    blocks = count_grid_blocks(region, block, scale.voxel_offset)
    kv = open_kv(layer.url)
    existing = kv.get_json(f"{skeleton_dir}/info")
    if existing is not None and existing.get("@type") != skeletons.SKELETON_TYPE:
        raise PumiceError(f"{urls.display(layer.url)}/{skeleton_dir} holds {existing.get('@type')}; choose another --dir")
    if existing is not None and bool(existing.get("sharding")) != sharded:
        raise PumiceError(f"{urls.display(layer.url)}/{skeleton_dir} already holds {'sharded' if existing.get('sharding') else 'unsharded'} "
                          "skeletons; choose another --dir or delete that directory first")
    bits, minishard_bits = objects.partitions(existing, blocks, region.size, sharded)
    attributes = skeletons.vertex_attributes(cross_sections)
    skeleton_info = skeletons.skeleton_info(
        attributes, sharding.object_sharding(bits, minishard_bits, "gzip") if sharded else None,
        {"mip": mip, "pumice_partition": [bits, minishard_bits]})

    params = {"mip": mip, "block": list(block), "teasar": [teasar_scale, teasar_const], "dust_threshold": dust_threshold,
              "ids": list(ids), "exclude_ids": list(exclude_ids), "fix_branching": fix_branching, "fix_borders": fix_borders,
              "cross_sections": cross_sections, "tick_threshold": tick_threshold, "min_cable": min_cable,
              "dir": skeleton_dir, "sharded": sharded, "partition": [bits, minishard_bits]}
    url = layer.url
    result = Plan("skeleton", url, params, provenance="skeleton",
                  prepare=lambda: objects.create_output_dir(layer, "skeletons", skeleton_dir, skeleton_info))
    work = objects.forge_dir(result, skeleton_dir)

    def forge_task(box: Bbox) -> SkeletonForgeTask:
        return SkeletonForgeTask(layer=url, mip=mip, bbox=tuple(box.to_list()), work=work(), partition_bits=bits,
                                 minishard_bits=minishard_bits, teasar_scale=float(teasar_scale),
                                 teasar_const=float(teasar_const), dust_threshold=int(dust_threshold), ids=ids,
                                 exclude_ids=exclude_ids, fix_branching=fix_branching, fix_borders=fix_borders,
                                 fill_missing=fill_missing, cross_sections=cross_sections, dust_global=dust_global)

    def merge_task(part: int) -> SkeletonMergeTask:
        return SkeletonMergeTask(layer=url, skeleton_dir=skeleton_dir, work=work(), partition=part, partition_bits=bits,
                                 minishard_bits=minishard_bits, sharded=sharded, cross_sections=cross_sections,
                                 tick_threshold=float(tick_threshold), min_cable=float(min_cable), keep_others=bool(ids))

    result.stages = [Stage.grid("forge", region, block, forge_task, scale.voxel_offset),
                     Stage.each("merge", range(1 << bits), merge_task)]
    result.description = {
        "layer": f"{urls.display(url)}: segmentation {info.data_type}, mip {mip} {scale.key} size {format_vec(scale.size)}",
        "skeletons": f"{url.rstrip('/')}/{skeleton_dir}: " + (f"sharded, {1 << bits} shard(s)" if sharded else "one file per object"),
        "teasar": f"scale {teasar_scale:g}, const {teasar_const:g} nm",
        "block": format_vec(block),
        "memory_per_task": format_bytes(float(np.prod(block)) * per_voxel),
        "voxels": region.size,
    }

    def finish() -> list[str]:
        messages = objects.missing_ids_warning(kv, skeleton_dir, ids,
                                               f"have no skeleton (not in mip {mip}, dust, or less cable than --min-cable)")
        return messages

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        merge = totals["merge"]
        text = f"{int(merge.get('objects', 0))} skeleton(s), {merge.get('cable_nm', 0) / 1e3:,.1f} µm of cable"
        if merge.get("short_objects"):
            text += f" ({int(merge['short_objects'])} object(s) under --min-cable dropped)"
        forge = totals["forge"]
        if forge.get("seconds"):
            text += f"; forge task time {forge['seconds']:.0f} s, of which kimimaro {forge.get('teasar_seconds', 0):.0f} s"
        return text

    result.finish = finish
    result.cleanup = lambda: kv.delete_prefix(work() + "/")
    result.outcome = outcome
    return result, notes


def skeletonized_objects(path: str, skeleton_dir: str = "skeletons") -> list[int]:
    return records.recorded(open_kv(Layer.open(path).url), skeleton_dir)


def read_skeletons(path: str, ids: Sequence[int], skeleton_dir: str | None = None) -> dict[int, Any]:
    """The stored skeletons of ``ids`` (osteoid Skeletons, nm); ids without one are left out."""
    layer = Layer.open(path)
    skeleton_dir = skeleton_dir or str(layer.info.extra.get("skeletons") or "skeletons")
    kv = open_kv(layer.url)
    info = kv.get_json(f"{skeleton_dir}/info")
    if info is None:
        raise PumiceError(f"{urls.display(layer.url)} has no skeletons in {skeleton_dir!r}; run `pumice skeleton` first")
    attributes = info.get("vertex_attributes", [])
    out = {}
    if info.get("sharding"):
        store = skeletons.sharded_kvstore(_dir_spec(layer.url, skeleton_dir), info["sharding"])
        for label in ids:
            blob = store.read(skeletons.shard_key(label)).result().value
            if blob:
                out[label] = skeletons.decode(blob, attributes, label)
    else:
        for label in ids:
            blob = kv.get(f"{skeleton_dir}/{label}")
            if blob is not None:
                out[label] = skeletons.decode(blob, attributes, label)
    return out
