"""How much a learned router saves at what quality, measured by k-fold cross-validation on a
table of outcomes (`semroute outcomes eval`).

Each fold's rows are predicted by a `QualityPredictor` built on the other folds; the
out-of-fold predictions then give the two-model APGR/CPT curve (RouteLLM's definitions) and
the cost-quality frontier for any number of models. Costs are dollars when the table has
them; otherwise the strong model's call share (two models) or the model's quality rank
scaled to [0, 1] (more models).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from semroute.errors import DataError
from semroute.outcomes.metrics import (
    Curve,
    apgr,
    cpt,
    frontier,
    operating_points,
    threshold_curve,
)
from semroute.outcomes.predict import KnnSettings, QualityPredictor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from semroute.encoders import Encoder


class OutcomeData(Protocol):
    """What the evaluation reads from an outcome table (`semroute.outcomes.OutcomeTable`)."""

    @property
    def source(self) -> str: ...
    @property
    def texts(self) -> Sequence[str]: ...
    @property
    def models(self) -> Sequence[str]: ...
    @property
    def scores(self) -> NDArray[np.float64]: ...
    @property
    def costs(self) -> NDArray[np.float64] | None: ...


@dataclass(frozen=True)
class CostQualityReport:
    """Cross-validated cost and quality of the learned router on one outcome table.

    Two models: `apgr`, `cpt50`, `cpt80` (strong-call shares in [0, 1]) and `apgr_exact` (the
    curve through every threshold, not RouteLLM's 11). Any number: `quality`/`cost` at the
    best single model's cost, that model's, `cost_at_95`, `saving_at_95`, and the oracle's."""

    source: str
    rows: int
    models: tuple[str, ...]
    folds: int
    seed: int
    cost_unit: str
    model_quality: dict[str, float]
    model_cost: dict[str, float]
    quality: float
    cost: float
    best_single: str
    best_single_quality: float
    best_single_cost: float
    cost_at_95: float | None
    saving_at_95: float | None
    oracle_quality: float
    oracle_cost: float
    frontier: Curve
    settings: KnnSettings
    weak: str | None = None
    strong: str | None = None
    apgr: float | None = None
    apgr_exact: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    curve: Curve | None = None
    predicted: NDArray[np.float64] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form; the contract keys (`apgr`, `cpt50`, `cpt80`, `quality`, `cost`,
        `best_single_quality`, `best_single_cost`, `cost_at_95`, `saving_at_95`) at the top."""
        d: dict[str, Any] = {}
        if len(self.models) == 2:
            d.update(apgr=self.apgr, cpt50=self.cpt50, cpt80=self.cpt80)
        d.update(quality=self.quality, cost=self.cost,
                 best_single_quality=self.best_single_quality,
                 best_single_cost=self.best_single_cost, cost_at_95=self.cost_at_95,
                 saving_at_95=self.saving_at_95)
        d.update(source=self.source, rows=self.rows, models=list(self.models),
                 folds=self.folds, seed=self.seed, cost_unit=self.cost_unit,
                 best_single=self.best_single, model_quality=self.model_quality,
                 model_cost=self.model_cost, oracle_quality=self.oracle_quality,
                 oracle_cost=self.oracle_cost, settings=asdict(self.settings),
                 frontier=self.frontier.to_dict())
        if len(self.models) == 2:
            d.update(weak=self.weak, strong=self.strong, apgr_exact=self.apgr_exact,
                     curve=None if self.curve is None else self.curve.to_dict())
        return d


def fold_ids(n: int, folds: int, seed: int,
             groups: Sequence[object] | None = None) -> NDArray[np.intp]:
    """Fold number per row: a seeded shuffle, rows of one group always in one fold."""
    if groups is None:
        perm = np.random.default_rng(seed).permutation(n)
        out = np.empty(n, dtype=np.intp)
        out[perm] = np.arange(n) % folds
        return out
    keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    gid = np.array([keys[g] for g in groups])
    per_group = fold_ids(len(keys), folds, seed)
    return np.asarray(per_group[gid], dtype=np.intp)


def out_of_fold(vectors: NDArray[np.float32], scores: NDArray[np.float64],
                texts: Sequence[str] | None, folds: NDArray[np.intp],
                settings: KnnSettings) -> NDArray[np.float64]:
    """Each row's predicted quality per model from a predictor that never saw its fold."""
    pred = np.zeros(scores.shape, dtype=np.float64)
    for f in np.unique(folds):
        test, train = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        tr_texts = None if texts is None else [texts[int(i)] for i in train]
        te_texts = None if texts is None else [texts[int(i)] for i in test]
        model = QualityPredictor(vectors[train], scores[train], texts=tr_texts,
                                 settings=settings)
        pred[test] = model.predict(vectors[test], te_texts).quality
    return pred


def cost_matrix(scores: NDArray[np.float64],
                costs: NDArray[np.float64] | None) -> tuple[NDArray[np.float64], str]:
    """Per-row cost of each model and its unit: dollars (missing ones: the model's mean), or
    the quality rank scaled to [0, 1] (two models: the strong model's call share)."""
    n, m = scores.shape
    if costs is not None and not np.isnan(costs).all():
        col = np.nanmean(np.where(np.isnan(costs), np.nan, costs), axis=0)
        col = np.where(np.isnan(col), 0.0, col)
        return np.where(np.isnan(costs), col, costs).astype(np.float64), "usd"
    rank = np.argsort(np.argsort(np.nanmean(scores, axis=0), kind="stable"), kind="stable")
    unit = "strong_share" if m == 2 else "quality_rank"
    return np.broadcast_to(rank / max(m - 1, 1), (n, m)).astype(np.float64), unit


def evaluate_outcomes(table: OutcomeData, encoder: Encoder | None = None, *, folds: int = 5,
                      seed: int = 0, settings: KnnSettings | None = None,
                      vectors: NDArray[np.float32] | None = None,
                      groups: Sequence[object] | None = None) -> CostQualityReport:
    """Cross-validate the quality predictor on `table` and measure cost against quality.

    `vectors` (the texts' embeddings) skip the encoder. Only rows with a score for every
    model are scored; all rows with a score train."""
    settings = settings or KnnSettings()
    scores = np.asarray(table.scores, dtype=np.float64)
    n, m = scores.shape
    if m < 2:
        raise DataError(f"{table.source}: routing needs outcomes of at least 2 models, found "
                        f"{m} ({', '.join(table.models)})")
    if folds < 2 or n < folds:
        raise DataError(f"{table.source}: {n} rows cannot be split into {folds} folds; "
                        "use --folds between 2 and the row count")
    if vectors is None:
        if encoder is None:
            raise ValueError("pass an encoder or the texts' vectors")
        vectors = encoder.encode(list(table.texts))
    fid = fold_ids(n, folds, seed, groups)
    cost, unit = cost_matrix(scores, table.costs)
    # dollar costs depend on the answer's length: the router decides on costs predicted the
    # same way as quality (out of fold), and pays the realised ones
    targets = np.hstack([scores, cost]) if unit == "usd" else scores
    pred = out_of_fold(vectors, targets, list(table.texts), fid, settings)
    expected = np.clip(pred[:, m:], 0.0, None) if unit == "usd" else cost
    pred = pred[:, :m]
    full = ~np.isnan(scores).any(axis=1)
    if not full.any():
        raise DataError(f"{table.source}: no row has a score for every model")
    act, p = scores[full], pred[full]
    cost, expected = cost[full], expected[full]
    models = tuple(table.models)
    curve = frontier(p, act, cost, expected_cost=expected)
    ops = operating_points(curve, act, cost)
    utility = act - 1e-9 * cost
    pick = np.argmax(utility, axis=1)
    rows = np.arange(act.shape[0])
    extra: dict[str, Any] = {}
    means = act.mean(axis=0)
    if m == 2:
        weak, strong = (0, 1) if means[1] >= means[0] else (1, 0)
        qw, qs = float(means[weak]), float(means[strong])
        pref = p[:, strong] - p[:, weak]
        tc = threshold_curve(pref, act[:, weak], act[:, strong])
        exact = threshold_curve(pref, act[:, weak], act[:, strong], bins=None)
        extra = dict(weak=models[weak], strong=models[strong], apgr=apgr(tc, qw, qs),
                     apgr_exact=apgr(exact, qw, qs), cpt50=cpt(tc, qw, qs, 0.5),
                     cpt80=cpt(tc, qw, qs, 0.8), curve=tc)
    return CostQualityReport(
        source=table.source, rows=int(full.sum()), models=models, folds=folds, seed=seed,
        cost_unit=unit, model_quality={k: float(v) for k, v in zip(models, means, strict=True)},
        model_cost={k: float(v) for k, v in zip(models, cost.mean(axis=0), strict=True)},
        quality=ops.quality, cost=ops.cost, best_single=models[ops.best_single],
        best_single_quality=ops.best_single_quality, best_single_cost=ops.best_single_cost,
        cost_at_95=ops.cost_at_95, saving_at_95=ops.saving_at_95,
        oracle_quality=float(act[rows, pick].mean()), oracle_cost=float(cost[rows, pick].mean()),
        frontier=curve, settings=settings, predicted=pred, **extra)
