"""Routing quality on labelled data: load `text,label` rows, route them through the real
router (`Router.route_batch`), and score the decisions.

How a decision is read (the same rule in every metric):

- **predicted label**: the decision's route when a rule, the index or the classifier chose it;
  `oos` ("no route") when the decision is undecided or was handed to the default route by
  method "default" (the default route is a fallback, not a match).
- **gold label**: the row's label when it names a route; `oos` for `oos` and for labels that
  are not route names (reported in `unknown_labels`, since no route of this set can match).
- **misroute**: the query was sent to a route (any method) and that route is not the gold
  label; an out-of-scope query handed to the default route by method "default" is *not* a
  misroute (that is what the default route is for), an undecided query never is.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semroute.errors import DataError
from semroute.routing import Decision, Thresholds

if TYPE_CHECKING:
    from semroute.routing import Router

OOS = "oos"
GROUP_COLUMNS = ("group", "oos_type")
SWEEP_MARGINS = tuple(round(0.01 * i, 2) for i in range(31))
Metrics = dict[str, float | int | None]


@dataclass(frozen=True)
class LabelledQuery:
    """One labelled row: the query, its expected route (or `oos`), an optional group."""

    text: str
    label: str
    group: str | None = None


# ---------------------------------------------------------------- loading


def _row(path: Path, line: int, rec: dict[str, Any], text_col: str, label_col: str,
         group_col: str | None) -> LabelledQuery:
    for col in (text_col, label_col):
        if col not in rec:
            raise DataError(f"{path}:{line}: column '{col}' is missing "
                            f"(columns: {', '.join(map(str, rec))})")
    text, label = str(rec[text_col] or "").strip(), str(rec[label_col] or "").strip()
    if not text:
        raise DataError(f"{path}:{line}: the text ('{text_col}') is empty")
    if not label:
        raise DataError(f"{path}:{line}: the label ('{label_col}') is empty")
    group = rec.get(group_col) if group_col else None
    return LabelledQuery(text, label, str(group).strip() or None if group is not None else None)


def _csv_rows(path: Path, text_col: str, label_col: str) -> list[LabelledQuery]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for col in (text_col, label_col):
            if col not in cols:
                raise DataError(f"{path}:1: column '{col}' is missing from the header "
                                f"(columns: {', '.join(cols) or 'none'})")
        group_col = next((c for c in GROUP_COLUMNS if c in cols), None)
        return [_row(path, reader.line_num, rec, text_col, label_col, group_col)
                for rec in reader]


def _jsonl_rows(path: Path, text_col: str, label_col: str) -> list[LabelledQuery]:
    out = []
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line}: invalid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{line}: expected a JSON object per line")
        group_col = next((c for c in GROUP_COLUMNS if c in rec), None)
        out.append(_row(path, line, rec, text_col, label_col, group_col))
    return out


def load_labelled(path: str | Path, *, text_col: str = "text",
                  label_col: str = "label") -> list[LabelledQuery]:
    """Rows of a CSV (header row) or JSONL file; extra columns are ignored except a `group`
    (or `oos_type`) column, kept as `LabelledQuery.group` for per-group numbers."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: labelled data file not found")
    reader = _jsonl_rows if path.suffix.lower() in {".jsonl", ".ndjson"} else _csv_rows
    try:
        rows = reader(path, text_col, label_col)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


# ---------------------------------------------------------------- reading decisions


def gold_label(label: str, route_names: Iterable[str]) -> str:
    """The label scored against: the route, or `oos` when it names no route of the set."""
    names = route_names if isinstance(route_names, set | frozenset) else set(route_names)
    return label if label in names else OOS


def predicted_label(d: Decision) -> str:
    """The route the router recognised: `oos` for undecided and default-route decisions."""
    return d.route if d.route is not None and d.method in ("rule", "index", "classifier") \
        else OOS


def is_misroute(d: Decision, gold: str) -> bool:
    """Sent to a route that is not the gold one (OOS to the default route is not wrong)."""
    if d.route is None or d.route == gold:
        return False
    return not (gold == OOS and d.method == "default")


def index_route(d: Decision, th: Thresholds | None = None) -> str | None:
    """The route the index decides for `d` under `th` (default: the decision's own
    thresholds), through `Thresholds.check`, the router's rule; None when undecided."""
    th = th or Thresholds(d.threshold, d.margin_threshold, {})
    top = d.candidates[0].route if d.candidates else None
    runner = d.candidates[1].route if len(d.candidates) > 1 else None
    return top if th.check(top, d.score, d.margin, runner) is None else None


