"""Parallel-then-pick: ask a route's `parallel.models` at once, then return one answer.

Each model is a branch: `call_chain` over that model alone (its retries, cooldown and attempt
records), the branches run side by side through the `Parallel` effect, so sync and async share
this code. A failed branch is recorded and never stops the others; fewer than `min_answers`
answers raise `AllModelsFailedError` listing every attempt. Then one answer is picked:

- `first`: the first answer in `models` order; `longest`: the longest (ties: `models` order);
- `judge`: the judge model reads the query and the answers, numbered, and its output is
  constrained to those numbers (`labels`, as the classifier's). Against position bias the
  answers are shown in an order shuffled by an RNG seeded from the query and the models, so
  no model always sits first and the same query always shows the same order. A judge that
  fails or gives no valid number falls back to `first`, and the reason says so;
- a picker registered in code (`Dispatcher(router, pickers={"name": fn})`, never imported from
  a config file): `fn(query, answers)` gets the answer texts (in `models` order, answered ones
  only) and returns the index of the best, or one score per answer (the highest wins, ties:
  the earlier; numpy values are fine). A picker that raises or returns something else falls
  back to `first`.

With a single answer there is nothing to pick: it is returned without asking judge or picker.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Literal

from semroute.config import BUILTIN_PICKS, ModelSpec, Route, RouterSettings, Usage
from semroute.dispatching.attempts import Attempt
from semroute.dispatching.chain import Answered, call_chain
from semroute.dispatching.state import DispatchState
from semroute.errors import AllModelsFailedError, ConfigError, ProviderError
from semroute.providers import Completion, Message, Offload, Parallel, Plan, calls_text

log = logging.getLogger(__name__)

Picker = Callable[[str, Sequence[str]], Any]
"""`fn(query, answers) -> int | Sequence[float]`: the best answer's index, or a score each."""

JUDGE_SYSTEM = (
    "You are a strict judge. Read the user's request and the numbered candidate answers. "
    "Choose the ONE answer that best serves the request: correct, complete, clear. Reply with "
    "its number only."
)
JUDGE_MAX_TOKENS = 24  # room for the JSON form {"label": "10"} of constrained output
JUDGE_ANSWER_CHARS = 4000  # each answer is cut to this for the judge (its context is finite)


@dataclass(frozen=True)
class ParallelCall:
    """One model's part in a parallel dispatch: an answer branch or the judge."""

    model_key: str
    role: Literal["answer", "judge"]
    ok: bool
    cost_usd: float
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None


