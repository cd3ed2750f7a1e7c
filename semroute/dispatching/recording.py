"""Cascade gate verdicts written to the outcomes store as outcomes of the models that answered
(`router.outcomes.record: true`), so ladders learn from live traffic.

A step whose answer passed every gate scores 1.0 (source `gate`), or the judge's score / 10
(source `judge`) when a judge passed it; a gated-out answer scores 0.0 (`gate`), or the judge's
score / 10 when the judge gated it out. The last step is never gated: it records nothing. The
records, the query's vector (from the query cache: the router just encoded it) and the route
are written on one background thread through a bounded queue: the caller never waits, and a
failing store costs no answer (failures are counted and logged as warnings).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from semroute.encoders import Fingerprint, QueryCache
from semroute.outcomes import OutcomeRecord, OutcomeStore, text_features, text_hash

if TYPE_CHECKING:
    from semroute.dispatching.cascade import CascadeOutcome
    from semroute.routing import Decision

logger = logging.getLogger("semroute.dispatching.recording")
QUEUE_SIZE = 256


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
    """Writes gate outcomes to one outcomes store from one background thread."""

    def __init__(self, path: str | Path, cache: QueryCache,
                 max_queued: int = QUEUE_SIZE) -> None:
        self.path = Path(path)
        self.cache = cache
        self.fingerprint = Fingerprint.of(cache.encoder)
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue(max_queued)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._store: OutcomeStore | None = None
        self.written = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, request_id: str, decision: Decision, cascade: CascadeOutcome) -> bool:
        """Queue the cascade's outcomes; False (counted in `dropped`) when the queue is full."""
        records = gate_records(request_id, decision, cascade)
        if not records:
            return False
        try:
            self._jobs.put_nowait(lambda: self.write(decision.query, records))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            logger.warning("outcome recording queue is full: %d records dropped", len(records))
            return False
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self.run, name="semroute-outcomes",
                                                daemon=True)
                self._thread.start()
        return True

    def write(self, query: str, records: list[OutcomeRecord]) -> None:
        """Store the records and the query's vector in one transaction (worker thread)."""
        if self._store is None:
            self._store = OutcomeStore(self.path)
        vectors, _ = self.cache.encode([query])
        with self._store.transaction() as tx:
            tx.add_many(records)
            tx.put_vectors(self.fingerprint, [records[0].text_hash], vectors)
            tx.put_features([records[0].text_hash], text_features([query]))

    def run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
                with self._lock:
                    self.written += 1
            except Exception as exc:
                with self._lock:
                    self.failed += 1
                logger.warning("recording cascade outcomes in %s failed (%s); the answer was "
                               "served, the outcome is lost", self.path, exc)
            finally:
                self._jobs.task_done()

    def join(self) -> None:
        """Wait until every queued write has run (tests and benchmarks use this)."""
        self._jobs.join()

    def close(self) -> None:
        """Close the store connection (queued writes finish first)."""
        self.join()
        if self._store is not None:
            self._store.close()
            self._store = None
