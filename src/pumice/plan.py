"""The plan model: every operation is a planner that returns a Plan of Stages of Tasks.

A Task is a frozen dataclass with JSON-plain fields and one method, ``run()``, which is
idempotent and returns a small summary dict (numbers are summed into the run's report). Tasks
are registered by name so any worker can rebuild one from JSON.

This module sits at the bottom of the package (beside geometry) rather than in ``execution``,
because ``ops`` builds plans and imports only downward.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from .geometry import Bbox

_REGISTRY: dict[str, type["Task"]] = {}


def register(name: str) -> Callable[[type["Task"]], type["Task"]]:
    """Class decorator: make a Task rebuildable from JSON under ``name``."""

    def wrap(cls: type["Task"]) -> type["Task"]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"task name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


@dataclass(frozen=True)
class Task:
    """Base of all tasks. Subclasses are frozen dataclasses decorated with ``@register``."""

    name: ClassVar[str] = ""

    def run(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return {"task": self.name, "args": dataclasses.asdict(self)}

    @functools.cached_property
    def id(self) -> str:
        """Stable across processes and runs: a digest of the task's JSON (computed once per instance)."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()[:20]


def task_class(name: str) -> type[Task]:
    """The task class registered under ``name``, importing operation modules as needed (a worker
    process has imported nothing; a long-lived one may predate a module added since)."""
    if name not in _REGISTRY:
        importlib.import_module("pumice.ops").discover()
    if name not in _REGISTRY:
        raise KeyError(f"no task named {name!r}: is its operation's module in pumice/ops?")
    return _REGISTRY[name]


def task_from_json(data: dict[str, Any]) -> Task:
    cls = task_class(data["task"])
    fields = {f.name for f in dataclasses.fields(cls)}
    args = data["args"]
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in args.items() if k in fields})


@dataclass
class Stage:
    """Tasks that may run in any order and in parallel; the next stage starts after the last.

    Build one with ``Stage.grid`` or ``Stage.each``: they derive the count from the same arguments
    as the tasks, so the two cannot disagree (queues trust the count to know a stage is over).
    """

    name: str
    make_tasks: Callable[[], Iterable[Task]]  # lazy: a plan of millions is never held at once
    count: int

    def tasks(self) -> Iterator[Task]:
        return iter(self.make_tasks())

    @classmethod
    def grid(cls, name: str, region: "Bbox", block: Sequence[int], task: Callable[["Bbox"], Task],
             origin: Sequence[int] | None = None) -> "Stage":
        """One task per box of a grid of ``block`` anchored at ``origin`` (default: the region's first
        voxel), clipped to ``region``."""
        from .geometry import count_grid_blocks, grid_blocks

        origin = tuple(region.minpt if origin is None else origin)
        block = tuple(block)
        return cls(name, lambda: (task(box) for box in grid_blocks(region, block, origin)),
                   count_grid_blocks(region, block, origin))

    @classmethod
    def each(cls, name: str, items: Sequence[Any], task: Callable[[Any], Task]) -> "Stage":
        """One task per item of a sized collection that can be iterated again (a list, a range)."""
        return cls(name, lambda: (task(item) for item in items), len(items))


