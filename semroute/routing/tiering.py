"""Outcome-learned tiers at decision time: after the route is decided, its ladder (if any)
predicts each model's quality from the nearest outcome records and picks the cheapest model
predicted to clear the target (README "Outcome-learned tiers").

The query's vector comes from the matcher's query cache: the index just encoded it, so this
costs one kNN search over the outcome rows and a few array operations (a rule decision, which
never encoded, encodes here once).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from semroute.config import STEP_PREFIX, LadderSpec, Route, RouteSet
from semroute.outcomes import TierModel
from semroute.routing.decision import Decision, TierChoice, TierNeighbour

if TYPE_CHECKING:
    from semroute.encoders import QueryCache


def ladder_target(routes: RouteSet, route: Route, ladder: LadderSpec,
                  tiers: TierModel | None) -> tuple[float, str]:
    """The target that applies: fitted in `tiers.json` for this route (else for every route)
    with this ladder's models, else the route file's (or `router.ladder`'s)."""
    fitted = tiers.fitted.for_route(route.name, list(ladder.models)) \
        if tiers is not None and tiers.fitted is not None else None
    if fitted is not None:
        value, key = fitted
        where = f"route '{key}'" if key == route.name else "every route"
        return value.target, f"tiers.json ({where}, fitted for {value.goal} {value.wanted:g})"
    own = route.ladder is not None
    return ladder.target, "route file" if own else "router.ladder"


def choose_tier(routes: RouteSet, route: Route, ladder: LadderSpec, tiers: TierModel | None,
                cache: QueryCache, query: str) -> TierChoice:
    """The ladder's choice for one query (module docstring)."""
    static = route.models[0]
    target, source = ladder_target(routes, route, ladder, tiers)
    models = tuple(ladder.models)
    if tiers is None or not tiers.active:
        why = tiers.status if tiers is not None else "no outcomes store loaded"
        return TierChoice(models, target, source, ladder.min_support, static, False,
                          f"tiers inactive: {why}; the static model '{static}' serves")
    vectors, _ = cache.encode([query])
    prediction = tiers.predict(vectors[0], query)
    cols = [tiers.models.index(k) for k in models]
    quality = {k: round(prediction.quality[c], 6) for k, c in zip(models, cols, strict=True)}
    support = {k: round(prediction.support[c], 6) for k, c in zip(models, cols, strict=True)}
    near = tuple(TierNeighbour(h, s) for h, s in tiers.neighbours(prediction))
    nearest = near[0].similarity if near else -1.0
    if nearest < ladder.min_similarity:
        return TierChoice(models, target, source, ladder.min_support, static, False,
                          f"no outcome text is near this query (nearest similarity "
                          f"{nearest:.3f} < min_similarity {ladder.min_similarity:g}); the "
                          f"static model '{static}' serves", quality, support, near)
    trusted = [k for k in models if support[k] >= ladder.min_support]
    if not trusted:
        return TierChoice(models, target, source, ladder.min_support, static, False,
                          f"too few neighbours with outcomes (support "
                          f"{max(support.values()):g} < min_support {ladder.min_support:g}); "
                          f"the static model '{static}' serves", quality, support, near)
    for k in trusted:
        if quality[k] >= target:
            cheaper = models[:models.index(k)]
            why = f"'{k}' is predicted {quality[k]:.3f} >= target {target:g}"
            if cheaper:
                why += "; cheaper " + ", ".join(
                    f"'{m}' {quality[m]:.3f}" + ("" if m in trusted else " (too few "
                                                 "neighbours)") for m in cheaper)
            return TierChoice(models, target, source, ladder.min_support, k, True, why,
                              quality, support, near)
    strongest = models[-1]
    return TierChoice(models, target, source, ladder.min_support, strongest, True,
                      f"no model is predicted to reach target {target:g} (best "
                      f"{max(quality[k] for k in trusted):.3f}); the strongest, "
                      f"'{strongest}', serves", quality, support, near)


def with_tier(decision: Decision, routes: RouteSet, tiers: TierModel | None,
              cache: QueryCache) -> Decision:
    """`decision` with its route's ladder choice in `tier` (unchanged without a ladder)."""
    if decision.route is None or decision.route.startswith(STEP_PREFIX):
        return decision
    route = routes.route(decision.route)
    ladder = routes.ladder_of(route)
    if ladder is None:
        return decision
    t0 = time.perf_counter()
    choice = choose_tier(routes, route, ladder, tiers, cache, decision.query)
    timings = dict(decision.timings_ms, tiers=(time.perf_counter() - t0) * 1e3)
    return replace(decision, tier=choice, timings_ms=timings)
