"""Routing accuracy on public intent data: semroute (index only, and with `fit`) against the
peer `semantic-router` (without and with its own `fit()`), same utterances, same encoder.

    python -m benchmarks.accuracy                       # the full run (4 datasets, k=5,10,20,all)
    python -m benchmarks.accuracy --quick               # hwu64, k=10, 1 seed: a smoke run
    python -m benchmarks.accuracy --data PATH --k 5,10  # any folder/CSV of text,label rows

For each dataset, k and seed, the k-utterance route set is written as real route files under
`benchmarks/.work/<dataset>/<backend>/routes`, built with `semroute.build_index` (one index
folder per dataset and backend, so rebuilds reuse cached embeddings: the sets are nested and
built largest first) and queried with `Router.route_batch`. `fit` is calibrated on the
validation split and applied to the test decisions with `semroute.fit.evaluate_with` (the
router's own decision rule). Results: a table on stdout, `benchmarks/results/accuracy.md` and
`accuracy.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/accuracy.py` as well as `-m`
    sys.path.insert(0, str(REPO))

from benchmarks.datasets import (  # noqa: E402
    DATA_ROOT,
    DEFAULT_DATASETS,
    Dataset,
    load_dataset,
)
from benchmarks.machine import machine, save_results  # noqa: E402
from benchmarks.machine import versions as machine_versions  # noqa: E402
from semroute.quality.evaluation import OOS, LabelledQuery, score_decisions  # noqa: E402

WORK = REPO / "benchmarks" / ".work"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_KS = "5,10,20,all"
SMALL_K = 10  # k at or below this gets several seeds
ENCODER = "all-MiniLM-L6-v2"
SYSTEMS = ("semroute", "semroute+fit", "semantic-router", "semantic-router+fit")
DEFAULT_TARGETS = "0.03,0.10"
# (key, column title) of the table, all shares in [0, 1]
COLUMNS = (
    ("in_scope_accuracy", "in-scope acc"),
    ("top1_accuracy", "top-1"),
    ("oos_recall", "OOS recall"),
    ("oos_recall_id_oos", "id-OOS"),
    ("oos_recall_ood_oos", "ood-OOS"),
    ("coverage", "coverage"),
    ("misroute_rate", "misroute"),
    ("index_misroute_rate", "misroute of routed"),
)
OOS_KEYS = {"oos_recall", "oos_recall_id_oos", "oos_recall_ood_oos", "oos_precision"}
CATALOGUE = {
    "profile": "bench",
    "profiles": {"bench": {"fast": {"provider": "openai", "model": "unused",
                                    "base_url": "http://127.0.0.1:9/v1"}}},
}

Log = Callable[[str], None]
OOS_FILE = "oos.txt"  # the out-of-scope examples of the `semroute+oos` rows
OOS_SYSTEM = "semroute+oos"


@dataclass
class BenchConfig:
    """What to run; `main` fills it from the command line."""

    datasets: list[str]
    ks: list[int | None]
    seeds: int = 3
    backends: list[str] = field(default_factory=lambda: ["torch"])
    peer: bool = True
    peer_python: str | None = None
    parallel_peer: bool = True
    targets: list[float] = field(default_factory=lambda: [0.03, 0.10])
    threads: int = 1
    batch: int = 512
    work: Path = WORK
    out: Path | None = RESULTS
    name: str = "accuracy"
    data_root: Path = DATA_ROOT
    encoder: str = ENCODER
    command: str = ""
    lexical_weight: float = 0.0
    oos_examples: int = 0  # > 0: also run `semroute+oos` with this many train oos rows
    oos_recalls: list[float] = field(default_factory=list)  # `fit_oos_recall` goals


@dataclass
class Run:
    """One system on one (dataset, k, seed, backend): its test-split metrics."""

    dataset: str
    k: int | None
    seed: int
    system: str
    backend: str
    metrics: dict[str, float | None]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "k": k_label(self.k), "seed": self.seed,
                "system": self.system, "backend": self.backend, "metrics": self.metrics,
                "info": self.info}


def fit_system(target: float) -> str:
    """The table's name for semroute fitted at a misroute target: `semroute+fit@3%`."""
    return f"semroute+fit@{100 * target:g}%"


def recall_system(goal: float) -> str:
    """The table's name for semroute fitted for an OOS recall goal: `semroute+recall@90%`."""
    return f"semroute+recall@{100 * goal:g}%"


