"""Transfer: copy one mip of a layer to a new layer, changing what the user asks for.

Rechunk, re-encode, crop (--bounds), translate, sharded <-> unsharded, between any stores, with
optional downsampling in the same pass (each task writes its block and every new mip from it).
When nothing about the chunk files changes, they are copied as they are (the fast path). Layers
that CloudVolume or Igneous wrote with ``.gz``/``.br`` chunk files are read too, and the new layer
holds plain chunk names (the fast path decompresses while copying), so transfer is the migration
path for old data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..geometry import Bbox, choose_block, format_bytes, format_vec, grid_blocks, vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import urls
from ..storage.info import write_unit
from ..storage.layer import Layer
from .blockwise import BlockTask, OutputOptions, crop, new_layer
from .pyramid import global_grid_record, resolve_method

DEFAULT_MEMORY = 256 * 2**20


@register("transfer")
@dataclass(frozen=True)
class TransferTask(BlockTask):
    translate: tuple = (0, 0, 0)  # destination voxels minus source voxels

    def source_box(self, box: Bbox) -> Bbox:
        return box.translate([-t for t in self.translate])

    def compute(self, data: np.ndarray, region: Bbox, read: Bbox, source: Layer) -> np.ndarray:
        return data


@register("transfer.copy")
@dataclass(frozen=True)
class CopyChunksTask(Task):
    """The fast path: chunk (or shard) files copied byte for byte; CloudVolume's .gz/.br chunk
    files are decompressed on the way, so the copy holds plain names that every reader opens."""

    src: str
    mip: int
    dest: str
    bbox: tuple  # whole write units, in voxels of both layers (nothing moves)

    def run(self) -> dict[str, Any]:
        src, dest = Layer.open(self.src), Layer.open(self.dest)
        box = Bbox.from_list(self.bbox)
        scale = src.info.scale(self.mip)
        if scale.sharding is None:
            chunks = list(src.chunk_boxes(box, self.mip))
            files = src.read_chunk_files(chunks, self.mip)
            written = [(c, f) for c, f in zip(chunks, files) if f is not None]
            dest.write_chunk_files([c for c, _ in written], [f for _, f in written], 0)
            return {"voxels": box.size, "bytes_copied": sum(len(f) for _, f in written)}
        names = [src.shard_file(s, self.mip) for s in grid_blocks(box, write_unit(scale), scale.voxel_offset)]
        dest_key = dest.info.scale(0).key
        shards = [(f"{dest_key}/{name.split('/', 1)[1]}", data) for name, data in zip(names, src.kv.get_many(names))
                  if data is not None]
        dest.kv.put_many(shards)
        return {"voxels": box.size, "bytes_copied": sum(len(data) for _, data in shards)}


@planner
def plan(
    src: str,
    dest: str,
    *,
    translate: Sequence[int] = (0, 0, 0),
    mip: int = 0,
    bounds: Bbox | None = None,
    fill_missing: bool = False,
    chunk_size: Sequence[int] | None = None,
    encoding: str | None = None,
    sharded: bool | None = None,
    num_mips: int = 0,
    factor: str | Sequence[int] = "auto",
    method: str = "auto",
    sparse: bool = False,
    force: bool = False,
    memory: int = DEFAULT_MEMORY,
) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    source, dest = Layer.open_with_destination(src, dest, "transfer")
    sinfo = source.info
    sscale = sinfo.scale(mip)
    region = crop(source, mip, bounds)
    translate = vec(translate)
    target = region.translate(translate)
    output = OutputOptions(chunk_size=chunk_size, encoding=encoding, sharded=sharded, num_mips=num_mips, factor=factor,
                           method=method, sparse=sparse, force=force)
    bytes_per_voxel = sinfo.num_channels * sinfo.dtype.itemsize * (4 if num_mips else 3) + (4 if num_mips else 0)
    info, block, factors = new_layer(source, mip, region, layer_type=sinfo.type, data_type=sinfo.data_type,
                                     channels=sinfo.num_channels, output=output, memory=memory,
                                     bytes_per_voxel=bytes_per_voxel, translate=translate, notes=notes,
                                     extra={k: v for k, v in sinfo.extra.items() if k in ("segment_properties",)})
    method = resolve_method(sinfo.type, sinfo.data_type, method, force) if factors else "average"
    base = info.scales[0]

    compressed = [s for s in source.seen_chunk_suffixes(mip) if s]
    if compressed:
        notes.append(f"reading CloudVolume-compressed chunk files ({', '.join(compressed)}); the new layer holds them "
                     f"decompressed, under plain names")
    fast = (not factors and not any(translate) and base.chunk_size == sscale.chunk_size and base.encoding == sscale.encoding
            and base.compressed_segmentation_block_size == sscale.compressed_segmentation_block_size
            and (base.sharding is None) == (sscale.sharding is None)
            and (sscale.sharding is None or region == sscale.bounds)  # shards move whole, with their parameters
            and target.is_aligned(write_unit(sscale), sscale.voxel_offset, sscale.bounds))
    if fast and sscale.sharding is not None:
        info = replace(info, scales=(replace(base, sharding=sscale.sharding),))
        block = choose_block(base.bounds, write_unit(sscale), bytes_per_voxel, memory)

    fresh = Layer.check_destination(dest, info)
    common = dict(src=source.url, mip=mip, dest=dest)

    def task(box: Bbox) -> Task:
        if fast:
            return CopyChunksTask(bbox=tuple(box.to_list()), **common)
        return TransferTask(bbox=tuple(box.to_list()), translate=tuple(translate), fill_missing=fill_missing,
                            factors=tuple(tuple(f) for f in factors), method=method, sparse=sparse, **common)

    params = {"src": source.url, "region": region.to_list(), "translate": list(translate), "info": info.to_json(),
              "block": list(block), "fast": fast, "method": method, **global_grid_record(info.scales[1:])}
    description = {
        "source": f"{urls.display(source.url)} mip {mip} ({sscale.key}): {sinfo.type} {sinfo.data_type} x {sinfo.num_channels}, "
                  f"region {region}",
        "destination": urls.display(dest),
        "scales": [f"mip {i} {s.key}: size {format_vec(s.size)}, offset {format_vec(s.voxel_offset)}, chunk {format_vec(s.chunk_size)}, "
                   f"{s.encoding}{', sharded' if s.sharding else ''}" for i, s in enumerate(info.scales)],
        "mode": "copy chunk files unchanged (fast path)" if fast else "decode and re-encode",
        "block": format_vec(block),
        "memory_per_task": format_bytes(float(np.prod(block)) * bytes_per_voxel),
        "voxels": target.size,
    }

    return Plan("transfer", dest, params, [Stage.grid("transfer", target, block, task, base.voxel_offset)],
                description=description, fresh_destination=fresh, provenance="transfer",
                sources=[urls.display(source.url)], prepare=functools.partial(Layer.create, dest, info)), notes
