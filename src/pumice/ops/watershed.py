"""``pumice watershed SRC DEST``: supervoxels (fragments) from a boundary map or affinities, at any
size, in bounded memory per task.

**Input.** One channel: a boundary map, high on membranes. Three channels (x, y, z): affinities,
high inside objects; the boundary is 1 - their mean. Integer maps are scaled to 0..1; ``--invert``
turns a map that is low on membranes around.

**Per block** (``fragments``), on the block and a ``--context`` margin around it: the boundary is
smoothed (Gaussian, ``--sigma`` voxels, scaled by the resolution so anisotropic stacks are smoothed
alike in nm); seeds are either the smoothed map's local minima below ``--threshold``
(``--seed-method minima``) or the maxima of the distance (in nm) to the nearest voxel at or above
``--threshold`` (``distance``), each plateau one seed; scikit-image's watershed floods the smoothed
map from the seeds; fragments under ``--min-size`` voxels lose their seed and the flood runs again,
so their voxels join their neighbours. The block keeps its own voxels (numbered in order of first
voxel, x fastest) and, for each neighbour, its labels in the first ``context / 2`` voxels across
the face: what it predicts there.

**Stitching** (``stitch``, per block and upper neighbour): two fragments that meet at a face are the
same fragment when each holds more than half of the other's voxels in the two slabs along the face
(one block's own voxels against the other's prediction, both ways). The merges are joined across
the volume by ccl's label exchange (rounds of messages between partitions of blocks, never the
whole volume in one process) and numbered 1..K in the order of each fragment's first block piece.

With the block as large as the volume this is the same algorithm on the whole array; with smaller
blocks a fragment whose flood reaches a block from beyond its context can differ near the faces
(docs/watershed.md gives the measured difference).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, format_bytes, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import bookkeeping, urls
from ..storage.blobs import pack, unpack
from ..storage.kv import open_kv
from ..storage.layer import Layer
from . import ccl
from .blockwise import OutputOptions, crop, new_layer
from .downsample import write_with_levels
from .pyramid import read_box

DEFAULT_MEMORY = 512 * 2**20
BYTES_PER_VOXEL = 80  # per voxel read: the map (float64), smoothed, distance, seeds, labels, watershed's work
# The default context margin, in voxels along the finest axis (the same nm along the others): at
# least CONTEXT, and enough that the block's centre is CENTRE_REACH from the edge of what is read.
# On neuroproof's raw image (a weak boundary map) bodies in 64^3 blocks differed from the whole
# array's by VOI 0.18 with a context of 16, 0.015 with 24, 0.0005 with 32; in 32^3 blocks by 0.034
# with 32 and 0 with 48: floods reach that far, and small blocks have more voxels near their faces.
CONTEXT = 32
CENTRE_REACH = 64
CONTEXT_READ = 3.0  # voxels read per block voxel (a 128^3 block with its context): how blocks are sized


def default_context(block: Sequence[int], resolution: Sequence[float]) -> tuple[int, ...]:
    """The context for ``block`` (voxels) at ``resolution`` (nm): see CONTEXT and CENTRE_REACH."""
    finest = float(min(resolution))
    return tuple(max(2, int(round(max(CONTEXT * finest, CENTRE_REACH * finest - b * r / 2) / r)))
                 for b, r in zip(block, resolution))
SEED_METHODS = ("minima", "distance")
INPUTS = ("boundary", "affinities")


# -- the kernel -----------------------------------------------------------------------------------
def boundary_of(data: np.ndarray, kind: str, invert: bool, dtype: np.dtype) -> np.ndarray:
    """X, Y, Z boundary in 0..1 (float32) from a block of the source (X, Y, Z, C)."""
    values = data.astype(np.float32)
    if dtype.kind in "ui":
        values /= float(np.iinfo(dtype).max)
    if invert:
        values = 1 - values
    if kind == "affinities":
        return 1 - values.mean(axis=3)
    return values[..., 0]


def fragments(boundary: np.ndarray, *, seed_method: str = "minima", threshold: float = 0.5, sigma: float = 1.0,
              min_size: int = 0, resolution: Sequence[float] = (1, 1, 1), seed_connectivity: int = 26) -> np.ndarray:
    """Seeded watershed of an X, Y, Z boundary map (0..1): uint32 fragments, every voxel labelled
    (numbered by seed, in order of the seed plateau's first voxel)."""
    import cc3d
    from scipy import ndimage
    from skimage.segmentation import watershed

    resolution = np.asarray(resolution, np.float64)
    if sigma > 0:
        scaled = sigma * resolution.min() / resolution  # sigma voxels along the finest axis, the same nm along all
        smooth = ndimage.gaussian_filter(boundary.astype(np.float32), scaled, mode="nearest")
    else:
        smooth = boundary.astype(np.float32)
    if seed_method == "minima":
        footprint = ndimage.generate_binary_structure(3, 1 if seed_connectivity == 6 else 3)
        peaks = (ndimage.minimum_filter(smooth, footprint=footprint, mode="nearest") == smooth) & (smooth < threshold)
    else:
        import edt

        inside = boundary < threshold
        distance = edt.edt(np.asfortranarray(inside), anisotropy=tuple(resolution), black_border=False)
        peaks = inside & (ndimage.maximum_filter(distance, size=3, mode="nearest") == distance) & (distance > 0)
    # A plateau of minima is one seed whichever neighbourhood made its voxels minima (face-connected
    # plateaus instead cut neuroproof's raw map into 902k fragments that agglomerated worse).
    seeds = cc3d.connected_components(np.asfortranarray(peaks), connectivity=26, out_dtype=np.uint32)
    labels = watershed(smooth, seeds).astype(np.uint32)
    if min_size > 1 and seeds.max() > 1:
        sizes = np.bincount(labels.ravel(), minlength=int(seeds.max()) + 1)
        small = sizes < min_size
        small[0] = False
        if small.any() and not small[1:].all():
            keep = ~small
            seeds = np.where(keep[seeds], seeds, 0).astype(np.uint32)
            labels = watershed(smooth, seeds).astype(np.uint32)
    return labels


def numbered(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 1..n in order of first voxel (x fastest): the block's pieces."""
    import fastremap

    out, table = fastremap.renumber(np.asfortranarray(labels), start=1, preserve_zero=True)
    return np.asfortranarray(out.astype(np.uint32)), len([k for k in table if k != 0])


# -- tasks ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WatershedSettings:
    kind: str = "boundary"
    invert: bool = False
    seed_method: str = "minima"
    threshold: float = 0.5
    sigma: float = 1.0
    min_size: int = 0
    context: tuple = (16, 16, 16)
    seed_connectivity: int = 26  # a minimum is no higher than its 26 neighbours, or its 6 face neighbours


def _settings(value: Any) -> WatershedSettings:
    if isinstance(value, WatershedSettings):
        return value
    return WatershedSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})


