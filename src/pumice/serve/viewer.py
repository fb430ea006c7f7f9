"""Open Precomputed layers in a Neuroglancer viewer served by the neuroglancer Python package.

The package serves its bundled client itself and keeps the viewer state in Python, so tests and
``pumice view`` can change the state (and take screenshots) after the page has loaded.
"""

from __future__ import annotations

import re

from collections.abc import Iterable, Mapping

import neuroglancer

from .files import reachable_host

__all__ = ["LAYER_TYPES", "precomputed_source", "select_segments", "start_viewer"]

LAYER_TYPES = ("image", "segmentation")


def precomputed_source(url: str) -> str:
    """Neuroglancer data-source string for a Precomputed layer at ``url``.

    Neuroglancer needs the ``precomputed://`` prefix to pick its reader; a trailing slash would
    produce ``//info`` requests, which some servers refuse.
    """
    url = url.strip()
    if url.startswith("precomputed://"):
        url = url[len("precomputed://") :]
    return "precomputed://" + url.rstrip("/")


def _segment_ids(ids: Iterable[int]) -> list[int]:
    out = []
    for i in ids:
        value = int(i)
        if value < 0 or value >= 2**64:
            raise ValueError(f"segment id out of uint64 range: {i}")
        out.append(value)
    return out


def select_segments(viewer: neuroglancer.Viewer, layer: str, segments: Iterable[int]) -> None:
    """Replace the selected (visible) segments of segmentation layer ``layer``."""
    ids = _segment_ids(segments)
    with viewer.txn() as s:
        managed = s.layers[layer]
        if managed.type != "segmentation":
            raise ValueError(f"layer {layer!r} is a {managed.type} layer, not a segmentation layer")
        managed.segments = ids


def start_viewer(
    layers: list[tuple[str, str, str]],
    bind: str = "127.0.0.1",
    port: int = 0,
    *,
    segments: Mapping[str, Iterable[int]] | None = None,
    layout: str = "xy-3d",
) -> tuple[neuroglancer.Viewer, str]:
    """Start a Neuroglancer viewer showing ``layers``; return (viewer, viewer URL).

    ``layers`` holds (name, source_url, layer_type) with layer_type ``"image"`` or
    ``"segmentation"`` and source_url an ``http(s)://``, ``gs://`` or ``s3://`` URL of a
    Precomputed layer. ``segments`` maps segmentation layer names to the segment ids to select.

    Neuroglancer's web server is one per process: ``bind``/``port`` take effect only if it is not
    running yet (call ``neuroglancer.stop()`` first to move it).
    """
    types = {name: layer_type for name, _, layer_type in layers}
    if len(types) != len(layers):
        raise ValueError(f"layer names must be unique: {[name for name, _, _ in layers]}")
    for name, layer_type in types.items():
        if layer_type not in LAYER_TYPES:
            raise ValueError(f"layer {name!r}: type must be one of {LAYER_TYPES}, not {layer_type!r}")
    segments = dict(segments or {})
    for name in segments:
        if types.get(name) != "segmentation":
            raise ValueError(f"segments given for {name!r}, which is not a segmentation layer")

    neuroglancer.set_server_bind_address(bind, port)
    viewer = neuroglancer.Viewer()
    with viewer.txn() as s:
        for name, url, layer_type in layers:
            source = precomputed_source(url)
            if layer_type == "image":
                s.layers[name] = neuroglancer.ImageLayer(source=source)
            else:
                s.layers[name] = neuroglancer.SegmentationLayer(
                    source=source, segments=_segment_ids(segments.get(name, ()))
                )
        # Position, zoom and dimensions are left to Neuroglancer: it centres on the first
        # layer's bounds once the info files have loaded.
        s.layout = layout
    url = viewer.get_viewer_url()
    if bind in ("0.0.0.0", "::", ""):
        # Neuroglancer names the wildcard address "localhost"; other machines need our name.
        url = re.sub(r"^http://[^/]+:", f"http://{reachable_host()}:", url)
    return viewer, url
