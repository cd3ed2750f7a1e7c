"""A cascade route's dispatch after the decision: climb the cascade (`cascade.py`), build the
Response, price every call and write the trace record (for a live stream: when it ends).

The Dispatcher hands over what it owns through `CascadeHost`, so this stays one call there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from semroute.config import ModelSpec, RouterSettings, Usage
from semroute.dispatching.budgeting import settle
from semroute.dispatching.cascade import Climbed, climb
from semroute.dispatching.response import Response
from semroute.dispatching.state import DispatchState
from semroute.dispatching.sticky import record
from semroute.dispatching.trace_record import trace_record
from semroute.errors import AllModelsFailedError, ProviderError
from semroute.policies import Grant, Placement
from semroute.providers import Completion, Message, Plan
from semroute.routing import Decision


@dataclass(frozen=True)
class CascadeHost:
    """What a cascade needs from its Dispatcher: catalogue lookups, shared state, settings,
    the trace writer (the query already bound for redaction), the budget grant its cost is
    settled on, what to do with a complete chat reply (pre-scoring; None: nothing) and with
    the answered request (journal, shadow evaluation)."""

    spec_of: Callable[[str], ModelSpec]
    state: DispatchState
    settings: RouterSettings
    write: Callable[[dict[str, Any]], Plan[None]]
    include_query: bool
    grant: Grant
    replied: Callable[[str], None] | None = None
    answered: Callable[[Response], None] | None = None  # journal and shadow (the Dispatcher)


def serve_cascade(host: CascadeHost, request_id: str, decision: Decision, placed: Placement,
                  messages: list[Message], turn: str, call_kwargs: dict[str, Any],
                  stream: bool, latency: dict[str, float]) -> Plan[Response]:
    """Answer a cascade route's request; raises (and traces) as a plain route does."""
    route, t_model = placed.route, time.perf_counter()
    try:
        climbed = yield from climb(route, host.spec_of, messages, call_kwargs, turn, stream,
                                   host.state, host.settings)
    except (ProviderError, AllModelsFailedError) as exc:
        exc.request_id = request_id
        error = "all models failed" if isinstance(exc, AllModelsFailedError) else str(exc)
        yield from settle(host.state.budgets, host.grant, 0.0)  # errors cost nothing
        yield from host.write(trace_record(
            request_id, decision, exc.attempts, latency, error=error,
            include_query=host.include_query, sticky=placed.sticky, budget=host.grant.record))
        raise
    except BaseException:  # cancelled (no yield allowed now): give the reservation back
        host.state.budgets.settle(host.grant, 0.0)
        raise
    yield from record(host.state.stickiness, placed, climbed.spec.key)
    latency["model"] = (time.perf_counter() - t_model) * 1e3
    spec, outcome = climbed.spec, climbed.outcome
    done = outcome if isinstance(outcome, Completion) else None
    live = None if isinstance(outcome, Completion) else outcome
    r = Response(
        request_id=request_id, route=route.name, model_key=spec.key, model=spec.model,
        provider=spec.provider, text=climbed.text, usage=climbed.usage,
        cost_usd=climbed.cost_usd, finish_reason=done.finish_reason if done else None,
        latency_ms=latency, attempts=climbed.attempts, decision=decision,
        stream_state="complete" if done else "open", sticky=placed.sticky,
        cascade=climbed.cascade, budget=host.grant.record, _stream=live,
        tool_calls=done.tool_calls if done else (),
        _settle=None if done else partial(_settled, host, climbed))
    if done is not None:
        latency["total"] = sum(v for k, v in latency.items() if k != "total")
        yield from settle(host.state.budgets, host.grant, r.cost_usd)
        yield from host.write(trace_record(
            request_id, decision, r.attempts, latency, response=r,
            include_query=host.include_query, sticky=r.sticky))
        if host.replied is not None:
            host.replied(r.text)
        if host.answered is not None:
            host.answered(r)
    return r


def _settled(host: CascadeHost, climbed: Climbed, r: Response, chunks: int,
             error: ProviderError | None) -> Plan[None]:
    """The last step's stream ended: add its tokens and cost to the earlier steps', then trace."""
    streamed = r.usage
    step_cost = climbed.spec.cost(streamed)
    r.usage = Usage(climbed.usage.input_tokens + streamed.input_tokens,
                    climbed.usage.output_tokens + streamed.output_tokens)
    r.cost_usd = climbed.cost_usd + step_cost
    if r.cascade is not None:
        *earlier, last = r.cascade.steps
        r.cascade = replace(r.cascade, steps=(*earlier, replace(
            last, cost_usd=step_cost, input_tokens=streamed.input_tokens,
            output_tokens=streamed.output_tokens)))
    r.latency_ms["total"] = sum(v for k, v in r.latency_ms.items() if k != "total")
    if error is not None:
        error.attempts, error.request_id = r.attempts, r.request_id
    yield from settle(host.state.budgets, host.grant, r.cost_usd)
    yield from host.write(trace_record(
        r.request_id, r.decision, r.attempts, r.latency_ms, response=r,
        stream={"state": r.stream_state, "chunks": chunks, "chars": len(r.text)},
        error=None if error is None else str(error), include_query=host.include_query,
        sticky=r.sticky))
    if host.replied is not None and r.stream_state == "complete":
        host.replied(r.text)
    if host.answered is not None:
        host.answered(r)
