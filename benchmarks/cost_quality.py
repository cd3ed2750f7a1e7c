"""Cost against quality of the outcome-learned router, against RouteLLM's published routers.

    python -m benchmarks.cost_quality            # the full run (MMLU, GSM8K, MT-Bench,
                                                 # routerarena, the GSM8K cascade, 100k timing)
    python -m benchmarks.cost_quality --quick    # GSM8K + routerarena, 1 seed, no timing

Every figure is 5-fold cross-validated (`semroute.quality.cost_quality.evaluate_outcomes`,
the code behind `semroute outcomes eval`) over several fold seeds; contaminated routellm rows
are left out by `read_outcome_file`. Rows: the default `KnnSettings` (k=50, text-feature line),
a plain kNN, and the predictor with settings picked by nested CV (inner 4-fold CV on each outer
training set over a small grid, so no test fold picks them; one fold seed on sets over 5,000
rows).
Embeddings are cached in benchmarks/.cache (not committed). Results:
benchmarks/results/cost_quality.md, .json and cost_quality_<set>.png.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.cost_quality_gates import cascade  # noqa: E402
from benchmarks.cost_quality_plots import plot_arena, plot_two_model  # noqa: E402
from benchmarks.cost_quality_report import render_markdown  # noqa: E402
from benchmarks.machine import machine, save_results, versions  # noqa: E402
from semroute.outcomes import KnnSettings, QualityPredictor, read_outcome_file  # noqa: E402
from semroute.outcomes.metrics import apgr, threshold_curve  # noqa: E402
from semroute.quality.cost_quality import (  # noqa: E402
    evaluate_outcomes,
    fold_ids,
    out_of_fold,
)

DATA = Path("/work/shared/data")
SETS = {"mmlu": DATA / "routellm_evals/mmlu_mixtral_vs_gpt4.csv",
        "gsm8k": DATA / "routellm_evals/gsm8k_mixtral_vs_gpt4.csv",
        "mt_bench": DATA / "routellm_evals/mt_bench_judgements.csv",
        "routerarena": DATA / "routerarena/routerarena_sub10_2models.csv"}
CACHE = REPO / "benchmarks/.cache"
OUT = REPO / "benchmarks/results"
GRID = [KnnSettings(k=k, features=f) for f in (True, False) for k in (25, 50, 100)]
# arXiv 2406.18665 (RouteLLM): the best router per benchmark, trained on Arena preference data
# augmented with in-domain data (golden labels; for MT-Bench the GPT-4-judge set), as quoted in
# issue 10: (router, APGR, CPT(50%)). Not reproduced here.
PUBLISHED = {
    "mmlu": ("RouteLLM sw_ranking / mf (augmented)", 0.603, 0.354),
    "gsm8k": ("RouteLLM causal_llm (augmented)", 0.622, 0.336),
    "mt_bench": ("RouteLLM mf (augmented)", 0.802, 0.134),
}
# GSM8K cascade cost model: a Mixtral-8x7B call costs ~1/20 of a GPT-4-1106 call
# (per-token list prices ~$0.6/M vs $10-30/M).
WEAK_COST = 0.05


def embed(texts: Sequence[str], encoder: Any) -> np.ndarray:
    """The texts' vectors, cached per encoder fingerprint and text list."""
    h = hashlib.sha256(encoder.weights_hash.encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    path = CACHE / f"{h.hexdigest()[:20]}.npy"
    if path.exists():
        return np.load(path)
    vecs = encoder.encode(list(texts), batch_size=32)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, vecs)
    os.replace(tmp, path)
    return vecs


def question_groups(table: Any) -> list[str] | None:
    return [t.split("\n\n", 1)[0] for t in table.texts] if table.form == "mt_bench" else None


def two_model_apgr(pred: np.ndarray, scores: np.ndarray) -> float:
    means = scores.mean(axis=0)
    w, s = (0, 1) if means[1] >= means[0] else (1, 0)
    curve = threshold_curve(pred[:, s] - pred[:, w], scores[:, w], scores[:, s])
    return apgr(curve, float(means[w]), float(means[s])) or 0.0


def nested_pick(vecs: np.ndarray, scores: np.ndarray, texts: list[str],
                train: np.ndarray, seed: int) -> KnnSettings:
    """The grid setting with the best inner 4-fold CV APGR on the outer training rows."""
    tv, ts, tt = vecs[train], scores[train], [texts[i] for i in train]
    inner = fold_ids(len(train), 4, seed + 1000)
    best = max(GRID, key=lambda st: two_model_apgr(out_of_fold(tv, ts, tt, inner, st), ts))
    return best


