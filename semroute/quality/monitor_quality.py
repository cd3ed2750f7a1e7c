"""Per-route quality against the reference for `semroute monitor`: shadow verdicts (win / tie /
loss against the reference model) and feedback scores, each with a 95% Wilson interval, and
the routes whose mean fell below a threshold on enough evidence.

Rule: a (route, model) pair with at least `MIN_FLAG_N` scored rows is *flagged* when its whole
interval is below the threshold (the evidence says it is worse, not noise around parity), and
*watched* when only its mean is. Pairs with fewer rows are listed, never flagged or watched.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from semroute.outcomes import FeedbackEntry, OutcomeRecord, ShadowVerdict

MIN_FLAG_N = 20
Z95 = 1.959964


@dataclass(frozen=True)
class QualityStat:
    """The evidence on one route (and model): n scored rows, their mean in [0, 1] with a 95%
    Wilson interval; for shadow verdicts also wins / ties / losses against the reference."""

    kind: str  # shadow | feedback | gate
    route: str
    model: str
    n: int
    mean: float
    low: float
    high: float
    wins: int = 0
    ties: int = 0
    losses: int = 0
    corrections: int = 0  # feedback whose label names another route

    @property
    def held(self) -> float | None:
        """Share of shadow verdicts at least as good as the reference (ties + wins)."""
        return (self.wins + self.ties) / self.n if self.kind == "shadow" and self.n else None


@dataclass(frozen=True)
class QualityFlag:
    """A route (and model) whose mean is below the threshold on at least `MIN_FLAG_N` rows:
    flagged (`confirmed`) when its interval's upper end is below it too, else watched."""

    stat: QualityStat
    threshold: float
    confirmed: bool  # the interval's upper end is below the threshold too


def wilson(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `mean` over `n` trials (fractional scores,
    e.g. a shadow tie's 0.5, are treated as their expected share of successes)."""
    if n <= 0:
        return (0.0, 1.0)
    p = min(max(mean, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def stat(kind: str, route: str, model: str, scores: Sequence[float], *,
         corrections: int = 0) -> QualityStat:
    n = len(scores)
    mean = sum(scores) / n if n else 0.0
    low, high = wilson(mean, n)
    return QualityStat(kind, route, model, n, mean, low, high,
                       wins=sum(s > 0.5 for s in scores) if kind == "shadow" else 0,
                       ties=sum(s == 0.5 for s in scores) if kind == "shadow" else 0,
                       losses=sum(s < 0.5 for s in scores) if kind == "shadow" else 0,
                       corrections=corrections)


def grouped(kind: str, rows: Iterable[tuple[str, str, float | None]],
            corrections: Mapping[tuple[str, str], int] | None = None) -> list[QualityStat]:
    """One stat per (route, model) and one per route over all its models (model `*`); a row
    whose score is None counts for no mean (a feedback label or note alone)."""
    per: dict[tuple[str, str], list[float]] = defaultdict(list)
    for route, model, score in rows:
        for key in ((route, model), (route, "*")):
            per[key].extend(() if score is None else (score,))
    fixes: dict[tuple[str, str], int] = defaultdict(int)
    for (route, model), n in (corrections or {}).items():
        fixes[(route, model)] += n
        fixes[(route, "*")] += n
    order = sorted(per, key=lambda k: (k[0], k[1] != "*", k[1]))
    return [stat(kind, r, m, per[(r, m)], corrections=fixes.get((r, m), 0)) for r, m in order]


def shadow_quality(verdicts: Iterable[ShadowVerdict]) -> list[QualityStat]:
    """Shadow verdict mean per route and model (1 routed better, 0.5 tie, 0 worse)."""
    return grouped("shadow", ((v.route, v.model, float(v.score)) for v in verdicts))


def feedback_quality(entries: Iterable[FeedbackEntry],
                     served: Mapping[str, tuple[str, str | None]]) -> tuple[list[QualityStat],
                                                                             int]:
    """Feedback score mean per route and model, the route and model taken from the request
    it is about (`served`: request id -> (route, model)); also counts the corrections (a
    `label` naming another route). Returns the stats and how many entries had no request."""
    rows: list[tuple[str, str, float | None]] = []
    fixes: dict[tuple[str, str], int] = defaultdict(int)
    orphans = 0
    for e in entries:
        hit = served.get(e.request_id)
        if hit is None:
            orphans += 1
            continue
        route, model = hit[0], hit[1] or "(none)"
        rows.append((route, model, None if e.score is None else float(e.score)))
        if e.label is not None and e.label != route:
            fixes[(route, model)] += 1
    return grouped("feedback", rows, fixes), orphans


def gate_quality(records: Iterable[OutcomeRecord]) -> list[QualityStat]:
    """Cascade gate and judge verdicts recorded live (sources gate / judge) per route and model;
    imported and feedback records are left out (not live routed traffic / counted above)."""
    return grouped("gate", ((r.route or "(none)", r.model, float(r.score)) for r in records
                            if r.source in ("gate", "judge")))


def below(stats: Iterable[QualityStat], threshold: float,
          min_n: int = MIN_FLAG_N) -> list[QualityFlag]:
    """The stats with at least `min_n` rows whose mean is below `threshold`, worst first."""
    flags = [QualityFlag(s, threshold, s.high < threshold) for s in stats
             if s.n >= min_n and s.mean < threshold]
    return sorted(flags, key=lambda f: f.stat.mean)
