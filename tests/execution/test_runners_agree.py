"""Acceptance: every operation writes the same bytes on the local runner, on a Dask LocalCluster
with 2 workers, through fq:// with 2 `pumice worker` processes, and through SQS on moto's server."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from pumice.execution.transport import open_queue


def _image(root: Path) -> Path:
    data = np.random.default_rng(3).integers(0, 255, (32, 64, 96), dtype=np.uint8)  # z, y, x
    np.save(root / "img.npy", data)
    return root / "img.npy"


def _labels(root: Path) -> Path:
    shape = (48, 48, 32)  # x, y, z
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lab = np.zeros(shape, np.uint32)
    lab[(x - 24) ** 2 + (y - 24) ** 2 < 36] = 1  # a tube along z
    lab[(x - 10) ** 2 + (y - 30) ** 2 + (z - 16) ** 2 < 60] = 2
    lab[(y - 8) ** 2 + (z - 16) ** 2 < 16] = 3  # a tube along x
    np.save(root / "lab.npy", lab.transpose(2, 1, 0))
    return root / "lab.npy"


IMAGE = ["--resolution", "4,4,40", "--chunk-size", "32,32,8"]
LABELS = ["--resolution", "8,8,8", "--chunk-size", "16,16,16"]


def _setup(cli, root: Path, operation: str) -> tuple[list[str], Path]:
    """Prepare the input in ``root``; return the command (without runner options) and the folder to compare."""
    def ingest(source, name, options):
        code, _, err = cli("ingest", source, root / name, *options, "--no-progress")
        assert code == 0, err
        return root / name

    if operation == "ingest":
        return ["ingest", str(_image(root)), str(root / "out"), *IMAGE, "--memory", "100KB"], root / "out"
    if operation == "downsample":
        layer = ingest(_image(root), "img", IMAGE)
        return ["downsample", str(layer), "--num-mips", "2", "--memory", "100KB"], layer
    if operation == "transfer":
        layer = ingest(_image(root), "img", IMAGE)
        return ["transfer", str(layer), str(root / "out"), "--chunk-size", "16,16,8", "--num-mips", "1",
                "--memory", "100KB"], root / "out"
    if operation == "delete":
        layer = ingest(_image(root), "img", IMAGE)
        return ["delete", str(layer), "--bounds", "0,0,0,64,64,16"], layer
    if operation in ("mesh", "skeleton"):
        layer = ingest(_labels(root), "lab", LABELS)
        extra = ["--sharded"] if operation == "mesh" else ["--dust-threshold", "10", "--min-cable", "0"]
        return [operation, str(layer), "--shape", "16,16,16", *extra], layer
    if operation == "quantize":
        data = np.random.default_rng(5).uniform(-0.2, 1.2, (3, 16, 32, 32)).astype(np.float32)
        np.save(root / "aff.npy", data)
        layer = ingest(root / "aff.npy", "aff", ["--axes", "czyx", "--resolution", "8,8,40", "--chunk-size", "16,16,8"])
        return ["quantize", str(layer), str(root / "out"), "--memory", "100KB"], root / "out"
    if operation == "levels":
        layer = ingest(_image(root), "img", IMAGE)
        return ["contrast", "levels", str(layer), "--coverage", "0.3"], layer
    if operation == "normalize":
        layer = ingest(_image(root), "img", IMAGE)
        code, _, err = cli("contrast", "levels", str(layer), "--no-progress")
        assert code == 0, err
        return ["contrast", "normalize", str(layer), str(root / "out"), "--num-mips", "1", "--memory", "100KB"], root / "out"
    if operation == "clahe":
        layer = ingest(_image(root), "img", IMAGE)
        return ["contrast", "clahe", str(layer), str(root / "out"), "--tile-size", "16", "--memory", "100KB"], root / "out"
    if operation == "probe":
        return ["probe", str(root / "out"), "--tasks", "30", "--stages", "2"], root / "out"
    raise AssertionError(operation)


OPERATIONS = ["ingest", "downsample", "transfer", "delete", "mesh", "skeleton", "quantize", "levels", "normalize", "clahe",
              "probe"]


@pytest.fixture(scope="module")
def baselines():
    return {}


def _local(cli, tmp_path_factory, baselines, files_of, operation):
    if operation not in baselines:
        root = tmp_path_factory.mktemp(f"local-{operation}")
        command, out = _setup(cli, root, operation)
        code, _, err = cli(*command, "--workers", "2", "--no-progress")
        assert code == 0, err
        baselines[operation] = files_of(out)
        assert baselines[operation], "the local run wrote nothing to compare"
    return baselines[operation]


# Digests of every operation's local output, recorded before the operation framework (issue 15)
# was refactored, so that refactoring provably changes no byte. They depend on the libraries that
# encode the data: with other versions installed the check is skipped, not failed.
# Record again with PUMICE_RECORD_DIGESTS=1 (only when a change is meant to change bytes).
DIGESTS = Path(__file__).with_name("runner_digests.json")
ENCODERS = ("tensorstore", "numpy", "tinybrain", "zmesh", "DracoPy", "kimimaro", "osteoid", "fastremap",
            "connected-components-3d", "isal", "opencv-python-headless")


def _versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ENCODERS}


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        if name.endswith("pumice.json"):  # bookkeeping beside data (levels): the job id that wrote it is not data
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "job"}, sort_keys=True).encode()
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_local_output_matches_recorded_digest(operation, cli, tmp_path_factory, baselines, files_of):
    digest = _digest(_local(cli, tmp_path_factory, baselines, files_of, operation))
    recorded = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {"versions": _versions(), "digests": {}}
    if os.environ.get("PUMICE_RECORD_DIGESTS"):
        recorded["versions"] = _versions()
        recorded["digests"][operation] = digest
        DIGESTS.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        return
    if recorded["versions"] != _versions():
        pytest.skip(f"digests were recorded with {recorded['versions']}, not these libraries")
    assert digest == recorded["digests"][operation], f"{operation} now writes other bytes than it did"


@pytest.mark.parametrize("operation", OPERATIONS)
def test_dask_cluster_matches_local(operation, cli, tmp_path, tmp_path_factory, baselines, files_of, dask_address):
    expected = _local(cli, tmp_path_factory, baselines, files_of, operation)
    command, out = _setup(cli, tmp_path, operation)
    code, _, err = cli(*command, "--cluster", dask_address, "--no-progress")
    assert code == 0, err
    assert f"running on Dask at {dask_address}: 2 worker thread(s)" in err
    assert files_of(out) == expected


def _through_queue(cli, workers, command, url):
    code, out, err = cli(*command, "--queue", url)
    assert code == 0, err
    assert "queued" in out and f"pumice worker {url}" in out
    results = workers.run(url, 2)
    assert any("finished: every stage is done" in err for _, err in results)
    assert open_queue(url).empty()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_file_queue_with_two_workers_matches_local(operation, cli, tmp_path, tmp_path_factory, baselines, files_of, workers):
    expected = _local(cli, tmp_path_factory, baselines, files_of, operation)
    command, out = _setup(cli, tmp_path, operation)
    _through_queue(cli, workers, command, f"fq://{tmp_path}/queue")
    assert files_of(out) == expected


@pytest.mark.parametrize("operation", OPERATIONS)
def test_sqs_on_moto_with_two_workers_matches_local(operation, cli, tmp_path, tmp_path_factory, baselines, files_of,
                                                    workers, sqs_url):
    expected = _local(cli, tmp_path_factory, baselines, files_of, operation)
    command, out = _setup(cli, tmp_path, operation)
    _through_queue(cli, workers, command, sqs_url)
    assert files_of(out) == expected
