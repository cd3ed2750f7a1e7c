"""The threshold sweeps behind `fit`, over rows with a weight each (1 = a plain count).

`fit` on a labelled file, `fit --oos-share` (in-scope and out-of-scope rows reweighted to the
live share) and `fit --outcomes` (rows reweighted to the live route mix) all go through these
functions: one path, weights per row. With unit weights every sum is an exact integer, so the
unweighted fit is the weighted one with all weights 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# A fitted threshold sits just below the lowest accepted value (scores and margins in a
# Decision are rounded to 6 decimals; this keeps the live, unrounded check on the same side).
EPS = 5e-6
TOL = 1e-9
CELLS = 1 << 21  # cells of the (margins × rows) block swept at once
LAGRANGE_STEPS = 60


@dataclass(frozen=True)
class SweepRows:
    """The index's top pick per row, as arrays: effective score, margin, wrong, route and
    the row's weight."""

    score: NDArray[np.float64]
    margin: NDArray[np.float64]
    wrong: NDArray[np.bool_]
    route: NDArray[np.str_]
    weight: NDArray[np.float64]

    @property
    def unit(self) -> bool:
        """Whether every weight is 1 (plain counts: the exact integer search applies)."""
        return bool(np.all(self.weight == 1.0))


def below(hi: float, lo: float | None) -> float:
    """A threshold accepting `hi` and rejecting `lo` (the next lower observed value)."""
    if math.isinf(hi):
        return 1.0 if lo is None else min(1.0, lo + EPS)
    gap = EPS if lo is None else min(EPS, (hi - lo) / 2)
    return hi - gap


