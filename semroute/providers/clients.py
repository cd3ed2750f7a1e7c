"""The SDK clients a process shares: one per (provider, base URL, key), async ones per event
loop. Sync clients use the SDKs' httpx pool, async ones the SDKs' aiohttp transport, both
bounded by `POOL_LIMITS`; async clients are closed when their loop ends (or on `aclose()`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx2

T = TypeVar("T")

POOL_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=16,
                            keepalive_expiry=5.0)
"""The SDK clients' HTTP pools: the SDKs' own 1000 connections, idle ones closed 5 s after last
use. httpx (sync clients) also keeps at most 16 idle (theirs: 100): its pool probes every idle
socket on each request, so after a burst 100 idle connections cost ~2 ms of CPU a request.
The aiohttp transport (async clients) receives only `max_connections` (its connector's `limit`)
and `keepalive_expiry` (its `keepalive_timeout`): it takes one idle connection per request and
checks only that one, so idle connections cost no CPU per request; they are bounded by the
1000 and closed after 5 s unused."""


class AsyncClosable(Protocol):
    """An async SDK client: `close()` releases its HTTP session."""

    async def close(self) -> None: ...


class _LoopClients:
    """The async clients of one event loop, and the task that closes them when the loop ends."""

    def __init__(self) -> None:
        self.clients: dict[tuple[str, ...], Any] = {}
        self.closer: asyncio.Task[None] | None = None


class ClientCache:
    """SDK clients keyed by (provider, base_url, key env, key fingerprint); async ones per loop,
    since an async HTTP session cannot outlive the event loop it was made on.

    The first async client of a loop starts a task that waits for the loop's end: `asyncio.run`
    (and uvicorn) cancel every task before closing the loop, and the task then closes that
    loop's clients, so their aiohttp sessions never reach the garbage collector unclosed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: dict[tuple[str, ...], Any] = {}
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, key: tuple[str, ...], make: Callable[[], T], *, is_async: bool) -> T:
        with self._lock:
            if is_async:
                loop = asyncio.get_running_loop()
                entry = self._by_loop.get(loop)
                if entry is None:
                    entry = self._by_loop[loop] = _LoopClients()
                if entry.closer is None:
                    entry.closer = loop.create_task(self._close_at_end(entry),
                                                    name="semroute-client-closer")
                pool = entry.clients
            else:
                pool = self._sync
            if key not in pool:
                pool[key] = make()
            client: T = pool[key]
            return client

    async def aclose(self) -> None:
        """Close the running loop's async clients now (the gateway's shutdown); the next call
        on this loop makes new ones."""
        with self._lock:
            entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            if entry.closer is not None:
                entry.closer.cancel()
            await _close_all(entry)

    async def _close_at_end(self, entry: _LoopClients) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # never set: waits for cancel
        finally:
            with self._lock:
                loop = asyncio.get_running_loop()
                if self._by_loop.get(loop) is entry:
                    del self._by_loop[loop]
            await _close_all(entry)


async def _close_all(entry: _LoopClients) -> None:
    clients: list[AsyncClosable] = list(entry.clients.values())
    entry.clients.clear()
    for client in clients:
        with contextlib.suppress(Exception):  # a session already broken is closed enough
            await client.close()


CLIENTS = ClientCache()


async def aclose_clients() -> None:
    """Close the running loop's async SDK clients now (e.g. a server's shutdown), rather than
    when the loop ends; later calls on this loop make new ones."""
    await CLIENTS.aclose()
