"""Running the gateway: uvicorn with graceful shutdown (in-flight streams drain for
`drain_seconds`), started by `semroute serve`; with `workers > 1`, `Supervisor` (uvicorn's,
with our signals) runs that many worker processes on one listening socket, each rebuilding
the app (`worker_app`). Signals: TERM/INT drain and exit 0; HUP re-reads gateway.yaml (one
process: swapped in place; workers: checked, then the workers are replaced one by one)."""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import os
import signal
from pathlib import Path
from socket import socket

import uvicorn
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from semroute.config import GatewaySettings
from semroute.gateway.access import reread
from semroute.gateway.app import create_app

log = logging.getLogger("semroute.gateway")

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
    config_path: str | None = None  # gateway.yaml, re-read by the supervisor on SIGHUP


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


def _stopped(signum: int, frame: object) -> None:
    """What uvicorn's re-raised SIGTERM/SIGINT does once the drain is over: nothing, so the
    process ends normally (exit 0, atexit handlers run) instead of dying by the signal."""


def ignore_signals_at_exit() -> None:
    """Ignore SIGTERM/SIGINT once the process is exiting (after the drain): Python puts the
    default action back for every signal it handled (not for ignored ones) while it
    finalises, so a late signal (the supervisor's SIGTERM reaching a worker that already
    drained) would otherwise end an exit 0 as a kill (-15)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        atexit.register(signal.signal, sig, signal.SIG_IGN)


def exit_0_after_drain() -> None:
    """TERM/INT end this serving process with 0 once uvicorn has drained it: uvicorn's
    re-raise of the caught signal does nothing (`_stopped`), and a late one is ignored."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)  # restored by uvicorn after the drain
    ignore_signals_at_exit()


def drain_timeout(settings: GatewaySettings) -> int:
    """uvicorn's `timeout_graceful_shutdown` (whole seconds) for `drain_seconds`, rounded up."""
    return math.ceil(settings.drain_seconds)


class GatewayConfig(uvicorn.Config):
    """uvicorn's Config, plus what a spawned worker process sets before its server starts
    (uvicorn calls `configure_logging` first thing in the child): SIGTERM or SIGINT (Ctrl-C
    reaches the whole process group) ends it with 0 after the drain, and SIGHUP is the
    supervisor's (a HUP to the process group is ignored). The `semroute` loggers write
    through uvicorn's handlers, at its level."""

    worker_signals = False  # set on the config the supervisor hands its workers

    def configure_logging(self) -> None:
        super().configure_logging()
        ours, theirs = logging.getLogger("semroute"), logging.getLogger("uvicorn")
        if not ours.handlers and theirs.handlers:  # our log lines next to uvicorn's
            for handler in theirs.handlers:
                ours.addHandler(handler)
            ours.setLevel(logging.getLogger("uvicorn.error").getEffectiveLevel())
        if self.worker_signals and multiprocessing.parent_process() is not None:
            exit_0_after_drain()
            signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _config(app: Starlette | str, host: str, port: int, settings: GatewaySettings,
            access_log: bool, log_level: str, workers: int = 1) -> GatewayConfig:
    return GatewayConfig(app, host=host, port=port, access_log=access_log,
                          log_level=log_level, lifespan="on", workers=workers,
                          factory=isinstance(app, str),
                          timeout_graceful_shutdown=drain_timeout(settings),
                          timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
                          server_header=False)


def server(routes: str | Path, index: str | Path, *, host: str = "127.0.0.1",
           port: int = 8080, profile: str | None = None,
           settings: GatewaySettings | None = None, access_log: bool = False,
           log_level: str = "info", redis_url: str | None = None,
           config_path: str | Path | None = None) -> uvicorn.Server:
    """A uvicorn Server for the gateway app (call `.run()`; SIGINT/SIGTERM stop it after
    in-flight requests finish, at most `drain_seconds`); `redis_url` puts the shared state
    (cooldowns, stickiness, budgets, rate limits) on that Redis; SIGHUP re-reads
    `config_path` (gateway.yaml) when given."""
    settings = settings or GatewaySettings()
    app = create_app(routes, index, profile=profile, settings=settings, redis_url=redis_url,
                     config_path=config_path)
    return uvicorn.Server(_config(app, host, port, settings, access_log, log_level))


