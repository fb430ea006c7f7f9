"""The Dask runner beyond byte-identity (test_runners_agree): local:N, failures, resume across
runners, and clear errors for what cannot work."""

from __future__ import annotations

import os
import signal
import time

from pumice.execution import cluster
from pumice.execution.ledger import Ledger
from pumice.ops import probe


def test_local_cluster_runs_stages_in_order_and_prints_the_dashboard(cli, tmp_path):
    code, out, err = cli("probe", tmp_path / "out", "--tasks", "50", "--stages", "2", "--cluster", "local:2", "--no-progress")
    assert code == 0, err
    assert "2 worker thread(s), dashboard http://" in err
    assert "100 task(s)" in out and "100 probe(s) ran" in out
    assert len(os.listdir(tmp_path / "out" / "probe" / "second")) == 50  # each checked the whole first stage was there


def test_failing_task_on_dask_fails_the_job_with_the_list(cli, tmp_path, dask_address):
    code, out, err = cli("probe", tmp_path / "out", "--tasks", "8", "--fail", "5", "--cluster", dask_address, "--no-progress")
    assert code == 1 and "1 task(s) of stage first failed after 3 attempts (first/" in err and "fails on purpose" in err
    assert len(os.listdir(tmp_path / "out" / "probe" / "first")) == 7  # the others finished
    code, out, _ = cli("status", tmp_path / "out")
    assert code == 1 and "failed; first 7/8 (1 failed)" in out


def test_a_job_stopped_on_a_queue_resumes_on_dask(wait_for, cli, tmp_path, dask_address, workers):
    """The ledger, beside the output, is what every runner reads: no finished task runs twice."""
    url = f"fq://{tmp_path}/queue"
    command = ["probe", tmp_path / "out", "--tasks", "12", "--seconds", "0.3"]
    assert cli(*command, "--queue", url)[0] == 0
    doomed = workers.start(url)
    plan, _ = probe.plan(str(tmp_path / "out"), tasks=12, seconds=0.3)
    ledger = Ledger(plan.destination, plan.job_id)
    wait_for(lambda: len(ledger.done("first")) >= 3, what="three tasks done")
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    done = len(ledger.done("first"))
    assert 3 <= done < 12
    code, out, err = cli(*command, "--cluster", dask_address, "--no-progress")
    assert code == 0, err
    assert f"({12 - done} run, {done} already done by an earlier run)" in out
    assert len(os.listdir(tmp_path / "out" / "probe" / "first")) == 12


def test_clear_errors(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1.0)
    started = time.time()
    code, _, err = cli("probe", tmp_path / "a", "--cluster", "tcp://127.0.0.1:9", "--no-progress")
    assert code == 2 and "cannot reach a Dask scheduler at tcp://127.0.0.1:9" in err and "Traceback" not in err
    assert time.time() - started < 30
    code, _, err = cli("probe", tmp_path / "a", "--cluster", "local:two")
    assert code == 2 and "local:N needs a number of workers" in err
    code, _, err = cli("probe", "memory://x", "--cluster", "local:1")
    assert code == 2 and "memory:// data lives inside one process" in err
    code, _, err = cli("probe", tmp_path / "a", "--cluster", "local:1", "--queue", f"fq://{tmp_path}/q")
    assert code == 2 and "choose different runners" in err
