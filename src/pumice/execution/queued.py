"""The queue runner: a plan enqueued on a durable queue and consumed by ``pumice worker`` processes.

One queue serves one job at a time, one stage at a time. ``enqueue`` writes the job's state into
its ledger (beside the output, where every worker can reach it: the recipe to rebuild the plan,
the stage being worked on) and a pointer to it into the queue, then enqueues the first unfinished
stage. Workers lease messages (a few tasks each), renew the lease while they work, record each
finished task in the ledger, and delete the message. A message whose tasks raise goes back to the
queue after a pause; after ``max_attempts`` leases its unfinished tasks become dead letters in the
ledger, with error and traceback. A lease that runs out (a killed worker) counts as an attempt.

When a worker finds the queue empty it hands the job over, under the queue's lock: it checks with
the ledger that every task of the stage is done (re-enqueueing any that were lost), then enqueues
the next stage, or runs the plan's finish step after the last. A stage with dead letters stops
the job as failed until ``pumice queue retry-failed``. Any of these steps can be killed and
repeated: the ledger, not the queue, says what is finished.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ..errors import PumiceError
from ..plan import Plan, plan_from_recipe, task_from_json
from . import local
from .ledger import MAX_ATTEMPTS, Ledger, failure_record
from .transport import FileQueue, Message, SqsQueue, open_queue

TARGET_MESSAGES = 10_000  # per stage: enough to spread over hundreds of workers
MAX_TASKS_PER_MESSAGE = 100  # tiny tasks share a message, so the queue is not the bottleneck
RETRY_DELAY = 2.0  # seconds before a message whose tasks raised is leased again (times its attempts)
DEFAULT_LEASE_SECONDS = 600.0
DEFAULT_MAX_ATTEMPTS = MAX_ATTEMPTS
# SQS's counts lag (AWS: up to a minute), so a stage short of tasks while its queue looks empty is
# only taken as lost messages (an enqueue killed midway, a purge) once that has lasted this long.
DEFAULT_LOST_AFTER_SECONDS = 60.0
TERMINAL = ("complete", "failed", "purged")

Queue = FileQueue | SqsQueue


def tasks_per_message(count: int) -> int:
    return max(1, min(MAX_TASKS_PER_MESSAGE, -(-count // TARGET_MESSAGES)))


def _now() -> float:
    return time.time()


# -- enqueueing and handing over ----------------------------------------------------------------
def enqueue(plan: Plan, url: str, *, restart: bool = False) -> str:
    """Put ``plan`` on the queue at ``url``; returns what to tell the user."""
    if local.uses_memory_store(plan):
        raise PumiceError("memory:// data lives inside one process, which queue workers cannot see; "
                          "use a path, file://, gs:// or s3:// URL with --queue")
    if plan.recipe is None:  # pragma: no cover - every CLI planner is decorated
        raise PumiceError(f"{plan.operation} cannot run from a queue (its plan has no recipe)")
    queue = open_queue(url, create=True)
    with queue.lock():
        pointer = queue.pointer()
        same = pointer is not None and (pointer["job"], pointer["destination"]) == (plan.job_id, plan.destination)
        if pointer is not None and not same and not queue.empty():
            raise PumiceError(f"{url} still serves job {pointer['job']} on {pointer['destination']} ({pointer.get('status')}, "
                              f"messages left); wait for "
                              f"it to finish, use another queue, or empty it with `pumice queue purge {url}`")
        local.prepare_plan(plan)
        ledger = Ledger(plan.destination, plan.job_id)
        if restart:
            ledger.clear()
            if same:
                queue.purge()
        elif same and not queue.empty():
            return (f"job {plan.job_id} is already on {url} with messages waiting; nothing added. "
                    f"Start workers with `pumice worker {url}`; watch with `pumice status {url}`")
        batch = tasks_per_message(max((s.count for s in plan.stages), default=1))
        ledger.begin(plan.operation, plan.params, {s.name: s.count for s in plan.stages},
                     runner="queue", queue=url, recipe=plan.recipe, batch=batch)
        queue.set_pointer({"job": plan.job_id, "destination": plan.destination, "status": "running"})
        ledger.forgive_all([s.name for s in plan.stages])
        count, index = _fill(plan, ledger, queue, 0, batch)
        if index is None:
            _finish(plan, ledger, queue)
            return f"every task of job {plan.job_id} was already done; finished it. Pass --restart to redo it"
    stage = plan.stages[index]
    return (f"queued {count} task(s) of stage {stage.name} ({index + 1} of {len(plan.stages)}) of job {plan.job_id} on {url}; "
            f"start workers with `pumice worker {url}` and watch with `pumice status {url}`")


def _message(job_id: str, destination: str, stage: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """What goes on the queue: tasks of one stage of one job, and where that job's ledger is."""
    return {"job": job_id, "dest": destination, "stage": stage, "tasks": tasks}


