"""Pumice benchmarks: speed and memory beside the in-memory library bound.

    make bench                      # all benchmarks
    python benchmarks/run.py ingest # one

Each benchmark prints a table and writes bench-output/<name>.json. Timings are wall clock on this
machine; peak RSS is the largest single process (the CLI or one of its workers).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-output"


def _pumice(*args: str) -> tuple[float, int, str]:
    """Run the CLI in a child process: wall seconds, peak RSS of its largest process, stdout.

    The peak is the one the CLI reports (each process's own VmHWM): the child's ru_maxrss would
    inherit this benchmark process's high-water mark.
    """
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pumice.cli.main", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed: pumice {' '.join(args)}\n{proc.stderr}")
    match = re.search(r"peak memory per worker ([0-9.]+) (MiB|GiB)", proc.stdout)
    peak = float(match.group(1)) * 2**20 * (1024 if match.group(2) == "GiB" else 1) if match else 0
    return seconds, int(peak), proc.stdout


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
            in_run = float(re.search(r"at ([0-9.]+) MVx/s", out).group(1))
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


BENCHMARKS = {"ingest": (bench_ingest, show_ingest)}


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
