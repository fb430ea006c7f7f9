"""Contrast: per-section luminance levels, clip-and-stretch normalization, and CLAHE.

``levels`` samples each z-section and stores its histogram beside the layer, in Igneous's layout
(``levels/<mip>/<z>``, JSON with ``levels``, ``patch_size``, ``num_patches``, ``coverage_ratio``),
so levels from either tool serve the other. The sample is a set of chunk columns (a chunk's x/y
extent through the sections of one chunk in z): reading whole chunks is what storage costs anyway,
and one column serves every section it crosses. The columns are drawn by a generator seeded with
the slab's position, so the same command samples the same voxels; coverage 1 takes them all.

``normalize`` maps each section through a lookup table made from its levels (or one table for the
whole volume, or a window the user gives). ``clahe`` runs OpenCV's CLAHE on each section of a block
plus one tile of context on every side, on a tile grid anchored at the volume's origin, so every
block computes exactly what one block holding the whole section would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, format_bytes, format_vec, grid_blocks
from ..plan import LEDGER_DIR, Plan, Stage, Task, planner, register
from ..storage import urls
from ..storage.info import LayerInfo, Scale, check_encoding
from ..storage.kv import open_kv
from ..storage.layer import Layer
from .downsample import write_with_levels
from .pyramid import global_grid_record, plan_factors, plan_new_layer, read_box

DEFAULT_MEMORY = 256 * 2**20
SAMPLE_SEED = 7_316_054  # fixed, so a rerun samples the same columns
LEVELS_BATCH = 256  # level files read at once when a whole volume's are needed


# -- the formulas ------------------------------------------------------------------------------------
def levels_key(mip: int, z: int) -> str:
    return f"levels/{mip}/{z}"


def levels_record_key(mip: int) -> str:
    """What Pumice notes about a levels run (coverage, job); Igneous reads only the numbered files."""
    return f"levels/{mip}/pumice.json"


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


def stretch_table(window: Sequence[int] | None, in_dtype: np.dtype, out_dtype: np.dtype) -> np.ndarray:
    """Lookup table of ``clip(round((v - lo) * max_out / (hi - lo)), 0, max_out)`` for every input v.

    Rounding is NumPy's (halves to even) in float64. A window that is None or empty (a blank or
    flat section) becomes the whole input range, so such sections are only rescaled.
    """
    max_in, max_out = np.iinfo(in_dtype).max, np.iinfo(out_dtype).max
    lo, hi = (int(window[0]), int(window[1])) if window is not None and window[1] > window[0] else (0, int(max_in))
    values = np.arange(max_in + 1, dtype=np.float64)
    return np.clip(np.round((values - lo) * max_out / (hi - lo)), 0, max_out).astype(out_dtype)


def lookup(table: np.ndarray, section: np.ndarray) -> np.ndarray:
    """``table[section]`` for one X, Y section: OpenCV's LUT for 8-bit input (6x NumPy's take), else NumPy."""
    if section.dtype == np.uint8:
        import cv2

        return cv2.LUT(np.ascontiguousarray(section.T), table).T
    return np.take(table, section)


def clahe_sections(data: np.ndarray, clip_limit: float, tile_size: int, pad: tuple[int, int]) -> np.ndarray:
    """OpenCV's CLAHE on every section of an X, Y, Z array whose x/y extents are whole tiles once
    ``pad`` (x, y) voxels are added at the high ends (by reflection, as OpenCV itself would)."""
    import cv2

    nx, ny = data.shape[0] + pad[0], data.shape[1] + pad[1]
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(nx // tile_size, ny // tile_size))
    out = np.empty(data.shape, dtype=data.dtype, order="F")
    for z in range(data.shape[2]):
        section = np.ascontiguousarray(data[:, :, z].T)  # OpenCV: rows are y
        if pad != (0, 0):
            section = np.pad(section, ((0, pad[1]), (0, pad[0])), mode="reflect")
        out[:, :, z] = clahe.apply(section)[: data.shape[1], : data.shape[0]].T
    return out


def clahe_context(box: Bbox, bounds: Bbox, tile_size: int) -> tuple[Bbox, tuple[int, int]]:
    """The region a CLAHE block must read, and the padding that completes its last tiles.

    A voxel's result blends the tables of the tiles around it, so one whole tile of context on
    each side suffices; the region starts on the tile grid (anchored at the volume's origin), so
    its tiles are the whole section's tiles, and ends on it or at the volume's edge.
    """
    t = tile_size
    lo, hi = list(box.minpt), list(box.maxpt)
    pad = [0, 0]
    for a in (0, 1):
        origin, end = bounds.minpt[a], bounds.maxpt[a]
        lo[a] = max(origin + ((box.minpt[a] - origin) // t - 1) * t, origin)
        hi[a] = min(origin + (-(-(box.maxpt[a] - origin) // t) + 1) * t, end)
        pad[a] = (-(hi[a] - lo[a])) % t
    return Bbox(tuple(lo), tuple(hi)), (pad[0], pad[1])


# -- shared checks -------------------------------------------------------------------------------------
def _require_grey(layer: Layer, what: str) -> None:
    info, where = layer.info, urls.display(layer.url)
    if info.type == "segmentation":
        raise LayerError(f"{where} is a segmentation: {what} changes grey values and would scramble its label ids; "
                         f"it applies to image layers")
    if info.data_type not in ("uint8", "uint16") or info.num_channels != 1:
        raise LayerError(f"{where} holds {info.data_type} x {info.num_channels} channel(s); {what} works on one-channel "
                         f"uint8 or uint16 images (turn float data into uint8 with `pumice quantize` first)")


def _output_layer(source: Layer, mip: int, dtype: str, *, chunk_size: Sequence[int] | None, encoding: str | None,
                  num_mips: int, factor: str | Sequence[int], sharded: bool, memory: int, bytes_per_voxel: float,
                  notes: list[str]) -> tuple[LayerInfo, tuple, list]:
    """A new image layer with the geometry of ``source``'s mip, a pyramid if asked, its task grid."""
    sscale = source.info.scale(mip)
    if encoding is None:
        encoding = sscale.encoding if sscale.encoding in ("raw", "jpeg", "png") else "raw"
        try:
            check_encoding("image", dtype, encoding, 1)
        except PumiceError:
            notes.append(f"{encoding} cannot hold {dtype}: writing raw chunks (choose with --encoding)")
            encoding = "raw"
    check_encoding("image", dtype, encoding, 1)
    if num_mips < 0:
        raise PumiceError(f"--num-mips must be 0 or more, got {num_mips}")
    base = Scale(key=sscale.key, size=sscale.size, resolution=sscale.resolution, voxel_offset=sscale.voxel_offset,
                 chunk_size=tuple(chunk_size or sscale.chunk_size), encoding=encoding)
    factors = plan_factors(base, factor, num_mips) if num_mips else []
    info, block = plan_new_layer(LayerInfo("image", dtype, 1, (base,)), factors, sharded=sharded, budget=memory,
                                       bytes_per_voxel=bytes_per_voxel, full_xy=True)
    return info, block, factors


def _describe_scales(info: LayerInfo) -> list[str]:
    return [f"mip {i} {s.key}: size {format_vec(s.size)}, chunk {format_vec(s.chunk_size)}, {s.encoding}"
            f"{', sharded' if s.sharding else ''}" for i, s in enumerate(info.scales)]


# -- levels -----------------------------------------------------------------------------------------------
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
        kv = open_kv(layer.url)
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
                kv.put(levels_key(self.mip, lo + z), json.dumps(record, separators=(",", ":")).encode())
            sampled += area * (hi - lo)
            slab += cz
        return {"voxels": sampled, "sections": self.z1 - self.z0}


@planner
def plan_levels(path: str, *, mip: int = 0, coverage: float = 0.01, fill_missing: bool = False,
                dry_run: bool = False) -> tuple[Plan, list[str]]:
    layer = Layer.open(path)
    _require_grey(layer, "contrast levels")
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

    def finish() -> None:
        record = {k: params[k] for k in ("mip", "coverage", "sections", "fill_missing")}
        open_kv(layer.url).put_json(levels_record_key(mip), {**record, "data_type": layer.info.data_type, "job": result.job_id})

    result.finish = finish
    notes: list[str] = []
    kv = open_kv(layer.url)
    record = kv.get_json(levels_record_key(mip))
    if not dry_run and isinstance(record, dict) and record.get("job") not in (None, result.job_id):
        # Another run (other options) stored its levels after this job's, so this job's ledger no
        # longer describes what is stored: forget it, and the record, so the job runs again.
        kv.delete_prefix(f"{LEDGER_DIR}/{result.job_id}/")
        kv.delete(levels_record_key(mip))
        notes.append(f"the stored levels come from another run (coverage {record.get('coverage')}): sampling again")
    return result, notes


def read_levels(layer: Layer, mip: int, z0: int, z1: int) -> list[np.ndarray]:
    """The stored histograms of sections z0..z1-1, in order; a missing one is an error naming the fix."""
    kv = open_kv(layer.url)
    out: list[np.ndarray] = []
    for start in range(z0, z1, LEVELS_BATCH):
        zs = range(start, min(start + LEVELS_BATCH, z1))
        for z, raw in zip(zs, kv.get_many([levels_key(mip, z) for z in zs])):
            if raw is None:
                raise LayerError(_no_levels(layer, mip, f"section {z}"))
            try:
                out.append(np.asarray(json.loads(raw)["levels"], dtype=np.uint64))
            except (ValueError, KeyError, TypeError):
                raise LayerError(f"{urls.display(layer.url)}/{levels_key(mip, z)} is not a levels file; "
                                 f"rerun `pumice contrast levels {urls.display(layer.url)} --restart`") from None
    return out


def _no_levels(layer: Layer, mip: int, which: str) -> str:
    where = urls.display(layer.url)
    mip_option = f" --mip {mip}" if mip else ""
    return (f"no luminance levels for {which} of {where} mip {mip}; run `pumice contrast levels {where}{mip_option}` first "
            f"(or give the window with --minval/--maxval)")


def check_levels(layer: Layer, mip: int) -> None:
    """Every section of the mip has a levels file (one listing, no reads)."""
    bounds = layer.info.scale(mip).bounds
    try:
        present = {name.rsplit("/", 1)[1] for name in layer.kv.list(f"levels/{mip}/")}
    except (ValueError, PumiceError):  # a store without listing (http): each task finds out for its sections
        return
    missing = [z for z in range(bounds.minpt[2], bounds.maxpt[2]) if str(z) not in present]
    if missing:
        which = "any section" if len(missing) == bounds.shape[2] else \
            f"{len(missing)} section(s) (first z {missing[0]})"
        raise LayerError(_no_levels(layer, mip, which))


def volume_levels(layer: Layer, mip: int) -> np.ndarray:
    """The sum of every section's histogram, streamed in batches (memory of one batch)."""
    bounds = layer.info.scale(mip).bounds
    total = np.zeros(np.iinfo(layer.info.dtype).max + 1, dtype=np.uint64)
    for start in range(bounds.minpt[2], bounds.maxpt[2], LEVELS_BATCH):
        for counts in read_levels(layer, mip, start, min(start + LEVELS_BATCH, bounds.maxpt[2])):
            total += counts
    return total


def draw_levels(path: str, mip: int, image_file: str, *, clip_fraction: float = 0.01, count_zeros: bool = False,
                max_rows: int = 1000) -> str:
    """A heat map of section vs grey level (log counts, each row scaled to its peak), with each
    section's clip points and the whole volume's; returns a line saying what it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = Layer.open(path)
    _require_grey(layer, "contrast levels")
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
    for start in range(z0, z1, LEVELS_BATCH):
        for z, counts in enumerate(read_levels(layer, mip, start, min(start + LEVELS_BATCH, z1)), start=start):
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


# -- normalize ---------------------------------------------------------------------------------------------
@register("contrast.normalize")
@dataclass(frozen=True)
class NormalizeTask(Task):
    src: str
    mip: int
    dest: str
    bbox: tuple
    window: tuple = ()  # (lo, hi) for every section; empty: each section's own, from its levels
    clip_fraction: float = 0.01
    count_zeros: bool = False
    factors: tuple = ()
    fill_missing: bool = False

    def run(self) -> dict[str, Any]:
        src, dest = Layer.open(self.src), Layer.open(self.dest)
        box = Bbox.from_list(self.bbox)
        read = read_box(box, dest.bounds(0), self.factors)
        data = src.read(read, self.mip, fill_missing=self.fill_missing)
        out_dtype = dest.info.dtype
        if self.window:
            tables = [stretch_table(self.window, data.dtype, out_dtype)] * read.shape[2]
        else:
            tables = [stretch_table(clip_window(counts, self.clip_fraction, self.count_zeros), data.dtype, out_dtype)
                      for counts in read_levels(src, self.mip, read.minpt[2], read.maxpt[2])]
        out = np.empty(data.shape, dtype=out_dtype, order="F")
        for z, table in enumerate(tables):
            out[:, :, z, 0] = lookup(table, data[:, :, z, 0])
        return {"voxels": box.size, "voxels_written": write_with_levels(dest, box, read, out, self.factors)}


@planner
def plan_normalize(src: str, dest: str, *, mip: int = 0, clip_fraction: float = 0.01, whole_volume: bool = False,
                   minval: int | None = None, maxval: int | None = None, count_zeros: bool = False, dtype: str = "uint8",
                   chunk_size: Sequence[int] | None = None, encoding: str | None = None, num_mips: int = 0,
                   factor: str | Sequence[int] = "auto", sharded: bool = False, fill_missing: bool = False,
                   memory: int = DEFAULT_MEMORY, dry_run: bool = False) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    source, dest = Layer.open_with_destination(src, dest, "normalize")
    _require_grey(source, "contrast normalize")
    if dtype not in ("uint8", "uint16"):
        raise PumiceError(f"--dtype must be uint8 or uint16, got {dtype!r}")
    if not 0 <= clip_fraction < 0.5:
        raise PumiceError(f"--clip-fraction must lie in [0, 0.5) (the fraction cut off each end), got {clip_fraction:g}")
    max_in = int(np.iinfo(source.info.dtype).max)
    manual = minval is not None or maxval is not None
    if manual:
        if minval is None or maxval is None:
            raise PumiceError("--minval and --maxval go together: give both (the grey levels that become 0 and the maximum)")
        if whole_volume:
            raise PumiceError("--global and --minval/--maxval each choose the window; pass one of them")
        if not 0 <= minval < maxval <= max_in:
            raise PumiceError(f"--minval must be below --maxval, both within 0..{max_in} for {source.info.data_type} data; "
                              f"got {minval}..{maxval}")
    sscale = source.info.scale(mip)
    window: tuple = ()
    levels_record = None
    if manual:
        window = (int(minval), int(maxval))
        rule = f"{minval}..{maxval} -> 0..{np.iinfo(dtype).max} for every section"
    else:
        check_levels(source, mip)
        levels_record = source.kv.get_json(levels_record_key(mip))
        zeros = "zeros counted" if count_zeros else "zeros not counted"
        if whole_volume:
            found = clip_window(volume_levels(source, mip), clip_fraction, count_zeros)
            window = tuple(found) if found and found[1] > found[0] else (0, max_in)
            rule = (f"one window for the volume: {window[0]}..{window[1]} -> 0..{np.iinfo(dtype).max} "
                    f"(clip {clip_fraction:g} of its levels at each end, {zeros})")
        else:
            rule = f"per section: clip {clip_fraction:g} of its levels at each end ({zeros}), stretch to 0..{np.iinfo(dtype).max}"
    out_bytes = np.dtype(dtype).itemsize
    # the block, its output, and TensorStore's copy of the output while it writes (measured)
    bytes_per_voxel = source.info.dtype.itemsize + out_bytes * (4 if num_mips else 2) + (4 if num_mips else 0)
    info, block, factors = _output_layer(source, mip, dtype, chunk_size=chunk_size, encoding=encoding,
                                               num_mips=num_mips, factor=factor, sharded=sharded, memory=memory,
                                               bytes_per_voxel=bytes_per_voxel, notes=notes)
    fresh = Layer.prepare(dest, info, dry_run=dry_run)
    region = info.scales[0].bounds
    frozen = tuple(tuple(f) for f in factors)
    clip_fraction = float(clip_fraction)

    def task(box: Bbox) -> NormalizeTask:
        return NormalizeTask(source.url, mip, dest, tuple(box.to_list()), window, clip_fraction, count_zeros, frozen,
                             fill_missing)

    params = {"src": source.url, "mip": mip, "window": list(window), "clip_fraction": clip_fraction,
              "count_zeros": count_zeros, "levels": levels_record, "info": info.to_json(), "block": list(block),
              "fill_missing": fill_missing, **global_grid_record(info.scales[1:])}
    description = {
        "source": f"{urls.display(source.url)} mip {mip} ({sscale.key}): {source.info.data_type}",
        "destination": f"{urls.display(dest)}: image {dtype}",
        "rule": rule,
        "scales": _describe_scales(info),
        "block": format_vec(block),
        "memory_per_task": format_bytes(float(np.prod(block)) * bytes_per_voxel),
        "voxels": region.size,
    }
    return Plan("normalize", dest, params, [Stage.grid("normalize", region, block, task)], description=description,
                fresh_destination=fresh, provenance="contrast normalize", sources=[urls.display(source.url)]), notes


# -- CLAHE -------------------------------------------------------------------------------------------------
@register("contrast.clahe")
@dataclass(frozen=True)
class ClaheTask(Task):
    src: str
    mip: int
    dest: str
    bbox: tuple
    clip_limit: float
    tile_size: int
    factors: tuple = ()
    fill_missing: bool = False

    def run(self) -> dict[str, Any]:
        src, dest = Layer.open(self.src), Layer.open(self.dest)
        box = Bbox.from_list(self.bbox)
        read = read_box(box, dest.bounds(0), self.factors)
        region, pad = clahe_context(read, src.bounds(self.mip), self.tile_size)
        data = src.read(region, self.mip, fill_missing=self.fill_missing)[..., 0]
        out = clahe_sections(data, self.clip_limit, self.tile_size, pad)[read.slices(region.minpt)]
        written = write_with_levels(dest, box, read, out[..., np.newaxis], self.factors)
        return {"voxels": box.size, "voxels_read": region.size, "voxels_written": written}


@planner
def plan_clahe(src: str, dest: str, *, mip: int = 0, clip_limit: float = 2.0, tile_size: int = 128,
               chunk_size: Sequence[int] | None = None, encoding: str | None = None, num_mips: int = 0,
               factor: str | Sequence[int] = "auto", sharded: bool = False, fill_missing: bool = False,
               memory: int = DEFAULT_MEMORY, dry_run: bool = False) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    source, dest = Layer.open_with_destination(src, dest, "write CLAHE's result")
    _require_grey(source, "CLAHE")
    if not (clip_limit > 0 and math.isfinite(clip_limit)):
        raise PumiceError(f"--clip-limit must be a positive number (OpenCV's contrast limit, e.g. 2), got {clip_limit:g}")
    if not (8 <= tile_size <= 4096 and tile_size & (tile_size - 1) == 0):
        raise PumiceError(f"--tile-size must be a power of two from 8 to 4096 (so that every task block computes the same "
                          f"tile grid bit for bit), got {tile_size}")
    sscale = source.info.scale(mip)
    dtype = source.info.data_type
    itemsize = source.info.dtype.itemsize
    bytes_per_voxel = itemsize * (5 if num_mips else 3) + (4 if num_mips else 0)
    info, block, factors = _output_layer(source, mip, dtype, chunk_size=chunk_size, encoding=encoding,
                                               num_mips=num_mips, factor=factor, sharded=sharded, memory=memory,
                                               bytes_per_voxel=bytes_per_voxel, notes=notes)
    fresh = Layer.prepare(dest, info, dry_run=dry_run)
    region = info.scales[0].bounds
    frozen = tuple(tuple(f) for f in factors)
    clip_limit, tile_size = float(clip_limit), int(tile_size)
    first = next(grid_blocks(region, block, region.minpt))
    context, _ = clahe_context(first, region, tile_size)

    def task(box: Bbox) -> ClaheTask:
        return ClaheTask(source.url, mip, dest, tuple(box.to_list()), clip_limit, tile_size, frozen, fill_missing)

    params = {"src": source.url, "mip": mip, "clip_limit": clip_limit, "tile_size": tile_size, "info": info.to_json(),
              "block": list(block), "fill_missing": fill_missing, **global_grid_record(info.scales[1:])}
    description = {
        "source": f"{urls.display(source.url)} mip {mip} ({sscale.key}): {dtype}",
        "destination": f"{urls.display(dest)}: image {dtype}",
        "rule": f"OpenCV CLAHE per section: clip limit {clip_limit:g}, tiles of {tile_size}x{tile_size} voxels "
                f"anchored at the volume's origin; each block reads one tile of context on every side",
        "scales": _describe_scales(info),
        "block": format_vec(block),
        "read_per_block": f"up to {format_vec(context.shape)} (the block and its context)",
        "memory_per_task": format_bytes(float(context.size) * itemsize * 2 + float(np.prod(block)) * bytes_per_voxel),
        "voxels": region.size,
    }

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        t = totals["clahe"]
        return f"read {t.get('voxels_read', 0) / max(t.get('voxels', 1), 1):.2f}x the volume (blocks and their context)"

    return Plan("clahe", dest, params, [Stage.grid("clahe", region, block, task)], description=description,
                outcome=outcome, fresh_destination=fresh, provenance="contrast clahe",
                sources=[urls.display(source.url)]), notes