def _messages(plan: Plan, index: int, skip: set[str], batch: int) -> Iterator[dict[str, Any]]:
    stage = plan.stages[index]
    chunk: list[dict[str, Any]] = []
    for task in stage.tasks():
        if skip and task.id in skip:
            continue
        chunk.append(task.to_json())
        if len(chunk) == batch:
            yield _message(plan.job_id, plan.destination, stage.name, chunk)
            chunk = []
    if chunk:
        yield _message(plan.job_id, plan.destination, stage.name, chunk)


def _fill(plan: Plan, ledger: Ledger, queue: Queue, start: int, batch: int) -> tuple[int, int | None]:
    """Enqueue the unfinished tasks of the first stage from ``start`` that has any: (tasks, stage)."""
    for index in range(start, len(plan.stages)):
        stage = plan.stages[index]
        done = ledger.done(stage.name)
        if len(done) >= stage.count:
            continue
        # The state names the stage before its messages go out: if this is killed midway, the next
        # hand-over finds the stage short of tasks and enqueues the rest.
        ledger.update(stage=index, stage_started=_now(), stage_done_before=len(done))
        return _insert(queue, _messages(plan, index, done, batch)), index
    return 0, None


def _insert(queue: Queue, messages: Iterable[dict[str, Any]]) -> int:
    """Insert messages as they are made (bounded memory); how many tasks they carry."""
    tasks = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal tasks
        for message in messages:
            tasks += len(message["tasks"])
            yield message

    queue.insert(counted())
    return tasks


def _finish(plan: Plan, ledger: Ledger, queue: Queue) -> None:
    if not ledger.claim_finish():
        return  # another worker is finishing (or has finished) the job
    notes = local.finish_plan(plan)
    if plan.resumable:  # otherwise finish may have removed the ledger's home
        ledger.update(status="complete", notes=notes, finished=_now())
    queue.set_pointer({"job": plan.job_id, "destination": plan.destination, "status": "complete", "notes": notes})


_PLANS: dict[str, Plan] = {}


def _plan(state: dict[str, Any], job_id: str) -> Plan:
    """The job's plan, rebuilt from its recipe once per process."""
    if job_id not in _PLANS:
        plan = plan_from_recipe(state["recipe"])
        if plan.job_id != job_id:
            raise PumiceError(f"job {job_id}'s inputs changed since it was enqueued (they now make job {plan.job_id}); "
                              f"enqueue the command again")
        _PLANS[job_id] = plan
    return _PLANS[job_id]


# (job, stage) -> (when this process first saw the stage short of tasks with its queue empty, how many
# were done then); progress in between starts the wait again.
_SHORT_SINCE: dict[tuple[str, str], tuple[float, int]] = {}


def _lost(queue: Queue, job: str, stage: str, finished: int, lost_after: float) -> bool:
    """Whether the stage's missing tasks are lost rather than in flight."""
    if queue.exact:  # nothing in flight: the counts are exact
        return True
    since, before = _SHORT_SINCE.get((job, stage), (_now(), finished))
    if before != finished:
        since = _now()
    _SHORT_SINCE[(job, stage)] = (since, finished)
    if _now() - since < lost_after:
        return False
    del _SHORT_SINCE[(job, stage)]
    return True


