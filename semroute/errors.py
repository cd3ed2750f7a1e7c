"""Semroute's exceptions: one root, and a type per thing a user has to fix."""

from __future__ import annotations

from enum import StrEnum
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


class OutcomeDataError(DataError):
    """An outcome file (long, wide, routellm, mt_bench or routerarena form) cannot be read;
    `problems` lists up to 20, each naming file, line and column and what to fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid outcome data ({count}):\n{listed}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,), dict(self.__dict__))


class OutcomeStoreError(SemrouteError):
    """The outcomes store cannot be opened or written: not a store, another schema version,
    a record with an invalid field; the message names the file or the field."""


class UnknownRequestError(OutcomeStoreError, KeyError):
    """Feedback named a request id the outcomes store has no logged request for (never
    logged, logged elsewhere, or `router.outcomes.log_requests` is off)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FeedbackError(SemrouteError, ValueError):
    """Feedback cannot be taken: no score, label or note, a score outside [0, 1], or a label
    that names no route of the route set (the message names the field and the routes)."""


class InfeasibleTargetError(SemrouteError):
    """No thresholds let the index decide anything at the requested misroute rate."""


class NoRouteError(SemrouteError):
    """Nothing decided and no default route is configured."""


class ErrorScope(StrEnum):
    """How far a failed model call reaches: what dispatch does next depends only on this."""

    RETRY = "retry"
    """Transient (408/409/429, 5xx, timeouts, refused or reset connections): retry the same
    model with backoff, then the next one."""
    NEXT_MODEL = "next_model"
    """This model cannot answer (missing key variable, 401/403, 404): one attempt, then the
    next model, which may be another provider; the model is cooled down."""
    TOO_LONG = "too_long"
    """The request does not fit this model (context too long, 413): one attempt, then the next
    model, which may have a bigger context; the model is not cooled down (it is healthy)."""
    REQUEST = "request"
    """The request itself is invalid (400): no model will take it, so it is raised at once."""


class ProviderError(SemrouteError):
    """A model call failed. Never carries the API key (messages are scrubbed).

    `scope` says how far the failure reaches (see `ErrorScope`); `attempts` and `request_id`
    are those of the dispatch that raised it (empty / None when raised by a provider directly).
    """

    default_scope: ClassVar[ErrorScope] = ErrorScope.NEXT_MODEL

    def __init__(
        self,
        provider: str,
        model: str,
        status: int | None,
        message: str,
        *,
        retry_after: float | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.scope = ErrorScope(scope) if scope is not None else self.default_scope
        self.attempts: list[Attempt] = []
        self.request_id: str | None = None  # the dispatch's, as in its trace record
        where = f"{provider} model {model!r}"
        code = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{where}{code}: {message}")

    @property
    def retryable(self) -> bool:
        """Whether retrying the same model may help (scope RETRY)."""
        return self.scope is ErrorScope.RETRY

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the keyword-rich __init__
        args = (self.provider, self.model, self.status, self.message)
        return (type(self), args, dict(self.__dict__))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, model={self.model!r}, "
            f"status={self.status!r}, message={self.message!r}, retry_after={self.retry_after!r}, "
            f"scope={self.scope.value!r})"
        )


class RetryableProviderError(ProviderError):
    """Worth retrying or failing over: 408/409/429, 5xx, timeouts, refused or reset connections."""

    default_scope = ErrorScope.RETRY


class FatalProviderError(ProviderError):
    """Retrying the same model will not help: its `scope` says whether the next model may
    (NEXT_MODEL: auth, not found, missing key; TOO_LONG: context too long) or none will
    (REQUEST: an invalid request)."""

    default_scope = ErrorScope.REQUEST


class StreamInterruptedError(ProviderError):
    """A streamed answer broke after some of its text was delivered, so it cannot be failed
    over; `partial_text` is what arrived, `scope` that of the underlying failure."""

    def __init__(
        self,
        provider: str,
        model: str,
        status: int | None,
        message: str,
        *,
        partial_text: str = "",
        retry_after: float | None = None,
        scope: ErrorScope | None = None,
    ) -> None:
        super().__init__(provider, model, status, message, retry_after=retry_after, scope=scope)
        self.partial_text = partial_text


class AllModelsFailedError(SemrouteError):
    """Every model of the route's chain failed; `attempts` lists each try and its error."""

    def __init__(self, route: str, attempts: list[Attempt]) -> None:
        self.route = route
        self.attempts = attempts
        self.request_id: str | None = None  # the dispatch's, as in its trace record
        lines = "\n".join(f"  - {a.model_key} ({a.provider}:{a.model}) try {a.try_number}: "
                          f"{a.error}" for a in attempts)
        super().__init__(f"every model of route '{route}' failed:\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.route, self.attempts), dict(self.__dict__))


class GatewayError(SemrouteError):
    """`semroute serve` refused a request before any model was called: a bad body (400, naming
    the field in `param`), a bad client key (401), an unknown model (404), a body or message
    list too large (413), a rate limit (429, `retry_after` seconds), not ready (503)."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 retry_after: float | None = None) -> None:
        self.status = status
        self.message = message
        self.param = param
        self.retry_after = retry_after
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.message), dict(self.__dict__))


class CalibrationWarning(UserWarning):
    """The calibration was fitted on an earlier build of the index."""


class BudgetExceededError(SemrouteError):
    """A request does not fit its budget: its `max_cost_usd`, or a period cap (`cap`) whose
    policy refuses or whose downgrade still does not fit. `estimate_usd` is the cheapest
    estimate considered, `resets_at` (ISO 8601, UTC) when the cap's period starts again."""

    def __init__(self, message: str, *, request_id: str | None = None,
                 estimate_usd: float = 0.0, max_cost_usd: float | None = None,
                 cap: str | None = None, limit_usd: float | None = None,
                 spent_usd: float | None = None, resets_at: str | None = None) -> None:
        self.request_id = request_id
        self.estimate_usd = estimate_usd
        self.max_cost_usd = max_cost_usd
        self.cap = cap
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.resets_at = resets_at
        self.attempts: list[Attempt] = []  # none: a refused request calls no model
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0],), dict(self.__dict__))


class UnknownStepError(SemrouteError, ValueError):
    """`dispatch(..., step=...)` named a step that models.yaml `steps:` does not map."""


class StoreUnavailableError(SemrouteError):
    """A shared-state store (Redis) could not be reached or did not answer in time. `store`
    names it (the URL without a password); the `FallbackStore` and the gateway's shared rate
    limiter catch it and carry on in-process."""

    def __init__(self, message: str, *, store: str = "") -> None:
        self.store = store
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0],), dict(self.__dict__))


class BudgetStoreUnavailableError(SemrouteError):
    """A request with budget caps was refused because the budget store is unreachable and
    `router.shared_state.budgets_on_outage` is `closed` (the gateway answers 503)."""

    def __init__(self, message: str, *, request_id: str | None = None,
                 store: str = "") -> None:
        self.request_id = request_id
        self.store = store
        self.attempts: list[Attempt] = []  # none: a refused request calls no model
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0],), dict(self.__dict__))
