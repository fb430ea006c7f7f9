"""Downsample: every mip equals the whole-array reference on the global grid (tests/conftest.py:
tinybrain for average and mode, NumPy pooling for min, max and striding, the voxels that exist where
the volume's faces cut a group); read back with TensorStore and CloudVolume. Registration at offsets
that are not multiples of the factor is tested in test_pyramid_grid.py."""

import json

import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume

from reference import global_grid_levels, whole_groups
from framework import IMAGE, Resume, ingest_array, ingested, runner_image

OFFSET = (3, 7, 11)


def ingest(cli, tmp_path, data_xyz, name="layer", *extra):
    np.save(tmp_path / f"{name}.npy", data_xyz.transpose(2, 1, 0))
    layer_type = "segmentation" if data_xyz.dtype.kind == "u" and data_xyz.dtype.itemsize >= 4 else "image"
    code, _, err = cli("ingest", tmp_path / f"{name}.npy", tmp_path / name, "--resolution", "4,4,40",
                       "--offset", ",".join(map(str, OFFSET)), "--chunk-size", "32,32,8", "--type", layer_type,
                       "--workers", "1", *extra)
    assert code == 0, err
    return tmp_path / name


def read_mip(path, mip):
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/", "scale_index": mip}).result()
    return store.read().result(), tuple(store.domain.inclusive_min[:3])


def make(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "u" and np.dtype(dtype).itemsize >= 4:
        return rng.integers(0, 6, shape).astype(dtype) * np.array(2**31 + 12345, dtype=dtype)  # few large labels
    if dtype == "float32":
        return rng.random(shape, dtype=np.float32) * 1000
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


def reference(data, factor, mips, method, offset=OFFSET):
    return [level for _, level in global_grid_levels(data, offset, [factor] * mips, method)]


def assert_equal(got, expected, err_msg=""):
    if expected.dtype.kind == "f":  # the mean of a cut group: float64 sums in a different order
        np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=err_msg)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=err_msg)


def check_pyramid(cli, tmp_path, dtype, factor, sharded, shape, mips=3, workers="2"):
    data = make(dtype, shape)
    path = ingest(cli, tmp_path, data)
    code, out, err = cli("downsample", path, "--num-mips", str(mips), "--factor", ",".join(map(str, factor)),
                         "--memory", "1MiB", "--workers", workers, *(["--sharded"] if sharded else []))
    assert code == 0, err
    info = json.loads((path / "info").read_text())
    assert len(info["scales"]) == mips + 1
    method = "mode" if info["type"] == "segmentation" else "average"
    expected = reference(data, factor, mips, method)
    offset = np.array(OFFSET)
    for mip in range(1, mips + 1):
        scale = info["scales"][mip]
        offset = offset // np.array(factor)
        assert scale["voxel_offset"] == list(offset)
        assert ("sharding" in scale) == sharded
        got, origin = read_mip(path, mip)
        assert origin == tuple(offset)
        assert_equal(got, expected[mip - 1], err_msg=f"mip {mip}")
    return path, expected


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("factor", [(2, 2, 1), (2, 2, 2)])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "uint32", "uint64"])
def test_mips_equal_whole_array_tinybrain(tmp_path, cli, dtype, factor, sharded):
    check_pyramid(cli, tmp_path, dtype, factor, sharded, shape=(141, 99, 37))


@pytest.mark.slow
@pytest.mark.parametrize("dtype, factor", [  # every type and both factors at this size (every pair at the size above)
    ("uint8", (2, 2, 1)), ("uint16", (2, 2, 2)), ("float32", (2, 2, 1)), ("uint32", (2, 2, 2)), ("uint64", (2, 2, 1)),
    ("uint64", (2, 2, 2))])
