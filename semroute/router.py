"""`Router`: the loaded route set, index and encoder, answering `route(query) -> Decision`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from semroute.calibration import Calibration, load_calibration
from semroute.config import RouteSet, load_routes
from semroute.decision import Decision
from semroute.index import RouteIndex
from semroute.matcher import Matcher, Thresholds


def resolve_thresholds(routes: RouteSet, calibration: Calibration | None) -> Thresholds:
    """Route file > calibrated per-route > calibrated router-wide > models.yaml."""
    s = routes.settings
    score, margin, per_route = s.score_threshold, s.margin_threshold, {}
    if calibration is not None:
        score, margin = calibration.score_threshold, calibration.margin_threshold
        per_route = {k: v for k, v in calibration.per_route.items() if k in routes.names}
    per_route.update({r.name: r.threshold for r in routes.routes if r.threshold is not None})
    return Thresholds(score, margin, per_route)


class Router:
    """Decides where queries go. Build one with `Router.load()` (or `semroute.load_router`)."""

    def __init__(self, routes: RouteSet, index: RouteIndex, matcher: Matcher) -> None:
        self.routes = routes
        self.index = index
        self.matcher = matcher

    @classmethod
    def load(cls, routes: str | Path | RouteSet = "routes",
             index: str | Path = "indexes/default", *, profile: str | None = None,
             verify: bool = True, threads: int = 1, cache_size: int = 4096) -> Router:
        """Read the route files and the index built from them, checking that they agree.

        Raises `ConfigError` for a bad route file, `StaleIndexError` when the index was built
        from other files or another encoder, `CorruptIndexError`/`IndexNotFoundError` when it
        cannot be read. `threads` is the encoder's intra-op thread count.
        """
        route_set = routes if isinstance(routes, RouteSet) else load_routes(routes,
                                                                            profile=profile)
        idx = RouteIndex.load(index, route_set, verify=verify)
        import faiss

        faiss.omp_set_num_threads(1)
        encoder = idx.load_encoder(threads=threads)
        thresholds = resolve_thresholds(route_set, load_calibration(index))
        return cls(route_set, idx, Matcher(route_set, idx, encoder, thresholds=thresholds,
                                           cache_size=cache_size))

    def route(self, query: str, *, use_classifier: bool = True) -> Decision:
        """Where one query goes, and why."""
        return self.route_batch([query], use_classifier=use_classifier)[0]

    def route_batch(self, queries: Sequence[str], *,
                    use_classifier: bool = True) -> list[Decision]:
        """Decisions for many queries at once (one encoder call, one search).

        With `use_classifier` (and a classifier configured), queries the index leaves
        undecided go to the fallback classifier; otherwise they stay "undecided".
        """
        return self.matcher.match_batch(queries)


def load_router(routes: str | Path | RouteSet = "routes", index: str | Path = "indexes/default",
                **kwargs: object) -> Router:
    """Shorthand for `Router.load(...)`."""
    return Router.load(routes, index, **kwargs)  # type: ignore[arg-type]
