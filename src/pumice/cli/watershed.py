"""pumice watershed SRC DEST"""

from __future__ import annotations

import argparse

from ..ops import watershed
from .common import add_output_options, add_run_options, add_source_options, execute, memory_arg, output_args, \
    source_args, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watershed", help="supervoxels (fragments) from a boundary map or affinities, blockwise",
                       description="Seeded watershed of SRC, a boundary map (1 channel, high on membranes) or affinities "
                       "(3 channels x, y, z, high inside objects; the boundary is 1 - their mean), into a uint64 "
                       "segmentation of fragments at DEST. Each block is flooded with a context margin around it; "
                       "fragments that meet at a block face and agree on more than half of their voxels there are "
                       "joined; fragments are numbered 1..K in block order. `pumice agglomerate` turns them into bodies.")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--input", dest="input_kind", choices=watershed.INPUTS,
                   help="what SRC is (default: from its channels, 1 boundary, 3 affinities)")
    p.add_argument("--invert", action="store_true", help="SRC is the other way round (low on membranes, e.g. a "
                   "probability of being inside a cell, or raw EM with dark membranes): use 1 - value")
    p.add_argument("--seed-method", choices=watershed.SEED_METHODS, default="minima",
                   help="seeds at the smoothed map's local minima below --threshold (minima, default), or at maxima of "
                   "the distance to the nearest voxel at or above --threshold (distance)")
    p.add_argument("--threshold", type=float, default=0.5, metavar="T",
                   help="boundary level (0..1) below which a voxel may seed (default 0.5)")
    p.add_argument("--sigma", type=float, default=1.0, metavar="S",
                   help="Gaussian smoothing in voxels of the finest axis, the same nm along the others (default 1; 0: none)")
    p.add_argument("--min-size", type=int, default=0, metavar="N",
                   help="fragments under N voxels (within a block) give up their seed: their voxels join the neighbours")
    p.add_argument("--seed-connectivity", type=int, choices=(6, 26), default=26,
                   help="--seed-method minima: a voxel seeds if no higher than its 26 neighbours (default) or only its "
                   "6 face neighbours (6: more, smaller fragments; on raw FIB-SEM they merged objects less, 0.18 against 0.38 "
                   "bits, but a thin noisy membrane may seed and merge its two sides)")
    p.add_argument("--context", metavar="X,Y,Z", help="margin read around each block (default: 32 voxels along the "
                   "finest axis, the same nm along the others, more for blocks under 64 voxels: a block's centre is "
                   "64 voxels from the edge of what is read)")
    p.add_argument("--shape", metavar="X,Y,Z", help="task block (default: from --memory); a multiple of the chunk")
    add_source_options(p)
    add_output_options(p, encodings=("raw", "compressed_segmentation"))
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = watershed.plan(args.src, args.dest, input_kind=args.input_kind, invert=args.invert,
                                 seed_method=args.seed_method, threshold=args.threshold, sigma=args.sigma,
                                 min_size=args.min_size, context=vec_arg(args.context, "--context", positive=True),
                                 seed_connectivity=args.seed_connectivity,
                                 shape=vec_arg(args.shape, "--shape", positive=True), **source_args(args),
                                 **output_args(args), **memory_arg(args))
    execute(plan, notes, args)
    return 0
