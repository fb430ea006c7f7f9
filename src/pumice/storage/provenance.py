"""The layer's ``provenance`` file (CloudVolume's layout): what was done to it, by what, when."""

from __future__ import annotations

import getpass
import socket
import time
from typing import Any

from .. import __version__
from .kv import open_kv


def read(url: str) -> dict[str, Any]:
    data = open_kv(url).get_json("provenance")
    if not isinstance(data, dict):
        data = {}
    data.setdefault("description", "")
    data.setdefault("owners", [])
    data.setdefault("sources", [])
    data.setdefault("processing", [])
    return data


def record(url: str, operation: str, params: dict[str, Any], job_id: str, sources: list[str] = ()) -> None:
    """Append one processing entry; a rerun of a finished job does not add a second."""
    data = read(url)
    if any(entry.get("job") == job_id for entry in data["processing"]):
        return
    for source in sources:
        if source not in data["sources"]:
            data["sources"].append(source)
    data["processing"].append({
        "method": {"task": operation, **params},
        "by": f"pumice {__version__}",
        "job": job_id,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": f"{getpass.getuser()}@{socket.gethostname()}",
    })
    open_kv(url).put_json("provenance", data)
