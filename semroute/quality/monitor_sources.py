"""What `semroute monitor` reads: the time window, trace files (JSONL, one record per
dispatch; feedback and shadow lines and bad lines are counted, never fatal) and the outcomes
store's journal (requests, feedback, shadow verdicts, live gate records).

A trace line is a request when its `kind` is absent or "request"; other kinds are counted
and skipped. A line that is not a JSON object, or has no usable `ts`, `route`/`method`, is a
bad line: counted, its first line numbers kept for the report.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from semroute.errors import DataError
from semroute.outcomes import FeedbackEntry, OutcomeRecord, OutcomeStore, ShadowVerdict
from semroute.quality.monitoring import RequestRow

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
BAD_EXAMPLES = 5


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `1h`, `7d`, `2w` in seconds."""
    m = DURATION.match(text)
    if m is None:
        raise DataError(f"cannot read the duration {text!r}: write a number and a unit "
                        f"(s, m, h, d, w), e.g. 7d or 1h")
    seconds = float(m.group(1)) * UNITS[m.group(2)]
    if seconds <= 0:
        raise DataError(f"the duration {text!r} must be positive")
    return seconds


def parse_time(text: str | float | int, *, now: float | None = None) -> float:
    """A time as epoch seconds: epoch seconds, an ISO 8601 date or date-time (UTC unless it
    says otherwise), or a duration ago (`7d` = seven days before now)."""
    if isinstance(text, int | float):
        return float(text)
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    if DURATION.match(s):
        return (time.time() if now is None else now) - parse_duration(s)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"cannot read the time {text!r}: give an ISO date or date-time "
                        f"(2026-12-01, 2026-12-01T08:00Z), epoch seconds, or a duration ago "
                        f"(7d)") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Window:
    """The time window [since, until); None ends are open (taken from the data)."""

    since: float | None = None
    until: float | None = None

    def holds(self, ts: float) -> bool:
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)


def make_window(since: str | None, until: str | None, window: str | None, *,
                now: float | None = None) -> Window:
    """`--since`, `--until`, `--window`: a window length runs from `since`, else up to now."""
    now = time.time() if now is None else now
    if until is not None and window is not None:
        raise DataError("give --until or --window, not both")
    start = None if since is None else parse_time(since, now=now)
    end = None if until is None else parse_time(until, now=now)
    if window is not None:
        span = parse_duration(window)
        end, start = (start + span, start) if start is not None else (now, now - span)
    if start is not None and end is not None and end <= start:
        raise DataError(f"the window is empty: --until ({iso(end)}) is not after --since "
                        f"({iso(start)})")
    return Window(start, end)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class TraceFile:
    """What one trace file held: lines, requests used, other kinds, bad lines."""

    path: str
    found: bool = True
    lines: int = 0
    requests: int = 0  # request lines inside the window
    outside: int = 0  # request lines outside the window
    kinds: Counter[str] = field(default_factory=Counter)  # non-request lines by kind
    bad: int = 0
    bad_examples: list[str] = field(default_factory=list)  # "line N: why"


def number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) \
        and math.isfinite(v) else None


def row_of(rec: dict[str, Any]) -> RequestRow | str:
    """A trace record as a `RequestRow`, or why it cannot be one."""
    raw = rec.get("ts")
    if isinstance(raw, str):
        try:
            ts = parse_time(raw)
        except DataError:
            return f"'ts' {raw[:40]!r} is not a time"
    elif number(raw) is not None:
        ts = float(raw)  # type: ignore[arg-type]
    else:
        return "no 'ts'"
    method = rec.get("method")
    if not isinstance(method, str) or not method:
        return "no 'method'"
    route = rec.get("route")
    attempts = [a for a in rec.get("attempts") or [] if isinstance(a, dict)]
    tried = {a.get("model_key") for a in attempts if not a.get("judge")}
    lat = rec.get("latency_ms")
    total = number(lat.get("total")) if isinstance(lat, dict) else number(lat)
    tokens_in, tokens_out = number(rec.get("input_tokens")), number(rec.get("output_tokens"))
    return RequestRow(
        ts=ts, request_id=str(rec.get("request_id") or ""),
        route=route if isinstance(route, str) and route else "(none)", method=method,
        model=rec.get("model_key") if isinstance(rec.get("model_key"), str) else None,
        score=number(rec.get("score")), margin=number(rec.get("margin")),
        input_tokens=None if tokens_in is None else int(tokens_in),
        output_tokens=None if tokens_out is None else int(tokens_out),
        cost_usd=number(rec.get("cost_usd")) or 0.0, latency_ms=total,
        error=bool(rec.get("error")),
        failover=len(tried) > 1 and not rec.get("parallel") and not rec.get("cascade"),
        source="trace")


