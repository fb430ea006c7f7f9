import json
import struct

import DracoPy
import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume

from pumice.ops import mesh
from pumice.storage import meshes, sharding
from framework import LABELS, Resume, ingest_array, ingested, runner_labels
from reference import closed, enclosed_volume, mesh_deviation, weld_faces

RES = (8.0, 8.0, 12.0)
OFFSET = (3, 7, 11)


def _blobs(shape=(60, 56, 40)) -> np.ndarray:
    """X, Y, Z labels: interior objects crossing many 16^3 blocks, one touching a face, one tiny."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    lab = np.zeros(shape, np.uint64)
    lab[((x - 30) ** 2 + (y - 26) ** 2 + ((z - 20) * 1.5) ** 2) < 17**2] = 7  # spans 3x3x3 blocks
    lab[((x - 9) ** 2 + (y - 44) ** 2 + (z - 12) ** 2) < 6**2] = 9
    lab[(x - 48) ** 2 + (y - 8) ** 2 < 5**2] = 12  # a tube through the z faces
    lab[50:52, 45:47, 30:32] = 2**40 + 5  # 8 voxels: dust, and a 64-bit id
    return lab


@pytest.fixture
def seg(tmp_path, cli):
    lab = _blobs()
    np.save(tmp_path / "lab.npy", lab.transpose(2, 1, 0))
    path = tmp_path / "seg"
    code, _, err = cli("ingest", tmp_path / "lab.npy", path, "--resolution", ",".join(map(str, RES)),
                       "--offset", ",".join(map(str, OFFSET)), "--chunk-size", "16,16,16")
    assert code == 0, err
    return path, lab


def _get(cv, label, **options):
    m = cv.mesh.get(label, **options)
    return m[label] if isinstance(m, dict) else m


@pytest.mark.parametrize("sharded", [False, True])
def test_unsimplified_meshes_are_closed_and_enclose_the_voxels(seg, cli, sharded):
    path, lab = seg
    flags = ["--sharded"] if sharded else []
    code, out, err = cli("mesh", path, "--shape", "16,16,16", "--no-simplify", *flags)
    assert code == 0, err
    cv = CloudVolume(f"file://{path}")
    for label in (7, 9):  # objects that do not touch the volume's faces, split across blocks
        m = _get(cv, label)
        faces = weld_faces(m.vertices, m.faces)
        assert closed(faces), label
        expected = (lab == label).sum() * np.prod(RES)
        assert abs(enclosed_volume(m.vertices, m.faces) - expected) / expected < 0.05
    # Vertices sit in the layer's physical frame: voxel i spans [i, i + 1) * resolution.
    m = _get(cv, 9)
    lo = (np.argwhere(lab == 9).min(axis=0) + OFFSET) * RES
    hi = (np.argwhere(lab == 9).max(axis=0) + 1 + np.array(OFFSET)) * RES
    assert (m.vertices >= lo - 1e-3).all() and (m.vertices <= hi + 1e-3).all()
    # Objects at the volume's faces are closed there too.
    assert closed(weld_faces(*(lambda m: (m.vertices, m.faces))(_get(cv, 12))))


def test_simplified_vertices_stay_within_max_error(seg, cli, tmp_path):
    path, _ = seg
    assert cli("mesh", path, "--shape", "16,16,16", "--no-simplify", "--dir", "plain")[0] == 0
    assert cli("mesh", path, "--shape", "16,16,16", "--max-error", "10", "--dir", "simple")[0] == 0
    plain = _get(CloudVolume(f"file://{path}", mesh_dir="plain"), 7)
    simple = _get(CloudVolume(f"file://{path}", mesh_dir="simple"), 7)
    assert len(simple.faces) < len(plain.faces) / 2
    assert closed(weld_faces(simple.vertices, simple.faces))
    assert mesh_deviation(simple.vertices, simple.faces, plain.vertices, plain.faces) <= 10 + 1e-3


def _shapes() -> np.ndarray:
    """X, Y, Z labels at 16 x 16 x 20 nm: a sphere, a torus, and a tube crossing four 32^3 blocks."""
    shape = (128, 72, 64)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    zz = z * 20 / 16  # isotropic units of 16 nm
    lab = np.zeros(shape, np.uint32)
    lab[(x - 30) ** 2 + (y - 36) ** 2 + (zz - 40) ** 2 < 22**2] = 1
    ring = np.sqrt((x - 88) ** 2 + (y - 36) ** 2) - 20
    lab[ring**2 + (zz - 40) ** 2 < 8**2] = 2
    lab[(5 <= x) & (x < 123) & ((y - 62) ** 2 + (zz - 16) ** 2 < 5**2)] = 3
    return lab


@pytest.mark.parametrize("sharded", [False, True])
def test_simplified_shapes_stay_within_max_error_closed_and_hold_their_volume(tmp_path, cli, sharded):
    """The deviation is measured both ways against the unsimplified surface, not assumed."""
    lab = _shapes()
    path = ingest_array(cli, tmp_path / "shapes", lab, "--resolution", "16,16,20", "--chunk-size", "32,32,32")
    flags = ["--shape", "32,32,32", "--no-progress", *(["--sharded"] if sharded else [])]
    assert cli("mesh", path, *flags)[0] == 0  # default: max error 40 nm
    assert cli("mesh", path, *flags, "--no-simplify", "--dir", "plain")[0] == 0
    plain, simple = (CloudVolume(f"file://{path}", mesh_dir=d) for d in ("plain", "mesh"))
    for label in (1, 2, 3):
        a, b = _get(plain, label), _get(simple, label)
        assert len(b.faces) < len(a.faces) / 4, label
        assert closed(weld_faces(b.vertices, b.faces)), label
        assert mesh_deviation(b.vertices, b.faces, a.vertices, a.faces) <= 40, label
        expected = (lab == label).sum() * 16 * 16 * 20
        assert abs(enclosed_volume(b.vertices, b.faces) - expected) / expected < 0.05, label
        if sharded:  # each coarser level within its own error, 40 * 2**level nm (the manifest's lod_scales)
            triangles = [len(b.faces)]
            for lod in (1, 2):
                c = _get(simple, label, lod=lod)
                triangles.append(len(c.faces))
                assert mesh_deviation(c.vertices, c.faces, a.vertices, a.faces) <= 40 * 2**lod, (label, lod)
            assert triangles[0] > triangles[2] and triangles[1] >= triangles[2], (label, triangles)


@pytest.mark.parametrize("sharded", [False, True])
def test_simplified_meshes_of_thin_parts_stay_closed(tmp_path, cli, sharded):
    """Simplification collapses thin parts (lone voxels, one-voxel rods) into back-to-back triangle
    pairs; welding must keep both, or the object gets holes (pinky40's neurites had thousands of
    open edges when the merge dropped repeated triangles)."""
    rng = np.random.default_rng(3)
    shape = (48, 40, 32)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    lab = np.zeros(shape, np.uint32)
    lab[(x - 24) ** 2 + (y - 20) ** 2 + (z - 16) ** 2 < 10**2] = 5
    lab[(rng.random(shape) < 0.01) & (lab == 0)] = 5  # lone voxels of the same object in every block
    lab[4:44, 3, 3] = 5  # a one-voxel rod through three blocks
    path = ingest_array(cli, tmp_path / "thin", lab, "--resolution", "8,8,12", "--chunk-size", "16,16,16")
    code, _, err = cli("mesh", path, "--shape", "16,16,16", "--max-error", "40", "--no-progress",
                       *(["--sharded"] if sharded else []))
    assert code == 0, err
    m = _get(CloudVolume(f"file://{path}"), 5)
    assert closed(weld_faces(m.vertices, m.faces))


def test_sharded_multires_is_read_by_cloudvolume_and_tensorstore(seg, cli):
    path, lab = seg
    code, out, err = cli("mesh", path, "--shape", "16,16,16", "--sharded", "--lods", "3", "--no-simplify")
    assert code == 0, err
    info = json.loads((path / "mesh" / "info").read_text())
    assert info["@type"] == "neuroglancer_multilod_draco" and info["sharding"]["hash"] == "murmurhash3_x86_128"
    assert json.loads((path / "info").read_text())["mesh"] == "mesh"
    cv = CloudVolume(f"file://{path}")
    legacy_dir = path / "legacy"
    assert cli("mesh", path, "--shape", "16,16,16", "--dir", "legacy", "--no-simplify")[0] == 0
    reference = CloudVolume(f"file://{path}", mesh_dir="legacy")
    store = ts.KvStore.open({"driver": "neuroglancer_uint64_sharded", "base": f"file://{path}/mesh/",
                             "metadata": info["sharding"]}).result()
    for label in (7, 9, 12, 2**40 + 5):
        m = _get(cv, label)
        ref = _get(reference, label)
        # Level 0 is the legacy mesh split at forge-block boundaries. Within 5% (the acceptance bound):
        # the known node-plane bug (see the xfail above) costs 1-2%.
        assert abs(enclosed_volume(m.vertices, m.faces) - enclosed_volume(ref.vertices, ref.faces)) / enclosed_volume(ref.vertices, ref.faces) < 0.05
        manifest = store.read(struct.pack(">Q", label)).result().value
        assert manifest, label
        num_lods = struct.unpack_from("<I", manifest, 24)[0]
        assert num_lods == 3
    # Each level is coarser: fewer triangles (for an object big enough to simplify).
    shard = info["sharding"]
    triangles = _triangles_per_lod(path / "mesh", 7, shard)
    assert triangles[0] > triangles[1] > triangles[2] > 0
    assert legacy_dir.exists()


def _triangles_per_lod(mesh_dir, label, spec):
    name = sharding.shard_name(int(sharding.shard_numbers([label], spec)[0]), spec)
    blob = (mesh_dir / name).read_bytes()
    start, end = meshes.decode_shard(blob, spec)[label]
    manifest = blob[start:end]
    data = blob[start - meshes.fragment_data_size(manifest) : start]
    num_lods = struct.unpack_from("<I", manifest, 24)[0]
    position = 28 + 16 * num_lods
    counts = np.frombuffer(manifest, "<u4", num_lods, position)
    position += 4 * num_lods
    offset, out = 0, []
    for n in counts.tolist():
        position += 12 * n
        sizes = np.frombuffer(manifest, "<u4", n, position)
        position += 4 * n
        total = 0
        for size in sizes.tolist():
            if size:
                total += len(DracoPy.decode(data[offset : offset + size]).faces)
            offset += size
        out.append(total)
    return out


def test_ids_exclude_and_dust(seg, cli):
    path, lab = seg
    code, _, err = cli("mesh", path, "--shape", "16,16,16", "--ids", "7,9")
    assert code == 0, err
    assert mesh.meshed_objects(str(path)) == [7, 9]
    assert not (path / "mesh" / "12:0").exists()
    before = (path / "mesh" / "7:0:all").read_bytes()
    # An --ids run adds objects and leaves the others alone.
    assert cli("mesh", path, "--shape", "16,16,16", "--ids", "12")[0] == 0
    assert mesh.meshed_objects(str(path)) == [7, 9, 12]
    assert (path / "mesh" / "7:0:all").read_bytes() == before
    # Dust: the 8-voxel object goes with a global threshold of 9, stays with 8.
    assert cli("mesh", path, "--shape", "16,16,16", "--dir", "d9", "--dust-global", "9", "--exclude-ids", "12")[0] == 0
    assert mesh.meshed_objects(str(path), "d9") == [7, 9]
    assert cli("mesh", path, "--shape", "16,16,16", "--dir", "d8", "--dust-global", "8")[0] == 0
    assert mesh.meshed_objects(str(path), "d8") == [7, 9, 12, 2**40 + 5]
    # Per-block dust counts voxels in each block: object 9 (900 voxels over several blocks) loses
    # its small corner fragments but keeps the big ones.
    assert cli("mesh", path, "--shape", "16,16,16", "--dir", "t", "--dust-threshold", "100", "--no-simplify")[0] == 0
    assert 2**40 + 5 not in mesh.meshed_objects(str(path), "t")


def test_ids_that_do_not_exist_warn(seg, cli):
    path, _ = seg
    code, out, err = cli("mesh", path, "--shape", "16,16,16", "--ids", "7,4242")
    assert code == 0, err
    assert "warning: 1 of the --ids" in err and "4242" in err
    assert mesh.meshed_objects(str(path)) == [7]


def test_mesh_a_higher_mip(seg, cli):
    path, lab = seg
    assert cli("downsample", path, "--num-mips", "1", "--factor", "2,2,2")[0] == 0
    code, _, err = cli("mesh", path, "--mip", "1", "--no-simplify")
    assert code == 0, err
    info = json.loads((path / "mesh" / "info").read_text())
    assert info["mip"] == 1
    m = _get(CloudVolume(f"file://{path}"), 7)
    expected = (lab == 7).sum() * np.prod(RES)
    assert abs(enclosed_volume(m.vertices, m.faces) - expected) / expected < 0.1  # coarser voxels, same object


@pytest.mark.parametrize("argv, message", [
    (["--mip", "3"], "no mip 3"),
    (["--ids", "7,x"], "--ids must be comma-separated"),
    (["--max-error", "-1"], "--max-error must be zero or more"),
    (["--dir", "a/b"], "--dir"),
])
def test_bad_input(seg, cli, argv, message):
    path, _ = seg
    code, out, err = cli("mesh", path, *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (path / "mesh").exists()


def test_image_layer_is_refused(tmp_path, cli):
    np.save(tmp_path / "img.npy", np.zeros((4, 8, 8), np.uint8))
    assert cli("ingest", tmp_path / "img.npy", tmp_path / "img", "--resolution", "4,4,40")[0] == 0
    code, _, err = cli("mesh", tmp_path / "img")
    assert code == 2 and "image layer" in err


def test_read_only_layer_is_refused(seg, cli):
    """A layer served over http can be read but not given meshes: one clear line, nothing written."""
    from pumice.serve.files import LayerFileServer

    path, _ = seg
    with LayerFileServer({"data": path.parent}) as server:
        code, _, err = cli("mesh", f"precomputed://{server.url_for('data')}/{path.name}")
    assert code == 2 and "read-only" in err and "Traceback" not in err
    assert not (path / "mesh").exists()


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
    return ["mesh", str(layer), "--shape", "16,16,16", "--sharded"], layer


def _resume_case(sharded: bool):
    def setup(cli, root):
        root.mkdir(parents=True, exist_ok=True)
        layer = ingest_array(cli, root / "lab", _balls(), "--resolution", "8,8,10", "--chunk-size", "32,32,32")
        return ["mesh", str(layer), "--shape", "16,16,16", *(["--sharded"] if sharded else [])], layer  # 192 forge tasks
    return setup


RUNNER_CASES = {"mesh": _runner_case}
RESUME_CASES = {"mesh-forge": Resume(_resume_case(False), "forge", slow=True),
                "mesh-forge-sharded": Resume(_resume_case(True), "forge", slow=True),
                "mesh-merge": Resume(_resume_case(False), "merge", slow=True),
                "mesh-merge-sharded": Resume(_resume_case(True), "merge", slow=True)}


# -- body meshes: supervoxels and a mapping, no remapped layer ---------------------------------------

def _supervoxel_balls(shape=(64, 60, 48)):
    """Balls and a tube, each cut by planes into 2-4 supervoxels; the mapping joins them again."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    lab = np.zeros(shape, np.uint32)
    pairs = []
    centres = [(20, 20, 16, 11), (44, 22, 30, 12), (22, 44, 30, 10), (46, 46, 14, 8)]
    sv = 1
    for body, (cx, cy, cz, r) in enumerate(centres, start=100):
        ball = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < r**2
        cuts = [x < cx, (x >= cx) & (y < cy), (x >= cx) & (y >= cy) & (z < cz), (x >= cx) & (y >= cy) & (z >= cz)]
        for cut in cuts[: 2 + body % 3]:
            lab[ball & cut & (lab == 0)] = sv
            pairs.append((sv, body))
            sv += 1
        rest = ball & (lab == 0)
        if rest.any():
            lab[rest] = sv
            pairs.append((sv, body))
            sv += 1
    return lab, np.array(pairs, np.uint64)


