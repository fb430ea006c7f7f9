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
