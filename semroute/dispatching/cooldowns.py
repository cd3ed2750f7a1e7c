"""Cooldowns: models that failed recently are tried after the healthy ones, never dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence


class Cooldowns:
    """Models that failed recently, and until when they count as cooling."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def order(self, keys: Sequence[str]) -> list[str]:
        """Every key once: healthy ones in chain order, then cooling ones in chain order (a
        last resort: a cooling model may have recovered, and is better than no answer)."""
        now = time.monotonic()
        unique = list(dict.fromkeys(keys))
        with self._lock:
            cooling = {k for k in unique if self._until.get(k, 0.0) > now}
        return [k for k in unique if k not in cooling] + [k for k in unique if k in cooling]

    def is_cooling(self, key: str) -> bool:
        """Whether `key` failed within the last `seconds`."""
        with self._lock:
            return self._until.get(key, 0.0) > time.monotonic()

    def failed(self, key: str) -> None:
        """Start (or restart) `key`'s cooldown."""
        with self._lock:
            self._until[key] = time.monotonic() + self.seconds

    def succeeded(self, key: str) -> None:
        """End `key`'s cooldown: it answered."""
        with self._lock:
            self._until.pop(key, None)
