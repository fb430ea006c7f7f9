"""Acceptance: every bad input gives a one-line error naming the problem, exit 2, and no misleading
partial output (nothing is left behind; an existing destination keeps its info).

Each row builds its bad input in tmp_path and returns the arguments of ``pumice ingest`` (DEST
stands for tmp_path/dest). The whole of tmp_path is compared before and after the command, so any
file written by a failed run (an info, a ledger, a chunk) fails the row.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from pumice.cli.main import main

DEST = "<dest>"
SHAPE = (11, 23, 37)  # Z, Y, X
RUN = ["--resolution", "4,5,40", "--workers", "1", "--no-progress"]


# -- building bad (and good) inputs ------------------------------------------------------------------

def npy(tmp: Path, dtype: str = "uint8", data: np.ndarray | None = None, name: str | None = None) -> str:
    if data is None:
        data = np.random.default_rng(0).integers(0, 200, SHAPE).astype(dtype)
    path = tmp / (name or f"vol_{dtype}.npy")
    np.save(path, data)
    return str(path)


def write(tmp: Path, name: str, content: bytes = b"") -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path


def folder(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def png_stack(tmp: Path, n: int = 6, name: str = "stack", dtype=np.uint8) -> Path:
    stack = folder(tmp, name)
    rng = np.random.default_rng(1)
    for z in range(n):
        Image.fromarray(rng.integers(0, 200, SHAPE[1:]).astype(dtype)).save(stack / f"s{z}.png")
    return stack


def unreadable_image(tmp: Path) -> list:
    stack = png_stack(tmp)
    (stack / "s2.png").write_bytes(b"this is not a PNG file")
    return [stack, DEST, *RUN]


def truncated_png(tmp: Path) -> list:
    """Headers are fine, so planning passes; the decoder fails in the second of three tasks."""
    stack = png_stack(tmp)
    data = (stack / "s3.png").read_bytes()
    (stack / "s3.png").write_bytes(data[: len(data) // 2])
    return [stack, DEST, *RUN, "--type", "image", "--chunk-size", "16,8,2", "--memory", "10KB"]


def mixed_shapes(tmp: Path) -> list:
    stack = png_stack(tmp)
    Image.fromarray(np.zeros((20, 37), np.uint8)).save(stack / "s9.png")
    return [stack, DEST, *RUN]


def mixed_dtypes(tmp: Path) -> list:
    stack = png_stack(tmp)
    Image.fromarray(np.zeros(SHAPE[1:], np.uint16)).save(stack / "s7.png")
    return [stack, DEST, *RUN]


def truncated_tiff(tmp: Path) -> list:
    path = tmp / "stack.tif"
    tifffile.imwrite(path, np.random.default_rng(2).integers(0, 200, SHAPE).astype(np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return [path, DEST, *RUN]


def h5(tmp: Path) -> Path:
    path = tmp / "vol.h5"
    with h5py.File(path, "w") as f:
        f["a/raw"] = np.zeros(SHAPE, np.uint8)
        f["a/labels"] = np.zeros(SHAPE, np.uint32)
    return path


def zarr_group(tmp: Path) -> Path:
    path = tmp / "group.zarr"
    zarr.open_group(str(path), mode="w", zarr_format=2).create_array("raw", shape=SHAPE, dtype="uint8")
    return path


def empty_h5(tmp: Path) -> Path:
    path = tmp / "empty.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.zeros((11, 0, 37), np.uint8)
    return path


def empty_zarr(tmp: Path, zarr_format: int) -> Path:
    path = tmp / f"empty{zarr_format}.zarr"
    zarr.open_array(str(path), mode="w", shape=(0, 23, 37), dtype="uint8", zarr_format=zarr_format)
    return path


def empty_n5(tmp: Path) -> Path:
    import tensorstore as ts

    path = tmp / "empty.n5"
    ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(path) + "/"},
             "metadata": {"dimensions": [37, 23, 0], "blockSize": [8, 8, 8], "dataType": "uint8", "compression": {"type": "raw"}}},
            create=True).result()
    return path


def empty_tiff(tmp: Path, shape: tuple, name: str) -> Path:
    with pytest.warns(UserWarning, match="zero-size"):  # tifffile writes it, calling it nonconformant
        tifffile.imwrite(tmp / name, np.zeros(shape, np.uint8))
    return tmp / name


def stack_of_empty_tiffs(tmp: Path) -> Path:
    stack = folder(tmp, "empty_sections")
    for z in range(3):
        empty_tiff(stack, (0, 37), f"s{z}.tif")
    return stack


def empty_precomputed(tmp: Path) -> Path:
    (tmp / "layer").mkdir()
    (tmp / "layer" / "info").write_text(json.dumps({
        "@type": "neuroglancer_multiscale_volume", "type": "image", "data_type": "uint8", "num_channels": 1,
        "scales": [{"key": "4_4_40", "size": [37, 0, 11], "resolution": [4, 4, 40], "voxel_offset": [0, 0, 0],
                    "chunk_sizes": [[64, 64, 16]], "encoding": "raw"}]}))
    return tmp / "layer"


def negative_labels(tmp: Path) -> list:
    """Found by the task that reads the last corner, after earlier tasks wrote chunks."""
    labels = np.random.default_rng(3).integers(0, 100, SHAPE).astype(np.int32)
    labels[10, 20, 30] = -5
    return [npy(tmp, data=labels, name="labels.npy"), DEST, *RUN, "--type", "segmentation",
            "--chunk-size", "16,8,4", "--memory", "10KB"]


def broken_layer(tmp: Path) -> list:
    (tmp / "layer").mkdir()
    (tmp / "layer" / "info").write_text("{not json")
    return [tmp / "layer", DEST, *RUN]


def existing_uint8_layer(tmp: Path, dest: Path) -> None:
    assert main(["ingest", npy(tmp, "uint8", name="first.npy"), str(dest), *RUN]) == 0
    assert (dest / "info").is_file()


def a_file_as_dest(tmp: Path, dest: Path) -> None:
    dest.write_text("a file, not a folder")


def row(name, build, *keywords, runtime=False, existing=None, xfail=None):
    """``runtime``: found while tasks run (notes may precede the error; the run must discard its output)."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(build, keywords, runtime, existing, id=name, marks=marks)


