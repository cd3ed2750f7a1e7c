"""A route's model chain as a plan: retries, failover and cooldowns, one attempt record each.

What a failure does depends on its `ErrorScope`: RETRY retries the same model with jittered
backoff (honouring Retry-After), then moves on; NEXT_MODEL moves on at once; both cool the
model down once it is given up. TOO_LONG moves on at once without a cooldown (the prompt, not
the model, is the problem). REQUEST is raised at once: no model will take the request.
Healthy models go first, cooling ones last; each model of the chain is tried once per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from semroute.config import ModelSpec, RouterSettings
from semroute.dispatching.attempts import Attempt
from semroute.dispatching.cooldowns import offloaded
from semroute.dispatching.state import DispatchState
from semroute.errors import AllModelsFailedError, ErrorScope, ProviderError
from semroute.providers import AsyncStream, Completion, Message, ModelCall, Plan, Sleep, Stream

MAX_BACKOFF_S = 10.0


@dataclass(frozen=True)
class Answered:
    """The model that answered, its completion (or open stream), and every attempt made."""

    spec: ModelSpec
    outcome: Completion | Stream | AsyncStream
    attempts: list[Attempt]


def call_chain(route: str, chain: Sequence[str], spec_of: Callable[[str], ModelSpec],
               messages: Sequence[Message], kwargs: dict[str, Any], stream: bool,
               state: DispatchState, settings: RouterSettings) -> Plan[Answered]:
    """Ask the chain's models in turn until one answers. Raises the request-level
    ProviderError (with `attempts`) or AllModelsFailedError."""
    attempts: list[Attempt] = []
    cd = state.cooldowns
    cooling = yield from offloaded(cd, cd.cooling, chain)
    for key in cd.order(chain, cooling):
        spec = spec_of(key)
        provider = state.provider(spec)
        for try_number in range(1, settings.attempts_per_model + 1):
            t0 = time.perf_counter()
            outcome = yield ModelCall(provider, messages, dict(kwargs), stream=stream)
            took = (time.perf_counter() - t0) * 1e3
            if not isinstance(outcome, ProviderError):
                attempts.append(Attempt(key, spec.provider, spec.model, try_number, True, took))
                if key in cooling:  # only a cooling model has a cooldown to end
                    yield from offloaded(cd, cd.succeeded, key)
                return Answered(spec, outcome, attempts)
            attempts.append(Attempt(key, spec.provider, spec.model, try_number, False, took,
                                    outcome.status, str(outcome), outcome.scope))
            if outcome.scope is ErrorScope.REQUEST:
                outcome.attempts = list(attempts)
                outcome.add_note(f"route '{route}', attempts:\n{describe(attempts)}")
                raise outcome
            if outcome.scope is ErrorScope.TOO_LONG:
                break  # next model; this one stays healthy
            if outcome.scope is ErrorScope.NEXT_MODEL or try_number == settings.attempts_per_model:
                yield from offloaded(cd, cd.failed, key)
                break
            yield Sleep(backoff(settings.backoff_seconds, try_number, outcome.retry_after,
                                state.jitter()))
    raise AllModelsFailedError(route, attempts)


def backoff(base_s: float, try_number: int, retry_after: float | None, jitter: float) -> float:
    """Exponential backoff with jitter, at least the server's Retry-After, at most 10 s."""
    wait = base_s * (2 ** (try_number - 1)) * jitter
    return float(min(max(wait, retry_after or 0.0), MAX_BACKOFF_S))


def describe(attempts: Sequence[Attempt]) -> str:
    """One line per attempt: model, try, and why it failed."""
    return "\n".join(f"  - {a.model_key} ({a.provider}:{a.model}) try {a.try_number}: "
                     f"{'ok' if a.ok else a.error}" for a in attempts)
