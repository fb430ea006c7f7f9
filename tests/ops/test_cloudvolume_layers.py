"""Layers CloudVolume (or Igneous) wrote with compressed chunk files, ``<chunk>.gz`` / ``<chunk>.br``.

TensorStore cannot open those names, so every operation reads them through Pumice's own chunk
lookup, and everything Pumice writes has plain names. Each result is read back with TensorStore and
CloudVolume. The layers are made here with ``CloudVolume.from_numpy(..., compress=...)``, at an
offset and with partial chunks at the far edges.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import brotli
import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume

from pumice.geometry import Bbox
from pumice.storage.layer import Layer

RES = (8, 8, 40)
OFFSET = (3, 7, 11)
SHAPE = (100, 90, 40)  # X, Y, Z: chunks 64,64,16 leave partial chunks on every axis
CHUNK = (64, 64, 16)
SUFFIX = {"gzip": ".gz", "br": ".br"}
RUN = ("--workers", "1", "--no-progress")
BLOB, TUBE, SLAB = 7, 2**40 + 3, 12


def _image() -> np.ndarray:
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    noise = np.random.default_rng(5).integers(0, 40, SHAPE)
    return (x + 2 * y + 3 * z + noise).astype(np.uint8)  # smooth plus noise: contrast has something to stretch


def _labels() -> np.ndarray:
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    lab = np.zeros(SHAPE, np.uint64)
    lab[(x - 30) ** 2 + (y - 30) ** 2 + ((z - 20) * 3) ** 2 < 18**2] = BLOB  # crosses chunk faces in z
    lab[((y - 72) ** 2 + ((z - 25) * 3) ** 2 < 8**2) & (x >= 10) & (x < 95)] = TUBE  # crosses x = 64, 64-bit id
    lab[60:92, 8:40, 4:36] = SLAB  # reaches into the partial chunks
    return lab


def _cloudvolume_layer(path: Path, data: np.ndarray, compress: str, kind: str) -> Path:
    extra = {"encoding": "compressed_segmentation"} if kind == "segmentation" else {}
    CloudVolume.from_numpy(data, vol_path=f"file://{path}", resolution=RES, voxel_offset=OFFSET, chunk_size=CHUNK,
                           layer_type=kind, compress=compress, **extra)
    names = [p.name for p in (path / "8_8_40").iterdir()]
    assert names and all(n.endswith(SUFFIX[compress]) for n in names)  # the layer really is CloudVolume-compressed
    return path


@pytest.fixture(params=["gzip", "br"])
def compress(request) -> str:
    return request.param


@pytest.fixture
def layers(tmp_path, compress):
    """The image and the compressed_segmentation layer, as CloudVolume wrote them, and their arrays."""
    image, labels = _image(), _labels()
    return {"image": (_cloudvolume_layer(tmp_path / "cvimg", image, compress, "image"), image),
            "segmentation": (_cloudvolume_layer(tmp_path / "cvseg", labels, compress, "segmentation"), labels)}


def _plain_copy(cli, tmp_path: Path, data: np.ndarray, kind: str, name: str) -> Path:
    """The same array ingested by Pumice with the same geometry: the reference every result is held to."""
    np.save(tmp_path / f"{name}.npy", data.transpose(2, 1, 0))
    encoding = ["--encoding", "compressed_segmentation"] if kind == "segmentation" else []
    code, _, err = cli("ingest", tmp_path / f"{name}.npy", tmp_path / name, "--type", kind, "--resolution", "8,8,40",
                       "--offset", ",".join(map(str, OFFSET)), "--chunk-size", ",".join(map(str, CHUNK)), *encoding, *RUN)
    assert code == 0, err
    return tmp_path / name


def _via_tensorstore(path: Path, mip: int = 0) -> np.ndarray:
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/", "scale_index": mip}).result()
    return store.read().result()[..., 0]


def _via_cloudvolume(path: Path, mip: int = 0) -> np.ndarray:
    cv = CloudVolume(f"file://{path}", mip=mip)
    b = cv.bounds
    return np.asarray(cv[b.minpt[0]:b.maxpt[0], b.minpt[1]:b.maxpt[1], b.minpt[2]:b.maxpt[2]])[..., 0]


def _chunk_files(path: Path, key: str = "8_8_40") -> list[str]:
    return sorted(p.name for p in (path / key).iterdir())


def _compressed_names(path: Path) -> list[str]:
    return [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.suffix in (".gz", ".br")]


# -- transfer -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["image", "segmentation"])
def test_transfer_without_changes_decompresses_while_copying(tmp_path, cli, layers, kind):
    old, data = layers[kind]
    code, out, _ = cli("transfer", old, tmp_path / "new", "--dry-run")
    assert code == 0 and "fast path" in out
    code, out, err = cli("transfer", old, tmp_path / "new", *RUN)
    assert code == 0, err
    assert "CloudVolume-compressed chunk files" in err
    names = _chunk_files(tmp_path / "new")
    assert len(names) == 12 and not any(n.endswith((".gz", ".br")) for n in names)
    assert names == sorted(n.rsplit(".", 1)[0] for n in _chunk_files(old))
    np.testing.assert_array_equal(_via_tensorstore(tmp_path / "new"), data)
    np.testing.assert_array_equal(_via_cloudvolume(tmp_path / "new"), data)


@pytest.mark.parametrize("kind, args", [
    ("image", ["--chunk-size", "32,32,16"]),
    ("image", ["--sharded"]),
    ("segmentation", ["--chunk-size", "32,32,16"]),
    ("segmentation", ["--encoding", "raw"]),
    ("segmentation", ["--sharded"]),
])
def test_transfer_with_changes(tmp_path, cli, layers, kind, args):
    old, data = layers[kind]
    code, _, err = cli("transfer", old, tmp_path / "new", *args, *RUN)
    assert code == 0, err
    assert not _compressed_names(tmp_path / "new")
    scale = json.loads((tmp_path / "new" / "info").read_text())["scales"][0]
    assert scale["voxel_offset"] == list(OFFSET) and ("sharding" in scale) == ("--sharded" in args)
    np.testing.assert_array_equal(_via_tensorstore(tmp_path / "new"), data)
    np.testing.assert_array_equal(_via_cloudvolume(tmp_path / "new"), data)


# -- downsample in place ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["image", "segmentation"])
def test_downsample_in_place(tmp_path, cli, layers, kind):
    old, data = layers[kind]
    code, _, err = cli("downsample", old, "--num-mips", "2", *RUN)
    assert code == 0, err
    # The mips are compared with each other and with the same run on a plain copy, not with a
    # particular downsampling rule (how pyramid voxels are grouped is not this test's business).
    plain = _plain_copy(cli, tmp_path, data, kind, "plain")
    assert cli("downsample", plain, "--num-mips", "2", *RUN)[0] == 0
    info = json.loads((old / "info").read_text())
    assert len(info["scales"]) == 3
    np.testing.assert_array_equal(_via_cloudvolume(old, 0), data)  # mip 0 is untouched and still reads
    for mip in (1, 2):
        key = info["scales"][mip]["key"]
        assert not any(n.endswith((".gz", ".br")) for n in _chunk_files(old, key))
        via_ts, via_cv = _via_tensorstore(old, mip), _via_cloudvolume(old, mip)
        np.testing.assert_array_equal(via_ts, via_cv)
        np.testing.assert_array_equal(via_ts, _via_tensorstore(plain, mip))
        assert via_ts.any()


def test_downsampling_over_a_cloudvolume_mip_leaves_no_stale_compressed_chunks(tmp_path, cli, compress):
    """An Igneous-style mip 1 (compressed files) redone by Pumice: the old files must go, or
    CloudVolume (which tries the name it found last first) and TensorStore would disagree."""
    data = _image()
    path = f"file://{tmp_path}/old"
    # At offset 0 with even sizes every pyramid rule gives mip 1 the same geometry.
    CloudVolume.from_numpy(data, vol_path=path, resolution=RES, voxel_offset=(0, 0, 0), chunk_size=CHUNK,
                           layer_type="image", compress=compress, max_mip=1)
    stale = np.full((50, 45, 40), 99, np.uint8)
    CloudVolume(path, mip=1, compress=compress)[0:50, 0:45, 0:40] = stale
    assert all(n.endswith(SUFFIX[compress]) for n in _chunk_files(tmp_path / "old", "16_16_40"))
    code, _, err = cli("downsample", tmp_path / "old", "--num-mips", "1", "--factor", "2,2,1", *RUN)
    assert code == 0, err
    assert not any(n.endswith((".gz", ".br")) for n in _chunk_files(tmp_path / "old", "16_16_40"))
    via_ts, via_cv = _via_tensorstore(tmp_path / "old", 1), _via_cloudvolume(tmp_path / "old", 1)
    np.testing.assert_array_equal(via_ts, via_cv)
    assert not (via_ts == 99).all()


def test_view_serves_the_migrated_layer(tmp_path, cli, layers, compress):
    """What `pumice view` hands the browser: the migrated layer's plain files as they are (read here
    by TensorStore over HTTP), the old layer's compressed files under the plain name, encoded."""
    import urllib.request

    from pumice.serve.files import LayerFileServer

    old, data = layers["image"]
    assert cli("transfer", old, tmp_path / "new", *RUN)[0] == 0
    chunk = "8_8_40/3-67_7-71_11-27"
    with LayerFileServer({"old": old, "new": tmp_path / "new"}) as server:
        with urllib.request.urlopen(f"{server.url_for('new')}/{chunk}") as response:
            assert response.headers.get("Content-Encoding") is None
            assert response.read() == (tmp_path / "new" / chunk).read_bytes()
        with urllib.request.urlopen(f"{server.url_for('old')}/{chunk}") as response:
            assert response.headers.get("Content-Encoding") == {"gzip": "gzip", "br": "br"}[compress]
            assert response.read() == (old / (chunk + SUFFIX[compress])).read_bytes()
        store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"{server.url_for('new')}/"}).result()
        np.testing.assert_array_equal(store.read().result()[..., 0], data)


