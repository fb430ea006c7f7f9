"""pumice transfer SRC DEST"""

from __future__ import annotations

import argparse

from ..ops import transfer
from .common import add_output_options, add_run_options, add_source_options, execute, memory_arg, output_args, \
    source_args, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="copy a layer: rechunk, re-encode, crop, translate, (un)shard, move between stores",
                       description="Copy mip --mip of SRC into a new layer at DEST (any store), changing what the options "
                       "say; --num-mips downsamples in the same pass. Chunk files are copied unchanged when nothing about "
                       "them changes; CloudVolume/Igneous .gz/.br chunk files are decompressed, so DEST holds plain chunk names.")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--translate", metavar="X,Y,Z", help="shift the voxel offset by this many voxels")
    add_source_options(p)
    add_output_options(p)
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = transfer.plan(args.src, args.dest, translate=vec_arg(args.translate, "--translate") or (0, 0, 0),
                                **source_args(args), **output_args(args), **memory_arg(args))
    execute(plan, notes, args)
    return 0
