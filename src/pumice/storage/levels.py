"""Per-section luminance levels stored beside a layer, in Igneous's layout: ``levels/<mip>/<z>``, one
JSON histogram per z-section (``levels``, ``patch_size``, ``num_patches``, ``coverage_ratio``), so
levels either tool made serve the other; ``levels/<mip>/pumice.json`` notes how Pumice made them.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import LayerError, PumiceError
from . import urls
from .kv import open_kv

BATCH = 256  # level files read at once when a whole volume's are needed


def key(mip: int, z: int) -> str:
    return f"levels/{mip}/{z}"


def record_key(mip: int) -> str:
    """What Pumice notes about a levels run (coverage, job); Igneous reads only the numbered files."""
    return f"levels/{mip}/pumice.json"


def write(url: str, mip: int, z: int, record: dict[str, Any]) -> None:
    open_kv(url).put(key(mip, z), json.dumps(record, separators=(",", ":")).encode())


def read_record(url: str, mip: int) -> Any:
    return open_kv(url).get_json(record_key(mip))


def write_record(url: str, mip: int, record: dict[str, Any]) -> None:
    open_kv(url).put_json(record_key(mip), record)


def recorded_mips(url: str, mips: int) -> list[dict[str, Any]]:
    """The mips of ``mips`` whose levels Pumice recorded: mip, coverage and sections of each."""
    found = []
    for mip, raw in enumerate(open_kv(url).get_many([record_key(m) for m in range(mips)])):
        if raw is not None:
            try:
                record = json.loads(raw)
                found.append({"mip": mip, "coverage": record["coverage"], "sections": record["sections"]})
            except (ValueError, KeyError, TypeError):
                continue
    return found


def read(url: str, mip: int, z0: int, z1: int) -> list[np.ndarray]:
    """The stored histograms of sections z0..z1-1, in order; a missing one is an error naming the fix."""
    kv = open_kv(url)
    out: list[np.ndarray] = []
    for start in range(z0, z1, BATCH):
        zs = range(start, min(start + BATCH, z1))
        for z, raw in zip(zs, kv.get_many([key(mip, z) for z in zs])):
            if raw is None:
                raise LayerError(missing(url, mip, f"section {z}"))
            try:
                out.append(np.asarray(json.loads(raw)["levels"], dtype=np.uint64))
            except (ValueError, KeyError, TypeError):
                raise LayerError(f"{urls.display(url)}/{key(mip, z)} is not a levels file; "
                                 f"rerun `pumice contrast levels {urls.display(url)} --restart`") from None
    return out


def missing(url: str, mip: int, which: str) -> str:
    where = urls.display(url)
    mip_option = f" --mip {mip}" if mip else ""
    return (f"no luminance levels for {which} of {where} mip {mip}; run `pumice contrast levels {where}{mip_option}` first "
            f"(or give the window with --minval/--maxval)")


def check_present(url: str, mip: int, z0: int, z1: int) -> None:
    """Every section z0..z1-1 has a levels file (one listing, no reads)."""
    try:
        present = {name.rsplit("/", 1)[1] for name in open_kv(url).list(f"levels/{mip}/")}
    except (ValueError, PumiceError):  # a store without listing (http): each task finds out for its sections
        return
    absent = [z for z in range(z0, z1) if str(z) not in present]
    if absent:
        which = "any section" if len(absent) == z1 - z0 else f"{len(absent)} section(s) (first z {absent[0]})"
        raise LayerError(missing(url, mip, which))


def volume_sum(url: str, mip: int, z0: int, z1: int, bins: int) -> np.ndarray:
    """The sum of every section's histogram, streamed in batches (memory of one batch)."""
    total = np.zeros(bins, dtype=np.uint64)
    for start in range(z0, z1, BATCH):
        for counts in read(url, mip, start, min(start + BATCH, z1)):
            total += counts
    return total
