"""The fallback classifier measured end to end: index only against index + classifier, with a
real local LLM on the queries the index leaves undecided.

    python -m benchmarks.fallback                        # test split, N=40 per set
    python -m benchmarks.fallback --split valid --n 12 --datasets banking77_oos --prompt strict
    python -m benchmarks.fallback --quick                # snips only, N=4: a smoke run
    python -m benchmarks.fallback --n 0                  # no LLM: the index-side baseline

Per dataset (banking77, hwu64, snips, banking77_oos), the k=10 seed-0 route set of
benchmarks/accuracy.py (same train draw, same route files) is built with the default
thresholds (no fit). The classifier floor (`router.classifier_min_score`) is chosen on the
validation split (the lowest that sends at most --max-share of it to the classifier), then the
evaluated split is routed index only. Of the queries the floor lets through to the classifier,
N are drawn, stratified (out-of-scope ones apart), and routed again through `Router.route`
with the classifier on: the real semroute code path (prompt, candidates, GBNF-constrained
label, fallback to no route) against llama-server (prompts on 2 threads, generation on 1,
one slot so its prompt cache keeps the shared prefix) serving Qwen2.5-Coder-0.5B-Instruct
(PyPI chunks, see benchmarks/fallback_model.py) or the tests' SmolLM2-135M. The sampled
accuracies are carried to all sent queries (Wilson 95% intervals). Beside it, exactly over all
sent queries, the index-side baseline (benchmarks/fallback_index.py): each sent query routed to
the index's own top-1 route instead, and top-1 against the LLM on the same sample. `--n 0`
skips the LLM and llama-server. Results, saved after each set:
benchmarks/results/fallback[_top1][_<split>].{md,json}.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import ENCODER, OOS_FILE, route_all, write_route_set  # noqa: E402
from benchmarks.datasets import DEFAULT_DATASETS, load_dataset  # noqa: E402
from benchmarks.fallback_index import (  # noqa: E402
    index_side,
    index_table,
    llm_sample,
    top_route,
    wilson,
)
from benchmarks.fallback_model import NAME as QWEN_NAME  # noqa: E402
from benchmarks.fallback_model import ensure_model  # noqa: E402
from benchmarks.machine import machine, save_results  # noqa: E402
from semroute.quality import classifier_floor_for  # noqa: E402
from semroute.quality.evaluation import OOS, score_decisions  # noqa: E402
from semroute.routing.classifier import NONE_LABEL, SYSTEM  # noqa: E402

WORK = REPO / "benchmarks" / ".work" / "fallback"
RESULTS = REPO / "benchmarks" / "results"
K, SEED = 10, 0
MODELS = {"qwen": QWEN_NAME, "smollm2": "SmolLM2-135M-Instruct Q4_1"}


PROMPTS = {
    "default": SYSTEM,  # semroute's own prompt (routing/classifier.py)
    "strict": SYSTEM.replace(
        f"Reply {NONE_LABEL} when the message fits none of the handlers.",
        f"Many messages belong to NO handler: reply {NONE_LABEL} unless the message clearly "
        "asks for exactly what one handler's examples ask for."),
}


def write_routes(folder: Path, ds: Any, base_url: str, candidates: int,
                 oos_examples: int = 0) -> None:
    """accuracy.py's route files (with `oos_examples` train out-of-scope rows as the route
    set's out-of-scope example file, as `accuracy.py --oos-examples`), plus a catalogue whose
    classifier is the local server."""
    oos = ds.oos_examples(oos_examples, SEED) if oos_examples and ds.train_oos else []
    write_route_set(folder, ds, ds.utterances(K, SEED), "torch", oos=oos)
    catalogue = {
        "profile": "bench",
        "profiles": {"bench": {"fast": {"provider": "openai", "model": "local",
                                        "base_url": f"{base_url}/v1", "timeout": 300,
                                        "structured": "grammar"}}},
        "router": {"encoder": ENCODER, "backend": "torch", "default_route": None,
                   "classifier_model": "fast", "classifier_timeout": 300,
                   "classifier_candidates": candidates,
                   **({"oos_examples": OOS_FILE} if oos else {})},
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))


def pct(xs: list[float], q: float) -> float | None:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def stratified(sent: list[int], rows: Any, n: int, name: str) -> list[int]:
    """N of the sent queries, in-scope and out-of-scope drawn apart: OOS in proportion, but at
    least a quarter of N when there are any, so "none" answers are measured too."""
    rng = random.Random(f"{name}|{n}")
    oos = [i for i in sent if rows[i].label == OOS]
    ins = [i for i in sent if rows[i].label != OOS]
    n_oos = min(len(oos), max(round(n * len(oos) / max(1, len(sent))), n // 4 if oos else 0))
    n_in = min(len(ins), n - n_oos)
    return sorted(rng.sample(ins, n_in) + rng.sample(oos, n_oos))


def run_dataset(name: str, split: str, n: int, base_url: str, args: argparse.Namespace,
                log: Any) -> dict[str, Any]:
    """Index-only metrics on the whole split, the floor chosen on the validation split, the
    index's top-1 on every query the classifier would be sent, and (N > 0) the classifier on
    a stratified sample of them."""
    import semroute

    ds = load_dataset(name)
    rows = ds.test if split == "test" else ds.valid
    base = Path(args.work) / (args.name or split) / ds.name  # one folder per run: in parallel
    routes, index = base / "routes", base / "index"
    write_routes(routes, ds, base_url, args.candidates, args.oos_examples)
    semroute.build_index(routes, index, show_progress=False)
    router = semroute.load_router(routes, index)
    assert router.classifier is not None
    router.classifier.nearest = args.variant == "nearest"
    router.classifier.examples = args.examples
    router.classifier.none_examples = args.none_examples
    router.classifier.system_template = PROMPTS[args.prompt]
    valid = route_all(router, [q.text for q in ds.valid], 512)
    floor = classifier_floor_for(valid, args.max_share) if args.floor else None
    router.classifier_floor = floor
    decisions = valid if split == "valid" else route_all(router, [q.text for q in rows], 512)
    scored = score_decisions(decisions, rows, ds.routes).metrics
    undecided = [i for i, d in enumerate(decisions) if d.route is None]
    sent = [i for i in undecided if floor is None or decisions[i].score >= floor]
    sample = stratified(sent, rows, n, f"{ds.name}|{split}") if n else []
    prior: dict[str, Any] = {}
    if not n and args.llm_results:  # top-1 on the queries an earlier LLM run sampled
        sample, prior = llm_sample(json.loads(Path(args.llm_results).read_text("utf-8")),
                                   ds.name, split, rows, sent)
    acc0 = scored["in_scope_accuracy"]
    t_in = sum(q.label != OOS for q in rows)
    side = index_side(decisions, rows, sent, sample)
    out: dict[str, Any] = {
        "dataset": ds.name, "split": split, "queries": len(rows), "floor": floor,
        "oos_examples": len(router.routes.oos_examples), "none_examples": args.none_examples,
        "undecided": len(undecided), "undecided_share": len(undecided) / len(rows),
        "sent": len(sent), "sent_share": len(sent) / len(rows),
        "valid_sent_share": sum(d.route is None and (floor is None or d.score >= floor)
                                for d in valid) / len(valid),
        "index_in_scope_acc": acc0,
        "index_in_scope_ci": list(wilson(round(acc0 * t_in), t_in)),
        "index_side": side, "sample": len(sample), **prior,
    }
    if prior:  # per sampled query, top-1 beside the LLM run's answer (a paired comparison)
        llm_right = {o["text"]: o["correct"] for o in prior.pop("outcomes")}
        out["sample_outcomes"] = [
            {"text": rows[i].text, "gold": None if rows[i].label == OOS else rows[i].label,
             "index_top1": top_route(decisions[i]),
             "index_top1_correct": top_route(decisions[i]) == rows[i].label,
             "llm_correct": llm_right[rows[i].text]} for i in sample]
    if "oos_recall" in scored and scored["oos_recall"] is not None:
        out["index_oos_recall"] = scored["oos_recall"]
    t = side
    log(f"  {ds.name} {split}: floor {floor}, sent {out['sent_share']:.1%} (valid "
        f"{out['valid_sent_share']:.1%}), in-scope {acc0:.1%} -> {t['top1_in_scope_acc']:.1%} "
        f"with top-1 on sent (top-1 right on {t['top1_hits_on_sent']}/{t['sent_in_scope']})")
    if n:  # the LLM run (with --n 0 a sample comes from --llm-results, no model call)
        out.update(classify_sample(router, decisions, rows, sent, sample, acc0, log))
    return out


def classify_sample(router: Any, decisions: list[Any], rows: Any, sent: list[int],
                    sample: list[int], acc0: float, log: Any) -> dict[str, Any]:
    """The sampled sent queries routed again with the classifier on; its accuracies carried to
    all sent queries. Each outcome also holds the index's top-1 route for that query."""
    outcomes = []
    for i in sample:
        q = rows[i]
        d = router.route(q.text)
        call = d.classifier
        assert call is not None, d.reason  # sent queries are above the floor
        gold = None if q.label == OOS else q.label
        top = top_route(decisions[i])
        outcomes.append({"text": q.text, "gold": gold, "answer": call.answer,
                         "none_examples": list(call.none_examples),
                         "route": d.route, "correct": d.route == gold, "error": call.error,
                         "index_top1": top, "index_top1_correct": top == gold,
                         "latency_ms": round(call.latency_ms, 1), "cached": call.cached,
                         "input_tokens": call.input_tokens})
    calls = [o for o in outcomes if not o["cached"]]
    in_rows = [o for o in outcomes if o["gold"] is not None]
    oos_rows = [o for o in outcomes if o["gold"] is None]
    t_in = sum(q.label != OOS for q in rows)
    t_oos = len(rows) - t_in
    s_in = sum(rows[i].label != OOS for i in sent)
    s_oos = len(sent) - s_in
    hits = sum(o["correct"] for o in in_rows)
    p_lo, p_hi = wilson(hits, len(in_rows))
    p = hits / len(in_rows) if in_rows else 0.0
    share_in = s_in / t_in if t_in else 0.0
    lat = [o["latency_ms"] for o in calls]
    out: dict[str, Any] = {
        "sample_in_scope": len(in_rows),
        "classifier_in_scope_acc": p, "classifier_in_scope_ci": [p_lo, p_hi],
        "with_fallback_in_scope_acc": acc0 + share_in * p,
        "with_fallback_ci": [acc0 + share_in * p_lo, acc0 + share_in * p_hi],
        "calls": len(calls), "latency_mean_ms": statistics.fmean(lat) if lat else None,
        "latency_p50_ms": pct(lat, 0.5), "latency_p95_ms": pct(lat, 0.95),
        "input_tokens_mean": statistics.fmean(o["input_tokens"] for o in calls)
        if calls else None,
        "invalid": sum(o["answer"] is None for o in outcomes), "outcomes": outcomes,
    }
    none_hits = sum(o["correct"] for o in oos_rows)
    if t_oos:
        q_none = none_hits / len(oos_rows) if oos_rows else 1.0
        q_lo, q_hi = wilson(none_hits, len(oos_rows))
        r0 = sum(d.route is None for d, q in zip(decisions, rows, strict=True)
                 if q.label == OOS) / t_oos
        lost = s_oos / t_oos
        out.update(sample_oos=len(oos_rows), none_share=q_none,
                   with_fallback_oos_recall=r0 - lost * (1 - q_none),
                   with_fallback_oos_ci=[r0 - lost * (1 - q_lo), r0 - lost * (1 - q_hi)])
    log(f"    classifier {hits}/{len(in_rows)} in-scope right"
        + (f", none on {none_hits}/{len(oos_rows)} OOS" if t_oos else "")
        + f" -> {out['with_fallback_in_scope_acc']:.1%}; index top-1 on the same: "
        f"{sum(o['index_top1_correct'] for o in in_rows)}/{len(in_rows)}; "
        f"mean {out['latency_mean_ms'] or 0:.0f} ms/call")
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| dataset | route set | floor | sent to classifier (valid) | sample (in-scope) | "
             "classifier acc (95% CI) | in-scope acc index only | index + classifier (95% CI) | "
             "gain | OOS recall index → +clf (95% CI) | invalid | ms/call mean (p50 / p95) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["classifier_in_scope_ci"]
        flo, fhi = r["with_fallback_ci"]
        oos = (f"{r['index_oos_recall']:.1%} → {r['with_fallback_oos_recall']:.1%} "
               f"({r['with_fallback_oos_ci'][0]:.1%}–{r['with_fallback_oos_ci'][1]:.1%}; "
               f"none on {r['none_share']:.0%} of {r['sample_oos']})"
               if "index_oos_recall" in r else "—")
        mean = r["latency_mean_ms"] or 0.0
        p50, p95 = r["latency_p50_ms"] or 0.0, r["latency_p95_ms"] or 0.0
        gain = 100 * (r["with_fallback_in_scope_acc"] - r["index_in_scope_acc"])
        floor = "—" if r["floor"] is None else f"{r['floor']:.3f}"
        n_oos = r.get("oos_examples", 0)
        rset = f"k={K}" + (f" + {n_oos} OOS examples (none shows {r.get('none_examples', 0)})"
                           if n_oos else "")
        lines.append(
            f"| {r['dataset']} | {rset} | {floor} | {r['sent_share']:.1%} "
            f"({r['valid_sent_share']:.1%})"
            f" | {r['sample']} ({r['sample_in_scope']}) | {r['classifier_in_scope_acc']:.0%} "
            f"({lo:.0%}–{hi:.0%}) | {r['index_in_scope_acc']:.1%} | "
            f"{r['with_fallback_in_scope_acc']:.1%} ({flo:.1%}–{fhi:.1%}) | {gain:+.1f} | "
            f"{oos} | {r['invalid']} | {mean:.0f} ({p50:.0f} / {p95:.0f}) |")
    return "\n".join(lines)


