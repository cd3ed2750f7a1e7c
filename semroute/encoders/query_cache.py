"""A bounded cache of query vectors, so a repeated query skips the encoder."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from semroute.encoders.base import Encoder

if TYPE_CHECKING:
    from numpy.typing import NDArray


class QueryCache:
    """Bounded LRU of query vectors, safe to share between threads.

    The lock guards lookups and inserts only, never the encoder call, so threads encode in
    parallel. Entries are copies: a row view would keep its whole batch array alive.
    """

    def __init__(self, encoder: Encoder, maxsize: int = 4096) -> None:
        self.encoder = encoder
        self.maxsize = maxsize
        self._data: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Forget every vector (benchmarks measure the encoder, not the cache)."""
        with self._lock:
            self._data.clear()

    def encode(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], int]:
        """Vectors for `texts` (n, dim), and how many came from the cache."""
        out = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(texts):
                vec = self._data.get(t) if self.maxsize else None
                if vec is not None:
                    self._data.move_to_end(t)
                    out[i] = vec
                else:
                    todo.setdefault(t, []).append(i)
            hits = len(texts) - sum(len(v) for v in todo.values())
            self.hits += hits
            self.misses += len(texts) - hits
        if todo:
            fresh = self.encoder.encode(list(todo))  # unlocked: the slow part runs in parallel
            for rows, vec in zip(todo.values(), fresh, strict=True):
                out[rows] = vec
            if self.maxsize:
                with self._lock:
                    for t, vec in zip(todo, fresh, strict=True):
                        self._data[t] = vec.copy()  # owns its 1.5 kB, not the batch's memory
                        self._data.move_to_end(t)
                    while len(self._data) > self.maxsize:
                        self._data.popitem(last=False)
        return out, hits
