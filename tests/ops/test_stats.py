"""Stats: per-object counts, boxes and centroids made block by block equal fastremap/cc3d on the whole
array; the table reads with PyArrow and pandas; segment properties read through CloudVolume's files;
`pumice objects` answers from the spatial index exactly what the array holds in a box."""

from __future__ import annotations

import glob
import gzip
import json

import cc3d
import fastremap
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from framework import Resume, ingest_array, run_json

from pumice.geometry import Bbox
from pumice.ops import stats

OFFSET = (5, 3, 2)


def labels_xyz(seed: int = 0, shape=(90, 70, 30)) -> np.ndarray:
    """Blobs of a few labels, some crossing many blocks, some ids above 2^53 (float64 cannot hold them)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 40, tuple(-(-s // 6) for s in shape)).astype(np.uint64)
    coarse[coarse == 7] = 2**60 + 12345
    data = np.repeat(np.repeat(np.repeat(coarse, 6, 0), 6, 1), 6, 2)[: shape[0], : shape[1], : shape[2]]
    return np.asfortranarray(data)


def reference(data: np.ndarray, offset) -> dict[int, dict]:
    """fastremap's counts, cc3d's boxes and centroids on the whole array, in the volume's voxels."""
    ids, counts = fastremap.unique(data, return_counts=True)
    dense, remap = fastremap.renumber(data, preserve_zero=True, in_place=False)
    found = cc3d.statistics(dense)
    out = {}
    for label, count in zip(ids.tolist(), counts.tolist()):
        if label == 0:
            continue
        n = remap[label]
        box = found["bounding_boxes"][n]
        out[label] = {"voxels": count, "lo": [s.start + o for s, o in zip(box, offset)],
                      "hi": [s.stop + o for s, o in zip(box, offset)],
                      "centroid": (np.asarray(found["centroids"][n]) + offset).tolist()}
    return out


def table_of(path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(f"{path}/stats/0/table/part-*.parquet"))])


@pytest.mark.parametrize("sharded", [False, True])
def test_blockwise_stats_equal_the_whole_array(tmp_path, cli, sharded):
    data = labels_xyz()
    path = ingest_array(cli, tmp_path / "seg", data, "--resolution", "8,8,40", "--offset", ",".join(map(str, OFFSET)),
                        "--chunk-size", "16,16,8", "--type", "segmentation", *(["--sharded"] if sharded else []))
    summary = run_json(cli, "stats", path, "--memory", "30KB", "--workers", "2", "--no-progress")
    assert summary["stages"]["forge"]["tasks"] >= 20 and summary["stages"]["merge"]["tasks"] >= 2
    want = reference(data, OFFSET)
    table = pq.read_table(str(path / "stats" / "0" / "table")).to_pandas()  # the directory reads as one table
    assert len(table) == len(want) and table["id"].is_unique
    assert len(table_of(path)) == len(want)  # and with pandas, part by part
    for row in table.itertuples():
        expected = want[int(row.id)]
        assert row.voxels == expected["voxels"]
        assert [row.x0, row.y0, row.z0] == expected["lo"] and [row.x1, row.y1, row.z1] == expected["hi"]
        np.testing.assert_allclose([row.centroid_x, row.centroid_y, row.centroid_z], expected["centroid"], rtol=1e-9)
        assert row.volume_nm3 == expected["voxels"] * 8 * 8 * 40
    assert 2**60 + 12345 in set(table["id"].astype(np.uint64).tolist())  # a large id survives exactly


def test_segment_properties_list_the_largest_and_cloudvolume_reads_them(tmp_path, cli):
    from cloudfiles import CloudFiles
    from cloudvolume import CloudVolume

    data = labels_xyz(seed=1)
    path = ingest_array(cli, tmp_path / "seg", data, "--resolution", "8,8,40", "--chunk-size", "32,32,16",
                        "--type", "segmentation")
    code, _, err = cli("stats", path, "--properties", "10", "--no-progress")
    assert code == 0, err
    assert "segment properties list the 10 largest" in err
    cv = CloudVolume(f"file://{path}")
    assert cv.info["segment_properties"] == "segment_properties"
    props = CloudFiles(cv.cloudpath).get_json("segment_properties/info")
    assert props["@type"] == "neuroglancer_segment_properties"
    ids, counts = fastremap.unique(data, return_counts=True)
    largest = sorted(zip(counts[ids != 0].tolist(), ids[ids != 0].tolist()), key=lambda c: (-c[0], c[1]))[:10]
    listed = dict(zip(map(int, props["inline"]["ids"]), props["inline"]["properties"][0]["values"]))
    assert listed == {label: count for count, label in largest}
    assert props["inline"]["properties"][0]["data_type"] == "uint32"


