"""pumice view PATH...: serve layers read-only and open them in the bundled Neuroglancer client."""

from __future__ import annotations

import argparse
import re
import signal
import threading
import webbrowser
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PumiceError
from ..storage import urls
from ..storage.layer import Layer

if TYPE_CHECKING:
    import neuroglancer

    from ..serve.files import LayerFileServer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="look at layers in Neuroglancer (served locally, read-only)",
                       description="Serve local layers read-only over HTTP (with CORS, confined to the given folders) "
                       "and open them in the Neuroglancer client that ships with the neuroglancer Python package. "
                       "gs://, s3:// and http(s):// layers are handed to Neuroglancer directly. Ctrl-C stops.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--port", type=int, default=0, help="port of the viewer (default: any free port); data is served on PORT+1")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--open", action="store_true", help="also open the viewer in the default web browser")
    p.set_defaults(func=run)


def _names(paths: list[str]) -> list[str]:
    names: list[str] = []
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", urls.normalize(path).rstrip("/").rsplit("/", 1)[-1]) or "layer"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


@dataclass
class Served:
    server: "LayerFileServer"
    viewer: "neuroglancer.Viewer"
    url: str
    sources: list[tuple[str, str, str]]  # name, URL the client reads, layer type


def serve(paths: list[str], *, bind: str = "127.0.0.1", port: int = 0, segments: dict | None = None,
          layout: str = "xy-3d") -> Served:
    """Serve local layers read-only and start the Neuroglancer client with them added."""
    from ..serve.files import LayerFileServer
    from ..serve.viewer import start_viewer

    if not 0 <= port <= 65534:
        raise PumiceError(f"--port must be between 0 and 65534, got {port}")
    layers = [Layer.open(path) for path in paths]  # a clear error for anything that is not a layer
    names = _names(paths)
    sources = []
    for name, layer in zip(names, layers):
        if urls.scheme_of(layer.url) == "memory":
            raise PumiceError(f"{layer.url} exists only inside one process; write the layer to a path to view it")
    folders = {name: urls.local_path(layer.url) for name, layer in zip(names, layers) if urls.local_path(layer.url)}
    server = LayerFileServer(folders, bind=bind, port=port + 1 if port else 0)
    try:
        server.start()
    except OSError as e:
        raise PumiceError(f"cannot listen on {bind}:{port + 1 if port else 0} ({e.strerror}); choose another --port") from None
    for name, layer in zip(names, layers):
        sources.append((name, server.url_for(name) if name in folders else urls.normalize(layer.url), layer.info.type))
    try:
        viewer, url = start_viewer(sources, bind=bind, port=port, segments=segments, layout=layout)
    except OSError as e:
        server.stop()
        raise PumiceError(f"cannot start the viewer on {bind}:{port} ({e.strerror}); choose another --port") from None
    return Served(server, viewer, url, sources)


def run(args: argparse.Namespace) -> int:
    served = serve(args.paths, bind=args.bind, port=args.port)
    print(f"Neuroglancer: {served.url}")
    for name, source, layer_type in served.sources:
        print(f"  {layer_type:<12} {name}: {source}")
    print("Press Ctrl-C to stop.", flush=True)
    if args.open:
        webbrowser.open(served.url)
    stop = threading.Event()
    # Explicit handlers: Ctrl-C and a polite kill both end the wait, even where a parent shell
    # started us with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        served.server.stop()
        import neuroglancer

        neuroglancer.stop()
    print("stopped", flush=True)
    return 0