def nested_cv(table: Any, vecs: np.ndarray, seed: int, groups: list[str] | None) -> dict[str, Any]:
    """Outer 5-fold CV whose every fold's settings come from inner CV on its training rows."""
    scores = np.asarray(table.scores)
    fid = fold_ids(len(scores), 5, seed, groups)
    pred = np.zeros_like(scores)
    picks = []
    for f in range(5):
        test, train = np.flatnonzero(fid == f), np.flatnonzero(fid != f)
        st = nested_pick(vecs, scores, table.texts, train, seed)
        picks.append(f"k={st.k}{'+features' if st.features else ''}")
        model = QualityPredictor(vecs[train], scores[train],
                                 texts=[table.texts[i] for i in train], settings=st)
        pred[test] = model.predict(vecs[test], [table.texts[i] for i in test]).quality
    return {"apgr": two_model_apgr(pred, scores), "picks": picks}


def stats(values: Sequence[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(vals), "sd": statistics.pstdev(vals), "n": len(vals)}


def routellm_set(name: str, path: Path, encoder: Any, seeds: Sequence[int], nested: bool,
                 log: Any) -> dict[str, Any]:
    """APGR/CPT of the default predictor, a plain kNN and (nested) the CV-picked one; on
    GSM8K also the cascade over Mixtral's answers."""
    table = read_outcome_file(path)
    vecs = embed(table.texts, encoder)
    groups = question_groups(table)
    out: dict[str, Any] = {"rows": len(table), "dropped": table.dropped,
                           "models": table.models, "systems": {}}
    for label, st in (("semroute (features + kNN)", KnnSettings()),
                      ("plain kNN k=50", KnnSettings(k=50, features=False))):
        reports = [evaluate_outcomes(table, vectors=vecs, seed=s, settings=st, groups=groups)
                   for s in seeds]
        r0 = reports[0]
        out["systems"][label] = {
            "settings": asdict(st),
            "apgr": stats([r.apgr for r in reports]),
            "apgr_exact": stats([r.apgr_exact for r in reports]),
            "cpt50": stats([r.cpt50 for r in reports]),
            "cpt80": stats([r.cpt80 for r in reports]),
            "curve_seed0": None if r0.curve is None else r0.curve.to_dict(),
        }
        out.update(weak=r0.weak, strong=r0.strong, model_quality=r0.model_quality,
                   oracle_quality=r0.oracle_quality)
        log(f"{name} {label}: APGR {out['systems'][label]['apgr']}")
    if nested:
        runs = [nested_cv(table, vecs, s, groups) for s in (seeds if len(table) <= 5000
                                                             else seeds[:1])]
        out["nested"] = {"apgr": stats([r["apgr"] for r in runs]),
                         "picks": [r["picks"] for r in runs]}
        log(f"{name} nested: {out['nested']['apgr']}")
    if name == "gsm8k" and table.answers:
        sc = np.asarray(table.scores)
        weak_i = table.models.index(out["weak"])
        strong_i = table.models.index(out["strong"])
        out["cascade"] = cascade(table.answers[out["weak"]], sc[:, weak_i], sc[:, strong_i],
                                 WEAK_COST)
    return out


def arena_set(path: Path, encoder: Any, seeds: Sequence[int], log: Any) -> dict[str, Any]:
    """Quality and dollar cost of the learned router against each model and the oracle."""
    table = read_outcome_file(path)
    vecs = embed(table.texts, encoder)
    reports = [evaluate_outcomes(table, vectors=vecs, seed=s) for s in seeds]
    r0 = reports[0]
    keys = ("quality", "cost", "cost_at_95", "saving_at_95", "apgr", "cpt50", "cpt80")
    out = {"rows": len(table), "clipped": table.clipped, "models": table.models,
           "model_quality": r0.model_quality, "model_cost": r0.model_cost,
           "best_single": r0.best_single, "oracle_quality": r0.oracle_quality,
           "oracle_cost": r0.oracle_cost, "frontier_seed0": r0.frontier.to_dict(),
           **{k: stats([getattr(r, k) for r in reports]) for k in keys}}
    log(f"routerarena: quality {out['quality']} cost {out['cost']}")
    return out


def decision_time(n: int = 100_000, queries: int = 300) -> dict[str, Any]:
    """Per-query predict time (features + search + aggregation) at n outcome records, one
    FAISS thread as in the router, and the IVF search's recall of the flat search's top k."""
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    base = np.concatenate([np.load(p) for p in sorted(CACHE.glob("*.npy"))])
    noisy = np.tile(base, (-(-n // len(base)), 1))[:n] + 0.05 * rng.standard_normal((n, 384))
    vecs = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    picks = base[rng.integers(0, len(base), queries)] + 0.05 * rng.standard_normal((queries, 384))
    q = (picks / np.linalg.norm(picks, axis=1, keepdims=True)).astype(np.float32)
    scores = (rng.random((n, 2)) < 0.7).astype(float)
    texts = ["How many apples does Anna have if she buys 3 bags of 12?"] * n
    out: dict[str, Any] = {"records": n, "base_vectors": len(base),
                           "load_before": os.getloadavg()}
    found = {}
    for kind, limit in (("flat", n + 1), ("ivf", 0)):
        t0 = time.perf_counter()
        model = QualityPredictor(vecs, scores, texts=texts, flat_limit=limit)
        built = time.perf_counter() - t0
        times, ids = [], []
        for i in range(queries):
            t = time.perf_counter()
            pred = model.predict(q[i:i + 1], texts[:1])
            times.append((time.perf_counter() - t) * 1000)
            ids.append(set(pred.ids[0].tolist()))
        found[kind] = ids
        out[kind] = {"p50_ms": float(np.percentile(times, 50)),
                     "p95_ms": float(np.percentile(times, 95)), "build_s": built}
    out["ivf"]["recall_at_k"] = float(np.mean([len(a & b) / len(b) for a, b in
                                               zip(found["ivf"], found["flat"], strict=True)]))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from semroute.encoders import SentenceTransformerEncoder

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    encoder = SentenceTransformerEncoder()
    seeds = list(range(args.seeds))
    names = ["gsm8k"] if args.quick else ["mmlu", "gsm8k", "mt_bench"]
    if args.sets:
        names = [n for n in names if n in args.sets]
    results: dict[str, Any] = {"sets": {}, "published": PUBLISHED}
    for name in names:
        results["sets"][name] = routellm_set(name, args.sets.get(name, SETS[name]), encoder,
                                             seeds, not args.no_nested, log)
    if not args.sets or "routerarena" in args.sets:
        results["routerarena"] = arena_set(args.sets.get("routerarena", SETS["routerarena"]),
                                           encoder, seeds, log)
    if not args.quick and not args.sets:
        results["decision_time"] = decision_time()
        log(f"decision time: {results['decision_time']}")
    results["meta"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.cost_quality", *args.argv]),
        "wall_s": round(time.perf_counter() - t0, 1), "machine": machine(),
        "versions": versions(("semroute-llm", "faiss-cpu", "numpy", "sentence-transformers",
                              "torch")),
        "settings": {"encoder": encoder.name, "folds": 5, "seeds": seeds,
                     "default": asdict(KnnSettings()), "grid": [asdict(g) for g in GRID],
                     "weak_cost_cascade": WEAK_COST},
    }
    return results


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="GSM8K and routerarena, 1 seed")
    p.add_argument("--seeds", type=int, default=5, help="fold seeds (default 5)")
    p.add_argument("--no-nested", action="store_true", help="skip the nested-CV rows")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--name", default=None)
    p.add_argument("--set", action="append", default=[], metavar="NAME=FILE",
                   help="read set NAME (mmlu, gsm8k, mt_bench, routerarena) from FILE; only "
                        "the sets given run")
    raw = list(argv if argv is not None else sys.argv[1:])
    args = p.parse_args(raw)
    args.sets = {k: Path(v) for k, v in (item.split("=", 1) for item in args.set)}
    args.argv = raw
    if args.quick:
        args.seeds = 1
    name = args.name or ("cost_quality-quick" if args.quick else "cost_quality")
    results = run(args)
    pngs = []
    for set_name, data in results["sets"].items():
        pngs.append(plot_two_model(set_name, data, args.out / f"{name}_{set_name}.png"))
    if "routerarena" in results:
        pngs.append(plot_arena(results["routerarena"], args.out / f"{name}_routerarena.png"))
    results["meta"]["plots"] = [p.name for p in pngs]
    md, js = save_results(results, render_markdown(results), args.out, name)
    print(md.read_text())
    print(f"wrote {md}, {js} and {len(pngs)} plots", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
