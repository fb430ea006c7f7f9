"""The plan model every operation is built on: stages whose counts are their task counts, tasks any
process resolves by name, and an operation that joins every runner by existing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from framework import declared, run_json

from pumice.geometry import Bbox
from pumice.plan import Stage, Task, _REGISTRY, plan_from_recipe


def test_a_grid_stage_counts_exactly_the_tasks_it_yields_on_random_geometries():
    rng = np.random.default_rng(0)
    for _ in range(300):
        lo = rng.integers(-50, 50, 3)
        region = Bbox(tuple(lo), tuple(lo + rng.integers(1, 200, 3)))
        block = tuple(int(b) for b in rng.integers(1, 64, 3))
        origin = tuple(int(o) for o in rng.integers(-100, 100, 3))
        stage = Stage.grid("s", region, block, lambda box: box, origin)
        boxes = list(stage.tasks())
        assert stage.count == len(boxes)
        assert sum(b.size for b in boxes) == region.size  # and they tile the region
    stage = Stage.each("e", range(17), lambda i: i)
    assert stage.count == len(list(stage.tasks())) == 17


CASES = declared("RUNNER_CASES")


@pytest.mark.parametrize("memory", ["30KB", "100KB", "2MB"])
@pytest.mark.parametrize("operation", sorted(CASES))
def test_every_operations_stage_counts_equal_the_tasks_it_lists(operation, memory, tmp_path, cli):
    """Queues trust Stage.count to know when a stage is over: for each operation's case, at three
    memory budgets (three task grids where the budget sets the block), the plan rebuilt from the
    recipe of a run (as a queue worker rebuilds it) lists exactly as many tasks per stage as it counts
    and as the run ran."""
    command, _ = CASES[operation](cli, tmp_path)
    command = [a for i, a in enumerate(command) if a != "--memory" and (i == 0 or command[i - 1] != "--memory")]
    accepts_memory = operation not in ("delete", "probe", "levels")
    summary = run_json(cli, *command, *(["--memory", memory] if accepts_memory else []), "--no-progress")
    plan = plan_from_recipe(summary["recipe"])
    assert plan.job_id == summary["job"]
    for stage in plan.stages:
        assert stage.count == sum(1 for _ in stage.tasks()) == summary["stages"][stage.name]["tasks"], f"stage {stage.name}"
    assert plan.task_count >= 1


def test_a_fresh_interpreter_resolves_every_registered_task_name():
    import pumice.ops  # noqa: F401 - registers every task here, to know the names

    names = sorted(n for n, cls in _REGISTRY.items() if cls.__module__.startswith("pumice.ops."))  # not tests' own tasks
    assert {"ingest", "downsample", "transfer", "transfer.copy", "mesh.forge", "contrast.clahe"} <= set(names)
    code = ("import json, sys\nfrom pumice.plan import task_class\n"
            "names = json.load(sys.stdin)\nprint(json.dumps({n: task_class(n).__module__ for n in names}))")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(names), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)
    assert sorted(resolved) == names and all(m.startswith("pumice.ops.") for m in resolved.values())


def test_an_unknown_task_name_says_where_it_should_be():
    from pumice.plan import task_from_json

    with pytest.raises(KeyError, match="pumice/ops"):
        task_from_json({"task": "no.such.task", "args": {}})


def test_tasks_are_plain_frozen_dataclasses():
    import dataclasses

    import pumice.ops  # noqa: F401

    for name, cls in _REGISTRY.items():
        assert issubclass(cls, Task) and dataclasses.is_dataclass(cls), name
        assert cls.__dataclass_params__.frozen, f"{name} must be frozen"
