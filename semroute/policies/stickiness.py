"""Stickiness: a conversation keeps its tier (`never_downgrade`) or its model (`same_model`),
and a user keeps their model while their tier does not rise (`user_ttl_seconds`).

`place` runs between the router's Decision and the model call and says which route and model
chain serve the turn (and, in `sticky`, why when that differs from the Decision); `record`
runs once a model has answered. State lives in a `Store` under hashed ids only. Failover is
untouched: a sticky model only goes first in the chain, and a cooling one is still tried last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from semroute.config import Route, RouteSet, StickinessSettings
from semroute.errors import ConfigError
from semroute.state import Json, Store

KEY_PREFIX = "semroute:sticky"
CAS_TRIES = 64  # compare-and-set retries under contention before giving up on one write


@dataclass(frozen=True)
class Placement:
    """Where one turn goes: the route and model chain that serve it, the router's own route
    (`decided`), hashed ids, and `sticky` (JSON) when stickiness changed the choice."""

    route: Route
    chain: tuple[str, ...]
    decided: Route
    conversation: str | None = None
    user: str | None = None
    sticky: dict[str, Any] | None = None
    routes: RouteSet | None = field(default=None, repr=False, compare=False)


class Stickiness:
    """The stickiness policy of one route set; thread-safe (all state is in the store)."""

    def __init__(self, settings: StickinessSettings, tiers: list[str] | None,
                 store: Store) -> None:
        needs = "mode 'never_downgrade'" if settings.mode == "never_downgrade" else \
            "user_ttl_seconds" if settings.user_ttl_seconds is not None else None
        if needs and not tiers:
            raise ConfigError([f"field 'router.tiers': required by router.stickiness.{needs}"])
        self.settings = settings
        self.tiers = list(tiers or ())
        self.store = store

    @property
    def active(self) -> bool:
        """Whether any stickiness is configured (off: `place` changes nothing)."""
        return self.settings.mode != "off" or self.settings.user_ttl_seconds is not None

    def rank(self, route: Route) -> int:
        """The route's tier position (weakest 0); -1 when tiers are not configured."""
        tier = route.metadata.get("tier")
        return self.tiers.index(tier) if tier in self.tiers else -1

    def place(self, routes: RouteSet, decided: Route, conversation: str | None,
              user: str | None) -> Placement:
        """The route and model chain for a turn the router sent to `decided`."""
        s = self.settings
        route, chain = decided, tuple(decided.models)
        reasons: list[str] = []
        mode: str | None = None
        model_pinned = False
        rec = self._get(f"{KEY_PREFIX}:conv:{conversation}") if conversation else None
        if rec is not None and s.mode == "never_downgrade":
            held = _route(routes, rec.get("route"))
            if held is not None and self.rank(held) > self.rank(decided):
                route, chain, mode = held, tuple(held.models), s.mode
                reasons.append(f"the conversation reached tier '{held.metadata['tier']}' "
                               f"(route '{held.name}') within {s.ttl_seconds:g}s; tier "
                               f"'{decided.metadata.get('tier')}' would be a downgrade")
        elif rec is not None and s.mode == "same_model":
            model = rec.get("model")
            if isinstance(model, str) and model in routes.models:
                model_pinned = True
                if model != chain[0]:
                    chain, mode = _first(model, chain), s.mode
                    reasons.append(f"the conversation keeps model '{model}', which answered "
                                   f"it before (within {s.ttl_seconds:g}s)")
        if user and s.user_ttl_seconds is not None and not model_pinned:
            urec = self._get(f"{KEY_PREFIX}:user:{user}")
            model = urec.get("model") if urec else None
            tier = urec.get("tier") if urec else None
            if isinstance(model, str) and model in routes.models and tier in self.tiers \
                    and self.tiers.index(tier) >= self.rank(route) and model != chain[0]:
                chain, mode = _first(model, chain), mode or "user"
                reasons.append(f"the user keeps model '{model}' (tier '{tier}') within "
                               f"{s.user_ttl_seconds:g}s; this turn's tier does not rise")
        sticky = None if mode is None else {
            "mode": mode, "conversation_id": conversation, "user_id": user,
            "from_route": decided.name, "to_route": route.name,
            "from_model": decided.models[0], "to_model": chain[0],
            "reason": "; ".join(reasons)}
        return Placement(route, chain, decided, conversation, user, sticky, routes)

    def record(self, placement: Placement, model_key: str) -> None:
        """Remember what served the turn, once `model_key` has answered it."""
        s, p = self.settings, placement
        if p.conversation and s.mode == "never_downgrade":
            value: dict[str, Json] = {"route": p.decided.name}
            self._raise_to(f"{KEY_PREFIX}:conv:{p.conversation}", value, self.rank(p.decided),
                           lambda cur: self._rank_of(p, cur.get("route")), s.ttl_seconds)
        elif p.conversation and s.mode == "same_model":
            self.store.set(f"{KEY_PREFIX}:conv:{p.conversation}",
                           {"model": model_key, "route": p.route.name}, s.ttl_seconds)
        if p.user and s.user_ttl_seconds is not None:
            key, rank = f"{KEY_PREFIX}:user:{p.user}", self.rank(p.route)
            for _ in range(CAS_TRIES):
                cur = self._get(key)
                tier = cur.get("tier") if cur else None
                held = self.tiers.index(tier) if tier in self.tiers else -1
                if cur is not None and held > rank and cur.get("model") == model_key:
                    return  # a turn below the user's tier: kept, not refreshed
                new: dict[str, Json] = {"model": model_key,
                                        "tier": self.tiers[max(held, rank)]}
                if self.store.compare_and_set(key, cur, new, s.user_ttl_seconds):
                    return

    def _rank_of(self, p: Placement, name: Json) -> int:
        r = _route(p.routes, name) if p.routes is not None else None
        return -1 if r is None else self.rank(r)

    def _raise_to(self, key: str, value: dict[str, Json], rank: int,
                  rank_of: Callable[[dict[str, Json]], int], ttl: float) -> None:
        """Max-update: store `value` unless the key holds a higher rank (kept, not refreshed)."""
        for _ in range(CAS_TRIES):
            cur = self._get(key)
            if cur is not None and rank_of(cur) > rank:
                return
            if self.store.compare_and_set(key, cur, value, ttl):
                return

    def _get(self, key: str) -> dict[str, Json] | None:
        value = self.store.get(key)
        return value if isinstance(value, dict) else None


def _route(routes: RouteSet, name: Json) -> Route | None:
    if not isinstance(name, str):
        return None
    try:
        return routes.route(name)
    except KeyError:
        return None


def _first(model: str, chain: tuple[str, ...]) -> tuple[str, ...]:
    return (model, *(k for k in chain if k != model))
