"""Cascades: ask the cheap step, check its answer with the route's gates, escalate on a failed
gate or a failed model, return the first accepted answer (README "Cascades").

Each step runs `call_chain` over its own failover chain (retries, failover, cooldowns, attempt
records); the last step's chain continues with the route's `model` keys no step names, so the
route's `model` stays the answer of last resort. Gates run in a fixed order whatever the
file's order: the free ones first (`non_empty`, `not_refusal`, `json`, `json_schema`, `regex`,
then `self_confidence`, which only parses), the judge last, so a judge is paid only when it
can decide. The first failing gate escalates. The last step is not gated: nothing is left to
escalate to, and a stream can start at once. When the last step fails too, the latest
answer that failed a gate is returned rather than nothing; the outcome says so. A step that
answers with tool calls is accepted: gates check text, and a call is an action for the caller
to run, whose result comes back in the next request (README "Tools").

Streams (`stream=True`): with `cascade.stream: gated` (the default) the steps before the last
run non-streamed and gated; an accepted answer is returned complete (iterating it yields its
text), otherwise the last step streams live. With `cascade.stream: last`, a stream goes to the
last step at once (no gate, first token soonest, full price).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from semroute.config import GateSpec, ModelSpec, Route, RouterSettings, Usage
from semroute.dispatching.attempts import Attempt
from semroute.dispatching.chain import Answered, call_chain
from semroute.dispatching.gates import CONFIDENCE_INSTRUCTION, Check, check, parse_confidence
from semroute.dispatching.parallel import JUDGE_ANSWER_CHARS, JUDGE_MAX_TOKENS
from semroute.dispatching.state import DispatchState
from semroute.errors import AllModelsFailedError, ProviderError
from semroute.providers import AsyncStream, Completion, Message, Plan, Stream

Verdict = Literal["accepted", "escalated", "final"]
FREE_ORDER = ("non_empty", "not_refusal", "json", "json_schema", "regex")
JUDGE_SYSTEM = (
    "You grade one answer to a user's request. Score it from 1 to 10: 10 = correct, complete "
    "and clear; 7 = correct with small gaps; 4 = partly wrong or incomplete; 1 = wrong, "
    "off-topic, empty or a refusal. Reply with the score only."
)
JUDGE_LABELS = [str(n) for n in range(1, 11)]


@dataclass(frozen=True)
class CascadeStep:
    """One step of a cascade: the models it could use (`models`), the one that answered
    (`model_key`, None if none did), the verdict, the gate that failed and why (no answer
    text), the answer's cost, latency and tokens, and what the gates cost (a judge)."""

    step: int
    models: tuple[str, ...]
    model_key: str | None
    ok: bool
    verdict: Verdict
    gate: str | None
    why: str
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    gate_cost_usd: float = 0.0
    gate_latency_ms: float = 0.0
    confidence: float | None = None
    judge_score: int | None = None


@dataclass(frozen=True)
class CascadeOutcome:
    """How a cascade route's answer was reached: every step tried, whether the answer returned
    passed every gate (`accepted`), which model gave it, and why it was returned."""

    steps: tuple[CascadeStep, ...]
    answered_by: str
    accepted: bool
    reason: str
    streamed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in the trace (no answer or query text)."""
        return asdict(self)


@dataclass(frozen=True)
class Climbed:
    """The cascade's answer: a completion (text already stripped of a confidence statement)
    or the last step's open stream, with the totals of every finished call."""

    spec: ModelSpec
    outcome: Completion | Stream | AsyncStream
    text: str
    usage: Usage
    cost_usd: float
    attempts: list[Attempt]
    cascade: CascadeOutcome


def cascade_steps(route: Route, stream: bool) -> list[tuple[str, ...]]:
    """The failover chain of each step to climb (module docstring)."""
    c = route.cascade
    assert c is not None
    steps = list(c.steps)
    named = {k for step in steps for k in step}
    steps[-1] = (*steps[-1], *(k for k in route.models if k not in named))
    return steps[-1:] if stream and c.stream == "last" else steps


