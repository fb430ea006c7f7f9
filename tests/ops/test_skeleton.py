"""pumice skeleton: one tree per object across blocks, read back by CloudVolume, exported as SWC."""

import json

import numpy as np
import pytest
from cloudvolume import CloudVolume
from framework import LABELS, Resume, ingest_array, ingested, runner_labels

RES = (8.0, 8.0, 10.0)
OFFSET = (5, 3, 2)
SHAPE = (160, 96, 40)  # x, y, z
TUBE = (1, (10, 150))  # id, x range of the straight tube
Y_SHAPE = 2
SMALL = 3


def _labels() -> np.ndarray:
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    lab = np.zeros(SHAPE, np.uint32)
    lab[((y - 20) ** 2 + ((z - 20) * 1.25) ** 2 < 5**2) & (x >= TUBE[1][0]) & (x < TUBE[1][1])] = TUBE[0]
    points = np.stack([x, y, z * 1.25], -1).astype(float)

    def segment(p, q, radius, label):
        p, q = np.array(p, float), np.array(q, float)
        d = q - p
        t = np.clip(((points - p) @ d) / (d @ d), 0, 1)
        lab[np.linalg.norm(points - (p + t[..., None] * d), axis=-1) < radius] = label

    for end in ((150, 52, 25), (150, 88, 25)):  # a Y: stem, then two arms, all across several blocks
        segment((10, 70, 25), (80, 70, 25), 4.5, Y_SHAPE)
        segment((80, 70, 25), end, 4.5, Y_SHAPE)
    lab[150:156, 5:10, 5:10] = SMALL  # 150 voxels, about 50 nm of cable at most
    return lab


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    from pumice.cli.main import main

    root = tmp_path_factory.mktemp("skeleton")
    lab = _labels()
    np.save(root / "lab.npy", lab.transpose(2, 1, 0))
    assert main(["ingest", str(root / "lab.npy"), str(root / "seg"), "--resolution", ",".join(map(str, RES)),
                 "--offset", ",".join(map(str, OFFSET)), "--chunk-size", "32,32,32", "--no-progress"]) == 0
    return root / "seg", lab


def _tree_facts(s) -> dict:
    degree = np.bincount(s.edges.ravel(), minlength=len(s.vertices))
    components = len(s.components())
    return {"components": components, "cycles": len(s.edges) - len(s.vertices) + components,
            "branch_points": int((degree >= 3).sum()), "cable": float(s.cable_length())}


@pytest.mark.parametrize("sharded", [False, True])
def test_one_tree_per_object_across_blocks(seg, cli, sharded, tmp_path):
    path, lab = seg
    directory = "sk_sharded" if sharded else "sk_plain"
    code, out, err = cli("skeleton", path, "--shape", "32,32,32", "--dir", directory, "--tick-threshold", "200",
                         "--min-cable", "100", "--dust-threshold", "50", *(["--sharded"] if sharded else []))
    assert code == 0, err
    assert "2 skeleton(s)" in out and "1 object(s) under --min-cable dropped" in out, out  # the small block: too little cable
    cv = CloudVolume(f"file://{path}")  # reads the info's "skeletons" directory
    assert cv.info["skeletons"] == directory
    assert bool(json.loads((path / directory / "info").read_text()).get("sharding")) == sharded

    tube = cv.skeleton.get(TUBE[0])
    facts = _tree_facts(tube)
    assert facts["components"] == 1 and facts["cycles"] == 0 and facts["branch_points"] == 0
    true_length = (TUBE[1][1] - TUBE[1][0] - 1) * RES[0]  # centre of the first voxel to centre of the last
    assert abs(facts["cable"] - true_length) / true_length < 0.05, facts

    y = _tree_facts(cv.skeleton.get(Y_SHAPE))
    assert y["components"] == 1 and y["cycles"] == 0 and y["branch_points"] == 1, y

    # Every vertex lies in its object, within one voxel.
    for label in (TUBE[0], Y_SHAPE):
        s = cv.skeleton.get(label)
        voxel = np.floor(s.vertices / np.array(RES) - np.array(OFFSET)).astype(int)
        inside = [(lab[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, max(k - 1, 0):k + 2] == label).any() for i, j, k in voxel]
        assert all(inside), label
        assert len(s.radius) == len(s.vertices) and (s.radius > 0).all()
    with pytest.raises(Exception):
        cv.skeleton.get(SMALL)


