"""Acceptance: for each source kind and for uint8, uint16, uint32, uint64, float32: ingest, then read
back with CloudVolume and with TensorStore: equal to the source.

Shapes have three different extents and the offset is non-zero, so any axis or offset mix-up fails.
Sources are written Z, Y, X(, C) (the usual order on disk) unless a case says otherwise; the layer
is X, Y, Z(, C).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorstore as ts
import tifffile
import zarr
from cloudvolume import CloudVolume
from PIL import Image

SHAPE = (11, 23, 37)  # Z, Y, X: the layer is 37 x 23 x 11
OFFSET = (3, 7, 11)
RESOLUTION = (4, 5, 40)
CHUNK = (16, 8, 4)  # 3 x 3 x 3 chunks
GEOMETRY = ["--resolution", "4,5,40", "--offset", "3,7,11"]
# --memory 1KB: every task is one chunk (one shard when sharded), so there are many tasks.
RUN = ["--chunk-size", "16,8,4", "--memory", "1KB", "--workers", "1", "--no-progress"]
DTYPES = ("uint8", "uint16", "uint32", "uint64", "float32")

try:  # CloudVolume decodes png chunks only with this optional codec
    import pyspng  # noqa: F401

    HAVE_CV_PNG = True
except ImportError:
    HAVE_CV_PNG = False


def volume(dtype: str, shape=SHAPE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return (rng.standard_normal(shape) * 1000).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(0, info.max, shape, dtype=dtype, endpoint=True)


def as_xyzc(zyx: np.ndarray) -> np.ndarray:
    """A Z, Y, X or Z, Y, X, C array as the layer's X, Y, Z, C."""
    return zyx.transpose(2, 1, 0)[..., np.newaxis] if zyx.ndim == 3 else zyx.transpose(2, 1, 0, 3)


# -- source writers: (tmp_path, Z,Y,X array) -> (SOURCE argument, extra options) -------------------

def png_folder(tmp: Path, zyx: np.ndarray):
    folder = tmp / "png"
    folder.mkdir()
    for z, section in enumerate(zyx):
        Image.fromarray(section).save(folder / f"s{z:03d}.png")
    return str(folder), []


def tiff_folder(tmp: Path, zyx: np.ndarray):
    folder = tmp / "tiffs"
    folder.mkdir()
    for z, section in enumerate(zyx):
        tifffile.imwrite(folder / f"s{z:03d}.tif", section)
    return str(folder), []


def tiff_3d(tmp: Path, zyx: np.ndarray):
    path = tmp / "stack.tif"
    tifffile.imwrite(path, zyx)
    return str(path), []


def _h5(tmp: Path, zyx: np.ndarray) -> Path:
    path = tmp / "vol.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("group/vol", data=zyx, chunks=(5, 6, 7))
        f.create_dataset("group/decoy", data=np.zeros((2, 3, 4), zyx.dtype))  # the name must matter
    return path


def h5_inline(tmp: Path, zyx: np.ndarray):
    return f"{_h5(tmp, zyx)}:/group/vol", []


def h5_option(tmp: Path, zyx: np.ndarray):
    return str(_h5(tmp, zyx)), ["--dataset", "group/vol"]


def _zarr(tmp: Path, zyx: np.ndarray, zarr_format: int):
    path = tmp / f"vol_v{zarr_format}.zarr"
    chunks = (5, 6, 7) + zyx.shape[3:]
    array = zarr.create_array(store=str(path), shape=zyx.shape, chunks=chunks, dtype=zyx.dtype, zarr_format=zarr_format)
    array[...] = zyx
    marker = ".zarray" if zarr_format == 2 else "zarr.json"
    assert (path / marker).is_file()
    return str(path), []


def zarr2(tmp: Path, zyx: np.ndarray):
    return _zarr(tmp, zyx, 2)


def zarr3(tmp: Path, zyx: np.ndarray):
    return _zarr(tmp, zyx, 3)


