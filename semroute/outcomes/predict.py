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
from math import log1p
from operator import mul
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.outcomes.search import FLAT_LIMIT, search_index

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray


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
_RATIO = ("half", "twice", "double", "triple", "third", "quarter", "percent")
_RATIO_WORDS = re.compile(r"\b(?:" + "|".join(_RATIO) + r")\b")
FEATURE_NAMES = ("log_chars", "log_words", "numbers", "log_digits", "percent_signs", "slashes",
                 "sentence_ends", "dollar_signs", "ratio_words")


def ratio_words(text: str) -> int:
    """How many of the words in `_RATIO` the text has, case-insensitive (a substring test
    first: most texts have none, and the regex costs ~10 us on a long one)."""
    low = text.lower()
    return len(_RATIO_WORDS.findall(low)) if any(w in low for w in _RATIO) else 0


def feature_row(t: str) -> tuple[float, ...]:
    """One text's features (FEATURE_NAMES) as plain floats: ~10 us, no numpy call."""
    nums = _NUMBER.findall(t)
    return (log1p(len(t)), log1p(len(t.split())), len(nums), log1p(sum(map(len, nums))),
            t.count("%"), t.count("/"), t.count(".") + t.count("?") + t.count("!"),
            t.count("$"), ratio_words(t))


def text_features(texts: Sequence[str]) -> NDArray[np.float64]:
    """Cheap per-text difficulty signals [n, 9] (see FEATURE_NAMES): how long, how many
    numbers and steps; they carry what a sentence embedding misses about arithmetic load."""
    out = np.empty((len(texts), len(FEATURE_NAMES)), dtype=np.float64)
    for i, t in enumerate(texts):
        out[i] = feature_row(t)
    return out


