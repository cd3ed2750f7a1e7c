"""Cost-quality metrics of a router: RouteLLM's PGR, APGR and CPT for two models, and the
cost-quality frontier with its operating points for any number of models.

Definitions follow lm-sys/RouteLLM `routellm/evals/{benchmarks,evaluate}.py`: the two-model
curve has one point per threshold at the 0%, 10%, ..., 100% quantiles of the router's
strong-preference scores (`>=` the threshold calls the strong model, `>` for the last one),
APGR is the trapezoid area under quality over the strong-call share, normalised so the weak
model is 0 and the strong model 1, and CPT(x) is the strong-call share where the curve first
reaches PGR x (linear between curve points).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

ROUTELLM_BINS = 10
"""RouteLLM's `num_results`: 10 equal-sized bins, so 11 thresholds."""


@dataclass(frozen=True)
class Curve:
    """A router's cost-quality curve: one (cost, quality) point per knob setting, cost ascending.

    For two models `cost` is the strong model's call share in [0, 1]."""

    cost: NDArray[np.float64]
    quality: NDArray[np.float64]

    def to_dict(self) -> dict[str, list[float]]:
        return {"cost": [float(x) for x in self.cost], "quality": [float(x) for x in self.quality]}


def _ordered(cost: NDArray[np.float64], quality: NDArray[np.float64]) -> Curve:
    order = np.lexsort((quality, cost))
    return Curve(np.asarray(cost, np.float64)[order], np.asarray(quality, np.float64)[order])


def threshold_curve(preference: NDArray[np.float64], weak: NDArray[np.float64],
                    strong: NDArray[np.float64], *, bins: int | None = ROUTELLM_BINS) -> Curve:
    """Quality against strong-call share when rows with `preference >= t` call the strong model.

    `weak`/`strong` are each row's score with either model. `bins=10` is RouteLLM's curve (11
    quantile thresholds); `bins=None` takes every distinct preference value (the exact curve).
    """
    pref = np.asarray(preference, np.float64)
    w, s = np.asarray(weak, np.float64), np.asarray(strong, np.float64)
    if not (pref.shape == w.shape == s.shape) or pref.ndim != 1 or pref.size == 0:
        raise ValueError("preference, weak and strong must be equal-length, non-empty 1-d arrays")
    if bins is None:
        thresholds = np.unique(pref)
        shares, quals = [1.0], [float(s.mean())]  # below every threshold: all strong
        for t in thresholds:
            pick = pref > t
            shares.append(float(pick.mean()))
            quals.append(float(np.where(pick, s, w).mean()))
        return _ordered(np.array(shares), np.array(quals))
    thresholds = np.quantile(pref, np.linspace(0.0, 1.0, bins + 1))
    shares, quals = [], []
    for i, t in enumerate(thresholds):
        pick = pref >= t if i != len(thresholds) - 1 else pref > t
        shares.append(float(pick.mean()))
        quals.append(float(np.where(pick, s, w).mean()))
    return _ordered(np.array(shares), np.array(quals))


def pgr(quality: float, q_weak: float, q_strong: float) -> float | None:
    """Performance gap recovered: 0 at the weak model's quality, 1 at the strong one's; None
    when the two models are equally good (no gap to recover)."""
    gap = q_strong - q_weak
    if abs(gap) < 1e-12:
        return None
    return (quality - q_weak) / gap


def apgr(curve: Curve, q_weak: float, q_strong: float) -> float | None:
    """Average PGR: area under the curve between the weak and strong models' areas over the
    same cost span (RouteLLM's `apgr_metric`); None when q_strong == q_weak or the curve has
    no span."""
    x = curve.cost
    span = float(x[-1] - x[0])
    if abs(q_strong - q_weak) < 1e-12 or span <= 0:
        return None
    auc = float(np.trapezoid(curve.quality, x))
    return (auc - q_weak * span) / ((q_strong - q_weak) * span)


def cpt(curve: Curve, q_weak: float, q_strong: float, target: float) -> float | None:
    """Call-performance threshold: the smallest cost (strong-call share) at which the curve
    reaches PGR `target` (e.g. 0.5), linear between points; None if it never does or the
    models are equally good."""
    if abs(q_strong - q_weak) < 1e-12:
        return None
    goal = q_weak + target * (q_strong - q_weak)
    x, y = curve.cost, curve.quality
    sign = 1.0 if q_strong > q_weak else -1.0
    reached = sign * (y - goal) >= -1e-12
    if not reached.any():
        return None
    i = int(np.argmax(reached))
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = float(x[i - 1]), float(x[i]), float(y[i - 1]), float(y[i])
    return x1 if y1 == y0 else x0 + (goal - y0) * (x1 - x0) / (y1 - y0)


