"""``pumice agglomerate FRAGMENTS --boundary|--affinities SRC --out DIR``: bodies from fragments.

**Region graph.** The stages of ``pumice edges``: one edge per pair of fragments touching across a
voxel face, with its contact (faces), the score summed over the faces (the mean of the two voxels'
boundary, or 1 - the affinity of the face) and the highest face score, built per block and summed
per partition of pairs (``FRAGMENTS/<name>/part-*.parquet``) with neuclease's merge table
(``merge-table.csv``, which ``pumice serve cleave`` reads).

**Agglomeration**, waterz-style: the edge of lowest score is merged first, until the lowest score
exceeds the threshold. Merging two regions joins their edges to a common neighbour: contacts and
score sums add (``--score mean``: the score is the mean over the joined contact), maxima take the
larger (``--score max``) and face-cost histograms add (``--score q50|q75``: the contact's median or
75th percentile face cost, to 1/256: the centre of the bin holding the ceil(q n)-th smallest of its
n faces). ``--score q50-lowest|q75-lowest`` counts each original contact once, at its lowest face
cost, and takes the quantile over the contacts joined into an edge: waterz's default score
(``HistogramQuantileAffinity`` with ``InitWithMax``; on SNEMI3D-mini it measured better than the
contacts' true median, 1.78 against 1.92 bits on the same fragments). Ties go to the edge whose
smallest original contact is larger, then to the edge whose contacts' latest first face (in voxel
order) comes first: one strict order, the same in every run and for any numbering of the fragments.

**In chunks, exactly** (no task holds the whole graph): leaves are the region graph's blocks; a
level's chunk joins 2 x 2 x 2 chunks of the level below, up to one chunk. Each chunk merges what it
can decide alone: the lowest edge of both its regions, when neither region reaches beyond the chunk
(a fragment's reach: the leaf blocks it crosses into). Every score and the tie order are reducible
(a joined edge never comes before the earlier of the two it joins), so such a merge is the one the
whole graph makes (reciprocal nearest neighbours); a region whose lowest edge leads beyond the chunk
waits, with its edges, for the level above. A task holds its chunk's graph: a leaf's, or what its
children handed up (regions on their faces and those waiting), never the volume's. Then top down,
each chunk gives its nodes their bodies per threshold (its merges up to the threshold; a region it
handed up takes the level above's body), and each leaf writes the rows of the fragments it is home
to (the first leaf that holds them). Fragments are taken to be connected (watershed's are): a
fragment's reach is seen where it crosses a block face.

**Output** per threshold: ``DIR/mapping-<t>.csv`` (``sv,body``; a body is named by its smallest
fragment, so an unmerged fragment keeps its id), which ``pumice remap --mapping`` and ``pumice serve
cleave --mapping`` read, and ``DIR/agglomeration.json`` (thresholds, merges, bodies per threshold).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox, format_vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import urls
from ..storage.blobs import pack, unpack
from ..storage.kv import open_kv, write_joined
from ..storage.layer import Layer
from . import edges

SCORES = ("mean", "q50", "q75", "max", "q50-lowest", "q75-lowest")
DEFAULT_SCORE = "q50-lowest"  # measured best on three of the four data sets of make bench watershed (README)


def mapping_name(threshold: float) -> str:
    return f"mapping-{threshold:g}.csv"


def quantile_rank(q: float, n: int) -> int:
    """The 1-based rank of the qth quantile of n values: ceil(q n), at least 1."""
    return max(1, int(np.ceil(q * n)))


def quantile_cost(histogram: np.ndarray, q: float) -> float:
    """The centre of the bin holding the ceil(q n)-th smallest of a contact's n face costs."""
    cumulative = np.cumsum(histogram)
    return (int(np.searchsorted(cumulative, quantile_rank(q, int(cumulative[-1])))) + 0.5) / len(histogram)


