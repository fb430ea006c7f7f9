import json
import random

import numpy as np
import pytest
import tensorstore as ts

from pumice.errors import LayerError, PumiceError
from pumice.geometry import Bbox
from pumice.storage.info import LayerInfo, check_encoding, new_info, write_unit
from pumice.storage.layer import Layer


def make_info(**kw):
    args = dict(layer_type="image", dtype="uint8", num_channels=1, size=(100, 90, 40), resolution=(4, 4, 40),
                voxel_offset=(3, 7, 11), chunk_size=(16, 16, 8), encoding="raw")
    args.update(kw)
    return new_info(**args)


def test_info_roundtrip_keeps_unknown_keys():
    d = make_info().to_json()
    d["mesh"] = "mesh"
    d["scales"][0]["something_new"] = 5
    info = LayerInfo.from_json(json.loads(json.dumps(d)))
    assert info.to_json() == d
    assert info.scales[0].bounds == Bbox((3, 7, 11), (103, 97, 51))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(type="mesh"), "type"),
    (lambda d: d.update(data_type="int8"), "data_type"),
    (lambda d: d.update(num_channels=0), "num_channels"),
    (lambda d: d.update(scales=[]), "no scales"),
    (lambda d: d["scales"][0].update(resolution=[4, 0, 40]), "resolution"),
    (lambda d: d["scales"][0].update(encoding="webp"), "encoding"),
    (lambda d: d["scales"][0].pop("chunk_sizes"), "malformed"),
    (lambda d: d["scales"][0].update(sharding={"@type": "x"}), "sharding"),
])
def test_info_validation(change, message):
    d = make_info().to_json()
    change(d)
    with pytest.raises(LayerError, match=message):
        LayerInfo.from_json(d)


@pytest.mark.parametrize("size", [(0, 90, 40), (100, 0, 40), (100, 90, 0), (100, -1, 40)])
def test_new_info_refuses_an_empty_volume(size):
    """No planner can write an info with a zero extent, whatever its source."""
    with pytest.raises(PumiceError, match=f"the volume is empty \\(size {','.join(map(str, size))}\\)"):
        make_info(size=size)


@pytest.mark.parametrize("layer_type, dtype, encoding, channels", [
    ("segmentation", "float32", "raw", 1), ("image", "uint64", "jpeg", 1), ("image", "uint8", "jpeg", 2),
    ("image", "float32", "png", 1), ("image", "uint8", "compressed_segmentation", 1), ("segmentation", "uint32", "raw", 2),
    ("image", "complex64", "raw", 1),
])
def test_check_encoding_refuses(layer_type, dtype, encoding, channels):
    with pytest.raises(PumiceError):
        check_encoding(layer_type, dtype, encoding, channels)


def test_write_unit_matches_tensorstore_shards():
    rng = random.Random(1)
    for i in range(60):
        size = [rng.randint(1, 3000) for _ in range(3)]
        chunk = [rng.choice([8, 16, 64, 100]) for _ in range(3)]
        info = make_info(size=size, chunk_size=chunk, voxel_offset=(0, 0, 0), sharded=True)
        layer = Layer.create(f"memory://wu{i}", info)
        assert tuple(layer.store(0).chunk_layout.write_chunk.shape[:3]) == write_unit(info.scales[0])


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("dtype, encoding", [("uint8", "raw"), ("uint64", "compressed_segmentation"), ("float32", "raw")])
def test_layer_write_read_any_box(tmp_path, sharded, dtype, encoding):
    layer_type = "segmentation" if dtype == "uint64" else "image"
    info = make_info(layer_type=layer_type, dtype=dtype, encoding=encoding, sharded=sharded)
    layer = Layer.create(str(tmp_path / "l"), info)
    rng = np.random.default_rng(0)
    data = (rng.random((100, 90, 40, 1)) * 1000).astype(dtype)
    layer.write(layer.bounds(), data)
    again = Layer.open(str(tmp_path / "l"))
    box = Bbox((0, 20, 30), (50, 60, 45))  # partly outside: outside reads as zero
    got = again.read(box)
    expect = np.zeros((50, 40, 15, 1), dtype=dtype)
    expect[3:, :, :, :] = data[:47, 13:53, 19:34]
    np.testing.assert_array_equal(got, expect)
    t = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{tmp_path}/l/"}).result()
    assert list(t.domain.inclusive_min[:3]) == [3, 7, 11]
    np.testing.assert_array_equal(t.read().result(), data)


def test_layer_write_refuses_unaligned_and_outside():
    layer = Layer.create("memory://unaligned", make_info())
    with pytest.raises(LayerError, match="aligned"):
        layer.write(Bbox((4, 7, 11), (19, 23, 19)), np.zeros((15, 16, 8), np.uint8))
    with pytest.raises(LayerError, match="outside"):
        layer.write(Bbox((0, 7, 11), (19, 23, 19)), np.zeros((19, 16, 8), np.uint8))
    # an edge box that stops at the volume's edge is fine
    layer.write(Bbox((99, 87, 43), (103, 97, 51)), np.ones((4, 10, 8), np.uint8))
    assert layer.read(Bbox((102, 96, 50), (103, 97, 51)))[0, 0, 0, 0] == 1


def test_create_refuses_incompatible_and_accepts_equal():
    Layer.create("memory://compat", make_info())
    Layer.create("memory://compat", make_info())  # same info: fine
    with pytest.raises(LayerError, match="data_type"):
        Layer.create("memory://compat", make_info(dtype="uint16"))
    with pytest.raises(LayerError, match="chunk_size"):
        Layer.create("memory://compat", make_info(chunk_size=(32, 32, 8)))


def test_open_missing_layer_is_clear(tmp_path):
    with pytest.raises(LayerError, match="no Precomputed layer"):
        Layer.open(str(tmp_path / "nothing"))
    with pytest.raises(LayerError, match="no mip 2"):
        Layer.create("memory://onemip", make_info()).info.scale(2)
