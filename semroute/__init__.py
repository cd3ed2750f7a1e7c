"""semroute: send each LLM request to the right model.

    import semroute
    semroute.build_index("routes", "indexes/default")
    router = semroute.load_router("routes", "indexes/default")
    decision = router.route("how do I reverse a linked list")
    response = semroute.dispatch("how do I reverse a linked list", router=router)

Names are imported on first use, so `import semroute` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from semroute._version import __version__

_EXPORTS = {
    "RouteSet": "semroute.config",
    "load_routes": "semroute.config",
    "Candidate": "semroute.decision",
    "Decision": "semroute.decision",
    "Neighbour": "semroute.decision",
    "ConfigError": "semroute.errors",
    "CorruptIndexError": "semroute.errors",
    "IndexNotFoundError": "semroute.errors",
    "QueryError": "semroute.errors",
    "SemrouteError": "semroute.errors",
    "StaleIndexError": "semroute.errors",
    "BuildReport": "semroute.index",
    "build_index": "semroute.index",
    "Router": "semroute.router",
    "load_router": "semroute.router",
    "Dispatcher": "semroute.dispatch",
    "Response": "semroute.dispatch",
    "dispatch": "semroute.dispatch",
    "adispatch": "semroute.dispatch",
}

__all__ = [
    "BuildReport",
    "Candidate",
    "ConfigError",
    "CorruptIndexError",
    "Decision",
    "Dispatcher",
    "IndexNotFoundError",
    "Neighbour",
    "QueryError",
    "Response",
    "RouteSet",
    "Router",
    "SemrouteError",
    "StaleIndexError",
    "__version__",
    "adispatch",
    "build_index",
    "dispatch",
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
    from semroute.decision import Candidate, Decision, Neighbour
    from semroute.dispatch import Dispatcher, Response, adispatch, dispatch
    from semroute.errors import (
        ConfigError,
        CorruptIndexError,
        IndexNotFoundError,
        QueryError,
        SemrouteError,
        StaleIndexError,
    )
    from semroute.index import BuildReport, build_index
    from semroute.router import Router, load_router
