"""`fit --oos-share` and `--oos-share-from`: make the misroute target hold on live traffic
whose out-of-scope share differs from the validation file's.

The index path's misroute rate is wrong / decided, and out-of-scope queries the index routes
are wrong: with more of them live than in validation, the same thresholds misroute more. So
the validation rows are reweighted before the sweep: in-scope rows together weigh 1 − π of
the total and out-of-scope rows π (within each class the rows keep equal weights, so the
class's own mix, e.g. near-miss against off-topic, is the validation file's).

The share π can be estimated from unlabelled traces by adjusted classify-and-count (Forman
2008): on validation, a = P(score < c | in-scope) and b = P(score < c | out-of-scope) for the
cut c separating them best (largest b − a); on the traces the share r of scores below c is
(1 − π)·a + π·b, so π = (r − a) / (b − a), clipped to [0, 1]. It needs only each decision's
score, which every trace record holds, never the query text. It assumes the trace scores come
from the same index build (a rebuild moves scores) and that out-of-scope traffic looks like the
validation file's out-of-scope rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semroute.errors import DataError
from semroute.quality.evaluation import OOS, LabelledQuery, index_route
from semroute.routing import Decision, Thresholds

MIN_TRACE_SCORES = 50
MIN_SEPARATION = 0.2
SCORED_METHODS = frozenset({"index", "classifier", "undecided", "default"})


def is_out_of_scope(q: LabelledQuery, route_names: Sequence[str] | set[str]) -> bool:
    """A row no route should take: labelled `oos`, or a label that names no route."""
    return q.label == OOS or q.label not in route_names


def oos_share_weights(data: Sequence[LabelledQuery], route_names: Sequence[str],
                      share: float, *, where: str = "the validation data") -> list[float]:
    """Row weights (mean 1) under which out-of-scope rows make up `share` of the total."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the out-of-scope share must be in [0, 1), got {share}")
    names = set(route_names)
    oos = np.asarray([is_out_of_scope(q, names) for q in data], dtype=bool)
    n, n_oos = len(data), int(oos.sum())
    if share > 0 and n_oos == 0:
        raise DataError(f"{where} has no out-of-scope rows (label `{OOS}`), so it cannot stand "
                        f"for live traffic with {share:.0%} out-of-scope: add `{OOS}` rows "
                        f"(queries no route should take) or drop the out-of-scope share")
    if n_oos == n:
        raise DataError(f"{where} has no in-scope rows: add rows labelled with route names")
    w_in = (1.0 - share) * n / (n - n_oos)
    w_oos = share * n / n_oos if n_oos else 0.0
    return [w_oos if o else w_in for o in oos.tolist()]


@dataclass(frozen=True)
class ShareEstimate:
    """An out-of-scope share estimated from trace scores, and what it rests on."""

    share: float
    raw: float  # before clipping to [0, 1]
    cut: float
    in_scope_below: float  # a
    oos_below: float  # b
    trace_below: float  # r
    trace_scores: int

    def describe(self) -> str:
        return (f"estimated out-of-scope share {self.share:.1%} from {self.trace_scores} trace "
                f"scores: {self.trace_below:.1%} score below {self.cut:.3f}, against "
                f"{self.in_scope_below:.1%} of in-scope and {self.oos_below:.1%} of "
                f"out-of-scope validation rows")


def trace_scores(path: str | Path) -> list[float]:
    """Scores of the requests an index scored in a trace file (JSON lines): records of
    requests (no `kind`) whose method is index, classifier, undecided or default."""
    p = Path(path)
    out: list[float] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{p}: cannot read the trace file ({exc.strerror or exc})") from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise DataError(f"{p}:{no}: not a JSON line (a semroute trace file has one JSON "
                            f"object per line)") from None
        if not isinstance(rec, dict) or rec.get("kind") is not None:
            continue
        score = rec.get("score")
        if rec.get("method") in SCORED_METHODS and isinstance(score, int | float) \
                and rec.get("candidates"):
            out.append(float(score))
    return out


def estimate_oos_share(decisions: Sequence[Decision], data: Sequence[LabelledQuery],
                       route_names: Sequence[str], scores: Sequence[float], *,
                       where: str = "the trace") -> ShareEstimate:
    """Adjusted classify-and-count of the out-of-scope share of `scores` (see the module
    doc), calibrated on validation decisions and labels."""
    if len(scores) < MIN_TRACE_SCORES:
        raise DataError(f"{where} holds {len(scores)} scored requests, {MIN_TRACE_SCORES} "
                        f"needed to estimate the out-of-scope share: give --oos-share instead")
    names = set(route_names)
    pairs = [(float(d.score), is_out_of_scope(q, names))
             for d, q in zip(decisions, data, strict=True) if d.candidates]
    s_in = np.sort(np.asarray([s for s, o in pairs if not o], dtype=np.float64))
    s_oos = np.sort(np.asarray([s for s, o in pairs if o], dtype=np.float64))
    if not s_in.size or not s_oos.size:
        raise DataError("estimating the out-of-scope share needs in-scope and out-of-scope "
                        f"(`{OOS}`) rows in the validation data: add them, or give --oos-share")
    cuts = np.unique(np.concatenate([s_in, s_oos]))
    a = np.searchsorted(s_in, cuts, side="left") / s_in.size
    b = np.searchsorted(s_oos, cuts, side="left") / s_oos.size
    k = int(np.argmax(b - a))
    if b[k] - a[k] < MIN_SEPARATION:
        raise DataError(f"the index's scores barely separate in-scope from out-of-scope "
                        f"validation rows (best gap {b[k] - a[k]:.1%}), so the trace cannot tell "
                        f"the share: give --oos-share")
    live = np.asarray(scores, dtype=np.float64)
    r = float((live < cuts[k]).mean())
    raw = (r - float(a[k])) / float(b[k] - a[k])
    return ShareEstimate(min(max(raw, 0.0), 0.99), raw, float(cuts[k]), float(a[k]),
                         float(b[k]), r, int(live.size))


def misroute_at_share(decisions: Sequence[Decision], data: Sequence[LabelledQuery],
                      thresholds: Thresholds, route_names: Sequence[str],
                      share: float) -> float | None:
    """The index path's misroute rate (wrong / decided) on `data` reweighted so out-of-scope
    rows make up `share` of it: its expectation on traffic with that share."""
    weights = oos_share_weights(data, route_names, share, where="the held-out data")
    decided = wrong = 0.0
    for d, q, w in zip(decisions, data, weights, strict=True):
        route = index_route(d, thresholds)
        if route is not None:
            decided += w
            wrong += w * (route != q.label)
    return wrong / decided if decided else None