@dataclass
class Graph:
    """The part of the region graph one task holds. Nodes are regions named by their smallest fragment
    (sorted ids), each with its reach (the leaf blocks it may occupy, ``lo``..``hi`` inclusive, per
    axis) and its ``home`` (the smallest flat index of a leaf holding it: the leaf that writes its
    mapping row). Edges join node indices ``u < v``: contact ``area``, score sum ``total``, highest
    face cost ``high``; per quantile score the faces' cost ``histograms`` (E x BINS) or, for
    ``qNN-lowest``, ``members`` (each contact's lowest bin, sorted)."""

    nodes: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    home: np.ndarray
    u: np.ndarray
    v: np.ndarray
    area: np.ndarray
    total: np.ndarray
    high: np.ndarray
    smallest: np.ndarray  # the contact area of the smallest original contact joined into the edge
    ident: np.ndarray  # the latest first face of the original contacts joined into the edge (a voxel-order key)
    histograms: np.ndarray | None = None
    members: list[list[int]] | None = None


def merge_regions(g: Graph, score: str, limit: float, frozen: list[bool]) -> tuple[list[tuple[int, int, float]], list[list[int]], list[bool]]:
    """Merge by increasing score up to ``limit``, waterz-style, never merging a ``frozen`` node (one
    that may have edges this graph lacks: it reaches beyond the task's chunk).

    An edge is merged only when it is the lowest of both its regions' edges, which holds for the
    edge at the top of the heap whose ends are not frozen: the order is reducible (a joined edge never
    comes before the earlier of the two it joins), so the merge is the one the whole graph would make
    (reciprocal nearest neighbours), in any chunks. The order: the score (every score is reducible:
    the mean, a quantile or the highest of joined faces or contacts is never lower than the lower
    edge's); ties to the edge whose smallest original contact is larger (a joined edge's smallest
    contact is the smaller of the two: a joined edge never gains by joining, unlike the contact's
    total size), then to the edge whose contacts' latest first face comes earlier in voxel order (a
    position, not fragment ids, so blocks that number fragments otherwise tie the same way; unique
    per alive edge). An edge that reaches the top with a frozen end is left to the level above, and freezes its
    other end too: that region's lowest edge is undecided. Returns the merges (keep, gone, score;
    node indices, ``keep`` the smaller, which names the region), each edge's ends now (regions), and
    which edges are alive; ``g``'s edge fields and ``frozen`` are updated in place, and a region's
    reach is the union of its members'."""
    n = len(g.nodes)
    u, v = g.u.tolist(), g.v.tolist()
    area_ = [float(x) for x in g.area]
    total_ = [float(x) for x in g.total]
    high = [float(x) for x in g.high]
    smallest = [float(x) for x in g.smallest]
    ident = g.ident.tolist()
    histograms, members = g.histograms, g.members
    ends = [[x, y] for x, y in zip(u, v)]
    alive = [True] * len(u)
    version = [0] * len(u)
    adjacency: list[dict[int, int]] = [dict() for _ in range(n)]
    for e, (x, y) in enumerate(zip(u, v)):
        adjacency[x][y] = e
        adjacency[y][x] = e
    q = int(score[1:3]) / 100 if score.startswith("q") else None
    if score.endswith("-lowest") and members is None:
        raise ValueError("qNN-lowest scores need the edges' lowest bins")
    if q is not None and not score.endswith("-lowest") and histograms is None:
        raise ValueError("quantile scores need the edges' histograms")

    def value(e: int) -> float:
        if members is not None:
            m = members[e]
            return (m[quantile_rank(q, len(m)) - 1] + 0.5) / edges.BINS
        if q is not None:
            return quantile_cost(histograms[e], q)
        # the mean to 12 decimals: sums of face costs joined in another order (other chunks) differ in
        # the last bits, and would reorder exact ties (rounding keeps the order reducible: it is monotone)
        return round(total_[e] / area_[e], 12) if score == "mean" else high[e]

    def key(e: int) -> tuple:
        return value(e), -smallest[e], ident[e], e, version[e]

    heap = [key(e) for e in range(len(u))]
    heapq.heapify(heap)
    merges: list[tuple[int, int, float]] = []
    while heap and heap[0][0] <= limit:
        s, _, _, e, ver = heapq.heappop(heap)
        if not alive[e] or ver != version[e]:
            continue
        x, y = ends[e]
        if frozen[x] or frozen[y]:
            frozen[x] = frozen[y] = True  # deferred: the edge stays alive for the level above
            continue
        alive[e] = False
        # The region of the smaller node absorbs the other: it keeps its name and the heap keys of its
        # own edges; only the absorbed region's edges get new keys (and joined edges their new contact).
        keep, gone = min(x, y), max(x, y)
        del adjacency[keep][gone]
        del adjacency[gone][keep]
        for w, f in adjacency[gone].items():
            del adjacency[w][gone]
            if w in adjacency[keep]:  # both touch w: one edge with the contacts joined
                h = adjacency[keep][w]
                area_[h] += area_[f]
                total_[h] += total_[f]
                high[h] = max(high[h], high[f])
                smallest[h] = min(smallest[h], smallest[f])
                ident[h] = max(ident[h], ident[f])
                if histograms is not None:
                    histograms[h] += histograms[f]
                if members is not None:
                    members[h] = sorted(members[h] + members[f])  # two sorted runs: linear
                    members[f] = []
                alive[f] = False
                version[h] += 1
                heapq.heappush(heap, key(h))
            else:  # w's edge now ends at keep
                ends[f] = [min(keep, w), max(keep, w)]
                adjacency[keep][w] = f
                adjacency[w][keep] = f
                version[f] += 1
                heapq.heappush(heap, key(f))
        adjacency[gone] = {}
        g.lo[keep] = np.minimum(g.lo[keep], g.lo[gone])
        g.hi[keep] = np.maximum(g.hi[keep], g.hi[gone])
        merges.append((keep, gone, s))
    g.area[:] = area_
    g.total[:] = total_
    g.high[:] = high
    g.smallest[:] = smallest
    g.ident[:] = ident
    return merges, ends, alive


