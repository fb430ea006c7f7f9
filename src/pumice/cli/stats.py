"""pumice stats PATH"""

from __future__ import annotations

import argparse
import json

from ..ops import stats
from .common import add_run_options, add_source_options, execute, memory_arg, positive_int, source_args, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="per object of a segmentation: voxels, bounding box, centroid (Parquet, segment "
                       "properties, spatial index)",
                       description="Count every object of the segmentation PATH: voxels, bounding box and centroid, in a "
                       "Parquet table beside the layer (PATH/stats/<mip>/table/part-*.parquet, one row per object), the "
                       "largest as Neuroglancer segment properties (listed, searched and sorted in the viewer), and the "
                       "ids of every block, which `pumice objects` reads. --top N prints the largest afterwards.")
    p.add_argument("path")
    p.add_argument("--shape", metavar="X,Y,Z", help="task block (default: from --memory)")
    p.add_argument("--properties", type=int, default=stats.PROPERTIES, metavar="N",
                   help=f"list the N largest objects in the segment properties (default {stats.PROPERTIES:,}; 0: none)")
    p.add_argument("--surface-area", action="store_true",
                   help="also each object's exposed voxel faces in nm^2 (column surface_nm2): faces it shares with "
                   "anything else, background or another object or the volume's outside")
    p.add_argument("--top", type=positive_int, metavar="N", help="then print the N largest objects")
    add_source_options(p, what="PATH", bounds=False)
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = stats.plan(args.path, shape=vec_arg(args.shape, "--shape", positive=True), properties=args.properties,
                             surface_area=args.surface_area,
                             **source_args(args), **memory_arg(args))
    execute(plan, notes, args)
    if args.top and not args.dry_run and not args.queue:
        rows = stats.largest(args.path, args.top, args.mip)
        if args.json_summary:
            print(json.dumps(rows))
        else:
            print(f"{'id':>20} {'voxels':>14}  bounding box (voxels)              centroid (voxels)")
            for r in rows:
                print(f"{r['id']:>20} {r['voxels']:>14,}  {r['x0']},{r['y0']},{r['z0']} - {r['x1']},{r['y1']},{r['z1']}"
                      f"  {r['centroid_x']:.1f},{r['centroid_y']:.1f},{r['centroid_z']:.1f}")
    return 0
