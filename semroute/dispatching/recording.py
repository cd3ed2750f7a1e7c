"""The outcomes store's one background writer per store: cascade gate verdicts as outcomes of
the models that answered (`router.outcomes.record: true`), so ladders learn from live traffic,
and the journal of answered requests (`router.outcomes.log_requests: true`, `journal`).

A step whose answer passed every gate scores 1.0 (source `gate`), or the judge's score / 10
(source `judge`) when a judge passed it; a gated-out answer scores 0.0 (`gate`), or the judge's
score / 10 when the judge gated it out. The last step is never gated: it records nothing. The
records, the query's vector (from the query cache: the router just encoded it) and the route
are written by a `BackgroundWorker` (background.py): the caller never waits, and a failing
store costs no answer (failures are counted and logged as warnings).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from semroute.dispatching.background import BackgroundWorker
from semroute.encoders import Fingerprint, QueryCache
from semroute.outcomes import (
    LoggedRequest,
    OutcomeRecord,
    OutcomeStore,
    ShadowVerdict,
    text_features,
    text_hash,
)

if TYPE_CHECKING:
    from semroute.dispatching.cascade import CascadeOutcome
    from semroute.routing import Decision

QUEUE_SIZE = 256
FLUSH_WAIT_S = 10.0
LINGER_S = 0.02  # journal rows gather this long before one transaction writes them
MAX_ROWS = 4096  # journal rows waiting at most; more are dropped (counted)


@dataclass(frozen=True)
class Journalled:
    """One answered request waiting for the journal writer."""

    row: LoggedRequest
    query: str
    keep_text: bool
    conversation: Callable[[], str | None] | None
    done: threading.Event


def gate_records(request_id: str, decision: Decision,
                 cascade: CascadeOutcome) -> list[OutcomeRecord]:
    """The outcome records a cascade's verdicts give (module docstring)."""
    out: list[OutcomeRecord] = []
    h = text_hash(decision.query)
    for step in cascade.steps:
        if not step.ok or step.model_key is None:
            continue
        judged = step.judge_score is not None
        if step.verdict == "accepted":
            score = step.judge_score / 10 if step.judge_score is not None else 1.0
        elif step.gate is not None:  # gated out (escalated, or returned as the final fallback)
            judged = judged and step.gate == "judge"
            score = step.judge_score / 10 if judged and step.judge_score is not None else 0.0
        else:
            continue  # the last step: not gated, no verdict
        out.append(OutcomeRecord(
            text_hash=h, model=step.model_key, score=min(max(score, 0.0), 1.0),
            source="judge" if judged else "gate", route=decision.route,
            cost_usd=step.cost_usd, latency_ms=step.latency_ms, request_id=request_id))
    return out


