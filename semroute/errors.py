"""Semroute's exceptions: one root, and a type per thing a user has to fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from semroute.dispatching import Attempt


class SemrouteError(Exception):
    """Root of semroute's errors."""


class ConfigError(SemrouteError):
    """A route file or the model catalogue is invalid; the message names file, route and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid route set ({count}):\n{listed}")


class IndexNotFoundError(SemrouteError):
    """No index at the given location."""


class StaleIndexError(SemrouteError):
    """The index was built from other route files, settings or another encoder."""


class CorruptIndexError(SemrouteError):
    """An index file is missing, truncated or does not match its manifest."""


class QueryError(SemrouteError, ValueError):
    """The query cannot be routed (e.g. empty after normalisation)."""


class OnnxBackendError(SemrouteError):
    """An ONNX export of the encoder cannot be made, or a saved one cannot be loaded."""


class EncoderError(SemrouteError):
    """The encoder model cannot be found or loaded."""


class DataError(SemrouteError):
    """A labelled data file cannot be read; the message names the file and line."""


class InfeasibleTargetError(SemrouteError):
    """No thresholds let the index decide anything at the requested misroute rate."""


class NoRouteError(SemrouteError):
    """Nothing decided and no default route is configured."""


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


class AllModelsFailedError(SemrouteError):
    """Every model of the route's chain failed; `attempts` lists each try and its error."""

    def __init__(self, route: str, attempts: list[Attempt]) -> None:
        self.route = route
        self.attempts = attempts
        lines = "\n".join(f"  - {a.model_key} ({a.provider}:{a.model}) try {a.try_number}: "
                          f"{a.error}" for a in attempts)
        super().__init__(f"every model of route '{route}' failed:\n{lines}")


class CalibrationWarning(UserWarning):
    """The calibration was fitted on an earlier build of the index."""
