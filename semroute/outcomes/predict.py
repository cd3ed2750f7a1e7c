"""Predict each model's quality on a query from the outcomes of its nearest neighbours.

One implementation for the benchmark, `semroute outcomes eval` and runtime tiers: a ridge
line over cheap text features (length, numbers, sentences) gives a base prediction per model;
FAISS inner-product search over L2-normalised reference vectors finds the neighbours, and
their weighted mean residual (score minus base), shrunk towards 0 when they are few, is added.
Without texts the base is the model's global mean (a plain kNN). Settings were chosen by 5-fold
CV (see benchmarks/results/cost_quality.md); numpy and FAISS only at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

FLAT_LIMIT = 20_000
"""Up to this many reference rows the search is exact (flat); above it, an IVF index (about
4*sqrt(n) lists, NPROBE probed): at 100k rows flat search takes ~15 ms a query on one core of
the benchmark machine, IVF ~0.3 ms at ~0.8 recall of the 50 nearest."""
NPROBE = 8


@dataclass(frozen=True)
class KnnSettings:
    """How neighbours become a prediction.

    `k` neighbours; weight exp((sim - best_sim) / temperature) (None: equal weights);
    `prior`: pseudo-count of the base prediction (feature line or global mean) mixed in
    (shrinkage when neighbours are few), in units of one nearest neighbour's weight."""

    k: int = 50
    temperature: float | None = None
    prior: float = 0.0
    features: bool = True
    ridge: float = 10.0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 or None, got {self.temperature}")
        if self.prior < 0:
            raise ValueError(f"prior must be >= 0, got {self.prior}")
        if self.ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {self.ridge}")


_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_SENTENCE_END = re.compile(r"[.?!]")
_RATIO_WORDS = re.compile(r"\b(half|twice|double|triple|third|quarter|percent)\b", re.IGNORECASE)
FEATURE_NAMES = ("log_chars", "log_words", "numbers", "log_digits", "percent_signs", "slashes",
                 "sentence_ends", "dollar_signs", "ratio_words")


def text_features(texts: Sequence[str]) -> NDArray[np.float64]:
    """Cheap per-text difficulty signals [n, 9] (see FEATURE_NAMES): how long, how many
    numbers and steps; they carry what a sentence embedding misses about arithmetic load."""
    rows = []
    for t in texts:
        nums = _NUMBER.findall(t)
        rows.append([np.log1p(len(t)), np.log1p(len(t.split())), len(nums),
                     np.log1p(sum(len(n) for n in nums)), t.count("%"), t.count("/"),
                     len(_SENTENCE_END.findall(t)), t.count("$"), len(_RATIO_WORDS.findall(t))])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