def test_export_swc_and_npz(seg, cli, tmp_path):
    path, _ = seg
    assert cli("skeleton", path, "--shape", "64,64,40", "--dir", "sk_export", "--tick-threshold", "200")[0] == 0
    code, out, err = cli("skeleton", "export", path, "--dir", "sk_export", "--ids", f"{Y_SHAPE},999", "--out", tmp_path / "swc")
    assert code == 0, err
    assert "wrote 1 SWC" in out and "999" in out
    # An SWC reader written against the format: "n type x y z radius parent", parent -1 at the root.
    rows = [line.split() for line in (tmp_path / "swc" / f"{Y_SHAPE}.swc").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    table = np.array(rows, dtype=float)
    assert table.shape[1] == 7
    ids, parents = table[:, 0].astype(int), table[:, 6].astype(int)
    assert (parents == -1).sum() == 1 and set(parents[parents != -1]) <= set(ids)
    children = np.bincount(parents[parents != -1], minlength=ids.max() + 1)
    assert (children >= 2).sum() == 1  # the branch point
    assert (table[:, 5] > 0).all()  # radii
    s = CloudVolume(f"file://{path}").skeleton.get(Y_SHAPE)
    assert len(table) == len(s.vertices)

    code, _, err = cli("skeleton", "export", path, "--dir", "sk_export", "--ids", str(TUBE[0]), "--format", "npz",
                       "--out", tmp_path / "npz")
    assert code == 0, err
    arrays = np.load(tmp_path / "npz" / f"{TUBE[0]}.npz")
    assert arrays["vertices"].shape[1] == 3 and len(arrays["radius"]) == len(arrays["vertices"])


def test_ids_exclude_and_missing(seg, cli):
    path, _ = seg
    code, _, err = cli("skeleton", path, "--dir", "sk_ids", "--ids", f"{TUBE[0]},4242", "--tick-threshold", "200")
    assert code == 0 and "4242" in err and "warning" in err
    assert (path / "sk_ids" / str(TUBE[0])).exists() and not (path / "sk_ids" / str(Y_SHAPE)).exists()
    code, _, err = cli("skeleton", path, "--dir", "sk_ids", "--ids", str(Y_SHAPE), "--tick-threshold", "200")
    assert code == 0, err
    assert (path / "sk_ids" / str(TUBE[0])).exists() and (path / "sk_ids" / str(Y_SHAPE)).exists()  # added, others kept
    code, _, err = cli("skeleton", path, "--dir", "sk_excl", "--exclude-ids", str(TUBE[0]), "--tick-threshold", "200")
    assert code == 0, err
    assert not (path / "sk_excl" / str(TUBE[0])).exists() and (path / "sk_excl" / str(Y_SHAPE)).exists()


@pytest.mark.parametrize("argv, message", [
    (["--mip", "2"], "no mip 2"),
    (["--teasar-scale", "-1"], "--teasar-scale must be zero or more"),
    (["--ids", "1,x"], "--ids must be comma-separated"),
    (["--dir", "a/b"], "--dir"),
])
def test_bad_input(seg, cli, argv, message):
    path, _ = seg
    code, _, err = cli("skeleton", path, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_image_layer_and_export_without_skeletons(tmp_path, cli):
    np.save(tmp_path / "img.npy", np.zeros((4, 8, 8), np.uint8))
    assert cli("ingest", tmp_path / "img.npy", tmp_path / "img", "--resolution", "4,4,40")[0] == 0
    code, _, err = cli("skeleton", tmp_path / "img")
    assert code == 2 and "image layer" in err
    np.save(tmp_path / "lab.npy", np.ones((4, 8, 8), np.uint32))
    assert cli("ingest", tmp_path / "lab.npy", tmp_path / "lab", "--resolution", "4,4,40")[0] == 0
    code, _, err = cli("skeleton", "export", tmp_path / "lab", "--ids", "1", "--out", tmp_path / "out")
    assert code == 2 and "run `pumice skeleton` first" in err


def test_cross_sections(seg, cli):
    path, lab = seg
    code, _, err = cli("skeleton", path, "--dir", "sk_xs", "--ids", str(TUBE[0]), "--cross-sections", "--tick-threshold", "200")
    assert code == 0, err
    info = json.loads((path / "sk_xs" / "info").read_text())
    assert [a["id"] for a in info["vertex_attributes"]] == ["radius", "cross_sectional_area"]
    s = CloudVolume(f"file://{path}").skeleton.get(TUBE[0])
    area = np.asarray(s.cross_sectional_area)
    assert len(area) == len(s.vertices)
    section = (lab[80] == TUBE[0]).sum() * RES[1] * RES[2]  # the tube's section across x, from its voxels
    middle = (s.vertices[:, 0] / RES[0] - OFFSET[0] > 30) & (s.vertices[:, 0] / RES[0] - OFFSET[0] < 130)
    assert abs(np.median(area[middle]) - section) / section < 0.25, (np.median(area[middle]), section)


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _balls() -> np.ndarray:
    """Overlapping random balls in 128 x 96 x 64: objects that cross many blocks, so merges weld fragments."""
    rng = np.random.default_rng(4)
    shape = (128, 96, 64)
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lab = np.zeros(shape, np.uint32)
    for label in range(1, 61):
        c = rng.uniform(0, shape)
        r = rng.uniform(4, 14)
        lab[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < r * r] = label
    return lab


def _runner_case(cli, root):
    layer = ingested(cli, root, runner_labels(root), "lab", LABELS)
    return ["skeleton", str(layer), "--shape", "16,16,16", "--dust-threshold", "10", "--min-cable", "0"], layer


def _resume_case(sharded: bool):
    def setup(cli, root):
        root.mkdir(parents=True, exist_ok=True)
        layer = ingest_array(cli, root / "lab", _balls(), "--resolution", "8,8,10", "--chunk-size", "32,32,32")
        return ["skeleton", str(layer), "--shape", "16,16,16", "--dust-threshold", "100", "--min-cable", "0",
                *(["--sharded"] if sharded else [])], layer
    return setup


RUNNER_CASES = {"skeleton": _runner_case}
RESUME_CASES = {"skeleton-forge-sharded": Resume(_resume_case(True), "forge", slow=True),
                "skeleton-merge": Resume(_resume_case(False), "merge", slow=True)}
