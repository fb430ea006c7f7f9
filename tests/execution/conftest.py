"""Runners beyond one process: a Dask LocalCluster, `pumice worker` processes, SQS on moto's server."""

from __future__ import annotations

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
