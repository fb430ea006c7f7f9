"""Acceptance (issue 15): an operation is a module in pumice/ops and nothing else. A throwaway one,
written by this test and listed nowhere, runs on the local runner with 2 worker processes, on a Dask
cluster and from an fq:// queue with `pumice worker` processes."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

import pytest

import pumice.ops
from pumice.execution import cluster, local, queued
from pumice.execution.transport import open_queue
from pumice.plan import _REGISTRY

MODULE = '''"""A throwaway operation: one task per 8^3 block of a 40 x 40 x 8 grid, each writing its block's size."""

from dataclasses import dataclass

from pumice.geometry import Bbox
from pumice.plan import Plan, Stage, Task, planner, register
from pumice.storage import urls
from pumice.storage.kv import open_kv


@register("NAME")
@dataclass(frozen=True)
class CountTask(Task):
    dest: str
    bbox: tuple

    def run(self):
        box = Bbox.from_list(self.bbox)
        open_kv(self.dest).put("counts/" + "_".join(map(str, self.bbox)), str(box.size).encode())
        return {"voxels": box.size}


@planner
def plan(dest: str, *, size: int = 40):
    dest = urls.normalize(dest)
    region = Bbox((0, 0, 0), (size, size, 8))
    task = lambda box: CountTask(dest, tuple(box.to_list()))  # noqa: E731
    return Plan("NAME", dest, {}, [Stage.grid("count", region, (8, 8, 8), task)]), []
'''


@pytest.fixture
def throwaway():
    """The module, written into pumice/ops for the test's duration only."""
    name = f"zz_throwaway_{uuid.uuid4().hex[:8]}"
    path = Path(pumice.ops.__file__).parent / f"{name}.py"
    # Written whole under another name and renamed: worker processes of other tests import every
    # module in pumice/ops and must never see a half-written one.
    partial = path.with_suffix(".partial")
    partial.write_text(MODULE.replace("NAME", name))
    partial.replace(path)
    try:
        importlib.invalidate_caches()
        yield importlib.import_module(f"pumice.ops.{name}")
    finally:
        path.unlink()
        for cached in (path.parent / "__pycache__").glob(f"{name}.*"):
            cached.unlink()
        sys.modules.pop(f"pumice.ops.{name}", None)
        _REGISTRY.pop(name, None)  # gone with its module, for the tests that list every task


def _counts(dest: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (dest / "counts").iterdir()}


def test_runs_on_two_local_worker_processes(throwaway, tmp_path):
    plan, _ = throwaway.plan(str(tmp_path / "out"))
    report = local.run(plan, workers=2, progress=False)
    assert report.workers == 2 and report.ran == 25
    assert len(_counts(tmp_path / "out")) == 25 and set(_counts(tmp_path / "out").values()) == {"512"}


def test_runs_on_dask(throwaway, tmp_path, dask_address):
    plan, _ = throwaway.plan(str(tmp_path / "out"))
    report = cluster.run(plan, dask_address, progress=False, say=lambda text: None)
    assert report.ran == 25 and len(_counts(tmp_path / "out")) == 25


def test_runs_from_a_file_queue(throwaway, tmp_path, workers):
    url = f"fq://{tmp_path}/queue"
    plan, _ = throwaway.plan(str(tmp_path / "out"))
    assert "queued 25 task(s)" in queued.enqueue(plan, url)
    results = workers.run(url, 2)
    assert any("finished: every stage is done" in err for _, err in results)
    assert open_queue(url).empty()
    assert len(_counts(tmp_path / "out")) == 25 and set(_counts(tmp_path / "out").values()) == {"512"}
