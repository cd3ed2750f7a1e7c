"""Per-route thresholds that do not overfit thin routes (`fit --shrink K`).

A route's own threshold fitted on a few dozen validation rows follows their noise: on held-out
data it misroutes more than the target. So each route's fitted threshold t̂ is pulled towards
the router-wide one t by its row count n: t + (t̂ − t)·n / (n + K). A route with K rows goes
half-way, a route with 10·K rows keeps 91% of its own. Shrinking moves thresholds both ways,
so one shift δ is then added to every threshold (router-wide and per route), the smallest that
keeps the (weighted) misroute on validation within the target: the sweep over δ is the plain
score sweep over each row's score minus its route's threshold.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from semroute.quality.sweep import TOL, Group, SweepRows


def shrink_thresholds(rows: SweepRows, margin: float, score: float,
                      per_route: Mapping[str, float], kappa: float,
                      target: float) -> tuple[float, dict[str, float]] | None:
    """(router-wide, per-route) thresholds after shrinking by row count and one shift that
    keeps the target on `rows`; None when no shift does."""
    past = (rows.margin >= margin) & np.isfinite(rows.score)
    fixed = (rows.margin >= margin) & ~np.isfinite(rows.score)
    names, counts = np.unique(rows.route[past], return_counts=True)
    n_of = dict(zip(names.tolist(), counts.tolist(), strict=True))
    shrunk = {r: score + (t - score) * n_of.get(r, 0) / (n_of.get(r, 0) + kappa)
              for r, t in per_route.items()}
    own = np.asarray([shrunk.get(r, score) for r in rows.route[past].tolist()],
                     dtype=np.float64)
    adjusted = rows.score[past] - own
    g = Group.of(adjusted, rows.wrong[past], rows.weight[past])
    base_c = float(rows.weight[fixed].sum())
    base_w = float((rows.weight * rows.wrong)[fixed].sum())
    ok = base_w + g.cw <= target * (base_c + g.cc) + TOL
    if not ok.any():
        return None
    j = int(np.flatnonzero(ok)[np.argmax(g.cc[ok])])
    delta = g.threshold(j)  # accept adjusted scores >= delta
    return score + delta, {r: t + delta for r, t in shrunk.items()}
