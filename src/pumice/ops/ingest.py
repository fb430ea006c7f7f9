"""Ingest: any source (image stack, TIFF, HDF5, Zarr, N5, NumPy, Precomputed) -> a Precomputed layer.

The planner opens the source (catching bad input before anything is written), writes the
destination's info, and splits the volume into blocks of whole chunks (whole shards when
sharded) sized by a memory budget. Each task reads its block from the source, converts the
data type if needed, and writes it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import PumiceError, SourceError
from ..geometry import Bbox, choose_block, format_bytes, format_vec, vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import urls
from ..storage.info import check_encoding, default_encoding, new_info, write_unit
from ..storage.layer import Layer
from ..storage.sources import open_source

DEFAULT_MEMORY = 128 * 2**20  # measured: enough tasks to keep 2 workers busy on a 256 MiB stack

# Signed integers keep their bit width as unsigned labels; floats narrower or wider than float32
# become float32. Anything else (bool, complex, strings, objects) is refused.
_STORED_AS = {"uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "float32": "float32",
              "int8": "uint8", "int16": "uint16", "int32": "uint32", "int64": "uint64",
              "float16": "float32", "float64": "float32"}


def stored_dtype(source_dtype: np.dtype, layer_type: str | None) -> str:
    name = np.dtype(source_dtype).name
    if name not in _STORED_AS:
        raise SourceError(
            f"unsupported data type {name}; Precomputed layers hold uint8, uint16, uint32, uint64 or float32 — convert the data first"
        )
    if name.startswith("int") and layer_type != "segmentation":
        raise SourceError(f"signed {name} data can only be ingested as labels; pass --type segmentation, or convert it to unsigned")
    return _STORED_AS[name]


def default_layer_type(dtype: str) -> str:
    return "segmentation" if dtype in ("uint32", "uint64") else "image"


def default_chunk_size(layer_type: str, resolution: Sequence[float]) -> tuple[int, int, int]:
    anisotropic = resolution[2] >= 4 * max(resolution[0], resolution[1])
    if layer_type == "segmentation":
        return (128, 128, 16) if anisotropic else (64, 64, 64)
    return (256, 256, 16) if anisotropic else (128, 128, 64)


def convert(data: np.ndarray, dtype: str, where: str) -> np.ndarray:
    if data.dtype == np.dtype(dtype):
        return data
    if data.dtype.kind == "i" and data.size and data.min() < 0:
        raise SourceError(f"{where} holds negative labels ({int(data.min())}); labels must be non-negative integers")
    return data.astype(dtype, copy=False)


@register("ingest")
@dataclass(frozen=True)
class IngestTask(Task):
    source: str
    dataset: str | None
    axes: str | None
    dest: str
    bbox: tuple  # destination voxels, x0, y0, z0, x1, y1, z1
    offset: tuple  # destination voxel of the source's first voxel

    def run(self) -> dict[str, Any]:
        source = open_source(self.source, self.dataset, self.axes)
        box = Bbox.from_list(self.bbox)
        data = source.read(box.translate([-o for o in self.offset]))
        layer = Layer.open(self.dest)
        layer.write(box, convert(data, layer.info.data_type, source.path))
        return {"voxels": box.size, "bytes_read": int(data.nbytes)}


@planner
def plan(
    source_path: str,
    dest: str,
    *,
    dataset: str | None = None,
    axes: str | None = None,
    layer_type: str | None = None,
    resolution: Sequence[float] | None = None,
    offset: Sequence[int] | None = None,
    chunk_size: Sequence[int] | None = None,
    encoding: str | None = None,
    sharded: bool = False,
    memory: int = DEFAULT_MEMORY,
) -> tuple[Plan, list[str]]:
    """Validate everything and return the plan (whose ``prepare`` writes the destination's info) and notes."""
    notes: list[str] = []
    source = open_source(source_path, dataset, axes)
    dest = urls.normalize(dest)
    local = urls.local_path(dest)
    if local is not None and local.exists() and not local.is_dir():
        raise PumiceError(f"cannot ingest into {local}: it is a file, not a folder; choose another destination")
    if layer_type is None:
        layer_type = source.layer_type or default_layer_type(stored_dtype(source.dtype, "segmentation"))
        notes.append(f"ingesting as {layer_type} ({source.dtype.name} data; pass --type "
                     f"{'image' if layer_type == 'segmentation' else 'segmentation'} to change)")
    dtype = stored_dtype(source.dtype, layer_type)
    if dtype != source.dtype.name:
        notes.append(f"{source.dtype.name} data is stored as {dtype}")
    resolution = resolution or source.resolution
    if resolution is None:
        raise PumiceError(f"{source.kind} {source.path} carries no voxel size; pass --resolution X,Y,Z in nm (e.g. 4,4,40)")
    offset = vec(offset if offset is not None else (source.voxel_offset or (0, 0, 0)))
    encoding = encoding or default_encoding(layer_type, dtype)
    check_encoding(layer_type, dtype, encoding, source.channels)
    chunk_size = vec(chunk_size or default_chunk_size(layer_type, resolution))
    if any(c <= 0 for c in chunk_size):
        raise PumiceError(f"--chunk-size must be positive in every axis, got {','.join(map(str, chunk_size))}")

    info = new_info(layer_type=layer_type, dtype=dtype, num_channels=source.channels, size=source.shape,
                    resolution=resolution, voxel_offset=offset, chunk_size=chunk_size, encoding=encoding, sharded=sharded)
    fresh = Layer.check_destination(dest, info)
    bounds = info.scales[0].bounds
    unit = write_unit(info.scales[0])
    # Source block, its transposed copy, the converted copy, and TensorStore's encode buffers.
    bytes_per_voxel = source.channels * (source.dtype.itemsize * 2 + np.dtype(dtype).itemsize * 2)
    block = choose_block(bounds, unit, bytes_per_voxel, memory, full_xy=source.full_xy)
    task_memory = float(np.prod(block)) * bytes_per_voxel
    if task_memory > memory:
        notes.append(f"one task needs about {format_bytes(task_memory)}, above --memory {format_bytes(memory)}: "
                     f"the write unit ({','.join(map(str, unit))}) cannot be split")

    def task(box: Bbox) -> IngestTask:
        return IngestTask(source=source_path, dataset=dataset, axes=axes, dest=dest, bbox=tuple(box.to_list()),
                          offset=tuple(offset))

    params = {"fingerprint": source.fingerprint, "info": info.to_json(), "block": list(block)}
    scale = info.scales[0]
    description = {
        "source": f"{source.kind} {source.path}: {'x'.join(map(str, source.shape))} voxels, {source.channels} channel(s), {source.dtype.name}",
        "destination": urls.display(dest),
        "layer": f"{layer_type} {dtype}, {encoding}{', sharded' if sharded else ''}",
        "scales": [f"mip 0 {scale.key}: size {format_vec(scale.size)}, chunk {format_vec(scale.chunk_size)}, offset {format_vec(scale.voxel_offset)}"],
        "block": format_vec(block),
        "memory_per_task": format_bytes(task_memory),
        "voxels": bounds.size,
    }
    return Plan("ingest", dest, params, [Stage.grid("ingest", bounds, block, task)], description=description,
                fresh_destination=fresh, provenance="ingest", sources=[str(source_path)],
                prepare=functools.partial(Layer.create, dest, info)), notes
