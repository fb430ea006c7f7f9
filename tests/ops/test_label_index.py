"""Label indexes: every body's blocks and supervoxel counts equal NumPy on the whole array (offsets that
are not multiples of 64, negative ones included); DVID's messages decode with classes protoc generates
from a .proto written here; block keys follow DVID's formula; flyemflows' block statistics; a changed
mapping moves only the changed supervoxels; bad input gets one line and exit 2."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from framework import Resume, ingest_array, run_json

from pumice.ops import label_index
from pumice.storage import dvid
from pumice.storage.label_db import open_db

OFFSET = (10, -20, 70)  # not multiples of 64; y crosses zero

PROTO = """
syntax = "proto3";
package checkdvid;
message SVCount { map<uint64, uint32> counts = 1; uint64 surface_mutid = 2; }
message LabelIndex { map<uint64, SVCount> blocks = 1; uint64 label = 2; uint64 last_mutid = 3;
                     string last_mod_time = 4; string last_mod_user = 5; string last_mod_app = 6; }
message LabelIndices { repeated LabelIndex indices = 1; }
message MappingOp { uint64 mutid = 1; uint64 mapped = 2; repeated uint64 original = 3; }
message MappingOps { repeated MappingOp mappings = 1; }
"""


def supervoxels_xyz(seed: int = 0, shape=(150, 140, 100)) -> np.ndarray:
    """Cubes of 10^3 with random supervoxel ids (some above 2^63), a few zeros."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 60, tuple(-(-s // 10) for s in shape)).astype(np.uint64)
    coarse[coarse == 13] = 2**63 + 5
    data = np.repeat(np.repeat(np.repeat(coarse, 10, 0), 10, 1), 10, 2)[: shape[0], : shape[1], : shape[2]]
    return np.asfortranarray(data)


