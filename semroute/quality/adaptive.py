"""Thresholds fitted on what live traffic taught (`semroute fit --outcomes`).

Validation rows come from the outcomes store: requests the classifier decided (its route is
the label) and requests a feedback correction labelled (the label wins), whose text was kept.
They are not a sample of live traffic: their routes are spread differently (the classifier
sees the routes the index covers worst; people correct some routes more than others). So each
row is weighted by w(route) = live share / validation share of its label, and the fit keeps
the misroute target on the reweighted rows, i.e. on traffic spread like the live traffic.

The live shares are the journal's route shares of every logged request (whatever decided it,
text kept or not). We chose them over EM on the index's posteriors (Saerens, Latinne and
Decaestecker 2002): EM needs calibrated class posteriors, and route scores are cosine-based
scores, not probabilities; it would also need the text of every live query. The journal's
shares are biased only by the index's own misroutes (a few percent at the usual targets).
Weights are clipped at `max_weight` times their mean so one rare route cannot carry the fit;
the effective sample size (sum w)^2 / sum w^2 says how many rows the weighted fit is worth.

This corrects the prior (route mix) only: within a route, classifier rows are the queries the
index found hard, so the fitted thresholds err on the strict side.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from semroute.errors import DataError
from semroute.quality.evaluation import LabelledQuery, index_route
from semroute.quality.fitting import EPS, FitResult
from semroute.routing import Decision, Thresholds

if TYPE_CHECKING:
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


def store_rows(store: OutcomeStore, route_names: Sequence[str], since: float | None = None
               ) -> tuple[list[LabelledQuery], Counter[str], Counter[str], Counter[str]]:
    """(rows, sources, skipped, live route counts): classifier-decided and feedback-labelled
    requests with text, and the route of every logged request."""
    names = set(route_names)
    labels = {f.request_id: f.label for f in store.feedback() if f.label is not None}
    rows: list[LabelledQuery] = []
    sources: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    live: Counter[str] = Counter()
    for r in store.requests(since=since):
        live[r.route] += 1
        label, source = labels.get(r.request_id), "feedback"
        if label is None and r.method == "classifier":
            label, source = r.route, "classifier"
        if label is None:
            continue
        if label not in names:
            skipped["label names no route"] += 1
        elif not r.text:
            skipped["text not kept"] += 1
        else:
            rows.append(LabelledQuery(r.text, label))
            sources[source] += 1
    return rows, sources, skipped, live


def prior_weights(labels: Sequence[str], live: Mapping[str, float], *,
                  max_weight: float = MAX_WEIGHT) -> list[float]:
    """w = live share / validation share per label, mean 1, clipped at `max_weight`; a label
    live traffic never showed keeps a small weight (1/10 of the smallest live share)."""
    n = len(labels)
    if not n:
        return []
    counts = Counter(labels)
    total = sum(live.values())
    floor = min((v for v in live.values() if v > 0), default=1.0) / 10
    raw = np.asarray([(live.get(lab, 0.0) or floor) / total / (counts[lab] / n)
                      if total else 1.0 for lab in labels], dtype=np.float64)
    w = raw / raw.mean()
    for _ in range(500):  # clip and renormalise until stable
        clipped = np.minimum(w, max_weight)
        clipped /= clipped.mean()
        if np.allclose(clipped, w, rtol=1e-12, atol=0):
            break
        w = clipped
    return [float(x) for x in w]


def outcome_validation(store: OutcomeStore, route_names: Sequence[str], *,
                       since: float | None = None, extra: Sequence[LabelledQuery] = (),
                       max_weight: float = MAX_WEIGHT) -> OutcomeValidation:
    """The store's labelled rows (plus `extra`, e.g. a labelled file), weighted to the live
    route mix of the journal."""
    rows, sources, skipped, live = store_rows(store, route_names, since)
    rows = [*rows, *extra]
    if extra:
        sources["file"] += len(extra)
    total = sum(live.values())
    labels = [q.label for q in rows]
    counts = Counter(labels)
    return OutcomeValidation(
        rows, prior_weights(labels, live, max_weight=max_weight), sources,
        {k: v / total for k, v in live.items()} if total else {},
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
            + ". Keep query texts (router.outcomes.keep_text), wait for more traffic, add "
              "--data FILE, or lower --min-rows")


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