def test_top_prints_the_largest_and_json(tmp_path, cli):
    data = labels_xyz(seed=2)
    path = ingest_array(cli, tmp_path / "seg", data, "--resolution", "8,8,40", "--type", "segmentation")
    code, out, err = cli("stats", path, "--top", "3", "--json", "--no-progress")
    assert code == 0, err
    rows = json.loads(out.strip().splitlines()[-1])
    ids, counts = fastremap.unique(data, return_counts=True)
    assert [r["voxels"] for r in rows] == sorted(counts[ids != 0].tolist(), reverse=True)[:3]
    code, out, _ = cli("stats", path, "--top", "3", "--no-progress")  # done already: only the table is read
    assert code == 0 and "Nothing to do" in out and str(rows[0]["id"]) in out


def test_objects_in_a_box_are_exactly_the_arrays(tmp_path, cli):
    data = labels_xyz(seed=3)
    path = ingest_array(cli, tmp_path / "seg", data, "--resolution", "8,8,40", "--offset", ",".join(map(str, OFFSET)),
                        "--chunk-size", "16,16,8", "--type", "segmentation")
    assert cli("stats", path, "--memory", "30KB", "--no-progress")[0] == 0
    rng = np.random.default_rng(5)
    for _ in range(50):
        lo = rng.integers(0, np.array(data.shape) - 1)
        hi = lo + rng.integers(1, np.array(data.shape) - lo + 1)
        box = Bbox(tuple(lo + OFFSET), tuple(hi + OFFSET))
        want = np.unique(data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
        assert stats.objects_in(str(path), box).tolist() == want[want != 0].tolist()
    code, out, _ = cli("objects", path, "--bounds", f"{OFFSET[0]},{OFFSET[1]},{OFFSET[2]},{OFFSET[0] + 10},"
                       f"{OFFSET[1] + 10},{OFFSET[2] + 5}", "--json")
    assert code == 0
    want = np.unique(data[:10, :10, :5])
    assert json.loads(out) == want[want != 0].tolist()


@pytest.mark.parametrize("args, words", [
    (["stats", "IMAGE"], ["image uint8", "segmentation"]),
    (["stats", "SEG", "--properties", "-1"], ["--properties"]),
    (["objects", "SEG", "--bounds", "0,0,0,999,10,10"], ["outside"]),
    (["objects", "FRESH", "--bounds", "0,0,0,4,4,4"], ["no spatial index", "pumice stats"]),
])
def test_bad_input_is_one_line(tmp_path, cli, args, words):
    data = labels_xyz(shape=(24, 24, 12))
    seg = ingest_array(cli, tmp_path / "seg", data, "--resolution", "8,8,40", "--type", "segmentation")
    fresh = ingest_array(cli, tmp_path / "fresh", data, "--resolution", "8,8,40", "--type", "segmentation")
    image = ingest_array(cli, tmp_path / "img", np.zeros((16, 16, 4), np.uint8), "--resolution", "8,8,40")
    assert cli("stats", seg, "--no-progress")[0] == 0
    places = {"IMAGE": image, "SEG": seg, "FRESH": fresh}
    code, _, err = cli(*[str(places.get(a, a)) for a in args])
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("pumice: error:"), err
    for word in words:
        assert word in err, err


@pytest.mark.slow
@pytest.mark.parametrize("which", ["pinky40", "neuroproof"])
def test_real_segmentations(tmp_path, cli, shared_data, which):
    if which == "pinky40":
        import crackle

        data = np.asfortranarray(crackle.decompress(gzip.decompress(shared_data("pinky40_seg_512.npy.ckl.gz").read_bytes())))
        resolution = "32,32,40"
    else:
        import h5py

        with h5py.File(shared_data("neuroproof_sample2.h5"), "r") as f:
            data = np.asfortranarray(f["labels/gt_supervoxels"][:].transpose(2, 1, 0))
        resolution = "10,10,10"
    path = ingest_array(cli, tmp_path / which, data, "--resolution", resolution, "--type", "segmentation")
    assert run_json(cli, "stats", path, "--workers", "2", "--no-progress")["ran"] > 0
    want = reference(data, (0, 0, 0))
    table = pq.read_table(str(path / "stats" / "0" / "table")).to_pandas().set_index("id")
    assert len(table) == len(want)
    for label, expected in want.items():
        row = table.loc[label]
        assert row.voxels == expected["voxels"]
        assert [row.x0, row.y0, row.z0, row.x1, row.y1, row.z1] == expected["lo"] + expected["hi"]
        np.testing.assert_allclose([row.centroid_x, row.centroid_y, row.centroid_z], expected["centroid"], rtol=1e-9)


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _runner_case(cli, root):
    root.mkdir(parents=True, exist_ok=True)
    path = ingest_array(cli, root / "seg", labels_xyz(), "--resolution", "8,8,40", "--chunk-size", "16,16,8",
                        "--type", "segmentation")
    return ["stats", str(path), "--memory", "30KB"], path


RUNNER_CASES = {"stats": _runner_case}
RESUME_CASES = {"stats": Resume(_runner_case, "forge")}


def surface_reference(data: np.ndarray, resolution) -> dict[int, float]:
    """cc3d.contacts on the whole array, background and the outside made labels of their own: an
    object's exposed faces are its contacts with everything."""
    background, outside = np.uint64(2**63), np.uint64(2**63 + 1)
    whole = np.pad(np.where(data == 0, background, data), 1, constant_values=outside)
    area: dict[int, float] = {}
    for (a, b), value in cc3d.contacts(np.asfortranarray(whole), connectivity=6, surface_area=True,
                                       anisotropy=resolution).items():
        for label in (int(a), int(b)):
            area[label] = area.get(label, 0.0) + value
    return {k: v for k, v in area.items() if k < 2**63}


def test_surface_area_equals_cc3d_contacts(tmp_path, cli):
    data = labels_xyz(3, shape=(50, 44, 20))
    path = ingest_array(cli, tmp_path / "seg", data, "--resolution", "4,6,40", "--chunk-size", "16,16,8",
                        "--type", "segmentation", "--offset", ",".join(map(str, OFFSET)))
    run_json(cli, "stats", path, "--surface-area", "--shape", "16,16,8", "--no-progress")
    table = pq.read_table(str(path / "stats" / "0" / "table")).to_pandas().set_index("id")
    want = surface_reference(data, (4, 6, 40))
    assert sorted(table.index.tolist()) == sorted(want)
    for label, area in want.items():
        assert table.loc[label, "surface_nm2"] == pytest.approx(area, rel=1e-12), label


def test_dust_global_of_mesh_and_skeleton_reads_stats_counts(tmp_path, cli):
    """With stats present, mesh and skeleton --dust-global leave out objects under N voxels in the
    whole volume (counted from the array here); skeleton --dust-global without stats names the fix."""
    data = np.zeros((48, 40, 24), np.uint64, order="F")
    data[2:40, 3:30, 2:20] = 10  # big, crossing blocks
    data[42:46, 5:9, 5:9] = 11  # 64 voxels
    data[20:22, 34:36, 10:12] = 12  # 8 voxels
    data[44:47, 30:38, 12:22] = 13  # 240 voxels, crossing blocks
    path = ingest_array(cli, tmp_path / "seg", data, "--resolution", "8,8,8", "--chunk-size", "16,16,16",
                        "--type", "segmentation")
    code, _, err = cli("skeleton", path, "--dust-global", "100", "--no-progress")
    assert code == 2 and "pumice stats" in err and len(err.splitlines()) == 1, err
    run_json(cli, "stats", path, "--no-progress")
    ids, counts = np.unique(data[data > 0], return_counts=True)
    big = {int(i) for i, c in zip(ids, counts) if c >= 100}
    assert big == {10, 13}
    run_json(cli, "mesh", path, "--dust-global", "100", "--shape", "16,16,16", "--no-progress")
    meshed = {int(p.name.split(":")[0]) for p in (path / "mesh").iterdir() if p.name.split(":")[0].isdigit()}
    assert meshed == big
    run_json(cli, "skeleton", path, "--dust-global", "100", "--dust-threshold", "0", "--min-cable", "0", "--shape",
             "16,16,16", "--no-progress")
    skeletonized = {int(p.name) for p in (path / "skeletons").iterdir() if p.name.isdigit()}
    assert skeletonized and skeletonized <= big
    assert stats.voxel_counts(str(path), 0, np.array([10, 11, 12, 13, 99], np.uint64)).tolist() == [
        int(counts[ids == i][0]) if i in ids else 0 for i in (10, 11, 12, 13, 99)]