def mapping_of(data: np.ndarray, seed: int = 1) -> np.ndarray:
    """Every supervoxel to one of a few bodies (a tenth as many), as N x 2 uint64."""
    svs = np.unique(data)
    svs = svs[svs != 0]
    rng = np.random.default_rng(seed)
    bodies = (rng.integers(1, max(2, len(svs) // 10), len(svs)) + 10_000).astype(np.uint64)
    return np.stack([svs, bodies], axis=1)


def reference(data: np.ndarray, offset, pairs: np.ndarray | None) -> dict[int, dict[tuple[int, int, int], dict[int, int]]]:
    """body -> block coordinates -> supervoxel -> voxels, by NumPy on the whole array."""
    body_of = dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist())) if pairs is not None else {}
    x, y, z = np.meshgrid(*(np.arange(n) + o for n, o in zip(data.shape, offset)), indexing="ij")
    blocks = np.stack([np.floor_divide(a, 64) for a in (x, y, z)], axis=-1).reshape(-1, 3)
    flat = data.reshape(-1)
    keep = flat != 0
    rows, counts = np.unique(np.concatenate([blocks[keep].astype(np.int64),
                                             flat[keep].astype(np.uint64).view(np.int64)[:, None]], axis=1),
                             axis=0, return_counts=True)
    out: dict[int, dict] = {}
    for (bx, by, bz, sv), n in zip(rows.tolist(), counts.tolist()):
        sv = int(np.int64(sv).view(np.uint64))
        body = body_of.get(sv, sv)
        out.setdefault(body, {}).setdefault((bx, by, bz), {})[sv] = n
    return out


def indexed(path, db: str | None = None) -> dict[int, dict]:
    """The same structure read back through the Python API, partition by partition."""
    index = label_index.open_index(str(path), db)
    out: dict[int, dict] = {}
    for part in range(1 << int(index.meta("index")["partition_bits"])):
        for body, keys, svs, voxels in index.partition_rows(part):
            assert body not in out
            for (bx, by, bz), sv, n in zip(dvid.block_coords(keys).tolist(), svs.tolist(), voxels.tolist()):
                out.setdefault(body, {}).setdefault((bx, by, bz), {})[int(sv)] = int(n)
    return out


def segmentation(cli, root: Path, data: np.ndarray, offset=OFFSET) -> Path:
    return ingest_array(cli, root / "seg", data, "--resolution", "8,8,8", "--offset", ",".join(map(str, offset)),
                        "--chunk-size", "32,32,32", "--type", "segmentation")


@pytest.fixture(scope="module")
def labelops(tmp_path_factory):
    """Classes protoc generates from this test's own labelops.proto (an independent decoder)."""
    from grpc_tools import protoc

    where = tmp_path_factory.mktemp("proto")
    (where / "checkdvid.proto").write_text(PROTO)
    assert protoc.main(["protoc", f"-I{where}", f"--python_out={where}", str(where / "checkdvid.proto")]) == 0
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module("checkdvid_pb2")
    finally:
        sys.path.remove(str(where))


def test_block_keys_follow_dvids_formula():
    coords = np.array([[0, 0, 0], [1, 2, 3], [-1, 0, 0], [0, -3, 0], [5, 6, -7], [2**20 - 1, 0, 0]])
    want = [0, (3 << 42) | (2 << 21) | 1, (1 << 20) | 1, ((1 << 20) | 3) << 21, (((1 << 20) | 7) << 42) | (6 << 21) | 5,
            2**20 - 1]
    assert dvid.block_keys(coords).tolist() == want
    assert dvid.block_coords(np.array(want, np.uint64)).tolist() == coords.tolist()
    assert all(k < 2**63 for k in want)
    with pytest.raises(ValueError):
        dvid.block_keys(np.array([[2**20, 0, 0]]))


def test_index_equals_numpy_and_exports_decode(cli, tmp_path, labelops):
    data = supervoxels_xyz()
    pairs = mapping_of(data)
    np.save(tmp_path / "map.npy", pairs)
    seg = segmentation(cli, tmp_path, data)
    summary = run_json(cli, "label-index", seg, "--mapping", tmp_path / "map.npy", "--shape", "64,64,64",
                       "--workers", "2", "--no-progress", "--export", "dvid", tmp_path / "dvid",
                       "--export", "block-stats", tmp_path / "stats.h5")
    want = reference(data, OFFSET, pairs)
    assert summary["operation"] == "label-index-export"
    assert indexed(seg) == want

    assert decoded(labelops, tmp_path / "dvid") == want  # DVID's LabelIndices, decoded by protoc's classes
    # the mapping: MappingOps and GET .../mappings text, non-identity pairs only
    mapped = {}
    for f in (tmp_path / "dvid" / "mappings").glob("*.pb"):
        ops = labelops.MappingOps()
        ops.ParseFromString(f.read_bytes())
        for op in ops.mappings:
            mapped.update({sv: op.mapped for sv in op.original})
    text = {}
    for f in (tmp_path / "dvid" / "mappings").glob("*.txt"):
        for line in f.read_text().splitlines():
            sv, body = map(int, line.split())
            text[sv] = body
    present = {int(sv) for sv in np.unique(data) if sv}
    expected = {int(sv): int(b) for sv, b in pairs.tolist() if sv in present and sv != b}
    assert mapped == text == expected
    assert (tmp_path / "dvid" / "load.sh").read_text().startswith("#!/bin/sh")

    # flyemflows' block statistics
    with h5py.File(tmp_path / "stats.h5", "r") as f:
        stats = f["stats"][:]
        assert f["stats"].dtype == np.dtype([("segment_id", "<u8"), ("z", "<i4"), ("y", "<i4"), ("x", "<i4"),
                                             ("count", "<u4")])
    rows = {(int(r["segment_id"]), int(r["x"]), int(r["y"]), int(r["z"])): int(r["count"]) for r in stats}
    flat = {(sv, bx * 64, by * 64, bz * 64): n for body in want.values() for (bx, by, bz), c in body.items()
            for sv, n in c.items()}
    assert rows == flat and len(stats) == len(flat)

    # queries: a body, a supervoxel's body, ids above 2^63 exact
    big = 2**63 + 5
    body = int(dict(pairs.tolist())[big])
    found = label_index.body_index(str(seg), body)
    assert big in found["supervoxels"]
    assert found["voxels"] == sum(n for c in want[body].values() for n in c.values())
    assert label_index.bodies_of(str(seg), [big, 999_999]).tolist() == [body, 0]
    code, out, _ = cli("label-index", "query", seg, str(body), "--json")
    assert code == 0 and f'"body": {body}' in out and str(big) in out


def test_without_a_mapping_each_supervoxel_is_a_body_and_db_url(cli, tmp_path):
    data = supervoxels_xyz(2, shape=(70, 66, 65))
    seg = segmentation(cli, tmp_path, data, offset=(-64, 0, 3))
    db = f"sqlite:///{tmp_path / 'elsewhere' / 'index.sqlite'}"
    (tmp_path / "elsewhere").mkdir()
    run_json(cli, "label-index", seg, "--db", db, "--no-progress")
    assert not (seg / "label_index.sqlite").exists()
    assert indexed(seg, db) == reference(data, (-64, 0, 3), None)
    code, _, err = cli("label-index", "query", seg, "1")
    assert code == 2 and "no finished label index" in err


def indexed_with_a_mapping(cli, tmp_path, seed: int, shape):
    """A segmentation, its mapping (a.npy) and its finished index."""
    data = supervoxels_xyz(seed, shape=shape)
    pairs = mapping_of(data)
    np.save(tmp_path / "a.npy", pairs)
    seg = segmentation(cli, tmp_path, data)
    run_json(cli, "label-index", seg, "--mapping", tmp_path / "a.npy", "--no-progress")
    return data, pairs, seg


def test_a_changed_mapping_moves_only_the_changed_supervoxels(cli, tmp_path):
    data, pairs, seg = indexed_with_a_mapping(cli, tmp_path, 3, (100, 90, 70))
    changed = pairs.copy()
    first, second = np.unique(pairs[:, 1])[:2]
    changed[changed[:, 1] == second, 1] = first  # a merge
    changed[0, 1] = 99_999  # a split: one supervoxel to a new body
    np.save(tmp_path / "b.npy", changed)
    summary = run_json(cli, "label-index", seg, "--mapping", tmp_path / "b.npy", "--no-progress")
    assert list(summary["stages"]) == ["move", "recount"]  # the segmentation is not read again
    moved = int((changed[:, 1] != pairs[:, 1]).sum())
    assert summary["stages"]["move"]["totals"]["supervoxels_moved"] == moved
    assert indexed(seg) == reference(data, OFFSET, changed)
    index = open_db(f"sqlite:///{seg / 'label_index.sqlite'}")
    assert index.summary_of(99_999)["supervoxels"] == 1
    assert index.summary_of(int(second)) is None
    # and back to no mapping at all
    run_json(cli, "label-index", seg, "--no-progress")
    assert indexed(seg) == reference(data, OFFSET, None)


def test_bad_input_gets_one_line(cli, tmp_path):
    data = supervoxels_xyz(4, shape=(40, 40, 40))
    seg = segmentation(cli, tmp_path, data)
    img = ingest_array(cli, tmp_path / "img", np.zeros((32, 32, 32), np.uint8), "--resolution", "8,8,8")
    pairs = mapping_of(data)
    cases = []
    np.save(tmp_path / "zero_body.npy", np.array([[int(pairs[0, 0]), 0]], np.uint64))
    cases.append((["label-index", seg, "--mapping", tmp_path / "zero_body.npy"], "to body 0"))
    np.save(tmp_path / "zero_sv.npy", np.array([[0, 5], [7, 8]], np.uint64))
    cases.append((["label-index", seg, "--mapping", tmp_path / "zero_sv.npy"], "supervoxel 0"))
    (tmp_path / "twice.csv").write_text("5,6\n5,7\n")
    cases.append((["label-index", seg, "--mapping", tmp_path / "twice.csv"], "5"))
    cases.append((["label-index", img], "supervoxel segmentation"))
    cases.append((["label-index", seg, "--shape", "32,32,32"], "multiple of DVID's 64^3"))
    cases.append((["label-index", seg, "--export", "neo4j", tmp_path / "x"], "--export neo4j"))
    cases.append((["label-index", "query", seg], "usage"))
    cases.append((["label-index", "query", seg, "abc"], "whole number"))
    for argv, words in cases:
        code, out, err = cli(*argv, "--no-progress")
        assert code == 2, (argv, err)
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)

    # a mapping naming supervoxels the segmentation does not hold: said, exit 2, unless allowed
    np.save(tmp_path / "other.npy", np.concatenate([pairs, np.array([[10**12, 10**12 + 1], [10**12 + 2, 10**12 + 1]], np.uint64)]))
    code, _, err = cli("label-index", seg, "--mapping", tmp_path / "other.npy", "--no-progress")
    assert code == 2 and "2 supervoxel(s) the segmentation does not hold" in err and str(10**12) in err
    code, _, err = cli("label-index", seg, "--mapping", tmp_path / "other.npy", "--no-progress",
                       "--allow-unknown-supervoxels")
    assert code == 0, err
    code, _, err = cli("label-index", "query", seg, "123456789")
    assert code == 2 and "not in the label index" in err


