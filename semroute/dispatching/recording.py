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
from collections.abc import Callable
from dataclasses import replace
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
        """Requests whose outcomes were dropped because the queue was full."""
        return self.worker.dropped

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
        off the caller's path. False when the queue is full (counted in `dropped`)."""
        done = threading.Event()
        # a dict's set and pop are atomic: no lock the caller could wait on behind the worker
        self._pending[row.request_id] = done

        def job() -> None:
            try:
                self.write_request(row, query, keep_text, conversation)
            finally:
                self._pending.pop(row.request_id, None)
                done.set()

        if self.worker.submit(job):
            return True
        self._pending.pop(row.request_id, None)
        return False

    def write_request(self, row: LoggedRequest, query: str, keep_text: bool,
                      conversation: Callable[[], str | None] | None) -> None:
        """Journal one request with its query's vector and features (worker thread)."""
        if conversation is not None:
            row = replace(row, conversation=conversation())
        h = row.text_hash or text_hash(query)
        vectors, _ = self.cache.encode([query])
        with self.store.transaction() as tx:
            tx.log_requests([replace(row, text_hash=h)], {h: query} if keep_text else None)
            tx.put_vectors(self.fingerprint, [h], vectors)
            tx.put_features([h], text_features([query]))

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

    def join(self) -> None:
        """Wait until every queued write has run (tests and benchmarks use this)."""
        self.worker.join()

    def close(self) -> None:
        """Close the store connection (queued writes finish first)."""
        self.join()
        if self._store is not None:
            self._store.close()
            self._store = None
