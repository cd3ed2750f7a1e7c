"""Provider errors: retryable (worth another try or the next model) versus fatal, each
carrying provider, model and status, never the API key."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from semroute.errors import SemrouteError

PLACEHOLDER_KEY = "not-needed"



class ProviderError(SemrouteError):
    """A model call failed. Never carries the API key (messages are scrubbed)."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        provider: str,
        model: str,
        status: int | None,
        message: str,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.message = message
        self.retry_after = retry_after
        where = f"{provider} model {model!r}"
        code = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{where}{code}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the keyword-rich __init__
        args = (self.provider, self.model, self.status, self.message)
        return (type(self), args, {"retry_after": self.retry_after})

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, model={self.model!r}, "
            f"status={self.status!r}, message={self.message!r}, retry_after={self.retry_after!r})"
        )


class RetryableProviderError(ProviderError):
    """Worth retrying or failing over: 408/409/429, 5xx, timeouts, refused or reset connections."""

    retryable = True


class FatalProviderError(ProviderError):
    """Retrying the same request will not help: bad request, auth, not found, context too long."""


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


def _body_message(body: object) -> str | None:
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
