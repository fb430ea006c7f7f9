"""``pumice agglomerate FRAGMENTS --boundary|--affinities SRC --out DIR``: bodies from fragments.

**Region graph.** The stages of ``pumice edges``: one edge per pair of fragments touching across a
voxel face, with its contact (faces), the score summed over the faces (the mean of the two voxels'
boundary, or 1 - the affinity of the face) and the highest face score, built per block and summed
per partition of pairs (``FRAGMENTS/<name>/part-*.parquet``) with neuclease's merge table
(``merge-table.csv``, which ``pumice serve cleave`` reads).

**Agglomeration** (one task: it holds the region graph, about 150 bytes per edge, never the
voxels): the edge of lowest score is merged first, waterz-style, until the lowest score exceeds the
threshold. Merging two regions joins their edges to a common neighbour: contacts and score sums
add (``--score mean``: the score is the mean over the joined contact), maxima take the larger
(``--score max``) and face-cost histograms add (``--score q50|q75``: the contact's median or 75th
percentile face cost, to 1/256: the centre of the bin holding the ceil(q n)-th smallest of its n
faces). ``--score q50-lowest|q75-lowest`` counts each original contact once, at its lowest face
cost, and takes the quantile over the contacts joined into an edge: waterz's default score
(``HistogramQuantileAffinity`` with ``InitWithMax``; on SNEMI3D-mini it measured better than the
contacts' true median, 1.78 against 1.92 bits on the same fragments). Ties go to the larger contact (more evidence; on maps of few grey levels ties
are many, and this order measured better on SNEMI3D than the alternatives), then to the pair of
smallest names (a region is named by its smallest fragment), so every run gives the same result. Several ``--thresholds`` share one pass: the mapping is read off as the score passes each.

**Output** per threshold: ``DIR/mapping-<t>.csv`` (``sv,body``; a body is named by its smallest
fragment, so an unmerged fragment keeps its id), which ``pumice remap --mapping`` and ``pumice serve
cleave --mapping`` read, and ``DIR/agglomeration.json`` (thresholds, merges, bodies per threshold).
"""

from __future__ import annotations

import heapq
import io
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import PumiceError
from ..plan import Plan, Stage, Task, planner, register
from ..storage import urls
from ..storage.kv import open_kv
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


def lowest_cost_bins(table: Any) -> np.ndarray:
    """Each edge's lowest face-cost bin (``--score qNN-lowest``), from the edge table's list columns."""
    bins = table.column("cost_bins").combine_chunks()
    starts = bins.offsets.to_numpy()[:-1]
    return np.minimum.reduceat(bins.values.to_numpy().astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)


