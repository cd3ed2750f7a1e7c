"""An evaluation report folder: `metrics.json`, `report.md`, `coverage.png`, `confusion.png`.

matplotlib is imported only when plotting (Agg backend); without it the plots are skipped and
the Markdown says so.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semroute.quality.evaluation import OOS, EvalResult, gold_label, predicted_label

HEADLINE = ("rows", "in_scope_accuracy", "macro_f1", "oos_precision", "oos_recall",
            "overall_accuracy", "misroute_rate", "fallback_rate", "p50_ms", "p95_ms")
PATHS = ("rule", "index", "classifier", "default", "undecided")
HEATMAP_ROUTES = 12


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def metrics_table(metrics: dict[str, Any], keys: Sequence[str] = HEADLINE) -> str:
    """Aligned `name  value` lines for the terminal."""
    width = max(len(k) for k in keys)
    return "\n".join(f"{k:<{width}}  {_fmt(metrics.get(k))}" for k in keys if k in metrics)


def markdown(result: EvalResult, title: str = "semroute eval") -> str:
    """The report as Markdown: headline metrics, per path, per route, top confusions."""
    m = result.metrics
    lines = [f"# {title}", ""]
    lines += [f"- {k}: {v}" for k, v in result.info.items() if k != "thresholds"]
    if "thresholds" in result.info:
        lines.append(f"- thresholds: {json.dumps(result.info['thresholds'])}")
    lines += ["", "## Headline", "", *_table(("metric", "value"),
                                            [(k, m.get(k)) for k in HEADLINE if k in m])]
    lines += ["", "## Per path", "", *_table(
        ("path", "share", "misroute rate"),
        [(p, m.get(f"{p}_rate"), m.get(f"misroute_rate_{p}")) for p in PATHS])]
    lines += ["", "Misroute: sent to a route other than the label (out-of-scope included; an "
              "out-of-scope query handed to the default route is not counted)."]
    if result.unknown_labels:
        lines += ["", "## Labels that are not routes (scored as out-of-scope)", "",
                  *_table(("label", "rows"), list(result.unknown_labels.items()))]
    if result.by_group:
        lines += ["", "## By group", "", *_table(
            ("group", "rows", "accuracy", "misroute rate"),
            [(g, v["rows"], v["accuracy"], v["misroute_rate"])
             for g, v in result.by_group.items()])]
    lines += ["", "## Per route", "", *_table(
        ("route", "precision", "recall", "f1", "support", "predicted"),
        [(r, v["precision"], v["recall"], v["f1"], v["support"], v["predicted"])
         for r, v in sorted(result.per_route.items())])]
    if result.confusions:
        lines += ["", "## Top confusions", "", *_table(
            ("label", "predicted", "rows", "examples"),
            [(c.gold, c.predicted, c.count, " · ".join(c.examples))
             for c in result.confusions])]
    lines += ["", "## Plots", "", "![coverage](coverage.png)", "", "![confusion](confusion.png)",
              ""]
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_coverage(result: EvalResult, path: Path) -> None:
    """Index coverage against index misroute rate, one point per margin threshold."""
    plt = _pyplot()
    pts = [p for p in result.sweep if p["misroute_rate"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([p["misroute_rate"] for p in pts], [p["coverage"] for p in pts], marker="o", ms=3)
    for p in pts[::5]:
        ax.annotate(f"m={p['margin']:.2f}", (p["misroute_rate"], p["coverage"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("index misroute rate (wrong / decided by index)")
    ax.set_ylabel("coverage (share decided by the index)")
    ax.set_title("Coverage vs misroute as the margin threshold varies")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _confused_labels(result: EvalResult) -> tuple[list[str], list[list[int]]]:
    """The labels most involved in confusions, and gold × predicted counts among them."""
    names = list(result.per_route)
    known = frozenset(names)
    gold = [gold_label(q.label, known) for q in result.data]
    pred = [predicted_label(d) for d in result.decisions]
    involved: Counter[str] = Counter()
    for g, p in zip(gold, pred, strict=True):
        if g != p:
            involved[g] += 1
            involved[p] += 1
    labels = sorted(lbl for lbl, _ in involved.most_common(HEATMAP_ROUTES))
    pos = {lbl: i for i, lbl in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        if g in pos and p in pos:
            counts[pos[g]][pos[p]] += 1
    return labels, counts


def plot_confusion(result: EvalResult, path: Path) -> None:
    """Heat-map of gold × predicted counts among the most confused labels (`oos` included)."""
    plt = _pyplot()
    labels, counts = _confused_labels(result)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * max(len(labels), 2),
                                    1.0 + 0.45 * max(len(labels), 2)))
    if labels:
        off = [[0 if i == j else c for j, c in enumerate(row)] for i, row in enumerate(counts)]
        top = max(max(map(max, off)), 1)
        im = ax.imshow(off, cmap="Reds", vmin=0, vmax=top)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for i, row in enumerate(counts):
            for j, c in enumerate(row):
                if c:
                    diag = i == j
                    ax.text(j, i, f"({c})" if diag else str(c), ha="center", va="center",
                            fontsize=6, color="grey" if diag else
                            ("white" if c > top / 2 else "black"))
        fig.colorbar(im, ax=ax, shrink=0.7)
    else:
        ax.text(0.5, 0.5, "no confusions", ha="center", va="center")
        ax.set_axis_off()
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    ax.set_title(f"Most confused routes: wrong rows in colour, (right) in grey; {OOS} = no "
                 f"route", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: EvalResult, out_dir: str | Path,
                 title: str = "semroute eval") -> Path:
    """Write the report folder; returns it. Plots are skipped if matplotlib is missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    text = markdown(result, title)
    try:
        plot_coverage(result, out / "coverage.png")
        plot_confusion(result, out / "confusion.png")
    except ImportError:
        text = text.replace("![coverage](coverage.png)", "(plots skipped: install "
                            "`semroute-llm[report]` for matplotlib)").replace(
            "\n![confusion](confusion.png)", "")
    (out / "report.md").write_text(text)
    return out
