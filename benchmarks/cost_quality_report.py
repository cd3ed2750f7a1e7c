"""The markdown report of benchmarks/cost_quality.py."""

from __future__ import annotations

from typing import Any

TITLES = {"mmlu": "MMLU", "gsm8k": "GSM8K", "mt_bench": "MT-Bench"}


def _ms(s: dict[str, Any] | None, pct: bool = False) -> str:
    if not s or s.get("mean") is None:
        return "–"
    if s.get("n") == 1:
        return f"{100 * s['mean']:.1f}%" if pct else f"{s['mean']:.3f} (1 seed)"
    if pct:
        return f"{100 * s['mean']:.1f}% ± {100 * s['sd']:.1f}"
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


def two_model_table(results: dict[str, Any]) -> list[str]:
    lines = ["| set | rows | router | APGR | APGR (exact curve) | CPT(50%) | CPT(80%) |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name, d in results["sets"].items():
        title = TITLES.get(name, name)
        for label, s in d["systems"].items():
            lines.append(f"| {title} | {d['rows']} | {label} | {_ms(s['apgr'])} | "
                         f"{_ms(s['apgr_exact'])} | {_ms(s['cpt50'], True)} | "
                         f"{_ms(s['cpt80'], True)} |")
        if "nested" in d:
            lines.append(f"| {title} | {d['rows']} | semroute, settings by nested CV | "
                         f"{_ms(d['nested']['apgr'])} | | | |")
        lines.append(f"| {title} | {d['rows']} | random | 0.500 | 0.500 | 50.0% | 80.0% |")
        pub = results["published"].get(name)
        if pub:
            lines.append(f"| {title} | | *published*: {pub[0]} | *{pub[1]:.3f}* | | "
                         f"*{100 * pub[2]:.1f}%* | |")
    return lines


def arena_table(a: dict[str, Any]) -> list[str]:
    def usd(v: float | None) -> str:
        return "–" if v is None else f"${1e6 * v:,.0f}"

    lines = ["| system | quality | cost per 1M queries |", "| --- | ---: | ---: |"]
    for m in a["models"]:
        lines.append(f"| {m} (every query) | {a['model_quality'][m]:.3f} | "
                     f"{usd(a['model_cost'][m])} |")
    lines.append(f"| oracle (best model per query, cheaper on ties) | {a['oracle_quality']:.3f} "
                 f"| {usd(a['oracle_cost'])} |")
    q, c = a["quality"]["mean"], a["cost"]["mean"]
    lines.append(f"| learned router at ≤ {a['best_single']}'s cost | {q:.3f} ± "
                 f"{a['quality']['sd']:.3f} | {usd(c)} |")
    c95, s95 = a["cost_at_95"]["mean"], a["saving_at_95"]["mean"]
    q95 = 0.95 * a["model_quality"][a["best_single"]]
    lines.append(f"| learned router at 95% of {a['best_single']}'s quality ({q95:.3f}) | "
                 f"{q95:.3f} | {usd(c95)} (saving "
                 f"{'–' if s95 is None else f'{100 * s95:.1f}%'}) |")
    return lines


def cascade_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| gate on the Mixtral answer | passes | precision | recall | strong calls | "
             "quality | cost (strong calls) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['gate']} | {100 * r['pass_rate']:.1f}% | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {100 * r['strong_calls']:.1f}% | {r['quality']:.3f} | "
                     f"{r['cost']:.3f} |")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    s = m["settings"]
    mach = m["machine"]
    parts = ["# Cost and quality: the outcome-learned router", "",
             f"`{m['command']}` — {m['date']}, {m['wall_s']} s on {mach['cpu']} "
             f"({mach['cores']} cores, {mach['ram_gib']} GiB), Python {mach['python']}; "
             f"versions {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.", "",
             f"Encoder {s['encoder']}; {s['folds']}-fold cross-validation over fold seeds "
             f"{s['seeds']} (mean ± sd across seeds); default predictor {s['default']}.", "",
             "## Two models: APGR and CPT (routellm_evals, contaminated rows left out)", ""]
    parts += two_model_table(results)
    parts += ["", "APGR and CPT follow RouteLLM's `evaluate.py` (11 quantile thresholds, "
              "trapezoid area, linear interpolation); *exact curve* uses every threshold. "
              "CPT(x) is the share of strong-model calls needed to recover x of the quality gap. "
              "Published figures are the paper's (arXiv 2406.18665), not reproduced here. "
              "MT-Bench here has one row per question and turn (160; a turn-2 row's text holds "
              "both turns, both rows of a question share a fold; judge scores / 10), while "
              "RouteLLM routes each of its 80 questions once on the first turn: not the same "
              "protocol, and 32 test rows per fold make it noisy. *nested CV*: each outer "
              "fold's settings (k in 25/50/100, features on/off) picked by 4-fold CV on its "
              "training rows.", ""]
    for name, d in results["sets"].items():
        mq = d["model_quality"]
        parts.append(f"- {TITLES.get(name, name)}: {d['weak']} {mq[d['weak']]:.3f}, "
                     f"{d['strong']} {mq[d['strong']]:.3f}, oracle {d['oracle_quality']:.3f}"
                     + (f"; nested-CV picks (seed 0): {', '.join(d['nested']['picks'][0])}"
                        if "nested" in d else ""))
    a = results.get("routerarena")
    if a:
        parts += ["", "## routerarena: two models with dollar costs", ""]
        parts += arena_table(a)
        parts += ["", f"APGR {_ms(a['apgr'])}, CPT(50%) {_ms(a['cpt50'], True)} (strong = "
                  "the better model). The learned router's cost is the mean of the per-query "
                  "dollar costs of the models it picks (the file's own costs).", ""]
    gsm = results["sets"].get("gsm8k", {})
    if "cascade" in gsm:
        parts += ["## Cascade on GSM8K: Mixtral first, escalate to GPT-4 when a gate fails", ""]
        parts += cascade_table(gsm["cascade"])
        mq = gsm["model_quality"]
        parts += ["", f"Precision/recall of \"the gate passes\" for \"Mixtral's answer is "
                  f"right\". Cost: one Mixtral call ({s['weak_cost_cascade']} of a GPT-4 call) "
                  f"plus GPT-4 on escalation; always GPT-4 = 1.000 at quality "
                  f"{mq[gsm['strong']]:.3f}, always Mixtral = {s['weak_cost_cascade']} at "
                  f"{mq[gsm['weak']]:.3f}. Gates read only the answer text (no second sample, "
                  "no judge).", ""]
    dt = results.get("decision_time")
    if dt:
        parts += ["## Decision time at 100k outcome records", "",
                  "| index | p50 ms | p95 ms | build s | recall of the flat top-k |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for kind in ("flat", "ivf"):
            r = dt[kind]
            parts.append(f"| {kind} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | "
                         f"{r['build_s']:.1f} | {r.get('recall_at_k', 1.0):.3f} |")
        parts += ["", f"One query at a time (features + search k=50 + aggregation), "
                  f"{dt['records']:,} records ({dt['base_vectors']:,} real embeddings of the "
                  "sets above, "
                  "tiled with Gaussian noise 0.05 and renormalised), one FAISS thread"
                  + (f", load average {dt['load_before'][0]:.1f} before" if "load_before" in dt
                     else "") + ". "
                  "`QualityPredictor` searches flat up to 2,000 texts, IVF-SQ8 above "
                  "(`outcomes/search.py`); the router's own figure is in tiers_latency.md.", ""]
    parts += ["Curves: " + ", ".join(f"[{p}]({p})" for p in m.get("plots", [])), ""]
    return "\n".join(parts)
