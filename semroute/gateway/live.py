"""Hot reload: the router being served, replaced when `semroute build` switches the index's
CURRENT. A new router is loaded off the event loop and swapped in one assignment; requests
hold the `Serving` they started with, so in-flight answers finish on the old one."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from semroute.dispatching import Dispatcher, DispatchState
from semroute.routing import Router

log = logging.getLogger("semroute.gateway")
FLUSH_S = 10.0  # at most this long at shutdown for the journal writer


@dataclass(frozen=True)
class Serving:
    """One loaded router and the dispatcher over it; immutable, swapped whole."""

    router: Router
    dispatcher: Dispatcher
    build_id: str
    loaded_at: float


def current_build_id(index: Path) -> str | None:
    """The build id CURRENT names now (None if unreadable): one small read, no parsing."""
    try:
        return (index / "CURRENT").read_text().strip() or None
    except OSError:
        return None


class LiveRouter:
    """The `Serving` of the moment. `load` makes a Router (from routes and index folders);
    `state` makes the dispatch state shared across reloads while the router settings stay the
    same (cooldowns, provider clients and the trace writer survive a reload). `redis_url`
    (`semroute serve --redis`) puts the shared state on that Redis."""

    def __init__(self, load: Callable[[], Router], index: Path,
                 on_swap: Callable[[Serving], None] | None = None,
                 on_fail: Callable[[str], None] | None = None,
                 redis_url: str | None = None) -> None:
        self._load = load
        self.redis_url = redis_url
        self.index = index
        self._on_swap = on_swap
        self._on_fail = on_fail
        self._serving: Serving | None = None
        self.last_error: str | None = None
        self._failed_build: str | None = None

    @property
    def current(self) -> Serving | None:
        return self._serving

    def _make(self, previous: Serving | None) -> Serving:
        router = self._load()
        settings = router.routes.settings
        shared = None if self.redis_url is None else type(settings.shared_state).model_validate(
            {**settings.shared_state.model_dump(), "backend": "redis", "url": self.redis_url})
        if previous is None:
            state = DispatchState.create(settings, shared=shared)
        elif previous.router.routes.settings == settings:
            state = previous.dispatcher.state
        else:  # new settings, new state; the idle pre-scoring thread carries over
            state = DispatchState.create(settings, shared=shared)
            state.prescorer = previous.dispatcher.state.prescorer
        dispatcher = Dispatcher(router, state=state)
        return Serving(router, dispatcher, router.index.manifest.build_id, time.time())

    def load_now(self) -> Serving:
        """Load synchronously (at start-up); raises what `Router.load` raises."""
        serving = self._make(self._serving)
        self._swap(serving)
        return serving

    def _swap(self, serving: Serving) -> None:
        self._serving = serving  # one assignment: a request sees the old or the new, whole
        self.last_error = None
        if self._on_swap is not None:
            self._on_swap(serving)

    async def check(self) -> bool:
        """Reload if CURRENT names another build than the one served (and than one that
        already failed to load). True when a new router was swapped in."""
        build = current_build_id(self.index)
        serving = self._serving
        if build is None or serving is None or build in (serving.build_id, self._failed_build):
            return False
        try:
            new = await asyncio.to_thread(self._make, serving)
        except Exception as exc:  # keep serving the old router; try again on the next build
            self._failed_build, self.last_error = build, f"{type(exc).__name__}: {exc}"
            log.warning("semroute serve: build %s not loaded, still serving %s: %s", build,
                        serving.build_id, self.last_error)
            if self._on_fail is not None:
                self._on_fail(self.last_error)
            raise
        self._failed_build = None
        self._swap(new)
        log.info("semroute serve: now serving build %s (was %s)", new.build_id,
                 serving.build_id)
        return True

    async def watch(self, every_s: float, settle: Callable[[], None] | None = None) -> None:
        """Poll CURRENT every `every_s` seconds until cancelled; `settle()` runs one poll after
        a swap (the old router's requests have ended by then)."""
        swapped = False
        while True:
            await asyncio.sleep(every_s)
            if swapped and settle is not None:
                settle()
            swapped = False
            with contextlib.suppress(Exception):  # logged in check(); the loop goes on
                swapped = await self.check()


def settle_heap() -> None:
    """Collect, then freeze what is alive (the router, the libraries: ~120k objects) out of the
    garbage collector's view: a full collection walks every tracked object, rescanning the
    same long-lived ones each time (overloaded, 108-176 ms of stalled event loop each; frozen,
    11-52 ms: ARCHITECTURE.md, the gateway's "Performance").
    Called at start-up and one poll after each reload, so a replaced router is unfrozen and
    collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def flush_journal(serving: Serving | None, timeout: float = FLUSH_S) -> None:
    """Wait (at most `timeout` s) until the journal and outcome rows of answered requests are
    written: at shutdown, after the drain, so a drained stream's trace is not lost with the
    process (the background writer is a daemon thread)."""
    recorder = None if serving is None else serving.dispatcher.state.recorder
    if recorder is not None and not recorder.join(timeout):
        log.warning("semroute serve: journal writes still pending after %.0f s at shutdown",
                    timeout)


def readiness_problems(router: Router) -> list[str]:
    """Problems that keep the gateway from being ready: routes none of whose models has its
    API key in the environment (keyless local servers need none)."""
    problems: list[str] = []
    models = router.routes.models
    for route in router.routes.routes:
        ok = False
        for key in route.models:
            entry = models[key]
            env = entry.api_key_env or (None if entry.base_url else
                                        f"{entry.provider.upper()}_API_KEY")
            ok = ok or env is None or bool(os.environ.get(env))
        if not ok:
            problems.append(f"route '{route.name}': no model of {list(route.models)} has its "
                            f"API key set")
    return problems
