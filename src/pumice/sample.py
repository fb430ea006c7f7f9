"""Synthetic electron-microscopy (EM) sample volume with matching cell labels.

What it is for
--------------
Tests, demos and benchmarks need an image + segmentation pair that *looks* like
serial-section EM of brain tissue (so downsampling, meshing, contrast
normalisation and viewer screenshots are meaningful) without shipping data.
:func:`make_em_sample` builds one in about a second, deterministically.

What it looks like
------------------
* Neurites are tubes that run roughly along z (as in a real stack, where most
  axons and dendrites cross many sections), so each xy section shows a packing
  of rounded polygonal profiles of varied size (small "axons" and a few large
  "dendrites").  Along z the profiles drift and change size slowly, i.e. the
  volume is smoother along z than in-plane, like anisotropic EM.
* Cells are separated by thin dark, slightly blurred membranes; where a
  boundary is oblique to the section (its position changes between sections)
  the membrane looks a little wider and greyer, as in real EM.
* Cytoplasm is mid-light grey with low-frequency mottling and a per-cell
  brightness offset; some cells hold dark mitochondria (with lighter cristae)
  and a few "boutons" hold clouds of small vesicles (dark rings).
* Mild, spatially correlated grain noise on top.

Labels
------
``labels`` are dense ids ``1..N`` (uint32), no zeros: there is no extracellular
space, every voxel (including membrane voxels) belongs to exactly one cell.
Each label is one z-contiguous run of a single neurite; cells are convex
(power-diagram) cross-sections bent by a smooth warp, so labels are connected
in practice.

Determinism
-----------
Only uniform draws from :func:`numpy.random.default_rng` streams (integer
derived, bit-exact everywhere) and IEEE elementwise arithmetic (+, -, *, /,
floor, comparisons) are used: no transcendental functions (whose SIMD
implementations differ between CPUs), no reductions, no FFT/BLAS.  So the same
arguments give identical bytes on any machine with the same NumPy version.

Implementation sketch
---------------------
Per section, each pixel (after a smooth warp of its coordinates) is assigned
to the seed minimising the *power distance* ``|p - s|^2 - w`` (a power /
Laguerre diagram: cells stay convex and connected, and the weights ``w`` give
varied cell sizes).  Small seeds sit on a jittered grid, so a pixel only has to
test the 3x3 grid neighbourhood of its own grid cell (fully vectorised); the few
large "dendrite" seeds are tested everywhere.  Work is done in slabs of a few
sections, so temporary memory is bounded and total memory is proportional to
the volume (output plus one float32 working copy).
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
_BLOCK = 3  # a pixel tests the seeds of the _BLOCK x _BLOCK grid cells nearest to it
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


def _field_slab(c: np.ndarray, step: tuple[int, int, int], z0: int, z1: int, ny: int, nx: int) -> np.ndarray:
    """Full-resolution field for sections ``z0:z1`` from control grid ``c``.

    Interpolate z first and x last so only the final pass touches every voxel.
    """
    out = _bspline_interp(c, 0, np.arange(z0, z1, dtype=np.float64) / step[0])
    out = _bspline_interp(out, 1, np.arange(ny, dtype=np.float64) / step[1])
    return _bspline_interp(out, 2, np.arange(nx, dtype=np.float64) / step[2])


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
    margin = int(np.ceil(warp_amp / cell)) + 2  # warped coordinates may leave the volume
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
    # Additive weight ("radius bonus") per neurite: skewed so most are small and
    # a few medium; it breathes slowly along z (varicosities).
    rad0 = cell * 0.6 * r_seed.random((gy, gx)) ** 2
    breathe = cell * 0.08 * _bspline_interp(r_seed.random((nzc, gy, gx)) * 2 - 1, 0, zt)
    sy = (base_y[None] + wob_y).reshape(nz, n_grid)
    sx = (base_x[None] + wob_x).reshape(nz, n_grid)
    srad = (rad0[None] + breathe).reshape(nz, n_grid)

    # --- large seeds ("dendrites"): few, tested against every pixel ------------
    n_big = max(1, int(round(ny * nx / _BIG_AREA)))
    big_y = (r_big.random(n_big) * (ny + 2 * cell) - cell)[None] + _bspline_interp(
        r_big.random((nzc, n_big)) * 2 - 1, 0, zt
    ) * (0.6 * cell)
    big_x = (r_big.random(n_big) * (nx + 2 * cell) - cell)[None] + _bspline_interp(
        r_big.random((nzc, n_big)) * 2 - 1, 0, zt
    ) * (0.6 * cell)
    big_r0 = cell * (1.1 + 0.9 * r_big.random(n_big))
    big_r = big_r0[None] * (1.0 + 0.12 * _bspline_interp(r_big.random((nzc, n_big)) * 2 - 1, 0, zt))

    # Seed tables per section, ids 0..n_grid-1 small, n_grid.. big.
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
    lo = -(_BLOCK // 2) if _BLOCK % 2 else -(_BLOCK // 2 - 1)
    hi = lo + _BLOCK - 1
    shift = 0.0 if _BLOCK % 2 else 0.5
    reach = range(lo, hi + 1)
    offsets = [dy * gx + dx for dy in reach for dx in reach]

    # --- pass 1: cells and their contents, slab by slab ------------------------
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        m = z1 - z0
        py = _field_slab(warp_y, warp_step, z0, z1, ny, nx)
        py += ys
        px = _field_slab(warp_x, warp_step, z0, z1, ny, nx)
        px += xs

        # grid cell of each (warped) pixel, clamped so the 3x3 block is in range
        cy = np.floor(py * np.float32(1.0 / cell) - np.float32(shift)).astype(np.intp)
        cy += margin
        np.clip(cy, -lo, gy - 1 - hi, out=cy)
        cx = np.floor(px * np.float32(1.0 / cell) - np.float32(shift)).astype(np.intp)
        cx += margin
        np.clip(cx, -lo, gx - 1 - hi, out=cx)
        base = cy
        base *= gx
        base += cx
        base += (np.arange(z0, z1, dtype=np.intp) * n_seeds)[:, None, None]
        del cx

        best = np.full(base.shape, np.inf, dtype=np.float32)
        arg = np.zeros(base.shape, dtype=np.intp)
        idx = np.empty_like(base)
        t1 = np.empty(base.shape, dtype=np.float32)
        t2 = np.empty(base.shape, dtype=np.float32)
        better = np.empty(base.shape, dtype=bool)

        def consider(d: np.ndarray, flat_id: np.ndarray | int) -> None:
            np.less(d, best, out=better)
            np.copyto(best, d, where=better)
            np.copyto(arg, flat_id, where=better)

        # additively weighted distance |p - s| - r (Apollonius diagram)
        for off in offsets:
            np.add(base, off, out=idx)
            np.take(flat_x, idx, out=t1)
            t1 -= px
            t1 *= t1
            np.take(flat_y, idx, out=t2)
            t2 -= py
            t2 *= t2
            t1 += t2
            np.sqrt(t1, out=t1)
            np.take(flat_r, idx, out=t2)
            t1 -= t2
            consider(t1, idx)
        zoff = (np.arange(z0, z1, dtype=np.intp) * n_seeds)[:, None, None]
        for b in range(n_big):
            k = n_grid + b
            np.subtract(px, tab_x32[z0:z1, k, None, None], out=t1)
            t1 *= t1
            np.subtract(py, tab_y32[z0:z1, k, None, None], out=t2)
            t2 *= t2
            t1 += t2
            np.sqrt(t1, out=t1)
            t1 -= tab_r32[z0:z1, k, None, None]
            consider(t1, zoff + k)
        del best, idx, better, base, t2

        ids = arg - zoff  # seed id per pixel (z-independent neurite identity)
        labels[z0:z1] = ids

        img = _field_slab(tex_grid, tex_step, z0, z1, ny, nx)
        img += np.take(cell_off, ids)
        img += np.float32(_CYTO)
        _draw_organelles(img, orgs, arg, z0, n_seeds, px, py, flat_x, flat_y, flat_r, cell)
        work[z0:z1] = img
        del px, py, arg, ids, img, t1

    # --- labels: neurite ids -> dense cell ids, remove pixel-scale debris ------
    # (before drawing membranes, so membranes follow the final labels)
    _fix_isolated(labels, slab)
    _finalize_labels(labels, n_seeds)
    n_labels = int(labels.max()) if labels.size else 0
    # membrane contrast varies a little from cell to cell, as in real stainings
    mem_gain = (1.35 + 0.6 * r_mem.random(n_labels + 1)).astype(np.float32)

    # --- pass 2: membranes, grain noise, drift, quantisation ------------------
    image = np.empty((nz, ny, nx), dtype=np.uint8)
    shift = _drift_curve(r_drift, nz, float(drift))
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

        # grain: triangular noise (sum of two uniforms) blurred by one pixel
        noise = r_noise.random(lab.shape, dtype=np.float32)
        noise += r_noise.random(lab.shape, dtype=np.float32)
        noise -= np.float32(1.0)
        noise = _blur121(_blur121(noise, 1), 2)
        img += noise * np.float32(_NOISE_AMP)
        img += shift[z0:z1, None, None]
        np.clip(img, 0, 255, out=img)
        np.floor(img + np.float32(0.5), out=img)
        image[z0:z1] = img.astype(np.uint8)
    del work
    return image, labels


# ---------------------------------------------------------------------------
# organelles
# ---------------------------------------------------------------------------
def _organelles(
    rng: np.random.Generator, nz: int, n_grid: int, cell: float, rbonus: np.ndarray
) -> dict[str, np.ndarray]:
    """Random organelle parameters, stored per (slot, seed) so pixels can gather them.

    Mitochondria: ellipsoids near the neurite axis, elongated in-plane by a
    random direction and along z by several sections.  Small neurites get at
    most one, dendrites several.  Vesicle clouds: a z-range of a small neurite
    ("bouton") filled with small dark rings.
    """
    n_seeds = rbonus.size  # rbonus: typical additive weight per seed
    size = 0.5 * cell + rbonus  # rough cell radius
    slots = 4
    present = rng.random((slots, n_seeds)) < np.where(np.arange(n_seeds) < n_grid, 0.0, 0.8)[None]
    present[0, :n_grid] = rng.random(n_grid) < 0.4
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
    hz = 3.0 + 9.0 * rng.random((slots, n_seeds))
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
def _neighbours(labels: np.ndarray, z0: int, z1: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The six face neighbours of ``labels[z0:z1]``, each with a broadcastable in-volume mask.

    Outside the volume the voxel itself is repeated (and flagged invalid).
    """
    lab = labels[z0:z1]
    nz = labels.shape[0]
    m = z1 - z0
    zi = np.arange(z0, z1)
    lo = labels[z0 - 1 : z1 - 1] if z0 > 0 else np.concatenate([lab[:1], lab[:-1]])
    hi = labels[z0 + 1 : z1 + 1] if z1 < nz else np.concatenate([lab[1:], lab[-1:]])
    out = [(lo, (zi > 0).reshape(m, 1, 1)), (hi, (zi < nz - 1).reshape(m, 1, 1))]
    for axis in (1, 2):
        n = lab.shape[axis]
        idx = np.arange(n)
        shape = [1, 1, 1]
        shape[axis] = n
        out.append((np.take(lab, np.maximum(idx - 1, 0), axis=axis), (idx > 0).reshape(shape)))
        out.append((np.take(lab, np.minimum(idx + 1, n - 1), axis=axis), (idx < n - 1).reshape(shape)))
    return out


