"""The local runner: a plan's stages in order, each stage's tasks on a process pool.

Tasks are submitted lazily with a bounded number in flight, so a plan of millions of tasks is
never materialized. Each worker records a finished task in the ledger itself, right after the
task's output is written, so a run killed at any moment loses at most the tasks in flight.
"""

from __future__ import annotations

import ctypes
import functools
import json
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from ..errors import PumiceError, RunFailed
from ..plan import Plan, Stage, Task, task_from_json
from ..storage import provenance
from .ledger import MAX_ATTEMPTS, Ledger, failure_record



@dataclass
class StageReport:
    name: str
    total: int
    ran: int = 0
    skipped: int = 0
    seconds: float = 0.0
    totals: dict[str, float] = field(default_factory=dict)


@dataclass
class RunReport:
    operation: str
    job_id: str
    workers: int
    stages: list[StageReport] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    notes: list[str] = field(default_factory=list)  # what the plan's finish step reported

    def total(self, key: str) -> float:
        return sum(s.totals.get(key, 0) for s in self.stages)

    @property
    def ran(self) -> int:
        return sum(s.ran for s in self.stages)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.stages)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def peak_rss_bytes() -> int:
    """This process's own peak resident memory.

    VmHWM belongs to the current address space, so it starts afresh at exec; ru_maxrss would
    carry over the high-water mark of whichever process forked us (a test runner, a benchmark).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas in this process.

    TensorStore's I/O threads each get an arena by default, and freed chunk buffers stay
    scattered across them: a downsample task's peak grew from 128 to 169 MiB over two tasks.
    With two arenas it stays at 128 MiB, no slower. Only new threads are affected, so call it
    before the work starts.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def execute_task(task_json: dict[str, Any], destination: str, job_id: str | None, stage: str) -> dict[str, Any]:
    """Run one task and record it in the ledger: the unit every runner ships to a worker."""
    return run_task(task_from_json(task_json), destination, job_id, stage)


def run_task(task: Task, destination: str, job_id: str | None, stage: str, *, measure: bool = True) -> dict[str, Any]:
    start = time.perf_counter()
    summary = task.run() or {}
    if job_id is not None:
        _ledger(destination, job_id).mark_done(stage, task.id)
    return {
        "summary": summary,
        "seconds": time.perf_counter() - start,
        "rss": peak_rss_bytes() if measure else 0,
    }


@functools.lru_cache(maxsize=16)
def _ledger(destination: str, job_id: str) -> Ledger:
    return Ledger(destination, job_id)  # once per job and process: tiny tasks pay for every microsecond


def uses_memory_store(plan: Plan) -> bool:
    return "memory://" in json.dumps(plan.params, default=str) or plan.destination.startswith("memory://")


def run(plan: Plan, *, workers: int | None = None, progress: bool = True, restart: bool = False) -> RunReport:
    """Run every stage of ``plan`` on this machine; skip tasks the ledger says are done; then ``plan.finish``."""
    # No more workers than the largest stage has tasks: a one-task plan needs no pool to start.
    workers = max(1, min(workers or default_workers(), max((s.count for s in plan.stages), default=1)))
    limit_malloc_arenas()
    executor = _executor(plan, workers)
    try:
        return run_on(plan, executor, workers, progress=progress, restart=restart)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def run_on(plan: Plan, executor: Executor | None, workers: int, *, progress: bool = True,
           restart: bool = False, in_flight: int = 2) -> RunReport:
    """Run ``plan`` on ``executor`` (None: in this thread) with ``workers`` slots and at most
    ``in_flight`` tasks per slot submitted: the loop every runner that hands out tasks itself shares
    (the local pool, a Dask cluster)."""
    prepared = prepare_plan(plan)
    ledger = Ledger(plan.destination, plan.job_id) if plan.resumable else None
    if ledger is not None:
        if restart:
            ledger.clear()
        ledger.begin(plan.operation, plan.params, {s.name: s.count for s in plan.stages})
        ledger.forgive_all([s.name for s in plan.stages])
    report = RunReport(plan.operation, plan.job_id, workers)
    started = time.perf_counter()
    try:
        for stage in plan.stages:
            report.stages.append(_run_stage(stage, plan, ledger, executor, workers * in_flight, progress, report))
    except KeyboardInterrupt:
        if ledger is not None:
            ledger.end("interrupted")
        raise
    except BaseException:
        if ledger is not None:
            ledger.end("failed")
        raise
    report.notes = prepared + finish_plan(plan)
    if ledger is not None:
        ledger.end("complete")
    report.seconds = time.perf_counter() - started
    report.peak_rss_bytes = max(report.peak_rss_bytes, peak_rss_bytes())
    return report


def prepare_plan(plan: Plan) -> list[str]:
    """What the plan writes before its first task (the destination's info...), once per run; notes
    (a prepare step may return a list of them; anything else it returns is ignored)."""
    notes = plan.prepare() if plan.prepare is not None else None
    return list(notes) if isinstance(notes, list) else []


def finish_plan(plan: Plan) -> list[str]:
    """After the last stage, on every runner: the plan's own finish step, then its provenance entry
    with every parameter (but the info, which is the layer's own file), recorded in the ledger as
    written; then the plan's cleanup. A job whose finish wrote its outputs before (a complete job run
    again, or a run stopped while cleaning up) only cleans up: its work files may be gone. Returns
    notes for the user."""
    ledger = Ledger(plan.destination, plan.job_id) if plan.resumable else None
    state = (ledger.state() or {}) if ledger is not None else {}
    if state.get("outputs_written"):
        notes = list(state.get("finish_notes") or [])
    else:
        notes = list(plan.finish() or []) if plan.finish is not None else []
        if plan.provenance:
            params = {k: v for k, v in plan.params.items() if k != "info"} | ({"sources": plan.sources} if plan.sources else {})
            notes += provenance.record(plan.destination, plan.provenance, params, plan.job_id, sources=plan.sources)
        if ledger is not None:
            ledger.update(outputs_written=True, finish_notes=notes)
    if plan.cleanup is not None:
        plan.cleanup()
    return notes


class _Workers:
    """``workers`` slots: one thread in this process, the rest worker processes.

    This process takes tasks from the first moment, while the other workers are still being
    spawned (a fresh interpreter importing NumPy and TensorStore takes about 0.3 s); on a short
    job that start-up used to cost more than the second worker saved.
    """

    def __init__(self, workers: int, processes: bool):
        self.inline = ThreadPoolExecutor(1)
        self.inline_busy = False
        others = workers - 1
        self.pool: Executor | None = None
        if others:
            self.pool = (ProcessPoolExecutor(others, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=limit_malloc_arenas) if processes
                         else ThreadPoolExecutor(others))
            if processes:
                # Start the worker now, before this process runs a task: a spawned child copies this
                # process's sys.path, and an import in progress on the inline thread may have changed it
                # (OpenCV's loader puts its own folder first for a moment; a child spawned then found
                # cv2/typing instead of typing and died).
                self._pool_submit(os.getpid)

    def submit(self, fn, *args) -> Future:
        if not self.inline_busy or self.pool is None:
            self.inline_busy = True
            future = self.inline.submit(fn, *args)
            future.add_done_callback(self._inline_done)
            return future
        return self._pool_submit(fn, *args)

    def _pool_submit(self, fn, *args) -> Future:
        # Workers are spawned inside submit(). Spawned with SIGINT ignored, they leave Ctrl-C to this
        # process, which winds the run down; otherwise a worker still starting up prints a traceback.
        # SIGINT is also blocked meanwhile: Linux keeps a blocked signal pending even while it is
        # ignored, so a Ctrl-C in this window reaches this process once the handler is back (ignored
        # alone, it was lost and the run went on to finish). SIGTERM, whose handler raises
        # KeyboardInterrupt, is deferred to the end of the spawn: raised in its middle, it left a child
        # that was never joined, which then found the pool's semaphores gone and printed a traceback
        # (seen once in a full test run). Blocking it here would not do: another thread may take it.
        if not _main_thread():
            return self.pool.submit(fn, *args)
        deferred: list[int] = []
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: deferred.append(signum))
        try:
            return self.pool.submit(fn, *args)
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            if deferred and callable(previous_term):
                previous_term(signal.SIGTERM, None)

    def _inline_done(self, _: Future) -> None:
        self.inline_busy = False

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        for executor in (self.inline, self.pool):
            if executor is not None:
                executor.shutdown(wait=wait, cancel_futures=cancel_futures)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _executor(plan: Plan, workers: int) -> _Workers | None:
    if workers == 1:
        return None  # in this process, no threads: simplest to debug
    return _Workers(workers, processes=not uses_memory_store(plan))  # memory:// lives in this process only


def _run_stage(stage: Stage, plan: Plan, ledger: Ledger | None, executor: Executor | None, limit: int,
               progress: bool, report: RunReport) -> StageReport:
    result = StageReport(stage.name, stage.count)
    done = ledger.done(stage.name) if ledger is not None else set()
    job_id = plan.job_id if ledger is not None else None
    started = time.perf_counter()
    bar = tqdm(total=stage.count, desc=f"{plan.operation}:{stage.name}" if len(plan.stages) > 1 else plan.operation,
               unit="task", file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=True)
    attempts: dict[str, int] = {}
    failures: list[tuple[Task, BaseException]] = []

    def record(outcome: dict[str, Any]) -> None:
        result.ran += 1
        for key, value in outcome["summary"].items():
            if isinstance(value, (int, float)):
                result.totals[key] = result.totals.get(key, 0) + value
        report.peak_rss_bytes = max(report.peak_rss_bytes, outcome["rss"])
        bar.update(1)

    def failed(task: Task, error: BaseException) -> bool:
        """True if the task should be tried again."""
        attempts[task.id] = attempts.get(task.id, 0) + 1
        if isinstance(error, PumiceError) or attempts[task.id] >= MAX_ATTEMPTS:
            failures.append((task, error))
            return False
        return True

    try:
        if executor is None:
            for task in stage.tasks():
                if task.id in done:
                    result.skipped += 1
                    bar.update(1)
                    continue
                while True:
                    try:
                        record(execute_task(task.to_json(), plan.destination, job_id, stage.name))
                        break
                    except Exception as error:  # noqa: BLE001 - classified in failed()
                        if not failed(task, error):
                            break
                if failures:
                    break
        else:
            in_flight: dict[Future, Task] = {}

            def submit(task: Task) -> None:
                future = executor.submit(execute_task, task.to_json(), plan.destination, job_id, stage.name)
                in_flight[future] = task

            def drain(block_until: int) -> None:
                while len(in_flight) > block_until:
                    finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                    for future in finished:
                        task = in_flight.pop(future)
                        error = future.exception()
                        if error is None:
                            record(future.result())
                        elif failed(task, error) and not failures:
                            submit(task)

            for task in stage.tasks():
                if task.id in done:
                    result.skipped += 1
                    bar.update(1)
                    continue
                submit(task)
                drain(limit - 1)
                if failures:
                    break
            drain(0)  # let tasks in flight finish, so the ledger holds everything that was written
    finally:
        bar.close()
    result.seconds = time.perf_counter() - started
    if failures:
        if ledger is not None:  # dead letters, as the queue runner keeps them: `pumice status` lists them
            for task, error in failures:
                ledger.fail(stage.name, task.id, failure_record(task.to_json(), error, attempts.get(task.id, 1)))
        raise _failure(stage, failures)
    return result


def _failure(stage: Stage, failures: list[tuple[Task, BaseException]]) -> PumiceError:
    task, error = failures[0]
    if isinstance(error, PumiceError):
        return error  # the user's input is at fault: its own message says what to fix
    where = "".join(traceback.format_exception(error))
    listed = ", ".join(f"{stage.name}/{t.id}" for t, _ in failures[:5]) + (" ..." if len(failures) > 5 else "")
    failure = RunFailed(
        f"{len(failures)} task(s) of stage {stage.name} failed after {MAX_ATTEMPTS} attempts ({listed}); first: "
        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} — rerun the same command to resume"
    )
    failure.detail = where  # type: ignore[attr-defined]
    return failure