def slab_box(box: Bbox, axis: int, side: int, depth: int) -> Bbox:
    """The ``depth`` voxels of ``box`` along its face ``side`` (0 low, 1 high) across ``axis``."""
    lo, hi = list(box.minpt), list(box.maxpt)
    if side:
        lo[axis] = max(lo[axis], hi[axis] - depth)
    else:
        hi[axis] = min(hi[axis], lo[axis] + depth)
    return Bbox(lo, hi)


@register("watershed.fragments")
@dataclass(frozen=True)
class FragmentsTask(Task):
    src: str
    mip: int
    grid: Any
    work: str
    block: int
    settings: Any
    fill_missing: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", ccl._grid(self.grid))
        object.__setattr__(self, "settings", _settings(self.settings))

    def run(self) -> dict[str, Any]:
        grid, s = self.grid, self.settings
        source = Layer.open(self.src)
        box = grid.box(grid.ijk(self.block))
        region = Bbox([max(lo - c, v) for lo, c, v in zip(box.minpt, s.context, grid.bounds.minpt)],
                      [min(hi + c, v) for hi, c, v in zip(box.maxpt, s.context, grid.bounds.maxpt)])
        data = source.read(region, self.mip, fill_missing=self.fill_missing)
        boundary = boundary_of(data, s.kind, s.invert, source.info.dtype)
        labels = fragments(boundary, seed_method=s.seed_method, threshold=s.threshold, sigma=s.sigma,
                           min_size=s.min_size, resolution=source.info.scale(self.mip).resolution,
                           seed_connectivity=s.seed_connectivity)
        inner = labels[box.slices(region.minpt)]
        core, n = numbered(inner)
        items = [(f"labels/{self.block}", pack(labels=core)),
                 (f"blocks/{self.block}", pack(n=np.array(n, np.uint64), sizes=np.zeros(0, np.uint64)))]
        # What the context says beyond each face, in the core's numbering (0: a fragment not in the core).
        table = np.zeros(int(labels.max()) + 1, np.uint32)
        table[inner.ravel(order="F")] = core.ravel(order="F")
        for axis in range(3):
            depth = max(1, min(s.context[axis] // 2, grid.block[axis]))
            for side in (0, 1):
                lo, hi = list(box.minpt), list(box.maxpt)
                if side:
                    lo[axis], hi[axis] = box.maxpt[axis], min(box.maxpt[axis] + depth, grid.bounds.maxpt[axis])
                else:
                    lo[axis], hi[axis] = max(box.minpt[axis] - depth, grid.bounds.minpt[axis]), box.minpt[axis]
                beyond = Bbox(lo, hi)
                if not beyond.empty():
                    items.append((f"ahead/{self.block}/{'xyz'[axis]}{side}",
                                  pack(labels=table[labels[beyond.slices(region.minpt)]])))
        open_kv(self.work).put_many(items)
        return {"voxels": box.size, "fragments": n}


def overlap_merges(own: np.ndarray, predicted: np.ndarray, own_other: np.ndarray,
                   predicted_other: np.ndarray) -> np.ndarray:
    """Pairs (a, b) of fragments of two blocks A, B that are the same: ``own``/``predicted`` are A's
    own labels and B's prediction of them on A's side of the face; ``predicted_other``/``own_other``
    A's prediction and B's own labels on B's side. A pair is kept when it holds more than half of
    each one's voxels in the two slabs."""
    a = np.concatenate([own.ravel(), predicted_other.ravel()]).astype(np.uint64)
    b = np.concatenate([predicted.ravel(), own_other.ravel()]).astype(np.uint64)
    seen = (a > 0) & (b > 0)
    a_count = np.bincount(a.astype(np.int64))
    b_count = np.bincount(b.astype(np.int64))
    keys = (a[seen] << np.uint64(32)) | b[seen]
    if not len(keys):
        return np.zeros((0, 2), np.int64)
    pairs, counts = np.unique(keys, return_counts=True)
    pa = (pairs >> np.uint64(32)).astype(np.int64)
    pb = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    keep = (2 * counts > a_count[pa]) & (2 * counts > b_count[pb])
    return np.stack([pa[keep], pb[keep]], axis=1)


@register("watershed.stitch")
@dataclass(frozen=True)
class StitchTask(Task):
    grid: Any
    work: str
    block: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", ccl._grid(self.grid))

    def run(self) -> dict[str, Any]:
        grid, kv = self.grid, open_kv(self.work)
        ijk = grid.ijk(self.block)
        box = grid.box(ijk)
        own = None
        edges = []
        for axis in range(3):
            up = list(ijk)
            up[axis] += 1
            if not grid.inside(up):
                continue
            other = grid.index(up)
            theirs_box = grid.box(up)
            ahead = kv.get(f"ahead/{self.block}/{'xyz'[axis]}1")
            behind = kv.get(f"ahead/{other}/{'xyz'[axis]}0")
            if ahead is None or behind is None:
                continue
            if own is None:
                own = unpack(kv.get(f"labels/{self.block}"))["labels"]
            theirs = unpack(kv.get(f"labels/{other}"))["labels"]
            predicted_other = unpack(ahead)["labels"]  # this block's labels on the other's side
            predicted = unpack(behind)["labels"]  # the other's labels on this side
            mine = own[slab_box(box, axis, 1, predicted.shape[axis]).slices(box.minpt)]
            yours = theirs[slab_box(theirs_box, axis, 0, predicted_other.shape[axis]).slices(theirs_box.minpt)]
            pairs = overlap_merges(mine, predicted, yours, predicted_other)
            if len(pairs):
                edges.append(np.stack([(np.uint64(self.block) << np.uint64(ccl.PIECE_BITS)) | pairs[:, 0].astype(np.uint64),
                                       (np.uint64(other) << np.uint64(ccl.PIECE_BITS)) | pairs[:, 1].astype(np.uint64)], 1))
        found = np.concatenate(edges) if edges else np.zeros((0, 2), np.uint64)
        if len(found):
            pu, pv = grid.partition_of(found[:, 0]), grid.partition_of(found[:, 1])
            kv.put_many([(f"edges/{int(p)}/{self.block}", pack(edges=found[(pu == p) | (pv == p)]))
                         for p in np.unique(np.concatenate([pu, pv]))])
        return {"merges": int(len(found))}


@register("watershed.relabel")
@dataclass(frozen=True)
class RelabelTask(Task):
    """The block's fragments, numbered for the whole volume, written with any mips."""

    dest: str
    bbox: tuple
    grid: Any
    work: str
    factors: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", ccl._grid(self.grid))

    def run(self) -> dict[str, Any]:
        grid, kv = self.grid, open_kv(self.work)
        dest = Layer.open(self.dest)
        box = Bbox.from_list(self.bbox)
        block = grid.index(grid.ijk_of(box))
        labels = unpack(kv.get(f"labels/{block}"))["labels"]
        n = int(unpack(kv.get(f"blocks/{block}"))["n"])
        table, _ = ccl.id_table(kv, block, n, np.dtype(dest.info.data_type))
        out = np.asfortranarray(table[labels])[..., np.newaxis]
        made = read_box(box, dest.bounds(0), self.factors)
        if made != box:  # pragma: no cover - the planner lays blocks on the mips' grid
            raise RuntimeError("a relabel block is not on its mips' grid")
        written = write_with_levels(dest, box, made, out, self.factors, "mode")
        return {"voxels": box.size, "voxels_written": written}


# -- the planner ----------------------------------------------------------------------------------
def check_source(source: Layer, kind: str | None) -> tuple[str, list[str]]:
    """'boundary' or 'affinities' (from the channels unless given), with what was inferred said aloud."""
    info = source.info
    where = urls.display(source.url)
    if info.type == "segmentation":
        raise LayerError(f"{where} is a segmentation; watershed floods a boundary map (1 channel, high on membranes) "
                         f"or affinities (3 channels): give one of those")
    if info.num_channels not in (1, 3):
        raise LayerError(f"{where} has {info.num_channels} channels; watershed takes a boundary map (1 channel) or "
                         f"affinities (3 channels: x, y, z)")
    inferred = "boundary" if info.num_channels == 1 else "affinities"
    if kind is not None and kind != inferred:
        raise PumiceError(f"--input {kind} needs {1 if kind == 'boundary' else 3} channel(s); {where} has "
                          f"{info.num_channels}")
    if info.dtype.kind not in "uif":
        raise LayerError(f"{where} holds {info.data_type}; a boundary map or affinities are numbers")
    notes = [] if kind is not None else [f"{where} has {info.num_channels} channel(s): read as "
                                         f"{'a boundary map (high on membranes)' if inferred == 'boundary' else 'affinities x, y, z (high inside objects)'}"
                                         f" (--input to say so, --invert if it is the other way round)"]
    return inferred, notes


@planner
def plan(src: str, dest: str, *, input_kind: str | None = None, invert: bool = False, seed_method: str = "minima",
         threshold: float = 0.5, sigma: float = 1.0, min_size: int = 0, context: Sequence[int] | None = None,
         seed_connectivity: int = 26, shape: Sequence[int] | None = None, mip: int = 0, bounds: Bbox | None = None,
         fill_missing: bool = False,
         chunk_size: Sequence[int] | None = None, encoding: str | None = None, sharded: bool | None = None,
         num_mips: int = 0, factor: Any = "auto", method: str = "auto", sparse: bool = False, force: bool = False,
         memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    if method not in ("auto", "mode") or sparse:
        raise PumiceError("watershed's mips are made with --method mode (they hold ids), without --sparse")
    if input_kind is not None and input_kind not in INPUTS:
        raise PumiceError(f"--input must be boundary or affinities, got {input_kind!r}")
    if seed_method not in SEED_METHODS:
        raise PumiceError(f"--seed-method must be one of {', '.join(SEED_METHODS)}, got {seed_method!r}")
    if not 0 < threshold <= 1:
        raise PumiceError(f"--threshold must be in (0, 1] (the map is scaled to 0..1), got {threshold:g}")
    if sigma < 0:
        raise PumiceError(f"--sigma must be 0 or more voxels, got {sigma:g}")
    if min_size < 0:
        raise PumiceError(f"--min-size must be 0 or more voxels, got {min_size}")
    if seed_connectivity not in (6, 26):
        raise PumiceError(f"--seed-connectivity must be 6 or 26, got {seed_connectivity}")
    source, dest = Layer.open_with_destination(src, dest, "watershed")
    kind, notes = check_source(source, input_kind)
    region = crop(source, mip, bounds)
    resolution = np.asarray(source.info.scale(mip).resolution, np.float64)
    if context is not None and any(c < 2 for c in context):
        raise PumiceError(f"--context must be at least 2 voxels along every axis, got {format_vec(context)}")
    output = OutputOptions(chunk_size=chunk_size, encoding=encoding, sharded=sharded, num_mips=num_mips, factor=factor,
                           method="mode")
    info, block, factors = new_layer(source, mip, region, layer_type="segmentation", data_type="uint64", channels=1,
                                     output=output, memory=memory, bytes_per_voxel=BYTES_PER_VOXEL * CONTEXT_READ,
                                     notes=notes)
    base = info.scales[0]
    if shape is not None:
        block = ccl.task_shape(shape, base, block if factors else None)
    ccl.check_mips_grid(base, factors, dest, "watershed")
    if context is None:
        context = default_context(block, resolution)
    grid = ccl.partition_of_grid(base.bounds, block, memory)
    rounds = ccl.rounds_for(grid)
    settings = WatershedSettings(kind, bool(invert), seed_method, float(threshold), float(sigma), int(min_size),
                                 tuple(int(c) for c in context), int(seed_connectivity))
    result = Plan("watershed", dest, {"src": source.url, "region": region.to_list(), "info": info.to_json(),
                                      "block": list(grid.block), "partition": list(grid.part), "rounds": rounds})
    result.fresh_destination = Layer.check_destination(dest, info)
    result.provenance, result.sources = "watershed", [urls.display(source.url)]

    @functools.cache
    def work() -> str:
        return f"{dest.rstrip('/')}/{bookkeeping.job_prefix(result.job_id)}work/"

    def per_block(make: Any) -> Any:
        return lambda box: make(grid.index(grid.ijk_of(box)))

    def reduction_task(cls: type, **extra: Any) -> Task:
        return cls(src=source.url, mip=mip, grid=grid, work=work(), **extra)

    factors_ = tuple(tuple(int(v) for v in f) for f in factors)
    stages = [Stage.grid("fragments", base.bounds, block, per_block(
                  lambda b: FragmentsTask(source.url, mip, grid, work(), b, settings, fill_missing)), base.voxel_offset),
              Stage.grid("stitch", base.bounds, block, per_block(lambda b: StitchTask(grid, work(), b)), base.voxel_offset)]
    stages += ccl.reduction_stages(grid, rounds, reduction_task)
    stages.append(Stage.grid("relabel", base.bounds, block,
                             lambda box: RelabelTask(dest, tuple(box.to_list()), grid, work(), factors_), base.voxel_offset))
    result.stages = stages
    context_bytes = float(np.prod([b + 2 * c for b, c in zip(block, context)])) * BYTES_PER_VOXEL
    result.description = {
        "source": f"{urls.display(source.url)} mip {mip}: {source.info.data_type} x {source.info.num_channels} read as "
                  f"{kind}{' (inverted)' if invert else ''}" + (f", region {region}" if region != source.bounds(mip) else ""),
        "seeds": f"{seed_method}, threshold {threshold:g}, smoothing sigma {sigma:g} voxel(s)"
                 + (f", fragments under {min_size} voxels merged into their neighbours" if min_size else ""),
        "destination": f"{urls.display(dest)}: segmentation uint64 (fragments)",
        "block": f"{format_vec(block)} with context {format_vec(context)}",
        "blocks": grid.blocks,
        "partitions": f"{grid.partitions} of {format_vec(grid.part)} blocks",
        "memory_per_task": format_bytes(context_bytes),
    }

    def prepare() -> None:
        Layer.create(dest, info)

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        heads = totals.get("heads", {})
        return (f"{int(heads.get('components', 0)):,} fragment(s) from {int(totals.get('fragments', {}).get('fragments', 0)):,} "
                f"block fragment(s), {int(totals.get('stitch', {}).get('merges', 0)):,} joined across block faces")

    result.prepare, result.outcome = prepare, outcome
    result.cleanup = lambda: open_kv(work()).delete_prefix("")
    return result, notes