def fast_reference(data: np.ndarray, offset, pairs: np.ndarray) -> dict[int, dict]:
    """``reference`` for uint32 supervoxels of a large array: one fastremap.unique of (block, sv) keys."""
    import fastremap

    blocks = [np.floor_divide(np.arange(n) + o, 64) for n, o in zip(data.shape, offset)]
    low = [b - b.min() for b in blocks]
    span = [int(b.max()) + 1 for b in low]
    linear = (low[0][:, None, None] + span[0] * (low[1][None, :, None] + span[1] * low[2][None, None, :])).astype(np.uint64)
    keys = (linear << np.uint64(32)) | data.astype(np.uint64)
    keys, counts = fastremap.unique(keys[data != 0], return_counts=True)
    body_of = dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    out: dict[int, dict] = {}
    for key, n in zip(keys.tolist(), counts.tolist()):
        sv, index = key & 0xFFFFFFFF, key >> 32
        bx, rest = index % span[0], index // span[0]
        by, bz = rest % span[1], rest // span[1]
        corner = (bx + int(blocks[0].min()), by + int(blocks[1].min()), bz + int(blocks[2].min()))
        out.setdefault(body_of.get(sv, sv), {}).setdefault(corner, {})[sv] = n
    return out


@pytest.mark.slow
@pytest.mark.parametrize("offset", [(0, 0, 0), (37, -5, 100)])
def test_neuroproof_supervoxels_and_bodies(cli, tmp_path, shared_data, offset, labelops):
    with h5py.File(shared_data("neuroproof_sample2.h5"), "r") as f:
        data = np.asfortranarray(f["labels/gt_supervoxels"][:].transpose(2, 1, 0))
        pairs = f["labels/gt_sv_to_body"][:].astype(np.uint64)
    np.save(tmp_path / "sv_to_body.npy", pairs)
    seg = ingest_array(cli, tmp_path / "seg", data, "--resolution", "10,10,10", "--type", "segmentation",
                       "--offset", ",".join(map(str, offset)))
    run_json(cli, "label-index", seg, "--mapping", tmp_path / "sv_to_body.npy", "--workers", "2", "--no-progress",
             "--export", "dvid", tmp_path / "dvid")
    want = fast_reference(data, offset, pairs)
    assert len(want) > 100
    assert indexed(seg) == want
    assert decoded(labelops, tmp_path / "dvid") == want


