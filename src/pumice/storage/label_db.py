"""The label index's database: SQLite beside a local layer by default, any SQLAlchemy URL otherwise.

Tables (ids are stored as signed 64-bit integers, the SQL integer: an id at or above 2^63 is stored
as its two's-complement twin and read back as the uint64 it was):

- ``label_index``: one row per body, block and supervoxel: ``body, block`` (DVID's block key),
  ``sv, voxels, part`` (the body's partition: what one task rebuilds). Indexed by body, by sv and by
  part, so a body's blocks, a supervoxel's body and a partition's rows are index lookups.
- ``bodies``: per body its voxels, supervoxels and blocks, and its partition.
- ``meta``: key -> JSON text (the layer, the job, the mapping the bodies came from).

Writers replace a whole partition, or a set of bodies, in one transaction: a task killed midway
leaves the previous state, and running it again gives the same rows.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Iterable

import numpy as np

from ..errors import PumiceError
from . import urls

SQLITE_NAME = "label_index.sqlite"
INSERT_BATCH = 50_000


def default_url(layer_url: str) -> str | None:
    """``sqlite:///<layer>/label_index.sqlite`` for a layer on this machine, else None."""
    local = urls.local_path(urls.normalize(layer_url))
    return None if local is None else f"sqlite:///{local / SQLITE_NAME}"


def signed(ids: Any) -> np.ndarray:
    return np.asarray(ids, dtype=np.uint64).view(np.int64)


def unsigned(ids: Any) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64).view(np.uint64)


@functools.cache
def _schema():
    import sqlalchemy as sa

    meta = sa.MetaData()
    rows = sa.Table("label_index", meta,
                    sa.Column("body", sa.BigInteger, nullable=False, index=True),
                    sa.Column("block", sa.BigInteger, nullable=False),
                    sa.Column("sv", sa.BigInteger, nullable=False, index=True),
                    sa.Column("voxels", sa.BigInteger, nullable=False),
                    sa.Column("part", sa.Integer, nullable=False, index=True))
    bodies = sa.Table("bodies", meta,
                      sa.Column("body", sa.BigInteger, primary_key=True, autoincrement=False),
                      sa.Column("voxels", sa.BigInteger, nullable=False),
                      sa.Column("supervoxels", sa.BigInteger, nullable=False),
                      sa.Column("blocks", sa.BigInteger, nullable=False),
                      sa.Column("part", sa.Integer, nullable=False, index=True))
    records = sa.Table("meta", meta, sa.Column("key", sa.String(64), primary_key=True),
                       sa.Column("value", sa.Text, nullable=False))
    return meta, rows, bodies, records


