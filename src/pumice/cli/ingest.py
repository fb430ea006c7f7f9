"""pumice ingest SOURCE DEST"""

from __future__ import annotations

import argparse

from ..ops import ingest
from ..storage.info import ENCODINGS
from ..storage.sources.base import AXES_CHOICES
from .common import add_run_options, execute, memory_arg, vec_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="turn an image stack, TIFF, HDF5, Zarr, N5, .npy or Precomputed layer into a Precomputed layer",
        description="Ingest SOURCE into a new Precomputed layer at DEST. SOURCE: a folder or glob of 2D images "
        "(PNG, TIFF, JPEG; natural order), a multipage TIFF, file.h5:/dataset, a Zarr or N5 array, a .npy file, "
        "or another Precomputed layer. DEST: a path, file://, memory://, gs:// or s3:// URL.",
    )
    p.add_argument("source")
    p.add_argument("dest")
    p.add_argument("--type", choices=("image", "segmentation"), dest="layer_type",
                   help="layer type (default: segmentation for 32/64-bit integers, image otherwise)")
    p.add_argument("--resolution", metavar="X,Y,Z", help="voxel size in nm (required unless the source carries it)")
    p.add_argument("--offset", metavar="X,Y,Z", help="voxel offset of the first voxel (default 0,0,0 or the source's)")
    p.add_argument("--chunk-size", metavar="X,Y,Z", help="chunk shape (default: 128,128,64 images, 64,64,64 labels; "
                   "flatter for anisotropic data)")
    p.add_argument("--encoding", choices=ENCODINGS, help="chunk encoding (default: compressed_segmentation for "
                   "uint32/uint64 labels, raw otherwise)")
    p.add_argument("--sharded", action="store_true", help="write Neuroglancer's sharded format (few large files)")
    p.add_argument("--dataset", help="dataset inside an HDF5 file or Zarr/N5 group (or write file.h5:/dataset)")
    p.add_argument("--axes", choices=AXES_CHOICES, help="axis order of array sources, slowest first "
                   "(default zyx; xyz for N5, whose attributes list x first)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, notes = ingest.plan(
        args.source,
        args.dest,
        dataset=args.dataset,
        axes=args.axes,
        layer_type=args.layer_type,
        resolution=vec_arg(args.resolution, "--resolution", kind=float, positive=True),
        offset=vec_arg(args.offset, "--offset"),
        chunk_size=vec_arg(args.chunk_size, "--chunk-size", positive=True),
        encoding=args.encoding,
        sharded=args.sharded,
        **memory_arg(args),
    )
    execute(plan, notes, args)
    return 0
