"""Routes that should move up or down a tier, from outcome evidence (`semroute suggest`).

Evidence per (route, model), each a value in [0, 1]: outcome records (gate, judge, feedback
and imported records that name a route), feedback scores on logged requests (unless the same
request already has a `feedback` record), and shadow verdicts against the reference model
(tie = as good as the reference = 1.0, worse = 0, so a verdict's value is min(1, 2 x score)).

The rule, with a Wilson 95% interval on the mean: a route whose current model has at least
`min_n` outcomes and whose interval lies wholly below `target` moves up a tier ("code review
fails there 40% -> upgrade"); a route whose next cheaper tier's model has at least `min_n`
outcomes on this route with the interval wholly at or above `target` moves down. Otherwise it
stays, and the summary says why (too few outcomes, within the target, already cheapest).

Tier order: `router.tiers` with each route's `metadata.tier`; without tiers, the routes'
first model keys ordered by catalogue price. A tier's model chain is the one most routes of
that tier use (else the tier's name when it is a catalogue key).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semroute.config import Route, RouteSet
    from semroute.outcomes import OutcomeStore

TARGET = 0.8
MIN_N = 20
Z = 1.96


@dataclass
class Evidence:
    """Outcome values of one model on one route."""

    route: str
    model: str
    values: list[float] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n if self.values else math.nan

    def interval(self, z: float = Z) -> tuple[float, float]:
        """Wilson score interval of the mean (values in [0, 1] treated as successes)."""
        if not self.values:
            return 0.0, 1.0
        n, p = self.n, self.mean
        centre = p + z * z / (2 * n)
        spread = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
        return max(0.0, (centre - spread) / (1 + z * z / n)), min(1.0, (centre + spread)
                                                                  / (1 + z * z / n))

    def describe(self) -> str:
        lo, hi = self.interval()
        src = ", ".join(f"{k} {v}" for k, v in sorted(self.sources.items()))
        return (f"'{self.model}' on '{self.route}': mean quality {self.mean:.2f} over "
                f"{self.n} outcomes ({src}), 95% interval [{lo:.2f}, {hi:.2f}]")

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval()
        return {"route": self.route, "model": self.model, "n": self.n,
                "mean": None if not self.values else round(self.mean, 4),
                "low": round(lo, 4), "high": round(hi, 4), "sources": dict(self.sources)}


@dataclass(frozen=True)
class TierMove:
    """A proposal to serve `route` from another tier, and the evidence behind it."""

    route: str
    file: Path
    direction: str  # "up" | "down"
    from_tier: str
    to_tier: str
    from_models: tuple[str, ...]
    to_models: tuple[str, ...]
    set_tier: bool  # metadata.tier changes too (router.tiers is set)
    why: str
    evidence: Evidence

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "file": str(self.file), "direction": self.direction,
                "from_tier": self.from_tier, "to_tier": self.to_tier,
                "from_models": list(self.from_models), "to_models": list(self.to_models),
                "why": self.why, "evidence": self.evidence.to_dict()}


def collect_evidence(store: OutcomeStore, since: float | None = None
                     ) -> dict[tuple[str, str], Evidence]:
    """Every outcome value per (route, model) the store holds since `since`."""
    ev: dict[tuple[str, str], Evidence] = {}

    def add(route: str | None, model: str | None, value: float, source: str) -> None:
        if route and model:
            e = ev.setdefault((route, model), Evidence(route, model))
            e.values.append(min(1.0, max(0.0, float(value))))
            e.sources[source] += 1

    recorded: set[str] = set()
    for r in store.records(since=since):
        if r.route is not None:
            add(r.route, r.model, r.score, r.source)
            if r.source == "feedback" and r.request_id:
                recorded.add(r.request_id)
    requests = {q.request_id: q for q in store.requests(since=since)}
    for f in store.feedback(since=since):
        q = requests.get(f.request_id)
        if f.score is not None and q is not None and f.request_id not in recorded:
            add(q.route, q.model, f.score, "feedback score")
    for s in store.shadow(since=since):
        add(s.route, s.model, min(1.0, 2.0 * s.score), "shadow")
    return ev


def tier_ladder(routes: RouteSet) -> tuple[list[str], dict[str, str], bool]:
    """(tiers weakest first, each route's tier, whether tiers come from `router.tiers`)."""
    tiers = routes.settings.tiers
    if tiers:
        of = {r.name: str(r.metadata["tier"]) for r in routes.routes if "tier" in r.metadata}
        return list(tiers), of, True

    def price(key: str) -> float:
        m = routes.models.get(key)
        return (m.input_price + m.output_price) if m is not None else math.inf

    firsts = sorted({r.models[0] for r in routes.routes}, key=lambda k: (price(k), k))
    return firsts, {r.name: r.models[0] for r in routes.routes}, False


def tier_chain(routes: RouteSet, tier_of: dict[str, str], tier: str) -> tuple[str, ...] | None:
    """The model chain most routes of `tier` use (the tier's name if it is a catalogue key)."""
    chains = Counter(r.models for r in routes.routes if tier_of.get(r.name) == tier)
    if chains:
        return chains.most_common(1)[0][0]
    return (tier,) if tier in routes.models else None


def _chooses_per_query(route: Route, routes: RouteSet) -> str | None:
    if route.cascade is not None:
        return "a cascade route climbs its own steps"
    if route.parallel is not None:
        return "a parallel route asks several models"
    if routes.ladder_of(route) is not None:
        return "its ladder picks a model per query"
    return None


def propose_tier_moves(routes: RouteSet, evidence: dict[tuple[str, str], Evidence], *,
                       target: float = TARGET, min_n: int = MIN_N,
                       only: Sequence[str] | None = None) -> tuple[list[TierMove], list[str]]:
    """Moves up or down a tier with their evidence, and a note per route that stays."""
    ladder, tier_of, named = tier_ladder(routes)
    moves: list[TierMove] = []
    notes: list[str] = []
    for route in routes.routes:
        if only is not None and route.name not in only:
            continue
        skip = _chooses_per_query(route, routes)
        tier = tier_of.get(route.name)
        current = evidence.get((route.name, route.models[0]), Evidence(route.name,
                                                                       route.models[0]))
        if skip or tier not in ladder:
            if current.n:
                notes.append(f"{route.name}: stays ({skip or 'no tier'}); "
                             f"{current.describe()}")
            continue
        pos = ladder.index(tier)
        lo, hi = current.interval()
        if current.n >= min_n and hi < target:
            if pos + 1 >= len(ladder):
                notes.append(f"{route.name}: fails too often on the top tier '{tier}' "
                             f"({current.describe()}); no stronger tier to move to")
                continue
            up = ladder[pos + 1]
            chain = tier_chain(routes, tier_of, up)
            if chain is None:
                notes.append(f"{route.name}: should move up to '{up}', but no route or "
                             f"catalogue key names that tier's models")
                continue
            moves.append(TierMove(route.name, route.file, "up", tier, up, route.models, chain,
                                  named, f"moves up: {current.describe()} is below the target "
                                         f"{target:g}", current))
            continue
        down = ladder[pos - 1] if pos > 0 else None
        chain = tier_chain(routes, tier_of, down) if down is not None else None
        cheaper = evidence.get((route.name, chain[0])) if chain else None
        if down is not None and chain and cheaper is not None and cheaper.n >= min_n \
                and cheaper.interval()[0] >= target:
            moves.append(TierMove(route.name, route.file, "down", tier, down, route.models,
                                  chain, named, f"moves down: {cheaper.describe()} clears the "
                                  f"target {target:g}",
                                  cheaper))
            continue
        if current.n == 0:
            continue
        if current.n < min_n:
            notes.append(f"{route.name}: stays: only {current.n} outcomes of "
                         f"'{route.models[0]}' (a move needs {min_n})")
        elif pos == 0 and lo >= target:
            notes.append(f"{route.name}: stays cheap: {current.describe()}")
        else:
            notes.append(f"{route.name}: stays on '{tier}': {current.describe()}")
    return moves, notes
