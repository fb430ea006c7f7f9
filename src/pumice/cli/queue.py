"""pumice queue release|purge|retry-failed URL"""

from __future__ import annotations

import argparse

from ..execution import queued
from .common import add_actions

ACTIONS = {
    "release": "make every leased task available again now (fq:// only; SQS leases return on their own)",
    "purge": "remove every message (the ledger keeps finished work: enqueue the same command again to resume)",
    "retry-failed": "put the job's dead letters back on the queue",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queue", help="control a queue: release leases, purge it, retry its dead letters",
                       description="; ".join(f"{name}: {what}" for name, what in ACTIONS.items()) + ".")
    actions = add_actions(p)
    for name, what in ACTIONS.items():
        action = actions.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        action.add_argument("url", help="fq:///shared/folder or sqs://queue-name")
        action.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "release":
        queued.release(args.url)
        print(f"{args.url}: every lease released")
    elif args.action == "purge":
        queued.purge(args.url)
        print(f"{args.url}: purged; enqueue the same command again to resume the job")
    else:
        count = queued.retry_failed(args.url)
        print(f"{args.url}: {count} dead-lettered task(s) back on the queue" if count else f"{args.url}: no dead letters")
    return 0
