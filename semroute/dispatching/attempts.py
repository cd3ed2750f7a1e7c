"""One call to one model, as recorded in responses, errors and traces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attempt:
    """One call to one model."""

    model_key: str
    provider: str
    model: str
    try_number: int
    ok: bool
    latency_ms: float
    status: int | None = None
    error: str | None = None
