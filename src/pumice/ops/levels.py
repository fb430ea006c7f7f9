"""``pumice contrast levels``: a histogram of each z-section, stored beside the layer.

The layout is Igneous's (``storage.levels``), so levels from either tool serve the other. The sample
is a set of chunk columns (a chunk's x/y extent through the sections of one chunk in z): reading
whole chunks is what storage costs anyway, and one column serves every section it crosses. The
columns are drawn by a generator seeded with the slab's position, so the same command samples the
same voxels; coverage 1 takes them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import bookkeeping, levels as stored, urls
from ..storage.kv import open_kv
from ..storage.layer import Layer

SAMPLE_SEED = 7_316_054  # fixed, so a rerun samples the same columns


def clip_window(levels: np.ndarray, clip_fraction: float, count_zeros: bool = False) -> tuple[int, int] | None:
    """The grey levels that cut ``clip_fraction`` of the counted voxels off each end.

    ``lo`` is the first level whose cumulative count exceeds ``f * N``; ``hi`` the first whose
    cumulative count reaches ``(1 - f) * N``; f = 0 gives the darkest and brightest levels present.
    Value 0 is not counted unless ``count_zeros`` (black is padding in aligned EM, as Igneous
    assumes). None when nothing is counted.
    """
    counts = np.asarray(levels, dtype=np.uint64).copy()
    if not count_zeros:
        counts[0] = 0
    cumulative = np.cumsum(counts)
    total = float(cumulative[-1])
    if total == 0:
        return None
    lo = int(np.searchsorted(cumulative, clip_fraction * total, side="right"))
    hi = int(np.searchsorted(cumulative, (1.0 - clip_fraction) * total, side="left"))
    return lo, hi


def require_grey(layer: Layer, what: str) -> None:
    """Contrast operations take one-channel uint8 or uint16 images."""
    info, where = layer.info, urls.display(layer.url)
    if info.type == "segmentation":
        raise LayerError(f"{where} is a segmentation: {what} changes grey values and would scramble its label ids; "
                         f"it applies to image layers")
    if info.data_type not in ("uint8", "uint16") or info.num_channels != 1:
        raise LayerError(f"{where} holds {info.data_type} x {info.num_channels} channel(s); {what} works on one-channel "
                         f"uint8 or uint16 images (turn float data into uint8 with `pumice quantize` first)")


def check_levels(layer: Layer, mip: int) -> None:
    bounds = layer.info.scale(mip).bounds
    stored.check_present(layer.url, mip, bounds.minpt[2], bounds.maxpt[2])


def volume_levels(layer: Layer, mip: int) -> np.ndarray:
    bounds = layer.info.scale(mip).bounds
    return stored.volume_sum(layer.url, mip, bounds.minpt[2], bounds.maxpt[2], np.iinfo(layer.info.dtype).max + 1)


@register("contrast.levels")
@dataclass(frozen=True)
class LevelsTask(Task):
    layer: str
    mip: int
    z0: int
    z1: int
    coverage: float
    fill_missing: bool = False

    def run(self) -> dict[str, Any]:
        layer = Layer.open(self.layer)
        scale = layer.info.scale(self.mip)
        bounds, (cx, cy, cz) = scale.bounds, scale.chunk_size
        (x0, y0, zb), (x1, y1, _) = bounds.minpt, bounds.maxpt
        bins = np.iinfo(layer.info.dtype).max + 1
        columns_x, columns_y = -(-(x1 - x0) // cx), -(-(y1 - y0) // cy)
        total = columns_x * columns_y
        take = total if self.coverage >= 1 else min(total, max(1, math.ceil(self.coverage * total)))
        sampled = 0
        # Slabs of one chunk in z, anchored at the volume's origin.
        slab = zb + ((self.z0 - zb) // cz) * cz
        while slab < self.z1:
            lo, hi = max(slab, self.z0), min(slab + cz, self.z1)
            rng = np.random.default_rng([SAMPLE_SEED, slab - zb])
            chosen = np.arange(total) if take == total else np.sort(rng.choice(total, size=take, replace=False))
            counts = np.zeros((hi - lo, bins), dtype=np.uint64)
            patches = []
            for index in chosen.tolist():
                px, py = x0 + (index % columns_x) * cx, y0 + (index // columns_x) * cy
                box = Bbox((px, py, lo), (min(px + cx, x1), min(py + cy, y1), hi))
                data = layer.read(box, self.mip, fill_missing=self.fill_missing)[..., 0]
                for z in range(hi - lo):
                    counts[z] += np.bincount(data[:, :, z].ravel(order="K"), minlength=bins).astype(np.uint64)
                patches.append([box.minpt[0], box.minpt[1], box.maxpt[0], box.maxpt[1]])
            area = sum((p[2] - p[0]) * (p[3] - p[1]) for p in patches)
            for z in range(hi - lo):
                record = {
                    "levels": counts[z].tolist(),
                    "patch_size": [min(cx, x1 - x0), min(cy, y1 - y0), 1],
                    "num_patches": len(patches),
                    "coverage_ratio": area / ((x1 - x0) * (y1 - y0)),
                }
                if take < total:
                    record["patches"] = patches  # [x0, y0, x1, y1] of each sampled column, to reproduce the sample
                stored.write(layer.url, self.mip, lo + z, record)
            sampled += area * (hi - lo)
            slab += cz
        return {"voxels": sampled, "sections": self.z1 - self.z0}


@planner
def plan(path: str, *, mip: int = 0, coverage: float = 0.01, fill_missing: bool = False) -> tuple[Plan, list[str]]:
    layer = Layer.open(path)
    require_grey(layer, "contrast levels")
    if not (0 < coverage <= 1):
        raise PumiceError(f"--coverage must be a fraction of each section in (0, 1], e.g. 0.01 for 1%; got {coverage:g}")
    if not urls.is_writable(layer.url):
        raise LayerError(f"{urls.display(layer.url)} is read-only (http): levels are stored beside the layer; "
                         f"copy it with `pumice transfer` first")
    scale = layer.info.scale(mip)
    bounds, cz = scale.bounds, scale.chunk_size[2]
    depth = cz * max(1, 64 // cz)  # sections per task: at least one chunk deep
    block = (bounds.shape[0], bounds.shape[1], depth)
    coverage = float(coverage)

    def task(box: Bbox) -> LevelsTask:
        return LevelsTask(layer.url, mip, box.minpt[2], box.maxpt[2], coverage, fill_missing)

    params = {"mip": mip, "coverage": coverage, "sections": [bounds.minpt[2], bounds.maxpt[2]], "fill_missing": fill_missing}
    description = {
        "layer": f"{urls.display(layer.url)} mip {mip} ({scale.key}): {layer.info.data_type}, size {format_vec(scale.size)}",
        "sample": f"{coverage:.2%} of each section, as whole chunk columns ({format_vec(scale.chunk_size[:2])} voxels)",
        "output": f"{urls.display(layer.url)}/levels/{mip}/<z> (one histogram per section, {np.iinfo(layer.info.dtype).max + 1} levels)",
        "sections_per_task": depth,
    }
    sections = bounds.shape[2]

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        sampled = int(totals["levels"].get("voxels", 0))
        return f"{sections} section histograms from {sampled:,} sampled voxels ({sampled / max(bounds.size, 1):.2%} of the volume)"

    result = Plan("levels", layer.url, params, [Stage.grid("levels", bounds, block, task, scale.voxel_offset)],
                  description=description, outcome=outcome, provenance="contrast levels")

    def prepare() -> list[str]:
        record = stored.read_record(layer.url, mip)
        if isinstance(record, dict) and record.get("job") not in (None, result.job_id):
            # Another run (other options) stored its levels after this job's, so this job's ledger no
            # longer describes what is stored: forget it, and the record, so the job runs again.
            bookkeeping.forget_job(layer.url, result.job_id)
            open_kv(layer.url).delete(stored.record_key(mip))
            return [f"the stored levels come from another run (coverage {record.get('coverage')}): sampling again"]
        return []

    def finish() -> None:
        record = {k: params[k] for k in ("mip", "coverage", "sections", "fill_missing")}
        stored.write_record(layer.url, mip, {**record, "data_type": layer.info.data_type, "job": result.job_id})

    result.prepare, result.finish = prepare, finish
    return result, []


def draw(path: str, mip: int, image_file: str, *, clip_fraction: float = 0.01, count_zeros: bool = False,
         max_rows: int = 1000) -> str:
    """A heat map of section vs grey level (log counts, each row scaled to its peak), with each
    section's clip points and the whole volume's; returns a line saying what it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = Layer.open(path)
    require_grey(layer, "contrast levels")
    check_levels(layer, mip)
    bounds = layer.info.scale(mip).bounds
    z0, z1 = bounds.minpt[2], bounds.maxpt[2]
    bins = np.iinfo(layer.info.dtype).max + 1
    columns = min(bins, 256)
    group = -(-(z1 - z0) // max_rows)  # sections per row, for very deep stacks
    rows = -(-(z1 - z0) // group)
    heat = np.zeros((rows, columns), dtype=np.float64)
    lows, highs = np.zeros(z1 - z0), np.zeros(z1 - z0)
    whole = np.zeros(bins, dtype=np.uint64)
    for start in range(z0, z1, stored.BATCH):
        for z, counts in enumerate(stored.read(layer.url, mip, start, min(start + stored.BATCH, z1)), start=start):
            whole += counts
            shown = counts.copy()
            if not count_zeros:
                shown[0] = 0
            heat[(z - z0) // group] += shown.reshape(columns, -1).sum(axis=1)
            window = clip_window(counts, clip_fraction, count_zeros) or (0, bins - 1)
            lows[z - z0], highs[z - z0] = window
    heat = np.log1p(heat)
    heat /= np.maximum(heat.max(axis=1, keepdims=True), 1e-12)
    overall = clip_window(whole, clip_fraction, count_zeros) or (0, bins - 1)

    fig, ax = plt.subplots(figsize=(9, 6), dpi=100)
    image = ax.imshow(heat, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                      extent=(0, bins, z0, z0 + rows * group))
    centres = np.arange(z0, z1) + 0.5
    ax.plot(lows + 0.5, centres, color="#3fd0ff", lw=1.2, label=f"per-section clip points ({clip_fraction:g} each end)")
    ax.plot(highs + 0.5, centres, color="#3fd0ff", lw=1.2)
    for value in overall:
        ax.axvline(value + 0.5, color="white", ls="--", lw=1)
    ax.plot([], [], color="white", ls="--", lw=1, label=f"--global clip points: {overall[0]}, {overall[1]}")
    ax.set_xlim(0, bins)
    ax.set_ylim(z0, z1)
    ax.set_xlabel("grey level" + (" (zeros not counted)" if not count_zeros else ""))
    ax.set_ylabel("section z" + (f" ({group} sections per row)" if group > 1 else ""))
    ax.set_title(f"{urls.display(layer.url)} mip {mip}: luminance levels", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.6)
    fig.colorbar(image, ax=ax, label="log(1 + count), per section")
    fig.tight_layout()
    fig.savefig(image_file)
    plt.close(fig)
    return (f"levels of {z1 - z0} sections drawn to {image_file}: per-section clip points span {int(lows.min())}..{int(lows.max())} "
            f"(low) and {int(highs.min())}..{int(highs.max())} (high); one window for the volume would be "
            f"{overall[0]}..{overall[1]}")
