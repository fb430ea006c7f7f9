"""Remap: every block relabelled equals fastremap.remap on the whole array, for every mapping format,
read back with TensorStore and CloudVolume; bad mappings are one line; the mapping travels with the
job (staged beside the output), so queue workers elsewhere never need the user's file."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import fastremap
import numpy as np
import pytest

from framework import Resume, ingest_array, read_cloudvolume, read_tensorstore, run_json
from reference import global_grid_levels

OFFSET = (3, 7, 11)
SHAPE = (70, 60, 20)  # x, y, z


def supervoxels(seed: int = 0) -> np.ndarray:
    """Blocks of 5^3 voxels, each its own supervoxel id (some 0), X, Y, Z uint32."""
    rng = np.random.default_rng(seed)
    coarse = rng.permutation(np.arange(14 * 12 * 4)).reshape(14, 12, 4).astype(np.uint32) * 7 + 1
    coarse[rng.random(coarse.shape) < 0.05] = 0
    return np.asfortranarray(np.repeat(np.repeat(np.repeat(coarse, 5, 0), 5, 1), 5, 2)[: SHAPE[0], : SHAPE[1], : SHAPE[2]])


def a_mapping(labels: np.ndarray, seed: int = 1, share: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """``share`` of the supervoxels onto a tenth as many bodies (large ids); the rest left out."""
    rng = np.random.default_rng(seed)
    svs = np.unique(labels)
    svs = svs[svs != 0]
    svs = np.sort(rng.choice(svs, int(len(svs) * share), replace=False))
    bodies = (rng.integers(0, max(1, len(svs) // 10), len(svs)) + 10**6).astype(np.uint64)
    return svs.astype(np.uint64), bodies


def write_mapping(path: Path, svs, bodies, fmt: str) -> Path:
    pairs = np.stack([svs, bodies], axis=1).astype(np.uint64)
    if fmt == "csv":
        path = path.with_suffix(".csv")
        path.write_text("supervoxel,body\n" + "".join(f"{s},{b}\n" for s, b in pairs))
    elif fmt == "csv-no-header":
        path = path.with_suffix(".csv")
        path.write_text("".join(f"{s}, {b}\n" for s, b in pairs))
    elif fmt == "npy":
        path = path.with_suffix(".npy")
        np.save(path, pairs.astype(np.int64))
    elif fmt == "dvid-text":
        path = path.with_suffix(".txt")
        path.write_text("".join(f"{s}\t{b}\n" for s, b in pairs))
    elif fmt == "dvid-binary":
        path = path.with_suffix(".bin")
        path.write_bytes(pairs.astype("<u8").tobytes())
    else:
        raise AssertionError(fmt)
    return path


def expected(labels: np.ndarray, svs, bodies, unmapped: str = "keep") -> np.ndarray:
    """fastremap on the whole array: the independent reference."""
    table = dict(zip(svs.tolist(), bodies.tolist()))
    if unmapped == "zero":
        table.update({int(v): 0 for v in np.unique(labels) if int(v) not in table})
    return fastremap.remap(labels.astype(np.uint64), table, preserve_missing_labels=True)


def ingest_labels(cli, root: Path, labels: np.ndarray, name: str = "seg") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return ingest_array(cli, root / name, labels, "--resolution", "8,8,40", "--offset", ",".join(map(str, OFFSET)),
                        "--chunk-size", "16,16,8", "--type", "segmentation")


@pytest.mark.parametrize("unmapped", ["keep", "zero"])
@pytest.mark.parametrize("fmt", ["csv", "csv-no-header", "npy", "dvid-text", "dvid-binary"])
def test_equals_fastremap_on_the_whole_array(tmp_path, cli, fmt, unmapped):
    labels = supervoxels()
    svs, bodies = a_mapping(labels)
    source = ingest_labels(cli, tmp_path, labels)
    mapping = write_mapping(tmp_path / "map", svs, bodies, fmt)
    summary = run_json(cli, "remap", source, tmp_path / "out", "--mapping", mapping, "--unmapped", unmapped,
                       "--memory", "40KB", "--workers", "2", "--no-progress")
    assert summary["tasks"] >= 8  # several blocks, each with its own labels
    want = expected(labels, svs, bodies, unmapped)
    via_ts, origin = read_tensorstore(tmp_path / "out")
    assert origin == OFFSET
    np.testing.assert_array_equal(via_ts[..., 0], want)
    np.testing.assert_array_equal(read_cloudvolume(tmp_path / "out")[..., 0], want)
    info = json.loads((tmp_path / "out" / "info").read_text())
    assert info["type"] == "segmentation" and info["data_type"] == "uint32"  # bodies fit: the source's type
    assert info["scales"][0]["encoding"] == "compressed_segmentation"


def test_a_pyramid_in_the_same_pass_is_the_mode_on_the_global_grid(tmp_path, cli):
    labels = supervoxels(seed=2)
    svs, bodies = a_mapping(labels, seed=3)
    source = ingest_labels(cli, tmp_path, labels)
    mapping = write_mapping(tmp_path / "map", svs, bodies, "csv")
    code, _, err = cli("remap", source, tmp_path / "out", "--mapping", mapping, "--num-mips", "2", "--factor", "2,2,1",
                       "--sharded", "--memory", "100KB", "--no-progress")
    assert code == 0, err
    for mip, (first, level) in enumerate(global_grid_levels(expected(labels, svs, bodies).astype(np.uint32), OFFSET,
                                                            [(2, 2, 1)] * 2, "mode"), start=1):
        got, origin = read_tensorstore(tmp_path / "out", mip)
        assert origin == first
        np.testing.assert_array_equal(got, level, err_msg=f"mip {mip}")


def test_bodies_beyond_the_source_type_make_a_uint64_layer(tmp_path, cli):
    labels = supervoxels()
    svs = np.unique(labels)[1:].astype(np.uint64)
    bodies = svs + np.uint64(2**40)
    source = ingest_labels(cli, tmp_path, labels)
    code, _, err = cli("remap", source, tmp_path / "out", "--mapping", write_mapping(tmp_path / "m", svs, bodies, "npy"),
                       "--no-progress")
    assert code == 0, err
    assert "uint64" in err
    assert json.loads((tmp_path / "out" / "info").read_text())["data_type"] == "uint64"
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "out")[0][..., 0], expected(labels, svs, bodies))


BAD = [
    ("three-columns", "map.csv", b"sv,body\n1,2\n3,4,5\n", ["line 3 has 3 columns", "two"]),
    ("not-a-number", "map.csv", b"1,2\n3,x\n", ["line 2", "'x' is not a whole number"]),
    ("negative-id", "map.txt", b"1 2\n-3 4\n", ["line 2", "negative id -3"]),
    ("two-bodies", "map.csv", b"1,2\n5,6\n1,3\n", ["supervoxel 1", "two bodies (2 and 3)"]),
    ("npy-wrong-shape", "map.npy", None, ["shape (4, 3)", "N x 2"]),
    ("binary-odd-length", "map.bin", b"\x01" * 20, ["20 bytes", "uint64 pairs"]),
    ("missing-file", None, None, ["no mapping file", "nope.csv"]),
]


@pytest.mark.parametrize("name, filename, content, words", BAD, ids=[b[0] for b in BAD])
def test_bad_mappings_are_one_line_and_write_nothing(tmp_path, cli, name, filename, content, words):
    source = ingest_labels(cli, tmp_path, supervoxels())
    if filename is None:
        mapping = tmp_path / "nope.csv"
    else:
        mapping = tmp_path / filename
        if content is None:
            np.save(mapping, np.arange(12).reshape(4, 3))
        else:
            mapping.write_bytes(content)
    code, out, err = cli("remap", source, tmp_path / "out", "--mapping", mapping, "--no-progress")
    assert code == 2 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("pumice: error: "), err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "out").exists()


def test_refuses_an_image_and_a_bad_unmapped_choice(tmp_path, cli):
    image = ingest_array(cli, tmp_path / "img", np.zeros((16, 16, 4), np.uint8), "--resolution", "4,4,40")
    mapping = write_mapping(tmp_path / "m", np.array([1], np.uint64), np.array([2], np.uint64), "csv")
    code, _, err = cli("remap", image, tmp_path / "out", "--mapping", mapping)
    assert code == 2 and "relabels a segmentation" in err
    code, _, err = cli("remap", image, tmp_path / "out", "--mapping", mapping, "--unmapped", "drop")
    assert code == 2 and "--unmapped" in err


def test_the_mapping_travels_with_the_job(tmp_path, cli, workers):
    """The mapping exists only where the job is planned; queue workers started elsewhere finish it. The
    job id follows the mapping's content: one changed line makes another job."""
    labels = supervoxels()
    svs, bodies = a_mapping(labels)
    source = ingest_labels(cli, tmp_path, labels)
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    mapping = write_mapping(laptop / "map", svs, bodies, "csv")
    plan = run_json(cli, "remap", source, tmp_path / "out", "--mapping", mapping, "--memory", "40KB", "--dry-run")
    assert plan["recipe"]["args"]["mapping"].startswith(f"file://{tmp_path}/out/.pumice/inputs/")

    lines = mapping.read_text().splitlines()
    lines[5] = lines[5].split(",")[0] + ",4242"
    changed = laptop / "changed.csv"
    changed.write_text("\n".join(lines) + "\n")
    other = run_json(cli, "remap", source, tmp_path / "out", "--mapping", changed, "--memory", "40KB", "--dry-run")
    assert other["job"] != plan["job"]
    same = write_mapping(laptop / "same", svs, bodies, "dvid-binary")  # the same mapping in another format
    assert run_json(cli, "remap", source, tmp_path / "out", "--mapping", same, "--memory", "40KB", "--dry-run")["job"] == plan["job"]

    queue = f"fq://{tmp_path}/queue"
    code, out, err = cli("remap", source, tmp_path / "out", "--mapping", mapping, "--memory", "40KB", "--queue", queue)
    assert code == 0 and "queued" in out, err
    shutil.rmtree(laptop)  # the user's files are gone: workers must not need them
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    results = workers.run(queue, 2, cwd=str(elsewhere))
    assert any("finished: every stage is done" in err for _, err in results)
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "out")[0][..., 0], expected(labels, svs, bodies))


