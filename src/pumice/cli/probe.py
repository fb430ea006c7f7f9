"""pumice probe DEST"""

from __future__ import annotations

import argparse

from ..ops import probe
from ..errors import PumiceError
from .common import add_run_options, execute, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="run tiny tasks to check a cluster or queue setup and what a task costs",
                       description="Run --tasks tiny tasks, each writing one small object under DEST/probe/, through any "
                       "runner (--workers, --cluster, --queue). Use it to check that workers reach the data and the queue, "
                       "and to measure per-task overhead. --fail and --seconds make chosen tasks fail or take a while.")
    p.add_argument("dest")
    p.add_argument("--tasks", type=positive_int, default=1000, metavar="N", help="tasks per stage (default 1000)")
    p.add_argument("--stages", type=int, default=1, choices=(1, 2), help="1, or 2 to check stage order (default 1)")
    p.add_argument("--seconds", type=float, default=0.0, metavar="S", help="each task sleeps this long first")
    p.add_argument("--fail", metavar="I,I,...", help="these task indices raise in every attempt")
    p.add_argument("--no-write", action="store_true", help="tasks write nothing (pure overhead)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fail = tuple(int(v) for v in (args.fail or "").split(",") if v.strip())
    except ValueError:
        raise PumiceError(f"--fail must be comma-separated task indices, got {args.fail!r}") from None
    plan, notes = probe.plan(args.dest, tasks=args.tasks, stages=args.stages, seconds=args.seconds,
                             fail=fail, write=not args.no_write)
    execute(plan, notes, args)
    return 0
