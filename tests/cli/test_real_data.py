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


@pytest.mark.slow
def test_isbi_normalize_and_clahe(tmp_path, cli, shared_data):
    """The ISBI 2012 ssTEM stack: normalize equals the clip-and-stretch formula of each whole section,
    and CLAHE in 32 task blocks equals OpenCV on each whole section, with more contrast."""
    import math

    import cv2
    import tifffile

    path = shared_data("isbi2012_train_volume.tif")
    stack = tifffile.imread(path)  # z, y, x
    raw = tmp_path / "raw"
    assert cli("ingest", path, raw, "--resolution", "4,4,50", "--chunk-size", "128,128,16", "--no-progress")[0] == 0
    code, out, err = cli("contrast", "levels", raw, "--coverage", "1", "--no-progress")
    assert code == 0 and "30 section histograms" in out, err
    code, out, err = cli("contrast", "normalize", raw, tmp_path / "normalized", "--clip-fraction", "0.005", "--workers", "2",
                         "--no-progress")
    assert code == 0, err
    normalized = np.asarray(CloudVolume(f"file://{tmp_path}/normalized")[:, :, :])[..., 0].transpose(2, 1, 0)
    for z, section in enumerate(stack):
        values = np.sort(section[section != 0].ravel())
        lo, hi = int(values[math.floor(0.005 * values.size)]), int(values[math.ceil(0.995 * values.size) - 1])
        expected = np.clip(np.round((section.astype(np.float64) - lo) * 255 / (hi - lo)), 0, 255)
        np.testing.assert_array_equal(normalized[z], expected, err_msg=f"section {z}")

    code, out, err = cli("contrast", "clahe", raw, tmp_path / "clahe", "--tile-size", "64", "--clip-limit", "2",
                         "--memory", "1MiB", "--workers", "2", "--no-progress")
    assert code == 0 and ": 32 task(s)" in out, out + err
    got = np.asarray(CloudVolume(f"file://{tmp_path}/clahe")[:, :, :])[..., 0].transpose(2, 1, 0)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    np.testing.assert_array_equal(got, np.stack([clahe.apply(section) for section in stack]))
    assert got.std() > stack.std() * 1.05