# -- meshes and skeletons -----------------------------------------------------------------------

def _mesh(cv: CloudVolume, label: int):
    m = cv.mesh.get(label)
    return m[label] if isinstance(m, dict) else m


def test_mesh_and_skeleton(tmp_path, cli, layers):
    old, labels = layers["segmentation"]
    plain = _plain_copy(cli, tmp_path, labels, "segmentation", "plain")
    for layer in (old, plain):
        code, _, err = cli("mesh", layer, *RUN)
        assert code == 0, err
        code, _, err = cli("skeleton", layer, "--min-cable", "100", "--dust-threshold", "100", *RUN)
        assert code == 0, err
    cv, reference = CloudVolume(f"file://{old}"), CloudVolume(f"file://{plain}")
    for label in (BLOB, TUBE, SLAB):
        voxels = np.argwhere(labels == label)
        lo, hi = (voxels.min(axis=0) + OFFSET - 1) * RES, (voxels.max(axis=0) + OFFSET + 2) * RES
        mesh = _mesh(cv, label)
        assert len(mesh.faces) and (mesh.vertices >= lo).all() and (mesh.vertices <= hi).all(), label
        np.testing.assert_array_equal(mesh.vertices, _mesh(reference, label).vertices)
        skeleton = cv.skeleton.get(label)
        assert len(skeleton.vertices) and (skeleton.vertices >= lo).all() and (skeleton.vertices <= hi).all(), label
        np.testing.assert_array_equal(skeleton.vertices, reference.skeleton.get(label).vertices)


