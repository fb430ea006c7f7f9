"""pumice evaluate: VOI split/merge and adapted Rand error equal scikit-image's on the whole arrays
(GT's 0 left out), blockwise over many partitions, with offsets, masks and real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from framework import Resume, ingest_array, run_json

SEG = ["--resolution", "8,8,8", "--type", "segmentation", "--chunk-size", "8,8,8"]


def skimage_scores(seg: np.ndarray, truth: np.ndarray, keep_zero: bool = False) -> dict[str, float]:
    from skimage.metrics import adapted_rand_error, variation_of_information

    ignore = () if keep_zero else (0,)
    split, merge = variation_of_information(truth, seg, ignore_labels=ignore)  # [H(seg|truth), H(truth|seg)], bits
    are, p, r = adapted_rand_error(truth, seg, ignore_labels=ignore)
    return {"voi_split": split, "voi_merge": merge, "adapted_rand_error": are, "pr": sorted([p, r])}


def evaluated(cli, seg, truth, *options) -> dict:
    code, out, err = cli("evaluate", seg, "--truth", truth, "--no-progress", "--json", *options)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])["result"]


def assert_same(record: dict, want: dict, tol: float = 1e-9) -> None:
    for key in ("voi_split", "voi_merge", "adapted_rand_error"):
        assert record[key] == pytest.approx(want[key], abs=tol), (key, record[key], want[key])
    assert sorted([record["rand_precision"], record["rand_recall"]]) == pytest.approx(want["pr"], abs=tol)
    assert record["voi"] == pytest.approx(record["voi_split"] + record["voi_merge"])


def blobs(seed: int, shape, count: int) -> np.ndarray:
    """Labels of the nearest of ``count`` random centres: compact objects of mixed size."""
    rng = np.random.default_rng(seed)
    centres = rng.random((count, 3)) * np.asarray(shape)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    d = ((grid[:, None, :] - centres[None]) ** 2).sum(-1)
    return (np.argmin(d, axis=1) + 1).reshape(shape).astype(np.uint32)


def test_equals_skimage_over_many_partitions(cli, tmp_path):
    shape = (40, 36, 20)
    truth = blobs(1, shape, 30)
    truth[::7] = 0  # unlabelled slabs: left out
    seg = blobs(2, shape, 45).astype(np.uint64) * 1000003  # other ids, wide ones
    seg[5:9] = 0  # SEG's 0 is a label like any other
    t = ingest_array(cli, tmp_path / "truth", truth, *SEG, "--offset", "3,5,7")
    s = ingest_array(cli, tmp_path / "seg", seg, *SEG, "--offset", "3,5,7")
    plan = run_json(cli, "evaluate", s, "--truth", t, "--shape", "8,8,8", "--dry-run")
    assert plan["stages"]["count"] == 75 and plan["stages"]["rows"] > 16  # many blocks, many partitions
    record = evaluated(cli, s, t, "--shape", "8,8,8")
    assert_same(record, skimage_scores(seg, truth))
    assert record["voxels"] == int((truth != 0).sum()) and record["truth_objects"] == 30
    assert json.loads((s / "evaluations" / "truth.json").read_text())["voi"] == record["voi"]

    assert_same(evaluated(cli, s, t, "--keep-truth-zero"), skimage_scores(seg, truth, keep_zero=True))

    mask = np.zeros(shape, np.uint8)
    mask[10:30, 4:30, 2:18] = 1
    m = ingest_array(cli, tmp_path / "mask", mask, "--resolution", "8,8,8", "--offset", "3,5,7")
    inside = mask.astype(bool)
    assert_same(evaluated(cli, s, t, "--mask", m), skimage_scores(seg[inside], truth[inside]))


def test_identical_and_extreme_segmentations(cli, tmp_path):
    truth = blobs(3, (24, 24, 16), 12)
    t = ingest_array(cli, tmp_path / "truth", truth, *SEG)
    same = ingest_array(cli, tmp_path / "same", truth * 7, *SEG)  # the same partition, other ids
    record = evaluated(cli, same, t)
    assert record["voi"] == pytest.approx(0, abs=1e-12) and record["adapted_rand_error"] == pytest.approx(0, abs=1e-12)
    one = ingest_array(cli, tmp_path / "one", np.ones_like(truth), *SEG)  # everything merged
    record = evaluated(cli, one, t)
    assert record["voi_split"] == pytest.approx(0, abs=1e-12) and record["voi_merge"] > 3
    assert_same(record, skimage_scores(np.ones_like(truth), truth))


def test_text_output_and_bad_input(cli, tmp_path):
    truth = blobs(4, (16, 16, 8), 5)
    t = ingest_array(cli, tmp_path / "truth", truth, *SEG)
    code, out, err = cli("evaluate", t, "--truth", t, "--no-progress")
    assert code == 0, err
    assert "VOI split (H(SEG|GT))  0.0000 bits" in out and "adapted Rand error     0.0000" in out

    other = ingest_array(cli, tmp_path / "other", truth[:, :, :6], *SEG)
    image = ingest_array(cli, tmp_path / "image", truth.astype(np.float32), "--resolution", "8,8,8")
    coarse = ingest_array(cli, tmp_path / "coarse", truth, "--resolution", "4,4,40", "--type", "segmentation")
    zero = ingest_array(cli, tmp_path / "zero", np.zeros_like(truth), *SEG)
    for argv, words in [
        (["evaluate", t, "--truth", other], "must be the same voxels"),
        (["evaluate", t, "--truth", image], "compares labels"),
        (["evaluate", t, "--truth", coarse], "resolution"),
        (["evaluate", t, "--truth", zero], "--keep-truth-zero"),
    ]:
        code, _, err = cli(*argv, "--no-progress")
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.parametrize("case", ["neuroproof", "snemi"])
def test_real_segmentations_equal_skimage(cli, tmp_path, shared_data, case):
    if case == "neuroproof":
        import h5py

        with h5py.File(shared_data("neuroproof_sample2.h5"), "r") as f:  # a 160^3 corner: the reference is slow
            seg = f["labels/oversegmentation"][:160, :160, :160].transpose(2, 1, 0)
            truth = f["labels/neuron_ids"][:160, :160, :160].transpose(2, 1, 0)
        resolution = "10,10,10"
    else:
        import tifffile

        seg = tifffile.imread(shared_data("snemi_mini_fragments.tif")).transpose(2, 1, 0)
        truth = tifffile.imread(shared_data("snemi_mini_labels.tif")).transpose(2, 1, 0)
        resolution = "6,6,29"
    options = ["--resolution", resolution, "--type", "segmentation", "--chunk-size", "32,32,16"]
    s = ingest_array(cli, tmp_path / "seg", np.ascontiguousarray(seg), *options)
    t = ingest_array(cli, tmp_path / "truth", np.ascontiguousarray(truth), *options)
    record = evaluated(cli, s, t, "--shape", "64,64,32")
    assert_same(record, skimage_scores(seg, truth), tol=1e-7)
    assert record["voi_split"] > 0.1 and record["voi_merge"] >= 0  # an over-segmentation: mostly splits


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _case(cli, root):
    root.mkdir(parents=True, exist_ok=True)
    shape = (48, 32, 16)
    t = ingest_array(cli, root / "truth", blobs(5, shape, 20), *SEG)
    s = ingest_array(cli, root / "seg", blobs(6, shape, 30), *SEG)
    return ["evaluate", str(s), "--truth", str(t), "--shape", "8,8,8"], s  # 48 blocks


RUNNER_CASES = {"evaluate": _case}
RESUME_CASES = {"evaluate": Resume(_case, "count")}
