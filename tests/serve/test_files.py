"""LayerFileServer: methods, CORS, Range, confinement and compressed stand-ins."""

from __future__ import annotations

import gzip
import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pumice.serve.files import LayerFileServer

PAYLOAD = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    layer = tmp_path / "layer"
    (layer / "4_4_40").mkdir(parents=True)
    (layer / "info").write_text('{"type": "image"}')
    (layer / "4_4_40" / "0.shard").write_bytes(PAYLOAD)
    (layer / "4_4_40" / "0-32_0-32_0-4.gz").write_bytes(gzip.compress(b"chunk bytes"))
    (layer / "empty").write_bytes(b"")
    (layer / "sub dir").mkdir()
    (layer / "sub dir" / "a b").write_bytes(b"spaced")
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret")
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "x").write_text("also secret")
    (tmp_path / "secret-gz").write_bytes(gzip.compress(b"secret"))
    os.symlink(outside, layer / "escape")
    os.symlink(tmp_path / "secret-dir", layer / "escape-dir")
    os.symlink(tmp_path / "secret-gz", layer / "hidden.gz")
    os.symlink(layer / "info", layer / "info-link")  # inside: allowed
    other = tmp_path / "other"
    other.mkdir()
    (other / "info").write_text("other")
    return {"layer": layer, "other": other, "root": tmp_path}


@pytest.fixture()
def server(tree: dict[str, Path]) -> Iterator[LayerFileServer]:
    with LayerFileServer({"layer": tree["layer"], "other": tree["other"]}) as srv:
        yield srv