@dataclass(frozen=True)
class Group:
    """Rows sharing one score threshold, by descending score: decided and wrong weight at
    the end of each run of equal scores (a threshold can only cut between runs); `nw` counts
    wrong rows for the exact integer search."""

    s: NDArray[np.float64]
    ends: NDArray[np.int64]
    cc: NDArray[np.float64]
    cw: NDArray[np.float64]
    nw: NDArray[np.int64]

    @classmethod
    def of(cls, score: NDArray[np.float64], wrong: NDArray[np.bool_],
           weight: NDArray[np.float64]) -> Group:
        order = np.argsort(-score, kind="stable")
        s, w, wt = score[order], wrong[order], weight[order]
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]).astype(np.int64) if s.size \
            else np.zeros(0, dtype=np.int64)
        return cls(s, ends, np.cumsum(wt)[ends], np.cumsum(wt * w)[ends],
                   np.cumsum(w.astype(np.int64))[ends])

    def by_budget(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Unit weights: for each number of wrong rows b = 0..all, the most rows decided with
        at most b wrong, and the run end that does it (-1: decide none)."""
        total = int(self.nw[-1]) if self.nw.size else 0
        j = np.searchsorted(self.nw, np.arange(total + 1), side="right") - 1
        cc = self.cc.astype(np.int64)
        return np.where(j >= 0, cc[np.maximum(j, 0)] if cc.size else 0, 0), j

    def threshold(self, j: int) -> float:
        """The score threshold deciding runs 0..j (above every score when j is -1)."""
        if j < 0:
            return float(self.s[0]) + EPS if self.s.size else 1.0
        pos = int(self.ends[j])
        lo = float(self.s[pos + 1]) if pos + 1 < self.s.size else None
        return max(-1.0, below(float(self.s[pos]), lo))

    def at(self, j: int) -> tuple[float, float]:
        """(decided, wrong) weight when runs 0..j are decided."""
        return (0.0, 0.0) if j < 0 else (float(self.cc[j]), float(self.cw[j]))


def joint_exact(groups: Sequence[Group], target: float, base_c: float,
                base_w: float) -> tuple[list[int], float, float] | None:
    """Unit weights: exact choice of one threshold per group maximising the rows decided
    with (base_w + wrong) <= target * (base_c + decided): a max-plus convolution over the
    number of wrong rows, O(W²) for W wrong rows. Returns (run end per group, decided, wrong)."""
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
    ok = base_w + a_all <= target * (base_c + best) + TOL
    if not ok.any():
        return None
    a = int(np.argmax(np.where(ok, best, -1)))
    decided, ends = int(best[a]), []
    for g, pick in zip(reversed(groups), reversed(picks), strict=True):
        b = int(pick[a])
        ends.append(int(g.by_budget()[1][b]))
        a -= b
    ends.reverse()
    wrong = sum(g.at(j)[1] for g, j in zip(groups, ends, strict=True))
    return ends, float(decided), float(wrong)


def joint_weighted(groups: Sequence[Group], target: float, base_c: float,
                   base_w: float) -> tuple[list[int], float, float] | None:
    """Weighted rows: one threshold per group by Lagrangian relaxation. For a price λ of
    wrong weight each group alone maximises decided − λ·wrong; λ is bisected to the smallest
    price whose choices meet (base_w + wrong) <= target * (base_c + decided). Optimal among
    the choices on the groups' upper hulls (the exact search is a knapsack over real
    weights); each group's choice then grows one run at a time while the target holds."""
    if not groups:
        return None

    def choose(lam: float) -> list[int]:
        out = []
        for g in groups:
            gain = g.cc - lam * g.cw
            j = int(np.argmax(gain)) if gain.size else -1
            out.append(j if gain.size and gain[j] > TOL else -1)
        return out

    def totals(ends: Sequence[int]) -> tuple[float, float]:
        c = w = 0.0
        for g, j in zip(groups, ends, strict=True):
            dc, dw = g.at(j)
            c, w = c + dc, w + dw
        return c, w

    def feasible(ends: Sequence[int]) -> bool:
        c, w = totals(ends)
        return base_w + w <= target * (base_c + c) + TOL

    hi = 1.0 / target if target > 0 else 1e12
    if not feasible(choose(hi)):
        return None
    lo = 0.0
    if not feasible(choose(lo)):
        for _ in range(LAGRANGE_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if feasible(choose(mid)) else (mid, hi)
        lo = hi
    ends = choose(lo)
    grown = True
    while grown:
        grown = False
        for i, g in enumerate(groups):
            if ends[i] + 1 < g.cc.size:
                trial = [*ends[:i], ends[i] + 1, *ends[i + 1:]]
                if feasible(trial):
                    ends, grown = trial, True
    c, w = totals(ends)
    return ends, c, w


def margin_candidates(r: SweepRows) -> list[tuple[float, float]]:
    """(observed margin, threshold) pairs worth trying: 0, and just above each wrong row's
    margin (lowering the margin threshold otherwise only adds right decisions)."""
    mu = np.unique(r.margin)
    out = [(0.0, 0.0)]
    for mw in np.unique(r.margin[r.wrong & (r.weight > 0)]):
        k = int(np.searchsorted(mu, mw, side="right"))
        if k < mu.size:
            hi, lo = float(mu[k]), float(mu[k - 1])
            out.append((hi, max(0.0, hi - min(EPS, (hi - lo) / 2))))
    return out


def global_sweep(r: SweepRows, target: float) -> tuple[float, float, float, float, float | None]:
    """Exact 2-D sweep. Rows are sorted by score once; for a block of candidate margins at a
    time, cumulative sums of the weight with (margin ≥ candidate) and of the wrong rows'
    weight at each distinct score give decided and wrong weight for every (score, margin)
    pair at once. Among pairs within the target: most decided, then least wrong, then the
    lower margin and higher score. Returns (score threshold, margin threshold, decided,
    wrong, lowest ratio seen)."""
    if not r.score.size:
        return 1.0, 0.0, 0.0, 0.0, None
    order = np.argsort(-r.score, kind="stable")
    s, m, w, wt = r.score[order], r.margin[order], r.wrong[order], r.weight[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    cands = margin_candidates(r)
    observed = np.asarray([c[0] for c in cands])
    step = max(1, CELLS // s.size)
    best: tuple[float, float, int, int] | None = None  # decided, wrong, candidate, boundary
    lowest = math.inf
    for start in range(0, observed.size, step):
        mask = m[None, :] >= observed[start:start + step, None]
        cc = np.cumsum(mask * wt, axis=1)[:, ends]
        cw = np.cumsum(mask * (wt * w), axis=1)[:, ends]
        lowest = min(lowest, float(np.min(cw / np.maximum(cc, 1e-300), where=cc > 0,
                                          initial=math.inf)))
        ok = (cc > 0) & (cw <= target * cc + TOL)
        if not ok.any():
            continue
        top = np.where(ok, cc, -1.0)
        c_max = float(top.max())
        at_max = top == c_max
        w_min = float(cw[at_max].min())
        k, j = (int(v[0]) for v in np.nonzero(at_max & (cw == w_min)))  # row-major: k, then j
        if best is None or (c_max, -w_min) > (best[0], -best[1]):
            best = (c_max, w_min, start + k, j)
    low = None if math.isinf(lowest) else lowest
    if best is None:
        return 1.0, 0.0, 0.0, 0.0, low
    c, wr, k, j = best
    pos = int(ends[j])
    lo = float(s[pos + 1]) if pos + 1 < s.size else None
    return max(-1.0, below(float(s[pos]), lo)), cands[k][1], c, wr, low
