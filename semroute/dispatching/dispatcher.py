"""`dispatch()`: decide where a request goes, then call that route's model chain.

Retryable failures (429, 5xx, timeouts, refused connections) are retried with jittered
backoff, then the next model of the chain is tried; a model that keeps failing is cooled down
so later requests skip it. Non-retryable failures (400, 401/403) are raised at once. Sync and
async dispatch run the same plan (see `effects.py`).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from semroute.dispatching.attempts import Attempt
from semroute.errors import AllModelsFailedError, NoRouteError, SemrouteError
from semroute.providers import (
    AsyncStream,
    Completion,
    Message,
    ModelCall,
    ModelSpec,
    Plan,
    Provider,
    ProviderError,
    Sleep,
    Stream,
    Usage,
    make_provider,
    run_async,
    run_sync,
)
from semroute.routing import Decision, Router
from semroute.telemetry import JsonlSink, TraceSink


@dataclass
class Response:
    """The answer and everything about how it was obtained.

    With `stream=True`, iterate the response (`for chunk in r` / `async for chunk in r`) to
    receive the text; `text`, `usage`, `cost_usd` and the trace are complete when it ends.
    Without streaming, iterating yields the whole text once.
    """

    request_id: str
    route: str
    model_key: str
    model: str
    provider: str
    text: str
    usage: Usage
    cost_usd: float
    finish_reason: str | None
    latency_ms: dict[str, float]
    attempts: list[Attempt]
    decision: Decision
    _stream: Stream | AsyncStream | None = field(default=None, repr=False)
    _on_done: Any = field(default=None, repr=False)

    def __iter__(self) -> Iterator[str]:
        if self._stream is None:
            yield self.text
            return
        assert isinstance(self._stream, Stream), "use `async for` on an async dispatch"
        t0 = time.perf_counter()
        yield from self._stream
        self._finish(self._stream.final(), t0)

    async def __aiter__(self) -> AsyncIterator[str]:
        if self._stream is None:
            yield self.text
            return
        assert isinstance(self._stream, AsyncStream), "use `for` on a sync dispatch"
        t0 = time.perf_counter()
        async for chunk in self._stream:
            yield chunk
        self._finish(await self._stream.final(), t0)

    def _finish(self, final: Completion, t0: float) -> None:
        self.text, self.usage, self.finish_reason = final.text, final.usage, final.finish_reason
        self.latency_ms["stream"] = (time.perf_counter() - t0) * 1e3
        self._stream = None
        if self._on_done is not None:
            self._on_done(self)


class Cooldowns:
    """Models that failed recently, and until when they are skipped."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def order(self, keys: Sequence[str]) -> list[str]:
        """Healthy models in chain order; cooling ones only if nothing else is left."""
        now = time.monotonic()
        with self._lock:
            healthy = [k for k in keys if self._until.get(k, 0.0) <= now]
            cooling = sorted((k for k in keys if k not in healthy), key=lambda k: self._until[k])
        return healthy or cooling

    def failed(self, key: str) -> None:
        with self._lock:
            self._until[key] = time.monotonic() + self.seconds

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._until.pop(key, None)


def latest_user_turn(messages: Sequence[Message]) -> str:
    """What a conversation is routed on, for now: the last user message."""
    for m in reversed(messages):
        if m.get("role") == "user" and m.get("content", "").strip():
            return m["content"]
    raise SemrouteError("the messages contain no user turn to route on")