# ---------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Confusion:
    """Rows of `gold` predicted as `predicted`, with a few example queries."""

    gold: str
    predicted: str
    count: int
    examples: tuple[str, ...]


@dataclass
class EvalResult:
    """Headline metrics (flat), per-route and per-group numbers, confusions, margin sweep."""

    metrics: Metrics
    per_route: dict[str, Metrics]
    confusions: list[Confusion]
    unknown_labels: dict[str, int]
    by_group: dict[str, Metrics]
    sweep: list[dict[str, float | None]]
    info: dict[str, Any] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list, repr=False)
    data: list[LabelledQuery] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the decisions and rows, JSON-ready."""
        return {"metrics": self.metrics, "per_route": self.per_route,
                "confusions": [asdict(c) for c in self.confusions],
                "unknown_labels": self.unknown_labels, "by_group": self.by_group,
                "sweep": self.sweep, "info": self.info}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r else 0.0


def _per_route(gold: list[str], pred: list[str], names: Sequence[str]) -> dict[str, Metrics]:
    tp = Counter(g for g, p in zip(gold, pred, strict=True) if g == p)
    sup, npred = Counter(gold), Counter(pred)
    out: dict[str, Metrics] = {}
    for r in names:
        p, rec = _ratio(tp[r], npred[r]), _ratio(tp[r], sup[r])
        out[r] = {"precision": p, "recall": rec, "f1": _f1(p, rec), "support": sup[r],
                  "predicted": npred[r]}
    return out


def _confusions(gold: list[str], pred: list[str], texts: list[str],
                top: int) -> list[Confusion]:
    pairs: dict[tuple[str, str], list[str]] = {}
    for g, p, t in zip(gold, pred, texts, strict=True):
        if g != p:
            pairs.setdefault((g, p), []).append(t)
    ranked = sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    return [Confusion(g, p, len(ex), tuple(ex[:3])) for (g, p), ex in ranked]


def _path_metrics(decisions: Sequence[Decision], wrong: list[bool]) -> Metrics:
    n = len(decisions)
    out: Metrics = {}
    for method in ("rule", "index", "classifier", "default", "undecided"):
        idx = [i for i, d in enumerate(decisions) if d.method == method]
        out[f"{method}_rate"] = len(idx) / n
        if method != "undecided":
            out[f"misroute_rate_{method}"] = _ratio(sum(wrong[i] for i in idx), len(idx))
    out["fallback_rate"] = 1.0 - float(out["index_rate"] or 0.0) - float(out["rule_rate"] or 0.0)
    return out


def _by_group(data: Sequence[LabelledQuery], gold: list[str], pred: list[str],
              wrong: list[bool]) -> dict[str, Metrics]:
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(data):
        if q.group is not None:
            groups.setdefault(q.group, []).append(i)
    return {g: {"rows": len(idx), "accuracy": sum(gold[i] == pred[i] for i in idx) / len(idx),
                "misroute_rate": sum(wrong[i] for i in idx) / len(idx)}
            for g, idx in sorted(groups.items())}


def margin_sweep(decisions: Sequence[Decision], golds: Sequence[str],
                 margins: Sequence[float] = SWEEP_MARGINS) -> list[dict[str, float | None]]:
    """Share decided by the index and its misroute rate, re-deciding every decision through
    `Thresholds.check` with each margin threshold (score thresholds as the router had them)."""
    out: list[dict[str, float | None]] = []
    n = max(len(decisions), 1)
    for m in margins:
        decided = wrong = 0
        for d, g in zip(decisions, golds, strict=True):
            r = index_route(d, Thresholds(d.threshold, m, {}))
            if r is not None:
                decided += 1
                wrong += r != g
        out.append({"margin": float(m), "coverage": decided / n,
                    "misroute_rate": _ratio(wrong, decided)})
    return out


def score_decisions(decisions: Sequence[Decision], data: Sequence[LabelledQuery],
                    route_names: Sequence[str], *, latencies_ms: Sequence[float] | None = None,
                    top_confusions: int = 20) -> EvalResult:
    """Score decisions against labels (a pure function; see the module doc for the rules).

    `in_scope_accuracy`: in-scope rows predicted as their label. `macro_f1`: mean F1 over
    routes that occur in the gold or predicted labels. `oos_precision`/`oos_recall`: of the
    `oos` predictions / of the `oos` rows. `overall_accuracy`: all rows, `oos` included.
    `misroute_rate`: misroutes over all rows; `misroute_rate_<method>`: over that path's rows.
    `fallback_rate`: share decided by neither a rule nor the index. Undefined ratios (0/0) are None.
    Latency defaults to each decision's `total_ms` (batch-amortised when routed in batches).
    """
    if len(decisions) != len(data):
        raise ValueError(f"{len(decisions)} decisions for {len(data)} rows")
    if not data:
        raise DataError("no rows to score")
    names, known = list(route_names), frozenset(route_names)
    gold = [gold_label(q.label, known) for q in data]
    pred = [predicted_label(d) for d in decisions]
    wrong = [is_misroute(d, g) for d, g in zip(decisions, gold, strict=True)]
    unknown = Counter(q.label for q in data if q.label != OOS and q.label not in known)
    per_route = _per_route(gold, pred, names)
    f1s = [m["f1"] or 0.0 for m in per_route.values() if m["support"] or m["predicted"]]
    ins = [i for i, g in enumerate(gold) if g != OOS]
    oos_p = _ratio(sum(g == OOS for g, p in zip(gold, pred, strict=True) if p == OOS),
                   pred.count(OOS))
    oos_r = _ratio(sum(p == OOS for g, p in zip(gold, pred, strict=True) if g == OOS),
                   gold.count(OOS))
    lat = np.asarray(latencies_ms if latencies_ms is not None
                     else [d.total_ms for d in decisions], dtype=float)
    metrics: Metrics = {
        "rows": len(data), "in_scope_rows": len(ins), "oos_rows": gold.count(OOS),
        "unknown_label_rows": sum(unknown.values()),
        "in_scope_accuracy": _ratio(sum(pred[i] == gold[i] for i in ins), len(ins)),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "oos_precision": oos_p, "oos_recall": oos_r, "oos_f1": _f1(oos_p, oos_r),
        "overall_accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / len(data),
        "misroute_rate": sum(wrong) / len(data),
        **_path_metrics(decisions, wrong),
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
    }
    by_group = _by_group(data, gold, pred, wrong)
    for g, gm in by_group.items():
        metrics[f"group_{g}_accuracy"] = gm["accuracy"]
    return EvalResult(metrics, per_route, _confusions(gold, pred, [q.text for q in data],
                                                      top_confusions),
                      dict(unknown.most_common()), by_group, margin_sweep(decisions, gold),
                      decisions=list(decisions), data=list(data))


# ---------------------------------------------------------------- running the router


def route_all(router: Router, texts: Sequence[str], *, with_classifier: bool = False,
              chunk: int = 256, latency_sample: int = 0) -> tuple[list[Decision], list[float]]:
    """Decisions for all texts through `router.route_batch`; the first `latency_sample`
    texts are routed one at a time and their wall-clock times returned (ms)."""
    decisions: list[Decision] = []
    latencies: list[float] = []
    for text in texts[:latency_sample]:
        t0 = time.perf_counter()
        decisions += router.route_batch([text], use_classifier=with_classifier)
        latencies.append((time.perf_counter() - t0) * 1e3)
    rest = texts[latency_sample:]
    for start in range(0, len(rest), chunk):
        decisions += router.route_batch(rest[start:start + chunk],
                                        use_classifier=with_classifier)
    return decisions, latencies


def evaluate(router: Router, data: Sequence[LabelledQuery], *, with_classifier: bool = False,
             chunk: int = 256, latency_sample: int = 100) -> EvalResult:
    """Route every row with the real router and score the decisions.

    p50/p95 are single-query wall-clock times over the first `latency_sample` rows (routed
    one by one, as a user would); with `latency_sample=0`, the batch-amortised per-query time.
    """
    texts = [q.text for q in data]
    decisions, lat = route_all(router, texts, with_classifier=with_classifier, chunk=chunk,
                               latency_sample=latency_sample)
    result = score_decisions(decisions, data, router.routes.names, latencies_ms=lat or None)
    th = router.matcher.thresholds
    result.info.update({
        "latency": f"single query, {len(lat)} rows" if lat else "batch-amortised",
        "with_classifier": with_classifier, "build_id": router.index.manifest.build_id,
        "thresholds": {"score": th.score, "margin": th.margin, "per_route": th.per_route},
        "routes": len(router.routes.names)})
    return result
