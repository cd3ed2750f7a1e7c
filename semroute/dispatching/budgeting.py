"""Glue between a dispatch and the budget policy (`policies/budgets.py`): the cost bound of
each model for this request, admission before the call and settlement after it, and agent
steps (which skip the router and stickiness).

Budget store operations run as `Offload` effects: inline under `dispatch`, in a worker thread
under `adispatch` (a SQLite write may wait on another process's lock).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial

from semroute.config import ModelSpec, Route, RouteSet
from semroute.dispatching.parallel import JUDGE_MAX_TOKENS
from semroute.errors import QueryError
from semroute.policies import BudgetRequest, Budgets, Grant, Placement, estimate_input_tokens
from semroute.providers import Message, Offload, Plan
from semroute.routing import Decision, step_decision

JUDGE_PROMPT_TOKENS = 200  # the judge's instructions around the query and the answers


@dataclass(frozen=True)
class Asked:
    """What the caller asked of one request besides its text: an agent `step` or a catalogue
    key `model` (None: route it), a `max_cost_usd`, and the ids caps count under
    (`client_key`, `user`; raw here, hashed before they reach a store key or a trace)."""

    step: str | None = None
    max_cost_usd: float | None = None
    client_key: str | None = None
    user: str | None = None
    model: str | None = None


NOTHING_ASKED = Asked()


def step_plan(routes: RouteSet, step: str, query: str) -> Plan[Decision]:
    """The decision for an agent step, as a plan (a dict lookup: nothing to offload)."""
    return step_decision(routes, step, query)
    yield  # pragma: no cover - makes this a generator


def explicit_decision(routes: RouteSet, key: str, query: str) -> Decision:
    """The decision for a caller-named catalogue key (`QueryError` naming the known keys)."""
    if key not in routes.models:  # fail before any call
        raise QueryError(f"model '{key}' is not a key of profile '{routes.profile}' (known: "
                         f"{', '.join(sorted(routes.models))})")
    return Decision.explicit(query, key)


def step_placement(routes: RouteSet, decision: Decision) -> Placement:
    """An agent step (or a caller-named model) is served by its own model chain; stickiness
    does not apply."""
    assert decision.route is not None
    route = routes.route(decision.route)
    return Placement(route, route.models, route)


def admit(budgets: Budgets, routes: RouteSet, spec_of: Callable[[str], ModelSpec],
          request_id: str, route: Route, chain: Sequence[str], messages: Sequence[Message],
          system: str | None, max_tokens: int, parallel: bool, asked: Asked) -> Plan[Grant]:
    """Which of `chain` may serve the request within its budgets (raises
    `BudgetExceededError`); the cost bound is reserved on every matching cap. `parallel`: the
    route asks several models (a parallel route, or a cascade's steps and judges); it may do so
    only if all of them fit (`Grant.parallel`), else it is served by its plain chain."""
    if asked.max_cost_usd is not None and not asked.max_cost_usd > 0:
        raise ValueError(f"max_cost_usd must be a positive number of USD, not "
                         f"{asked.max_cost_usd!r}")
    if asked.max_cost_usd is None and not budgets.settings.caps:
        return Grant(tuple(chain), parallel)
    tokens = estimate_input_tokens(messages, system)

    @cache
    def estimate(key: str) -> float:
        return spec_of(key).cost_bound(tokens, max_tokens)

    parallel_usd = None
    if parallel and route.parallel is not None:
        p = route.parallel
        parallel_usd = sum(estimate(k) for k in p.models)
        if p.judge_model is not None:  # the judge reads the query and every answer
            judge_in = tokens + JUDGE_PROMPT_TOKENS + len(p.models) * max_tokens
            parallel_usd += spec_of(p.judge_model).cost_bound(judge_in, JUDGE_MAX_TOKENS)
    elif parallel and route.cascade is not None:  # worst case: every step and judge asked
        c = route.cascade
        parallel_usd = sum(estimate(m if isinstance(m, str) else m[0]) for m in c.models)
        judges = [g.judge.model for g in c.gates if g.judge is not None]
        judge_in = tokens + JUDGE_PROMPT_TOKENS + max_tokens
        parallel_usd += (len(c.models) - 1) * sum(
            spec_of(k).cost_bound(judge_in, JUDGE_MAX_TOKENS) for k in judges)
    req = BudgetRequest(request_id=request_id, route=route.name, chain=tuple(chain),
                        estimate=estimate, input_tokens=tokens, max_tokens=max_tokens,
                        max_cost_usd=asked.max_cost_usd, client_key=asked.client_key,
                        user=asked.user, parallel_usd=parallel_usd)
    grant: Grant = yield Offload(partial(budgets.admit, routes, req))
    return grant


def settle(budgets: Budgets, grant: Grant, cost_usd: float) -> Plan[None]:
    """Count what the request really cost against the caps it reserved on."""
    if grant.reservations or grant.record is not None:
        yield Offload(partial(budgets.settle, grant, cost_usd))
