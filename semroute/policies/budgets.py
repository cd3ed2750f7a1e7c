"""Budgets: a request's `max_cost_usd` and period caps (`router.budgets`) decide which models
may serve it, before any call; what it really cost is counted after.

`admit` runs between placement and the call. It keeps the route's chain models whose cost
bound (`ModelSpec.cost_bound`: estimated prompt + a full `max_tokens` answer) fits; if none
fits `max_cost_usd`, the strongest model that does (`strength`); then for each matching cap,
spent + bound over the limit means `downgrade` (to `downgrade_to` or the chain's cheapest) or
`refuse` (`BudgetExceededError`, naming the cap, the spend and when it resets). The bound is
reserved on every matching counter by compare-and-set, so concurrent requests (threads or
processes sharing a store) never admit more than the limit; `settle` swaps the reservation
for the actual cost (zero when no model answered).

When the counters' store is unreachable (`StoreUnavailableError`: Redis down and
`budgets_on_outage: closed`) a capped request is refused with `BudgetStoreUnavailableError`;
a settlement that cannot be written is logged and dropped (the reservation stays counted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from semroute.config import BudgetCap, BudgetSettings, RouteSet
from semroute.errors import (
    BudgetExceededError,
    BudgetStoreUnavailableError,
    StoreUnavailableError,
)
from semroute.policies.costs import period_bounds
from semroute.policies.identity import client_key_id, user_key
from semroute.state import Store

log = logging.getLogger("semroute.budgets")
KEY_PREFIX = "semroute:budget"
CAS_TRIES = 64
KEEP_AFTER_PERIOD_S = 86_400.0  # a counter outlives its period by a day (for inspection)


@dataclass(frozen=True)
class BudgetRequest:
    """What `admit` needs to know about one request. `estimate(key)` is the cost bound of one
    call of model `key`; `parallel_usd` that of a parallel route's calls together (None: not
    parallel)."""

    request_id: str
    route: str
    chain: tuple[str, ...]
    estimate: Callable[[str], float]
    input_tokens: int
    max_tokens: int
    max_cost_usd: float | None = None
    client_key: str | None = None
    user: str | None = None
    parallel_usd: float | None = None


@dataclass
class Reservation:
    """An amount held on one cap's counter until the request settles."""

    cap: BudgetCap
    key: str
    amount: float
    ttl_seconds: float


@dataclass
class Grant:
    """Which models may serve the request (`chain`, in order), whether a parallel route may
    ask its models at once, what is reserved, and `record` (JSON: what the budget did; None
    when no budget applied)."""

    chain: tuple[str, ...]
    parallel: bool
    reservations: list[Reservation] = field(default_factory=list)
    record: dict[str, Any] | None = None
    settled: bool = False


@dataclass
class _Cap:
    cap: BudgetCap
    key: str
    spent: float
    resets_at: str
    ttl_seconds: float


