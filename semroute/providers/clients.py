"""The SDK clients a process shares: one per (provider, base URL, key), async ones per event
loop, all with one bounded HTTP pool (`POOL_LIMITS`)."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import httpx2

T = TypeVar("T")

POOL_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=16)
"""The SDK clients' HTTP pool: the SDKs' own 1000 connections, but at most 16 kept idle (theirs:
100). The pool probes every idle connection's socket on each request, so after a burst 100 idle
connections cost ~2 ms of event-loop CPU per request (benchmarks/results/gateway.md)."""


class ClientCache:
    """SDK clients keyed by (provider, base_url, key env, key fingerprint); async ones per loop,
    since an async HTTP pool cannot outlive the event loop it was made on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: dict[tuple[str, ...], Any] = {}
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[str, ...], Any]
        ] = weakref.WeakKeyDictionary()

    def get(self, key: tuple[str, ...], make: Callable[[], T], *, is_async: bool) -> T:
        with self._lock:
            pool = (
                self._by_loop.setdefault(asyncio.get_running_loop(), {}) if is_async else self._sync
            )
            if key not in pool:
                pool[key] = make()
            client: T = pool[key]
            return client


CLIENTS = ClientCache()
