import json
from dataclasses import dataclass

import numpy as np
import pytest

from pumice.errors import RunFailed, SourceError
from pumice.execution import local
from pumice.execution.ledger import Ledger, jobs
from pumice.ops.ingest import IngestTask
from pumice.ops import ingest
from pumice.plan import Plan, Stage, Task, register, task_from_json
from pumice.storage.kv import open_kv

CALLS: list[str] = []


@register("test.record")
@dataclass(frozen=True)
class RecordTask(Task):
    key: str
    fail_times: int = 0
    bad_input: bool = False

    def run(self):
        CALLS.append(self.key)
        if self.bad_input:
            raise SourceError(f"bad input in {self.key}")
        if CALLS.count(self.key) <= self.fail_times:
            raise OSError(f"transient failure of {self.key}")
        open_kv("memory://runner").put(self.key, b"x")
        return {"voxels": 10}


def make_plan(tasks, finish=None):
    return Plan("test", "memory://runner", {"n": len(tasks), "keys": [t.key for t in tasks]},
                [Stage("one", lambda: iter(tasks), len(tasks))], finish=finish)


@pytest.fixture(autouse=True)
def fresh():
    CALLS.clear()
    open_kv("memory://runner").delete_prefix("")


def test_task_json_roundtrip_and_stable_id():
    task = IngestTask(source="/a.npy", dataset=None, axes="zyx", dest="file:///d", bbox=(0, 0, 0, 4, 4, 4), offset=(1, 2, 3))
    back = task_from_json(json.loads(json.dumps(task.to_json())))
    assert back == task and back.id == task.id
    assert task.id != IngestTask(source="/a.npy", dataset=None, axes="zyx", dest="file:///d",
                                 bbox=(0, 0, 0, 4, 4, 8), offset=(1, 2, 3)).id


def test_rerun_skips_finished_tasks_and_finish_runs():
    finished = []
    tasks = [RecordTask(f"k{i}") for i in range(5)]
    report = local.run(make_plan(tasks, finish=lambda: finished.append(1)), workers=1, progress=False)
    assert report.ran == 5 and report.total("voxels") == 50 and finished == [1]
    report = local.run(make_plan(tasks, finish=lambda: finished.append(1)), workers=1, progress=False)
    assert report.ran == 0 and report.skipped == 5 and CALLS.count("k0") == 1
    assert jobs("memory://runner")[0]["status"] == "complete"
    report = local.run(make_plan(tasks), workers=1, progress=False, restart=True)
    assert report.ran == 5


def test_transient_errors_are_retried():
    report = local.run(make_plan([RecordTask("flaky", fail_times=2), RecordTask("ok")]), workers=1, progress=False)
    assert report.ran == 2 and CALLS.count("flaky") == 3


def test_always_failing_task_fails_the_run_and_ledger_stays_consistent():
    plan = make_plan([RecordTask("a"), RecordTask("broken", fail_times=99), RecordTask("c")])
    with pytest.raises(RunFailed, match="broken"):
        local.run(plan, workers=1, progress=False)
    assert CALLS.count("broken") == local.MAX_ATTEMPTS
    ledger = Ledger("memory://runner", plan.job_id)
    assert ledger.done("one") == {RecordTask("a").id}
    assert ledger.state()["status"] == "failed"


def test_bad_input_is_not_retried_and_keeps_its_message():
    with pytest.raises(SourceError, match="bad input in b"):
        local.run(make_plan([RecordTask("b", bad_input=True)]), workers=1, progress=False)
    assert CALLS == ["b"]


def test_threads_for_memory_and_processes_for_files(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (20, 30, 40), dtype=np.uint8)
    np.save(tmp_path / "a.npy", data)
    for dest in ("memory://pool", str(tmp_path / "out")):
        plan, _ = ingest.plan(str(tmp_path / "a.npy"), dest, resolution=(1, 1, 1), chunk_size=(8, 8, 8), memory=10_000)
        report = local.run(plan, workers=2, progress=False)
        assert report.ran == plan.task_count > 4
        from pumice.storage.layer import Layer

        layer = Layer.open(dest)
        np.testing.assert_array_equal(layer.read(layer.bounds())[..., 0], data.T)
