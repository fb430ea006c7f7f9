"""Acceptance (issues 4 and 5): SIGKILL `pumice mesh` or `pumice skeleton` during forge and during
merge; the same command run again completes, redoes no finished task, and writes bytes identical
to an uninterrupted run."""

import re

import numpy as np
import pytest

from pumice.execution.ledger import Ledger
from pumice.ops import mesh, skeleton

SHAPE = (128, 96, 64)  # x, y, z
BLOCK = "16,16,16"  # 8 x 6 x 4 = 192 forge tasks, 128 merge partitions


def _labels() -> np.ndarray:
    """Overlapping random balls: objects that cross many blocks, so merges weld fragments."""
    rng = np.random.default_rng(4)
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    lab = np.zeros(SHAPE, np.uint32)
    for label in range(1, 61):
        c = rng.uniform(0, SHAPE)
        r = rng.uniform(4, 14)
        lab[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < r * r] = label
    return lab


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh_resume")
    np.save(root / "lab.npy", _labels().transpose(2, 1, 0))
    return root


def _ingest(processes, root, name):
    processes.run("ingest", root / "lab.npy", root / name, "--resolution", "8,8,10", "--chunk-size", "32,32,32",
                  "--no-progress")
    return root / name


OPERATIONS = {"mesh": (mesh.plan, mesh.meshed_objects, "mesh", []),
              "skeleton": (skeleton.plan, skeleton.skeletonized_objects, "skeletons",
                           ["--dust-threshold", "100", "--min-cable", "0"])}


@pytest.mark.slow
@pytest.mark.parametrize("operation,stage,sharded", [
    ("mesh", "forge", False), ("mesh", "merge", True), ("mesh", "forge", True), ("mesh", "merge", False),
    ("skeleton", "forge", True), ("skeleton", "merge", False),
])
def test_sigkill_then_rerun_finishes_with_identical_bytes(source, processes, files_of, operation, stage, sharded):
    planner, recorded, directory, extra = OPERATIONS[operation]
    fmt = ["--sharded"] if sharded else []
    tag = f"{operation}-{stage}-{'sharded' if sharded else 'plain'}"
    args = ["--shape", BLOCK, *fmt, *extra, "--workers", "2", "--no-progress"]

    ref = _ingest(processes, source, f"ref-{tag}")
    processes.run(operation, ref, *args)

    dest = _ingest(processes, source, f"out-{tag}")
    options = {"dust_threshold": 100, "min_cable": 0} if operation == "skeleton" else {}
    plan, _ = planner(str(dest), shape=(16, 16, 16), sharded=sharded, **options)
    totals = {s.name: s.count for s in plan.stages}
    assert totals["forge"] >= 100 and totals["merge"] >= 64
    ledger = Ledger(str(dest), plan.job_id)

    done_before = processes.kill_midway(ledger, stage, totals[stage], operation, dest, *args)
    if stage == "merge":
        assert len(ledger.done("forge")) == totals["forge"]

    out = processes.run(operation, dest, *args)
    match = re.search(r"\((\d+) run, (\d+) already done", out)
    assert match, out
    finished_earlier = len(done_before) + (totals["forge"] if stage == "merge" else 0)
    assert int(match.group(2)) == finished_earlier
    assert int(match.group(1)) == sum(totals.values()) - finished_earlier
    assert ledger.state()["status"] == "complete"
    assert not any((dest / directory / ".forge").rglob("*_*"))
    assert files_of(dest) == files_of(ref)
    assert recorded(str(dest), directory) == recorded(str(ref), directory) and len(recorded(str(ref), directory)) > 40
