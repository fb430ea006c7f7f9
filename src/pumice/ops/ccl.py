"""``pumice ccl SRC DEST``: connected components of a segmentation (each label's pieces become
separate objects) or of a thresholded image, at any size, in bounded memory per task.

Stages (each a set of independent, idempotent tasks):

- **label** (one task per block): cc3d labels the block on its own; the task leaves the block's six
  face planes (piece numbers and the voxels' labels or foreground) and its pieces' sizes.
- **seam** (per block): for each of the block's upper faces, a slab two voxels thick across the face,
  one voxel wider than the block on every other side (so pieces meeting across an edge or a corner
  are seen too), is put together from the face planes of the blocks it touches; cc3d on the slab
  says which pieces touch. Each touching pair is an edge of the equivalence graph, whose nodes are
  pieces (block number << 32 | piece number).
- **round 1..R** (per partition: a box of blocks sized from ``--memory``): each partition joins its
  own pieces (SciPy's connected components on the edges inside it) and then exchanges labels with
  the others by files, one round per stage: a piece's label is the smallest piece known to be
  connected to it; a changed label is offered to the piece's neighbours in other partitions and the
  partition holding the label is asked for that piece's own label (pointer jumping: the distance a
  label travels doubles each round). A task holds its partition and one incoming file at a time, so
  its memory follows the partition's blocks, never the volume. A round in which nothing changed
  anywhere is the fixed point (every piece labelled with its component's smallest piece); the
  rounds after it do nothing.
- **sizes**, **heads**, **offsets**, **number**: with ``--dust``, component sizes are summed where
  each component's smallest piece lives; each block counts the components that start in it (their
  smallest piece is there and they are not dust); a prefix sum over blocks gives each block its
  first id; every piece learns its component's id.
- **relabel** (per block): cc3d again on the block (the same result), each piece replaced by its
  component's id, written with any mips.

**Numbering.** Components are numbered 1..K in the order of their first voxel, scanning task blocks
in order (x fastest, then y, then z) and each block's voxels the same way. The block shape is part
of the job (``--shape`` fixes it), so the same command writes the same ids.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LayerError, PumiceError, RunFailed
from ..geometry import Bbox, Vec, format_bytes, format_vec, vec
from ..plan import Plan, Stage, Task, planner, register
from ..storage import bookkeeping, urls
from ..storage.info import write_unit
from ..storage.blobs import pack, unpack
from ..storage.kv import KV, open_kv
from ..storage.layer import Layer
from .blockwise import BlockTask, OutputOptions, crop, new_layer

DEFAULT_MEMORY = 512 * 2**20
CONNECTIVITY = (6, 18, 26)
BYTES_PER_VOXEL = 40  # labels, cc3d's output and work, the output ids
BYTES_PER_FACE_VOXEL = 96  # a partition's share of a face voxel: nodes, labels, edges, their indexes
PIECE_BITS = 32


def block_of(keys: np.ndarray) -> np.ndarray:
    """The block number of each piece key (``block << 32 | piece``)."""
    return (np.asarray(keys, dtype=np.uint64) >> np.uint64(PIECE_BITS)).astype(np.int64)


def piece_of(keys: np.ndarray) -> np.ndarray:
    """The piece number within its block of each piece key."""
    return (np.asarray(keys, dtype=np.uint64) & np.uint64(2**PIECE_BITS - 1)).astype(np.int64)
FACES = ("x0", "x1", "y0", "y1", "z0", "z1")


# -- the block grid -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """Task blocks of ``block`` voxels from ``region``'s first voxel; block n's pieces are
    ``n << 32 | piece``. Partitions are boxes of ``part`` blocks."""

    region: tuple  # Bbox as a list
    block: tuple
    part: tuple = (1, 1, 1)

    @functools.cached_property
    def bounds(self) -> Bbox:
        return Bbox.from_list(self.region)

    @functools.cached_property
    def shape(self) -> tuple[int, int, int]:
        return tuple(-(-s // b) for s, b in zip(self.bounds.shape, self.block))

    @functools.cached_property
    def part_shape(self) -> tuple[int, int, int]:
        return tuple(-(-s // p) for s, p in zip(self.shape, self.part))

    @property
    def blocks(self) -> int:
        return int(np.prod(self.shape))

    @property
    def partitions(self) -> int:
        return int(np.prod(self.part_shape))

    def index(self, ijk: Sequence[int]) -> int:
        i, j, k = ijk
        return int(i + self.shape[0] * (j + self.shape[1] * k))

    def ijk(self, index: int) -> tuple[int, int, int]:
        nx, ny = self.shape[0], self.shape[1]
        return index % nx, (index // nx) % ny, index // (nx * ny)

    def box(self, ijk: Sequence[int]) -> Bbox:
        lo = [m + i * b for m, i, b in zip(self.bounds.minpt, ijk, self.block)]
        return Bbox(lo, [min(a + b, h) for a, b, h in zip(lo, self.block, self.bounds.maxpt)])

    def ijk_of(self, box: Bbox) -> tuple[int, int, int]:
        return tuple((lo - m) // b for lo, m, b in zip(box.minpt, self.bounds.minpt, self.block))

    def inside(self, ijk: Sequence[int]) -> bool:
        return all(0 <= i < n for i, n in zip(ijk, self.shape))

    def partition_of_blocks(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        nx, ny = self.shape[0], self.shape[1]
        i, j, k = index % nx, (index // nx) % ny, index // (nx * ny)
        px, py = self.part_shape[0], self.part_shape[1]
        return (i // self.part[0]) + px * ((j // self.part[1]) + py * (k // self.part[2]))

    def partition_of(self, keys: np.ndarray) -> np.ndarray:
        return self.partition_of_blocks(block_of(keys))

    def blocks_of_partition(self, p: int) -> list[int]:
        px, py = self.part_shape[0], self.part_shape[1]
        pijk = (p % px, (p // px) % py, p // (px * py))
        ranges = [range(q * s, min((q + 1) * s, n)) for q, s, n in zip(pijk, self.part, self.shape)]
        return [self.index((i, j, k)) for k in ranges[2] for j in ranges[1] for i in ranges[0]]


# -- kernels --------------------------------------------------------------------------------------
def foreground(data: np.ndarray, gte: float | None, lte: float | None) -> np.ndarray:
    """Voxels in the threshold range, as 0/1."""
    mask = np.ones(data.shape, dtype=bool)
    if gte is not None:
        mask &= data >= gte
    if lte is not None:
        mask &= data <= lte
    return mask.view(np.uint8)


def pieces(values: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """cc3d's components of an X, Y, Z block (uint32, numbered in order of first voxel, x fastest)."""
    import cc3d

    labels, n = cc3d.connected_components(np.asfortranarray(values), connectivity=connectivity, return_N=True,
                                          out_dtype=np.uint32)
    return labels, int(n)