def decoded(labelops, folder) -> dict[int, dict]:
    """DVID's LabelIndices files read back with protoc's classes."""
    got: dict[int, dict] = {}
    for f in sorted((folder / "indices").glob("*.pb")):
        batch = labelops.LabelIndices()
        batch.ParseFromString(f.read_bytes())
        for index in batch.indices:
            assert index.label not in got
            got[index.label] = {tuple(dvid.block_coords(np.array([key], np.uint64))[0].tolist()): dict(block.counts)
                                for key, block in index.blocks.items()}
    return got


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _rows(seg: Path) -> dict[str, bytes]:
    """The index's rows and bodies as bytes (an SQLite file's own bytes depend on write order)."""
    index = open_db(f"sqlite:///{seg / 'label_index.sqlite'}")
    rows = []
    for part in range(1 << int(index.meta("index")["partition_bits"])):
        for body, keys, svs, voxels in index.partition_rows(part):
            rows.append(np.stack([np.full(len(keys), body, np.uint64), keys, svs, voxels.astype(np.uint64)], axis=1))
    table = np.concatenate(rows)
    table = table[np.lexsort(table.T[::-1])]
    bodies = [list(index.summary_of(int(b)).values()) for b in np.unique(table[:, 0])]
    return {"rows": table.tobytes(), "bodies": np.array(bodies, np.uint64).tobytes()}


