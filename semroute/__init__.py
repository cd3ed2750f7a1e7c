"""semroute: send each LLM request to the right model.

    import semroute
    semroute.build_index("routes", "indexes/default")
    router = semroute.load_router("routes", "indexes/default")
    decision = router.route("how do I reverse a linked list")
    response = semroute.dispatch("how do I reverse a linked list", router=router)

Names are imported on first use, so `import semroute` (and the CLI) stays fast. No public
name is also the name of a submodule, so importing a submodule never replaces one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from semroute._version import __version__

_EXPORTS = {
    "RouteSet": "semroute.config",
    "load_routes": "semroute.config",
    "BuildReport": "semroute.index",
    "build_index": "semroute.index",
    "Candidate": "semroute.routing",
    "ClassifierCall": "semroute.routing",
    "Decision": "semroute.routing",
    "NegativeHit": "semroute.routing",
    "Neighbour": "semroute.routing",
    "TurnWeight": "semroute.routing",
    "Router": "semroute.routing",
    "RuleHit": "semroute.routing",
    "load_router": "semroute.routing",
    "Attempt": "semroute.dispatching",
    "Dispatcher": "semroute.dispatching",
    "Response": "semroute.dispatching",
    "ParallelOutcome": "semroute.dispatching",
    "CascadeOutcome": "semroute.dispatching",
    "adispatch": "semroute.dispatching",
    "dispatch": "semroute.dispatching",
    "feedback": "semroute.dispatching",
    "afeedback": "semroute.dispatching",
    "AllModelsFailedError": "semroute.errors",
    "BudgetExceededError": "semroute.errors",
    "UnknownStepError": "semroute.errors",
    "StoreUnavailableError": "semroute.errors",
    "BudgetStoreUnavailableError": "semroute.errors",
    "CalibrationWarning": "semroute.errors",
    "ConfigError": "semroute.errors",
    "CorruptIndexError": "semroute.errors",
    "DataError": "semroute.errors",
    "EncoderError": "semroute.errors",
    "FatalProviderError": "semroute.errors",
    "GatewayError": "semroute.errors",
    "IndexNotFoundError": "semroute.errors",
    "InfeasibleTargetError": "semroute.errors",
    "NoRouteError": "semroute.errors",
    "OnnxBackendError": "semroute.errors",
    "OutcomeDataError": "semroute.errors",
    "OutcomeStoreError": "semroute.errors",
    "UnknownRequestError": "semroute.errors",
    "FeedbackError": "semroute.errors",
    "ProviderError": "semroute.errors",
    "QueryError": "semroute.errors",
    "RetryableProviderError": "semroute.errors",
    "SemrouteError": "semroute.errors",
    "StaleIndexError": "semroute.errors",
    "StreamInterruptedError": "semroute.errors",
}

__all__ = [
    "AllModelsFailedError",
    "Attempt",
    "BudgetExceededError",
    "BudgetStoreUnavailableError",
    "BuildReport",
    "CalibrationWarning",
    "Candidate",
    "CascadeOutcome",
    "ClassifierCall",
    "ConfigError",
    "CorruptIndexError",
    "DataError",
    "Decision",
    "Dispatcher",
    "EncoderError",
    "FatalProviderError",
    "FeedbackError",
    "GatewayError",
    "IndexNotFoundError",
    "InfeasibleTargetError",
    "NegativeHit",
    "Neighbour",
    "NoRouteError",
    "OnnxBackendError",
    "OutcomeDataError",
    "OutcomeStoreError",
    "ParallelOutcome",
    "ProviderError",
    "QueryError",
    "Response",
    "RetryableProviderError",
    "RouteSet",
    "Router",
    "RuleHit",
    "SemrouteError",
    "StaleIndexError",
    "StoreUnavailableError",
    "StreamInterruptedError",
    "TurnWeight",
    "UnknownRequestError",
    "UnknownStepError",
    "__version__",
    "adispatch",
    "afeedback",
    "build_index",
    "dispatch",
    "feedback",
    "load_router",
    "load_routes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'semroute' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from semroute.config import RouteSet, load_routes
    from semroute.dispatching import (
        Attempt,
        CascadeOutcome,
        Dispatcher,
        ParallelOutcome,
        Response,
        adispatch,
        afeedback,
        dispatch,
        feedback,
    )
    from semroute.errors import (
        AllModelsFailedError,
        BudgetExceededError,
        BudgetStoreUnavailableError,
        CalibrationWarning,
        ConfigError,
        CorruptIndexError,
        DataError,
        EncoderError,
        FatalProviderError,
        FeedbackError,
        GatewayError,
        IndexNotFoundError,
        InfeasibleTargetError,
        NoRouteError,
        OnnxBackendError,
        OutcomeDataError,
        OutcomeStoreError,
        ProviderError,
        QueryError,
        RetryableProviderError,
        SemrouteError,
        StaleIndexError,
        StoreUnavailableError,
        StreamInterruptedError,
        UnknownRequestError,
        UnknownStepError,
    )
    from semroute.index import BuildReport, build_index
    from semroute.routing import (
        Candidate,
        ClassifierCall,
        Decision,
        NegativeHit,
        Neighbour,
        Router,
        RuleHit,
        TurnWeight,
        load_router,
    )