def test_acceptance_size_1000_999_77(tmp_path, cli, dtype, factor):
    """A large volume at offset 3,7,11, sharded for 2,2,2: every voxel whose group lies wholly inside
    equals the whole-array reference (the cut groups at the faces are tested on smaller volumes in
    test_pyramid_grid.py; here their one-at-a-time reference would dominate the suite's time)."""
    data = make(dtype, (1000, 999, 77))
    path = ingest(cli, tmp_path, data)
    code, _, err = cli("downsample", path, "--num-mips", "3", "--factor", ",".join(map(str, factor)),
                       *(["--sharded"] if factor == (2, 2, 2) else []))
    assert code == 0, err
    method = "average" if dtype in ("uint8", "uint16", "float32") else "mode"
    levels = global_grid_levels(data, OFFSET, [factor] * 3, method, faces=False)
    for mip, (_, expected) in enumerate(levels, start=1):
        inside = whole_groups(OFFSET, data.shape, [factor] * 3, mip)
        np.testing.assert_array_equal(read_mip(path, mip)[0][inside], expected[inside], err_msg=f"mip {mip}")


def test_cloudvolume_reads_every_mip(tmp_path, cli):
    path, expected = check_pyramid(cli, tmp_path, "uint8", (2, 2, 1), False, shape=(141, 99, 37), mips=2, workers="1")
    for mip in (1, 2):
        cv = CloudVolume(f"file://{path}", mip=mip)
        b = cv.bounds
        np.testing.assert_array_equal(cv[b.minpt[0]:b.maxpt[0], b.minpt[1]:b.maxpt[1], b.minpt[2]:b.maxpt[2]], expected[mip - 1])


@pytest.mark.parametrize("method", ["min", "max", "striding"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "uint64"])
def test_min_max_striding_equal_numpy(tmp_path, cli, method, dtype):
    data = make(dtype, (37, 29, 11), seed=2)
    path = ingest(cli, tmp_path, data)
    code, _, err = cli("downsample", path, "--num-mips", "2", "--factor", "2,2,2", "--method", method, "--memory", "1KB")
    assert code == 0, err
    for mip, expected in enumerate(reference(data, (2, 2, 2), 2, method), start=1):
        np.testing.assert_array_equal(read_mip(path, mip)[0], expected)


def test_sparse_mode_keeps_sparse_labels(tmp_path, cli):
    data = np.zeros((64, 64, 8), np.uint32)
    data[::2, ::2, :] = 7  # one voxel in four: plain mode lets background win
    path = ingest(cli, tmp_path, data)
    assert cli("downsample", path, "--num-mips", "1", "--factor", "2,2,1", "--sparse")[0] == 0
    got = read_mip(path, 1)[0][..., 0]
    expected = global_grid_levels(data, OFFSET, [(2, 2, 1)], "mode", sparse=True)[0][1][..., 0]
    np.testing.assert_array_equal(got, expected)
    assert (got[1:-1, 1:-1] == 7).all()  # the groups the volume's faces cut may hold only background


def test_auto_factor_and_default_mip_count(tmp_path, cli):
    path = ingest(cli, tmp_path, make("uint8", (512, 384, 40)))  # 4,4,40 nm, chunk 32,32,8
    code, out, err = cli("downsample", path, "--workers", "2")
    assert code == 0, err
    info = json.loads((path / "info").read_text())
    resolutions = [s["resolution"] for s in info["scales"]]
    # 2,2,1 until x/y catch up with z (4 -> 8 -> 16 -> 32), then 2,2,2.
    assert resolutions[:5] == [[4, 4, 40], [8, 8, 40], [16, 16, 40], [32, 32, 40], [64, 64, 80]]
    top = info["scales"][-1]
    assert all(s <= c for s, c in zip(top["size"][:2], top["chunk_sizes"][0][:2]))  # fits in about one chunk
    prev = info["scales"][-2]
    assert any(s > c for s, c in zip(prev["size"], prev["chunk_sizes"][0]))  # and not one mip too many
    assert "downsample finished" in out