def _case(cli, root, shape):
    root.mkdir(parents=True, exist_ok=True)
    data = supervoxels_xyz(5, shape=shape)
    pairs = mapping_of(data)
    np.save(root / "map.npy", pairs)
    seg = segmentation(cli, root, data, offset=(-30, 0, 64))
    return ["label-index", str(seg), "--mapping", str(root / "map.npy"), "--shape", "64,64,64"], seg


def _runner_case(cli, root):
    return _case(cli, root, (120, 100, 60))


def _resume_case(cli, root):
    return _case(cli, root, (290, 256, 100))  # 5 x 4 x 3 = 60 tasks


_runner_case.files = _resume_case.files = _rows
RUNNER_CASES = {"label-index": _runner_case}
RESUME_CASES = {"label-index": Resume(_resume_case, "count")}


def test_an_update_stopped_midway_resumes_and_queries_wait(cli, tmp_path):
    data, pairs, seg = indexed_with_a_mapping(cli, tmp_path, 8, (70, 60, 50))
    changed = pairs.copy()
    changed[::3, 1] = 77_777
    np.save(tmp_path / "b.npy", changed)
    plan, _ = label_index.plan(str(seg), mapping=str(tmp_path / "b.npy"))
    assert [s.name for s in plan.stages] == ["move", "recount"]
    from pumice.execution import local

    plan.prepare()
    ledger_job = plan.job_id
    for task in plan.stages[0].tasks():  # the moves, then a "kill" before the recount
        local.run_task(task, plan.destination, ledger_job, "move")
    code, _, err = cli("label-index", "query", seg, "77777")
    assert code == 2 and "being updated" in err
    summary = run_json(cli, "label-index", seg, "--mapping", tmp_path / "b.npy", "--no-progress")
    assert summary["job"] == ledger_job and summary["skipped"] == plan.stages[0].count
    assert indexed(seg) == reference(data, OFFSET, changed)


def test_a_layer_in_s3_with_a_database_here(cli, tmp_path, s3_env):
    """The segmentation (and the work files, edges' tables) in S3, the index in a local SQLite file."""
    from pumice.ops import edges

    data = supervoxels_xyz(9, shape=(70, 60, 50))
    pairs = mapping_of(data)
    np.save(tmp_path / "map.npy", pairs)
    seg = segmentation(cli, tmp_path, data)
    bucket = "s3://pumice-test/label-index/seg"
    assert cli("--s3-endpoint", s3_env, "transfer", seg, bucket, "--no-progress")[0] == 0
    code, _, err = cli("--s3-endpoint", s3_env, "label-index", bucket, "--mapping", tmp_path / "map.npy", "--no-progress")
    assert code == 2 and "--db" in err  # no local folder to put SQLite in
    db = f"sqlite:///{tmp_path / 'index.sqlite'}"
    code, _, err = cli("--s3-endpoint", s3_env, "label-index", bucket, "--mapping", tmp_path / "map.npy", "--db", db,
                       "--workers", "2", "--no-progress")
    assert code == 0, err
    assert indexed(bucket, db) == reference(data, OFFSET, pairs)
    code, _, err = cli("--s3-endpoint", s3_env, "edges", bucket, "--workers", "2", "--no-progress")
    assert code == 0, err
    table = edges.read_edges(bucket).to_pandas()
    assert len(table) > 10 and (table["id_a"] < table["id_b"]).all()