# -- info ---------------------------------------------------------------------------------------

def test_info_names_the_chunk_files(tmp_path, cli, layers, compress):
    old, _ = layers["image"]
    code, out, err = cli("info", old, "--json")
    assert code == 0, err
    assert json.loads(out)["scales"][0]["chunk_files"] == [SUFFIX[compress]]
    assert cli("transfer", old, tmp_path / "new", *RUN)[0] == 0
    code, out, err = cli("info", tmp_path / "new")
    assert code == 0, err
    assert "chunk files" not in out  # plain names: nothing to say


def test_info_describes_a_cloudvolume_layer(cli, layers, compress):
    old, _ = layers["segmentation"]
    code, out, err = cli("info", old)
    assert code == 0, err
    assert f"chunk files {SUFFIX[compress]}" in out and "pumice transfer" in out


# -- the other operations that read a layer ------------------------------------------------------

def _levels(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in (path / "levels").rglob("*") if p.is_file()
            and p.name != "pumice.json"}


def test_contrast_and_ingest_read_cloudvolume_layers(tmp_path, cli, layers):
    old, image = layers["image"]
    plain = _plain_copy(cli, tmp_path, image, "image", "plain")
    for layer in (old, plain):
        assert cli("contrast", "levels", layer, "--coverage", "1", *RUN)[0] == 0
        assert cli("contrast", "normalize", layer, tmp_path / f"{layer.name}-norm", *RUN)[0] == 0
        assert cli("contrast", "clahe", layer, tmp_path / f"{layer.name}-clahe", "--tile-size", "16", *RUN)[0] == 0
        code, _, err = cli("ingest", layer, tmp_path / f"{layer.name}-ingested", *RUN)
        assert code == 0, err
    assert _levels(old) == _levels(plain) and _levels(old)
    for made in ("norm", "clahe"):
        np.testing.assert_array_equal(_via_tensorstore(tmp_path / f"cvimg-{made}"), _via_tensorstore(tmp_path / f"plain-{made}"))
    np.testing.assert_array_equal(_via_tensorstore(tmp_path / "cvimg-ingested"), image)
    np.testing.assert_array_equal(_via_cloudvolume(tmp_path / "cvimg-ingested"), image)


