"""One call to one model, as recorded in responses, errors and traces."""

from __future__ import annotations

from dataclasses import dataclass

from semroute.errors import ErrorScope


@dataclass(frozen=True)
class Attempt:
    """One call to one model: which model, which try, how long, and if it failed, why (the HTTP
    status, the scrubbed error text, and how far the failure reached: `scope`). On parallel
    routes, `picked` marks the answer returned and `judge` the judge's calls."""

    model_key: str
    provider: str
    model: str
    try_number: int
    ok: bool
    latency_ms: float
    status: int | None = None
    error: str | None = None
    scope: ErrorScope | None = None
    picked: bool = False
    judge: bool = False
