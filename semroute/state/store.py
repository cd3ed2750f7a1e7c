"""The `Store` protocol (get, set with TTL, compare-and-set, atomic add, delete) and
`MemoryStore`, its thread-safe in-process implementation with TTL expiry, an injectable clock
and LRU eviction.

Values are kept as canonical JSON text, so every backend behaves alike: what you read back is
a fresh copy, and compare-and-set compares JSON values, never object identity.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias, runtime_checkable

Json: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None
"""A JSON-able value (dicts with string keys, lists, strings, numbers, booleans, null)."""


@runtime_checkable
class Store(Protocol):
    """Shared state with expiry. Every operation is atomic; keys never hold raw user text."""

    def get(self, key: str) -> Json | None:
        """The value at `key`, or None when absent or expired."""
        ...

    def set(self, key: str, value: Json, ttl_seconds: float) -> None:
        """Store `value` at `key` for `ttl_seconds`."""
        ...

    def compare_and_set(self, key: str, expected: Json | None, value: Json,
                        ttl_seconds: float) -> bool:
        """Store `value` only if `key` now holds `expected` (None: absent); True if stored."""
        ...

    def add(self, key: str, amount: float, ttl_seconds: float) -> float:
        """Atomically add `amount` to the number at `key` (absent or expired: 0) and return the
        sum. A new key lives `ttl_seconds`; an existing one keeps its expiry (as Redis
        INCRBYFLOAT + EXPIRE NX). Raises TypeError if `key` holds something else."""
        ...

    def delete(self, key: str) -> None:
        """Forget `key` (absent keys are fine)."""
        ...


def dump(value: Json) -> str:
    """Canonical JSON text: what every backend stores and compares."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def added(current: Json | None, amount: float, key: str) -> float:
    """`current + amount` for `Store.add` (None counts as 0); TypeError for a non-number."""
    if current is None:
        return float(amount)
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise TypeError(f"store key {key!r} holds {type(current).__name__}, not a number")
    return float(current) + amount


class MemoryStore:
    """An in-process `Store`: thread-safe, entries expire after their TTL (by `clock`, default
    `time.monotonic`), and at most `max_entries` are kept (least recently used go first)."""

    def __init__(self, max_entries: int = 100_000, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            now = self.clock()
            return sum(1 for expires, _ in self._data.values() if expires > now)

    def get(self, key: str) -> Json | None:
        with self._lock:
            text = self._live(key, self.clock())
            if text is None:
                return None
            self._data.move_to_end(key)
        value: Json = json.loads(text)
        return value

    def set(self, key: str, value: Json, ttl_seconds: float) -> None:
        text = dump(value)
        with self._lock:
            self._put(key, text, ttl_seconds)

    def compare_and_set(self, key: str, expected: Json | None, value: Json,
                        ttl_seconds: float) -> bool:
        text = dump(value)
        want = None if expected is None else dump(expected)
        with self._lock:
            if self._live(key, self.clock()) != want:
                return False
            self._put(key, text, ttl_seconds)
            return True

    def add(self, key: str, amount: float, ttl_seconds: float) -> float:
        with self._lock:
            now = self.clock()
            text = self._live(key, now)
            total = added(None if text is None else json.loads(text), amount, key)
            expires = now + ttl_seconds if text is None else self._data[key][0]
            self._put(key, dump(total), expires - now)
            return total

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def _live(self, key: str, now: float) -> str | None:
        """The text at `key` if not expired (an expired entry is dropped). Lock held."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._data[key]
            return None
        return entry[1]

    def _put(self, key: str, text: str, ttl_seconds: float) -> None:
        """Insert as most recently used, then evict the least recently used beyond the bound."""
        if ttl_seconds <= 0:
            self._data.pop(key, None)
            return
        now = self.clock()
        self._data[key] = (now + ttl_seconds, text)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            oldest = next(iter(self._data))
            self._data.pop(oldest)
