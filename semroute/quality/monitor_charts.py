"""`semroute monitor`'s PNG charts: traffic and cost by route (against the baseline), decision
method shares over time, margin and score quantiles over time, quality per route.

matplotlib (the `report` extra) is imported only here, with the Agg backend; without it no
chart is drawn and the Markdown says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semroute.quality.monitor_quality import QualityStat

if TYPE_CHECKING:
    from semroute.quality.monitor_report import MonitorReport

CHARTS = {"traffic": "traffic.png", "methods": "methods.png", "margins": "margins.png",
          "quality": "quality.png"}
METHOD_COLOURS = {"index": "#4c72b0", "rule": "#8172b3", "classifier": "#dd8452",
                  "default": "#c44e52", "undecided": "#937860", "step": "#55a868",
                  "explicit": "#64b5cd"}
DPI = 110


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def save(plt: Any, fig: Any, path: Path, bottom: float = 0.0) -> None:
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_traffic(report: MonitorReport, path: Path) -> None:
    """Requests by route, and cost by route beside what the baseline would have cost."""
    plt = pyplot()
    routes = report.by_route[:15][::-1]
    names = [t.name for t in routes]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.9 + 0.32 * max(len(names), 3)),
                               sharey=True)
    a.barh(names, [t.requests for t in routes], color="#4c72b0")
    for y, t in enumerate(routes):
        a.text(t.requests, y, f" {t.share:.0%}", va="center", fontsize=7)
    a.set_xlabel("requests")
    a.set_title("Traffic by route", fontsize=10)
    base = {r: bl for r, _, _, bl in report.savings.by_route}
    ys = range(len(names))
    b.barh([y + 0.2 for y in ys], [t.cost_usd for t in routes], height=0.4,
           color="#55a868", label="actual")
    if report.savings.baseline:
        b.barh([y - 0.2 for y in ys], [base.get(t.name, 0.0) for t in routes], height=0.4,
               color="#c9c9c9", label=f"all on {report.savings.baseline}")
    b.set_xlabel("USD")
    b.set_title("Cost by route", fontsize=10)
    b.legend(fontsize=7, loc="lower right")
    for ax in (a, b):
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    save(plt, fig, path)


def plot_methods(report: MonitorReport, path: Path) -> None:
    """Share of each decision method per time bucket, stacked."""
    plt = pyplot()
    edges = report.edges
    mids = [when((edges[i] + edges[i + 1]) / 2) for i in range(len(edges) - 1)]
    width = (edges[1] - edges[0]) / 86400 * 0.9 if len(edges) > 1 else 0.5
    methods = list(report.methods)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    bottom = [0.0] * len(mids)
    for m in methods:
        shares = [c[m] / sum(c.values()) if c else 0.0 for c in report.method_buckets]
        ax.bar(mids, shares, width=width, bottom=bottom, label=m,
               color=METHOD_COLOURS.get(m), edgecolor="white", linewidth=0.3)
        bottom = [x + y for x, y in zip(bottom, shares, strict=True)]
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of requests")
    ax.set_title("Decision method per time bucket (rising classifier/default: the route set "
                 "is going stale)", fontsize=10)
    if methods:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.autofmt_xdate()
    save(plt, fig, path)


def plot_margins(report: MonitorReport, path: Path) -> None:
    """p10/p50/p90 of index-scored margins and scores per bucket; the drift test's parts."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    pts = [(when((b.start + b.end) / 2), b) for b in report.bands if b.n]
    for ax, attr, label in ((axes[0], "margin", "margin"), (axes[1], "score", "top score")):
        got = [(t, getattr(b, attr)) for t, b in pts if getattr(b, attr) is not None]
        if got:
            ts = [t for t, _ in got]
            ax.fill_between(ts, [q[0] for _, q in got], [q[2] for _, q in got], alpha=0.25,
                            color="#4c72b0", label="p10-p90")
            ax.plot(ts, [q[1] for _, q in got], marker="o", ms=3, color="#4c72b0",
                    label="median")
        d = report.drift
        for span, colour, part in ((d.first, "#55a868", "first"), (d.last, "#c44e52", "last")):
            ax.axvspan(when(span[0]), when(span[1]), color=colour, alpha=0.07,
                       label=f"drift test: {part} third")
        ax.set_title(f"Index {label} per bucket" + (" (drift flagged)" if d.flagged and
                                                     attr == "margin" else ""), fontsize=10)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    save(plt, fig, path, bottom=0.07)


def quality_rows(report: MonitorReport) -> list[tuple[str, QualityStat | None,
                                                       QualityStat | None]]:
    """("route · model", shadow stat, feedback stat) for every pair with any evidence."""
    sh = {(q.route, q.model): q for q in report.shadow if q.model != "*" and q.n}
    fb = {(q.route, q.model): q for q in report.feedback if q.model != "*" and q.n}
    return [(f"{r} · {m}", sh.get((r, m)), fb.get((r, m))) for r, m in sorted(set(sh) | set(fb))]


def plot_quality(report: MonitorReport, path: Path) -> None:
    """Per route and model: the shadow verdict mean and the feedback mean with 95% intervals,
    and the threshold; pairs flagged below it in red."""
    plt = pyplot()
    rows = quality_rows(report)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.35 * max(len(rows), 3)))
    if not rows:
        ax.text(0.5, 0.5, "no shadow verdicts or feedback scores in the window",
                ha="center", va="center")
        ax.set_axis_off()
        save(plt, fig, path)
        return
    flagged = {f"{f.stat.route} · {f.stat.model}" for f in report.flagged}
    for y, (_route, sh, fb) in enumerate(rows):
        for q, dy, colour, marker in ((sh, 0.15, "#4c72b0", "o"), (fb, -0.15, "#dd8452", "s")):
            if q is None:
                continue
            err = [[max(0.0, q.mean - q.low)], [max(0.0, q.high - q.mean)]]
            ax.errorbar(q.mean, y + dy, xerr=err, fmt=marker, color=colour, ms=4, capsize=2)
            ax.text(q.high + 0.01, y + dy, f"n={q.n}", va="center", fontsize=6)
    ax.set_yticks(range(len(rows)), [r for r, _, _ in rows], fontsize=8)
    for label in ax.get_yticklabels():
        if label.get_text() in flagged:
            label.set_color("#c44e52")
    ax.axvline(report.settings.quality_threshold, color="#c44e52", ls="--", lw=1)
    ax.plot([], [], "o", color="#4c72b0", label="shadow vs reference (0.5 = tie)")
    ax.plot([], [], "s", color="#dd8452", label="feedback score")
    ax.plot([], [], "--", color="#c44e52", label=f"threshold {report.settings.quality_threshold:g}")
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("mean score, 95% Wilson interval")
    ax.set_title("Quality per route and model (red: flagged, the whole interval below the "
                 "threshold)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    save(plt, fig, path)


def write_charts(report: MonitorReport, folder: Path) -> dict[str, str]:
    """Draw every chart into `folder`; returns name -> file written (empty without
    matplotlib)."""
    try:
        pyplot()
    except ImportError:
        return {}
    for name, draw in (("traffic", plot_traffic), ("methods", plot_methods),
                       ("margins", plot_margins), ("quality", plot_quality)):
        draw(report, folder / CHARTS[name])
    return dict(CHARTS)
