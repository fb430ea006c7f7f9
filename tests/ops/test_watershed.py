"""pumice watershed: fragments from a boundary map or affinities; on the whole array it is the
kernel on the whole array; in blocks it stays within a measured VOI of that; fragments do not merge
objects; the output reads back in TensorStore and CloudVolume; bad input is one line."""

from __future__ import annotations

import numpy as np
import pytest

from framework import Resume, ingest_array, read_cloudvolume, read_tensorstore, run_json
from reference import objects_and_boundary, voi

from pumice.ops.watershed import boundary_of, fragments


def watershed_out(cli, src, dest, *options) -> np.ndarray:
    run_json(cli, "watershed", src, dest, "--no-progress", *options)
    data, _ = read_tensorstore(dest)
    return data[..., 0]


def test_whole_array_is_the_kernel_and_blocks_stay_close(cli, tmp_path):
    labels, boundary = objects_and_boundary()
    src = ingest_array(cli, tmp_path / "boundary", boundary, "--resolution", "8,8,8", "--chunk-size", "16,16,8")
    whole = watershed_out(cli, src, tmp_path / "whole", "--shape", "48,40,24")
    kernel = fragments(boundary_of(boundary[..., None], "boundary", False, np.dtype(np.uint8)))
    assert voi(whole, kernel) == pytest.approx((0, 0), abs=1e-9)  # the same partition of the voxels
    assert np.array_equal(np.unique(whole), np.arange(1, whole.max() + 1))  # numbered 1..K, every voxel labelled
    split, merge = voi(whole, labels)
    assert merge < 0.05, merge  # fragments do not merge objects
    for shape in ("16,16,8", "32,32,16"):
        blocks = watershed_out(cli, src, tmp_path / f"b{shape}", "--shape", shape)
        a, b = voi(blocks, whole)
        assert a + b < 0.1, (shape, a, b)
        assert voi(blocks, labels)[1] < 0.05


def test_affinities_inverted_maps_and_distance_seeds(cli, tmp_path):
    labels, boundary = objects_and_boundary(seed=1)
    affinities = np.repeat((255 - boundary)[..., None], 3, axis=3)  # high inside objects
    aff = ingest_array(cli, tmp_path / "aff", affinities, "--resolution", "8,8,8", "--chunk-size", "16,16,8")
    inside = ingest_array(cli, tmp_path / "inside", 255 - boundary, "--resolution", "8,8,8", "--chunk-size", "16,16,8")
    src = ingest_array(cli, tmp_path / "boundary", boundary, "--resolution", "8,8,8", "--chunk-size", "16,16,8")
    reference = watershed_out(cli, src, tmp_path / "ref", "--shape", "16,16,8")
    code, _, err = cli("watershed", aff, tmp_path / "a", "--shape", "16,16,8", "--no-progress")
    assert code == 0 and "read as affinities" in err, err
    assert voi(read_tensorstore(tmp_path / "a")[0][..., 0], reference) == pytest.approx((0, 0), abs=1e-6)
    assert voi(watershed_out(cli, inside, tmp_path / "i", "--invert", "--shape", "16,16,8"), reference) == \
        pytest.approx((0, 0), abs=1e-6)
    distance = watershed_out(cli, src, tmp_path / "d", "--seed-method", "distance", "--threshold", "0.3",
                             "--min-size", "20", "--shape", "16,16,8")
    assert voi(distance, labels)[1] < 0.1
    assert np.array_equal(read_cloudvolume(tmp_path / "d")[..., 0], distance)


def test_min_size_leaves_no_small_fragment_inside_a_block(cli, tmp_path):
    labels, boundary = objects_and_boundary(seed=2, noise=0.15)
    src = ingest_array(cli, tmp_path / "boundary", boundary, "--resolution", "8,8,8")
    many = watershed_out(cli, src, tmp_path / "many", "--shape", "48,40,24", "--sigma", "0")
    few = watershed_out(cli, src, tmp_path / "few", "--shape", "48,40,24", "--sigma", "0", "--min-size", "50")
    assert few.max() < many.max()
    assert np.bincount(few.ravel())[1:].min() >= 50


