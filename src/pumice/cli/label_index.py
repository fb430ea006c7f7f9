"""pumice label-index SEG [--mapping FILE] [--export dvid DIR] [--export block-stats FILE.h5]
pumice label-index query SEG BODY [--json]"""

from __future__ import annotations

import argparse
import json

from ..errors import PumiceError
from ..ops import label_index
from .common import add_run_options, execute, memory_arg, note, vec_arg

EXPORTS = ("dvid", "block-stats")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label-index", help="DVID label indexes of a supervoxel segmentation (per body: blocks and supervoxel counts)",
        usage="pumice label-index SEG [--mapping FILE] [--db URL] [--export dvid DIR] [--export block-stats FILE.h5]\n"
              "       pumice label-index query SEG BODY [--db URL] [--json] [--supervoxel]",
        description="Index the supervoxel segmentation SEG: for every body (from --mapping; without one, every "
        "supervoxel is a body) the 64^3 blocks of DVID's grid it touches and each of its supervoxels' voxels there, "
        "in a database beside the layer (SQLite, SEG/label_index.sqlite) or --db URL (any SQLAlchemy URL). A "
        "changed --mapping for an existing index moves only the supervoxels whose body changed. --export writes "
        "DVID's LabelIndices and MappingOps messages with a load.sh that posts them, or flyemflows' block "
        "statistics. `query SEG BODY` prints one body's index.")
    p.add_argument("target", metavar="SEG", help="the segmentation (or `query`, then SEG BODY)")
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--mapping", metavar="FILE", help="supervoxel -> body: CSV, .npy, DVID's `sv body` text or binary")
    p.add_argument("--db", metavar="URL", help="database (default: sqlite beside a local layer)")
    p.add_argument("--export", nargs=2, action="append", metavar=("KIND", "TARGET"), default=[],
                   help="after indexing: `dvid DIR` (protobuf batches, mappings, load.sh) or `block-stats FILE.h5`")
    p.add_argument("--shape", metavar="X,Y,Z", help="task block, a multiple of 64 (default: from --memory)")
    p.add_argument("--fill-missing", action="store_true", help="read missing chunks as zeros instead of failing")
    p.add_argument("--rebuild", action="store_true",
                   help="count the segmentation again even where an index with another mapping exists")
    p.add_argument("--allow-unknown-supervoxels", action="store_true",
                   help="accept a mapping that names supervoxels the segmentation does not hold")
    p.add_argument("--supervoxel", action="store_true", help="query: BODY is a supervoxel; print its body")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.target == "query":
        return query(args)
    if args.rest:
        raise PumiceError(f"label-index takes one segmentation, not {len(args.rest) + 1} arguments "
                          f"(`pumice label-index query SEG BODY` queries)")
    exports = {}
    for kind, target in args.export:
        if kind not in EXPORTS:
            raise PumiceError(f"--export {kind}: choose one of {', '.join(EXPORTS)}")
        exports[kind] = target
    plan, notes = label_index.plan(args.target, mapping=args.mapping, db=args.db, fill_missing=args.fill_missing,
                                   shape=vec_arg(args.shape, "--shape", positive=True), rebuild=args.rebuild,
                                   **memory_arg(args))
    report = execute(plan, notes, args)
    if report is None:
        return 0
    record = label_index.open_index(args.target, args.db).meta("index")
    if record.get("unknown_supervoxels") and not args.allow_unknown_supervoxels:
        raise PumiceError(label_index.unknown_note(record)[0] + ": check that the mapping belongs to this "
                          "segmentation, or pass --allow-unknown-supervoxels")
    if exports:
        plan, notes = label_index.plan_export(args.target, dvid_dir=exports.get("dvid"),
                                              block_stats=exports.get("block-stats"), db=args.db)
        execute(plan, notes, args)
    return 0


def query(args: argparse.Namespace) -> int:
    if len(args.rest) != 2:
        raise PumiceError("usage: pumice label-index query SEG BODY")
    path, text = args.rest
    try:
        wanted = int(text)
    except ValueError:
        raise PumiceError(f"BODY must be a whole number, got {text!r}") from None
    if wanted <= 0 or wanted >= 2**64:
        raise PumiceError(f"BODY must be between 1 and 2^64 - 1, got {wanted}")
    if args.supervoxel:
        body = int(label_index.bodies_of(path, [wanted], args.db)[0])
        if not body:
            raise PumiceError(f"supervoxel {wanted} is not in the label index")
        print(json.dumps({"supervoxel": wanted, "body": body}) if args.json_summary else f"supervoxel {wanted}: body {body}")
        return 0
    found = label_index.body_index(path, wanted, args.db)
    if args.json_summary:
        print(json.dumps(found))
        return 0
    print(f"body {found['body']}: {found['voxels']:,} voxels, {len(found['supervoxels']):,} supervoxel(s), "
          f"{len(found['blocks']):,} block(s) of 64^3")
    for corner, counts in list(found["blocks"].items())[:20]:
        print(f"  block {corner}: " + ", ".join(f"{sv}: {n:,}" for sv, n in counts.items()))
    if len(found["blocks"]) > 20:
        note(f"{len(found['blocks']) - 20:,} more block(s): --json prints them all")
    return 0
