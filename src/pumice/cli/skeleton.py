"""pumice skeleton PATH; pumice skeleton export PATH --ids ... --format swc|npz --out DIR"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import PumiceError
from ..ops import skeleton
from .common import add_run_options, execute, memory_arg, parse_ids, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("skeleton", help="skeletonize a segmentation's objects with kimimaro (forge and merge); export SWC",
                       description="`pumice skeleton PATH` traces every object of the segmentation at PATH with kimimaro "
                       "(TEASAR) over a grid of blocks, fuses each object's pieces into one tree and writes Neuroglancer "
                       "Precomputed skeletons beside the layer. `pumice skeleton export PATH --ids ... --out DIR` writes "
                       "stored skeletons as SWC or NPZ files.")
    p.add_argument("target", nargs="+", metavar="PATH | export PATH")
    p.add_argument("--mip", type=int, default=0, help="mip to skeletonize (default 0)")
    p.add_argument("--shape", metavar="X,Y,Z", help="forge block shape in voxels (default: from --memory)")
    p.add_argument("--teasar-scale", type=float, default=1.5, help="TEASAR invalidation: scale x boundary distance (default 1.5)")
    p.add_argument("--teasar-const", type=float, default=300.0, metavar="NM", help="TEASAR invalidation: plus this (default 300 nm)")
    p.add_argument("--dust-threshold", type=int, default=1000, metavar="N",
                   help="skip objects with fewer than N voxels in a forge block (default 1000)")
    p.add_argument("--dust-global", type=int, default=0, metavar="N",
                   help="skip objects with fewer than N voxels in the whole volume (sizes from `pumice stats`)")
    p.add_argument("--ids", metavar="ID,ID,...", help="only these objects (export: the ones to write)")
    p.add_argument("--exclude-ids", metavar="ID,ID,...", help="not these objects")
    p.add_argument("--no-fix-branching", action="store_true", help="faster, rougher branch points")
    p.add_argument("--no-fix-borders", action="store_true", help="do not centre skeletons on block faces (pieces may not meet)")
    p.add_argument("--fill-missing", action="store_true", help="read missing chunks as background instead of failing")
    p.add_argument("--cross-sections", action="store_true", help="store each vertex's cross-sectional area (nm^2)")
    p.add_argument("--tick-threshold", type=float, default=3500.0, metavar="NM",
                   help="merge: prune end branches shorter than this (default 3500 nm)")
    p.add_argument("--min-cable", type=float, default=1000.0, metavar="NM",
                   help="merge: drop objects with less cable than this (default 1000 nm)")
    p.add_argument("--dir", metavar="NAME", help="skeleton directory inside the layer (default: the info's, else 'skeletons')")
    p.add_argument("--sharded", action="store_true", help="write Neuroglancer's sharded skeleton format")
    p.add_argument("--format", choices=("swc", "npz"), default="swc", help="export: file format (default swc)")
    p.add_argument("--out", metavar="DIR", help="export: folder for the files")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.target[0] == "export":
        return export(args)
    if len(args.target) != 1:
        raise PumiceError(f"give one layer PATH (or `export PATH`), got {' '.join(args.target)}")
    plan, notes = skeleton.plan(
        args.target[0], mip=args.mip, shape=vec_arg(args.shape, "--shape", positive=True), teasar_scale=args.teasar_scale,
        teasar_const=args.teasar_const, dust_threshold=args.dust_threshold, dust_global=args.dust_global, ids=parse_ids(args.ids, "--ids"),
        exclude_ids=parse_ids(args.exclude_ids, "--exclude-ids"), fix_branching=not args.no_fix_branching,
        fix_borders=not args.no_fix_borders, fill_missing=args.fill_missing, cross_sections=args.cross_sections,
        tick_threshold=args.tick_threshold, min_cable=args.min_cable, skeleton_dir=args.dir, sharded=args.sharded,
        **memory_arg(args),
    )
    execute(plan, notes, args)
    return 0


def export(args: argparse.Namespace) -> int:
    if len(args.target) != 2:
        raise PumiceError("usage: pumice skeleton export PATH --ids ID,... --out DIR [--format swc|npz]")
    ids = parse_ids(args.ids, "--ids")
    if not ids:
        raise PumiceError("export needs --ids: the objects whose skeletons to write")
    if not args.out:
        raise PumiceError("export needs --out DIR: the folder for the files")
    found = skeleton.read_skeletons(args.target[1], ids, args.dir)
    missing = [i for i in ids if i not in found]
    if len(missing) == len(ids):
        raise PumiceError(f"none of the --ids has a skeleton: {', '.join(map(str, missing[:10]))}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for label, skel in found.items():
        if args.format == "swc":
            (out / f"{label}.swc").write_text(skel.to_swc())
        else:
            arrays = {"vertices": skel.vertices, "edges": skel.edges}
            for attribute in skel.extra_attributes:
                arrays[attribute["id"]] = getattr(skel, attribute["id"])
            np.savez(out / f"{label}.npz", **arrays)
    print(f"wrote {len(found)} {args.format.upper()} file(s) to {out}"
          + (f"; no skeleton for {len(missing)} id(s): {', '.join(map(str, missing[:10]))}" if missing else ""))
    return 0