def test_fill_missing(tmp_path, cli):
    data = make("uint8", (64, 64, 16)) | 1
    path = ingest(cli, tmp_path, data)
    (path / "4_4_40" / "3-35_7-39_11-19").unlink()
    code, _, err = cli("downsample", path, "--num-mips", "1", "--factor", "2,2,1")
    assert code == 2 and "no chunk" in err and "--fill-missing" in err and err.count("\n") == 1
    code, _, err = cli("downsample", path, "--num-mips", "1", "--factor", "2,2,1", "--fill-missing")
    assert code == 0, err
    data[0:32, 0:32, 0:8] = 0
    np.testing.assert_array_equal(read_mip(path, 1)[0], reference(data, (2, 2, 1), 1, "average")[0])


def test_delete_background_skips_empty_chunks(tmp_path, cli):
    data = np.zeros((128, 64, 8), np.uint32)
    data[:40, :30, :] = 5
    path = ingest(cli, tmp_path, data)
    assert cli("downsample", path, "--num-mips", "1", "--factor", "2,2,1", "--delete-background")[0] == 0
    files = sorted(p.name for p in (path / "8_8_40").iterdir())
    assert files == ["1-33_3-35_11-19"]  # the other chunk was all background
    np.testing.assert_array_equal(read_mip(path, 1)[0][:20, :15, :, 0], 5)


@pytest.mark.parametrize("args, message", [
    (["--num-mips", "9", "--factor", "2,2,2"], "cannot be downsampled 9 times"),
    (["--bounds", "0,0,0,500,10,10"], "outside"),
    (["--bounds", "1,2,3"], "six integers"),
    (["--method", "average"], "mode"),
    (["--encoding", "jpeg"], "jpeg"),
    (["--factor", "2,0,1"], "--factor"),
    (["--sparse", "--method", "max"], "--sparse"),
    (["--mip", "3"], "no mip 3"),
])
def test_bad_input(tmp_path, cli, args, message):
    path = ingest(cli, tmp_path, make("uint64", (40, 30, 20)))
    before = (path / "info").read_text()
    code, _, err = cli("downsample", path, *args)
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("pumice: error:"), err
    assert (path / "info").read_text() == before


def test_bad_input_missing_layer_and_conflicting_mip(tmp_path, cli):
    code, _, err = cli("downsample", tmp_path / "nope")
    assert code == 2 and "no Precomputed layer" in err
    path = ingest(cli, tmp_path, make("uint8", (64, 64, 16)))
    assert cli("downsample", path, "--num-mips", "1", "--factor", "2,2,1")[0] == 0
    code, _, err = cli("downsample", path, "--num-mips", "1", "--factor", "2,2,1", "--chunk-size", "16,16,8")
    assert code == 2 and "already has a different mip 1" in err and "pumice delete" in err
    # the same command again is fine: nothing to redo
    code, out, _ = cli("downsample", path, "--num-mips", "1", "--factor", "2,2,1")
    assert code == 0 and "already done" in out




def test_thin_edge_blocks_still_equal_whole_array_reference(tmp_path, cli):
    # x = 130 with blocks of 64 leaves a 2-voxel tail, too thin for 2 mips of tinybrain averaging
    # unless the block is padded to the grid.
    data = make("uint8", (130, 100, 6), seed=4)
    path = ingest(cli, tmp_path, data)
    assert cli("downsample", path, "--num-mips", "2", "--factor", "2,2,1", "--memory", "1KB")[0] == 0
    for mip, expected in enumerate(reference(data, (2, 2, 1), 2, "average"), start=1):
        np.testing.assert_array_equal(read_mip(path, mip)[0], expected)


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _runner_case(cli, root):
    layer = ingested(cli, root, runner_image(root), "img", IMAGE)
    return ["downsample", str(layer), "--num-mips", "2", "--memory", "100KB"], layer


def _resume_case(cli, root):
    root.mkdir(parents=True, exist_ok=True)
    path = ingest_array(cli, root / "layer", make("uint16", (512, 512, 64), seed=3), "--resolution", "4,4,40",
                        "--offset", ",".join(map(str, OFFSET)), "--chunk-size", "32,32,8")
    return ["downsample", str(path), "--num-mips", "2", "--factor", "2,2,1", "--memory", "300KB"], path


RUNNER_CASES = {"downsample": _runner_case}
RESUME_CASES = {"downsample": Resume(_resume_case, "downsample")}
