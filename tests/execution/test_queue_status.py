"""Acceptance: `pumice status` on a queue shows the truth in each state (fresh, running, stalled,
finished; failed is in test_queue_faults), and `pumice queue release|purge` do what they say."""

from __future__ import annotations

import json
import os
import signal
import time

from pumice.execution import queued
from pumice.execution.transport import open_queue


def _numbers(cli, url):
    code, out, err = cli("status", url, "--json")
    assert code == 0, err
    info = json.loads(out)
    row = info["stages"][0]
    return info["state"], (row["done"], row["leased"], row["waiting"], row["failed"], row["total"])


def test_status_through_a_jobs_life_and_queue_control(wait_for, cli, tmp_path, workers):
    url = f"fq://{tmp_path}/queue"
    code, out, _ = cli("status", url)
    assert code == 2 and "no queue at" in _  # nothing there yet: one clear line
    command = ["probe", tmp_path / "out", "--tasks", "6", "--seconds", "0.6"]
    code, out, err = cli(*command, "--queue", url)
    assert code == 0 and "queued 6 task(s) of stage first" in out, err

    assert _numbers(cli, url) == ("fresh", (0, 0, 6, 0, 6))
    code, out, _ = cli("status", url)
    assert "fresh" in out and f"start workers with `pumice worker {url}`" in out

    doomed = workers.start(url, "--lease-seconds", "2")
    wait_for(lambda: _numbers(cli, url)[1][0] >= 2, what="two tasks done")
    state, (done, leased, waiting, failed, total) = _numbers(cli, url)
    assert state == "running" and leased == 1 and done + leased + waiting == 6 and failed == 0
    info = queued.status(url)
    assert info["stages"][0]["rate"] > 0 and info["stages"][0]["eta_seconds"] > 0
    code, out, _ = cli("status", url)
    assert "task/s, ETA" in out

    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    time.sleep(3)  # its lease runs out
    state, (done, leased, waiting, failed, total) = _numbers(cli, url)
    assert state == "stalled" and leased == 0 and waiting == 6 - done and 2 <= done < 6

    # A lease held elsewhere, then released by hand.
    queue = open_queue(url)
    held = queue.lease(600)
    assert held is not None and _numbers(cli, url)[1][1] == 1
    code, out, _ = cli("queue", "release", url)
    assert code == 0 and _numbers(cli, url)[1][1] == 0

    # Purge: nothing left on the queue; enqueueing the same command again resumes from the ledger.
    code, out, _ = cli("queue", "purge", url)
    assert code == 0 and queue.counts() == (0, 0)
    assert _numbers(cli, url)[0] == "purged"
    code, out, err = cli(*command, "--queue", url)
    assert code == 0 and f"queued {6 - done} task(s)" in out, (out, err)

    (out, _), = workers.run(url, 1)
    assert f"{6 - done} task(s) run" in out
    assert _numbers(cli, url) == ("finished", (6, 0, 0, 0, 6))
    code, out, _ = cli(*command, "--queue", url)
    assert code == 0 and "already done" in out


def test_a_queue_serves_one_job_at_a_time(cli, tmp_path):
    url = f"fq://{tmp_path}/queue"
    assert cli("probe", tmp_path / "a", "--tasks", "3", "--queue", url)[0] == 0
    code, out, err = cli("probe", tmp_path / "a", "--tasks", "3", "--queue", url)
    assert code == 0 and "already on" in out and "nothing added" in out
    assert open_queue(url).counts() == (3, 0)
    code, _, err = cli("probe", tmp_path / "b", "--tasks", "3", "--queue", url)
    assert code == 2 and "still serves job probe-" in err and f"pumice queue purge {url}" in err


def test_bad_queue_input_is_one_clear_line(cli, tmp_path, sqs_url):
    code, _, err = cli("probe", "memory://x", "--tasks", "3", "--queue", f"fq://{tmp_path}/q")
    assert code == 2 and "memory:// data lives inside one process" in err and "Traceback" not in err
    code, _, err = cli("probe", tmp_path / "a", "--queue", "redis://host/q")
    assert code == 2 and "not a queue URL" in err
    code, _, err = cli("probe", tmp_path / "a", "--queue", f"fq://{tmp_path}/q", "--workers", "2")
    assert code == 2 and "choose different runners" in err
    code, _, err = cli("worker", f"fq://{tmp_path}/nothing", "--exit-when-empty")
    assert code == 2 and "no queue at" in err
    code, _, err = cli("worker", f"fq://{tmp_path}/q", "--lease-seconds", "0.5")
    assert code == 2 and "--lease-seconds must be at least 2" in err
    assert cli("probe", tmp_path / "a", "--tasks", "2", "--queue", sqs_url)[0] == 0
    code, _, err = cli("queue", "release", sqs_url)
    assert code == 2 and "SQS cannot take back leases" in err


def test_dead_letters_also_catch_a_task_that_kills_its_worker(wait_for, cli, tmp_path, workers):
    """A lease that keeps running out counts as attempts: the task does not circulate forever."""
    url = f"fq://{tmp_path}/queue"
    assert cli("probe", tmp_path / "out", "--tasks", "1", "--seconds", "30", "--queue", url)[0] == 0
    for _ in range(2):
        doomed = workers.start(url, "--lease-seconds", "2", "--max-attempts", "2")
        wait_for(lambda: queued.status(url)["stages"][0]["leased"] == 1, what="a lease")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        wait_for(lambda: queued.status(url)["stages"][0]["leased"] == 0, timeout=10, what="the lease to run out")
    (_, err), = workers.run(url, 1, "--lease-seconds", "2", "--max-attempts", "2", expect=1)
    assert "1 task(s) are dead letters" in err
    error, = queued.status(url)["errors"]
    assert "its lease ran out 2 time(s)" in error["error"]


def test_a_refused_enqueue_leaves_no_half_made_layer(cli, tmp_path):
    url = f"fq://{tmp_path}/queue"
    assert cli("probe", tmp_path / "a", "--tasks", "3", "--queue", url)[0] == 0
    source = tmp_path / "img.npy"
    import numpy as np

    np.save(source, np.zeros((4, 8, 8), np.uint8))
    code, _, err = cli("ingest", source, tmp_path / "fresh", "--resolution", "1,1,1", "--queue", url)
    assert code == 2 and "still serves job" in err and "nothing was kept" in err
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").rglob("*"))


def test_sigterm_hands_the_lease_back_at_once(wait_for, cli, tmp_path, workers):
    """A preempted node or a deleted pod gets SIGTERM: its task is free for others without waiting."""
    url = f"fq://{tmp_path}/queue"
    assert cli("probe", tmp_path / "out", "--tasks", "1", "--seconds", "30", "--queue", url)[0] == 0
    worker = workers.start(url, "--lease-seconds", "600")
    wait_for(lambda: queued.status(url)["stages"][0]["leased"] == 1, what="a lease")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert _numbers(cli, url) == ("fresh", (0, 0, 1, 0, 1))
