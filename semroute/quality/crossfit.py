"""`fit --cross-fit K`: correct the optimism of a fitted misroute rate by cross-fitting.

Thresholds chosen to put the validation misroute just under the target sit, on other data,
above it: the sweep picks the point whose validation rows happen to look best (a winner's
curse, worst where rows are few or weighted heavily, e.g. out-of-scope rows reweighted to a
large live share). So the validation rows are split into K label-stratified folds (twice,
with two seeds, by default); for each candidate internal target t (a grid of multiples of
the target), thresholds fitted on K − 1 folds are scored on the fold left out, giving the
held-out (weighted) misroute m(t). The curve m(t) is made non-decreasing (pool adjacent
violators) and the internal target is where it crosses the target (linear interpolation);
the final fit is on all rows at that internal target. When even the lowest grid point's
held-out misroute is above the target, the target cannot be met on unseen rows: the
internal target is the largest one at that lowest level (the target itself when lowering it
does not help: never above it), and `expected` says so.
It corrects noise, not a shift: if unseen traffic's in-scope queries are harder than the
validation file's, no reweighting of validation rows can see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semroute.quality.evaluation import LabelledQuery, index_route
from semroute.quality.fitting import FitResult, fit_thresholds
from semroute.routing import Decision

GRID = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.15, 1.3)  # internal target / target
MIN_FOLDS = 2


@dataclass(frozen=True)
class CrossFit:
    """The internal target to fit at, and the held-out misroute curve it was read from."""

    target: float
    internal: float
    expected: float  # cross-fitted held-out misroute at `internal` (smoothed)
    curve: tuple[tuple[float, float], ...]  # (internal target, held-out misroute) per grid point
    folds: int

    @property
    def reachable(self) -> bool:
        """Whether the cross-fitted held-out misroute can meet the target."""
        return self.expected <= self.target + 1e-9

    def describe(self) -> str:
        line = (f"cross-fitted over {self.folds} folds: fitting at {self.internal:.2%} keeps "
                f"the held-out misroute at {self.expected:.2%} (target {self.target:.1%})")
        if not self.reachable:
            line += ("; the target is not met on held-out rows at any internal target: expect "
                     "about this rate, or raise --target-misroute / add validation rows")
        return line


def stratified_folds(data: Sequence[LabelledQuery], k: int, seed: int = 0) -> list[int]:
    """Fold number per row: each label's rows shuffled (seeded) and dealt round-robin, the
    deal continuing across labels so folds stay even in size."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, q in enumerate(data):
        by.setdefault(q.label, []).append(i)
    out = [0] * len(data)
    start = 0
    for label in sorted(by):
        idx = np.asarray(by[label])
        rng.shuffle(idx)
        for j, i in enumerate(idx.tolist()):
            out[i] = (start + j) % k
        start += idx.size
    return out


def monotone(y: Sequence[float]) -> list[float]:
    """The least-squares non-decreasing fit of `y` (pool adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in y:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [m for m, n in blocks for _ in range(int(n))]


def read_curve(grid: Sequence[float], held: Sequence[float], target: float) -> tuple[float, float]:
    """(internal target, smoothed held-out misroute there): where the smoothed curve crosses
    the target, else the largest grid point at its lowest level."""
    ys = monotone(held)
    if ys[0] > target:
        last = max(i for i, y in enumerate(ys) if y == ys[0])
        return min(grid[last], 1.0), ys[0]
    for i in range(len(grid) - 1):
        if ys[i] <= target < ys[i + 1]:
            f = (target - ys[i]) / (ys[i + 1] - ys[i])
            return grid[i] + f * (grid[i + 1] - grid[i]), target
    return grid[-1], ys[-1]


def cross_fit_target(decisions: Sequence[Decision], data: Sequence[LabelledQuery], *,
                     target: float, folds: int = 5, weights: Sequence[float] | None = None,
                     seed: int = 0, repeats: int = 2, **fit_kwargs: Any) -> CrossFit:
    """The internal target at which `fit_thresholds` on all rows keeps the cross-fitted
    held-out misroute at `target` (see the module doc). `fit_kwargs` go to every fit."""
    if folds < MIN_FOLDS:
        raise ValueError(f"cross-fitting needs at least {MIN_FOLDS} folds, got {folds}")
    ws = [1.0] * len(data) if weights is None else [float(w) for w in weights]
    parts = []
    for rep in range(repeats):
        fold = np.asarray(stratified_folds(data, folds, seed + rep))
        parts += [(np.flatnonzero(fold != f).tolist(), np.flatnonzero(fold == f).tolist())
                  for f in range(folds)]
    held: list[float] = []
    for mult in GRID:
        decided = wrong = 0.0
        for train, test in parts:
            fit = fit_thresholds([decisions[i] for i in train], [data[i] for i in train],
                                 target_misroute=target * mult,
                                 weights=[ws[i] for i in train], **fit_kwargs)
            th = fit.thresholds()
            for i in test:
                route = index_route(decisions[i], th)
                if route is not None:
                    decided += ws[i]
                    wrong += ws[i] * (route != data[i].label)
        held.append(wrong / decided if decided else 0.0)
    mult, expected = read_curve(GRID, held, target)
    return CrossFit(target, target * mult, expected,
                    tuple((target * g, h) for g, h in zip(GRID, held, strict=True)), folds)


def fit_cross_fitted(decisions: Sequence[Decision], data: Sequence[LabelledQuery], *,
                     target_misroute: float, folds: int = 5,
                     weights: Sequence[float] | None = None, seed: int = 0, repeats: int = 2,
                     min_coverage: float = 0.0, **fit_kwargs: Any) -> tuple[FitResult, CrossFit]:
    """`fit_thresholds` on all rows at the cross-fitted internal target; the result keeps
    the user's target and notes what cross-fitting found (`min_coverage` binds the final
    fit only)."""
    cf = cross_fit_target(decisions, data, target=target_misroute, folds=folds,
                          weights=weights, seed=seed, repeats=repeats, **fit_kwargs)
    fit = fit_thresholds(decisions, data, target_misroute=cf.internal, weights=weights,
                         min_coverage=min_coverage, **fit_kwargs)
    fit.target = target_misroute
    fit.notes.insert(0, cf.describe())
    if not fit.feasible:
        fit.message += f" ({cf.describe()})"  # the refused rate is the internal target
    return fit, cf