def advance(queue: Queue, say: Callable[[str], None] = lambda text: None,
            lost_after: float = DEFAULT_LOST_AFTER_SECONDS) -> str | None:
    """Hand the queue's job over to its next stage if the current one is finished; its status after."""
    with queue.lock():
        pointer = queue.pointer()
        if pointer is None:
            return None
        if pointer.get("status") != "running":
            return pointer.get("status")
        if not queue.empty():
            _SHORT_SINCE.clear()  # messages in flight or waiting: no wait for lost ones has begun
            return "running"
        ledger = Ledger(pointer["destination"], pointer["job"])
        state = ledger.state()
        if state is None or state.get("status") != "running":
            return (state or pointer).get("status")
        plan = _plan(state, pointer["job"])
        index = state.get("stage", 0)
        stage = plan.stages[index]
        done = ledger.done(stage.name)
        failed = set(ledger.failed(stage.name)) - done  # a dead letter retried and done since is not a failure
        if len(done | failed) < stage.count:
            if _lost(queue, pointer["job"], stage.name, len(done | failed), lost_after):
                count = _insert(queue, _messages(plan, index, done | failed, state.get("batch", 1)))
                say(f"stage {stage.name}: {count} task(s) were missing from the queue; enqueued them again")
            return "running"
        if failed:
            ledger.update(status="failed")
            queue.set_pointer({**pointer, "status": "failed"})
            say(f"stage {stage.name}: {len(failed)} task(s) failed for good; the job stops here "
                f"(see `pumice status {queue.url}`, then `pumice queue retry-failed {queue.url}`)")
            return "failed"
        count, next_index = _fill(plan, ledger, queue, index + 1, state.get("batch", 1))
        if next_index is not None:
            say(f"stage {stage.name} finished; enqueued {count} task(s) of stage {plan.stages[next_index].name}")
            return "running"
        _finish(plan, ledger, queue)
        say(f"job {plan.job_id} ({plan.operation}) finished: every stage is done")
        return "complete"


# -- the worker ---------------------------------------------------------------------------------
@dataclass
class WorkerReport:
    ran: int = 0
    retried: int = 0
    dead: int = 0
    messages: int = 0
    status: str | None = None
    job: str | None = None
    failures: list[str] = field(default_factory=list)


class _Heartbeat:
    """Renews the lease of the message being worked on, so only a stopped worker loses it."""

    def __init__(self, queue: Queue, seconds: float):
        self.queue, self.seconds = queue, seconds
        self.message: Message | None = None
        self.changed = threading.Condition()
        threading.Thread(target=self._beat, daemon=True).start()

    def watch(self, message: Message | None) -> None:
        with self.changed:
            self.message = message
            self.changed.notify()

    def _beat(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.message is not None)
                message = self.message
                renewed = not self.changed.wait_for(lambda: self.message is not message, timeout=self.seconds / 3)
            if renewed:
                try:
                    self.queue.renew(message, self.seconds)
                except Exception:  # noqa: BLE001 - a missed renewal is retried at the next beat
                    pass


def work(url: str, *, exit_when_empty: bool = False, lease_seconds: float = DEFAULT_LEASE_SECONDS,
         max_attempts: int = DEFAULT_MAX_ATTEMPTS, lost_after: float = DEFAULT_LOST_AFTER_SECONDS, say: Callable[[str], None] = print,
         progress: Callable[[WorkerReport], None] | None = None) -> WorkerReport:
    """Lease and run tasks from ``url`` until stopped (or, with ``exit_when_empty``, until its job ends)."""
    if lease_seconds < 2:
        raise PumiceError(f"--lease-seconds must be at least 2, got {lease_seconds:g}")
    if max_attempts < 1:
        raise PumiceError(f"--max-attempts must be at least 1, got {max_attempts}")
    queue = open_queue(url)
    local.limit_malloc_arenas()
    report = WorkerReport()
    heartbeat = _Heartbeat(queue, lease_seconds)
    idle = 0
    while True:
        message = queue.lease(lease_seconds)
        if message is None:
            status = advance(queue, say, lost_after)
            pointer = queue.pointer()
            report.status, report.job = status, pointer and pointer["job"]
            if exit_when_empty and queue.empty() and (status is None or status in TERMINAL):
                break
            time.sleep(min(0.1 * 2 ** idle, 2.0))
            idle += 1
            continue
        idle = 0
        _process(queue, message, report, heartbeat, max_attempts, say)
        if progress is not None:
            progress(report)
        if queue.empty():
            advance(queue, say, lost_after)
    if report.status == "failed":
        pointer = queue.pointer() or {}
        ledger = Ledger(pointer["destination"], pointer["job"])
        state = ledger.state() or {}
        report.failures = [f"{stage}/{task_id}" for stage in state.get("stages", {}) for task_id in ledger.failed(stage)]
    return report


