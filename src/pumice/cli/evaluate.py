"""pumice evaluate SEG --truth GT"""

from __future__ import annotations

import argparse

from ..ops import evaluate
from .common import add_run_options, execute, memory_arg, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="variation of information (split, merge) and adapted Rand error against ground truth",
                       description="Compare the segmentation SEG with the ground truth GT (the same voxels): variation "
                       "of information split H(SEG|GT) and merge H(GT|SEG) in bits, and the adapted Rand error "
                       "(1 - F-score of pairs of voxels, precision against SEG, recall against GT). GT's 0 voxels are "
                       "left out unless --keep-truth-zero. Counted blockwise; kept in SEG/evaluations/<name>.json.")
    p.add_argument("path", metavar="SEG")
    p.add_argument("--truth", required=True, metavar="GT", help="the ground-truth segmentation")
    p.add_argument("--mask", metavar="LAYER", help="compare only voxels where this layer is nonzero")
    p.add_argument("--keep-truth-zero", action="store_true", help="compare GT's 0 voxels too (default: left out, as "
                   "unlabelled or boundary)")
    p.add_argument("--name", help="the result's name: SEG/evaluations/NAME.json (default: GT's folder name)")
    p.add_argument("--mip", type=int, default=0, help="the mip of both layers to compare (default 0)")
    p.add_argument("--shape", metavar="X,Y,Z", help="task block (default: from --memory)")
    p.add_argument("--fill-missing", action="store_true", help="read missing chunks as zeros instead of failing")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = evaluate.plan(args.path, truth=args.truth, mask=args.mask, keep_truth_zero=args.keep_truth_zero, name=args.name,
                                mip=args.mip, fill_missing=args.fill_missing,
                                shape=vec_arg(args.shape, "--shape", positive=True), **memory_arg(args))
    execute(plan, notes, args)  # with --json, its summary holds the scores ("result")
    if args.dry_run or args.queue or args.json_summary:
        return 0
    record = evaluate.read_result(args.path, plan.params["name"])
    if record is not None:
        print(f"VOI split (H(SEG|GT))  {record['voi_split']:.4f} bits\n"
              f"VOI merge (H(GT|SEG))  {record['voi_merge']:.4f} bits\n"
              f"VOI                    {record['voi']:.4f} bits\n"
              f"adapted Rand error     {record['adapted_rand_error']:.4f} (precision {record['rand_precision']:.4f}, "
              f"recall {record['rand_recall']:.4f})\n"
              f"compared               {record['voxels']:,} voxels, {record['seg_objects']:,} SEG and "
              f"{record['truth_objects']:,} GT objects")
    return 0
