"""Running the gateway: uvicorn with graceful shutdown (in-flight streams drain for
`drain_seconds`), started by `semroute serve`."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from semroute.config import GatewaySettings
from semroute.gateway.app import create_app


def server(routes: str | Path, index: str | Path, *, host: str = "127.0.0.1",
           port: int = 8080, profile: str | None = None,
           settings: GatewaySettings | None = None, access_log: bool = False,
           log_level: str = "info", redis_url: str | None = None) -> uvicorn.Server:
    """A uvicorn Server for the gateway app (call `.run()`; SIGINT/SIGTERM stop it after
    in-flight requests finish, at most `drain_seconds`); `redis_url` puts the shared state
    (cooldowns, stickiness, budgets, rate limits) on that Redis."""
    settings = settings or GatewaySettings()
    app = create_app(routes, index, profile=profile, settings=settings, redis_url=redis_url)
    config = uvicorn.Config(app, host=host, port=port, access_log=access_log,
                            log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=int(settings.drain_seconds + 0.999),
                            server_header=False)
    return uvicorn.Server(config)
