"""Degenerate but valid volumes (a single voxel, slabs one voxel thick along any axis) ingest and
read back equal through CloudVolume and TensorStore, and downsample either builds a pyramid or says
there is nothing to do. Empty boxes (--bounds with a zero extent) are refused by every verb that
takes one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume
from PIL import Image
from reference import global_grid_levels

OFFSET = (3, 7, 11)
SHAPES_ZYX = {
    "single-voxel": (1, 1, 1),
    "z-slab": (1, 40, 30),
    "x-thin": (20, 30, 1),
    "y-thin": (20, 1, 30),
}
KINDS = {  # dtype, --type, the encoding Pumice picks by default
    "image": ("uint16", "image", "raw"),
    "segmentation": ("uint32", "segmentation", "compressed_segmentation"),
}


def volume_zyx(shape: tuple, dtype: str) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=np.uint64).reshape(shape) * 7 + 5).astype(dtype)


def read_cloudvolume(path) -> np.ndarray:
    cv = CloudVolume(f"file://{path}", mip=0)
    b = cv.bounds
    assert tuple(b.minpt) == OFFSET
    return cv[b.minpt[0]:b.maxpt[0], b.minpt[1]:b.maxpt[1], b.minpt[2]:b.maxpt[2]]


def read_tensorstore(path) -> np.ndarray:
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/"}).result()
    assert tuple(store.domain.inclusive_min[:3]) == OFFSET
    return store.read().result()


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES_ZYX.values(), ids=SHAPES_ZYX.keys())
def test_degenerate_npy_reads_back_equal(tmp_path, cli, shape, kind, sharded):
    dtype, layer_type, encoding = KINDS[kind]
    data = volume_zyx(shape, dtype)
    np.save(tmp_path / "v.npy", data)
    code, _, err = cli("ingest", tmp_path / "v.npy", tmp_path / "l", "--resolution", "4,4,40", "--type", layer_type,
                          "--offset", ",".join(map(str, OFFSET)), "--chunk-size", "8,8,4", "--workers", "1",
                          *(["--sharded"] if sharded else []))
    assert code == 0, err
    scale = json.loads((tmp_path / "l" / "info").read_text())["scales"][0]
    assert scale["size"] == list(shape[::-1]) and scale["encoding"] == encoding and ("sharding" in scale) == sharded
    expected = data.transpose(2, 1, 0)[..., np.newaxis]
    np.testing.assert_array_equal(read_cloudvolume(tmp_path / "l"), expected)
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "l"), expected)


@pytest.mark.parametrize("shape_yx", [(1, 1), (40, 30), (1, 30)], ids=["1x1", "40x30", "1x30"])
def test_single_section_image_stack_reads_back_equal(tmp_path, cli, shape_yx):
    section = volume_zyx((1, *shape_yx), "uint8")[0]
    (tmp_path / "stack").mkdir()
    Image.fromarray(section).save(tmp_path / "stack" / "s0.png")
    code, _, err = cli("ingest", tmp_path / "stack", tmp_path / "l", "--resolution", "4,4,40",
                          "--offset", ",".join(map(str, OFFSET)), "--workers", "1")
    assert code == 0, err
    expected = section.T[:, :, np.newaxis, np.newaxis]
    np.testing.assert_array_equal(read_cloudvolume(tmp_path / "l"), expected)
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "l"), expected)


@pytest.mark.parametrize("factor", ["auto", "2,2,2"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES_ZYX.values(), ids=SHAPES_ZYX.keys())
def test_downsample_degenerate_builds_mips_or_says_nothing_to_do(tmp_path, cli, shape, kind, factor):
    dtype, layer_type, _ = KINDS[kind]
    data = volume_zyx(shape, dtype)
    np.save(tmp_path / "v.npy", data)
    code, _, err = cli("ingest", tmp_path / "v.npy", tmp_path / "l", "--resolution", "4,4,40", "--type", layer_type,
                          "--chunk-size", "8,8,4", "--workers", "1")
    assert code == 0, err

    code, out, err = cli("downsample", tmp_path / "l", "--factor", factor, "--workers", "1")
    assert code == 0, err
    scales = json.loads((tmp_path / "l" / "info").read_text())["scales"]
    if "no mips to add" in out:  # the planner's note, on stdout since it is the whole result
        assert len(scales) == 1 and "finished" not in out
        return
    assert "downsample finished" in out and len(scales) > 1
    step = tuple(s1 // s0 for s0, s1 in zip(scales[0]["resolution"], scales[1]["resolution"]))
    assert all(size > 1 for size, f in zip(scales[0]["size"], step) if f > 1)  # an axis one voxel thick never shrinks
    method = "average" if layer_type == "image" else "mode"
    expected = global_grid_levels(data.transpose(2, 1, 0), (0, 0, 0), [step] * (len(scales) - 1), method)
    for mip in range(1, len(scales)):
        cv = CloudVolume(f"file://{tmp_path / 'l'}", mip=mip)
        np.testing.assert_array_equal(cv[cv.bounds], expected[mip - 1][1], err_msg=f"mip {mip}")


def _layer(tmp_path, cli):
    np.save(tmp_path / "v.npy", volume_zyx((8, 16, 16), "uint8"))
    code, _, err = cli("ingest", tmp_path / "v.npy", tmp_path / "l", "--resolution", "4,4,40", "--chunk-size", "8,8,4")
    assert code == 0, err
    return tmp_path / "l"


@pytest.mark.parametrize("verb", ["transfer", "downsample", "delete"])
@pytest.mark.parametrize("bounds, flat", [("4,0,0,4,16,8", "x1 <= x0"), ("0,9,0,16,3,8", "y1 <= y0"),
                                          ("0,0,2,16,16,2", "z1 <= z0")])
def test_empty_bounds_are_refused_in_one_line(tmp_path, cli, verb, bounds, flat):
    layer = _layer(tmp_path, cli)
    info = (layer / "info").read_bytes()
    extra = [tmp_path / "copy"] if verb == "transfer" else []
    code, out, err = cli(verb, layer, *extra, "--bounds", bounds)
    assert code == 2 and err.count("\n") == 1, err
    assert f"--bounds {bounds} is an empty box ({flat})" in err
    assert (layer / "info").read_bytes() == info and not (tmp_path / "copy").exists()
    np.testing.assert_array_equal(read_tensorstore_at(layer), volume_zyx((8, 16, 16), "uint8").transpose(2, 1, 0)[..., None])


def read_tensorstore_at(path) -> np.ndarray:
    return ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/"}).result().read().result()
