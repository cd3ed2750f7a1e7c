"""Writes to the outcomes store, all inside one open transaction: text ids, vectors,
records and import entries (`OutcomeStore.transaction` yields a `Writer`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from semroute.encoders import Fingerprint
from semroute.errors import UnknownRequestError
from semroute.outcomes.journal import FeedbackEntry, LoggedRequest, ShadowVerdict, check
from semroute.outcomes.records import OutcomeRecord, check_vectors, encoder_key

if TYPE_CHECKING:
    from numpy.typing import NDArray

CHUNK = 500  # host parameters per IN (...) query
FEATURES = 9  # len(predict.FEATURE_NAMES): cheap, non-identifying numbers per text


class Writer:
    """Writes inside one open transaction (see `OutcomeStore.transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.text_ids: dict[str, int] = {}

    def ids(self, hashes: Sequence[str], texts: Mapping[str, str] | None = None) -> list[int]:
        """Row ids of text hashes, adding the missing ones (with text only if given)."""
        todo = list(dict.fromkeys(h for h in hashes if h not in self.text_ids))  # in order
        rows = [(h, texts.get(h) if texts else None) for h in todo]
        self.conn.executemany("INSERT OR IGNORE INTO texts(hash, text) VALUES (?, ?)", rows)
        if texts:
            self.conn.executemany("UPDATE texts SET text = ? WHERE hash = ? AND text IS NULL",
                                  [(t, h) for h, t in rows if t is not None])
        for i in range(0, len(todo), CHUNK):
            part = todo[i:i + CHUNK]
            marks = ",".join("?" * len(part))
            self.text_ids.update(self.conn.execute(
                f"SELECT hash, id FROM texts WHERE hash IN ({marks})", part))
        return [self.text_ids[h] for h in hashes]

    def encoder_id(self, fp: Fingerprint) -> int:
        key = encoder_key(fp)
        self.conn.execute("INSERT OR IGNORE INTO encoders(key, name, backend, dim, weights_hash)"
                          " VALUES (?, ?, ?, ?, ?)",
                          (key, fp.name, fp.backend, fp.dim, fp.weights_hash))
        row = self.conn.execute("SELECT id FROM encoders WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def put_vectors(self, fp: Fingerprint, hashes: Sequence[str],
                    vectors: NDArray[np.float32]) -> None:
        """Store one vector per text hash for this encoder (an existing one is kept)."""
        arr = check_vectors(fp, list(hashes), vectors)
        enc = self.encoder_id(fp)
        ids = self.ids(hashes)
        self.conn.executemany(
            "INSERT OR IGNORE INTO vectors(encoder_id, text_id, vector) VALUES (?, ?, ?)",
            ((enc, i, arr[k].tobytes()) for k, i in enumerate(ids)))

    def put_features(self, hashes: Sequence[str], features: NDArray[np.float64]) -> None:
        """Store each text's features (`predict.text_features`, [n, 9]) where it has none:
        lengths and counts, never the text."""
        arr = np.ascontiguousarray(features, dtype=np.float64)
        if arr.shape != (len(hashes), FEATURES):
            raise ValueError(f"features must have shape ({len(hashes)}, {FEATURES}), got "
                             f"{arr.shape}")
        self.ids(hashes)
        self.conn.executemany(
            "UPDATE texts SET features = ? WHERE hash = ? AND features IS NULL",
            ((arr[k].tobytes(), h) for k, h in enumerate(hashes)))

    def add_many(self, records: Sequence[OutcomeRecord],
                 texts: Mapping[str, str] | None = None) -> list[int]:
        """Insert records (checked first); returns their ids in order."""
        for r in records:
            r.check()
        ids = self.ids([r.text_hash for r in records], texts)
        first = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0]
        self.conn.executemany(
            "INSERT INTO records(id, text_id, route, model, score, source, cost_usd, "
            "latency_ms, ts, request_id, dataset, category) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((first + k + 1, tid, r.route, r.model, float(r.score), r.source, r.cost_usd,
              r.latency_ms, r.ts, r.request_id, r.dataset, r.category)
             for k, (tid, r) in enumerate(zip(ids, records, strict=True))))
        return list(range(first + 1, first + 1 + len(records)))

    def add_dataset(self, dataset_id: str, name: str, path: str, form: str, examples: int,
                    records: int, dropped: int) -> None:
        self.conn.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (dataset_id, name, path, form, examples, records, dropped,
                           time.time()))

    def log_requests(self, rows: Sequence[LoggedRequest],
                     texts: Mapping[str, str] | None = None) -> None:
        """Journal answered requests (checked first); a request id already logged is kept as
        it was. `texts` (hash -> query) is stored only when given."""
        for r in rows:
            check(r)
        hashes = [r.text_hash for r in rows if r.text_hash is not None]
        ids = dict(zip(hashes, self.ids(hashes, texts), strict=True)) if hashes else {}
        self.conn.executemany(
            "INSERT OR IGNORE INTO requests(request_id, ts, text_id, route, method, model, "
            "score, margin, cost_usd, latency_ms, conversation) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((r.request_id, r.ts, ids.get(r.text_hash) if r.text_hash else None, r.route,
              r.method, r.model, r.score, r.margin, r.cost_usd, r.latency_ms, r.conversation)
             for r in rows))

    def add_feedback(self, entry: FeedbackEntry) -> int:
        """Store feedback on a logged request; `UnknownRequestError` when it was never logged."""
        check(entry)
        if self.conn.execute("SELECT 1 FROM requests WHERE request_id = ?",
                             (entry.request_id,)).fetchone() is None:
            raise UnknownRequestError(
                f"unknown request id {entry.request_id!r}: no request with this id is logged in "
                f"the outcomes store (feedback needs router.outcomes.log_requests: true, and "
                f"the id from Response.request_id or the x-semroute-request-id header)")
        cur = self.conn.execute(
            "INSERT INTO feedback(request_id, ts, score, label, note) VALUES (?, ?, ?, ?, ?)",
            (entry.request_id, entry.ts, entry.score, entry.label, entry.note))
        return int(cur.lastrowid or 0)

    def add_shadow(self, verdict: ShadowVerdict) -> int:
        """Store a shadow evaluation's verdict (checked first)."""
        check(verdict)
        cur = self.conn.execute(
            "INSERT INTO shadow(request_id, ts, route, model, reference, judge, score, "
            "verdicts, cost_usd, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (verdict.request_id, verdict.ts, verdict.route, verdict.model, verdict.reference,
             verdict.judge, float(verdict.score), json.dumps(list(verdict.verdicts)),
             verdict.cost_usd, verdict.latency_ms))
        return int(cur.lastrowid or 0)
