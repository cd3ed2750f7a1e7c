"""The learning loop's journal in the outcomes store: answered requests (`LoggedRequest`),
the feedback given on them (`FeedbackEntry`) and shadow evaluations against a reference model
(`ShadowVerdict`). Rows are plain dataclasses; they are written through a `Writer` inside one
transaction and read with `OutcomeStore.requests`, `.feedback` and `.shadow`.

The query text is kept only when the caller stores it (`router.outcomes.keep_text`); a row
knows its query by the text hash, whose vector the store may hold.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from semroute.errors import OutcomeStoreError

REQUEST_COLUMNS = ("q.request_id, q.ts, t.hash, t.text, q.route, q.method, q.model, q.score, "
                   "q.margin, q.cost_usd, q.latency_ms, q.conversation")


@dataclass(frozen=True, kw_only=True)
class LoggedRequest:
    """One answered (or routed) request: what was decided and served, never the answer."""

    request_id: str
    route: str
    method: str  # the Decision's method: index | classifier | default | rule | step | ...
    ts: float = field(default_factory=time.time)
    text_hash: str | None = None
    text: str | None = None  # only when the store kept it
    model: str | None = None  # the model key that answered
    score: float | None = None  # the Decision's score
    margin: float | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    conversation: str | None = None  # the hashed conversation id, if any

    def problems(self) -> Iterator[str]:
        if not isinstance(self.request_id, str) or not self.request_id.strip():
            yield "field 'request_id' must be a non-empty string"
        if not isinstance(self.route, str) or not self.route:
            yield "field 'route' must be a non-empty route name"
        if not isinstance(self.method, str) or not self.method:
            yield "field 'method' must be a non-empty decision method"
        for name in ("score", "margin", "cost_usd", "latency_ms"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                yield f"field {name!r} must be None or a finite number, got {v!r}"


@dataclass(frozen=True, kw_only=True)
class FeedbackEntry:
    """A person's or a task's word on one request: a score in [0, 1] (thumbs up = 1), the
    route it should have gone to (`label`), and/or a note."""

    request_id: str
    score: float | None = None
    label: str | None = None
    note: str | None = None
    ts: float = field(default_factory=time.time)
    id: int | None = None  # set by the store

    def problems(self) -> Iterator[str]:
        if self.score is None and self.label is None and self.note is None:
            yield "give at least one of score, label or note"
        if self.score is not None and not (isinstance(self.score, (int, float))
                                           and 0.0 <= self.score <= 1.0):
            yield f"field 'score' must be a number in [0, 1], got {self.score!r}"
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            yield f"field 'label' must be a route name, got {self.label!r}"


@dataclass(frozen=True, kw_only=True)
class ShadowVerdict:
    """A judge's pairwise comparison of the routed answer with the reference model's answer
    to the same request. `score`: 1 the routed answer is better, 0.5 a tie, 0 worse (the
    mean over both presentation orders); `verdicts`: the judge's label per order."""

    request_id: str
    route: str
    model: str  # the model key that answered the caller
    reference: str  # the reference model key
    judge: str  # the judge model key
    score: float
    verdicts: tuple[str, ...]
    cost_usd: float | None = None  # the reference and judge calls, never the caller's
    latency_ms: float | None = None
    ts: float = field(default_factory=time.time)
    id: int | None = None

    def problems(self) -> Iterator[str]:
        if not (isinstance(self.score, (int, float)) and 0.0 <= self.score <= 1.0):
            yield f"field 'score' must be a number in [0, 1], got {self.score!r}"
        for name in ("request_id", "route", "model", "reference", "judge"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                yield f"field {name!r} must be a non-empty string"
        if self.cost_usd is not None and not (math.isfinite(self.cost_usd)
                                              and self.cost_usd >= 0):
            yield f"field 'cost_usd' must be None or a finite number >= 0, got {self.cost_usd!r}"


def check(row: LoggedRequest | FeedbackEntry | ShadowVerdict) -> None:
    """Raise `OutcomeStoreError` naming the request and every invalid field."""
    problems = list(row.problems())
    if problems:
        raise OutcomeStoreError(f"invalid {type(row).__name__} for request "
                                f"{row.request_id!r}: {'; '.join(problems)}")


def matching(alias: str, since: float | None = None, until: float | None = None,
             **equal: Any) -> tuple[str, list[Any]]:
    """A SQL condition on table alias `alias` (e.g. `r`): each given column equal to its
    value, and `ts` in [since, until); and its parameters. None means "any"."""
    conds: list[str] = ["1"]
    params: list[Any] = []
    for col, value in equal.items():
        if value is not None:
            conds.append(f"{alias}.{col} = ?")
            params.append(value)
    for op, bound in ((">=", since), ("<", until)):
        if bound is not None:
            conds.append(f"{alias}.ts {op} ?")
            params.append(bound)
    return " AND ".join(conds), params


def read_request(conn: sqlite3.Connection, request_id: str) -> LoggedRequest | None:
    row = conn.execute(f"SELECT {REQUEST_COLUMNS} FROM requests q LEFT JOIN texts t ON "
                       "t.id = q.text_id WHERE q.request_id = ?", (request_id,)).fetchone()
    return None if row is None else request_from(row)


def read_requests(conn: sqlite3.Connection, since: float | None, until: float | None,
                  route: str | None, method: str | None,
                  limit: int | None) -> list[LoggedRequest]:
    cond, params = matching("q", since, until, route=route, method=method)
    sql = (f"SELECT {REQUEST_COLUMNS} FROM requests q LEFT JOIN texts t ON t.id = q.text_id "
           f"WHERE {cond} ORDER BY q.ts, q.rowid"
           + (f" LIMIT {int(limit)}" if limit else ""))
    return [request_from(r) for r in conn.execute(sql, params)]


def request_from(row: tuple[Any, ...]) -> LoggedRequest:
    return LoggedRequest(request_id=row[0], ts=row[1], text_hash=row[2], text=row[3],
                         route=row[4], method=row[5], model=row[6], score=row[7],
                         margin=row[8], cost_usd=row[9], latency_ms=row[10],
                         conversation=row[11])


def read_feedback(conn: sqlite3.Connection, request_id: str | None, since: float | None,
                  until: float | None) -> list[FeedbackEntry]:
    cond, params = matching("f", since, until, request_id=request_id)
    return [FeedbackEntry(id=r[0], request_id=r[1], ts=r[2], score=r[3], label=r[4],
                          note=r[5])
            for r in conn.execute("SELECT id, request_id, ts, score, label, note FROM feedback f "
                                  f"WHERE {cond} ORDER BY id", params)]


def read_shadow(conn: sqlite3.Connection, route: str | None, since: float | None,
                until: float | None) -> list[ShadowVerdict]:
    cond, params = matching("s", since, until, route=route)
    return [ShadowVerdict(id=r[0], request_id=r[1], ts=r[2], route=r[3], model=r[4],
                          reference=r[5], judge=r[6], score=r[7],
                          verdicts=tuple(json.loads(r[8])), cost_usd=r[9], latency_ms=r[10])
            for r in conn.execute(
                "SELECT id, request_id, ts, route, model, reference, judge, score, verdicts, "
                f"cost_usd, latency_ms FROM shadow s WHERE {cond} ORDER BY id",
                params)]