def _process(queue: Queue, message: Message, report: WorkerReport, heartbeat: _Heartbeat, max_attempts: int,
             say: Callable[[str], None]) -> None:
    body = message.body
    ledger = Ledger(body["dest"], body["job"])
    stage = body["stage"]
    report.messages += 1
    if message.attempts > max_attempts:
        # Its earlier leases ran out: the worker holding it stopped (killed, out of memory, lost).
        for task_json in body["tasks"]:
            task_id = task_from_json(task_json).id
            if not ledger.is_done(stage, task_id):
                ledger.fail(stage, task_id, failure_record(task_json, f"its lease ran out {message.attempts - 1} time(s): the worker "
                                                    f"running it stopped (killed, out of memory, or lost)", message.attempts - 1))
                report.dead += 1
        queue.delete(message)
        return
    heartbeat.watch(message)
    errors: list[tuple[dict[str, Any], str, BaseException]] = []
    try:
        tasks = [task_from_json(task_json) for task_json in body["tasks"]]
        # Skip what is done, on every delivery: a task enqueued twice (two workers handing over a stage
        # at once) may arrive after its stage, even after the job's finish step, and a merge run then
        # would rewrite its output from work files that are gone.
        already = ledger.are_done(stage, [task.id for task in tasks])
        for task_json, task, done in zip(body["tasks"], tasks, already):
            task_id = task.id
            if done:
                continue
            try:
                local.run_task(task, body["dest"], body["job"], stage, measure=False)
            except PumiceError as error:  # the input is at fault: trying again would not help
                ledger.fail(stage, task_id, failure_record(task_json, error, message.attempts))
                report.dead += 1
                say(f"task {stage}/{task_id} failed: {error}")
            except Exception as error:  # noqa: BLE001 - retried, then dead-lettered
                errors.append((task_json, task_id, error))
            else:
                report.ran += 1
    except BaseException:
        heartbeat.watch(None)
        queue.release(message)  # stopped (Ctrl-C, SIGTERM): another worker takes it at once
        raise
    heartbeat.watch(None)
    if not errors:
        queue.delete(message)
        return
    first = errors[0][2]
    if message.attempts >= max_attempts:
        for task_json, task_id, error in errors:
            ledger.fail(stage, task_id, failure_record(task_json, error, message.attempts))
        report.dead += len(errors)
        queue.delete(message)
        say(f"{len(errors)} task(s) of stage {stage} failed {message.attempts} time(s), now dead letters; "
            f"first: {type(first).__name__}: {first}")
    else:
        report.retried += len(errors)
        queue.release(message, RETRY_DELAY * message.attempts)
        say(f"{len(errors)} task(s) of stage {stage} failed (attempt {message.attempts} of {max_attempts}), "
            f"will be tried again; first: {type(first).__name__}: {first}")


# -- status and control -------------------------------------------------------------------------
def status(url: str) -> dict[str, Any]:
    """What the queue's job is doing, per stage, from the ledger and the queue's counts."""
    queue = open_queue(url)
    pointer = queue.pointer()
    waiting_messages, leased_messages = queue.counts()
    result: dict[str, Any] = {"queue": url, "messages_waiting": waiting_messages, "messages_leased": leased_messages}
    if pointer is None:
        return {**result, "state": "empty", "stages": [], "errors": []}
    ledger = Ledger(pointer["destination"], pointer["job"])
    state = ledger.state() or {}
    status_word = state.get("status", pointer.get("status"))
    current = state.get("stage", 0)
    batch = state.get("batch", 1)
    rows, errors = [], []
    for index, (name, count) in enumerate(state.get("stages", {}).items()):
        done_ids = ledger.done(name)
        done = len(done_ids)
        failed = [task_id for task_id in ledger.failed(name) if task_id not in done_ids]
        remaining = max(count - done - len(failed), 0)
        leased = min(leased_messages * batch, remaining) if index == current and status_word == "running" else 0
        row = {"stage": name, "total": count, "done": done, "leased": leased, "waiting": remaining - leased,
               "failed": len(failed), "rate": None, "eta_seconds": None}
        if index == current and status_word == "running" and state.get("stage_started"):
            elapsed = max(_now() - state["stage_started"], 1e-6)
            finished_here = done + len(failed) - state.get("stage_done_before", 0)
            if finished_here > 0:
                row["rate"] = finished_here / elapsed
                row["eta_seconds"] = remaining / row["rate"]
        rows.append(row)
        for task_id in failed[: max(0, 5 - len(errors))]:
            record = ledger.failure(name, task_id) or {}
            errors.append({"stage": name, "task": task_id, "error": record.get("error", ""),
                           "attempts": record.get("attempts"), "worker": record.get("worker")})
    if status_word == "complete":
        word = "finished"
    elif status_word in ("failed", "purged"):
        word = status_word
    elif leased_messages:
        word = "running"
    elif any(r["done"] or r["failed"] for r in rows):
        word = "stalled"  # work remains, but no worker holds a lease
    else:
        word = "fresh"
    return {**result, "state": word, "job": pointer["job"], "operation": state.get("operation"),
            "destination": pointer["destination"], "stage": current, "stages": rows, "errors": errors,
            "notes": state.get("notes", pointer.get("notes", []))}


