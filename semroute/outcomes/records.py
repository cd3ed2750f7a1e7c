"""What the outcomes store holds: `OutcomeRecord` (one model's score on one query), the text
hash queries are known by, and the key that ties stored vectors to the encoder that made them.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from semroute.config import normalise_text
from semroute.encoders import Fingerprint
from semroute.errors import OutcomeStoreError

if TYPE_CHECKING:
    from numpy.typing import NDArray

SOURCES = ("gate", "judge", "feedback", "imported")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def text_hash(text: str) -> str:
    """sha256 (hex) of the normalised text: how the store knows a query without keeping it."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def encoder_key(encoder: Fingerprint | str) -> str:
    """The key vectors are stored under: name, backend, dim and weights hash of the encoder
    (vectors of two encoders, even torch and ONNX of one model, are never mixed)."""
    if isinstance(encoder, str):
        return encoder
    return f"{encoder.name}|{encoder.backend}|{encoder.dim}|{encoder.weights_hash}"


@dataclass(frozen=True, kw_only=True)
class OutcomeRecord:
    """One model's outcome on one query: an answered request or an imported example."""

    text_hash: str
    model: str
    score: float  # in [0, 1]
    source: str  # gate | judge | feedback | imported
    route: str | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ts: float = field(default_factory=time.time)  # unix seconds
    request_id: str | None = None
    dataset: str | None = None  # the import's id (sha256 of the file), None for live records
    category: str | None = None  # e.g. the MMLU subject of an imported example
    id: int | None = None  # set by the store

    def check(self) -> None:
        """Raise `OutcomeStoreError` naming the first invalid field and what it must be."""
        problems = list(self.problems())
        if problems:
            raise OutcomeStoreError(f"invalid outcome record ({self.model!r}, "
                                    f"{self.text_hash[:12]}): {'; '.join(problems)}")

    def problems(self) -> Iterator[str]:
        if not isinstance(self.text_hash, str) or not _HEX64.fullmatch(self.text_hash):
            yield "field 'text_hash' must be 64 lower-case hex digits (use text_hash(text))"
        if not isinstance(self.model, str) or not self.model.strip():
            yield "field 'model' must be a non-empty model key"
        if not (isinstance(self.score, (int, float)) and 0.0 <= self.score <= 1.0):
            yield f"field 'score' must be a number in [0, 1], got {self.score!r}"
        if self.source not in SOURCES:
            yield f"field 'source' must be one of {', '.join(SOURCES)}, got {self.source!r}"
        if self.cost_usd is not None and not (math.isfinite(self.cost_usd)
                                              and self.cost_usd >= 0):
            yield f"field 'cost_usd' must be None or a finite number >= 0, got {self.cost_usd!r}"
        if self.latency_ms is not None and not (math.isfinite(self.latency_ms)
                                                and self.latency_ms >= 0):
            yield f"field 'latency_ms' must be None or >= 0, got {self.latency_ms!r}"
        if not math.isfinite(self.ts):
            yield f"field 'ts' must be unix seconds, got {self.ts!r}"


def check_vectors(fingerprint: Fingerprint, hashes: list[str],
                  vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """`vectors` as a C-contiguous float32 [len(hashes), dim] matrix of finite values."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape != (len(hashes), fingerprint.dim):
        raise OutcomeStoreError(f"vectors must have shape ({len(hashes)}, {fingerprint.dim}) "
                                f"for encoder {fingerprint.describe()}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise OutcomeStoreError("vectors must be finite (an encoder returned NaN or inf)")
    for h in hashes:
        if not _HEX64.fullmatch(h):
            raise OutcomeStoreError(f"vector key {h[:70]!r} is not a text hash (64 hex)")
    return arr