def components(n: int, keep: np.ndarray, gone: np.ndarray) -> np.ndarray:
    """Each of n nodes' component (joined by the merges keep-gone), named by its smallest node."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not n:
        return np.zeros(0, np.int64)
    _, label = connected_components(coo_matrix((np.ones(len(keep)), (keep, gone)), shape=(n, n)), directed=False)
    smallest = np.full(label.max() + 1, n, np.int64)
    np.minimum.at(smallest, label, np.arange(n))
    return smallest[label]


def leaf_graph(fragments: Layer, scores: Layer | None, kind: str, invert: bool, fill_missing: bool, box: Bbox,
               region: Bbox, index: Sequence[int], flat: int, score: str) -> Graph:
    """The region graph of the faces whose lower voxel lies in ``box`` (leaf ``index``), with each
    fragment's reach: a fragment in the voxel layer beyond a face of the box reaches that neighbour,
    and so does one on the box's low face with a fragment across it (that contact is the
    neighbour's). Fragments are taken to be connected, as watershed's are: a fragment's reach is
    seen where it crosses a face."""
    read = Bbox([max(a - 1, r) for a, r in zip(box.minpt, region.minpt)],
                [min(a + 1, r) for a, r in zip(box.maxpt, region.maxpt)])
    labels = fragments.read(read, 0, fill_missing=fill_missing)[..., 0]
    low = [int(a - r) for a, r in zip(box.minpt, read.minpt)]
    own = labels[low[0]:, low[1]:, low[2]:]
    values = None
    if scores is not None:
        values = edges.score_values(scores, Bbox(box.minpt, read.maxpt), kind, invert, fill_missing)
    rows, histograms = edges.face_rows(own, values, kind, box.shape, [a - r for a, r in zip(box.minpt, region.minpt)],
                                       region.shape)
    nodes = np.unique(np.concatenate([rows["a"], rows["b"]]))
    lo = np.tile(np.asarray(index, np.int64), (len(nodes), 1))
    hi = lo.copy()
    for axis in range(3):
        def layer(i: int, of: np.ndarray = labels) -> np.ndarray:
            return np.take(of, i, axis=axis)
        if read.maxpt[axis] > box.maxpt[axis]:
            beyond = np.unique(layer(labels.shape[axis] - 1))
            hi[np.isin(nodes, beyond), axis] += 1
        if low[axis]:
            across, face = layer(0), layer(1)
            below = np.unique(np.concatenate([across.ravel(), face[across != 0]]))
            lo[np.isin(nodes, below), axis] -= 1
    u, v = np.searchsorted(nodes, rows["a"]), np.searchsorted(nodes, rows["b"])
    area = rows["faces"].astype(np.float64)
    graph = Graph(nodes, lo, hi, np.full(len(nodes), flat, np.int64), u.astype(np.int64), v.astype(np.int64),
                  area, rows["total"].astype(np.float64), rows["high"].astype(np.float64), area.copy(),
                  rows["first"].astype(np.int64))
    if score.startswith("q"):
        # The histogram rows are sorted by (a, b, bin) as the edge rows by (a, b), and every edge has
        # faces: the k-th run of equal (a, b) is edge k.
        first = edges.run_starts(histograms["a"], histograms["b"])
        edge = np.cumsum(first) - 1
        if score.endswith("-lowest"):  # each edge's first histogram row is its lowest bin
            graph.members = [[b] for b in histograms["bin"][first].tolist()]
        else:
            graph.histograms = np.zeros((len(u), edges.BINS), np.uint32)
            np.add.at(graph.histograms, (edge, histograms["bin"]), histograms["count"])
    if kind == "affinities":  # face_rows sums affinities; the agglomeration's score is a cost
        graph.total = graph.area - graph.total
    return graph


def group_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (a, b) pairs, sorted, and each row's pair."""
    if not len(a):
        return a, b, np.zeros(0, np.int64)
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    new = edges.run_starts(a, b)
    group = np.empty(len(a), np.int64)
    group[order] = np.cumsum(new) - 1
    return a[new], b[new], group