@dataclass(frozen=True)
class LinearBase:
    """Per-model ridge line over standardised features: base[q, m] = z(x) @ coef + intercept."""

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    coef: NDArray[np.float64]
    intercept: NDArray[np.float64]
    weight: NDArray[np.float64] = field(init=False, repr=False)  # coef / scale
    offset: NDArray[np.float64] = field(init=False, repr=False)  # so base = x @ weight + offset
    columns: list[list[float]] = field(init=False, repr=False)  # weight per model, as floats

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

    def __post_init__(self) -> None:
        weight = self.coef / self.scale[:, None]
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "offset", self.intercept - self.mean @ weight)
        object.__setattr__(self, "columns", weight.T.tolist())

    def row(self, features: Sequence[float]) -> list[float]:
        """The base of one text from its `feature_row`, in plain floats (no numpy call)."""
        return [off + sum(map(mul, features, col))
                for off, col in zip(self.offset.tolist(), self.columns, strict=True)]

    def __call__(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(x @ self.weight + self.offset)


def clip(values: NDArray[np.float64], low: float, high: float) -> NDArray[np.float64]:
    """Clip in place with two ufunc calls (`np.clip` costs ~10 us of Python on one row)."""
    np.maximum(values, low, out=values)
    return np.minimum(values, high, out=values)


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


@dataclass(frozen=True)
class OnePrediction:
    """One query's prediction in plain floats (the router's per-request path): quality and
    support per model, and its neighbours (row numbers, similarities), nearest first."""

    quality: list[float]
    support: list[float]
    ids: list[int]
    similarity: list[float]


class QualityPredictor:
    """Nearest-outcome quality predictor over a fixed reference set.

    `vectors` [n, d] L2-normalised float32; `scores` [n, m] in [0, 1], NaN where a model has no
    outcome for that row; `texts` (optional, the rows' query texts) enable the feature line,
    and then `predict` needs the queries' texts too. Predictions are clipped to `bounds`
    (None: not clipped, for residual scores). `index`: a FAISS index over exactly `vectors`
    (e.g. from `search.cached_index`), else one is built (`search.search_index`)."""

    def __init__(self, vectors: NDArray[np.float32], scores: NDArray[np.float64],
                 models: Sequence[str] = (), *, texts: Sequence[str] | None = None,
                 settings: KnnSettings | None = None, flat_limit: int = FLAT_LIMIT,
                 bounds: tuple[float, float] | None = (0.0, 1.0), index: Any = None) -> None:
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        sc = np.asarray(scores, dtype=np.float64)
        if vecs.ndim != 2 or sc.ndim != 2 or vecs.shape[0] != sc.shape[0] or vecs.shape[0] == 0:
            raise ValueError(f"need vectors [n, d] and scores [n, m] with the same n > 0, got "
                             f"{vecs.shape} and {sc.shape}")
        self.settings = settings or KnnSettings()
        self.bounds = bounds
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
        # one row per reference text: residuals (0 where unknown) | known (0/1), so a query's
        # neighbours are one gather and one weighted sum
        self._table = np.ascontiguousarray(np.hstack([filled, self.known.astype(np.float64)]))
        if index is not None and int(index.ntotal) != vecs.shape[0]:
            raise ValueError(f"the index holds {index.ntotal} vectors, not {vecs.shape[0]}")
        self.index: Any = index if index is not None else search_index(vecs, flat_limit)
        self.k = min(self.settings.k, vecs.shape[0])
        self.mean_row: list[float] = self.global_mean.tolist()

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def predict(self, queries: NDArray[np.float32],
                texts: Sequence[str] | None = None) -> Prediction:
        """Predicted quality per model for each query row (L2-normalised vectors); `texts`
        are the queries' texts, needed when the predictor was built with texts."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        sims, ids = self.index.search(q, self.k)
        return self.from_neighbours(sims, ids, self.base_of(q.shape[0], texts))

    def predict_one(self, query: NDArray[np.float32],
                    features: Sequence[float] | None = None) -> OnePrediction:
        """`predict` for one query vector [d] in a few numpy calls instead of ~20 (the same
        numbers); `features` is the query's `feature_row`, needed with the feature line."""
        sims, ids = self.index.search(query.reshape(1, -1), self.k)
        id_row, sim_row = ids[0], sims[0]
        if self.k and id_row[-1] < 0:  # fewer found: FAISS pads the end with -1
            keep = id_row >= 0
            id_row, sim_row = id_row[keep], sim_row[keep]
        s, m = self.settings, len(self.models)
        rows = self._table[id_row]
        if s.temperature is None or not len(sim_row):
            summed: list[float] = rows.sum(axis=0).tolist()
        else:
            w = np.exp((sim_row.astype(np.float64) - float(sim_row[0])) / s.temperature)
            summed = (w @ rows).tolist()
        if self.base is None:
            base = self.mean_row
        elif features is None:
            raise ValueError("this predictor was built with texts: pass the query's features")
        else:
            base = self.base.row(features)
        quality = [b + summed[j] / max(summed[m + j] + s.prior, 1e-12)
                   for j, b in enumerate(base)]
        if self.bounds is not None:
            low, high = self.bounds
            quality = [min(max(v, low), high) for v in quality]
        return OnePrediction(quality, summed[m:], id_row.tolist(), sim_row.tolist())

    def base_of(self, count: int, texts: Sequence[str] | None) -> NDArray[np.float64]:
        """The base prediction [count, m] (or [1, m], the same for all) before neighbours: the
        feature line or the global mean."""
        if self.base is None:
            return self.global_mean[None, :]  # [1, m]: broadcasts over the queries
        if texts is None or len(texts) != count:
            raise ValueError("this predictor was built with texts: pass the queries' texts")
        return self.base(text_features(texts))

    def from_neighbours(self, sims: NDArray[np.float32], ids: NDArray[np.int64],
                        base: NDArray[np.float64]) -> Prediction:
        """The prediction from given neighbours (ids into the reference set, -1 = none)."""
        s, m = self.settings, len(self.models)
        valid = ids >= 0
        full = bool(valid.all())
        if s.temperature is None:
            w = valid.astype(np.float64)
        else:
            sim = sims.astype(np.float64)
            top = np.max(np.where(valid, sim, -np.inf), axis=1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            w = np.where(valid, np.exp((sim - top) / s.temperature), 0.0)
        rows = self._table[ids if full else np.where(valid, ids, 0)]   # [q, k, 2m]
        summed = np.matmul(w[:, None, :], rows)[:, 0]                  # [q, 2m]
        support = summed[:, m:]
        quality = base + summed[:, :m] / np.maximum(support + s.prior, 1e-12)
        if self.bounds is not None:
            clip(quality, *self.bounds)
        return Prediction(quality, support, ids.astype(np.int64, copy=False),
                          sims.astype(np.float32, copy=False), self.models)