def agglomerate(a: np.ndarray, b: np.ndarray, area: np.ndarray, total: np.ndarray, highest: np.ndarray,
                thresholds: Sequence[float], score: str = "mean", histograms: np.ndarray | None = None,
                lowest: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Merge the region graph (edges a-b with contact ``area``, score sum ``total``, maximum
    ``highest``; for quantile scores each edge's face-cost ``histograms``, E x bins, or for
    ``qNN-lowest`` each edge's ``lowest`` face-cost bin) by increasing score up to each threshold.
    Returns the fragments and, per threshold (ascending), each fragment's body (its body's smallest
    fragment), and the merges made by then."""
    nodes = np.unique(np.concatenate([a, b])) if len(a) else np.zeros(0, np.uint64)
    n = len(nodes)
    u = np.searchsorted(nodes, a).tolist()
    v = np.searchsorted(nodes, b).tolist()
    area_ = [float(x) for x in area]
    total_ = [float(x) for x in total]
    high = [float(x) for x in highest]
    ends = [[x, y] for x, y in zip(u, v)]
    alive = [True] * len(u)
    version = [0] * len(u)
    adjacency: list[dict[int, int]] = [dict() for _ in range(n)]
    for e, (x, y) in enumerate(zip(u, v)):
        adjacency[x][y] = e
        adjacency[y][x] = e
    parent = list(range(n))  # each region's representative is its smallest node index

    q = int(score[1:3]) / 100 if score.startswith("q") else None
    # qNN-lowest: each edge's contacts' lowest bins, sorted (one per original contact: memory follows
    # the edges, not edges x bins)
    if score.endswith("-lowest") and lowest is None:
        raise ValueError("qNN-lowest scores need the edges' lowest bins")
    if q is not None and not score.endswith("-lowest") and histograms is None:
        raise ValueError("quantile scores need the edges' histograms")
    members = [[int(x)] for x in lowest] if score.endswith("-lowest") else None

    def value(e: int) -> float:
        if members is not None:
            m = members[e]
            return (m[quantile_rank(q, len(m)) - 1] + 0.5) / edges.BINS
        if q is not None:
            return quantile_cost(histograms[e], q)
        return total_[e] / area_[e] if score == "mean" else high[e]

    heap = [(value(e), -area_[e], min(ends[e]), max(ends[e]), e, 0) for e in range(len(u))]
    heapq.heapify(heap)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    bodies, merges_by, merges = [], [], 0
    for threshold in sorted(thresholds):
        while heap and heap[0][0] <= threshold:
            s, _, _, _, e, ver = heapq.heappop(heap)
            if not alive[e] or ver != version[e]:
                continue
            x, y = ends[e]
            alive[e] = False
            # The region of the smaller fragment absorbs the other: it keeps its name (a body is named
            # by its smallest fragment) and the heap keys of its own edges; only the absorbed region's
            # edges get new keys (and joined edges their new contact), so the tie order holds exactly.
            keep, gone = min(x, y), max(x, y)
            del adjacency[keep][gone]
            del adjacency[gone][keep]
            for w, f in adjacency[gone].items():
                del adjacency[w][gone]
                if w in adjacency[keep]:  # both touch w: one edge with the contacts joined
                    g = adjacency[keep][w]
                    area_[g] += area_[f]
                    total_[g] += total_[f]
                    high[g] = max(high[g], high[f])
                    if histograms is not None:
                        histograms[g] += histograms[f]
                    if members is not None:
                        members[g] = sorted(members[g] + members[f])  # two sorted runs: linear
                        members[f] = []
                    alive[f] = False
                    version[g] += 1
                    heapq.heappush(heap, (value(g), -area_[g], min(keep, w), max(keep, w), g, version[g]))
                else:  # w's edge now ends at keep
                    ends[f] = [keep, w]
                    adjacency[keep][w] = f
                    adjacency[w][keep] = f
                    version[f] += 1
                    heapq.heappush(heap, (value(f), -area_[f], min(keep, w), max(keep, w), f, version[f]))
            adjacency[gone] = {}
            parent[gone] = keep
            merges += 1
        roots = np.fromiter((find(i) for i in range(n)), np.int64, n)
        bodies.append(nodes[roots])
        merges_by.append(merges)
    return nodes, bodies, merges_by


def cost_histograms(table: Any) -> np.ndarray:
    """Each edge's face-cost histogram (E x edges.BINS uint32) from the edge table's list columns."""
    bins, counts = table.column("cost_bins").combine_chunks(), table.column("cost_counts").combine_chunks()
    rows = np.repeat(np.arange(len(bins)), np.diff(bins.offsets.to_numpy()))
    out = np.zeros((len(bins), edges.BINS), np.uint32)
    np.add.at(out, (rows, bins.values.to_numpy().astype(np.int64)), counts.values.to_numpy())
    return out


@register("agglomerate.merge")
@dataclass(frozen=True)
class AgglomerateTask(Task):
    fragments: str
    graph: str  # the edge table's directory inside the fragments layer
    out: str
    thresholds: tuple
    score: str = DEFAULT_SCORE

    def run(self) -> dict[str, Any]:
        table = edges.read_edges(self.fragments, self.graph)
        a = table.column("id_a").to_numpy()
        b = table.column("id_b").to_numpy()
        area = table.column("area").to_numpy()
        mean = table.column("score").to_numpy()  # a cost: the mean boundary, or 1 - the mean affinity
        highest = table.column("max_score").to_numpy()
        lowest = self.score.endswith("-lowest")
        histograms = cost_histograms(table) if self.score.startswith("q") and not lowest else None
        nodes, bodies, merges = agglomerate(a, b, area, mean * area, highest, self.thresholds, self.score, histograms,
                                            lowest_cost_bins(table) if lowest else None)
        out = open_kv(self.out)
        record = {"score": self.score, "edges": len(a), "fragments_in_graph": len(nodes),
                  "thresholds": []}
        for threshold, body, made in zip(sorted(self.thresholds), bodies, merges):
            text = io.StringIO()
            text.write("sv,body\n")
            text.writelines(f"{s},{t}\n" for s, t in zip(nodes.tolist(), body.tolist()))
            out.put(mapping_name(threshold), text.getvalue().encode())
            record["thresholds"].append({"threshold": threshold, "merges": made, "bodies": int(len(np.unique(body))),
                                         "mapping": mapping_name(threshold)})
        out.put("agglomeration.json", json.dumps(record, indent=1).encode())
        return {"edges": len(a), "merges": merges[-1] if merges else 0}


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
    # The job lives beside its output (DIR), whose mappings say it finished; edges' work files stay
    # under the fragments layer, where its stages put them.
    result = Plan("agglomerate", out_url, {**graph.params, "graph_job": graph.job_id, "out": out_url,
                                                      "thresholds": sorted(thresholds), "score": score})
    result.stages = [*graph.stages, Stage.each("agglomerate", [0], lambda _: AgglomerateTask(
        graph.destination, name, out_url, tuple(sorted(thresholds)), score))]
    result.description = {**graph.description, "agglomeration": f"by increasing {score} score up to "
                          f"{', '.join(f'{t:g}' for t in sorted(thresholds))}",
                          "mappings": f"{urls.display(out_url)}/mapping-<threshold>.csv"}
    result.prepare, result.provenance = graph.prepare, None

    def finish() -> list[str]:
        said = graph.finish() or []
        record = json.loads(open_kv(out_url).get("agglomeration.json"))
        return said + [f"threshold {t['threshold']:g}: {t['bodies']:,} bodies after {t['merges']:,} merges "
                       f"({urls.display(urls.join(out_url, t['mapping']))})" for t in record["thresholds"]]

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        return f"{int(totals.get('merge', {}).get('edges', 0)):,} edges in the region graph"

    result.finish, result.outcome = finish, outcome
    return result, notes
