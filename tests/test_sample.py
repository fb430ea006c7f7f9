"""Tests for the synthetic EM sample (pumice.sample.make_em_sample)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from pumice.sample import make_em_sample

SHAPE = (12, 80, 144)  # deliberately non-cubic: catches Z/Y/X mix-ups


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    return make_em_sample(SHAPE, seed=7)


def _boundary(labels: np.ndarray) -> np.ndarray:
    """Voxels whose label differs from an in-plane (x or y) neighbour: where membranes are."""
    b = np.zeros(labels.shape, dtype=bool)
    dx = labels[:, :, 1:] != labels[:, :, :-1]
    b[:, :, 1:] |= dx
    b[:, :, :-1] |= dx
    dy = labels[:, 1:, :] != labels[:, :-1, :]
    b[:, 1:, :] |= dy
    b[:, :-1, :] |= dy
    return b


def _dilate_xy(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        grown = mask.copy()
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        grown[:, :, 1:] |= mask[:, :, :-1]
        grown[:, :, :-1] |= mask[:, :, 1:]
        mask = grown
    return mask


def test_deterministic() -> None:
    img_a, lab_a = make_em_sample(SHAPE, seed=3)
    img_b, lab_b = make_em_sample(SHAPE, seed=3)
    assert img_a.tobytes() == img_b.tobytes()
    assert lab_a.tobytes() == lab_b.tobytes()
    img_c, lab_c = make_em_sample(SHAPE, seed=4)
    assert not np.array_equal(img_a, img_c)
    assert not np.array_equal(lab_a, lab_c)


def test_dtypes_and_shapes(sample: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = sample
    assert image.shape == SHAPE and labels.shape == SHAPE
    assert image.dtype == np.uint8
    assert labels.dtype == np.uint32
    assert image.flags.c_contiguous and labels.flags.c_contiguous


def test_default_shape_signature() -> None:
    image, labels = make_em_sample()
    assert image.shape == labels.shape == (64, 256, 256)


def test_labels_dense_without_zeros(sample: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = sample
    ids = np.unique(labels)
    assert ids[0] == 1, "no extracellular space: 0 must not occur"
    np.testing.assert_array_equal(ids, np.arange(1, ids[-1] + 1))


def test_number_of_labels_sensible() -> None:
    # ~18 px neurites in a 128 x 128 field: a few dozen cells, not 1 and not thousands
    for seed in range(3):
        _, labels = make_em_sample((16, 128, 128), seed=seed)
        n = int(labels.max())
        assert 25 <= n <= 150, n
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.min() >= 32  # no pixel-debris cells
        assert sizes.max() < labels.size // 4  # no cell swallows the volume


def test_membranes_darker_than_interiors(sample: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = sample
    border = _boundary(labels)
    interior = ~_dilate_xy(border, 3)
    assert border.mean() > 0.03 and interior.mean() > 0.2  # both populations are substantial
    membrane_mean = image[border].mean()
    interior_mean = image[interior].mean()
    assert interior_mean - membrane_mean > 50, (membrane_mean, interior_mean)


def test_image_uses_a_plausible_grey_range(sample: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = sample
    assert 120 < image.mean() < 190  # light cytoplasm dominates, as in EM
    assert image.std() > 15  # structure, not a flat field
    assert image.min() > 0 and image.max() < 255  # no clipping without drift


def test_labels_are_connected() -> None:
    """Every label is a single 6-connected region (checked by flood fill)."""
    _, labels = make_em_sample((10, 64, 96), seed=11)
    seen = np.zeros(labels.shape, dtype=bool)
    pieces = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    nz, ny, nx = labels.shape
    for start in zip(*np.nonzero(labels)):
        if seen[start]:
            continue
        lab = labels[start]
        pieces[lab] += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            z, y, x = queue.popleft()
            for dz, dy, dx in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
                q = (z + dz, y + dy, x + dx)
                if 0 <= q[0] < nz and 0 <= q[1] < ny and 0 <= q[2] < nx and not seen[q] and labels[q] == lab:
                    seen[q] = True
                    queue.append(q)
    assert pieces[1:].max() == 1, np.nonzero(pieces > 1)[0]


def test_drift_changes_section_means() -> None:
    shape = (40, 96, 96)
    flat, _ = make_em_sample(shape, seed=5)
    drifted, labels_drifted = make_em_sample(shape, seed=5, drift=20.0)
    # labels and structure are unchanged; drift is an additive per-section offset
    _, labels_flat = make_em_sample(shape, seed=5)
    np.testing.assert_array_equal(labels_flat, labels_drifted)
    flat_means = flat.astype(np.float64).mean(axis=(1, 2))
    offset = drifted.astype(np.float64).mean(axis=(1, 2)) - flat_means
    # spans about +-20 grey levels ...
    assert 18.0 <= offset.max() <= 21.0, offset
    assert -21.0 <= offset.min() <= -18.0, offset
    # ... smoothly along z ...
    assert np.abs(np.diff(offset)).max() < 6.0, offset
    # ... uniformly within each section (up to rounding)
    per_voxel = drifted.astype(np.int64) - flat.astype(np.int64)
    assert np.abs(per_voxel - np.round(offset)[:, None, None]).max() <= 1
    # without drift, section means are nearly constant
    assert flat_means.std() < 3.0


def test_zero_drift_is_default() -> None:
    a, _ = make_em_sample(SHAPE, seed=1)
    b, _ = make_em_sample(SHAPE, seed=1, drift=0.0)
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 40, 40), (3, 7, 200), (2, 200, 5)])
def test_odd_shapes(shape: tuple[int, int, int]) -> None:
    image, labels = make_em_sample(shape, seed=0)
    assert image.shape == labels.shape == shape
    assert labels.min() >= 1


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_em_sample((0, 10, 10))
    with pytest.raises(ValueError):
        make_em_sample((4, 10, 10), drift=float("nan"))
