"""Contrast (issue 7): levels equal NumPy's histograms, normalize equals the clip-and-stretch formula
and removes per-section drift, CLAHE has no seams at block borders and raises contrast; results are
read back with CloudVolume and TensorStore; bad input is one clear line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume
from PIL import Image

from framework import IMAGE, Resume, ingested, runner_image

from pumice.sample import make_em_sample


def _ingest(cli, tmp_path, name, data_zyx, chunk="32,32,8", *extra):
    np.save(tmp_path / f"{name}.npy", data_zyx)
    code, _, err = cli("ingest", tmp_path / f"{name}.npy", tmp_path / name, "--resolution", "4,4,40", "--chunk-size", chunk,
                       "--no-progress", *extra)
    assert code == 0, err
    return tmp_path / name


def _read(path, mip=0):
    """x, y, z from CloudVolume, checked against TensorStore's reading."""
    cv = np.asarray(CloudVolume(f"file://{path}", mip=mip)[:, :, :])[..., 0]
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/", "scale_index": mip}).result()
    np.testing.assert_array_equal(np.asarray(store.read().result())[..., 0], cv)
    return cv


def _levels(layer, z, mip=0):
    return json.loads((layer / "levels" / str(mip) / str(z)).read_text())


def _window(section, f, count_zeros=False):
    """The documented clip points, from sorted values (independent of Pumice's cumulative counts)."""
    values = np.sort(section.ravel() if count_zeros else section[section != 0].ravel())
    n = values.size
    return int(values[math.floor(f * n)]), int(values[math.ceil((1 - f) * n) - 1])


def _stretch(section, lo, hi, top=255):
    return np.clip(np.round((section.astype(np.float64) - lo) * top / (hi - lo)), 0, top)


@pytest.fixture
def drifted(tmp_path, cli):
    """16 sections of one EM-like texture, each rolled differently (same histogram, new layout), under
    a per-section gain and offset: the drift is all that differs between sections' statistics."""
    base = make_em_sample((1, 96, 112), seed=3)[0][0].astype(np.float64)
    rng = np.random.default_rng(5)
    gain = np.linspace(0.8, 1.0, 16)[rng.permutation(16)]
    offset = rng.uniform(0, 45, 16)
    stack = np.stack([np.roll(base, tuple(rng.integers(0, 90, 2)), axis=(0, 1)) * g + o for g, o in zip(gain, offset)])
    stack = np.round(stack).astype(np.uint8)
    stack[3, :5, :7] = 0  # a little black padding, which the levels leave out
    return stack, _ingest(cli, tmp_path, "drifted", stack)


def test_levels_at_full_coverage_are_whole_section_counts(drifted, cli):
    stack, layer = drifted
    code, out, err = cli("contrast", "levels", layer, "--coverage", "1", "--no-progress")
    assert code == 0, err
    assert "16 section histograms from 172,032 sampled voxels (100.00% of the volume)" in out
    for z in range(16):
        record = _levels(layer, z)
        assert record["levels"] == np.bincount(stack[z].ravel(), minlength=256).tolist()
        assert record["num_patches"] == 12 and record["coverage_ratio"] == 1.0 and "patches" not in record
    assert json.loads((layer / "levels/0/pumice.json").read_text())["coverage"] == 1.0


def test_levels_of_a_sample_are_the_sampled_voxels_counts(drifted, cli):
    stack, layer = drifted
    code, _, err = cli("contrast", "levels", layer, "--coverage", "0.2", "--no-progress")
    assert code == 0, err
    first = {z: _levels(layer, z) for z in range(16)}
    for z, record in first.items():
        assert record["num_patches"] == 3  # ceil(0.2 * 12 chunk columns)
        expected = np.zeros(256, dtype=np.int64)
        for x0, y0, x1, y1 in record["patches"]:
            expected += np.bincount(stack[z, y0:y1, x0:x1].ravel(), minlength=256)
        assert record["levels"] == expected.tolist()
        assert record["coverage_ratio"] == pytest.approx(sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in record["patches"]) / (96 * 112))
    assert first[0]["patches"] == first[7]["patches"]  # one sample per chunk slab
    assert any(first[0]["patches"] != first[z]["patches"] for z in range(8, 16))
    code, _, err = cli("contrast", "levels", layer, "--coverage", "0.2", "--restart", "--no-progress")
    assert code == 0, err
    assert all(_levels(layer, z) == first[z] for z in range(16))  # the same sample again
    # Levels of another coverage replace them; asking for 0.2 again samples again, not "nothing to do".
    assert cli("contrast", "levels", layer, "--coverage", "1", "--no-progress")[0] == 0
    assert "patches" not in _levels(layer, 0)
    code, out, err = cli("contrast", "levels", layer, "--coverage", "0.2", "--no-progress")
    assert code == 0 and "sampling again" in err and "Nothing to do" not in out
    assert all(_levels(layer, z) == first[z] for z in range(16))


