"""The ledger: which tasks of a job have finished, kept beside the job's output.

One small object per finished task under ``<destination>/.pumice/jobs/<job-id>/done/<stage>/``,
so any number of workers on any store can record completion without sharing a file, and a rerun
of the same command skips exactly the tasks that finished. ``job.json`` says whether the job is
running, failed or complete, so a layer that was half written is never taken for a whole one.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from typing import Any

from ..storage import bookkeeping, urls
from ..storage.kv import KV, open_kv


# Attempts at a task before it becomes a dead letter (errors that are not the user's: I/O hiccups, a
# storage service refusing), on every runner.
MAX_ATTEMPTS = 3


class Ledger:
    def __init__(self, destination: str, job_id: str):
        self.destination = urls.normalize(destination)
        self.job_id = job_id
        self.prefix = bookkeeping.job_prefix(job_id)

    @property
    def kv(self) -> KV:
        return open_kv(self.destination, synced=False)

    def state(self) -> dict[str, Any] | None:
        return self.kv.get_json(self.prefix + "job.json")

    def begin(self, operation: str, params: dict[str, Any], stages: dict[str, int], **fields: Any) -> None:
        """Record the job as running (``fields``: what a runner adds, e.g. the queue's recipe)."""
        previous = self.state() or {}
        self.kv.put_json(
            self.prefix + "job.json",
            {
                "operation": operation,
                "params": params,
                "stages": stages,
                "status": "running",
                "started": previous.get("started", _now()),
                "updated": _now(),
                # a finish that wrote the outputs stays done (finish_plan): a rerun only cleans up
                **{k: previous[k] for k in ("outputs_written", "finish_notes") if k in previous},
                **fields,
            },
        )

    def end(self, status: str) -> None:
        self.update(status=status)

    def update(self, **fields: Any) -> dict[str, Any]:
        state = self.state() or {}
        state.update(fields, updated=_now())
        self.kv.put_json(self.prefix + "job.json", state)
        return state

    def claim_finish(self, stale_seconds: float = 600) -> bool:
        """Whether this process should run the job's finish step: the first to claim it, or anyone once
        a claim is ``stale_seconds`` old and the job is still not complete (its claimer stopped). Queue
        workers that hand over the last stage at the same moment would otherwise both finish, and one
        would read the work files the other was deleting."""
        key = self.prefix + "finishing"
        if self.kv.create(key, json.dumps({"at": time.time()}).encode()):
            return True
        claim = self.kv.get_json(key) or {}
        if (self.state() or {}).get("status") == "complete" or time.time() - float(claim.get("at", 0)) < stale_seconds:
            return False
        self.kv.put(key, json.dumps({"at": time.time()}).encode())
        return True

    def done(self, stage: str) -> set[str]:
        prefix = f"{self.prefix}done/{stage}/"
        return {key[len(prefix) :] for key in self.kv.list(prefix)}

    def mark_done(self, stage: str, task_id: str) -> None:
        self.kv.put(f"{self.prefix}done/{stage}/{task_id}", b"")

    def are_done(self, stage: str, task_ids: list[str]) -> list[bool]:
        """``is_done`` of many tasks, the reads in flight at once."""
        return self.kv.exist_many([f"{self.prefix}done/{stage}/{task_id}" for task_id in task_ids])

    def is_done(self, stage: str, task_id: str) -> bool:
        return self.kv.exists(f"{self.prefix}done/{stage}/{task_id}")

    # Dead letters: tasks that failed for good, with their error and traceback, kept until retried.
    def fail(self, stage: str, task_id: str, record: dict[str, Any]) -> None:
        self.kv.put_json(f"{self.prefix}failed/{stage}/{task_id}", record)

    def failed(self, stage: str) -> list[str]:
        prefix = f"{self.prefix}failed/{stage}/"
        return [key[len(prefix):] for key in self.kv.list(prefix)]

    def failure(self, stage: str, task_id: str) -> dict[str, Any] | None:
        return self.kv.get_json(f"{self.prefix}failed/{stage}/{task_id}")

    def forgive(self, stage: str, task_id: str) -> None:
        self.kv.delete(f"{self.prefix}failed/{stage}/{task_id}")

    def forgive_all(self, stages: list[str]) -> None:
        """A new run of the job tries its dead letters again."""
        for stage in stages:
            self.kv.delete_prefix(f"{self.prefix}failed/{stage}/")

    def clear(self) -> None:
        self.kv.delete_prefix(self.prefix)


def jobs(destination: str) -> list[dict[str, Any]]:
    """Every job recorded at a destination, with its id and progress."""
    found = []
    for job_id in bookkeeping.job_ids(urls.normalize(destination)):
        ledger = Ledger(destination, job_id)
        state = ledger.state() or {}
        state["id"] = job_id
        state["done"] = {stage: len(ledger.done(stage)) for stage in state.get("stages", {})}
        state["failed"] = {stage: len(ledger.failed(stage)) for stage in state.get("stages", {})}
        found.append(state)
    return found


def failure_record(task_json: dict[str, Any], error: BaseException | str, attempts: int) -> dict[str, Any]:
    """A dead letter: the task, what went wrong (with the traceback), how often, where, when."""
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
        trace = "".join(traceback.format_exception(error))
    else:
        text, trace = error, ""
    return {"task": task_json, "error": text, "traceback": trace, "attempts": attempts,
            "worker": f"{socket.gethostname()}:{os.getpid()}", "time": time.time()}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
