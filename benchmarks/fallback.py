"""The fallback classifier measured end to end: index only against index + classifier, with a
real local LLM on the queries the index leaves undecided.

    python -m benchmarks.fallback                        # test split, both models, N=24
    python -m benchmarks.fallback --split valid --n 16 --models qwen --variant first
    python -m benchmarks.fallback --quick                # snips only, N=4: a smoke run

Per dataset (banking77, hwu64, snips, banking77_oos), the k=10 seed-0 route set of
benchmarks/accuracy.py (same train draw, same route files) is built with the default
thresholds (no fit) and the whole split is routed index only. Of the queries left undecided,
N are drawn (fixed seed) and routed again through `Router.route` with the classifier on: the
real semroute code path (prompt, candidates, GBNF-constrained label, fallback to no route)
against llama-server (2 threads) serving Qwen2.5-Coder-0.5B-Instruct (PyPI chunks, see
benchmarks/fallback_model.py) or the tests' SmolLM2-135M. The classifier's accuracy on the
sample is extrapolated to all undecided queries (Wilson 95% interval). Results:
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

from benchmarks.accuracy import ENCODER, route_all, write_route_set  # noqa: E402
from benchmarks.datasets import DEFAULT_DATASETS, load_dataset  # noqa: E402
from benchmarks.fallback_model import NAME as QWEN_NAME  # noqa: E402
from benchmarks.fallback_model import ensure_model  # noqa: E402
from benchmarks.machine import machine, save_results  # noqa: E402
from semroute.quality.evaluation import OOS, score_decisions  # noqa: E402

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


def write_routes(folder: Path, ds: Any, base_url: str, candidates: int) -> None:
    """accuracy.py's route files, plus a catalogue whose classifier is the local server."""
    write_route_set(folder, ds, ds.utterances(K, SEED), "torch")
    catalogue = {
        "profile": "bench",
        "profiles": {"bench": {"fast": {"provider": "openai", "model": "local",
                                        "base_url": f"{base_url}/v1", "timeout": 120,
                                        "structured": "grammar"}}},
        "router": {"encoder": ENCODER, "backend": "torch", "default_route": None,
                   "classifier_model": "fast", "classifier_timeout": 120,
                   "classifier_candidates": candidates},
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))