def read_trace(path: str | Path, window: Window) -> tuple[list[RequestRow], TraceFile]:
    """The request rows of one trace file inside the window, and what the file held."""
    info = TraceFile(str(path))
    p = Path(path)
    if not p.is_file():
        info.found = False
        return [], info
    rows: list[RequestRow] = []
    with p.open("rb") as f:
        for n, raw in enumerate(f, 1):
            info.lines += 1
            why: str | None = None
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                rec, why = None, "not JSON (truncated?)"
            if why is None and not isinstance(rec, dict):
                why = "not a JSON object"
            if why is None and isinstance(rec, dict):
                kind = rec.get("kind", "request")
                if kind != "request":
                    info.kinds[str(kind)] += 1
                    continue
                got = row_of(rec)
                if isinstance(got, str):
                    why = got
                elif window.holds(got.ts):
                    rows.append(got)
                    info.requests += 1
                else:
                    info.outside += 1
            if why is not None:
                info.bad += 1
                if len(info.bad_examples) < BAD_EXAMPLES:
                    info.bad_examples.append(f"line {n}: {why}")
    return rows, info


@dataclass
class StoreData:
    """What the outcomes store held inside the window."""

    path: str
    found: bool
    requests: list[RequestRow] = field(default_factory=list)
    feedback: list[FeedbackEntry] = field(default_factory=list)
    shadow: list[ShadowVerdict] = field(default_factory=list)
    records: list[OutcomeRecord] = field(default_factory=list)  # live gate / judge records
    served: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id -> route, model
    error: str | None = None


def read_store(path: str | Path, window: Window) -> StoreData:
    """The store's journal and live records inside the window; a missing file is reported,
    never created."""
    p = Path(path)
    data = StoreData(str(p), p.is_file())
    if not data.found:
        return data
    with OutcomeStore(p) as store:
        logged = store.requests(since=window.since, until=window.until)
        data.requests = [RequestRow(ts=r.ts, request_id=r.request_id, route=r.route,
                                    method=r.method, model=r.model, score=r.score,
                                    margin=r.margin, cost_usd=r.cost_usd or 0.0,
                                    latency_ms=r.latency_ms, source="store") for r in logged]
        data.feedback = store.feedback(since=window.since, until=window.until)
        data.shadow = store.shadow(since=window.since, until=window.until)
        data.records = [r for source in ("gate", "judge")  # never the imported bulk
                        for r in store.records(source=source, since=window.since)
                        if window.holds(r.ts)]
        data.served = {r.request_id: (r.route, r.model) for r in logged}
        for e in data.feedback:  # feedback in the window on a request logged before it
            if e.request_id not in data.served:
                hit = store.request(e.request_id)
                if hit is not None:
                    data.served[e.request_id] = (hit.route, hit.model)
    return data


def merge(traced: Sequence[RequestRow], logged: Iterable[RequestRow]) -> list[RequestRow]:
    """Trace rows plus the store's rows the traces do not have (same request id: the trace's,
    which has tokens), in time order."""
    seen = {r.request_id for r in traced if r.request_id}
    return sorted([*traced, *(r for r in logged if r.request_id not in seen)],
                  key=lambda r: r.ts)
