"""Acceptance: SIGKILL an ingest midway; the same command run again completes, redoes no finished
task, and gives bytes identical to an uninterrupted run."""

import os
import re
import signal
import time

import numpy as np

from pumice.execution.ledger import Ledger
from pumice.ops import ingest


def test_sigkill_then_rerun_resumes_to_identical_bytes(tmp_path, processes, files_of):
    data = np.random.default_rng(7).integers(0, 2**16, (96, 160, 192), dtype=np.uint16)  # Z, Y, X
    np.save(tmp_path / "vol.npy", data)
    args = [str(tmp_path / "vol.npy"), "--resolution", "4,4,40", "--chunk-size", "32,32,8", "--memory", "300KB",
            "--workers", "2", "--no-progress"]

    processes.run("ingest", args[0], tmp_path / "ref", *args[1:])

    dest = tmp_path / "out"
    plan, _ = ingest.plan(args[0], str(dest), resolution=(4, 4, 40), chunk_size=(32, 32, 8), memory=300_000)
    total = plan.task_count
    assert total >= 100
    ledger = Ledger(str(dest), plan.job_id)

    done_before = processes.kill_midway(ledger, "ingest", total, "ingest", args[0], dest, *args[1:])

    # Chunk files of finished tasks must not be rewritten by the rerun.
    by_id = {t.id: t for t in plan.stages[0].tasks()}
    scale_dir = dest / "4_4_40"
    def chunks_of(task):
        x0, y0, z0, x1, y1, z1 = task.bbox
        return [p for p in scale_dir.iterdir() if _inside(p.name, task.bbox)]
    stamps = {p: p.stat().st_mtime_ns for tid in list(done_before)[:20] for p in chunks_of(by_id[tid])}
    assert stamps

    out = processes.run("ingest", args[0], dest, *args[1:])
    match = re.search(r"\((\d+) run, (\d+) already done", out)
    assert match, out
    assert int(match.group(2)) == len(done_before) and int(match.group(1)) == total - len(done_before)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert ledger.state()["status"] == "complete"
    assert files_of(dest) == files_of(tmp_path / "ref")


def _inside(name: str, bbox) -> bool:
    m = re.fullmatch(r"(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)", name)
    if not m:
        return False
    x0, x1, y0, y1, z0, z1 = map(int, m.groups())
    return bbox[0] <= x0 and x1 <= bbox[3] and bbox[1] <= y0 and y1 <= bbox[4] and bbox[2] <= z0 and z1 <= bbox[5]


import pytest


@pytest.mark.parametrize("how", ["SIGTERM to the CLI", "SIGINT to the process group (Ctrl-C)"])
def test_interrupt_winds_down_cleanly_and_says_how_to_resume(tmp_path, processes, how):
    np.save(tmp_path / "vol.npy", np.zeros((64, 256, 256), dtype=np.uint16))
    dest = tmp_path / "out"
    proc = processes.start("ingest", tmp_path / "vol.npy", dest, "--resolution", "1,1,1", "--chunk-size", "32,32,8",
                  "--memory", "100KB", "--workers", "2", "--no-progress")
    deadline = time.time() + 60
    while time.time() < deadline and not list((dest / ".pumice").rglob("done/ingest/*")):
        time.sleep(0.02)
    if how.startswith("SIGTERM"):
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err
    assert "Traceback" not in err and "leaked" not in err
    state = next((dest / ".pumice" / "jobs").glob("*/job.json")).read_text()
    assert '"interrupted"' in state