@dataclass(frozen=True)
class ParallelOutcome:
    """How a parallel route's answer was chosen: the models asked, those that answered, the
    one picked and why (`judge_answer` / `scores` when a judge / picker decided), and every
    call's cost and latency."""

    pick: str
    models: tuple[str, ...]
    answered: tuple[str, ...]
    picked: str
    reason: str
    judge_answer: str | None = None
    scores: tuple[float, ...] | None = None
    calls: tuple[ParallelCall, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in the trace."""
        return asdict(self)


@dataclass(frozen=True)
class Picked:
    """The answer returned, with the totals of every call made for it."""

    spec: ModelSpec
    completion: Completion
    usage: Usage
    cost_usd: float
    attempts: list[Attempt]
    outcome: ParallelOutcome


def missing_picker(route: Route, pickers: Mapping[str, Picker]) -> str | None:
    """The problem with `route`'s pick, if it names a picker not registered in code."""
    p = route.parallel
    if p is None or p.pick in BUILTIN_PICKS or p.pick in pickers:
        return None
    known = ", ".join([*BUILTIN_PICKS, *sorted(pickers)])
    return (f"{route.file}: route '{route.name}': field 'parallel.pick': no picker named "
            f"'{p.pick}' is registered (pass Dispatcher(router, pickers={{'{p.pick}': fn}}); "
            f"known: {known})")


Outcome = tuple[Answered | AllModelsFailedError | ProviderError, float]


def _branch(route: str, key: str, spec_of: Callable[[str], ModelSpec],
            messages: Sequence[Message], kwargs: dict[str, Any], state: DispatchState,
            settings: RouterSettings) -> Plan[Outcome]:
    """One model with its retries; a failure is the outcome, not an exception."""
    t0 = time.perf_counter()
    try:
        answered = yield from call_chain(route, [key], spec_of, messages, kwargs, False, state,
                                         settings)
    except (AllModelsFailedError, ProviderError) as exc:
        return exc, (time.perf_counter() - t0) * 1e3
    return answered, (time.perf_counter() - t0) * 1e3


def _call(key: str, role: Literal["answer", "judge"], result: Outcome) -> ParallelCall:
    outcome, took = result
    if isinstance(outcome, Answered):
        done = outcome.outcome
        assert isinstance(done, Completion)
        return ParallelCall(key, role, True, outcome.spec.cost(done.usage), took,
                            done.usage.input_tokens, done.usage.output_tokens)
    last = outcome.attempts[-1].error if outcome.attempts else str(outcome)
    return ParallelCall(key, role, False, 0.0, took, error=last)


def ask_in_parallel(route: Route, spec_of: Callable[[str], ModelSpec],
                    messages: Sequence[Message], kwargs: dict[str, Any], query: str,
                    state: DispatchState, settings: RouterSettings,
                    pickers: Mapping[str, Picker]) -> Plan[Picked]:
    """Ask every model of `route.parallel` at once and pick one answer (module docstring).
    Raises `ConfigError` for an unregistered picker (before any call) and
    `AllModelsFailedError` when fewer than `min_answers` models answer."""
    p = route.parallel
    assert p is not None
    problem = missing_picker(route, pickers)
    if problem is not None:
        raise ConfigError([problem])
    results: list[Any] = yield Parallel(tuple(
        _branch(route.name, key, spec_of, messages, kwargs, state, settings)
        for key in p.models))
    attempts: list[Attempt] = []
    calls: list[ParallelCall] = []
    answers: list[Answered] = []
    for key, result in zip(p.models, results, strict=True):
        if isinstance(result, BaseException):  # not a model failure: a bug or a bad argument
            raise result
        outcome, _ = result
        attempts += outcome.attempts
        calls.append(_call(key, "answer", result))
        if isinstance(outcome, Answered):
            answers.append(outcome)
    if len(answers) < max(p.min_answers, 1):
        error = AllModelsFailedError(route.name, attempts)
        error.add_note(f"parallel route: {len(answers)} of {len(p.models)} models answered; "
                       f"min_answers is {p.min_answers}")
        raise error
    texts = [answer_text(_completion(a)) for a in answers]
    judge_answer: str | None = None
    scores: tuple[float, ...] | None = None
    if len(answers) == 1:
        index, reason = 0, "the only answer"
    elif p.pick == "first":
        index, reason = 0, "pick first: the first answer in the route's order"
    elif p.pick == "longest":
        index = max(range(len(texts)), key=lambda i: (len(texts[i]), -i))
        reason = f"pick longest: {len(texts[index])} characters"
    elif p.pick == "judge":
        assert p.judge_model is not None
        judged = yield from _judge(route.name, p.judge_model, spec_of, query, answers, texts,
                                   state, settings)
        index, reason, judge_answer, judge_result = judged
        attempts += [replace(a, judge=True) for a in judge_result[0].attempts]
        calls.append(_call(p.judge_model, "judge", judge_result))
    else:
        index, reason, scores = yield from _by_picker(p.pick, pickers[p.pick], query, texts)
    chosen = answers[index]
    picked_at = max(i for i, a in enumerate(attempts)
                    if a.ok and not a.judge and a.model_key == chosen.spec.key)
    attempts[picked_at] = replace(attempts[picked_at], picked=True)
    usage = Usage(sum(c.input_tokens for c in calls), sum(c.output_tokens for c in calls))
    outcome = ParallelOutcome(
        pick=p.pick, models=tuple(p.models), answered=tuple(a.spec.key for a in answers),
        picked=chosen.spec.key, reason=reason, judge_answer=judge_answer, scores=scores,
        calls=tuple(calls))
    return Picked(chosen.spec, _completion(chosen), usage, sum(c.cost_usd for c in calls),
                  attempts, outcome)


def answer_text(done: Completion) -> str:
    """What pickers and the judge see of an answer: its text, then its tool calls as
    `[tool call] name(arguments)` lines (a tool-call answer is an answer like any other)."""
    return "\n".join(x for x in (done.text, calls_text(done.tool_calls)) if x)


def _completion(answered: Answered) -> Completion:
    done = answered.outcome
    assert isinstance(done, Completion)
    return done


def judge_order(query: str, keys: Sequence[str]) -> list[int]:
    """The order the judge sees the answers in: shuffled, the same for the same query."""
    seed = hashlib.sha256("\x1f".join([query, *keys]).encode()).digest()
    order = list(range(len(keys)))
    random.Random(int.from_bytes(seed[:8], "big")).shuffle(order)
    return order


def judge_prompt(query: str, texts: Sequence[str], order: Sequence[int]) -> str:
    """The judge's user message: the request, then the answers numbered in `order`."""
    shown = "\n\n".join(f"Answer {n}:\n{texts[i][:JUDGE_ANSWER_CHARS]}"
                        for n, i in enumerate(order, start=1))
    return f"Request:\n{query}\n\n{shown}\n\nWhich answer is best? Reply with its number."


def _judge(route: str, judge_key: str, spec_of: Callable[[str], ModelSpec], query: str,
           answers: Sequence[Answered], texts: Sequence[str], state: DispatchState,
           settings: RouterSettings) -> Plan[tuple[int, str, str | None, Outcome]]:
    order = judge_order(query, [a.spec.key for a in answers])
    labels = [str(n) for n in range(1, len(order) + 1)]
    messages: list[Message] = [{"role": "user", "content": judge_prompt(query, texts, order)}]
    result = yield from _branch(route, judge_key, spec_of, messages,
                                {"system": JUDGE_SYSTEM, "max_tokens": JUDGE_MAX_TOKENS,
                                 "labels": labels}, state, settings)
    outcome, _ = result
    fallback = "fell back to the first answer in the route's order"
    if not isinstance(outcome, Answered):
        why = outcome.attempts[-1].error if outcome.attempts else str(outcome)
        return 0, f"judge '{judge_key}' failed ({why}); {fallback}", None, result
    done = _completion(outcome)
    if done.label is None or done.label not in labels:
        return 0, (f"judge '{judge_key}' gave no valid answer ({done.text[:80]!r}); "
                   f"{fallback}"), None, result
    index = order[int(done.label) - 1]
    return index, (f"judge '{judge_key}' chose answer {done.label} of {len(labels)} (shown "
                   f"in a shuffled order): {answers[index].spec.key}"), done.label, result


def _by_picker(name: str, picker: Picker, query: str,
               texts: Sequence[str]) -> Plan[tuple[int, str, tuple[float, ...] | None]]:
    fallback = "fell back to the first answer in the route's order"
    try:  # an Offload: a slow picker runs off the event loop under adispatch
        value = yield Offload(partial(picker, query, list(texts)))
    except Exception as exc:  # the caller's code: recorded, and the answer still returned
        log.warning("picker %r raised %r; %s", name, exc, fallback)
        return 0, f"picker '{name}' raised {type(exc).__name__}: {exc}; {fallback}", None
    n = len(texts)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if 0 <= int(value) < n:  # numpy integers too
            return int(value), f"picker '{name}' chose index {int(value)}", None
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = list(value)  # a list, a tuple, a numpy array...
        if len(items) == n and all(isinstance(x, numbers.Real) and not isinstance(x, bool)
                                   and math.isfinite(x) for x in items):
            scores = tuple(float(x) for x in items)
            best = max(range(n), key=lambda i: (scores[i], -i))
            return best, f"picker '{name}' scored the answers; the best is index {best}", scores
    log.warning("picker %r returned %r (expected an index < %d or %d scores); %s",
                name, value, n, n, fallback)
    return 0, f"picker '{name}' returned an invalid value {value!r:.80}; {fallback}", None
