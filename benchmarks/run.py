"""Pumice benchmarks: speed and memory beside the in-memory library bound.

    make bench                      # all benchmarks
    python benchmarks/run.py ingest # one

Each benchmark prints a table and writes bench-output/<name>.json. Timings are wall clock on this
machine; peak RSS is the largest single process (the CLI or one of its workers).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-output"


def _pumice(*args: str) -> tuple[float, int, dict]:
    """Run the CLI in a child process: wall seconds, peak RSS of its largest process, and the run's
    summary (``--json``).

    The peak is the one the CLI reports (each process's own VmHWM): the child's ru_maxrss would
    inherit this benchmark process's high-water mark.
    """
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pumice.cli.main", *args, "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed: pumice {' '.join(args)}\n{proc.stderr}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return seconds, int(summary.get("peak_rss_bytes") or 0), summary


REPEATS = 3


def _read_stack(stack: Path, shape: tuple[int, int, int]) -> float:
    import tifffile

    start = time.perf_counter()
    volume = np.empty(shape, dtype=np.uint8)
    for z, f in enumerate(sorted(stack.glob("*.tif"))):
        volume[z] = tifffile.imread(f)
    return time.perf_counter() - start


def bench_ingest(work: Path) -> dict:
    """Ingest a 1024 x 1024 x 256 uint8 stack of TIFF sections; the bound is reading the stack."""
    import tifffile

    shape = (256, 1024, 1024)  # Z, Y, X
    stack = work / "tiff_stack"
    if not stack.exists() or len(list(stack.glob("*.tif"))) != shape[0]:
        shutil.rmtree(stack, ignore_errors=True)
        stack.mkdir(parents=True)
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (shape[1], shape[2]), dtype=np.uint8)
        for z in range(shape[0]):
            tifffile.imwrite(stack / f"section_{z}.tif", np.roll(base, z * 7, axis=1))
    voxels = int(np.prod(shape))

    # The bound: decode every section into memory in one process, as fast as tifffile can.
    read_seconds = min(_read_stack(stack, shape) for _ in range(REPEATS))

    rows = []
    for workers in (1, 2):
        best = None
        for _ in range(REPEATS):
            dest = work / f"ingested_{workers}"
            shutil.rmtree(dest, ignore_errors=True)
            seconds, rss, out = _pumice("ingest", str(stack), str(dest), "--resolution", "4,4,40", "--workers", str(workers),
                                        "--no-progress")
            in_run = voxels / 1e6 / out["seconds"]
            if best is None or seconds < best["seconds"]:
                best = {"workers": workers, "seconds": seconds, "mvx_per_s": voxels / 1e6 / seconds,
                        "in_run_mvx_per_s": in_run, "peak_rss_mib": rss / 2**20}
        rows.append(best)
    return {
        "volume": "1024 x 1024 x 256 uint8, 256 TIFF sections (256 MiB)",
        "bound_read_seconds": read_seconds,
        "bound_mvx_per_s": voxels / 1e6 / read_seconds,
        "runs": rows,
        "note": f"best of {REPEATS}; wall time includes process start-up and the worker pool's spawn, "
                "in-run throughput is the CLI's own figure (planning to summary)",
    }


def show_ingest(r: dict) -> None:
    print(f"ingest: {r['volume']}")
    print(f"  bound (tifffile reads the stack, 1 process): {r['bound_read_seconds']:.2f} s = {r['bound_mvx_per_s']:.0f} MVx/s")
    for row in r["runs"]:
        print(f"  pumice ingest --workers {row['workers']}: {row['seconds']:.2f} s = {row['mvx_per_s']:.0f} MVx/s wall, "
              f"{row['in_run_mvx_per_s']:.0f} MVx/s in-run, peak RSS per process {row['peak_rss_mib']:.0f} MiB")


# -- downsample and transfer: beside the in-memory bound, and Igneous's figures on this machine -------

# Igneous (igneous-pipeline 4.37, LocalTaskQueue(parallel=2), compress="gzip") on these same layers:
# "seconds" is the issue's reference; "measured" were taken here on 2026-11-21 (in-run seconds, after
# imports; the largest process's VmHWM sampled across the process tree; output MiB).
IGNEOUS = {
    "downsample_image": {"seconds": 1.1, "measured_seconds": 0.93, "peak_mib": 167, "output_mib": 54.4},
    "downsample_segmentation": {"seconds": 2.5, "measured_seconds": 3.51, "peak_mib": 1277, "output_mib": 1.3},
    "transfer_image": {"seconds": 2.9, "measured_seconds": 3.07, "peak_mib": 296, "output_mib": 189.4},
}


def _em_tiles(shape_zyx: tuple[int, int, int], labels: bool) -> np.ndarray:
    """A large EM-like volume tiled from the built-in sample (realistic compressibility)."""
    from pumice.sample import make_em_sample

    image, seg = make_em_sample((64, 256, 256), seed=1)
    tile = seg.astype(np.uint64) if labels else image
    reps = [-(-n // t) for n, t in zip(shape_zyx, tile.shape)]
    out = np.tile(tile, reps)[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
    if labels:  # every tile its own ids
        z, y, x = np.meshgrid(*[np.arange(n) // t for n, t in zip(shape_zyx, tile.shape)], indexing="ij")
        out = out + ((z * reps[1] + y) * reps[2] + x).astype(np.uint64) * np.uint64(10**6)
    return np.ascontiguousarray(out)


def _source_layer(work: Path, name: str, shape_zyx, labels: bool, chunk: str, resolution: str,
                  offset: str = "0,0,0") -> tuple[Path, int]:
    layer = work / name
    if not (layer / "info").exists():
        np.save(work / f"{name}.npy", _em_tiles(shape_zyx, labels))
        _pumice("ingest", str(work / f"{name}.npy"), str(layer), "--resolution", resolution, "--chunk-size", chunk,
                "--offset", offset, "--no-progress")
        (work / f"{name}.npy").unlink()
    return layer, int(np.prod(shape_zyx))


def _layer_bytes(path: Path, keys: list[str]) -> int:
    return sum(f.stat().st_size for k in keys for f in (path / k).rglob("*") if f.is_file())


def _bound(source: Path, factor: tuple, mips: int, chunk: list[int] | None, out: Path) -> float:
    """One process, everything in memory: TensorStore reads the source whole, tinybrain makes the
    mips (or nothing, for a transfer), TensorStore writes them."""
    import json

    import tensorstore as ts
    import tinybrain

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    src = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{source}/"}).result()
    data = src.read(order="F").result()
    info = json.loads((source / "info").read_text())
    scale = info["scales"][0]
    offset = np.array(scale["voxel_offset"])
    if mips and offset.any():  # the global grid: pad to the top mip's grid first
        top = np.array(factor) ** mips
        lo, hi = offset // top * top, -(-(offset + data.shape[:3]) // top) * top
        data = np.pad(data, [(a, b) for a, b in zip(offset - lo, hi - offset - data.shape[:3])] + [(0, 0)])
    if mips:
        kind = tinybrain.downsample_segmentation if info["type"] == "segmentation" else tinybrain.downsample_with_averaging
        levels = kind(data, factor, num_mips=mips)
    else:
        levels = [data]
    writes = []
    for i, level in enumerate(levels, start=1 if mips else 0):
        res = [r * f**i for r, f in zip(scale["resolution"], factor)] if mips else scale["resolution"]
        spec = {"driver": "neuroglancer_precomputed", "kvstore": f"file://{out}/", "create": True,
                "multiscale_metadata": {"type": info["type"], "data_type": info["data_type"], "num_channels": 1},
                "scale_metadata": {"resolution": res, "size": list(level.shape[:3]), "voxel_offset": [0, 0, 0],
                                   "chunk_size": chunk or scale["chunk_sizes"][0], "encoding": scale["encoding"]}}
        store = ts.open(spec).result()
        writes.append(store.write(level))
    for w in writes:
        w.result()
    return time.perf_counter() - start


def _pyramid_runs(source: Path, voxels: int, work: Path, cli_args: list[str], keys: list[str]) -> list[dict]:
    rows = []
    for sharded in (False, True):
        best = None
        for _ in range(REPEATS):
            target = work / "run"
            shutil.rmtree(target, ignore_errors=True)
            if cli_args[0] == "downsample":
                shutil.copytree(source, target)
                args = ["downsample", str(target), *cli_args[1:]]
            else:
                args = ["transfer", str(source), str(target), *cli_args[1:]]
            seconds, rss, out = _pumice(*args, "--workers", "2", "--no-progress", *(["--sharded"] if sharded else []))
            in_run = out["seconds"]
            if best is None or seconds < best["seconds"]:
                best = {"sharded": sharded, "seconds": seconds, "in_run_seconds": in_run, "mvx_per_s": voxels / 1e6 / seconds,
                        "peak_rss_mib": rss / 2**20, "output_bytes": _layer_bytes(target, keys)}
        rows.append(best)
    return rows


def _bench_pyramid(work: Path, name: str, shape_zyx, labels: bool, chunk: str, resolution: str, factor: tuple,
                   keys: list[str], what: str, igneous: str) -> dict:
    source, voxels = _source_layer(work, name, shape_zyx, labels, chunk, resolution)
    bound = min(_bound(source, factor, 3, None, work / "bound") for _ in range(REPEATS))
    rows = _pyramid_runs(source, voxels, work, ["downsample", "--num-mips", "3", "--factor", ",".join(map(str, factor))], keys)
    return {"work": what, "voxels": voxels, "bound_seconds": bound, "igneous": IGNEOUS[igneous], "runs": rows}


def bench_downsample_image(work: Path) -> dict:
    return _bench_pyramid(work, "image_1024", (256, 1024, 1024), False, "128,128,32", "4,4,40", (2, 2, 1),
                          ["8_8_40", "16_16_40", "32_32_40"], "1024 x 1024 x 256 uint8 raw, chunk 128,128,32 -> 3 mips 2,2,1",
                          "downsample_image")


def bench_downsample_segmentation(work: Path) -> dict:
    return _bench_pyramid(work, "seg_512", (512, 512, 512), True, "64,64,64", "8,8,8", (2, 2, 2),
                          ["16_16_16", "32_32_32", "64_64_64"], "512^3 uint64 compressed_segmentation, chunk 64^3 -> 3 mips 2,2,2",
                          "downsample_segmentation")


def bench_transfer_image(work: Path) -> dict:
    source, voxels = _source_layer(work, "image_1024", (256, 1024, 1024), False, "128,128,32", "4,4,40")
    bound = min(_bound(source, (1, 1, 1), 0, [64, 64, 64], work / "bound") for _ in range(REPEATS))
    rows = _pyramid_runs(source, voxels, work, ["transfer", "--chunk-size", "64,64,64"], ["4_4_40"])
    return {"work": "the 1024 x 1024 x 256 uint8 image rechunked to 64^3", "voxels": voxels,
            "bound_seconds": bound, "igneous": IGNEOUS["transfer_image"], "runs": rows}


def bench_downsample_offset(work: Path) -> dict:
    """The price of the global grid: the same image at offset 0 and at 3,7,11 (every mip's chunk grid
    shifted against mip 0's, so each task reads a slab of its neighbour and recomputes its cut groups)."""
    rows = {}
    for name, offset in (("image_1024", "0,0,0"), ("image_1024_offset", "3,7,11")):
        source, voxels = _source_layer(work, name, (256, 1024, 1024), False, "128,128,32", "4,4,40", offset)
        bound = min(_bound(source, (2, 2, 1), 3, None, work / "bound") for _ in range(REPEATS))
        runs = _pyramid_runs(source, voxels, work, ["downsample", "--num-mips", "3", "--factor", "2,2,1"],
                             ["8_8_40", "16_16_40", "32_32_40"])
        rows[offset] = {"bound_seconds": bound, "runs": runs}
    return {"work": "1024 x 1024 x 256 uint8 raw, chunk 128,128,32 -> 3 mips 2,2,1, at offset 0 and at 3,7,11",
            "voxels": voxels, "offsets": rows}


def show_offset(r: dict) -> None:
    v = r["voxels"] / 1e6
    print(r["work"])
    base = {run["sharded"]: run for run in r["offsets"]["0,0,0"]["runs"]}
    for offset, row in r["offsets"].items():
        print(f"  offset {offset}: bound (TensorStore + tinybrain on the array padded to the grid) {row['bound_seconds']:.2f} s")
        for run in row["runs"]:
            print(f"    pumice, 2 workers, {'sharded gzip' if run['sharded'] else 'unsharded   '}: {run['seconds']:.2f} s wall "
                  f"({v / run['seconds']:.0f} MVx/s), {run['seconds'] / base[run['sharded']]['seconds']:.2f}x offset 0, "
                  f"peak RSS {run['peak_rss_mib']:.0f} MiB, output {run['output_bytes'] / 2**20:.1f} MiB")


def show_pyramid(r: dict) -> None:
    v = r["voxels"] / 1e6
    ig = r["igneous"]
    print(f"{r['work']}")
    print(f"  bound (TensorStore + tinybrain in memory, 1 process): {r['bound_seconds']:.2f} s = {v / r['bound_seconds']:.0f} MVx/s")
    print(f"  Igneous, 2 processes, gzip: {ig['seconds']:.2f} s reference ({ig['measured_seconds']:.2f} s measured here after "
          f"imports), peak RSS {ig['peak_mib']} MiB, output {ig['output_mib']} MiB")
    for row in r["runs"]:
        print(f"  pumice, 2 workers, {'sharded gzip' if row['sharded'] else 'unsharded   '}: {row['seconds']:.2f} s wall "
              f"({v / row['seconds']:.0f} MVx/s; {row['in_run_seconds']:.2f} s in-run = {v / row['in_run_seconds']:.0f} MVx/s), "
              f"{ig['seconds'] / row['seconds']:.2f}x Igneous, peak RSS {row['peak_rss_mib']:.0f} MiB "
              f"({row['peak_rss_mib'] / ig['peak_mib']:.2f}x), output {row['output_bytes'] / 2**20:.1f} MiB")


# -- meshes: the real pinky40 segmentation ------------------------------------------------------------

PINKY = ROOT.parent / "shared" / "data" / "pinky40_seg_512.npy.ckl.gz"


def _pinky_layer(work: Path) -> Path | None:
    layer = work / "pinky40"
    if (layer / "info").exists():
        return layer
    if not PINKY.exists():
        return None
    import gzip

    import crackle

    labels = crackle.decompress(gzip.decompress(PINKY.read_bytes()))  # x, y, z
    np.save(work / "pinky40.npy", labels)
    _pumice("ingest", str(work / "pinky40.npy"), str(layer), "--resolution", "32,32,40", "--axes", "xyz", "--no-progress")
    (work / "pinky40.npy").unlink()
    return layer


def _mesh_bound(layer: Path) -> dict:
    """One process, the volume in memory, no I/O and no merge: only zmesh's work (the same per-object
    meshing and simplification forge does) over the default forge blocks (volume faces left open)."""
    from pumice.geometry import Bbox
    from pumice.ops import mesh
    from pumice.storage.layer import Layer

    plan, _ = mesh.plan(str(layer))
    source = Layer.open(str(layer))
    labels = source.read(source.info.scale(0).bounds, 0)[..., 0]
    clock = {"marching_cubes_seconds": 0.0, "simplify_seconds": 0.0}
    triangles = 0
    start = time.perf_counter()
    for task in plan.stages[0].tasks():
        box = Bbox.from_list(task.bbox)
        block = np.array(labels[tuple(slice(lo, hi + 1) for lo, hi in zip(box.minpt, box.maxpt))], order="F")
        for _, _, levels in mesh._mesh_objects(block, (32, 32, 40), 100, 40.0, clock):
            triangles += len(levels[0].faces)
    return {"seconds": time.perf_counter() - start, "fragment_triangles": triangles, **clock}


def _igneous_mesh(igneous: Path, layer: Path, work: Path, sharded: bool) -> dict:
    """Igneous's forge and merge with default settings, 2 processes (``-p 2 execute``) over a queue
    directory, on a fresh copy of the layer: wall seconds (all four commands) and peak RSS."""
    copy = work / "pinky40_mesh_igneous"
    queue = work / "igneous_mesh_queue"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(layer, copy, ignore=shutil.ignore_patterns("mesh*", ".pumice", "skeletons*"))
    steps = []
    for command in (["mesh", "forge", f"file://{copy}", "--queue", str(queue), *(["--sharded"] if sharded else [])],
                    ["mesh", "merge-sharded" if sharded else "merge", f"file://{copy}", "--queue", str(queue)]):
        shutil.rmtree(queue, ignore_errors=True)
        steps.append(_watched_command([str(igneous), *command]))  # enqueue
        steps.append(_watched_command([str(igneous), "-p", "2", "execute", "--exit-on-empty", str(queue)]))
    return {"sharded": sharded, "seconds": sum(step[0] for step in steps), "forge_seconds": steps[0][0] + steps[1][0],
            "merge_seconds": steps[2][0] + steps[3][0], "peak_rss_mib": max(step[1] for step in steps) / 2**20, "layer": copy}


def _mesh_dir(path: Path) -> str:
    """The layer's own mesh directory (Igneous names it mesh_mip_0_err_40)."""
    return json.loads((path / "info").read_text()).get("mesh", "mesh")


def _mesh_of(path: Path, mesh_dir: str, label: int):
    from cloudvolume import CloudVolume

    got = CloudVolume(f"file://{path}", mesh_dir=mesh_dir, progress=False).mesh.get(label)
    return got[label] if isinstance(got, dict) else got


def _mesh_quality(layer: Path, work: Path, igneous_layer: Path | None) -> dict:
    """The 20 largest objects: two-sided deviation of the default meshes from the unsimplified
    surface (pumice mesh --no-simplify of the same objects), open edges after welding, enclosed
    volume against the voxels' (Igneous's meshes: open edges and volume)."""
    import fastremap

    sys.path.insert(0, str(ROOT / "tests"))
    from reference import enclosed_volume, mesh_deviation, unmatched_edges, weld_faces

    def open_edges(mesh) -> int:  # after welding vertices to 1e-3 nm
        return unmatched_edges(weld_faces(mesh.vertices, mesh.faces, decimals=3))

    labels = _pinky_array(layer)
    ids, counts = fastremap.unique(labels, return_counts=True)
    labels = None
    keep = ids != 0
    ids, counts = ids[keep], counts[keep]
    top = ids[np.argsort(-counts, kind="stable")[:20]].tolist()
    voxels = dict(zip(ids.tolist(), counts.tolist()))
    target = work / "pinky40_mesh"
    _pumice("mesh", str(target), "--no-simplify", "--ids", ",".join(map(str, top)), "--dir", "plain", "--workers", "2",
            "--no-progress")
    plains = {label: _mesh_of(target, "plain", label) for label in top}
    rows = []
    for label in top:
        plain, simple = plains[label], _mesh_of(target, "mesh", label)
        expected = voxels[label] * 32 * 32 * 40
        row = {"id": label, "triangles": len(simple.faces), "plain_triangles": len(plain.faces),
               "deviation_nm": mesh_deviation(simple.vertices, simple.faces, plain.vertices, plain.faces, vertices=False),
               "deviation_with_vertices_nm": mesh_deviation(simple.vertices, simple.faces, plain.vertices, plain.faces),
               "open_edges": open_edges(simple),
               "volume_error": enclosed_volume(simple.vertices, simple.faces) / expected - 1}
        if igneous_layer is not None:
            theirs = _mesh_of(igneous_layer, _mesh_dir(igneous_layer), label)
            row.update(igneous_triangles=len(theirs.faces), igneous_open_edges=open_edges(theirs),
                       igneous_deviation_nm=mesh_deviation(theirs.vertices, theirs.faces, plain.vertices, plain.faces,
                                                           vertices=False),
                       igneous_deviation_with_vertices_nm=mesh_deviation(theirs.vertices, theirs.faces, plain.vertices,
                                                                         plain.faces),
                       igneous_volume_error=enclosed_volume(theirs.vertices, theirs.faces) / expected - 1)
        rows.append(row)
    # Levels of detail (sharded multi-resolution, 3 levels): each level's deviation from the unsimplified surface.
    _pumice("mesh", str(target), "--sharded", "--ids", ",".join(map(str, top)), "--dir", "levels", "--workers", "2",
            "--no-progress")
    from cloudvolume import CloudVolume

    levels = CloudVolume(f"file://{target}", mesh_dir="levels", progress=False).mesh
    lods = []
    for lod in range(3):
        worst, triangles, cracked = 0.0, 0, 0
        for label in top:
            plain, got = plains[label], levels.get(label, lod=lod)
            got = got[label] if isinstance(got, dict) else got
            triangles += len(got.faces)
            worst = max(worst, mesh_deviation(got.vertices, got.faces, plain.vertices, plain.faces, vertices=False))
            cracked += open_edges(got) > 0
        lods.append({"lod": lod, "triangles": triangles, "deviation_nm": worst, "error_nm": 40 * 2**lod,
                     "objects_with_open_edges": cracked})
    return {"objects": rows, "levels": lods, "max_deviation_nm": max(r["deviation_nm"] for r in rows),
            "max_deviation_with_vertices_nm": max(r["deviation_with_vertices_nm"] for r in rows),
            "open_edges": sum(r["open_edges"] for r in rows),
            "worst_volume_error": max(abs(r["volume_error"]) for r in rows)}


def _legacy_meshes(path: Path) -> tuple[int, int]:
    """(objects, triangles) of a legacy mesh directory, Igneous's or ours: ``<id>:0`` is a manifest,
    ``<id>:0:<anything>`` a fragment (gzip-compressed by CloudFiles as name.gz)."""
    import gzip as gz
    import re

    objects = triangles = 0
    for f in (path / _mesh_dir(path)).iterdir():
        name = f.name.removesuffix(".gz")
        if re.fullmatch(r"\d+:0", name):
            objects += 1
        elif re.fullmatch(r"\d+:0:.+", name):
            blob = f.read_bytes()
            blob = gz.decompress(blob) if f.name.endswith(".gz") else blob
            n = int(np.frombuffer(blob[:4], "<u4")[0])
            triangles += (len(blob) - 4 - 12 * n) // 12
    return objects, triangles


def bench_mesh(work: Path) -> dict:
    """`pumice mesh` with default settings on pinky40 (512^3, 2,524 ids), both formats, 2 workers,
    beside Igneous's forge + merge with 2 processes in the same run; the 20 largest objects' quality."""
    layer = _pinky_layer(work)
    if layer is None:
        return {"skipped": f"{PINKY} not found"}
    voxels = 512**3
    bound = _mesh_bound(layer)
    igneous = _igneous()
    rows, theirs = [], []
    for sharded in (True, False):  # legacy last: the quality check reads both tools' legacy meshes
        target = work / "pinky40_mesh"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(layer, target, ignore=shutil.ignore_patterns("mesh*", ".pumice"))
        seconds, rss, out = _pumice("mesh", str(target), "--workers", "2", "--no-progress", *(["--sharded"] if sharded else []))
        forge, merge = out["stages"]["forge"], out["stages"]["merge"]
        spent = forge["totals"]
        task_time = {"total": spent.get("seconds", 0), "simplify": spent.get("simplify_seconds", 0),
                     "marching_cubes": spent.get("marching_cubes_seconds", 0), "levels": spent.get("levels_seconds", 0)}
        task_time["io"] = max(task_time["total"] - task_time["simplify"] - task_time["marching_cubes"] - task_time["levels"], 0)
        rows.append({"sharded": sharded, "seconds": seconds, "mvx_per_s": voxels / 1e6 / seconds, "peak_rss_mib": rss / 2**20,
                     "forge_seconds": forge["seconds"], "merge_seconds": merge["seconds"],
                     "objects": int(merge["totals"].get("objects", 0)), "triangles": int(merge["totals"].get("triangles", 0)),
                     "forge_task_seconds": {k: int(round(v)) for k, v in task_time.items()},
                     "output_bytes": sum(f.stat().st_size for f in (target / "mesh").rglob("*")
                                         if f.is_file() and ".pumice" not in f.parts)})
        if igneous is not None:
            run = _igneous_mesh(igneous, layer, work, sharded)
            if not sharded:
                run["objects"], run["triangles"] = _legacy_meshes(run["layer"])
            theirs.append(run)
    quality = _mesh_quality(layer, work, next((t["layer"] for t in theirs if not t["sharded"]), None))
    for t in theirs:
        t.pop("layer", None)
    return {"work": "pinky40 512^3 uint32 at 32,32,40 nm, default settings (max error 40, 128^3 forge blocks)",
            "voxels": voxels, "bound": bound, "igneous": theirs or None, "igneous_version": IGNEOUS_VERSION,
            "runs": sorted(rows, key=lambda row: row["sharded"]), "quality": quality}


def show_mesh(r: dict) -> None:
    if "skipped" in r:
        print(f"mesh: skipped ({r['skipped']})")
        return
    v, b = r["voxels"] / 1e6, r["bound"]
    print(f"mesh: {r['work']}")
    print(f"  bound (zmesh alone, volume in memory, 1 process): {b['seconds']:.0f} s = {v / b['seconds']:.2f} MVx/s "
          f"(simplification {b['simplify_seconds']:.0f} s, marching cubes {b['marching_cubes_seconds']:.0f} s), "
          f"{b['fragment_triangles']:,} fragment triangles")
    theirs = {t["sharded"]: t for t in (r.get("igneous") or [])}
    for row in r["runs"]:
        t = row["forge_task_seconds"]
        print(f"  pumice mesh{' --sharded' if row['sharded'] else '          '}, 2 workers: {row['seconds']:.1f} s wall "
              f"({v / row['seconds']:.2f} MVx/s; forge {row['forge_seconds']:.0f} s + merge {row['merge_seconds']:.0f} s), "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB, {row['objects']} objects, {row['triangles']:,} triangles, "
              f"output {row['output_bytes'] / 2**20:.1f} MiB")
        mc_io = t["marching_cubes"] + t["io"]
        print(f"      forge task time {t['total']} s = simplification {t['simplify']} s + marching cubes "
              f"{t['marching_cubes']} s + " + (f"coarser levels of detail {t['levels']} s + " if t.get("levels") else "")
              + f"reading, padding and writing {t['io']} s: "
              f"{t['total'] / max(mc_io, 1):.1f}x marching cubes plus I/O (goal: 3x)")
        ig = theirs.get(row["sharded"])
        if ig:
            extra = (f", {ig['objects']} objects, {ig['triangles']:,} triangles (pumice {row['triangles'] / ig['triangles']:.2f}x)"
                     if "triangles" in ig else "")
            print(f"      Igneous ({r['igneous_version']}) forge + {'merge-sharded' if ig['sharded'] else 'merge'}, -p 2: "
                  f"{ig['seconds']:.1f} s wall (forge {ig['forge_seconds']:.0f} s + merge {ig['merge_seconds']:.0f} s), peak RSS "
                  f"{ig['peak_rss_mib']:.0f} MiB{extra}; pumice is {ig['seconds'] / row['seconds']:.2f}x faster (goal: 4x)")
    if not theirs:
        print("  Igneous: not measured (could not install igneous-pipeline)")
    q = r["quality"]
    print(f"  20 largest objects, legacy: max two-sided deviation from the unsimplified surface {q['max_deviation_nm']:.1f} nm "
          f"over 4,000 samples each way ({q['max_deviation_with_vertices_nm']:.1f} nm counting every vertex too; bound: "
          f"--max-error 40), open edges after welding {q['open_edges']}, worst enclosed volume error "
          f"{100 * q['worst_volume_error']:.1f}% (bound 5%)")
    if q.get("levels"):
        print("      sharded levels of detail of the same objects (level k: zmesh within 40 * 2^k nm of level k - 1): "
              + "; ".join(f"level {x['lod']} {x['triangles']:,} triangles, deviation {x['deviation_nm']:.0f} nm"
                          + (f" (asked {x['error_nm']} nm), {x['objects_with_open_edges']} of 20 with open edges"
                             if "error_nm" in x else "")
                          for x in q["levels"]))
    if q["objects"] and "igneous_open_edges" in q["objects"][0]:
        objects = q["objects"]
        print(f"      Igneous's meshes of the same objects: deviation {max(o['igneous_deviation_nm'] for o in objects):.1f} nm "
              f"({max(o['igneous_deviation_with_vertices_nm'] for o in objects):.1f} nm with every vertex), "
              f"open edges {sum(o['igneous_open_edges'] for o in q['objects'])}, "
              f"worst enclosed volume error {100 * max(abs(o['igneous_volume_error']) for o in q['objects']):.1f}%, "
              f"{sum(o['igneous_triangles'] for o in q['objects']):,} triangles (pumice "
              f"{sum(o['triangles'] for o in q['objects']):,})")


def bench_skeleton(work: Path) -> dict:
    """`pumice skeleton` with default settings on pinky40, 2 workers (bar: forge+merge under 10 minutes;
    Igneous did not finish forge within 15 minutes in one process on this machine)."""
    layer = _pinky_layer(work)
    if layer is None:
        return {"skipped": f"{PINKY} not found"}
    rows = []
    for sharded in (False, True):
        target = work / "pinky40_skeleton"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(layer, target, ignore=shutil.ignore_patterns("mesh*", "skeletons*", ".pumice"))
        seconds, rss, out = _pumice("skeleton", str(target), "--workers", "2", "--no-progress", *(["--sharded"] if sharded else []))
        forge, merge = out["stages"]["forge"], out["stages"]["merge"]
        rows.append({"sharded": sharded, "seconds": seconds, "peak_rss_mib": rss / 2**20, "forge_seconds": forge["seconds"],
                     "merge_seconds": merge["seconds"], "skeletons": int(merge["totals"].get("objects", 0)),
                     "cable_um": merge["totals"].get("cable_nm", 0) / 1e3,
                     "forge_task_seconds": int(round(forge["totals"].get("seconds", 0))),
                     "kimimaro_seconds": int(round(forge["totals"].get("teasar_seconds", 0))),
                     "output_bytes": sum(f.stat().st_size for f in (target / "skeletons").rglob("*")
                                         if f.is_file() and ".pumice" not in f.parts)})
    return {"work": "pinky40 512^3 uint32 at 32,32,40 nm, default settings", "voxels": 512**3, "runs": rows}


def bench_remap(work: Path) -> dict:
    """`pumice remap` of pinky40 onto a tenth as many bodies, beside fastremap.remap on the whole
    array (compute only, and with TensorStore reading and writing the whole volume)."""
    import fastremap
    import tensorstore as ts

    layer = _pinky_layer(work)
    if layer is None:
        return {"skipped": f"{PINKY} not found"}
    source = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{layer}/"}).result()
    labels = source.read(order="F").result()[..., 0]
    svs = np.unique(labels)
    svs = svs[svs != 0]
    bodies = np.random.default_rng(0).integers(1, len(svs) // 10 + 1, len(svs))
    table = dict(zip(svs.tolist(), bodies.tolist()))
    mapping = work / "pinky40_bodies.csv"
    mapping.write_text("supervoxel,body\n" + "".join(f"{s},{b}\n" for s, b in table.items()))

    def compute() -> np.ndarray:
        return fastremap.remap(labels, table, preserve_missing_labels=True)

    def with_io() -> None:
        data = source.read(order="F").result()[..., 0]
        out = fastremap.remap(data, table, preserve_missing_labels=True)
        target = work / "remap_bound"
        shutil.rmtree(target, ignore_errors=True)
        scale = json.loads((layer / "info").read_text())["scales"][0]
        spec = {"driver": "neuroglancer_precomputed", "kvstore": f"file://{target}/", "create": True,
                "multiscale_metadata": {"type": "segmentation", "data_type": "uint32", "num_channels": 1},
                "scale_metadata": {"resolution": scale["resolution"], "size": scale["size"], "voxel_offset": [0, 0, 0],
                                   "chunk_size": scale["chunk_sizes"][0], "encoding": scale["encoding"]}}
        ts.open(spec).result().write(out[..., np.newaxis]).result()

    bound_compute, bound_io = _timed(compute), _timed(with_io)
    want = compute()
    labels = None  # the bound's arrays are not needed by the runs
    rows = []
    for sharded in (False, True):
        best = None
        for _ in range(REPEATS):
            target = work / "pinky40_bodies"
            shutil.rmtree(target, ignore_errors=True)
            seconds, rss, out = _pumice("remap", str(layer), str(target), "--mapping", str(mapping), "--workers", "2",
                                        "--no-progress", *(["--sharded"] if sharded else []))
            if best is None or seconds < best["seconds"]:
                best = {"sharded": sharded, "seconds": seconds, "in_run_seconds": out["seconds"], "peak_rss_mib": rss / 2**20,
                        "tasks": out["tasks"]}
        got = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{work / 'pinky40_bodies'}/"}).result()
        best["equal_to_bound"] = bool(np.array_equal(got.read().result()[..., 0], want))
        rows.append(best)
    return {"work": f"pinky40 512^3 uint32, {len(svs):,} supervoxels onto {len(set(table.values())):,} bodies (CSV mapping)",
            "voxels": 512**3, "bound_compute_seconds": bound_compute, "bound_io_seconds": bound_io, "runs": rows}


def show_remap(r: dict) -> None:
    if "skipped" in r:
        print(f"remap: skipped ({r['skipped']})")
        return
    v = r["voxels"] / 1e6
    print(f"remap: {r['work']}")
    print(f"  bound: fastremap.remap on the whole array {r['bound_compute_seconds']:.2f} s; with TensorStore reading and "
          f"writing the volume {r['bound_io_seconds']:.2f} s (1 process)")
    for row in r["runs"]:
        print(f"  pumice remap, 2 workers, {'sharded' if row['sharded'] else 'unsharded'}: {row['seconds']:.2f} s wall "
              f"({v / row['seconds']:.0f} MVx/s; {row['in_run_seconds']:.2f} s in-run, {row['tasks']} tasks), "
              f"{row['seconds'] / r['bound_io_seconds']:.2f}x the bound with I/O, peak RSS {row['peak_rss_mib']:.0f} MiB, "
              f"equal to the bound: {row['equal_to_bound']}")


def show_skeleton(r: dict) -> None:
    if "skipped" in r:
        print(f"skeleton: skipped ({r['skipped']})")
        return
    print(f"skeleton: {r['work']} (Igneous: forge unfinished after 15 minutes in 1 process)")
    for row in r["runs"]:
        print(f"  pumice skeleton{' --sharded' if row['sharded'] else '          '}, 2 workers: {row['seconds']:.1f} s wall "
              f"({r['voxels'] / 1e6 / row['seconds']:.2f} MVx/s; forge {row['forge_seconds']:.0f} s + merge {row['merge_seconds']:.0f} s), "
              f"peak RSS per worker {row['peak_rss_mib']:.0f} MiB, {row['skeletons']} skeletons, {row['cable_um']:,.0f} µm of cable, "
              f"output {row['output_bytes'] / 2**20:.1f} MiB; forge task time {row['forge_task_seconds']} s, "
              f"kimimaro {row['kimimaro_seconds']} s of it")


def _watched(*args: str, env: dict | None = None) -> tuple[float, int, str]:
    """Run the CLI in a child, sampling its resident memory (and its children's): wall s, peak RSS, stdout."""
    import os

    return _watched_command([sys.executable, "-m", "pumice.cli.main", *args], {**os.environ, **(env or {})})


QUEUE_TASKS = 1_000_000


def bench_queue(work: Path) -> dict:
    """1,000,000 tiny tasks through fq://: enqueue (memory must stay bounded) and lease+complete by 2
    `pumice worker` processes; task-queue's own one-task-per-message rates on this disk for reference.
    Then per-task overhead of a Dask LocalCluster beside the local runner, from two plan sizes."""
    import os

    from taskqueue.file_queue_api import FileQueueAPI

    tasks = int(os.environ.get("PUMICE_BENCH_QUEUE_TASKS", QUEUE_TASKS))
    root = work / "queue"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    url = f"fq://{root / 'q'}"
    enqueue_s, enqueue_peak, out = _watched("probe", str(root / "dest"), "--tasks", str(tasks), "--no-write", "--queue", url)
    messages = len(os.listdir(root / "q" / "queue"))

    start = time.perf_counter()
    workers = [subprocess.Popen([sys.executable, "-m", "pumice.cli.main", "worker", url, "--exit-when-empty"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        w.communicate()
        if w.returncode != 0:
            sys.exit("a benchmark worker failed")
    drain_s = time.perf_counter() - start

    # task-queue alone: one task per message, as Igneous enqueues (same disk, one process).
    reference = FileQueueAPI(str(root / "reference"))
    count = 20_000
    start = time.perf_counter()
    reference.insert({"task": "noop", "args": {"i": i}} for i in range(count))
    tq_insert = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(5_000):
        reference.delete(reference.lease(600, 1)[0])
        reference.tally()
    tq_lease = 5_000 / (time.perf_counter() - start)

    # Per-task overhead: the difference between a large and a small plan cancels start-up costs.
    def wall(runner: list[str], n: int) -> float:
        dest = root / f"overhead-{runner[0].strip('-')}-{n}"
        seconds, _, _ = _watched("probe", str(dest), "--tasks", str(n), "--no-progress", *runner)
        return seconds

    overhead = {}
    for name, runner in (("local", ["--workers", "2"]), ("dask", ["--cluster", "local:2"])):
        small, large = wall(runner, 200), wall(runner, 4200)
        overhead[name] = {"small_s": small, "large_s": large, "per_task_ms": (large - small) / 4000 * 1e3}
    return {"tasks": tasks, "messages": messages, "enqueue_s": enqueue_s, "enqueue_tasks_per_s": tasks / enqueue_s,
            "enqueue_peak_mib": enqueue_peak / 2**20, "drain_s": drain_s, "lease_complete_tasks_per_s": tasks / drain_s,
            "taskqueue_insert_per_s": tq_insert, "taskqueue_lease_delete_per_s": tq_lease, "overhead": overhead}


def show_queue(r: dict) -> None:
    print(f"\nqueue: {r['tasks']:,} tiny tasks on fq:// ({r['messages']:,} messages)")
    print(f"  enqueue           {r['enqueue_s']:8.1f} s  {r['enqueue_tasks_per_s']:>10,.0f} tasks/s   peak {r['enqueue_peak_mib']:.0f} MiB")
    print(f"  lease+complete    {r['drain_s']:8.1f} s  {r['lease_complete_tasks_per_s']:>10,.0f} tasks/s   (2 workers, ledger included)")
    print(f"  task-queue alone: insert {r['taskqueue_insert_per_s']:,.0f}/s, lease+delete {r['taskqueue_lease_delete_per_s']:,.0f}/s "
          f"(one task per message; its README claims ~3,000 inserts/s per core)")
    for name, o in r["overhead"].items():
        print(f"  {name:<6} runner: 200 tasks {o['small_s']:.1f} s, 4,200 tasks {o['large_s']:.1f} s -> {o['per_task_ms']:.2f} ms per task")


# -- image processing: contrast levels, normalize, CLAHE and quantize on 1024 x 1024 x 256 ---------------

def _drifted_layer(work: Path) -> Path:
    """The EM-like 1024 x 1024 x 256 volume with a smooth per-section brightness drift of +-25 levels."""
    layer = work / "image_1024_drift"
    if not (layer / "info").exists():
        volume = _em_tiles((256, 1024, 1024), False).astype(np.int16)
        volume += np.round(25 * np.sin(np.arange(256) * 2 * np.pi / 170)).astype(np.int16)[:, None, None]
        np.save(work / "drift.npy", np.clip(volume, 0, 255).astype(np.uint8))
        del volume
        _pumice("ingest", str(work / "drift.npy"), str(layer), "--resolution", "4,4,40", "--chunk-size", "128,128,32",
                "--no-progress")
        (work / "drift.npy").unlink()
    return layer


def _float_layer(work: Path) -> Path:
    """A one-channel float32 'affinity' volume of the same shape: values in -0.1..1.1, a few NaN."""
    layer = work / "affinity_1024"
    if not (layer / "info").exists():
        data = np.random.default_rng(0).random((256, 1024, 1024), dtype=np.float32) * np.float32(1.2) - np.float32(0.1)
        data[::37, ::101, ::7] = np.nan
        np.save(work / "aff.npy", data)
        del data
        _pumice("ingest", str(work / "aff.npy"), str(layer), "--resolution", "4,4,40", "--chunk-size", "128,128,32",
                "--no-progress")
        (work / "aff.npy").unlink()
    return layer


def _section_means(layer: Path) -> np.ndarray:
    import tensorstore as ts

    data = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{layer}/"}).result()[..., 0]
    return np.asarray(data.read().result(), dtype=np.float64).mean(axis=(0, 1))


def _best_run(args: list[str], out: Path | None, repeats: int = 2) -> dict:
    best = None
    for _ in range(repeats):
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        seconds, rss, stdout = _pumice(*args, "--workers", "2", "--no-progress", "--restart")
        in_run = stdout["seconds"]
        if best is None or seconds < best["seconds"]:
            best = {"seconds": seconds, "in_run_seconds": in_run, "peak_rss_mib": rss / 2**20}
    return best


def _timed(fn, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_contrast(work: Path) -> dict:
    """levels, normalize, CLAHE and quantize with 2 workers, beside NumPy/OpenCV on the whole array in one
    process (compute only, and with TensorStore reading and writing the whole array)."""
    import cv2
    import tensorstore as ts

    from pumice.ops.levels import clip_window
    from pumice.ops.normalize import lookup, stretch_table

    layer = _drifted_layer(work)
    voxels = 1024 * 1024 * 256
    source = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{layer}/"}).result()

    def read_all() -> np.ndarray:
        return np.asarray(source.read(order="F").result())[..., 0]

    def write_all(array: np.ndarray, dtype: str = "uint8") -> None:
        out = work / "bound_out"
        shutil.rmtree(out, ignore_errors=True)
        ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{out}/", "create": True,
                 "multiscale_metadata": {"type": "image", "data_type": dtype, "num_channels": 1},
                 "scale_metadata": {"resolution": [4, 4, 40], "size": list(array.shape[:3]), "voxel_offset": [0, 0, 0],
                                    "chunk_size": [128, 128, 32], "encoding": "raw"}}).result()[..., 0].write(array).result()

    data = read_all()
    hist = lambda a: [np.bincount(a[:, :, z].ravel(order="K"), minlength=256) for z in range(a.shape[2])]  # noqa: E731
    levels = hist(data)
    tables = [stretch_table(clip_window(h, 0.01), np.dtype(np.uint8), np.dtype(np.uint8)) for h in levels]

    def normalize(a: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        for z in range(a.shape[2]):
            out[:, :, z] = lookup(tables[z], a[:, :, z])
        return out

    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))

    def equalize(a: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        for z in range(a.shape[2]):
            out[:, :, z] = clahe.apply(np.ascontiguousarray(a[:, :, z].T)).T
        return out

    rows = {}
    rows["levels"] = {
        "what": "levels at 1% coverage (default); bound: bincount of every whole section",
        "bound_compute": _timed(lambda: hist(data)), "bound_io": _timed(lambda: hist(read_all())),
        "pumice": _best_run(["contrast", "levels", str(layer)], None)}
    rows["levels_full"] = {
        "what": "levels at coverage 1; bound: the same",
        "bound_compute": rows["levels"]["bound_compute"], "bound_io": rows["levels"]["bound_io"],
        "pumice": _best_run(["contrast", "levels", str(layer), "--coverage", "1"], None)}
    # normalize reads the default (1%) levels, as a user would after `contrast levels`.
    _pumice("contrast", "levels", str(layer), "--no-progress")
    rows["normalize"] = {
        "what": "normalize, per section, clip 1%; bound: one lookup table per section (OpenCV's LUT)",
        "bound_compute": _timed(lambda: normalize(data)), "bound_io": _timed(lambda: write_all(normalize(read_all()))),
        "pumice": _best_run(["contrast", "normalize", str(layer), str(work / "normalized")], work / "normalized")}
    before, after = _section_means(layer), _section_means(work / "normalized")
    exact = normalize(data).mean(axis=(0, 1), dtype=np.float64)  # with every voxel's levels
    rows["normalize"]["section_mean_spread"] = {"before": float(np.ptp(before)), "after": float(np.ptp(after)),
                                                "after_full_coverage": float(np.ptp(exact))}
    rows["clahe"] = {
        "what": "CLAHE, tiles 128, clip limit 2; bound: OpenCV on each whole section",
        "bound_compute": _timed(lambda: equalize(data)), "bound_io": _timed(lambda: write_all(equalize(read_all()))),
        "pumice": _best_run(["contrast", "clahe", str(layer), str(work / "clahe")], work / "clahe")}
    data = None  # the array is not needed by the benchmarks that follow

    floats = _float_layer(work)
    fsource = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{floats}/"}).result()
    fdata = np.asarray(fsource.read(order="F").result())[..., 0]
    quant = lambda a: np.round(np.clip(np.nan_to_num(a, nan=0.0), 0, 1) * np.float32(255)).astype(np.uint8)  # noqa: E731
    rows["quantize"] = {
        "what": "quantize float32 -> uint8; bound: round(clip(x, 0, 1) * 255) in NumPy",
        "bound_compute": _timed(lambda: quant(fdata)),
        "bound_io": _timed(lambda: write_all(quant(np.asarray(fsource.read(order="F").result())[..., 0]))),
        "pumice": _best_run(["quantize", str(floats), str(work / "quantized")], work / "quantized")}
    return {"voxels": voxels, "rows": rows}


def show_contrast(r: dict) -> None:
    v = r["voxels"] / 1e6
    print("image processing on 1024 x 1024 x 256 (chunk 128,128,32, raw), pumice with 2 workers")
    for name, row in r["rows"].items():
        p = row["pumice"]
        print(f"  {name}: {row['what']}")
        print(f"    bound: {row['bound_compute']:.2f} s compute = {v / row['bound_compute']:.0f} MVx/s; with TensorStore read/write "
              f"{row['bound_io']:.2f} s = {v / row['bound_io']:.0f} MVx/s (1 process)")
        print(f"    pumice: {p['seconds']:.2f} s wall = {v / p['seconds']:.0f} MVx/s ({p['in_run_seconds']:.2f} s in-run = "
              f"{v / p['in_run_seconds']:.0f} MVx/s), peak RSS per process {p['peak_rss_mib']:.0f} MiB")
        if "section_mean_spread" in row:
            m = row["section_mean_spread"]
            print(f"    per-section means spread {m['before']:.1f} grey levels before, {m['after']:.1f} after "
                  f"({m['after_full_coverage']:.1f} with levels of every voxel)")


# -- ccl and stats: beside cc3d on the whole array, and Igneous 4.37 measured in the same run ---------

IGNEOUS_VERSION = "igneous-pipeline==4.37.*"


def _igneous() -> Path | None:
    """Igneous's CLI in its own virtual environment under bench-output (its pins differ from ours),
    installed from PyPI on first use; None if that fails."""
    venv = OUT / "igneous-venv"
    cli = venv / "bin" / "igneous"
    if not cli.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", IGNEOUS_VERSION, "compresso"],  # its ccl default
                              capture_output=True, text=True)
        if done.returncode != 0 or not cli.exists():
            return None
    return cli


def _watched_command(argv: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Any command in a child, sampling the resident memory of its largest process: wall s, peak RSS,
    stdout."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, max([watched.memory_info().rss] + [c.memory_info().rss for c in watched.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(argv)}\n{err[-2000:]}")
    return time.perf_counter() - start, peak, out


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labellings split the voxels the same way (each id of one is exactly one id of the other)."""
    import fastremap

    pairs = fastremap.unique((a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64))
    return len(pairs) == len(fastremap.unique(a)) == len(fastremap.unique(b))


def _pinky_array(layer: Path) -> np.ndarray:
    import tensorstore as ts

    return ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{layer}/"}).result().read(order="F").result()[..., 0]


def bench_ccl(work: Path) -> dict:
    """`pumice ccl` of pinky40 (2 workers) beside cc3d.connected_components on the whole array in one
    process (compute only, and with TensorStore reading the volume), and Igneous's `image ccl auto`
    (6-connected only) with 2 processes on the same layer and the same task shape."""
    import cc3d
    import tensorstore as ts

    layer = _pinky_layer(work)
    if layer is None:
        return {"skipped": f"{PINKY} not found"}
    labels = _pinky_array(layer)
    bounds = {}
    for connectivity in (26, 6):
        bounds[connectivity] = _timed(lambda: cc3d.connected_components(labels, connectivity=connectivity))
    read_seconds = _timed(lambda: _pinky_array(layer))
    info = json.loads((layer / "info").read_text())

    def read_label_write() -> None:  # the floor of any ccl that writes its result as the source is stored
        target = work / "pinky40_ccl_floor"
        shutil.rmtree(target, ignore_errors=True)
        out = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{target}/",
                       "multiscale_metadata": {k: info[k] for k in ("type", "data_type", "num_channels")},
                       "scale_metadata": {**{k: info["scales"][0][k] for k in ("resolution", "size", "voxel_offset",
                                                                              "encoding",
                                                                              "compressed_segmentation_block_size")},
                                          "chunk_size": info["scales"][0]["chunk_sizes"][0]}},
                      create=True).result()
        labels = cc3d.connected_components(_pinky_array(layer), connectivity=26, out_dtype=np.uint32)
        out[..., 0].write(labels).result()

    floor_seconds = _timed(read_label_write)
    rows = []
    shape = "256,256,256"
    for connectivity in (26, 6):
        want = cc3d.connected_components(labels, connectivity=connectivity)
        best = None
        for _ in range(REPEATS - 1):
            target = work / f"pinky40_ccl{connectivity}"
            shutil.rmtree(target, ignore_errors=True)
            seconds, rss, out = _pumice("ccl", str(layer), str(target), "--connectivity", str(connectivity), "--shape", shape,
                                        "--workers", "2", "--no-progress")
            if best is None or seconds < best["seconds"]:
                best = {"connectivity": connectivity, "seconds": seconds, "in_run_seconds": out["seconds"],
                        "peak_rss_mib": rss / 2**20, "tasks": out["tasks"], "outcome": out["outcome"]}
        got = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{target}/"}).result().read(order="F").result()[..., 0]
        best["components"] = int(want.max())
        best["equal_to_cc3d"] = _same_partition(got, want) and int(got.max()) == int(want.max())
        rows.append(best)
    labels = want = got = None
    igneous = _igneous()
    ign = None
    if igneous is not None:
        target = work / "pinky40_ccl_igneous"
        times = []
        for _ in range(REPEATS - 1):
            shutil.rmtree(target, ignore_errors=True)
            times.append(_watched_command([str(igneous), "-p", "2", "image", "ccl", "auto", f"file://{layer}",
                                           f"file://{target}", "--shape", shape])[:2])  # its default encoding (compresso)
        seconds, rss = min(times)
        ign = {"seconds": seconds, "peak_rss_mib": rss / 2**20, "version": IGNEOUS_VERSION, "connectivity": 6,
               "shape": shape}
    return {"work": "pinky40 512^3 uint32 segmentation, task shape " + shape, "voxels": 512**3,
            "bound_seconds": {str(k): v for k, v in bounds.items()}, "read_seconds": read_seconds,
            "read_label_write_seconds": floor_seconds, "runs": rows,
            "igneous": ign}


def show_ccl(r: dict) -> None:
    if "skipped" in r:
        print(f"ccl: skipped ({r['skipped']})")
        return
    print(f"ccl: {r['work']}")
    print(f"  bound: cc3d.connected_components on the whole array in memory, 1 process: 26-connected "
          f"{r['bound_seconds']['26']:.2f} s, 6-connected {r['bound_seconds']['6']:.2f} s (TensorStore reading the "
          f"volume: {r['read_seconds']:.2f} s more)")
    if "read_label_write_seconds" in r:
        print(f"  reading, cc3d (26) and writing the result with TensorStore in one process, the same encoding: "
              f"{r['read_label_write_seconds']:.2f} s")
    for row in r["runs"]:
        bound = r["bound_seconds"][str(row["connectivity"])]
        print(f"  pumice ccl --connectivity {row['connectivity']}, 2 workers: {row['seconds']:.2f} s wall "
              f"({row['in_run_seconds']:.2f} s in-run, {row['tasks']} tasks), {row['seconds'] / bound:.2f}x the bound, "
              f"{row['seconds'] / (bound + r['read_seconds']):.2f}x the bound with reading; peak RSS per process "
              f"{row['peak_rss_mib']:.0f} MiB; {row['components']:,} components, equal to cc3d: {row['equal_to_cc3d']}")
    ig = r.get("igneous")
    if ig:
        six = next(row for row in r["runs"] if row["connectivity"] == 6)
        print(f"  Igneous ({ig['version']}) image ccl auto, -p 2, 6-connected: {ig['seconds']:.2f} s wall, peak RSS "
              f"{ig['peak_rss_mib']:.0f} MiB; pumice is {ig['seconds'] / six['seconds']:.2f}x faster")
    else:
        print("  Igneous: not measured (could not install igneous-pipeline)")


def bench_stats(work: Path) -> dict:
    """`pumice stats` of pinky40 (2 workers) beside fastremap.unique + cc3d.statistics on the whole array,
    and Igneous's `image voxels count` then `sum` (-p 2)."""
    import cc3d
    import fastremap

    layer = _pinky_layer(work)
    if layer is None:
        return {"skipped": f"{PINKY} not found"}
    labels = _pinky_array(layer)

    def compute() -> None:
        fastremap.unique(labels, return_counts=True)
        dense, _ = fastremap.renumber(labels, preserve_zero=True, in_place=False)
        cc3d.statistics(dense)

    bound = _timed(compute)
    read_seconds = _timed(lambda: _pinky_array(layer))
    labels = None
    best = None
    for _ in range(REPEATS - 1):
        shutil.rmtree(layer / "stats", ignore_errors=True)
        seconds, rss, out = _pumice("stats", str(layer), "--workers", "2", "--no-progress", "--restart")
        if best is None or seconds < best["seconds"]:
            best = {"seconds": seconds, "in_run_seconds": out["seconds"], "peak_rss_mib": rss / 2**20,
                    "tasks": out["tasks"], "outcome": out["outcome"]}
    igneous = _igneous()
    ign = None
    if igneous is not None:
        copy = work / "pinky40_igneous_stats"
        times = []
        for _ in range(REPEATS - 1):
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(layer, copy, ignore=shutil.ignore_patterns("stats", ".pumice", "segment_properties"))
            queue = work / "igneous_queue"
            shutil.rmtree(queue, ignore_errors=True)
            a = _watched_command([str(igneous), "image", "voxels", "count", f"file://{copy}", "--queue", str(queue)])
            b = _watched_command([str(igneous), "-p", "2", "execute", "--exit-on-empty", str(queue)])
            c = _watched_command([str(igneous), "image", "voxels", "sum", f"file://{copy}"])
            times.append((a[0] + b[0] + c[0], max(a[1], b[1], c[1])))
        seconds, rss = min(times)
        ign = {"seconds": seconds, "peak_rss_mib": rss / 2**20, "version": IGNEOUS_VERSION}
    return {"work": "pinky40 512^3 uint32 segmentation", "voxels": 512**3, "bound_seconds": bound,
            "read_seconds": read_seconds, "run": best, "igneous": ign}


def show_stats(r: dict) -> None:
    if "skipped" in r:
        print(f"stats: skipped ({r['skipped']})")
        return
    run = r["run"]
    print(f"stats: {r['work']}")
    print(f"  bound: fastremap.unique + cc3d.statistics on the whole array, 1 process: {r['bound_seconds']:.2f} s "
          f"(TensorStore reading the volume: {r['read_seconds']:.2f} s more)")
    print(f"  pumice stats, 2 workers: {run['seconds']:.2f} s wall ({run['in_run_seconds']:.2f} s in-run, {run['tasks']} "
          f"tasks), {run['seconds'] / (r['bound_seconds'] + r['read_seconds']):.2f}x the bound with reading; peak RSS per "
          f"process {run['peak_rss_mib']:.0f} MiB; {run['outcome']}")
    ig = r.get("igneous")
    if ig:
        print(f"  Igneous ({ig['version']}) image voxels count + execute -p 2 + sum (counts only): {ig['seconds']:.2f} s "
              f"wall, peak RSS {ig['peak_rss_mib']:.0f} MiB; pumice is {ig['seconds'] / run['seconds']:.2f}x faster")
    else:
        print("  Igneous: not measured (could not install igneous-pipeline)")


# -- proofreading preparation: label-index, edges, cleave -------------------------------------------

def _pinky_bodies(work: Path, labels: np.ndarray) -> tuple[Path, np.ndarray, np.ndarray]:
    """A mapping of pinky40's labels onto a tenth as many bodies (the remap benchmark's, same seed)."""
    svs = np.unique(labels)
    svs = svs[svs != 0]
    bodies = np.random.default_rng(0).integers(1, len(svs) // 10 + 1, len(svs)).astype(np.uint64)
    mapping = work / "pinky40_bodies.csv"
    mapping.write_text("supervoxel,body\n" + "".join(f"{s},{b}\n" for s, b in zip(svs.tolist(), bodies.tolist())))
    return mapping, svs.astype(np.uint64), bodies


def _block_counts(labels: np.ndarray, svs: np.ndarray, bodies: np.ndarray) -> int:
    """The bound of a label index, in memory: each 64^3 block's supervoxels and counts
    (fastremap.unique), their bodies looked up; returns the number of (body, block, supervoxel) rows."""
    import fastremap

    rows = 0
    for z in range(0, labels.shape[2], 64):
        for y in range(0, labels.shape[1], 64):
            for x in range(0, labels.shape[0], 64):
                ids, counts = fastremap.unique(labels[x:x + 64, y:y + 64, z:z + 64], return_counts=True)
                ids = ids[ids != 0].astype(np.uint64)
                rows += len(bodies[np.searchsorted(svs, ids)])
    return rows


def _face_contacts(labels: np.ndarray) -> int:
    """The bound of an edge table (contact areas only): every face between two different non-zero
    labels of the whole array, counted per pair with NumPy; returns the number of pairs."""
    pairs = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        touching = (a != b) & (a != 0) & (b != 0)
        u, v = a[touching].astype(np.uint64), b[touching].astype(np.uint64)
        pairs.append((np.minimum(u, v) << np.uint64(32)) | np.maximum(u, v))
    keys, counts = np.unique(np.concatenate(pairs), return_counts=True)
    return int(len(keys))


def bench_label_index(work: Path) -> dict:
    """`pumice label-index` and `pumice edges` of pinky40 (2 workers; its labels mapped onto a tenth
    as many bodies) beside NumPy on the whole array in one process, with and without TensorStore's
    read; and cleave latency on the largest body."""
    layer = _pinky_layer(work)
    if layer is None:
        return {"skipped": f"{PINKY} not found"}
    labels = _pinky_array(layer)
    mapping, svs, bodies = _pinky_bodies(work, labels)
    read_seconds = _timed(lambda: _pinky_array(layer))
    rows_bound = _block_counts(labels, svs, bodies)
    index_bound = _timed(lambda: _block_counts(labels, svs, bodies))
    pairs_bound = _face_contacts(labels)
    edges_bound = _timed(lambda: _face_contacts(labels))
    labels = None
    runs = {}
    for name, argv in (("label-index", ["label-index", str(layer), "--mapping", str(mapping)]),
                       ("edges", ["edges", str(layer), "--name", "bench_edges"])):
        best = None
        for _ in range(REPEATS - 1):
            db = work / "label_index_bench.sqlite"
            extra = []
            if name == "label-index":  # a fresh database each time (and no stale write-ahead log beside it)
                for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                    stale.unlink(missing_ok=True)
                extra = ["--db", f"sqlite:///{db}"]
            seconds, rss, out = _pumice(*argv, *extra, "--workers", "2", "--no-progress", "--restart")
            if best is None or seconds < best["seconds"]:
                best = {"seconds": seconds, "in_run_seconds": out["seconds"], "peak_rss_mib": rss / 2**20,
                        "tasks": out["tasks"], "outcome": out["outcome"]}
        runs[name] = best
    # the index holds the bound's rows; the edge table its pairs
    from pumice.ops import edges
    from pumice.storage.label_db import open_db

    index = open_db(f"sqlite:///{work / 'label_index_bench.sqlite'}")
    held = sum(len(rows[1]) for p in index.parts() for rows in index.partition_rows(p))
    runs["label-index"]["rows"], runs["label-index"]["equal_rows"] = held, held == rows_bound
    table = edges.read_edges(str(layer), "bench_edges")
    runs["edges"]["pairs"], runs["edges"]["equal_pairs"] = len(table), len(table) == pairs_bound
    cleave = _cleave_latency(table)
    return {"work": f"pinky40 512^3 uint32, {len(svs):,} supervoxels onto {len(np.unique(bodies)):,} bodies",
            "read_seconds": read_seconds, "index_bound_seconds": index_bound, "edges_bound_seconds": edges_bound,
            "runs": runs, "cleave": cleave}


def _cleave_latency(table) -> dict:
    """The cleave server (in this process, real HTTP) on the body with the most internal edges:
    two seeds, 200 requests one at a time, then 20 clients x 10 at once."""
    import http.client
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pumice.serve.cleave import CleaveIndex, CleaveServer

    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    # Bodies that hold together (the random benchmark mapping's bodies barely touch): supervoxels
    # joined along their larger contacts, as an agglomeration would.
    a, b = table["id_a"].to_numpy(), table["id_b"].to_numpy()
    area = table["area"].to_numpy()
    ids = np.union1d(a, b)
    keep = area >= np.percentile(area, 40)
    ia, ib = np.searchsorted(ids, a[keep]), np.searchsorted(ids, b[keep])
    _, component = connected_components(coo_matrix((np.ones(len(ia)), (ia, ib)), shape=(len(ids),) * 2), directed=False)
    svs, bodies = ids.astype(np.uint64), (component + 1_000_000).astype(np.uint64)
    index = CleaveIndex(svs, bodies, a, b, table["score"].to_numpy())
    body_ids, counts = np.unique(index.edge_body, return_counts=True)
    body = int(body_ids[np.argmax(counts)])
    members = index.supervoxels(body)
    request = json.dumps({"body-id": body, "seeds": {"1": [int(members[0])], "2": [int(members[-1])]}})
    server = CleaveServer(index, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def one() -> float:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
        start = time.perf_counter()
        conn.request("POST", "/compute-cleave", request, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 200
        return time.perf_counter() - start

    alone = [one() for _ in range(200)]
    with ThreadPoolExecutor(20) as pool:
        together = list(pool.map(lambda _: one(), range(200)))
    server.shutdown()
    server.server_close()
    return {"body": body, "supervoxels": int(len(members)), "edges": int(counts.max()),
            "p50_ms": float(np.percentile(alone, 50) * 1000), "p99_ms": float(np.percentile(alone, 99) * 1000),
            "concurrent_p50_ms": float(np.percentile(together, 50) * 1000),
            "concurrent_p99_ms": float(np.percentile(together, 99) * 1000)}


def show_label_index(r: dict) -> None:
    if "skipped" in r:
        print(f"label-index, edges, cleave: skipped ({r['skipped']})")
        return
    print(f"label-index, edges, cleave: {r['work']}")
    li, ed = r["runs"]["label-index"], r["runs"]["edges"]
    for name, run, bound, what in (("label-index", li, r["index_bound_seconds"], "(block, supervoxel) counts grouped by body"),
                                   ("edges", ed, r["edges_bound_seconds"], "face contacts per pair")):
        print(f"  bound: NumPy/fastremap {what} on the whole array in memory, 1 process: {bound:.2f} s "
              f"({bound + r['read_seconds']:.2f} s with TensorStore reading the volume)")
        print(f"  pumice {name}, 2 workers: {run['seconds']:.2f} s wall ({run['in_run_seconds']:.2f} s in-run, {run['tasks']} "
              f"tasks), {run['seconds'] / (bound + r['read_seconds']):.2f}x the bound with reading; peak RSS per process "
              f"{run['peak_rss_mib']:.0f} MiB; {run['outcome']}")
    print(f"  the index holds the bound's {li['rows']:,} rows: {li['equal_rows']}; the edge table its {ed['pairs']:,} pairs: "
          f"{ed['equal_pairs']}")
    c = r["cleave"]
    print(f"  cleave (bodies: supervoxels joined along their larger contacts) of the body with the most edges ({c['body']}: {c['supervoxels']:,} supervoxels, {c['edges']:,} edges): "
          f"p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms one at a time; 20 clients at once p50 "
          f"{c['concurrent_p50_ms']:.1f} ms, p99 {c['concurrent_p99_ms']:.1f} ms")


SECTIONS = {"sample1": ROOT.parent / "shared" / "data" / "neuroproof_sample1_sections.tif",
            "validation": ROOT.parent / "shared" / "data" / "neuroproof_validation_sections_120.tif"}
ISBI = ROOT.parent / "shared" / "data" / "isbi2012_train_volume.tif"
ALIGN_CROP = 45  # px cut from every side after warping: no empty borders (40 px shift, 2 degrees, 2%)


def _random_affine(rng, width: int, height: int, shift: float = 40, degrees: float = 2, scale: float = 0.02) -> np.ndarray:
    """A 3 x 3 affine about the image centre: translation, rotation, scale and shear drawn uniformly."""
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    s, shear = 1 + rng.uniform(-scale, scale), rng.uniform(-scale, scale)
    linear = np.array([[s * np.cos(angle), -s * np.sin(angle) + shear], [s * np.sin(angle), s * np.cos(angle)]])
    centre = np.array([width / 2, height / 2])
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = linear, centre - linear @ centre + rng.uniform(-shift, shift, 2)
    return out


def _warped_stack(stack: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The issue's protocol: each section warped by a known random affine, with gain, offset and
    noise, then both stacks cropped. Returns (warped, unwarped, warps in cropped pixels)."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = stack.shape[1:]
    shift = np.eye(3)
    shift[:2, 2] = -ALIGN_CROP
    warps, out = [], []
    for section in stack:
        warp = _random_affine(rng, width, height)
        image = cv2.warpAffine(section.astype(np.float32), warp[:2], (width, height), flags=cv2.INTER_LINEAR)
        image = image * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10) + rng.normal(0, 3, image.shape)
        out.append(np.clip(image, 0, 255).astype(np.uint8))
        warps.append(shift @ warp @ np.linalg.inv(shift))
    c = slice(ALIGN_CROP, -ALIGN_CROP)
    return np.array(out)[:, c, c], np.ascontiguousarray(stack[:, c, c]), warps


def _h3(t) -> np.ndarray:
    out = np.eye(3)
    out[:2] = np.asarray(t)
    return out


def _consistency(found_warped: list, found_plain: list, warps: list, shape: tuple[int, int]) -> dict:
    """Per-section and pairwise error (px) between the warped stack's transforms composed with the
    known warps and the unwarped stack's, after the one global affine that best joins them."""
    height, width = shape
    grid = np.stack(np.meshgrid(np.linspace(0, width - 1, 8), np.linspace(0, height - 1, 8)), -1).reshape(-1, 2)
    points = np.c_[grid, np.ones(len(grid))]
    x = np.concatenate([points @ _h3(t).T for t in found_plain])[:, :2]
    y = np.concatenate([points @ (_h3(t) @ k).T for t, k in zip(found_warped, warps)])[:, :2]
    design = np.c_[x, np.ones(len(x))]
    best, *_ = np.linalg.lstsq(design, y, rcond=None)
    gap = (design @ best - y).reshape(len(warps), -1, 2)
    per = np.linalg.norm(gap, axis=2).mean(axis=1)
    pair = np.linalg.norm(gap[1:] - gap[:-1], axis=2).mean(axis=1)
    return {"section_median": float(np.median(per)), "section_max": float(per.max()),
            "pair_median": float(np.median(pair)), "pair_max": float(pair.max())}


def _chained(pair_models: list) -> list:
    """Naive chaining: section z+1's transform is section z's composed with the pair's (identity where
    the pair failed)."""
    out = [np.eye(3)]
    for model in pair_models:
        out.append(out[-1] @ (_h3(model) if model is not None else np.eye(3)))
    return [t[:2] for t in out]


def _clio_pairs(stack: np.ndarray) -> tuple[list, float]:
    """The FIB-SEM workflow's per-pair method (as its Fiji macro does it, rebuilt with OpenCV): SIFT,
    ratio test, RANSAC with 25 px tolerance and at least 20 inliers, an affine and a translation
    fitted, the translation kept when the affine is nearly rigid. Pair models (b -> a) and seconds."""
    import cv2

    start = time.perf_counter()
    sift = cv2.SIFT_create()
    found = [sift.detectAndCompute(section, None) for section in stack]
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    models = []
    for (ka, da), (kb, db) in zip(found[:-1], found[1:]):
        model = None
        if da is not None and db is not None and len(da) >= 2 and len(db) >= 2:
            good = [m[0] for m in matcher.knnMatch(db, da, k=2) if len(m) == 2 and m[0].distance < 0.92 * m[1].distance]
            if len(good) >= 20:
                pb = np.float32([kb[m.queryIdx].pt for m in good])
                pa = np.float32([ka[m.trainIdx].pt for m in good])
                cv2.setRNGSeed(0)
                affine, mask = cv2.estimateAffine2D(pb, pa, method=cv2.RANSAC, ransacReprojThreshold=25)
                if affine is not None and mask.sum() >= 20:
                    keep = mask.ravel().astype(bool)
                    translation = np.eye(2, 3)
                    translation[:, 2] = (pa[keep] - pb[keep]).mean(axis=0)
                    nearly_rigid = np.abs(affine[:, :2] - np.eye(2)).max() < 0.01
                    model = translation if nearly_rigid else affine
        models.append(model)
    return models, time.perf_counter() - start


def bench_align(work: Path) -> dict:
    """`pumice align --model affine` (2 workers, solve only) on the neuroproof stacks warped by known
    random affines, against the same stacks unwarped: consistency (the issue's measure), naive
    chaining of pumice's own pairs, and the FIB-SEM workflow's per-pair SIFT + RANSAC chained, timed
    on the same data. Then ssTEM (ISBI 2012): one section of each pair perturbed by a known affine."""
    import tifffile

    rows = {}
    for name, path in SECTIONS.items():
        if not path.exists():
            rows[name] = {"skipped": f"{path} not found"}
            continue
        stack = tifffile.imread(path)
        warped, plain, warps = _warped_stack(stack)
        found, pairs, runs = {}, {}, {}
        for label, data in (("warped", warped), ("plain", plain)):
            seconds, rss, record, report = _align_solve(work, f"{name}_{label}", data)
            found[label] = record["transforms"]
            pairs[label] = [report["pairs"][f"{z}-{z + 1}"].get("model") if report["pairs"][f"{z}-{z + 1}"].get("ok") else None
                            for z in range(len(data) - 1)]
            runs[label] = {"seconds": seconds, "sections_per_second": len(data) / seconds, "peak_rss_mib": rss / 2**20,
                           "model": record["model"], "flagged_pairs": len(report["flagged_pairs"]),
                           "bad_sections": report["bad_sections"], "ncc_before": report["ncc"]["mean_before"],
                           "ncc_after": report["ncc"]["mean_after"]}
        shape = warped.shape[1:]
        moved = max(float(np.abs(np.c_[[[0, 0], [shape[1], 0], [0, shape[0]], [shape[1], shape[0]]], np.ones(4)] @
                                 (_h3(t) - np.eye(3)).T).max()) for t in found["plain"])
        clio_w, clio_seconds = _clio_pairs(warped)
        clio_p, _ = _clio_pairs(plain)
        rows[name] = {
            "sections": int(len(stack)), "section_px": list(shape), "runs": runs,
            "solve": _consistency(found["warped"], found["plain"], warps, shape),
            "chained": _consistency(_chained(pairs["warped"]), _chained(pairs["plain"]), warps, shape),
            "clio_chained": _consistency(_chained(clio_w), _chained(clio_p), warps, shape),
            "clio_seconds": clio_seconds, "clio_failed_pairs": sum(m is None for m in clio_w),
            # the issue's quality measure: the aligned warped stack's adjacent correlation against the unperturbed one's
            "ncc_ratio": runs["warped"]["ncc_after"] / runs["plain"]["ncc_before"],
            "plain_moved_px": moved,
            "windows": _window_consistency(work, name, stack, shape[0]),
        }
    rows["isbi"] = _isbi_pairs() if ISBI.exists() else {"skipped": f"{ISBI} not found"}
    rows["scale"] = _align_scale(work) if SECTIONS["validation"].exists() else {"skipped": "no sections"}
    return rows


def _align_solve(work: Path, label: str, data: np.ndarray) -> tuple[float, float, dict, dict]:
    """`pumice align --model affine --solve-only` (2 workers) of a Z, Y, X stack: seconds, peak RSS,
    transforms.json and report.json."""
    source = work / f"align_{label}.npy"
    np.save(source, np.ascontiguousarray(data))
    dest = work / f"align_{label}"
    shutil.rmtree(dest, ignore_errors=True)
    seconds, rss, _ = _pumice("align", str(source), str(dest), "--model", "affine", "--solve-only", "--resolution",
                              "10,10,10", "--bad-sections", "bridge", "--workers", "2", "--no-progress")
    return (seconds, rss, json.loads((dest / "align" / "transforms.json").read_text()),
            json.loads((dest / "align" / "report.json").read_text()))


ALIGN_WINDOW_SHIFT = 20  # px, along x and y


def _window_consistency(work: Path, name: str, stack: np.ndarray, side: int) -> dict:
    """The same measure with no warp at all: two windows of the unperturbed stack, as large as the
    warped test's crops and ALIGN_WINDOW_SHIFT px apart, aligned separately (pumice, and the FIB-SEM
    workflow's pairs chained). What it leaves is how much the stack's own apparent motion depends on
    which part of the tissue is seen."""
    height = stack.shape[1]
    first = (height - side) // 2 - ALIGN_WINDOW_SHIFT // 2
    second = first + ALIGN_WINDOW_SHIFT
    one, two = (stack[:, o:o + side, o:o + side] for o in (first, second))
    found = [_align_solve(work, f"{name}_window{k}", data)[2]["transforms"] for k, data in ((1, one), (2, two))]
    to_second = np.eye(3)
    to_second[:2, 2] = -ALIGN_WINDOW_SHIFT  # the first window's pixel p shows what the second's p - shift does
    warps = [to_second] * len(stack)
    return {"shift_px": ALIGN_WINDOW_SHIFT,
            "pumice": _consistency(found[1], found[0], warps, (side, side)),
            "clio_chained": _consistency(_chained(_clio_pairs(two)[0]), _chained(_clio_pairs(one)[0]), warps, (side, side))}


def _align_scale(work: Path, sections: int = 16) -> dict:
    """Throughput and peak memory at 1024^2 and 4096^2: the validation stack's central 512^2 scaled up
    (bicubic), matched and solved, then rendered (2 workers); the FIB-SEM workflow's per-pair SIFT +
    RANSAC on the same sections, 1 process. Recovery is checked on a second stack: the first section
    repeated with known shifts and noise (the stack's own drift, scaled up, would hide it)."""
    import cv2
    import tifffile

    stack = tifffile.imread(SECTIONS["validation"])[:sections, 4:516, 4:516]
    rng = np.random.default_rng(5)
    out = {}
    for side in (1024, 4096):
        shifts = rng.uniform(-0.02, 0.02, (sections, 2)) * side
        data = np.empty((sections, side, side), np.uint8)
        for z, section in enumerate(stack):
            big = cv2.resize(section, (side, side), interpolation=cv2.INTER_CUBIC)
            data[z] = cv2.warpAffine(big, np.array([[1, 0, shifts[z, 0]], [0, 1, shifts[z, 1]]]), (side, side),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        source = work / f"align_scale_{side}.npy"
        np.save(source, data)
        dest = work / f"align_scale_{side}"
        shutil.rmtree(dest, ignore_errors=True)
        solve_seconds, solve_rss, _ = _pumice("align", str(source), str(dest), "--solve-only", "--resolution", "8,8,8",
                                              "--bad-sections", "bridge", "--workers", "2", "--no-progress")
        render_seconds, render_rss, _ = _pumice("align", str(source), str(dest), "--transforms",
                                                str(dest / "align" / "transforms.json"), "--resolution", "8,8,8",
                                                "--workers", "2", "--no-progress")
        base = cv2.resize(stack[0], (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        repeated = np.array([np.clip(cv2.warpAffine(base, np.array([[1, 0, dx], [0, 1, dy]]), (side, side),
                                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                                     + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8) for dx, dy in shifts[:6]])
        np.save(source, repeated)
        known = work / f"align_scale_{side}_known"
        shutil.rmtree(known, ignore_errors=True)
        _pumice("align", str(source), str(known), "--solve-only", "--resolution", "8,8,8", "--workers", "2", "--no-progress")
        record = json.loads((known / "align" / "transforms.json").read_text())
        found = np.array([np.asarray(t)[:, 2] for t in record["transforms"]])
        error = np.abs((found - found[0]) + (shifts[:6] - shifts[0])).max()  # a section moved by s is put back by -s
        clio = None
        if side <= 1024:
            _, clio = _clio_pairs(data)
        section_mib = side * side / 2**20
        out[str(side)] = {"sections": sections, "section_mib": section_mib,
                          "match_sections_per_second": sections / solve_seconds, "match_peak_rss_mib": solve_rss / 2**20,
                          "render_sections_per_second": sections / render_seconds,
                          "render_peak_rss_mib": render_rss / 2**20, "max_shift_error_px": float(error),
                          "clio_sections_per_second": sections / clio if clio else None}
        source.unlink()
    return out


def _isbi_pairs() -> dict:
    """Each adjacent pair of the ISBI stack, and the same pair with its second section warped by a known
    affine (both cropped alike): the pair's answer must be the first answer composed with the warp."""
    import cv2
    import tifffile

    from pumice.ops import align

    stack = tifffile.imread(ISBI)
    rng = np.random.default_rng(1)
    height, width = stack.shape[1:]
    shift = np.eye(3)
    shift[:2, 2] = -ALIGN_CROP
    c = slice(ALIGN_CROP, -ALIGN_CROP)

    def features(image):
        work = align.working_image(image, 1.0)
        sift = cv2.SIFT_create(nfeatures=align.SIFT_FEATURES)
        keypoints, descriptors = sift.detectAndCompute(work, None)
        return {"points": np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2), "descriptors": descriptors,
                "image": work}

    errors, failed = [], 0
    grid = np.stack(np.meshgrid(np.linspace(0, width - 2 * ALIGN_CROP - 1, 8),
                                np.linspace(0, height - 2 * ALIGN_CROP - 1, 8)), -1).reshape(-1, 2)
    for z in range(len(stack) - 1):
        warp = _random_affine(rng, width, height)
        moved = cv2.warpAffine(stack[z + 1].astype(np.float32), warp[:2], (width, height), flags=cv2.INTER_LINEAR)
        known = shift @ warp @ np.linalg.inv(shift)
        a = features(stack[z][c, c])
        plain = align.match_pair(a, features(stack[z + 1][c, c]), 1.0)
        perturbed = align.match_pair(a, features(np.clip(moved, 0, 255).astype(np.uint8)[c, c]), 1.0)
        if not (plain["ok"] and perturbed["ok"]):
            failed += 1
            continue
        want = _h3(plain["model"]) @ np.linalg.inv(known)
        points = np.c_[grid, np.ones(len(grid))]
        errors.append(float(np.linalg.norm((points @ _h3(perturbed["model"]).T - points @ want.T)[:, :2], axis=1).mean()))
    return {"pairs": len(stack) - 1, "failed": failed, "median_px": float(np.median(errors)) if errors else None,
            "max_px": float(np.max(errors)) if errors else None}


def show_align(r: dict) -> None:
    print("align (neuroproof stacks warped by known random affines, 40 px, 2 degrees, 2% scale and shear, gain, "
          "offset, noise; cropped by 45 px; --model affine, 2 workers):")
    for name in SECTIONS:
        row = r[name]
        if "skipped" in row:
            print(f"  {name}: skipped ({row['skipped']})")
            continue
        print(f"  {name}: {row['sections']} sections of {row['section_px'][1]} x {row['section_px'][0]} px")
        for label in ("solve", "chained", "clio_chained"):
            m = row[label]
            what = {"solve": "pumice (global solve)", "chained": "pumice's pairs chained",
                    "clio_chained": "FIB-SEM workflow's pairs chained"}[label]
            print(f"    {what}: per section median {m['section_median']:.2f} px, max {m['section_max']:.2f}; "
                  f"pairwise median {m['pair_median']:.3f}, max {m['pair_max']:.2f}")
        for label, run in row["runs"].items():
            print(f"    {label}: {run['seconds']:.1f} s ({run['sections_per_second']:.1f} sections/s), peak RSS "
                  f"{run['peak_rss_mib']:.0f} MiB, model {run['model']}, {run['flagged_pairs']} flagged pair(s), "
                  f"bad sections {run['bad_sections'] or 'none'}")
        print(f"    adjacent sections' mean correlation: warped stack after alignment {row['runs']['warped']['ncc_after']:.4f}, "
              f"unperturbed stack {row['runs']['plain']['ncc_before']:.4f} (ratio {row['ncc_ratio']:.4f}; before "
              f"alignment {row['runs']['warped']['ncc_before']:.4f})")
        if "windows" in row:
            for label, m in (("pumice", row["windows"]["pumice"]), ("FIB-SEM workflow's pairs chained", row["windows"]["clio_chained"])):
                print(f"    no warp, two windows {row['windows']['shift_px']} px apart, {label}: per section median "
                      f"{m['section_median']:.2f} px, max {m['section_max']:.2f}; pairwise median {m['pair_median']:.3f}")
        print(f"    the FIB-SEM workflow's pairs: {row['clio_seconds']:.1f} s (1 process), {row['clio_failed_pairs']} failed "
              f"pair(s) on the warped stack; pumice on the unwarped stack moves its sections up to "
              f"{row['plain_moved_px']:.1f} px")
    for side, row in r.get("scale", {}).items():
        if side == "skipped":
            continue
        clio = (f"; the FIB-SEM workflow's pairs {row['clio_sections_per_second']:.2f} sections/s (1 process)"
                if row["clio_sections_per_second"] else "")
        print(f"  {side}^2 sections ({row['sections']}, {row['section_mib']:.0f} MiB each): match + solve "
              f"{row['match_sections_per_second']:.2f} sections/s, peak RSS per process {row['match_peak_rss_mib']:.0f} MiB; "
              f"render {row['render_sections_per_second']:.2f} sections/s, peak {row['render_peak_rss_mib']:.0f} MiB; "
              f"known shifts recovered within {row['max_shift_error_px']:.2f} px{clio}")
    i = r["isbi"]
    if "skipped" in i:
        print(f"  isbi: skipped ({i['skipped']})")
    else:
        print(f"  ssTEM (ISBI 2012, {i['pairs']} pairs, one section perturbed): median {i['median_px']:.2f} px, "
              f"max {i['max_px']:.2f}; {i['failed']} pair(s) failed")

# -- watershed and agglomeration: quality beside waterz on real data, blockwise against whole, speed ----

WATERZ_VERSION = "waterz==0.10.*"
SHARED = ROOT.parent / "shared" / "data"
WS_THRESHOLDS = [round(t, 2) for t in np.arange(0.05, 1.0, 0.05)]
# pumice's scores and waterz's functions that compute the same (waterz's default quantile score
# starts each edge from its best face, InitWithMax: pumice's q50-lowest; false gives the true median)
WS_SCORES = ("q50-lowest", "mean", "q50")
WS_FINE = ("--sigma", "0", "--threshold", "1", "--seed-connectivity", "6")  # every face-neighbour minimum a seed
WATERZ_FUNCTIONS = {"q50-lowest": "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>",
                    "mean": "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>",
                    "q50": "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256, false>>"}

# Run inside waterz's own environment: affinities from the boundary map (1 - the two voxels' mean,
# the same cost pumice's edges give a face), waterz.agglomerate over the thresholds, VOI with
# scikit-image (GT's 0 left out) exactly as for pumice. Prints one JSON line.
WATERZ_SCRIPT = r"""
import contextlib, io, json, sys, time
import numpy as np, waterz
from skimage.metrics import variation_of_information as vi
data = np.load(sys.argv[1]); thresholds = json.loads(sys.argv[2]); functions = json.loads(sys.argv[3])
b = data["boundary"].astype(np.float32)  # z, y, x
affs = np.zeros((3,) + b.shape, np.float32)
for d in range(3):
    lo = [slice(None)] * 3; hi = [slice(None)] * 3
    lo[d], hi[d] = slice(0, -1), slice(1, None)
    affs[d][tuple(hi)] = 1 - (b[tuple(lo)] + b[tuple(hi)]) / 2
gt = data["gt"] if "gt" in data.files else None
out = {}
for name, function in functions.items():
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        segs = [s.copy() if gt is not None else None for s in waterz.agglomerate(affs, [0.0] + thresholds, scoring_function=function)]
    row = {"seconds": time.perf_counter() - start}
    if gt is not None:
        voi = [[float(v) for v in vi(gt, s, ignore_labels=(0,))] for s in segs]
        best = min(range(1, len(segs)), key=lambda i: sum(voi[i]))
        row.update(fragments=int(segs[0].max()), fragments_voi=voi[0], best_threshold=thresholds[best - 1], best_voi=voi[best])
    out[name] = row
print(json.dumps(out))
"""


def _waterz() -> Path | None:
    """waterz in its own virtual environment under bench-output (it compiles its scoring functions at
    first use), installed from PyPI on first use; None if that fails."""
    venv = OUT / "waterz-venv"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", WATERZ_VERSION, "numpy", "scikit-image"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return None
        (venv / ".ready").touch()
    return python


def _ws_data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple, bool] | None:
    """(the map as stored, X, Y, Z; the boundary in 0..1, Z, Y, X; ground truth Z, Y, X; resolution;
    whether the map is low on membranes) of one data set, or None when ../shared/data lacks it."""
    import h5py
    import tifffile

    if name.startswith("gala"):
        split = name.split("_")[1]
        if not (SHARED / f"gala_{split}_p1.lzf.h5").exists():
            return None
        with h5py.File(SHARED / f"gala_{split}_p1.lzf.h5") as f:
            stored = f["stack"][:].astype(np.float32)
        with h5py.File(SHARED / f"gala_{split}_gt.lzf.h5") as f:
            gt = f["stack"][:]
        return stored.transpose(2, 1, 0), stored, gt, (10, 10, 10), False
    if name == "neuroproof":  # raw FIB-SEM only: its inverted intensity is a weak boundary map
        if not (SHARED / "neuroproof_sample2.h5").exists():
            return None
        with h5py.File(SHARED / "neuroproof_sample2.h5") as f:
            stored = f["raw"][:]  # Z, Y, X uint8, dark membranes
            gt = f["labels/neuron_ids"][:]
        return stored.transpose(2, 1, 0), 1 - stored.astype(np.float32) / 255, gt, (10, 10, 10), True
    if not (SHARED / "snemi_mini_probabilities.tif").exists():
        return None
    stored = tifffile.imread(SHARED / "snemi_mini_probabilities.tif")  # uint8, high inside cells
    gt = tifffile.imread(SHARED / "snemi_mini_labels.tif")
    return stored.transpose(2, 1, 0), 1 - stored.astype(np.float32) / 255, gt, (6, 6, 29), True


def _voi(seg: np.ndarray, gt: np.ndarray) -> list[float]:
    from skimage.metrics import variation_of_information

    return [float(v) for v in variation_of_information(gt, seg, ignore_labels=(0,))]


def _bodies(fragments: np.ndarray, mapping: Path) -> np.ndarray:
    import pandas as pd

    table = pd.read_csv(mapping)
    lookup = np.arange(int(fragments.max()) + 1, dtype=np.uint64)
    lookup[table["sv"].to_numpy()] = table["body"].to_numpy()
    return lookup[fragments]


def _ws_quality(work: Path, name: str, waterz: Path | None) -> dict | None:
    loaded = _ws_data(name)
    if loaded is None:
        return None
    stored, boundary, gt, resolution, inverted = loaded
    gt_xyz = gt.transpose(2, 1, 0)
    root = work / f"ws_{name}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    np.save(root / "map.npy", stored.transpose(2, 1, 0))  # Z, Y, X as ingest reads .npy
    _pumice("ingest", str(root / "map.npy"), str(root / "map"), "--resolution", ",".join(map(str, resolution)),
            "--chunk-size", "16,16,16", "--no-progress")
    invert = ["--invert"] if inverted else []
    row: dict = {"shape_xyz": list(stored.shape), "resolution": list(resolution), "pumice": {}}
    for shape in ("whole", "64", "32"):
        task = ",".join(map(str, stored.shape)) if shape == "whole" else f"{shape},{shape},{shape}"
        ws = root / f"ws_{shape}"
        _pumice("watershed", str(root / "map"), str(ws), *invert, "--shape", task, "--workers", "2", "--no-progress")
        import tensorstore as ts

        fragments = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{ws}/"}).result().read().result()[..., 0]
        runs = {"fragments": int(fragments.max()), "fragments_voi": _voi(fragments, gt_xyz), "scores": {}}
        for score in WS_SCORES:
            out = root / f"agg_{shape}_{score}"
            _pumice("agglomerate", str(ws), "--boundary", str(root / "map"), *invert, "--out", str(out), "--thresholds",
                    ",".join(map(str, WS_THRESHOLDS)), "--score", score, "--shape", task, "--workers", "2", "--no-progress")
            segs = {t: _bodies(fragments, out / f"mapping-{t:g}.csv") for t in WS_THRESHOLDS}
            voi = {t: _voi(segs[t], gt_xyz) for t in WS_THRESHOLDS}
            best = min(WS_THRESHOLDS, key=lambda t: sum(voi[t]))
            runs["scores"][score] = {"best_threshold": best, "best_voi": voi[best], "segments": segs}
        row["pumice"][shape] = runs
    whole = row["pumice"]["whole"]
    from skimage.metrics import variation_of_information

    whole_fragments = _ws_fragments(root, "whole")
    for shape in ("64", "32"):  # blockwise against the same algorithm on the whole array
        runs = row["pumice"][shape]
        runs["fragments_vs_whole"] = float(sum(variation_of_information(whole_fragments, _ws_fragments(root, shape))))
        for score, result in runs["scores"].items():
            t = whole["scores"][score]["best_threshold"]
            result["vs_whole_at_its_best"] = float(sum(variation_of_information(whole["scores"][score]["segments"][t],
                                                                                  result["segments"][t])))
    for runs in row["pumice"].values():
        for result in runs["scores"].values():
            del result["segments"]
    if name == "neuroproof":  # the weak map: pumice's finest fragments beside waterz's (whole array)
        _pumice("watershed", str(root / "map"), str(root / "ws_fine"), *invert, *WS_FINE, "--shape",
                ",".join(map(str, stored.shape)), "--workers", "2", "--no-progress")
        fragments = _ws_fragments(root, "fine")
        row["fine_fragments"] = {"options": " ".join(WS_FINE), "fragments": int(fragments.max()),
                                 "fragments_voi": _voi(fragments, gt_xyz)}
    if name == "snemi":
        import tifffile

        reference = tifffile.imread(SHARED / "snemi_mini_fragments.tif")
        row["gala_fragments"] = {"fragments": int(reference.max()), "fragments_voi": _voi(reference, gt)}
    if waterz is not None:
        np.savez(root / "waterz.npz", boundary=boundary, gt=gt.astype(np.uint32))
        _, _, out = _watched_command([str(waterz), "-c", WATERZ_SCRIPT, str(root / "waterz.npz"), json.dumps(WS_THRESHOLDS),
                                      json.dumps(WATERZ_FUNCTIONS)])
        row["waterz"] = json.loads(out.strip().splitlines()[-1])
    return row


def _ws_fragments(root: Path, shape: str) -> np.ndarray:
    import tensorstore as ts

    return ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{root}/ws_{shape}/"}).result().read().result()[..., 0]


WS_SPEED_SIDE = 512


def _ws_speed(work: Path, waterz: Path | None) -> dict | None:
    """512^3 tiled from gala's training probabilities (mirrored, so tiles meet without seams):
    watershed then agglomerate (default score, q50-lowest), 2 workers, beside waterz on the whole array in
    memory with the same score (its default)."""
    loaded = _ws_data("gala_train")
    if loaded is None:
        return None
    stored = loaded[0]  # X, Y, Z float32
    tile = np.concatenate([stored, stored[::-1]], axis=0)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[:, :, ::-1]], axis=2)
    reps = [-(-WS_SPEED_SIDE // s) for s in tile.shape]
    volume = np.tile(tile, reps)[:WS_SPEED_SIDE, :WS_SPEED_SIDE, :WS_SPEED_SIDE]
    root = work / "ws_speed"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    np.save(root / "map.npy", np.ascontiguousarray(volume.transpose(2, 1, 0)))
    _pumice("ingest", str(root / "map.npy"), str(root / "map"), "--resolution", "10,10,10", "--chunk-size", "64,64,64",
            "--no-progress")
    (root / "map.npy").unlink()
    voxels = volume.size
    seconds, peak, summary = _pumice("watershed", str(root / "map"), str(root / "ws"), "--workers", "2", "--no-progress")
    row = {"voxels": voxels, "watershed_seconds": seconds, "watershed_peak_rss_mib": peak / 2**20,
           "fragments": int(summary["stages"]["heads"]["totals"].get("components", 0)),
           "block": summary.get("recipe", {}).get("args", {}).get("shape")}
    seconds, peak, summary = _pumice("agglomerate", str(root / "ws"), "--boundary", str(root / "map"), "--out",
                                     str(root / "agg"), "--threshold", "0.5", "--workers", "2", "--no-progress")  # default score
    row.update(agglomerate_seconds=seconds, agglomerate_peak_rss_mib=peak / 2**20,
               edges=int(summary["stages"]["merge"]["totals"].get("edges", 0)),
               agglomerate_task_seconds=sum(v["seconds"] for k, v in summary["stages"].items()
                                            if k.startswith(("agglomerate-", "bodies-"))),
               levels=sum(k.startswith("agglomerate-") for k in summary["stages"]),
               top_nodes=int(summary["stages"][max((k for k in summary["stages"] if k.startswith("agglomerate-")),
                                                   key=lambda k: int(k.split("-")[1]))]["totals"].get("nodes", 0)))
    if waterz is not None:
        np.savez(root / "waterz.npz", boundary=volume.transpose(2, 1, 0))
        del volume
        wall, peak, out = _watched_command([str(waterz), "-c", WATERZ_SCRIPT, str(root / "waterz.npz"), json.dumps([0.5]),
                                            json.dumps({"q50-lowest": WATERZ_FUNCTIONS["q50-lowest"]})])
        row["waterz"] = {"seconds": json.loads(out.strip().splitlines()[-1])["q50-lowest"]["seconds"], "wall_seconds": wall,
                         "peak_rss_mib": peak / 2**20}
        (root / "waterz.npz").unlink()
    shutil.rmtree(root / "ws", ignore_errors=True)
    return row


def bench_watershed(work: Path) -> dict:
    waterz = _waterz()
    quality = {name: _ws_quality(work, name, waterz) for name in ("gala_train", "gala_test", "snemi", "neuroproof")}
    return {"quality": {k: v for k, v in quality.items() if v is not None}, "speed": _ws_speed(work, waterz),
            "waterz": WATERZ_VERSION if waterz is not None else None}


def show_watershed(r: dict) -> None:
    if not r["quality"]:
        print("watershed: skipped (../shared/data has no probability maps)")
        return
    print("watershed + agglomerate: VOI (split + merge, bits; GT's 0 left out) at the best threshold, same input")
    print(f"  {'data':<11} {'':<22} {'fragments':>9} {'frag merge':>10}" + "".join(f" {s:>14}" for s in WS_SCORES))

    def cells(scores: dict) -> str:
        out = ""
        for score in WS_SCORES:
            best = scores.get(score)
            text = f"{sum(best['best_voi']):.3f} @{best['best_threshold']:g}" if best else ""
            out += f" {text:>14}"
        return out

    for name, q in r["quality"].items():
        whole = q["pumice"]["whole"]
        print(f"  {name:<11} {'pumice, whole array':<22} {whole['fragments']:>9} {whole['fragments_voi'][1]:>10.3f}"
              + cells(whole["scores"]))
        for shape in ("64", "32"):
            runs = q["pumice"][shape]
            versus = ", ".join(f"{v['vs_whole_at_its_best']:.4f} ({s})" for s, v in runs["scores"].items())
            print(f"  {'':<11} {f'pumice, blocks {shape}^3':<22} {runs['fragments']:>9} {runs['fragments_voi'][1]:>10.3f}"
                  + cells(runs["scores"]) + f"   vs whole: fragments {runs['fragments_vs_whole']:.4f}, bodies {versus}")
        w = q.get("waterz")
        if w:
            first = next(iter(w.values()))
            print(f"  {'':<11} {'waterz, whole array':<22} {first['fragments']:>9} {first['fragments_voi'][1]:>10.3f}"
                  + cells(w))
        if "fine_fragments" in q:
            f = q["fine_fragments"]
            print(f"  {'':<11} {'pumice, fine fragments':<22} {f['fragments']:>9} {f['fragments_voi'][1]:>10.3f}   ({f['options']})")
        if "gala_fragments" in q:
            g = q["gala_fragments"]
            print(f"  {'':<11} {'gala reference frags':<22} {g['fragments']:>9} {g['fragments_voi'][1]:>10.3f}")
    s = r.get("speed")
    if s:
        mvx = s["voxels"] / 1e6
        line = (f"  speed, {mvx:.0f} MVx tiled from gala's probabilities, 2 workers: watershed {s['watershed_seconds']:.1f} s "
                f"({mvx / s['watershed_seconds']:.2f} MVx/s, peak {s['watershed_peak_rss_mib']:.0f} MiB per process, "
                f"{s['fragments']:,} fragments), agglomerate {s['agglomerate_seconds']:.1f} s ({s['edges']:,} edges; the "
                f"merge stages {s['agglomerate_task_seconds']:.1f} s in {s.get('levels', 1)} levels, the top chunk "
                f"{s.get('top_nodes', 0):,} regions; peak {s['agglomerate_peak_rss_mib']:.0f} MiB); together "
                f"{mvx / (s['watershed_seconds'] + s['agglomerate_seconds']):.2f} MVx/s")
        print(line)
        if "waterz" in s:
            w = s["waterz"]
            print(f"  waterz on the whole array in memory (the bound; 1 process): {w['seconds']:.1f} s "
                  f"({mvx / w['seconds']:.2f} MVx/s), peak {w['peak_rss_mib']:.0f} MiB")


BENCHMARKS = {
    "ingest": (bench_ingest, show_ingest),
    "downsample_image": (bench_downsample_image, show_pyramid),
    "downsample_segmentation": (bench_downsample_segmentation, show_pyramid),
    "downsample_offset": (bench_downsample_offset, show_offset),
    "transfer_image": (bench_transfer_image, show_pyramid),
    "mesh": (bench_mesh, show_mesh),
    "skeleton": (bench_skeleton, show_skeleton),
    "queue": (bench_queue, show_queue),
    "contrast": (bench_contrast, show_contrast),
    "remap": (bench_remap, show_remap),
    "ccl": (bench_ccl, show_ccl),
    "stats": (bench_stats, show_stats),
    "label_index": (bench_label_index, show_label_index),
    "align": (bench_align, show_align),
    "watershed": (bench_watershed, show_watershed),
}


def main(names: list[str]) -> int:
    OUT.mkdir(exist_ok=True)
    work = OUT / "work"
    work.mkdir(exist_ok=True)
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name}; choose from {', '.join(BENCHMARKS)}")
        run, show = BENCHMARKS[name]
        result = run(work)
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
