"""pumice ccl SRC DEST"""

from __future__ import annotations

import argparse

from ..ops import ccl
from .common import add_output_options, add_run_options, add_source_options, execute, memory_arg, output_args, \
    source_args, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ccl", help="connected components of a segmentation or a thresholded image, numbered 1..K",
                       description="Write the connected components of SRC into a new segmentation layer at DEST: each "
                       "label's separate pieces become separate objects, or, with --threshold-gte/--threshold-lte, the "
                       "pieces of an image's voxels in that range. Blocks are labelled independently and joined across "
                       "their faces in bounded memory per task. Components are numbered 1..K in the order of their "
                       "first voxel, taking task blocks in order (x fastest, then y, then z) and each block's voxels "
                       "the same way (the block is part of the job; --shape fixes it).")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--connectivity", type=int, choices=ccl.CONNECTIVITY, default=26,
                   help="voxels touching by faces (6), also edges (18), also corners (26, default)")
    p.add_argument("--threshold-gte", type=float, metavar="V", help="image: voxels >= V are foreground")
    p.add_argument("--threshold-lte", type=float, metavar="V", help="image: voxels <= V are foreground")
    p.add_argument("--dust", type=int, default=0, metavar="N", help="components under N voxels become 0 (as cc3d.dust)")
    p.add_argument("--mapping-out", metavar="FILE",
                   help="segmentations: write component -> source label (.npy N x 2, or CSV), which `pumice remap "
                   "--mapping` reads")
    p.add_argument("--shape", metavar="X,Y,Z", help="task block (default: from --memory); a multiple of the chunk")
    add_source_options(p)
    add_output_options(p, encodings=("raw", "compressed_segmentation"))
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = ccl.plan(args.src, args.dest, connectivity=args.connectivity, threshold_gte=args.threshold_gte,
                           threshold_lte=args.threshold_lte, dust=args.dust, mapping_out=args.mapping_out,
                           shape=vec_arg(args.shape, "--shape", positive=True), **source_args(args), **output_args(args),
                           **memory_arg(args))
    execute(plan, notes, args)
    return 0
