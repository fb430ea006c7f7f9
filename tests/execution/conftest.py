"""Runners beyond one process: a Dask LocalCluster, `pumice worker` processes, SQS on moto's server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest


@pytest.fixture(scope="session")
def dask_address():
    """A real dask.distributed LocalCluster: 2 single-threaded worker processes."""
    import logging

    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture
def sqs_env(s3_env, monkeypatch):
    """boto3 (in this process and in workers) talks to moto's server, which also serves SQS."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_env


@pytest.fixture
def sqs_url(sqs_env):
    return f"sqs://pumice-{uuid.uuid4().hex[:12]}"


class Workers:
    """`pumice worker URL --exit-when-empty` child processes."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, url: str, *options: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "pumice.cli.main", "worker", url, "--exit-when-empty", *options],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env=dict(os.environ), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.procs.append(proc)
        return proc

    def run(self, url: str, count: int = 2, *options: str, expect: int = 0, timeout: float = 300) -> list[tuple[str, str]]:
        """Start ``count`` workers, wait for all; each must exit with ``expect``."""
        procs = [self.start(url, *options) for _ in range(count)]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == expect, f"worker exited {proc.returncode}:\n{out}\n{err}"
            results.append((out, err))
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


@pytest.fixture
def wait_for():
    """``wait_for(condition, timeout, what)``: poll until ``condition()`` is truthy; fail after ``timeout`` s."""

    def wait(condition, timeout: float = 60.0, what: str = "condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    return wait
