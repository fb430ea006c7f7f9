"""``pumice serve cleave``: the cleave protocol neu3/NeuTu speak (neuclease's cleave server), backed by
an edge table (``pumice edges``) and a supervoxel -> body mapping.

``POST /compute-cleave`` takes ``{"body-id": B, "seeds": {"1": [sv...], "2": [...]}, "method": ...}``
and answers with the request echoed plus ``request-timestamp``, ``seeds`` (each list sorted),
``assignments`` (every supervoxel of the body under exactly one label, ``"0"`` for those no seed
reaches), ``warnings``, ``info`` and, on failure, ``errors``. Methods:

- ``seeded-mst`` (default): edge scores are costs; a virtual root joins every seed below every
  edge, the minimum spanning tree is taken (Kruskal, ties broken by the supervoxel ids), the root is
  removed, and each tree takes its seed's label. An edge that would join two seeds' trees would
  close a cycle through the root, so it is skipped.
- ``echo-seeds``: the seeds keep their labels, every other supervoxel is unassigned.

Status codes: 400 malformed JSON, an unknown method, a seed under two labels; 412 no seeds, or a
seed not in the body; 413 a request over ``MAX_REQUEST`` bytes; 415 a content type other than JSON;
404 an unknown path; ``OPTIONS`` answers with the allowed methods (clients probe with it).

A body's supervoxels and edges are found by binary search in arrays sorted by body, so a lookup
costs the same however many bodies there are, plus the body's own edges. Ids are kept as exact
integers (JSON numbers above 2^53 are exact in Python; neu3 reads them as doubles).

With ``--mapping-changes FILE``, ``POST /apply-cleave`` (``{"body-id": B, "assignments": {...},
"label": "2"}``) gives the supervoxels of that label a new body id (one more than the largest id
known), and writes the whole updated mapping to FILE (atomically), which ``pumice label-index
--mapping FILE`` (only the changed bodies), ``pumice remap --mapping FILE`` and ``pumice mesh --mapping
FILE --ids ...`` read.
"""

from __future__ import annotations

import datetime
import http.server
import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PumiceError
from ..storage import inputs, urls

MAX_REQUEST = 1 << 20  # bytes of a request body
METHODS = ("seeded-mst", "echo-seeds")


