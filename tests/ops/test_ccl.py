"""ccl: connected components made block by block equal cc3d on the whole array (both renumbered to
the order of first voxels), for every connectivity, one partition or many, thresholded images,
dust, a spiral through every block; the component -> label mapping feeds remap; the reduction's
memory per task does not grow with the number of blocks; bad input gets one line."""

from __future__ import annotations

import multiprocessing
import tracemalloc

import cc3d
import fastremap
import numpy as np
import pytest

from framework import Resume, ingest_array, read_cloudvolume, read_tensorstore, run_json

from pumice.ops import ccl


def canonical(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..K in the order of each one's first voxel (x fastest), 0 kept."""
    flat = labels.ravel(order="F")
    _, first = np.unique(flat, return_index=True)
    order = flat[np.sort(first)]
    order = order[order != 0]
    table = {int(v): i + 1 for i, v in enumerate(order)}
    table[0] = 0
    return fastremap.remap(np.asarray(labels), table, preserve_missing_labels=False)


def blobs(seed: int, shape=(48, 40, 36), labels: int = 3, empty: float = 0.55, grain: int = 2) -> np.ndarray:
    """Grains of a few labels with gaps: components of every size, many crossing block faces, edges
    and corners diagonally."""
    rng = np.random.default_rng(seed)
    coarse_shape = tuple(-(-s // grain) for s in shape)
    coarse = rng.integers(1, labels + 1, coarse_shape).astype(np.uint64)
    coarse[rng.random(coarse_shape) < empty] = 0
    data = coarse.repeat(grain, 0).repeat(grain, 1).repeat(grain, 2)[: shape[0], : shape[1], : shape[2]]
    return np.asfortranarray(data)


def segmentation(cli, path, data, *options):
    return ingest_array(cli, path, data, "--resolution", "8,8,8", "--chunk-size", "8,8,8", "--type", "segmentation",
                        *options)


def output(path) -> np.ndarray:
    data, _ = read_tensorstore(path)
    return data[..., 0]


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("memory", ["512MB", "200KB"])  # one partition; a partition per block or two
def test_equals_cc3d_on_the_whole_array(cli, tmp_path, connectivity, memory):
    data = blobs(connectivity + len(memory))
    src = segmentation(cli, tmp_path / "seg", data)
    summary = run_json(cli, "ccl", src, tmp_path / "cc", "--connectivity", str(connectivity), "--shape", "16,8,8",
                       "--memory", memory, "--workers", "2", "--no-progress")
    out = output(tmp_path / "cc")
    want = cc3d.connected_components(data, connectivity=connectivity)
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(canonical(out), canonical(want))
    assert int(out.max()) == int(want.max())  # 1..K, no gaps
    assert sorted(np.unique(out))[:2] == [0, 1]
    if memory == "200KB":
        assert summary["stages"]["round1"]["tasks"] > 1  # partitions exchanged labels


def test_numbering_follows_first_voxels_block_by_block(cli, tmp_path):
    """Ids ascend with each component's first voxel, blocks in order, voxels within a block in order;
    a second run of the same command writes the same bytes."""
    data = blobs(5, shape=(32, 16, 16))
    src = segmentation(cli, tmp_path / "seg", data)
    run_json(cli, "ccl", src, tmp_path / "cc", "--shape", "16,16,16", "--no-progress")
    out = output(tmp_path / "cc")
    firsts = []
    for block in (out[:16], out[16:]):
        flat = block.ravel(order="F")
        ids, first = np.unique(flat, return_index=True)
        firsts += [int(i) for i in ids[np.argsort(first)] if i and int(i) not in firsts]
    assert firsts == list(range(1, int(out.max()) + 1))
    run_json(cli, "ccl", src, tmp_path / "again", "--shape", "16,16,16", "--no-progress")
    np.testing.assert_array_equal(output(tmp_path / "again"), out)


def spiral(blocks: int = 8, size: int = 8, diagonal: bool = False) -> np.ndarray:
    """A one-voxel line through the centre of every block of a blocks^3 grid in serpentine order, so
    it crosses a block face at each step; ``diagonal``: its steps between rows and layers touch only at
    corners (one component for connectivity 26 only)."""
    shape = (blocks * size,) * 3
    data = np.zeros(shape, np.uint64, order="F")
    path = []
    for k in range(blocks):
        rows = range(blocks) if k % 2 == 0 else range(blocks - 1, -1, -1)
        for n, j in enumerate(rows):
            cols = range(blocks) if (n + k * blocks) % 2 == 0 else range(blocks - 1, -1, -1)
            path += [(i, j, k) for i in cols]
    c = size // 2
    points = [tuple(b * size + c for b in p) for p in path]
    for a, b in zip(points[:-1], points[1:]):
        axis = next(ax for ax in range(3) if a[ax] != b[ax])
        step = int(np.sign(b[axis] - a[axis]))
        for t in range(size + 1):
            p = list(a)
            p[axis] += step * t
            if diagonal and t % 2:  # zigzag on the other two axes: neighbours touch at corners only
                for other in range(3):
                    if other != axis:
                        p[other] += 1
            data[tuple(p)] = 1
    return data


@pytest.mark.slow
def test_spiral_through_every_block_is_one_component(cli, tmp_path, diagonal=True):
    """Steps that touch only at corners: one component with connectivity 26, thousands with 6."""
    data = spiral(diagonal=diagonal)
    src = segmentation(cli, tmp_path / "seg", data)
    summary = run_json(cli, "ccl", src, tmp_path / "cc", "--shape", "8,8,8", "--memory", "2400KB", "--workers", "2",
                       "--no-progress")
    out = output(tmp_path / "cc")
    assert set(np.unique(out[data > 0]).tolist()) == {1}
    assert not out[data == 0].any()
    assert summary["stages"]["label"]["tasks"] == 512 and summary["stages"]["round1"]["tasks"] == 8
    if diagonal:  # corners only: apart with faces (6)
        run_json(cli, "ccl", src, tmp_path / "cc6", "--shape", "16,16,16", "--connectivity", "6", "--no-progress")
        six = output(tmp_path / "cc6")
        np.testing.assert_array_equal(canonical(six), canonical(cc3d.connected_components(data, connectivity=6)))
        assert six.max() > 500


def test_threshold_dust_and_offsets(cli, tmp_path):
    """An image thresholded (a range), a volume not starting at 0, dust equal to cc3d.dust; CloudVolume
    reads the output."""
    rng = np.random.default_rng(3)
    image = (rng.random((40, 32, 24)) * 255).astype(np.uint8)
    image = np.asfortranarray(image)
    src = ingest_array(cli, tmp_path / "img", image, "--resolution", "4,4,40", "--chunk-size", "8,8,8",
                       "--offset", "5,3,2")
    run_json(cli, "ccl", src, tmp_path / "cc", "--threshold-gte", "100", "--threshold-lte", "250", "--dust", "4",
             "--shape", "16,8,8", "--memory", "60KB", "--no-progress")
    mask = ((image >= 100) & (image <= 250)).astype(np.uint8)
    want = cc3d.connected_components(cc3d.dust(mask, 4, connectivity=26), connectivity=26)
    out, offset = read_tensorstore(tmp_path / "cc")
    assert offset == (5, 3, 2)
    np.testing.assert_array_equal(canonical(out[..., 0]), canonical(want))
    np.testing.assert_array_equal(read_cloudvolume(tmp_path / "cc")[..., 0], out[..., 0])


def test_dust_on_a_segmentation(cli, tmp_path):
    data = blobs(9, grain=1, empty=0.5)
    src = segmentation(cli, tmp_path / "seg", data)
    summary = run_json(cli, "ccl", src, tmp_path / "cc", "--dust", "6", "--connectivity", "18", "--shape", "8,8,8",
                       "--memory", "400KB", "--no-progress")
    want = cc3d.connected_components(cc3d.dust(data, 6, connectivity=18), connectivity=18)
    out = output(tmp_path / "cc")
    np.testing.assert_array_equal(canonical(out), canonical(want))
    assert int(out.max()) == int(want.max())
    assert "under 6 voxels removed" in summary["outcome"]


@pytest.mark.parametrize("name", ["pieces.npy", "pieces.csv"])
def test_mapping_out_feeds_remap(cli, tmp_path, name):
    """ccl --mapping-out, then remap --mapping: the original segmentation comes back."""
    data = blobs(11)
    data[data == 2] = 2**60 + 7  # ids beyond float64's integers travel exactly
    src = segmentation(cli, tmp_path / "seg", data)
    command = ["ccl", src, tmp_path / "cc", "--mapping-out", tmp_path / name, "--shape", "16,16,16", "--memory", "300KB",
               "--no-progress"]
    run_json(cli, *command)
    written = (tmp_path / name).read_bytes()
    assert run_json(cli, *command)["ran"] == 0  # the job again: its mapping stays (it was rewritten empty)
    assert (tmp_path / name).read_bytes() == written
    run_json(cli, "remap", tmp_path / "cc", tmp_path / "back", "--mapping", tmp_path / name, "--no-progress")
    back, _ = read_tensorstore(tmp_path / "back")
    np.testing.assert_array_equal(back[..., 0], data)
    if name.endswith(".npy"):
        table = np.load(tmp_path / name)
        assert table.dtype == np.uint64 and table.shape[1] == 2
        assert table[:, 0].tolist() == list(range(1, len(table) + 1))


def test_num_mips_in_the_same_pass(cli, tmp_path):
    data = blobs(2)
    src = segmentation(cli, tmp_path / "seg", data)
    run_json(cli, "ccl", src, tmp_path / "cc", "--num-mips", "1", "--no-progress")
    out = output(tmp_path / "cc")
    mip1, _ = read_tensorstore(tmp_path / "cc", 1)
    assert mip1.shape[:3] == (24, 20, 18)
    assert set(np.unique(mip1)) <= set(np.unique(out))


def _traced(task) -> tuple[str, int]:
    """Run a task; its peak bytes as tracemalloc sees them (Python and NumPy allocations)."""
    tracemalloc.start()
    try:
        task.run()
        return task.name, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _sampled(args) -> tuple[str, int]:
    """Per-block stages (thousands of tasks, each the same size) are traced one task in 64: tracing
    every task cost half the test's time."""
    index, task = args
    if index % 64 == 0:
        return _traced(task)
    task.run()
    return task.name, 0


def reduction_peaks(cli, tmp_path, blocks: int) -> dict[str, int]:
    """Peak bytes per task of each stage, for blocks^3 blocks of 8^3 voxels of the same texture (one
    component spans the volume), partitions of 4 x 4 x 4 blocks."""
    from concurrent.futures import ProcessPoolExecutor

    data = blobs(21, shape=(8 * blocks,) * 3, grain=1, empty=0.45)  # voxel noise: many pieces on every face
    src = segmentation(cli, tmp_path / f"seg{blocks}", data)
    plan, _ = ccl.plan(str(src), str(tmp_path / f"cc{blocks}"), shape=(8, 8, 8), memory=2_400_000, dust=3,
                       connectivity=6)
    assert plan.params["partition"] == [4, 4, 4]
    plan.prepare()
    peaks: dict[str, int] = {}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for stage in plan.stages[:-1]:
            run = _sampled if stage.name in ("label", "seam") else _traced
            for name, peak in pool.map(run, enumerate(stage.tasks()) if run is _sampled else stage.tasks(), chunksize=16):
                peaks[name] = max(peaks.get(name, 0), peak)
    return peaks


@pytest.mark.slow
def test_reduction_memory_per_task_does_not_grow_with_blocks(cli, tmp_path):
    """64 times the blocks (1 -> 64 partitions of 4^3 blocks, one component through all of them): the
    label exchange's peak per task within 20%. The stages after it within 50%: a partition with
    neighbours on six sides also holds the pieces on those faces (its surface, not the volume), which
    the small volume's one partition has none of."""
    small, large = reduction_peaks(cli, tmp_path, 4), reduction_peaks(cli, tmp_path, 16)
    assert large["ccl.round"] <= 1.2 * small["ccl.round"], (small, large)
    for stage in ("ccl.sizes", "ccl.heads", "ccl.number"):
        assert large[stage] <= 1.5 * small[stage], (stage, small, large)
    print("peak bytes per task, 4^3 blocks:", small, "16^3 blocks:", large)


def test_bad_input(cli, tmp_path):
    data = blobs(1, shape=(16, 16, 16))
    seg = segmentation(cli, tmp_path / "seg", data)
    image = ingest_array(cli, tmp_path / "img", data.astype(np.float32), "--resolution", "8,8,8")
    cases = [
        (["ccl", image, tmp_path / "o1"], "--threshold-gte"),
        (["ccl", seg, tmp_path / "o2", "--threshold-gte", "1"], "apply to images"),
        (["ccl", seg, tmp_path / "o3", "--dust", "-1"], "--dust"),
        (["ccl", seg, tmp_path / "o4", "--bounds", "0,0,0,99,9,9"], "outside"),
        (["ccl", image, tmp_path / "o5", "--threshold-gte", "1", "--mapping-out", tmp_path / "m.npy"], "segmentations"),
        (["ccl", seg, tmp_path / "o6", "--shape", "12,8,8"], "multiple"),
        (["ccl", seg, seg], "same layer"),
    ]
    for argv, words in cases:
        code, out, err = cli(*argv, "--no-progress")
        assert code == 2, (argv, err)
        assert words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _runner_case(cli, root):
    root.mkdir(parents=True, exist_ok=True)
    path = segmentation(cli, root / "seg", blobs(4, shape=(32, 24, 16)))
    return ["ccl", str(path), str(root / "cc"), "--shape", "8,8,8", "--dust", "3"], root / "cc"  # one partition: few stages


def _resume_case(cli, root):
    """48 partitions: killed while they exchange labels."""
    root.mkdir(parents=True, exist_ok=True)
    path = segmentation(cli, root / "seg", blobs(4, shape=(48, 32, 32)))
    return ["ccl", str(path), str(root / "cc"), "--shape", "8,8,8", "--memory", "80KB", "--dust", "3"], root / "cc"


RUNNER_CASES = {"ccl": _runner_case}
RESUME_CASES = {"ccl": Resume(_resume_case, "round2")}
