"""Conversation routing: follow-ups ("What about on the 9th?") decided in the context of the
conversation, against last-turn-only (every user turn on its own text: what a router without
conversation support does, semantic-router included) and a naive baseline that glues the
previous user turn onto this one.

    python -m benchmarks.conversations           # SGD k=10,25 x 2 seeds, MT-Bench, timing
    python -m benchmarks.conversations --quick   # 40 SGD conversations, k=10, 1 seed: smoke run

The conversation rule's constants were tuned on the first 300 SGD dialogues (`--tuned`), so
SGD figures are also reported per half: the tuned half and the held-out rest.

Data (`../shared/data`, see its README): `sgd_conversations` (route set: k utterances per
domain sampled with fixed seeds from `routes_train.csv`, texts under two labels dropped;
every user turn of `conversations_dev.csv` scored) and MT-Bench's two-turn questions from
`routellm_evals/mt_bench_judgements.csv` (category = route; two folds by question_id parity:
one fold's first turns are the utterances, the other fold's questions are the conversations).
Each route set is written as real route files, built with `semroute.build_index` and scored
with `semroute.quality.evaluate_conversations` (the same code as `semroute eval
--conversations`), index only. Decision time: p50 of deciding the newest turn of a 20-turn
conversation whose earlier user turns were already routed (a live chat) against a single
query's p50, same router, same run. Results: a table on stdout,
`benchmarks/results/conversations.md` and `conversations.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/conversations.py` as well as `-m`
    sys.path.insert(0, str(REPO))

from benchmarks.datasets import DATA_ROOT, unambiguous_pools  # noqa: E402
from benchmarks.machine import machine, save_results  # noqa: E402
from benchmarks.machine import versions as machine_versions  # noqa: E402
from semroute.quality import (  # noqa: E402
    Conversation,
    Turn,
    evaluate_conversations,
    load_conversations,
    load_labelled,
)
from semroute.quality.conversations import score_turns, user_turns  # noqa: E402

WORK = REPO / "benchmarks" / ".work" / "conversations"
RESULTS = REPO / "benchmarks" / "results"
ENCODER = "all-MiniLM-L6-v2"
RULES = ("last_turn_only", "previous_glued", "conversation")
RULE_TITLES = {"last_turn_only": "last turn only (semantic-router's rule)",
               "previous_glued": "previous user turn glued on",
               "conversation": "conversation-aware (semroute)"}
CONTEXT_TURNS = 20
TUNED_CONVERSATIONS = 300  # the conversation rule's constants were tuned on these (by id)
PARTS = {"tuned": "tuned on (first 300)", "held_out": "held out (the rest)"}
CATALOGUE = {
    "profile": "bench",
    "profiles": {"bench": {"fast": {"provider": "openai", "model": "unused",
                                    "base_url": "http://127.0.0.1:9/v1"}}},
}
Log = Callable[[str], None]


@dataclass
class Config:
    sgd: Path
    mt_bench: Path | None
    ks: list[int]
    seeds: int
    max_conversations: int  # 0 = all
    tuned: int  # the first N conversations the rule was tuned on; the rest are held out
    timing_samples: int
    work: Path
    out: Path | None
    name: str
    command: str


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- route sets


def sgd_pools(path: Path) -> tuple[dict[str, list[str]], int]:
    """Utterance pools per label (first spelling of each text); texts under two labels are
    dropped. Returns the pools and how many texts were dropped as ambiguous."""
    pools, owners = unambiguous_pools(load_labelled(path))
    return dict(sorted(pools.items())), sum(len(v) > 1 for v in owners.values())


def sample(pools: dict[str, list[str]], k: int, seed: int) -> dict[str, list[str]]:
    out = {}
    for label, pool in pools.items():
        pool = list(pool)
        random.Random(f"{seed}|{label}").shuffle(pool)
        out[label] = pool[:k]
    return out


def build_router(folder: Path, utterances: dict[str, list[str]], what: str) -> Any:
    """Route files and models.yaml under `folder/routes`, the index under `folder/index`,
    and the router (index only)."""
    import semroute

    routes = folder / "routes"
    if routes.exists():
        for p in routes.glob("*.yaml"):
            p.unlink()
    routes.mkdir(parents=True, exist_ok=True)
    for route, utts in utterances.items():
        spec = {"name": route, "description": f"{what} '{route}'", "model": "fast",
                "utterances": utts}
        (routes / f"{route}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False,
                                                             allow_unicode=True),
                                              encoding="utf-8")
    catalogue = dict(CATALOGUE, router={"encoder": ENCODER, "default_route": None})
    (routes / "models.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))
    index = folder / "index"
    (index / "calibration.json").unlink(missing_ok=True)
    semroute.build_index(routes, index, show_progress=False)
    return semroute.load_router(routes, index, classifier=False)


def supports_messages(router: Any) -> bool:
    """Whether `router.route_batch` takes chat messages (conversation-aware routing)."""
    try:
        router.route_batch([[{"role": "user", "content": "hello"}]], use_classifier=False)
    except Exception:
        return False
    return True


# ---------------------------------------------------------------- MT-Bench


def mt_bench_questions(path: Path) -> list[tuple[int, str, list[str]]]:
    """(question_id, category, [first turn, second turn]), one per question."""
    out: dict[int, tuple[int, str, list[str]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            qid = int(rec["question_id"])
            turns = json.loads(rec["question_turns"])
            if qid not in out and len(turns) >= 2:
                out[qid] = (qid, rec["category"].strip(), [str(t) for t in turns[:2]])
    return [out[q] for q in sorted(out)]


def mt_bench_conversations(questions: Sequence[tuple[int, str, list[str]]]) -> list[Conversation]:
    return [Conversation(str(qid), (Turn(0, "user", turns[0], cat, 0),
                                    Turn(1, "user", turns[1], cat, 0)))
            for qid, cat, turns in questions]


# ---------------------------------------------------------------- decision time


def timing(router: Any, convs: Sequence[Conversation], samples: int,
           conversation_aware: bool) -> dict[str, Any]:
    """p50 of a single query vs the newest turn of a 20-turn conversation whose earlier user
    turns were routed first (as a live chat does). Samples rotate over three series, each on
    its own conversation, so no timed text is cached beforehand: a single query; the
    20-turn conversation (its newest assistant message is new to the router, as in a live
    chat); the same with the assistant messages scored when they were produced, as
    `dispatch` does for a chat reply (`Router.prescore`, in the background)."""

    windows = []
    for c in convs:
        users = [i for i, t in enumerate(c.turns) if t.speaker == "user" and
                 i >= CONTEXT_TURNS - 1]
        if users:
            end = users[0]
            windows.append(c.turns[end - CONTEXT_TURNS + 1:end + 1])
    windows = windows[:samples]
    for c in convs[:10]:  # warm-up: sessions, allocations
        router.route(c.turns[0].text, use_classifier=False)
    series: dict[str, list[float]] = {"single": [], "conversation": [], "reply_seen": []}
    names = list(series) if conversation_aware else ["single"]
    for n, window in enumerate(windows):
        kind = names[n % len(names)]
        if kind == "single":
            t0 = time.perf_counter()
            router.route(window[-1].text, use_classifier=False)
            series[kind].append((time.perf_counter() - t0) * 1e3)
            continue
        msgs = [{"role": t.speaker, "content": t.text} for t in window if t.text]
        for i, m in enumerate(msgs[:-1]):  # the live chat: each earlier user turn routed
            if m["role"] == "user":
                router.route(msgs[:i + 1], use_classifier=False)
        if kind == "reply_seen":  # what dispatch does as each reply is produced
            for m in msgs[:-1]:
                if m["role"] == "assistant":
                    router.prescore(m["content"])
        t0 = time.perf_counter()
        router.route(msgs, use_classifier=False)
        series[kind].append((time.perf_counter() - t0) * 1e3)
    out: dict[str, Any] = {"windows": len(windows)}
    for kind, values in series.items():
        out[f"{kind}_n"] = len(values)
        out[f"{kind}_p50_ms"] = statistics.median(values) if values else None
    if series["single"] and series["conversation"]:
        out["ratio"] = out["conversation_p50_ms"] / out["single_p50_ms"]
        out["reply_seen_ratio"] = out["reply_seen_p50_ms"] / out["single_p50_ms"]
    return out


# ---------------------------------------------------------------- the benchmark


def git_state() -> dict[str, Any]:
    """The commit measured, and whether semroute/ had uncommitted changes at the time."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None,
            "semroute_dirty": bool(git("status", "--porcelain", "--", "semroute"))}


