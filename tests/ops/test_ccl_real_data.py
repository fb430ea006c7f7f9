"""ccl on real data (a module of its own, so the parallel test run spreads ccl's slow tests over
both processes): pinky40 in blocks of 64^3 and 128^3 for connectivity 26, 18 and 6, and neuroproof's
supervoxels (with --dust) and its thresholded raw image, equal to cc3d on the whole array."""

from __future__ import annotations

import shutil

import cc3d
import fastremap
import numpy as np
import pytest

from framework import ingest_array, read_tensorstore, run_json


def output(path) -> np.ndarray:
    data, _ = read_tensorstore(path)
    return data[..., 0]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labellings split the voxels the same way (each id of one is exactly one id of the other)."""
    pairs = fastremap.unique((a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64))
    return len(pairs) == len(fastremap.unique(a)) == len(fastremap.unique(b))


@pytest.mark.slow
def test_pinky40_equals_cc3d(cli, tmp_path, shared_data):
    """Connectivity 26 in blocks of 64^3 on the whole 512^3 (the most seams, the widest slabs); 18 and 6
    in 64^3 blocks of a 256^3 corner (each connectivity's seams, at a quarter of the time: the whole
    volume for all three cost 96 s of the suite's 15 minutes)."""
    import gzip

    import crackle

    data = np.asfortranarray(crackle.decompress(gzip.decompress(shared_data("pinky40_seg_512.npy.ckl.gz").read_bytes())))
    corner = np.asfortranarray(data[:256, :256, :256])
    sources = {len(v): ingest_array(cli, tmp_path / f"pinky40-{len(v)}", v, "--resolution", "32,32,40", "--type",
                                    "segmentation") for v in (data, corner)}
    for connectivity, volume in ((26, data), (18, corner), (6, corner)):
        src = sources[len(volume)]
        out = tmp_path / f"cc{connectivity}"
        run_json(cli, "ccl", src, out, "--shape", "64,64,64", "--connectivity", str(connectivity),
                 "--workers", "2", "--no-progress")
        want = cc3d.connected_components(volume, connectivity=connectivity)
        got = output(out)
        assert int(got.max()) == int(want.max()), connectivity
        assert same_partition(got, want), connectivity
        shutil.rmtree(out)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["gt_supervoxels", "raw"])
def test_neuroproof(cli, tmp_path, shared_data, which):
    """Supervoxels; and the raw image thresholded (dark membranes: long thin pieces through many blocks)."""
    import h5py

    with h5py.File(shared_data("neuroproof_sample2.h5"), "r") as f:
        data = np.asfortranarray(f["raw" if which == "raw" else "labels/gt_supervoxels"][:].transpose(2, 1, 0))
    if which == "raw":
        src = ingest_array(cli, tmp_path / which, data, "--resolution", "10,10,10", "--chunk-size", "32,32,32")
        run_json(cli, "ccl", src, tmp_path / "cc", "--threshold-lte", "90", "--shape", "64,64,64", "--workers", "2",
                 "--no-progress")
        want = cc3d.connected_components((data <= 90).astype(np.uint8), connectivity=26)
        assert want.max() > 100
    else:
        src = ingest_array(cli, tmp_path / which, data, "--resolution", "10,10,10", "--type", "segmentation",
                           "--chunk-size", "32,32,32")
        run_json(cli, "ccl", src, tmp_path / "cc", "--shape", "64,64,64", "--dust", "20", "--workers", "2",
                 "--no-progress")
        want = cc3d.connected_components(cc3d.dust(data, 20, connectivity=26), connectivity=26)
    out = output(tmp_path / "cc")
    assert int(out.max()) == int(want.max())
    assert same_partition(out, want)
