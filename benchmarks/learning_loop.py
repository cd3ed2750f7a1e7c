"""The learning loop, simulated: replay a labelled stream through a route set that starts with
5 utterances per route, and every N queries let `semroute suggest` add utterances from what
was logged, apply its patch with the real writer, rebuild the index and carry on.

    python -m benchmarks.learning_loop                      # banking77 test split, N=500
    python -m benchmarks.learning_loop --data hwu64 --every 250
    python -m benchmarks.learning_loop --noise 0.1          # the classifier errs 10% of the time
    python -m benchmarks.learning_loop --data PATH          # any folder/CSV of text,label rows

The stream is the dataset's test split in a fixed shuffled order (seed 0; the files are sorted
by label, and there is no time order to replay). The index decides what it can; every query it
leaves undecided stands for a classifier call whose answer is the query's label (with
`--noise E`, a uniformly chosen wrong route with probability E). Each request is journalled in
a real outcomes store with its text kept (`router.outcomes.keep_text`), so `suggest` reads
exactly what a live deployment would. Thresholds are semroute's defaults (`score_threshold:
auto`, the label-free default recomputed from each build's index, margin 0.05); nothing is
fitted. A static route set (no suggestions) is replayed over the same stream as the baseline.
Results: a table on stdout, `benchmarks/results/<name>.md`, `.json` and `.png`.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/learning_loop.py` as well as `-m`
    sys.path.insert(0, str(REPO))

from benchmarks.datasets import Dataset, load_dataset  # noqa: E402
from benchmarks.machine import machine, save_results, versions  # noqa: E402
from semroute.index import build_index  # noqa: E402
from semroute.outcomes import (  # noqa: E402
    FeedbackEntry,
    LoggedRequest,
    OutcomeStore,
    text_hash,
)
from semroute.quality import apply_patch, suggest  # noqa: E402
from semroute.quality.evaluation import OOS, LabelledQuery  # noqa: E402
from semroute.routing import Router  # noqa: E402

WORK = REPO / "benchmarks" / ".work" / "learning_loop"
RESULTS = REPO / "benchmarks" / "results"
ENCODER = "all-MiniLM-L6-v2"


def write_route_set(folder: Path, ds: Dataset, utterances: dict[str, list[str]],
                    backend: str) -> None:
    """One route file per intent (as a person would write it) and a catalogue."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for route, utts in utterances.items():
        spec = {"name": route, "description": f"intent {ds.label_of.get(route, route)}",
                "model": "fast", "utterances": utts}
        (folder / f"{route}.yaml").write_text(
            f"# {route}: started with {len(utts)} utterances from the train split\n"
            + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=1000),
            encoding="utf-8")
    catalogue = {"profile": "sim", "profiles": {"sim": {"fast": {
        "provider": "openai", "model": "unused", "base_url": "http://127.0.0.1:9/v1"}}},
        "router": {"encoder": ENCODER, "backend": backend, "default_route": None,
                   "outcomes": {"path": "outcomes.db"}}}
    (folder / "models.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False),
                                        encoding="utf-8")


def classifier_answer(label: str, routes: list[str], noise: float, rng: random.Random) -> str:
    """The stand-in classifier: the label, or with probability `noise` another route."""
    if noise and rng.random() < noise:
        return rng.choice([r for r in routes if r != label])
    return label


def window_stats(decisions: list[Any], rows: list[LabelledQuery]) -> dict[str, Any]:
    decided = [(d, q) for d, q in zip(decisions, rows, strict=True) if d.method == "index"]
    wrong = sum(d.route != q.label for d, q in decided)
    return {"queries": len(rows), "decided": len(decided), "wrong": wrong,
            "coverage": len(decided) / len(rows) if rows else None,
            "misroute": wrong / len(decided) if decided else None}


