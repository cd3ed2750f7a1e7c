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
from numpy.typing import NDArray

from semroute.errors import InfeasibleTargetError
from semroute.index import Calibration
from semroute.quality.evaluation import EvalResult, LabelledQuery, index_route, score_decisions
from semroute.routing import Decision, Thresholds

# A fitted threshold sits just below the lowest accepted value (scores and margins in a
# Decision are rounded to 6 decimals; this keeps the live, unrounded check on the same side).
EPS = 5e-6
_TOL = 1e-9
_CELLS = 1 << 21  # cells of the (margins × rows) block swept at once


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


@dataclass(frozen=True)
class _Rows:
    """The index's top pick per row, as arrays: effective score, margin, wrong, route."""

    score: NDArray[np.float64]
    margin: NDArray[np.float64]
    wrong: NDArray[np.bool_]
    route: NDArray[np.str_]


def _rows(decisions: Sequence[Decision], data: Sequence[LabelledQuery],
          fixed: Mapping[str, float]) -> _Rows:
    """Rows the index can decide. A route with a fixed (route-file) threshold ignores the
    global score threshold: its rows get +inf when they pass it, and are dropped otherwise."""
    score: list[float] = []
    margin: list[float] = []
    wrong: list[bool] = []
    route: list[str] = []
    for d, q in zip(decisions, data, strict=True):
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
    return _Rows(np.asarray(score, dtype=np.float64), np.asarray(margin, dtype=np.float64),
                 np.asarray(wrong, dtype=bool), np.asarray(route, dtype=str))


def _below(hi: float, lo: float | None) -> float:
    """A threshold accepting `hi` and rejecting `lo` (the next lower observed value)."""
    if math.isinf(hi):
        return 1.0 if lo is None else min(1.0, lo + EPS)
    gap = EPS if lo is None else min(EPS, (hi - lo) / 2)
    return hi - gap


