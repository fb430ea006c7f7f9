"""Shared test helpers: run the CLI in-process, paths to the real sample data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pumice.cli.main import main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def cli(capsys):
    """Run ``pumice ARGS`` in this process; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def ingest_ok(cli):
    """``ingest_ok(source, dest, *options)``: run ``pumice ingest`` and require success; returns stderr."""

    def run(source, dest, *options) -> str:
        code, out, err = cli("ingest", source, dest, *options)
        assert code == 0, f"ingest failed ({code}): {err}"
        return err

    return run


@pytest.fixture
def shared_data():
    """``shared_data(name)``: a file of ../shared/data, or skip the test when it is absent."""

    def find(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.exists():
            pytest.skip(f"{path} is absent (real sample data lives in ../shared/data)")
        return path

    return find


class Processes:
    """Run the CLI in child processes, and kill one midway (for resume tests)."""

    @staticmethod
    def start(*args: str):
        import subprocess
        import sys

        # A foreground command's Ctrl-C: SIGINT at its default even when the tests themselves run as a
        # background job, which the shell starts with SIGINT ignored (inherited, and kept by Python).
        return subprocess.Popen([sys.executable, "-m", "pumice.cli.main", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def run(self, *args: str) -> str:
        proc = self.start(*args)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        return out

    def kill_when(self, ready, *args: str, poll: float = 0.02) -> None:
        """Start ``pumice ARGS``, SIGKILL its process group once ``ready()`` (or it ended, or 120 s)."""
        import os
        import signal
        import time

        proc = self.start(*args)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(poll)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def kill_midway(self, ledger, stage: str, total: int, *args: str) -> set[str]:
        """Start ``pumice ARGS``, SIGKILL its process group once a quarter of the tasks are done."""
        self.kill_when(lambda: len(ledger.done(stage)) >= total // 4, *args)
        done = ledger.done(stage)
        assert total // 4 <= len(done) < total, f"the kill should land midway ({len(done)}/{total})"
        assert ledger.state()["status"] == "running"  # nothing claims the job finished
        return done


@pytest.fixture
def processes() -> Processes:
    return Processes()


def layer_files(root: Path) -> dict[str, bytes]:
    """Every data file of a layer (not the ledger or provenance), for byte-for-byte comparison."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".pumice" not in p.parts and p.name != "provenance"}


@pytest.fixture
def files_of():
    return layer_files


# -- a real S3 endpoint: moto's standalone server on 127.0.0.1 --------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.skip("moto's S3 server did not start")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("PUMICE_S3_ENDPOINT", raising=False)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    if "pumice-test" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket="pumice-test")
    return s3_endpoint




@pytest.fixture
def pyramid_reference():
    """``pyramid_reference(data_xyz, offset, factors, method)``: see ``reference.global_grid_levels``."""
    from reference import global_grid_levels

    return global_grid_levels


class Workers:
    """`pumice worker URL --exit-when-empty` child processes."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, url: str, *options: str, cwd: str | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "pumice.cli.main", "worker", url, "--exit-when-empty", *options],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env=dict(os.environ), cwd=cwd, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.procs.append(proc)
        return proc

    def run(self, url: str, count: int = 2, *options: str, expect: int = 0, timeout: float = 300,
            cwd: str | None = None) -> list[tuple[str, str]]:
        """Start ``count`` workers, wait for all; each must exit with ``expect``."""
        from concurrent.futures import ThreadPoolExecutor

        procs = [self.start(url, *options, cwd=cwd) for _ in range(count)]
        # Every worker's pipes are read at once: one waited on while another fills its pipe would
        # block that one mid-task, and the first would wait for its task for ever.
        with ThreadPoolExecutor(len(procs)) as pool:
            results = list(pool.map(lambda proc: proc.communicate(timeout=timeout), procs))
        for proc, (out, err) in zip(procs, results):
            assert proc.returncode == expect, f"worker exited {proc.returncode}:\n{out}\n{err}"
        return results

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers():
    w = Workers()
    yield w
    w.stop_all()