def test_face_neighbour_minima_seed_more_and_equal_the_kernel(cli, tmp_path):
    """--seed-connectivity 6: a voxel seeds when no higher than its 6 face neighbours (more seeds than
    over 26), as the kernel does on the whole array. (Not asserted: that they merge less. On this
    noisy one-voxel membrane, dips in the membrane seed and merge its two sides; on raw FIB-SEM, below,
    the finer fragments merge less.)"""
    labels, boundary = objects_and_boundary(seed=5, noise=0.15)
    src = ingest_array(cli, tmp_path / "boundary", boundary, "--resolution", "8,8,8", "--chunk-size", "16,16,8")
    whole = watershed_out(cli, src, tmp_path / "six", "--shape", "48,40,24", "--sigma", "0", "--seed-connectivity", "6")
    kernel = fragments(boundary_of(boundary[..., None], "boundary", False, np.dtype(np.uint8)), sigma=0,
                       seed_connectivity=6)
    assert voi(whole, kernel) == pytest.approx((0, 0), abs=1e-9)
    usual = watershed_out(cli, src, tmp_path / "all", "--shape", "48,40,24", "--sigma", "0")
    assert whole.max() > usual.max()


@pytest.mark.slow
def test_fine_fragments_of_raw_fibsem_merge_no_more_than_waterzs(cli, tmp_path, shared_data):
    """neuroproof sample 2's raw image, inverted (a weak boundary map): with every face-neighbour
    minimum a seed and no smoothing, the fragments' merge error (VOI merge against the ground truth)
    is no more than waterz's fragments' on the same input, 0.185 bits (make bench watershed)."""
    import h5py

    with h5py.File(shared_data("neuroproof_sample2.h5")) as f:
        raw, truth = f["raw"][:], f["labels/neuron_ids"][:]  # Z, Y, X
    src = ingest_array(cli, tmp_path / "raw", raw.transpose(2, 1, 0), "--resolution", "10,10,10", "--chunk-size", "64,64,64")
    fine = watershed_out(cli, src, tmp_path / "fine", "--invert", "--sigma", "0", "--threshold", "1",
                         "--seed-connectivity", "6", "--shape", ",".join(map(str, raw.shape[::-1])))
    from skimage.metrics import variation_of_information

    split, merge = variation_of_information(truth.transpose(2, 1, 0), fine, ignore_labels=(0,))
    assert merge <= 0.185, (merge, int(fine.max()))


def test_bad_input(cli, tmp_path):
    labels, boundary = objects_and_boundary(shape=(16, 16, 8), count=3)
    src = ingest_array(cli, tmp_path / "b", boundary, "--resolution", "8,8,8")
    seg = ingest_array(cli, tmp_path / "seg", labels, "--resolution", "8,8,8", "--type", "segmentation")
    two = ingest_array(cli, tmp_path / "two", np.stack([boundary, boundary], axis=3), "--resolution", "8,8,8")
    cases = [
        (["watershed", seg, tmp_path / "o1"], "is a segmentation"),
        (["watershed", two, tmp_path / "o2"], "2 channels"),
        (["watershed", src, tmp_path / "o3", "--threshold", "1.5"], "--threshold"),
        (["watershed", src, tmp_path / "o4", "--input", "affinities"], "--input affinities needs 3"),
        (["watershed", src, tmp_path / "o5", "--context", "1,1,1"], "--context"),
        (["watershed", src, tmp_path / "o6", "--seed-connectivity", "18"], "--seed-connectivity"),
        (["watershed", src, src], "same layer"),
    ]
    for argv, words in cases:
        code, _, err = cli(*argv, "--no-progress")
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _case(cli, root, shape="16,16,8"):
    root.mkdir(parents=True, exist_ok=True)
    _, boundary = objects_and_boundary(seed=3, shape=(64, 48, 32), count=20)
    src = ingest_array(cli, root / "boundary", boundary, "--resolution", "8,8,8", "--chunk-size", "16,16,8")
    return ["watershed", str(src), str(root / "ws"), "--shape", shape, "--min-size", "10", "--context", "8,8,8"], root / "ws"


RUNNER_CASES = {"watershed": _case}
RESUME_CASES = {"watershed": Resume(_case, "fragments")}  # 48 blocks
