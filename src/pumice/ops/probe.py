"""Probe: tiny tasks that check a cluster or queue setup and measure what a task costs to run.

Each task writes one small object, ``probe/<stage>/<index>``, whose bytes depend only on the task,
so every runner must leave the same files. A second stage checks that every object of the first
is there before it writes its own: a runner that started it early fails loudly. Chosen tasks can
be made to fail always (to see dead letters and failure reports) or to take a while (to kill a
worker midway).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import PumiceError
from ..plan import Plan, Stage, Task, planner, register
from ..storage import urls
from ..storage.kv import open_kv

STAGES = ("first", "second")


class ProbeFailure(RuntimeError):
    """Raised on purpose by the tasks named in ``--fail``: not the user's input, so it is retried."""


@register("probe")
@dataclass(frozen=True)
class ProbeTask(Task):
    dest: str
    stage: str
    index: int
    write: bool = True
    seconds: float = 0.0
    fail: bool = False
    requires: int = 0  # objects of the first stage that must exist before this task writes

    def run(self) -> dict[str, Any]:
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail:
            raise ProbeFailure(f"probe task {self.stage}/{self.index} fails on purpose")
        if self.write:
            kv = open_kv(self.dest)
            if self.requires:
                found = len(kv.list(f"probe/{STAGES[0]}/"))
                if found < self.requires:
                    raise PumiceError(f"stage {self.stage} started with {found} of {self.requires} tasks of "
                                      f"stage {STAGES[0]} done: the runner broke stage order")
            kv.put(f"probe/{self.stage}/{self.index}", f"{self.stage} {self.index}\n".encode())
        return {"probes": 1}


@planner
def plan(dest: str, *, tasks: int = 1000, stages: int = 1, seconds: float = 0.0, fail: Sequence[int] = (),
         write: bool = True) -> tuple[Plan, list[str]]:
    """``tasks`` probe tasks per stage (1 or 2 stages); indices in ``fail`` raise in every stage."""
    if tasks < 1:
        raise PumiceError(f"--tasks must be at least 1, got {tasks}")
    if stages not in (1, 2):
        raise PumiceError(f"--stages must be 1 or 2, got {stages}")
    if seconds < 0:
        raise PumiceError(f"--seconds must be zero or more, got {seconds}")
    dest = urls.normalize(dest)
    failing = frozenset(int(i) for i in fail)
    seconds = float(seconds)

    def stage(name: str, requires: int) -> Stage:
        return Stage.each(name, range(tasks), lambda i: ProbeTask(dest, name, i, write, seconds, i in failing, requires))

    stage_list = [stage(STAGES[0], 0)]
    if stages == 2:
        stage_list.append(stage(STAGES[1], tasks if write else 0))
    params = {"tasks": int(tasks), "stages": int(stages), "seconds": seconds, "fail": sorted(failing),
              "write": bool(write)}
    description = {"destination": urls.display(dest),
                   "work": f"{tasks} task(s) per stage, {seconds:g} s each" + (f", {len(failing)} failing on purpose" if failing else "")}
    return Plan("probe", dest, params, stage_list, description=description,
                outcome=lambda totals: f"{int(sum(t.get('probes', 0) for t in totals.values()))} probe(s) ran"), []