def format_status(info: dict[str, Any]) -> str:
    from ..storage import urls

    if info["state"] == "empty":
        return f"{info['queue']}: no job yet (enqueue one with any operation's --queue {info['queue']})"
    lines = [f"{info['queue']}: job {info['job']} ({info.get('operation') or '?'}) on "
             f"{urls.display(info['destination'])}: {info['state']}"]
    hints = {"stalled": f"tasks wait but no worker holds a lease: start workers with `pumice worker {info['queue']}`",
             "fresh": f"nothing started yet: start workers with `pumice worker {info['queue']}`",
             "failed": f"fix the cause, then `pumice queue retry-failed {info['queue']}`",
             "purged": "the queue was emptied; enqueue the same command again to resume"}
    if info["state"] in hints:
        lines[0] += f" — {hints[info['state']]}"
    lines.append(f"  {'stage':<12}{'done':>9}{'leased':>9}{'waiting':>9}{'failed':>9}{'total':>9}")
    for row in info["stages"]:
        line = f"  {row['stage']:<12}{row['done']:>9}{row['leased']:>9}{row['waiting']:>9}{row['failed']:>9}{row['total']:>9}"
        if row["rate"]:
            line += f"   {row['rate']:.2f} task/s, ETA {_duration(row['eta_seconds'])}"
        lines.append(line)
    if info["errors"]:
        lines.append("  first errors:")
        for e in info["errors"]:
            lines.append(f"    {e['stage']}/{e['task']} after {e['attempts']} attempt(s) on {e['worker']}: {e['error'].splitlines()[0] if e['error'] else ''}")
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def release(url: str) -> None:
    open_queue(url).release_all()


def purge(url: str) -> None:
    queue = open_queue(url)
    with queue.lock():
        queue.purge()
        pointer = queue.pointer()
        if pointer is not None:
            queue.set_pointer({**pointer, "status": "purged"})
            ledger = Ledger(pointer["destination"], pointer["job"])
            if ledger.state() is not None:
                ledger.update(status="purged")


def retry_failed(url: str) -> int:
    """Put the job's dead letters back on the queue; how many."""
    queue = open_queue(url)
    with queue.lock():
        pointer = queue.pointer()
        if pointer is None:
            raise PumiceError(f"{url} serves no job yet")
        ledger = Ledger(pointer["destination"], pointer["job"])
        state = ledger.state() or {}
        retried: list[tuple[str, str]] = []  # (stage, task id)
        messages = []
        for name in state.get("stages", {}):
            done = ledger.done(name)
            for task_id in ledger.failed(name):
                if task_id in done:
                    ledger.forgive(name, task_id)
                    continue
                record = ledger.failure(name, task_id) or {}
                messages.append(_message(pointer["job"], pointer["destination"], name, [record["task"]]))
                retried.append((name, task_id))
        if messages:
            queue.insert(messages)
            for name, task_id in retried:
                ledger.forgive(name, task_id)
            ledger.update(status="running")
            queue.set_pointer({**pointer, "status": "running"})
        return len(messages)

