import json

import numpy as np
import h5py
from cloudvolume import CloudVolume

from pumice.sample import make_em_sample
from pumice.cli.demo import DRIFT, SAMPLE_SHAPE_ZYX


def test_info_human_and_json(tmp_path, cli):
    data = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    np.save(tmp_path / "a.npy", data)
    code, _, err = cli("ingest", tmp_path / "a.npy", tmp_path / "l", "--resolution", "4,4,40", "--offset", "1,2,3")
    assert code == 0, err
    code, out, _ = cli("info", tmp_path / "l")
    assert code == 0
    assert "image uint16, 1 channel(s), 1 scale(s)" in out
    assert "size 7,6,5" in out and "bounds 1,2,3 - 8,8,8 voxels = 4,8,120 - 32,32,320 nm" in out
    assert "ingest from" in out and "INCOMPLETE" not in out
    code, out, _ = cli("info", tmp_path / "l", "--json")
    d = json.loads(out)
    assert d["scales"][0]["bounds_nm"] == [4, 8, 120, 32, 32, 320]
    assert d["jobs"][0]["status"] == "complete" and d["provenance"][0]["method"]["task"] == "ingest"


def test_info_reports_an_unfinished_job(tmp_path, cli):
    np.save(tmp_path / "a.npy", np.zeros((8, 8, 8), np.uint8))
    cli("ingest", tmp_path / "a.npy", tmp_path / "l", "--resolution", "1,1,1", "--chunk-size", "4,4,4", "--memory", "100")
    job = next((tmp_path / "l" / ".pumice" / "jobs").iterdir())
    state = json.loads((job / "job.json").read_text())
    (job / "job.json").write_text(json.dumps(state | {"status": "running"}))
    for marker in list((job / "done" / "ingest").iterdir())[:3]:
        marker.unlink()
    code, out, _ = cli("info", tmp_path / "l")
    assert code == 0 and "INCOMPLETE" in out and "5/8 tasks done" in out


