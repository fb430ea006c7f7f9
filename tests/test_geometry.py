import numpy as np
import pytest

from pumice.errors import PumiceError
from pumice.geometry import Bbox, choose_block, count_grid_blocks, grid_blocks, parse_bytes, parse_vec


def test_grid_blocks_tile_bounds_exactly_with_offset_grid():
    bounds = Bbox((3, 7, 11), (100, 50, 40))
    blocks = list(grid_blocks(bounds, (16, 16, 8), origin=(3, 7, 11)))
    assert len(blocks) == count_grid_blocks(bounds, (16, 16, 8), (3, 7, 11)) == 7 * 3 * 4
    covered = np.zeros(bounds.shape, dtype=int)
    for b in blocks:
        assert bounds.contains(b)
        assert b.is_aligned((16, 16, 8), (3, 7, 11), bounds)
        covered[b.slices(bounds.minpt)] += 1
    assert (covered == 1).all()


def test_grid_blocks_clip_to_bounds_not_aligned_to_origin():
    bounds = Bbox((5, 0, 0), (20, 10, 1))
    blocks = list(grid_blocks(bounds, (8, 10, 1), origin=(0, 0, 0)))
    assert [b.minpt[0] for b in blocks] == [5, 8, 16]
    assert [b.maxpt[0] for b in blocks] == [8, 16, 20]


def test_bbox_basics():
    a = Bbox((0, 0, 0), (10, 10, 10))
    b = Bbox((5, -5, 2), (15, 5, 3))
    assert a.intersection(b) == Bbox((5, 0, 2), (10, 5, 3))
    assert Bbox.from_list(a.to_list()) == a
    assert a.snap_out((4, 4, 4), (1, 1, 1)) == Bbox((-3, -3, -3), (13, 13, 13))
    assert Bbox((0, 0, 0), (0, 4, 4)).empty()


@pytest.mark.parametrize("text", ["1,2", "a,b,c", "1,,3", "1,2,3,4", ""])
def test_parse_vec_rejects_malformed(text):
    with pytest.raises(PumiceError, match="--x"):
        parse_vec(text, "--x")


def test_parse_vec_positive_and_float():
    assert parse_vec("4,4.5,40", "--r", kind=float, positive=True) == (4.0, 4.5, 40.0)
    with pytest.raises(PumiceError, match="positive"):
        parse_vec("4,0,40", "--r", kind=float, positive=True)


def test_choose_block_respects_budget_and_units():
    bounds = Bbox((0, 0, 0), (1000, 1000, 300))
    block = choose_block(bounds, (64, 64, 16), bytes_per_voxel=4, budget=64 * 2**20)
    assert all(b % u == 0 for b, u in zip(block, (64, 64, 16)))
    assert np.prod(block) * 4 <= 64 * 2**20
    full = choose_block(bounds, (64, 64, 16), bytes_per_voxel=1, budget=64 * 2**20, full_xy=True)
    assert full[:2] == (1024, 1024) and full[2] % 16 == 0
    tiny = choose_block(bounds, (64, 64, 16), bytes_per_voxel=1, budget=1)
    assert tiny == (64, 64, 16)  # never below one write unit


def test_parse_bytes():
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2G") == 2 * 10**9
    with pytest.raises(PumiceError, match="--memory"):
        parse_bytes("lots")


def test_grid_blocks_merge_a_thin_tail_into_its_neighbour():
    bounds = Bbox((2, 0, 0), (132, 10, 4))
    blocks = list(grid_blocks(bounds, (64, 10, 4), (2, 0, 0), min_tail=(4, 1, 1)))
    assert [(b.minpt[0], b.maxpt[0]) for b in blocks] == [(2, 66), (66, 132)]  # 130..132 joined
    assert count_grid_blocks(bounds, (64, 10, 4), (2, 0, 0), min_tail=(4, 1, 1)) == 2
    assert len(list(grid_blocks(bounds, (64, 10, 4), (2, 0, 0)))) == 3
    # a single thin block stays as it is
    assert list(grid_blocks(Bbox((0, 0, 0), (2, 2, 2)), (8, 8, 8), (0, 0, 0), min_tail=(4, 4, 4))) == [Bbox((0, 0, 0), (2, 2, 2))]
