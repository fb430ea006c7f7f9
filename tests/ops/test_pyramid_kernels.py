"""The pyramid kernels without I/O: made block by block as tasks make them (each block's read box,
its levels, the voxels it owns), the levels equal those made from the whole volume in one block, and
the whole-volume ones equal the independent reference (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

from reference import global_grid_levels

from pumice.geometry import Bbox, grid_blocks
from pumice.ops.pyramid import level_boxes, make_levels, read_box


def blockwise(data: np.ndarray, offset, block, factors, method):
    volume = Bbox.from_shape(offset, data.shape[:3])
    made = None
    for box in grid_blocks(volume, block, volume.minpt):
        read = read_box(box, volume, factors)
        origins, arrays = make_levels(data[read.slices(volume.minpt)], read, volume, factors, method)
        if made is None:
            made = [np.zeros(b.shape + (data.shape[3],), data.dtype) for b in level_boxes(volume, volume, factors)]
            firsts = [b.minpt for b in level_boxes(volume, volume, factors)]
        for level, (target, origin, array) in enumerate(zip(level_boxes(box, volume, factors), origins, arrays)):
            made[level][target.slices(firsts[level])] = array[target.slices(origin)]
    return made


@pytest.mark.parametrize("method", ["average", "mode", "min", "max", "striding"])
@pytest.mark.parametrize("offset", [(0, 0, 0), (3, 7, 11), (-5, 2, 1)])
def test_blocks_make_what_the_whole_volume_makes(method, offset):
    rng = np.random.default_rng(4)
    shape = (53, 41, 19)
    if method == "mode":
        data = np.repeat(rng.integers(0, 5, (27, 21, 10)), 2, axis=0)[:53].repeat(2, axis=1)[:, :41].repeat(2, axis=2)[..., :19]
        data = data.astype(np.uint64)[..., None]
    else:
        data = rng.integers(0, 256, shape).astype(np.uint8)[..., None]
    factors = [(2, 2, 1), (2, 2, 1), (2, 2, 2)]
    volume = Bbox.from_shape(offset, shape)
    whole_origins, whole = make_levels(np.asfortranarray(data), volume, volume, factors, method)
    pieces = blockwise(np.asfortranarray(data), offset, (16, 16, 8), factors, method)  # the top level's stride and more
    reference = global_grid_levels(data, offset, factors, method)
    for k, (piece, (first, expected)) in enumerate(zip(pieces, reference)):
        box = level_boxes(volume, volume, factors)[k]
        assert box.minpt == first
        np.testing.assert_array_equal(piece, whole[k][box.slices(whole_origins[k])], err_msg=f"level {k + 1}")
        np.testing.assert_array_equal(piece, expected, err_msg=f"level {k + 1} against the reference")
