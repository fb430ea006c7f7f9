"""Which objects an operation has written into a directory of a layer (meshes, skeletons).

One JSON list per merge partition, ``<dir>/.pumice/objects/<partition>.json``: a merge task
rewrites only its own, so the records never need a lock, and a later ``--ids`` run can keep the
objects it does not touch.
"""

from __future__ import annotations

from .kv import KV


def record_key(directory: str, partition: int) -> str:
    return f"{directory}/.pumice/objects/{partition}.json"


def recorded(kv: KV, directory: str) -> list[int]:
    out: set[int] = set()
    for key in kv.list(f"{directory}/.pumice/objects/"):
        out.update(kv.get_json(key) or [])
    return sorted(out)