@pytest.mark.parametrize("sharded", [False, True])
def test_body_meshes_from_supervoxels_and_a_mapping(tmp_path, cli, sharded):
    lab, pairs = _supervoxel_balls()
    path = ingest_array(cli, tmp_path / "sv", lab, "--resolution", "8,8,12", "--chunk-size", "16,16,16",
                        "--type", "segmentation")
    np.save(tmp_path / "map.npy", pairs)
    code, _, err = cli("mesh", path, "--shape", "32,32,16", "--no-simplify", "--mapping", tmp_path / "map.npy",
                       "--no-progress", *(["--sharded"] if sharded else []))
    assert code == 0, err
    info = json.loads((path / "info").read_text())
    assert info.get("mesh") != "mesh_bodies"  # the layer's own meshes stay its supervoxels'
    cv = CloudVolume(f"file://{path}", mesh_dir="mesh_bodies")
    body_of = dict(pairs.tolist())
    for body in sorted(set(body_of.values())):
        svs = [sv for sv, b in body_of.items() if b == body]
        m = _get(cv, body)
        faces = weld_faces(m.vertices, m.faces)
        assert closed(faces), body
        expected = np.isin(lab, svs).sum() * 8 * 8 * 12
        assert abs(enclosed_volume(m.vertices, m.faces) - expected) / expected < 0.05, body
        # one surface: internal faces between a body's supervoxels are gone
        assert len(np.unique(faces)) == len(np.unique(weld_faces(m.vertices, m.faces, decimals=1)))
    # and simplified (legacy: closed; sharded: Draco quantizes each octree node's fragment on its own grid,
    # so a weld at 0.01 nm does not close it; both near the voxels' volume)
    code, _, err = cli("mesh", path, "--shape", "32,32,16", "--mapping", tmp_path / "map.npy", "--dir", "simple",
                       "--no-progress", *(["--sharded"] if sharded else []))
    assert code == 0, err
    simple = CloudVolume(f"file://{path}", mesh_dir="simple")
    for body in sorted(set(body_of.values())):
        m = _get(simple, body)
        assert sharded or closed(weld_faces(m.vertices, m.faces)), body
        expected = np.isin(lab, [sv for sv, b in body_of.items() if b == body]).sum() * 8 * 8 * 12
        assert abs(enclosed_volume(m.vertices, m.faces) - expected) / expected < 0.1, body


