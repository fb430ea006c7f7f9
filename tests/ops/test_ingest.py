"""Ingest's cases for the shared runner and resume tests, and what a killed ingest leaves alone.

The format-by-format tests are beside this module: test_ingest_sources.py (every source reads back
equal), test_ingest_bad_input.py (one line, exit 2, nothing written), test_ingest_degenerate_shapes.py
and test_ingest_zero_chunks.py.
"""

import re

import numpy as np

from framework import IMAGE, Resume, run_json, runner_image

from pumice.execution.ledger import Ledger
from pumice.ops import ingest


def _runner_case(cli, root):
    return ["ingest", str(runner_image(root)), str(root / "out"), *IMAGE, "--memory", "100KB"], root / "out"


def _resume_case(cli, root):
    root.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(7).integers(0, 2**16, (96, 160, 192), dtype=np.uint16)  # Z, Y, X
    np.save(root / "vol.npy", data)
    return ["ingest", str(root / "vol.npy"), str(root / "out"), "--resolution", "4,4,40", "--chunk-size", "32,32,8",
            "--memory", "300KB"], root / "out"


RUNNER_CASES = {"ingest": _runner_case}
RESUME_CASES = {"ingest": Resume(_resume_case, "ingest")}


def test_a_rerun_after_a_kill_leaves_finished_chunks_untouched(tmp_path, cli, processes):
    """Beyond the counts the shared resume test checks: the chunk files of finished tasks are not
    written again (their modification times stay)."""
    command, dest = _resume_case(cli, tmp_path)
    options = ["--workers", "2", "--no-progress"]
    plan, _ = ingest.plan(command[1], str(dest), resolution=(4, 4, 40), chunk_size=(32, 32, 8), memory=300_000)
    assert plan.job_id == run_json(cli, *command, "--dry-run")["job"]
    ledger = Ledger(str(dest), plan.job_id)
    done = processes.kill_midway(ledger, "ingest", plan.task_count, *command, *options)
    boxes = {t.id: t.bbox for t in plan.stages[0].tasks()}
    stamps = {p: p.stat().st_mtime_ns for task in list(done)[:20] for p in (dest / "4_4_40").iterdir()
              if _inside(p.name, boxes[task])}
    assert stamps
    summary = run_json(cli, *command, *options)
    assert summary["skipped"] == len(done) and summary["ran"] == plan.task_count - len(done)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def _inside(name: str, bbox) -> bool:
    m = re.fullmatch(r"(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)", name)
    if not m:
        return False
    x0, x1, y0, y1, z0, z1 = map(int, m.groups())
    return bbox[0] <= x0 and x1 <= bbox[3] and bbox[1] <= y0 and y1 <= bbox[4] and bbox[2] <= z0 and z1 <= bbox[5]
