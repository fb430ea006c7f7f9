"""pumice quantize SRC DEST"""

from __future__ import annotations

import argparse

from ..ops import quantize
from ..storage.info import ENCODINGS
from .common import add_run_options, execute, memory_arg, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="float affinities or probabilities (0..1) -> a uint8 image layer",
                       description="Write round(clip(x, 0, 1) * 255) of every voxel of the float32 layer SRC (NumPy's "
                       "rounding: halves to even) into a new uint8 image layer at DEST; NaN becomes --nan-value first. "
                       "All channels by default, or one with --channel.")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--mip", type=int, default=0, help="mip of SRC (default 0)")
    p.add_argument("--channel", type=int, metavar="N", help="keep only channel N (default: every channel)")
    p.add_argument("--nan-value", type=float, default=0.0, metavar="V", help="value in 0..1 that NaN becomes (default 0)")
    p.add_argument("--chunk-size", metavar="X,Y,Z", help="chunk shape (default: the source's)")
    p.add_argument("--encoding", choices=ENCODINGS, default="raw", help="chunk encoding (default raw)")
    p.add_argument("--fill-missing", action="store_true", help="read missing source chunks as zeros instead of failing")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = quantize.plan(args.src, args.dest, mip=args.mip, channel=args.channel, nan_value=args.nan_value,
                                chunk_size=vec_arg(args.chunk_size, "--chunk-size", positive=True), encoding=args.encoding,
                                fill_missing=args.fill_missing, dry_run=args.dry_run, **memory_arg(args))
    execute(plan, notes, args)
    return 0
