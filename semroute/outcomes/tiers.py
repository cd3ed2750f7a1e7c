"""What outcome-learned tiers need at run time: the outcomes store's matrix for the index's
encoder, loaded once, a `QualityPredictor` over every ladder model, and the targets
`semroute outcomes fit` wrote next to the store (`tiers.json`).

No store, or no records for the encoder: the tiers are inactive and `status` says why; the
router then serves each route's static `model` and its Decision says so.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from semroute.encoders import Fingerprint
from semroute.errors import OutcomeStoreError
from semroute.files import write_atomic
from semroute.outcomes.predict import (
    KnnSettings,
    LinearBase,
    OnePrediction,
    Prediction,
    QualityPredictor,
    clip,
    feature_row,
)
from semroute.outcomes.records import encoder_key
from semroute.outcomes.search import cached_index, ivf_lists
from semroute.outcomes.store import OutcomeStore, store_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from semroute.config import RouteSet

TIERS_FILE = "tiers.json"
MAX_MISSING_FEATURES = 0.5  # above this share of rows without features: no feature line
ALL_ROUTES = "*"


class FittedTarget(BaseModel):
    """One target fitted by `semroute outcomes fit`: the value, what it was fitted for
    (`goal`: `strong_share` or `quality`, and the `wanted` value), and what it achieved on the
    held-out predictions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: float = Field(ge=0.0, le=1.0)
    goal: str
    wanted: float
    achieved_strong_share: float
    achieved_quality: float
    strong_quality: float
    models: list[str]
    rows: int
    folds: int
    fitted_at: float


class FittedTargets(BaseModel):
    """`tiers.json`: fitted ladder targets per route name (`*`: every ladder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = "semroute-tiers"
    targets: dict[str, FittedTarget] = Field(default_factory=dict)

    def for_route(self, route: str, models: list[str]) -> tuple[FittedTarget, str] | None:
        """The fitted target of `route` (else the `*` one), when fitted for these models."""
        for key in (route, ALL_ROUTES):
            fitted = self.targets.get(key)
            if fitted is not None and fitted.models == models:
                return fitted, key
        return None


def search_cache_path(store_file: str | Path, fingerprint: Fingerprint) -> Path:
    """Where a large store's built IVF index is cached (`search.cached_index`): beside the
    store, one file per encoder (`outcomes.db.<12 hex>.ivf`); its content is keyed by the
    vectors, so a changed store rebuilds and rewrites it."""
    tag = hashlib.sha256(encoder_key(fingerprint).encode()).hexdigest()[:12]
    path = Path(store_file)
    return path.with_name(f"{path.name}.{tag}.ivf")


def tiers_path(store_file: str | Path) -> Path:
    """Where fitted targets live: `tiers.json` beside the outcomes store."""
    return Path(store_file).with_name(TIERS_FILE)


def load_fitted(path: str | Path) -> FittedTargets | None:
    """The fitted targets in `path`, None when there is no file; a broken file is an error."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return FittedTargets.model_validate_json(path.read_bytes())
    except (ValueError, ValidationError) as exc:
        raise OutcomeStoreError(f"{path}: not a valid tiers file ({exc}); run `semroute "
                                f"outcomes fit` again or delete the file") from None


def save_fitted(path: str | Path, fitted: FittedTargets) -> Path:
    """Write atomically and durably (`files.write_atomic`)."""
    return write_atomic(path, json.dumps(fitted.model_dump(), indent=2).encode())


@dataclass(frozen=True)
class TierPredictor:
    """A `QualityPredictor` over stored outcomes, with the feature line computed from the
    stored text features (the store has no texts): scores minus the feature line are what
    the neighbours average, and the query's feature line is added back, which is exactly
    the predictor's own feature mode (`QualityPredictor(texts=...)`)."""

    knn: QualityPredictor
    base: LinearBase | None

    @classmethod
    def build(cls, vectors: NDArray[np.float32], scores: NDArray[np.float64],
              features: NDArray[np.float64] | None, models: Sequence[str],
              settings: KnnSettings | None = None, *, index: Any = None) -> TierPredictor:
        """The feature line when `settings.features` and at least half the rows have
        features (rows without, e.g. records added without them, get the mean features),
        else a plain kNN. `index`: a prebuilt FAISS index over `vectors` (QualityPredictor)."""
        s = settings or KnnSettings()
        plain = replace(s, features=False)
        missing = np.asarray(np.isnan(features).any(axis=1), dtype=bool) \
            if features is not None else None
        if not s.features or features is None or missing is None or \
                missing.mean() > MAX_MISSING_FEATURES:
            return cls(QualityPredictor(vectors, scores, models, settings=plain, index=index),
                       None)
        if missing.any():
            features = np.where(missing[:, None], features[~missing].mean(axis=0), features)
        base = LinearBase.fit(features, scores, s.ridge)
        return cls(QualityPredictor(vectors, scores - base(features), models, settings=plain,
                                    bounds=None, index=index), base)

    def predict(self, queries: NDArray[np.float32],
                features: NDArray[np.float64] | None = None) -> Prediction:
        """Predicted quality per model for query rows, clipped to [0, 1]; `features` [q, 9]
        are the queries' `text_features`, needed with the feature line."""
        p = self.knn.predict(queries)
        if self.base is None:
            return p
        if features is None:
            raise ValueError("this predictor has a feature line: pass the queries' features")
        g, prior = self.knn.global_mean, self.knn.settings.prior
        w = p.support + prior
        quality = p.quality + self.base(features)
        if prior > 0 or not (w > 0).all():  # else the correction is 0: the common case
            quality -= np.where(w > 0, g * prior / np.where(w > 0, w, 1.0), g)
        clip(quality, 0.0, 1.0)
        return Prediction(quality, p.support, p.ids, p.similarity, p.models)

    def predict_one(self, query: NDArray[np.float32],
                    features: Sequence[float] | None = None) -> OnePrediction:
        """`predict` for one query vector [d] in plain floats; `features` is its
        `feature_row`, needed with the feature line."""
        p = self.knn.predict_one(query)
        if self.base is None:
            return p
        if features is None:
            raise ValueError("this predictor has a feature line: pass the query's features")
        prior, quality = self.knn.settings.prior, []
        for v, b, g, sup in zip(p.quality, self.base.row(features), self.knn.mean_row,
                                p.support, strict=True):
            w = sup + prior
            v += b - (g * prior / w if w > 0 else g)
            quality.append(min(max(v, 0.0), 1.0))
        return OnePrediction(quality, p.support, p.ids, p.similarity)


