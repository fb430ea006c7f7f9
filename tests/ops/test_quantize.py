"""Quantize (issue 7): float affinities -> uint8 equal to round(clip(x, 0, 1) * 255) with NaN -> --nan-value,
read back with CloudVolume and TensorStore; bad input is one clear line."""

from __future__ import annotations

import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume

from pumice.ops.quantize import quantize
from framework import ingested


def _affinities(root):
    """3 channels, z, y, x; values beyond 0..1, exact halves, and NaN holes."""
    rng = np.random.default_rng(11)
    data = rng.uniform(-0.3, 1.3, (3, 20, 48, 40)).astype(np.float32)
    data[0, 0, 0, :6] = [0.5 / 255, 1.5 / 255, 0.5, 1.0, 0.0, 254.5 / 255]
    data[1, 3:5, 10:20, 5:9] = np.nan
    np.save(root / "aff.npy", data)
    return data


def _expected(data_czyx, nan_value=0.0):
    x = np.nan_to_num(data_czyx, nan=nan_value)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def affinity_layer(tmp_path, cli):
    data = _affinities(tmp_path)
    code, _, err = cli("ingest", tmp_path / "aff.npy", tmp_path / "aff", "--axes", "czyx", "--resolution", "8,8,40",
                       "--chunk-size", "16,16,8", "--no-progress")
    assert code == 0, err
    return data, tmp_path / "aff"


def _read(path):
    cv = np.asarray(CloudVolume(f"file://{path}", mip=0)[:, :, :])  # x, y, z, c
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/"}).result()
    return cv, store.read().result()


def test_all_channels_equal_the_numpy_formula(affinity_layer, tmp_path, cli):
    data, layer = affinity_layer
    code, out, err = cli("quantize", layer, tmp_path / "q", "--memory", "200KB", "--workers", "2", "--no-progress")
    assert code == 0, err
    assert "80 NaN value(s) became 0" in out
    cv, tsa = _read(tmp_path / "q")
    expected = _expected(data).transpose(3, 2, 1, 0)  # -> x, y, z, c
    assert cv.dtype == np.uint8 and cv.shape == (40, 48, 20, 3)
    np.testing.assert_array_equal(cv, expected)
    np.testing.assert_array_equal(np.asarray(tsa), expected)
    # the documented rounding: halves to even, clipping at both ends
    assert list(expected[:6, 0, 0, 0]) == [0, 2, 128, 255, 0, 254]


def test_one_channel_and_a_nan_value(affinity_layer, tmp_path, cli):
    data, layer = affinity_layer
    code, _, err = cli("quantize", layer, tmp_path / "q1", "--channel", "1", "--nan-value", "1", "--no-progress")
    assert code == 0, err
    cv, _ = _read(tmp_path / "q1")
    assert cv.shape == (40, 48, 20, 1)
    np.testing.assert_array_equal(cv[..., 0], _expected(data[1], 1.0).transpose(2, 1, 0))
    assert (cv[5:9, 10:20, 3:5, 0] == 255).all()


def test_quantize_function_matches_formula_on_edge_values():
    x = np.array([np.nan, -1, 0, 0.5 / 255, 1.5 / 255, 0.5, 1, 2, np.inf, -np.inf], np.float32)
    assert list(quantize(x)) == [0, 0, 0, 0, 2, 128, 255, 255, 255, 0]


def test_bad_input_is_one_clear_line(affinity_layer, tmp_path, cli):
    _, layer = affinity_layer
    np.save(tmp_path / "u8.npy", np.zeros((4, 8, 8), np.uint8))
    assert cli("ingest", tmp_path / "u8.npy", tmp_path / "u8", "--resolution", "1,1,1", "--no-progress")[0] == 0
    code, _, err = cli("quantize", tmp_path / "u8", tmp_path / "x")
    assert code == 2 and "holds uint8 data; quantize turns float32" in err and "Traceback" not in err
    code, _, err = cli("quantize", layer, tmp_path / "x", "--channel", "3")
    assert code == 2 and "--channel 3 does not exist" in err and "channels 0-2" in err
    code, _, err = cli("quantize", layer, tmp_path / "x", "--nan-value", "2")
    assert code == 2 and "--nan-value must lie in 0..1" in err
    assert not (tmp_path / "x").exists()


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _runner_case(cli, root):
    data = np.random.default_rng(5).uniform(-0.2, 1.2, (3, 16, 32, 32)).astype(np.float32)
    np.save(root / "aff.npy", data)
    layer = ingested(cli, root, root / "aff.npy", "aff", ["--axes", "czyx", "--resolution", "8,8,40", "--chunk-size", "16,16,8"])
    return ["quantize", str(layer), str(root / "out"), "--memory", "100KB"], root / "out"


RUNNER_CASES = {"quantize": _runner_case}
