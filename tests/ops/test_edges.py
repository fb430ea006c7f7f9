"""Edges: the supervoxel adjacency table equals NumPy's face contacts on the whole array (pairs, areas,
mean scores, the first face's voxels), whatever the blocks; Parquet and the merge-table CSV agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework import Resume, ingest_array, run_json

from pumice.ops import edges

OFFSET = (10, -20, 70)


def supervoxels_xyz(seed=0, shape=(70, 60, 50)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 25, tuple(-(-s // 7) for s in shape)).astype(np.uint32)
    return np.asfortranarray(np.repeat(np.repeat(np.repeat(coarse, 7, 0), 7, 1), 7, 2)[: shape[0], : shape[1], : shape[2]])


def reference(labels: np.ndarray, values: np.ndarray | None, kind: str, offset) -> pd.DataFrame:
    """Every face between two different non-zero labels, grouped by pair, on the whole array."""
    rows = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        below, above = labels[tuple(lo)], labels[tuple(hi)]
        touching = (below != above) & (below > 0) & (above > 0)
        where = np.argwhere(touching)
        u, v = below[touching].astype(np.int64), above[touching].astype(np.int64)
        if kind == "boundary":
            score = (values[tuple(lo)][touching].astype(np.float64) + values[tuple(hi)][touching]) / 2
        elif kind == "affinities":
            score = values[tuple(hi) + (axis,)][touching].astype(np.float64)
        else:
            score = np.zeros(len(u))
        rows.append(pd.DataFrame({"a": np.minimum(u, v), "b": np.maximum(u, v), "score": score, "x": where[:, 0],
                                  "y": where[:, 1], "z": where[:, 2], "face_axis": axis, "a_low": u < v}))
    faces = pd.concat(rows).sort_values(["z", "y", "x", "face_axis"], kind="stable")
    grouped = faces.groupby(["a", "b"], sort=True)
    out = grouped.agg(area=("score", "size"), mean=("score", "mean"), high=("score", "max"), low=("score", "min"),
                      x=("x", "first"), y=("y", "first"),
                      z=("z", "first"), face_axis=("face_axis", "first"), a_low=("a_low", "first")).reset_index()
    step = np.eye(3, dtype=np.int64)[out["face_axis"].to_numpy()]
    low = out[["x", "y", "z"]].to_numpy() + np.asarray(offset)
    high = low + step
    a_low = out["a_low"].to_numpy()[:, None]
    out[["xa", "ya", "za"]] = np.where(a_low, low, high)
    out[["xb", "yb", "zb"]] = np.where(a_low, high, low)
    return out


def check(table: pd.DataFrame, want: pd.DataFrame, kind: str) -> None:
    table = table.sort_values(["id_a", "id_b"]).reset_index(drop=True)
    assert table["id_a"].tolist() == want["a"].tolist() and table["id_b"].tolist() == want["b"].tolist()
    assert table["area"].tolist() == want["area"].tolist()
    for column in ("xa", "ya", "za", "xb", "yb", "zb"):
        assert table[column].tolist() == want[column].tolist(), column
    expected = {"boundary": want["mean"], "affinities": 1 - want["mean"], "area": 1 / want["area"]}[kind]
    np.testing.assert_allclose(table["score"].to_numpy(), expected.to_numpy(), rtol=1e-9)
    if kind != "area" and "max_score" in table:  # the highest face cost: boundary's max, 1 - the lowest affinity
        highest = want["high"] if kind == "boundary" else 1 - want["low"]
        np.testing.assert_allclose(table["max_score"].to_numpy(), highest.to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("kind", ["boundary", "affinities", "area"])
def test_edges_equal_numpy_face_contacts(cli, tmp_path, kind):
    labels = supervoxels_xyz()
    seg = ingest_array(cli, tmp_path / "seg", labels, "--resolution", "8,8,8", "--offset", ",".join(map(str, OFFSET)),
                       "--chunk-size", "16,16,16", "--type", "segmentation")
    rng = np.random.default_rng(1)
    values, options = None, []
    if kind == "boundary":
        raw = rng.integers(0, 256, labels.shape).astype(np.uint8)
        ingest_array(cli, tmp_path / "b", raw, "--resolution", "8,8,8", "--offset", ",".join(map(str, OFFSET)))
        values, options = raw / 255.0, ["--boundary", tmp_path / "b"]
    elif kind == "affinities":
        aff = rng.random(labels.shape + (3,), dtype=np.float32)
        ingest_array(cli, tmp_path / "a", aff, "--resolution", "8,8,8", "--offset", ",".join(map(str, OFFSET)))
        values, options = aff, ["--affinities", tmp_path / "a"]
    summary = run_json(cli, "edges", seg, *options, "--shape", "16,32,16", "--workers", "2", "--no-progress")
    want = reference(labels, values, kind, OFFSET)
    assert summary["stages"]["merge"]["totals"]["edges"] == len(want) > 50
    table = edges.read_edges(str(seg)).to_pandas()
    assert ("max_score" in table) == (kind != "area")
    check(table, want, kind)
    csv = pd.read_csv(seg / "edges" / "merge-table.csv")
    assert list(csv.columns) == ["id_a", "id_b", "xa", "ya", "za", "xb", "yb", "zb", "score"]
    assert len(csv) == len(table)
    check(csv.merge(table[["id_a", "id_b", "area"]], on=["id_a", "id_b"]), want, kind)


def test_other_blocks_give_the_same_table_and_invert(cli, tmp_path):
    labels = supervoxels_xyz(3, shape=(40, 40, 30))
    seg = ingest_array(cli, tmp_path / "seg", labels, "--resolution", "8,8,8", "--type", "segmentation",
                       "--chunk-size", "8,8,8")
    raw = np.random.default_rng(4).integers(0, 256, labels.shape).astype(np.uint8)
    ingest_array(cli, tmp_path / "b", raw, "--resolution", "8,8,8", "--chunk-size", "8,8,8")
    tables = []
    for shape in ("8,8,8", "40,40,30"):
        run_json(cli, "edges", seg, "--boundary", tmp_path / "b", "--invert", "--shape", shape, "--no-progress",
                 "--name", f"e{shape[0]}")
        tables.append(edges.read_edges(str(seg), f"e{shape[0]}").to_pandas().sort_values(["id_a", "id_b"]))
    pd.testing.assert_frame_equal(tables[0].reset_index(drop=True), tables[1].reset_index(drop=True), rtol=1e-12)
    check(tables[0], reference(labels, 1 - raw / 255.0, "boundary", (0, 0, 0)), "boundary")


def test_bad_input(cli, tmp_path):
    labels = supervoxels_xyz(5, shape=(20, 20, 20))
    seg = ingest_array(cli, tmp_path / "seg", labels, "--resolution", "8,8,8", "--type", "segmentation")
    small = ingest_array(cli, tmp_path / "small", np.zeros((10, 20, 20), np.uint8), "--resolution", "8,8,8")
    two = ingest_array(cli, tmp_path / "two", np.zeros((20, 20, 20, 2), np.float32), "--resolution", "8,8,8")
    image = ingest_array(cli, tmp_path / "img", np.zeros((20, 20, 20), np.uint8), "--resolution", "8,8,8")
    for argv, words in ((["edges", seg, "--boundary", small], "must be the same voxels"),
                        (["edges", seg, "--affinities", two], "have 3"),
                        (["edges", seg, "--boundary", two], "has 2 channel"),
                        (["edges", image], "image layer"),
                        (["edges", seg, "--invert"], "--invert applies"),
                        (["edges", seg, "--name", "a/b"], "plain directory")):
        code, _, err = cli(*argv, "--no-progress")
        assert code == 2, (argv, err)
        assert words in err and len(err.strip().splitlines()) == 1, (argv, err)


@pytest.mark.slow
def test_neuroproof_boundary_from_raw(cli, tmp_path, shared_data):
    """Supervoxels scored by neuroproof's raw image (dark membranes: --invert), equal to NumPy."""
    import h5py

    with h5py.File(shared_data("neuroproof_sample2.h5"), "r") as f:  # a 160^3 corner: the pandas reference is slow
        labels = np.asfortranarray(f["labels/gt_supervoxels"][:160, :160, :160].transpose(2, 1, 0))
        raw = np.asfortranarray(f["raw"][:160, :160, :160].transpose(2, 1, 0))
    seg = ingest_array(cli, tmp_path / "seg", labels, "--resolution", "10,10,10", "--type", "segmentation")
    ingest_array(cli, tmp_path / "raw", raw, "--resolution", "10,10,10")
    run_json(cli, "edges", seg, "--boundary", tmp_path / "raw", "--invert", "--workers", "2", "--no-progress")
    want = reference(labels, 1 - raw / 255.0, "boundary", (0, 0, 0))
    assert len(want) > 10_000
    check(edges.read_edges(str(seg)).to_pandas(), want, "boundary")


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _case(cli, root, shape):
    root.mkdir(parents=True, exist_ok=True)
    labels = supervoxels_xyz(6, shape=shape)
    seg = ingest_array(cli, root / "seg", labels, "--resolution", "8,8,8", "--type", "segmentation",
                       "--chunk-size", "8,8,8")
    raw = np.random.default_rng(7).integers(0, 256, labels.shape).astype(np.uint8)
    ingest_array(cli, root / "raw", raw, "--resolution", "8,8,8", "--chunk-size", "8,8,8")
    return ["edges", str(seg), "--boundary", str(root / "raw"), "--shape", "16,16,16"], seg


def _runner_case(cli, root):
    return _case(cli, root, (40, 32, 24))


def _resume_case(cli, root):
    return _case(cli, root, (64, 64, 48))  # 48 forge tasks


RUNNER_CASES = {"edges": _runner_case}
RESUME_CASES = {"edges": Resume(_resume_case, "forge")}