def slab_edges(values: np.ndarray, keys: np.ndarray, connectivity: int) -> np.ndarray:
    """Pairs of pieces (keys) that touch in a slab: cc3d on the slab's values, then every piece of a
    slab component joined to the component's first piece. N x 2 uint64."""
    slab, _ = pieces(values, connectivity)
    fg = (slab > 0) & (keys > 0)
    comp, key = slab[fg].astype(np.uint64), keys[fg]
    if not comp.size:
        return np.zeros((0, 2), np.uint64)
    order = np.lexsort((key, comp))
    comp, key = comp[order], key[order]
    keep = np.ones(comp.size, bool)
    keep[1:] = (comp[1:] != comp[:-1]) | (key[1:] != key[:-1])
    comp, key = comp[keep], key[keep]
    starts = np.ones(comp.size, bool)
    starts[1:] = comp[1:] != comp[:-1]
    first = key[starts][np.cumsum(starts) - 1]
    joined = first != key
    return np.stack([first[joined], key[joined]], axis=1)


def face_slice(axis: int, side: int, shape: Sequence[int]) -> tuple:
    return tuple(slice(shape[a] - 1, shape[a]) if (a == axis and side) else slice(0, 1) if a == axis else slice(None)
                 for a in range(3))


# -- tasks ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CclTask(Task):
    """What every ccl task knows: the source, the grid and where the job's work files are."""

    src: str
    mip: int
    grid: Grid
    work: str
    connectivity: int = 26
    threshold_gte: float | None = None
    threshold_lte: float | None = None
    dust: int = 0
    fill_missing: bool = False

    def values(self, source: Layer, box: Bbox) -> np.ndarray:
        data = source.read(box, self.mip, fill_missing=self.fill_missing)[..., 0]
        if self.threshold_gte is None and self.threshold_lte is None:
            return data
        return foreground(data, self.threshold_gte, self.threshold_lte)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", _grid(self.grid))  # rebuilt from JSON: a dict

    def kv(self) -> KV:
        return open_kv(self.work)


def _grid(value: Any) -> Grid:
    return value if isinstance(value, Grid) else Grid(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})


