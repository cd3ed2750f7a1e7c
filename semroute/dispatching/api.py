"""The module-level `dispatch()` / `adispatch()` and the per-router state they share.

The registry maps each router (weakly) to its `DispatchState`, which holds no reference to the
router: repeated calls with one router share cooldowns, provider clients and the trace sink,
and a router the caller drops can be garbage collected.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from semroute.dispatching.dispatcher import Dispatcher
from semroute.dispatching.response import Response
from semroute.dispatching.state import DispatchState
from semroute.providers import Message
from semroute.routing import Router

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
