"""The gateway's Starlette app: OpenAI- and Anthropic-compatible chat endpoints in front of
`Dispatcher.adispatch`, the model list, health, readiness and metrics, and hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from semroute.config import GatewaySettings
from semroute.dispatching import Response as Answer
from semroute.errors import BudgetExceededError, GatewayError, ProviderError
from semroute.gateway import anthropic_wire, openai_wire
from semroute.gateway.access import (
    Access,
    RateLimiter,
    SharedRateLimiter,
    TokenBucketLimiter,
    rate_limit,
    reread,
)
from semroute.gateway.calls import Api, ChatCall, read_json
from semroute.gateway.failures import Failure, failure_of
from semroute.gateway.feedback_wire import answer_feedback, shadow_counters
from semroute.gateway.live import (
    LiveRouter,
    Serving,
    flush_journal,
    readiness_problems,
    settle_heap,
)
from semroute.gateway.metrics import GatewayMetrics
from semroute.gateway.options import dispatch_options
from semroute.gateway.tracing import Spans
from semroute.providers import aclose_clients
from semroute.routing import Router

log = logging.getLogger("semroute.gateway")
ROUTED_MODEL = "semroute"
DECISION_HEADERS = ["x-semroute-route", "x-semroute-method", "x-semroute-score",
                    "x-semroute-margin", "x-semroute-model", "x-semroute-request-id"]
PARSERS: dict[Api, Callable[[Any], ChatCall]] = {"openai": openai_wire.parse_openai,
                                                 "anthropic": anthropic_wire.parse_anthropic}


def decision_headers(r: Answer) -> dict[str, str]:
    """The decision behind an answer, as response headers."""
    d = r.decision
    return {"x-semroute-route": r.route or "-", "x-semroute-method": d.method,
            "x-semroute-score": f"{d.score:.4f}", "x-semroute-margin": f"{d.margin:.4f}",
            "x-semroute-model": r.model_key, "x-semroute-request-id": r.request_id}


def resolve_model(name: str, serving: Serving) -> str | None:
    """None for "route it" (`semroute` or the route set's folder name), else the catalogue
    key of a key or of a real model id; GatewayError 404 naming `model` otherwise."""
    routes = serving.router.routes
    if name in (ROUTED_MODEL, routes.directory.name):
        return None
    if name in routes.models:
        return name
    for key, entry in routes.models.items():
        if entry.model == name:
            return key
    raise GatewayError(404, f"model '{name}' is not '{ROUTED_MODEL}' (route it), a catalogue "
                            f"key or a model id of profile '{routes.profile}' (GET /v1/models "
                            f"lists them)", param="model")


class StreamEnd:
    """The end of one streamed answer, whichever way it comes (done, broken, the client gone,
    even before the first byte): close the upstream stream, count and trace it, once."""

    def __init__(self, gw: Gateway, r: Answer, api: Api, t0: int) -> None:
        self.gw, self.r, self.api, self.t0 = gw, r, api, t0
        self.status = "200"
        self._done = False

    async def finish(self) -> None:
        if self._done:
            return
        self._done = True
        with anyio.CancelScope(shield=True):  # a client that left: still close and trace
            await self.r.aclose()
        status = "client_closed" if self.r.stream_state == "closed early" else self.status
        self.gw.answered(self.r, self.api, self.t0, status)
        self.gw.metrics.in_flight.dec()


class AnswerStream(StreamingResponse):
    """A StreamingResponse that always ends its answer, even when the client left before
    the body started (the generator then never runs, so its own `finally` cannot)."""

    def __init__(self, content: AsyncIterator[bytes], ending: StreamEnd,
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.ending = ending

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.ending.finish()


class Gateway:
    """The app's state and handlers: one per app (metrics registry, limiter, live router)."""

    def __init__(self, live: LiveRouter, settings: GatewaySettings,
                 limiter: RateLimiter | None = None,
                 metrics: GatewayMetrics | None = None, spans: Spans | None = None) -> None:
        self.live, self.access = live, Access.of(settings)
        self._fixed_limiter = limiter
        self._local_limiter = TokenBucketLimiter()
        self._shared_limiter: tuple[object, RateLimiter] | None = None
        self.metrics = metrics or GatewayMetrics()
        self.spans = spans or Spans(settings.tracing)
        self.metrics.watch_cooldowns(self._cooling)
        self.metrics.watch_shared_state(self._shared_status)
        self.metrics.watch_shadow(partial(shadow_counters, live))

    @property
    def settings(self) -> GatewaySettings:
        return self.access.settings

    def reload_settings(self, path: str | Path) -> bool:
        """Re-read gateway.yaml (SIGHUP) and swap keys and limits in one assignment; a broken
        file is logged and the settings in force stay. True when swapped."""
        new = reread(path, self.access.settings)
        if new is not None:
            self.access = Access.of(new)
        self.metrics.settings_reloads.labels("refused" if new is None else "ok").inc()
        return new is not None

    def limiter(self, serving: Serving | None) -> RateLimiter:
        """The rate limiter: the one given, else Redis buckets when the router's shared state
        is Redis (made once per shared state), else the in-process buckets."""
        if self._fixed_limiter is not None:
            return self._fixed_limiter
        shared = None if serving is None else serving.dispatcher.state.shared
        if shared is None or shared.redis is None or shared.circuit is None:
            return self._local_limiter
        if self._shared_limiter is None or self._shared_limiter[0] is not shared:
            self._shared_limiter = (shared, SharedRateLimiter(shared.redis, shared.circuit,
                                                              self._local_limiter))
        return self._shared_limiter[1]

    def _shared_status(self) -> dict[str, Any] | None:
        s = self.live.current
        return None if s is None else s.dispatcher.state.shared.status()

    def _cooling(self) -> list[tuple[str, bool]]:
        s = self.live.current
        if s is None:
            return []
        cooldowns = s.dispatcher.cooldowns
        return [(k, cooldowns.is_cooling(k)) for k in s.router.routes.models]

    # ---- chat endpoints

    async def openai_chat(self, request: Request) -> Response:
        return await self._chat(request, "openai")

    async def anthropic_messages(self, request: Request) -> Response:
        return await self._chat(request, "anthropic")

    async def _chat(self, request: Request, api: Api) -> Response:
        t0 = time.time_ns()
        self.metrics.in_flight.inc()
        streaming = False
        try:
            try:
                r, call = await self._dispatch(request, api)
            except Exception as exc:
                failure = failure_of(exc)
                if failure.status == 500:  # ours, not the client's or a model's: log it
                    log.error("semroute serve: %s request failed", api, exc_info=exc)
                return self._failed(api, failure)
            if not call.stream:
                self.answered(r, api, t0, "200")
                body = openai_wire.completion_json(r) if api == "openai" else \
                    anthropic_wire.message_json(r)
                return JSONResponse(body, headers=self._headers(r))
            streaming = True
            ending = StreamEnd(self, r, api, t0)
            return AnswerStream(self._sse(call, ending), ending, headers=self._headers(r),
                                media_type="text/event-stream")
        finally:
            if not streaming:
                self.metrics.in_flight.dec()

    async def _dispatch(self, request: Request, api: Api) -> tuple[Answer, ChatCall]:
        access = self.access  # one request, one version of the settings
        s, client = access.settings, access.keys.authenticate(request.headers)
        limiter = self.limiter(self.live.current)
        try:
            limited = (client.rate_limit or s.default_rate_limit) is not None
            if limited and getattr(limiter, "blocking", False):  # Redis: off the event loop
                await anyio.to_thread.run_sync(rate_limit, limiter, s, client)
            else:
                rate_limit(limiter, s, client)
        except GatewayError:
            self.metrics.rate_limited.labels(client.name).inc()
            raise
        call = PARSERS[api](await read_json(request, s.limits.max_body_bytes))
        if len(call.messages) > s.limits.max_messages:
            raise GatewayError(413, f"{len(call.messages)} messages is over the limit of "
                                    f"{s.limits.max_messages} (limits.max_messages)",
                               param="messages")
        cap = s.limits.max_tokens_cap
        if cap is not None and call.max_tokens > cap:
            raise GatewayError(400, f"field 'max_tokens': {call.max_tokens} is over this "
                                    f"gateway's cap of {cap}", param="max_tokens")
        serving = self.live.current
        if serving is None:
            raise GatewayError(503, "the gateway is starting: no router loaded yet")
        model = resolve_model(call.model, serving)
        options = dispatch_options(call, request.headers, client)
        if s.limits.upstream_timeout_seconds is not None:
            options["timeout"] = s.limits.upstream_timeout_seconds
        try:
            r = await serving.dispatcher.adispatch(
                call.messages, system=call.system, max_tokens=call.max_tokens,
                stream=call.stream, model=model, **options, **call.extra)
        except BudgetExceededError:
            self.metrics.budget_refusals.labels(client.name).inc()
            raise
        return r, call

    async def _sse(self, call: ChatCall, ending: StreamEnd) -> AsyncIterator[bytes]:
        r, api = ending.r, ending.api
        writer = openai_wire.ChunkWriter(r, call.include_usage) if api == "openai" else \
            anthropic_wire.EventWriter(r)
        try:
            yield writer.start()
            async for item in r.aevents():  # text and tool-call fragments, as they come
                yield writer.text(item) if isinstance(item, str) else writer.tool(item)
            yield writer.end()
        except ProviderError as exc:  # the stream broke after text: say so in-band
            ending.status = "stream_interrupted"
            body = self._error_body(api, failure_of(exc))
            yield (b"data: " + json.dumps(body).encode() + b"\n\n") if api == "openai" else \
                anthropic_wire.event("error", {"error": body["error"]})
        finally:
            await ending.finish()

    def _headers(self, r: Answer) -> dict[str, str]:
        if not self.settings.expose_decision_headers:
            return {"x-semroute-request-id": r.request_id}
        return decision_headers(r)

    def answered(self, r: Answer, api: Api, t0: int, status: str) -> None:
        """Count, measure and span an answer (a stream's when it ended)."""
        self.metrics.requests.labels(api, status).inc()
        self.metrics.observe(r)
        self.spans.record(r, api, t0, time.time_ns())

    def _error_body(self, api: Api, f: Failure) -> dict[str, Any]:
        render = openai_wire.error_json if api == "openai" else anthropic_wire.error_json
        return render(f.status, f.message, param=f.param, attempts=f.attempts,
                      request_id=f.request_id)

    def _failed(self, api: Api, f: Failure) -> JSONResponse:
        self.metrics.requests.labels(api, str(f.status)).inc()
        for a in f.attempts or []:
            if not a["ok"]:
                self.metrics.upstream_errors.labels(a["model_key"], a["scope"] or "unknown").inc()
        headers = {} if f.request_id is None else {"x-semroute-request-id": f.request_id}
        if f.retry_after is not None:
            headers["retry-after"] = str(max(1, round(f.retry_after + 0.499)))
        return JSONResponse(self._error_body(api, f), status_code=f.status, headers=headers)

    async def feedback(self, request: Request) -> Response:
        """`POST /v1/feedback` (feedback_wire.py): store feedback on an answered request."""
        status, body = await answer_feedback(request, self.access.keys, self.live, partial(
            read_json, request, self.settings.limits.max_body_bytes))
        self.metrics.requests.labels("feedback", str(status)).inc()
        return JSONResponse(body, status_code=status)

    # ---- the rest

    async def models(self, request: Request) -> Response:
        """`GET /v1/models`: `semroute` (route it), then every catalogue key; both SDKs'
        list shapes at once."""
        serving = self.live.current
        names = [ROUTED_MODEL] + ([] if serving is None else list(serving.router.routes.models))
        data = [{"id": n, "object": "model", "type": "model", "created": 0,
                 "created_at": "1970-01-01T00:00:00Z", "display_name": n,
                 "owned_by": "semroute"} for n in names]
        return JSONResponse({"object": "list", "data": data, "has_more": False,
                             "first_id": names[0], "last_id": names[-1]})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """200 once a router is loaded and every route has a model with its key set."""
        serving = self.live.current
        problems = ["no router loaded"] if serving is None else readiness_problems(
            serving.router)
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        assert serving is not None
        shared = serving.dispatcher.state.shared.status()  # down: still ready (fallbacks)
        return JSONResponse({"status": "ready", "build_id": serving.build_id,
                             "routes": len(serving.router.routes.routes),
                             "reload_error": self.live.last_error,
                             "shared_state": {"backend": shared["backend"],
                                              "up": shared["up"]}})

    async def metrics_endpoint(self, request: Request) -> Response:
        body = await anyio.to_thread.run_sync(self.metrics.render)  # may read Redis
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def create_app(routes: str | Path = "routes", index: str | Path = "indexes/default", *,
               profile: str | None = None, settings: GatewaySettings | None = None,
               limiter: RateLimiter | None = None,
               load: Callable[[], Router] | None = None,
               span_exporter: Any = None, redis_url: str | None = None,
               config_path: str | Path | None = None) -> Starlette:
    """The gateway app. The router is loaded at start-up (the server listens only once it is
    ready) and reloaded whenever the index's CURRENT names a new build. `load` replaces
    `Router.load(routes, index, profile=profile)`; `limiter` the rate limiter (default: Redis
    buckets when the shared state is Redis, else in-process); `span_exporter` (an
    OpenTelemetry SpanExporter) the exporter `tracing` names; `redis_url` puts every kind of
    shared state on that Redis whatever `router.shared_state.backend` says. `config_path`
    (gateway.yaml): SIGHUP re-reads it (main thread only; `Gateway.reload_settings`)."""
    settings = settings or GatewaySettings()
    index = Path(index)

    def default_load() -> Router:
        return Router.load(routes, index, profile=profile)

    metrics = GatewayMetrics()

    loads = [0]

    def swapped(serving: Serving) -> None:
        if loads[0]:  # not the start-up load
            metrics.reloads.labels("ok").inc()
        loads[0] += 1
        metrics.serving(serving.build_id)

    live = LiveRouter(load or default_load, index, on_swap=swapped,
                      on_fail=lambda _: metrics.reloads.labels("failed").inc(),
                      redis_url=redis_url)
    gw = Gateway(live, settings, limiter, metrics, Spans(settings.tracing, span_exporter))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(gw.live.load_now)
        settle_heap()  # before the first request: nothing to stall yet
        watcher = asyncio.create_task(gw.live.watch(settings.reload_poll_seconds, settle_heap))
        hup = config_path if threading.current_thread() is threading.main_thread() else None
        if hup is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, gw.reload_settings, hup)
        try:
            yield
        finally:
            if hup is not None:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await anyio.to_thread.run_sync(flush_journal, gw.live.current)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await aclose_clients()  # the upstream sessions, while the loop still runs
            gw.spans.shutdown()

    middleware = [Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                             allow_methods=["GET", "POST"], allow_headers=["*"],
                             expose_headers=DECISION_HEADERS)] if settings.cors_origins else []
    app = Starlette(routes=[
        Route("/v1/chat/completions", gw.openai_chat, methods=["POST"]),
        Route("/v1/messages", gw.anthropic_messages, methods=["POST"]),
        Route("/v1/models", gw.models, methods=["GET"]),
        Route("/v1/feedback", gw.feedback, methods=["POST"]),
        Route("/healthz", gw.healthz, methods=["GET"]),
        Route("/readyz", gw.readyz, methods=["GET"]),
        Route("/metrics", gw.metrics_endpoint, methods=["GET"]),
    ], middleware=middleware, lifespan=lifespan)
    app.state.gateway = gw
    return app
