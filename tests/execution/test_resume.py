"""Acceptance: every operation, SIGKILLed once a quarter of a stage's tasks are done, finishes when
the same command runs again, runs only the tasks that had not finished, and writes the bytes of an
uninterrupted run. The cases are the ones each operation's test module declares (RESUME_CASES,
tests/framework.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework import declared, run_json

from pumice.execution.ledger import Ledger

CASES = declared("RESUME_CASES")
RUN = ["--workers", "2", "--no-progress"]


def _files(root: Path) -> dict[str, bytes]:
    """Every file of the output but the ledgers and the provenance (records of objects included)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "jobs" not in p.relative_to(root).parts and p.name != "provenance"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if c.slow else []) for n, c in sorted(CASES.items())])
def test_killed_midway_a_rerun_finishes_the_job_with_identical_bytes(name, tmp_path, cli, processes):
    case = CASES[name]
    command, reference = case.setup(cli, tmp_path / "ref")
    processes.run(*command, *RUN)

    command, out = case.setup(cli, tmp_path / "out")
    plan = run_json(cli, *command, "--dry-run")
    stages = list(plan["stages"])
    assert plan["stages"][case.stage] >= 40, "too few tasks for a kill to land midway"
    ledger = Ledger(str(out), plan["job"])
    done = processes.kill_midway(ledger, case.stage, plan["stages"][case.stage], *command, *RUN)
    earlier = sum(plan["stages"][s] for s in stages[: stages.index(case.stage)])
    for stage in stages[: stages.index(case.stage)]:
        assert len(ledger.done(stage)) == plan["stages"][stage]

    summary = json.loads(processes.run(*command, *RUN, "--json").strip().splitlines()[-1])
    assert summary["skipped"] == len(done) + earlier
    assert summary["ran"] == plan["tasks"] - len(done) - earlier
    assert ledger.state()["status"] == "complete"
    files = getattr(case.setup, "files", _files)  # a case may say what its output is (tests/framework.py)
    assert files(out) == files(reference)



# The operations whose finish gathers work files (and whose cleanup deletes them).
GATHERING = ["agglomerate", "align-render", "ccl", "edges", "evaluate", "label-index", "mesh", "skeleton", "stats",
             "watershed"]


@pytest.mark.parametrize("name", GATHERING)
def test_a_complete_job_run_again_keeps_its_output(name, tmp_path, cli, processes):
    """The same command again once the job is complete (the operation's small runner case): every
    task is done and the work files are gone, so the finish must not run over them again (edges
    wrote a merge table of no edges from the missing parts, ccl an empty --mapping-out, stats empty
    segment properties, evaluate failed); the outputs stay byte for byte."""
    setup = declared("RUNNER_CASES")[name]
    command, out = setup(cli, tmp_path)
    processes.run(*command, *RUN)
    files = getattr(setup, "files", _files)
    before = files(out)
    summary = json.loads(processes.run(*command, *RUN, "--json").strip().splitlines()[-1])
    assert summary.get("ran", 0) == 0
    assert files(out) == before
