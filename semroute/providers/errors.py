"""The provider error taxonomy: how far each failure reaches (`ErrorScope`), `Retry-After`
parsing, key scrubbing, and the SDK exception classes an adapter maps (the exceptions live in
errors.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from semroute.errors import ErrorScope

PLACEHOLDER_KEY = "not-needed"

# How OpenAI, Anthropic, llama.cpp and vLLM word "the prompt does not fit this model".
CONTEXT_TOO_LONG = re.compile(
    r"context[ _-]?(length|size|window|limit)|prompt is too long|too many (input )?tokens"
    r"|maximum context|exceeds? the (available )?context",
    re.IGNORECASE,
)

# Error types in JSON error bodies, for errors that arrive without a meaningful HTTP status
# (an `error` event inside a streamed 200 response). Anthropic's documented type -> status.
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def is_retryable_status(status: int) -> bool:
    """The statuses both SDKs themselves would retry."""
    return status in (408, 409, 429) or status >= 500


def is_transport_error(exc: BaseException) -> bool:
    """An HTTP transport failure the SDK let through unwrapped (a connection dropped while a
    stream was being read): the SDKs' `httpx`/`httpx2` TransportError family."""
    return any(
        cls.__name__ == "TransportError" and cls.__module__.split(".")[0] in ("httpx", "httpx2")
        for cls in type(exc).__mro__
    )


def is_dropped_connection(exc: BaseException) -> bool:
    """True for an SDK timeout caused by aiohttp failing to connect or losing the connection
    (not by a timeout): openai's aiohttp transport maps every `ClientConnectionError`,
    connection refused included, to httpx's ConnectTimeout."""
    cause = exc.__cause__
    while cause is not None:
        if type(cause).__module__.split(".")[0] == "aiohttp":
            return not isinstance(cause, TimeoutError)
        cause = cause.__cause__
    return False


def scope_for(status: int | None, text: str) -> ErrorScope:
    """How far a failure reaches, from its HTTP status (None: transport) and error text.

    400/422 mean the request is malformed, for any model, unless they say the prompt is too
    long for this model (as 413 does); every other non-retryable status is about this model
    (its key, its permissions, its name, its account), so another model may answer.
    """
    if status is None or is_retryable_status(status):
        return ErrorScope.RETRY
    if status == 413 or (status in (400, 422) and CONTEXT_TOO_LONG.search(text)):
        return ErrorScope.TOO_LONG
    if status in (400, 422):
        return ErrorScope.REQUEST
    return ErrorScope.NEXT_MODEL


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def scrub(text: str, secret: str | None) -> str:
    """Remove a secret from text (exact occurrences)."""
    if secret and secret != PLACEHOLDER_KEY and len(secret) >= 4:
        return text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class SdkErrors:
    """The exception classes of one SDK that the shared error mapping needs."""

    status: type[Exception]
    timeout: type[Exception]
    connection: type[Exception]
    base: type[Exception]


def body_error(body: object) -> Mapping[str, object]:
    """The error object of an OpenAI-style (`{"error": {...}}`) or bare error body."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        return inner if isinstance(inner, Mapping) else body
    return {}


def body_status(body: object) -> int | None:
    """The HTTP status an error body stands for: its numeric `code`, else its `type`."""
    error = body_error(body)
    code = error.get("code")
    if isinstance(code, int | str) and str(code).isdigit() and 400 <= int(code) <= 599:
        return int(code)
    kind = error.get("type")
    return ERROR_TYPE_STATUS.get(kind) if isinstance(kind, str) else None


def body_codes(body: object) -> str:
    """The error's `code` and `type` words (e.g. "context_length_exceeded"), for matching."""
    error = body_error(body)
    return " ".join(str(error[k]) for k in ("code", "type") if isinstance(error.get(k), str))


def body_message(body: object) -> str | None:
    """The human message of an OpenAI-style or Anthropic-style JSON error body."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return None
