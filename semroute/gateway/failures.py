"""What a failed request answers: the HTTP status, the message, the field at fault, and
every attempt made, for either API's error body."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from semroute.dispatching import Attempt
from semroute.errors import (
    AllModelsFailedError,
    BudgetExceededError,
    BudgetStoreUnavailableError,
    ConfigError,
    ErrorScope,
    GatewayError,
    NoRouteError,
    ProviderError,
    QueryError,
    UnknownStepError,
)

OVERLOADED = {429, 503, 529}


@dataclass(frozen=True)
class Failure:
    """A request's failure as the gateway reports it."""

    status: int
    message: str
    param: str | None = None
    attempts: list[dict[str, Any]] | None = None
    request_id: str | None = None
    retry_after: float | None = None


def attempt_json(a: Attempt) -> dict[str, Any]:
    """One attempt for an error body (the scrubbed error: never a key)."""
    return {"model_key": a.model_key, "provider": a.provider, "model": a.model,
            "try": a.try_number, "ok": a.ok, "status": a.status, "error": a.error,
            "scope": None if a.scope is None else str(a.scope),
            "latency_ms": round(a.latency_ms, 2)}


def failure_of(exc: Exception) -> Failure:
    """The Failure for an exception raised while admitting, parsing or dispatching.

    400: the body (names the field), an unknown agent step, or a request every model
    refused; 401, 404, 413, 429: the gateway's own refusals (429 also: a budget cap, with
    Retry-After until the cap's period resets); 502: every model failed; 503: every model
    failed because all were overloaded (429/503), the gateway is not ready, or budget caps
    cannot be checked (their store is down and budgets fail closed; Retry-After 1 s); 500:
    anything else."""
    if isinstance(exc, GatewayError):
        return Failure(exc.status, exc.message, exc.param, retry_after=exc.retry_after)
    if isinstance(exc, BudgetExceededError):  # a spending cap, not a bad request: 429
        return Failure(429, str(exc), "x-semroute-max-cost-usd" if exc.cap is None else None,
                       request_id=exc.request_id, retry_after=_seconds_until(exc.resets_at))
    if isinstance(exc, BudgetStoreUnavailableError):
        return Failure(503, str(exc), request_id=exc.request_id, retry_after=1.0)
    if isinstance(exc, UnknownStepError):
        return Failure(400, str(exc), "x-semroute-step")
    if isinstance(exc, QueryError | ValueError) and not isinstance(exc, ConfigError):
        return Failure(400, str(exc), "messages")
    if isinstance(exc, AllModelsFailedError):
        attempts = [attempt_json(a) for a in exc.attempts]
        overloaded = bool(exc.attempts) and all(a.status in OVERLOADED for a in exc.attempts)
        return Failure(503 if overloaded else 502, str(exc), None, attempts, exc.request_id)
    if isinstance(exc, ProviderError):
        attempts = [attempt_json(a) for a in exc.attempts]
        status = 400 if exc.scope is ErrorScope.REQUEST else 502
        return Failure(status, f"the model refused the request: {exc.message}", None,
                       attempts, exc.request_id)
    if isinstance(exc, NoRouteError):
        return Failure(500, str(exc))
    return Failure(500, f"internal error: {type(exc).__name__}")


def _seconds_until(iso: str | None) -> float | None:
    """Seconds from now until an ISO 8601 time (None: unknown or past)."""
    if iso is None:
        return None
    try:
        left = (datetime.fromisoformat(iso) - datetime.now(UTC)).total_seconds()
    except ValueError:
        return None
    return max(left, 1.0)
