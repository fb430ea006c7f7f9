"""Synthetic electron-microscopy (EM) sample volume with matching cell labels.

What it is for
--------------
Tests, demos and benchmarks need an image + segmentation pair that *looks* like
serial-section EM of brain tissue (so downsampling, meshing, skeletonising,
contrast normalisation and viewer screenshots are meaningful) without shipping
data.  :func:`make_em_sample` builds one deterministically in well under a
second for the default 64 x 256 x 256.

What it looks like
------------------
* Neurites are tubes running roughly along z (as in a real stack, where most
  axons and dendrites cross many sections), so each xy section shows a dense
  packing of rounded polygonal profiles: many small "axons", some larger
  irregular ones, and a few big round "dendrites".  Along z the profiles drift,
  breathe and occasionally appear or vanish, slowly: the volume is smoother
  along z than in-plane, like anisotropic EM.
* Cells are separated by thin (1-2 px), slightly blurred dark membranes whose
  darkness varies a little per cell; where a boundary is oblique to the section
  (it moves between sections) the membrane looks wider and greyer.
* Cytoplasm is light-to-mid grey with low-frequency mottling plus a per-cell
  brightness offset; some cells hold dark mitochondria (darker rim, lighter
  cristae stripes) and a few "boutons" hold clouds of small vesicles (rings).
* Mild, spatially correlated grain noise on top.
* Optional smooth per-section brightness drift (``drift``) for contrast
  normalisation demos.

Labels
------
``labels`` are dense ids ``1..N`` (uint32) with **no zeros**: there is no
extracellular space, every voxel (membrane voxels included) belongs to exactly
one cell, the membrane line lying on one side of each cell border.  Every label
is one 6-connected region: in each section a label is one 4-connected piece
(stray pixels from sub-pixel slivers are handed to a neighbour), and a neurite
is split into a new label wherever consecutive cross-sections stop
overlapping.  Cells smaller than 32 voxels are merged into a neighbour.

Determinism
-----------
Only uniform draws from :func:`numpy.random.default_rng` streams (derived from
integers, bit-exact everywhere) and correctly rounded IEEE elementwise
arithmetic (+, -, *, /, sqrt, floor, comparisons) are used, plus exact
reductions (integer counts, min/max).  No transcendental functions (their SIMD
implementations differ between CPUs), no float sums, no FFT/BLAS.  So the
same arguments give identical bytes on any machine with the same NumPy
version.

Implementation sketch
---------------------
Seeds sit on a jittered grid (spacing ``_CELL`` px), each the axis of a neurite
that wobbles along z.  Per section a pixel belongs to the seed with the lowest
anisotropic power distance (see :class:`_Diagram`); testing the 3x3 grid cells
around the pixel suffices, and the x and y parts of the distance are computed
on 1/``_CELL`` of the pixels, so a candidate costs two integer passes.  The
diagram is computed on an unwarped grid and sampled through a smooth random
warp, which bends the borders into organic curves.  Work is done in slabs of a
few sections, so temporaries stay small; total memory is about 9 bytes per
voxel (outputs plus one float32 working image).
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_em_sample"]

# --- geometry (pixels / sections) -------------------------------------------
_CELL = 18  # jittered-grid spacing of neurite seeds: typical small-axon size in px
_BIG_AREA = 140.0 * 140.0  # one large "dendrite" per this many px^2 of section
# Smooth warp of pixel coordinates, as (z, y, x) control spacing, amplitude in px.
# Coarse: neurites meander; medium: boundaries bend; fine: membranes wiggle.
_WARP_OCTAVES = (((24, 96, 96), 8.0), ((8, 32, 32), 3.5), ((4, 12, 12), 1.0))
_SEED_Z_STEP = 12  # sections between control points of per-seed wobble / size
# Cytoplasm mottling: blotches plus a finer granular texture.
_TEX_OCTAVES = (((6, 24, 24), 8.0), ((2, 6, 6), 5.0))
_REACH = 1  # grid cells tested around a pixel's own: (2 * _REACH + 1)^2 candidates
_SLAB_VOXELS = 1 << 18  # voxels per work slab (keeps temporaries small, cache-friendly)

# --- grey levels (uint8 scale) -----------------------------------------------
_CYTO = 168.0  # cytoplasm
_CELL_JITTER = 11.0  # +- per-cell brightness offset
_MEMBRANE = 58.0  # membrane core
_MITO = 108.0  # mitochondrial matrix
_MITO_RIM = 72.0  # mitochondrial outer membrane
_VESICLE = 80.0  # vesicle membrane ring
_NOISE_AMP = 20.0  # grain noise (triangular, blurred -> std ~ 5 grey levels)


# ---------------------------------------------------------------------------
# smooth random fields: cubic B-spline interpolation of coarse uniform noise
# ---------------------------------------------------------------------------
def _coarse_len(n: int, step: float) -> int:
    # control point k sits at coordinate (k - 1) * step; 4 taps per sample
    return int(np.ceil(max(n - 1, 0) / step)) + 4


def _bspline_interp(c: np.ndarray, axis: int, t: np.ndarray) -> np.ndarray:
    """Sample ``c`` along ``axis`` at control coordinates ``t`` (>= 0) with a cubic B-spline.

    B-splines are smooth (C2) and never overshoot, so amplitudes stay bounded.
    Only elementwise arithmetic, hence bit-reproducible.
    """
    i0 = np.floor(t).astype(np.intp)
    f = (t - i0).astype(np.float32)
    g = np.float32(1.0) - f
    f2 = f * f
    f3 = f2 * f
    w = (
        g * g * g / 6,
        (3 * f3 - 6 * f2 + 4) / 6,
        (-3 * f3 + 3 * f2 + 3 * f + 1) / 6,
        f3 / 6,
    )
    shape = [1] * c.ndim
    shape[axis] = t.size
    out = None
    for k in range(4):
        term = np.take(c, i0 + k, axis=axis) * w[k].reshape(shape)
        out = term if out is None else np.add(out, term, out=out)
    return out


def _bspline_last(c: np.ndarray, n: int, step: int) -> np.ndarray:
    """Same as ``_bspline_interp(c, -1, arange(n) / step)`` for an integer ``step``, faster.

    Output sample ``j * step + r`` uses taps ``j .. j+3`` with weights that only
    depend on ``r``, so the result is four broadcast multiply-adds (no gathers).
    """
    nj = -(-n // step)
    f = (np.arange(step, dtype=np.float64) / step).astype(np.float32)
    g = np.float32(1.0) - f
    f2 = f * f
    f3 = f2 * f
    w = (g * g * g / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6)
    out = c[..., 0:nj, None] * w[0]
    for k in range(1, 4):
        out += c[..., k : k + nj, None] * w[k]
    out = out.reshape(*c.shape[:-1], nj * step)
    return out if nj * step == n else np.ascontiguousarray(out[..., :n])


def _linear_last(c: np.ndarray, n: int, step: int) -> np.ndarray:
    """Like ``_bspline_last`` but linear between control points: 2 full passes instead of 7.

    Used for the warp, whose finest octave is only ~1 px, so kinks every
    ``step`` px are invisible.
    """
    nj = -(-n // step)
    f = (np.arange(step, dtype=np.float64) / step).astype(np.float32)
    lo = c[..., 1 : nj + 1]
    out = (c[..., 2 : nj + 2] - lo)[..., None] * f
    out += lo[..., None]
    out = out.reshape(*c.shape[:-1], nj * step)
    return out if nj * step == n else np.ascontiguousarray(out[..., :n])


def _noise_grid(rng: np.random.Generator, shape: tuple[int, ...], step: tuple[float, ...]) -> np.ndarray:
    """Uniform(-1, 1) control points covering ``shape`` at spacing ``step``."""
    cshape = tuple(_coarse_len(n, s) for n, s in zip(shape, step))
    return (rng.random(cshape, dtype=np.float32) * 2 - 1).astype(np.float32)


def _octaves(
    rng: np.random.Generator, shape: tuple[int, int, int], octaves: tuple[tuple[tuple[int, int, int], float], ...]
) -> np.ndarray:
    """Control grid (spacing of the last, finest octave) holding the sum of all octaves.

    Coarser octaves are interpolated onto the finest control grid once, so the
    expensive full-resolution interpolation is done only once per field.
    """
    fine, amp = octaves[-1]
    total = _noise_grid(rng, shape, fine) * np.float32(amp)
    # the fine control grid overhangs the volume by up to 3 fine steps: cover it
    padded = tuple(n + 4 * f for n, f in zip(shape, fine))
    for coarse, amp in octaves[:-1]:
        c = _noise_grid(rng, padded, coarse) * np.float32(amp)
        for axis in range(3):
            j = np.arange(total.shape[axis], dtype=np.float64)
            c = _bspline_interp(c, axis, np.maximum((j - 1) * fine[axis] / coarse[axis], 0.0))
        total += c
    return total.astype(np.float32)


def _field_slab(
    c: np.ndarray, step: tuple[int, int, int], z0: int, z1: int, ny: int, nx: int, linear_x: bool = False
) -> np.ndarray:
    """Full-resolution field for sections ``z0:z1`` from control grid ``c``.

    Interpolate z first and x last so only the final pass touches every voxel.
    """
    out = _bspline_interp(c, 0, np.arange(z0, z1, dtype=np.float64) / step[0])
    out = _bspline_interp(out, 1, np.arange(ny, dtype=np.float64) / step[1])
    return (_linear_last if linear_x else _bspline_last)(out, nx, step[2])


def _blur121(a: np.ndarray, axis: int) -> np.ndarray:
    """[1, 2, 1] / 4 blur along ``axis`` with edge replication (elementwise only)."""
    if a.shape[axis] < 2:
        return a.copy()
    a = np.moveaxis(a, axis, -1)
    out = a * np.float32(0.5)
    out[..., 1:] += a[..., :-1] * np.float32(0.25)
    out[..., :1] += a[..., :1] * np.float32(0.25)
    out[..., :-1] += a[..., 1:] * np.float32(0.25)
    out[..., -1:] += a[..., -1:] * np.float32(0.25)
    return np.moveaxis(out, -1, axis)


def _drift_curve(rng: np.random.Generator, nz: int, amplitude: float) -> np.ndarray:
    """Smooth per-section offsets spanning exactly ``[-amplitude, +amplitude]``."""
    if amplitude == 0.0 or nz < 2:
        return np.zeros(nz, dtype=np.float32)
    step = max(nz / 3.0, 2.0)  # a couple of slow swings across the stack
    c = _noise_grid(rng, (nz,), (step,))
    v = _bspline_interp(c, 0, np.arange(nz, dtype=np.float64) / step).astype(np.float64)
    lo, hi = v.min(), v.max()  # min/max are exact (no rounding), so still deterministic
    if hi - lo <= 1e-12:
        v = np.linspace(-1.0, 1.0, nz)
    else:
        v = (v - lo) / (hi - lo) * 2.0 - 1.0
    return (v * amplitude).astype(np.float32)


# ---------------------------------------------------------------------------
# the sample
# ---------------------------------------------------------------------------
def make_em_sample(
    shape_zyx: tuple[int, int, int] = (64, 256, 256),
    seed: int = 0,
    drift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Build a synthetic EM volume and its cell segmentation.

    Args:
        shape_zyx: volume shape in Z, Y, X order (sections, rows, columns).
        seed: non-negative integer; same arguments give identical bytes.
        drift: amplitude (grey levels) of a smooth per-section brightness drift
            along z: section means vary by about ``+-drift`` (0 disables it).
            The drift is an additive offset, so apart from it (and clipping)
            the image is the same as with ``drift=0``.

    Returns:
        ``(image, labels)``, both shaped ``shape_zyx`` in Z, Y, X order:
        ``image`` is uint8 (bright cytoplasm, dark membranes and organelles),
        ``labels`` is uint32 with dense ids ``1..N`` and no zeros (no
        extracellular space; membrane voxels belong to one adjacent cell).
    """
    nz, ny, nx = (int(v) for v in shape_zyx)
    if min(nz, ny, nx) < 1:
        raise ValueError(f"shape_zyx must be three positive ints, got {shape_zyx!r}")
    if not np.isfinite(drift):
        raise ValueError(f"drift must be finite, got {drift!r}")

    # Independent streams per component: changing e.g. `drift` must not shift the
    # random numbers used by anything else (the tests rely on that).
    ss = np.random.SeedSequence(int(seed))
    streams = (np.random.default_rng(s) for s in ss.spawn(8))
    r_seed, r_big, r_warp, r_tex, r_org, r_noise, r_drift, r_mem = streams

    cell = float(_CELL)
    warp_amp = sum(a for _, a in _WARP_OCTAVES)
    # Warped coordinates reach up to `pad` px outside the volume; the seed grid
    # gets `margin` extra cells on each side to cover that plus the 3x3 reach.
    pad = int(np.ceil(warp_amp)) + 1
    margin = -(-pad // _CELL) + 4  # room for a reach of up to 3 cells
    gy = -(-ny // _CELL) + 2 * margin
    gx = -(-nx // _CELL) + 2 * margin
    n_grid = gy * gx
    zs = np.arange(nz, dtype=np.float64)
    zt = zs / _SEED_Z_STEP

    # --- small seeds: jittered grid, each a neurite running along z -------------
    # Jitter stays inside [0.15, 0.85] of the grid cell and the per-section wobble
    # is small, so the nearest (power) seed is almost always in the 3x3 block.
    base_y = (np.arange(gy)[:, None] - margin + 0.15 + 0.7 * r_seed.random((gy, gx))) * cell
    base_x = (np.arange(gx)[None, :] - margin + 0.15 + 0.7 * r_seed.random((gy, gx))) * cell
    nzc = _coarse_len(nz, _SEED_Z_STEP)
    wob_y = _bspline_interp(r_seed.random((nzc, gy, gx)) * 2 - 1, 0, zt) * (0.1 * cell)
    wob_x = _bspline_interp(r_seed.random((nzc, gy, gx)) * 2 - 1, 0, zt) * (0.1 * cell)
    # Power radius per neurite (weight r^2): skewed so most are small and a few
    # medium; it breathes slowly along z (varicosities).
    rad0 = cell * (0.2 + 0.5 * r_seed.random((gy, gx)) ** 2)
    breathe = 1.0 + 0.2 * _bspline_interp(r_seed.random((nzc, gy, gx)) * 2 - 1, 0, zt)
    sy = (base_y[None] + wob_y).reshape(nz, n_grid)
    sx = (base_x[None] + wob_x).reshape(nz, n_grid)
    srad = (rad0[None] * breathe).reshape(nz, n_grid)
    # per-neurite axis stretch: profiles elongated along x (a < 1) or y (a > 1)
    aspect = 0.8 + 0.45 * r_seed.random((gy, gx))
    aspect = aspect * aspect
    # Some neighbouring seeds form one neurite (their cells merge): bigger,
    # irregular profiles among the small ones.  group[seed] = neurite's seed id.
    group = _group_seeds(r_seed, gy, gx)

    # --- large seeds ("dendrites"): few, round, tested only within their reach --
    n_big = max(1, int(round(ny * nx / _BIG_AREA)))
    big_y = (r_big.random(n_big) * (ny + 2 * cell) - cell)[None] + _bspline_interp(
        r_big.random((nzc, n_big)) * 2 - 1, 0, zt
    ) * (0.6 * cell)
    big_x = (r_big.random(n_big) * (nx + 2 * cell) - cell)[None] + _bspline_interp(
        r_big.random((nzc, n_big)) * 2 - 1, 0, zt
    ) * (0.6 * cell)
    big_r0 = cell * (1.1 + 0.9 * r_big.random(n_big))
    big_r = big_r0[None] * (1.0 + 0.12 * _bspline_interp(r_big.random((nzc, n_big)) * 2 - 1, 0, zt))

    # Seed tables per section, ids 0..n_grid-1 grid seeds, n_grid.. large seeds.
    n_seeds = n_grid + n_big
    tab_y = np.concatenate([sy, big_y], axis=1)
    tab_x = np.concatenate([sx, big_x], axis=1)
    tab_r = np.concatenate([srad, big_r], axis=1)
    tab_x32, tab_y32, tab_r32 = (t.astype(np.float32) for t in (tab_x, tab_y, tab_r))
    flat_x, flat_y, flat_r = tab_x32.ravel(), tab_y32.ravel(), tab_r32.ravel()

    # --- per-cell look ---------------------------------------------------------
    cell_off = ((r_tex.random(n_seeds) * 2 - 1) * _CELL_JITTER).astype(np.float32)
    cell_off[n_grid:] = np.abs(cell_off[n_grid:]) + 4  # dendrites: a bit lighter
    tex_grid = _octaves(r_tex, (nz, ny, nx), _TEX_OCTAVES)
    tex_step = _TEX_OCTAVES[-1][0]
    warp_y = _octaves(r_warp, (nz, ny, nx), _WARP_OCTAVES)
    warp_x = _octaves(r_warp, (nz, ny, nx), _WARP_OCTAVES)
    warp_step = _WARP_OCTAVES[-1][0]

    orgs = _organelles(r_org, nz, n_grid, cell, np.concatenate([rad0.ravel(), big_r0]))

    slab = max(1, _SLAB_VOXELS // (ny * nx))  # sections per slab
    labels = np.empty((nz, ny, nx), dtype=np.uint32)
    work = np.empty((nz, ny, nx), dtype=np.float32)  # image before membranes/noise
    ys = np.arange(ny, dtype=np.float32)[None, :, None]
    xs = np.arange(nx, dtype=np.float32)[None, None, :]
    diagram = _Diagram(ny, nx, pad, margin, gy, gx, tab_x32, tab_y32, tab_r32, aspect, group, n_grid)

    # --- pass 1: cells and their contents, slab by slab ------------------------
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        py = _field_slab(warp_y, warp_step, z0, z1, ny, nx, linear_x=True)
        py += ys
        px = _field_slab(warp_x, warp_step, z0, z1, ny, nx, linear_x=True)
        px += xs
        ids = diagram.sample(z0, z1, px, py)  # seed id per pixel (neurite identity)
        labels[z0:z1] = ids

        img = _field_slab(tex_grid, tex_step, z0, z1, ny, nx)
        img += np.take(cell_off, ids)
        img += np.float32(_CYTO)
        ids += (np.arange(z0, z1, dtype=np.intp) * n_seeds)[:, None, None]  # -> row in seed tables
        _draw_organelles(img, orgs, ids, z0, n_seeds, px, py, flat_x, flat_y, flat_r, cell)
        work[z0:z1] = img
        del px, py, ids, img

    # --- labels: neurite ids -> dense cell ids, remove pixel-scale debris ------
    # (before drawing membranes, so membranes follow the final labels)
    counts = _one_piece_per_section(labels, n_seeds, max(1, (1 << 22) // (ny * nx)))
    _finalize_labels(labels, counts)
    n_labels = int(labels.max()) if labels.size else 0
    # membrane contrast varies a little from cell to cell, as in real stainings
    mem_gain = (1.35 + 0.6 * r_mem.random(n_labels + 1)).astype(np.float32)

    # --- pass 2: membranes, grain noise, drift, quantisation ------------------
    image = np.empty((nz, ny, nx), dtype=np.uint8)
    shift = _drift_curve(r_drift, nz, float(drift))
    # Grain: triangular noise (sum of two uniforms) blurred by one pixel, i.e. a
    # fine granular texture.  Drawing it per voxel is costly, so sections take
    # randomly shifted windows of a few pre-drawn planes (shifts of 2+ px give
    # independent noise; a repeat between two random sections is invisible).
    n_planes, spare = 4, 32
    planes = r_noise.random((2, n_planes, ny + spare, nx + spare), dtype=np.float32)
    planes = planes[0] + planes[1] - np.float32(1.0)
    planes = _blur121(_blur121(planes, 1), 2) * np.float32(_NOISE_AMP)
    pick = r_noise.integers(0, (n_planes, spare + 1, spare + 1), size=(nz, 3))
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        lab = labels[z0:z1]
        # in-plane boundaries: 1 px dark line on one side of every label change
        mem = np.zeros(lab.shape, dtype=np.float32)
        if nx > 1:
            mem[:, :, :-1] = lab[:, :, 1:] != lab[:, :, :-1]
        if ny > 1:
            np.maximum(mem[:, :-1, :], lab[:, 1:, :] != lab[:, :-1, :], out=mem[:, :-1, :])
        # label changes between sections mean the membrane is oblique to the
        # cut: render a fainter band there (what real sections show)
        prev = labels[max(z0 - 1, 0) : z1 - 1] if z0 > 0 else np.concatenate([lab[:1], lab[:-1]])
        nxt = labels[z0 + 1 : min(z1 + 1, nz)]
        if nxt.shape[0] < lab.shape[0]:
            nxt = np.concatenate([nxt, lab[-1:]])
        oblique = ((lab != prev) | (lab != nxt)).astype(np.float32) * np.float32(0.4)
        np.maximum(mem, oblique, out=mem)
        # slight blur (EM point-spread), then scale so the line core is ~fully dark
        mem = _blur121(_blur121(mem, 1), 2)
        mem *= np.take(mem_gain, lab)
        np.minimum(mem, np.float32(1.0), out=mem)

        img = work[z0:z1]
        img += (np.float32(_MEMBRANE) - img) * mem

        for z in range(z0, z1):
            p, oy, ox = pick[z]
            img[z - z0] += planes[p, oy : oy + ny, ox : ox + nx]
        # drift, and +0.5 so that the truncating cast rounds to nearest
        img += (shift[z0:z1] + np.float32(0.5))[:, None, None]
        np.clip(img, 0, 255.5, out=img)
        image[z0:z1] = img.astype(np.uint8)
    del work
    return image, labels


def _group_seeds(rng: np.random.Generator, gy: int, gx: int, p: float = 0.3, most: int = 3) -> np.ndarray:
    """Join some grid seeds with their right or lower neighbour, groups of at most ``most``.

    Returns, per seed, the id of its group's first seed (its own id if alone).
    """
    n = gy * gx
    root = np.arange(n)
    size = np.ones(n, dtype=np.int64)
    choice = rng.random(n)
    for i in range(n):  # a few thousand seeds: a plain loop is fine
        if choice[i] < p:
            j = i + 1 if choice[i] < p / 2 else i + gx
            if (j == i + 1 and (i + 1) % gx == 0) or j >= n:
                continue
            a, b = root[i], root[j]
            while root[a] != a:
                a = root[a]
            while root[b] != b:
                b = root[b]
            if a != b and size[a] + size[b] <= most:
                a, b = min(a, b), max(a, b)
                root[b] = a
                size[a] += size[b]
    for i in range(n):
        r = i
        while root[r] != r:
            r = root[r]
        root[i] = r
    return root


# ---------------------------------------------------------------------------
# the cell diagram
# ---------------------------------------------------------------------------
class _Diagram:
    """Anisotropic power diagram of the neurite seeds plus round large cells, per section.

    A pixel belongs to the seed with the lowest score: for grid seeds
    ``a (x - sx)^2 + (y - sy)^2 / a - r^2`` (a power diagram with a per-seed
    axis stretch ``a``: cells grow with ``r``, are slightly elongated along x
    or y, and borders between differently stretched cells are curved conics);
    for large seeds ``min(D^2 - R^2, (D - R)^2)`` with ``D = |p - c|`` (round
    cells of radius a bit over ``R``, which reliably swallow the grid seeds
    inside them, with the neighbours' borders curving around them).

    Speed: the diagram is evaluated on an *unwarped* pixel grid laid out as
    blocks of one seed-grid cell, shape ``(sections, rows of cells, CELL, cols
    of cells, CELL)``.  For a candidate seed, ``|p - s|^2`` splits into an x
    part and a y part that each depend on one in-block axis only, so they are
    computed on 1/CELL of the pixels.  They are quantised to integers (1/16
    px^2) with the candidate's neurite id in the low bits, so the whole
    per-pixel work per candidate is one integer add and one ``minimum`` (no
    gathers, no float compare-and-select), and the winner's id is simply the
    low bits of the minimum.
    Each pixel tests the 3x3 grid cells around its own (seeds are jittered
    within their cell, so the winner is practically always among them) plus
    the large seeds that can reach it.

    Warped pixel positions then take their label from this grid (nearest
    pixel), which bends the straight borders into organic curves.
    """

    _SCALE = 16.0  # score quantum: 1/16 px^2 (sub-1/100 px border placement)

    def __init__(
        self,
        ny: int,
        nx: int,
        pad: int,
        margin: int,
        gy: int,
        gx: int,
        tab_x: np.ndarray,
        tab_y: np.ndarray,
        tab_r: np.ndarray,
        aspect: np.ndarray,
        group: np.ndarray,
        n_grid: int,
    ) -> None:
        c = _CELL
        nz = tab_x.shape[0]
        # region: whole grid cells covering [-pad, n + pad) in each axis
        self.cell0 = (-(-pad // c), -(-pad // c))  # cells before coordinate 0
        self.nb = (-(-(ny + pad) // c) + self.cell0[0], -(-(nx + pad) // c) + self.cell0[1])
        self.origin = (-self.cell0[0] * c, -self.cell0[1] * c)
        self.shape = (self.nb[0] * c, self.nb[1] * c)
        f32 = np.float32
        self.yb = (self.origin[0] + np.arange(self.shape[0], dtype=f32)).reshape(self.nb[0], c)
        self.xb = (self.origin[1] + np.arange(self.shape[1], dtype=f32)).reshape(self.nb[1], c)
        self.grid = tuple(t[:, :n_grid].reshape(nz, gy, gx) for t in (tab_x, tab_y, tab_r))
        self.big = tuple(t[:, n_grid:] for t in (tab_x, tab_y, tab_r))
        self.aspect = aspect.reshape(gy, gx).astype(np.float32)
        # candidate k: grid offset (dy, dx); row/col of the first block's seed
        reach = range(-_REACH, _REACH + 1)
        self.cands = [(dy, dx) for dy in reach for dx in reach]
        row0 = margin - self.cell0[0]
        col0 = margin - self.cell0[1]
        assert row0 >= _REACH and col0 >= _REACH
        assert row0 + self.nb[0] + _REACH <= gy and col0 + self.nb[1] + _REACH <= gx
        self.row0, self.col0 = row0, col0
        # packed score = quantised score * 2**bits + seed id; int32 if it fits
        n_seeds = tab_x.shape[1]
        self.n_grid = n_grid
        self.bits = max(1, int(n_seeds - 1).bit_length())
        big_r = float(self.big[2].max()) if n_seeds > n_grid else 0.0
        bound = self._SCALE * (2 * 2 * (2 * _REACH + 0.5) ** 2 * c**2 + (big_r + 3 * c) ** 2) * 2**self.bits
        self.dtype = np.int32 if bound < 2**31 else np.int64
        # seed id of the grid seed at offset (dy, dx) from each block, shaped
        # like the x part of the score
        rows = np.arange(self.nb[0])[:, None] + row0
        cols = np.arange(self.nb[1])[None, :] + col0
        self.ids = [
            group[(rows + dy) * gx + (cols + dx)].astype(self.dtype)[None, :, None, :, None]
            for dy, dx in self.cands
        ]

    def _pack(self, v: np.ndarray, seed_id: np.ndarray | int) -> np.ndarray:
        """Quantise scores ``v`` (px^2) and put the seed id in the low bits."""
        q = np.floor(v * np.float32(self._SCALE) + np.float32(0.5)).astype(self.dtype)
        q *= self.dtype(1 << self.bits)
        q += seed_id
        return q

    def _region(self, z0: int, z1: int) -> np.ndarray:
        """Seed id for every pixel of the unwarped region, sections z0:z1."""
        c = _CELL
        nby, nbx = self.nb
        m = z1 - z0
        full = (m, nby, c, nbx, c)
        best = np.full(full, np.iinfo(self.dtype).max, dtype=self.dtype)
        tmp = np.empty(full, dtype=self.dtype)
        xb = self.xb[None, None, None, :, :]
        yb = self.yb[None, :, :, None, None]
        gx_, gy_, gr_ = self.grid
        for k, (dy, dx) in enumerate(self.cands):
            r0, c0 = self.row0 + dy, self.col0 + dx
            sx = gx_[z0:z1, r0 : r0 + nby, c0 : c0 + nbx][:, :, None, :, None]
            sy = gy_[z0:z1, r0 : r0 + nby, c0 : c0 + nbx][:, :, None, :, None]
            sr = gr_[z0:z1, r0 : r0 + nby, c0 : c0 + nbx][:, :, None, :, None]
            a = self.aspect[None, r0 : r0 + nby, None, c0 : c0 + nbx, None]
            ddx = xb - sx  # (m, nby, 1, nbx, c): only 1/c of the pixels
            ddx *= ddx
            ddx *= a
            ddy = yb - sy  # (m, nby, c, nbx, 1)
            ddy *= ddy
            ddy /= a
            ddy -= sr * sr
            np.add(self._pack(ddx, self.ids[k]), self._pack(ddy, 0), out=tmp)
            np.minimum(best, tmp, out=best)
        # Large seeds, only within their reach: every pixel has a grid seed
        # scoring below ~2.6 cells^2 (1.3 cells away, stretch <= 1.56), and the
        # large seed scores 3 (D - R)^2 outside its circle, so it cannot win
        # farther than R + 0.95 cells from its centre; 1.5 cells is safe.
        bx_, by_, br_ = self.big
        for b in range(bx_.shape[1]):
            sx, sy, sr = bx_[z0:z1, b], by_[z0:z1, b], br_[z0:z1, b]
            reach = float(sr.max()) + 1.5 * c
            rows = self._blocks(float(sy.min()) - reach, float(sy.max()) + reach, 0)
            cols = self._blocks(float(sx.min()) - reach, float(sx.max()) + reach, 1)
            if rows.start < rows.stop and cols.start < cols.stop:
                ddx = xb[:, :, :, cols] - sx[:, None, None, None, None]
                ddx *= ddx
                ddy = yb[:, rows] - sy[:, None, None, None, None]
                ddy *= ddy
                d2 = ddx + ddy
                t = np.sqrt(d2)
                t -= sr[:, None, None, None, None]
                t *= t
                t *= np.float32(3.0)  # steeper outside: rounder large cells
                d2 -= (sr * sr)[:, None, None, None, None]
                np.minimum(t, d2, out=t)
                bw = best[:, rows, :, cols]
                np.minimum(bw, self._pack(t, self.n_grid + b), out=bw)
        del tmp
        best &= self.dtype((1 << self.bits) - 1)  # keep the seed id
        return best.reshape(m, *self.shape)

    def _blocks(self, lo: float, hi: float, axis: int) -> slice:
        """Block rows (axis 0) or columns (axis 1) overlapping coordinates [lo, hi]."""
        a = int(np.floor((lo - self.origin[axis]) / _CELL))
        b = int(np.floor((hi - self.origin[axis]) / _CELL)) + 1
        return slice(max(a, 0), min(b, self.nb[axis]))

    def sample(self, z0: int, z1: int, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Neurite (seed) id at warped positions ``(py, px)``: the nearest region pixel's."""
        region = self._region(z0, z1)
        hy, hx = self.shape
        f32 = np.float32
        r = np.floor(py + f32(0.5 - self.origin[0]))
        np.clip(r, 0, hy - 1, out=r)
        cidx = np.floor(px + f32(0.5 - self.origin[1]))
        np.clip(cidx, 0, hx - 1, out=cidx)
        zoff = np.arange(z1 - z0)[:, None, None] * (hy * hx)
        if region.size < (1 << 24):
            # flat index in float32 (cheaper): all values are integers < 2**24, so exact
            r *= f32(hx)
            r += cidx
            r += zoff.astype(f32)
            flat = r.astype(np.intp)
        else:
            flat = r.astype(np.intp) * hx + cidx.astype(np.intp) + zoff
        return np.take(region.reshape(-1), flat)


# ---------------------------------------------------------------------------
# organelles
# ---------------------------------------------------------------------------
def _organelles(
    rng: np.random.Generator, nz: int, n_grid: int, cell: float, rad: np.ndarray
) -> dict[str, np.ndarray]:
    """Random organelle parameters, stored per (slot, seed) so pixels can gather them.

    Mitochondria: ellipsoids near the neurite axis, elongated in-plane by a
    random direction and along z by several sections.  Small neurites get at
    most one, dendrites several.  Vesicle clouds: a z-range of a small neurite
    ("bouton") filled with small dark rings.
    """
    n_seeds = rad.size  # rad: typical power radius (grid seeds) or radius (large seeds)
    size = np.where(np.arange(n_seeds) < n_grid, 0.4 * cell + 0.6 * rad, rad)  # rough cell radius
    slots = 4
    present = rng.random((slots, n_seeds)) < np.where(np.arange(n_seeds) < n_grid, 0.0, 0.8)[None]
    present[0, :n_grid] = rng.random(n_grid) < 0.5
    big = np.arange(n_seeds) >= n_grid
    # in-plane direction as a random unit vector (no sin/cos: keep it bit-exact)
    uy = rng.random((slots, n_seeds)) * 2 - 1
    ux = rng.random((slots, n_seeds)) * 2 - 1
    norm = np.sqrt(uy * uy + ux * ux) + 1e-9
    uy, ux = uy / norm, ux / norm
    half_len = size * np.where(big, 0.3, 0.6) * (0.7 + 0.6 * rng.random((slots, n_seeds)))
    half_wid = half_len * (0.45 + 0.4 * rng.random((slots, n_seeds)))
    spread = np.where(big, 0.55, 0.15) * size
    oy = (rng.random((slots, n_seeds)) * 2 - 1) * spread
    ox = (rng.random((slots, n_seeds)) * 2 - 1) * spread
    zc = rng.random((slots, n_seeds)) * nz
    hz = np.where(big, 8.0, 3.0) + np.where(big, 16.0, 9.0) * rng.random((slots, n_seeds))
    stripes = 0.25 + 0.15 * rng.random((slots, n_seeds))  # cristae frequency (1/px)

    ves = (rng.random(n_seeds) < 0.12) & ~big
    vz0 = rng.random(n_seeds) * nz - 4
    vz1 = vz0 + 6 + 14 * rng.random(n_seeds)
    f32 = np.float32
    return {
        "present": present,
        "uy": uy.astype(f32),
        "ux": ux.astype(f32),
        "inv_len": (1.0 / half_len).astype(f32),
        "inv_wid": (1.0 / half_wid).astype(f32),
        "oy": oy.astype(f32),
        "ox": ox.astype(f32),
        "zc": zc.astype(f32),
        "inv_hz": (1.0 / hz).astype(f32),
        "stripes": stripes.astype(f32),
        "ves": ves,
        "vz0": vz0,
        "vz1": vz1,
        "ves_phase": rng.random((2, n_seeds)).astype(f32) * 7,
    }


def _draw_organelles(
    img: np.ndarray,
    orgs: dict[str, np.ndarray],
    arg: np.ndarray,
    z0: int,
    n_seeds: int,
    px: np.ndarray,
    py: np.ndarray,
    seed_x: np.ndarray,
    seed_y: np.ndarray,
    seed_r: np.ndarray,
    cell: float,
) -> None:
    """Darken mitochondria and vesicle clouds into ``img`` (one slab, in place).

    ``arg`` holds, per pixel, the flat index ``z * n_seeds + seed`` of its
    cell's seed.  Each pixel only looks at organelles of its own cell, so
    organelles never cross membranes.  One table lookup picks out the pixels
    of cells with an organelle in their section; all work is on that subset.
    """
    f32 = np.float32
    m = img.shape[0]
    zsec = np.arange(z0, z0 + m, dtype=np.float32)[:, None]
    present = orgs["present"]
    slots = present.shape[0]
    # active[k, z, seed]: slot k of the seed's neurite intersects section z
    # (slot `slots` is the vesicle cloud)
    active = np.zeros((slots + 1, m, n_seeds), dtype=bool)
    for k in range(slots):
        dz = (zsec - orgs["zc"][k][None]) * orgs["inv_hz"][k][None]
        active[k] = present[k][None] & (np.abs(dz) < f32(1.0))
    active[slots] = orgs["ves"][None] & (zsec >= orgs["vz0"][None]) & (zsec < orgs["vz1"][None])
    if not active.any():
        return
    flat = img.reshape(-1)
    loc_all = arg.reshape(-1) - z0 * n_seeds  # index into one (m, n_seeds) table
    sel = np.flatnonzero(np.take(active.any(axis=0).reshape(-1), loc_all))
    if sel.size == 0:
        return
    loc = loc_all[sel]
    a = loc + z0 * n_seeds  # index into the seed tables
    sid = loc % n_seeds
    z = (loc // n_seeds + z0).astype(f32)
    x = px.reshape(-1)[sel]
    y = py.reshape(-1)[sel]
    sx = np.take(seed_x, a)
    sy = np.take(seed_y, a)

    for k in range(slots):
        on = np.flatnonzero(np.take(active[k].reshape(-1), loc))
        if on.size == 0:
            continue
        s = sid[on]
        du = x[on] - (sx[on] + orgs["ox"][k][s])
        dv = y[on] - (sy[on] + orgs["oy"][k][s])
        ux, uy = orgs["ux"][k][s], orgs["uy"][k][s]
        along = du * ux + dv * uy
        across = dv * ux - du * uy
        qa = along * orgs["inv_len"][k][s]
        qc = across * orgs["inv_wid"][k][s]
        qz = (z[on] - orgs["zc"][k][s]) * orgs["inv_hz"][k][s]
        q = qa * qa + qc * qc + qz * qz  # < 1 inside the ellipsoid
        inside = q < f32(1.0)
        if not inside.any():
            continue
        q = q[inside]
        where = sel[on[inside]]
        vals = flat[where]
        # matrix, with lighter cristae: a triangle wave across the long axis
        phase = along[inside] * orgs["stripes"][k][s[inside]]
        tri = np.abs(phase - np.floor(phase) - f32(0.5)) * f32(2.0)  # 0..1
        matrix = f32(_MITO) + f32(55.0) * np.maximum(tri - f32(0.6), f32(0.0))
        # darker outer membrane near the surface, soft 1 px edge outside
        rim = np.clip((q - f32(0.55)) * f32(3.0), 0.0, 1.0)
        target = matrix + (f32(_MITO_RIM) - matrix) * rim
        edge = np.clip((f32(1.0) - q) * f32(6.0), 0.0, 1.0)
        flat[where] = vals + (target - vals) * edge

    # vesicle clouds
    on = np.flatnonzero(np.take(active[slots].reshape(-1), loc))
    if on.size == 0:
        return
    s = sid[on]
    x = x[on]
    y = y[on]
    # keep a margin to the membrane: fade out towards the rough cell radius
    ddx = x - sx[on]
    ddy = y - sy[on]
    r = np.take(seed_r, a[on]) + f32(0.5 * cell)
    cloud = np.clip((f32(1.0) - np.sqrt(ddx * ddx + ddy * ddy) / r) * f32(6.0), 0.0, 1.0)
    # Vesicles: one per 6x6 px lattice cell (2 sections deep), present with p~0.8,
    # centre jittered, radius 1.6..2.4 px.  Each pixel only checks its own cell.
    g = f32(6.0)
    x = x + orgs["ves_phase"][0][s]
    y = y + orgs["ves_phase"][1][s]
    gxi = np.floor(x / g)
    gyi = np.floor(y / g)
    gzi = np.floor(z[on] * f32(0.5))
    h = _hash3(gxi.astype(np.int64), gyi.astype(np.int64), gzi.astype(np.int64))
    jx = ((h & 0xFF).astype(f32) / f32(255.0) - f32(0.5)) * f32(1.4)
    jy = (((h >> 8) & 0xFF).astype(f32) / f32(255.0) - f32(0.5)) * f32(1.4)
    vr = f32(1.6) + ((h >> 16) & 0xFF).astype(f32) / f32(255.0) * f32(0.8)
    present_v = ((h >> 24) & 0xFF) < 205
    vx = x - (gxi * g + g * f32(0.5) + jx)
    vy = y - (gyi * g + g * f32(0.5) + jy)
    d = np.sqrt(vx * vx + vy * vy)
    ring = np.clip(f32(1.2) - np.abs(d - vr), 0.0, 1.0)
    fill = (d < vr).astype(f32) * f32(0.3)
    strength = np.maximum(ring, fill) * present_v * cloud
    where = sel[on]
    vals = flat[where]
    flat[where] = vals + (f32(_VESICLE) - vals) * strength


def _hash3(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Integer hash of lattice coordinates (bit-exact pseudo-random per cell)."""
    mask = np.int64(0xFFFFFFFF)
    h = (x * 73856093) ^ (y * 19349663) ^ (z * 83492791)
    h &= mask
    h ^= h >> 16
    h = (h * 0x45D9F3B) & mask
    h ^= h >> 16
    h = (h * 0x45D9F3B) & mask
    h ^= h >> 16
    return h


# ---------------------------------------------------------------------------
# label clean-up and dense relabelling
# ---------------------------------------------------------------------------
def _one_piece_per_section(labels: np.ndarray, n_seeds: int, chunk: int) -> np.ndarray:
    """Make every label 4-connected within each section (in place); return voxel counts.

    Sampling a cell thinner than a pixel (or resampling through the warp) can
    leave a few detached pixels of a label.  Per section, the largest 4-connected
    piece of each label is kept and the pixels of smaller pieces join an
    adjacent cell.  Connected components are found with union-find over
    horizontal pixel runs (vectorised hook-and-compress), ``chunk`` sections at
    a time.  Returns ``counts[z, label]``, the voxels of each label per section.
    """
    nz, ny, nx = labels.shape
    counts = np.zeros((nz, n_seeds), dtype=np.int64)
    for z0 in range(0, nz, chunk):
        z1 = min(z0 + chunk, nz)
        lab = labels[z0:z1]
        flat = lab.reshape(-1)
        rows = lab.reshape(-1, nx)
        start = np.ones(rows.shape, dtype=bool)
        start[:, 1:] = rows[:, 1:] != rows[:, :-1]
        first = np.flatnonzero(start)  # first pixel of every run
        n_runs = first.size
        length = np.diff(np.append(first, flat.size))
        run_sec = first // (ny * nx)
        run_lab = flat[first].astype(np.int64)
        # union runs that touch vertically (same label, same section): such runs
        # overlap at the first pixel of one of the two
        touch = rows[1:] == rows[:-1]
        touch &= start[1:] | start[:-1]
        touch[ny - 1 :: ny] = False  # row pairs that straddle two sections
        pos = np.flatnonzero(touch)
        del touch, start
        a = np.searchsorted(first, pos + nx, side="right") - 1
        b = np.searchsorted(first, pos, side="right") - 1
        parent = np.arange(n_runs, dtype=np.int64)
        while a.size:
            pa = parent[a]
            pb = parent[b]
            diff = pa != pb
            if not diff.any():
                break
            a, b, pa, pb = a[diff], b[diff], pa[diff], pb[diff]
            np.minimum.at(parent, np.maximum(pa, pb), np.minimum(pa, pb))
            while True:  # compress: point every run at its root
                pp = parent[parent]
                if np.array_equal(pp, parent):
                    break
                parent = pp
        key = run_sec * n_seeds + run_lab  # (section, label) of every run
        part = np.bincount(key, weights=length, minlength=(z1 - z0) * n_seeds)
        counts[z0:z1] = part.reshape(z1 - z0, n_seeds).astype(np.int64)  # exact: integer sums
        roots = np.flatnonzero(parent == np.arange(n_runs))
        if roots.size == np.unique(key[roots]).size:
            continue  # already one piece per (section, label)
        # keep the largest piece per (section, label); ties -> lowest root
        size = np.bincount(parent, weights=length, minlength=n_runs)
        order = np.lexsort((roots, -size[roots], key[roots]))
        k = key[roots[order]]
        later = np.zeros(order.size, dtype=bool)
        later[1:] = k[1:] == k[:-1]
        stray_root = np.zeros(n_runs, dtype=bool)
        stray_root[roots[order[later]]] = True
        runs = np.flatnonzero(stray_root[parent])
        # pixels of stray pieces adopt the label of a 4-neighbour that is not stray
        lens = length[runs]
        px = np.repeat(first[runs] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        old = flat[px].astype(np.int64)
        stray = np.zeros(flat.size, dtype=bool)
        stray[px] = True
        todo = px
        z_, rem = np.divmod(todo, ny * nx)
        y_, x_ = np.divmod(rem, nx)
        while todo.size:
            done = np.zeros(todo.size, dtype=bool)
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                yy, xx = y_ + dy, x_ + dx
                ok = ~done & (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
                nb = (z_ * ny + np.clip(yy, 0, ny - 1)) * nx + np.clip(xx, 0, nx - 1)
                ok &= ~stray[nb]
                flat[todo[ok]] = flat[nb[ok]]
                done |= ok
            if not done.any():
                break  # a section made only of stray pieces: cannot happen; never loop forever
            stray[todo[done]] = False
            keep = ~done
            todo, z_, y_, x_ = todo[keep], z_[keep], y_[keep], x_[keep]
        sec = px // (ny * nx)
        np.subtract.at(counts[z0:z1], (sec, old), 1)
        np.add.at(counts[z0:z1], (sec, flat[px].astype(np.int64)), 1)
    return counts


def _finalize_labels(labels: np.ndarray, counts: np.ndarray, min_voxels: int = 32) -> None:
    """Neurite (seed) ids -> dense cell ids ``1..N``, in place.

    * A neurite can be squeezed out of some sections by its neighbours, or be
      so thin that consecutive cross-sections do not touch.  A run continues
      from section z-1 to z only if the two cross-sections overlap, and each
      run becomes its own cell, which keeps every label one connected piece.
    * Runs of fewer than ``min_voxels`` voxels (a neurite squeezed down to a
      few pixels) are merged into an in-plane neighbour: a "cell" of a handful
      of voxels only confuses meshing demos.
    """
    nz, n_seeds = counts.shape
    cont = np.zeros((nz, n_seeds), dtype=bool)
    for z in range(1, nz):
        same = labels[z] == labels[z - 1]
        cont[z] = np.bincount(labels[z][same], minlength=n_seeds) > 0
    present = counts > 0
    starts = present & ~cont
    # number runs seed-major: a run's id is the count of run starts up to it
    run = np.cumsum(starts.T.ravel()).reshape(n_seeds, nz).T
    n_runs = int(run[-1, -1]) if run.size else 0
    size = np.zeros(n_runs + 1, dtype=np.int64)
    np.add.at(size, run[present], counts[present])  # integer sums: exact
    limit = min(min_voxels, max(1, int(np.median(size[1:])) // 4)) if n_runs else 0
    tiny = size < limit
    tiny[0] = False
    if tiny[1:].all():
        tiny[:] = False  # never merge everything away (very small volumes)
    keep = ~tiny
    if tiny.any():
        dirs = ((1, 1), (1, -1), (2, 1), (2, -1))
        for z in np.nonzero((present & tiny[run]).any(axis=1))[0]:
            lab = labels[z : z + 1]
            is_tiny = present[z] & tiny[run[z]]
            pos = np.nonzero(is_tiny[lab])
            while pos[0].size:
                done = np.zeros(pos[0].size, dtype=bool)
                for axis, d in dirs:
                    nb = list(pos)
                    nb[axis] = np.clip(nb[axis] + d, 0, lab.shape[axis] - 1)
                    v = lab[tuple(nb)]
                    ok = ~is_tiny[v] & ~done
                    lab[tuple(p[ok] for p in pos)] = v[ok]
                    done |= ok
                if not done.any():  # isolated in-plane: keep these as a (small) cell
                    keep[run[z][np.unique(lab[pos])]] = True
                    break
                pos = tuple(p[~done] for p in pos)
    keep[0] = False
    dense = np.cumsum(keep).astype(np.uint32)
    for z in range(nz):
        labels[z] = dense[run[z]][labels[z]]
