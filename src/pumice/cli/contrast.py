"""pumice contrast levels|normalize|clahe"""

from __future__ import annotations

import argparse

from ..errors import PumiceError
from ..ops import clahe, levels, normalize
from ..storage.info import ENCODINGS
from .common import add_actions, add_output_options, add_run_options, add_source_options, execute, memory_arg, note, output_args, \
    source_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("contrast", help="per-section luminance levels, contrast normalization, CLAHE",
                           description="Look at a stack's grey levels (levels), then stretch each section's contrast "
                           "(normalize) or equalize it locally (clahe). levels adds levels/ beside the layer; normalize and clahe write "
                           "a new layer and leave the source untouched.")
    actions = add_actions(group)

    p = actions.add_parser("levels", help="histogram of a sample of every section, stored beside the layer",
                           description="Sample --coverage of every z-section of the image layer PATH (whole chunk columns, "
                           "the same columns on every rerun) and store each section's histogram at PATH/levels/<mip>/<z> "
                           "(Igneous's layout). --plot draws them as a heat map with the clip points normalize would use.")
    p.add_argument("path")
    p.add_argument("--coverage", type=float, default=0.01, metavar="F",
                   help="fraction of each section to sample, in (0, 1] (default 0.01; 1 counts every voxel)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the histograms (section vs grey level) with the clip points")
    p.add_argument("--clip-fraction", type=float, default=0.01, metavar="F",
                   help="--plot: the clip fraction whose points to draw (default 0.01)")
    p.add_argument("--count-zeros", action="store_true", help="--plot: count value 0 (by default it is padding, not tissue)")
    add_source_options(p, what="PATH", bounds=False)
    add_run_options(p)
    p.set_defaults(func=run_levels)

    p = actions.add_parser("normalize", help="stretch each section's contrast from its levels into a new layer",
                           description="Write SRC into a new image layer at DEST with each section's grey levels stretched: "
                           "the darkest and brightest --clip-fraction of its levels (from `pumice contrast levels`) are "
                           "clipped and the rest spread over the output's range, v -> clip(round((v - lo) * max / (hi - lo)), "
                           "0, max). --global uses one window for the whole volume; --minval/--maxval give it directly.")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--clip-fraction", type=float, default=0.01, metavar="F",
                   help="fraction of each section's voxels clipped at each end (default 0.01)")
    p.add_argument("--global", dest="whole_volume", action="store_true",
                   help="one window for the whole volume, from the sum of its sections' levels")
    p.add_argument("--minval", type=int, metavar="V", help="grey level that becomes 0 (with --maxval; no levels needed)")
    p.add_argument("--maxval", type=int, metavar="V", help="grey level that becomes the maximum (with --minval)")
    p.add_argument("--count-zeros", action="store_true",
                   help="count value 0 in the levels (by default black is alignment padding and is left out)")
    p.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8", help="output data type (default uint8)")
    _new_layer_options(p)
    p.set_defaults(func=run_normalize)

    p = actions.add_parser("clahe", help="contrast-limited adaptive histogram equalization (OpenCV) into a new layer",
                           description="Write SRC into a new image layer at DEST with OpenCV's CLAHE applied to each "
                           "section. Tiles of --tile-size voxels lie on a grid anchored at the volume's origin and every "
                           "task block reads a tile of context around itself, so the result has no seams at block borders.")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--clip-limit", type=float, default=2.0, help="contrast limit (OpenCV's clipLimit; default 2)")
    p.add_argument("--tile-size", type=int, default=128, metavar="N",
                   help="tile edge in voxels, a power of two (default 128)")
    _new_layer_options(p)
    p.set_defaults(func=run_clahe)


def _new_layer_options(p: argparse.ArgumentParser) -> None:
    add_source_options(p)
    add_output_options(p, encodings=ENCODINGS[:3])
    add_run_options(p)


def _new_layer_args(args: argparse.Namespace) -> dict:
    return {**source_args(args), **output_args(args), **memory_arg(args)}


def run_levels(args: argparse.Namespace) -> int:
    if args.plot and not args.plot.lower().endswith(".png"):
        raise PumiceError(f"--plot writes a PNG image: give a file name ending in .png, got {args.plot!r}")
    if not 0 <= args.clip_fraction < 0.5:
        raise PumiceError(f"--clip-fraction must lie in [0, 0.5), got {args.clip_fraction:g}")
    plan, notes = levels.plan(args.path, coverage=args.coverage, **source_args(args))
    execute(plan, notes, args)
    if args.plot and not args.dry_run:
        if args.queue:
            note(f"the levels are computed by the queue's workers: once they finish, run this command again to draw {args.plot}")
        else:
            print(levels.draw(args.path, args.mip, args.plot, clip_fraction=args.clip_fraction, count_zeros=args.count_zeros))
    return 0


def run_normalize(args: argparse.Namespace) -> int:
    plan, notes = normalize.plan(args.src, args.dest, clip_fraction=args.clip_fraction, whole_volume=args.whole_volume,
                                 minval=args.minval, maxval=args.maxval, count_zeros=args.count_zeros, dtype=args.dtype,
                                 **_new_layer_args(args))
    execute(plan, notes, args)
    return 0


def run_clahe(args: argparse.Namespace) -> int:
    plan, notes = clahe.plan(args.src, args.dest, clip_limit=args.clip_limit, tile_size=args.tile_size,
                             **_new_layer_args(args))
    execute(plan, notes, args)
    return 0
