"""pumice edges SEG [--boundary IMAGE | --affinities AFF]"""

from __future__ import annotations

import argparse

from ..ops import edges
from .common import add_run_options, execute, memory_arg, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edges", help="the supervoxel adjacency table: contact areas and scores (Parquet, merge-table CSV)",
                       description="For every pair of supervoxels of SEG that touch across a voxel face: the contact area "
                       "(faces), a score that is a cost (the mean boundary across the contact with --boundary, 1 - the "
                       "mean affinity with --affinities, else 1 / area) and one voxel on each side. Written as Parquet "
                       "(SEG/<name>/part-*.parquet) and as neuclease's merge table CSV (id_a,id_b,xa,ya,za,xb,yb,zb,score), "
                       "which `pumice serve cleave --edges` reads.")
    p.add_argument("path", metavar="SEG")
    scores = p.add_mutually_exclusive_group()
    scores.add_argument("--boundary", metavar="IMAGE", help="a one-channel boundary map (high on membranes) of SEG's voxels")
    scores.add_argument("--affinities", metavar="AFF", help="a three-channel (x, y, z) affinity layer of SEG's voxels")
    p.add_argument("--invert", action="store_true", help="the map is the other way round (low on membranes, or "
                   "affinities high across boundaries): use 1 - value")
    p.add_argument("--name", default="edges", help="directory inside SEG (default edges)")
    p.add_argument("--csv", metavar="FILE", help="the merge table CSV (default SEG/<name>/merge-table.csv)")
    p.add_argument("--shape", metavar="X,Y,Z", help="task block (default: from --memory)")
    p.add_argument("--fill-missing", action="store_true", help="read missing chunks as zeros instead of failing")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = edges.plan(args.path, boundary=args.boundary, affinities=args.affinities, invert=args.invert,
                             name=args.name, csv=args.csv, fill_missing=args.fill_missing,
                             shape=vec_arg(args.shape, "--shape", positive=True), **memory_arg(args))
    execute(plan, notes, args)
    return 0
