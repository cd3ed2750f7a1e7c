"""The module-level `dispatch()` / `adispatch()` / `feedback()` / `afeedback()` and the
per-router state they share.

The registry maps each router (weakly) to its `DispatchState`, which holds no reference to the
router: repeated calls with one router share cooldowns, provider clients and the trace sink,
and a router the caller drops can be garbage collected.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from semroute.config import RouteSet, load_routes
from semroute.dispatching.dispatcher import Dispatcher
from semroute.dispatching.journaling import feedback_plan
from semroute.dispatching.response import Response
from semroute.dispatching.state import DispatchState
from semroute.errors import UnknownRequestError
from semroute.outcomes import FeedbackEntry, OutcomeStore, store_path
from semroute.providers import Message, Plan, run_async, run_sync
from semroute.routing import Router
from semroute.telemetry import JsonlSink, TraceWriter

_STATES: weakref.WeakKeyDictionary[Router, DispatchState] = weakref.WeakKeyDictionary()
_DEFAULT: list[Router] = []
_LOCK = threading.Lock()


def dispatcher_for(router: Router | None) -> Dispatcher:
    """A `Dispatcher` sharing the router's state with every other call for that router
    (router None: the default router, ./routes with ./indexes/default, loaded once)."""
    with _LOCK:
        if router is None:
            if not _DEFAULT:
                _DEFAULT.append(Router.load())
            router = _DEFAULT[0]
        state = _STATES.get(router)
        if state is None:
            state = _STATES[router] = DispatchState.create(router.routes.settings)
    return Dispatcher(router, state=state)


def dispatch(request: str | Sequence[Message], *, router: Router | None = None,
             system: str | None = None, max_tokens: int = 512, stream: bool = False,
             metadata: Mapping[str, str] | None = None, **kwargs: Any) -> Response:
    """Route a query (or chat messages, routed on the latest user turn) and answer it;
    `metadata` is matched by route-file rules."""
    return dispatcher_for(router).dispatch(request, system=system, max_tokens=max_tokens,
                                           stream=stream, metadata=metadata, **kwargs)


async def adispatch(request: str | Sequence[Message], *, router: Router | None = None,
                    system: str | None = None, max_tokens: int = 512, stream: bool = False,
                    metadata: Mapping[str, str] | None = None, **kwargs: Any) -> Response:
    """Async `dispatch`, sharing its implementation and its per-router state."""
    return await dispatcher_for(router).adispatch(request, system=system,
                                                  max_tokens=max_tokens, stream=stream,
                                                  metadata=metadata, **kwargs)


def feedback(request_id: str, *, score: float | bool | None = None, label: str | None = None,
             note: str | None = None, router: Router | None = None,
             routes: str | Path | RouteSet | None = None) -> FeedbackEntry:
    """Record feedback on an answered request (`Dispatcher.feedback`): through `router`'s
    dispatcher (its pending journal writes flushed first), or straight into the outcomes
    store of `routes` (a folder or a loaded RouteSet); neither: the default router if
    `dispatch()` loaded it, else ./routes."""
    if router is not None or (routes is None and _DEFAULT):
        return dispatcher_for(router).feedback(request_id, score=score, label=label, note=note)
    return run_sync(_store_feedback(routes, request_id, score, label, note))


async def afeedback(request_id: str, *, score: float | bool | None = None,
                    label: str | None = None, note: str | None = None,
                    router: Router | None = None,
                    routes: str | Path | RouteSet | None = None) -> FeedbackEntry:
    """Async `feedback`, sharing its implementation."""
    if router is not None or (routes is None and _DEFAULT):
        return await dispatcher_for(router).afeedback(request_id, score=score, label=label,
                                                      note=note)
    return await run_async(_store_feedback(routes, request_id, score, label, note))


def _store_feedback(routes: str | Path | RouteSet | None, request_id: str,
                    score: float | bool | None, label: str | None,
                    note: str | None) -> Plan[FeedbackEntry]:
    """Feedback without a router: the route set's store and trace file, opened for it."""
    rs = routes if isinstance(routes, RouteSet) else load_routes(routes or "routes")
    s = rs.settings
    trace = TraceWriter(JsonlSink(s.trace_path)) if s.trace_path else None
    path, opened = store_path(rs), []

    def store() -> OutcomeStore:
        if not path.exists():  # never create an empty store just to find nothing in it
            raise UnknownRequestError(f"unknown request id {request_id!r}: there is no "
                                      f"outcomes store at {path} (is router.outcomes."
                                      f"log_requests on where the request was served?)")
        opened.append(OutcomeStore(path))
        return opened[-1]

    try:
        entry: FeedbackEntry = yield from feedback_plan(
            rs, store, None, trace, s.trace_include_query, request_id, score, label, note)
    finally:
        for st in opened:
            st.close()
    return entry
