"""`semroute monitor`'s figures as pure functions over parsed rows: traffic and cost by route
and model, decision-method shares per time bucket, margin quantiles and a drift test, savings
against one baseline model. Per-route quality against the reference is in `monitor_quality.py`.

Rows come from trace files and the outcomes store (`monitor_sources.py`); nothing here reads
a file, so every figure can be checked on hand-made rows.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Methods whose score and margin come from the index (a classifier or default decision was
# scored by the index first and found undecided). Rules, steps and explicit models have
# fixed scores (1.0) or none, so they say nothing about how well the route set fits traffic.
INDEX_SCORED = ("index", "classifier", "default", "undecided")
QUANTILES = (0.10, 0.50, 0.90)
# Drift rule: the two-sample Kolmogorov-Smirnov statistic D between the margins of the
# window's first and last third is flagged when it exceeds the 1% critical value
# c * sqrt((n + m) / (n * m)) AND is at least MIN_KS_EFFECT (so a huge sample does not flag a
# negligible shift), with at least MIN_DRIFT_N margins in each part.
KS_C_ALPHA_01 = 1.628
MIN_KS_EFFECT = 0.10
MIN_DRIFT_N = 30
PSI_BINS = 10
PSI_LIMIT = 0.2  # the conventional "significant shift" level, reported beside KS


@dataclass(frozen=True, kw_only=True)
class RequestRow:
    """One routed request as the monitor sees it (from a trace line or the store's journal).
    Tokens are None when unknown (the journal keeps cost, not tokens)."""

    ts: float
    request_id: str
    route: str
    method: str
    model: str | None = None  # the catalogue key that answered
    score: float | None = None
    margin: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0
    latency_ms: float | None = None
    error: bool = False
    failover: bool = False  # served by another model than the first it tried
    source: str = "trace"  # trace | store


@dataclass(frozen=True)
class Traffic:
    """Requests, tokens, cost and latency of one route or one model."""

    name: str
    requests: int
    share: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    mean_latency_ms: float | None
    p95_latency_ms: float | None
    errors: int
    failovers: int


@dataclass(frozen=True)
class Bands:
    """p10/p50/p90 of the index-scored margins and scores in one time bucket."""

    start: float
    end: float
    n: int
    margin: tuple[float, float, float] | None
    score: tuple[float, float, float] | None


@dataclass(frozen=True)
class Drift:
    """The drift test between the first and last third of the window (see the rule above)."""

    first: tuple[float, float]  # time span of each part
    last: tuple[float, float]
    n_first: int
    n_last: int
    ks: float | None
    critical: float | None
    psi: float | None
    median_first: float | None
    median_last: float | None
    flagged: bool
    verdict: str


@dataclass(frozen=True)
class Savings:
    """Cost against sending every priced request to `baseline` at the same token counts."""

    baseline: str | None
    priced: int  # requests with tokens and a priced model
    unpriced: int  # store-only rows (no tokens) or a model missing from the catalogue
    actual_usd: float
    baseline_usd: float
    by_route: list[tuple[str, int, float, float]]  # route, priced requests, actual, baseline

    @property
    def saved_usd(self) -> float:
        return self.baseline_usd - self.actual_usd

    @property
    def saved_share(self) -> float | None:
        return self.saved_usd / self.baseline_usd if self.baseline_usd > 0 else None


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (linear interpolation, numpy's default), None for no values."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), q)) if values else None


def traffic_by(rows: Sequence[RequestRow], key: Callable[[RequestRow], str | None]
               ) -> list[Traffic]:
    """Traffic grouped by `key` (route or model), most requests first."""
    groups: dict[str, list[RequestRow]] = defaultdict(list)
    for r in rows:
        groups[key(r) or "(none)"].append(r)
    total = len(rows)
    out = []
    for name, rs in groups.items():
        lat = [r.latency_ms for r in rs if r.latency_ms is not None]
        out.append(Traffic(
            name=name, requests=len(rs), share=len(rs) / total if total else 0.0,
            input_tokens=sum(r.input_tokens or 0 for r in rs),
            output_tokens=sum(r.output_tokens or 0 for r in rs),
            cost_usd=sum(r.cost_usd for r in rs),
            mean_latency_ms=sum(lat) / len(lat) if lat else None,
            p95_latency_ms=quantile(lat, 0.95),
            errors=sum(r.error for r in rs), failovers=sum(r.failover for r in rs)))
    return sorted(out, key=lambda t: (-t.requests, t.name))


def bucket_edges(start: float, end: float, *, count: int | None = None,
                 width: float | None = None) -> list[float]:
    """Edges of equal time buckets covering [start, end]: `count` buckets, or buckets of
    `width` seconds (the last one may end after `end`)."""
    if end <= start:
        end = start + 1.0
    if width is not None:
        if width <= 0:
            raise ValueError("bucket width must be positive")
        n = max(1, math.ceil((end - start) / width))
        return [start + i * width for i in range(n + 1)]
    n = max(1, count or 1)
    return [start + (end - start) * i / n for i in range(n + 1)]


def bucket_index(ts: float, edges: Sequence[float]) -> int | None:
    """Which bucket `ts` falls in ([edge i, edge i+1); the last bucket includes its end)."""
    if not edges or ts < edges[0] or ts > edges[-1]:
        return None
    i = int(np.searchsorted(np.asarray(edges), ts, side="right")) - 1
    return min(i, len(edges) - 2)


def method_shares(rows: Iterable[RequestRow]) -> dict[str, float]:
    """Share of requests per decision method, largest first."""
    counts = Counter(r.method for r in rows)
    total = sum(counts.values())
    return {m: n / total for m, n in counts.most_common()} if total else {}


def methods_by_bucket(rows: Iterable[RequestRow], edges: Sequence[float]
                      ) -> list[Counter[str]]:
    """Requests per decision method in each time bucket."""
    out: list[Counter[str]] = [Counter() for _ in range(max(len(edges) - 1, 0))]
    for r in rows:
        i = bucket_index(r.ts, edges)
        if i is not None:
            out[i][r.method] += 1
    return out


def index_scored(rows: Iterable[RequestRow]) -> list[RequestRow]:
    """Rows whose margin comes from the index (`INDEX_SCORED` methods with a margin)."""
    return [r for r in rows if r.method in INDEX_SCORED and r.margin is not None]


def bands(rows: Sequence[RequestRow], edges: Sequence[float]) -> list[Bands]:
    """p10/p50/p90 of index-scored margins and scores per bucket."""
    margins: list[list[float]] = [[] for _ in range(max(len(edges) - 1, 0))]
    scores: list[list[float]] = [[] for _ in margins]
    for r in index_scored(rows):
        i = bucket_index(r.ts, edges)
        if i is not None:
            margins[i].append(float(r.margin))  # type: ignore[arg-type]
            if r.score is not None:
                scores[i].append(float(r.score))

    def qs(v: list[float]) -> tuple[float, float, float] | None:
        if not v:
            return None
        a, b, c = (quantile(v, q) for q in QUANTILES)
        return (a or 0.0, b or 0.0, c or 0.0)

    return [Bands(edges[i], edges[i + 1], len(m), qs(m), qs(s))
            for i, (m, s) in enumerate(zip(margins, scores, strict=True))]


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two samples'
    empirical distribution functions."""
    x, y = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not x.size or not y.size:
        raise ValueError("both samples need values")
    grid = np.concatenate([x, y])
    fx = np.searchsorted(x, grid, side="right") / x.size
    fy = np.searchsorted(y, grid, side="right") / y.size
    return float(np.max(np.abs(fx - fy)))


def ks_critical(n: int, m: int, c_alpha: float = KS_C_ALPHA_01) -> float:
    """The large-sample KS critical value c(alpha) * sqrt((n + m) / (n m)); c = 1.628 at 1%."""
    return c_alpha * math.sqrt((n + m) / (n * m))


def psi(expected: Sequence[float], actual: Sequence[float], bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`, over the deciles of
    `expected` (empty bins get a share of 1e-4 so the log stays finite)."""
    e = np.asarray(expected, float)
    a = np.asarray(actual, float)
    cuts = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1))[1:-1])
    pe = np.bincount(np.searchsorted(cuts, e, side="right"), minlength=cuts.size + 1) / e.size
    pa = np.bincount(np.searchsorted(cuts, a, side="right"), minlength=cuts.size + 1) / a.size
    pe, pa = np.maximum(pe, 1e-4), np.maximum(pa, 1e-4)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def drift(rows: Sequence[RequestRow], start: float, end: float) -> Drift:
    """Compare index-scored margins of the window's first third with its last third."""
    third = (end - start) / 3
    first, last = (start, start + third), (end - third, end)
    scored = index_scored(rows)
    a = [float(r.margin) for r in scored if first[0] <= r.ts < first[1]]  # type: ignore[arg-type]
    b = [float(r.margin) for r in scored if last[0] <= r.ts <= last[1]]  # type: ignore[arg-type]
    med_a, med_b = quantile(a, 0.5), quantile(b, 0.5)
    if len(a) < MIN_DRIFT_N or len(b) < MIN_DRIFT_N:
        return Drift(first, last, len(a), len(b), None, None, None, med_a, med_b, False,
                     f"not tested: fewer than {MIN_DRIFT_N} index-scored margins in a part "
                     f"({len(a)} first, {len(b)} last)")
    d, crit, p = ks_statistic(a, b), ks_critical(len(a), len(b)), psi(a, b)
    flagged = d > crit and d >= MIN_KS_EFFECT
    direction = "lower" if (med_b or 0) < (med_a or 0) else "higher"
    verdict = (f"DRIFT: margins moved ({direction} median {med_b:.3f} vs {med_a:.3f}); "
               f"KS D = {d:.3f} > {crit:.3f} (1% critical) and >= {MIN_KS_EFFECT}"
               if flagged else
               f"no drift flagged: KS D = {d:.3f} (1% critical {crit:.3f}, effect floor "
               f"{MIN_KS_EFFECT})")
    return Drift(first, last, len(a), len(b), d, crit, p, med_a, med_b, flagged, verdict)


def most_expensive(prices: Mapping[str, tuple[float, float]]) -> str | None:
    """The catalogue key with the highest output price (then input price, then name)."""
    if not prices:
        return None
    return max(prices, key=lambda k: (prices[k][1], prices[k][0], k))


def savings(rows: Sequence[RequestRow], prices: Mapping[str, tuple[float, float]],
            baseline: str | None) -> Savings:
    """For every request with token counts and a priced model: its tokens at `baseline`'s
    prices (USD per million in / out) minus what it cost; totals and per route."""
    if baseline is None or baseline not in prices:
        return Savings(baseline, 0, len(rows), sum(r.cost_usd for r in rows), 0.0, [])
    p_in, p_out = prices[baseline]
    per: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    priced = unpriced = 0
    actual = base = 0.0
    for r in rows:
        if r.input_tokens is None or r.output_tokens is None or (
                r.model is not None and r.model not in prices):
            unpriced += 1
            continue
        b = (r.input_tokens * p_in + r.output_tokens * p_out) / 1e6
        priced += 1
        actual += r.cost_usd
        base += b
        acc = per[r.route]
        acc[0] += 1
        acc[1] += r.cost_usd
        acc[2] += b
    by_route = sorted(((k, int(v[0]), v[1], v[2]) for k, v in per.items()),
                      key=lambda t: -(t[3] - t[2]))
    return Savings(baseline, priced, unpriced, actual, base, by_route)
