"""``pumice remap SRC DEST --mapping FILE``: a segmentation relabelled through a supervoxel -> body
mapping, into a new segmentation layer with the source's geometry.

Mapping files, by name: ``.csv`` (two columns, a header line optional), ``.npy`` (N x 2 integers),
``.bin`` or ``.dvid`` (DVID's binary mappings: little-endian uint64 pairs), anything else DVID's
``mappings`` text (``sv body`` per line). Ids the mapping does not name keep their value
(``--unmapped keep``) or become 0 (``--unmapped zero``).

The planner reads and checks the file once and stages it as a table beside the output
(``storage.inputs``), so workers anywhere read it, its content (not its path) makes the job id,
and each task reads only the pages that hold its block's labels: a task's memory follows its
block, not the mapping. fastremap relabels each block.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import PumiceError
from ..geometry import Bbox
from ..plan import Plan, planner, register
from ..storage import inputs, urls
from ..storage.layer import Layer
from .blockwise import BlockTask, OutputOptions, plan_block_operation

DEFAULT_MEMORY = 256 * 2**20
UNMAPPED = ("keep", "zero")


class MappingError(PumiceError):
    """A mapping file that is not two columns of non-negative whole numbers, one body per supervoxel."""


def read_mapping(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Supervoxels and their bodies (uint64, one row per supervoxel, sorted) from a mapping file."""
    data = inputs.read(path, "mapping file")
    where = urls.display(urls.normalize(str(path)))
    name = str(path).lower()
    if data.startswith(inputs.TABLE_MAGIC):  # already staged (a queue worker rebuilding the plan)
        count = int(np.frombuffer(data[16:24], dtype="<u8")[0])
        pairs = np.frombuffer(data[-16 * count:] if count else b"", dtype="<u8").reshape(-1, 2)
    elif name.endswith(".npy"):
        pairs = _npy_pairs(data, where)
    elif name.endswith((".bin", ".dvid")):
        if len(data) % 16:
            raise MappingError(f"{where} is {len(data)} bytes, not a whole number of little-endian uint64 pairs "
                               f"(DVID's binary mappings); check the file")
        pairs = np.frombuffer(data, dtype="<u8").reshape(-1, 2)
    else:
        pairs = _text_pairs(data, where, "," if name.endswith(".csv") else None)
    return _one_body_each(pairs.astype(np.uint64), where)


def _npy_pairs(data: bytes, where: str) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise MappingError(f"{where} is not a NumPy .npy file ({str(e).splitlines()[0]})") from None
    if array.ndim != 2 or array.shape[1] != 2:
        raise MappingError(f"{where} holds an array of shape {array.shape}; a mapping is N x 2 (supervoxel, body)")
    if array.dtype.kind not in "iu":
        raise MappingError(f"{where} holds {array.dtype} values; supervoxel and body ids are whole numbers")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        row = int(np.argwhere(array < 0)[0][0])
        raise MappingError(f"{where} row {row} holds a negative id ({int(array[row].min())}); ids are non-negative")
    return array


def _text_pairs(data: bytes, where: str, separator: str | None) -> np.ndarray:
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError:
        raise MappingError(f"{where} is neither text (CSV, DVID's `sv body` lines) nor named .npy or .bin; "
                           f"check the file") from None
    rows, numbers = [], []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in (text.split(separator) if separator else text.split())]
        if not rows and not all(f.lstrip("-").isdigit() for f in fields):
            rows.append(None)  # the header line
            continue
        if len(fields) != 2:
            raise MappingError(f"{where} line {number} has {len(fields)} columns; a mapping has two: supervoxel, body")
        for field in fields:
            if not field.lstrip("-").isdigit():
                raise MappingError(f"{where} line {number}: {field!r} is not a whole number")
            if field.startswith("-"):
                raise MappingError(f"{where} line {number}: negative id {field}; ids are non-negative")
        rows.append(fields)
        numbers.append(number)
    values = [int(v) for row in rows if row is not None for v in row]
    if any(v >= 2**64 for v in values):
        raise MappingError(f"{where} holds an id of 2^64 or more; ids are uint64")
    return np.array(values, dtype=np.uint64).reshape(-1, 2)