class OutcomeRecorder:
    """Writes gate outcomes and journalled requests to one outcomes store from a
    `BackgroundWorker`; `store` is its connection for other threads' writes (feedback, shadow
    verdicts), per thread as `OutcomeStore` keeps them."""

    def __init__(self, path: str | Path, cache: QueryCache,
                 max_queued: int = QUEUE_SIZE) -> None:
        self.path = Path(path)
        self.cache = cache
        self.fingerprint = Fingerprint.of(cache.encoder)
        self.worker = BackgroundWorker(
            "semroute-outcomes", f"recording cascade outcomes in {self.path} (the answer was "
            "served, the outcome is lost)", max_queued)
        self._store: OutcomeStore | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Event] = {}  # request id -> journal write done
        self._rows: deque[Journalled] = deque()
        self._armed = False  # a write_journal job is queued or sleeping
        self._rows_dropped = 0
        self.journalled = 0  # journal rows written
        self.linger_s = LINGER_S
        self.max_rows = MAX_ROWS

    @property
    def written(self) -> int:
        """Requests whose outcomes were written."""
        return self.worker.done

    @property
    def failed(self) -> int:
        """Requests whose outcomes could not be written (each logged as a warning)."""
        return self.worker.failed

    @property
    def dropped(self) -> int:
        """Jobs dropped because the queue was full, and journal rows dropped because
        `max_rows` were waiting."""
        return self.worker.dropped + self._rows_dropped

    def submit(self, request_id: str, decision: Decision, cascade: CascadeOutcome) -> bool:
        """Queue the cascade's outcomes; False when there are none or the queue is full."""
        records = gate_records(request_id, decision, cascade)
        return bool(records) and self.worker.submit(lambda: self.write(decision.query, records))

    @property
    def store(self) -> OutcomeStore:
        """The store, opened on first use (its connections are per thread)."""
        with self._lock:
            if self._store is None:
                self._store = OutcomeStore(self.path)
            return self._store

    def journal(self, row: LoggedRequest, query: str, keep_text: bool,
                conversation: Callable[[], str | None] | None = None) -> bool:
        """Queue an answered request for the journal, with the query's vector and features
        (and its text when `keep_text`); `conversation` computes the hashed conversation id
        off the caller's path. Rows gather for `linger_s` and are written in one transaction,
        so a busy router wakes the worker once per batch, not once per request. False when
        more than `max_rows` wait (the row is dropped and counted in `dropped`)."""
        if len(self._rows) >= self.max_rows:
            self._rows_dropped += 1
            return False
        done = threading.Event()
        # a dict's set and a deque's append are atomic: the caller never waits on a lock
        self._pending[row.request_id] = done
        self._rows.append(Journalled(row, query, keep_text, conversation, done))
        if not self._armed:
            self._armed = True
            if not self.worker.submit(self.write_journal):  # full: the next request retries
                self._armed = False
        return True

    def write_journal(self) -> None:
        """Write the rows gathered so far (worker thread), after letting more gather."""
        time.sleep(self.linger_s)
        self._armed = False  # before draining: a row added from now on arms a new batch
        batch: list[Journalled] = []
        while self._rows:
            batch.append(self._rows.popleft())
        if not batch:
            return
        try:
            self.write_requests(batch)
            self.journalled += len(batch)
        finally:
            for j in batch:
                self._pending.pop(j.row.request_id, None)
                j.done.set()

    def write_requests(self, batch: list[Journalled]) -> None:
        """Journal requests with their queries' vectors and features, in one transaction."""
        rows = [replace(j.row, text_hash=j.row.text_hash or text_hash(j.query),
                        conversation=j.conversation() if j.conversation else j.row.conversation)
                for j in batch]
        hashes = [r.text_hash for r in rows if r.text_hash is not None]
        queries = [j.query for j in batch]
        vectors, _ = self.cache.encode(queries)
        texts = {r.text_hash: j.query for r, j in zip(rows, batch, strict=True)
                 if j.keep_text and r.text_hash is not None}
        with self.store.transaction() as tx:
            tx.log_requests(rows, texts or None)
            tx.put_vectors(self.fingerprint, hashes, vectors)
            tx.put_features(hashes, text_features(queries))

    def flush(self, request_id: str, timeout: float = FLUSH_WAIT_S) -> None:
        """Wait until the journal write of `request_id` has run, if one is queued (feedback
        right after a dispatch finds its request)."""
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.wait(timeout)

    def add_verdict(self, verdict: ShadowVerdict) -> int:
        """Store a shadow verdict now, on the calling thread (the shadow worker)."""
        with self.store.transaction() as tx:
            return tx.add_shadow(verdict)

    def write(self, query: str, records: list[OutcomeRecord]) -> None:
        """Store the records and the query's vector in one transaction (worker thread)."""
        vectors, _ = self.cache.encode([query])
        with self.store.transaction() as tx:
            tx.add_many(records)
            tx.put_vectors(self.fingerprint, [records[0].text_hash], vectors)
            tx.put_features([records[0].text_hash], text_features([query]))

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued write has run, at most `timeout` s; whether they all have."""
        return self.worker.join(timeout)

    def close(self) -> None:
        """Close the store connection (queued writes finish first)."""
        self.join()
        if self._store is not None:
            self._store.close()
            self._store = None