def system_order(system: str) -> tuple[int, str]:
    """semroute, its fits by target, then the peer without and with fit."""
    if system.startswith("semroute+fit@"):
        return 1, f"{float(system.split('@')[1].rstrip('%')):08.3f}"
    if "+recall@" in system:  # after the misroute fits of the same system
        return 1, f"{'oosr' if system.startswith(OOS_SYSTEM) else 'e'}" \
            f"{float(system.split('@')[1].rstrip('%')):08.3f}"
    if system.startswith(OOS_SYSTEM):  # after semroute's fits, before the peer
        fit = system.split("@")[1].rstrip("%") if "@" in system else "-1"
        return 1, f"oos{float(fit):08.3f}"
    return SYSTEMS.index(system) if system in SYSTEMS else 9, ""


def k_label(k: int | None) -> str:
    return "all" if k is None else str(k)


def parse_ks(text: str) -> list[int | None]:
    """"5,10,all" -> [5, 10, None]."""
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            out.append(None if part == "all" else int(part))
    return out


def plan(ks: Sequence[int | None], seeds: int) -> list[tuple[int | None, int]]:
    """(k, seed) pairs in build order: seed 0 from the largest k down (each set is a subset
    of the one before, so the index's embedding cache serves it), then the extra seeds of
    the small k, also largest first. k > SMALL_K and "all" get one seed."""
    desc = sorted(dict.fromkeys(ks), key=lambda k: float("inf") if k is None else k,
                  reverse=True)
    order = [(k, 0) for k in desc]
    for s in range(1, seeds):
        order += [(k, s) for k in desc if k is not None and k <= SMALL_K]
    return order


# ---------------------------------------------------------------- route sets and semroute


def write_route_set(folder: Path, ds: Dataset, utterances: dict[str, list[str]],
                    backend: str, *, lexical_weight: float = 0.0, encoder: str = ENCODER,
                    oos: Sequence[str] = ()) -> None:
    """Route files (one per intent) and a models.yaml with the default thresholds; with
    `oos`, an out-of-scope example file (`oos.txt`, `router.oos_examples`)."""
    if folder.exists():
        for p in folder.glob("*.yaml"):
            p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for route, utts in utterances.items():
        spec = {"name": route,
                "description": f"intent '{ds.label_of.get(route, route)}' of {ds.name}",
                "model": "fast", "utterances": utts}
        (folder / f"{route}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False,
                                                             allow_unicode=True),
                                              encoding="utf-8")
    router: dict[str, Any] = {"encoder": encoder, "backend": backend, "default_route": None}
    if lexical_weight:
        router["lexical_weight"] = lexical_weight
    if oos:
        (folder / OOS_FILE).write_text("".join(f"{t}\n" for t in oos), encoding="utf-8")
        router["oos_examples"] = OOS_FILE
    catalogue = dict(CATALOGUE, router=router)
    (folder / "models.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False),
                                        encoding="utf-8")


def route_all(router: Any, texts: Sequence[str], batch: int) -> list[Any]:
    """Decisions for all texts through `route_batch`, in big batches, index only."""
    out: list[Any] = []
    for i in range(0, len(texts), batch):
        out += router.route_batch(list(texts[i:i + batch]), use_classifier=False)
    return out


def top1_accuracy(tops: Sequence[str | None], data: Sequence[LabelledQuery],
                  routes: set[str]) -> float | None:
    """Share of in-scope rows whose best-scoring route is their label, thresholds ignored."""
    pairs = [(t, q.label) for t, q in zip(tops, data, strict=True) if q.label in routes]
    return sum(t == g for t, g in pairs) / len(pairs) if pairs else None


def summarise(result: Any, tops: Sequence[str | None], ds: Dataset) -> dict[str, float | None]:
    """The numbers the table reports, from an `EvalResult` and the top-1 routes."""
    m = result.metrics
    out: dict[str, float | None] = {
        "in_scope_accuracy": m["in_scope_accuracy"],
        "top1_accuracy": top1_accuracy(tops, ds.test, set(ds.routes)),
        "oos_recall": m["oos_recall"],
        "oos_precision": m["oos_precision"],
        "coverage": m["index_rate"],
        "misroute_rate": m["misroute_rate"],
        "index_misroute_rate": m["misroute_rate_index"],
        "macro_f1": m["macro_f1"],
        "overall_accuracy": m["overall_accuracy"],
    }
    for group in ("id_oos", "ood_oos"):
        g = result.by_group.get(group)
        out[f"oos_recall_{group}"] = g["accuracy"] if g else None
    return out