def pack_graph(g: Graph, alive: list[int]) -> bytes:
    """The nodes and the ``alive`` edges of ``g`` as one work file (ids, not indices)."""
    e = np.asarray(alive, np.int64)
    arrays = {"nodes": g.nodes, "lo": g.lo, "hi": g.hi, "home": g.home, "a": g.nodes[g.u[e]], "b": g.nodes[g.v[e]],
              "area": g.area[e], "total": g.total[e], "high": g.high[e], "smallest": g.smallest[e],
              "ident": g.ident[e]}
    if g.histograms is not None:
        rows, bins = np.nonzero(g.histograms[e])
        arrays.update(hist_edge=rows, hist_bin=bins, hist_count=g.histograms[e][rows, bins])
    if g.members is not None:
        lists = [g.members[i] for i in e.tolist()]
        arrays.update(member_counts=np.asarray([len(m) for m in lists], np.int64),
                      member_bins=np.asarray([b for m in lists for b in m], np.int64))
    return pack(**arrays)


def join_graphs(blobs: Sequence[dict[str, np.ndarray]]) -> Graph:
    """The children's graphs as one: a node several children hold (a fragment on their common face)
    once, with the union of its reaches and the smallest home; the pieces of one contact that
    several children hold (the faces of two fragments on both sides of their common face) summed.
    Such pieces join two unmerged fragments (no child merges a region that reaches beyond it), so
    each is one original contact: for ``qNN-lowest`` it stays one member, at its lowest bin."""
    cat = {k: np.concatenate([b[k] for b in blobs]) for k in blobs[0]}  # every chunk has a child
    nodes, inverse = np.unique(cat["nodes"], return_inverse=True)
    lo = np.full((len(nodes), 3), np.iinfo(np.int64).max, np.int64)
    hi = np.full((len(nodes), 3), np.iinfo(np.int64).min, np.int64)
    home = np.full(len(nodes), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(lo, inverse, cat["lo"])
    np.maximum.at(hi, inverse, cat["hi"])
    np.minimum.at(home, inverse, cat["home"])
    pair_a, pair_b, group = group_pairs(cat["a"], cat["b"])
    count = len(pair_a)
    area, total, high = np.zeros(count), np.zeros(count), np.full(count, -np.inf)
    np.add.at(area, group, cat["area"])
    np.add.at(total, group, cat["total"])
    np.maximum.at(high, group, cat["high"])
    # a pair several children hold is one contact in pieces: its smallest contact is all of it
    pieces = np.bincount(group, minlength=count)
    smallest = np.zeros(count)
    np.add.at(smallest, group, np.where(pieces[group] > 1, cat["area"], cat["smallest"]))
    ident = np.full(count, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(ident, group, cat["ident"])  # pieces: the contact's first face is the first of theirs
    g = Graph(nodes, lo, hi, home, np.searchsorted(nodes, pair_a).astype(np.int64),
              np.searchsorted(nodes, pair_b).astype(np.int64), area, total, high, smallest, ident)
    if "hist_edge" in cat:
        offsets = np.cumsum([0] + [len(b["a"]) for b in blobs[:-1]])
        rows = np.concatenate([b["hist_edge"] + o for b, o in zip(blobs, offsets)])
        g.histograms = np.zeros((count, edges.BINS), np.uint32)
        np.add.at(g.histograms, (group[rows], cat["hist_bin"]), cat["hist_count"])
    if "member_counts" in cat:
        bins = np.split(cat["member_bins"], np.cumsum(cat["member_counts"])[:-1])
        g.members = [[] for _ in range(count)]
        for i, m in zip(group.tolist(), bins):
            if pieces[i] == 1:
                g.members[i] = m.tolist()
            else:  # pieces of one contact: its lowest face over all of them
                g.members[i] = [min(g.members[i] + [int(m.min())])]
    return g


def chunk_name(level: int, chunk: Sequence[int]) -> str:
    return f"{level}/{'_'.join(str(int(c)) for c in chunk)}"


def leaf_number(grid: Sequence[int], leaf: Sequence[int]) -> int:
    """A leaf's place in x-fastest order: fragments held by several leaves are home to the first."""
    return int((leaf[2] * grid[1] + leaf[1]) * grid[0] + leaf[0])


def level_grid(grid: Sequence[int], level: int) -> tuple[int, ...]:
    return tuple(-(-int(g) // (1 << level)) for g in grid)


def children(grid: Sequence[int], level: int, chunk: Sequence[int]) -> list[tuple[int, ...]]:
    """The chunks of level - 1 inside ``chunk`` (2 per axis, fewer at the grid's far faces)."""
    below = level_grid(grid, level - 1)
    return [c for c in itertools.product(*(range(2 * k, min(2 * k + 2, n)) for k, n in zip(chunk, below)))]


@register("agglomerate.level")
@dataclass(frozen=True)
class AgglomerateLevelTask(Task):
    """One chunk of one level: leaves (level 0) build their graph from the voxels, higher levels join
    their children's; then merge what can be decided inside the chunk and hand the rest up."""
    fragments: str
    scores: str | None
    kind: str
    invert: bool
    fill_missing: bool
    region: tuple
    block: tuple
    grid: tuple
    top: int
    level: int
    chunk: tuple
    work: str
    score: str
    limit: float

    def run(self) -> dict[str, Any]:
        kv = open_kv(self.work)
        if self.level == 0:
            region = Bbox.from_list(self.region)
            minpt = [r + c * b for r, c, b in zip(region.minpt, self.chunk, self.block)]
            box = Bbox(minpt, [min(m + b, r) for m, b, r in zip(minpt, self.block, region.maxpt)])
            g = leaf_graph(Layer.open(self.fragments), Layer.open(self.scores) if self.scores else None, self.kind,
                           self.invert, self.fill_missing, box, region, self.chunk, leaf_number(self.grid, self.chunk),
                           self.score)
        else:
            names = [f"up/{chunk_name(self.level - 1, c)}" for c in children(self.grid, self.level, self.chunk)]
            g = join_graphs([unpack(b) for b in kv.get_many(names)])
        span = 1 << self.level
        first = np.asarray(self.chunk, np.int64) * span
        frozen = ((g.lo < first) | (g.hi >= first + span)).any(axis=1).tolist()
        merges, ends, alive = merge_regions(g, self.score, self.limit, frozen)
        up = [i for i in range(len(g.nodes)) if frozen[i]]  # frozen regions are never absorbed: each its own name
        assert self.level < self.top or not up, "the top chunk holds every edge"
        keep = [e for e, live in enumerate(alive) if live and frozen[ends[e][0]] and frozen[ends[e][1]]]
        g.u = np.asarray([ends[e][0] for e in range(len(ends))], np.int64)
        g.v = np.asarray([ends[e][1] for e in range(len(ends))], np.int64)
        name = chunk_name(self.level, self.chunk)
        state = pack(nodes=g.nodes, home=g.home,
                     keep=np.asarray([m[0] for m in merges], np.int64), gone=np.asarray([m[1] for m in merges], np.int64),
                     score=np.asarray([m[2] for m in merges], np.float64))
        items = [(f"state/{name}", state)]
        if self.level < self.top:
            kept = np.asarray(up, np.int64)
            sub = Graph(g.nodes[kept], g.lo[kept], g.hi[kept], g.home[kept], np.searchsorted(kept, g.u),
                        np.searchsorted(kept, g.v), g.area, g.total, g.high, g.smallest, g.ident,
                        g.histograms, g.members)
            items.append((f"up/{name}", pack_graph(sub, keep)))
        kv.put_many(items)
        return {"nodes": len(g.nodes), "merges": len(merges), "handed_up": len(up)}


@register("agglomerate.bodies")
@dataclass(frozen=True)
class BodiesTask(Task):
    """Top down: each node's body per threshold, from this chunk's merges and, for the regions it
    handed up, the level above's answer; leaves write the mapping rows of the fragments they are home to."""
    grid: tuple
    top: int
    level: int
    chunk: tuple
    work: str
    thresholds: tuple

    def run(self) -> dict[str, Any]:
        kv = open_kv(self.work)
        name = chunk_name(self.level, self.chunk)
        state = unpack(kv.get(f"state/{name}"))
        nodes, n = state["nodes"], len(state["nodes"])
        keep, gone, score = state["keep"], state["gone"], state["score"]
        region = components(n, keep, gone)  # as handed up: each node's region at the highest threshold
        bodies = np.empty((n, len(self.thresholds)), np.uint64)
        home = state["home"].copy()
        above = unpack(kv.get(f"down/{name}")) if self.level < self.top else None
        if above is not None:
            where = np.full(n, -1, np.int64)  # each node's region's row in the level above's answer, or -1
            handed = np.searchsorted(nodes, above["nodes"])
            home[handed] = above["home"]
            where[handed] = np.arange(len(handed))
            where = where[region]
        for t, threshold in enumerate(self.thresholds):
            mask = score <= threshold
            at = components(n, keep[mask], gone[mask])  # the merges of this chunk up to the threshold
            body = nodes[at]
            if above is not None:
                # A node whose region was handed up takes the level above's body when, at this
                # threshold, it is joined to its region's name (the region's merges here are done).
                joined = (where >= 0) & (at == at[region])
                body[joined] = above["bodies"][where[joined], t]
            bodies[:, t] = body
        if self.level > 0:
            items = []
            for child in children(self.grid, self.level, self.chunk):
                child_name = chunk_name(self.level - 1, child)
                ids = unpack(kv.get(f"up/{child_name}"))["nodes"]
                at = np.searchsorted(nodes, ids)
                items.append((f"down/{child_name}", pack(nodes=ids, home=home[at], bodies=bodies[at])))
            kv.put_many(items)
            return {"nodes": n}
        mine = home == leaf_number(self.grid, self.chunk)
        kv.put(f"rows/{name}", pack(sv=nodes[mine], bodies=bodies[mine]))
        return {"fragments": int(mine.sum())}


def write_mappings(work: str, out: str, grid: Sequence[int], thresholds: Sequence[float], score: str) -> dict[str, Any]:
    """The leaves' rows joined into one ``mapping-<t>.csv`` per threshold (a leaf at a time), and
    ``agglomeration.json``."""
    kv = open_kv(work)
    leaves = [chunk_name(0, (x, y, z)) for z in range(grid[2]) for y in range(grid[1]) for x in range(grid[0])]
    record: dict[str, Any] = {"score": score, "fragments_in_graph": 0, "thresholds": []}
    counts = np.zeros(len(thresholds), np.int64)
    target = open_kv(out)
    for t, threshold in enumerate(thresholds):
        def chunks(t: int = t):
            yield b"sv,body\n"
            for leaf in leaves:
                rows = unpack(kv.get(f"rows/{leaf}"))
                if t == 0:
                    record["fragments_in_graph"] += len(rows["sv"])
                counts[t] += int((rows["bodies"][:, t] == rows["sv"]).sum())
                yield "".join(f"{s},{b}\n" for s, b in zip(rows["sv"].tolist(), rows["bodies"][:, t].tolist())).encode()

        write_joined(urls.join(out, mapping_name(threshold)), chunks())
    fragments = record["fragments_in_graph"]
    record["thresholds"] = [{"threshold": threshold, "merges": fragments - int(c), "bodies": int(c),
                             "mapping": mapping_name(threshold)} for threshold, c in zip(thresholds, counts)]
    target.put("agglomeration.json", json.dumps(record, indent=1).encode())
    return record


@planner
def plan(fragments: str, *, out: str, boundary: str | None = None, affinities: str | None = None,
         invert: bool = False, thresholds: Sequence[float] = (0.5,), score: str = DEFAULT_SCORE, name: str = "edges",
         fill_missing: bool = False, shape: Sequence[int] | None = None,
         memory: int = edges.DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    if not boundary and not affinities:
        raise PumiceError("agglomerate scores edges with a map: give --boundary IMAGE or --affinities AFF")
    if score not in SCORES:
        raise PumiceError(f"--score must be one of {', '.join(SCORES)}, got {score!r}")
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(not 0 <= t <= 1 for t in thresholds):
        raise PumiceError(f"--thresholds must lie in 0..1 (scores are costs in 0..1), got "
                          f"{', '.join(f'{t:g}' for t in thresholds) or 'none'}")
    graph, notes = edges.plan(fragments, boundary=boundary, affinities=affinities, invert=invert, name=name,
                              fill_missing=fill_missing, shape=shape, memory=memory)
    out_url = urls.normalize(out)
    layer = Layer.open(graph.params["layer"])
    region = layer.info.scale(0).bounds
    block = tuple(int(b) for b in graph.params["block"])
    grid = tuple(-(-int(s) // b) for s, b in zip(region.shape, block))
    top = max(int(np.ceil(np.log2(g))) for g in grid)
    # The job lives beside its output (DIR), whose mappings say it finished; edges' work files stay
    # under the fragments layer, where its stages put them.
    result = Plan("agglomerate", out_url, {**graph.params, "graph_job": graph.job_id, "out": out_url,
                                                      "thresholds": sorted(thresholds), "score": score})

    @functools.cache
    def work() -> str:
        return urls.join(out_url, f".work/{result.job_id}")

    def chunks(level: int) -> list[tuple[int, ...]]:
        return list(itertools.product(*(range(n) for n in level_grid(grid, level))))

    def level_stage(level: int) -> Stage:
        return Stage.each(f"agglomerate-{level}", chunks(level), lambda c: AgglomerateLevelTask(
            graph.params["layer"], graph.params["scores"], graph.params["kind"], invert, fill_missing,
            tuple(region.to_list()), block, grid, top, level, c, work(), score, max(thresholds)))

    def bodies_stage(level: int) -> Stage:
        return Stage.each(f"bodies-{level}", chunks(level), lambda c: BodiesTask(
            grid, top, level, c, work(), tuple(sorted(thresholds))))

    result.stages = [*graph.stages, *(level_stage(k) for k in range(top + 1)),
                     *(bodies_stage(k) for k in range(top, -1, -1))]
    result.description = {**graph.description, "agglomeration": f"by increasing {score} score up to "
                          f"{', '.join(f'{t:g}' for t in sorted(thresholds))}, in {top + 1} level(s) of chunks "
                          f"of 2^3 blocks from {format_vec(block)}",
                          "mappings": f"{urls.display(out_url)}/mapping-<threshold>.csv"}
    result.prepare, result.provenance = graph.prepare, None

    def finish() -> list[str]:
        said = graph.finish() or []
        record = write_mappings(work(), out_url, grid, sorted(thresholds), score)
        return said + [f"threshold {t['threshold']:g}: {t['bodies']:,} bodies after {t['merges']:,} merges "
                       f"({urls.display(urls.join(out_url, t['mapping']))})" for t in record["thresholds"]]

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        handed = int(sum(v.get("handed_up", 0) for k, v in totals.items() if k.startswith("agglomerate-")))
        return (f"{int(totals.get('merge', {}).get('edges', 0)):,} edges in the region graph; "
                f"{handed:,} regions handed up a level")

    def cleanup() -> None:
        graph.cleanup()
        open_kv(work()).delete_prefix("")

    result.finish, result.outcome, result.cleanup = finish, outcome, cleanup
    return result, notes
