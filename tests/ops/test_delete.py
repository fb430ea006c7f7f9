import json

import numpy as np
import pytest
import tensorstore as ts
from cloudvolume import CloudVolume
from framework import IMAGE, ingested, runner_image


@pytest.fixture
def pyramid(tmp_path, cli):
    """A uint16 image with 3 mips (2,2,1), chunk 16,16,4."""

    def make(sharded=False):
        data = np.random.default_rng(0).integers(1, 60000, (20, 100, 130), dtype=np.uint16)  # Z, Y, X
        np.save(tmp_path / "v.npy", data)
        path = tmp_path / "layer"
        flags = ["--sharded"] if sharded else []
        assert cli("ingest", tmp_path / "v.npy", path, "--resolution", "4,4,40", "--chunk-size", "16,16,4",
                   "--offset", "2,3,4", "--memory", "20KB", *flags)[0] == 0
        assert cli("downsample", path, "--num-mips", "2", "--factor", "2,2,1", "--memory", "100KB", *flags)[0] == 0
        return path, data.transpose(2, 1, 0)

    return make


def test_delete_whole_layer(pyramid, cli):
    path, _ = pyramid()
    code, out, err = cli("delete", path)
    assert code == 0, err
    assert not path.exists()


def test_delete_top_mips_updates_info_and_clears_ledgers(pyramid, cli, files_of):
    path, data = pyramid()
    before = files_of(path)
    code, _, err = cli("delete", path, "--mip", "1")
    assert code == 0, err
    info = json.loads((path / "info").read_text())
    assert [s["key"] for s in info["scales"]] == ["4_4_40"]
    assert not (path / "8_8_40").exists() and not (path / "16_16_40").exists()
    assert not (path / ".pumice" / "jobs").exists()
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{path}/"}).result()
    np.testing.assert_array_equal(store[..., 0].read().result(), data)
    # The same downsample command really runs again (no stale ledger) and gives the same bytes.
    code, out, _ = cli("downsample", path, "--num-mips", "2", "--factor", "2,2,1", "--memory", "100KB")
    assert code == 0 and "already done" not in out
    after = files_of(path)
    assert {k: v for k, v in after.items() if k != "info"} == {k: v for k, v in before.items() if k != "info"}


def test_delete_bounds_removes_whole_chunks_inside(pyramid, cli):
    path, data = pyramid()
    info_before = (path / "info").read_text()
    # x 2..130 holds whole chunks of 16 (offset 2); the chunk at 130..132 is only partly inside.
    code, _, err = cli("delete", path, "--bounds", "2,3,4,131,103,24", "--mip", "0", "--num-mips", "1")
    assert code == 0, err
    assert (path / "info").read_text() == info_before  # data only: scales stay
    remaining = CloudVolume(f"file://{path}", mip=0, fill_missing=True)[2:132, 3:103, 4:24][..., 0]
    assert not remaining[:128].any()
    np.testing.assert_array_equal(remaining[128:], data[128:])
    mip1 = CloudVolume(f"file://{path}", mip=1)  # other mips untouched
    assert mip1[mip1.bounds].all()


def test_delete_bounds_on_sharded_mips_removes_whole_shards(pyramid, cli):
    path, data = pyramid(sharded=True)
    code, out, err = cli("delete", path, "--bounds", "3,3,4,20,20,8", "--mip", "1", "--num-mips", "1")
    assert code == 0 and "no whole shard lies inside --bounds" in err
    assert list((path / "8_8_40").glob("*.shard"))
    code, _, err = cli("delete", path, "--bounds", "1,1,4,66,52,24", "--mip", "1", "--num-mips", "1")  # all of mip 1 (y 3..103 -> 1..52)
    assert code == 0, err
    assert not list((path / "8_8_40").glob("*.shard"))
    assert list((path / "4_4_40").glob("*.shard")) and list((path / "16_16_40").glob("*.shard"))


@pytest.mark.parametrize("args, message", [
    (["--mip", "1", "--num-mips", "1"], "renumber"),
    (["--mip", "0"], "without --mip"),
    (["--mip", "5"], "no mip 5"),
    (["--bounds", "0,0,0,999,10,10"], "outside"),
    (["--mip", "1", "--num-mips", "4"], "beyond"),
])
def test_bad_input(pyramid, cli, args, message, files_of):
    path, _ = pyramid()
    before = files_of(path)
    code, _, err = cli("delete", path, *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert files_of(path) == before


def test_delete_missing_layer(tmp_path, cli):
    code, _, err = cli("delete", tmp_path / "nothing")
    assert code == 2 and "no Precomputed layer" in err


# -- cases for the tests every operation shares (tests/framework.py) -------------------------------------

def _runner_case(cli, root):
    layer = ingested(cli, root, runner_image(root), "img", IMAGE)
    return ["delete", str(layer), "--bounds", "0,0,0,64,64,16"], layer


RUNNER_CASES = {"delete": _runner_case}
