"""Fitting a ladder's target on held-out outcomes (`semroute outcomes fit`): each stored
outcome text gets the predictions of a tier predictor that never saw its fold, and the target
is set so that the ladder sends exactly the wanted share of those texts to its strongest model
(`strong_share`), or reaches the wanted share of the best single model's quality at the
lowest cost (`quality`).

The ladder's rule (routing/tiering.py): the cheapest model predicted >= target serves, else
the strongest. So the strongest serves a text exactly when every cheaper model's prediction is
below the target: with `s` the largest cheaper prediction per text, the strong share at target
t is the share of texts with s < t, and the target halfway between two neighbouring sorted
`s` values hits a share of k/n exactly (ties aside). Support (`min_support`) is not modelled:
fit on a store large enough for every query to find k neighbours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from semroute.errors import DataError
from semroute.outcomes import FittedTarget, KnnSettings, TierPredictor
from semroute.quality.cost_quality import fold_ids

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

QUALITY_GRID = 2000  # candidate targets tried for a quality goal on a ladder of 3+ models


@dataclass(frozen=True)
class HeldOut:
    """Out-of-fold predictions [n, m] and the actual scores [n, m] of the texts scored by
    every ladder model."""

    predicted: NDArray[np.float64]
    actual: NDArray[np.float64]


def held_out(vectors: NDArray[np.float32], scores: NDArray[np.float64],
             features: NDArray[np.float64] | None, models: Sequence[str], *, folds: int = 5,
             seed: int = 0, settings: KnnSettings | None = None) -> HeldOut:
    """Each text's predicted quality from a predictor built on the other folds (the same
    predictor the router builds: `TierPredictor`)."""
    n = scores.shape[0]
    if folds < 2 or n < folds:
        raise DataError(f"{n} outcome texts cannot be split into {folds} folds; use --folds "
                        f"between 2 and {max(n, 2)}")
    fid = fold_ids(n, folds, seed)
    pred = np.zeros(scores.shape)
    for f in range(folds):
        test, train = np.flatnonzero(fid == f), np.flatnonzero(fid != f)
        model = TierPredictor.build(vectors[train], scores[train],
                                    None if features is None else features[train], models,
                                    settings)
        pred[test] = model.predict(vectors[test],
                                   None if features is None else features[test]).quality
    full = ~np.isnan(scores).any(axis=1)
    if not full.any():
        raise DataError(f"no outcome text is scored for every ladder model "
                        f"({', '.join(models)}): nothing to fit on")
    return HeldOut(pred[full], scores[full])


def served(predicted: NDArray[np.float64], target: float) -> NDArray[np.intp]:
    """The ladder's choice per text at `target`: the cheapest column >= target, else the
    last."""
    m = predicted.shape[1]
    clears = predicted[:, :-1] >= target
    return np.asarray(np.where(clears.any(axis=1), clears.argmax(axis=1), m - 1), np.intp)


def outcome_at(h: HeldOut, target: float) -> tuple[float, float]:
    """(strong share, mean actual quality) of the ladder at `target` on the held-out texts."""
    pick = served(h.predicted, target)
    rows = np.arange(pick.size)
    return float((pick == h.predicted.shape[1] - 1).mean()), float(h.actual[rows, pick].mean())


def target_for_share(h: HeldOut, share: float) -> float:
    """The target sending `share` of the texts to the strongest model (as exactly as n
    allows): halfway between the k-th and (k+1)-th smallest best-cheaper prediction."""
    s = np.sort(h.predicted[:, :-1].max(axis=1))
    k = round(share * s.size)
    if k <= 0:
        return float(np.clip(s[0] - 1e-6, 0.0, 1.0))
    if k >= s.size:
        return float(np.clip(s[-1] + 1e-6, 0.0, 1.0))
    return float(np.clip((s[k - 1] + s[k]) / 2, 0.0, 1.0))


def target_for_quality(h: HeldOut, wanted: float) -> float:
    """The lowest (cheapest) target whose mean actual quality reaches `wanted` x the best
    single model's; the strongest model everywhere when no lower target does."""
    goal = wanted * float(h.actual.mean(axis=0).max())
    s = h.predicted[:, :-1].max(axis=1)
    if h.predicted.shape[1] == 2:  # exact: send the k lowest-s texts to the strong model
        order = np.argsort(s, kind="stable")
        strong = np.concatenate([[0.0], np.cumsum(h.actual[order, 1])])
        cheap = np.concatenate([[0.0], np.cumsum(h.actual[order, 0])])
        quality = (strong + cheap[-1] - cheap) / s.size
        ok = np.flatnonzero(quality >= goal - 1e-12)
        k = int(ok[0]) if ok.size else s.size
        return target_for_share(h, k / s.size)
    values = np.unique(h.predicted[:, :-1])
    if values.size > QUALITY_GRID:
        values = np.quantile(values, np.linspace(0, 1, QUALITY_GRID))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2,
                                 [values[-1] + 1e-6]])
    for t in np.clip(candidates, 0.0, 1.0):
        if outcome_at(h, float(t))[1] >= goal - 1e-12:
            return float(t)
    return 1.0


def fit_target(h: HeldOut, models: Sequence[str], *, strong_share: float | None = None,
               quality: float | None = None, folds: int = 5) -> FittedTarget:
    """The fitted target for one goal (exactly one of `strong_share`, `quality`), with what
    it achieves on the held-out texts."""
    if (strong_share is None) == (quality is None):
        raise ValueError("give exactly one of strong_share and quality")
    if strong_share is not None:
        if not 0.0 <= strong_share <= 1.0:
            raise DataError(f"--target-strong-share must be in [0, 1], got {strong_share}")
        goal, wanted, target = "strong_share", strong_share, target_for_share(h, strong_share)
    else:
        assert quality is not None
        if not 0.0 < quality <= 1.0:
            raise DataError(f"--target-quality must be in (0, 1] (a share of the best single "
                            f"model's quality), got {quality}")
        goal, wanted, target = "quality", quality, target_for_quality(h, quality)
    share, q = outcome_at(h, target)
    return FittedTarget(target=target, goal=goal, wanted=wanted, achieved_strong_share=share,
                        achieved_quality=q, strong_quality=float(h.actual[:, -1].mean()),
                        models=list(models), rows=int(h.actual.shape[0]), folds=folds,
                        fitted_at=time.time())
