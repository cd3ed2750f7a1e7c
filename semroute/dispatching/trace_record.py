"""The JSON record one dispatch leaves in the trace: decision, attempts, tokens, cost, timings
and, for streams, how the stream ended. Holds no API key; the query only when asked."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from semroute.dispatching.attempts import Attempt
from semroute.dispatching.response import Response
from semroute.routing import Decision


def trace_record(
    request_id: str,
    decision: Decision,
    attempts: list[Attempt],
    latency_ms: dict[str, float],
    *,
    response: Response | None = None,
    stream: dict[str, Any] | None = None,
    error: str | None = None,
    include_query: bool = False,
    sticky: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One trace line. `response` is None when no model answered; `stream` is
    `{"state", "chunks", "chars"}` for streamed answers; `sticky` says how stickiness changed
    the decision's route or model (hashed ids only), and `route` is then the route served;
    `parallel` is how a parallel route's answer was picked (`ParallelOutcome.to_dict()`);
    `budget` what the budgets did (the response's, else the one given; hashed ids only);

    `cascade` the steps a cascade route climbed (`CascadeOutcome.to_dict()`, no answer text);
    `tier` what the route's ladder chose (`TierChoice`: predictions, neighbours' text hashes);
    `tool_calls` the count and tool names of the calls the model asked for (no arguments)."""
    c = decision.classifier
    record: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "route": decision.route,
        "method": decision.method,
        "score": decision.score,
        "margin": decision.margin,
        "reason": decision.reason,
        "candidates": [{"route": x.route, "score": x.score} for x in decision.candidates[:5]],
        "rule": None if decision.rule is None else {  # what it matched is query text: not here
            "route": decision.rule.route, "rule": decision.rule.rule,
            "condition": decision.rule.condition},
        "context": [{"turn": w.turn, "role": w.role, "weight": w.weight, "route": w.route}
                    for w in decision.context],  # turns that counted for a follow-up
        "classifier": None if c is None else {
            "model": c.model, "answer": c.answer, "latency_ms": c.latency_ms,
            "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
            "cached": c.cached, "error": c.error},
        "model_key": response.model_key if response else None,
        "model": response.model if response else None,
        "provider": response.provider if response else None,
        "attempts": [a.__dict__ for a in attempts],
        "input_tokens": response.usage.input_tokens if response else 0,
        "output_tokens": response.usage.output_tokens if response else 0,
        "cost_usd": response.cost_usd if response else 0.0,
        "latency_ms": {**{f"route.{k}": v for k, v in decision.timings_ms.items()},
                       **latency_ms},
        "stream": stream,
        "error": error,
        "sticky": sticky,
        "parallel": response.parallel.to_dict() if response and response.parallel else None,
        "budget": response.budget if response else budget,
        "cascade": response.cascade.to_dict() if response and response.cascade else None,
        "tier": None if decision.tier is None else asdict(decision.tier),  # hashes, no text
        "tool_calls": {"count": len(response.tool_calls),  # names only, never arguments
                       "names": [c.name for c in response.tool_calls]}
        if response and response.tool_calls else None,
    }
    if sticky is not None:
        record["route"] = sticky["to_route"]
    if include_query:
        record["query"] = decision.query
    return record