def _fix_isolated(labels: np.ndarray, slab: int) -> None:
    """Give voxels that share a label with none of their 6 neighbours a neighbour's label.

    Such voxels are where a sliver of a cell thinner than a pixel was sampled;
    left alone they would make that label disconnected.
    """
    nz = labels.shape[0]
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        lab = labels[z0:z1]
        nbs = _neighbours(labels, z0, z1)
        alone = np.ones(lab.shape, dtype=bool)
        for nb, valid in nbs:
            alone &= (nb != lab) | ~valid
        where = np.nonzero(alone)
        if where[0].size == 0:
            continue
        new = lab[where]
        for nb, valid in reversed(nbs):  # the first in-volume neighbour wins
            ok = np.broadcast_to(valid, lab.shape)[where]
            new = np.where(ok, nb[where], new)
        lab[where] = new


def _finalize_labels(labels: np.ndarray, n_seeds: int, min_voxels: int = 32) -> None:
    """Neurite (seed) ids -> dense cell ids ``1..N``, in place.

    * A neurite can be squeezed out of some sections by its neighbours, or be
      so thin that consecutive cross-sections do not touch.  A run continues
      from section z-1 to z only if the two cross-sections overlap, and each
      run becomes its own cell, which keeps every label one connected piece.
    * Runs of fewer than ``min_voxels`` voxels (a neurite squeezed down to a
      few pixels) are merged into an in-plane neighbour: a "cell" of a handful
      of voxels only confuses meshing demos.
    """
    nz = labels.shape[0]
    counts = np.zeros((nz, n_seeds), dtype=np.int64)
    cont = np.zeros((nz, n_seeds), dtype=bool)
    for z in range(nz):
        counts[z] = np.bincount(labels[z].ravel(), minlength=n_seeds)
        if z > 0:
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