@dataclass(frozen=True)
class TierModel:
    """The loaded tiers: a predictor over the ladder models (None when inactive, `status`
    says why), the text hashes naming its rows, the fitted targets, and what loading cost."""

    predictor: TierPredictor | None
    models: tuple[str, ...]
    text_hashes: tuple[str, ...]
    status: str
    fitted: FittedTargets | None
    store: Path
    load_ms: float

    @property
    def active(self) -> bool:
        return self.predictor is not None

    def predict(self, vector: NDArray[np.float32], text: str) -> OnePrediction:
        """Each ladder model's predicted quality for one query (its L2-normalised vector and
        its normalised text, whose features the feature line needs)."""
        assert self.predictor is not None
        feats = feature_row(text) if self.predictor.base is not None else None
        return self.predictor.predict_one(vector, feats)

    def neighbours(self, prediction: OnePrediction, top: int = 5) -> list[tuple[str, float]]:
        """The nearest outcome rows: (text hash, similarity), no text."""
        return [(self.text_hashes[i], round(s, 6))
                for i, s in zip(prediction.ids[:top], prediction.similarity[:top], strict=True)]


def predictor_inputs(store: OutcomeStore, fingerprint: Fingerprint, models: list[str],
                     ) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64],
                                list[str]]:
    """The rows a tier predictor is built on (runtime and `outcomes fit` alike): vectors,
    scores [n, len(models)], stored text features [n, 9] (NaN rows where missing) and text
    hashes of the texts with a record for one of `models`."""
    m = store.matrix(fingerprint, models=models)
    keep = np.asarray(~np.isnan(m.scores).all(axis=1) if m.scores.size else
                      np.zeros(len(m.text_hashes), dtype=bool), dtype=bool)
    hashes = [h for h, k in zip(m.text_hashes, keep.tolist(), strict=True) if k]
    vectors = m.vectors if keep.all() else m.vectors[keep]
    return vectors, m.scores[keep], store.features(hashes), hashes


def inactive(store: Path, models: tuple[str, ...], why: str, t0: float,
             fitted: FittedTargets | None = None) -> TierModel:
    return TierModel(None, models, (), why, fitted, store, (time.perf_counter() - t0) * 1e3)


def load_tiers(routes: RouteSet, fingerprint: Fingerprint, *,
               settings: KnnSettings | None = None, path: str | Path | None = None,
               ) -> TierModel:
    """Load the outcomes store once and build the predictor over every ladder model of
    `routes` (`KnnSettings()` defaults; the feature line from the stored text features)."""
    t0 = time.perf_counter()
    file = Path(path) if path is not None else store_path(routes)
    models = tuple(dict.fromkeys(k for ladder in routes.ladders for k in ladder.models))
    fitted = load_fitted(tiers_path(file))
    if not file.exists():
        return inactive(file, models, f"no outcomes store at {file} (import outcomes with "
                        f"`semroute outcomes import`)", t0, fitted)
    with OutcomeStore(file) as store:
        vectors, scores, feats, hashes = predictor_inputs(store, fingerprint, list(models))
    if not len(hashes):
        return inactive(file, models, f"the outcomes store {file} has no records of "
                        f"{', '.join(models)} with vectors of encoder "
                        f"{fingerprint.describe()}", t0, fitted)
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    index, made = cached_index(vecs, search_cache_path(file, fingerprint),
                               salt=encoder_key(fingerprint))
    predictor = TierPredictor.build(vecs, scores, feats, models, settings, index=index)
    lacking = int(np.isnan(feats).any(axis=1).sum())
    line = ("feature line + kNN" + (f", {lacking} texts without stored features given the "
                                    f"mean" if lacking else "")) if predictor.base is not None \
        else f"plain kNN ({lacking} of {len(hashes)} texts have no stored features: import " \
        f"them again)" if (settings or KnnSettings()).features else "plain kNN"
    search = "exact search" if made == "exact" else \
        f"IVF search ({ivf_lists(len(hashes))} lists, index {made})"
    return TierModel(predictor, models, tuple(hashes),
                     f"{len(hashes)} outcome texts from {file}, {line}, {search}", fitted, file,
                     (time.perf_counter() - t0) * 1e3)