def test_info_on_a_non_layer_is_a_clear_error(tmp_path, cli):
    code, out, err = cli("info", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "no Precomputed layer" in err


def test_demo_builds_and_ingests_the_sample(tmp_path, cli):
    code, out, err = cli("demo", tmp_path / "demo", "--workers", "2")
    assert code == 0, err
    demo_out = out
    assert "pumice view" in out and "demo finished" in out
    image, labels = make_em_sample(SAMPLE_SHAPE_ZYX, seed=0, drift=DRIFT)
    em = CloudVolume(f"file://{tmp_path}/demo/em")
    seg = CloudVolume(f"file://{tmp_path}/demo/segmentation")
    assert em.layer_type == "image" and seg.layer_type == "segmentation"
    np.testing.assert_array_equal(em[:, :, :][..., 0], image.transpose(2, 1, 0))
    np.testing.assert_array_equal(seg[:, :, :][..., 0], labels.transpose(2, 1, 0))
    for layer in (em, seg):  # a pyramid: at least one mip above the first
        assert len(layer.info["scales"]) >= 2
    # Every cell is meshed (sharded multi-resolution), and CloudVolume reads the meshes.
    cells = [int(i) for i in np.unique(labels) if i]
    assert seg.info["mesh"] == "mesh" and sorted(seg.mesh.meta.info["sharding"]) and len(cells) > 5
    for cell in cells[:3]:
        m = seg.mesh.get(cell)
        m = m[cell] if isinstance(m, dict) else m
        assert len(m.faces) > 100
    assert seg.info["skeletons"] == "skeletons"
    skeletonized = [c for c in cells if (tmp_path / "demo" / "segmentation" / "skeletons" / str(c)).exists()]
    assert len(skeletonized) > len(cells) // 2
    assert len(seg.skeleton.get(skeletonized[0]).vertices) > 5
    code, out, _ = cli("info", tmp_path / "demo" / "segmentation")
    assert code == 0 and f"meshes: mesh (multi-resolution Draco, sharded, {len(cells)} objects)" in out
    assert f"skeletons: skeletons (Precomputed, {len(skeletonized)} objects)" in out
    em1 = CloudVolume(f"file://{tmp_path}/demo/em", mip=1)
    assert em1.shape[0] == 128 and em1[em1.bounds].mean() > 50
    # The contrast step: the levels plot, and normalized sections whose brightness no longer drifts.
    assert (tmp_path / "demo" / "em-levels.png").stat().st_size > 10_000
    normalized = np.asarray(CloudVolume(f"file://{tmp_path}/demo/em-normalized")[:, :, :])[..., 0].mean(axis=(0, 1))
    drifting = image.mean(axis=(1, 2))
    assert np.ptp(drifting) > 20 and np.ptp(normalized) < np.ptp(drifting) / 3, (np.ptp(drifting), np.ptp(normalized))
    clahe = CloudVolume(f"file://{tmp_path}/demo/em-clahe", mip=2)
    assert tuple(clahe.shape[:3]) == (64, 64, 16)
    # stats: the cells as segment properties; ccl: the pieces equal cc3d's, mapped back to their cells.
    properties = seg.info["segment_properties"]
    listed = json.loads((tmp_path / "demo" / "segmentation" / properties / "info").read_text())["inline"]["ids"]
    assert sorted(int(i) for i in listed) == cells
    import cc3d

    pieces = CloudVolume(f"file://{tmp_path}/demo/segmentation-pieces")[:, :, :][..., 0]
    want = cc3d.connected_components(np.asfortranarray(labels.transpose(2, 1, 0)), connectivity=26)
    assert int(pieces.max()) == int(want.max())
    table = np.loadtxt(tmp_path / "demo" / "pieces-to-cells.csv", delimiter=",", skiprows=1, dtype=np.uint64, ndmin=2)
    back = np.asarray(table[:, 1])[np.asarray(pieces, np.int64) - 1]
    np.testing.assert_array_equal(np.where(pieces > 0, back, 0), labels.transpose(2, 1, 0))
    # proofreading: supervoxels that map back to the cells, label indexes, one closed mesh per cell, edges,
    # and the printed cleave request answered by a real server.
    root = tmp_path / "demo"
    svs = CloudVolume(f"file://{root}/supervoxels")[:, :, :][..., 0]
    mapping = np.loadtxt(root / "sources" / "supervoxels-to-cells.csv", delimiter=",", skiprows=1, dtype=np.uint64, ndmin=2)
    lookup = np.zeros(int(mapping[:, 0].max()) + 1, np.uint64)
    lookup[mapping[:, 0].astype(np.int64)] = mapping[:, 1]
    np.testing.assert_array_equal(lookup[np.asarray(svs, np.int64)], labels.transpose(2, 1, 0))
    assert len(mapping) > 2 * len(cells)
    from pumice.ops import label_index

    biggest = int(np.bincount(labels.ravel())[1:].argmax()) + 1
    assert label_index.body_index(str(root / "supervoxels"), biggest)["voxels"] == int((labels == biggest).sum())
    assert list((root / "dvid" / "indices").glob("*.pb")) and (root / "block-stats.h5").exists()
    bodies = CloudVolume(f"file://{root}/supervoxels", mesh_dir="mesh_bodies")
    m = bodies.mesh.get(biggest)
    m = m[biggest] if isinstance(m, dict) else m
    assert len(m.faces) > 100
    request_line = next(line for line in demo_out.splitlines() if line.strip().startswith("curl "))
    request = json.loads(request_line.split("-d '", 1)[1].split("'", 1)[0])
    from pumice.ops.remap import read_mapping
    from pumice.serve.cleave import CleaveIndex, cleave, read_edge_table

    index = CleaveIndex(*read_mapping(str(root / "sources" / "supervoxels-to-cells.csv")),
                        *read_edge_table(str(root / "supervoxels" / "edges" / "merge-table.csv")))
    reply = cleave(index, request)
    assert set(reply["assignments"]) >= {"1", "2"} and not reply.get("errors")
    # watershed of the image's membranes, agglomerated into cells close to the segmentation
    voi_line = next(line for line in demo_out.splitlines() if line.startswith("VOI                    "))
    assert float(voi_line.split()[1]) < 1.0, voi_line
    record = json.loads((root / "membrane-cells" / "evaluations" / "segmentation.json").read_text())
    assert record["voi"] < 1.0 and record["adapted_rand_error"] < 0.3 and record["truth_objects"] == len(np.unique(labels)), record
    # alignment: the misaligned copy put back (adjacent sections correlate as the sample's own do)
    summary = next(line for line in demo_out.splitlines() if line.startswith("adjacent sections' normalized"))
    before, after = (float(v.split(" ")[0]) for v in summary.split("median: ")[1].split(", ")[:2])
    assert before < 0.5 < 0.9 < after, summary
    aligned = CloudVolume(f"file://{root}/em-aligned")
    assert aligned.shape[2] == SAMPLE_SHAPE_ZYX[0] and (root / "em-aligned" / "align" / "report.png").exists()
    code, out, _ = cli("info", tmp_path / "demo" / "em")
    assert code == 0 and "levels: mip 0, sections 0-63, 25% of each sampled (levels/0/<z>)" in out
    with h5py.File(tmp_path / "demo" / "sources" / "labels.h5") as f:
        assert f["labels"].shape == SAMPLE_SHAPE_ZYX
    # Deterministic: the demo's first step run again over its output gives the same bytes. (The whole
    # demo run twice took 40 s more of the suite's 15 minutes; each step's --restart is what it exercised.)
    before = {p.name: p.read_bytes() for p in (tmp_path / "demo" / "em" / "8_8_8").iterdir()}
    code, _, err = cli("ingest", tmp_path / "demo" / "sources" / "em_sections", tmp_path / "demo" / "em", "--resolution",
                       "8,8,8", "--chunk-size", "64,64,64", "--restart", "--no-progress")
    assert code == 0, err
    after = {p.name: p.read_bytes() for p in (tmp_path / "demo" / "em" / "8_8_8").iterdir()}
    assert before == after
