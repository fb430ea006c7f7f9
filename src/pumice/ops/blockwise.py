"""Blockwise operations that write a new layer: read a block of the source (with context), compute,
write the block and the mips it makes. Transfer, quantize, normalize, CLAHE and remap are this shape.

An operation of this shape supplies three things:

- a task: a subclass of ``BlockTask`` with its own settings as fields (all with defaults) and a
  ``compute`` method (data of the block's region -> output of its read box);
- the output layer's type, data type and channels, and how many bytes a voxel costs a task;
- its checks and description.

``plan_block_operation`` does the rest, the same way for every such operation: it opens the
source, refuses a destination equal to it, crops to ``--bounds``, gives the new layer its scales
from the source and the output options (``new_layer``), writes the info, lays the task grid, and
returns a Plan whose provenance the runner records.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, Vec, format_bytes, format_vec, vec
from ..plan import Plan, Stage, Task
from ..storage import urls
from ..storage.info import LayerInfo, Scale, check_encoding, default_encoding, scale_key
from ..storage.inputs import SideInput
from ..storage.layer import Layer
from .downsample import write_with_levels
from .pyramid import global_grid_record, plan_factors, plan_new_layer, read_box, resolve_method


@dataclass(frozen=True)
class OutputOptions:
    """How a new layer is stored: the CLI's output group (``--chunk-size --encoding --sharded
    --num-mips --factor``). None means "as the source", when the source's choice can hold the output."""

    chunk_size: tuple | None = None
    encoding: str | None = None
    sharded: bool | None = None
    num_mips: int = 0
    factor: str | tuple = "auto"
    method: str = "auto"  # how the mips are made (see pumice downsample)
    sparse: bool = False
    force: bool = False

    @classmethod
    def of(cls, params: dict[str, Any]) -> "OutputOptions":
        """The options among a planner's keyword arguments."""
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params})


def new_layer(source: Layer, mip: int, region: Bbox, *, layer_type: str, data_type: str, channels: int,
              output: OutputOptions, memory: int, bytes_per_voxel: float, full_xy: bool = False,
              translate: Sequence[int] = (0, 0, 0), extra: dict | None = None,
              notes: list[str] | None = None) -> tuple[LayerInfo, Vec, list[Vec]]:
    """A new layer holding ``region`` of ``source``'s mip (moved by ``translate``): its info with mip 0
    at the source's resolution and any mips the options ask for, the task block and the factors.

    The encoding is the given one (checked), else the source's if it can hold the output, else the
    default for the output's type (with a note). Chunks are the given size or the source's.
    """
    sscale = source.info.scale(mip)
    target = region.translate(translate)
    encoding = output.encoding
    if encoding is None:
        encoding = sscale.encoding
        try:
            check_encoding(layer_type, data_type, encoding, channels)
        except PumiceError:
            encoding = default_encoding(layer_type, data_type)
            if notes is not None:
                notes.append(f"{sscale.encoding} cannot hold {data_type} x {channels}: writing {encoding} chunks "
                             f"(choose with --encoding)")
    check_encoding(layer_type, data_type, encoding, channels)
    if output.num_mips < 0:
        raise PumiceError(f"--num-mips must be 0 or more, got {output.num_mips}")
    base = Scale(key=sscale.key or scale_key(sscale.resolution), size=target.shape, resolution=sscale.resolution,
                 voxel_offset=target.minpt, chunk_size=vec(output.chunk_size or sscale.chunk_size), encoding=encoding,
                 compressed_segmentation_block_size=(sscale.compressed_segmentation_block_size or (8, 8, 8))
                 if encoding == "compressed_segmentation" else None)
    info = LayerInfo(layer_type, data_type, channels, (base,), dict(extra or {}))
    factors = plan_factors(base, output.factor, output.num_mips) if output.num_mips else []
    sharded = (sscale.sharding is not None) if output.sharded is None else output.sharded
    info, block = plan_new_layer(info, factors, sharded=sharded, budget=memory, bytes_per_voxel=bytes_per_voxel,
                                 full_xy=full_xy)
    return info, block, factors


def crop(source: Layer, mip: int, bounds: Bbox | None) -> Bbox:
    """``--bounds`` (voxels of the source's mip), which must lie inside it; the whole mip without."""
    volume = source.bounds(mip)
    if bounds is None:
        return volume
    if bounds.empty() or not volume.contains(bounds):
        raise PumiceError(f"--bounds {bounds} lies outside mip {mip}'s volume {volume}; choose bounds inside it")
    return bounds


