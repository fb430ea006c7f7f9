"""The layer's ``provenance`` file (CloudVolume's layout): what was done to it, by what, when.

Peers write it too, each its own way: CloudVolume's entries carry ``"method": "from_numpy"`` (a
string), other tools write entries that are not objects, lists that are single values, or no
dates. Reading accepts all of it, and appending keeps every peer's entry as it was written.
"""

from __future__ import annotations

import getpass
import socket
import time
from typing import Any

from .. import __version__
from ..errors import LayerError
from . import urls
from .kv import open_kv

LISTS = ("owners", "sources", "processing")


def read(url: str) -> dict[str, Any]:
    """The provenance as written, with ``description`` and the three lists always present.

    A lone value where a list belongs becomes a one-item list; entries are not changed. Raises
    LayerError if the file is not a JSON object (nothing can be appended to it safely).
    """
    data = open_kv(url).get_json("provenance")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LayerError(f"{urls.display(url)}/provenance is a JSON {type(data).__name__}, not an object; fix or remove it")
    if data.get("description") is None:
        data["description"] = ""
    for key in LISTS:
        value = data.get(key)
        data[key] = [] if value is None else value if isinstance(value, list) else [value]
    return data


def summary(entry: Any) -> dict[str, str]:
    """Date, operation, source and tool of one processing entry as short text, whatever its shape."""
    if not isinstance(entry, dict):
        return {"date": "?", "task": _text(entry) or "?", "source": "", "by": "?"}
    method = entry.get("method")
    task, source = (method.get("task"), _sources(method)) if isinstance(method, dict) else (method, None)
    return {"date": _text(entry.get("date")) or "?", "task": _text(task) or "?", "source": _text(source),
            "by": _text(entry.get("by")) or "?"}


def _sources(method: dict) -> Any:
    """What an entry says it read: Pumice's ``sources`` list, or a ``source`` as older entries and peers write it."""
    sources = method.get("sources")
    if isinstance(sources, list) and sources:
        return ", ".join(map(str, sources))
    return method.get("source")


def _text(value: Any, limit: int = 80) -> str:
    text = "" if value is None else " ".join(str(value).split())  # one line, whatever a peer stored
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record(url: str, operation: str, params: dict[str, Any], job_id: str, sources: list[str] = ()) -> list[str]:
    """Append one processing entry; a rerun of a finished job does not add a second.

    Returns notes for the run's summary: a provenance file that is not a JSON object is left as it
    is (it may be a peer's, and overwriting it would lose it), and the run is not recorded.
    """
    try:
        data = read(url)
    except LayerError as e:
        return [f"{e}; it was left as it is, so this {operation} is not recorded in it"]
    if any(isinstance(entry, dict) and entry.get("job") == job_id for entry in data["processing"]):
        return []
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
    return []
