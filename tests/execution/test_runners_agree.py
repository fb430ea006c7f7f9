"""Acceptance: every operation writes the same bytes on the local runner, on a Dask LocalCluster
with 2 workers, through fq:// with 2 `pumice worker` processes, and through SQS on moto's server.
The cases are the ones each operation's test module declares (RUNNER_CASES, tests/framework.py)."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import pytest

from framework import declared

from pumice.execution.transport import open_queue


# Every operation's cases, declared by its own test module (tests/framework.py).
CASES = declared("RUNNER_CASES")
OPERATIONS = sorted(CASES)


def _setup(cli, root: Path, operation: str) -> tuple[list[str], Path]:
    return CASES[operation](cli, root)


def _reader(operation: str, files_of):
    """What is compared: the output's files, or what the case says its output is (``setup.files``)."""
    return getattr(CASES[operation], "files", files_of)


@pytest.fixture(scope="module")
def baselines():
    return {}


def _local(cli, tmp_path_factory, baselines, files_of, operation):
    if operation not in baselines:
        root = tmp_path_factory.mktemp(f"local-{operation}")
        command, out = _setup(cli, root, operation)
        code, _, err = cli(*command, "--workers", "2", "--no-progress")
        assert code == 0, err
        baselines[operation] = _reader(operation, files_of)(out)
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
    if operation not in recorded["digests"]:
        pytest.skip(f"{operation} is newer than the digests (recorded before issue 15's refactor)")
    assert digest == recorded["digests"][operation], f"{operation} now writes other bytes than it did"


@pytest.mark.parametrize("operation", OPERATIONS)
def test_dask_cluster_matches_local(operation, cli, tmp_path, tmp_path_factory, baselines, files_of, dask_address):
    expected = _local(cli, tmp_path_factory, baselines, files_of, operation)
    command, out = _setup(cli, tmp_path, operation)
    code, _, err = cli(*command, "--cluster", dask_address, "--no-progress")
    assert code == 0, err
    assert f"running on Dask at {dask_address}: 2 worker thread(s)" in err
    assert _reader(operation, files_of)(out) == expected


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
    assert _reader(operation, files_of)(out) == expected


@pytest.mark.parametrize("operation", OPERATIONS)
def test_sqs_on_moto_with_two_workers_matches_local(operation, cli, tmp_path, tmp_path_factory, baselines, files_of,
                                                    workers, sqs_url):
    expected = _local(cli, tmp_path_factory, baselines, files_of, operation)
    command, out = _setup(cli, tmp_path, operation)
    _through_queue(cli, workers, command, sqs_url)
    assert _reader(operation, files_of)(out) == expected