class Dispatcher:
    """Decides and calls models for one `Router`: holds providers, cooldowns and the trace."""

    def __init__(self, router: Router, *, trace: TraceSink | str | Path | None = None,
                 include_query: bool | None = None, rng: random.Random | None = None) -> None:
        s = router.routes.settings
        self.router = router
        trace = trace if trace is not None else s.trace_path
        self.trace: TraceSink | None = JsonlSink(trace) if isinstance(trace, str | Path) \
            else trace
        self.include_query = s.trace_include_query if include_query is None else include_query
        self.cooldowns = Cooldowns(s.cooldown_seconds)
        self._providers: dict[str, Provider[Any, Any]] = {}
        self._rng = rng or random.Random()

    def dispatch(self, request: str | Sequence[Message], *, system: str | None = None,
                 max_tokens: int = 512, stream: bool = False, **kwargs: Any) -> Response:
        """Route `request` (a query or chat messages) and return the model's answer."""
        return run_sync(self._plan(request, system, max_tokens, stream, kwargs))

    async def adispatch(self, request: str | Sequence[Message], *, system: str | None = None,
                        max_tokens: int = 512, stream: bool = False,
                        **kwargs: Any) -> Response:
        """Async `dispatch`."""
        return await run_async(self._plan(request, system, max_tokens, stream, kwargs))

    def provider(self, key: str) -> Provider[Any, Any]:
        if key not in self._providers:
            self._providers[key] = make_provider(self._spec(key))
        return self._providers[key]

    def _spec(self, key: str) -> ModelSpec:
        return self.router.routes.models[key].spec(key)

    def _backoff(self, try_number: int, retry_after: float | None) -> float:
        base = self.router.routes.settings.backoff_seconds * (2 ** (try_number - 1))
        wait = base * (0.5 + self._rng.random())  # jitter: 50-150 %
        return float(min(max(wait, retry_after or 0.0), 10.0))

    def _plan(self, request: str | Sequence[Message], system: str | None, max_tokens: int,
              stream: bool, kwargs: dict[str, Any]) -> Plan[Response]:
        t0 = time.perf_counter()
        request_id = uuid.uuid4().hex
        messages: list[Message] = [{"role": "user", "content": request}] \
            if isinstance(request, str) else list(request)
        decision = yield from self.router.decide_plan(latest_user_turn(messages))
        decided = time.perf_counter()
        if decision.route is None:
            self._write(request_id, decision, None, [], {"decide": (decided - t0) * 1e3},
                        error="no route")
            raise NoRouteError(f"no route for the query ({decision.reason}); set "
                               f"router.default_route in models.yaml")
        route = self.router.routes.route(decision.route)
        system_text = "\n\n".join(x for x in (route.system_prompt, system) if x) or None
        s = self.router.routes.settings
        attempts: list[Attempt] = []
        for key in self.cooldowns.order(route.models):
            spec, provider = self._spec(key), self.provider(key)
            for try_number in range(1, s.attempts_per_model + 1):
                t_call = time.perf_counter()
                outcome = yield ModelCall(provider, messages, dict(
                    kwargs, system=system_text, max_tokens=max_tokens), stream=stream)
                took = (time.perf_counter() - t_call) * 1e3
                if isinstance(outcome, ProviderError):
                    attempts.append(Attempt(key, spec.provider, spec.model, try_number, False,
                                            took, outcome.status, str(outcome)))
                    if not outcome.retryable:
                        self._write(request_id, decision, None, attempts,
                                    {"decide": (decided - t0) * 1e3}, error=str(outcome))
                        raise outcome
                    if try_number < s.attempts_per_model:
                        yield Sleep(self._backoff(try_number, outcome.retry_after))
                    continue
                attempts.append(Attempt(key, spec.provider, spec.model, try_number, True, took))
                self.cooldowns.succeeded(key)
                return self._response(request_id, decision, spec, outcome, attempts,
                                      {"decide": (decided - t0) * 1e3,
                                       "model": (time.perf_counter() - decided) * 1e3})
            self.cooldowns.failed(key)
        self._write(request_id, decision, None, attempts, {"decide": (decided - t0) * 1e3},
                    error="all models failed")
        raise AllModelsFailedError(route.name, attempts)

    def _response(self, request_id: str, decision: Decision, spec: ModelSpec,
                  outcome: Completion | Stream | AsyncStream, attempts: list[Attempt],
                  latency: dict[str, float]) -> Response:
        assert decision.route is not None
        streaming = not isinstance(outcome, Completion)
        r = Response(
            request_id=request_id, route=decision.route, model_key=spec.key, model=spec.model,
            provider=spec.provider, text="" if streaming else outcome.text,  # type: ignore[union-attr]
            usage=Usage() if streaming else outcome.usage,  # type: ignore[union-attr]
            cost_usd=0.0, finish_reason=None if streaming else outcome.finish_reason,  # type: ignore[union-attr]
            latency_ms=latency, attempts=attempts, decision=decision,
            _stream=outcome if streaming else None)  # type: ignore[arg-type]
        r._on_done = lambda resp: self._done(resp, spec)
        if not streaming:
            self._done(r, spec)
        return r

    def _done(self, r: Response, spec: ModelSpec) -> None:
        r.cost_usd = spec.cost(r.usage)
        r.latency_ms["total"] = sum(v for k, v in r.latency_ms.items() if k != "total")
        self._write(r.request_id, r.decision, r, r.attempts, r.latency_ms)

    def _write(self, request_id: str, decision: Decision, r: Response | None,
               attempts: list[Attempt], latency: dict[str, float],
               error: str | None = None) -> None:
        if self.trace is None:
            return
        record: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": request_id, "route": decision.route, "method": decision.method,
            "score": decision.score, "margin": decision.margin, "reason": decision.reason,
            "candidates": [{"route": c.route, "score": c.score}
                           for c in decision.candidates[:5]],
            "classifier": None if decision.classifier is None else {
                "model": decision.classifier.model, "answer": decision.classifier.answer,
                "latency_ms": decision.classifier.latency_ms,
                "input_tokens": decision.classifier.input_tokens,
                "output_tokens": decision.classifier.output_tokens,
                "cached": decision.classifier.cached, "error": decision.classifier.error},
            "model_key": r.model_key if r else None, "model": r.model if r else None,
            "provider": r.provider if r else None,
            "attempts": [a.__dict__ for a in attempts],
            "input_tokens": r.usage.input_tokens if r else 0,
            "output_tokens": r.usage.output_tokens if r else 0,
            "cost_usd": r.cost_usd if r else 0.0,
            "latency_ms": {**{f"route.{k}": v for k, v in decision.timings_ms.items()},
                           **latency},
            "error": error,
        }
        if self.include_query:
            record["query"] = decision.query
        self.trace.write(record)