class Budgets:
    """The budget policy of one route set; thread-safe (counters live in `store`, which may be
    shared by processes). `clock` gives epoch seconds and decides the calendar period."""

    def __init__(self, settings: BudgetSettings, store: Store | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        if settings.caps and store is None:
            raise ValueError("budget caps need a store for their counters")
        self.settings = settings
        self.store = store
        self.clock = clock

    def admit(self, routes: RouteSet, req: BudgetRequest) -> Grant:
        """The models that may serve `req`, with the bound reserved on every matching cap;
        raises `BudgetExceededError` when nothing fits, `BudgetStoreUnavailableError` when
        caps apply and their store cannot be reached."""
        caps = [c for c in self.settings.caps if self._who(c, req) is not None]
        if req.max_cost_usd is None and not caps:
            return Grant(req.chain, req.parallel_usd is not None)
        chain, parallel, reasons = self._within_max_cost(routes, req)
        try:
            return self._admit_capped(req, caps, chain, parallel, reasons)
        except StoreUnavailableError as exc:
            raise BudgetStoreUnavailableError(
                f"request {req.request_id}: the budget store is unreachable, so caps "
                f"{', '.join(c.name for c in caps)} cannot be checked and the request is "
                f"refused (router.shared_state.budgets_on_outage: closed; 'open' serves "
                f"counting in-process): {exc}", request_id=req.request_id,
                store=exc.store) from exc

    def _admit_capped(self, req: BudgetRequest, caps: list[BudgetCap],
                      chain: tuple[str, ...], parallel: bool, reasons: list[str]) -> Grant:
        for _ in range(CAS_TRIES):
            states = [self._state(c, req) for c in caps]
            fitted, par, why = self._within_caps(req, states, chain, parallel)
            amount = _bound(req, fitted, par)
            held: list[Reservation] = []
            for s in states:
                if not self._reserve(s, amount):
                    break
                held.append(Reservation(s.cap, s.key, amount, s.ttl_seconds))
            else:
                return Grant(fitted, par, held, self._record(req, fitted, par, states, amount,
                                                             [*reasons, *why]))
            self.settle(Grant(fitted, par, held), 0.0)  # raced: give back, look again
        raise self._error(req, f"caps {', '.join(c.name for c in caps)} stayed contended for "
                          f"{CAS_TRIES} tries", _bound(req, chain, parallel))

    def settle(self, grant: Grant, cost_usd: float) -> None:
        """Replace the reservation by what the request cost (0.0 when no model answered).
        Harmless when called twice."""
        if grant.settled:
            return
        grant.settled = True
        if grant.record is not None:
            grant.record["cost_usd"] = cost_usd
        for r in grant.reservations:
            assert self.store is not None
            try:
                total = self.store.add(r.key, cost_usd - r.amount, r.ttl_seconds)
                if total < 0:  # the reservation was lost (a store restarted empty, an outage)
                    self.store.add(r.key, cost_usd - total, r.ttl_seconds)  # count the cost
            except StoreUnavailableError as exc:  # the answer is given: never fail it now
                log.warning("semroute: budget cap %s not settled (%+.6f USD): %s", r.cap.name,
                            cost_usd - r.amount, exc)

    def spent(self, cap: str, who: str | None = None) -> float:
        """What cap `cap` has counted in the current period for `who` (the raw client key,
        user or route; None for a cap with `match`), reservations in flight included."""
        c = next(x for x in self.settings.caps if x.name == cap)
        ident = c.match if who is None else who
        value = self.store.get(self._key(c, ident)) if self.store is not None else None
        return float(value) if isinstance(value, int | float) else 0.0

    # ---- the steps of `admit`

    def _within_max_cost(self, routes: RouteSet, req: BudgetRequest,
                         ) -> tuple[tuple[str, ...], bool, list[str]]:
        """The route's chain models under `max_cost_usd`, else the strongest that fit."""
        cap, est = req.max_cost_usd, req.estimate
        parallel = req.parallel_usd is not None
        if cap is None:
            return req.chain, parallel, []
        reasons = []
        if parallel and req.parallel_usd is not None and req.parallel_usd > cap:
            parallel = False
            reasons.append(f"parallel calls (${req.parallel_usd:.6f}) exceed max_cost_usd "
                           f"${cap:g}: the route's model chain serves")
        fits = tuple(k for k in req.chain if est(k) <= cap)
        if fits:
            if fits != req.chain:
                dropped = [k for k in req.chain if k not in fits]
                reasons.append(f"max_cost_usd ${cap:g}: skipped {', '.join(dropped)} "
                               f"(estimated ${max(est(k) for k in dropped):.6f})")
            return fits, parallel, reasons
        alternatives = sorted((k for k in routes.models if est(k) <= cap),
                              key=lambda k: strength(routes, k), reverse=True)
        if not alternatives:
            cheapest = min(routes.models, key=est)
            raise self._error(req, f"no model fits max_cost_usd ${cap:g}: the cheapest, "
                              f"'{cheapest}', is estimated at ${est(cheapest):.6f}",
                              est(cheapest), max_cost=cap)
        reasons.append(f"max_cost_usd ${cap:g}: no model of the chain fits (cheapest "
                       f"'{min(req.chain, key=est)}' ${min(map(est, req.chain)):.6f}); the "
                       f"strongest model that fits, '{alternatives[0]}', serves")
        return tuple(alternatives), False, reasons

    def _within_caps(self, req: BudgetRequest, states: Sequence[_Cap], chain: tuple[str, ...],
                     parallel: bool) -> tuple[tuple[str, ...], bool, list[str]]:
        """The chain after each cap: unchanged, without what no longer fits, downgraded, or
        refused."""
        est, reasons = req.estimate, []
        for s in states:
            c, room = s.cap, s.cap.limit_usd - s.spent
            if parallel and req.parallel_usd is not None and req.parallel_usd > room:
                parallel = False
                reasons.append(f"cap '{c.name}': parallel calls do not fit; the route's model "
                               f"chain serves")
            if est(chain[0]) <= room:
                chain = tuple(k for k in chain if est(k) <= room)
                continue
            over = (f"cap '{c.name}' (${c.limit_usd:g} per {c.period}, ${s.spent:.6f} spent, "
                    f"resets at {s.resets_at})")
            if c.policy == "refuse":
                raise self._cap_error(req, s, chain[0], f"{over} refuses it")
            target = c.downgrade_to or min(chain, key=est)
            if est(target) > room:
                raise self._cap_error(req, s, target, f"{over}: even the downgrade to "
                                      f"'{target}' (${est(target):.6f}) does not fit")
            reasons.append(f"{over}: '{chain[0]}' (${est(chain[0]):.6f}) does not fit; "
                           f"downgraded to '{target}'")
            chain = (target, *(k for k in chain if k != target and est(k) <= room))
        return chain, parallel, reasons

    def _reserve(self, s: _Cap, amount: float) -> bool:
        """Add `amount` to the cap's counter if it stays within the limit (compare-and-set)."""
        assert self.store is not None
        for _ in range(CAS_TRIES):
            cur = self.store.get(s.key)
            spent = float(cur) if isinstance(cur, int | float) else 0.0
            if spent + amount > s.cap.limit_usd + 1e-12:
                return False
            if self.store.compare_and_set(s.key, cur, spent + amount, s.ttl_seconds):
                return True
        return False

    # ---- helpers

    def _who(self, c: BudgetCap, req: BudgetRequest) -> str | None:
        """The raw id the cap counts this request under; None when the cap does not apply."""
        who = {"client_key": req.client_key, "user": req.user, "route": req.route}[c.scope]
        return who if who is not None and (c.match is None or c.match == who) else None

    def _key(self, c: BudgetCap, who: str | None, now: float | None = None) -> str:
        ident = client_key_id(who) if c.scope == "client_key" else \
            user_key(who) if c.scope == "user" else who
        start, _ = period_bounds(c.period, self.clock() if now is None else now)
        return f"{KEY_PREFIX}:{c.name}:{c.scope}:{ident}:{start:%Y%m%dT%H}"

    def _state(self, c: BudgetCap, req: BudgetRequest) -> _Cap:
        now = self.clock()
        _, end = period_bounds(c.period, now)
        key = self._key(c, self._who(c, req), now)
        assert self.store is not None
        value = self.store.get(key)
        spent = float(value) if isinstance(value, int | float) else 0.0
        return _Cap(c, key, spent, end.isoformat(),
                    end.timestamp() - now + KEEP_AFTER_PERIOD_S)

    def _record(self, req: BudgetRequest, chain: tuple[str, ...], parallel: bool,
                states: Sequence[_Cap], amount: float, reasons: list[str]) -> dict[str, Any]:
        return {
            "max_cost_usd": req.max_cost_usd, "input_tokens": req.input_tokens,
            "max_tokens": req.max_tokens, "estimate_usd": amount,
            "from_model": req.chain[0], "to_model": chain[0], "chain": list(chain),
            "parallel": parallel,
            "caps": [{"name": s.cap.name, "scope": s.cap.scope, "period": s.cap.period,
                      "limit_usd": s.cap.limit_usd, "spent_usd": s.spent,
                      "resets_at": s.resets_at} for s in states],
            "reason": "; ".join(reasons) or "within budget", "cost_usd": None}

    def _cap_error(self, req: BudgetRequest, s: _Cap, model: str,
                   why: str) -> BudgetExceededError:
        return self._error(req, why, req.estimate(model), cap=s)

    def _error(self, req: BudgetRequest, why: str, estimate: float, *,
               max_cost: float | None = None, cap: _Cap | None = None) -> BudgetExceededError:
        msg = (f"request {req.request_id} (route '{req.route}'): estimated ${estimate:.6f} "
               f"(~{req.input_tokens} prompt tokens + max_tokens {req.max_tokens}); {why}. "
               f"Lower max_tokens, shorten the prompt, "
               + ("wait for the reset or raise limit_usd in router.budgets" if cap else
                  "or raise max_cost_usd"))
        return BudgetExceededError(
            msg, request_id=req.request_id, estimate_usd=estimate, max_cost_usd=max_cost,
            cap=None if cap is None else cap.cap.name,
            limit_usd=None if cap is None else cap.cap.limit_usd,
            spent_usd=None if cap is None else cap.spent,
            resets_at=None if cap is None else cap.resets_at)


def strength(routes: RouteSet, key: str) -> tuple[int, float]:
    """How strong a model is taken to be: the highest `router.tiers` position of the routes
    that use it (-1: none, or no tiers), then its price (input + output per 1M tokens)."""
    tiers = routes.settings.tiers or []
    ranks = [tiers.index(r.metadata["tier"]) for r in routes.routes
             if r.metadata.get("tier") in tiers and (key in r.models or (
                 r.parallel is not None and key in r.parallel.models))]
    entry = routes.models[key]
    return max(ranks, default=-1), entry.input_price + entry.output_price


def _bound(req: BudgetRequest, chain: tuple[str, ...], parallel: bool) -> float:
    """What to reserve: the parallel calls together, else the dearest model that may answer."""
    if parallel and req.parallel_usd is not None:
        return req.parallel_usd
    return max(req.estimate(k) for k in chain)