@dataclass(frozen=True)
class _Group:
    """Rows sharing one score threshold, by descending score: decided and wrong counts at
    the end of each run of equal scores (a threshold can only cut between runs)."""

    s: NDArray[np.float64]
    ends: NDArray[np.int64]
    cc: NDArray[np.int64]
    cw: NDArray[np.int64]

    @classmethod
    def of(cls, score: NDArray[np.float64], wrong: NDArray[np.bool_]) -> _Group:
        order = np.argsort(-score, kind="stable")
        s, w = score[order], wrong[order].astype(np.int64)
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]).astype(np.int64) if s.size \
            else np.zeros(0, dtype=np.int64)
        return cls(s, ends, ends + 1, np.cumsum(w)[ends])

    def by_budget(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """For each number of wrong rows b = 0..all: the most rows decided with at most b
        wrong, and the run end that does it (-1: decide none)."""
        total = int(self.cw[-1]) if self.cw.size else 0
        j = np.searchsorted(self.cw, np.arange(total + 1), side="right") - 1
        return np.where(j >= 0, self.cc[np.maximum(j, 0)] if self.cc.size else 0, 0), j

    def threshold(self, j: int) -> float:
        """The score threshold deciding runs 0..j (above every score when j is -1)."""
        if j < 0:
            return float(self.s[0]) + EPS if self.s.size else 1.0
        pos = int(self.ends[j])
        lo = float(self.s[pos + 1]) if pos + 1 < self.s.size else None
        return max(-1.0, _below(float(self.s[pos]), lo))


def _joint(groups: Sequence[_Group], target: float, base_c: int,
           base_w: int) -> tuple[list[int], int, int] | None:
    """Exact choice of one threshold per group maximising the rows decided with
    (base_w + wrong) <= target * (base_c + decided): a max-plus convolution over the number
    of wrong rows, O(W²) for W wrong rows. Returns (run end per group, decided, wrong)."""
    best = np.zeros(1, dtype=np.int64)  # best[a]: most rows decided with at most a wrong
    picks: list[NDArray[np.int64]] = []
    for g in groups:
        gain, _ = g.by_budget()
        new = np.full(best.size + gain.size - 1, -1, dtype=np.int64)
        pick = np.zeros(new.size, dtype=np.int64)
        for b in range(gain.size):
            cand = best + gain[b]
            view, pview = new[b:b + best.size], pick[b:b + best.size]
            better = cand > view
            view[better], pview[better] = cand[better], b
        best = new
        picks.append(pick)
    a_all = np.arange(best.size)
    ok = base_w + a_all <= target * (base_c + best) + _TOL
    if not ok.any():
        return None
    a = int(np.argmax(np.where(ok, best, -1)))
    decided, ends = int(best[a]), []
    for g, pick in zip(reversed(groups), reversed(picks), strict=True):
        b = int(pick[a])
        ends.append(int(g.by_budget()[1][b]))
        a -= b
    ends.reverse()
    wrong = sum(int(g.cw[j]) for g, j in zip(groups, ends, strict=True) if j >= 0)
    return ends, decided, wrong


def _margin_candidates(r: _Rows) -> list[tuple[float, float]]:
    """(observed margin, threshold) pairs worth trying: 0, and just above each wrong row's
    margin (lowering the margin threshold otherwise only adds right decisions)."""
    mu = np.unique(r.margin)
    out = [(0.0, 0.0)]
    for mw in np.unique(r.margin[r.wrong]):
        k = int(np.searchsorted(mu, mw, side="right"))
        if k < mu.size:
            hi, lo = float(mu[k]), float(mu[k - 1])
            out.append((hi, max(0.0, hi - min(EPS, (hi - lo) / 2))))
    return out


def _global_sweep(r: _Rows, target: float) -> tuple[float, float, int, int, float | None]:
    """Exact 2-D sweep. Rows are sorted by score once; for a block of candidate margins at a
    time, cumulative sums of (margin ≥ candidate) and of wrong rows at each distinct score
    give decided and wrong counts for every (score, margin) pair at once. Among pairs within
    the target: most decided, then fewest wrong, then the lower margin and higher score.
    Returns (score threshold, margin threshold, decided, wrong, lowest ratio seen)."""
    if not r.score.size:
        return 1.0, 0.0, 0, 0, None
    order = np.argsort(-r.score, kind="stable")
    s, m, w = r.score[order], r.margin[order], r.wrong[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    cands = _margin_candidates(r)
    observed = np.asarray([c[0] for c in cands])
    step = max(1, _CELLS // s.size)
    best: tuple[int, int, int, int] | None = None  # decided, wrong, candidate, boundary
    lowest = math.inf
    for start in range(0, observed.size, step):
        mask = m[None, :] >= observed[start:start + step, None]
        cc = np.cumsum(mask, axis=1)[:, ends]
        cw = np.cumsum(mask & w, axis=1)[:, ends]
        lowest = min(lowest, float(np.min(cw / np.maximum(cc, 1), where=cc > 0,
                                          initial=math.inf)))
        ok = (cc > 0) & (cw <= target * cc + _TOL)
        if not ok.any():
            continue
        top = np.where(ok, cc, -1)
        c_max = int(top.max())
        at_max = top == c_max
        w_min = int(cw[at_max].min())
        k, j = (int(v[0]) for v in np.nonzero(at_max & (cw == w_min)))  # row-major: k, then j
        if best is None or (c_max, -w_min) > (best[0], -best[1]):
            best = (c_max, w_min, start + k, j)
    low = None if math.isinf(lowest) else lowest
    if best is None:
        return 1.0, 0.0, 0, 0, low
    c, wr, k, j = best
    pos = int(ends[j])
    lo = float(s[pos + 1]) if pos + 1 < s.size else None
    return max(-1.0, _below(float(s[pos]), lo)), cands[k][1], c, wr, low


def _verify(decisions: Sequence[Decision], data: Sequence[LabelledQuery],
            th: Thresholds) -> tuple[int, int]:
    """(decided, wrong) when every decision is re-decided through `Thresholds.check`."""
    decided = wrong = 0
    for d, q in zip(decisions, data, strict=True):
        route = index_route(d, th)
        if route is not None:
            decided += 1
            wrong += route != q.label
    return decided, wrong


def fit_thresholds(decisions: Sequence[Decision], data: Sequence[LabelledQuery], *,
                   target_misroute: float = 0.03, min_route_rows: int = 30,
                   fixed: Mapping[str, float] | None = None,
                   min_coverage: float = 0.0) -> FitResult:
    """Choose score and margin thresholds from index-only decisions on validation data.

    1. Router-wide score and margin: exact 2-D sweep (`_global_sweep`), one sort then O(n)
       per candidate margin, one candidate per distinct margin of a wrong row (plus 0):
       O(n log n + u · n), u ≤ wrong rows + 1, in blocks of about 2M cells.
    2. At that margin, a score threshold per route with at least `min_route_rows` rows
       (0: none) and one shared by the others, chosen jointly (`_joint`, O(W²) for W wrong
       rows) so the index path as a whole decides the most rows within the target.
    3. Coverage and misroute are then counted by re-deciding every row through
       `Thresholds.check`. `fixed` are route-file thresholds (they win over calibration).
    """
    if len(decisions) != len(data):
        raise ValueError(f"{len(decisions)} decisions for {len(data)} rows")
    fixed = dict(fixed or {})
    r = _rows(decisions, data, fixed)
    s_th, m_th, decided, wrong, lowest = _global_sweep(r, target_misroute)
    n = len(data)
    if not decided or decided < min_coverage * n:
        best = f"{lowest:.1%}" if lowest is not None else "n/a"
        msg = (f"no thresholds keep the index misroute rate at or below {target_misroute:.1%}"
               f" while deciding {'any query' if not decided else f'{min_coverage:.0%} of them'} "
               f"(lowest reachable misroute rate: {best}); add or fix utterances (see "
               f"`semroute lint`), or raise --target-misroute")
        return FitResult(False, msg, s_th, m_th, {}, fixed, target_misroute, n, decided, wrong,
                         best_misroute=lowest)
    fit = FitResult(True, "", s_th, m_th, {}, fixed, target_misroute, n, decided, wrong,
                    global_only_decided=decided)
    joint = _fit_per_route(fit, r, min_route_rows) if min_route_rows > 0 else None
    if joint is not None:
        fit.decided, fit.wrong = joint
    fit.score_threshold = min(1.0, max(-1.0, fit.score_threshold))
    expected = (fit.decided, fit.wrong)
    fit.decided, fit.wrong = _verify(decisions, data, fit.thresholds())
    if (fit.decided, fit.wrong) != expected:
        fit.notes.append(f"re-deciding through the router's rule gave {fit.decided} decided / "
                         f"{fit.wrong} wrong, the sweep expected {expected[0]} / {expected[1]}")
    if fit.decided < 30:
        fit.notes.append(f"only {fit.decided} rows decided by the index: the misroute estimate is "
                         f"loose (95% upper bound {fit.misroute_upper95 or 0:.1%})")
    fit.message = (f"index decides {fit.coverage:.1%} of {n} rows at a misroute rate of "
                   f"{fit.misroute or 0:.2%} (target {target_misroute:.1%})")
    return fit


def _fit_per_route(fit: FitResult, r: _Rows, min_rows: int) -> tuple[int, int] | None:
    """At the global margin, one score threshold per route with at least `min_rows` rows
    and one shared by the other routes, chosen jointly (`_joint`) so the index path as a
    whole meets the target with the most rows decided; routes whose threshold is fixed in
    their file are taken as they are. Returns the expected (decided, wrong)."""
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
    groups = [_Group.of(r.score[m], r.wrong[m]) for m in masks]
    base_c, base_w = int(fixed_mask.sum()), int(r.wrong[fixed_mask].sum())
    joint = _joint(groups, fit.target, base_c, base_w)
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
