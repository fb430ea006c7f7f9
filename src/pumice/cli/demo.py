"""pumice demo [DIR]: the main job on a built-in sample, start to finish."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


from ..errors import PumiceError
from .common import positive_int

SAMPLE_SHAPE_ZYX = (64, 256, 256)
RESOLUTION = "8,8,8"  # FIB-SEM-like isotropic voxels
DRIFT = 25.0  # grey levels of smooth per-section brightness drift, for the contrast step to remove


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build an EM-like sample and run every Pumice operation on it",
                       description="Deterministically build an EM-like image volume and its segmentation in DIR "
                       "(default ./pumice-demo), ingest both as a user would, and print what came out.")
    p.add_argument("dir", nargs="?", default="pumice-demo")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N", help="parallel worker processes (default: all cores)")
    p.set_defaults(func=run)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def write_sources(root: Path) -> tuple[Path, Path]:
    """The sample as a user would bring it: a folder of PNG sections and an HDF5 file of labels."""
    import h5py
    from PIL import Image

    from ..sample import make_em_sample

    image, labels = make_em_sample(SAMPLE_SHAPE_ZYX, seed=0, drift=DRIFT)
    sections = root / "sources" / "em_sections"
    sections.mkdir(parents=True, exist_ok=True)
    for old in sections.glob("*.png"):
        old.unlink()
    for z, section in enumerate(image):
        Image.fromarray(section).save(sections / f"section_{z}.png")
    misaligned = root / "sources" / "em_sections_misaligned"
    misaligned.mkdir(parents=True, exist_ok=True)
    for old in misaligned.glob("*.png"):
        old.unlink()
    for z, section in enumerate(misalign(image)):
        Image.fromarray(section).save(misaligned / f"section_{z}.png")
    labels_file = root / "sources" / "labels.h5"
    supervoxels, pairs = cut_into_supervoxels(labels)
    with h5py.File(labels_file, "w") as f:
        f.create_dataset("labels", data=labels, chunks=(16, 64, 64), compression="gzip")
        f.create_dataset("supervoxels", data=supervoxels, chunks=(16, 64, 64), compression="gzip")
    lines = "".join(f"{sv},{cell}\n" for sv, cell in pairs.tolist())
    (root / "sources" / "supervoxels-to-cells.csv").write_text("supervoxel,cell\n" + lines)
    return sections, labels_file


def misalign(image):
    """Each section moved by its own rigid transform (up to 10 px and 1.5 degrees, seeded), as a
    microscope leaves them: for the align step to put back."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(7)
    height, width = image.shape[1:]
    out = []
    for section in image:
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-1.5, 1.5), 1.0)
        matrix[:, 2] += rng.uniform(-10, 10, 2)
        out.append(cv2.warpAffine(section, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0))
    return np.array(out)


def alignment_summary(aligned: Path) -> str:
    """What the align report says: adjacent sections' correlation before and after, flagged pairs."""
    import json

    import numpy as np

    report = json.loads((aligned / "align" / "report.json").read_text())
    before, after = (float(np.median(report["ncc"][k])) for k in ("before", "after"))
    return (f"adjacent sections' normalized cross-correlation, median: {before:.3f} before, {after:.3f} after; "
            f"{len(report['flagged_pairs'])} pair(s) flagged; the report's picture: {aligned / 'align' / 'report.png'}")


