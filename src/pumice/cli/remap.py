"""pumice remap SRC DEST --mapping FILE"""

from __future__ import annotations

import argparse

from ..ops import remap
from .common import add_output_options, add_run_options, add_source_options, execute, memory_arg, output_args, \
    source_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remap", help="relabel a segmentation through a supervoxel -> body mapping (CSV, .npy, DVID)",
                       description="Write SRC into a new segmentation layer at DEST with every supervoxel id replaced by "
                       "its body from --mapping: a .csv of two columns (a header line optional), an N x 2 .npy, DVID's "
                       "binary mappings (.bin/.dvid: little-endian uint64 pairs) or DVID's `sv body` text lines (any "
                       "other name). The file is staged beside DEST, so workers anywhere read it.")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--mapping", required=True, metavar="FILE", help="supervoxel -> body mapping (path or URL)")
    p.add_argument("--unmapped", choices=remap.UNMAPPED, default="keep",
                   help="ids the mapping does not name: keep their value (default) or set them to 0")
    add_source_options(p)
    add_output_options(p, encodings=("raw", "compressed_segmentation"))
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = remap.plan(args.src, args.dest, mapping=args.mapping, unmapped=args.unmapped, **source_args(args),
                             **output_args(args), **memory_arg(args))
    execute(plan, notes, args)
    return 0
