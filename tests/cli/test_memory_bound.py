"""Ingest memory follows the task block, not the source: a source 20x the budget still fits."""

import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile


def peak_mib(out: str) -> float:
    match = re.search(r"peak memory per worker ([0-9.]+) (MiB|GiB)", out)
    assert match, out
    return float(match.group(1)) * (1024 if match.group(2) == "GiB" else 1)


def ingest(*args) -> str:
    proc = subprocess.run([sys.executable, "-m", "pumice.cli.main", "ingest", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["npy", "tiff-stack"])
def test_peak_memory_is_bounded_by_the_block(tmp_path, kind):
    budget_mib = 16
    peaks = {}
    for depth in (32, 256):  # 32 MiB and 256 MiB sources of 1024 x 1024 uint8 sections
        if kind == "npy":
            source = tmp_path / f"v{depth}.npy"
            section = np.tile(np.arange(1024, dtype=np.uint8), (1024, 1)).tobytes()
            with open(source, "wb") as f:  # section by section: the test itself stays small
                np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (depth, 1024, 1024)})
                for _ in range(depth):
                    f.write(section)
        else:
            source = tmp_path / f"stack{depth}"
            source.mkdir()
            section = np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8)
            for z in range(depth):
                tifffile.imwrite(source / f"s{z}.tif", section)
        out = ingest(source, tmp_path / f"out{depth}", "--resolution", "4,4,40", "--chunk-size", "256,256,8",
                     "--memory", f"{budget_mib}MiB", "--workers", "2")
        peaks[depth] = peak_mib(out)
    # The source grows by 224 MiB; the peak may grow a little (more tasks per process: allocator
    # and thread arenas), but nowhere near the source, and stays below the source's own size.
    assert peaks[256] - peaks[32] < (256 - 32) / 4, peaks
    assert peaks[256] < 256, peaks
