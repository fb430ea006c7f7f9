"""What Pumice keeps beside a layer's data, under ``.pumice/`` in the destination: the ledgers of
its jobs (``jobs/<job id>/``, kept by ``execution.ledger``) and side inputs staged for workers
(``inputs/``, see ``storage.inputs``). This module is the one place that knows the layout.
"""

from __future__ import annotations

from .kv import open_kv

ROOT = ".pumice"
JOBS = f"{ROOT}/jobs"
INPUTS = f"{ROOT}/inputs"


def job_prefix(job_id: str) -> str:
    """Where a job's ledger lives, relative to its destination."""
    return f"{JOBS}/{job_id}/"


def forget_job(url: str, job_id: str) -> None:
    """Drop one job's ledger: its record of finished work no longer describes what is stored."""
    open_kv(url).delete_prefix(job_prefix(job_id))


def forget_jobs(url: str) -> None:
    """Drop every job's ledger at ``url`` (after data was deleted)."""
    open_kv(url).delete_prefix(JOBS + "/")


def job_ids(url: str) -> list[str]:
    """The jobs with a ledger at ``url``."""
    return [key.split("/")[2] for key in open_kv(url).list(JOBS + "/") if key.endswith("/job.json") and key.count("/") == 3]
