"""Transfer: equal data after every change it makes, read back with CloudVolume and TensorStore."""

import json

import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume
from framework import IMAGE, Resume, ingested, runner_image

OFFSET = (3, 7, 11)
SHAPE = (141, 99, 37)  # X, Y, Z


def make_layer(cli, tmp_path, dtype="uint16", channels=1, name="src", *flags):
    rng = np.random.default_rng(1)
    if dtype in ("uint32", "uint64"):
        data = (rng.integers(0, 7, (*SHAPE, channels)) * 1000003).astype(dtype)
    else:
        data = rng.integers(0, 255 if dtype == "uint8" else 60000, (*SHAPE, channels)).astype(dtype)
    source = data.transpose(2, 1, 0, 3) if channels > 1 else data[..., 0].transpose(2, 1, 0)
    np.save(tmp_path / f"{name}.npy", source)
    code, _, err = cli("ingest", tmp_path / f"{name}.npy", tmp_path / name, "--resolution", "4,4,40", "--offset",
                       ",".join(map(str, OFFSET)), "--chunk-size", "32,32,8", *(["--axes", "zyxc"] if channels > 1 else []),
                       *flags)
    assert code == 0, err
    return tmp_path / name, data


def read_both(url):
    """(CloudVolume array, TensorStore array, TensorStore origin) of mip 0."""
    cv = CloudVolume(url if "://" in str(url) else f"file://{url}", mip=0)
    b = cv.bounds
    via_cv = np.asarray(cv[b.minpt[0]:b.maxpt[0], b.minpt[1]:b.maxpt[1], b.minpt[2]:b.maxpt[2]])
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{url}/"}).result()
    return via_cv, store.read().result(), tuple(store.domain.inclusive_min[:3])


@pytest.mark.parametrize("args, dtype, channels, expect", [
    (["--chunk-size", "50,50,50"], "uint16", 1, "same"),
    (["--chunk-size", "64,64,64"], "uint64", 1, "same"),
    (["--translate", "100,-7,5"], "uint8", 1, "translated"),
    (["--bounds", "20,30,15,120,90,40"], "uint16", 1, "cropped"),
    (["--bounds", "20,30,15,120,90,40", "--translate", "-20,-30,-15", "--chunk-size", "16,16,16"], "uint32", 1, "cropped"),
    (["--encoding", "compressed_segmentation"], "uint64", 1, "same"),
    (["--encoding", "raw"], "uint32", 1, "same"),
    (["--encoding", "jpeg"], "uint8", 1, "lossy"),
    (["--sharded"], "uint64", 1, "same"),
    (["--sharded", "--chunk-size", "16,16,8"], "uint8", 1, "same"),
    ([], "uint8", 4, "same"),
    (["--chunk-size", "50,50,50", "--sharded"], "uint8", 4, "same"),
])
def test_transfer_keeps_the_data(tmp_path, cli, args, dtype, channels, expect):
    src, data = make_layer(cli, tmp_path, dtype, channels)
    code, out, err = cli("transfer", src, tmp_path / "dst", *args, "--memory", "2MiB")
    assert code == 0, err
    info = json.loads((tmp_path / "dst" / "info").read_text())
    scale = info["scales"][0]
    offset, expected = np.array(OFFSET), data
    if "--translate" in args:
        offset = offset + np.array([int(v) for v in args[args.index("--translate") + 1].split(",")])
    if expect == "cropped":
        x0, y0, z0, x1, y1, z1 = [int(v) for v in args[args.index("--bounds") + 1].split(",")]
        expected = data[x0 - 3:x1 - 3, y0 - 7:y1 - 7, z0 - 11:z1 - 11]
        offset = offset - np.array(OFFSET) + np.array([x0, y0, z0])
    assert scale["voxel_offset"] == list(offset) and info["num_channels"] == channels
    assert ("sharding" in scale) == ("--sharded" in args)
    if "--chunk-size" in args:
        assert scale["chunk_sizes"][0] == [int(v) for v in args[args.index("--chunk-size") + 1].split(",")]
    via_cv, via_ts, origin = read_both(tmp_path / "dst")
    assert origin == tuple(offset)
    for got in (via_cv, via_ts):
        if expect == "lossy":
            assert np.abs(got.astype(int) - expected.astype(int)).mean() < 40  # random noise is jpeg's worst case
        else:
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("flags", [[], ["--sharded"]])
def test_fast_path_copies_chunk_files_unchanged(tmp_path, cli, files_of, flags):
    src, _ = make_layer(cli, tmp_path, "uint64", 1, "src", *flags)
    code, out, err = cli("transfer", src, tmp_path / "dst", "--dry-run")
    assert "fast path" in out
    code, out, err = cli("transfer", src, tmp_path / "dst")
    assert code == 0, err
    source, copy = files_of(src), files_of(tmp_path / "dst")
    chunks = {k: v for k, v in source.items() if k.startswith("4_4_40/")}
    assert chunks and all(copy[k] == v for k, v in chunks.items())


def test_fast_path_for_a_chunk_aligned_crop(tmp_path, cli, files_of):
    src, data = make_layer(cli, tmp_path, "uint8")
    code, out, _ = cli("transfer", src, tmp_path / "dst", "--bounds", "35,39,19,99,106,48", "--dry-run")
    assert "fast path" in out
    assert cli("transfer", src, tmp_path / "dst", "--bounds", "35,39,19,99,106,48")[0] == 0
    np.testing.assert_array_equal(read_both(tmp_path / "dst")[1], data[32:96, 32:99, 8:37])


