"""pumice delete PATH"""

from __future__ import annotations

import argparse

from ..ops import delete
from .common import add_run_options, execute, parse_bounds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("delete", help="remove a layer, some of its mips, or the data in a region",
                       description="Without --mip, remove the whole layer. With --mip M (and --num-mips N), remove those "
                       "mips; when they are the top of the pyramid their scales leave the info. With --bounds, remove "
                       "only the chunks (or shards) lying entirely inside the region.")
    p.add_argument("path")
    p.add_argument("--mip", type=int, help="first mip to remove")
    p.add_argument("--num-mips", type=int, help="how many mips (default: up to the top)")
    p.add_argument("--bounds", metavar="X0,Y0,Z0,X1,Y1,Z1", help="only this region, in voxels of --mip (default mip 0)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = delete.plan(args.path, mip=args.mip if args.mip is not None or not args.bounds else 0,
                              num_mips=args.num_mips, bounds=parse_bounds(args.bounds))
    execute(plan, notes, args)
    return 0
