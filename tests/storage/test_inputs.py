"""Side inputs: a user's file staged into the destination's bookkeeping, and tables looked up a page
at a time, on local files and on a real S3 endpoint."""

from __future__ import annotations

import numpy as np
import pytest

from pumice.errors import PumiceError
from pumice.storage import inputs


def test_a_file_is_staged_once_under_its_digest_and_read_from_there(tmp_path):
    given = tmp_path / "elsewhere" / "map.csv"
    given.parent.mkdir()
    given.write_text("1,10\n2,20\n")
    staged = inputs.SideInput.of(str(given), str(tmp_path / "dest"))
    assert staged.url.startswith(f"file://{tmp_path}/dest/.pumice/inputs/") and staged.url.endswith("-map.csv")
    assert not (tmp_path / "dest").exists()  # planning writes nothing
    staged.put()
    staged.put()  # idempotent
    assert inputs.read(staged.url) == given.read_bytes()
    again = inputs.SideInput.of(staged.url, str(tmp_path / "dest"))  # a queue worker's rebuild
    assert (again.url, again.digest) == (staged.url, staged.digest)
    given.write_text("1,10\n2,21\n")
    assert inputs.SideInput.of(str(given), str(tmp_path / "dest")).digest != staged.digest


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(PumiceError, match="no mapping file at .*nope.csv"):
        inputs.SideInput.of(str(tmp_path / "nope.csv"), str(tmp_path / "dest"), "mapping file")


@pytest.mark.parametrize("where", ["file", "s3"])
def test_a_table_is_looked_up_a_page_at_a_time(tmp_path, where, request):
    rng = np.random.default_rng(1)
    keys = rng.choice(2**40, size=5000, replace=False).astype(np.uint64)
    values = rng.integers(1, 2**63, 5000).astype(np.uint64)
    data = inputs.table_bytes(keys, values, page=64)  # 79 pages
    dest = str(tmp_path / "dest") if where == "file" else f"s3://pumice-test/{tmp_path.name}"
    if where == "s3":
        request.getfixturevalue("monkeypatch").setenv("PUMICE_S3_ENDPOINT", request.getfixturevalue("s3_env"))
    staged = inputs.of_bytes(data, "table", dest)
    staged.put()
    wanted = np.concatenate([keys[rng.choice(5000, 300, replace=False)], np.array([0, 2**41, keys.max() + 1], np.uint64)])
    got, found = inputs.lookup(staged.url, wanted)
    expected = dict(zip(keys.tolist(), values.tolist()))
    assert found.tolist() == [k in expected for k in wanted.tolist()]
    assert got.tolist() == [expected.get(k, 0) for k in wanted.tolist()]
    assert found[:300].all() and not found[300:].any()
