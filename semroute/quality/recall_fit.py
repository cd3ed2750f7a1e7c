"""Fit router-wide thresholds for an out-of-scope recall goal: the most in-scope queries
routed right while at least a share R of the validation rows labelled `oos` stay undecided.

`fit_thresholds` bounds the misroute rate of what the index decides; with near-miss
out-of-scope queries that bound is a poor proxy for "reject most of them", and its per-route
thresholds overfit thin routes (banking77_oos, 10 utterances per route, 500 out-of-scope
examples: misroute targets gave 68.8% in-scope at 92.2% OOS recall; this fit at R = 90% gives
more at the same recall, benchmarks/results/accuracy_oos.md). For each candidate margin
threshold the score threshold is the lowest that keeps R of the `oos` rows out; the pair with
the most in-scope rows routed right wins, checked through `Thresholds.check`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from semroute.errors import InfeasibleTargetError
from semroute.quality.evaluation import OOS, LabelledQuery, index_route
from semroute.quality.fitting import FitResult
from semroute.routing import Decision, Thresholds

if TYPE_CHECKING:
    from numpy.typing import NDArray

MARGIN_QUANTILES = np.linspace(0.0, 0.5, 26)  # candidate margins: quantiles of the observed
ROUNDING = 1e-6  # a Decision's score and margin are rounded to 6 decimals


def above(lo: float, scores: NDArray[np.float64]) -> float:
    """A score threshold rejecting `lo` and accepting the next higher score, with room for
    the rounding of `Decision.score` (the live score may be up to half a unit higher)."""
    higher = scores[(scores > lo) & np.isfinite(scores)]
    gap = ROUNDING if not len(higher) else min(ROUNDING, float(higher.min() - lo) / 2)
    return lo + gap


def fit_oos_recall(decisions: Sequence[Decision], data: Sequence[LabelledQuery], *,
                   oos_recall: float = 0.9, fixed: Mapping[str, float] | None = None
                   ) -> FitResult:
    """Router-wide score and margin thresholds with validation OOS recall ≥ `oos_recall`
    and the most in-scope rows routed right (no per-route thresholds: thin routes overfit).
    `fixed`: route-file thresholds, which win over the fitted score threshold.
    Raises `InfeasibleTargetError` when the data has no `oos` rows."""
    if not 0.0 < oos_recall <= 1.0:
        raise ValueError(f"oos_recall must be in (0, 1], got {oos_recall}")
    if len(decisions) != len(data):
        raise ValueError(f"{len(decisions)} decisions for {len(data)} labelled rows")
    n_oos = sum(q.label == OOS for q in data)
    if not n_oos:
        raise InfeasibleTargetError("the validation data has no rows labelled 'oos': an "
                                    "out-of-scope recall goal needs some (label them 'oos')")
    has = [bool(d.candidates) for d in decisions]
    fixed = dict(fixed or {})

    def sweep_score(d: Decision) -> float:  # a fixed threshold decides the row by itself
        top = d.candidates[0].route
        return d.score if top not in fixed else math.inf if d.score >= fixed[top] else -math.inf

    score = np.asarray([sweep_score(d) for d, h in zip(decisions, has, strict=True) if h],
                       np.float64)
    margin = np.asarray([d.margin for d, h in zip(decisions, has, strict=True) if h],
                        np.float64)
    oos = np.asarray([q.label == OOS for q, h in zip(data, has, strict=True) if h])
    right = np.asarray([d.candidates[0].route == q.label
                        for d, q, h in zip(decisions, data, has, strict=True) if h])
    allowed = math.floor((1.0 - oos_recall) * n_oos + 1e-9)  # oos rows the index may take
    best: tuple[int, int, float, float] | None = None  # (right, decided, score, margin)
    observed = np.quantile(margin, MARGIN_QUANTILES) if len(margin) else np.zeros(0)
    margins = np.unique(np.concatenate(([0.0], np.maximum(observed - ROUNDING, 0.0))))
    for m in margins:
        keep = (margin >= m) & (score > -math.inf)  # -inf: below a route-file threshold
        taken = np.sort(score[keep & oos])[::-1]
        t = -math.inf if len(taken) <= allowed else above(taken[allowed], score[keep])
        if math.isinf(t) and t > 0:  # only rows of routes with fixed thresholds are left out
            continue
        decided = keep & (score >= t)
        cand = (int((decided & right).sum()), int(decided.sum()), t, float(m))
        if best is None or cand[:2] > best[:2]:
            best = cand
    if best is None:
        raise InfeasibleTargetError(
            f"out-of-scope recall {oos_recall:.0%} is out of reach: routes with their own "
            f"threshold in the route file take too many 'oos' rows; raise those thresholds")
    _, _, t, m = best
    th = Thresholds(t if math.isfinite(t) else -1.0, m, fixed)
    routed = [index_route(d, th) for d in decisions]
    decided = sum(r is not None for r in routed)
    wrong = sum(r is not None and r != q.label for r, q in zip(routed, data, strict=True))
    kept = sum(r is None for r, q in zip(routed, data, strict=True) if q.label == OOS) / n_oos
    in_scope = sum(q.label != OOS for q in data)
    hit = sum(r == q.label for r, q in zip(routed, data, strict=True) if q.label != OOS)
    message = (f"score ≥ {th.score:.3f} and margin ≥ {m:.3f}: OOS recall {kept:.1%} "
               f"(goal {oos_recall:.0%}), in-scope accuracy {hit / max(in_scope, 1):.1%} on "
               f"{len(data)} validation rows")
    return FitResult(feasible=True, message=message, score_threshold=th.score,
                     margin_threshold=m, per_route={}, fixed=fixed,
                     target=wrong / decided if decided else 0.0, rows=len(data),
                     decided=decided, wrong=wrong,
                     notes=[f"fitted for out-of-scope recall ≥ {oos_recall:.0%} "
                            f"(validation: {kept:.1%})"])
