"""Fit the index's thresholds on labelled validation data (`semroute fit`).

Goal: the largest share of queries decided by the index (fewest sent to the classifier) while
the index path's misroute rate (wrong / decided by the index) stays at or below a target.
The search is an exact sweep over the observed scores and margins; the result is checked by
re-deciding every query through `Thresholds.check`, the router's own rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from semroute.errors import InfeasibleTargetError
from semroute.index import Calibration
from semroute.quality.evaluation import EvalResult, LabelledQuery, index_route, score_decisions
from semroute.quality.shrinkage import shrink_thresholds
from semroute.quality.sweep import (
    EPS,
    TOL,
    Group,
    SweepRows,
    global_sweep,
    joint_exact,
    joint_weighted,
)
from semroute.routing import Decision, Thresholds

__all__ = ["EPS", "FitResult", "evaluate_with", "fit_thresholds", "redecide", "to_calibration"]

@dataclass
class FitResult:
    """Chosen thresholds and what they do on the data they were fitted on."""

    feasible: bool
    message: str
    score_threshold: float
    margin_threshold: float
    per_route: dict[str, float]
    fixed: dict[str, float]
    target: float
    rows: int
    decided: int
    wrong: int
    best_misroute: float | None = None
    global_only_decided: int = 0
    notes: list[str] = field(default_factory=list)
    weighted: tuple[float, float, float] | None = None  # decided, wrong, total weight

    @property
    def weighted_misroute(self) -> float | None:
        """Misroute rate of the index path on the traffic the weights stand for."""
        if self.weighted is None:
            return self.misroute
        return self.weighted[1] / self.weighted[0] if self.weighted[0] else None

    @property
    def coverage(self) -> float:
        """Share of all rows the index decides."""
        return self.decided / self.rows if self.rows else 0.0

    @property
    def misroute(self) -> float | None:
        """Misroute rate of the index path (wrong / decided); None when nothing is decided."""
        return self.wrong / self.decided if self.decided else None

    @property
    def misroute_upper95(self) -> float | None:
        """Wilson 95% upper bound of the index misroute rate: what unseen data may show."""
        if not self.decided:
            return None
        n, p, z = self.decided, self.wrong / self.decided, 1.96
        centre = p + z * z / (2 * n)
        spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return min(1.0, (centre + spread) / (1 + z * z / n))

    def thresholds(self) -> Thresholds:
        """The thresholds the router will use (route files' own thresholds win)."""
        return Thresholds(self.score_threshold, self.margin_threshold,
                          {**self.per_route, **self.fixed})


def _rows(decisions: Sequence[Decision], data: Sequence[LabelledQuery],
          fixed: Mapping[str, float], weights: Sequence[float] | None) -> SweepRows:
    """Rows the index can decide. A route with a fixed (route-file) threshold ignores the
    global score threshold: its rows get +inf when they pass it, and are dropped otherwise."""
    score: list[float] = []
    margin: list[float] = []
    wrong: list[bool] = []
    route: list[str] = []
    weight: list[float] = []
    ws = [1.0] * len(data) if weights is None else weights
    for d, q, wt in zip(decisions, data, ws, strict=True):
        if not d.candidates:
            continue
        top = d.candidates[0].route
        s = float(d.score)
        if top in fixed:
            if s < fixed[top]:
                continue
            s = math.inf
        score.append(s)
        margin.append(float(d.margin))
        wrong.append(top != q.label)
        route.append(top)
        weight.append(float(wt))
    return SweepRows(np.asarray(score, dtype=np.float64), np.asarray(margin, dtype=np.float64),
                     np.asarray(wrong, dtype=bool), np.asarray(route, dtype=str),
                     np.asarray(weight, dtype=np.float64))


def _verify(decisions: Sequence[Decision], data: Sequence[LabelledQuery], th: Thresholds,
            weights: Sequence[float]) -> tuple[int, int, float, float]:
    """(decided, wrong, decided weight, wrong weight) when every decision is re-decided
    through `Thresholds.check`."""
    decided = wrong = 0
    dw = ww = 0.0
    for d, q, wt in zip(decisions, data, weights, strict=True):
        route = index_route(d, th)
        if route is not None:
            decided += 1
            wrong += route != q.label
            dw += wt
            ww += wt * (route != q.label)
    return decided, wrong, dw, ww


def fit_thresholds(decisions: Sequence[Decision], data: Sequence[LabelledQuery], *,
                   target_misroute: float = 0.03, min_route_rows: int = 30,
                   fixed: Mapping[str, float] | None = None,
                   min_coverage: float = 0.0,
                   weights: Sequence[float] | None = None, shrink: float = 0.0) -> FitResult:
    """Choose score and margin thresholds from index-only decisions on validation data.

    1. Router-wide score and margin: exact 2-D sweep (`sweep.global_sweep`), one sort then
       O(n) per candidate margin, one candidate per distinct margin of a wrong row (plus 0):
       O(n log n + u · n), u ≤ wrong rows + 1, in blocks of about 2M cells.
    2. At that margin, a score threshold per route with at least `min_route_rows` rows
       (0: none) and one shared by the others, chosen jointly (`sweep.joint_exact`, O(W²)
       for W wrong rows; `sweep.joint_weighted` with weights) so the index path as a whole
       decides the most rows within the target.
    3. Coverage and misroute are then counted by re-deciding every row through
       `Thresholds.check`. `fixed` are route-file thresholds (they win over calibration).

    `weights` (one per row, e.g. `oos_share_weights` or `fit --outcomes`' cell weights) make
    the target hold on traffic the weighted rows stand for: decided and wrong are weight sums.
    `shrink` K > 0 pulls each route's threshold towards the router-wide one by its row count n
    (weight n / (n + K)), then shifts all to keep the target (`shrinkage.shrink_thresholds`).
    """
    if len(decisions) != len(data):
        raise ValueError(f"{len(decisions)} decisions for {len(data)} rows")
    if weights is not None and len(weights) != len(data):
        raise ValueError(f"{len(weights)} weights for {len(data)} rows")
    fixed = dict(fixed or {})
    r = _rows(decisions, data, fixed, weights)
    ws = [1.0] * len(data) if weights is None else [float(w) for w in weights]
    total = float(sum(ws))
    s_th, m_th, decided_w, _, lowest = global_sweep(r, target_misroute)
    n = len(data)
    if not decided_w or decided_w < min_coverage * total - TOL:
        best = f"{lowest:.1%}" if lowest is not None else "n/a"
        msg = (f"no thresholds keep the index misroute rate at or below {target_misroute:.1%}"
               f" while deciding {'any query' if not decided_w else f'{min_coverage:.0%} of them'}"
               f" (lowest reachable misroute rate: {best}); add or fix utterances (see "
               f"`semroute lint`), or raise --target-misroute")
        return FitResult(False, msg, s_th, m_th, {}, fixed, target_misroute, n, 0, 0,
                         best_misroute=lowest)
    fit = FitResult(True, "", s_th, m_th, {}, fixed, target_misroute, n, 0, 0)
    fit.global_only_decided = _verify(decisions, data, fit.thresholds(), ws)[0]
    joint = _fit_per_route(fit, r, min_route_rows) if min_route_rows > 0 else None
    if shrink > 0 and fit.per_route:
        shrunk = shrink_thresholds(r, fit.margin_threshold, fit.score_threshold,
                                   fit.per_route, shrink, target_misroute)
        if shrunk is not None:
            fit.score_threshold, fit.per_route = shrunk[0], shrunk[1]
            joint = None
    fit.score_threshold = min(1.0, max(-1.0, fit.score_threshold))
    fit.decided, fit.wrong, dw, ww = _verify(decisions, data, fit.thresholds(), ws)
    if weights is not None:
        fit.weighted = (dw, ww, total)
    if joint is not None and not (math.isclose(joint[0], dw, abs_tol=1e-6)
                                  and math.isclose(joint[1], ww, abs_tol=1e-6)):
        fit.notes.append(f"re-deciding through the router's rule gave {dw:g} decided / "
                         f"{ww:g} wrong, the sweep expected {joint[0]:g} / {joint[1]:g}")
    if fit.decided < 30:
        fit.notes.append(f"only {fit.decided} rows decided by the index: the misroute estimate is "
                         f"loose (95% upper bound {fit.misroute_upper95 or 0:.1%})")
    fit.message = (f"index decides {fit.coverage:.1%} of {n} rows at a misroute rate of "
                   f"{fit.misroute or 0:.2%} (target {target_misroute:.1%})")
    if weights is not None:
        fit.message = (f"weighted: index decides {dw / total if total else 0:.1%} at a "
                       f"misroute rate of {ww / dw if dw else 0:.2%} (target "
                       f"{target_misroute:.1%}); unweighted: {fit.message}")
    return fit


def _fit_per_route(fit: FitResult, r: SweepRows, min_rows: int) -> tuple[float, float] | None:
    """At the global margin, one score threshold per route with at least `min_rows` rows
    and one shared by the other routes, chosen jointly so the index path as a whole meets
    the target with the most weight decided; routes whose threshold is fixed in their file
    are taken as they are. Returns the expected (decided, wrong) weight."""
    past = r.margin >= fit.margin_threshold
    fixed_mask = past & np.isinf(r.score)
    rest = past & ~fixed_mask
    names, counts = np.unique(r.route[rest], return_counts=True)
    own = [n for n, c in zip(names.tolist(), counts.tolist(), strict=True) if c >= min_rows]
    if not own:
        return None
    masks = [rest & (r.route == n) for n in own]
    for m in masks:
        rest &= ~m
    masks.append(rest)
    groups = [Group.of(r.score[m], r.wrong[m], r.weight[m]) for m in masks]
    base_c = float(r.weight[fixed_mask].sum())
    base_w = float((r.weight * r.wrong)[fixed_mask].sum())
    joint = (joint_exact if r.unit else joint_weighted)(groups, fit.target, base_c, base_w)
    if joint is None:
        return None
    ends, decided, wrong = joint
    for name, g, j in zip(own, groups[:-1], ends[:-1], strict=True):
        fit.per_route[name] = g.threshold(j)
        if j < 0:
            fit.notes.append(f"route '{name}': the index will not decide it (every threshold "
                             f"costs more misroutes than it saves classifier calls)")
    if rest.any():
        fit.score_threshold = groups[-1].threshold(ends[-1])
    return base_c + decided, base_w + wrong


def redecide(d: Decision, th: Thresholds) -> Decision:
    """`d` as the router would decide it under `th`. Exact for index decisions; a query the
    index no longer takes becomes "undecided" (what the classifier would say is unknown)."""
    route = index_route(d, th)
    top = d.candidates[0].route if d.candidates else None
    threshold = th.for_route(top) if top else th.score
    base = replace(d, threshold=threshold, margin_threshold=th.margin)
    if route is not None:
        return replace(base, route=route, method="index",
                       reason=f"re-decided: score {d.score:.3f} ≥ {threshold:.3f} and margin "
                              f"{d.margin:.3f} ≥ {th.margin:.3f}")
    if d.method == "index":
        runner = d.candidates[1].route if len(d.candidates) > 1 else None
        return replace(base, route=None, method="undecided",
                       reason=th.check(top, d.score, d.margin, runner) or "")
    return base


def evaluate_with(decisions: Sequence[Decision], data: Sequence[LabelledQuery],
                  thresholds: Thresholds, route_names: Sequence[str]) -> EvalResult:
    """Held-out numbers for fitted thresholds: re-decide existing decisions, then score."""
    return score_decisions([redecide(d, thresholds) for d in decisions], data, route_names)


def to_calibration(fit: FitResult, *, build_id: str, data: str) -> Calibration:
    """The fit as the `calibration.json` that `Router.load` reads."""
    if not fit.feasible:
        raise InfeasibleTargetError(fit.message)
    return Calibration(
        score_threshold=fit.score_threshold, margin_threshold=fit.margin_threshold,
        per_route=dict(fit.per_route), target_misroute=fit.target,
        expected_coverage=fit.coverage, expected_misroute=fit.misroute or 0.0,
        build_id=build_id, data=data, rows=fit.rows,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"))
