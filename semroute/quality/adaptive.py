"""Thresholds fitted on what live traffic taught (`semroute fit --outcomes`).

Validation rows come from the outcomes store's journal, text kept: requests the classifier
decided (its route is the label), requests a feedback label corrected (the label wins) and
requests a feedback score of at least 0.5 confirmed (the route served). They are not a sample
of live traffic: the classifier sees only what the index left undecided, people rate some
requests and not others, and routes are spread differently. The journal logs every request's
method and route, so each row is weighted by how many live requests of its (method, route)
cell it stands for: live count / labelled count. Live requests of a cell with no labelled row
(typically index decisions nobody rated) are carried by the route's other labelled rows, which
makes the weight, with classifier rows alone, the prior-shift correction live share / validation
share of the route. The fit then keeps the misroute target on traffic spread like the live one.

Why the journal's shares and not EM on the index's posteriors (Saerens, Latinne and
Decaestecker 2002): EM needs calibrated class posteriors, and route scores are cosine-based
scores, not probabilities; it would also need every live query's text. The journal's shares
are biased only by the index's own misroutes (a few percent at the usual targets).
Weights are clipped at `max_weight` times their mean so one rare cell cannot carry the fit;
the effective sample size (sum w)^2 / sum w^2 says how many rows the weighted fit is worth.

What no weighting can fix: without rated index decisions, no row has a score above the
thresholds that were live, so the fit cannot tell whether they may rise; it then errs strict
or erratic (`benchmarks/results/fit_outcomes.md`). Rate a sample of index decisions
(feedback scores or labels) and the cells make those rows count for all of them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from semroute.errors import DataError
from semroute.quality.evaluation import LabelledQuery, index_route
from semroute.quality.fitting import EPS, FitResult
from semroute.routing import Decision, Thresholds

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from semroute.outcomes import OutcomeStore

MAX_WEIGHT = 10.0
MIN_ROWS = 50


@dataclass
class OutcomeValidation:
    """Labelled rows from the store, their prior-shift weights, and where they came from."""

    rows: list[LabelledQuery]
    weights: list[float]
    sources: Counter[str] = field(default_factory=Counter)
    live_share: dict[str, float] = field(default_factory=dict)
    valid_share: dict[str, float] = field(default_factory=dict)
    live_requests: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def ess(self) -> float:
        """Effective sample size of the weighted rows: (sum w)^2 / sum w^2."""
        w = np.asarray(self.weights, dtype=np.float64)
        return float(w.sum() ** 2 / (w * w).sum()) if w.size else 0.0


Cell = tuple[str, str]  # (decision method, route served): how a journal row was selected
UNROUTED = ("step", "explicit")  # methods of requests the router did not route


def store_rows(store: OutcomeStore, route_names: Sequence[str], since: float | None = None
               ) -> tuple[list[LabelledQuery], list[Cell], Counter[str], Counter[str],
                          Counter[Cell]]:
    """(rows, their cells, sources, skipped, live count per cell): requests with text that
    the classifier decided (label = its route), that a feedback label corrected (the label),
    or that a feedback score of at least 0.5 confirmed (label = the route served), and the
    (method, route) of every logged request."""
    names = set(route_names)
    labels: dict[str, tuple[str, str]] = {}
    for f in store.feedback():
        if f.label is not None:
            labels[f.request_id] = (f.label, "feedback")
        elif f.score is not None and f.score >= 0.5 and f.request_id not in labels:
            labels[f.request_id] = ("", "confirmed")
    rows: list[LabelledQuery] = []
    cells: list[Cell] = []
    sources: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    live: Counter[Cell] = Counter()
    for r in store.requests(since=since):
        routed = r.method not in UNROUTED  # an agent step or a named model: no decision
        cell = (r.method, r.route)
        if routed:
            live[cell] += 1
        label, source = labels.get(r.request_id, ("", ""))
        if source == "confirmed":
            label = r.route
        if not source and r.method == "classifier":
            label, source = r.route, "classifier"
        if not source:
            continue
        if not routed and source == "confirmed":
            skipped["not routed (agent step or named model)"] += 1
        elif label not in names:
            skipped["label names no route"] += 1
        elif not r.text:
            skipped["text not kept"] += 1
        else:
            rows.append(LabelledQuery(r.text, label))
            cells.append(cell)
            sources[source] += 1
    return rows, cells, sources, skipped, live


def normalise(raw: NDArray[np.float64], max_weight: float) -> list[float]:
    """Weights scaled to mean 1 and clipped at `max_weight` (iterated until stable)."""
    if not raw.size:
        return []
    w = raw / raw.mean()
    for _ in range(500):
        clipped = np.minimum(w, max_weight)
        clipped /= clipped.mean()
        if np.allclose(clipped, w, rtol=1e-12, atol=0):
            break
        w = clipped
    return [float(x) for x in w]


def prior_weights(labels: Sequence[str], live: Mapping[str, float], *,
                  max_weight: float = MAX_WEIGHT) -> list[float]:
    """w = live share / validation share per label, mean 1, clipped at `max_weight`; a label
    live traffic never showed keeps a small weight (1/10 of the smallest live share)."""
    counts = Counter(labels)
    total = sum(live.values())
    floor = min((v for v in live.values() if v > 0), default=1.0) / 10
    raw = np.asarray([(live.get(lab, 0.0) or floor) / total / counts[lab] if total else 1.0
                      for lab in labels], dtype=np.float64)
    return normalise(raw, max_weight)


def cell_weights(cells: Sequence[Cell], live: Mapping[Cell, float], *,
                 max_weight: float = MAX_WEIGHT) -> list[float]:
    """Inverse selection weights: a row stands for live[cell] / labelled[cell] requests of its
    (method, route) cell. Live requests of a route whose cell has no labelled row (e.g. index
    decisions nobody rated) are spread over that route's labelled rows, so with classifier
    rows alone this is `prior_weights` of the served routes."""
    lab = Counter(cells)
    per_route_live: dict[str, float] = defaultdict(float)
    per_route_seen: dict[str, float] = defaultdict(float)
    for (method, route), n in live.items():
        per_route_live[route] += n
        if lab.get((method, route)):
            per_route_seen[route] += n
    raw = np.asarray([live.get(c, 0.0) / lab[c]
                      * (per_route_live[c[1]] / per_route_seen[c[1]]
                         if per_route_seen.get(c[1]) else 1.0)
                      for c in cells], dtype=np.float64)
    raw[raw <= 0] = raw[raw > 0].min() / 10 if (raw > 0).any() else 1.0
    return normalise(raw, max_weight)


def outcome_validation(store: OutcomeStore, route_names: Sequence[str], *,
                       since: float | None = None, extra: Sequence[LabelledQuery] = (),
                       max_weight: float = MAX_WEIGHT) -> OutcomeValidation:
    """The store's labelled rows (plus `extra`, e.g. a labelled file, at the mean weight),
    weighted to stand for the live traffic the journal logged."""
    rows, cells, sources, skipped, live = store_rows(store, route_names, since)
    weights = cell_weights(cells, live, max_weight=max_weight)
    rows, weights = [*rows, *extra], [*weights, *([1.0] * len(extra))]
    if extra:
        sources["file"] += len(extra)
    total = sum(live.values())
    routes: Counter[str] = Counter()
    for (_, route), n in live.items():
        routes[route] += n
    counts = Counter(q.label for q in rows)
    return OutcomeValidation(
        rows, weights, sources, {k: v / total for k, v in routes.items()} if total else {},
        {k: v / len(rows) for k, v in counts.items()} if rows else {}, total, skipped)


def check_enough(v: OutcomeValidation, min_rows: int = MIN_ROWS) -> None:
    """Refuse (`DataError`) when the weighted rows are worth fewer than `min_rows` rows."""
    if len(v.rows) < min_rows or v.ess < min_rows:
        why = ", ".join(f"{n} {k}" for k, n in v.skipped.items())
        raise DataError(
            f"too few labelled rows in the outcomes store to fit on: {len(v.rows)} rows "
            f"(classifier {v.sources.get('classifier', 0)}, feedback "
            f"{v.sources.get('feedback', 0)}), effective sample size {v.ess:.0f} after "
            f"reweighting to the live route mix, {min_rows} needed"
            + (f"; left out: {why}" if why else "")
            + (". Keep query texts (router.outcomes.keep_text), wait" if
               v.skipped.get("text not kept") else ". Wait")
            + " for more traffic, add --data FILE, or lower --min-rows")


def fit_weighted(decisions: Sequence[Decision], data: Sequence[LabelledQuery],
                 weights: Sequence[float], *, target_misroute: float = 0.03,
                 fixed: Mapping[str, float] | None = None) -> FitResult:
    """Router-wide score and margin thresholds that decide the most weight while the weighted
    misroute rate of the index path stays within the target (an exact sweep: one candidate
    margin per wrong row's margin, plus 0; the score cut at every distinct score)."""
    fixed = dict(fixed or {})
    score, margin, wrong, w = [], [], [], []
    for d, q, wt in zip(decisions, data, weights, strict=True):
        if not d.candidates:
            continue
        top, s = d.candidates[0].route, float(d.score)
        if top in fixed:
            if s < fixed[top]:
                continue
            s = math.inf
        score.append(s)
        margin.append(float(d.margin))
        wrong.append(top != q.label)
        w.append(float(wt))
    sc, mg, wr, wa = (np.asarray(x, dtype=np.float64) for x in (score, margin, wrong, w))
    best: tuple[float, float, float, float] | None = None  # decided w, -wrong w, s_th, m_th
    for m in sorted({0.0, *(mg[wr > 0].tolist())}):
        mask = mg >= m if m == 0.0 else mg > m
        order = np.argsort(-sc[mask], kind="stable")
        s, ww, wrw = sc[mask][order], wa[mask][order], (wa * wr)[mask][order]
        if not s.size:
            continue
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
        cd, cw = np.cumsum(ww)[ends], np.cumsum(wrw)[ends]
        ok = cw <= target_misroute * cd + 1e-9
        if not ok.any():
            continue
        j = int(np.argmax(np.where(ok, cd, -1.0)))
        lo = float(s[ends[j] + 1]) if ends[j] + 1 < s.size else None
        hi = float(s[ends[j]])
        s_th = (1.0 if lo is None else min(1.0, lo + EPS)) if math.isinf(hi) else \
            hi - (EPS if lo is None else min(EPS, (hi - lo) / 2))
        above = mg[mg > m]
        m_th = 0.0 if m == 0.0 else min(m + EPS, float(above.min()) if above.size else m + EPS)
        key = (float(cd[j]), -float(cw[j]), max(-1.0, s_th), m_th)
        if best is None or key[:2] > best[:2]:
            best = key
    n = len(data)
    total_w = float(np.sum(weights)) or 1.0
    if best is None:
        return FitResult(False, f"no thresholds keep the reweighted index misroute rate at or "
                                f"below {target_misroute:.1%}", 1.0, 0.0, {}, fixed,
                         target_misroute, n, 0, 0)
    fit = FitResult(True, "", best[2], best[3], {}, fixed, target_misroute, n, 0, 0)
    th = Thresholds(fit.score_threshold, fit.margin_threshold, dict(fixed))
    got_w = wrong_w = 0.0
    for d, q, wt in zip(decisions, data, weights, strict=True):
        route = index_route(d, th)
        if route is not None:
            fit.decided += 1
            fit.wrong += route != q.label
            got_w += wt
            wrong_w += wt * (route != q.label)
    fit.message = (f"reweighted to the live route mix: index decides {got_w / total_w:.1%} at "
                   f"a misroute rate of {wrong_w / got_w if got_w else 0:.2%} (target "
                   f"{target_misroute:.1%}); unweighted: {fit.coverage:.1%} at "
                   f"{fit.misroute or 0:.2%}")
    return fit