@dataclass(frozen=True)
class BlockTask(Task):
    """Make the block ``bbox`` (voxels of the new layer's mip 0) and its mips from ``src``.

    Subclasses add their settings as fields with defaults and implement ``compute``; ``region``
    adds context, ``source_box`` moves between the two layers' voxels. ``run`` reads, computes,
    writes and reports, the same way for all.
    """

    src: str
    mip: int
    dest: str
    bbox: tuple
    factors: tuple = ()  # of the mips made with the block
    method: str = "average"  # how those mips are made
    sparse: bool = False
    fill_missing: bool = False

    def source_box(self, box: Bbox) -> Bbox:
        """Source voxels of ``box`` (new layer's voxels); the same unless the data moves."""
        return box

    def region(self, read: Bbox, source: Layer) -> Bbox:
        """What to read (source voxels) to make ``read`` (also source voxels): ``read`` itself unless
        the kernel needs context."""
        return read

    def compute(self, data: np.ndarray, region: Bbox, read: Bbox, source: Layer) -> np.ndarray | tuple[np.ndarray, dict]:
        """The output (X, Y, Z[, C]) over ``read`` from ``data``, the source's voxels of ``region``
        (both source voxels); a tuple adds numbers to the run's summary."""
        raise NotImplementedError  # pragma: no cover - abstract

    def run(self) -> dict[str, Any]:
        src, dest = Layer.open(self.src), Layer.open(self.dest)
        box = Bbox.from_list(self.bbox)
        made = read_box(box, dest.bounds(0), self.factors)  # the block, and below it what its mips need
        read = self.source_box(made)
        region = self.region(read, src)
        data = src.read(region, self.mip, fill_missing=self.fill_missing)
        out = self.compute(data, region, read, src)
        numbers: dict[str, Any] = {}
        if isinstance(out, tuple):
            out, numbers = out
        if out.ndim == 3:
            out = out[..., np.newaxis]
        written = write_with_levels(dest, box, made, out, self.factors, self.method, self.sparse)
        return {"voxels": box.size, "voxels_written": written, **numbers}


def plan_block_operation(operation: str, source: Layer, dest: str, *, mip: int, bounds: Bbox | None,
                         task: Callable[..., Task], layer_type: str, data_type: str, channels: int,
                         output: OutputOptions, fill_missing: bool, memory: int, bytes_per_voxel: float,
                         translate: Sequence[int] = (0, 0, 0), full_xy: bool = False, extra: dict | None = None,
                         params: dict[str, Any] | None = None, description: dict[str, Any] | None = None,
                         provenance: str | None = None, outcome: Callable[[dict[str, dict[str, float]]], str] | None = None,
                         side_inputs: dict[str, SideInput] | None = None, notes: list[str] | None = None) -> Plan:
    """The plan of a ``BlockTask`` operation from ``source`` to a new layer at ``dest`` (see
    ``Layer.open_with_destination``). ``task(**fields)`` makes one task from the fields every
    BlockTask has (a ``functools.partial`` of the class with the operation's own settings).

    ``side_inputs``: planner argument -> the file staged for it (``storage.inputs``); its digest
    goes into the params under the argument's name, its URL into the recipe, and it is put in place
    before the first task.
    """
    sscale = source.info.scale(mip)
    region = crop(source, mip, bounds)
    info, block, factors = new_layer(source, mip, region, layer_type=layer_type, data_type=data_type, channels=channels,
                                     output=output, memory=memory, bytes_per_voxel=bytes_per_voxel, full_xy=full_xy,
                                     translate=translate, extra=extra, notes=notes)
    method = resolve_method(layer_type, data_type, output.method, output.force) if factors else "average"
    if output.sparse and method != "mode":
        raise PumiceError("--sparse applies to --method mode (segmentations) only")
    fresh = Layer.check_destination(dest, info)
    base = info.scales[0]
    common = dict(src=source.url, mip=mip, dest=dest, factors=tuple(tuple(f) for f in factors), method=method,
                  sparse=output.sparse, fill_missing=fill_missing)

    def one(box: Bbox) -> Task:
        return task(bbox=tuple(box.to_list()), **common)

    side_inputs = side_inputs or {}
    all_params = {"src": source.url, "region": region.to_list(), "info": info.to_json(), "block": list(block),
                  "method": method, **(params or {}), **global_grid_record(info.scales[1:]),
                  **{name: staged.digest for name, staged in side_inputs.items()}}
    described = {
        "source": f"{urls.display(source.url)} mip {mip} ({sscale.key}): {source.info.type} {source.info.data_type} x "
                  f"{source.info.num_channels}" + (f", region {region}" if region != source.bounds(mip) else ""),
        "destination": f"{urls.display(dest)}: {layer_type} {data_type} x {channels}",
        **(description or {}),
        "scales": [f"mip {i} {s.key}: size {format_vec(s.size)}, offset {format_vec(s.voxel_offset)}, chunk "
                   f"{format_vec(s.chunk_size)}, {s.encoding}{', sharded' if s.sharding else ''}" for i, s in enumerate(info.scales)],
        "block": format_vec(block),
        "memory_per_task": format_bytes(float(np.prod(block)) * bytes_per_voxel),
        "voxels": base.bounds.size,
    }
    return Plan(operation, dest, all_params, [Stage.grid(operation, base.bounds, block, one, base.voxel_offset)],
                description=described, outcome=outcome, fresh_destination=fresh, provenance=provenance or operation,
                sources=[urls.display(source.url)], prepare=functools.partial(_prepare, dest, info, list(side_inputs.values())),
                inputs={name: staged.url for name, staged in side_inputs.items()})


def _prepare(dest: str, info: LayerInfo, side_inputs: list[SideInput]) -> None:
    """Before the first task: the side inputs in place, then the new layer's info."""
    for staged in side_inputs:
        staged.put()
    Layer.create(dest, info)

