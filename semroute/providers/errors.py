"""The provider error taxonomy: which statuses are worth a retry, `Retry-After` parsing, key
scrubbing, and the SDK exception classes an adapter maps (the exceptions live in errors.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

PLACEHOLDER_KEY = "not-needed"



def is_retryable_status(status: int) -> bool:
    """The statuses both SDKs themselves would retry."""
    return status in (408, 409, 429) or status >= 500


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
