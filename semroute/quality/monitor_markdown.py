"""`semroute monitor`'s report as Markdown (six sections, charts linked beside it) and the
short summary printed on the terminal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from semroute.quality.monitor_quality import QualityStat
from semroute.quality.monitor_sources import iso
from semroute.quality.monitoring import (
    INDEX_SCORED,
    KS_C_ALPHA_01,
    MIN_DRIFT_N,
    MIN_KS_EFFECT,
    PSI_LIMIT,
    Traffic,
)

if TYPE_CHECKING:
    from semroute.quality.monitor_report import MonitorReport


def cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:,.2f}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return out + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]


def usd(v: float) -> str:
    return f"${v:,.4f}" if abs(v) < 10 else f"${v:,.2f}"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def chart(charts: Mapping[str, str], name: str, alt: str) -> list[str]:
    return ["", f"![{alt}]({charts[name]})"] if name in charts else \
        ["", "(chart skipped: install `semroute-llm[report]` for matplotlib)"]


def traffic_table(groups: Sequence[Traffic], what: str) -> list[str]:
    return table((what, "requests", "share", "input tok", "output tok", "cost USD",
                  "mean ms", "p95 ms", "errors", "failovers"),
                 [(t.name, t.requests, pct(t.share), t.input_tokens, t.output_tokens,
                   t.cost_usd, t.mean_latency_ms, t.p95_latency_ms, t.errors, t.failovers)
                  for t in groups])


def quality_table(stats: Sequence[QualityStat], shadow: bool) -> list[str]:
    head = ["route", "model", "n", "mean", "95% interval"]
    head += ["wins", "ties", "losses", "held"] if shadow else ["corrections"]
    rows = [[q.route, q.model, q.n, q.mean if q.n else None,
             f"{q.low:.3f}–{q.high:.3f}" if q.n else "–"]
            + ([q.wins, q.ties, q.losses, pct(q.held)] if shadow else [q.corrections])
            for q in stats]
    return table(head, rows)


def sources(r: MonitorReport) -> list[str]:
    lines = ["## 1. Window and sources", "",
             f"- window: {iso(r.start)} to {iso(r.end)}"
             + ("" if r.window.since is not None or r.window.until is not None
                else " (the data's own span: no --since/--until/--window given)"),
             f"- time buckets: {len(r.edges) - 1} of {(r.edges[1] - r.edges[0]) / 3600:.3g} h",
             f"- requests in the window: {len(r.rows)}"
             + (" (" + ", ".join(f"{n} from the {k}" for k, n in r.sources.items()) + ")"
                if r.rows else "")]
    for t in r.traces:
        if not t.found:
            lines.append(f"- trace `{t.path}`: **not found**")
            continue
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(t.kinds.items())) or "none"
        lines.append(f"- trace `{t.path}`: {t.lines} lines, {t.requests} requests in the "
                     f"window, {t.outside} outside it, other kinds skipped: {kinds}, "
                     f"**{t.bad} bad lines**" + (f" ({'; '.join(t.bad_examples)})"
                                                 if t.bad_examples else ""))
    if not r.traces:
        lines.append("- trace: none given")
    s = r.store
    if s is None:
        lines.append("- outcomes store: none")
    elif not s.found:
        lines.append(f"- outcomes store `{s.path}`: **not found**")
    else:
        lines.append(f"- outcomes store `{s.path}`: {len(s.requests)} logged requests, "
                     f"{len(s.feedback)} feedback entries, {len(s.shadow)} shadow verdicts, "
                     f"{len(s.records)} live gate/judge records in the window")
    lines += [f"- note: {n}" for n in r.notes]
    return lines


def traffic(r: MonitorReport, charts: Mapping[str, str]) -> list[str]:
    errors = sum(x.error for x in r.rows)
    failovers = sum(x.failover for x in r.rows)
    return ["", "## 2. Traffic and cost", "",
            f"{len(r.rows)} requests, {usd(sum(x.cost_usd for x in r.rows))} in total; "
            f"{errors} failed ({pct(errors / len(r.rows) if r.rows else None)}), "
            f"{failovers} served after failing over to another model. Latency is the "
            f"request's `total` (trace) or the journal's.", "", "### By route", "",
            *traffic_table(r.by_route, "route"), "", "### By model", "",
            *traffic_table(r.by_model, "model"),
            *chart(charts, "traffic", "traffic and cost by route")]


def methods(r: MonitorReport, charts: Mapping[str, str]) -> list[str]:
    names = list(r.methods)
    rows = [[f"{iso(r.edges[i])[5:16].replace('T', ' ')}", sum(c.values()),
             *(pct(c[m] / sum(c.values())) if c else "–" for m in names)]
            for i, c in enumerate(r.method_buckets)]
    return ["", "## 3. Decision methods", "",
            "Share of requests per decision method. A rising `classifier` or `default` "
            "share means more traffic falls outside what the route files' utterances cover: "
            "the route set is going stale (run `semroute suggest`).", "",
            *table(("method", "share"), [(m, pct(s)) for m, s in r.methods.items()]), "",
            "Per time bucket (bucket start, UTC):", "",
            *table(("bucket", "requests", *names), rows),
            *chart(charts, "methods", "decision method share per time bucket")]


def margins(r: MonitorReport, charts: Mapping[str, str]) -> list[str]:
    d = r.drift

    def q(t: tuple[float, float, float] | None) -> str:
        return "–" if t is None else " / ".join(f"{x:.3f}" for x in t)

    rows = [(iso(b.start)[5:16].replace("T", " "), b.n, q(b.margin), q(b.score))
            for b in r.bands]
    return ["", "## 4. Margins over time (drift)", "",
            f"Index-scored decisions only (methods {', '.join(INDEX_SCORED)}: the index "
            "scored them; rules, steps and explicit models have no index margin). Per bucket "
            "p10 / p50 / p90.", "", *table(("bucket", "scored", "margin", "top score"), rows),
            "", f"**Drift test.** The margins of the window's first third "
            f"({iso(d.first[0])} to {iso(d.first[1])}, n = {d.n_first}) against its last "
            f"third ({iso(d.last[0])} to {iso(d.last[1])}, n = {d.n_last}): two-sample "
            f"Kolmogorov-Smirnov D, flagged when D exceeds the 1% critical value "
            f"{KS_C_ALPHA_01}·√((n+m)/(n·m)) and D ≥ {MIN_KS_EFFECT} (an effect floor, so a "
            f"large sample does not flag a negligible shift); not tested below "
            f"{MIN_DRIFT_N} margins per part. PSI over the first part's deciles is shown "
            f"beside it (≥ {PSI_LIMIT} is the conventional 'significant shift').", "",
            f"- result: **{d.verdict}**",
            f"- median margin: {cell(d.median_first)} → {cell(d.median_last)}; "
            f"PSI {cell(d.psi)}",
            *chart(charts, "margins", "margin and score quantiles per time bucket")]


def quality(r: MonitorReport, charts: Mapping[str, str]) -> list[str]:
    s = r.settings
    lines = ["", "## 5. Quality per route against the reference", "",
             "Shadow verdicts: a judge compared the routed answer with the reference model's "
             "(1 routed better, 0.5 tie, 0 worse; wins > 0.5, ties = 0.5, losses < 0.5; held = "
             "ties + wins). Feedback: users' or tasks' scores in [0, 1] on the request's route "
             "and model; corrections are feedback labels naming another route. Intervals: 95% "
             "Wilson. Model `*`: the route over all its models.", ""]
    lines += ["### Shadow verdicts", ""] + (quality_table(r.shadow, True) if r.shadow
                                            else ["No shadow verdicts in the window."])
    lines += ["", "### Feedback", ""] + (quality_table(r.feedback, False) if r.feedback
                                         else ["No feedback in the window."])
    if r.orphan_feedback:
        lines += ["", f"{r.orphan_feedback} feedback entries name a request the store does "
                  f"not hold (not counted)."]
    if r.gates:
        lines += ["", "### Cascade gates and judges (live records)", "",
                  *quality_table(r.gates, False)]
    lines += ["", f"### Below the threshold ({s.quality_threshold:g})", "",
              f"Rule: a route and model with at least {s.min_n} scored rows is **flagged** "
              f"when its whole 95% interval is below {s.quality_threshold:g} (worse on the "
              f"evidence, not noise around it), *watched* when only its mean is. Fewer rows "
              f"are never flagged or watched.", ""]
    if r.flags:
        lines += table(("status", "kind", "route", "model", "n", "mean", "95% interval"),
                       [("**flagged**" if f.confirmed else "watch", f.stat.kind, f.stat.route,
                         f.stat.model, f.stat.n, f.stat.mean,
                         f"{f.stat.low:.3f}–{f.stat.high:.3f}") for f in r.flags])
    else:
        lines.append("None.")
    return lines + chart(charts, "quality", "quality per route")


def held_overall(r: MonitorReport) -> tuple[int, int]:
    """Shadow verdicts that tie or beat the reference, and all of them."""
    routes = [q for q in r.shadow if q.model == "*"]
    return sum(q.wins + q.ties for q in routes), sum(q.n for q in routes)


def money(r: MonitorReport) -> list[str]:
    v = r.savings
    lines = ["", "## 6. Money saved against one strong model", ""]
    if v.baseline is None:
        return [*lines, "Not computed: no model catalogue (pass --routes DIR)."]
    lines += [f"Baseline: `{v.baseline}` ({r.baseline_reason}). For each request with token "
              f"counts, its input and output tokens priced at the baseline's catalogue prices,"
              f" minus what it cost (routing, retries, judges and cascade steps included). "
              f"{v.priced} requests priced, {v.unpriced} not (no token counts: store-only "
              f"rows, or a model not in the catalogue).", "",
              f"- cost: **{usd(v.actual_usd)}**; all on `{v.baseline}`: {usd(v.baseline_usd)}; "
              f"saved **{usd(v.saved_usd)}** ({pct(v.saved_share)})"]
    held, total = held_overall(r)
    if total:
        lines.append(f"- quality held where shadow verdicts exist: {pct(held / total)} of "
                     f"{total} verdicts tie or beat the reference")
        lines.append(f"- shadow evaluation itself (reference and judge calls, not in the cost "
                     f"above): {usd(r.shadow_cost)}")
    lines += ["", *table(("route", "priced", "cost USD", "baseline USD", "saved USD", "saved",
                          "quality held"),
                         [(k, n, a, b, b - a, pct((b - a) / b if b > 0 else None),
                           pct(r.held.get(k))) for k, n, a, b in v.by_route])]
    return lines


def markdown(r: MonitorReport, charts: Mapping[str, str]) -> str:
    """The whole report."""
    head = [f"# semroute monitor: {iso(r.start)[:10]} to {iso(r.end)[:10]}", "",
            f"Generated {iso(r.generated)} by `semroute monitor`.", ""]
    alerts = summary_lines(r)[1:]
    head += ["**At a glance**", "", *(f"- {a}" for a in alerts), ""]
    body = [*sources(r), *traffic(r, charts), *methods(r, charts), *margins(r, charts),
            *quality(r, charts), *money(r)]
    return "\n".join(head + body) + "\n"


def summary_lines(r: MonitorReport) -> list[str]:
    """A few lines for the terminal: volume, cost, savings, drift, flags."""
    v = r.savings
    out = [f"semroute monitor {iso(r.start)} to {iso(r.end)}",
           f"{len(r.rows)} requests, {usd(sum(x.cost_usd for x in r.rows))}; methods: "
           + ", ".join(f"{m} {pct(s)}" for m, s in list(r.methods.items())[:4])]
    if v.baseline and v.priced:
        held, total = held_overall(r)
        out.append(f"saved {usd(v.saved_usd)} ({pct(v.saved_share)}) against all on "
                   f"{v.baseline}" + (f"; quality held {pct(held / total)} of {total} shadow "
                                      f"verdicts" if total else ""))
    out.append(r.drift.verdict)
    for label, flags in (("flagged below the quality threshold", r.flagged),
                         ("watch (mean below, interval reaches it)",
                          [f for f in r.flags if not f.confirmed])):
        out.append(f"{label}: " + (", ".join(
            f"{f.stat.route}/{f.stat.model} ({f.stat.kind} {f.stat.mean:.2f}, n={f.stat.n}, "
            f"{f.stat.low:.2f}-{f.stat.high:.2f})" for f in flags) or "none"))
    bad = sum(t.bad for t in r.traces)
    if bad:
        out.append(f"{bad} bad trace lines skipped (see the report's section 1)")
    return out