@pytest.mark.slow
def test_neuroproof_body_meshes_are_closed_and_hold_their_volume(tmp_path, cli, shared_data):
    """20 of neuroproof's bodies meshed from its supervoxels and gt_sv_to_body (no remapped layer):
    each closed, its volume within 5% of its voxels', read by CloudVolume."""
    import h5py

    with h5py.File(shared_data("neuroproof_sample2.h5"), "r") as f:
        labels = np.asfortranarray(f["labels/gt_supervoxels"][:].transpose(2, 1, 0))
        pairs = f["labels/gt_sv_to_body"][:].astype(np.uint64)
    path = ingest_array(cli, tmp_path / "sv", labels, "--resolution", "10,10,10", "--type", "segmentation")
    np.save(tmp_path / "map.npy", pairs)
    lookup = np.zeros(int(labels.max()) + 1, np.uint64)
    known = pairs[:, 0] <= labels.max()
    lookup[pairs[known, 0].astype(np.int64)] = pairs[known, 1]
    unmapped = np.ones(len(lookup), bool)
    unmapped[pairs[known, 0].astype(np.int64)] = False
    lookup[unmapped] = np.arange(len(lookup), dtype=np.uint64)[unmapped]
    bodies = lookup[labels]
    ids, counts = np.unique(bodies[bodies > 0], return_counts=True)
    chosen = ids[np.argsort(-counts)][:40:2]  # 20 bodies, large and middling
    code, _, err = cli("mesh", path, "--mapping", tmp_path / "map.npy", "--no-simplify", "--ids",
                       ",".join(str(int(i)) for i in chosen), "--workers", "2", "--no-progress")
    assert code == 0, err
    cv = CloudVolume(f"file://{path}", mesh_dir="mesh_bodies")
    for body in chosen.tolist():
        m = _get(cv, body)
        assert closed(weld_faces(m.vertices, m.faces)), body
        expected = float((bodies == body).sum()) * 1000
        assert abs(enclosed_volume(m.vertices, m.faces) - expected) / expected < 0.05, body