ROWS = [
    row("missing-file", lambda t: [t / "nope.npy", DEST, *RUN], "no such file", "nope.npy"),
    row("unreadable-image-in-stack", unreadable_image, "cannot read image", "s2.png"),
    row("truncated-png-mid-stack", truncated_png, "s3.png", "truncated", "nothing was kept", runtime=True),
    row("mixed-image-shapes", mixed_shapes, "images differ", "s9.png", "37x20"),
    row("mixed-image-dtypes", mixed_dtypes, "images differ", "s7.png", "uint16"),
    row("truncated-multipage-tiff", truncated_tiff, "stack.tif", "truncated"),
    row("hdf5-wrong-dataset-inline", lambda t: [f"{h5(t)}:/a/nothing", DEST, *RUN], "no dataset", "a/nothing", "a/raw"),
    row("hdf5-wrong-dataset-option", lambda t: [h5(t), DEST, *RUN, "--dataset", "zzz"], "no dataset", "zzz"),
    row("hdf5-several-datasets-none-named", lambda t: [h5(t), DEST, *RUN], "several datasets", "--dataset"),
    row("hdf5-not-hdf5", lambda t: [write(t, "x.h5", b"junk" * 20), DEST, *RUN], "x.h5", "HDF5"),
    row("npy-not-npy", lambda t: [write(t, "x.npy", b"junk" * 20), DEST, *RUN], "x.npy",
        "not a NumPy .npy file"),
    row("zarr-group-no-array-named", lambda t: [zarr_group(t), DEST, *RUN], "group", "--dataset", "raw"),
    row("zarr-wrong-array", lambda t: [f"{zarr_group(t)}:/nope", DEST, *RUN], "no array", "nope"),
    row("precomputed-source-broken-info", broken_layer, "info", "not valid JSON"),
    row("npy-zero-x", lambda t: [npy(t, data=np.zeros((11, 23, 0), np.uint8), name="zx.npy"), DEST, *RUN],
        "zx.npy", "is empty", "along x", "0,23,11"),
    row("npy-zero-y", lambda t: [npy(t, data=np.zeros((11, 0, 37), np.uint8), name="zy.npy"), DEST, *RUN],
        "zy.npy", "is empty", "along y", "37,0,11"),
    row("npy-zero-z", lambda t: [npy(t, data=np.zeros((0, 64, 64), np.uint8), name="zz.npy"), DEST, *RUN],
        "zz.npy", "is empty", "along z", "64,64,0"),
    row("npy-zero-channels", lambda t: [npy(t, data=np.zeros((11, 23, 37, 0), np.uint8), name="zc.npy"), DEST, *RUN,
                                        "--axes", "zyxc"], "zc.npy", "is empty", "channel", "0 channel(s)"),
    row("npy-zero-everything", lambda t: [npy(t, data=np.zeros((0, 0, 0), np.uint8), name="z0.npy"), DEST, *RUN],
        "z0.npy", "is empty", "along x or along y or along z"),
    row("hdf5-zero-size", lambda t: [empty_h5(t), DEST, *RUN], "empty.h5:/raw", "is empty", "along y"),
    row("zarr2-zero-size", lambda t: [empty_zarr(t, 2), DEST, *RUN], "empty2.zarr", "is empty", "along z"),
    row("zarr3-zero-size", lambda t: [empty_zarr(t, 3), DEST, *RUN], "empty3.zarr", "is empty", "along z"),
    row("n5-zero-size", lambda t: [empty_n5(t), DEST, *RUN], "empty.n5", "is empty", "along z"),
    row("tiff-zero-sections", lambda t: [empty_tiff(t, (0, 23, 37), "e.tif"), DEST, *RUN], "e.tif", "is empty", "(0, 23, 37)"),
    row("tiff-zero-rows", lambda t: [empty_tiff(t, (4, 0, 37), "e.tif"), DEST, *RUN], "e.tif", "is empty", "(4, 0, 37)"),
    row("image-stack-of-empty-sections", lambda t: [stack_of_empty_tiffs(t), DEST, *RUN], "empty_sections", "is empty"),
    row("precomputed-source-zero-size", lambda t: [empty_precomputed(t), DEST, *RUN], "info", "non-positive size"),
    row("resolution-two-values", lambda t: [npy(t), DEST, "--resolution", "4,4", "--workers", "1"], "--resolution", "'4,4'"),
    row("resolution-not-numbers", lambda t: [npy(t), DEST, "--resolution", "4,x,40", "--workers", "1"], "--resolution"),
    row("resolution-zero", lambda t: [npy(t), DEST, "--resolution", "4,0,40", "--workers", "1"], "--resolution", "positive"),
    row("resolution-missing", lambda t: [npy(t), DEST, "--workers", "1"], "--resolution", "voxel size"),
    row("empty-folder", lambda t: [folder(t, "empty"), DEST, *RUN], "no PNG, TIFF or JPEG", "empty"),
    row("glob-matches-nothing", lambda t: [t / "img*.png", DEST, *RUN], "img*.png"),
    row("unknown-file-type", lambda t: [write(t, "notes.txt", b"hi"), DEST, *RUN],
        "do not know how to read", "notes.txt"),
    row("bool-array", lambda t: [npy(t, data=np.zeros(SHAPE, bool), name="b.npy"), DEST, *RUN], "unsupported data type bool"),
    row("complex-array", lambda t: [npy(t, data=np.zeros(SHAPE, np.complex64), name="c.npy"), DEST, *RUN],
        "unsupported data type complex64"),
    row("float-segmentation", lambda t: [npy(t, "float32"), DEST, *RUN, "--type", "segmentation"], "segmentation", "float32"),
    row("signed-as-image", lambda t: [npy(t, "int32"), DEST, *RUN, "--type", "image"], "int32", "--type segmentation"),
    row("negative-labels", negative_labels, "negative labels (-5)", "labels.npy", "nothing was kept", runtime=True),
    row("jpeg-for-uint64", lambda t: [npy(t, "uint64"), DEST, *RUN, "--encoding", "jpeg"], "jpeg", "uint64"),
    row("png-for-uint16", lambda t: [npy(t, "uint16"), DEST, *RUN, "--encoding", "png"], "png", "uint16", "CloudVolume"),
    row("png-for-float32", lambda t: [npy(t, "float32"), DEST, *RUN, "--encoding", "png"], "png", "float32"),
    row("compressed-segmentation-for-uint8", lambda t: [npy(t), DEST, *RUN, "--encoding", "compressed_segmentation"],
        "compressed_segmentation", "uint8"),
    row("unknown-encoding", lambda t: [npy(t), DEST, *RUN, "--encoding", "webp"], "--encoding", "webp"),
    row("chunk-size-zero", lambda t: [npy(t), DEST, *RUN, "--chunk-size", "16,0,4"], "--chunk-size", "positive"),
    row("chunk-size-negative", lambda t: [npy(t), DEST, *RUN, "--chunk-size", "16,-8,4"], "--chunk-size", "positive"),
    row("axes-wrong-count", lambda t: [npy(t), DEST, *RUN, "--axes", "xy"], "--axes", "3 dimensions"),
    row("axes-unknown-letters", lambda t: [npy(t), DEST, *RUN, "--axes", "abc"], "--axes", "abc"),
    row("offset-two-values", lambda t: [npy(t), DEST, *RUN, "--offset", "1,2"], "--offset", "'1,2'"),
    row("offset-not-integers", lambda t: [npy(t), DEST, *RUN, "--offset", "1.5,2,3"], "--offset", "integers"),
    row("dest-unknown-scheme", lambda t: [npy(t), "ftp://example.com/layer", *RUN], "ftp://"),
    row("dest-http", lambda t: [npy(t), "http://127.0.0.1:9/layer", *RUN], "http", "read-only"),
    row("memory-malformed", lambda t: [npy(t), DEST, *RUN, "--memory", "lots"], "--memory", "lots"),
    row("memory-zero", lambda t: [npy(t), DEST, *RUN, "--memory", "0"], "--memory", "positive"),
    row("workers-zero", lambda t: [npy(t), DEST, "--resolution", "4,5,40", "--type", "image", "--workers", "0"],
        "--workers"),
    row("dest-incompatible-dtype", lambda t: [npy(t, "uint64"), DEST, *RUN, "--type", "image"], "already holds a different layer",
        "data_type uint8 there, uint64 requested", existing=existing_uint8_layer),
    row("dest-incompatible-resolution", lambda t: [npy(t), DEST, "--resolution", "8,8,40", "--workers", "1"],
        "already holds a different layer", "resolution", existing=existing_uint8_layer),
    row("dest-is-a-file", lambda t: [npy(t), DEST, *RUN], "dest", "is a file", existing=a_file_as_dest),
    row("missing-dest-argument", lambda t: [npy(t)], "dest"),
]


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_table_is_big_enough():
    assert len(ROWS) >= 18