class SemrouteRunner:
    """Builds and queries semroute for one dataset and backend; keeps one index folder and
    one query-vector cache, so test and validation queries are encoded once per backend."""

    def __init__(self, ds: Dataset, backend: str, cfg: BenchConfig, log: Log) -> None:
        self.ds, self.backend, self.cfg, self.log = ds, backend, cfg, log
        base = cfg.work / ds.name / backend
        self.routes_dir, self.index_dir = base / "routes", base / "index"
        self.cache: Any = None
        self.fingerprint: Any = None
        # a calibration left in the index folder would replace the default thresholds
        (self.index_dir / "calibration.json").unlink(missing_ok=True)

    def _router(self) -> Any:
        import semroute
        from semroute.encoders import Fingerprint, QueryCache

        router = semroute.load_router(self.routes_dir, self.index_dir, threads=self.cfg.threads)
        fp = Fingerprint.of(router.matcher.encoder)
        if self.cache is None:
            self.cache = QueryCache(router.matcher.encoder, maxsize=1 << 30)
            self.fingerprint = fp
        if fp == self.fingerprint:  # same vectors: share the encoded queries across configs
            router.matcher.cache = self.cache
        return router

    def run(self, k: int | None, seed: int, utterances: dict[str, list[str]],
            oos: Sequence[str] = (), system: str = "semroute"
            ) -> tuple[list[Run], list[str | None]]:
        """Index-only and fitted runs; also returns the test top-1 routes (for agreement).
        With `oos` (out-of-scope examples), the rows are named `system` and its fits."""
        import semroute
        from semroute.quality import FitResult, evaluate_with, fit_oos_recall, fit_thresholds

        ds, cfg = self.ds, self.cfg
        write_route_set(self.routes_dir, ds, utterances, self.backend,
                        lexical_weight=cfg.lexical_weight, oos=oos, encoder=cfg.encoder)
        t0 = time.perf_counter()
        report = semroute.build_index(self.routes_dir, self.index_dir, threads=cfg.threads,
                                      show_progress=False)
        t1 = time.perf_counter()
        router = self._router()
        t2 = time.perf_counter()
        test = route_all(router, [q.text for q in ds.test], cfg.batch)
        valid = route_all(router, [q.text for q in ds.valid], cfg.batch)
        t3 = time.perf_counter()
        tops = [d.candidates[0].route if d.candidates else None for d in test]
        base = score_decisions(test, ds.test, ds.routes)
        th = router.matcher.thresholds
        common = {"utterances": report.n_vectors, "embedded": report.embedded,
                  "reused": report.reused, "build_s": round(t1 - t0, 3),
                  "load_s": round(t2 - t1, 3), "route_s": round(t3 - t2, 3),
                  "queries": len(test) + len(valid), "oos_examples": len(oos)}
        runs = [Run(ds.name, k, seed, system, self.backend, summarise(base, tops, ds),
                    dict(common, thresholds={"score": th.score, "margin": th.margin}))]
        fitted_msgs = []

        def add_fitted(name: str, fit: FitResult, started: float, info: dict[str, Any]) -> None:
            fitted = evaluate_with(test, ds.test, fit.thresholds(), ds.routes)
            runs.append(Run(ds.name, k, seed, name, self.backend, summarise(fitted, tops, ds),
                            dict(common, fit_s=round(time.perf_counter() - started, 3), fit={
                                "message": fit.message, "score_threshold": fit.score_threshold,
                                "margin_threshold": fit.margin_threshold,
                                "valid_coverage": fit.coverage,
                                "valid_index_misroute": fit.misroute, "valid_rows": fit.rows,
                                **info})))

        for target in cfg.targets:
            t4 = time.perf_counter()
            fit = fit_thresholds(valid, ds.valid, target_misroute=target)
            name = system + fit_system(target).removeprefix("semroute")
            add_fitted(name, fit, t4, {"feasible": fit.feasible, "target_misroute": fit.target,
                                       "per_route_thresholds": len(fit.per_route)})
            fitted_msgs.append(f"{name} {fmt(runs[-1].metrics['in_scope_accuracy'])}"
                               + ("" if fit.feasible else " (infeasible)"))
        for goal in cfg.oos_recalls if ds.has_oos else ():
            t4 = time.perf_counter()
            fit = fit_oos_recall(valid, ds.valid, oos_recall=goal)
            name = system + recall_system(goal).removeprefix("semroute")
            add_fitted(name, fit, t4, {"oos_recall_goal": goal})
            m = runs[-1].metrics
            fitted_msgs.append(f"{name} {fmt(m['in_scope_accuracy'])} at OOS "
                               f"{fmt(m['oos_recall'])}")
        self.log(f"  {ds.name} {self.backend} {system} k={k_label(k)} seed={seed}: "
                 f"{report.n_vectors} utterances ({report.embedded} embedded), build "
                 f"{t1 - t0:.1f}s, load {t2 - t1:.1f}s, route {len(test) + len(valid)} "
                 f"queries {t3 - t2:.1f}s | top-1 {fmt(runs[0].metrics['top1_accuracy'])}, "
                 f"in-scope {fmt(runs[0].metrics['in_scope_accuracy'])}; "
                 + ", ".join(fitted_msgs))
        return runs, tops


# ---------------------------------------------------------------- the peer