def _mean_std(raw: list[float | None]) -> dict[str, float | None]:
    values = [v for v in raw if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None}


def halves(res: Any, convs: Sequence[Conversation], tuned: int,
           route_names: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each rule's metrics on the first `tuned` conversations (the conversation rule's
    constants were tuned on them) and on the rest (held out), from the same decisions."""
    turns = user_turns(convs)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for part, held in (("tuned", False), ("held_out", True)):
        pick = [i for i, t in enumerate(turns) if (t.conversation >= tuned) == held]
        out[part] = {rule: score_turns([ds[i] for i in pick], [turns[i] for i in pick],
                                       route_names)
                     for rule, ds in res.decisions.items()}
    return out


KEYS = ("first_turn_accuracy", "followup_accuracy", "accuracy")
TOP1_KEYS = tuple(f"top1_{k}" for k in KEYS)


def run_benchmark(cfg: Config, log: Log | None = None) -> dict[str, Any]:
    say: Log = log or _stderr
    started = time.perf_counter()
    pools, ambiguous = sgd_pools(cfg.sgd / "routes_train.csv")
    convs = all_convs = load_conversations(cfg.sgd / "conversations_dev.csv")
    if cfg.max_conversations:
        convs = convs[:cfg.max_conversations]
    say(f"sgd: {len(pools)} routes ({ambiguous} texts under two labels dropped), "
        f"{len(convs)} conversations")
    rules: list[str] = []
    runs: list[dict[str, Any]] = []
    cache: Any = None
    timed: dict[str, Any] | None = None
    for k in cfg.ks:
        for seed in range(cfg.seeds):
            router = build_router(cfg.work / f"sgd-k{k}-s{seed}", sample(pools, k, seed),
                                  "domain")
            if not rules:
                rules = [r for r in RULES if r != "conversation" or supports_messages(router)]
                if "conversation" not in rules:
                    say("  note: Router.route_batch does not take chat messages here: "
                        "conversation-aware column skipped")
            if timed is None:  # a fresh router: nothing it times is cached yet
                timed = timing(router, all_convs, cfg.timing_samples,
                               "conversation" in rules)
                say(f"  timing: {timed}")
            if cache is None:
                cache = router.matcher.cache
            else:  # same encoder: share encoded texts across route sets
                router.matcher.cache = cache
            res = evaluate_conversations(router, convs, rules=rules)
            runs.append({"data": "sgd", "k": k, "seed": seed, "by_rule": res.by_rule,
                         "counts": res.counts, "route_s": res.info["route_s"]})
            if 0 < cfg.tuned < len(convs):
                runs[-1]["by_part"] = halves(res, convs, cfg.tuned, router.routes.names)
            say(f"  sgd k={k} seed={seed}: " + "; ".join(
                f"{r} first {res.by_rule[r]['first_turn_accuracy']:.3f} follow-up "
                f"{res.by_rule[r]['followup_accuracy']:.3f}" for r in rules)
                + f" ({res.info['route_s']})")
    mt: dict[str, Any] | None = None
    if cfg.mt_bench is not None:
        questions = mt_bench_questions(cfg.mt_bench)
        folds = [[q for q in questions if q[0] % 2 == p] for p in (0, 1)]
        totals: dict[str, dict[str, list[float]]] = {}
        counts = {"questions": len(questions), "first_turns": 0, "followup_turns": 0}
        for p in (0, 1):
            index_fold, eval_fold = folds[p], folds[1 - p]
            utts: dict[str, list[str]] = {}
            for _, cat, turns in index_fold:
                utts.setdefault(cat, []).append(turns[0])
            router = build_router(cfg.work / f"mt-bench-fold{p}", dict(sorted(utts.items())),
                                  "MT-Bench category")
            res = evaluate_conversations(router, mt_bench_conversations(eval_fold), rules=rules)
            counts["first_turns"] += res.counts["first_turns"]
            counts["followup_turns"] += res.counts["followup_turns"]
            for r, m in res.by_rule.items():
                t = totals.setdefault(r, {})
                for pre in ("", "top1_"):
                    t.setdefault(pre + "first", []).append(
                        m[pre + "first_turn_accuracy"] * res.counts["first_turns"])
                    t.setdefault(pre + "follow", []).append(
                        m[pre + "followup_accuracy"] * res.counts["followup_turns"])
        nf, nu = counts["first_turns"], counts["followup_turns"]
        mt = {"counts": counts, "by_rule": {r: {
            f"{pre}{key}": value for pre in ("", "top1_") for key, value in (
                ("first_turn_accuracy", sum(t[pre + "first"]) / nf),
                ("followup_accuracy", sum(t[pre + "follow"]) / nu),
                ("accuracy", (sum(t[pre + "first"]) + sum(t[pre + "follow"])) / (nf + nu)))}
            for r, t in totals.items()}}
        say(f"  mt-bench: {mt}")
    summary = []
    for k in cfg.ks:
        rs = [r for r in runs if r["k"] == k]
        for rule in rules:
            summary.append({"data": "sgd", "k": k, "rule": rule, "seeds": len(rs), **{
                key: _mean_std([r["by_rule"][rule][key] for r in rs])
                for key in KEYS + TOP1_KEYS}})
    parts = []
    for k in cfg.ks:
        rs = [r for r in runs if r["k"] == k and "by_part" in r]
        for part in PARTS if rs else ():
            for rule in rules:
                parts.append({"data": "sgd", "k": k, "part": part, "rule": rule,
                              "seeds": len(rs), **{
                                  key: _mean_std([r["by_part"][part][rule][key] for r in rs])
                                  for key in KEYS + TOP1_KEYS}})
    if mt is not None:
        for rule in rules:
            summary.append({"data": "mt-bench", "k": "2 folds", "rule": rule, "seeds": 1, **{
                key: {"mean": mt["by_rule"][rule][key], "std": None}
                for key in KEYS + TOP1_KEYS}})
    results = {
        "meta": {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                 "command": cfg.command, "wall_s": round(time.perf_counter() - started, 1),
                 "machine": machine(), "encoder": ENCODER, "git": git_state(),
                 "versions": machine_versions(("semroute-llm", "onnxruntime", "faiss-cpu",
                                               "numpy", "tokenizers")),
                 "rules": rules, "sgd": str(cfg.sgd), "mt_bench": str(cfg.mt_bench),
                 "conversations": len(convs), "ambiguous_texts_dropped": ambiguous,
                 "tuned_conversations": cfg.tuned if parts else None},
        "summary": summary, "by_part": parts, "aims": aims(summary, timed, parts),
        "timing": timed,
        "mt_bench": mt, "runs": runs,
    }
    print(render_table(results))
    if cfg.out is not None:
        write_results(results, cfg.out, cfg.name)
        say(f"wrote {cfg.out / (cfg.name + '.md')} and {cfg.out / (cfg.name + '.json')}")
    return results


def aims(summary: Sequence[dict[str, Any]], timed: dict[str, Any] | None,
         parts: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The issue's aims, checked: follow-ups within 5 points of first turns, no loss on
    first turns against last-turn-only (on the decisions, then on the best-scoring route;
    SGD also on the held-out half), 20-turn decision time at most 2x a single query."""
    out = []
    by = {(r["data"], r["k"], r["rule"]): r for r in summary}
    by.update({("sgd held-out half", r["k"], r["rule"]): r for r in parts
               if r["part"] == "held_out"})
    for pre, (data, k, rule) in [(p, key) for p in ("", "top1_") for key in by]:
        row = by[(data, k, rule)]
        if rule != "conversation":
            continue
        first, follow = (row[f"{pre}first_turn_accuracy"]["mean"],
                         row[f"{pre}followup_accuracy"]["mean"])
        base = by[(data, k, "last_turn_only")][f"{pre}first_turn_accuracy"]["mean"]
        if first is None or follow is None or base is None:
            continue
        gap, loss = round(100 * (first - follow), 6), round(100 * (base - first), 6)
        where = ("best-scoring route, " if pre else "decisions, ") + f"{data}" + (
            f" k={k}" if data.startswith("sgd") else "")
        out.append(f"{where}: follow-ups {100 * follow:.1f}% vs first turns {100 * first:.1f}%"
                   f" ({gap:.1f} points below; aim at most 5: "
                   f"{'met' if gap <= 5 else 'NOT met'}); first turns {100 * first:.1f}% vs "
                   f"last-turn-only {100 * base:.1f}% ({-loss:+.1f} points; aim no loss: "
                   f"{'met' if loss <= 0.05 else 'NOT met'})")
    if timed and timed.get("ratio") is not None:
        out.append(f"decision time, a live chat through dispatch (each reply pre-scored as it "
                   f"is produced): 20-turn conversation {timed['reply_seen_p50_ms']:.2f} ms p50 "
                   f"vs single query {timed['single_p50_ms']:.2f} ms "
                   f"({timed['reply_seen_ratio']:.2f}x; aim <= 2x: "
                   f"{'met' if timed['reply_seen_ratio'] <= 2 else 'NOT met'}); routed cold "
                   f"with `Router.route` (the newest reply never seen) "
                   f"{timed['conversation_p50_ms']:.2f} ms ({timed['ratio']:.2f}x)")
    elif timed:
        out.append(f"decision time: single query {timed['single_p50_ms']:.2f} ms p50; the "
                   f"20-turn conversation was not measured (no conversation-aware routing)")
    return out


