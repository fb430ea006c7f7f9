"""Pyramid registration: every mip lies on the global grid (voxel j of mip k covers mip-0 voxels
[j*f^k, (j+1)*f^k)), whatever the layer's voxel_offset.

References are computed independently on the whole array (tests/conftest.py, global_grid_levels):
tinybrain (average, mode) or its NumPy pooling (min, max) on the volume padded with zeros to the
global grid, for voxels whose footprint lies wholly inside the volume; for voxels the volume's faces
cut, the average (floored for integers), mode (smallest label on ties), min or max of the mip-0
voxels that exist, one voxel at a time.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume

SHAPE = (141, 77, 41)  # x, y, z: odd sizes, so the high faces cut groups too; several task blocks per axis


def make(kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "segmentation":
        # blocks of labels, so modes mean something, with a few large ids
        coarse = rng.integers(0, 7, (36, 20, 11)).astype(np.uint64) * np.uint64(2**33 + 5)
        data = np.repeat(np.repeat(np.repeat(coarse, 4, 0), 4, 1), 4, 2)[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
        noise = rng.random(SHAPE) < 0.2
        data[noise] = rng.integers(1, 4, int(noise.sum())).astype(np.uint64)
        return np.asfortranarray(data)
    return np.asfortranarray(rng.integers(0, 256, SHAPE).astype(np.uint8))


def ingest(cli, tmp_path, data: np.ndarray, offset, name: str = "layer"):
    np.save(tmp_path / f"{name}.npy", data.transpose(2, 1, 0))
    layer_type = "segmentation" if data.dtype == np.uint64 else "image"
    code, _, err = cli("ingest", tmp_path / f"{name}.npy", tmp_path / name, "--resolution", "4,4,40",
                       "--offset", ",".join(map(str, offset)), "--chunk-size", "8,8,4", "--type", layer_type,
                       "--workers", "1")
    assert code == 0, err
    return tmp_path / name


def read_ts(path, mip):
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/", "scale_index": mip}).result()
    return store.read().result()[..., 0], tuple(int(v) for v in store.domain.inclusive_min[:3])


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
@pytest.mark.parametrize("factor", [(2, 2, 1), (2, 2, 2)], ids=["221", "222"])
@pytest.mark.parametrize("offset", [(3, 7, 11), pytest.param((1, 2, 3), marks=pytest.mark.slow)], ids=["3-7-11", "1-2-3"])
@pytest.mark.parametrize("method", ["average", "min", "max", "mode"])
def test_mips_lie_on_the_global_grid(tmp_path, cli, pyramid_reference, method, offset, factor, sharded):
    data = make("segmentation" if method == "mode" else "image")
    path = ingest(cli, tmp_path, data, offset)
    mips = 3
    code, _, err = cli("downsample", path, "--num-mips", str(mips), "--factor", ",".join(map(str, factor)),
                       "--method", method, "--memory", "2KB", "--workers", "1", *(["--sharded"] if sharded else []))
    assert code == 0, err
    info = json.loads((path / "info").read_text())
    expected_levels = pyramid_reference(data, offset, [factor] * mips, method)
    for mip, (first, expected) in enumerate(expected_levels, start=1):
        s = np.array(factor) ** mip
        scale = info["scales"][mip]
        assert scale["voxel_offset"] == [o // f for o, f in zip(offset, s)], f"mip {mip}"
        assert scale["size"] == [-(-(o + n) // f) - o // f for o, n, f in zip(offset, SHAPE, s)], f"mip {mip}"
        assert ("sharding" in scale) == sharded
        got, origin = read_ts(path, mip)
        assert origin == first
        np.testing.assert_array_equal(got, expected[..., 0], err_msg=f"mip {mip}")
    expected = expected_levels[-1][1][..., 0]
    cv = CloudVolume(f"file://{path}", mip=mips)
    b = cv.bounds
    np.testing.assert_array_equal(cv[b.minpt[0]:b.maxpt[0], b.minpt[1]:b.maxpt[1], b.minpt[2]:b.maxpt[2]][..., 0], expected)


@pytest.mark.parametrize("operation", ["downsample", "transfer", "normalize", "clahe", "transfer-sharded"])
def test_every_operation_that_writes_a_pyramid_puts_it_on_the_global_grid(tmp_path, cli, pyramid_reference, operation):
    """Transfer, normalize and CLAHE write mip 0 and its pyramid in one pass: each mip equals the
    reference made from the mip 0 they wrote (auto factors: 2,2,1 then 2,2,2 on 4,4,40 nm data)."""
    offset = (3, 7, 11)
    path = ingest(cli, tmp_path, make("image"), offset)
    out = tmp_path / "out"
    common = ["--num-mips", "4", "--memory", "64KB", "--workers", "2", "--no-progress"]
    if operation == "downsample":
        args, out = ["downsample", path, *common], path
    elif operation.startswith("transfer"):
        args = ["transfer", path, out, "--chunk-size", "16,16,8", *common, *(["--sharded"] if "sharded" in operation else [])]
    elif operation == "normalize":
        assert cli("contrast", "levels", path, "--coverage", "1", "--no-progress")[0] == 0
        args = ["contrast", "normalize", path, out, *common]
    else:
        args = ["contrast", "clahe", path, out, "--tile-size", "16", *common]
    code, stdout, err = cli(*args)
    assert code == 0, err
    info = json.loads((out / "info").read_text())
    factors = [tuple(int(b / a) for a, b in zip(lo["resolution"], hi["resolution"]))
               for lo, hi in zip(info["scales"], info["scales"][1:])]
    assert factors == [(2, 2, 1)] * 3 + [(2, 2, 2)]
    mip0, origin = read_ts(out, 0)
    assert origin == offset
    for mip, (first, expected) in enumerate(pyramid_reference(mip0, offset, factors, "average"), start=1):
        got, origin = read_ts(out, mip)
        assert origin == first, f"mip {mip}"
        np.testing.assert_array_equal(got, expected[..., 0], err_msg=f"mip {mip}")


def test_an_offset_layer_lines_up_with_an_offset_0_layer_of_the_same_data(tmp_path, cli):
    """The point of the global grid: two layers holding the same voxels at the same place agree at
    every mip wherever both have all the voxels of a group, whatever their voxel_offsets."""
    whole = make("image", seed=5)
    offset = (3, 7, 11)
    base = ingest(cli, tmp_path, whole, (0, 0, 0), name="base")
    part = ingest(cli, tmp_path, np.asfortranarray(whole[3:, 7:, 11:]), offset, name="part")
    for path in (base, part):
        assert cli("downsample", path, "--num-mips", "3", "--factor", "2,2,1", "--memory", "64KB")[0] == 0
    for mip in (1, 2, 3):
        s = np.array((2, 2, 1)) ** mip
        a, a0 = read_ts(base, mip)
        b, b0 = read_ts(part, mip)
        first = -(-np.array(offset) // s)  # the first group of mip `mip` wholly inside `part`
        last = np.array(whole.shape) // s
        box = tuple(slice(f - o, l - o) for f, l, o in zip(first, last, a0))
        np.testing.assert_array_equal(b[tuple(slice(f - o, l - o) for f, l, o in zip(first, last, b0))], a[box],
                                      err_msg=f"mip {mip}")


def test_info_warns_about_mips_made_with_the_old_rule_until_they_are_remade(tmp_path, cli):
    """CloudVolume (and Igneous, and Pumice before the global grid) count groups from the layer's first
    voxel; `pumice info` says which mips may sit off and how to remake them, and stops saying it after."""
    from cloudvolume import CloudVolume as CV

    data = make("image")
    info = CV.create_new_info(1, "image", "uint8", "raw", [4, 4, 40], [3, 7, 11], list(SHAPE), chunk_size=[16, 16, 8])
    cv = CV(f"file://{tmp_path}/old", info=info)
    cv.commit_info()
    cv[:, :, :] = data
    cv.add_scale((2, 2, 1))
    cv.add_scale((4, 4, 1))
    cv.commit_info()
    cv = CV(f"file://{tmp_path}/old", mip=1)
    cv[cv.bounds] = make("image", seed=1)[:cv.bounds.size3()[0], :cv.bounds.size3()[1], :cv.bounds.size3()[2]]

    code, out, err = cli("info", tmp_path / "old")
    assert code == 0, err
    warning = [line for line in out.splitlines() if "WARNING" in line]
    assert len(warning) == 1 and "mips 1, 2" in warning[0] and "up to 3,3,0" in warning[0], out
    assert f"pumice delete {tmp_path / 'old'} --mip 1" in warning[0] and "pumice downsample" in warning[0]
    code, out, _ = cli("info", tmp_path / "old", "--json")
    assert [m["mip"] for m in json.loads(out)["off_grid_mips"]] == [1, 2]

    assert cli("delete", tmp_path / "old", "--mip", "1", "--no-progress")[0] == 0
    assert cli("downsample", tmp_path / "old", "--num-mips", "2", "--factor", "2,2,1", "--no-progress")[0] == 0
    code, out, _ = cli("info", tmp_path / "old")
    assert "WARNING" not in out, out

    # A pyramid whose provenance does not record the global grid (Pumice before it) is suspect too,
    # and a layer whose offset is a multiple of every stride never is.
    provenance = json.loads((tmp_path / "old" / "provenance").read_text())
    for entry in provenance["processing"]:
        if isinstance(entry.get("method"), dict):
            entry["method"].pop("pyramid_grid", None)
    (tmp_path / "old" / "provenance").write_text(json.dumps(provenance))
    assert "WARNING: mips 1, 2" in cli("info", tmp_path / "old")[1]
    aligned = ingest(cli, tmp_path, data, (8, 16, 11), name="aligned")
    cv = CV(f"file://{aligned}")
    cv.add_scale((2, 2, 1))
    cv.commit_info()
    assert "WARNING" not in cli("info", aligned)[1]