def request(
    srv: LayerFileServer, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request (http.client leaves the path exactly as given)."""
    host, port = srv.base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def test_start_returns_base_url_and_url_for(server: LayerFileServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    assert not server.base_url.endswith(":0")
    assert server.url_for("layer") == server.base_url + "/layer"
    with pytest.raises(KeyError):
        server.url_for("nope")


def test_get_file(server: LayerFileServer) -> None:
    status, headers, body = request(server, "GET", "/layer/4_4_40/0.shard")
    assert status == 200
    assert body == PAYLOAD
    assert headers["content-length"] == str(len(PAYLOAD))
    assert headers["accept-ranges"] == "bytes"
    assert "content-encoding" not in headers


def test_get_second_folder_and_query_string(server: LayerFileServer) -> None:
    status, _, body = request(server, "GET", "/other/info?x=1")
    assert (status, body) == (200, b"other")


def test_get_percent_encoded_name(server: LayerFileServer) -> None:
    status, _, body = request(server, "GET", "/layer/sub%20dir/a%20b")
    assert (status, body) == (200, b"spaced")


def test_symlink_inside_folder_is_served(server: LayerFileServer) -> None:
    status, _, body = request(server, "GET", "/layer/info-link")
    assert (status, body) == (200, b'{"type": "image"}')


def test_empty_file(server: LayerFileServer) -> None:
    status, headers, body = request(server, "GET", "/layer/empty")
    assert (status, body, headers["content-length"]) == (200, b"", "0")


def test_head(server: LayerFileServer) -> None:
    status, headers, body = request(server, "HEAD", "/layer/4_4_40/0.shard")
    assert status == 200
    assert body == b""
    assert headers["content-length"] == str(len(PAYLOAD))


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=1000-", 1000, 1023),
        ("bytes=-5", 1019, 1023),
        ("bytes=1020-5000", 1020, 1023),  # last clamped to the file end
        ("bytes=-5000", 0, 1023),  # suffix longer than the file: whole file
    ],
)
def test_range(server: LayerFileServer, spec: str, first: int, last: int) -> None:
    status, headers, body = request(server, "GET", "/layer/4_4_40/0.shard", {"Range": spec})
    assert status == 206
    assert body == PAYLOAD[first : last + 1]
    assert headers["content-range"] == f"bytes {first}-{last}/{len(PAYLOAD)}"
    assert headers["content-length"] == str(last - first + 1)


def test_range_head(server: LayerFileServer) -> None:
    status, headers, body = request(server, "HEAD", "/layer/4_4_40/0.shard", {"Range": "bytes=0-9"})
    assert (status, body) == (206, b"")
    assert headers["content-range"] == "bytes 0-9/1024"
    assert headers["content-length"] == "10"


@pytest.mark.parametrize("spec", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_range_unsatisfiable(server: LayerFileServer, spec: str) -> None:
    status, headers, body = request(server, "GET", "/layer/4_4_40/0.shard", {"Range": spec})
    assert status == 416
    assert headers["content-range"] == "bytes */1024"
    assert headers["content-length"] == "0"
    assert body == b""


def test_range_on_empty_file_unsatisfiable(server: LayerFileServer) -> None:
    status, headers, _ = request(server, "GET", "/layer/empty", {"Range": "bytes=0-"})
    assert status == 416
    assert headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("spec", ["items=0-5", "bytes=0-1,4-5", "bytes=9-3", "bytes=-"])
def test_malformed_or_multi_range_ignored(server: LayerFileServer, spec: str) -> None:
    status, _, body = request(server, "GET", "/layer/4_4_40/0.shard", {"Range": spec})
    assert (status, body) == (200, PAYLOAD)


@pytest.mark.parametrize("path", ["/layer/info", "/layer/missing", "/nowhere/info"])
def test_cors_header_on_every_response(server: LayerFileServer, path: str) -> None:
    _, headers, _ = request(server, "GET", path, {"Origin": "http://elsewhere:1234"})
    assert headers["access-control-allow-origin"] == "*"
    assert "Content-Range" in headers["access-control-expose-headers"]


def test_options_preflight(server: LayerFileServer) -> None:
    status, headers, _ = request(
        server,
        "OPTIONS",
        "/layer/4_4_40/0.shard",
        {
            "Origin": "http://elsewhere:1234",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
    )
    assert status in (200, 204)
    assert headers["access-control-allow-origin"] == "*"
    methods = {m.strip() for m in headers["access-control-allow-methods"].split(",")}
    assert {"GET", "HEAD"} <= methods
    assert "range" in headers["access-control-allow-headers"].lower()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"])
def test_other_methods_not_allowed(server: LayerFileServer, tree: dict[str, Path], method: str) -> None:
    status, headers, _ = request(server, method, "/layer/info", body=b"overwrite")
    assert status == 405
    assert "GET" in headers["allow"]
    assert headers["access-control-allow-origin"] == "*"
    assert (tree["layer"] / "info").read_text() == '{"type": "image"}'


@pytest.mark.parametrize(
    "path", ["/layer/missing", "/layer/4_4_40", "/layer/4_4_40/", "/layer/", "/layer", "/", "/nowhere/info"]
)
def test_missing_and_directories_404(server: LayerFileServer, path: str) -> None:
    status, headers, _ = request(server, "GET", path)
    assert status == 404
    assert headers["content-length"] == "0"


@pytest.mark.parametrize(
    "path",
    [
        "/layer/../secret.txt",
        "/layer/4_4_40/../../secret.txt",
        "/layer/%2e%2e/secret.txt",
        "/layer/%2E%2E/secret.txt",
        "/layer/..%2fsecret.txt",
        "/layer/%2e%2e%2fsecret.txt",
        "/layer/..%5csecret.txt",
        "/layer//%2e%2e/secret.txt",
        "/other/../layer/../secret.txt",
        "/layer/escape",
        "/layer/escape-dir/x",
        "/layer/hidden",  # stand-in "hidden.gz" is a symlink out of the folder
        "/layer/hidden.gz",
    ],
)
def test_escapes_refused(server: LayerFileServer, path: str) -> None:
    status, _, body = request(server, "GET", path)
    assert status in (403, 404)
    assert b"secret" not in body


@pytest.mark.parametrize("form", ["plain", "encoded"])
def test_absolute_paths_refused(server: LayerFileServer, tree: dict[str, Path], form: str) -> None:
    # An absolute path after the folder name must never be joined as an absolute path.
    secret = str(tree["root"] / "secret.txt")
    if form == "encoded":
        secret = secret.replace("/", "%2F")
    status, _, body = request(server, "GET", "/layer/" + secret)
    assert status in (403, 404)
    assert b"secret" not in body


def test_gzip_stand_in(server: LayerFileServer) -> None:
    status, headers, body = request(server, "GET", "/layer/4_4_40/0-32_0-32_0-4")
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == b"chunk bytes"
    assert headers["content-length"] == str(len(body))


def test_gzip_file_asked_by_own_name_is_plain(server: LayerFileServer) -> None:
    status, headers, body = request(server, "GET", "/layer/4_4_40/0-32_0-32_0-4.gz")
    assert status == 200
    assert "content-encoding" not in headers
    assert gzip.decompress(body) == b"chunk bytes"


def test_brotli_stand_in(server: LayerFileServer, tree: dict[str, Path]) -> None:
    (tree["layer"] / "chunk.br").write_bytes(b"\x0b\x02\x80brotli")
    status, headers, body = request(server, "GET", "/layer/chunk")
    assert (status, body) == (200, b"\x0b\x02\x80brotli")
    assert headers["content-encoding"] == "br"


def test_plain_file_preferred_over_stand_in(server: LayerFileServer, tree: dict[str, Path]) -> None:
    (tree["layer"] / "info.gz").write_bytes(gzip.compress(b"stale"))
    status, headers, body = request(server, "GET", "/layer/info")
    assert (status, body) == (200, b'{"type": "image"}')
    assert "content-encoding" not in headers


def test_keep_alive_many_requests(server: LayerFileServer) -> None:
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for i in range(20):
            conn.request("GET", "/layer/4_4_40/0.shard", headers={"Range": f"bytes={i}-{i}"})
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (206, PAYLOAD[i : i + 1])
    finally:
        conn.close()


def test_quiet(tree: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    with LayerFileServer({"layer": tree["layer"]}) as srv:
        request(srv, "GET", "/layer/info")
        request(srv, "GET", "/layer/missing")
        request(srv, "POST", "/layer/info")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_stop_closes_socket(tree: dict[str, Path]) -> None:
    srv = LayerFileServer({"layer": tree["layer"]})
    base = srv.start()
    assert srv.start() == base  # idempotent
    srv.stop()
    srv.stop()  # safe twice
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    with pytest.raises(OSError):
        conn.request("GET", "/layer/info")
        conn.getresponse()


def test_invalid_folder_names(tree: dict[str, Path]) -> None:
    with pytest.raises(ValueError):
        LayerFileServer({"a/b": tree["layer"]})
    with pytest.raises(ValueError):
        LayerFileServer({"..": tree["layer"]})
    with pytest.raises(ValueError):
        LayerFileServer({"x": tree["layer"] / "info"})  # a file, not a folder