def pct(xs: list[float], q: float) -> float | None:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def run_dataset(name: str, split: str, n: int, base_url: str, args: argparse.Namespace,
                log: Any) -> dict[str, Any]:
    """Index-only metrics on the whole split and the classifier on a sample of undecided."""
    import semroute

    ds = load_dataset(name)
    rows = ds.test if split == "test" else ds.valid
    base = WORK / (args.name or split) / name  # one folder per run: runs may go in parallel
    routes, index = base / "routes", base / "index"
    write_routes(routes, ds, base_url, args.candidates)
    semroute.build_index(routes, index, show_progress=False)
    router = semroute.load_router(routes, index)
    assert router.classifier is not None
    router.classifier.nearest = args.variant == "nearest"
    router.classifier.examples = args.examples
    decisions = route_all(router, [q.text for q in rows], 512)
    scored = score_decisions(decisions, rows, ds.routes).metrics
    undecided = [i for i, d in enumerate(decisions) if d.route is None]
    sample = sorted(random.Random(f"{name}|{split}").sample(undecided, min(n, len(undecided))))
    outcomes, latencies = [], []
    for i in sample:
        q = rows[i]
        d = router.route(q.text)
        call = d.classifier
        latencies.append(call.latency_ms if call else 0.0)
        gold = None if q.label == OOS else q.label
        outcomes.append({"text": q.text, "gold": gold, "answer": call.answer if call else None,
                         "route": d.route, "correct": d.route == gold,
                         "error": call.error if call else "no call",
                         "latency_ms": round(latencies[-1], 1)})
    in_rows = [o for o in outcomes if o["gold"] is not None]
    oos_rows = [o for o in outcomes if o["gold"] is None]
    t_in = sum(q.label != OOS for q in rows)
    t_oos = len(rows) - t_in
    u_in = sum(rows[i].label != OOS for i in undecided)
    u_oos = len(undecided) - u_in
    hits = sum(o["correct"] for o in in_rows)
    p_lo, p_hi = wilson(hits, len(in_rows))
    p = hits / len(in_rows) if in_rows else 0.0
    acc0 = scored["in_scope_accuracy"]
    share_in = u_in / t_in if t_in else 0.0
    out: dict[str, Any] = {
        "dataset": name, "split": split, "queries": len(rows), "undecided": len(undecided),
        "sent_share": len(undecided) / len(rows), "sample": len(sample),
        "sample_in_scope": len(in_rows), "classifier_in_scope_acc": p,
        "classifier_in_scope_ci": [p_lo, p_hi],
        "index_in_scope_acc": acc0, "with_fallback_in_scope_acc": acc0 + share_in * p,
        "with_fallback_ci": [acc0 + share_in * p_lo, acc0 + share_in * p_hi],
        "latency_p50_ms": pct(latencies, 0.5), "latency_p95_ms": pct(latencies, 0.95),
        "invalid": sum(o["answer"] is None for o in outcomes), "outcomes": outcomes,
    }
    if t_oos:
        none_hits = sum(o["correct"] for o in oos_rows)
        q_none = none_hits / len(oos_rows) if oos_rows else 1.0
        r0 = scored["oos_recall"]
        out.update(index_oos_recall=r0, sample_oos=len(oos_rows),
                   with_fallback_oos_recall=r0 - (u_oos / t_oos) * (1 - q_none))
    log(f"  {name} {split}: sent {out['sent_share']:.1%}, in-scope {acc0:.1%} -> "
        f"{out['with_fallback_in_scope_acc']:.1%} (classifier {hits}/{len(in_rows)}), "
        f"p50 {out['latency_p50_ms']} ms")
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | dataset | sent to classifier | sample (in-scope) | classifier acc "
             "(95% CI) | in-scope acc index only | index + classifier (95% CI) | gain | "
             "OOS recall index → +clf | invalid | p50 / p95 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["classifier_in_scope_ci"]
        flo, fhi = r["with_fallback_ci"]
        oos = (f"{r['index_oos_recall']:.1%} → {r['with_fallback_oos_recall']:.1%}"
               if "index_oos_recall" in r else "—")
        p50, p95 = r["latency_p50_ms"] or 0.0, r["latency_p95_ms"] or 0.0
        gain = 100 * (r["with_fallback_in_scope_acc"] - r["index_in_scope_acc"])
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['sent_share']:.1%} | {r['sample']} "
            f"({r['sample_in_scope']}) | {r['classifier_in_scope_acc']:.0%} ({lo:.0%}–{hi:.0%})"
            f" | {r['index_in_scope_acc']:.1%} | {r['with_fallback_in_scope_acc']:.1%} "
            f"({flo:.1%}–{fhi:.1%}) | {gain:+.1f} | {oos} | {r['invalid']} | "
            f"{p50:.0f} / {p95:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tests.support.llm_server import ensure_local_llm, start_llm_server

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("test", "valid"), default="test")
    ap.add_argument("--n", type=int, default=24, help="undecided queries sampled per set")
    ap.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    ap.add_argument("--models", default="qwen,smollm2")
    ap.add_argument("--variant", choices=("nearest", "first"), default="nearest",
                    help="examples per candidate: nearest the query, or the file's first")
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.datasets, args.n, args.models = "snips", 4, "qwen"
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results: list[dict[str, Any]] = []
    for key in args.models.split(","):
        model = ensure_model() if key == "qwen" else ensure_local_llm()[1]
        server = start_llm_server(threads=args.threads, model=model, ready_timeout=180)
        log(f"{MODELS[key]}: llama-server pid {server.process.pid}")
        try:
            for name in args.datasets.split(","):
                results.append(dict(run_dataset(name, args.split, args.n, server.base_url,
                                                args, log), model=MODELS[key]))
        finally:
            server.stop()
    md_table = table(results)
    print(md_table)
    m = machine()
    command = "python -m benchmarks.fallback " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    wall = time.perf_counter() - started
    lat = [o["latency_ms"] for r in results for o in r["outcomes"]]
    md = (f"# Fallback classifier: index only vs index + classifier ({args.split} split)\n\n"
          f"{datetime.now(UTC):%Y-%m-%d}, {m['cpu']}, {m['cores']} cores shared with other "
          f"jobs; llama-server {args.threads} threads. Command: `{command}` (wall {wall:.0f} s)."
          f"\n\nk={K} utterances per route (seed {SEED}, accuracy.py's draw), default "
          f"thresholds (no fit); undecided queries sampled N={args.n} per set; prompt variant "
          f"`{args.variant}` ({args.examples} examples per candidate), {args.candidates} "
          f"candidates, GBNF-constrained label. Index + classifier = index-only in-scope "
          f"accuracy + (undecided in-scope share) × (classifier accuracy on the sampled "
          f"in-scope undecided queries); the interval is the Wilson 95% interval of that "
          f"accuracy carried through. OOS recall with the classifier counts an undecided OOS "
          f"query as rejected only when the model answers `none`. Mean classifier time "
          f"{statistics.fmean(lat) if lat else 0:.0f} ms.\n\n{md_table}\n")
    name = args.name or ("fallback" if args.split == "test" else f"fallback_{args.split}")
    save_results({"machine": m, "command": command, "args": vars(args), "results": results},
                 md, RESULTS, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
