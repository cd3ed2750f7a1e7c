"""Surviving a shared-store outage: a `Circuit` per shared store that remembers it is down
(warning once per outage, retrying with a doubling backoff) and a `FallbackStore` that tries
the shared store and, while it is down, serves from an in-process one (or raises, for state
that must not be guessed: closed budgets).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from semroute.errors import StoreUnavailableError
from semroute.state.store import Json, Store

log = logging.getLogger("semroute.state")
T = TypeVar("T")
MAX_BACKOFF_FACTOR = 10  # the wait between tries grows to at most 10x `retry_s`


class Circuit:
    """Whether a shared store is worth trying now. After an error it is skipped until a retry
    time (`retry_s`, doubling up to 10x while it stays down); the first error of an outage is
    logged as a warning and the recovery as info, once each. Counts outages and, per kind of
    state, the operations served without it (`fallbacks`). Thread-safe."""

    def __init__(self, name: str, retry_s: float = 0.5, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.retry_s = retry_s
        self.clock = clock
        self.up = True
        self.outages = 0
        self.fallbacks: Counter[str] = Counter()
        self._wait = retry_s
        self._next_try = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether to try the shared store now (always while up; once a retry time passed)."""
        return self.up or self.clock() >= self._next_try

    def failed(self, kind: str, exc: BaseException) -> None:
        """The store failed a `kind` operation: open the circuit (or wait longer)."""
        with self._lock:
            if self.up:
                self.up, self.outages, self._wait = False, self.outages + 1, self.retry_s
                log.warning("semroute: shared state %s is unreachable (%s: %s); %s and the "
                            "other kinds of state fall back as configured until it returns",
                            self.name, type(exc).__name__, exc, kind)
            else:
                self._wait = min(self._wait * 2, self.retry_s * MAX_BACKOFF_FACTOR)
            self._next_try = self.clock() + self._wait

    def succeeded(self) -> None:
        """The store answered: close the circuit."""
        if self.up:
            return
        with self._lock:
            if not self.up:
                self.up = True
                log.warning("semroute: shared state %s is back; shared state is used again",
                            self.name)

    def fell_back(self, kind: str) -> None:
        with self._lock:
            self.fallbacks[kind] += 1

    def run(self, kind: str, shared: Callable[[], T], local: Callable[[], T] | None) -> T:
        """`shared()` while the store is up (or due a retry), else `local()`; with no `local`,
        `StoreUnavailableError` while it is down."""
        if self.allow():
            try:
                value = shared()
            except StoreUnavailableError as exc:
                self.failed(kind, exc)
                if local is None:
                    raise
            else:
                self.succeeded()
                return value
        if local is None:
            raise StoreUnavailableError(f"shared state {self.name} is down (next try in "
                                        f"{max(0.0, self._next_try - self.clock()):.1f} s)",
                                        store=self.name)
        self.fell_back(kind)
        return local()


class FallbackStore:
    """A `Store` that uses `shared` and, while its `circuit` is open, `local` (None: raise
    `StoreUnavailableError`). `kind` names the state (cooldowns, stickiness, budgets) in logs
    and metrics. What was written locally during an outage stays local: it is not copied to
    the shared store when it returns."""

    def __init__(self, shared: Store, local: Store | None, circuit: Circuit,
                 kind: str) -> None:
        self.shared, self.local, self.circuit, self.kind = shared, local, circuit, kind

    def get(self, key: str) -> Json | None:
        loc = self.local
        return self.circuit.run(self.kind, lambda: self.shared.get(key),
                                None if loc is None else lambda: loc.get(key))

    def set(self, key: str, value: Json, ttl_seconds: float) -> None:
        loc = self.local
        self.circuit.run(self.kind, lambda: self.shared.set(key, value, ttl_seconds),
                         None if loc is None else lambda: loc.set(key, value, ttl_seconds))

    def compare_and_set(self, key: str, expected: Json | None, value: Json,
                        ttl_seconds: float) -> bool:
        loc = self.local
        return self.circuit.run(
            self.kind, lambda: self.shared.compare_and_set(key, expected, value, ttl_seconds),
            None if loc is None else
            lambda: loc.compare_and_set(key, expected, value, ttl_seconds))

    def add(self, key: str, amount: float, ttl_seconds: float) -> float:
        loc = self.local
        return self.circuit.run(self.kind, lambda: self.shared.add(key, amount, ttl_seconds),
                                None if loc is None else
                                lambda: loc.add(key, amount, ttl_seconds))

    def delete(self, key: str) -> None:
        loc = self.local
        self.circuit.run(self.kind, lambda: self.shared.delete(key),
                         None if loc is None else lambda: loc.delete(key))
