"""A small read-only HTTP file server for local Precomputed layers.

Neuroglancer runs in the browser and can only read layers over HTTP, so ``pumice view`` serves
each local layer folder under a URL prefix. The server is deliberately small and strict:

* GET and HEAD only; every other method gets 405 (nothing here may change files).
* CORS on every response: the Neuroglancer client is served from another port (another origin).
* HTTP Range requests (one range): Neuroglancer reads sharded Precomputed files by byte range.
* Confinement: a request can only reach regular files whose real path lies inside its folder.
* ``X.gz`` / ``X.br`` stand in for a missing ``X`` with the matching ``Content-Encoding``, because
  CloudVolume may write compressed chunk files under those names; browsers decode them.
"""

from __future__ import annotations

import http.server
import mimetypes
import os
import re
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

__all__ = ["LayerFileServer"]

# Compressed stand-ins tried, in order, when the requested file itself is absent.
_ENCODED_VARIANTS: tuple[tuple[str, str], ...] = (("gz", "gzip"), ("br", "br"))

_ALLOWED_METHODS = "GET, HEAD, OPTIONS"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_COPY_BLOCK = 1 << 20


class _Unsatisfiable(Exception):
    """The Range header is well formed but no byte of it exists in the file (416)."""


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single-range ``Range`` header into an inclusive (first, last) byte pair.

    Returns None when the header should be ignored (malformed, or several ranges: RFC 9110
    lets a server answer those with the whole file). Raises _Unsatisfiable for 416.
    """
    m = _RANGE_RE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # "bytes=-n": the last n bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # invalid range-spec: ignore rather than guess
    if first >= size:
        raise _Unsatisfiable
    return first, min(last, size - 1)


def _is_within(path: str, root: str) -> bool:
    """True when the real path ``path`` is ``root`` or below it (both already realpath'd)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives on Windows
        return False


class _Handler(http.server.BaseHTTPRequestHandler):
    """Request handler; the owning server carries the folder table in ``server.roots``."""

    server: _Server
    server_version = "pumice-serve"
    protocol_version = "HTTP/1.1"  # keep-alive: Neuroglancer issues many small requests
    # Headers and body go out in separate writes; with Nagle's algorithm on, each keep-alive
    # response then waits for the client's delayed ACK (~40 ms per chunk request).
    disable_nagle_algorithm = True

    # -- plumbing --------------------------------------------------------------------------

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        # Quiet by design: a viewer session makes thousands of requests.
        pass

    def __getattr__(self, name: str):
        # BaseHTTPRequestHandler dispatches to do_<METHOD> and answers 501 when it is missing.
        # Any method other than GET/HEAD/OPTIONS is understood but not allowed here: 405.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def end_headers(self) -> None:
        # CORS on every response, errors included, so the browser shows the real status.
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header(
            "Access-Control-Expose-Headers",
            "Content-Range, Content-Length, Content-Encoding, Accept-Ranges",
        )
        super().end_headers()

    def _send_empty(self, status: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _method_not_allowed(self) -> None:
        # The request body (if any) is left unread, so this connection cannot be reused.
        self.close_connection = True
        self._send_empty(405, {"Allow": _ALLOWED_METHODS, "Connection": "close"})

    # -- methods ---------------------------------------------------------------------------

    def do_OPTIONS(self) -> None:
        # CORS preflight: a Range header with a non-trivial value makes browsers ask first.
        self._send_empty(
            204,
            {
                "Allow": _ALLOWED_METHODS,
                "Access-Control-Allow-Methods": "GET, HEAD",
                "Access-Control-Allow-Headers": "Range",
                "Access-Control-Max-Age": "86400",
            },
        )

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    # -- file lookup -----------------------------------------------------------------------

    def _resolve(self) -> tuple[str, str | None, str] | int:
        """Map the request path to (real file path, content-encoding, name for the type).

        Returns an HTTP status instead when the request must be refused.
        """
        raw = urlsplit(self.path).path
        # Decode first, then split: "%2e%2e" and "%2f" must become real ".." and "/" before
        # the checks below, never after them.
        decoded = unquote(raw, errors="strict")
        if "\x00" in decoded or "\\" in decoded:
            return 403
        parts = decoded.split("/")
        # parts[0] is "" (the leading slash); parts[1] names the folder.
        if len(parts) < 3 or parts[1] not in self.server.roots:
            return 404
        rel = [p for p in parts[2:] if p not in ("", ".")]
        if any(p == ".." for p in rel):
            return 403
        if not rel:
            return 404  # the folder itself: no listings
        root = self.server.roots[parts[1]]
        wanted = os.path.join(root, *rel)
        candidates: list[tuple[str, str | None]] = [(wanted, None)]
        candidates += [(f"{wanted}.{ext}", enc) for ext, enc in _ENCODED_VARIANTS]
        for index, (candidate, encoding) in enumerate(candidates):
            real = os.path.realpath(candidate)
            if not _is_within(real, root):
                # Symlink (or anything else) leading out of the folder.
                return 403
            if os.path.isfile(real):
                return real, encoding, rel[-1]
            if index == 0 and os.path.exists(real):
                return 404  # a directory: never listed, and no ".gz" stand-in for it
        return 404

    def _serve(self, send_body: bool) -> None:
        try:
            found = self._resolve()
        except UnicodeDecodeError:
            found = 404
        if isinstance(found, int):
            self._send_empty(found)
            return
        path, encoding, name = found
        try:
            handle: BinaryIO = open(path, "rb")
        except OSError:
            self._send_empty(404)
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            status, first, last = 200, 0, size - 1
            range_header = self.headers.get("Range")
            if range_header:
                try:
                    parsed = _parse_range(range_header, size)
                except _Unsatisfiable:
                    self._send_empty(416, {"Content-Range": f"bytes */{size}"})
                    return
                if parsed is not None:
                    status, (first, last) = 206, parsed
            length = last - first + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            # Layers may be rewritten while viewed: let the browser revalidate every time.
            self.send_header("Cache-Control", "no-cache")
            if encoding is not None:
                self.send_header("Content-Encoding", encoding)
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if send_body and length:
                handle.seek(first)
                remaining = length
                while remaining > 0:
                    block = handle.read(min(_COPY_BLOCK, remaining))
                    if not block:
                        break  # file shrank underneath us; the client sees a short body
                    self.wfile.write(block)
                    remaining -= len(block)


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer holding the served folders; silent about dropped connections."""

    daemon_threads = True
    roots: dict[str, str]

    def handle_error(self, request: object, client_address: object) -> None:
        # Browsers cancel in-flight chunk requests all the time (e.g. while panning); the
        # default prints a traceback for each of them to stderr.
        pass


class _Server6(_Server):
    address_family = socket.AF_INET6


def reachable_host() -> str:
    """A name other machines can use for this one, for servers bound to the wildcard address."""
    fqdn = socket.getfqdn()
    return fqdn if fqdn not in ("localhost", "localhost.localdomain") else socket.gethostname()


class LayerFileServer:
    """Serve local folders read-only over HTTP, each under ``/<name>/``.

    Usage::

        with LayerFileServer({"em": Path("out/em")}) as srv:
            url = srv.url_for("em")   # http://127.0.0.1:PORT/em
    """

    def __init__(self, folders: dict[str, Path], bind: str = "127.0.0.1", port: int = 0) -> None:
        self._roots: dict[str, str] = {}
        for name, folder in folders.items():
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"invalid folder name {name!r}: must be one URL path segment")
            real = os.path.realpath(Path(folder))
            if not os.path.isdir(real):
                raise ValueError(f"not a folder: {folder}")
            self._roots[name] = real
        self._bind = bind
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    def start(self) -> str:
        """Start serving in a daemon thread; return the base URL (no trailing slash)."""
        if self._server is not None:
            assert self._base_url is not None
            return self._base_url
        server_class = _Server6 if ":" in self._bind else _Server
        server = server_class((self._bind, self._port), _Handler)
        server.roots = dict(self._roots)
        port = server.server_address[1]
        host = self._bind
        if host in ("0.0.0.0", "::", ""):
            host = reachable_host()
        elif ":" in host:
            host = f"[{host}]"
        self._server = server
        self._base_url = f"http://{host}:{port}"
        # A short poll interval keeps stop() quick (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="pumice-layer-files", daemon=True
        )
        self._thread.start()
        return self._base_url

    @property
    def base_url(self) -> str:
        """The base URL; the server must have been started."""
        if self._base_url is None:
            raise RuntimeError("LayerFileServer is not started")
        return self._base_url

    def url_for(self, name: str) -> str:
        """URL of the folder served under ``name`` (no trailing slash)."""
        if name not in self._roots:
            raise KeyError(f"no folder served under {name!r}")
        return f"{self.base_url}/{quote(name, safe='')}"

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self._base_url = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> LayerFileServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
