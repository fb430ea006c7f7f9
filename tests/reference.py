"""Independent whole-array references that several test modules compare with (importable: pytest's
pythonpath includes tests/)."""

from __future__ import annotations

import numpy as np
import tinybrain
import tinybrain.downsample


def global_grid_levels(data, offset, factors, method, sparse=False, faces=True):
    """An independent whole-array pyramid on the global grid: [(first voxel, array), ...] per mip.

    Voxel j of mip k covers mip-0 voxels [j*s, (j+1)*s) (s: the product of the factors so far). Voxels
    whose footprint lies wholly inside the volume come from tinybrain (average, mode) or tinybrain's
    NumPy pooling (min, max; striding: every s-th voxel) on the array padded with zeros to the top
    mip's grid, one tinybrain call per run of equal factors; voxels that the volume's faces cut are the
    average (floored for integers), mode (the smallest of the most frequent labels; zeros left out if
    ``sparse``), min, max or first of the mip-0 voxels that exist, one voxel at a time (with
    ``faces=False`` those are left as computed on the padded array: compare them with ``whole_groups``).
    """
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[..., np.newaxis]
    offset = np.array(offset)
    steps = np.cumprod(np.array(factors), axis=0)
    top = steps[-1]
    lo = (offset // top) * top
    hi = -(-(offset + data.shape[:3]) // top) * top
    current = np.zeros((*(hi - lo), data.shape[3]), data.dtype, order="F")
    current[tuple(slice(a, a + n) for a, n in zip(offset - lo, data.shape[:3]))] = data
    levels, i = [], 0
    while i < len(factors):
        f, run = tuple(factors[i]), 1
        while i + run < len(factors) and tuple(factors[i + run]) == f:
            run += 1
        if method == "average":
            out = tinybrain.downsample_with_averaging(current, f, num_mips=run)
        elif method == "mode":
            out = tinybrain.downsample_segmentation(current, f, sparse=sparse, num_mips=run)
        elif method == "striding":
            out = [current]
            for _ in range(run):
                out.append(out[-1][:: f[0], :: f[1], :: f[2]])
            out = out[1:]
        else:
            pool = tinybrain.downsample.downsample_with_min_pooling if method == "min" else \
                tinybrain.downsample.downsample_with_max_pooling
            out = pool(current, f, num_mips=run)
        levels += [np.array(o, order="F") for o in out]
        current = levels[-1]
        i += run
    result = []
    e = offset + data.shape[:3]
    for s, level in zip(steps, levels):
        first, last = offset // s, -(-e // s)
        origin = lo // s
        out = level[tuple(slice(a - b, c - b) for a, b, c in zip(first, origin, last))].copy()
        starts = [np.arange(a, b) * f for a, b, f in zip(first, last, s)]
        inside = [(st >= o) & (st + f <= ee) for st, f, o, ee in zip(starts, s, offset, e)]
        whole = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
        for j in np.argwhere(~whole) if faces else ():
            a = np.maximum((first + j) * s, offset) - offset
            b = np.minimum((first + j + 1) * s, e) - offset
            values = data[a[0]:b[0], a[1]:b[1], a[2]:b[2]]
            for c in range(data.shape[3]):
                out[tuple(j) + (c,)] = _present_value(values[..., c], method, sparse)
        result.append((tuple(int(v) for v in first), out))
    return result


def _present_value(values, method, sparse):
    if method == "striding":
        return values[0, 0, 0]
    values = values.ravel()
    if method == "average":
        return values.astype(np.float64).mean() if values.dtype.kind == "f" else int(values.astype(np.uint64).sum()) // values.size
    if method == "min":
        return values.min()
    if method == "max":
        return values.max()
    if sparse:
        values = values[values != 0]
        if values.size == 0:
            return 0
    labels, counts = np.unique(values, return_counts=True)
    return labels[np.argmax(counts)]


def whole_groups(offset, shape, factors, mip):
    """Which voxels of mip ``mip`` (over its box) have a footprint wholly inside the volume."""
    offset = np.array(offset)
    s = np.prod(np.array(factors[:mip]), axis=0)
    e = offset + np.array(shape)
    first, last = offset // s, -(-e // s)
    inside = [(np.arange(a, b) * f >= o) & ((np.arange(a, b) + 1) * f <= ee) for a, b, f, o, ee in zip(first, last, s, offset, e)]
    return inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]


# -- watershed and agglomeration ---------------------------------------------------------------------

def objects_and_boundary(seed: int = 0, shape=(48, 40, 24), count: int = 14, noise: float = 0.05, texture: float = 0.0):
    """Compact objects (nearest of random centres) and a boundary map: 1 on voxels whose neighbour
    along any axis is another object, blurred, with noise, plus ``texture`` times a smooth random
    field (several basins per object: an over-segmentation to agglomerate); uint8. The objects
    are 0 where the map is 1 (ground truth's boundary)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    centres = rng.random((count, 3)) * np.asarray(shape)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    labels = (np.argmin(((grid[:, None, :] - centres[None]) ** 2).sum(-1), axis=1) + 1).reshape(shape).astype(np.uint32)
    edge = np.zeros(shape, bool)
    for axis in range(3):
        differs = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= differs
        edge[tuple(hi)] |= differs
    boundary = ndimage.gaussian_filter(edge.astype(np.float32), 0.7)
    field = ndimage.gaussian_filter(rng.random(shape), 2.0)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-9)
    boundary = np.clip(boundary / boundary.max() + texture * field + rng.normal(0, noise, shape), 0, 1)
    labels[edge] = 0  # ground truth's boundary: where one object ends is not counted
    return labels, (boundary * 255).astype(np.uint8)


def voi(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(H(a|b), H(b|a)) in bits, scikit-image's; b's 0 voxels (boundary in ground truth) left out."""
    from skimage.metrics import variation_of_information

    h_a_given_b, h_b_given_a = variation_of_information(b, a, ignore_labels=(0,))
    return float(h_a_given_b), float(h_b_given_a)


def mesh_deviation(a_vertices, a_faces, b_vertices, b_faces, samples: int = 4000, seed: int = 0,
                   vertices: bool = True) -> float:
    """Two-sided deviation of two surfaces (nm): the largest distance from a point of either to the
    other, over ``samples`` area-uniform points of each and (``vertices``) every vertex too. Exact
    point-to-surface distances from libigl's AABB tree, not nearest vertices (which overstate it by
    up to half an edge). Without the vertices it is issue 20's measure (4,000 samples each way)."""
    import igl

    rng = np.random.default_rng(seed)
    every_vertex = vertices

    def points(vertices, faces):
        t = vertices[faces]
        area = np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
        pick = rng.choice(len(faces), samples, p=area / area.sum())
        r1, r2 = np.sqrt(rng.random(samples))[:, None], rng.random(samples)[:, None]
        inside = (1 - r1) * t[pick, 0] + r1 * (1 - r2) * t[pick, 1] + r1 * r2 * t[pick, 2]
        return np.concatenate([inside, vertices[np.unique(faces)]]) if every_vertex else inside

    a_vertices, b_vertices = np.asarray(a_vertices, np.float64), np.asarray(b_vertices, np.float64)
    a_faces, b_faces = np.asarray(a_faces, np.int64), np.asarray(b_faces, np.int64)
    ab = igl.point_mesh_squared_distance(points(a_vertices, a_faces), b_vertices, b_faces)[0]
    ba = igl.point_mesh_squared_distance(points(b_vertices, b_faces), a_vertices, a_faces)[0]
    return float(np.sqrt(max(ab.max(), ba.max())))


def weld_faces(vertices, faces, decimals: int = 2) -> np.ndarray:
    """Faces re-indexed onto vertices merged when equal to ``decimals`` places of nm (as a reader
    welds a mesh read back; + 0.0 makes -0.0 equal to 0.0, since np.unique compares rows by bytes
    and Draco's decoding makes -0.0)."""
    _, inverse = np.unique(np.round(vertices.astype(np.float64), decimals) + 0.0, axis=0, return_inverse=True)
    return inverse.reshape(-1)[faces]


def _nondegenerate(faces) -> np.ndarray:
    return faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]


def unmatched_edges(faces) -> int:
    """Edges not matched by as many the other way (0: closed), degenerate triangles left out.
    Not "every edge in exactly two triangles": a thin part that simplification flattened into
    back-to-back triangles is closed, and once cut at a node boundary its inner edges are in four."""
    faces = _nondegenerate(faces)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges, index = np.unique(np.sort(directed, axis=1), axis=0, return_inverse=True)
    balance = np.bincount(index.reshape(-1), weights=np.where(directed[:, 0] < directed[:, 1], 1, -1), minlength=len(edges))
    return int((balance != 0).sum())


def closed(faces) -> bool:
    """A non-empty surface with no open edge (see unmatched_edges)."""
    return len(_nondegenerate(faces)) > 0 and unmatched_edges(faces) == 0


def enclosed_volume(vertices, faces) -> float:
    t = vertices.astype(np.float64)[faces]
    return abs(float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum()) / 6)
