"""Quantize: float affinities (or any float image in 0..1) to an 8-bit image layer.

Each value becomes ``round(clip(x, 0, 1) * 255)`` (NumPy's rounding: halves to even); NaN becomes
``--nan-value`` (default 0) before that, so holes in a network's output stay visible and never
turn into arbitrary bytes. ``--channel N`` keeps one channel; by default every channel is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, choose_block, format_bytes, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import urls
from ..storage.info import LayerInfo, Scale, check_encoding, write_unit
from ..storage.layer import Layer

DEFAULT_MEMORY = 256 * 2**20


def quantize(data: np.ndarray, nan_value: float = 0.0) -> np.ndarray:
    """Float values in 0..1 -> uint8: NaN -> ``nan_value``, clip to 0..1, times 255, round half to even."""
    values = np.where(np.isnan(data), np.float32(nan_value), data.astype(np.float32, copy=False))
    return np.round(np.clip(values, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


@register("quantize")
@dataclass(frozen=True)
class QuantizeTask(Task):
    src: str
    mip: int
    dest: str
    bbox: tuple
    channel: int | None = None
    nan_value: float = 0.0
    fill_missing: bool = False

    def run(self) -> dict[str, Any]:
        src, dest = Layer.open(self.src), Layer.open(self.dest)
        box = Bbox.from_list(self.bbox)
        data = src.read(box, self.mip, fill_missing=self.fill_missing)
        if self.channel is not None:
            data = data[..., self.channel : self.channel + 1]
        dest.write(box, quantize(data, self.nan_value), 0)
        return {"voxels": box.size, "nans": int(np.isnan(data).sum())}


@planner
def plan(src: str, dest: str, *, mip: int = 0, channel: int | None = None, nan_value: float = 0.0,
         chunk_size: tuple | None = None, encoding: str = "raw", fill_missing: bool = False,
         memory: int = DEFAULT_MEMORY, dry_run: bool = False) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    source, dest = Layer.open_with_destination(src, dest, "quantize")
    sinfo = source.info
    if sinfo.data_type != "float32":
        raise LayerError(f"{urls.display(source.url)} holds {sinfo.data_type} data; quantize turns float32 values in 0..1 "
                         f"(affinities, probabilities) into uint8 — use `pumice transfer` to copy integer layers")
    if channel is not None and not 0 <= channel < sinfo.num_channels:
        raise PumiceError(f"--channel {channel} does not exist: {urls.display(source.url)} has channels 0-{sinfo.num_channels - 1}")
    if not 0.0 <= nan_value <= 1.0:
        raise PumiceError(f"--nan-value must lie in 0..1 (it is quantized like the data), got {nan_value:g}")
    sscale = sinfo.scale(mip)
    channels = 1 if channel is not None else sinfo.num_channels
    check_encoding("image", "uint8", encoding, channels)
    base = Scale(key=sscale.key, size=sscale.size, resolution=sscale.resolution, voxel_offset=sscale.voxel_offset,
                 chunk_size=tuple(chunk_size or sscale.chunk_size), encoding=encoding)
    info = LayerInfo("image", "uint8", channels, (base,))
    bytes_per_voxel = sinfo.num_channels * (4 * 3) + channels * 2  # float read, its NaN mask and clipped copy, the bytes
    block = choose_block(base.bounds, write_unit(base), bytes_per_voxel, memory)
    fresh = Layer.prepare(dest, info, dry_run=dry_run)
    nan_value, channel = float(nan_value), (None if channel is None else int(channel))

    def task(box: Bbox) -> QuantizeTask:
        return QuantizeTask(source.url, mip, dest, tuple(box.to_list()), channel, nan_value, fill_missing)

    params = {"src": source.url, "mip": mip, "channel": channel, "nan_value": nan_value, "info": info.to_json(),
              "block": list(block), "fill_missing": fill_missing}
    description = {
        "source": f"{urls.display(source.url)} mip {mip}: float32 x {sinfo.num_channels}",
        "destination": f"{urls.display(dest)}: image uint8 x {channels} ({'channel ' + str(channel) if channel is not None else 'all channels'}), "
                       f"chunk {format_vec(base.chunk_size)}, {encoding}",
        "rule": f"round(clip(x, 0, 1) * 255), NaN -> {nan_value:g}",
        "block": format_vec(block),
        "memory_per_task": format_bytes(float(np.prod(block)) * bytes_per_voxel),
        "voxels": base.bounds.size,
    }
    return Plan("quantize", dest, params, [Stage.grid("quantize", base.bounds, block, task)], description=description,
                outcome=lambda totals: (f"{int(totals['quantize'].get('nans', 0)):,} NaN value(s) became {nan_value:g}"
                                        if totals["quantize"].get("nans") else "no NaN values"),
                fresh_destination=fresh, provenance="quantize", sources=[urls.display(source.url)]), notes
