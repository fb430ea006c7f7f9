"""pumice mesh PATH"""

from __future__ import annotations

import argparse

from ..ops import mesh
from .common import add_run_options, execute, memory_arg, parse_ids, positive_int, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mesh", help="mesh a segmentation's objects (forge and merge), legacy or multi-resolution sharded",
                       description="Mesh every object of the segmentation at PATH with zmesh: forge fragments over a grid "
                       "of blocks, then merge them into one mesh per object, written beside the layer and named in its info.")
    p.add_argument("path")
    p.add_argument("--mip", type=int, default=0, help="mip to mesh (default 0)")
    p.add_argument("--shape", metavar="X,Y,Z", help="forge block shape in voxels (default: from --memory)")
    p.add_argument("--max-error", type=float, default=40.0, metavar="NM",
                   help="simplification: vertices move at most this far, in nm (default 40)")
    p.add_argument("--no-simplify", action="store_true", help="keep marching cubes' full-resolution surface")
    p.add_argument("--dust-threshold", type=int, default=0, metavar="N",
                   help="skip objects with fewer than N voxels in a forge block")
    p.add_argument("--dust-global", type=int, default=0, metavar="N",
                   help="skip objects with fewer than N voxels in the whole volume (with `pumice stats`' counts, "
                   "forge does not mesh them at all)")
    p.add_argument("--ids", metavar="ID,ID,...", help="mesh only these objects (others already meshed are kept)")
    p.add_argument("--exclude-ids", metavar="ID,ID,...", help="do not mesh these objects")
    p.add_argument("--fill-missing", action="store_true", help="read missing chunks as background instead of failing")
    p.add_argument("--dir", metavar="NAME", help="mesh directory inside the layer (default: the info's, else 'mesh'; "
                   "with --mapping 'mesh_bodies')")
    p.add_argument("--mapping", metavar="FILE",
                   help="supervoxel -> body (CSV, .npy, DVID text or binary): one mesh per body, without writing a "
                   "remapped layer, into its own directory (a Neuroglancer mesh source: precomputed://PATH/mesh_bodies); "
                   "--ids then names bodies")
    p.add_argument("--sharded", action="store_true",
                   help="write Neuroglancer's multi-resolution sharded Draco format (default: legacy, one file per object)")
    p.add_argument("--lods", type=positive_int, help="levels of detail in the sharded format (default 3)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = mesh.plan(
        args.path, mip=args.mip, shape=vec_arg(args.shape, "--shape", positive=True), max_error=args.max_error,
        simplify=not args.no_simplify, dust_threshold=args.dust_threshold, dust_global=args.dust_global,
        ids=parse_ids(args.ids, "--ids"), exclude_ids=parse_ids(args.exclude_ids, "--exclude-ids"),
        fill_missing=args.fill_missing, mesh_dir=args.dir, sharded=args.sharded, lods=args.lods,
        mapping=args.mapping, **memory_arg(args),
    )
    execute(plan, notes, args)
    return 0