def test_pinky40_meshes_stay_within_max_error_closed_and_hold_their_volume(tmp_path, cli, shared_data):
    """Real neurites crossing blocks: a 256^3 corner of pinky40 in the default 128^3 blocks, its 8
    largest objects meshed with the default max error (40 nm) and unsimplified. Deviation by issue
    20's measure (4,000 samples each way, both ways); counting every vertex too, zmesh reaches about
    55 nm on pinky40's largest objects (one- and two-voxel protrusions flattened), which make bench
    reports."""
    import gzip

    import crackle

    labels = crackle.decompress(gzip.decompress(shared_data("pinky40_seg_512.npy.ckl.gz").read_bytes()))
    corner = np.asfortranarray(labels[:256, :256, 256:])
    del labels
    path = ingest_array(cli, tmp_path / "pinky", corner, "--resolution", "32,32,40", "--type", "segmentation")
    ids, counts = np.unique(corner[corner > 0], return_counts=True)
    top = ids[np.argsort(-counts, kind="stable")[:8]]
    flags = ["--ids", ",".join(str(int(i)) for i in top), "--workers", "2", "--no-progress"]
    assert cli("mesh", path, *flags)[0] == 0
    assert cli("mesh", path, *flags, "--no-simplify", "--dir", "plain")[0] == 0
    plain, simple = (CloudVolume(f"file://{path}", mesh_dir=d) for d in ("plain", "mesh"))
    for label in top.tolist():
        a, b = _get(plain, label), _get(simple, label)
        assert len(b.faces) < len(a.faces) / 5, label
        assert closed(weld_faces(b.vertices, b.faces)), label
        assert mesh_deviation(b.vertices, b.faces, a.vertices, a.faces, vertices=False) <= 40, label
        expected = float((corner == label).sum()) * 32 * 32 * 40
        assert abs(enclosed_volume(b.vertices, b.faces) - expected) / expected < 0.05, label
