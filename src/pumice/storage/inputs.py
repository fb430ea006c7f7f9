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

from ..errors import PumiceError
from . import bookkeeping, urls
from .kv import open_kv


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
