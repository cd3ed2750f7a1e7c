"""The outcomes store: SQLite in WAL mode holding outcome records and the query vectors they
are predicted from. Raw query text is never stored unless a caller asks for it.

Threads each get their own connection; processes share the file through WAL and a busy
timeout; every write is one transaction (`transaction()`), so a failure leaves no trace.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.encoders import Fingerprint
from semroute.errors import OutcomeStoreError
from semroute.outcomes.journal import (
    FeedbackEntry,
    LoggedRequest,
    ShadowVerdict,
    matching,
    read_feedback,
    read_request,
    read_requests,
    read_shadow,
)
from semroute.outcomes.records import OutcomeRecord, encoder_key
from semroute.outcomes.schema import SCHEMA_VERSION, check_schema
from semroute.outcomes.writing import CHUNK, FEATURES, Writer

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semroute.config import RouteSet

BUSY_TIMEOUT_S = 30.0
MMAP_BYTES = 1 << 30  # address space only; pages come from the OS cache
RECORD_COLUMNS = ("r.id, t.hash, r.model, r.score, r.source, r.route, r.cost_usd, "
                  "r.latency_ms, r.ts, r.request_id, r.dataset, r.category")


@dataclass(frozen=True)
class OutcomeMatrix:
    """What a kNN quality predictor needs: one row per text with a vector for the encoder.
    Unpacks as `vectors, scores, costs, models`; `text_hashes` names the rows."""

    vectors: NDArray[np.float32]  # [n, d], may be read-only
    scores: NDArray[np.float64]  # [n, m], mean of repeated scores, NaN where none
    costs: NDArray[np.float64]  # [n, m], mean cost in USD, NaN where none
    models: list[str]
    text_hashes: list[str]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.vectors, self.scores, self.costs, self.models))


def store_path(routes: RouteSet) -> Path:
    """The store a route set names (`router.outcomes.path`, relative to its routes folder)."""
    path = Path(routes.settings.outcomes.path).expanduser()
    return path if path.is_absolute() else routes.directory / path


def where(route: str | None = None, model: str | None = None, source: str | None = None,
          since: float | None = None, dataset: str | None = None) -> tuple[str, list[Any]]:
    """A SQL condition on `records r` for the optional filters, and its parameters."""
    return matching("r", since, route=route, model=model, source=source, dataset=dataset)


class OutcomeStore:
    """Outcome records and query vectors in one SQLite file (WAL; see the module doc)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.local = threading.local()
        self.lock = threading.Lock()
        self.conns: list[sqlite3.Connection] = []
        self.closed = False
        if self.path.parent and not self.path.parent.is_dir():
            raise OutcomeStoreError(f"{self.path}: folder {self.path.parent} does not exist")
        self.connection()  # create or check the schema now, not on first use

    # ------------------------------------------------------------ connections

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened, and the schema checked, on first use)."""
        if self.closed:
            raise OutcomeStoreError(f"{self.path}: the outcomes store is closed")
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is not None and getattr(self.local, "pid", None) == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")  # vectors load 2x faster
            if str(mode).lower() != "wal":
                raise OutcomeStoreError(f"{self.path}: SQLite refused WAL mode ({mode}); put "
                                        f"the store on a local file system")
            self.check_schema(conn)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise OutcomeStoreError(f"{self.path}: not a semroute outcomes store ({exc}); "
                                    f"give another --store path or move the file aside") from None
        except OutcomeStoreError:
            if conn is not None:
                conn.close()
            raise
        with self.lock:
            self.conns.append(conn)
        self.local.conn, self.local.pid = conn, os.getpid()
        return conn

    def check_schema(self, conn: sqlite3.Connection) -> None:
        """Create the schema in an empty file, migrate older versions, refuse other files and
        newer versions. Only creating and migrating take the write lock."""
        check_schema(conn, self.path)

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        with self.lock:
            self.closed = True
            conns, self.conns = self.conns, []
        for c in conns:
            c.close()

    def __enter__(self) -> OutcomeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Writer]:
        """One write transaction (BEGIN IMMEDIATE): all of it is stored, or none of it."""
        conn = self.connection()
        if conn.in_transaction:
            raise OutcomeStoreError(f"{self.path}: a write transaction is already open in this "
                                    f"thread: write through its Writer")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise OutcomeStoreError(f"{self.path}: cannot start a write ({exc}); another "
                                    f"process holds the store longer than "
                                    f"{self.busy_timeout:g} s") from None
        try:
            yield Writer(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise OutcomeStoreError(f"{self.path}: write failed and was rolled back "
                                        f"({exc})") from exc
            raise

    def checkpoint(self) -> None:
        """Copy the WAL into the main file as far as readers allow (never waits): after a
        big import, reads come from the (memory-mapped) main file again, 3-5x faster."""
        self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    # ------------------------------------------------------------ writes

    def add(self, record: OutcomeRecord, *, vector: NDArray[np.float32] | None = None,
            fingerprint: Fingerprint | None = None, text: str | None = None) -> int:
        """Store one record (and its query vector for `fingerprint`); returns its id.
        `text` is stored only when given: the store keeps hashes, not queries, by default."""
        if (vector is None) != (fingerprint is None):
            raise OutcomeStoreError("give both vector and fingerprint, or neither")
        with self.transaction() as tx:
            (rid,) = tx.add_many([record], {record.text_hash: text} if text else None)
            if vector is not None and fingerprint is not None:
                tx.put_vectors(fingerprint, [record.text_hash], np.reshape(vector, (1, -1)))
        return rid

    def add_many(self, records: Sequence[OutcomeRecord]) -> list[int]:
        """Store records in one transaction; returns their ids."""
        with self.transaction() as tx:
            return tx.add_many(records)

    # ------------------------------------------------------------ reads

    def count(self, **filters: Any) -> int:
        """Records matching the filters of `records` (all without)."""
        cond, params = where(**filters)
        return int(self.connection().execute(
            f"SELECT COUNT(*) FROM records r WHERE {cond}", params).fetchone()[0])

    def records(self, *, route: str | None = None, model: str | None = None,
                source: str | None = None, since: float | None = None,
                dataset: str | None = None, limit: int | None = None) -> list[OutcomeRecord]:
        """Records in insertion order, filtered by route, model, source, time or dataset."""
        cond, params = where(route, model, source, since, dataset)
        sql = (f"SELECT {RECORD_COLUMNS} FROM records r JOIN texts t ON t.id = r.text_id "
               f"WHERE {cond} ORDER BY r.id" + (f" LIMIT {int(limit)}" if limit else ""))
        return [OutcomeRecord(id=row[0], text_hash=row[1], model=row[2], score=row[3],
                              source=row[4], route=row[5], cost_usd=row[6], latency_ms=row[7],
                              ts=row[8], request_id=row[9], dataset=row[10], category=row[11])
                for row in self.connection().execute(sql, params)]

    def request(self, request_id: str) -> LoggedRequest | None:
        """The logged request with this id (its text only if the store kept it), or None."""
        return read_request(self.connection(), request_id)

    def requests(self, *, since: float | None = None, until: float | None = None,
                 route: str | None = None, method: str | None = None,
                 limit: int | None = None) -> list[LoggedRequest]:
        """Logged requests in time order, filtered by time window [since, until), route and
        decision method."""
        return read_requests(self.connection(), since, until, route, method, limit)

    def feedback(self, *, request_id: str | None = None, since: float | None = None,
                 until: float | None = None) -> list[FeedbackEntry]:
        """Feedback entries in the order given, for one request or a time window."""
        return read_feedback(self.connection(), request_id, since, until)

    def shadow(self, *, route: str | None = None, since: float | None = None,
               until: float | None = None) -> list[ShadowVerdict]:
        """Shadow verdicts in the order written, for one route or all, in a time window."""
        return read_shadow(self.connection(), route, since, until)

    def encoder_row(self, fingerprint: Fingerprint | str) -> tuple[int, int] | None:
        """(id, dim) of an encoder's vectors, None when the store has none."""
        row = self.connection().execute("SELECT id, dim FROM encoders WHERE key = ?",
                                        (encoder_key(fingerprint),)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def vector_rows(self, fingerprint: Fingerprint | str) -> tuple[list[int], list[str],
                                                                   NDArray[np.float32]]:
        """Text ids (ascending), hashes and the float32 matrix of an encoder's vectors."""
        enc = self.encoder_row(fingerprint)
        if enc is None:
            dim = fingerprint.dim if isinstance(fingerprint, Fingerprint) else 0
            return [], [], np.zeros((0, dim), dtype=np.float32)
        rows = self.connection().execute(
            "SELECT v.text_id, t.hash, v.vector FROM vectors v JOIN texts t ON t.id = v.text_id"
            " WHERE v.encoder_id = ? ORDER BY v.text_id", (enc[0],)).fetchall()
        if not rows:
            return [], [], np.zeros((0, enc[1]), dtype=np.float32)
        ids, hashes, blobs = zip(*rows, strict=True)
        mat = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), enc[1])
        return list(ids), list(hashes), mat

    def vectors(self, fingerprint: Fingerprint | str) -> tuple[list[str], NDArray[np.float32]]:
        """Every stored vector of one encoder: (text hashes, float32 [n, dim])."""
        _, hashes, mat = self.vector_rows(fingerprint)
        return hashes, mat

    def has_vectors(self, fingerprint: Fingerprint | str, hashes: Sequence[str]) -> set[str]:
        """Which of these text hashes already have a vector for the encoder."""
        enc = self.encoder_row(fingerprint)
        found: set[str] = set()
        if enc is None:
            return found
        unique = sorted(set(hashes))
        for i in range(0, len(unique), CHUNK):
            part = unique[i:i + CHUNK]
            found.update(r[0] for r in self.connection().execute(
                "SELECT t.hash FROM texts t JOIN vectors v ON v.text_id = t.id AND "
                f"v.encoder_id = ? WHERE t.hash IN ({','.join('?' * len(part))})",
                [enc[0], *part]))
        return found

    def matrix(self, fingerprint: Fingerprint | str, models: Sequence[str] | None = None,
               **filters: Any) -> OutcomeMatrix:
        """Records grouped by text (repeated scores and costs averaged) beside the texts'
        vectors for `fingerprint`: rows are texts with a vector and at least one record;
        columns are `models` (default: every model, by first record)."""
        ids, hashes, mat = self.vector_rows(fingerprint)
        cond, params = where(**filters)
        conn = self.connection()
        if models is None:
            models = [m for (m,) in conn.execute(
                f"SELECT r.model FROM records r WHERE {cond} GROUP BY r.model "
                "ORDER BY MIN(r.id)", params)]
        m, dim = len(models), mat.shape[1]
        case = " ".join(f"WHEN ? THEN {j}" for j in range(m))  # column numbers, not strings
        rows = conn.execute(f"SELECT r.text_id, CASE r.model {case} ELSE -1 END, r.score, "
                            f"r.cost_usd FROM records r WHERE {cond}",
                            [*models, *params]).fetchall() if m else []
        if not ids or not rows or not m:
            empty = np.zeros((0, m))
            return OutcomeMatrix(np.zeros((0, dim), np.float32), empty, empty.copy(),
                                 list(models), [])
        tid, col, score, cost = zip(*rows, strict=True)
        cols = np.asarray(col, dtype=np.int64)
        id_arr = np.asarray(ids, dtype=np.int64)  # ascending
        tids = np.asarray(tid, dtype=np.int64)
        pos = np.minimum(np.searchsorted(id_arr, tids), id_arr.size - 1)
        ok = (id_arr[pos] == tids) & (cols >= 0)  # a vector for this encoder, a wanted model
        used, row = np.unique(pos[ok], return_inverse=True)
        cell = row * m + cols[ok]
        size = used.size * m
        score_arr = np.asarray(score, dtype=np.float64)[ok]
        cost_arr = np.asarray(cost, dtype=np.float64)[ok]  # None -> NaN
        priced = ~np.isnan(cost_arr)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = (np.bincount(cell, score_arr, size)
                      / np.bincount(cell, minlength=size)).reshape(used.size, m)
            costs = (np.bincount(cell[priced], cost_arr[priced], size)
                     / np.bincount(cell[priced], minlength=size)).reshape(used.size, m)
        if used.size == len(ids):  # every text has records: no copy of the vectors
            return OutcomeMatrix(mat, scores, costs, list(models), hashes)
        return OutcomeMatrix(mat[used], scores, costs, list(models), [hashes[i] for i in used])

    def features(self, hashes: Sequence[str]) -> NDArray[np.float64]:
        """The stored text features (`predict.text_features`, float64 [len(hashes), 9]) of
        these texts, NaN rows where a text has none."""
        found = {h: f for h, f in self.connection().execute(
            "SELECT hash, features FROM texts WHERE features IS NOT NULL")}
        out = np.full((len(hashes), FEATURES), np.nan)
        for i, h in enumerate(hashes):
            blob = found.get(h)
            if blob is not None:
                out[i] = np.frombuffer(blob, dtype=np.float64)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for `semroute outcomes stats`: records by model and source, texts, vectors
        per encoder, imported datasets."""
        c = self.connection()
        models = [{"model": m, "records": n, "mean_score": s, "mean_cost_usd": k}
                  for m, n, s, k in c.execute(
                      "SELECT model, COUNT(*), AVG(score), AVG(cost_usd) FROM records "
                      "GROUP BY model ORDER BY MIN(id)")]
        return {
            "path": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "records": self.count(),
            "texts": c.execute("SELECT COUNT(*) FROM texts").fetchone()[0],
            "models": models,
            "sources": dict(c.execute("SELECT source, COUNT(*) FROM records GROUP BY source")),
            "journal": {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                        for t in ("requests", "feedback", "shadow")},
            "encoders": [{"encoder": k, "vectors": n} for k, n in c.execute(
                "SELECT e.key, COUNT(v.text_id) FROM encoders e LEFT JOIN vectors v "
                "ON v.encoder_id = e.id GROUP BY e.id ORDER BY e.id")],
            "datasets": [dict(zip(("id", "name", "path", "form", "examples", "records",
                                   "dropped", "ts"), row, strict=True))
                         for row in c.execute("SELECT * FROM datasets ORDER BY ts")],
        }
