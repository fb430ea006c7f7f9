import os

import pytest

from pumice.errors import LayerError, PumiceError
from pumice.storage import urls
from pumice.storage.kv import KV


def test_normalize_local_and_prefixes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert urls.normalize("layer") == f"file://{tmp_path}/layer"
    assert urls.normalize("precomputed://file://" + str(tmp_path)) == f"file://{tmp_path}"
    assert urls.normalize("precomputed://gs://bucket/a/") == "gs://bucket/a"
    with pytest.raises(PumiceError, match="ftp"):
        urls.normalize("ftp://host/x")


def test_kvstore_specs(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("PUMICE_S3_ENDPOINT", "http://127.0.0.1:9000")
    assert urls.kvstore_spec("gs://bucket/a/b") == {"driver": "gcs", "bucket": "bucket", "path": "a/b/"}
    s3 = urls.kvstore_spec("s3://bucket/x")
    assert s3["driver"] == "s3" and s3["endpoint"] == "http://127.0.0.1:9000" and s3["path"] == "x/"
    assert urls.kvstore_spec("https://host/data/layer") == {"driver": "http", "base_url": "https://host/data/layer/"}
    assert urls.kvstore_spec("memory://m/l") == {"driver": "memory", "path": "m/l/"}
    assert not urls.is_writable("http://host/layer")


def test_kv_roundtrip_file_and_memory(tmp_path):
    for url in (str(tmp_path / "store"), "memory://kvtest"):
        kv = KV(url)
        kv.put_json("info", {"a": 1})
        kv.put("dir/x", b"1")
        kv.put("dir/y", b"2")
        kv.put("dirz", b"3")
        assert kv.get_json("info") == {"a": 1}
        assert kv.list("dir/") == ["dir/x", "dir/y"]
        assert kv.exists("dirz") and not kv.exists("nope")
        kv.delete_prefix("dir/")
        assert kv.list() == ["dirz", "info"]
        kv.delete("dirz")
        assert kv.get("dirz") is None
    assert os.path.isfile(tmp_path / "store" / "info")


def test_kv_http_is_read_only():
    with pytest.raises(LayerError, match="read-only"):
        KV("http://127.0.0.1:9/layer").put("info", b"{}")


@pytest.mark.parametrize("where", ["file", "memory", "s3"])
def test_create_writes_only_a_missing_key(tmp_path, where, request, monkeypatch):
    """KV.create is the ledger's claim (one finisher per job): the first create wins, later ones do not
    overwrite, whatever the store."""
    from pumice.storage.kv import KV

    if where == "s3":
        endpoint = request.getfixturevalue("s3_env")
        monkeypatch.setenv("PUMICE_S3_ENDPOINT", endpoint)
        url = f"s3://pumice-test/create-{tmp_path.name}/"
    else:
        url = f"file://{tmp_path}/" if where == "file" else f"memory://create-{tmp_path.name}/"
    kv = KV(url)
    assert kv.create("claim", b"first")
    assert not kv.create("claim", b"second")
    assert kv.get("claim") == b"first"


def test_one_finisher_per_job_and_a_stale_claim_is_taken_over(tmp_path):
    from pumice.execution.ledger import Ledger

    ledger = Ledger(str(tmp_path), "job-1")
    assert ledger.claim_finish()
    assert not ledger.claim_finish()  # another worker handing over the last stage at the same moment
    assert ledger.claim_finish(stale_seconds=0)  # its claimer stopped: someone must finish
    ledger.begin("x", {}, {})
    ledger.end("complete")
    assert not ledger.claim_finish(stale_seconds=0)  # finished: nothing to take over
