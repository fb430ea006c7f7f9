"""pumice quantize SRC DEST"""

from __future__ import annotations

import argparse

from ..ops import quantize
from ..storage.info import ENCODINGS
from .common import add_output_options, add_run_options, add_source_options, execute, memory_arg, output_args, \
    source_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="float affinities or probabilities (0..1) -> a uint8 image layer",
                       description="Write round(clip(x, 0, 1) * 255) of every voxel of the float32 layer SRC (NumPy's "
                       "rounding: halves to even) into a new uint8 image layer at DEST; NaN becomes --nan-value first. "
                       "All channels by default, or one with --channel.")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--channel", type=int, metavar="N", help="keep only channel N (default: every channel)")
    p.add_argument("--nan-value", type=float, default=0.0, metavar="V", help="value in 0..1 that NaN becomes (default 0)")
    add_source_options(p)
    add_output_options(p, encodings=ENCODINGS[:3])
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = quantize.plan(args.src, args.dest, channel=args.channel, nan_value=args.nan_value, **source_args(args),
                                **output_args(args), **memory_arg(args))
    execute(plan, notes, args)
    return 0