def serve(routes: str | Path, index: str | Path, *, workers: int = 1, host: str = "127.0.0.1",
          port: int = 8080, profile: str | None = None,
          settings: GatewaySettings | None = None, access_log: bool = False,
          log_level: str = "info", redis_url: str | None = None,
          config_path: str | Path | None = None) -> int:
    """Run the gateway until SIGINT/SIGTERM; 0 after a drain, 3 when a worker failed to
    start, 1 when a worker ended badly. One worker: `server(...).run()` in this process.
    More: this process binds the socket and supervises `workers` spawned processes
    (`Supervisor`). SIGHUP re-reads `config_path` (gateway.yaml) in both modes."""
    settings = settings or GatewaySettings()
    if workers <= 1:
        exit_0_after_drain()
        server(routes, index, host=host, port=port, profile=profile, settings=settings,
               access_log=access_log, log_level=log_level, redis_url=redis_url,
               config_path=config_path).run()
        return 0
    spec = WorkerSpec(routes=str(Path(routes).resolve()), index=str(Path(index).resolve()),
                      profile=profile, settings=settings, redis_url=redis_url,
                      config_path=None if config_path is None else str(Path(config_path)
                                                                       .resolve()))
    config = _config(WORKER_APP, host, port, settings, access_log, log_level, workers)
    config.worker_signals = True
    supervisor = Supervisor(config, [config.bind_socket()], spec)
    supervisor.run()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        return STARTUP_FAILURE
    return 0 if all(code == 0 for code in supervisor.exits.values()) else 1


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor with the gateway's signals. TERM/INT: the listening socket
    is closed here at once (new connections are refused, not left in the backlog), then
    each worker drains and exits. HUP: gateway.yaml is re-read and checked here (a broken
    file is logged and nothing changes), then uvicorn replaces the workers one at a time,
    each new one ready before the old one drains, so no request fails."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket], spec: WorkerSpec) -> None:
        self.spec = spec
        self.exits: dict[int, int | None] = {}  # worker pid -> exit code, once joined
        os.environ[WORKER_ENV] = spec.model_dump_json()  # inherited by the spawned workers
        super().__init__(config, sockets)

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()  # the workers close their copies as they start draining

    def handle_hup(self) -> None:
        if self.should_exit.is_set():
            return
        if self.spec.config_path is None:
            log.info("semroute serve: SIGHUP: no --config to re-read; nothing to do")
            return
        new = reread(self.spec.config_path, self.spec.settings, start_only=())
        if new is None:
            return
        self.spec = self.spec.model_copy(update={"settings": new})
        os.environ[WORKER_ENV] = self.spec.model_dump_json()
        self.config.timeout_graceful_shutdown = drain_timeout(new)
        log.info("semroute serve: SIGHUP: replacing the workers one at a time")
        before = list(self.processes)
        super().handle_hup()
        done = sum(now is not was for now, was in zip(self.processes, before, strict=True))
        if done < len(before) and not self.should_exit.is_set():
            log.error("semroute serve: SIGHUP: %d of %d workers replaced; the others keep the "
                      "previous settings (a worker that restarts reads the new file): fix what "
                      "stopped the new worker (logged above), then send SIGHUP again",
                      done, len(before))

    def join_all(self) -> None:
        for process in self.processes:
            process.join()
            code = process.exitcode
            self.exits[process.pid or 0] = code
            log.log(logging.INFO if code == 0 else logging.ERROR,
                    "semroute serve: worker [%s] exited with code %s", process.pid, code)
