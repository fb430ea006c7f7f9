"""All-zero chunks are written, so CloudVolume (which refuses missing chunks by default) reads
mostly-empty segmentations."""

import numpy as np
import pytest
from cloudvolume import CloudVolume


@pytest.mark.parametrize("sharded", [False, True])
def test_cloudvolume_reads_layers_with_all_zero_chunks(tmp_path, cli, sharded):
    labels = np.zeros((8, 24, 16), np.uint64)  # Z, Y, X: one labelled corner, the rest background
    labels[:, :8, :8] = 12345678901
    np.save(tmp_path / "labels.npy", labels)
    code, _, err = cli("ingest", tmp_path / "labels.npy", tmp_path / "seg", "--resolution", "1,1,1",
                       "--chunk-size", "8,8,8", *(["--sharded"] if sharded else []))
    assert code == 0, err
    cv = CloudVolume(f"file://{tmp_path}/seg")  # fill_missing=False: a missing chunk would raise
    np.testing.assert_array_equal(cv[:, :, :][..., 0], labels.transpose(2, 1, 0))


@pytest.mark.parametrize("dtype, encoding", [("uint8", "raw"), ("uint8", "jpeg"), ("uint32", "compressed_segmentation")])
def test_checkerboard_of_empty_chunks_in_shards(tmp_path, cli, dtype, encoding):
    import tensorstore as ts

    shape_zyx = (30, 22, 37)  # 5 x 3 x 4 chunks of 8, edge chunks clipped
    data = np.random.default_rng(5).integers(1, 200, shape_zyx).astype(dtype)
    for z in range(0, 30, 8):
        for y in range(0, 22, 8):
            for x in range(0, 37, 8):
                if (x // 8 + y // 8 + z // 8) % 2 == 0:
                    data[z:z + 8, y:y + 8, x:x + 8] = 0
    np.save(tmp_path / "v.npy", data)
    code, _, err = cli("ingest", tmp_path / "v.npy", tmp_path / "out", "--resolution", "1,1,1", "--chunk-size", "8,8,8",
                       "--offset", "3,1,2", "--encoding", encoding, "--sharded", "--memory", "1KB")
    assert code == 0, err
    expected = data.transpose(2, 1, 0)
    got_cv = CloudVolume(f"file://{tmp_path}/out")[:, :, :][..., 0]
    got_ts = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{tmp_path}/out/"}).result()[..., 0].read().result()
    for got in (got_cv, got_ts):
        if encoding == "jpeg":
            assert np.abs(got.astype(int) - expected.astype(int)).mean() < 8
            assert (got[expected == 0] < 30).mean() > 0.95
        else:
            np.testing.assert_array_equal(got, expected)