def n5(tmp: Path, zyx: np.ndarray):
    """N5 lists dimensions x first, and TensorStore presents them so: the array is X, Y, Z."""
    path = tmp / "vol.n5"
    xyz = zyx.transpose(2, 1, 0)
    store = ts.open({
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(path)},
        "metadata": {"dimensions": list(xyz.shape), "blockSize": [7, 6, 5], "dataType": str(zyx.dtype),
                     "compression": {"type": "gzip"}},
        "create": True,
    }).result()
    store.write(xyz).result()
    assert json.loads((path / "attributes.json").read_text())["dimensions"] == [37, 23, 11]
    return str(path), []  # default axes for N5: xyz


def npy(tmp: Path, zyx: np.ndarray):
    path = tmp / "vol.npy"
    np.save(path, zyx)
    return str(path), []


def npy_xyz(tmp: Path, zyx: np.ndarray):
    path = tmp / "vol_xyz.npy"
    np.save(path, np.ascontiguousarray(zyx.transpose(2, 1, 0)))
    return str(path), ["--axes", "xyz"]


WRITERS = {f.__name__: f for f in (png_folder, tiff_folder, tiff_3d, h5_inline, h5_option, zarr2, zarr3, n5, npy, npy_xyz)}


# -- reading a layer back ----------------------------------------------------------------------------

def read_cloudvolume(dest: Path) -> np.ndarray:
    cv = CloudVolume("file://" + str(dest), mip=0, progress=False)
    b = cv.bounds
    assert tuple(int(v) for v in b.minpt) == tuple(cv.info["scales"][0]["voxel_offset"])
    return np.asarray(cv[b.minpt[0]:b.maxpt[0], b.minpt[1]:b.maxpt[1], b.minpt[2]:b.maxpt[2]])


