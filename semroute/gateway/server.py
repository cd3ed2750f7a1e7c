"""Running the gateway: uvicorn with graceful shutdown (in-flight streams drain for
`drain_seconds`), started by `semroute serve`; with `workers > 1`, uvicorn's supervisor runs
that many worker processes on one listening socket, each rebuilding the app (`worker_app`)."""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from semroute.config import GatewaySettings
from semroute.gateway.app import create_app

WORKER_ENV = "SEMROUTE_SERVE_WORKER"  # the JSON WorkerSpec every worker process reads
WORKER_APP = "semroute.gateway.server:worker_app"
HEALTHCHECK_SECONDS = 20  # a worker importing under load on a shared machine is not hung


class WorkerSpec(BaseModel):
    """What a worker process needs to rebuild the gateway app: passed from `semroute serve`
    through the environment (uvicorn's spawned workers import the app by name)."""

    model_config = ConfigDict(extra="forbid")

    routes: str
    index: str
    profile: str | None = None
    settings: GatewaySettings
    redis_url: str | None = None


def worker_app() -> Starlette:
    """The app of one worker process (uvicorn factory): built from `$SEMROUTE_SERVE_WORKER`,
    so each worker loads its own router and polls CURRENT for hot reload itself."""
    raw = os.environ.get(WORKER_ENV)
    if not raw:
        raise RuntimeError(f"${WORKER_ENV} is not set: worker_app is started by "
                           f"`semroute serve --workers N`, not directly")
    spec = WorkerSpec.model_validate_json(raw)
    return create_app(spec.routes, spec.index, profile=spec.profile, settings=spec.settings,
                      redis_url=spec.redis_url)


def _config(app: Starlette | str, host: str, port: int, settings: GatewaySettings,
            access_log: bool, log_level: str, workers: int = 1) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, access_log=access_log,
                          log_level=log_level, lifespan="on", workers=workers,
                          factory=isinstance(app, str),
                          timeout_graceful_shutdown=int(settings.drain_seconds + 0.999),
                          timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
                          server_header=False)


def server(routes: str | Path, index: str | Path, *, host: str = "127.0.0.1",
           port: int = 8080, profile: str | None = None,
           settings: GatewaySettings | None = None, access_log: bool = False,
           log_level: str = "info", redis_url: str | None = None) -> uvicorn.Server:
    """A uvicorn Server for the gateway app (call `.run()`; SIGINT/SIGTERM stop it after
    in-flight requests finish, at most `drain_seconds`); `redis_url` puts the shared state
    (cooldowns, stickiness, budgets, rate limits) on that Redis."""
    settings = settings or GatewaySettings()
    app = create_app(routes, index, profile=profile, settings=settings, redis_url=redis_url)
    return uvicorn.Server(_config(app, host, port, settings, access_log, log_level))


def serve(routes: str | Path, index: str | Path, *, workers: int = 1, host: str = "127.0.0.1",
          port: int = 8080, profile: str | None = None,
          settings: GatewaySettings | None = None, access_log: bool = False,
          log_level: str = "info", redis_url: str | None = None) -> int:
    """Run the gateway until SIGINT/SIGTERM; 0, or 3 when a worker failed to start. One
    worker: `server(...).run()` in this process. More: this process binds the socket and
    supervises `workers` spawned processes (restarting one that dies); SIGTERM makes each
    drain its in-flight requests, then stops it."""
    settings = settings or GatewaySettings()
    if workers <= 1:
        server(routes, index, host=host, port=port, profile=profile, settings=settings,
               access_log=access_log, log_level=log_level, redis_url=redis_url).run()
        return 0
    spec = WorkerSpec(routes=str(Path(routes).resolve()), index=str(Path(index).resolve()),
                      profile=profile, settings=settings, redis_url=redis_url)
    os.environ[WORKER_ENV] = spec.model_dump_json()  # inherited by the spawned workers
    config = _config(WORKER_APP, host, port, settings, access_log, log_level, workers)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    return STARTUP_FAILURE if failed else 0
