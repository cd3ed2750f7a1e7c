"""`semroute fit --outcomes` against the alternatives: thresholds fitted on what a live
deployment's journal holds (classifier-decided and feedback-corrected requests), with and
without the prior-shift reweighting, against the defaults and a fit on a fully labelled
validation file, all checked on the held-out test split.

    python -m benchmarks.fit_outcomes                       # banking77, 5 utterances per route
    python -m benchmarks.fit_outcomes --data hwu64 --rated 0.2

The "live traffic" is the validation split routed by the index (5 utterances per route from
train); the index's undecided queries stand for classifier calls answered with their label,
and with `--rated F` a random share F of the index's decisions get feedback: a score of 1 when
right (a confirmation), the right route as `label` when wrong (a correction). Every
request is journalled in a real outcomes store with its text. Results: a table on stdout and
`benchmarks/results/fit_outcomes.md` / `.json`.
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.datasets import load_dataset  # noqa: E402
from benchmarks.learning_loop import WORK, write_route_set  # noqa: E402
from benchmarks.machine import machine, save_results  # noqa: E402
from semroute.index import build_index  # noqa: E402
from semroute.outcomes import FeedbackEntry, LoggedRequest, OutcomeStore, text_hash  # noqa: E402
from semroute.quality import fit_thresholds, route_all  # noqa: E402
from semroute.quality.adaptive import fit_weighted, outcome_validation  # noqa: E402
from semroute.quality.evaluation import OOS, LabelledQuery, index_route  # noqa: E402
from semroute.routing import Router, Thresholds  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def held_out(decisions: list[Any], rows: list[LabelledQuery], th: Thresholds) -> dict[str, Any]:
    routes = [index_route(d, th) for d in decisions]
    decided = [(r, q) for r, q in zip(routes, rows, strict=True) if r is not None]
    wrong = sum(r != q.label for r, q in decided)
    return {"score": th.score, "margin": th.margin, "coverage": len(decided) / len(rows),
            "misroute": wrong / len(decided) if decided else None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset(args.data)
    work = Path(WORK) / f"fit-{ds.name}"
    write_route_set(work / "routes", ds, ds.utterances(5, 0), "onnx-int8")
    if (work / "index").exists():
        shutil.rmtree(work / "index")
    build_index(work / "routes", work / "index")
    router = Router.load(work / "routes", work / "index", classifier=False)
    live = [q for q in ds.valid if q.label != OOS and q.label in ds.routes]
    test = [q for q in ds.test if q.label != OOS and q.label in ds.routes]
    rng = random.Random(0)
    decisions, _ = route_all(router, [q.text for q in live])
    logged, fb = [], []
    for i, (d, q) in enumerate(zip(decisions, live, strict=True)):
        route, method = (d.route, "index") if d.method == "index" else (q.label, "classifier")
        logged.append(LoggedRequest(request_id=f"v{i}", ts=float(i), route=route,
                                    method=method, text_hash=text_hash(d.query)))
        if method == "index" and rng.random() < args.rated:
            fb.append(FeedbackEntry(request_id=f"v{i}", ts=float(i), score=1.0)
                      if route == q.label else
                      FeedbackEntry(request_id=f"v{i}", label=q.label, score=0.0, ts=float(i)))
    with OutcomeStore(work / "routes" / "outcomes.db") as store:
        with store.transaction() as tx:
            tx.log_requests(logged, texts={text_hash(d.query): d.query for d in decisions})
            for f in fb:
                tx.add_feedback(f)
        v = outcome_validation(store, router.routes.names)
    test_dec, _ = route_all(router, [q.text for q in test])
    vd, _ = route_all(router, [q.text for q in v.rows])
    t = args.target
    fits = {
        "defaults (score_threshold auto)": router.matcher.thresholds,
        "fit --data (the whole labelled validation split)":
            fit_thresholds(decisions, live, target_misroute=t, min_route_rows=0).thresholds(),
        "journal rows, unweighted": fit_weighted(vd, v.rows, [1.0] * len(v.rows),
                                                 target_misroute=t).thresholds(),
        "fit --outcomes (journal rows, weighted by cell)":
            fit_weighted(vd, v.rows, v.weights, target_misroute=t).thresholds(),
    }
    return {"machine": machine(), "command": args.command, "data": ds.name,
            "live": len(live), "test": len(test), "rows": len(v.rows),
            "sources": dict(v.sources), "ess": round(v.ess, 1), "target": t,
            "rated": args.rated,
            "fits": {k: held_out(test_dec, test, th) for k, th in fits.items()}}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"# Thresholds from the journal: `fit --outcomes` on {res['data']}", "",
             f"`{res['command'].strip()}`", "",
             f"Live traffic: the validation split ({res['live']} queries) routed by an index of "
             f"5 utterances per route; undecided queries answered by a stand-in classifier "
             f"(their label)" + (f", a random {res['rated']:.0%} of the index's decisions rated "
                                 f"by feedback (confirmed when right, corrected when wrong)"
                                 if res["rated"] else ", no feedback")
             + f". The journal's labelled rows: {res['rows']} "
             f"({', '.join(f'{k} {n}' for k, n in res['sources'].items())}), effective sample "
             f"size {res['ess']} after reweighting. Target misroute {res['target']:.0%}; "
             f"router-wide thresholds only. Scored on the test split ({res['test']} queries).",
             "", f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}.", "",
             "| thresholds from | score | margin | test coverage | test misroute |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in res["fits"].items():
        mis = "–" if r["misroute"] is None else f"{100 * r['misroute']:.1f}%"
        lines.append(f"| {name} | {r['score']:.3f} | {r['margin']:.3f} | "
                     f"{100 * r['coverage']:.1f}% | {mis} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="banking77")
    p.add_argument("--target", type=float, default=0.05)
    p.add_argument("--rated", type=float, default=0.0,
                   help="share of index decisions that get feedback")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    args.command = "python -m benchmarks.fit_outcomes " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    res = run(args)
    md = markdown(res)
    name = "fit_outcomes" + ("" if res["data"] == "banking77" else f"_{res['data']}") + (
        f"_rated{args.rated:g}" if args.rated else "")
    save_results(res, md, Path(args.out), name)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