@register("ccl.label")
@dataclass(frozen=True)
class LabelTask(CclTask):
    block: int = 0

    def run(self) -> dict[str, Any]:
        box = self.grid.box(self.grid.ijk(self.block))
        values = self.values(Layer.open(self.src), box)
        labels, n = pieces(values, self.connectivity)
        items = []
        for f, name in enumerate(FACES):
            where = face_slice(f // 2, f % 2, labels.shape)
            items.append((f"faces/{self.block}/{name}", pack(pieces=labels[where], values=values[where])))
        sizes = np.bincount(labels.ravel(order="F"), minlength=n + 1).astype(np.uint64) if self.dust else np.zeros(0, np.uint64)
        items.append((f"blocks/{self.block}", pack(n=np.array(n, np.uint64), sizes=sizes)))
        self.kv().put_many(items)
        return {"voxels": box.size, "pieces": n}


@register("ccl.seam")
@dataclass(frozen=True)
class SeamTask(CclTask):
    block: int = 0

    def run(self) -> dict[str, Any]:
        grid, kv = self.grid, self.kv()
        ijk = grid.ijk(self.block)
        box = grid.box(ijk)
        edges = []
        for axis in range(3):
            up = list(ijk)
            up[axis] += 1
            if not grid.inside(up):
                continue
            reach = 0 if self.connectivity == 6 else 1  # faces only: no piece of a row beside touches
            lo = [max(a - reach, m) for a, m in zip(box.minpt, grid.bounds.minpt)]
            hi = [min(a + reach, m) for a, m in zip(box.maxpt, grid.bounds.maxpt)]
            lo[axis], hi[axis] = box.maxpt[axis] - 1, box.maxpt[axis] + 1
            slab = Bbox(lo, hi)
            values = keys = None
            for d in slab_neighbours(axis, reach):
                nijk = [a + b for a, b in zip(ijk, d)]
                if not grid.inside(nijk):
                    continue
                nbox = grid.box(nijk)
                side = 0 if d[axis] else 1  # the upper layer's lower face, this layer's upper face
                plane = Bbox([nbox.maxpt[a] - 1 if (a == axis and side) else nbox.minpt[a] for a in range(3)],
                             [nbox.minpt[a] + 1 if (a == axis and not side) else nbox.maxpt[a] for a in range(3)])
                part = plane.intersection(slab)
                if part.empty():
                    continue
                face = unpack(kv.get(f"faces/{grid.index(nijk)}/{'xyz'[axis]}{side}"))
                if values is None:
                    values = np.zeros(slab.shape, dtype=face["values"].dtype, order="F")
                    keys = np.zeros(slab.shape, dtype=np.uint64, order="F")
                src = part.slices(plane.minpt)
                dst = part.slices(slab.minpt)
                values[dst] = face["values"][src]
                local = face["pieces"][src].astype(np.uint64)
                keys[dst] = np.where(local > 0, (np.uint64(grid.index(nijk)) << np.uint64(PIECE_BITS)) | local, 0)
            if values is not None:
                edges.append(slab_edges(values, keys, self.connectivity))
        found = np.unique(np.concatenate(edges), axis=0) if edges else np.zeros((0, 2), np.uint64)
        if len(found):
            pu, pv = grid.partition_of(found[:, 0]), grid.partition_of(found[:, 1])
            kv.put_many([(f"edges/{int(p)}/{self.block}", pack(edges=found[(pu == p) | (pv == p)]))
                         for p in np.unique(np.concatenate([pu, pv]))])
        return {"edges": int(len(found))}


def slab_neighbours(axis: int, reach: int) -> list[tuple[int, int, int]]:
    """Neighbour offsets whose face planes make the slab across ``axis``: this layer and the next
    along it, ``reach`` blocks either way along the others."""
    import itertools

    ranges = [(0, 1) if a == axis else tuple(range(-reach, reach + 1)) for a in range(3)]
    return list(itertools.product(*ranges))


@dataclass
class PartitionState:
    """A partition's pieces that touch other blocks: ``nodes`` (sorted keys), the group of each
    (pieces joined inside the partition), each group's smallest piece (``group_key``), label (the
    smallest piece known connected), and edges to pieces elsewhere (group, key)."""

    nodes: np.ndarray
    group: np.ndarray
    group_key: np.ndarray
    label: np.ndarray
    remote_group: np.ndarray | None = None  # fixed after round 1: stored once, apart (``remote/<p>``)
    remote_key: np.ndarray | None = None

    def groups_of(self, keys: np.ndarray) -> np.ndarray:
        where = np.searchsorted(self.nodes, keys)
        if len(keys) and (where.max(initial=0) >= len(self.nodes) or np.any(self.nodes[where] != keys)):
            raise RuntimeError("a message names a piece this partition does not hold")  # a bug, never input
        return self.group[where]

    def to_bytes(self) -> bytes:
        """What changes round to round (the edges to other partitions are stored once, apart)."""
        return pack(nodes=self.nodes, group=self.group, group_key=self.group_key, label=self.label)

    def remote_bytes(self) -> bytes:
        return pack(group=self.remote_group, key=self.remote_key)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "PartitionState":
        return cls(**{k: v.copy() for k, v in unpack(blob).items()})  # writable: rounds update labels

    @classmethod
    def build(cls, edges: np.ndarray, mine: np.ndarray) -> "PartitionState":
        """From the edges that touch this partition; ``mine``: per endpoint, whether it is here."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        nodes = np.unique(edges[mine])
        inside = mine[:, 0] & mine[:, 1]
        u = np.searchsorted(nodes, edges[inside, 0])
        v = np.searchsorted(nodes, edges[inside, 1])
        n = len(nodes)
        graph = coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(n, n))
        count, group = connected_components(graph, directed=False) if n else (0, np.zeros(0, np.int64))
        group_key = np.full(count, np.iinfo(np.uint64).max, dtype=np.uint64)
        np.minimum.at(group_key, group, nodes)
        crossing = mine[:, 0] ^ mine[:, 1]
        here = np.where(mine[crossing, 0], edges[crossing, 0], edges[crossing, 1])
        there = np.where(mine[crossing, 0], edges[crossing, 1], edges[crossing, 0])
        remote = np.unique(np.stack([group[np.searchsorted(nodes, here)].astype(np.uint64), there], axis=1), axis=0) \
            if len(here) else np.zeros((0, 2), np.uint64)
        return cls(nodes, group.astype(np.int64), group_key, group_key.copy(), remote[:, 0].astype(np.int64), remote[:, 1])


@register("ccl.round")
@dataclass(frozen=True)
class RoundTask(CclTask):
    """One round of label exchange for partition ``partition`` (see the module's notes)."""

    partition: int = 0
    round: int = 1

    def run(self) -> dict[str, Any]:
        kv, grid, p, r = self.kv(), self.grid, self.partition, self.round
        if r > 1 and not kv.list(f"changed/{r - 1}/"):
            return {"quiet_rounds": 1}
        if r == 1:
            blobs = kv.get_many(kv.list(f"edges/{p}/"))
            edges = np.concatenate([unpack(b)["edges"] for b in blobs]) if blobs else np.zeros((0, 2), np.uint64)
            edges = np.unique(edges, axis=0) if len(edges) else edges
            mine = grid.partition_of(edges.ravel()).reshape(-1, 2) == p
            state = PartitionState.build(edges, mine)
            before = np.full(len(state.label), np.iinfo(np.uint64).max, np.uint64)  # everything is news
        else:
            state = PartitionState.from_bytes(kv.get(f"state/{r - 1}/{p}"))
            remote = unpack(kv.get(f"remote/{p}"))
            state.remote_group, state.remote_key = remote["group"], remote["key"]
            before = state.label.copy()
        label = state.label
        inbox = f"messages/{r}/{p}/"
        keys = kv.list(inbox)
        for key in [k for k in keys if "/offer-" in k]:
            message = unpack(kv.get(key))
            np.minimum.at(label, state.groups_of(message["to"]), message["label"])
        self._jump_locally(state)
        outgoing: list[tuple[str, bytes]] = []
        for key in [k for k in keys if "/ask-" in k]:  # answered one sender at a time
            message = unpack(kv.get(key))
            current = label[state.groups_of(message["about"])]
            better = current < message["label"]
            if better.any():
                sender = key.rsplit("-", 1)[1]
                outgoing.append((f"messages/{r + 1}/{sender}/offer-reply-{p}",
                                 pack(to=message["to"][better], label=current[better])))
        changed = label < before
        # A changed label goes to the group's neighbours elsewhere, and to the piece that was its
        # label (which hooks that piece's whole tree onto the smaller one: the next jumps of every
        # piece pointing there bring it the new label).
        sending = changed[state.remote_group]
        to, offered = state.remote_key[sending], label[state.remote_group[sending]]
        hooked = changed & (before != state.group_key) & (before != np.iinfo(np.uint64).max)
        to = np.concatenate([to, before[hooked]])
        offered = np.concatenate([offered, label[hooked]])
        targets = grid.partition_of(to)
        for q in np.unique(targets):
            sel = targets == q
            outgoing.append((f"messages/{r + 1}/{int(q)}/offer-edge-{p}", pack(to=to[sel], label=offered[sel])))
        active = changed.any() or bool(outgoing)  # asks alone are not activity: see below
        # Every group labelled with a piece elsewhere asks that piece's partition for its label, each
        # round (the pointer jump); the answer comes only if it is smaller. A round with no changed
        # label, no offer and no smaller answer is the fixed point.
        holder = grid.partition_of(label)
        asking = (holder != p) & (label != state.group_key)
        for q in np.unique(holder[asking]):
            sel = asking & (holder == q)
            outgoing.append((f"messages/{r + 1}/{int(q)}/ask-{p}",
                             pack(about=label[sel], to=state.group_key[sel], label=label[sel])))
        outgoing.append((f"state/{r}/{p}", state.to_bytes()))
        if r == 1:
            outgoing.append((f"remote/{p}", state.remote_bytes()))
        if active:
            outgoing.append((f"changed/{r}/{p}", b""))
        kv.put_many(outgoing)
        return {"labels_changed": int(changed.sum())} if r > 1 else {"pieces_on_faces": len(state.nodes)}

    @staticmethod
    def _jump_locally(state: PartitionState) -> None:
        """Labels that are pieces of this partition take those pieces' labels, until none changes."""
        label = state.label
        while True:
            where = np.searchsorted(state.nodes, label)
            here = where < len(state.nodes)
            here[here] = state.nodes[where[here]] == label[here]
            jumped = np.minimum(label[here], label[state.group[where[here]]])
            if np.array_equal(jumped, label[here]):
                return
            label[here] = jumped


def final_state(kv: KV, partition: int, rounds: int) -> PartitionState | None:
    """The partition's state after the last round that did anything (None: it has no face pieces)."""
    for r in range(rounds, 0, -1):
        blob = kv.get(f"state/{r}/{partition}")
        if blob is not None:
            return PartitionState.from_bytes(blob)
    return None


@register("ccl.sizes")
@dataclass(frozen=True)
class SizesTask(CclTask):
    """--dust: each face piece's voxels, summed per component where the component's label lives."""

    partition: int = 0
    rounds: int = 1

    def run(self) -> dict[str, Any]:
        kv, grid = self.kv(), self.grid
        state = final_state(kv, self.partition, self.rounds)
        if state is None or not len(state.nodes):
            return {}
        blocks = block_of(state.nodes)
        sizes = np.zeros(len(state.nodes), np.uint64)
        for b in np.unique(blocks):
            sel = blocks == b
            sizes[sel] = unpack(kv.get(f"blocks/{int(b)}"))["sizes"][piece_of(state.nodes[sel])]
        labels = state.label[state.group]
        owners = grid.partition_of(labels)
        for q in np.unique(owners):  # one message at a time: a partition borders up to 26 others
            sel = owners == q
            reps, inverse = np.unique(labels[sel], return_inverse=True)
            total = np.zeros(len(reps), np.uint64)
            np.add.at(total, inverse, sizes[sel])
            kv.put(f"sizes/{int(q)}/{self.partition}", pack(rep=reps, size=total))
        return {}


@register("ccl.heads")
@dataclass(frozen=True)
class HeadsTask(CclTask):
    """Per block of the partition: the pieces that get no id of their own (joined to a smaller
    piece, or dust), and how many components start in the block."""

    partition: int = 0
    rounds: int = 1

    def run(self) -> dict[str, Any]:
        kv, grid = self.kv(), self.grid
        if grid.partitions > 1 and kv.list(f"changed/{self.rounds}/"):
            raise RunFailed(f"ccl's label exchange did not settle in {self.rounds} rounds (a bug to report, with the "
                            f"volume's shape and --shape); the output is incomplete")
        state = final_state(kv, self.partition, self.rounds)
        labels = state.label[state.group] if state is not None else np.zeros(0, np.uint64)
        nodes = state.nodes if state is not None else np.zeros(0, np.uint64)
        totals: dict[int, int] = {}
        if self.dust:
            for key in kv.list(f"sizes/{self.partition}/"):
                message = unpack(kv.get(key))
                for rep, size in zip(message["rep"].tolist(), message["size"].tolist()):
                    totals[rep] = totals.get(rep, 0) + size
        blocks = block_of(nodes)
        items, counts = [], []
        components = dust_components = 0
        for b in grid.blocks_of_partition(self.partition):
            info = unpack(kv.get(f"blocks/{b}"))
            n = int(info["n"])
            sel = blocks == b
            local = piece_of(nodes[sel])
            joined = local[labels[sel] != nodes[sel]]
            excluded = [joined]
            if self.dust:
                sizes = info["sizes"].astype(np.int64)
                small = np.flatnonzero(sizes < self.dust)
                small = small[small > 0]
                on_faces = np.zeros(n + 1, bool)
                on_faces[local] = True
                excluded.append(small[~on_faces[small]])  # pieces wholly inside: their own size
                heads = local[labels[sel] == nodes[sel]]
                head_keys = nodes[sel][labels[sel] == nodes[sel]]
                excluded.append(heads[np.array([totals.get(int(k), 0) < self.dust for k in head_keys.tolist()], bool)])
            excluded = np.unique(np.concatenate(excluded)).astype(np.uint32)
            live = n - len(excluded)
            components += live
            dust_components += int(len(excluded) - len(joined))
            items.append((f"heads/{b}", excluded.tobytes()))
            counts.append((b, live))
        items.append((f"counts/{self.partition}", np.asarray(counts, np.int64).tobytes()))
        kv.put_many(items)
        return {"components": components, "dust_components": dust_components}


@register("ccl.offsets")
@dataclass(frozen=True)
class OffsetsTask(CclTask):
    """Each block's first id: a prefix sum over blocks of the components that start in them (the
    one object that grows with the number of blocks: 8 bytes each)."""

    def run(self) -> dict[str, Any]:
        kv, grid = self.kv(), self.grid
        live = np.zeros(grid.blocks, np.uint64)
        for p in range(grid.partitions):
            counts = np.frombuffer(kv.get(f"counts/{p}"), np.int64).reshape(-1, 2)
            live[counts[:, 0]] = counts[:, 1]
        offsets = np.concatenate([[0], np.cumsum(live)]).astype("<u8")
        kv.put("offsets", offsets.tobytes())
        return {}


def block_offset(kv: KV, block: int) -> int:
    return int(np.frombuffer(kv.get_range("offsets", 8 * block, 8 * block + 8), "<u8")[0])


def ids_of(excluded: np.ndarray, offset: int, local: np.ndarray) -> np.ndarray:
    """Ids of a block's pieces ``local`` that start a component: the block's first id plus their rank
    among the pieces not excluded."""
    return (offset + local - np.searchsorted(excluded, local)).astype(np.uint64)


@register("ccl.number")
@dataclass(frozen=True)
class NumberTask(CclTask):
    """Every face piece of the partition learns its component's id (from the block where the
    component starts: its first id and its excluded pieces, read one block at a time)."""

    partition: int = 0
    rounds: int = 1

    def run(self) -> dict[str, Any]:
        kv = self.kv()
        state = final_state(kv, self.partition, self.rounds)
        if state is None or not len(state.nodes):
            return {}
        labels = state.label[state.group]
        ids = np.zeros(len(labels), np.uint64)
        head_block = block_of(labels)
        for b in np.unique(head_block):
            sel = head_block == b
            excluded = np.frombuffer(kv.get(f"heads/{int(b)}"), np.uint32).astype(np.int64)
            local = piece_of(labels[sel])
            dust = np.isin(local, excluded)
            ids[sel] = np.where(dust, 0, ids_of(excluded, block_offset(kv, int(b)), local))
        blocks = block_of(state.nodes)
        kv.put_many([(f"ids/{int(b)}", pack(local=piece_of(state.nodes[blocks == b]).astype(np.uint32),
                                           ids=ids[blocks == b])) for b in np.unique(blocks)])
        return {}


@register("ccl.relabel")
@dataclass(frozen=True)
class RelabelTask(BlockTask):
    """The block's pieces (cc3d again: the same as the label stage's) replaced by their ids."""

    grid: Any = None
    work: str = ""
    connectivity: int = 26
    threshold_gte: float | None = None
    threshold_lte: float | None = None
    mapping: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", _grid(self.grid))

    def compute(self, data: np.ndarray, region: Bbox, read: Bbox, source: Layer) -> tuple[np.ndarray, dict]:
        grid = self.grid
        block = grid.index(grid.ijk_of(Bbox.from_list(self.bbox)))
        kv = open_kv(self.work)
        values = data[..., 0]
        if self.threshold_gte is not None or self.threshold_lte is not None:
            values = foreground(values, self.threshold_gte, self.threshold_lte)
        labels, n = pieces(values, self.connectivity)
        table, starts = id_table(kv, block, n, np.dtype(Layer.open(self.dest).info.data_type))
        if self.mapping:
            source_label = np.zeros(n + 1, values.dtype)
            source_label[labels.ravel(order="F")] = values.ravel(order="F")
            kv.put(f"mapping/{block:012d}", pack(ids=table[starts].astype(np.uint64),
                                                 labels=source_label[starts].astype(np.uint64)))
        return np.asfortranarray(table[labels]), {}


def id_table(kv: KV, block: int, n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Block ``block``'s pieces 0..n -> their components' ids (in ``dtype``: indexing with it makes the
    output block with no conversion), and which pieces start their component."""
    excluded = np.frombuffer(kv.get(f"heads/{block}"), np.uint32).astype(np.int64)
    table = np.zeros(n + 1, dtype)
    table[1:] = ids_of(excluded, block_offset(kv, block), np.arange(1, n + 1))
    table[excluded] = 0
    starts = table.astype(bool)  # pieces that start their component, before the face pieces are set
    blob = kv.get(f"ids/{block}")
    if blob is not None:
        faces = unpack(blob)
        table[faces["local"].astype(np.int64)] = faces["ids"]
    return table, starts


# -- the planner ----------------------------------------------------------------------------------
def partition_of_grid(region: Bbox, block: Sequence[int], memory: int) -> Grid:
    """The grid of ``block``s over ``region`` with partitions (boxes of blocks) grown in turn along
    x, y, z while a partition's face pieces fit ``memory``."""
    face_bytes = BYTES_PER_FACE_VOXEL * 2 * sum(int(np.prod(block)) // b for b in block)
    per_partition = max(1, memory // max(1, face_bytes))
    part = [1, 1, 1]
    grid_shape = Grid(tuple(region.to_list()), tuple(block)).shape
    grown = True
    while grown:  # grow the partition box of blocks in turn while it fits the budget
        grown = False
        for a in range(3):
            candidate = list(part)
            candidate[a] = min(part[a] * 2, grid_shape[a])
            if candidate[a] > part[a] and np.prod(candidate) <= per_partition:
                part, grown = candidate, True
    return Grid(tuple(region.to_list()), tuple(int(b) for b in block), tuple(part))


def reduction_stages(grid: Grid, rounds: int, make: Any, dust: bool = False) -> list[Stage]:
    """The stages that join pieces across blocks and number the components: label rounds, with
    ``dust`` sizes, then heads, offsets, number. ``make(cls, **fields)`` builds a task of class ``cls``."""
    partitions = range(grid.partitions)
    stages = [Stage.each(f"round{r}", partitions, lambda p, r=r: make(RoundTask, partition=p, round=r))
              for r in range(1, rounds + 1)]
    if dust:
        stages.append(Stage.each("sizes", partitions, lambda p: make(SizesTask, partition=p, rounds=rounds)))
    return stages + [Stage.each("heads", partitions, lambda p: make(HeadsTask, partition=p, rounds=rounds)),
                     Stage.each("offsets", [0], lambda _: make(OffsetsTask)),
                     Stage.each("number", partitions, lambda p: make(NumberTask, partition=p, rounds=rounds))]


def task_shape(shape: Sequence[int], base: Any, unit: Sequence[int] | None = None) -> Vec:
    """``--shape``, checked: along each axis a multiple of the output's write unit (a chunk or a
    shard; ``unit`` when mips are made in the same pass), or the whole volume (one block that way)."""
    unit = write_unit(base) if unit is None else unit
    if any(s % u and s < n for s, u, n in zip(shape, unit, base.size)):
        raise PumiceError(f"--shape {format_vec(shape)} is not a multiple of the output's write unit {format_vec(unit)} "
                          f"(a chunk{', or a shard' if base.sharding else ''}) nor the whole volume {format_vec(base.size)}")
    return vec([min(s, n) for s, n in zip(shape, base.size)])


def check_mips_grid(base: Any, factors: Sequence[Sequence[int]], dest: str, operation: str) -> None:
    """Mips made in the same pass as ids need the volume to start on their grid: refuse otherwise."""
    if not factors:
        return
    total = np.prod(np.asarray(factors), axis=0)
    if any(o % t for o, t in zip(base.voxel_offset, total)):
        raise PumiceError(f"--num-mips with a volume starting at {format_vec(base.voxel_offset)}, not on the "
                          f"{format_vec(total)} grid of its mips: run {operation} without --num-mips, then "
                          f"`pumice downsample {urls.display(dest)}`")


def rounds_for(grid: Grid) -> int:
    """Rounds planned for the label exchange. A label's reach about doubles every two rounds (a chain
    of 512 partitions settles in 17), and no chain of face pieces is longer than the face voxels;
    rounds after the fixed point only list one prefix and return."""
    if grid.partitions == 1:
        return 1  # one partition joins every piece itself: nothing to exchange
    faces = sum(2 * int(np.prod(grid.bounds.shape)) // max(1, s) for s in grid.block)
    return 2 * max(1, math.ceil(math.log2(max(2, faces)))) + 6


def check_source(source: Layer, threshold_gte: float | None, threshold_lte: float | None) -> str:
    """'segmentation' or 'threshold', or a PumiceError naming the fix."""
    info = source.info
    where = urls.display(source.url)
    thresholded = threshold_gte is not None or threshold_lte is not None
    if info.num_channels != 1:
        raise LayerError(f"{where} has {info.num_channels} channels; ccl labels one channel (make one with "
                         f"`pumice transfer` or ingest a single channel)")
    if info.type == "segmentation":
        if thresholded:
            raise PumiceError(f"{where} is a segmentation: --threshold-gte/--threshold-lte apply to images (a "
                              f"segmentation's components are found per label without them)")
        if info.dtype.kind != "u":
            raise LayerError(f"{where} holds {info.data_type} ids; a segmentation's ids are unsigned integers")
        return "segmentation"
    if not thresholded:
        raise PumiceError(f"{where} is an {info.type} layer of {info.data_type}: give --threshold-gte V and/or "
                          f"--threshold-lte V to say which voxels are foreground")
    return "threshold"


@planner
def plan(src: str, dest: str, *, connectivity: int = 26, threshold_gte: float | None = None,
         threshold_lte: float | None = None, dust: int = 0, shape: Sequence[int] | None = None,
         mapping_out: str | None = None, mip: int = 0, bounds: Bbox | None = None, fill_missing: bool = False,
         chunk_size: Sequence[int] | None = None, encoding: str | None = None, sharded: bool | None = None,
         num_mips: int = 0, factor: Any = "auto", method: str = "auto", sparse: bool = False, force: bool = False,
         memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    if connectivity not in CONNECTIVITY:
        raise PumiceError(f"--connectivity must be 6, 18 or 26, got {connectivity}")
    if dust < 0:
        raise PumiceError(f"--dust must be 0 or more voxels, got {dust}")
    source, dest = Layer.open_with_destination(src, dest, "ccl")
    mode = check_source(source, threshold_gte, threshold_lte)
    if mapping_out is not None and mode != "segmentation":
        raise PumiceError("--mapping-out says which label each component came from: it applies to segmentations, "
                          "not to thresholded images")
    notes: list[str] = []
    region = crop(source, mip, bounds)
    data_type = "uint32" if region.size < 2**32 else "uint64"
    output = OutputOptions(chunk_size=chunk_size, encoding=encoding, sharded=sharded, num_mips=num_mips,
                           factor=factor, method=method, sparse=sparse, force=force)
    info, block, factors = new_layer(source, mip, region, layer_type="segmentation", data_type=data_type, channels=1,
                                     output=output, memory=memory, bytes_per_voxel=BYTES_PER_VOXEL, notes=notes)
    base = info.scales[0]
    if shape is not None:
        block = task_shape(shape, base, block if factors else None)
    check_mips_grid(base, factors, dest, "ccl")
    method_used = "mode" if factors else "average"
    if factors and method not in ("auto", "mode"):
        raise PumiceError("ccl's mips are made with --method mode (they hold ids)")
    grid = partition_of_grid(base.bounds, block, memory)
    rounds = rounds_for(grid)
    result = Plan("ccl", dest, {"src": source.url, "region": region.to_list(), "info": info.to_json(),
                                "block": list(grid.block), "partition": list(grid.part), "rounds": rounds})
    result.fresh_destination = Layer.check_destination(dest, info)
    result.provenance, result.sources = "ccl", [urls.display(source.url)]

    @functools.cache
    def work() -> str:
        return f"{dest.rstrip('/')}/{bookkeeping.job_prefix(result.job_id)}work/"

    common = dict(src=source.url, mip=mip, connectivity=connectivity, threshold_gte=threshold_gte,
                  threshold_lte=threshold_lte, dust=int(dust), fill_missing=fill_missing)

    def per_block(cls: type) -> Any:
        return lambda box: cls(grid=grid, work=work(), block=grid.index(grid.ijk_of(box)), **common)

    def relabel(box: Bbox) -> RelabelTask:
        return RelabelTask(src=source.url, mip=mip, dest=dest, bbox=tuple(box.to_list()),
                           factors=tuple(tuple(int(v) for v in f) for f in factors), method=method_used, sparse=sparse,
                           fill_missing=fill_missing, grid=grid, work=work(), connectivity=connectivity,
                           threshold_gte=threshold_gte, threshold_lte=threshold_lte, mapping=mapping_out is not None)

    stages = [Stage.grid("label", base.bounds, block, per_block(LabelTask), base.voxel_offset),
              Stage.grid("seam", base.bounds, block, per_block(SeamTask), base.voxel_offset)]
    stages += reduction_stages(grid, rounds, lambda cls, **extra: cls(grid=grid, work=work(), **extra, **common),
                               dust=bool(dust))
    stages.append(Stage.grid("relabel", base.bounds, block, relabel, base.voxel_offset))
    result.stages = stages
    result.description = {
        "source": f"{urls.display(source.url)} mip {mip}: {source.info.type} {source.info.data_type}"
                  + (f", region {region}" if region != source.bounds(mip) else ""),
        "components of": "each label's pieces" if mode == "segmentation" else
                         "voxels " + " and ".join(t for t in (f">= {threshold_gte}" if threshold_gte is not None else "",
                                                              f"<= {threshold_lte}" if threshold_lte is not None else "") if t),
        "connectivity": connectivity,
        "dust": f"components under {dust} voxels become 0" if dust else "none",
        "destination": f"{urls.display(dest)}: segmentation {data_type}",
        "block": format_vec(block),
        "blocks": grid.blocks,
        "partitions": f"{grid.partitions} of {format_vec(grid.part)} blocks",
        "rounds": f"up to {rounds} (the rounds after nothing changes do nothing)",
        "memory_per_task": format_bytes(float(np.prod(block)) * BYTES_PER_VOXEL),
    }

    def prepare() -> None:  # runs again on a resumed run: the work files (under the job's ledger) stay
        Layer.create(dest, info)

    def finish() -> list[str]:
        kv = open_kv(work())
        out: list[str] = []
        if mapping_out is not None:
            out.append(write_mapping(kv, mapping_out))
        return out

    def outcome(totals: dict[str, dict[str, float]]) -> str:
        heads = totals.get("heads", {})
        text = f"{int(heads.get('components', 0)):,} component(s)"
        if dust:
            text += f", {int(heads.get('dust_components', 0)):,} under {dust} voxels removed"
        pieces_ = int(totals.get("label", {}).get("pieces", 0))
        used = sum(1 for r in range(1, rounds + 1) if not totals.get(f"round{r}", {}).get("quiet_rounds"))
        return text + f" from {pieces_:,} block piece(s); labels settled in {used} round(s)"

    result.prepare, result.finish, result.outcome = prepare, finish, outcome
    result.cleanup = lambda: open_kv(work()).delete_prefix("")
    return result, notes


def write_mapping(kv: KV, path: str) -> str:
    """The component -> source label table, block by block (ids ascend with blocks), as .npy
    (N x 2 uint64) or CSV (any other name). A local file is written as it goes; elsewhere the table
    is put as one object."""
    keys = kv.list("mapping/")
    total = sum(len(unpack(blob)["ids"]) for blob in kv.get_many(keys))
    target = urls.normalize(path)
    local = urls.local_path(target)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
    with (open(local, "wb") if local is not None else io.BytesIO()) as handle:
        as_npy = path.lower().endswith(".npy")
        if as_npy:
            np.lib.format.write_array_header_1_0(handle, {"descr": "<u8", "fortran_order": False, "shape": (total, 2)})
        else:
            handle.write(b"component,label\n")
        for key in keys:
            part = unpack(kv.get(key))
            rows = np.stack([part["ids"], part["labels"]], axis=1).astype("<u8")
            handle.write(rows.tobytes() if as_npy else "".join(f"{a},{b}\n" for a, b in rows.tolist()).encode())
        if local is None:
            directory, name = target.rstrip("/").rsplit("/", 1)
            open_kv(directory + "/").put(name, handle.getvalue())
    return f"component -> source label mapping of {total:,} component(s): {urls.display(target)}"