def climb(route: Route, spec_of: Callable[[str], ModelSpec], messages: Sequence[Message],
          kwargs: dict[str, Any], query: str, stream: bool, state: DispatchState,
          settings: RouterSettings) -> Plan[Climbed]:
    """Climb `route.cascade` (module docstring). Raises the request-level ProviderError at
    once, and AllModelsFailedError (every attempt) when no step answered at all."""
    c = route.cascade
    assert c is not None
    steps = cascade_steps(route, stream)
    confidence_gate = next((g for g in c.gates if g.self_confidence is not None), None)
    asked = dict(kwargs, system="\n\n".join(
        x for x in (kwargs.get("system"), CONFIDENCE_INSTRUCTION) if x))
    attempts: list[Attempt] = []
    records: list[CascadeStep] = []
    usage, cost = Usage(), 0.0
    held: tuple[Answered, str] | None = None  # the latest answer that failed a gate
    for n, chain in enumerate(steps, start=1):
        last = n == len(steps)
        t0 = time.perf_counter()
        try:
            answered = yield from call_chain(
                route.name, chain, spec_of, messages,
                kwargs if last or confidence_gate is None else asked, stream and last, state,
                settings)
        except AllModelsFailedError as exc:
            attempts += exc.attempts
            why = exc.attempts[-1].error if exc.attempts else "no model was tried"
            records.append(CascadeStep(n, chain, None, False, "escalated", None,
                                       f"no model answered: {why}",
                                       latency_ms=_ms(t0)))
            continue
        except ProviderError as exc:  # request-level (a 400): no model will take it
            exc.attempts = [*attempts, *exc.attempts]
            raise
        attempts += answered.attempts
        took = _ms(t0)
        spec, done = answered.spec, answered.outcome
        if not isinstance(done, Completion):  # the last step, streaming live
            records.append(CascadeStep(n, chain, spec.key, True, "final", None,
                                       "the last step, streamed live (not gated)",
                                       latency_ms=took))
            return Climbed(spec, done, "", usage, cost, _mark(attempts), CascadeOutcome(
                tuple(records), spec.key, False, _final_reason(records), streamed=True))
        step_cost = spec.cost(done.usage)
        usage, cost = _add(usage, done.usage), cost + step_cost
        base = CascadeStep(n, chain, spec.key, True, "final", None, "", step_cost, took,
                           done.usage.input_tokens, done.usage.output_tokens)
        if last:
            records.append(replace(base, why="the last step (not gated)"))
            return Climbed(spec, done, done.text, usage, cost, _mark(attempts), CascadeOutcome(
                tuple(records), spec.key, False, _final_reason(records)))
        if done.tool_calls:  # an action, not text: text gates cannot judge it
            records.append(replace(base, verdict="accepted", why=(
                f"answered with {len(done.tool_calls)} tool call(s); gates check text only")))
            return Climbed(spec, done, done.text, usage, cost, _mark(attempts), CascadeOutcome(
                tuple(records), spec.key, True, f"step {n} ({spec.key}) called a tool"))
        text, confidence, problem = done.text, None, None
        failed: tuple[str, str] | None = None
        if confidence_gate is not None:
            parsed = parse_confidence(text)
            text, confidence, problem = parsed.text, parsed.value, parsed.problem
        for gate in _ordered(c.gates):
            kind = gate.kind
            if kind in FREE_ORDER:
                verdict = check(gate, text)
            elif gate.self_confidence is not None:
                verdict = _confident(confidence, gate.self_confidence.min, problem)
            else:
                t_judge = time.perf_counter()
                judged = yield from _judge(route.name, gate, spec_of, query, text, state,
                                           settings)
                verdict, score, judge_usage, judge_cost, judge_attempts = judged
                attempts += judge_attempts
                usage, cost = _add(usage, judge_usage), cost + judge_cost
                base = replace(base, gate_cost_usd=base.gate_cost_usd + judge_cost,
                               gate_latency_ms=base.gate_latency_ms + _ms(t_judge),
                               judge_score=score)
            if not verdict.passed:
                failed = (kind, verdict.why)
                break
        base = replace(base, confidence=confidence)
        if failed is None:
            records.append(replace(base, verdict="accepted", why="passed every gate"))
            return Climbed(spec, done, text, usage, cost, _mark(attempts), CascadeOutcome(
                tuple(records), spec.key, True,
                f"step {n} ({spec.key}) passed every gate"))
        records.append(replace(base, verdict="escalated", gate=failed[0], why=failed[1]))
        held = (answered, text)
    if held is None:
        error = AllModelsFailedError(route.name, attempts)
        error.add_note(f"cascade route: none of its {len(steps)} steps answered")
        raise error
    answered, text = held
    done = answered.outcome
    assert isinstance(done, Completion)
    at = max(i for i, r in enumerate(records) if r.ok)
    kept = records[at]
    records[at] = replace(kept, verdict="final")
    return Climbed(answered.spec, done, text, usage, cost,
                   _mark(attempts, answered.spec.key), CascadeOutcome(
                       tuple(records), answered.spec.key, False,
                       f"the last step failed; returned step {kept.step}'s answer "
                       f"({answered.spec.key}), which failed gate '{kept.gate}'"))


