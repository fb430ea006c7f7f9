"""Quantize: float affinities (or any float image in 0..1) to an 8-bit image layer.

Each value becomes ``round(clip(x, 0, 1) * 255)`` (NumPy's rounding: halves to even); NaN becomes
``--nan-value`` (default 0) before that, so holes in a network's output stay visible and never
turn into arbitrary bytes. ``--channel N`` keeps one channel; by default every channel is kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox
from ..plan import Plan, planner, register
from ..storage import urls
from ..storage.layer import Layer
from .blockwise import BlockTask, OutputOptions, plan_block_operation

DEFAULT_MEMORY = 256 * 2**20


def quantize(data: np.ndarray, nan_value: float = 0.0) -> np.ndarray:
    """Float values in 0..1 -> uint8: NaN -> ``nan_value``, clip to 0..1, times 255, round half to even."""
    values = np.where(np.isnan(data), np.float32(nan_value), data.astype(np.float32, copy=False))
    return np.round(np.clip(values, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


@register("quantize")
@dataclass(frozen=True)
class QuantizeTask(BlockTask):
    channel: int | None = None
    nan_value: float = 0.0

    def compute(self, data: np.ndarray, region: Bbox, read: Bbox, source: Layer) -> tuple[np.ndarray, dict]:
        if self.channel is not None:
            data = data[..., self.channel : self.channel + 1]
        return quantize(data, self.nan_value), {"nans": int(np.isnan(data).sum())}


@planner
def plan(src: str, dest: str, *, channel: int | None = None, nan_value: float = 0.0, mip: int = 0, bounds: Bbox | None = None,
         fill_missing: bool = False, chunk_size: Sequence[int] | None = None, encoding: str | None = None,
         sharded: bool | None = None, num_mips: int = 0, factor: str | Sequence[int] = "auto", method: str = "auto",
         sparse: bool = False, force: bool = False, memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
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
    channels = 1 if channel is not None else sinfo.num_channels
    nan_value, channel = float(nan_value), (None if channel is None else int(channel))
    # float read, its NaN mask and clipped copy, the bytes (and their mips)
    bytes_per_voxel = sinfo.num_channels * (4 * 3) + channels * (4 if num_mips else 2) + (4 if num_mips else 0)
    output = OutputOptions(chunk_size=chunk_size, encoding=encoding, sharded=sharded, num_mips=num_mips, factor=factor,
                           method=method, sparse=sparse, force=force)
    result = plan_block_operation(
        "quantize", source, dest, mip=mip, bounds=bounds,
        task=functools.partial(QuantizeTask, channel=channel, nan_value=nan_value), layer_type="image", data_type="uint8",
        channels=channels, output=output, fill_missing=fill_missing, memory=memory, bytes_per_voxel=bytes_per_voxel,
        params={"channel": channel, "nan_value": nan_value},
        description={"rule": f"round(clip(x, 0, 1) * 255), NaN -> {nan_value:g}"
                             + (f", channel {channel}" if channel is not None else ", every channel")},
        outcome=lambda totals: (f"{int(totals['quantize'].get('nans', 0)):,} NaN value(s) became {nan_value:g}"
                                if totals["quantize"].get("nans") else "no NaN values"), notes=notes)
    return result, notes
