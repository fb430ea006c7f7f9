"""pumice objects PATH --bounds X0,Y0,Z0,X1,Y1,Z1"""

from __future__ import annotations

import argparse
import json

from ..errors import PumiceError
from ..ops import stats
from .common import parse_bounds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("objects", help="the ids present in a box, from the spatial index `pumice stats` leaves",
                       description="Print the ids of the segmentation PATH present in --bounds (voxels of --mip): blocks "
                       "wholly inside the box come from the spatial index `pumice stats` wrote, the blocks it cuts are "
                       "read, so the time grows with the box, not the volume.")
    p.add_argument("path")
    p.add_argument("--bounds", required=True, metavar="X0,Y0,Z0,X1,Y1,Z1", help="the box, in voxels of --mip")
    p.add_argument("--mip", type=int, default=0, help="mip of the index (default 0)")
    p.add_argument("--json", action="store_true", help="a JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bounds = parse_bounds(args.bounds)
    if bounds is None:  # pragma: no cover - required
        raise PumiceError("--bounds is required")
    ids = stats.objects_in(args.path, bounds, args.mip)
    print(json.dumps([int(i) for i in ids]) if args.json else "\n".join(str(int(i)) for i in ids))
    return 0
