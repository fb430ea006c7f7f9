"""pumice view PATH...: serve layers read-only and open them in the bundled Neuroglancer client."""

from __future__ import annotations

import argparse
import re
import threading
import webbrowser

from ..errors import PumiceError
from ..storage import urls
from ..storage.layer import Layer


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


def run(args: argparse.Namespace) -> int:
    from ..serve.files import LayerFileServer
    from ..serve.viewer import start_viewer

    if not 0 <= args.port <= 65534:
        raise PumiceError(f"--port must be between 0 and 65534, got {args.port}")
    layers = [Layer.open(path) for path in args.paths]  # a clear error for anything that is not a layer
    names = _names(args.paths)
    folders = {name: urls.local_path(layer.url) for name, layer in zip(names, layers) if urls.local_path(layer.url)}
    server = LayerFileServer(folders, bind=args.bind, port=args.port + 1 if args.port else 0)
    try:
        server.start()
    except OSError as e:
        raise PumiceError(f"cannot listen on {args.bind}:{args.port + 1 if args.port else 0} ({e.strerror}); choose another --port") from None
    sources = []
    for name, layer in zip(names, layers):
        source = server.url_for(name) if name in folders else urls.normalize(layer.url)
        if source.startswith("memory://"):
            raise PumiceError(f"{source} exists only inside one process; write the layer to a path to view it")
        sources.append((name, source, layer.info.type))
    try:
        viewer, url = start_viewer(sources, bind=args.bind, port=args.port)
    except OSError as e:
        server.stop()
        raise PumiceError(f"cannot start the viewer on {args.bind}:{args.port} ({e.strerror}); choose another --port") from None
    print(f"Neuroglancer: {url}")
    for name, source, layer_type in sources:
        print(f"  {layer_type:<12} {name}: {source}")
    print("Press Ctrl-C to stop.", flush=True)
    if args.open:
        webbrowser.open(url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("stopped")
    return 0
