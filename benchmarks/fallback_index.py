"""The fallback benchmark's index-side baseline: what the queries sent to the classifier would
score if each went to the index's own best route instead (no LLM), exactly over all of them,
and on the very sample the LLM saw so the two are compared on identical queries.

"Top-1 on sent" is itself an index-only rule: route the best route when it clears the
thresholds, else when its score is at or above the classifier floor (margin ignored), i.e. the
index loosened to route the same share the classifier would get.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from semroute.quality.evaluation import OOS


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (0, 1 when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def top_route(decision: Any) -> str | None:
    """The index's best-scoring route for a decision, thresholds ignored (None: no candidate)."""
    return decision.candidates[0].route if decision.candidates else None


def _ratio(hits: int, n: int) -> float | None:
    return hits / n if n else None


def index_side(decisions: Sequence[Any], rows: Sequence[Any], sent: Sequence[int],
               sample: Sequence[int]) -> dict[str, Any]:
    """Index only, and index with every sent query routed to its top-1 route: in-scope
    accuracy, OOS recall (None without out-of-scope rows) and the share routed; top-1's
    accuracy on the sent in-scope queries and on the sampled in-scope ones."""
    tops = [top_route(d) for d in decisions]
    ins = [i for i, q in enumerate(rows) if q.label != OOS]
    oos = [i for i, q in enumerate(rows) if q.label == OOS]
    sent_set = set(sent)
    right = sum(decisions[i].route == rows[i].label for i in ins)
    sent_in = [i for i in sent if rows[i].label != OOS]
    top_hits = sum(tops[i] == rows[i].label for i in sent_in)
    sample_in = [i for i in sample if rows[i].label != OOS]
    sample_hits = sum(tops[i] == rows[i].label for i in sample_in)
    kept_oos = sum(decisions[i].route is None for i in oos)  # index only: undecided = "oos"
    sent_oos = sum(i in sent_set for i in oos)
    routed = sum(d.route is not None for d in decisions)
    acc0, acc1 = _ratio(right, len(ins)), _ratio(right + top_hits, len(ins))
    return {
        "index_in_scope_acc": acc0,
        "top1_in_scope_acc": acc1,
        "top1_gain": acc1 - acc0 if acc0 is not None and acc1 is not None else None,
        "sent_in_scope": len(sent_in), "top1_hits_on_sent": top_hits,
        "top1_acc_on_sent": _ratio(top_hits, len(sent_in)),
        "index_oos_recall": _ratio(kept_oos, len(oos)),
        "top1_oos_recall": _ratio(kept_oos - sent_oos, len(oos)),
        "index_routed_share": _ratio(routed, len(rows)),
        "top1_routed_share": _ratio(routed + len(sent), len(rows)),
        "sample_top1_hits": sample_hits, "sample_top1_acc": _ratio(sample_hits, len(sample_in)),
    }


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def pairs(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Per sampled query, whether top-1 and the LLM were right: from an LLM run's outcomes, or
    from `--llm-results` (none when the outcomes predate the top-1 field)."""
    if "sample_outcomes" in r:
        return list(r["sample_outcomes"])
    return [dict(o, llm_correct=o["correct"]) for o in r.get("outcomes", [])
            if "index_top1_correct" in o]


def index_table(results: Sequence[dict[str, Any]]) -> str:
    """Index only against index + top-1 on the sent queries (exact), and, when the LLM ran,
    top-1 against the LLM on the same sampled queries (Wilson 95% intervals)."""
    llm = any(r.get("sample") for r in results)
    head = ("| dataset | floor | sent (valid) | in-scope acc index only | + top-1 on sent | gain | "
            "top-1 acc on sent in-scope | OOS recall index → top-1 on sent | routed index → "
            "top-1 on sent |")
    rule = "|---|---|---|---|---|---|---|---|---|"
    if llm:
        head += (" on the LLM's sample (in-scope): top-1 acc (95% CI) | LLM acc (95% CI) | "
                 "in-scope acc + LLM (sampled estimate) |")
        rule += "---|---|---|"
    paired = any(pairs(r) for r in results)
    if paired:
        head += " in-scope sampled right: both / top-1 only / LLM only |"
        rule += "---|"
    lines = [head, rule]
    for r in results:
        t = r["index_side"]
        floor = "—" if r["floor"] is None else f"{r['floor']:.3f}"
        oos = ("—" if t["index_oos_recall"] is None else
               f"{pct(t['index_oos_recall'])} → {pct(t['top1_oos_recall'])}")
        gain = "—" if t["top1_gain"] is None else f"{100 * t['top1_gain']:+.1f}"
        line = (f"| {r['dataset']} | {floor} | {pct(r['sent_share'])} "
                f"({pct(r['valid_sent_share'])}) | {pct(t['index_in_scope_acc'])} | "
                f"{pct(t['top1_in_scope_acc'])} | {gain} | {pct(t['top1_acc_on_sent'], 0)} "
                f"({t['top1_hits_on_sent']}/{t['sent_in_scope']}) | {oos} | "
                f"{pct(t['index_routed_share'])} → {pct(t['top1_routed_share'])} |")
        if llm:
            n_in = r["sample_in_scope"]
            tl, th = wilson(t["sample_top1_hits"], n_in)
            cl, ch = r["classifier_in_scope_ci"]
            line += (f" {pct(t['sample_top1_acc'], 0)} ({tl:.0%}–{th:.0%}; "
                     f"{t['sample_top1_hits']}/{n_in}) | "
                     f"{pct(r['classifier_in_scope_acc'], 0)} ({cl:.0%}–{ch:.0%}) | "
                     f"{pct(r['with_fallback_in_scope_acc'])}"
                     + (f" (OOS recall {pct(r['with_fallback_oos_recall'])})"
                        if r.get("with_fallback_oos_recall") is not None else "") + " |")
        if paired:
            ins = [o for o in pairs(r) if o["gold"] is not None]
            top = [o["index_top1_correct"] for o in ins]
            llm_ok = [o["llm_correct"] for o in ins]
            line += (f" {sum(a and b for a, b in zip(top, llm_ok, strict=True))} / "
                     f"{sum(a and not b for a, b in zip(top, llm_ok, strict=True))} / "
                     f"{sum(b and not a for a, b in zip(top, llm_ok, strict=True))} |"
                     if ins else " — |")
        lines.append(line)
    return "\n".join(lines)


LLM_FIELDS = ("sample", "sample_in_scope", "classifier_in_scope_acc", "classifier_in_scope_ci",
              "with_fallback_in_scope_acc", "with_fallback_ci", "with_fallback_oos_recall",
              "model", "outcomes")


def llm_sample(prior: dict[str, Any], dataset: str, split: str, rows: Sequence[Any],
               sent: Sequence[int]) -> tuple[list[int], dict[str, Any]]:
    """The sent queries an earlier LLM run (its results json) sampled for this set, by text,
    and that run's LLM figures, so top-1 is scored on the very queries the LLM saw.
    Raises ValueError when the run has no such set or one of its queries is not sent here."""
    runs = [r for r in prior["results"] if r["dataset"] == dataset and r["split"] == split]
    if not runs:
        raise ValueError(f"the LLM results hold no {dataset} {split} run: pass the json of "
                         f"a run with --datasets {dataset} --split {split}")
    by_text: dict[str, int] = {}
    for i in sent:
        by_text.setdefault(rows[i].text, i)
    missing = [o["text"] for o in runs[0]["outcomes"] if o["text"] not in by_text]
    if missing:
        raise ValueError(f"{len(missing)} queries the LLM saw on {dataset} are not sent here "
                         f"(e.g. {missing[0]!r}): run with the same floor and thresholds")
    sample = sorted(by_text[o["text"]] for o in runs[0]["outcomes"])
    return sample, {k: runs[0][k] for k in LLM_FIELDS if k in runs[0]}