def _ordered(gates: Sequence[GateSpec]) -> list[GateSpec]:
    """Free checks first (in FREE_ORDER), then self_confidence, then judges (file order)."""
    rank = {k: i for i, k in enumerate((*FREE_ORDER, "self_confidence", "judge"))}
    return sorted(gates, key=lambda g: rank[g.kind])


def _confident(value: float | None, minimum: float, problem: str | None) -> Check:
    if value is None:
        return Check(False, f"self-confidence {problem}")
    if value < minimum:
        return Check(False, f"self-confidence {value:.2f} is below the minimum {minimum:g}")
    return Check(True, f"self-confidence {value:.2f} >= {minimum:g}")


def _judge(route: str, gate: GateSpec, spec_of: Callable[[str], ModelSpec], query: str,
           text: str, state: DispatchState, settings: RouterSettings,
           ) -> Plan[tuple[Check, int | None, Usage, float, list[Attempt]]]:
    """Ask the judge for a 1-10 score (output constrained to those labels). A judge that
    fails or gives no valid score fails the gate: an unverified answer escalates."""
    assert gate.judge is not None
    key, minimum = gate.judge.model, gate.judge.min_score
    prompt = (f"Request:\n{query}\n\nAnswer:\n{text[:JUDGE_ANSWER_CHARS]}\n\n"
              f"Score the answer from 1 to 10.")
    messages: list[Message] = [{"role": "user", "content": prompt}]
    try:
        answered = yield from call_chain(route, [key], spec_of, messages, {
            "system": JUDGE_SYSTEM, "max_tokens": JUDGE_MAX_TOKENS, "labels": JUDGE_LABELS},
            False, state, settings)  # no temperature: OpenAI's reasoning models refuse one
    except (AllModelsFailedError, ProviderError) as exc:
        tried = [replace(a, judge=True) for a in exc.attempts]
        why = tried[-1].error if tried else str(exc)
        return Check(False, f"judge '{key}' failed ({why}); not verified"), None, Usage(), \
            0.0, tried
    done = answered.outcome
    assert isinstance(done, Completion)
    tried = [replace(a, judge=True) for a in answered.attempts]
    cost = answered.spec.cost(done.usage)
    if done.label is None:
        return Check(False, f"judge '{key}' gave no valid score"), None, done.usage, cost, \
            tried
    score = int(done.label)
    ok = score / 10 >= minimum
    return Check(ok, f"judge '{key}' scored {score}/10 "
                     f"({'>=' if ok else 'below'} min_score {minimum:g})"), score, done.usage, \
        cost, tried


def _final_reason(records: Sequence[CascadeStep]) -> str:
    n = len(records)
    if n == 1:
        return "the only step served (a stream sent straight to the last step)"
    failed = "; ".join(f"step {r.step}: {r.gate or 'model'} ({r.why})" for r in records[:-1])
    return f"no earlier step was accepted ({failed}); the last step answered, not gated"


def _mark(attempts: list[Attempt], key: str | None = None) -> list[Attempt]:
    """Mark the attempt whose answer is returned (`picked`): the latest ok answer call (of
    model `key` when given)."""
    at = max((i for i, a in enumerate(attempts)
              if a.ok and not a.judge and (key is None or a.model_key == key)), default=None)
    if at is not None:
        attempts[at] = replace(attempts[at], picked=True)
    return attempts


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