def peer_spec(ds: Dataset, utterances: dict[str, list[str]], threads: int) -> dict[str, Any]:
    """The peer's spec: same utterances and encoder, test queries, fit on validation."""
    from semroute.encoders import resolve_model_path

    return {
        "encoder_path": str(resolve_model_path(ENCODER)),
        "routes": utterances,
        "queries": [q.text for q in ds.test],
        "fit": {"texts": [q.text for q in ds.valid],
                "labels": [None if q.label == OOS else q.label for q in ds.valid]},
        "mode": "accuracy",
        "threads": threads,
    }


def peer_decisions(names: Sequence[str | None], confs: Sequence[float | None],
                   tops: Sequence[str | None], ds: Dataset) -> list[Any]:
    """The peer's answers as semroute `Decision`s, so both are scored by the same code."""
    from semroute.routing import Candidate, Decision

    out = []
    for q, name, conf, top in zip(ds.test, names, confs, tops, strict=True):
        out.append(Decision(
            query=q.text, route=name, method="index" if name else "undecided",
            score=float(conf or 0.0), margin=0.0, threshold=0.0, margin_threshold=0.0,
            reason="semantic-router", timings_ms={},
            candidates=(Candidate(top, float(conf or 0.0), ()),) if top else ()))
    return out


def peer_runs(ds: Dataset, k: int | None, seed: int, out: dict[str, Any]) -> list[Run]:
    """Two runs from one peer process: no fit (its default: the top route, always; this is
    `top_routes`, since its calibration never reorders routes) and with `fit()`."""
    tops = out.get("top_routes") or out["predictions"]
    top_conf = out.get("top_confidences") or [None] * len(tops)
    info = {"version": out.get("version"), "build_s": out.get("build_s"),
            "fit_s": out.get("fit_s"), "settings": out.get("settings"),
            "fit_report": out.get("fit_report")}
    per_query = out.get("per_query_s") or []
    info["queries_s"] = round(sum(per_query), 3)
    info["wall_s"] = out.get("wall_s")
    plain_settings = dict(out.get("settings") or {}, confidence_threshold=None, fit_method=None)
    plain = score_decisions(peer_decisions(tops, top_conf, tops, ds), ds.test, ds.routes)
    fitted = score_decisions(peer_decisions(out["predictions"], out["confidences"], tops, ds),
                             ds.test, ds.routes)
    return [Run(ds.name, k, seed, "semantic-router", "torch", summarise(plain, tops, ds),
                dict(info, fit_s=None, settings=plain_settings, fit_report=None,
                     note="its top route, no threshold (from the same process as +fit)")),
            Run(ds.name, k, seed, "semantic-router+fit", "torch", summarise(fitted, tops, ds),
                info)]


def timed_peer(spec: dict[str, Any], python: str | None) -> dict[str, Any]:
    """`run_semantic_router`, with the wall time of the whole peer process added."""
    from benchmarks.peers.run_peer import run_semantic_router

    t0 = time.perf_counter()
    out = run_semantic_router(spec, python)
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    return out


def peer_versions(python: str | None) -> dict[str, str]:
    """Package versions inside the peer's interpreter (no heavy imports)."""
    from benchmarks.peers.run_peer import peer_python

    code = ("import json, importlib.metadata as m\nout = {}\n"
            "for p in ('semantic-router', 'sentence-transformers', 'torch', 'transformers'):\n"
            "    try: out[p] = m.version(p)\n    except Exception: pass\nprint(json.dumps(out))")
    exe = peer_python(python)
    try:
        proc = subprocess.run([exe, "-c", code], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            return {"python": exe, "error": tail[0]}
        return {"python": exe, **json.loads(proc.stdout)}
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"python": exe, "error": f"{type(exc).__name__}: {exc}"}


# ---------------------------------------------------------------- the benchmark


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")  # one write: the peer thread logs too
    sys.stderr.flush()


