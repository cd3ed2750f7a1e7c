"""Sync and async share one implementation: logic that talks to models is written once as a
*plan*, a generator that yields effects (call a model, sleep, do blocking work, run plans at
once) and receives their outcomes. `run_sync` and `run_async` are the only two places that
perform them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
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


@dataclass(frozen=True)
class Offload:
    """Blocking work that is not a model call (file I/O, a lock, CPU-bound search): run inline
    by `run_sync`, in a worker thread by `run_async` so the event loop keeps serving. The
    outcome is `fn()`'s value; an exception it raises is raised at the `yield`."""

    fn: Callable[[], Any]


@dataclass(frozen=True)
class Parallel:
    """Run several plans at once: `run_sync` drives each in its own worker thread, `run_async`
    gathers them on the event loop. The outcome is a list in the plans' order holding each
    plan's return value, or the exception it raised (one failing plan never stops the others;
    the caller decides what a failure means)."""

    plans: tuple[Plan[Any], ...]


Effect = ModelCall | Sleep | Offload | Parallel
Plan = Generator[Effect, Any, T]


def run_sync(plan: Plan[T]) -> T:
    """Drive a plan with blocking calls."""
    try:
        effect = plan.send(None)
        while True:
            try:
                outcome = _perform_sync(effect)
            except Exception as exc:  # raised inside the plan, where it can be handled
                effect = plan.throw(exc)
                continue
            effect = plan.send(outcome)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def run_async(plan: Plan[T]) -> T:
    """Drive a plan with awaited calls; blocking work goes to a worker thread."""
    try:
        effect = plan.send(None)
        while True:
            try:
                outcome = await _perform_async(effect)
            except Exception as exc:  # raised inside the plan, where it can be handled
                effect = plan.throw(exc)
                continue
            effect = plan.send(outcome)
    except StopIteration as stop:
        result: T = stop.value
        return result


def _perform_sync(effect: Effect) -> Any:
    if isinstance(effect, Parallel):
        if not effect.plans:
            return []
        with ThreadPoolExecutor(max_workers=len(effect.plans),
                                thread_name_prefix="semroute-parallel") as pool:
            futures = [pool.submit(run_sync, plan) for plan in effect.plans]
            return [f.exception() or f.result() for f in futures]
    if isinstance(effect, Sleep):
        time.sleep(effect.seconds)
        return None
    if isinstance(effect, Offload):
        return effect.fn()
    p = effect.provider
    try:
        call = p.stream if effect.stream else p.complete
        return call(effect.messages, **effect.kwargs)
    except ProviderError as exc:  # an outcome the plan decides about, not a crash
        return exc


async def _perform_async(effect: Effect) -> Any:
    if isinstance(effect, Parallel):
        results = await asyncio.gather(*(run_async(plan) for plan in effect.plans),
                                       return_exceptions=True)
        for r in results:  # cancellation and the like are not outcomes: they propagate
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r
        return list(results)
    if isinstance(effect, Sleep):
        await asyncio.sleep(effect.seconds)
        return None
    if isinstance(effect, Offload):
        return await asyncio.to_thread(effect.fn)
    p = effect.provider
    try:
        if effect.stream:
            return await p.astream(effect.messages, **effect.kwargs)
        return await p.acomplete(effect.messages, **effect.kwargs)
    except ProviderError as exc:  # an outcome the plan decides about, not a crash
        return exc


def completed(outcome: Any) -> Completion | ProviderError:
    """Narrow a non-streaming outcome for type checkers."""
    assert isinstance(outcome, Completion | ProviderError), type(outcome)
    return outcome
