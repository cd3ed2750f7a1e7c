"""`semroute serve`: an OpenAI- and Anthropic-compatible HTTP gateway in front of the router
and dispatcher, with client keys, rate limits, metrics, tracing and hot reload.

Modules: `app` (the Starlette app and handlers), `openai_wire` / `anthropic_wire` (the two
wire formats), `calls` (the parsed request), `options` (fields and headers to dispatch
options), `access` (client keys, rate limits, settings re-read on SIGHUP), `failures`
(errors to HTTP), `live` (hot reload), `metrics` (Prometheus), `tracing` (OpenTelemetry),
`server` (uvicorn, signals).
"""

from __future__ import annotations

from semroute.gateway.access import ClientKeys, RateLimiter, TokenBucketLimiter
from semroute.gateway.app import DECISION_HEADERS, ROUTED_MODEL, Gateway, create_app
from semroute.gateway.calls import ChatCall
from semroute.gateway.live import LiveRouter, Serving
from semroute.gateway.metrics import GatewayMetrics
from semroute.gateway.options import dispatch_options
from semroute.gateway.server import serve, worker_app
from semroute.gateway.server import server as make_server

__all__ = [
    "DECISION_HEADERS",
    "ROUTED_MODEL",
    "ChatCall",
    "ClientKeys",
    "Gateway",
    "GatewayMetrics",
    "LiveRouter",
    "RateLimiter",
    "Serving",
    "TokenBucketLimiter",
    "create_app",
    "dispatch_options",
    "make_server",
    "serve",
    "worker_app",
]