@pytest.mark.parametrize("compress", ["gzip", "br"])
def test_migrates_cloudvolume_layers_with_compressed_chunk_files(tmp_path, cli, compress):
    data = np.random.default_rng(2).integers(0, 2**32, (70, 50, 20, 1), dtype=np.uint64)
    info = CloudVolume.create_new_info(num_channels=1, layer_type="segmentation", data_type="uint64",
                                       encoding="compressed_segmentation", resolution=[8, 8, 40], voxel_offset=[5, 6, 7],
                                       volume_size=[70, 50, 20], chunk_size=[32, 32, 8])
    cv = CloudVolume(f"file://{tmp_path}/old", info=info, compress=compress)
    cv.commit_info()
    cv[5:75, 6:56, 7:27] = data
    suffix = ".gz" if compress == "gzip" else ".br"
    assert all(p.name.endswith(suffix) for p in (tmp_path / "old" / "8_8_40").iterdir())
    code, out, err = cli("transfer", tmp_path / "old", tmp_path / "new", "--chunk-size", "64,64,8", "--sharded")
    assert code == 0, err
    assert f"({suffix})" in err
    via_cv, via_ts, origin = read_both(tmp_path / "new")
    assert origin == (5, 6, 7)
    np.testing.assert_array_equal(via_ts, data)
    np.testing.assert_array_equal(via_cv, data)
    # Same chunking: the fast path copies the files decompressed, under plain names every reader opens.
    code, out, err = cli("transfer", tmp_path / "old", tmp_path / "copy")
    assert code == 0 and not any(p.name.endswith(suffix) for p in (tmp_path / "copy" / "8_8_40").iterdir())
    via_cv, via_ts, _ = read_both(tmp_path / "copy")
    np.testing.assert_array_equal(via_ts, data)
    np.testing.assert_array_equal(via_cv, data)


@pytest.mark.parametrize("sharded", [[], ["--sharded"]])
def test_downsampling_in_the_same_pass(tmp_path, cli, pyramid_reference, sharded):
    src, data = make_layer(cli, tmp_path, "uint8")
    code, _, err = cli("transfer", src, tmp_path / "dst", "--num-mips", "2", "--factor", "2,2,1", "--chunk-size", "16,16,8",
                       "--memory", "1MiB", *sharded)
    assert code == 0, err
    expected = pyramid_reference(data, OFFSET, [(2, 2, 1)] * 2, "average")
    for mip in (1, 2):
        store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{tmp_path}/dst/", "scale_index": mip}).result()
        assert tuple(store.domain.inclusive_min[:3]) == expected[mip - 1][0]
        np.testing.assert_array_equal(store.read().result(), expected[mip - 1][1])


def test_file_to_s3_to_file(tmp_path, cli, s3_env):
    src, data = make_layer(cli, tmp_path, "uint64")
    bucket = "s3://pumice-test/transfer/layer"
    for a, b, extra in ((src, bucket, ["--chunk-size", "64,64,16"]), (bucket, tmp_path / "back", ["--sharded"])):
        code, _, err = cli("--s3-endpoint", s3_env, "transfer", a, b, *extra, "--workers", "2")
        assert code == 0, err
    via_cv, via_ts, origin = read_both(tmp_path / "back")
    assert origin == OFFSET
    np.testing.assert_array_equal(via_ts, data)
    np.testing.assert_array_equal(via_cv, data)




@pytest.mark.parametrize("args, message", [
    (["--encoding", "jpeg"], "jpeg"),
    (["--bounds", "0,0,0,10,10,10"], "outside"),
    (["--mip", "2"], "no mip 2"),
    (["--method", "average", "--num-mips", "1"], "mode"),
    (["--translate", "1,2"], "--translate"),
])
def test_bad_input(tmp_path, cli, args, message):
    src, _ = make_layer(cli, tmp_path, "uint64")
    code, _, err = cli("transfer", src, tmp_path / "dst", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "dst" / "info").exists()


def test_bad_input_source_and_destination(tmp_path, cli):
    code, _, err = cli("transfer", tmp_path / "nope", tmp_path / "dst")
    assert code == 2 and "no Precomputed layer" in err
    src, _ = make_layer(cli, tmp_path, "uint64")
    other, _ = make_layer(cli, tmp_path, "uint8", 1, "other")
    code, _, err = cli("transfer", src, other)
    assert code == 2 and "already holds a different layer" in err
    code, _, err = cli("transfer", src, src)
    assert code == 2 and "same layer" in err


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _runner_case(cli, root):
    layer = ingested(cli, root, runner_image(root), "img", IMAGE)
    return ["transfer", str(layer), str(root / "out"), "--chunk-size", "16,16,8", "--num-mips", "1", "--memory", "100KB"], \
        root / "out"


def _resume_case(cli, root):
    root.mkdir(parents=True, exist_ok=True)
    src, _ = make_layer(cli, root, "uint16")
    return ["transfer", str(src), str(root / "out"), "--chunk-size", "16,16,8", "--memory", "50KB"], root / "out"


RUNNER_CASES = {"transfer": _runner_case}
RESUME_CASES = {"transfer": Resume(_resume_case, "transfer")}