def utterance_counts(router: Router) -> dict[str, float]:
    counts = [len(r.utterances) for r in router.routes.routes]
    return {"mean": statistics.mean(counts), "min": min(counts), "max": max(counts),
            "total": sum(counts)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset(args.data)
    work = Path(args.work) / ds.name
    routes_dir, index_dir = work / "routes", work / "index"
    write_route_set(routes_dir, ds, ds.utterances(args.start, args.seed), args.backend)
    if index_dir.exists():
        shutil.rmtree(index_dir)
    stream = [q for q in ds.test if q.label != OOS and q.label in ds.routes]
    random.Random(args.seed).shuffle(stream)
    if args.limit:
        stream = stream[:args.limit]
    rng = random.Random(f"noise|{args.seed}")
    fb_rng = random.Random(f"feedback|{args.seed}")
    t0 = time.perf_counter()
    build_index(routes_dir, index_dir)
    router = Router.load(routes_dir, index_dir, classifier=False)
    static = router
    store = OutcomeStore(routes_dir / "outcomes.db")
    windows = [stream[i:i + args.every] for i in range(0, len(stream), args.every)]
    if len(windows) > 1 and len(windows[-1]) < args.every / 2:  # no tiny last window
        windows[-2:] = [windows[-2] + windows[-1]]
    rounds: list[dict[str, Any]] = []
    clock = 1_000_000.0
    probe_static: dict[str, Any] | None = None
    for w, rows in enumerate(windows):
        texts = [q.text for q in rows]
        decisions = router.route_batch(texts, use_classifier=False)
        base = static.route_batch(texts, use_classifier=False) if w else decisions
        logged: list[LoggedRequest] = []
        corrections: list[FeedbackEntry] = []
        for i, (d, q) in enumerate(zip(decisions, rows, strict=True)):
            route, method = (d.route, "index") if d.method == "index" else (
                classifier_answer(q.label, ds.routes, args.noise, rng), "classifier")
            clock += 1.0
            logged.append(LoggedRequest(request_id=f"w{w}-{i}", ts=clock, route=route,
                                        method=method, text_hash=text_hash(d.query),
                                        model="fast", score=d.score, margin=d.margin))
            if method == "index" and route != q.label and fb_rng.random() < args.feedback:
                corrections.append(FeedbackEntry(request_id=f"w{w}-{i}", label=q.label,
                                                 score=0.0, ts=clock))
        with store.transaction() as tx:
            tx.log_requests(logged, texts={text_hash(d.query): d.query for d in decisions})
            for entry in corrections:
                tx.add_feedback(entry)
        probe = [q for q in ds.valid if q.label != OOS and q.label in ds.routes]
        probe_static = probe_static or window_stats(
            static.route_batch([q.text for q in probe], use_classifier=False), probe)
        row: dict[str, Any] = {"round": w, "window": f"{w * args.every + 1}-"
                               f"{w * args.every + len(rows)}", "end": w * args.every + len(rows),
                               "utterances": utterance_counts(router),
                               "threshold": router.matcher.thresholds.score,
                               "loop": window_stats(decisions, rows),
                               "static": window_stats(base, rows),
                               "probe": window_stats(router.route_batch(
                                   [q.text for q in probe], use_classifier=False), probe),
                               "probe_static": probe_static,
                               "corrections": len(corrections)}
        if w + 1 < len(windows):
            t = time.perf_counter()
            found = suggest(router, store=store, per_route=args.per_route, tiers=False)
            apply_patch(found.patch)
            build_index(routes_dir, index_dir)
            router = Router.load(routes_dir, index_dir, classifier=False)
            u = found.to_dict()["utterances"]
            row["suggest"] = {"candidates": u["candidates"], "added": u["added"],
                              "dropped": u["dropped"], "conflicts": len(u["conflicts"]),
                              "personal_data_kinds": u["personal_data_kinds"],
                              "seconds": round(time.perf_counter() - t, 2)}
        rounds.append(row)
        print(f"round {w}: {row['window']} utts/route {row['utterances']['mean']:.1f} "
              f"coverage {row['loop']['coverage']:.3f} (static {row['static']['coverage']:.3f})"
              f" misroute {row['loop']['misroute'] or 0:.3f} (static "
              f"{row['static']['misroute'] or 0:.3f})"
              + (f" +{row['suggest']['added']} utts" if "suggest" in row else ""), flush=True)
    store.close()
    return {"machine": machine(), "versions": versions(["faiss-cpu", "onnxruntime", "numpy"]),
            "command": args.command, "data": ds.name, "source": ds.source,
            "stream": len(stream), "every": args.every, "per_route": args.per_route,
            "start": args.start, "noise": args.noise, "feedback": args.feedback,
            "seed": args.seed,
            "backend": args.backend, "routes": len(ds.routes), "rounds": rounds,
            "valid_source": ds.valid_source,
            "seconds": round(time.perf_counter() - t0, 1), "load": os.getloadavg()}


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["end"] for r in res["rounds"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "coverage", "index coverage (share decided by the index)"),
                           (axes[1], "misroute", "misroute rate (wrong among index-decided)")):
        for kind, style, label in (
                ("loop", "o-", f"stream window, suggest every {res['every']}"),
                ("static", "s--", "stream window, static route set"),
                ("probe", "^-", "held-out split, with suggest"),
                ("probe_static", "v:", "held-out split, static")):
            ax.plot(xs, [r[kind][key] or 0 for r in res["rounds"]], style, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("queries replayed (end of window)")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"learning loop on {res['data']} (test split, {res['stream']} queries, "
                 f"{res['routes']} routes, start {res['start']} utterances/route, classifier "
                 f"noise {res['noise']:.0%})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res: dict[str, Any], png: str) -> str:
    m = res["machine"]
    first, last = res["rounds"][0], res["rounds"][-1]
    lines = [
        f"# The learning loop, simulated: {res['data']}", "",
        f"`{res['command'].strip()}`", "",
        f"The {res['data']} test split ({res['stream']} queries, {res['routes']} routes) replayed "
        f"in a fixed shuffled order (seed {res['seed']}) through a route set that starts with "
        f"{res['start']} utterances per route from the train split, routed by the real index "
        f"({res['backend']} encoder). A query the index leaves undecided stands for a "
        f"classifier call whose answer is its label"
        + (f" (wrong with probability {res['noise']:.0%})" if res["noise"] else "")
        + (f"; {res['feedback']:.0%} of the index's misroutes get a feedback correction (the "
           f"right route as `label`)" if res["feedback"] else "; no feedback corrections")
        + f". Every {res['every']} queries, `semroute.quality.suggest` (the code path of "
        f"`semroute suggest`) reads the journal, at most {res['per_route']} utterances per "
        f"route are added with `apply_patch`, the index is rebuilt and routing continues. "
        f"Thresholds: semroute's defaults (`score_threshold: auto` recomputed per build, "
        f"margin 0.05), nothing fitted. The static route set replays the same windows.", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; {res['seconds']} s "
        f"for the whole run (load average after: "
        f"{', '.join(f'{x:.1f}' for x in res['load'])}; shared with other jobs).", "",
        f"![coverage and misroute per window]({png})", "",
        "Per window of the stream (the router of that round, before its suggestions), and on "
        f"the held-out validation split ({first['probe']['queries']} queries from "
        f"{res['valid_source'] or 'the valid split'}; never in the stream, never "
        "utterances):", "",
        "| round | queries | utts/route (min-max) | score threshold | coverage | static "
        "coverage | misroute | static misroute | held-out coverage | held-out misroute | "
        "candidates | added | dupes | near dupes | routed right | personal data | conflicts "
        "| over limit |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["rounds"]:
        s = r.get("suggest")
        d = s["dropped"] if s else {}
        u = r["utterances"]
        lines.append(
            f"| {r['round']} | {r['window']} | {u['mean']:.1f} ({u['min']}-{u['max']}) | "
            f"{r['threshold']:.3f} | {pct(r['loop']['coverage'])} | "
            f"{pct(r['static']['coverage'])} | {pct(r['loop']['misroute'])} | "
            f"{pct(r['static']['misroute'])} | {pct(r['probe']['coverage'])} | "
            f"{pct(r['probe']['misroute'])} | "
            + (" | ".join(str(x) for x in (s["candidates"], s["added"], d["duplicate"],
                                            d["near_duplicate"], d["routed_right"],
                                            d["personal_data"], s["conflicts"], d["limit"]))
               if s else "– | – | – | – | – | – | – | –") + " |")
    lc, sc = last["loop"], last["static"]
    lines += [
        "", "Suggestion counts are cumulative candidates (every classifier-labelled query so "
        "far with its text) and what one `suggest` round did with them after that window.", "",
        f"Reading: index coverage went from {pct(first['loop']['coverage'])} in the first "
        f"window to {pct(lc['coverage'])} in the last (static route set: "
        f"{pct(sc['coverage'])}), so the classifier calls fell from "
        f"{pct(1 - first['loop']['coverage'])} to {pct(1 - lc['coverage'])} of queries; the "
        f"misroute rate among index decisions went from {pct(first['loop']['misroute'])} to "
        f"{pct(lc['misroute'])} (static: {pct(sc['misroute'])}). On the held-out split, "
        f"coverage {pct(first['probe']['coverage'])} -> {pct(last['probe']['coverage'])} and "
        f"misroute {pct(first['probe']['misroute'])} -> {pct(last['probe']['misroute'])}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="banking77", help="dataset folder name or path")
    p.add_argument("--every", type=int, default=500, help="queries between suggest rounds")
    p.add_argument("--per-route", type=int, default=10, help="new utterances per route a round")
    p.add_argument("--start", type=int, default=5, help="utterances per route at the start")
    p.add_argument("--noise", type=float, default=0.0, help="classifier error rate")
    p.add_argument("--feedback", type=float, default=0.0,
                   help="share of the index's misroutes a user corrects (feedback label)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="replay only the first N queries")
    p.add_argument("--backend", default="onnx-int8", choices=["onnx-int8", "onnx", "torch"])
    p.add_argument("--work", default=str(WORK))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default=None, help="results file name (default learning_loop, "
                   "or learning_loop_<data> for another dataset)")
    args = p.parse_args(argv)
    args.command = "python -m benchmarks.learning_loop " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    res = run(args)
    name = args.name or ("learning_loop" + ("" if args.data == "banking77" else
                                             f"_{Path(res['data']).name}")
                         + (f"_noise{args.noise:g}" if args.noise else "")
                         + (f"_feedback{args.feedback:g}" if args.feedback else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(res, out / f"{name}.png")
    md = markdown(res, f"{name}.png")
    save_results(res, md, out, name)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
