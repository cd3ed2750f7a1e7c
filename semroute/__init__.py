"""semroute: send each LLM request to the right model.

    import semroute
    semroute.build_index("routes", "indexes/default")
    router = semroute.load_router("routes", "indexes/default")
    decision = router.route("how do I reverse a linked list")
"""

from semroute._version import __version__
from semroute.config import RouteSet, load_routes
from semroute.decision import Candidate, Decision, Neighbour
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

__all__ = [
    "BuildReport",
    "Candidate",
    "ConfigError",
    "CorruptIndexError",
    "Decision",
    "IndexNotFoundError",
    "Neighbour",
    "QueryError",
    "RouteSet",
    "Router",
    "SemrouteError",
    "StaleIndexError",
    "__version__",
    "build_index",
    "load_router",
    "load_routes",
]