_DISPATCHERS: weakref.WeakKeyDictionary[Router, Dispatcher] = weakref.WeakKeyDictionary()
_DEFAULT: list[Router] = []
_LOCK = threading.Lock()


def dispatcher_for(router: Router | None) -> Dispatcher:
    """The shared `Dispatcher` of a router (the default router: ./routes, ./indexes/default)."""
    with _LOCK:
        if router is None:
            if not _DEFAULT:
                _DEFAULT.append(Router.load())
            router = _DEFAULT[0]
        d = _DISPATCHERS.get(router)
        if d is None:
            d = _DISPATCHERS[router] = Dispatcher(router)
        return d


def dispatch(request: str | Sequence[Message], *, router: Router | None = None,
             system: str | None = None, max_tokens: int = 512, stream: bool = False,
             **kwargs: Any) -> Response:
    """Route a query (or chat messages, routed on the latest user turn) and answer it."""
    return dispatcher_for(router).dispatch(request, system=system, max_tokens=max_tokens,
                                           stream=stream, **kwargs)


async def adispatch(request: str | Sequence[Message], *, router: Router | None = None,
                    system: str | None = None, max_tokens: int = 512, stream: bool = False,
                    **kwargs: Any) -> Response:
    """Async `dispatch`, sharing its implementation."""
    return await dispatcher_for(router).adispatch(request, system=system,
                                                  max_tokens=max_tokens, stream=stream,
                                                  **kwargs)
