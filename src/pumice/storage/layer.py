"""Precomputed layers: open, create, read any box, write chunk-aligned boxes.

TensorStore's ``neuroglancer_precomputed`` driver does the encoding, sharding and I/O; this module
owns the info (written by Pumice before any task runs) and the rules for boxes.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from dataclasses import replace
from typing import Sequence

import numpy as np
import tensorstore as ts

from ..errors import LayerError, PumiceError
from ..geometry import Bbox, Vec, format_vec, grid_blocks
from . import urls
from .info import LayerInfo, write_unit
from .kv import KV, context, open_kv
from .sharding import shard_name


# ISA-L (python-isal) level 1: on the benchmark's EM image 407 MB/s per core at ratio 0.77, against
# libdeflate level 1's 123 MB/s at 0.75 and zlib's 61 MB/s; gzip dominated sharded writes.
GZIP_LEVEL = 1
# Bytes of chunks a read keeps in flight (see Layer._read_inside).
READ_WINDOW = 4 * 2**20

# Chunk-file endings: plain, as TensorStore reads them, and the two compressions CloudVolume's
# file backend (compress='gzip' / 'br') writes as chunk-name suffixes, which Pumice decodes itself.
PLAIN = ("",)
COMPRESSED_SUFFIXES = (".gz", ".br")
CHUNK_FILE_SUFFIXES = PLAIN + COMPRESSED_SUFFIXES
# CloudVolume's other compressions: named in an error rather than read as missing chunks.
UNREADABLE_SUFFIXES = (".zstd", ".xz", ".bz2")
# Chunks a scale's probe samples: the first ones in grid order, then a lattice of 4 per axis.
PROBE_FIRST = 16
PROBE_LATTICE = 4
# (layer URL, scale key) -> Layer.chunk_suffixes: probed once per process.
_CHUNK_SUFFIXES: dict[tuple[str, str], tuple[str, ...]] = {}


class Layer:
    def __init__(self, url: str, info: LayerInfo):
        self.url = urls.normalize(url)
        self.info = info
        self._stores: dict[int, ts.TensorStore] = {}

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str) -> "Layer":
        kv = open_kv(urls.normalize(url))
        try:
            raw = kv.get_json("info")
        except ValueError as e:  # e.g. an unreachable store
            raise LayerError(f"cannot read {urls.display(url)}: {str(e).splitlines()[0]}") from None
        if raw is None:
            raise LayerError(f"no Precomputed layer at {urls.display(url)} (no info file); check the path")
        return cls(url, LayerInfo.from_json(raw, where=f"{urls.display(url)}/info"))

    @classmethod
    def open_with_destination(cls, src: str, dest: str, operation: str) -> tuple["Layer", str]:
        """The source layer of an operation that writes a new layer, and that layer's URL, which must differ."""
        source = cls.open(src)
        dest = urls.normalize(dest)
        if source.url == dest:
            raise PumiceError(f"source and destination are the same layer; {operation} into a new location")
        return source, dest

    @classmethod
    def check_compatible(cls, url: str, info: LayerInfo) -> bool:
        """Raise if a different layer is at ``url``; return whether any layer is there."""
        url = urls.normalize(url)
        existing = open_kv(url).get_json("info")
        if existing is None:
            return False
        old = LayerInfo.from_json(existing, where=f"{urls.display(url)}/info")
        problem = incompatibility(old, info)
        if problem:
            raise LayerError(
                f"{urls.display(url)} already holds a different layer ({problem}); choose another destination or delete it first"
            )
        return True

    @classmethod
    def check_destination(cls, url: str, info: LayerInfo) -> bool:
        """A planner's destination: writable, and no different layer there (nothing is written; the
        plan's ``prepare`` creates it). Returns whether the destination is empty, so a run that finds
        the input bad may remove everything it wrote."""
        url = urls.normalize(url)
        if not urls.is_writable(url):
            raise LayerError(f"cannot write to {url}: http(s) locations are read-only; write to a path, gs:// or s3://")
        return not cls.check_compatible(url, info) and not open_kv(url).list()

    @classmethod
    def create(cls, url: str, info: LayerInfo) -> "Layer":
        """Write ``info`` unless an equal one is there; an incompatible one is an error.

        Keys a later step added (mesh, skeletons, more scales) do not make an info incompatible.
        """
        url = urls.normalize(url)
        if not urls.is_writable(url):
            raise LayerError(f"cannot write to {url}: http(s) locations are read-only; write to a path, gs:// or s3://")
        kv = open_kv(url)
        if cls.check_compatible(url, info):
            return cls.open(url)
        try:
            kv.put_json("info", info.to_json())
        except (ValueError, OSError) as e:
            raise LayerError(f"cannot write to {urls.display(url)}: {str(e).splitlines()[0]}") from None
        return cls(url, info)

    def save_info(self) -> None:
        open_kv(self.url).put_json("info", self.info.to_json())
        self._stores.clear()

    @property
    def kv(self) -> KV:
        return open_kv(self.url)

    # -- geometry ------------------------------------------------------------------------------
    def bounds(self, mip: int = 0) -> Bbox:
        return self.info.scale(mip).bounds

    def chunk_size(self, mip: int = 0) -> Vec:
        return self.info.scale(mip).chunk_size

    def write_block(self, mip: int = 0) -> Vec:
        """The unit that must be written whole: a chunk, or a shard's box for sharded scales."""
        return write_unit(self.info.scale(mip))

    # -- data ----------------------------------------------------------------------------------
    def store(self, mip: int = 0) -> ts.TensorStore:
        if mip not in self._stores:
            self.info.scale(mip)  # a clear error for a missing mip
            spec = {
                "driver": "neuroglancer_precomputed",
                "kvstore": urls.kvstore_spec(self.url),
                "scale_index": mip,
                "recheck_cached_data": False,
                "recheck_cached_metadata": False,
                # Write every chunk, even all-zero ones: CloudVolume treats a missing chunk as an
                # error unless the reader opts into fill_missing.
                "store_data_equal_to_fill_value": True,
            }
            try:
                self._stores[mip] = ts.open(spec, open=True, context=context()).result()
            except ValueError as e:
                raise LayerError(f"cannot open mip {mip} of {urls.display(self.url)}: {str(e).splitlines()[0]}") from None
        return self._stores[mip]

    def read(self, bbox: Bbox, mip: int = 0, *, fill_missing: bool = True) -> np.ndarray:
        """Voxels of ``bbox`` as an X, Y, Z, channel array; parts outside the volume are zero.

        ``fill_missing``: chunks never written read as zeros; if False, they are an error naming
        --fill-missing. Scales whose chunk files CloudVolume compressed (``.gz``/``.br``) are read
        too (see ``chunk_suffixes``).
        """
        if not fill_missing:
            self.require_chunks(bbox, mip)
        bounds = self.bounds(mip)
        inside = bbox.intersection(bounds)
        read = self._read_inside if self.chunk_suffixes(mip) == PLAIN else self._read_compressed
        if inside == bbox:
            return read(bbox, mip)
        out = np.zeros((*bbox.shape, self.info.num_channels), dtype=self.info.dtype, order="F")
        if not inside.empty():
            out[inside.slices(bbox.minpt)] = read(inside, mip)
        return out

    def _read_inside(self, bbox: Bbox, mip: int) -> np.ndarray:
        """Read chunk by chunk into one array, with at most READ_WINDOW bytes of chunks in flight.

        One TensorStore read of the whole box holds every fetched and decoded chunk at once, about
        twice the box in memory; this way a task's peak is its box plus the window, no slower.
        """
        store = self.store(mip)
        voxel_bytes = self.info.dtype.itemsize * self.info.num_channels
        if bbox.size * voxel_bytes <= READ_WINDOW:
            return _view(store, bbox).read(order="F").result()
        out = np.empty((*bbox.shape, self.info.num_channels), dtype=self.info.dtype, order="F")
        in_flight: deque = deque()
        pending = 0
        for chunk in self.chunk_boxes(bbox, mip):
            piece = chunk.intersection(bbox)
            in_flight.append((piece, _view(store, piece).read(order="F")))
            pending += piece.size * voxel_bytes
            while pending > READ_WINDOW:
                done, future = in_flight.popleft()
                out[done.slices(bbox.minpt)] = future.result()
                pending -= done.size * voxel_bytes
        for done, future in in_flight:
            out[done.slices(bbox.minpt)] = future.result()
        return out

    # -- chunk files: plain names, or CloudVolume's compressed ones ---------------------------
    def chunk_suffixes(self, mip: int = 0) -> tuple[str, ...]:
        """The endings this scale's chunk files may carry: ``("",)`` when all are plain, as
        TensorStore (and Neuroglancer over plain HTTP) reads them; ``".gz"``/``".br"`` where
        CloudVolume's file backend stored compressed chunks, which only Pumice's own reads decode;
        all three when no chunk file was seen (an empty or very sparse scale). Sharded scales are
        always plain.
        """
        return self.seen_chunk_suffixes(mip) or CHUNK_FILE_SUFFIXES

    def seen_chunk_suffixes(self, mip: int = 0) -> tuple[str, ...]:
        """The endings of the chunk files a probe found, once per process per layer and scale (tasks
        reopen layers constantly); empty if it found none. Sharded scales are plain."""
        if self.info.scale(mip).sharding is not None:
            return PLAIN
        key = (self.url, self.info.scale(mip).key)
        if key not in _CHUNK_SUFFIXES:
            _CHUNK_SUFFIXES[key] = self._probe_suffixes(mip)
        return _CHUNK_SUFFIXES[key]

    def _probe_suffixes(self, mip: int) -> tuple[str, ...]:
        """Look for a sample of chunk names spread over the grid under every ending; if none
        exists (a sparse or empty scale), list the chunk names of a few x planes of the grid. Never
        the whole scale: its listing grows with the volume, and a task's memory must not."""
        scale = self.info.scale(mip)
        sample = self._sample_chunks(mip)
        names = [(s, self.chunk_key(c, mip) + s) for c in sample for s in CHUNK_FILE_SUFFIXES]
        found = {s for (s, _), there in zip(names, self.kv.exist_many([n for _, n in names])) if there}
        if found:
            return tuple(sorted(found))
        planes = sorted({f"{scale.key}/{c.minpt[0]}-{c.maxpt[0]}_" for c in sample})
        try:
            names = [n for plane in planes[:PROBE_LATTICE] for n in self.kv.list(plane)]
        except (NotImplementedError, ValueError, PumiceError):  # e.g. http: no listing
            return ()
        for name in names:
            ending = name[name.rfind("."):] if "." in name.rsplit("/", 1)[-1] else ""
            if ending in CHUNK_FILE_SUFFIXES:
                found.add(ending)
            elif ending in UNREADABLE_SUFFIXES:
                raise LayerError(f"mip {mip} of {urls.display(self.url)} holds chunk files compressed as {ending} (e.g. {name}), "
                                 f"which Pumice cannot read; rewrite the layer with CloudVolume's compress='gzip' or 'br'")
        return tuple(sorted(found))

    def _sample_chunks(self, mip: int) -> list[Bbox]:
        """The first chunks in grid order plus a lattice over the whole grid: a sparse layer's first
        chunks may all be missing."""
        scale = self.info.scale(mip)
        grid = [-(-s // c) for s, c in zip(scale.size, scale.chunk_size)]
        first = itertools.islice(self.chunk_boxes(scale.bounds, mip), PROBE_FIRST)
        steps = [sorted({round(i * (g - 1) / (PROBE_LATTICE - 1)) for i in range(PROBE_LATTICE)}) for g in grid]
        spread = (Bbox.from_shape(np.add(scale.voxel_offset, np.multiply(p, scale.chunk_size)), scale.chunk_size)
                  .intersection(scale.bounds) for p in itertools.product(*steps))
        return list(dict.fromkeys([*first, *spread]))

    def _find_chunk_files(self, chunks: Sequence[Bbox], mip: int, *, whole: bool) -> list[tuple[str, bytes] | None]:
        """Each chunk's file in an unsharded scale as (suffix, stored bytes), None where none exists.

        The plain name is tried first and wins: TensorStore reads only that one, and Pumice writes
        plain names and removes compressed siblings. Compressed names are tried for the chunks left,
        in any scale, so a strict read (``require_chunks``) never misses chunks the probe's sample
        did not see. ``whole=False`` fetches no bytes: existence only.
        """
        keys = [self.chunk_key(c, mip) for c in chunks]

        def fetch(names: list[str]) -> list[bytes | None]:
            return self.kv.get_many(names) if whole else [b"" if there else None for there in self.kv.exist_many(names)]

        found: list[tuple[str, bytes] | None] = [None if v is None else ("", v) for v in fetch(keys)]
        absent = [i for i, f in enumerate(found) if f is None]
        tries = [(i, s) for i in absent for s in COMPRESSED_SUFFIXES]
        for (i, suffix), value in zip(tries, fetch([keys[i] + s for i, s in tries])):
            if value is not None and found[i] is None:
                found[i] = (suffix, value)
        seen = {f[0] for f in found if f is not None}
        known = self.seen_chunk_suffixes(mip)
        if not seen <= set(known):  # the probe's sample missed them: reads and writes from now on know
            _CHUNK_SUFFIXES[(self.url, self.info.scale(mip).key)] = tuple(sorted(set(known) | seen))
        return found

    def read_chunk_files(self, chunks: Sequence[Bbox], mip: int = 0) -> list[bytes | None]:
        """The encoded chunks of an unsharded scale, as TensorStore reads plain chunk files
        (CloudVolume's .gz/.br undone); None for chunks never written."""
        return [None if f is None else _decompress(*f) for f in self._find_chunk_files(chunks, mip, whole=True)]

    def write_chunk_files(self, chunks: Sequence[Bbox], files: Sequence[bytes], mip: int = 0) -> None:
        """Store encoded chunks (e.g. copied from another layer) in an unsharded scale, under plain names."""
        stale = self._compressed_siblings(chunks, mip)
        self.kv.put_many([(self.chunk_key(c, mip), f) for c, f in zip(chunks, files)])
        self.kv.delete_many(stale)
        self._wrote_plain_chunks(mip)

    def _wrote_plain_chunks(self, mip: int) -> None:
        """A scale in which no chunk file was seen holds plain ones now: read it directly."""
        key = (self.url, self.info.scale(mip).key)
        if not _CHUNK_SUFFIXES.get(key):
            _CHUNK_SUFFIXES[key] = PLAIN

    def _compressed_siblings(self, chunks: Sequence[Bbox], mip: int) -> list[str]:
        """The .gz/.br names of chunks about to be written under plain names, in a scale that may
        hold such files; they go once the plain ones are written, since CloudVolume reads whichever
        name it found last and would read a stale one again. Ask before writing, so that the probe
        sees the scale as it was."""
        if not any(s in COMPRESSED_SUFFIXES for s in self.seen_chunk_suffixes(mip)):
            return []  # e.g. a new scale: no deletes beside every write
        return [self.chunk_key(c, mip) + s for c in chunks for s in COMPRESSED_SUFFIXES]

    def _read_compressed(self, bbox: Bbox, mip: int) -> np.ndarray:
        """Read a scale TensorStore cannot open by name: fetch each chunk's file, undo its .gz/.br,
        and let TensorStore decode it from a private memory store, READ_WINDOW bytes at a time."""
        scale = self.info.scale(mip)
        scratch = ts.Context()
        memory = ts.KvStore.open({"driver": "memory"}, context=scratch).result()
        one = LayerInfo(self.info.type, self.info.data_type, self.info.num_channels, (scale,))
        memory.write("info", json.dumps(one.to_json())).result()
        decoder = ts.open({"driver": "neuroglancer_precomputed", "kvstore": {"driver": "memory"}}, context=scratch).result()
        out = np.empty((*bbox.shape, self.info.num_channels), dtype=self.info.dtype, order="F")
        voxel_bytes = self.info.dtype.itemsize * self.info.num_channels

        def decode(window: list[Bbox]) -> None:
            keys = [self.chunk_key(c, mip) for c in window]
            writes = [memory.write(k, f) for k, f in zip(keys, self.read_chunk_files(window, mip)) if f is not None]
            for write in writes:
                write.result()
            reads = [(piece, _view(decoder, piece).read(order="F")) for piece in (c.intersection(bbox) for c in window)]
            for piece, future in reads:  # a chunk never written reads as the fill value, zero
                out[piece.slices(bbox.minpt)] = future.result()
            for k in keys:
                memory.delete_range(ts.KvStore.KeyRange(k, k + "\0")).result()

        window: list[Bbox] = []
        pending = 0
        for chunk in self.chunk_boxes(bbox, mip):
            window.append(chunk)
            pending += chunk.size * voxel_bytes
            if pending >= READ_WINDOW:
                decode(window)
                window, pending = [], 0
        if window:
            decode(window)
        return out

    def chunk_boxes(self, bbox: Bbox, mip: int = 0):
        """The chunks (clipped to the volume) that ``bbox`` touches."""
        scale = self.info.scale(mip)
        region = bbox.intersection(scale.bounds).snap_out(scale.chunk_size, scale.voxel_offset).intersection(scale.bounds)
        return grid_blocks(region, scale.chunk_size, scale.voxel_offset)

    def chunk_key(self, chunk: Bbox, mip: int = 0) -> str:
        """The chunk's object name in an unsharded scale, e.g. ``4_4_40/0-64_0-64_0-64``."""
        (x0, y0, z0), (x1, y1, z1) = chunk.minpt, chunk.maxpt
        return f"{self.info.scale(mip).key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"

    def _shard_kvstore(self, mip: int) -> ts.KvStore:
        scale = self.info.scale(mip)
        return ts.KvStore.open({"driver": "neuroglancer_uint64_sharded", "base": urls.kvstore_spec(urls.join(self.url, scale.key)),
                                "metadata": scale.sharding}, context=context()).result()

    def _chunk_id(self, chunk: Bbox, mip: int) -> bytes:
        scale = self.info.scale(mip)
        grid = [-(-s // c) for s, c in zip(scale.size, scale.chunk_size)]
        position = [(lo - o) // c for lo, o, c in zip(chunk.minpt, scale.voxel_offset, scale.chunk_size)]
        return compressed_morton_code(position, grid).to_bytes(8, "big")

    def shard_file(self, shard_box: Bbox, mip: int = 0) -> str:
        """The file holding the shard whose box starts at ``shard_box.minpt`` (identity hash)."""
        sharding = self.info.scale(mip).sharding
        chunk_id = int.from_bytes(self._chunk_id(shard_box, mip), "big")
        shard = (chunk_id >> (sharding["preshift_bits"] + sharding["minishard_bits"])) & ((1 << sharding["shard_bits"]) - 1)
        return f"{self.info.scale(mip).key}/{shard_name(shard, sharding)}"

    def missing_chunks(self, bbox: Bbox, mip: int = 0) -> list[Bbox]:
        """Chunks of ``bbox`` that were never written (reads of zero bytes, all in flight at once)."""
        chunks = list(self.chunk_boxes(bbox, mip))
        if self.info.scale(mip).sharding is None:
            return [c for c, f in zip(chunks, self._find_chunk_files(chunks, mip, whole=False)) if f is None]
        store = self._shard_kvstore(mip)
        futures = [store.read(self._chunk_id(c, mip), byte_range=slice(0, 0)) for c in chunks]
        return [c for c, f in zip(chunks, futures) if f.result().state != "value"]

    def require_chunks(self, bbox: Bbox, mip: int = 0) -> None:
        """Raise if any chunk of ``bbox`` was never written (unless the user passes --fill-missing)."""
        missing = self.missing_chunks(bbox, mip)
        if missing:
            raise LayerError(f"mip {mip} of {urls.display(self.url)} has no chunk at {missing[0]} ({len(missing)} missing "
                             f"in this block); pass --fill-missing to read missing chunks as zeros")

    def write(self, bbox: Bbox, data: np.ndarray, mip: int = 0, *, skip_value: int | None = None) -> None:
        """Write whole chunks (whole shards for sharded scales); edges may stop at the volume's edge.

        ``skip_value``: chunks holding only this value are not stored (--delete-background).
        """
        bounds = self.bounds(mip)
        if not bounds.contains(bbox):
            raise LayerError(f"box {bbox} lies outside the layer's bounds {bounds} at mip {mip}")
        block = self.write_block(mip)
        if not bbox.is_aligned(block, bounds.minpt, bounds):
            raise LayerError(f"box {bbox} is not aligned to the write grid {block} of mip {mip}")
        if data.ndim == 3:
            data = data[..., np.newaxis]
        if tuple(data.shape) != (*bbox.shape, self.info.num_channels):
            raise LayerError(f"data shape {data.shape} does not match box {bbox} x {self.info.num_channels} channels")
        data = np.asarray(data, dtype=self.info.dtype)
        if self.info.scale(mip).sharding is not None:
            if skip_value not in (None, 0):
                raise LayerError("--delete-background with a non-zero --background-color needs an unsharded scale")
            self._write_shards(bbox, data, mip, keep_zero_chunks=skip_value is None)
            return
        chunks = list(grid_blocks(bbox, self.chunk_size(mip), self.info.scale(mip).voxel_offset))
        stale = self._compressed_siblings(chunks, mip)
        view = _view(self.store(mip), bbox)
        view.write(data).result()
        if skip_value is not None:
            empty = [self.chunk_key(c, mip) for c in chunks if not (data[c.slices(bbox.minpt)] != skip_value).any()]
            self.kv.delete_many(empty)
        self.kv.delete_many(stale)
        self._wrote_plain_chunks(mip)

    def _write_shards(self, bbox: Bbox, data: np.ndarray, mip: int, keep_zero_chunks: bool) -> None:
        """Write the whole shards of ``bbox``.

        TensorStore encodes the chunks (into a private memory store, unsharded, with this scale's
        geometry) and builds the shards (through its neuroglancer_uint64_sharded kvstore); ISA-L
        does the gzip in between, 6x faster than the zlib TensorStore would use, which dominated
        sharded writes (its gzip header carries mtime 0, so bytes are reproducible). Chunks equal to zero are kept (CloudVolume refuses a missing chunk), which
        TensorStore's own sharded writer would leave out.
        """
        from isal import isal_zlib

        scale = self.info.scale(mip)
        scratch = ts.Context()
        memory = ts.KvStore.open({"driver": "memory"}, context=scratch).result()
        one = LayerInfo(self.info.type, self.info.data_type, self.info.num_channels, (replace(scale, key="s", sharding=None),))
        memory.write("info", json.dumps(one.to_json())).result()
        encoder = ts.open({"driver": "neuroglancer_precomputed", "kvstore": {"driver": "memory"},
                           "store_data_equal_to_fill_value": keep_zero_chunks}, context=scratch).result()
        _view(encoder, bbox).write(data).result()
        keys = [k.decode() for k in memory.list().result() if k.startswith(b"s/")]
        gzip_data = scale.sharding.get("data_encoding") == "gzip"
        shards = ts.KvStore.open({"driver": "neuroglancer_uint64_sharded",
                                  "base": urls.kvstore_spec(urls.join(self.url, scale.key)),
                                  "metadata": {**scale.sharding, "data_encoding": "raw"}}, context=context()).result()
        txn = ts.Transaction()
        for key in keys:  # one chunk at a time, each dropped from the scratch store once moved
            x, y, z = (tuple(int(v) for v in part.split("-")) for part in key[2:].split("_"))
            chunk = Bbox((x[0], y[0], z[0]), (x[1], y[1], z[1]))
            encoded = memory.read(key).result().value
            memory.delete_range(ts.KvStore.KeyRange(key, key + "\0")).result()
            shards.with_transaction(txn).write(self._chunk_id(chunk, mip),
                                               isal_zlib.compress(encoded, GZIP_LEVEL, wbits=31) if gzip_data else encoded)
        txn.commit_async().result()


def _decompress(suffix: str, data: bytes) -> bytes:
    """A chunk file's bytes as stored under its plain name."""
    if suffix == ".gz":
        from isal import igzip

        return igzip.decompress(data)
    if suffix == ".br":
        import brotli

        return brotli.decompress(data)
    return data


def _view(store: ts.TensorStore, bbox: Bbox) -> ts.TensorStore:
    return store[bbox.minpt[0] : bbox.maxpt[0], bbox.minpt[1] : bbox.maxpt[1], bbox.minpt[2] : bbox.maxpt[2]]


def compressed_morton_code(position: Sequence[int], grid: Sequence[int]) -> int:
    """Neuroglancer's chunk id in a sharded scale: the grid position's bits interleaved x, y, z,
    skipping axes that have run out of bits."""
    bits = [max(0, (g - 1).bit_length()) for g in grid]
    code, out = 0, 0
    for i in range(max(bits)):
        for axis in range(3):
            if i < bits[axis]:
                code |= ((position[axis] >> i) & 1) << out
                out += 1
    return code


def incompatibility(old: LayerInfo, new: LayerInfo) -> str | None:
    """Why ``new`` cannot be written where ``old`` is, or None if the data would agree."""
    for name in ("type", "data_type", "num_channels"):
        if getattr(old, name) != getattr(new, name):
            return f"{name} {getattr(old, name)} there, {getattr(new, name)} requested"
    for mip, scale in enumerate(new.scales):
        if mip >= len(old.scales):
            return f"it has no mip {mip}"
        was = old.scales[mip]
        for name in ("size", "resolution", "voxel_offset", "chunk_size", "encoding", "sharding"):
            if getattr(was, name) != getattr(scale, name):
                return f"mip {mip} {name} {_fmt(getattr(was, name))} there, {_fmt(getattr(scale, name))} requested"
    return None


def _fmt(value: object) -> str:
    return format_vec(value) if isinstance(value, (tuple, list)) else str(value)