def _one_body_each(pairs: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by supervoxel, repeated rows once; a supervoxel with two bodies is an error."""
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    repeated = np.flatnonzero(pairs[1:, 0] == pairs[:-1, 0])
    conflict = repeated[pairs[repeated + 1, 1] != pairs[repeated, 1]]
    if conflict.size:
        i = int(conflict[0])
        raise MappingError(f"{where} maps supervoxel {int(pairs[i, 0])} to two bodies ({int(pairs[i, 1])} and "
                           f"{int(pairs[i + 1, 1])}); a mapping gives each supervoxel one body")
    keep = np.ones(len(pairs), dtype=bool)
    keep[repeated + 1] = False
    return np.ascontiguousarray(pairs[keep, 0]), np.ascontiguousarray(pairs[keep, 1])


@register("remap")
@dataclass(frozen=True)
class RemapTask(BlockTask):
    mapping: str = ""  # the staged table's URL
    unmapped: str = "keep"
    dtype: str = "uint64"  # of the output: the source's, or uint64 if a body needs it

    def compute(self, data: np.ndarray, region: Bbox, read: Bbox, source: Layer) -> tuple[np.ndarray, dict]:
        import fastremap

        labels = np.asfortranarray(data[..., 0].astype(self.dtype, copy=False))
        present = fastremap.unique(labels)
        bodies, found = inputs.lookup(self.mapping, present)
        if self.unmapped == "keep":
            bodies[~found] = present[~found]
        else:
            bodies[~found] = 0
        out = fastremap.remap(labels, dict(zip(present.tolist(), bodies.tolist())), preserve_missing_labels=False)
        return out, {"labels": int(present.size), "unmapped_labels": int((~found & (present != 0)).sum())}


@planner
def plan(src: str, dest: str, *, mapping: str, unmapped: str = "keep", mip: int = 0, bounds: Bbox | None = None,
         fill_missing: bool = False, chunk_size: Sequence[int] | None = None, encoding: str | None = None,
         sharded: bool | None = None, num_mips: int = 0, factor: str | Sequence[int] = "auto", method: str = "auto",
         sparse: bool = False, force: bool = False, memory: int = DEFAULT_MEMORY) -> tuple[Plan, list[str]]:
    notes: list[str] = []
    source, dest = Layer.open_with_destination(src, dest, "remap")
    info = source.info
    if info.type != "segmentation" or info.dtype.kind != "u" or info.num_channels != 1:
        raise PumiceError(f"{urls.display(source.url)} is {info.type} {info.data_type} x {info.num_channels}: remap relabels "
                          f"a segmentation (one channel of unsigned ids)")
    if unmapped not in UNMAPPED:
        raise PumiceError(f"--unmapped must be keep or zero, got {unmapped!r}")
    svs, bodies = read_mapping(mapping)
    table = inputs.of_bytes(inputs.table_bytes(svs, bodies), "mapping.table", dest)
    dtype = info.data_type
    if bodies.size and int(bodies.max()) > np.iinfo(info.dtype).max:
        dtype = "uint64"
        notes.append(f"body ids reach {int(bodies.max())}, beyond {info.data_type}: the new layer holds uint64")
    out_bytes = np.dtype(dtype).itemsize
    bytes_per_voxel = info.dtype.itemsize * 2 + out_bytes * (4 if num_mips else 2) + (4 if num_mips else 0)
    output = OutputOptions(chunk_size=chunk_size, encoding=encoding, sharded=sharded, num_mips=num_mips, factor=factor,
                           method=method, sparse=sparse, force=force)
    result = plan_block_operation(
        "remap", source, dest, mip=mip, bounds=bounds,
        task=functools.partial(RemapTask, mapping=table.url, unmapped=unmapped, dtype=dtype),
        layer_type="segmentation", data_type=dtype, channels=1, output=output, fill_missing=fill_missing, memory=memory,
        bytes_per_voxel=bytes_per_voxel, side_inputs={"mapping": table},
        description={"mapping": f"{len(svs):,} supervoxel(s) -> {len(np.unique(bodies)):,} bod(ies), from "
                                f"{urls.display(urls.normalize(str(mapping)))}; ids not in it are "
                                f"{'kept' if unmapped == 'keep' else 'set to 0'}"},
        outcome=lambda totals: (f"{int(totals['remap'].get('unmapped_labels', 0)):,} label(s) per block summed were "
                                f"not in the mapping ({'kept' if unmapped == 'keep' else 'set to 0'})"),
        notes=notes)
    return result, notes
