"""The cleave server: seeded-mst assignments equal networkx's minimum spanning tree with a virtual root
on the same edges; every status code; 50 concurrent clients; applying a cleave rewrites the mapping
that label-index then refreshes."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import networkx as nx
import numpy as np
import pytest

from pumice.serve.cleave import CleaveIndex, CleaveServer


def random_bodies(seed=0, bodies=40, per_body=12):
    """Supervoxels in bodies; edges inside bodies (a random tree plus extra edges: connected) and some
    across bodies (ignored by cleave); ids above 2^53 among them."""
    rng = np.random.default_rng(seed)
    svs, owner, a, b = [], [], [], []
    next_id = 1
    for body in range(bodies):
        n = int(rng.integers(3, per_body))
        ids = list(range(next_id, next_id + n))
        if body == 7:
            ids = [2**60 + i for i in range(n)]
        next_id += n
        body_id = 10_000 + body if body != 3 else 2**62 + 1
        svs += ids
        owner += [body_id] * n
        for i in range(1, n):
            a.append(ids[i]); b.append(ids[int(rng.integers(0, i))])
        for _ in range(n // 2):
            i, j = rng.choice(n, 2, replace=False)
            a.append(ids[i]); b.append(ids[j])
        if body % 5 == 4:  # an isolated supervoxel: unreachable from any seed
            svs.append(next_id); owner.append(body_id); next_id += 1
    for _ in range(30):
        i, j = rng.choice(len(svs), 2, replace=False)
        a.append(svs[i]); b.append(svs[j])
    pairs = {(min(x, y), max(x, y)) for x, y in zip(a, b) if x != y}
    a, b = (np.array(v, np.uint64) for v in zip(*sorted(pairs)))
    score = rng.random(len(a))
    return np.array(svs, np.uint64), np.array(owner, np.uint64), a, b, score


def reference(svs, owner, a, b, score, body, seeds):
    """networkx's Kruskal on the body's edges plus a root joined to every seed below every edge."""
    mine = set(int(s) for s, o in zip(svs.tolist(), owner.tolist()) if o == body)
    graph = nx.Graph()
    graph.add_nodes_from(mine)
    low = float(score.min()) - 1
    for label, ids in seeds.items():
        for sv in ids:
            graph.add_edge("root", sv, weight=low)
    for x, y, s in sorted(zip(a.tolist(), b.tolist(), score.tolist())):
        if x in mine and y in mine:
            graph.add_edge(x, y, weight=s)
    tree = nx.minimum_spanning_tree(graph, algorithm="kruskal")
    tree.remove_node("root")
    label_of = {sv: label for label, ids in seeds.items() for sv in ids}
    out = {label: [] for label in seeds}
    out["0"] = []
    for component in nx.connected_components(tree):
        labels = {label_of[sv] for sv in component if sv in label_of}
        assert len(labels) <= 1
        out[labels.pop() if labels else "0"] += sorted(component)
    return {k: sorted(v) for k, v in out.items() if v or k != "0"}


@pytest.fixture
def server():
    svs, owner, a, b, score = random_bodies()
    srv = CleaveServer(CleaveIndex(svs, owner, a, b, score), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, (svs, owner, a, b, score)
    srv.shutdown()
    srv.server_close()


def post(srv, body, content_type="application/json", path="/compute-cleave"):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": content_type} if content_type else {})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, (json.loads(payload) if payload else None)


def test_seeded_mst_equals_networkx(server):
    srv, (svs, owner, a, b, score) = server
    rng = np.random.default_rng(5)
    checked = 0
    for body in np.unique(owner).tolist():
        members = np.sort(svs[owner == body])
        if len(members) < 3:
            continue
        picks = rng.choice(members, 3, replace=False).tolist()
        seeds = {"1": [picks[0]], "2": [picks[1], picks[2]] if body % 2 else [picks[1]]}
        status, reply = post(srv, {"body-id": body, "seeds": seeds, "user": "test", "request-number": checked})
        assert status == 200, reply
        assert reply["assignments"] == reference(svs, owner, a, b, score, body, seeds), body
        assert sorted(v for vs in reply["assignments"].values() for v in vs) == members.tolist()  # each once
        assert reply["user"] == "test" and reply["request-number"] == checked and "request-timestamp" in reply
        assert reply["seeds"] == {k: sorted(v) for k, v in seeds.items()}
        if "0" in reply["assignments"]:
            assert reply["warnings"] == [f"{len(reply['assignments']['0'])} supervoxels remain unassigned"]
        checked += 1
    assert checked >= 30


def test_echo_seeds_and_contiguity_info(server):
    srv, (svs, owner, a, b, score) = server
    body = int(owner[0])
    members = np.sort(svs[owner == body]).tolist()
    status, reply = post(srv, {"body-id": body, "seeds": {"1": [members[0]], "2": [members[1]]}, "method": "echo-seeds"})
    assert status == 200
    assert reply["assignments"]["1"] == [members[0]] and reply["assignments"]["2"] == [members[1]]
    assert sorted(reply["assignments"]["0"]) == members[2:]
    # a label whose seeds end up apart is said in info
    chain = CleaveIndex(np.array([1, 2, 3], np.uint64), np.array([9, 9, 9], np.uint64), np.array([1, 2], np.uint64),
                        np.array([2, 3], np.uint64), np.array([0.5, 0.5]))
    from pumice.serve.cleave import cleave

    reply = cleave(chain, {"body-id": 9, "seeds": {"1": [1, 3], "2": [2]}})
    assert reply["assignments"] == {"1": [1, 3], "2": [2]}
    assert reply["info"] == ["Seeds for label 1 are not contiguous"]


def test_status_codes(server):
    srv, (svs, owner, *_rest) = server
    body = int(owner[0])
    members = np.sort(svs[owner == body]).tolist()
    other = int(svs[owner != body][0])
    cases = [
        ({"body-id": body, "seeds": {"1": [members[0]]}}, "application/json", 200),
        (b"{not json", "application/json", 400),
        ({"body-id": body, "seeds": {"1": [members[0]]}, "method": "magic"}, "application/json", 400),
        ({"body-id": body, "seeds": {"1": [members[0]], "2": [members[0]]}}, "application/json", 400),  # a seed twice
        ({"body-id": "x", "seeds": {"1": [members[0]]}}, "application/json", 400),
        ({"body-id": body}, "application/json", 412),
        ({"body-id": body, "seeds": {"1": []}}, "application/json", 412),
        ({"body-id": body, "seeds": {"1": [other]}}, "application/json", 412),
        ({"body-id": body, "seeds": {"1": [members[0]]}}, "text/plain", 415),
        ({"body-id": body, "seeds": {"1": [members[0]]}}, None, 415),
        (b"[" + b"1," * 600_000 + b"1]", "application/json", 413),
    ]
    for request, content_type, want in cases:
        status, reply = post(srv, request, content_type)
        assert status == want, (request if not isinstance(request, bytes) else request[:40], reply)
        if want != 200:
            assert reply["errors"] and "Traceback" not in json.dumps(reply)
    conn = http.client.HTTPConnection(*srv.server_address[:2])
    conn.request("OPTIONS", "/compute-cleave")
    response = conn.getresponse()
    assert response.status in (200, 204) and "POST" in response.getheader("Allow")
    response.read()
    conn.request("GET", "/health")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    conn.request("GET", "/etc/passwd")
    response = conn.getresponse()
    assert response.status == 404
    response.read()
    conn.close()
    status, _ = post(srv, {"body-id": body}, path="/apply-cleave")  # only with --mapping-changes
    assert status == 404


def test_fifty_concurrent_clients(server, capsys):
    srv, (svs, owner, *_rest) = server
    bodies = [int(b) for b in np.unique(owner) if (owner == b).sum() >= 2]

    def client(n):
        times = []
        for i in range(20):
            body = bodies[(n + i) % len(bodies)]
            members = np.sort(svs[owner == body]).tolist()
            start = time.perf_counter()
            status, reply = post(srv, {"body-id": body, "seeds": {"1": [members[0]], "2": [members[-1]]}})
            times.append(time.perf_counter() - start)
            assert status == 200 and not reply.get("errors"), reply
        return times

    with ThreadPoolExecutor(50) as pool:
        times = np.concatenate(list(pool.map(client, range(50))))
    assert len(times) == 1000
    with capsys.disabled():
        print(f"\ncleave: 50 clients x 20 requests: p50 {np.percentile(times, 50) * 1000:.1f} ms, "
              f"p99 {np.percentile(times, 99) * 1000:.1f} ms")


def test_cli_serves_applies_cleaves_and_says_when_the_port_is_taken(cli, tmp_path):
    from pumice.ops import edges as edges_op, label_index
    from framework import ingest_array, run_json

    # supervoxels of two bodies, their edges, the index
    labels = np.zeros((32, 16, 16), np.uint32)
    for sv in range(1, 9):
        labels[(sv - 1) * 4: sv * 4] = sv
    seg = ingest_array(cli, tmp_path / "seg", labels, "--resolution", "8,8,8", "--type", "segmentation")
    mapping = np.array([[sv, 100 if sv <= 5 else 200] for sv in range(1, 9)], np.uint64)
    np.save(tmp_path / "map.npy", mapping)
    run_json(cli, "edges", seg, "--no-progress")
    run_json(cli, "label-index", seg, "--mapping", tmp_path / "map.npy", "--no-progress")
    assert len(edges_op.read_edges(str(seg))) == 7

    argv = [sys.executable, "-m", "pumice.cli.main", "serve", "cleave", "--edges", str(seg / "edges" / "merge-table.csv"),
            "--mapping", str(tmp_path / "map.npy"), "--port", "0", "--mapping-changes", str(tmp_path / "new.csv")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        request = {"body-id": 100, "seeds": {"1": [1], "2": [5]}}
        conn.request("POST", "/compute-cleave", json.dumps(request), {"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
        assert reply["assignments"] == {"1": [1, 2], "2": [3, 4, 5]} or reply["assignments"] == {"1": [1, 2, 3], "2": [4, 5]} \
            or sum(len(v) for v in reply["assignments"].values()) == 5
        applied = {"body-id": 100, "assignments": reply["assignments"], "label": "2"}
        conn.request("POST", "/apply-cleave", json.dumps(applied), {"Content-Type": "application/json"})
        done = json.loads(conn.getresponse().read())
        assert done["new-body-id"] == 201 and done["supervoxels"] == reply["assignments"]["2"]
        # the same port again: one line, exit 2
        taken = subprocess.run([*argv[:-4], "--port", port], capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2 and "choose another --port" in taken.stderr
        assert len(taken.stderr.strip().splitlines()) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # the rewritten mapping refreshes only the changed bodies in the label index
    summary = run_json(cli, "label-index", seg, "--mapping", tmp_path / "new.csv", "--no-progress")
    assert list(summary["stages"]) == ["move", "recount"]
    moved = done["supervoxels"]
    assert label_index.bodies_of(str(seg), moved).tolist() == [201] * len(moved)
    assert label_index.body_index(str(seg), 201)["supervoxels"] == moved


@pytest.mark.slow
def test_neuroproof_cleaves_equal_networkx(cli, tmp_path, shared_data):
    """Edges scored by neuroproof's raw image (dark membranes, so --invert), its supervoxel -> body
    mapping: 30 bodies of 3+ supervoxels, two seeds each, equal to networkx's spanning tree."""
    import h5py

    from framework import ingest_array, run_json
    from pumice.ops.remap import read_mapping
    from pumice.serve.cleave import cleave, read_edge_table

    with h5py.File(shared_data("neuroproof_sample2.h5"), "r") as f:
        labels = np.asfortranarray(f["labels/gt_supervoxels"][:].transpose(2, 1, 0))
        raw = np.asfortranarray(f["raw"][:].transpose(2, 1, 0))
        pairs = f["labels/gt_sv_to_body"][:].astype(np.uint64)
    seg = ingest_array(cli, tmp_path / "seg", labels, "--resolution", "10,10,10", "--type", "segmentation")
    ingest_array(cli, tmp_path / "raw", raw, "--resolution", "10,10,10")
    run_json(cli, "edges", seg, "--boundary", tmp_path / "raw", "--invert", "--workers", "2", "--no-progress")
    np.save(tmp_path / "map.npy", pairs)
    svs, bodies = read_mapping(str(tmp_path / "map.npy"))
    a, b, score = read_edge_table(str(seg / "edges" / "merge-table.csv"))
    index = CleaveIndex(svs, bodies, a, b, score)
    body_of = dict(zip(svs.tolist(), bodies.tolist()))
    in_seg = np.unique(labels)
    in_seg = in_seg[in_seg != 0].astype(np.uint64)
    owner = np.array([body_of.get(s, s) for s in in_seg.tolist()], np.uint64)
    big = [int(body) for body, n in zip(*np.unique(owner, return_counts=True)) if n >= 3]
    assert len(big) >= 30
    rng = np.random.default_rng(11)
    for body in rng.choice(big, 30, replace=False).tolist():
        members = np.sort(index.supervoxels(body))
        first, second = rng.choice(members, 2, replace=False).tolist()
        seeds = {"1": [first], "2": [second]}
        reply = cleave(index, {"body-id": body, "seeds": seeds})
        assert reply["assignments"] == reference(in_seg, owner, a, b, score, body, seeds), body
