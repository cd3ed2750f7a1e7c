"""The learning loop's journal and feedback (README "Feedback and shadow evaluation").

With `router.outcomes.log_requests: true` every answered request (plain, streamed once it
ends, parallel, cascade, agent step, explicit model) is journalled in the outcomes store by
the store's background writer (`recording.py`): what was decided and served, never the answer.
A request no model answered is not journalled (the trace has it), so feedback on it is an
unknown request. Feedback lands in the store's `feedback` table, as an `OutcomeRecord`
(source `feedback`) of the model that answered when it has a score, and as a trace line
`{"kind": "feedback", ...}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from semroute.config import RouteSet
from semroute.dispatching.response import Response
from semroute.errors import FeedbackError, UnknownRequestError
from semroute.outcomes import FeedbackEntry, LoggedRequest, OutcomeRecord, OutcomeStore
from semroute.providers import Offload, Plan
from semroute.telemetry import TraceWriter

NOTE_CHARS = 10_000


def logged_request(r: Response) -> LoggedRequest:
    """The journal row of an answered request (its text hash is added by the writer)."""
    d = r.decision
    return LoggedRequest(request_id=r.request_id, route=r.route, method=d.method,
                         model=r.model_key, score=_finite(d.score), margin=_finite(d.margin),
                         cost_usd=_finite(r.cost_usd), latency_ms=_finite(r.latency_ms.get(
                             "total", sum(r.latency_ms.values()))))


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def feedback_entry(routes: RouteSet, request_id: str, score: float | bool | None,
                   label: str | None, note: str | None) -> FeedbackEntry:
    """A checked FeedbackEntry: `score` in [0, 1] (True/False: thumbs, 1/0), `label` a route
    of `routes`, `note` text; `FeedbackError` naming the field otherwise."""
    if not isinstance(request_id, str) or not request_id.strip():
        raise FeedbackError(f"request_id must be a request id (Response.request_id, the "
                            f"x-semroute-request-id header), got {request_id!r}")
    if isinstance(score, bool):
        score = 1.0 if score else 0.0
    if score is not None and not (isinstance(score, int | float) and math.isfinite(score)
                                  and 0.0 <= score <= 1.0):
        raise FeedbackError(f"request {request_id}: field 'score' must be a number in [0, 1] "
                            f"(or true/false for thumbs up/down), got {score!r}")
    names = [r.name for r in routes.routes]
    if label is not None and label not in names:
        raise FeedbackError(f"request {request_id}: field 'label': no route named {label!r} in "
                            f"{routes.directory} (routes: {', '.join(sorted(names))})")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_CHARS):
        raise FeedbackError(f"request {request_id}: field 'note' must be text of at most "
                            f"{NOTE_CHARS} characters")
    if score is None and label is None and not note:
        raise FeedbackError(f"request {request_id}: give a score, a label or a note")
    return FeedbackEntry(request_id=request_id, score=None if score is None else float(score),
                         label=label, note=note or None)


@dataclass(frozen=True)
class Given:
    """Feedback as stored, the request it is about, and the outcome record it made (None
    without a score or a known model)."""

    entry: FeedbackEntry
    request: LoggedRequest
    record: OutcomeRecord | None


def write_feedback(store: OutcomeStore, entry: FeedbackEntry) -> Given:
    """Store feedback and, with a score, the outcome record of the model that answered, in
    one transaction; `UnknownRequestError` when the request was never journalled."""
    with store.transaction() as tx:
        fid = tx.add_feedback(entry)
        logged = store.request(entry.request_id)
        if logged is None:  # pragma: no cover - add_feedback checked it in this transaction
            raise UnknownRequestError(f"unknown request id {entry.request_id!r}")
        record = None
        if entry.score is not None and logged.model is not None and logged.text_hash:
            record = OutcomeRecord(text_hash=logged.text_hash, model=logged.model,
                                   score=entry.score, source="feedback", route=logged.route,
                                   ts=entry.ts, request_id=entry.request_id)
            tx.add_many([record])
    stored = FeedbackEntry(request_id=entry.request_id, score=entry.score, label=entry.label,
                           note=entry.note, ts=entry.ts, id=fid)
    return Given(stored, logged, record)


def feedback_line(given: Given, include_query: bool) -> dict[str, Any]:
    """The trace line of a feedback: never the note's text unless the trace includes queries
    (a note may hold personal data), its length always."""
    e, q = given.entry, given.request
    line: dict[str, Any] = {
        "kind": "feedback", "ts": datetime.fromtimestamp(e.ts, UTC).isoformat(
            timespec="milliseconds"), "request_id": e.request_id, "route": q.route,
        "model": q.model, "method": q.method, "score": e.score, "label": e.label,
        "note_chars": None if e.note is None else len(e.note),
        "outcome_recorded": given.record is not None}
    if include_query:
        line["note"] = e.note
    return line


def feedback_plan(routes: RouteSet, store: Callable[[], OutcomeStore],
                  flush: Callable[[str], None] | None, trace: TraceWriter | None,
                  include_query: bool, request_id: str, score: float | bool | None,
                  label: str | None, note: str | None) -> Plan[FeedbackEntry]:
    """Check, store and trace one feedback (sync and async drive this one plan; store and
    trace writes are blocking work). `flush` first waits for this request's journal write."""
    entry = feedback_entry(routes, request_id, score, label, note)
    if flush is not None:
        yield Offload(partial(flush, request_id))
    given: Given = yield Offload(lambda: write_feedback(store(), entry))
    if trace is not None:
        yield Offload(partial(trace.write, feedback_line(given, include_query)))
    return given.entry
