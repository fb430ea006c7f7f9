"""Acceptance: SIGKILL an ingest midway; the same command run again completes, redoes no finished
task, and gives bytes identical to an uninterrupted run."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pumice.execution.ledger import Ledger
from pumice.ops import ingest


def pumice(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pumice.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def chunk_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".pumice" not in p.parts and p.name != "provenance"}


def test_sigkill_then_rerun_resumes_to_identical_bytes(tmp_path):
    data = np.random.default_rng(7).integers(0, 2**16, (96, 160, 192), dtype=np.uint16)  # Z, Y, X
    np.save(tmp_path / "vol.npy", data)
    args = [str(tmp_path / "vol.npy"), "--resolution", "4,4,40", "--chunk-size", "32,32,8", "--memory", "300KB",
            "--workers", "2", "--no-progress"]

    reference = pumice("ingest", args[0], str(tmp_path / "ref"), *args[1:])
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    dest = tmp_path / "out"
    plan, _ = ingest.plan(args[0], str(dest), resolution=(4, 4, 40), chunk_size=(32, 32, 8), memory=300_000, dry_run=True)
    total = plan.task_count
    assert total >= 100
    ledger = Ledger(str(dest), plan.job_id)

    victim = pumice("ingest", args[0], str(dest), *args[1:])
    deadline = time.time() + 120
    while time.time() < deadline and (not (dest / "info").exists() or len(ledger.done("ingest")) < total // 4):
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    done_before = ledger.done("ingest")
    assert total // 4 <= len(done_before) < total, "the kill should land midway"
    assert ledger.state()["status"] == "running"  # nothing claims the job finished

    # Chunk files of finished tasks must not be rewritten by the rerun.
    by_id = {t.id: t for t in plan.stages[0].tasks()}
    scale_dir = dest / "4_4_40"
    def files_of(task):
        x0, y0, z0, x1, y1, z1 = task.bbox
        return [p for p in scale_dir.iterdir() if _inside(p.name, task.bbox)]
    stamps = {p: p.stat().st_mtime_ns for tid in list(done_before)[:20] for p in files_of(by_id[tid])}
    assert stamps

    rerun = pumice("ingest", args[0], str(dest), *args[1:])
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    match = re.search(r"\((\d+) run, (\d+) already done", out)
    assert match, out
    assert int(match.group(2)) == len(done_before) and int(match.group(1)) == total - len(done_before)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert ledger.state()["status"] == "complete"
    assert chunk_files(dest) == chunk_files(tmp_path / "ref")


def _inside(name: str, bbox) -> bool:
    m = re.fullmatch(r"(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)", name)
    if not m:
        return False
    x0, x1, y0, y1, z0, z1 = map(int, m.groups())
    return bbox[0] <= x0 and x1 <= bbox[3] and bbox[1] <= y0 and y1 <= bbox[4] and bbox[2] <= z0 and z1 <= bbox[5]


import pytest


@pytest.mark.parametrize("how", ["SIGTERM to the CLI", "SIGINT to the process group (Ctrl-C)"])
def test_interrupt_winds_down_cleanly_and_says_how_to_resume(tmp_path, how):
    np.save(tmp_path / "vol.npy", np.zeros((64, 256, 256), dtype=np.uint16))
    dest = tmp_path / "out"
    proc = pumice("ingest", str(tmp_path / "vol.npy"), str(dest), "--resolution", "1,1,1", "--chunk-size", "32,32,8",
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
