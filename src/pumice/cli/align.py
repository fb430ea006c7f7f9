"""pumice align SOURCE DEST"""

from __future__ import annotations

import argparse

from ..errors import PumiceError
from ..ops import align
from ..storage import urls
from .common import add_run_options, execute, memory_arg, note, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="align a stack of sections (SIFT, one global solve) into an image layer, with a report",
                       description="Align the sections of SOURCE (anything `pumice ingest` reads) and write the aligned "
                       "volume to DEST. Each section is matched with its next --depth sections (SIFT, ratio test, "
                       "RANSAC; phase correlation as a check), one least-squares solve over all pairs gives each section "
                       "a transform (DEST/align/transforms.json), bad sections are reported, and every section is warped "
                       "into the common box. DEST/align/report.json and report.png say how well it went.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("--depth", type=int, default=2, help="match each section with its next N sections (default 2)")
    p.add_argument("--model", default="rigid", help="translation, rigid (default) or affine (regularised toward rigid)")
    p.add_argument("--match-scale", type=float, metavar="F",
                   help=f"scale sections by F for matching (default: longer side at most {align.WORKING_SIDE} px)")
    p.add_argument("--bad-sections", default="fail", help="blank, damaged, duplicated or jumping sections: fail "
                   "(default, listing them), skip (left blank) or bridge (placed from their neighbours)")
    p.add_argument("--pad", action="store_true", help="sections of different sizes (a folder of images): centre each "
                   "in the largest")
    p.add_argument("--report-only", action="store_true", help="recompute DEST/align/report.json and report.png from the "
                   "sections and the transforms (DEST's, or --transforms FILE) without matching again")
    p.add_argument("--solve-only", action="store_true", help="match and solve (transforms and report), do not render")
    p.add_argument("--transforms", metavar="FILE", help="render with these transforms (a transforms.json) instead of "
                   "matching again")
    p.add_argument("--resolution", metavar="X,Y,Z", help="voxel size in nm, if SOURCE does not say")
    p.add_argument("--chunk-size", metavar="X,Y,Z", help="chunks of the aligned layer")
    p.add_argument("--encoding", choices=("raw", "jpeg", "png"), help="chunk encoding (default raw)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    transforms = args.transforms
    align.check_options(args.depth, args.model, args.bad_sections, args.match_scale)
    if args.report_only:
        plan, notes = align.plan_report(args.source, args.dest, transforms=transforms, match_scale=args.match_scale,
                                        pad=args.pad, **memory_arg(args))
        execute(plan, notes, args)
        return 0
    resolution = vec_arg(args.resolution, "--resolution", kind=float, positive=True)
    if resolution is None and align.open_stack(args.source, args.pad).resolution is None:
        raise PumiceError(f"{args.source} does not say its resolution: give --resolution X,Y,Z (nm)")
    if transforms is None:
        plan, notes = align.plan(args.source, args.dest, depth=args.depth, model=args.model,
                                 match_scale=args.match_scale, bad_sections=args.bad_sections, pad=args.pad,
                                 **memory_arg(args))
        report = execute(plan, notes, args)
        if report is None or args.solve_only:  # (--dry-run, --queue) the render is planned from the transforms
            note(f"then render: pumice align {args.source} {args.dest} --transforms "
                 f"{urls.display(urls.join(urls.normalize(args.dest), 'align/transforms.json'))}")
            return 0
        transforms = urls.join(urls.normalize(args.dest), "align/transforms.json")
    plan, notes = align.plan_render(args.source, args.dest, transforms=transforms,
                                    resolution=resolution,
                                    chunk_size=vec_arg(args.chunk_size, "--chunk-size", positive=True),
                                    encoding=args.encoding, pad=args.pad, **memory_arg(args))
    execute(plan, notes, args)
    return 0
