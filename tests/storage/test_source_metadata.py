"""Sources that carry their voxel size (OME-Zarr, N5) need no --resolution; the layer gets it."""

import json

import numpy as np
import pytest
import tensorstore as ts
import zarr

from pumice.storage.layer import Layer


def ome_attrs(axes, scale, unit="micrometer"):
    return {"multiscales": [{"version": "0.4", "axes": [{"name": a, "type": "channel" if a == "c" else "space",
                                                          **({} if a == "c" else {"unit": unit})} for a in axes],
                             "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]}


@pytest.mark.parametrize("version", [2, 3])
def test_ome_zarr_gives_resolution_and_axes(tmp_path, cli, version):
    data = np.random.default_rng(0).integers(0, 255, (2, 5, 6, 7), dtype=np.uint8)  # C, Z, Y, X
    root = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=version)
    root.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, 5, 6, 7))[:] = data
    attrs = ome_attrs("czyx", [1, 0.04, 0.008, 0.008])
    root.attrs.update(attrs if version == 2 else {"ome": {"version": "0.5", **attrs}})
    code, _, err = cli("ingest", tmp_path / "img.zarr", tmp_path / "out")
    assert code == 0, err
    layer = Layer.open(str(tmp_path / "out"))
    assert layer.info.scales[0].resolution == (8.0, 8.0, 40.0)
    assert layer.info.num_channels == 2
    np.testing.assert_array_equal(layer.read(layer.bounds()), data.transpose(3, 2, 1, 0))


def test_n5_resolution_attribute(tmp_path, cli):
    data = np.random.default_rng(1).integers(0, 2**16, (7, 6, 5), dtype=np.uint16)  # X, Y, Z as N5 lists them
    store = ts.open({"driver": "n5", "kvstore": f"file://{tmp_path}/v.n5/raw/",
                     "metadata": {"dimensions": list(data.shape), "blockSize": [4, 4, 4], "dataType": "uint16",
                                  "compression": {"type": "raw"}}}, create=True).result()
    store.write(data).result()
    attrs = tmp_path / "v.n5" / "raw" / "attributes.json"
    meta = json.loads(attrs.read_text())
    attrs.write_text(json.dumps(meta | {"pixelResolution": {"dimensions": [4, 4, 40], "unit": "nm"}}))
    code, _, err = cli("ingest", f"{tmp_path}/v.n5:/raw", tmp_path / "out")
    assert code == 0, err
    layer = Layer.open(str(tmp_path / "out"))
    assert layer.info.scales[0].resolution == (4.0, 4.0, 40.0)
    np.testing.assert_array_equal(layer.read(layer.bounds())[..., 0], data)
