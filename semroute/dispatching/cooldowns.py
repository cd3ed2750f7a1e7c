"""Cooldowns: models that failed recently are tried after the healthy ones, never dropped.

In-process by default; given a `Store` (Redis, shared by replicas) a cooldown is the key
`semroute:cooldown:<model key>` living `seconds`, so a model that fails through one replica
is cooled on all of them. A blocking store is called through `Offload` (`offloaded`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from semroute.providers import Offload, Plan
from semroute.state import MemoryStore, Store

KEY_PREFIX = "semroute:cooldown"
T = TypeVar("T")


class Cooldowns:
    """Models that failed recently, and until when they count as cooling (in-process, or in
    `store` when one is given)."""

    def __init__(self, seconds: float, store: Store | None = None) -> None:
        self.seconds = seconds
        self.store = store
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def blocking(self) -> bool:
        """Whether calls may block on I/O (a shared store): plans then offload them."""
        return self.store is not None and not isinstance(self.store, MemoryStore)

    def cooling(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` are cooling now."""
        unique = list(dict.fromkeys(keys))
        if self.store is not None:
            store = self.store
            return {k for k in unique if store.get(f"{KEY_PREFIX}:{k}") is not None}
        now = time.monotonic()
        with self._lock:
            return {k for k in unique if self._until.get(k, 0.0) > now}

    def order(self, keys: Sequence[str], cooling: set[str] | None = None) -> list[str]:
        """Every key once: healthy ones in chain order, then cooling ones in chain order (a
        last resort: a cooling model may have recovered, and is better than no answer)."""
        cool = self.cooling(keys) if cooling is None else cooling
        unique = list(dict.fromkeys(keys))
        return [k for k in unique if k not in cool] + [k for k in unique if k in cool]

    def is_cooling(self, key: str) -> bool:
        """Whether `key` failed within the last `seconds`."""
        return key in self.cooling([key])

    def failed(self, key: str) -> None:
        """Start (or restart) `key`'s cooldown."""
        if self.store is not None:
            self.store.set(f"{KEY_PREFIX}:{key}", {"failed_at": time.time()}, self.seconds)
            return
        with self._lock:
            self._until[key] = time.monotonic() + self.seconds

    def succeeded(self, key: str) -> None:
        """End `key`'s cooldown: it answered."""
        if self.store is not None:
            self.store.delete(f"{KEY_PREFIX}:{key}")
            return
        with self._lock:
            self._until.pop(key, None)


def offloaded(cooldowns: Cooldowns, fn: Callable[..., T], *args: object) -> Plan[T]:
    """`fn(*args)` (a `Cooldowns` method) inline when in-process, as an `Offload` when the
    store may block, so `adispatch` never waits on Redis on the event loop."""
    if cooldowns.blocking:
        value: T = yield Offload(partial(fn, *args))
        return value
    return fn(*args)