def test_quantize_reads_a_cloudvolume_layer(tmp_path, cli, compress):
    values = np.random.default_rng(6).uniform(-0.2, 1.2, SHAPE).astype(np.float32)
    old = _cloudvolume_layer(tmp_path / "cvfloat", values, compress, "image")
    plain = _plain_copy(cli, tmp_path, values, "image", "plain")
    for layer in (old, plain):
        code, _, err = cli("quantize", layer, tmp_path / f"{layer.name}-q", *RUN)
        assert code == 0, err
    quantized = _via_tensorstore(tmp_path / "cvfloat-q")
    np.testing.assert_array_equal(quantized, _via_tensorstore(tmp_path / "plain-q"))
    np.testing.assert_array_equal(_via_cloudvolume(tmp_path / "cvfloat-q"), quantized)
    assert len(np.unique(quantized)) > 200


def test_delete_removes_compressed_chunk_files(cli, layers, compress):
    old, data = layers["image"]
    code, _, err = cli("delete", old, "--bounds", "3,7,11,67,71,27", *RUN)  # exactly the first chunk
    assert code == 0, err
    names = _chunk_files(old)
    assert len(names) == 11 and not any(n.startswith("3-67_7-71_11-27") for n in names)
    kept = np.asarray(CloudVolume(f"file://{old}", fill_missing=True)[3:103, 7:97, 11:51])[..., 0]
    np.testing.assert_array_equal(kept[64:], data[64:])
    assert not kept[:64, :64, :16].any()
    code, _, err = cli("delete", old, *RUN)
    assert code == 0, err
    assert not (old / "8_8_40").exists() or not any((old / "8_8_40").iterdir())


# -- finding the chunk files ----------------------------------------------------------------------

def _sparse_layer(path: Path, compress: str, boxes: list[tuple[slice, slice, slice]]) -> np.ndarray:
    """Small chunks (210 of them), only those under ``boxes`` written: the probe's first chunks are absent."""
    info = CloudVolume.create_new_info(num_channels=1, layer_type="image", data_type="uint8", encoding="raw",
                                       resolution=RES, voxel_offset=OFFSET, volume_size=SHAPE, chunk_size=(16, 16, 8))
    cv = CloudVolume(f"file://{path}", info=info, compress=compress)
    cv.commit_info()
    expected = np.zeros(SHAPE, np.uint8)
    rng = np.random.default_rng(7)
    for box in boxes:
        expected[box] = rng.integers(1, 255, expected[box].shape)
        cv[tuple(slice(s.start + o, s.stop + o) for s, o in zip(box, OFFSET))] = expected[box]
    return expected


