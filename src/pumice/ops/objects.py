"""What mesh and skeleton share: operations that write one output per segmentation object into a
directory of the layer, forged over a grid of blocks and merged per partition (= shard)."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox
from ..plan import Plan
from ..storage import inputs, records, sharding, urls
from ..storage.info import LayerInfo
from ..storage.kv import KV
from ..storage.layer import Layer

VOXELS_PER_OBJECT = 50_000  # a guess at object density, only to size minishards (index granularity)


def open_segmentation(path: str, product: str) -> Layer:
    """The single-channel segmentation at ``path``, which must be writable to receive ``product``."""
    url = urls.normalize(path)
    if not urls.is_writable(url):  # before any read: nothing to fetch to say no
        raise LayerError(f"cannot write {product} into {urls.display(url)}: http(s) locations are read-only; "
                         "transfer the layer to a path, gs:// or s3:// first")
    layer = Layer.open(path)
    if layer.info.type != "segmentation":
        raise PumiceError(f"{urls.display(layer.url)} is an image layer; {product} are made from segmentation layers")
    if layer.info.num_channels != 1:
        raise PumiceError(f"{product} need a single-channel segmentation")
    return layer


def output_dir(info: LayerInfo, given: str | None, key: str, default: str) -> str:
    """``--dir``, else the directory the info names under ``key``, else ``default``."""
    directory = given or str(info.extra.get(key) or default)
    if "/" in directory or directory in ("", ".", "..") or any(s.key == directory for s in info.scales):
        raise PumiceError(f"--dir {directory!r} must be a plain directory name that no scale uses")
    return directory


def partitions(existing: dict | None, blocks: int, voxels: float, sharded: bool) -> tuple[int, int]:
    """Shard and minishard bits: those of an earlier run in the same directory (so its records stay
    valid for ``--ids`` runs), else chosen from the block count."""
    if existing is not None and "pumice_partition" in existing:
        bits, minishard_bits = existing["pumice_partition"]
        return int(bits), int(minishard_bits)
    return sharding.partition_bits(blocks, voxels, VOXELS_PER_OBJECT, sharded)


def link(layer: Layer, key: str, directory: str) -> None:
    """Name ``directory`` in the segmentation's info under ``key`` (mesh, skeletons)."""
    if layer.info.extra.get(key) != directory:
        layer.info = replace(layer.info, extra={**layer.info.extra, key: directory})
        layer.save_info()


def create_output_dir(layer: Layer, key: str, directory: str, info: dict) -> None:
    """A plan's ``prepare``: write the mesh or skeleton directory's info and name it in the layer's."""
    layer.kv.put_json(f"{directory}/info", info)
    link(layer, key, directory)


def read_block(layer: Layer, mip: int, box: Bbox, *, ids: Sequence[int], exclude_ids: Sequence[int],
               fill_missing: bool, mapping: str | None = None) -> tuple[np.ndarray, Bbox]:
    """The block's labels plus one voxel on the high side (inside the volume), Fortran order, through
    the staged supervoxel -> body table ``mapping`` if given (ids it does not name stay), with only
    ``ids`` kept and ``exclude_ids`` removed; and the box that was read."""
    import fastremap

    bounds = layer.info.scale(mip).bounds
    read_box = Bbox(box.minpt, tuple(min(b + 1, m) for b, m in zip(box.maxpt, bounds.maxpt)))
    labels = np.asfortranarray(layer.read(read_box, mip, fill_missing=fill_missing)[..., 0])
    if mapping is not None:
        labels = bodies_of(labels, mapping)
    if ids:
        labels = fastremap.mask_except(labels, list(ids), in_place=True)
    if exclude_ids:
        labels = fastremap.mask(labels, list(exclude_ids), in_place=True)
    return labels, read_box


def bodies_of(labels: np.ndarray, mapping: str) -> np.ndarray:
    """Supervoxels replaced by their bodies (uint64), looked up in the staged table a page at a time."""
    import fastremap

    labels = np.asfortranarray(labels.astype(np.uint64, copy=False))
    present = fastremap.unique(labels)
    bodies, found = inputs.lookup(mapping, present)
    bodies[~found] = present[~found]
    return fastremap.remap(labels, dict(zip(present.tolist(), bodies.tolist())), preserve_missing_labels=True,
                           in_place=True)


def staged_mapping(mapping: str | None, dest: str) -> inputs.SideInput | None:
    """A supervoxel -> body mapping file read, checked and staged as a table beside ``dest``."""
    if mapping is None:
        return None
    from .remap import read_mapping

    svs, bodies = read_mapping(mapping)
    return inputs.of_bytes(inputs.table_bytes(svs, bodies), "mapping.table", dest)


def write_fragments(kv: KV, work: str, box: Bbox, items: list, partition_bits: int, minishard_bits: int,
                    pack: Callable[[list], bytes]) -> None:
    """Forge's output, the spatial index: ``items`` (id first) grouped by the merge partition of
    their id, one file per partition and block, ``<work>/<partition>/<block>``."""
    if not items:
        return
    spec = sharding.object_sharding(partition_bits, minishard_bits)
    groups: dict[int, list] = {}
    for part, item in zip(sharding.shard_numbers([item[0] for item in items], spec), items):
        groups.setdefault(int(part), []).append(item)
    name = "_".join(f"{lo}-{hi}" for lo, hi in zip(box.minpt, box.maxpt))
    for part, group in groups.items():
        kv.put(f"{work}/{part}/{name}", pack(group))


def missing_ids_warning(kv: KV, directory: str, ids: Sequence[int], reason: str) -> list[str]:
    """A warning naming the ``ids`` the records of ``directory`` do not list, or nothing."""
    if not ids:
        return []
    written = set(records.recorded(kv, directory))
    missing = [i for i in ids if i not in written]
    if not missing:
        return []
    shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
    return [f"warning: {len(missing)} of the --ids {reason}: {shown}"]


def forge_dir(plan: Plan, output_dir: str) -> Callable[[], str]:
    """Where forge leaves fragments for merge: ``<output dir>/.forge/<job id>``, named once the plan's
    params are complete (the ``@planner`` decorator adds the arguments after the planner returns)."""

    @functools.cache
    def work() -> str:
        return f"{output_dir}/.forge/{plan.job_id}"

    return work