def test_normalize_equals_the_clip_and_stretch_formula(drifted, tmp_path, cli):
    stack, layer = drifted
    assert cli("contrast", "levels", layer, "--coverage", "1", "--no-progress")[0] == 0
    code, out, err = cli("contrast", "normalize", layer, tmp_path / "norm", "--memory", "100KB", "--workers", "2", "--no-progress")
    assert code == 0, err
    got = _read(tmp_path / "norm")
    assert got.dtype == np.uint8 and got.shape == (112, 96, 16)
    for z in range(16):
        lo, hi = _window(stack[z], 0.01)
        np.testing.assert_array_equal(got[:, :, z], _stretch(stack[z], lo, hi).T, err_msg=f"section {z}")
    assert (got[:7, :5, 3] == 0).all()  # padding stays black


def test_normalize_removes_the_drift(drifted, tmp_path, cli):
    stack, layer = drifted
    before = stack.mean(axis=(1, 2))
    assert before.max() - before.min() > 40
    for coverage in ("1",):
        assert cli("contrast", "levels", layer, "--coverage", coverage, "--no-progress")[0] == 0
        assert cli("contrast", "normalize", layer, tmp_path / f"norm{coverage}", "--no-progress")[0] == 0
        tissue = stack.transpose(2, 1, 0) != 0  # the padding is not drift
        got = _read(tmp_path / f"norm{coverage}")
        means = np.array([got[:, :, z][tissue[:, :, z]].mean() for z in range(16)])
        assert means.max() - means.min() <= 2, (coverage, means)


def test_global_window_and_a_given_window(drifted, tmp_path, cli):
    stack, layer = drifted
    assert cli("contrast", "levels", layer, "--coverage", "1", "--no-progress")[0] == 0
    code, _, err = cli("contrast", "normalize", layer, tmp_path / "g", "--global", "--clip-fraction", "0.05", "--no-progress")
    assert code == 0, err
    lo, hi = _window(stack, 0.05)
    np.testing.assert_array_equal(_read(tmp_path / "g"), _stretch(stack, lo, hi).transpose(2, 1, 0))
    code, out, err = cli("contrast", "normalize", layer, tmp_path / "w", "--minval", "40", "--maxval", "200", "--dry-run")
    assert code == 0 and "40..200 -> 0..255 for every section" in out
    assert cli("contrast", "normalize", layer, tmp_path / "w", "--minval", "40", "--maxval", "200", "--no-progress")[0] == 0
    np.testing.assert_array_equal(_read(tmp_path / "w"), _stretch(stack, 40, 200).transpose(2, 1, 0))