class LabelDB:
    """One label index database (see the module's notes). Opened per process and cached."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self.url = url
        try:
            args = {"timeout": 120} if url.startswith("sqlite") else {}
            self.engine = sa.create_engine(url, connect_args=args)
            if url.startswith("sqlite"):
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            meta, self.rows, self.bodies, self.records = _schema()
            meta.create_all(self.engine)
        except (sa.exc.SQLAlchemyError, ModuleNotFoundError) as e:
            raise PumiceError(f"cannot open the label index database {_shown(url)}: {str(e).splitlines()[0]}") from None

    # -- writing --------------------------------------------------------------------------------
    def replace_partition(self, part: int, body: np.ndarray, block: np.ndarray, sv: np.ndarray,
                          voxels: np.ndarray) -> None:
        """All rows of partition ``part`` (and its bodies' summaries), in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(self.rows.delete().where(self.rows.c.part == part))
            conn.execute(self.bodies.delete().where(self.bodies.c.part == part))
            self._insert(conn, part, body, block, sv, voxels)

    def drop_partitions_from(self, parts: int) -> None:
        """Rows of partitions ``parts`` and above: an earlier build's with more partitions."""
        with self.engine.begin() as conn:
            conn.execute(self.rows.delete().where(self.rows.c.part >= parts))
            conn.execute(self.bodies.delete().where(self.bodies.c.part >= parts))

    def move_supervoxels(self, sv: np.ndarray, body: np.ndarray, part: np.ndarray) -> None:
        """Supervoxels ``sv`` now belong to ``body`` (partition ``part``); one transaction."""
        import sqlalchemy as sa

        if not len(sv):
            return
        statement = (self.rows.update().where(self.rows.c.sv == sa.bindparam("s"))
                     .values(body=sa.bindparam("b"), part=sa.bindparam("p")))
        with self.engine.begin() as conn:
            for lo in range(0, len(sv), INSERT_BATCH):
                conn.execute(statement, [{"s": s, "b": b, "p": p} for s, b, p in
                                         zip(signed(sv[lo:lo + INSERT_BATCH]).tolist(),
                                             signed(body[lo:lo + INSERT_BATCH]).tolist(),
                                             np.asarray(part[lo:lo + INSERT_BATCH]).tolist())])

    def summarize(self, bodies: np.ndarray) -> None:
        """Recount the summaries of ``bodies`` from their rows (after supervoxels moved)."""
        import sqlalchemy as sa

        r = self.rows.c
        with self.engine.begin() as conn:
            for lo in range(0, len(bodies), 1000):
                chunk = signed(bodies[lo:lo + 1000]).tolist()
                conn.execute(self.bodies.delete().where(self.bodies.c.body.in_(chunk)))
                summary = sa.select(r.body, sa.func.sum(r.voxels), sa.func.count(sa.distinct(r.sv)),
                                    sa.func.count(sa.distinct(r.block)), sa.func.min(r.part)).where(
                    r.body.in_(chunk)).group_by(r.body)
                conn.execute(self.bodies.insert().from_select(["body", "voxels", "supervoxels", "blocks", "part"], summary))

    def _insert(self, conn, part: int, body: np.ndarray, block: np.ndarray, sv: np.ndarray, voxels: np.ndarray) -> None:
        columns = [signed(body).tolist(), signed(block).tolist(), signed(sv).tolist(),
                   np.asarray(voxels, np.int64).tolist()]
        for lo in range(0, len(columns[0]), INSERT_BATCH):
            conn.execute(self.rows.insert(), [{"body": b, "block": k, "sv": s, "voxels": v, "part": part}
                                              for b, k, s, v in zip(*(c[lo:lo + INSERT_BATCH] for c in columns))])
        if not len(body):
            return
        bodies, inverse = np.unique(np.asarray(body, np.uint64), return_inverse=True)
        total = np.bincount(inverse, weights=np.asarray(voxels, np.float64)).astype(np.int64)
        pairs_sv = np.unique(np.stack([inverse, signed(sv)], axis=1), axis=0)
        pairs_block = np.unique(np.stack([inverse, signed(block)], axis=1), axis=0)
        n_sv = np.bincount(pairs_sv[:, 0], minlength=len(bodies))
        n_block = np.bincount(pairs_block[:, 0], minlength=len(bodies))
        records = [{"body": b, "voxels": v, "supervoxels": s, "blocks": k, "part": part}
                   for b, v, s, k in zip(signed(bodies).tolist(), total.tolist(), n_sv.tolist(), n_block.tolist())]
        for lo in range(0, len(records), INSERT_BATCH):
            conn.execute(self.bodies.insert(), records[lo:lo + INSERT_BATCH])

    def set_meta(self, key: str, value: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.records.delete().where(self.records.c.key == key))
            conn.execute(self.records.insert(), [{"key": key, "value": json.dumps(value)}])

    # -- reading --------------------------------------------------------------------------------
    def meta(self, key: str) -> Any:
        with self.engine.connect() as conn:
            value = conn.execute(self.records.select().where(self.records.c.key == key)).fetchone()
        return None if value is None else json.loads(value.value)

    def index_of(self, body: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(block keys, supervoxels, voxels) of one body, sorted by block then supervoxel."""
        r = self.rows.c
        with self.engine.connect() as conn:
            found = conn.execute(self.rows.select().with_only_columns(r.block, r.sv, r.voxels)
                                 .where(r.body == int(signed([body])[0])).order_by(r.block, r.sv)).fetchall()
        rows = np.array(found, dtype=np.int64).reshape(-1, 3)
        return unsigned(rows[:, 0]), unsigned(rows[:, 1]), rows[:, 2]

    def partition_rows(self, part: int) -> Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Each body of partition ``part`` in id order: (body, block keys, supervoxels, voxels)."""
        r = self.rows.c
        with self.engine.connect() as conn:
            found = conn.execute(self.rows.select().with_only_columns(r.body, r.block, r.sv, r.voxels)
                                 .where(r.part == part)).fetchall()
        rows = np.array(found, dtype=np.int64).reshape(-1, 4)
        if not len(rows):
            return
        body = unsigned(rows[:, 0])
        order = np.lexsort((unsigned(rows[:, 2]), unsigned(rows[:, 1]), body))
        rows, body = rows[order], body[order]
        starts = np.flatnonzero(np.r_[True, body[1:] != body[:-1]])
        for start, stop in zip(starts, [*starts[1:], len(rows)]):
            yield int(body[start]), unsigned(rows[start:stop, 1]), unsigned(rows[start:stop, 2]), rows[start:stop, 3]

    def body_of(self, svs: np.ndarray) -> np.ndarray:
        """The body of each supervoxel (0 where the index has none)."""
        r = self.rows.c
        svs = np.asarray(svs, dtype=np.uint64).reshape(-1)
        out = np.zeros(len(svs), np.uint64)
        with self.engine.connect() as conn:
            for lo in range(0, len(svs), 1000):
                chunk = signed(svs[lo:lo + 1000]).tolist()
                found = conn.execute(self.rows.select().with_only_columns(r.sv, r.body).where(r.sv.in_(chunk))
                                     .distinct()).fetchall()
                known = dict((int(s), int(b)) for s, b in found)
                out[lo:lo + len(chunk)] = unsigned([known.get(s, 0) for s in chunk])
        return out

    def summary_of(self, body: int) -> dict[str, int] | None:
        b = self.bodies.c
        with self.engine.connect() as conn:
            found = conn.execute(self.bodies.select().where(b.body == int(signed([body])[0]))).fetchone()
        if found is None:
            return None
        return {"body": int(body), "voxels": int(found.voxels), "supervoxels": int(found.supervoxels),
                "blocks": int(found.blocks)}

    def parts(self) -> list[int]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return sorted(int(p) for (p,) in conn.execute(sa.select(self.bodies.c.part).distinct()))

    def count_bodies(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.bodies)).scalar() or 0)


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _shown(url: str) -> str:
    """A database URL without its password."""
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a message
        return "(the --db URL)"


@functools.lru_cache(maxsize=8)
def open_db(url: str) -> LabelDB:
    return LabelDB(url)
