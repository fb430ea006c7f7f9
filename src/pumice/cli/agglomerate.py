"""pumice agglomerate FRAGMENTS --boundary|--affinities SRC --out DIR"""

from __future__ import annotations

import argparse

from ..errors import PumiceError
from ..ops import agglomerate, remap
from ..storage import urls
from .common import add_run_options, execute, memory_arg, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agglomerate", help="bodies from fragments: region graph, agglomeration by score, mappings",
                       description="Build the region graph of the fragments FRAGMENTS (one edge per touching pair: "
                       "contact and score from the boundary map or affinities, as `pumice edges`), then merge by "
                       "increasing score up to each threshold (waterz-style; --score mean joins contacts and averages "
                       "over them, max keeps the highest face). Writes DIR/mapping-<threshold>.csv (sv,body) per "
                       "threshold, the edge table beside FRAGMENTS and neuclease's merge table; --apply DEST also "
                       "writes the bodies of the first threshold as a new segmentation (pumice remap).")
    p.add_argument("fragments", metavar="FRAGMENTS")
    maps = p.add_mutually_exclusive_group()  # one is needed: the planner says so in one line
    maps.add_argument("--boundary", metavar="IMAGE", help="a one-channel boundary map (high on membranes)")
    maps.add_argument("--affinities", metavar="AFF", help="three-channel affinities x, y, z (high inside objects)")
    p.add_argument("--invert", action="store_true", help="the map is the other way round: use 1 - value")
    p.add_argument("--out", required=True, metavar="DIR", help="where the mappings go")
    p.add_argument("--threshold", type=float, help="merge up to this score (0..1; default 0.5)")
    p.add_argument("--thresholds", metavar="T1,T2,...", help="several thresholds sharing one graph and one pass")
    p.add_argument("--score", choices=agglomerate.SCORES, default=agglomerate.DEFAULT_SCORE,
                   help="an edge's score: the median or 75th percentile, over the fragment contacts joined into it, of each "
                   "contact's lowest face (q50-lowest, the default, and q75-lowest: waterz's default quantile score); "
                   "the mean over its contact (mean); its median or 75th percentile face (q50, q75); its highest "
                   "face (max)")
    p.add_argument("--name", default="edges", help="directory of the edge table inside FRAGMENTS (default edges)")
    p.add_argument("--apply", metavar="DEST", help="also write the bodies (at the lowest threshold) as a segmentation")
    p.add_argument("--shape", metavar="X,Y,Z", help="task block of the region graph (default: from --memory)")
    p.add_argument("--fill-missing", action="store_true", help="read missing chunks as zeros instead of failing")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threshold is not None and args.thresholds:
        raise PumiceError("--threshold and --thresholds both say where to stop: give one")
    if args.thresholds:
        try:
            thresholds = tuple(float(t) for t in args.thresholds.split(",") if t.strip())
        except ValueError:
            raise PumiceError(f"--thresholds must be numbers separated by commas, got {args.thresholds!r}") from None
    else:
        thresholds = (0.5 if args.threshold is None else args.threshold,)
    plan, notes = agglomerate.plan(args.fragments, out=args.out, boundary=args.boundary, affinities=args.affinities,
                                   invert=args.invert, thresholds=thresholds, score=args.score, name=args.name,
                                   fill_missing=args.fill_missing, shape=vec_arg(args.shape, "--shape", positive=True),
                                   **memory_arg(args))
    report = execute(plan, notes, args)
    if args.apply and report is not None:
        mapping = urls.join(urls.normalize(args.out), agglomerate.mapping_name(min(thresholds)))
        body_plan, body_notes = remap.plan(args.fragments, args.apply, mapping=mapping, **memory_arg(args))
        execute(body_plan, body_notes, args)
    return 0