@pytest.mark.parametrize("where", ["sampled", "listed"])
def test_a_sparse_layer_is_not_taken_for_a_plain_one(tmp_path, cli, compress, where):
    # Grid 7 x 6 x 5: "sampled" is the last chunk (on the probe's lattice), "listed" one chunk off it.
    box = (slice(96, 100), slice(80, 90), slice(32, 40)) if where == "sampled" else (slice(80, 96), slice(64, 80), slice(16, 24))
    expected = _sparse_layer(tmp_path / "old", compress, [box])
    assert len(_chunk_files(tmp_path / "old")) == 1
    code, _, err = cli("transfer", tmp_path / "old", tmp_path / "new", "--chunk-size", "32,32,8", "--fill-missing", *RUN)
    assert code == 0, err
    np.testing.assert_array_equal(_via_tensorstore(tmp_path / "new"), expected)
    layer = Layer.open(str(tmp_path / "old"))
    assert layer.chunk_suffixes(0) == (SUFFIX[compress],)
    np.testing.assert_array_equal(layer.read(layer.bounds(0), 0, fill_missing=True)[..., 0], expected)


def test_a_mixed_scale_is_read_whole(tmp_path, compress):
    """Plain chunk files where the probe looks, a compressed one elsewhere: a strict read still finds it."""
    box = (slice(80, 96), slice(64, 80), slice(16, 24))  # off the probe's lattice and past its first chunks
    expected = _sparse_layer(tmp_path / "old", compress, [(slice(0, 100), slice(0, 90), slice(0, 40))])
    directory = tmp_path / "old" / "8_8_40"
    keep = "83-99_71-87_27-35" + SUFFIX[compress]
    assert (directory / keep).exists()
    decompress = gzip.decompress if compress == "gzip" else brotli.decompress
    for p in directory.iterdir():  # every other chunk file decompressed under its plain name
        if p.name != keep:
            p.with_name(p.name.rsplit(".", 1)[0]).write_bytes(decompress(p.read_bytes()))
            p.unlink()
    layer = Layer.open(str(tmp_path / "old"))
    np.testing.assert_array_equal(layer.read(layer.bounds(0), 0, fill_missing=False)[..., 0], expected)
    assert layer.chunk_suffixes(0) == ("", SUFFIX[compress])
    np.testing.assert_array_equal(layer.read(Bbox.from_shape(np.add(OFFSET, [b.start for b in box]), (16, 16, 8)), 0)[..., 0],
                                  expected[box])


def test_writing_over_compressed_chunks_removes_them(tmp_path, compress):
    path = _cloudvolume_layer(tmp_path / "old", _image(), compress, "image")
    layer = Layer.open(str(path))
    new = np.full((64, 64, 16, 1), 5, np.uint8)
    block = Bbox.from_shape(OFFSET, (64, 64, 16))
    layer.write(block, new, 0)
    # A block of background with --delete-background: no chunk file is left at all.
    layer.write(Bbox.from_shape(np.add(OFFSET, (64, 0, 0)), (36, 64, 16)), np.zeros((36, 64, 16, 1), np.uint8), 0, skip_value=0)
    names = _chunk_files(path)
    assert "3-67_7-71_11-27" in names and not any(n.startswith(("3-67_7-71_11-27.", "67-103_7-71_11-27")) for n in names)
    assert sum(n.endswith(SUFFIX[compress]) for n in names) == 10
    expected = _image()
    expected[:64, :64, :16] = 5
    expected[64:, :64, :16] = 0
    np.testing.assert_array_equal(layer.read(layer.bounds(0), 0)[..., 0], expected)
    cv = CloudVolume(f"file://{path}", fill_missing=True)
    np.testing.assert_array_equal(np.asarray(cv[3:103, 7:97, 11:51])[..., 0], expected)
    np.testing.assert_array_equal(_via_tensorstore(path)[:64, :64, :16], new[..., 0])
