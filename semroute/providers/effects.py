"""Sync and async share one implementation: logic that talks to models is written once as a
*plan*, a generator that yields effects (call a model, sleep) and receives their outcomes.
`run_sync` and `run_async` are the only two places that perform them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from semroute.errors import ProviderError
from semroute.providers.base import Completion, Provider
from semroute.providers.request import Message

T = TypeVar("T")


@dataclass(frozen=True)
class ModelCall:
    """Ask `provider` for a completion (or a stream); the outcome is sent back into the plan:
    a `Completion`, a `Stream`/`AsyncStream`, or the `ProviderError` it raised."""

    provider: Provider[Any, Any]
    messages: Sequence[Message]
    kwargs: dict[str, Any] = field(default_factory=dict)
    stream: bool = False


@dataclass(frozen=True)
class Sleep:
    """Wait before the next step (retry backoff)."""

    seconds: float


Effect = ModelCall | Sleep
Plan = Generator[Effect, Any, T]


def run_sync(plan: Plan[T]) -> T:
    """Drive a plan with blocking calls."""
    outcome: Any = None
    try:
        while True:
            effect = plan.send(outcome)
            if isinstance(effect, Sleep):
                time.sleep(effect.seconds)
                outcome = None
                continue
            p = effect.provider
            try:
                call = p.stream if effect.stream else p.complete
                outcome = call(effect.messages, **effect.kwargs)
            except ProviderError as exc:
                outcome = exc
    except StopIteration as stop:
        result: T = stop.value
        return result


async def run_async(plan: Plan[T]) -> T:
    """Drive a plan with awaited calls."""
    outcome: Any = None
    try:
        while True:
            effect = plan.send(outcome)
            if isinstance(effect, Sleep):
                await asyncio.sleep(effect.seconds)
                outcome = None
                continue
            p = effect.provider
            try:
                if effect.stream:
                    outcome = await p.astream(effect.messages, **effect.kwargs)
                else:
                    outcome = await p.acomplete(effect.messages, **effect.kwargs)
            except ProviderError as exc:
                outcome = exc
    except StopIteration as stop:
        result: T = stop.value
        return result


def completed(outcome: Any) -> Completion | ProviderError:
    """Narrow a non-streaming outcome for type checkers."""
    assert isinstance(outcome, Completion | ProviderError), type(outcome)
    return outcome
