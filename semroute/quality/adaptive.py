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

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from semroute.errors import DataError
from semroute.quality.evaluation import LabelledQuery
from semroute.quality.fitting import FitResult, fit_thresholds
from semroute.routing import Decision

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
    misroute rate of the index path stays within the target: `fit_thresholds` with these
    weights and no per-route thresholds (the same exact sweep as every fit)."""
    fit = fit_thresholds(decisions, data, target_misroute=target_misroute, min_route_rows=0,
                         fixed=fixed, weights=weights)
    if not fit.feasible:
        fit.message = (f"no thresholds keep the reweighted index misroute rate at or below "
                       f"{target_misroute:.1%}")
        return fit
    got_w, wrong_w, total_w = fit.weighted or (0.0, 0.0, 1.0)
    fit.message = (f"reweighted to the live route mix: index decides "
                   f"{got_w / (total_w or 1.0):.1%} at a misroute rate of "
                   f"{wrong_w / got_w if got_w else 0:.2%} (target {target_misroute:.1%}); "
                   f"unweighted: {fit.coverage:.1%} at {fit.misroute or 0:.2%}")
    return fit