def random_apgr_curve(weak: NDArray[np.float64], strong: NDArray[np.float64]) -> Curve:
    """The expected curve of a router that calls the strong model at random: a straight line
    from the weak model to the strong one (its APGR is 0.5, CPT(x) is x)."""
    return Curve(np.array([0.0, 1.0]), np.array([float(np.mean(weak)), float(np.mean(strong))]))


def choose(predicted: NDArray[np.float64], cost: NDArray[np.float64],
           weight: float) -> NDArray[np.intp]:
    """Per row, the model maximising predicted quality - weight * cost (ties: the cheaper)."""
    utility = predicted - weight * cost - 1e-9 * cost
    return np.asarray(np.argmax(utility, axis=1), dtype=np.intp)


def frontier(predicted: NDArray[np.float64], actual: NDArray[np.float64],
             cost: NDArray[np.float64], *, points: int = 200,
             expected_cost: NDArray[np.float64] | None = None) -> Curve:
    """The learned router's curve over the cost weight (large = cheapest, 0 = best predicted
    quality, negative = the dearer model unless predicted much worse, up to always the
    dearest), realised with the actual scores and costs; Pareto points only.

    `predicted`, `actual`, `cost` are [n, m]; a missing actual score (NaN) counts as 0. The
    choice weighs `expected_cost` (what is known before the call, e.g. predicted) when given,
    the realised `cost` otherwise; the curve's cost is always the realised one."""
    act = np.nan_to_num(np.asarray(actual, np.float64), nan=0.0)
    c = np.asarray(cost, np.float64)
    scale = float(np.nanmean(np.abs(c))) or 1.0
    half = np.logspace(-4, 4, max(points // 2, 2)) / scale
    weights = np.concatenate([-half[::-1], [0.0], half])
    rows = np.arange(act.shape[0])
    qs, cs = [], []
    for w in weights:
        pick = choose(predicted, c if expected_cost is None else expected_cost, float(w))
        qs.append(float(act[rows, pick].mean()))
        cs.append(float(c[rows, pick].mean()))
    return pareto(np.array(cs), np.array(qs))


def pareto(cost: NDArray[np.float64], quality: NDArray[np.float64]) -> Curve:
    """Keep the points no other point beats on both cost and quality, cost ascending."""
    curve = _ordered(cost, quality)
    keep_c: list[float] = []
    keep_q: list[float] = []
    for c, q in zip(curve.cost, curve.quality, strict=True):
        if keep_q and q <= keep_q[-1]:
            continue
        if keep_c and c == keep_c[-1]:
            keep_q[-1] = float(q)
            continue
        keep_c.append(float(c))
        keep_q.append(float(q))
    return Curve(np.array(keep_c), np.array(keep_q))


@dataclass(frozen=True)
class OperatingPoints:
    """Where a learned router stands against the best single model.

    `quality`/`cost`: the router's best quality at no more than the best single model's cost;
    `cost_at_95`: its lowest cost reaching 95% of the best single model's quality (None if the
    curve never gets there); `saving_at_95`: 1 - cost_at_95 / best_single_cost."""

    quality: float
    cost: float
    best_single: int
    best_single_quality: float
    best_single_cost: float
    cost_at_95: float | None
    saving_at_95: float | None


def operating_points(curve: Curve, actual: NDArray[np.float64],
                     cost: NDArray[np.float64], *, share: float = 0.95) -> OperatingPoints:
    """The router's quality at the best single model's cost and its cost at `share` of that
    model's quality (linear between curve points, never below the curve's cheapest point)."""
    act = np.nan_to_num(np.asarray(actual, np.float64), nan=0.0)
    c = np.asarray(cost, np.float64)
    means, costs = act.mean(axis=0), c.mean(axis=0)
    best = int(np.lexsort((costs, -means))[0])  # highest quality, then cheapest
    bq, bc = float(means[best]), float(costs[best])
    affordable = curve.cost <= bc + 1e-12
    if affordable.any():
        i = int(np.argmax(np.where(affordable, curve.quality, -np.inf)))
        q, qc = float(curve.quality[i]), float(curve.cost[i])
    else:
        q, qc = float(curve.quality[0]), float(curve.cost[0])
    goal = share * bq
    at95: float | None = None
    reached = curve.quality >= goal - 1e-12
    if reached.any():
        i = int(np.argmax(reached))
        at95 = float(curve.cost[i])
        if i > 0:
            x0, x1 = float(curve.cost[i - 1]), float(curve.cost[i])
            y0, y1 = float(curve.quality[i - 1]), float(curve.quality[i])
            at95 = x0 + (goal - y0) * (x1 - x0) / (y1 - y0)
    saving = None if at95 is None or bc <= 0 else 1.0 - at95 / bc
    return OperatingPoints(q, qc, best, bq, bc, at95, saving)