def run_benchmark(cfg: BenchConfig, log: Log | None = None) -> dict[str, Any]:
    """Run everything `cfg` asks for; returns the results (also written when `cfg.out`)."""
    say: Log = log or _stderr
    started = time.perf_counter()
    runs: list[Run] = []
    datasets: dict[str, dict[str, Any]] = {}
    agreement: list[dict[str, Any]] = []
    peer_failures: list[str] = []
    pending: list[tuple[Dataset, int | None, int, Future[dict[str, Any]] | dict[str, Any]]] = []
    peer_v = peer_versions(cfg.peer_python) if cfg.peer else None
    if peer_v is not None and "semantic-router" not in peer_v:
        raise SystemExit(f"semantic-router is not importable by {peer_v['python']} "
                         f"({peer_v.get('error', 'not installed')}): install it as "
                         f"benchmarks/peers/README.md says, pass --peer-python, or --no-peer")
    pool = ThreadPoolExecutor(max_workers=1) if cfg.peer and cfg.parallel_peer else None
    try:
        for spec in cfg.datasets:
            ds = load_dataset(spec, cfg.data_root)
            while ds.name in datasets:
                ds.name += "_"
            datasets[ds.name] = {"source": ds.source, "routes": len(ds.routes),
                                 "valid_source": ds.valid_source, "counts": ds.counts,
                                 "notes": ds.notes, "has_oos": ds.has_oos}
            say(f"{ds.name}: {len(ds.routes)} routes, {len(ds.test)} test / "
                f"{len(ds.valid)} validation rows" + "".join(f"\n  note: {n}" for n in ds.notes))
            order = plan(cfg.ks, cfg.seeds)
            if cfg.peer:
                for k, seed in order:
                    spec_ = peer_spec(ds, ds.utterances(k, seed), cfg.threads)
                    job = (pool.submit(timed_peer, spec_, cfg.peer_python)
                           if pool else None)
                    if job is None:
                        say(f"  peer {ds.name} k={k_label(k)} seed={seed} ...")
                        try:
                            pending.append((ds, k, seed,
                                            timed_peer(spec_, cfg.peer_python)))
                        except Exception as exc:
                            peer_failures.append(f"{ds.name} k={k_label(k)} seed={seed}: {exc}")
                    else:
                        tag = f"{ds.name} k={k_label(k)} seed={seed}"
                        job.add_done_callback(
                            lambda f, tag=tag: say(f"  peer {tag}: done" if f.exception() is None
                                                   else f"  peer {tag}: failed"))
                        pending.append((ds, k, seed, job))
            tops_by: dict[tuple[int | None, int, str], list[str | None]] = {}
            for backend in cfg.backends:
                runner = SemrouteRunner(ds, backend, cfg, say)
                for k, seed in order:
                    new, tops = runner.run(k, seed, ds.utterances(k, seed))
                    runs += new
                    tops_by[(k, seed, backend)] = tops
                    if cfg.oos_examples and ds.train_oos:  # the same set + OOS examples
                        runs += runner.run(k, seed, ds.utterances(k, seed),
                                           ds.oos_examples(cfg.oos_examples, seed),
                                           OOS_SYSTEM)[0]
            primary = cfg.backends[0]
            for (k, seed, backend), tops in tops_by.items():
                if backend != primary:
                    ref = tops_by[(k, seed, primary)]
                    agreement.append({"dataset": ds.name, "k": k_label(k), "seed": seed,
                                      "backend": backend, "top1_agreement":
                                      sum(a == b for a, b in zip(tops, ref, strict=True))
                                      / max(len(ref), 1)})
        for ds, k, seed, job in pending:
            try:
                out = job.result() if isinstance(job, Future) else job
            except Exception as exc:
                peer_failures.append(f"{ds.name} k={k_label(k)} seed={seed}: {exc}")
                say(f"  peer failed on {ds.name} k={k_label(k)} seed={seed}: {exc}")
                continue
            new = peer_runs(ds, k, seed, out)
            runs += new
            say(f"  peer {ds.name} k={k_label(k)} seed={seed}: top-1 "
                f"{fmt(new[0].metrics['top1_accuracy'])}, in-scope with fit "
                f"{fmt(new[1].metrics['in_scope_accuracy'])}, "
                f"process {out.get('wall_s') or 0:.0f}s "
                f"(build {out.get('build_s') or 0:.1f}s, fit {out.get('fit_s') or 0:.1f}s, "
                f"{len(out['predictions'])} queries {sum(out.get('per_query_s') or []):.1f}s)")
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)

    results = {
        "meta": meta(cfg, time.perf_counter() - started, peer_v),
        "datasets": datasets,
        "summary": summary(runs),
        "backend_agreement": agreement,
        "peer_failures": peer_failures,
        "runs": [r.to_dict() for r in runs],
    }
    print(render_table(results))
    if cfg.out is not None:
        write_results(results, cfg.out, cfg.name)
        say(f"wrote {cfg.out / (cfg.name + '.md')} and {cfg.out / (cfg.name + '.json')}")
    return results