def read_tensorstore(dest: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": "file://" + str(dest) + "/"}).result()
    return store.read().result(), tuple(int(v) for v in store.domain.origin)


def check_layer(dest: Path, expected: np.ndarray, *, data_type: str, layer_type: str, encoding: str,
                offset=OFFSET, resolution=RESOLUTION, chunk=CHUNK, sharded: bool = False,
                exact: bool = True) -> dict:
    """The info says what was asked for, and both readers return ``expected`` (X, Y, Z, C)."""
    info = json.loads((dest / "info").read_text())
    scale = info["scales"][0]
    size = list(expected.shape[:3])
    assert (info["type"], info["data_type"], info["num_channels"]) == (layer_type, data_type, expected.shape[3])
    assert scale["resolution"] == list(resolution)
    assert scale["voxel_offset"] == list(offset)
    assert scale["size"] == size
    assert scale["chunk_sizes"] == [list(chunk)]
    assert scale["encoding"] == encoding
    assert ("sharding" in scale) == sharded
    if not sharded:  # one file per chunk: the volume really was split
        files = [p for p in (dest / scale["key"]).iterdir() if p.is_file()]
        assert len(files) == math.prod(math.ceil(s / c) for s, c in zip(size, chunk))

    via_ts, origin = read_tensorstore(dest)
    assert origin == (*offset, 0)
    readers = [via_ts]
    if encoding != "png" or HAVE_CV_PNG:
        readers.append(read_cloudvolume(dest))
    for got in readers:
        assert got.shape == expected.shape
        assert got.dtype == np.dtype(data_type)
        if exact:
            np.testing.assert_array_equal(got, expected)
        else:  # lossy (jpeg) chunks: close to the source
            diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
            assert diff.mean() < 2 and diff.max() <= 24, (diff.mean(), diff.max())
    return info


def default_type(dtype: str) -> tuple[str, str]:
    return ("segmentation", "compressed_segmentation") if dtype in ("uint32", "uint64") else ("image", "raw")


# -- the matrix: every source kind x every dtype it can hold ----------------------------------------

CASES = [("png_folder", d) for d in ("uint8", "uint16")] + [
    (kind, d) for kind in ("tiff_folder", "tiff_3d", "h5_inline", "h5_option", "zarr2", "zarr3", "n5", "npy", "npy_xyz")
    for d in DTYPES
]


@pytest.mark.parametrize("kind,dtype", CASES)
def test_source_roundtrip(tmp_path, ingest_ok, kind, dtype):
    zyx = volume(dtype)
    source, extra = WRITERS[kind](tmp_path, zyx)
    dest = tmp_path / "out"
    ingest_ok(source, dest, *GEOMETRY, *RUN, *extra)
    layer_type, encoding = default_type(dtype)
    check_layer(dest, as_xyzc(zyx), data_type=dtype, layer_type=layer_type, encoding=encoding)


@pytest.mark.parametrize("dtype", DTYPES)
def test_precomputed_source_keeps_its_geometry(tmp_path, ingest_ok, dtype):
    """A layer Pumice wrote, ingested again elsewhere (rechunked): same voxels, offset, resolution, type."""
    zyx = volume(dtype, seed=1)
    np.save(tmp_path / "vol.npy", zyx)
    first = tmp_path / "first"
    ingest_ok(tmp_path / "vol.npy", first, *GEOMETRY, "--chunk-size", "8,8,8", "--memory", "1KB", "--workers", "1")
    second = tmp_path / "second"
    ingest_ok(first, second, *RUN)  # no --resolution, no --offset: both come from the source layer
    layer_type, encoding = default_type(dtype)
    check_layer(second, as_xyzc(zyx), data_type=dtype, layer_type=layer_type, encoding=encoding)


def test_precomputed_source_as_file_url_keeps_segmentation_type(tmp_path, ingest_ok):
    """The source layer's type wins over the dtype default (uint16 labels stay labels)."""
    zyx = volume("uint16", seed=2)
    np.save(tmp_path / "vol.npy", zyx)
    first = tmp_path / "first"
    ingest_ok(tmp_path / "vol.npy", first, *GEOMETRY, *RUN, "--type", "segmentation")
    second = tmp_path / "second"
    ingest_ok("file://" + str(first), second, *RUN)
    check_layer(second, as_xyzc(zyx), data_type="uint16", layer_type="segmentation", encoding="raw")


def test_glob_uses_natural_order(tmp_path, ingest_ok):
    """img1 .. img11: lexicographic order (img1, img10, img11, img2, ...) would scramble z."""
    zyx = volume("uint8", seed=3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for z, section in enumerate(zyx):
        Image.fromarray(section).save(folder / f"img{z + 1}.png")
    Image.fromarray(np.full(SHAPE[1:], 255, np.uint8)).save(folder / "other5.png")  # outside the glob
    assert sorted(p.name for p in folder.glob("img*.png"))[:3] == ["img1.png", "img10.png", "img11.png"]
    dest = tmp_path / "out"
    ingest_ok(str(folder / "img*.png"), dest, *GEOMETRY, *RUN)
    info = check_layer(dest, as_xyzc(zyx), data_type="uint8", layer_type="image", encoding="raw")
    assert info["scales"][0]["size"][2] == 11
    via_ts, _ = read_tensorstore(dest)
    for z in range(11):  # section z of the layer is img{z+1}
        np.testing.assert_array_equal(via_ts[:, :, z, 0].T, np.asarray(Image.open(folder / f"img{z + 1}.png")))


def smooth_volume(shape=SHAPE) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (100 + 60 * np.sin(x / 5.0) * np.cos(y / 4.0) + 5 * z).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_jpeg_folder(tmp_path, ingest_ok, encoding):
    """JPEG sources are lossy on disk: the reference is what Pillow decodes from the same files.

    Stored raw, the layer equals that decoding exactly; stored as jpeg chunks, it is close to it.
    """
    folder = tmp_path / "jpgs"
    folder.mkdir()
    for z, section in enumerate(smooth_volume()):
        Image.fromarray(section).save(folder / f"s{z}.jpg", quality=90)
    reference = np.stack([np.asarray(Image.open(folder / f"s{z}.jpg")) for z in range(SHAPE[0])])
    assert reference.shape == SHAPE and reference.dtype == np.uint8
    dest = tmp_path / "out"
    ingest_ok(folder, dest, *GEOMETRY, *RUN, "--encoding", encoding)
    check_layer(dest, as_xyzc(reference), data_type="uint8", layer_type="image", encoding=encoding,
                exact=encoding == "raw")


def test_rgb_png_stack(tmp_path, ingest_ok):
    zyxc = volume("uint8", shape=(*SHAPE, 3), seed=4)
    folder = tmp_path / "rgb"
    folder.mkdir()
    for z, section in enumerate(zyxc):
        Image.fromarray(section, mode="RGB").save(folder / f"s{z}.png")
    dest = tmp_path / "out"
    ingest_ok(folder, dest, *GEOMETRY, *RUN)
    check_layer(dest, as_xyzc(zyxc), data_type="uint8", layer_type="image", encoding="raw")


@pytest.mark.parametrize("kind,dtype", [("npy", "float32"), ("zarr3", "uint8"), ("tiff_3d", "uint16")])
def test_four_channels_zyxc(tmp_path, ingest_ok, kind, dtype):
    zyxc = volume(dtype, shape=(*SHAPE, 4), seed=5)
    source, extra = WRITERS[kind](tmp_path, zyxc)
    dest = tmp_path / "out"
    ingest_ok(source, dest, *GEOMETRY, *RUN, *extra)
    check_layer(dest, as_xyzc(zyxc), data_type=dtype, layer_type="image", encoding="raw")


@pytest.mark.parametrize("kind,dtype", [("npy", "uint8"), ("tiff_3d", "uint8"), ("npy", "uint64"), ("zarr2", "uint64")])
def test_sharded(tmp_path, ingest_ok, kind, dtype):
    zyx = volume(dtype, seed=6)
    source, extra = WRITERS[kind](tmp_path, zyx)
    dest = tmp_path / "out"
    ingest_ok(source, dest, *GEOMETRY, *RUN, *extra, "--sharded")
    layer_type, encoding = default_type(dtype)
    info = check_layer(dest, as_xyzc(zyx), data_type=dtype, layer_type=layer_type, encoding=encoding, sharded=True)
    assert info["scales"][0]["sharding"]["@type"] == "neuroglancer_uint64_sharded_v1"
    shards = list((dest / info["scales"][0]["key"]).glob("*.shard"))
    assert shards, "a sharded scale is stored in .shard files"


@pytest.mark.parametrize("dtype,options,layer_type,encoding", [
    ("uint32", ["--encoding", "raw"], "segmentation", "raw"),
    ("uint64", ["--encoding", "raw"], "segmentation", "raw"),
    ("uint32", ["--type", "image"], "image", "raw"),
    ("uint8", ["--type", "segmentation"], "segmentation", "raw"),
    ("uint8", ["--encoding", "png"], "image", "png"),
])
def test_type_and_encoding_options(tmp_path, ingest_ok, dtype, options, layer_type, encoding):
    zyx = volume(dtype, seed=7)
    source, _ = npy(tmp_path, zyx)
    dest = tmp_path / "out"
    ingest_ok(source, dest, *GEOMETRY, *RUN, *options)
    check_layer(dest, as_xyzc(zyx), data_type=dtype, layer_type=layer_type, encoding=encoding)


@pytest.mark.parametrize("signed,stored", [("int32", "uint32"), ("int64", "uint64"), ("int16", "uint16")])
def test_signed_labels_as_segmentation(tmp_path, ingest_ok, signed, stored):
    labels = np.random.default_rng(8).integers(0, np.iinfo(signed).max, SHAPE, dtype=signed, endpoint=True)
    source, _ = npy(tmp_path, labels)
    dest = tmp_path / "out"
    err = ingest_ok(source, dest, *GEOMETRY, *RUN, "--type", "segmentation")
    assert f"{signed} data is stored as {stored}" in err
    encoding = "compressed_segmentation" if stored in ("uint32", "uint64") else "raw"
    check_layer(dest, as_xyzc(labels.astype(stored)), data_type=stored, layer_type="segmentation", encoding=encoding)


@pytest.mark.parametrize("kind,dtype", [("png_folder", "uint8"), ("tiff_3d", "uint64")])
def test_process_pool(tmp_path, ingest_ok, kind, dtype):
    """Two worker processes (spawned): same result as one."""
    zyx = volume(dtype, seed=9)
    source, extra = WRITERS[kind](tmp_path, zyx)
    dest = tmp_path / "out"
    ingest_ok(source, dest, *GEOMETRY, *extra, "--chunk-size", "16,8,4", "--memory", "1KB", "--workers", "2",
              "--no-progress")
    layer_type, encoding = default_type(dtype)
    check_layer(dest, as_xyzc(zyx), data_type=dtype, layer_type=layer_type, encoding=encoding)
