"""Side inputs: files a user hands an operation (a mapping, an edge table, transforms).

A planner may run on a laptop while its tasks run on cluster workers, which cannot see the laptop's
files, and a queue worker rebuilds the plan from its recipe. So a side input is *staged*: copied,
byte for byte, into the destination's bookkeeping (``.pumice/inputs/<sha256>-<name>``), where every
worker on every store reads it. Its digest goes into the job's params, so a changed file makes a new
job, and the recipe records the staged URL, so a rebuilt plan neither needs the user's file nor
writes anything.

``SideInput.of`` only reads (the digest, the URL the bytes will have); the plan's ``prepare`` calls
``put``. A planner given an input that is already staged (a queue worker's rebuild) gets the same
URL and digest back, and ``put`` then has nothing to do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PumiceError
from . import bookkeeping, urls
from .kv import KV, open_kv


@dataclass(frozen=True)
class SideInput:
    given: str  # what the user passed: a path or URL
    url: str  # where every worker reads it
    digest: str  # sha256 of its bytes: part of the job id
    size: int

    @classmethod
    def of(cls, given: str, dest: str, what: str = "input file") -> "SideInput":
        """The side input ``given`` (a local path or a URL) of a job writing to ``dest``; nothing is written."""
        data = read(given, what)
        digest = hashlib.sha256(data).hexdigest()
        name = Path(str(given).rstrip("/")).name
        staged_name = name if name.startswith(digest[:16] + "-") else f"{digest[:16]}-{name}"
        return cls(str(given), urls.join(urls.normalize(dest), f"{bookkeeping.INPUTS}/{staged_name}"), digest, len(data))

    def put(self) -> None:
        """Copy the bytes to ``url`` (a plan's prepare step); nothing to do if they are there already."""
        where, key = self.url.rsplit("/", 1)
        kv = open_kv(where)
        existing = kv.get(key)
        if existing is not None and hashlib.sha256(existing).hexdigest() == self.digest:
            return
        kv.put(key, read(self.given, "input file"))


def read(given: str, what: str = "input file") -> bytes:
    """The bytes of a local path or of a URL any store can serve; a missing file is a one-line error."""
    url = urls.normalize(str(given))
    where, key = url.rsplit("/", 1)
    try:
        data = open_kv(where).get(key)
    except PumiceError:
        data = None
    if data is None:
        raise PumiceError(f"no {what} at {urls.display(url)}; check the path")
    return data


# -- tables: uint64 key -> value pairs that tasks look up a page at a time ------------------------------
# A mapping of a billion supervoxels is 16 GB; a task needs the rows of the few thousand labels in its
# block. So a table is staged sorted by key, in pages, behind an index of each page's first key: a task
# reads the header, the index and only the pages its keys fall in, one page at a time, and its memory
# follows its block, not the table.

TABLE_MAGIC = b"PUMTBL01"
TABLE_PAGE = 65536  # pairs per page: 1 MiB


def table_bytes(keys: np.ndarray, values: np.ndarray, page: int = TABLE_PAGE) -> bytes:
    """The staged form of a table: header (magic, pairs per page, pairs), each page's first key, then the
    pairs sorted by key, all little-endian uint64. ``keys`` must be unique."""
    order = np.argsort(keys, kind="stable")
    pairs = np.empty((len(keys), 2), dtype="<u8")
    pairs[:, 0], pairs[:, 1] = np.asarray(keys, dtype=np.uint64)[order], np.asarray(values, dtype=np.uint64)[order]
    index = pairs[::page, 0].astype("<u8")
    header = np.array([page, len(keys)], dtype="<u8")
    return TABLE_MAGIC + header.tobytes() + index.tobytes() + pairs.tobytes()


def of_bytes(data: bytes, name: str, dest: str) -> SideInput:
    """A side input whose bytes a planner made (e.g. a user's mapping in its staged table form)."""
    digest = hashlib.sha256(data).hexdigest()
    url = urls.join(urls.normalize(dest), f"{bookkeeping.INPUTS}/{digest[:16]}-{name}")
    return _Made(url, url, digest, len(data), data)


@dataclass(frozen=True)
class _Made(SideInput):
    data: bytes = b""

    def put(self) -> None:
        where, key = self.url.rsplit("/", 1)
        kv = open_kv(where)
        if kv.get_range(key, 0, 0) is None:
            kv.put(key, self.data)


def lookup(url: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``keys`` in the staged table at ``url``, and which keys it holds (others get 0)."""
    kv, name, page, count, start = _table_header(url)
    pages = -(-count // page)
    first = np.frombuffer(kv.get_range(name, 24, 24 + 8 * pages) or b"", dtype="<u8")
    keys = np.asarray(keys, dtype=np.uint64)
    values = np.zeros(len(keys), dtype=np.uint64)
    found = np.zeros(len(keys), dtype=bool)
    where_page = np.searchsorted(first, keys, side="right") - 1
    for p in np.unique(where_page[where_page >= 0]):
        lo, hi = int(p) * page, min((int(p) + 1) * page, count)
        pairs = np.frombuffer(kv.get_range(name, start + 16 * lo, start + 16 * hi), dtype="<u8").reshape(-1, 2)
        mine = np.flatnonzero(where_page == p)
        at = np.searchsorted(pairs[:, 0], keys[mine])
        hit = (at < len(pairs)) & (pairs[np.minimum(at, len(pairs) - 1), 0] == keys[mine])
        values[mine[hit]], found[mine[hit]] = pairs[at[hit], 1], True
    return values, found


def table_slice(url: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs [start, stop) of the staged table at ``url`` (keys, values), read by byte range: tasks
    that each take a slice of a table hold only their slice."""
    kv, name, _, count, first = _table_header(url)
    stop = min(stop, count)
    if stop <= start:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    pairs = np.frombuffer(kv.get_range(name, first + 16 * start, first + 16 * stop), dtype="<u8").reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def _table_header(url: str) -> tuple[KV, str, int, int, int]:
    """The store and name of a staged table, its pairs per page, its pairs, and where they start."""
    where, name = url.rsplit("/", 1)
    kv = open_kv(where)
    head = kv.get_range(name, 0, 24)
    if head is None or head[:8] != TABLE_MAGIC:
        raise PumiceError(f"{urls.display(url)} is not a staged table; rerun the command that staged it")
    page, count = (int(v) for v in np.frombuffer(head[8:24], dtype="<u8"))
    return kv, name, page, count, 24 + 8 * -(-count // page)