class CleaveError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def read_edge_table(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(id_a, id_b, score) from neuclease's merge-table CSV, a Parquet file or a folder of Parquet parts
    (``pumice edges``' output)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    where = urls.display(urls.normalize(path))
    local = urls.local_path(urls.normalize(path))
    try:
        if local is not None and local.is_dir():
            table = pa.concat_tables([pq.read_table(p) for p in sorted(local.glob("part-*.parquet"))] or
                                     [pa.table({"id_a": pa.array([], pa.uint64()), "id_b": pa.array([], pa.uint64()),
                                                "score": pa.array([], pa.float64())})])
        elif str(path).lower().endswith(".parquet"):
            table = pq.read_table(io.BytesIO(inputs.read(path, "edge table")))
        else:
            table = pcsv.read_csv(io.BytesIO(inputs.read(path, "edge table")), convert_options=pcsv.ConvertOptions(
                column_types={"id_a": pa.uint64(), "id_b": pa.uint64(), "score": pa.float64()}))
    except (pa.ArrowInvalid, OSError) as e:
        raise PumiceError(f"{where} is not an edge table (merge-table CSV or Parquet): {str(e).splitlines()[0]}") from None
    missing = [c for c in ("id_a", "id_b", "score") if c not in table.column_names]
    if missing:
        raise PumiceError(f"{where} has no column {', '.join(missing)}; an edge table has id_a, id_b and score")
    a = table["id_a"].to_numpy().astype(np.uint64)
    b = table["id_b"].to_numpy().astype(np.uint64)
    score = table["score"].to_numpy().astype(np.float64)
    if np.isnan(score).any():
        raise PumiceError(f"{where} has edges without a score (row {int(np.argmax(np.isnan(score)))})")
    return a, b, score


class BodyArrays:
    """One consistent view of the bodies: their supervoxels and internal edges in arrays sorted by
    body. Never changed once built; applying a cleave builds a new one."""

    def __init__(self, svs: np.ndarray, bodies: np.ndarray, a: np.ndarray, b: np.ndarray, score: np.ndarray):
        svs, bodies = np.asarray(svs, np.uint64), np.asarray(bodies, np.uint64)
        order = np.argsort(svs, kind="stable")
        self.mapped_svs, self.mapped_bodies = svs[order], bodies[order]
        known = np.union1d(svs, np.union1d(a, b))
        body_of = self.body_of(known)
        order = np.lexsort((known, body_of))
        self.sv, self.sv_body = known[order], body_of[order]
        ba, bb = self.body_of(a), self.body_of(b)
        inside = ba == bb
        order = np.lexsort((b[inside], a[inside], ba[inside]))
        self.edge_a, self.edge_b = a[inside][order], b[inside][order]
        self.edge_score, self.edge_body = score[inside][order], ba[inside][order]
        self.largest = int(max(known.max(initial=0), self.mapped_bodies.max(initial=0)))

    def body_of(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.uint64)
        if not len(self.mapped_svs):
            return ids.copy()
        at = np.minimum(np.searchsorted(self.mapped_svs, ids), len(self.mapped_svs) - 1)
        return np.where(self.mapped_svs[at] == ids, self.mapped_bodies[at], ids)

    def supervoxels(self, body: int) -> np.ndarray:
        key = np.uint64(body)
        return self.sv[np.searchsorted(self.sv_body, key, "left"):np.searchsorted(self.sv_body, key, "right")]

    def edges(self, body: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = np.uint64(body)
        lo, hi = np.searchsorted(self.edge_body, key, "left"), np.searchsorted(self.edge_body, key, "right")
        return self.edge_a[lo:hi], self.edge_b[lo:hi], self.edge_score[lo:hi]


class CleaveIndex:
    """The current ``BodyArrays`` and the edge table they came from. Requests read a snapshot without
    locking; ``split_off`` (under ``lock``) swaps in a new one."""

    def __init__(self, svs: np.ndarray, bodies: np.ndarray, a: np.ndarray, b: np.ndarray, score: np.ndarray):
        self.lock = threading.Lock()
        self.raw = (np.asarray(a, np.uint64), np.asarray(b, np.uint64), np.asarray(score, np.float64))
        self.arrays = BodyArrays(svs, bodies, *self.raw)

    def __getattr__(self, name: str) -> Any:  # mapped_svs, edge_body, supervoxels(), ...: the current arrays'
        if name in ("arrays", "raw", "lock"):
            raise AttributeError(name)
        return getattr(self.arrays, name)

    def stats(self) -> dict[str, int]:
        arrays = self.arrays
        return {"supervoxels": int(len(arrays.sv)), "bodies": int(len(np.unique(arrays.sv_body))),
                "edges_within_bodies": int(len(arrays.edge_a))}

    def split_off(self, body: int, svs: np.ndarray) -> int:
        """Give ``svs`` (of ``body``) a new body id (one more than any id known); returns it."""
        arrays = self.arrays
        new = arrays.largest + 1
        keys = np.union1d(arrays.mapped_svs, svs)
        values = arrays.body_of(keys)
        values[np.isin(keys, svs)] = new
        self.arrays = BodyArrays(keys, values, *self.raw)
        return new


def cleave(index: CleaveIndex, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one compute-cleave request (raises CleaveError with the status to send)."""
    if not isinstance(request, dict):
        raise CleaveError(400, "the request must be a JSON object")
    method = request.get("method", "seeded-mst")
    if method not in METHODS:
        raise CleaveError(400, f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    body = _whole(request.get("body-id"), "body-id")
    seeds_in = request.get("seeds")
    if not isinstance(seeds_in, dict):
        raise CleaveError(400 if seeds_in is not None else 412, "no seeds: give {\"seeds\": {\"1\": [sv, ...], ...}}")
    seeds: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for label, svs in seeds_in.items():
        if not isinstance(svs, list):
            raise CleaveError(400, f"seeds of label {label} must be a list of supervoxel ids")
        unique = sorted({_whole(sv, f"a seed of label {label}") for sv in svs})
        for sv in unique:
            if sv in owner:
                raise CleaveError(400, f"supervoxel {sv} is a seed of labels {owner[sv]} and {label}")
            owner[sv] = str(label)
        if unique:
            seeds[str(label)] = unique
    if not seeds:
        raise CleaveError(412, "no seeds: every label's list is empty")
    arrays = index.arrays if isinstance(index, CleaveIndex) else index  # one snapshot for the whole request
    nodes = arrays.supervoxels(body)
    outside = sorted(sv for sv in owner
                     if not len(nodes) or int(nodes[min(np.searchsorted(nodes, np.uint64(sv)), len(nodes) - 1)]) != sv)
    if outside:
        raise CleaveError(412, f"seed(s) {', '.join(map(str, outside[:10]))} not in body {body}")
    reply = {**request, "request-timestamp": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
             "seeds": seeds, "warnings": [], "info": []}
    label_of = np.zeros(len(nodes), np.int64)  # 0: unassigned; else index into label_names
    label_names = ["0", *seeds]
    position = {label: i for i, label in enumerate(label_names)}
    for sv, label in owner.items():
        label_of[np.searchsorted(nodes, np.uint64(sv))] = position[label]
    a, b, score = arrays.edges(body)
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    if method == "seeded-mst":
        label_of = _seeded_mst(label_of, ia, ib, score)
    assignments: dict[str, list[int]] = {}
    for i, name in enumerate(label_names):
        members = nodes[label_of == i]
        if len(members) or name != "0":
            assignments[name] = [int(v) for v in members]
    unassigned = int((label_of == 0).sum())
    if unassigned:
        reply["warnings"].append(f"{unassigned} supervoxels remain unassigned")
    if method == "seeded-mst":
        for name in seeds:
            if len(seeds[name]) > 1 and not _contiguous(label_of == position[name], ia, ib):
                reply["info"].append(f"Seeds for label {name} are not contiguous")
    reply["assignments"] = assignments
    return reply


def _seeded_mst(label_of: np.ndarray, ia: np.ndarray, ib: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The minimum spanning tree of the body's edges plus a root joined to every seed below every
    edge (SciPy), the root removed: each tree takes its seed's label, trees without one stay 0.

    Edges are weighted by their rank in (score, id_a, id_b) order, so the tree is unique and equals
    Kruskal's with those ties; a pair listed twice counts once, at its lowest rank.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

    n = len(label_of)
    order = np.lexsort((ib, ia, score))
    lo, hi = np.minimum(ia, ib)[order], np.maximum(ia, ib)[order]
    keep = lo != hi
    lo, hi = lo[keep], hi[keep]
    pair = lo.astype(np.int64) * n + hi
    _, first = np.unique(pair, return_index=True)  # the lowest rank of each pair
    first.sort()
    lo, hi = lo[first], hi[first]
    weight = np.arange(1, len(lo) + 1, dtype=np.float64)
    seeds = np.flatnonzero(label_of)
    rows = np.concatenate([lo, np.full(len(seeds), n)])
    cols = np.concatenate([hi, seeds])
    weights = np.concatenate([weight, np.full(len(seeds), 0.5)])  # below every edge
    tree = minimum_spanning_tree(coo_matrix((weights, (rows, cols)), shape=(n + 1, n + 1)).tocsr()).tocoo()
    inside = (tree.row < n) & (tree.col < n)
    forest = coo_matrix((np.ones(int(inside.sum())), (tree.row[inside], tree.col[inside])), shape=(n, n))
    _, component = connected_components(forest, directed=False)
    label_of_component = np.zeros(component.max(initial=-1) + 1, np.int64)
    label_of_component[component[seeds]] = label_of[seeds]
    return label_of_component[component]


def _contiguous(members: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> bool:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    which = np.flatnonzero(members)
    if len(which) < 2:
        return True
    keep = members[ia] & members[ib]
    local = np.full(len(members), -1)
    local[which] = np.arange(len(which))
    graph = coo_matrix((np.ones(int(keep.sum())), (local[ia[keep]], local[ib[keep]])), shape=(len(which),) * 2)
    return connected_components(graph, directed=False)[0] == 1


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value >= 2**64:
        if isinstance(value, str) and value.isdigit():
            return _whole(int(value), what)
        raise CleaveError(400, f"{what} must be a positive 64-bit integer, got {value!r}")
    return value


# -- HTTP -----------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    server: "CleaveServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def _send(self, status: int, payload: dict[str, Any] | None = None) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Access-Control-Allow-Origin", "*")
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self.send_header("Allow", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/health":
            self._send(200, {"status": "ok", **self.server.index.stats()})
        else:
            self._send(404, {"errors": [f"no such path {self.path.split('?')[0]}: POST /compute-cleave, GET /health"]})

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        if path not in ("/compute-cleave", "/apply-cleave") or (path == "/apply-cleave" and not self.server.changes):
            self._drain()
            self._send(404, {"errors": [f"no such path {path}: POST /compute-cleave" +
                                        (", POST /apply-cleave" if self.server.changes else "")]})
            return
        request: Any = None
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST:
                self._discard(length)  # read (up to a bound) so the client sees the answer, not a reset
                self.close_connection = True
                raise CleaveError(413, f"request of {length} bytes; the limit is {MAX_REQUEST}")
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            raw = self.rfile.read(length) if length > 0 else b""
            if content_type != "application/json":
                raise CleaveError(415, f"send JSON (Content-Type: application/json), not {content_type or 'nothing'}")
            try:
                request = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CleaveError(400, f"malformed JSON: {e}") from None
            if path == "/compute-cleave":
                reply = cleave(self.server.index, request)
            else:
                reply = self.server.apply(request)
            self._send(200, reply)
        except CleaveError as e:
            echo = request if isinstance(request, dict) else {}
            self._send(e.status, {**echo, "errors": [str(e)]})
        except Exception as e:  # noqa: BLE001 - one request's failure never takes the server down
            self._send(500, {"errors": [f"internal error: {type(e).__name__}: {e}"]})

    def _discard(self, length: int) -> None:
        left = min(length, 64 * MAX_REQUEST)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_REQUEST:
            self.rfile.read(length)
        elif length:
            self.close_connection = True


class CleaveServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a proofreading team's clients connect at once (the default of 5 reset them)

    def __init__(self, index: CleaveIndex, bind: str, port: int, changes: Path | None = None):
        self.index, self.changes = index, changes
        super().__init__((bind, port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up

    def apply(self, request: Any) -> dict[str, Any]:
        """A cleave's label split off its body as a new body; the mapping file rewritten."""
        if not isinstance(request, dict):
            raise CleaveError(400, "the request must be a JSON object")
        body = _whole(request.get("body-id"), "body-id")
        label = str(request.get("label", ""))
        assignments = request.get("assignments")
        if not isinstance(assignments, dict) or label not in assignments:
            raise CleaveError(400, "give the compute-cleave reply's assignments and the label to split off")
        svs = np.array(sorted({_whole(v, "a supervoxel") for v in assignments[label]}), np.uint64)
        with self.index.lock:
            nodes = self.index.supervoxels(body)
            if not len(svs) or not np.isin(svs, nodes).all():
                raise CleaveError(412, f"label {label}'s supervoxels are not all in body {body}")
            if len(svs) == len(nodes):
                raise CleaveError(412, f"label {label} holds all of body {body}: nothing to split off")
            new = self.index.split_off(body, svs)
            write_mapping(self.changes, self.index.arrays.mapped_svs, self.index.arrays.mapped_bodies)
        return {"body-id": body, "new-body-id": new, "supervoxels": [int(v) for v in svs],
                "mapping": str(self.changes)}


def write_mapping(path: Path, svs: np.ndarray, bodies: np.ndarray) -> None:
    """The mapping as CSV (or .npy by name), written beside and renamed: never half a file."""
    partial = path.with_name(path.name + ".partial")
    if path.suffix.lower() == ".npy":
        with open(partial, "wb") as handle:
            np.save(handle, np.stack([svs, bodies], axis=1).astype(np.uint64))
    else:
        with open(partial, "w") as handle:
            handle.write("sv,body\n")
            handle.writelines(f"{s},{b}\n" for s, b in zip(svs.tolist(), bodies.tolist()))
    partial.replace(path)