# -- real data (slow; skipped without ../shared/data) -------------------------------------------------

@pytest.mark.slow
def test_pinky40_onto_a_tenth_as_many_bodies(tmp_path, cli, shared_data):
    import crackle

    whole = crackle.decompress(gzip.decompress(shared_data("pinky40_seg_512.npy.ckl.gz").read_bytes()))
    svs = np.unique(whole)  # the mapping covers the whole volume's ids; the run remaps its lower half in z
    svs = svs[svs != 0].astype(np.uint64)
    labels = np.asfortranarray(whole[:, :, :256])
    bodies = np.random.default_rng(0).integers(1, len(svs) // 10 + 1, len(svs)).astype(np.uint64)
    mapping = write_mapping(tmp_path / "pinky", svs, bodies, "csv")
    ingest_array(cli, tmp_path / "pinky40", labels, "--resolution", "32,32,40", "--type", "segmentation")
    summary = run_json(cli, "remap", tmp_path / "pinky40", tmp_path / "out", "--mapping", mapping, "--workers", "2",
                       "--no-progress")
    assert summary["ran"] == summary["tasks"]
    want = expected(labels, svs, bodies).astype(np.uint32)
    assert len(np.unique(want)) <= len(svs) // 10 + 1
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "out")[0][..., 0], want)
    from cloudvolume import CloudVolume  # a corner block: CloudVolume decodes the whole volume slowly

    corner = CloudVolume(f"file://{tmp_path / 'out'}", mip=0)[384:512, 384:512, 0:128][..., 0]
    np.testing.assert_array_equal(np.asarray(corner), want[384:512, 384:512, 0:128])