@dataclass
class Plan:
    """What a planner hands a runner.

    ``params`` make the job (its id hashes them): the ``@planner`` decorator puts every argument of
    the planner there, and the planner adds what it derived (normalized URLs, the info, the block).
    The runner writes ``params`` into the destination's provenance after ``finish`` (when
    ``provenance`` names the entry), and removes a ``fresh_destination`` whose input turned out bad.

    Planning has no side effects: a planner reads and validates, and leaves what must be written
    before any task runs (the destination's info, staged inputs, clearing a stale record) to
    ``prepare``, which a runner calls once when it starts the job (not for --dry-run, and not when a
    queue worker rebuilds the plan from its recipe). ``prepare`` sees the complete params, so it may
    use the job id.
    """

    operation: str
    destination: str  # a layer URL: the ledger and provenance live there
    params: dict[str, Any]  # what makes two runs the same job
    stages: list[Stage] = field(default_factory=list)
    finish: Callable[[], list[str] | None] | None = None  # after the last stage; may return notes for the user
    description: dict[str, Any] = field(default_factory=dict)  # shown by --dry-run and the summary
    resumable: bool = True  # False: no ledger (idempotent work that may remove the ledger's own home)
    # What the run produced, for the summary, from the tasks' summed results per stage (tasks of
    # this run only: a resumed run counts what it did).
    outcome: Callable[[dict[str, dict[str, float]]], str] | None = None
    # What the job computed, as data, for ``--json`` summaries (operations that answer a question, like
    # evaluate); None for those whose output is the layer they wrote.
    result: Callable[[], Any] | None = None
    # How to build this plan again in another process (a queue worker hands over between stages and
    # runs ``finish`` there): set by the ``@planner`` decorator.
    recipe: dict[str, Any] | None = None
    fresh_destination: bool = False  # nothing was there before: a run that finds its input bad removes it
    provenance: str | None = None  # the name of the destination's provenance entry; None: no entry
    sources: list[str] = field(default_factory=list)  # layers or files the provenance lists as sources
    prepare: Callable[[], Any] | None = None  # once, before the first task; may return a list of notes
    # After ``finish`` has written every output and the ledger says so: removes the job's work files.
    # Apart from ``finish``, so that a run stopped while cleaning up, or a complete job run again, never
    # runs ``finish`` over work files that are partly or wholly gone (it would write outputs from them).
    cleanup: Callable[[], Any] | None = None
    # Side inputs (storage.inputs): planner argument -> the staged URL that the recipe records in place
    # of the user's path, so a worker elsewhere rebuilds the plan from bytes it can read.
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        text = json.dumps({"operation": self.operation, "params": self.params}, sort_keys=True, default=str)
        return f"{self.operation}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"

    @property
    def task_count(self) -> int:
        return sum(s.count for s in self.stages)


# -- recipes: a plan rebuilt from JSON, in any process ----------------------------------------------
def planner(fn: Callable[..., tuple[Plan, list[str]]]) -> Callable[..., tuple[Plan, list[str]]]:
    """Decorate an operation's planner: each Plan it returns carries its recipe and, in its params,
    every argument the planner was given or defaulted (but ``NOT_PARAMS``); what the planner put in
    params (normalized URLs, derived values) wins.

    A planner validates input and prepares the destination (idempotently: a rerun of the same
    command must resume), so calling it again with the same arguments rebuilds the same plan.
    """
    where = f"{fn.__module__}:{fn.__name__}"
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> tuple[Plan, list[str]]:
        plan, notes = fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        arguments = {**bound.arguments, **plan.inputs}
        plan.recipe = {"planner": where, "args": json.loads(json.dumps(arguments, default=_encode))}
        unrecorded = [name for name in plan.inputs if name not in plan.params]
        if unrecorded:  # a developer's mistake: the job id would hang on a path instead of the bytes
            raise TypeError(f"{where} stages {unrecorded} but does not put their digests into params")
        bound.apply_defaults()
        given = {k: v for k, v in bound.arguments.items() if k not in NOT_PARAMS}
        plan.params = {**_canonical(json.loads(json.dumps(given, default=_encode))), **plan.params}
        return plan, notes

    return wrapper


# memory acts through the block, which planners record. The destination
# (``dest``, or ``path`` for operations in place) is where the job lives, not what it is: a layer
# moved with its ledger still resumes, and the same work at two places writes the same bytes.
NOT_PARAMS = ("memory", "dest", "path")


def _canonical(value: Any) -> Any:
    """One job for equal settings however they were written: 1000.0 and 1000 are the same number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def plan_from_recipe(recipe: dict[str, Any]) -> Plan:
    module, name = recipe["planner"].split(":")
    fn = getattr(importlib.import_module(module), name)
    plan, _ = fn(**_decode(recipe["args"]))
    return plan


def _encode(value: Any) -> Any:
    from .geometry import Bbox

    if isinstance(value, Bbox):
        return {"$bbox": value.to_list()}
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return value.tolist()
    raise TypeError(f"a planner argument of type {type(value).__name__} cannot go into a recipe")


def _decode(value: Any) -> Any:
    from .geometry import Bbox

    if isinstance(value, dict):
        if set(value) == {"$bbox"}:
            return Bbox.from_list(value["$bbox"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
