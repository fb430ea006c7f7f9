"""pumice worker URL"""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import RunFailed
from ..execution import queued
from .common import note, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run tasks from a queue (fq:// or sqs://) until stopped or, with --exit-when-empty, done",
                       description="Lease tasks from the queue at URL and run them, one at a time; start as many workers, "
                       "on as many machines, as reach the queue and the data. Stages hand over by themselves; tasks that keep "
                       "failing become dead letters (see `pumice status URL`). SQS and S3 endpoints follow AWS_ENDPOINT_URL.")
    p.add_argument("url", help="fq:///shared/folder or sqs://queue-name")
    p.add_argument("--exit-when-empty", action="store_true",
                   help="exit once the queue's job has finished or failed (default: keep waiting for work)")
    p.add_argument("--lease-seconds", type=float, default=queued.DEFAULT_LEASE_SECONDS, metavar="S",
                   help=f"a task not finished (nor renewed) in S seconds goes to another worker (default {queued.DEFAULT_LEASE_SECONDS:g})")
    p.add_argument("--max-attempts", type=positive_int, default=queued.DEFAULT_MAX_ATTEMPTS, metavar="N",
                   help=f"after N attempts a task becomes a dead letter (default {queued.DEFAULT_MAX_ATTEMPTS})")
    p.add_argument("--lost-after", type=float, default=queued.DEFAULT_LOST_AFTER_SECONDS, metavar="S",
                   help="on SQS, whose counts lag: tasks of the stage missing while the queue has looked empty for S "
                        f"seconds are enqueued again (default {queued.DEFAULT_LOST_AFTER_SECONDS:g})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    last = [0.0]

    def progress(report: queued.WorkerReport) -> None:
        now = time.perf_counter()
        if sys.stderr.isatty() and now - last[0] > 1:
            last[0] = now
            print(f"\rpumice worker: {report.ran} task(s) done, {report.retried} retried, {report.dead} dead", end="",
                  file=sys.stderr, flush=True)

    report = queued.work(args.url, exit_when_empty=args.exit_when_empty, lease_seconds=args.lease_seconds,
                         max_attempts=args.max_attempts, lost_after=args.lost_after, say=note, progress=progress)
    seconds = time.perf_counter() - started
    print(f"worker finished in {seconds:.1f} s: {report.ran} task(s) run from {report.messages} message(s), "
          f"{report.retried} retried, {report.dead} dead-lettered by this worker; job {report.job or '-'}: {report.status or 'none'}")
    if report.status == "failed":
        listed = ", ".join(report.failures[:10]) + (" ..." if len(report.failures) > 10 else "")
        raise RunFailed(f"job {report.job} failed: {len(report.failures)} task(s) are dead letters ({listed}); see "
                        f"`pumice status {args.url}`, fix the cause, then `pumice queue retry-failed {args.url}`")
    return 0
