"""A bounded cache of query vectors, so a repeated query skips the encoder."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from semroute.encoders.base import Encoder

if TYPE_CHECKING:
    from numpy.typing import NDArray


class QueryCache:
    """Bounded LRU of query vectors, so a repeated query skips the encoder."""

    def __init__(self, encoder: Encoder, maxsize: int = 4096) -> None:
        self.encoder = encoder
        self.maxsize = maxsize
        self._data: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def encode(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], int]:
        """Vectors for `texts` (n, dim), and how many came from the cache."""
        out = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            vec = self._data.get(t) if self.maxsize else None
            if vec is not None:
                self._data.move_to_end(t)
                out[i] = vec
            else:
                todo.setdefault(t, []).append(i)
        hits = len(texts) - sum(len(v) for v in todo.values())
        if todo:
            fresh = self.encoder.encode(list(todo))
            for (t, rows), vec in zip(todo.items(), fresh, strict=True):
                out[rows] = vec
                if self.maxsize:
                    self._data[t] = vec
                    if len(self._data) > self.maxsize:
                        self._data.popitem(last=False)
        self.hits += hits
        self.misses += len(texts) - hits
        return out, hits
