"""Acceptance: faults on the queue runner. A worker SIGKILLed mid-task loses its lease and another
worker finishes the task; a task that always raises becomes a dead letter after the attempt limit
while the others finish, and the job reports failure; a storage endpoint that refuses connections
for a few seconds is ridden out; `pumice status` tells the truth in every state."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from pumice.execution import queued
from pumice.execution.ledger import Ledger
from pumice.ops import probe


def _queue_url(kind, tmp_path, request):
    return f"fq://{tmp_path}/queue" if kind == "fq" else request.getfixturevalue("sqs_url")


@pytest.mark.parametrize("kind", ["fq", "sqs"])
def test_sigkilled_worker_loses_its_lease_and_another_finishes(wait_for, kind, cli, tmp_path, request, workers, files_of):
    url = _queue_url(kind, tmp_path, request)
    code, _, err = cli("probe", tmp_path / "ref", "--tasks", "4", "--seconds", "1.5", "--workers", "2", "--no-progress")
    assert code == 0, err
    code, _, err = cli("probe", tmp_path / "out", "--tasks", "4", "--seconds", "1.5", "--queue", url)
    assert code == 0, err

    doomed = workers.start(url, "--lease-seconds", "3")
    wait_for(lambda: queued.status(url)["stages"][0]["leased"] >= 1, what="the first worker's lease")
    time.sleep(0.5)  # well inside its first 1.5 s task
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    info = queued.status(url)
    assert info["stages"][0]["done"] == 0 and info["state"] == "running"  # its lease still holds

    (out, err), = workers.run(url, 1, "--lease-seconds", "3")
    assert "4 task(s) run" in out, out  # including the one the killed worker held
    info = queued.status(url)
    assert info["state"] == "finished" and info["stages"][0]["done"] == 4 and info["stages"][0]["failed"] == 0
    assert files_of(tmp_path / "out") == files_of(tmp_path / "ref")


@pytest.mark.parametrize("kind", ["fq", "sqs"])
def test_task_that_always_raises_is_dead_lettered_and_the_job_fails(kind, cli, tmp_path, request, workers):
    url = _queue_url(kind, tmp_path, request)
    code, _, err = cli("probe", tmp_path / "out", "--tasks", "6", "--stages", "2", "--fail", "2", "--queue", url)
    assert code == 0, err
    results = workers.run(url, 2, "--max-attempts", "2", expect=1)
    for out, err in results:
        assert "failed: 1 task(s) are dead letters (first/" in err and "Traceback" not in err
    # Everything else of the first stage finished; the second stage never started.
    assert sorted(os.listdir(tmp_path / "out" / "probe" / "first")) == ["0", "1", "3", "4", "5"]
    assert not (tmp_path / "out" / "probe" / "second").exists()

    info = queued.status(url)
    assert info["state"] == "failed"
    first, second = info["stages"]
    assert (first["done"], first["failed"], first["leased"], first["waiting"]) == (5, 1, 0, 0)
    assert (second["done"], second["failed"], second["waiting"]) == (0, 0, 6)
    error, = info["errors"]
    assert error["error"] == "ProbeFailure: probe task first/2 fails on purpose" and error["attempts"] == 2

    plan, _ = probe.plan(str(tmp_path / "out"), tasks=6, stages=2, fail=(2,))
    record = Ledger(plan.destination, plan.job_id).failure("first", error["task"])
    assert "Traceback" in record["traceback"] and "probe.py" in record["traceback"]
    assert record["task"]["args"]["index"] == 2

    code, out, _ = cli("status", url)
    assert code == 1 and "failed" in out and "first errors:" in out and "fails on purpose" in out

    code, out, _ = cli("queue", "retry-failed", url)
    assert code == 0 and "1 dead-lettered task(s) back on the queue" in out
    info = queued.status(url)
    assert info["state"] != "failed" and info["stages"][0]["waiting"] == 1 and info["stages"][0]["failed"] == 0
    workers.run(url, 1, "--max-attempts", "1", expect=1)  # it fails again, once, and the job says so again
    assert queued.status(url)["state"] == "failed"


class RefusingProxy:
    """A TCP proxy in front of the S3 endpoint that can refuse connections for a while."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.port = 0
        self.open = threading.Event()
        self.stopping = False
        self.connections: list[socket.socket] = []
        self._listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _listen(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.port = self.server.getsockname()[1]
        self.server.listen(64)
        self.server.settimeout(0.1)
        self.open.set()

    def _serve(self) -> None:
        while not self.stopping:
            if not self.open.is_set():
                time.sleep(0.05)
                continue
            try:
                client, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            upstream = socket.create_connection(self.target)
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def refuse(self, seconds: float) -> None:
        """Close the port (connection refused) and cut open connections; reopen after ``seconds``."""
        self.open.clear()
        self.server.close()
        for s in self.connections:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connections.clear()
        time.sleep(seconds)
        self._listen()

    def close(self) -> None:
        self.stopping = True
        self.server.close()


def test_storage_that_refuses_for_a_few_seconds_is_retried(wait_for, cli, tmp_path, s3_env, workers, files_of, monkeypatch):
    proxy = RefusingProxy(int(s3_env.rsplit(":", 1)[1]))
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
        dest = f"s3://pumice-test/refuse-{time.time_ns()}"
        url = f"fq://{tmp_path}/queue"
        code, _, err = cli("probe", dest, "--tasks", "40", "--seconds", "0.1", "--queue", url)
        assert code == 0, err
        procs = [workers.start(url) for _ in range(2)]
        plan, _ = probe.plan(dest, tasks=40, seconds=0.1)
        ledger = Ledger(plan.destination, plan.job_id)
        wait_for(lambda: len(ledger.done("first")) >= 5, what="the first tasks")
        assert len(ledger.done("first")) < 30  # the refusal lands while workers are busy
        proxy.refuse(3.0)
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert queued.status(url)["state"] == "finished"
        assert len(ledger.done("first")) == 40
        import boto3

        s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pumice-test", Prefix=dest.split("/", 3)[3] + "/probe/")["Contents"]]
        assert len(keys) == 40
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["fq", "sqs"])
def test_messages_lost_from_the_queue_are_enqueued_again(kind, cli, tmp_path, request, workers):
    """A message gone without its tasks being done (a purge, an enqueue killed midway, a store that
    dropped it): the stage would never finish. Workers enqueue the missing tasks again, at once on
    fq, after --lost-after seconds of an empty-looking queue on SQS (whose counts lag)."""
    from pumice.execution.transport import open_queue

    url = _queue_url(kind, tmp_path, request)
    code, _, err = cli("probe", tmp_path / "out", "--tasks", "6", "--stages", "2", "--queue", url)
    assert code == 0, err
    queue = open_queue(url)
    for _ in range(2):  # two of the first stage's six messages are lost
        message = queue.lease(60)
        assert message is not None
        queue.delete(message)

    results = workers.run(url, 2, "--lost-after", "2")
    assert any("2 task(s) were missing from the queue; enqueued them again" in err for _, err in results), results
    assert any("finished: every stage is done" in err for _, err in results)
    info = queued.status(url)
    assert info["state"] == "finished" and [stage["done"] for stage in info["stages"]] == [6, 6]
    for stage in ("first", "second"):
        assert sorted(os.listdir(tmp_path / "out" / "probe" / stage)) == [str(i) for i in range(6)]
