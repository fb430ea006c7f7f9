"""pumice info PATH [--json]"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import LayerError, PumiceError
from ..execution.ledger import jobs
from ..geometry import format_vec
from ..storage import levels, provenance, records, urls
from ..storage.kv import open_kv
from ..ops.pyramid import off_grid_mips
from ..storage.layer import Layer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a Precomputed layer: type, scales, bounds, meshes, provenance, jobs")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def describe(path: str) -> dict[str, Any]:
    layer = Layer.open(path)
    info = layer.info
    scales = []
    for mip, s in enumerate(info.scales):
        lo_nm = [o * r for o, r in zip(s.voxel_offset, s.resolution)]
        hi_nm = [(o + n) * r for o, n, r in zip(s.voxel_offset, s.size, s.resolution)]
        scales.append({
            "mip": mip, "key": s.key, "size": list(s.size), "resolution": list(s.resolution),
            "voxel_offset": list(s.voxel_offset), "chunk_size": list(s.chunk_size), "encoding": s.encoding,
            "sharded": s.sharding is not None, "chunk_files": list(layer.seen_chunk_suffixes(mip)),
            "bounds_voxels": s.bounds.to_list(), "bounds_nm": [*lo_nm, *hi_nm],
        })
    return {
        "url": urls.display(layer.url),
        "type": info.type,
        "data_type": info.data_type,
        "num_channels": info.num_channels,
        "scales": scales,
        "mesh": info.extra.get("mesh"),
        "skeletons": info.extra.get("skeletons"),
        "mesh_details": _objects_dir(layer.url, info.extra.get("mesh")),
        "skeleton_details": _objects_dir(layer.url, info.extra.get("skeletons")),
        "levels": levels.recorded_mips(layer.url, len(info.scales)),
        **_provenance(layer),
        "jobs": [{k: j.get(k) for k in ("id", "operation", "status", "stages", "done", "updated")} for j in jobs(layer.url)],
    }


def _provenance(layer: Layer) -> dict[str, Any]:
    """The processing entries as a peer or Pumice wrote them (a file that cannot be read is reported,
    not fatal), and the mips they do not show to lie on the global grid."""
    try:
        processing, problem = provenance.read(layer.url)["processing"], None
    except LayerError as e:
        processing, problem = [], str(e)
    off_grid = [{"mip": mip, "off_by_up_to": list(off)} for mip, off in off_grid_mips(layer.info, processing)]
    return {"provenance": processing, "provenance_problem": problem, "off_grid_mips": off_grid}


FORMATS = {"neuroglancer_legacy_mesh": "legacy", "neuroglancer_multilod_draco": "multi-resolution Draco",
           "neuroglancer_skeletons": "Precomputed"}


def _objects_dir(url: str, directory: Any) -> dict[str, Any] | None:
    """Format and object count of a mesh or skeleton directory, from its info and Pumice's records."""
    if not directory:
        return None
    kv = open_kv(url)
    try:
        sub = kv.get_json(f"{directory}/info") or {}
    except (PumiceError, ValueError):
        sub = {}
    try:
        objects: int | None = len(records.recorded(kv, str(directory)))
    except (PumiceError, ValueError):  # e.g. http: no listing
        objects = None
    return {"dir": directory, "format": FORMATS.get(sub.get("@type"), sub.get("@type") or "no info"),
            "sharded": bool(sub.get("sharding")), "objects": objects}


def _describe_dir(details: dict[str, Any] | None) -> str:
    if not details:
        return "none"
    parts = [details["format"]] + (["sharded"] if details["sharded"] else [])
    if details["objects"]:
        parts.append(f"{details['objects']} objects")
    return f"{details['dir']} ({', '.join(parts)})"


def _describe_chunk_files(suffixes: list[str]) -> str:
    """Nothing for plain chunk names (the usual case) or none found; otherwise the endings found."""
    if all(s == "" for s in suffixes):
        return ""
    return "  chunk files " + " or ".join(s or "plain" for s in suffixes)


def render(d: dict[str, Any]) -> str:
    lines = [d["url"], f"  {d['type']} {d['data_type']}, {d['num_channels']} channel(s), {len(d['scales'])} scale(s)"]
    for s in d["scales"]:
        lines.append(
            f"  mip {s['mip']} {s['key']:>10}: size {format_vec(s['size'])}  chunk {format_vec(s['chunk_size'])}  "
            f"{s['encoding']}{'  sharded' if s['sharded'] else ''}{_describe_chunk_files(s['chunk_files'])}"
        )
        b, n = s["bounds_voxels"], s["bounds_nm"]
        lines.append(f"      bounds {format_vec(b[:3])} - {format_vec(b[3:])} voxels = "
                     f"{format_vec(n[:3])} - {format_vec(n[3:])} nm")
    if any(any(s["chunk_files"]) for s in d["scales"]):
        lines.append(f"  .gz/.br chunk files (CloudVolume's compression): Pumice reads them, TensorStore does not; "
                     f"`pumice transfer {d['url']} NEW` makes a copy with plain names")
    lines.append(f"  meshes: {_describe_dir(d['mesh_details'])}   skeletons: {_describe_dir(d['skeleton_details'])}")
    for record in d["levels"]:
        z0, z1 = record["sections"]
        lines.append(f"  levels: mip {record['mip']}, sections {z0}-{z1 - 1}, {record['coverage']:.0%} of each sampled "
                     f"(levels/{record['mip']}/<z>)")
    if d["provenance_problem"]:
        lines.append(f"  provenance: unreadable: {d['provenance_problem']}")
    else:
        lines.append(f"  provenance: {len(d['provenance'])} entr{'y' if len(d['provenance']) == 1 else 'ies'}")
    for entry in map(provenance.summary, d["provenance"]):
        lines.append(f"    {entry['date']}  {entry['task']}{' from ' + entry['source'] if entry['source'] else ''}  ({entry['by']})")
    if d["off_grid_mips"]:
        mips = [m["mip"] for m in d["off_grid_mips"]]
        worst = [max(m["off_by_up_to"][a] for m in d["off_grid_mips"]) for a in range(3)]
        offset = format_vec(d["scales"][0]["voxel_offset"])
        lines.append(f"  WARNING: mip{'s' if len(mips) > 1 else ''} {', '.join(map(str, mips))} may sit up to {format_vec(worst)} "
                     f"mip-0 voxels off: made (by CloudVolume, Igneous or an older Pumice) with groups counted from the layer's "
                     f"first voxel, and offset {offset} is not a multiple of the factor; remake them on the global grid with "
                     f"`pumice delete {d['url']} --mip {mips[0]}` then `pumice downsample {d['url']}`")
    for job in d["jobs"]:
        done = sum((job.get("done") or {}).values())
        total = sum((job.get("stages") or {}).values())
        if job.get("status") != "complete":
            lines.append(f"  INCOMPLETE: job {job['id']} ({job.get('operation')}) has {done}/{total} tasks done, "
                         f"status {job.get('status')}; rerun its command to finish")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    d = describe(args.path)
    print(json.dumps(d, indent=2) if args.json else render(d))
    return 0
