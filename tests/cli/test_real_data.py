"""Slow: real EM data from ../shared/data, skipped when it is absent."""

import h5py
import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume


@pytest.mark.slow
@pytest.mark.parametrize("dataset, layer_type, encoding", [
    ("raw", "image", "raw"),
    ("labels/neuron_ids", "segmentation", "compressed_segmentation"),
])
def test_neuroproof_sample_ingests_voxel_exact(tmp_path, cli, shared_data, dataset, layer_type, encoding):
    path = shared_data("neuroproof_sample2.h5")
    dest = tmp_path / dataset.replace("/", "_")
    code, out, err = cli("ingest", f"{path}:/{dataset}", dest, "--resolution", "10,10,10", "--offset", "100,200,300",
                         "--workers", "2")
    assert code == 0, err
    assert f"ingesting as {layer_type}" in err
    with h5py.File(path, "r") as f:
        expected = f[dataset][:].transpose(2, 1, 0)  # Z, Y, X -> X, Y, Z
    cv = CloudVolume(f"file://{dest}", mip=0)
    assert cv.layer_type == layer_type and cv.encoding == encoding
    assert tuple(cv.voxel_offset) == (100, 200, 300)
    np.testing.assert_array_equal(cv[100:350, 200:450, 300:550][..., 0], expected)
    t = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{dest}/"}).result()
    np.testing.assert_array_equal(t[..., 0].read().result(), expected)
    if layer_type == "segmentation":
        assert len(np.unique(expected)) == 526  # the README's body count: labels survived intact
