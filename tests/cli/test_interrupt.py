"""Ctrl-C or SIGTERM (a scheduler stopping a job) winds a run down cleanly and says how to resume.
Killed runs that resume are tested for every operation in tests/execution/test_resume.py."""

import os
import signal
import time

import numpy as np
import pytest


@pytest.mark.parametrize("how", ["SIGTERM to the CLI", "SIGINT to the process group (Ctrl-C)"])
def test_interrupt_winds_down_cleanly_and_says_how_to_resume(tmp_path, processes, how):
    np.save(tmp_path / "vol.npy", np.zeros((128, 512, 256), dtype=np.uint16))  # thousands of tasks: it cannot finish first
    dest = tmp_path / "out"
    proc = processes.start("ingest", tmp_path / "vol.npy", dest, "--resolution", "1,1,1", "--chunk-size", "32,32,8",
                  "--memory", "100KB", "--workers", "2", "--no-progress")
    deadline = time.time() + 60
    while time.time() < deadline and not any(any(os.scandir(d)) for d in (dest / ".pumice").glob("jobs/*/done/ingest")):
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
