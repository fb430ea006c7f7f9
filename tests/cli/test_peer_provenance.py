"""Provenance written by peers (CloudVolume, Igneous, hand edits) is described by `pumice info` without
crashing, and Pumice's own records append to it without losing any of the peer's entries."""

import json

import numpy as np
import pytest
from cloudvolume import CloudVolume

from pumice.storage import provenance


def test_cloudvolume_written_layer(tmp_path, cli):
    data = np.arange(70 * 60 * 20, dtype=np.uint8).reshape(70, 60, 20)
    url = f"file://{tmp_path}/cv"
    CloudVolume.from_numpy(data, vol_path=url, resolution=(8, 8, 40), voxel_offset=(3, 7, 11), chunk_size=(64, 64, 16),
                           layer_type="image", compress="gzip")
    peer = json.loads((tmp_path / "cv" / "provenance").read_text())
    assert peer["processing"][0]["method"] == "from_numpy"  # the shape this test is about

    code, out, err = cli("info", tmp_path / "cv")
    assert code == 0, err
    assert "bounds 3,7,11 - 73,67,31 voxels" in out
    assert "provenance: 1 entry" in out and "from_numpy" in out
    code, out, err = cli("info", tmp_path / "cv", "--json")
    assert code == 0, err
    assert json.loads(out)["provenance"] == peer["processing"]

    provenance.record(url, "transfer", {"source": "elsewhere"}, "job-1", sources=["file:///elsewhere"])
    provenance.record(url, "transfer", {"source": "elsewhere"}, "job-1")  # the same job again: no second entry
    stored = json.loads((tmp_path / "cv" / "provenance").read_text())
    assert stored["processing"][0] == peer["processing"][0] and len(stored["processing"]) == 2
    assert stored["processing"][1]["method"]["task"] == "transfer" and stored["sources"] == ["file:///elsewhere"]
    # CloudVolume validates provenance against its schema when it opens a layer: it still does.
    reopened = CloudVolume(url)
    assert [p["method"] if isinstance(p["method"], str) else p["method"]["task"] for p in reopened.provenance.processing] == \
        ["from_numpy", "transfer"]
    code, out, _ = cli("info", tmp_path / "cv")
    assert code == 0 and "provenance: 2 entries" in out and "transfer from elsewhere  (pumice" in out


# A peer's provenance file, the processing entries `pumice info --json` reports, and the lines under
# "provenance:" that `pumice info` prints (each a fragment of its line).
ODD = {
    "method-a-string": ({"processing": [{"method": "from_numpy", "date": "2024-01-01 10:00 UTC"}]},
                        [{"method": "from_numpy", "date": "2024-01-01 10:00 UTC"}], ["2024-01-01 10:00 UTC  from_numpy  (?)"]),
    "entries-not-objects": ({"processing": ["masked by hand", 42, None, ["a", "b"]]},
                            ["masked by hand", 42, None, ["a", "b"]], ["?  masked by hand  (?)", "?  42  (?)", "?  ?  (?)", "['a', 'b']"]),
    "processing-an-object": ({"processing": {"method": {"task": "MaskTask"}, "by": "igneous"}},
                             [{"method": {"task": "MaskTask"}, "by": "igneous"}], ["?  MaskTask  (igneous)"]),
    "processing-a-string": ({"processing": "converted from TIFF"}, ["converted from TIFF"], ["converted from TIFF"]),
    "lists-not-lists": ({"sources": "gs://bucket/img", "owners": "me@example.org", "processing": []}, [], []),
    "missing-dates-and-tools": ({"processing": [{"method": {"task": "TransferTask", "source": "gs://b/i"}}]},
                                [{"method": {"task": "TransferTask", "source": "gs://b/i"}}], ["?  TransferTask from gs://b/i  (?)"]),
    "odd-values": ({"processing": [{"method": {"src": "x"}, "date": 20240101, "by": {"name": "me"}}]},
                   [{"method": {"src": "x"}, "date": 20240101, "by": {"name": "me"}}], ["20240101  ?  ({'name': 'me'})"]),
    "multi-line-method": ({"processing": [{"method": "line one\nline two", "date": "d"}]},
                          [{"method": "line one\nline two", "date": "d"}], ["d  line one line two  (?)"]),
    "nulls": ({"description": None, "owners": None, "sources": None, "processing": None}, [], []),
    "no-keys": ({}, [], []),
}
UNREADABLE = {
    "not-json": ("{not json", "is not valid JSON"),
    "empty-file": ("", "is not valid JSON"),
    "a-list": ("[1, 2, 3]", "is a JSON list, not an object"),
    "a-string": ('"made by hand"', "is a JSON str, not an object"),
}


@pytest.fixture
def layer(tmp_path, cli):
    np.save(tmp_path / "v.npy", np.arange(8 * 16 * 16, dtype=np.uint8).reshape(8, 16, 16))
    code, _, err = cli("ingest", tmp_path / "v.npy", tmp_path / "l", "--resolution", "4,4,40", "--chunk-size", "8,8,4")
    assert code == 0, err
    return tmp_path / "l"


def provenance_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  provenance:"))
    return [line.strip() for line in lines[start + 1:] if line.startswith("    ")]


@pytest.mark.parametrize("peer, entries, shown", ODD.values(), ids=ODD.keys())
def test_odd_provenance_is_described_and_kept(layer, cli, peer, entries, shown):
    (layer / "provenance").write_text(json.dumps(peer))
    code, out, err = cli("info", layer)
    assert code == 0, err
    assert f"provenance: {len(entries)} entr" in out
    lines = provenance_lines(out)
    assert len(lines) == len(shown) and all(fragment in line for fragment, line in zip(shown, lines)), lines
    code, out, err = cli("info", layer, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["provenance"] == entries and d["provenance_problem"] is None

    # A Pumice run on the layer appends its entry after the peer's, which stay as they were.
    code, _, err = cli("downsample", layer, "--num-mips", "1")
    assert code == 0, err
    stored = json.loads((layer / "provenance").read_text())
    assert stored["processing"][:-1] == entries and stored["processing"][-1]["method"]["task"] == "downsample"
    for key in ("sources", "owners"):
        value = peer.get(key)
        assert stored[key] == ([] if value is None else [value] if isinstance(value, str) else value)
    assert stored["description"] == (peer.get("description") or "")
    code, out, _ = cli("info", layer)
    assert code == 0 and provenance_lines(out)[-1].split("  ")[1] == "downsample"


@pytest.mark.parametrize("text, problem", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_provenance_is_reported_and_left_alone(layer, cli, text, problem):
    (layer / "provenance").write_text(text)
    code, out, err = cli("info", layer)
    assert code == 0, err
    assert "provenance: unreadable: " in out and problem in out and "fix or remove it" in out
    code, out, err = cli("info", layer, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["provenance"] == [] and problem in d["provenance_problem"]

    # A Pumice run does its work, says it could not record it, and leaves the file byte for byte.
    code, out, err = cli("downsample", layer, "--num-mips", "1")
    assert code == 0, err
    assert "downsample finished" in out and problem in err and "this downsample is not recorded in it" in err
    assert (layer / "provenance").read_text() == text
    assert len(json.loads((layer / "info").read_text())["scales"]) == 2
