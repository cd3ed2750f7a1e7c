"""The fallback classifier measured end to end: index only against index + classifier, with a
real local LLM on the queries the index leaves undecided.

    python -m benchmarks.fallback                        # test split, N=40 per set
    python -m benchmarks.fallback --split valid --n 12 --datasets banking77_oos --prompt strict
    python -m benchmarks.fallback --quick                # snips only, N=4: a smoke run

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
accuracies are carried to all sent queries (Wilson 95% intervals). Results, saved after each set:
benchmarks/results/fallback[_<split>].{md,json}.
"""

from __future__ import annotations

import argparse
import math
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


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (0, 1 when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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
    """Index-only metrics on the whole split, the floor chosen on the validation split, and
    the classifier on a stratified sample of the queries it would be sent."""
    import semroute

    ds = load_dataset(name)
    rows = ds.test if split == "test" else ds.valid
    base = WORK / (args.name or split) / name  # one folder per run: runs may go in parallel
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
    sample = stratified(sent, rows, n, f"{name}|{split}")
    outcomes, latencies = [], []
    for i in sample:
        q = rows[i]
        d = router.route(q.text)
        call = d.classifier
        assert call is not None, d.reason  # sent queries are above the floor
        latencies.append(call.latency_ms)
        gold = None if q.label == OOS else q.label
        outcomes.append({"text": q.text, "gold": gold, "answer": call.answer,
                         "none_examples": list(call.none_examples),
                         "route": d.route, "correct": d.route == gold, "error": call.error,
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
    acc0 = scored["in_scope_accuracy"]
    share_in = s_in / t_in if t_in else 0.0
    lat = [o["latency_ms"] for o in calls]
    out: dict[str, Any] = {
        "dataset": name, "split": split, "queries": len(rows), "floor": floor,
        "oos_examples": len(router.routes.oos_examples), "none_examples": args.none_examples,
        "undecided": len(undecided), "undecided_share": len(undecided) / len(rows),
        "sent": len(sent), "sent_share": len(sent) / len(rows),
        "valid_sent_share": sum(d.route is None and (floor is None or d.score >= floor)
                                for d in valid) / len(valid),
        "sample": len(sample), "sample_in_scope": len(in_rows),
        "classifier_in_scope_acc": p, "classifier_in_scope_ci": [p_lo, p_hi],
        "index_in_scope_acc": acc0,
        "index_in_scope_ci": list(wilson(round(acc0 * t_in), t_in)),
        "with_fallback_in_scope_acc": acc0 + share_in * p,
        "with_fallback_ci": [acc0 + share_in * p_lo, acc0 + share_in * p_hi],
        "calls": len(calls), "latency_mean_ms": statistics.fmean(lat) if lat else None,
        "latency_p50_ms": pct(lat, 0.5), "latency_p95_ms": pct(lat, 0.95),
        "input_tokens_mean": statistics.fmean(o["input_tokens"] for o in calls)
        if calls else None,
        "invalid": sum(o["answer"] is None for o in outcomes), "outcomes": outcomes,
    }
    if t_oos:
        none_hits = sum(o["correct"] for o in oos_rows)
        q_none = none_hits / len(oos_rows) if oos_rows else 1.0
        q_lo, q_hi = wilson(none_hits, len(oos_rows))
        r0 = scored["oos_recall"]
        lost = s_oos / t_oos
        out.update(index_oos_recall=r0, sample_oos=len(oos_rows), none_share=q_none,
                   with_fallback_oos_recall=r0 - lost * (1 - q_none),
                   with_fallback_oos_ci=[r0 - lost * (1 - q_lo), r0 - lost * (1 - q_hi)])
    log(f"  {name} {split}: floor {floor}, sent {out['sent_share']:.1%} (valid "
        f"{out['valid_sent_share']:.1%}), in-scope {acc0:.1%} -> "
        f"{out['with_fallback_in_scope_acc']:.1%} (classifier {hits}/{len(in_rows)}"
        + (f", none {out['sample_oos'] and none_hits}/{len(oos_rows)}" if t_oos else "")
        + f"), mean {out['latency_mean_ms'] or 0:.0f} ms/call")
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


def report(results: list[dict[str, Any]], args: argparse.Namespace, command: str,
           wall: float, done: bool) -> str:
    """The results file's markdown: machine, command, method, table."""
    m = machine()
    lat = [o["latency_ms"] for r in results for o in r["outcomes"] if not o["cached"]]
    toks = [o["input_tokens"] for r in results for o in r["outcomes"] if not o["cached"]]
    floor = (f"classifier floor (`router.classifier_min_score`) chosen per set on the "
             f"validation split as the lowest sending at most {args.max_share:.0%} of its "
             f"queries (— = no floor needed)" if args.floor else "no classifier floor")
    return (
        f"# Fallback classifier: index only vs index + classifier ({args.split} split)\n\n"
        + ("" if done else "**Partial: the run was stopped before every set was done.**\n\n")
        + f"{datetime.now(UTC):%Y-%m-%d}, {m['cpu']}, {m['cores']} cores shared with other "
        f"jobs; llama-server: one slot (prompt cache on), prompts on {args.threads} threads, "
        f"generation on 1, no polling. Command: "
        f"`{command}` (wall {wall:.0f} s).\n\n"
        f"k={K} utterances per route (seed {SEED}, accuracy.py's draw), default thresholds "
        f"(no fit); {floor}. Of the queries sent to the classifier, N={args.n} per set are "
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
        f"\n\nModel: {MODELS[args.models.split(',')[0]]}.\n\n{table(results)}\n")


def main(argv: list[str] | None = None) -> int:
    from tests.support.llm_server import ensure_local_llm, start_llm_server

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("test", "valid"), default="test")
    ap.add_argument("--n", type=int, default=40, help="sent queries sampled per set")
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
    ap.add_argument("--name", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.datasets, args.n = "snips", 4
    started = time.perf_counter()
    command = "python -m benchmarks.fallback " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    name = args.name or ("fallback" if args.split == "test" else f"fallback_{args.split}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    key = args.models.split(",")[0]
    model = ensure_model() if key == "qwen" else ensure_local_llm()[1]
    # One slot (its prompt cache keeps the shared prefix); prompts are evaluated on
    # --threads threads, tokens generated on one (on shared cores, threads waiting for each
    # other at every step made generation ~10x slower), with no busy polling.
    server = start_llm_server(threads=1, model=model, ready_timeout=180, extra_args=[
        "-np", "1", "-tb", str(args.threads), "--poll", "0"])
    log(f"{MODELS[key]}: llama-server pid {server.process.pid}")
    results: list[dict[str, Any]] = []
    sets = args.datasets.split(",")
    try:
        for ds_name in sets:
            results.append(dict(run_dataset(ds_name, args.split, args.n, server.base_url,
                                            args, log), model=MODELS[key]))
            md = report(results, args, command, time.perf_counter() - started,
                        len(results) == len(sets))  # saved after each set: a stopped run
            save_results({"machine": machine(), "command": command, "args": vars(args),
                          "results": results}, md, RESULTS, name)  # keeps what it measured
    finally:
        server.stop()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
