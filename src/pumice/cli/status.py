"""pumice status URL"""

from __future__ import annotations

import argparse
import json

from ..execution import queued
from ..execution.ledger import jobs
from ..execution.transport import is_queue_url
from ..storage import urls


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="progress of a queue's job (done, leased, waiting, failed per stage) or a layer's jobs",
                       description="For a queue URL (fq://, sqs://): per stage, tasks done, leased, waiting and failed, "
                       "throughput and ETA, and the first errors. For a layer: the jobs recorded in its ledger. "
                       "Exits 1 when the job failed.")
    p.add_argument("url", help="fq:///shared/folder, sqs://queue-name, or a layer path/URL")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if is_queue_url(args.url):
        info = queued.status(args.url)
        print(json.dumps(info, indent=2) if args.json else queued.format_status(info))
        return 1 if info["state"] == "failed" else 0
    found = jobs(args.url)
    if args.json:
        print(json.dumps(found, indent=2))
    elif not found:
        print(f"{urls.display(urls.normalize(args.url))}: no jobs recorded")
    for job in found if not args.json else []:
        stages = ", ".join(f"{name} {job['done'].get(name, 0)}/{count}"
                           + (f" ({job['failed'][name]} failed)" if job["failed"].get(name) else "")
                           for name, count in job.get("stages", {}).items())
        print(f"job {job['id']} ({job.get('operation')}): {job.get('status')}; {stages}")
    return 1 if any(job.get("status") == "failed" for job in found) else 0