@pytest.mark.slow
def test_neuroproof_supervoxels_with_their_table_are_the_neuron_ids(tmp_path, cli, shared_data):
    import h5py

    path = shared_data("neuroproof_sample2.h5")
    with h5py.File(path, "r") as f:
        table = f["labels/gt_sv_to_body"][:]
        neurons = f["labels/neuron_ids"][:].transpose(2, 1, 0)
    np.save(tmp_path / "table.npy", table)
    code, _, err = cli("ingest", f"{path}:/labels/gt_supervoxels", tmp_path / "sv", "--resolution", "10,10,10",
                       "--workers", "2", "--no-progress")
    assert code == 0, err
    code, _, err = cli("remap", tmp_path / "sv", tmp_path / "bodies", "--mapping", tmp_path / "table.npy", "--workers", "2",
                       "--no-progress")
    assert code == 0, err
    np.testing.assert_array_equal(read_tensorstore(tmp_path / "bodies")[0][..., 0], neurons)
    np.testing.assert_array_equal(read_cloudvolume(tmp_path / "bodies")[..., 0], neurons)
    assert len(np.unique(neurons)) == 526


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _runner_case(cli, root):
    labels = supervoxels()
    source = ingest_labels(cli, root, labels)
    mapping = write_mapping(root / "map", *a_mapping(labels), "csv")
    return ["remap", str(source), str(root / "out"), "--mapping", str(mapping), "--num-mips", "1", "--memory", "40KB"], \
        root / "out"


def _resume_case(cli, root):
    labels = np.asfortranarray(np.tile(supervoxels(), (3, 3, 2)))
    source = ingest_labels(cli, root, labels)
    mapping = write_mapping(root / "map", *a_mapping(labels), "dvid-text")
    return ["remap", str(source), str(root / "out"), "--mapping", str(mapping), "--memory", "40KB"], root / "out"


RUNNER_CASES = {"remap": _runner_case}
RESUME_CASES = {"remap": Resume(_resume_case, "remap")}