@pytest.mark.parametrize("build,keywords,runtime,existing", ROWS)
def test_bad_input(tmp_path, capsys, cli, build, keywords, runtime, existing):
    dest = tmp_path / "dest"
    if existing:
        existing(tmp_path, dest)
    argv = [str(dest) if a == DEST else str(a) for a in build(tmp_path)]
    capsys.readouterr()
    before = snapshot(tmp_path)

    code, out, err = cli("ingest", *argv)

    lines = err.splitlines()
    assert "Traceback" not in err
    assert code == 2, err
    assert lines and lines[-1].startswith("pumice: error: "), err
    error = lines[-1]
    if runtime:  # the planner's notes ("int32 data is stored as uint32") may come first; nothing else
        assert all(line.startswith("pumice: ") and not line.startswith("pumice: error") for line in lines[:-1]), err
    else:
        assert len(lines) == 1, err
    for word in keywords:
        assert word in error, f"{word!r} not in {error!r}"
    assert "finished" not in out
    # No misleading partial output: nothing under tmp_path changed (no info, ledger or chunk at DEST;
    # an existing destination keeps its info byte for byte).
    assert snapshot(tmp_path) == before
    if existing is None:
        assert not (dest / "info").exists()
    if runtime:
        assert not dest.exists(), "a fresh destination is removed when the input turns out bad mid-run"


def test_debug_shows_traceback(tmp_path, cli):
    code, _, err = cli("--debug", "ingest", tmp_path / "nope.npy", tmp_path / "dest", *RUN)
    assert code == 2
    assert "Traceback" in err
    assert err.splitlines()[-1].startswith("pumice: error: no such file")