def test_uint16_input_and_output_and_a_pyramid(tmp_path, cli):
    rng = np.random.default_rng(2)
    stack = (rng.normal(1200, 150, (8, 64, 64)) + np.arange(8)[:, None, None] * 300).clip(1, 65535).astype(np.uint16)
    layer = _ingest(cli, tmp_path, "deep", stack)
    assert cli("contrast", "levels", layer, "--coverage", "1", "--no-progress")[0] == 0
    assert len(_levels(layer, 0)["levels"]) == 65536
    code, _, err = cli("contrast", "normalize", layer, tmp_path / "n16", "--dtype", "uint16", "--clip-fraction", "0",
                       "--num-mips", "1", "--no-progress")
    assert code == 0, err
    got = _read(tmp_path / "n16")
    assert got.dtype == np.uint16
    for z in range(8):
        lo, hi = _window(stack[z], 0)
        np.testing.assert_array_equal(got[:, :, z], _stretch(stack[z], lo, hi, 65535).T)
    half = _read(tmp_path / "n16", mip=1)
    assert half.shape == (32, 32, 8)
    wide = got.astype(np.uint32)
    np.testing.assert_array_equal(half, ((wide[::2, ::2] + wide[1::2, ::2] + wide[::2, 1::2] + wide[1::2, 1::2]) // 4))


def _clahe_reference(stack_zyx, clip_limit, tile):
    """OpenCV on each whole section, padded (by reflection) to whole tiles."""
    import cv2

    out = []
    for section in stack_zyx:
        pad = ((0, -section.shape[0] % tile), (0, -section.shape[1] % tile))
        padded = np.pad(section, pad, mode="reflect")
        clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(padded.shape[1] // tile, padded.shape[0] // tile))
        out.append(clahe.apply(padded)[: section.shape[0], : section.shape[1]])
    return np.stack(out)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_clahe_blocks_have_no_seams_and_raise_contrast(tmp_path, cli, dtype):
    em = make_em_sample((6, 150, 170), seed=4)[0].astype(np.float64)
    flat = (np.round(100 + em * 40 / 255) * (1 if dtype == "uint8" else 97)).astype(dtype)  # low contrast
    layer = _ingest(cli, tmp_path, "flat", flat, "32,32,2")
    code, out, err = cli("contrast", "clahe", layer, tmp_path / "many", "--tile-size", "16", "--clip-limit", "3",
                         "--memory", "24KB", "--workers", "2", "--no-progress")
    assert code == 0, err
    tasks = int(out.split(" task(s)")[0].rsplit(" ", 1)[1])
    assert tasks >= 30, out
    code, out, err = cli("contrast", "clahe", layer, tmp_path / "one", "--tile-size", "16", "--clip-limit", "3",
                         "--memory", "1GiB", "--no-progress")
    assert code == 0 and ": 1 task(s)" in out, out
    many, one = _read(tmp_path / "many"), _read(tmp_path / "one")
    np.testing.assert_array_equal(many, one)
    np.testing.assert_array_equal(one, _clahe_reference(flat, 3.0, 16).transpose(2, 1, 0))
    assert one.astype(np.float64).std() > 2 * flat.astype(np.float64).std()


def test_levels_plot(drifted, tmp_path, cli):
    _, layer = drifted
    code, out, err = cli("contrast", "levels", layer, "--coverage", "0.5", "--plot", tmp_path / "levels.png", "--no-progress")
    assert code == 0, err
    assert f"levels of 16 sections drawn to {tmp_path / 'levels.png'}" in out
    image = np.asarray(Image.open(tmp_path / "levels.png").convert("RGB"))
    assert image.shape == (600, 900, 3)
    clip_line = np.all(np.abs(image.astype(int) - (0x3F, 0xD0, 0xFF)) < 30, axis=-1)
    assert clip_line.sum() > 200  # the per-section clip points are drawn
    # Only drawing, once the levels exist: a rerun has nothing to compute.
    code, out, _ = cli("contrast", "levels", layer, "--coverage", "0.5", "--plot", tmp_path / "again.png", "--no-progress")
    assert code == 0 and "Nothing to do" in out and (tmp_path / "again.png").exists()


def test_bad_input_is_one_clear_line(drifted, tmp_path, cli):
    stack, layer = drifted
    code, _, err = cli("contrast", "normalize", layer, tmp_path / "n")
    assert code != 0 and "no luminance levels for any section" in err and f"run `pumice contrast levels {layer}` first" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "n").exists()  # nothing half-made

    labels = _ingest(cli, tmp_path, "labels", np.arange(8 * 16 * 16, dtype=np.uint32).reshape(8, 16, 16), "16,16,8")
    for verb in ("clahe", "normalize"):
        code, _, err = cli("contrast", verb, labels, tmp_path / "x")
        assert code != 0 and "is a segmentation" in err and "scramble its label ids" in err, err
    np.save(tmp_path / "f.npy", np.zeros((4, 8, 8), np.float32))
    assert cli("ingest", tmp_path / "f.npy", tmp_path / "f", "--resolution", "1,1,1", "--no-progress")[0] == 0
    code, _, err = cli("contrast", "clahe", tmp_path / "f", tmp_path / "x")
    assert code != 0 and "float32" in err and "pumice quantize" in err
    cases = [
        (("clahe", layer, tmp_path / "x", "--tile-size", "100"), "--tile-size must be a power of two"),
        (("clahe", layer, tmp_path / "x", "--clip-limit", "0"), "--clip-limit must be a positive number"),
        (("normalize", layer, tmp_path / "x", "--minval", "10"), "--minval and --maxval go together"),
        (("normalize", layer, tmp_path / "x", "--minval", "10", "--maxval", "300"), "within 0..255"),
        (("normalize", layer, tmp_path / "x", "--clip-fraction", "0.5"), "--clip-fraction must lie in [0, 0.5)"),
        (("levels", layer, "--coverage", "0"), "--coverage must be a fraction"),
        (("levels", layer, "--plot", tmp_path / "p.jpg"), "ending in .png"),
        (("normalize", layer, layer), "same layer"),
    ]
    for argv, message in cases:
        code, _, err = cli("contrast", *argv)
        assert code != 0 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _levels_case(cli, root):
    layer = ingested(cli, root, runner_image(root), "img", IMAGE)
    return ["contrast", "levels", str(layer), "--coverage", "0.3"], layer


def _normalize_case(cli, root):
    layer = ingested(cli, root, runner_image(root), "img", IMAGE)
    code, _, err = cli("contrast", "levels", str(layer), "--no-progress")
    assert code == 0, err
    return ["contrast", "normalize", str(layer), str(root / "out"), "--num-mips", "1", "--memory", "100KB"], root / "out"


def _clahe_case(cli, root):
    layer = ingested(cli, root, runner_image(root), "img", IMAGE)
    return ["contrast", "clahe", str(layer), str(root / "out"), "--tile-size", "16", "--memory", "100KB"], root / "out"


def _resume_case(verb: str):
    def setup(cli, root):
        root.mkdir(parents=True, exist_ok=True)
        layer = _ingest(cli, root, "em", make_em_sample((32, 128, 160), seed=6)[0], "16,16,4")
        assert cli("contrast", "levels", layer, "--no-progress")[0] == 0
        return ["contrast", verb, str(layer), str(root / "out"), "--memory", "12KB",
                *(["--tile-size", "16"] if verb == "clahe" else [])], root / "out"
    return setup


RUNNER_CASES = {"levels": _levels_case, "normalize": _normalize_case, "clahe": _clahe_case}
RESUME_CASES = {"normalize": Resume(_resume_case("normalize"), "normalize"), "clahe": Resume(_resume_case("clahe"), "clahe")}