def _stats(values: list[float]) -> dict[str, float | int | None]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def summary(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (dataset, k, system, backend), in run order."""
    groups: dict[tuple[str, str, str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.dataset, k_label(r.k), r.system, r.backend), []).append(r)
    out = []
    for (dataset, k, system, backend), rs in groups.items():
        keys = sorted({key for r in rs for key in r.metrics})
        stats = {}
        for key in keys:
            vals = [r.metrics[key] for r in rs if r.metrics.get(key) is not None]
            stats[key] = _stats([float(v) for v in vals]) if vals else None
        row = {"dataset": dataset, "k": k, "system": system, "backend": backend,
               "seeds": len(rs), "metrics": stats}
        if system.startswith("semroute+fit"):
            row["fit_feasible"] = sum(bool(r.info["fit"]["feasible"]) for r in rs)
        out.append(row)
    return out


# ---------------------------------------------------------------- reporting


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _cell(stat: dict[str, Any] | None) -> str:
    if stat is None:
        return "—"
    if stat.get("std") is None:
        return fmt(stat["mean"])
    return f"{fmt(stat['mean'])} ± {100 * stat['std']:.1f}"


def _k_order(k: str) -> int:
    return 1 << 30 if k == "all" else int(k)


def render_table(results: dict[str, Any], backend: str | None = None) -> str:
    """The main Markdown table (percentages; mean ± std over seeds)."""
    rows = results["summary"]
    backend = backend or (rows[0]["backend"] if rows else "torch")
    has_oos = {name: d["has_oos"] for name, d in results["datasets"].items()}
    head = ["dataset", "k", "system", *[title for _, title in COLUMNS], "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {name: i for i, name in enumerate(results["datasets"])}
    picked = [r for r in rows if r["system"].startswith("semantic-router")
              or r["backend"] == backend]
    picked.sort(key=lambda r: (order.get(r["dataset"], 99), _k_order(r["k"]),
                               system_order(r["system"])))
    for r in picked:
        cells = []
        for key, _ in COLUMNS:
            if key in OOS_KEYS and not has_oos.get(r["dataset"], True):
                cells.append("—")
            else:
                cells.append(_cell(r["metrics"].get(key)))
        seeds = str(r["seeds"])
        if r.get("fit_feasible", r["seeds"]) < r["seeds"]:
            seeds += f" (fit feasible in {r['fit_feasible']})"
        lines.append("| " + " | ".join([r["dataset"], r["k"], r["system"], *cells, seeds])
                     + " |")
    return "\n".join(lines)


def render_backends(results: dict[str, Any]) -> str:
    """Accuracy of the other encoder backends against the first one (percentage points)."""
    rows = results["summary"]
    backends = list(dict.fromkeys(r["backend"] for r in rows
                                  if r["system"].startswith("semroute")))
    if len(backends) < 2:
        return ""
    primary = backends[0]
    fits = sorted({r["system"] for r in rows if r["system"].startswith("semroute+fit")},
                  key=system_order)
    fit_name = fits[0] if fits else "semroute+fit"
    index = {(r["dataset"], r["k"], r["system"], r["backend"]): r for r in rows}
    agree: dict[tuple[str, str, str], list[float]] = {}
    for a in results["backend_agreement"]:
        agree.setdefault((a["dataset"], a["k"], a["backend"]), []).append(a["top1_agreement"])
    head = ["dataset", "k", "backend", "top-1", f"Δ top-1 vs {primary}", "in-scope acc",
            "Δ in-scope", f"{fit_name.removeprefix('semroute')} in-scope", "Δ +fit",
            "same top-1 route"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def mean(row: dict[str, Any] | None, key: str) -> float | None:
        s = row["metrics"].get(key) if row else None
        return None if s is None else float(s["mean"])

    def delta(a: float | None, b: float | None) -> str:
        return "—" if a is None or b is None else f"{100 * (a - b):+.2f}"

    for (dataset, k, system, backend), r in index.items():
        if system != "semroute" or backend == primary:
            continue
        ref = index.get((dataset, k, "semroute", primary))
        fit_r = index.get((dataset, k, fit_name, backend))
        fit_ref = index.get((dataset, k, fit_name, primary))
        ag = agree.get((dataset, k, backend))
        cells = [dataset, k, backend,
                 fmt(mean(r, "top1_accuracy")),
                 delta(mean(r, "top1_accuracy"), mean(ref, "top1_accuracy")),
                 fmt(mean(r, "in_scope_accuracy")),
                 delta(mean(r, "in_scope_accuracy"), mean(ref, "in_scope_accuracy")),
                 fmt(mean(fit_r, "in_scope_accuracy")),
                 delta(mean(fit_r, "in_scope_accuracy"), mean(fit_ref, "in_scope_accuracy")),
                 fmt(statistics.fmean(ag)) if ag else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def meta(cfg: BenchConfig, wall_s: float,
         peer_v: dict[str, str] | None) -> dict[str, Any]:
    """Machine, versions, settings, command, date and wall time."""
    from semroute.config import RouterSettings
    from semroute.encoders import default_margin

    defaults = RouterSettings()
    versions = machine_versions(("semroute-llm", "sentence-transformers", "faiss-cpu",
                                         "torch", "onnxruntime", "transformers", "numpy"))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "wall_s": round(wall_s, 1),
        "machine": machine(),
        "versions": versions,
        "peer_versions": peer_v,
        "settings": {"encoder": cfg.encoder, "backends": cfg.backends, "ks": [k_label(k) for k in
                                                                           cfg.ks],
                     "seeds_small_k": cfg.seeds, "small_k": SMALL_K,
                     "score_threshold": defaults.score_threshold,
                     "margin_threshold": (f"auto = {default_margin(cfg.encoder):g}"
                                          if defaults.margin_threshold == "auto"
                                          else defaults.margin_threshold),
                     "top_k": defaults.top_k,
                     "target_misroute": cfg.targets, "oos_recall_goals": cfg.oos_recalls,
                     "threads": cfg.threads,
                     "peer": cfg.peer},
    }


NOTES = """\
How to read it
- Percentages on the test split (test rows also found in train dropped), mean ± std over seeds
  (seeds draw different k-utterance sets; k > {small_k} and "all" have one seed).
- **in-scope acc**: in-scope test rows sent to their own route. An undecided query (no route
  cleared the thresholds: it would go to the classifier) counts as wrong here.
  **top-1**: in-scope rows whose best-scoring route is right, thresholds ignored.
  **OOS recall**: `oos` rows left without a route (banking77_oos: `id_oos` = held-out banking
  intents, near misses; `ood_oos` = off-topic). **coverage**: share of all test rows the index
  (or the peer) sent to a route. **misroute**: share of all test rows sent to a wrong route
  (out-of-scope rows included); **misroute of routed**: the same over the rows sent to a
  route (what `fit`'s target bounds, on validation data).
- **semroute**: `semroute.build_index` + `Router.route_batch`, index only, the default
  thresholds (score {score}, margin {margin}, top_k {top_k}), no calibration.
  **semroute+fit@T**: `semroute.fit.fit_thresholds` on the validation split with target
  index misroute rate T (wrong / decided by the index; `semroute fit` defaults to 3%):
  router-wide score and margin thresholds plus per-route score thresholds where a route has
  ≥ 30 validation rows, applied to the same test decisions through the router's own rule
  (`fit.evaluate_with`). Its in-scope accuracy is what the index decides alone; the rest
  would go to the classifier.
  **+recall@R** (datasets with oos rows): `semroute.quality.fit_oos_recall` on the
  validation split: router-wide score and margin thresholds keeping at least R of its oos
  rows undecided, with the most in-scope rows routed right (no per-route thresholds).
  **semroute+oos**: the same route set plus an out-of-scope example file (`--oos-examples`).
- **semantic-router** (the peer, `IndexedRouter` + `LocalIndex`, its defaults: top_k 5, mean
  of the hits per route) with the same utterances and the same all-MiniLM-L6-v2 weights
  (its `LocalEncoder`), run out of process by `benchmarks/peers/run_peer.py`. Without `fit()`
  its default `confidence_threshold` is None: it always returns the top route (so no OOS
  detection). **semantic-router+fit**: its `fit()` (Platt calibration of the top score) on
  the same validation rows, then a route only when the calibrated confidence ≥ 0.5. Both rows
  come from one peer process: the no-fit answer is its top route, which its calibration never
  reorders.
- Validation data: {valid_sources}
"""


def render_markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    s = m["settings"]
    mach = m["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    peer = m.get("peer_versions") or {}
    peer_v = ", ".join(f"{k} {v}" for k, v in peer.items() if k not in ("python", "error"))
    ds_lines = ["| dataset | routes | utterance pool | test rows (oos) | validation rows (oos) "
                "| dropped test rows (also in train) | notes |", "|---|---|---|---|---|---|---|"]
    for name, d in results["datasets"].items():
        c = d["counts"]
        ds_lines.append(
            f"| {name} | {d['routes']} | {c['train_used']} | {c['test']} ({c['test_oos']}) | "
            f"{c['valid']} ({c['valid_oos']}) | {c['test_dropped_in_train']} | "
            + "; ".join(d["notes"]).replace("|", "/") + " |")
    valid_sources = "; ".join(f"{n}: {d['valid_source']}" for n, d in
                              results["datasets"].items())
    parts = [
        "# Routing accuracy: semroute vs semantic-router",
        "",
        f"- Date: {m['date']}",
        f"- Command: `{m['command']}`",
        f"- Wall time: {m['wall_s'] / 60:.1f} min",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, {mach['ram_gib']} GiB RAM, "
        f"{mach['os']}, Python {mach['python']}",
        f"- Versions: {vers}",
        f"- Peer: {peer_v or 'not run'}" + (f" (in {peer['python']})" if peer.get("python")
                                             else ""),
        f"- Encoder: {s['encoder']}, backend(s) {', '.join(s['backends'])}; "
        f"{s['threads']} thread(s) for each side",
        "",
        "## Results",
        "",
        "Percentages on the test split, mean ± std over seeds (see *How to read it* below).",
        "",
        render_table(results),
        "",
    ]
    backends = render_backends(results)
    if backends:
        parts += ["## Encoder backends (semroute, same route sets)", "", backends, "",
                  "Δ in percentage points against the first backend; *same top-1 route*: share "
                  "of test queries whose best route is the same as with the first backend.", ""]
    if results["peer_failures"]:
        parts += ["## Peer failures", ""] + [f"- {f}" for f in results["peer_failures"]] + [""]
    parts += ["## Datasets", "", *ds_lines, "",
              NOTES.format(small_k=s["small_k"], score=s["score_threshold"],
                           margin=s["margin_threshold"], top_k=s["top_k"],
                           valid_sources=valid_sources),
              "Per-run numbers (each seed, fitted thresholds, timings) are in the JSON file "
              "beside this one."]
    return "\n".join(parts) + "\n"


def write_results(results: dict[str, Any], out: Path, name: str) -> tuple[Path, Path]:
    return save_results(results, render_markdown(results), out, name)


# ---------------------------------------------------------------- command line


def build_config(argv: Sequence[str] | None = None) -> BenchConfig:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", help=f"comma-separated names under --data-root or paths "
                   f"(default: {','.join(DEFAULT_DATASETS)})")
    p.add_argument("--data", action="append", default=[], metavar="PATH",
                   help="a dataset folder or CSV/JSONL file of text,label rows (repeatable)")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT)
    p.add_argument("--k", default=None, help=f"utterances per intent (default {DEFAULT_KS})")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds for k <= {SMALL_K} (default 3; other k use one)")
    p.add_argument("--backends", default="torch",
                   help="semroute encoder backends, the first is the reference "
                        "(torch, onnx, onnx-int8; native for a native packaged encoder)")
    p.add_argument("--encoder", default=ENCODER,
                   help=f"router.encoder for semroute (default {ENCODER}; the peer always "
                        f"uses {ENCODER})")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one dataset (hwu64 unless given), k=10, one seed")
    p.add_argument("--no-peer", action="store_true", help="skip semantic-router")
    p.add_argument("--peer-python", default=None, help="interpreter with semantic-router")
    p.add_argument("--serial", action="store_true",
                   help="run the peer and semroute one after the other (default: alongside, "
                        "one process each)")
    p.add_argument("--target-misroute", default=DEFAULT_TARGETS, metavar="T[,T...]",
                   help=f"misroute targets for semroute's fit (default {DEFAULT_TARGETS})")
    p.add_argument("--threads", type=int, default=1, help="encoder threads (each side)")
    p.add_argument("--lexical-weight", type=float, default=0.0, metavar="W",
                   help="router.lexical_weight of the route sets (default 0: off)")
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--oos-examples", type=int, default=0, metavar="N",
                   help="also run semroute+oos: the same route set with N of the train rows "
                        "labelled oos as its out-of-scope examples (datasets that have them)")
    p.add_argument("--oos-recall", default="", metavar="R[,R...]",
                   help="also fit for these validation OOS recall goals "
                        "(semroute.quality.fit_oos_recall; datasets with oos rows)")
    p.add_argument("--name", default=None,
                   help="output file stem (default accuracy; accuracy-quick with --quick)")
    a = p.parse_args(argv)
    names = [s for s in (a.datasets or "").split(",") if s.strip()]
    if not names and not a.data:
        names = ["hwu64"] if a.quick else list(DEFAULT_DATASETS)
    if a.quick:
        names = (names + a.data)[:1]
        a.data = []
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in ("torch", "onnx", "onnx-int8", "native")]
    if bad or not backends:
        p.error(f"unknown backend(s) {bad}: torch, onnx, onnx-int8, native")
    return BenchConfig(
        datasets=[*names, *a.data],
        ks=parse_ks(a.k or ("10" if a.quick else DEFAULT_KS)),
        seeds=a.seeds if a.seeds is not None else (1 if a.quick else 3),
        backends=backends, peer=not a.no_peer, peer_python=a.peer_python,
        parallel_peer=not a.serial, threads=a.threads,
        targets=[float(t) for t in a.target_misroute.split(",") if t.strip()],
        work=a.work, out=a.out, name=a.name or ("accuracy-quick" if a.quick else "accuracy"),
        data_root=a.data_root, lexical_weight=a.lexical_weight, oos_examples=a.oos_examples,
        encoder=a.encoder, oos_recalls=[float(r) for r in a.oos_recall.split(",") if r.strip()],
        command=shlex.join(["python", "-m", "benchmarks.accuracy", *(argv if argv is not None
                                                                     else sys.argv[1:])]))


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = build_config(argv)
    run_benchmark(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

