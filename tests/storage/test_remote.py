"""Remote stores for real: S3 through moto's standalone server on 127.0.0.1, and read-only http."""

import numpy as np
import tensorstore as ts

from pumice.serve.files import LayerFileServer


def test_ingest_to_s3_and_back(tmp_path, cli, s3_env):
    data = np.random.default_rng(3).integers(0, 2**32, (9, 20, 30), dtype=np.uint32)  # Z, Y, X
    np.save(tmp_path / "labels.npy", data)
    code, out, err = cli("--s3-endpoint", s3_env, "ingest", tmp_path / "labels.npy", "s3://pumice-test/run/seg",
                         "--resolution", "8,8,40", "--offset", "1,2,3", "--chunk-size", "16,16,4", "--workers", "2")
    assert code == 0, err
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "s3", "bucket": "pumice-test", "path": "run/seg/", "endpoint": s3_env,
                                 "aws_region": "us-east-1"}}).result()
    assert list(store.domain.inclusive_min[:3]) == [1, 2, 3]
    np.testing.assert_array_equal(store[..., 0].read().result(), data.transpose(2, 1, 0))
    code, out, err = cli("--s3-endpoint", s3_env, "info", "s3://pumice-test/run/seg")
    assert code == 0 and "segmentation uint32" in out and "ingest from" in out
    # S3 to local, through the same code: a Precomputed source on S3.
    code, _, err = cli("--s3-endpoint", s3_env, "ingest", "s3://pumice-test/run/seg", tmp_path / "copy", "--workers", "1")
    assert code == 0, err
    local = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{tmp_path}/copy/"}).result()
    np.testing.assert_array_equal(local[..., 0].read().result(), data.transpose(2, 1, 0))


def test_http_source_reads_and_refuses_writes(tmp_path, cli):
    data = np.random.default_rng(4).integers(0, 255, (5, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "a.npy", data)
    assert cli("ingest", tmp_path / "a.npy", tmp_path / "served" / "layer", "--resolution", "4,4,40")[0] == 0
    with LayerFileServer({"data": tmp_path / "served"}) as server:
        url = server.url_for("data") + "/layer"
        code, _, err = cli("ingest", f"precomputed://{url}", tmp_path / "copy")
        assert code == 0, err
        copy = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{tmp_path}/copy/"}).result()
        np.testing.assert_array_equal(copy[..., 0].read().result(), data.transpose(2, 1, 0))
        code, _, err = cli("ingest", tmp_path / "a.npy", url + "2", "--resolution", "4,4,40")
        assert code == 2 and "read-only" in err