def _cell(s: dict[str, float | None]) -> str:
    mean, std = s["mean"], s["std"]
    if mean is None:
        return "—"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def render_table(results: dict[str, Any], top1: bool = False) -> str:
    pre = "top1_" if top1 else ""
    lines = ["| data | k | rule | first turns | follow-ups | all user turns | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in results["summary"]:
        lines.append(f"| {r['data']} | {r['k']} | {RULE_TITLES[r['rule']]} | "
                     f"{_cell(r[pre + 'first_turn_accuracy'])} | "
                     f"{_cell(r[pre + 'followup_accuracy'])} | "
                     f"{_cell(r[pre + 'accuracy'])} | {r['seeds']} |")
    if top1:
        return "\n".join(lines)
    t = results.get("timing")
    if t:
        lines += ["", "| decision time (p50) | single query | newest turn of a 20-turn "
                  "conversation | ratio |", "|---|---|---|---|",
                  f"| ms | {_ms(t['single_p50_ms'])} (n={t['single_n']}) | "
                  f"{_ms(t['conversation_p50_ms'])} (n={t['conversation_n']}) | "
                  + (f"{t['ratio']:.2f}x" if t.get("ratio") is not None else "—") + " |"]
        if t.get("reply_seen_n"):
            lines.append(f"| ms, through dispatch (each reply pre-scored when produced) | | "
                         f"{_ms(t['reply_seen_p50_ms'])} (n={t['reply_seen_n']}) | "
                         f"{t['reply_seen_ratio']:.2f}x |")
    return "\n".join(lines)


def render_parts(results: dict[str, Any], top1: bool = False) -> str:
    """The SGD rows per half: the conversations the rule was tuned on, and the rest."""
    pre = "top1_" if top1 else ""
    lines = ["| half | k | rule | first turns | follow-ups | gap | all user turns | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results.get("by_part") or []:
        first, follow = r[pre + "first_turn_accuracy"]["mean"], r[pre + "followup_accuracy"]["mean"]
        gap = "—" if first is None or follow is None else f"{100 * (first - follow):.1f}"
        lines.append(f"| {PARTS[r['part']]} | {r['k']} | {RULE_TITLES[r['rule']]} | "
                     f"{_cell(r[pre + 'first_turn_accuracy'])} | "
                     f"{_cell(r[pre + 'followup_accuracy'])} | {gap} | "
                     f"{_cell(r[pre + 'accuracy'])} | {r['seeds']} |")
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


NOTES = """\
## How to read it

- Percentages of user turns routed to their label by the router's decision (index only,
  default thresholds; an undecided turn counts as wrong), mean ± std over seeds.
- **first turns**: the conversation's first user turn and every user turn whose label differs
  from the previous user turn's (a topic switch); **follow-ups**: user turns with the same
  label as the previous user turn ("Yes, that works. What's the cost?").
- **last turn only**: each user turn routed on its own text. This is what the leading peer,
  semantic-router, does: it has no conversation routing (it routes the text it is given, so
  a chat app hands it the last user message), and this column is the peer's rule, run
  through semroute's index for the same utterances and encoder. No peer routes on the
  conversation, so there is no peer column for it.
- **previous user turn glued on**: the query is the previous user turn + " " + this turn, a
  naive baseline.
- **conversation-aware**: `Router.route_batch` with the chat messages up to and including the
  turn (assistant turns included), the same call as `semroute eval --conversations`.
- SGD route sets: k utterances per domain sampled with fixed seeds from `routes_train.csv`
  (texts under two labels dropped); the 3 domains absent from the dev conversations (Events,
  Travel, Calendar) stay as routes, as distractors. A few dev turns share their text with a
  route utterance (131 of 6,218 in the whole pool; fewer in a k-sample); they are kept, since
  dropping turns would break conversations.
- The conversation rule's constants (decay, look-back, switch gaps, the consensus count) were
  tuned on the first 300 of these 600 SGD dialogues (sorted by id), so the SGD rows over all
  600 are not fully held out; the per-half tables split them into the tuned half and the
  held-out last 300. MT-Bench played no part in the tuning.
- MT-Bench: 80 two-turn questions, 8 categories; two folds by question_id parity: the route
  set is one fold's first turns, the other fold's questions are routed (first turn alone,
  second turn after the first), and vice versa; numbers are over both folds. Its second turns
  ("Now rewrite it as a limerick") keep the category of the first, so they are follow-ups.
- Decision time: one router, one thread, int8 encoder. The samples alternate between a single
  query (a user turn's text, not yet in the query cache) and the newest user turn of a
  20-message window of an SGD dialogue (assistant turns included), routed after every earlier
  user turn of the window was routed, as a live chat does; each sample uses its own dialogue,
  so the timed turn is never cached. A conversation-aware decision scores every turn of its
  look-back window (up to 7 user turns and the assistant turns between them; those seen
  before come from the matcher's per-turn cache), and the newest assistant message is new to
  the router as well, so it encodes two texts where a single query encodes one. The third
  row is what a live chat through `dispatch` gets: dispatch pre-scores each chat reply in the
  background when it is produced (`Router.prescore`, `router.prescore_replies`, on by
  default), so only the newest user turn is encoded.
- The two tables differ where the context ranks the right route first but the mixed score
  stays under the router's thresholds: the turn is undecided (with a classifier configured,
  it goes to the classifier, which is shown the recent user turns); and the other way, where
  a follow-up whose mixed scores stay under the thresholds is kept on the route a confident
  earlier turn set (its anchor) while the mixed scores rank another route first.
- The int8 encoder quantises activations per batch, so a text's vector, and a few decisions,
  can differ slightly with the batch it is encoded in (seen as ~0.1-1 point between runs
  that batch differently, e.g. `semroute eval --conversations` against this benchmark).
"""


def render_markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    mach = m["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    parts = [
        "# Conversation routing: follow-ups in context",
        "",
        f"- Date: {m['date']}",
        f"- Command: `{m['command']}`",
        f"- Wall time: {m['wall_s'] / 60:.1f} min",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, {mach['ram_gib']} GiB RAM, "
        f"{mach['os']}, Python {mach['python']}",
        f"- Versions: {vers}",
        f"- Encoder: {m['encoder']} (int8 ONNX, semroute's default backend), 1 thread",
        *([f"- semroute commit: {g['commit'][:12]}"
           + (" (semroute/ had uncommitted changes)" if g["semroute_dirty"] else "")]
          if (g := m.get("git")) and g.get("commit") else []),
        f"- Data: {m['sgd']} ({m['conversations']} conversations), {m['mt_bench']}",
        "",
        "## Results",
        "",
        "The router's decision (index only, default thresholds; undecided = wrong), % of user "
        "turns:",
        "",
        render_table(results),
        "",
        "Best-scoring route, thresholds ignored (every turn routed somewhere, as "
        "semantic-router does without `fit()`):",
        "",
        render_table(results, top1=True),
        "",
        *(["SGD per half, decisions (the conversation rule's constants were tuned on the "
           f"first {m['tuned_conversations']} conversations by id; the rest are held out):",
           "", render_parts(results), "", "The same, best-scoring route:", "",
           render_parts(results, top1=True), ""] if results.get("by_part") else []),
        "## Against the aims",
        "",
        *[f"- {a}" for a in results["aims"]],
        "",
    ]
    if "conversation" not in m["rules"]:
        parts += ["Conversation-aware routing was not available in this build "
                  "(`Router.route_batch` did not take chat messages), so only the "
                  "last-turn-only and glued baselines were measured.", ""]
    parts += [NOTES, "Per-seed numbers and counts are in the JSON file beside this one."]
    return "\n".join(parts) + "\n"


def write_results(results: dict[str, Any], out: Path, name: str) -> tuple[Path, Path]:
    return save_results(results, render_markdown(results), out, name)


# ---------------------------------------------------------------- command line


def build_config(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m benchmarks.conversations",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sgd", type=Path, default=DATA_ROOT / "sgd_conversations",
                   help="folder with routes_train.csv and conversations_dev.csv")
    p.add_argument("--mt-bench", default=str(DATA_ROOT / "routellm_evals" /
                                             "mt_bench_judgements.csv"),
                   help="MT-Bench judgements CSV ('none' to skip)")
    p.add_argument("--k", default=None, help="utterances per route (default 10,25)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per k (default 2)")
    p.add_argument("--max-conversations", type=int, default=None,
                   help="first N conversations only (default all; 40 with --quick)")
    p.add_argument("--tuned", type=int, default=TUNED_CONVERSATIONS,
                   help="the first N SGD conversations the rule was tuned on: reported apart "
                   "from the held-out rest (default 300; 0 = no split)")
    p.add_argument("--timing-samples", type=int, default=None,
                   help="20-turn windows timed, alternating with single queries (default 400)")
    p.add_argument("--quick", action="store_true", help="smoke run: k=10, 1 seed, 40 "
                   "conversations, 40 timing samples")
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default=None,
                   help="output stem (default conversations; conversations-quick with --quick)")
    a = p.parse_args(argv)
    return Config(
        sgd=a.sgd, mt_bench=None if a.mt_bench == "none" else Path(a.mt_bench),
        ks=[int(x) for x in (a.k or ("10" if a.quick else "10,25")).split(",") if x.strip()],
        seeds=a.seeds if a.seeds is not None else (1 if a.quick else 2),
        max_conversations=(a.max_conversations if a.max_conversations is not None
                           else 40 if a.quick else 0),
        tuned=a.tuned,
        timing_samples=(a.timing_samples if a.timing_samples is not None
                        else 40 if a.quick else 400),
        work=a.work, out=a.out, name=a.name or ("conversations-quick" if a.quick
                                                else "conversations"),
        command=shlex.join(["python", "-m", "benchmarks.conversations",
                            *(argv if argv is not None else sys.argv[1:])]))


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_benchmark(build_config(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
