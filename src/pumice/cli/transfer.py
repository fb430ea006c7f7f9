"""pumice transfer SRC DEST"""

from __future__ import annotations

import argparse

from ..ops import transfer
from ..ops.pyramid import METHODS
from ..storage.info import ENCODINGS
from .common import add_run_options, execute, memory_arg, vec_arg
from .downsample import parse_bounds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="copy a layer: rechunk, re-encode, crop, translate, (un)shard, move between stores",
                       description="Copy mip --mip of SRC into a new layer at DEST (any store), changing what the options "
                       "say; --num-mips downsamples in the same pass. Chunk files are copied unchanged when nothing about "
                       "them changes; CloudVolume/Igneous .gz/.br chunk files are decompressed, so DEST holds plain chunk names.")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--mip", type=int, default=0, help="mip of SRC to copy (becomes DEST's mip 0)")
    p.add_argument("--bounds", metavar="X0,Y0,Z0,X1,Y1,Z1", help="crop: only this region (voxels of --mip)")
    p.add_argument("--translate", metavar="X,Y,Z", help="shift the voxel offset by this many voxels")
    p.add_argument("--chunk-size", metavar="X,Y,Z", help="new chunk shape (default: the source's)")
    p.add_argument("--encoding", choices=ENCODINGS, help="new encoding (default: the source's)")
    p.add_argument("--sharded", action=argparse.BooleanOptionalAction, default=None,
                   help="write sharded (or --no-sharded: one file per chunk); default: as the source")
    p.add_argument("--num-mips", type=int, default=0, help="also downsample this many mips in the same pass")
    p.add_argument("--factor", default="auto", metavar="X,Y,Z|auto", help="downsampling factor (see pumice downsample)")
    p.add_argument("--method", choices=METHODS, default="auto", help="downsampling method (see pumice downsample)")
    p.add_argument("--sparse", action="store_true", help="sparse mode for segmentations")
    p.add_argument("--force", action="store_true", help="allow a method that rarely makes sense for the type")
    p.add_argument("--fill-missing", action="store_true", help="read missing source chunks as zeros instead of failing")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    factor = "auto" if args.factor == "auto" else vec_arg(args.factor, "--factor", positive=True)
    plan, notes = transfer.plan(
        args.src, args.dest, mip=args.mip, bounds=parse_bounds(args.bounds),
        translate=vec_arg(args.translate, "--translate") or (0, 0, 0),
        chunk_size=vec_arg(args.chunk_size, "--chunk-size", positive=True), encoding=args.encoding, sharded=args.sharded,
        num_mips=args.num_mips, factor=factor, method=args.method, sparse=args.sparse, force=args.force,
        fill_missing=args.fill_missing, dry_run=args.dry_run, **memory_arg(args),
    )
    execute(plan, notes, args)
    return 0
