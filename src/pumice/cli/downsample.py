"""pumice downsample PATH"""

from __future__ import annotations

import argparse

from ..ops import downsample
from ..ops.pyramid import METHODS
from ..storage.info import ENCODINGS
from .common import add_run_options, execute, memory_arg, parse_bounds, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("downsample", help="build a layer's resolution pyramid (average for images, mode for labels)",
                       description="Add downsampled mips to the layer at PATH. Each task reads its block once and "
                       "writes every new mip from it; blocks follow from --memory.")
    p.add_argument("path")
    p.add_argument("--mip", type=int, default=0, help="mip to start from (default 0)")
    p.add_argument("--num-mips", type=int, help="how many mips to add (default: until the volume fits in about one chunk)")
    p.add_argument("--factor", default="auto", metavar="X,Y,Z|auto",
                   help="factor per mip: 2,2,1, 2,2,2 or auto (2,2,1 until x/y resolution catches up with z, then 2,2,2)")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="auto: average for images, mode for segmentations")
    p.add_argument("--sparse", action="store_true", help="mode that does not let background (0) win over sparse labels")
    p.add_argument("--force", action="store_true", help="allow a method that rarely makes sense for the type (average of labels)")
    p.add_argument("--chunk-size", metavar="X,Y,Z", help="chunk shape of the new mips (default: the source mip's)")
    p.add_argument("--encoding", choices=ENCODINGS, help="encoding of the new mips (default: the source mip's)")
    p.add_argument("--sharded", action="store_true", help="write the new mips in the sharded format")
    p.add_argument("--bounds", metavar="X0,Y0,Z0,X1,Y1,Z1", help="only this region of the source mip (in its voxels)")
    p.add_argument("--fill-missing", action="store_true", help="read missing source chunks as zeros instead of failing")
    p.add_argument("--delete-background", action="store_true", help="do not store chunks that hold only the background colour")
    p.add_argument("--background-color", type=int, default=0, help="background value for --delete-background (default 0)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    factor = "auto" if args.factor == "auto" else vec_arg(args.factor, "--factor", positive=True)
    plan, notes = downsample.plan(
        args.path, mip=args.mip, num_mips=args.num_mips, factor=factor, method=args.method, sparse=args.sparse,
        chunk_size=vec_arg(args.chunk_size, "--chunk-size", positive=True), encoding=args.encoding, sharded=args.sharded,
        bounds=parse_bounds(args.bounds), fill_missing=args.fill_missing, delete_background=args.delete_background,
        background_color=args.background_color, force=args.force, **memory_arg(args),
    )
    if not plan.stages:
        for note in notes:
            print(f"pumice: {note}")
        return 0
    execute(plan, notes, args)
    return 0