def cut_into_supervoxels(labels):
    """The cells cut by a grid of 32-voxel cubes into supervoxels (numbered 1..N), as an
    over-segmentation would leave them, and the supervoxel -> cell mapping that puts them back."""
    import fastremap
    import numpy as np

    z, y, x = np.meshgrid(*(np.arange(n) // 32 for n in labels.shape), indexing="ij")
    cube = (z * 64 + y) * 64 + x
    keyed = np.where(labels > 0, labels.astype(np.uint64) * np.uint64(1 << 20) + cube.astype(np.uint64), 0)
    supervoxels, remap = fastremap.renumber(keyed, preserve_zero=True)
    pairs = np.array(sorted((int(sv), int(key) >> 20) for key, sv in remap.items() if sv), np.uint64)
    return supervoxels.astype(np.uint32), pairs


def split_cells(mapping: Path) -> str:
    """How many cells ccl found in more than one piece, from its component -> cell table."""
    import numpy as np

    table = np.loadtxt(mapping, delimiter=",", skiprows=1, dtype=np.uint64, ndmin=2)
    cells, pieces = np.unique(table[:, 1], return_counts=True)
    return (f"{len(table):,} piece(s) of {len(cells):,} cell(s): {int((pieces > 1).sum()):,} cell(s) are in more than one "
            f"piece (the sample's cells are cut by the volume's faces and by each other)")


def cleave_example(supervoxels: Path, mapping: Path) -> str:
    """The commands to start the cleave server and split the largest cell with two of its supervoxels."""
    import json

    import numpy as np

    from ..ops import label_index

    table = np.loadtxt(mapping, delimiter=",", skiprows=1, dtype=np.uint64, ndmin=2)
    cells, counts = np.unique(table[:, 1], return_counts=True)
    cell = int(cells[np.argmax(counts)])
    svs = label_index.supervoxels_of(str(supervoxels), cell)
    request = {"body-id": cell, "seeds": {"1": [int(svs[0])], "2": [int(svs[-1])]}, "user": "demo"}
    return (f"cleave a cell: start the server\n  pumice serve cleave --edges {supervoxels}/edges/merge-table.csv "
            f"--mapping {mapping} --port 5555\nthen, from another terminal:\n  curl -s -X POST -H 'Content-Type: "
            f"application/json' -d '{json.dumps(request)}' http://127.0.0.1:5555/compute-cleave")


def run(args: argparse.Namespace) -> int:
    from .main import main

    root = Path(args.dir).absolute()
    if root.exists() and not root.is_dir():
        raise PumiceError(f"{root} is a file; give the demo a folder")
    started = time.perf_counter()
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    _step(f"building the sample in {root}/sources ({'x'.join(map(str, SAMPLE_SHAPE_ZYX[::-1]))} voxels, EM-like cells)")
    sections, labels_file = write_sources(root)
    print(f"{len(list(sections.glob('*.png')))} PNG sections in {sections}; labels in {labels_file}:/labels")

    em, seg = root / "em", root / "segmentation"
    normalized, clahe = root / "em-normalized", root / "em-clahe"
    pieces, pieces_csv = root / "segmentation-pieces", root / "pieces-to-cells.csv"
    supervoxels, sv_mapping = root / "supervoxels", root / "sources" / "supervoxels-to-cells.csv"
    fragments, bodies = root / "membrane-supervoxels", root / "membrane-cells"
    steps = [
        ("ingest the image stack", ["ingest", str(sections), str(em), "--resolution", RESOLUTION, "--chunk-size", "64,64,64",
                                    "--restart", *workers]),
        ("ingest the segmentation", ["ingest", f"{labels_file}:/labels", str(seg), "--resolution", RESOLUTION,
                                     "--restart", *workers]),
        ("downsample the image (average)", ["downsample", str(em), "--restart", *workers]),
        ("look at each section's grey levels (the sample drifts in brightness)",
         ["contrast", "levels", str(em), "--coverage", "0.25", "--plot", str(root / "em-levels.png"), "--restart", *workers]),
        ("normalize each section's contrast from its levels", ["contrast", "normalize", str(em), str(normalized),
                                                              "--num-mips", "2", "--restart", *workers]),
        ("local contrast: CLAHE on the normalized image", ["contrast", "clahe", str(normalized), str(clahe), "--num-mips", "2",
                                                           "--restart", *workers]),
        ("downsample the segmentation (mode)", ["downsample", str(seg), "--restart", *workers]),
        ("mesh the segmentation (multi-resolution, sharded)", ["mesh", str(seg), "--sharded", "--restart", *workers]),
        ("skeletonize the segmentation", ["skeleton", str(seg), "--min-cable", "200", "--restart", *workers]),
        ("count each cell: voxels, bounding box, centroid (a Parquet table; segment properties in the viewer)",
         ["stats", str(seg), "--top", "5", "--restart", *workers]),
        ("split cells into their connected pieces", ["ccl", str(seg), str(pieces), "--mapping-out", str(pieces_csv),
                                                     "--restart", *workers]),
        ("proofreading: ingest the supervoxels (the cells cut into 32-voxel cubes)",
         ["ingest", f"{labels_file}:/supervoxels", str(supervoxels), "--resolution", RESOLUTION, "--restart", *workers]),
        ("proofreading: label indexes of the cells from the supervoxels and their mapping, exported for DVID",
         ["label-index", str(supervoxels), "--mapping", str(sv_mapping), "--export", "dvid", str(root / "dvid"),
          "--export", "block-stats", str(root / "block-stats.h5"), "--restart", *workers]),
        ("proofreading: one mesh per cell from its supervoxels", ["mesh", str(supervoxels), "--mapping", str(sv_mapping),
                                                                  "--restart", *workers]),
        ("proofreading: the supervoxels' edges, scored by the image (dark membranes: --invert)",
         ["edges", str(supervoxels), "--boundary", str(em), "--invert", "--restart", *workers]),
        ("supervoxels from the image's dark membranes: seeded watershed (--invert: membranes are dark)",
         ["watershed", str(em), str(fragments), "--invert", "--restart", *workers]),
        ("bodies: agglomerate the supervoxels by the membrane between them, and write the cells they make",
         ["agglomerate", str(fragments), "--boundary", str(em), "--invert", "--out", str(root / "agglomeration"),
          "--apply", str(bodies), "--restart", *workers]),
        ("how close those cells are to the segmentation: variation of information and adapted Rand error",
         ["evaluate", str(bodies), "--truth", str(seg), "--keep-truth-zero", "--restart", *workers]),
        ("align a deliberately misaligned copy of the sections (each moved and turned a little)",
         ["align", str(root / "sources" / "em_sections_misaligned"), str(root / "em-aligned"), "--resolution", RESOLUTION,
          "--chunk-size", "64,64,64", "--restart", *workers]),
        ("the image layer", ["info", str(em)]),
        ("the segmentation layer", ["info", str(seg)]),
    ]
    for title, argv in steps:
        _step(f"{title}: pumice {' '.join(argv)}")
        code = main(argv)
        if code != 0:
            return code
        if argv[0] == "ccl":
            print(split_cells(pieces_csv))
        if argv[0] == "edges":
            print(cleave_example(supervoxels, sv_mapping))
        if argv[0] == "align":
            print(alignment_summary(root / "em-aligned"))
    _step(f"demo finished in {time.perf_counter() - started:.1f} s")
    print(f"Look at it:  pumice view {em} {normalized} {clahe} {root / 'em-aligned'} {seg} {pieces} {supervoxels} {bodies}   (select a cell to see its mesh and skeleton "
          f"in the 3D panel; its Seg. tab lists the cells, sorted by size with the query >voxels; the grey levels before "
          f"normalizing are drawn in {root / 'em-levels.png'})")
    return 0