TOP1_NOTE = (
    "Index-side baseline, exact over every query sent to the classifier (no sampling, no "
    "LLM): + top-1 on sent = index-only in-scope accuracy with each sent query routed to the "
    "index's own best-scoring route instead (out-of-scope queries sent are then all "
    "misrouted, hence its OOS recall). This is itself an index-only rule: route the best "
    "route when it clears the thresholds, else when its score is at or above the floor, "
    "margin ignored, i.e. the index loosened to route the same share the classifier gets.")


def report(results: list[dict[str, Any]], args: argparse.Namespace, command: str,
           wall: float, done: bool) -> str:
    """The results file's markdown: machine, command, method, tables."""
    m = machine()
    floor = (f"classifier floor (`router.classifier_min_score`) chosen per set on the "
             f"validation split as the lowest sending at most {args.max_share:.0%} of its "
             f"queries (— = no floor needed)" if args.floor else "no classifier floor")
    partial = "" if done else "**Partial: the run was stopped before every set was done.**\n\n"
    setup = (f"k={K} utterances per route (seed {SEED}, accuracy.py's draw), default "
             f"thresholds (no fit); {floor}.")
    if not args.n:
        return (f"# Fallback baseline: index only vs the index's top-1 on the queries the "
                f"classifier would get ({args.split} split)\n\n{partial}"
                f"{datetime.now(UTC):%Y-%m-%d}, {m['cpu']}, {m['cores']} cores. Command: "
                f"`{command}` (wall {wall:.0f} s); no LLM (--n 0).\n\n{setup} "
                f"{TOP1_NOTE}"
                + (f" The last three columns: top-1 on the very queries the LLM run "
                   f"`{args.llm_results}` sampled, beside that run's figures."
                   if args.llm_results else "") + f"\n\n{index_table(results)}\n")
    lat = [o["latency_ms"] for r in results for o in r.get("outcomes", []) if not o["cached"]]
    toks = [o["input_tokens"] for r in results for o in r.get("outcomes", [])
            if not o["cached"]]
    return (
        f"# Fallback classifier: index only vs index + classifier ({args.split} split)\n\n"
        + partial
        + f"{datetime.now(UTC):%Y-%m-%d}, {m['cpu']}, {m['cores']} cores shared with other "
        f"jobs; llama-server: one slot (prompt cache on), prompts on {args.threads} threads, "
        f"generation on 1, no polling. Command: "
        f"`{command}` (wall {wall:.0f} s).\n\n"
        f"{setup} Of the queries sent to the classifier, N={args.n} per set are "
        f"drawn stratified (out-of-scope ones in proportion, at least N/4 when present) and "
        f"routed through `Router.route` with the classifier on (prompt `{args.prompt}`, "
        f"variant `{args.variant}`, {args.examples} examples per candidate, {args.candidates} "
        f"candidates, GBNF-constrained label; with out-of-scope examples in the route set, "
        f"the {args.none_examples} nearest the query are shown under `none`). Index + "
        f"classifier = index-only in-scope "
        f"accuracy + (in-scope queries sent / in-scope queries) × (classifier accuracy on the "
        f"sampled in-scope ones); OOS recall with it = index-only OOS recall − (OOS queries "
        f"sent / OOS queries) × (share of sampled OOS ones not answered `none`). Intervals: "
        f"Wilson 95% of the sampled proportion, carried through. Time per classifier call: "
        f"mean {statistics.fmean(lat) if lat else 0:.0f} ms over {len(lat)} calls, "
        f"{statistics.fmean(toks) if toks else 0:.0f} prompt tokens on average."
        f"\n\nModel: {MODELS[args.models.split(',')[0]]}.\n\n{table(results)}\n\n"
        f"{TOP1_NOTE} The last three columns compare top-1 and the LLM on the same sampled "
        f"in-scope queries.\n\n{index_table(results)}\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--split", choices=("test", "valid"), default="test")
    ap.add_argument("--n", type=int, default=40,
                    help="sent queries sampled per set (0: no LLM, the index-side baseline "
                    "only, written as fallback_top1[_<split>])")
    ap.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    ap.add_argument("--models", default="qwen", help="qwen or smollm2 (one per run)")
    ap.add_argument("--variant", choices=("nearest", "first"), default="nearest",
                    help="examples per candidate: nearest the query, or the file's first")
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--prompt", choices=sorted(PROMPTS), default="default")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="send every undecided query (no classifier floor)")
    ap.add_argument("--max-share", type=float, default=0.25,
                    help="share of validation queries the floor lets through")
    ap.add_argument("--oos-examples", type=int, default=0, metavar="N",
                    help="route sets with out-of-scope data get N train oos rows as their "
                    "out-of-scope example file (accuracy.py's --oos-examples)")
    ap.add_argument("--none-examples", type=int, default=0, metavar="N",
                    help="out-of-scope examples nearest the query shown under `none` (0: off)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="results file name (without .md/.json)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    ap.add_argument("--work", default=str(WORK), help="folder for route sets and indexes")
    ap.add_argument("--llm-results", default=None, metavar="JSON",
                    help="with --n 0: score top-1 on the queries this earlier LLM run's json "
                    "sampled, beside its LLM figures")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.datasets, args.n = "snips", 4
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    command = "python -m benchmarks.fallback " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    stem = "fallback" if args.n else "fallback_top1"
    name = args.name or (stem if args.split == "test" else f"{stem}_{args.split}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    key = args.models.split(",")[0]
    server = None
    if args.n:
        from tests.support.llm_server import ensure_local_llm, start_llm_server

        model = ensure_model() if key == "qwen" else ensure_local_llm()[1]
        # One slot (its prompt cache keeps the shared prefix); prompts are evaluated on
        # --threads threads, tokens generated on one (on shared cores, threads waiting for
        # each other at every step made generation ~10x slower), with no busy polling.
        server = start_llm_server(threads=1, model=model, ready_timeout=180, extra_args=[
            "-np", "1", "-tb", str(args.threads), "--poll", "0"])
        log(f"{MODELS[key]}: llama-server pid {server.process.pid}")
    base_url = server.base_url if server else "http://127.0.0.1:9"  # --n 0: never called
    results: list[dict[str, Any]] = []
    sets = args.datasets.split(",")
    try:
        for ds_name in sets:
            r = run_dataset(ds_name, args.split, args.n, base_url, args, log)
            results.append(dict(r, model=MODELS[key]) if args.n else r)
            md = report(results, args, command, time.perf_counter() - started,
                        len(results) == len(sets))  # saved after each set: a stopped run
            save_results({"machine": machine(), "command": command, "args": vars(args),
                          "results": results}, md, Path(args.out), name)  # keeps its figures
    finally:
        if server:
            server.stop()
    print((table(results) + "\n\n" if args.n else "") + index_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