@dataclass(frozen=True)
class LinearBase:
    """Per-model ridge line over standardised features: base[q, m] = z(x) @ coef + intercept."""

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    coef: NDArray[np.float64]
    intercept: NDArray[np.float64]

    @classmethod
    def fit(cls, x: NDArray[np.float64], scores: NDArray[np.float64],
            alpha: float) -> LinearBase:
        """Ridge per model on the rows where it has an outcome (closed form)."""
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = (x - mean) / scale
        m = scores.shape[1]
        coef = np.zeros((x.shape[1], m))
        intercept = np.zeros(m)
        for j in range(m):
            rows = ~np.isnan(scores[:, j])
            if not rows.any():
                continue
            zj, yj = z[rows], scores[rows, j]
            intercept[j] = yj.mean()
            a = zj.T @ zj + alpha * np.eye(x.shape[1])
            coef[:, j] = np.linalg.solve(a, zj.T @ (yj - intercept[j]))
        return cls(mean, scale, coef, intercept)

    def __call__(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(((x - self.mean) / self.scale) @ self.coef + self.intercept)


@dataclass(frozen=True)
class Prediction:
    """Predictions for a batch of queries.

    `quality` [q, m]: expected score per model; `support` [q, m]: the neighbours' total weight
    per model (how much evidence the prediction has, before the prior); `ids`/`similarity`
    [q, k]: the neighbours (row numbers of the reference set, -1 when fewer exist)."""

    quality: NDArray[np.float64]
    support: NDArray[np.float64]
    ids: NDArray[np.int64]
    similarity: NDArray[np.float32]
    models: tuple[str, ...] = field(default=())

    def explain(self, row: int, top: int = 5) -> dict[str, object]:
        """One query's predictions and its nearest neighbours, as plain JSON values."""
        keep = self.ids[row] >= 0
        return {
            "quality": {m: float(q) for m, q in zip(self.models, self.quality[row], strict=True)},
            "support": {m: float(s) for m, s in zip(self.models, self.support[row], strict=True)},
            "neighbours": [{"id": int(i), "similarity": float(s)} for i, s in
                           zip(self.ids[row][keep][:top], self.similarity[row][keep][:top],
                               strict=True)],
        }


class QualityPredictor:
    """Nearest-outcome quality predictor over a fixed reference set.

    `vectors` [n, d] L2-normalised float32; `scores` [n, m] in [0, 1], NaN where a model has no
    outcome for that row; `texts` (optional, the rows' query texts) enable the feature line,
    and then `predict` needs the queries' texts too."""

    def __init__(self, vectors: NDArray[np.float32], scores: NDArray[np.float64],
                 models: Sequence[str] = (), *, texts: Sequence[str] | None = None,
                 settings: KnnSettings | None = None, flat_limit: int = FLAT_LIMIT) -> None:
        import faiss

        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        sc = np.asarray(scores, dtype=np.float64)
        if vecs.ndim != 2 or sc.ndim != 2 or vecs.shape[0] != sc.shape[0] or vecs.shape[0] == 0:
            raise ValueError(f"need vectors [n, d] and scores [n, m] with the same n > 0, got "
                             f"{vecs.shape} and {sc.shape}")
        self.settings = settings or KnnSettings()
        self.models = tuple(models) or tuple(f"model_{j}" for j in range(sc.shape[1]))
        if len(self.models) != sc.shape[1]:
            raise ValueError(f"{len(self.models)} model names for {sc.shape[1]} score columns")
        if texts is not None and len(texts) != sc.shape[0]:
            raise ValueError(f"{len(texts)} texts for {sc.shape[0]} rows")
        self.scores = sc
        self.known = ~np.isnan(sc)
        filled = np.where(self.known, sc, 0.0)
        counts = self.known.sum(axis=0)
        self.global_mean = np.where(counts > 0, filled.sum(axis=0) / np.maximum(counts, 1), 0.0)
        self.base: LinearBase | None = None
        if texts is not None and self.settings.features:
            self.base = LinearBase.fit(text_features(texts), sc, self.settings.ridge)
            filled = np.where(self.known, sc - self.base(text_features(texts)), 0.0)
        else:
            filled = np.where(self.known, sc - self.global_mean, 0.0)
        self._residual = filled
        dim = vecs.shape[1]
        self.index: Any = faiss.IndexFlatIP(dim)
        if vecs.shape[0] > flat_limit:
            n = vecs.shape[0]
            lists = int(min(4096, max(64, 4 * np.sqrt(n))))
            self._quantizer = faiss.IndexFlatIP(dim)  # the IVF index does not own it
            ivf = faiss.IndexIVFFlat(self._quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(0).choice(n, min(n, 40 * lists), replace=False)
            ivf.train(vecs[np.sort(sample)])
            ivf.nprobe = NPROBE
            self.index = ivf
        self.index.add(vecs)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def predict(self, queries: NDArray[np.float32],
                texts: Sequence[str] | None = None) -> Prediction:
        """Predicted quality per model for each query row (L2-normalised vectors); `texts`
        are the queries' texts, needed when the predictor was built with texts."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(self.settings.k, len(self))
        sims, ids = self.index.search(q, k)
        return self.from_neighbours(sims, ids, self.base_of(q.shape[0], texts))

    def base_of(self, count: int, texts: Sequence[str] | None) -> NDArray[np.float64]:
        """The base prediction [count, m] before neighbours: the feature line or global mean."""
        if self.base is None:
            return np.broadcast_to(self.global_mean, (count, len(self.models)))
        if texts is None or len(texts) != count:
            raise ValueError("this predictor was built with texts: pass the queries' texts")
        return self.base(text_features(texts))

    def from_neighbours(self, sims: NDArray[np.float32], ids: NDArray[np.int64],
                        base: NDArray[np.float64]) -> Prediction:
        """The prediction from given neighbours (ids into the reference set, -1 = none)."""
        s = self.settings
        valid = ids >= 0
        safe = np.where(valid, ids, 0)
        sim = sims.astype(np.float64)
        if s.temperature is None:
            w = valid.astype(np.float64)
        else:
            top = np.max(np.where(valid, sim, -np.inf), axis=1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            w = np.where(valid, np.exp((sim - top) / s.temperature), 0.0)
        known = self.known[safe] & valid[:, :, None]           # [q, k, m]
        wk = w[:, :, None] * known
        support = wk.sum(axis=1)                               # [q, m]
        total = np.einsum("qkm,qkm->qm", wk, self._residual[safe])
        quality = base + total / np.maximum(support + s.prior, 1e-12)
        return Prediction(quality, support, ids.astype(np.int64), sims.astype(np.float32),
                          self.models)
