"""Latency benchmark: index build, single-query and batched decisions, cold start, and the peer
`semantic-router`, measured in one run on synthetic route sets of 1k / 10k / 100k utterances.

    python -m benchmarks.latency                              # the full run (~20 min on 2 cores)
    python -m benchmarks.latency --quick                      # 1k only, fewer queries and reps
    python -m benchmarks.latency --sizes 1k,10k --backends onnx-int8,torch --no-peer

Route sets come from the public intent data (benchmarks/latency_data.py: 100 routes; 100k needs
synthetic variants, two on-topic texts joined). Every measurement that imports semroute runs in
a fresh subprocess (benchmarks/latency_worker.py), so imports, thread pools and peak memory
belong to that job alone; the peer runs in its own venv (benchmarks/peers/run_peer.py).

Per size and backend (onnx-int8 = the default, onnx = fp32, torch):
- cold build (empty index folder, empty ONNX export cache): wall time of the build process,
  `build_index`'s own stages, peak RSS of the process; incremental rebuild after changing 10
  utterances (the incremental size, 10k by default);
- single queries: `router.route(q, use_classifier=False)` on distinct real test queries, the
  query-vector cache disabled, one encoder thread, after warm-up; each query timed in several
  passes (per-query median, then p50/p99 over queries), with the bare encoder
  (`encoder.encode([q])`) on the same query right before or after (alternating), so the ratio
  decision / bare encoder is measured under the same load;
- batched: `route_batch` in batches of 256 (decisions per second, median over passes), with one
  and with two encoder threads, and the bare encoder on the same batches;
- cold start: `semroute route --index ... --routes ... "query"` as a fresh process (start to the
  first byte of its printed decision; median of N runs after one untimed run), `load_router()`
  in a fresh process, and `python -X importtime` of `import semroute.cli.app` and of a
  `semroute route` run.
Results: a summary on stdout, benchmarks/results/latency.md and latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/latency.py` as well as `-m`
    sys.path.insert(0, str(REPO))

from benchmarks.latency_data import (  # noqa: E402
    DATA_ROOT,
    Pools,
    change_utterances,
    load_pools,
    make_route_set,
    write_routes,
)
from benchmarks.machine import machine, save_results  # noqa: E402
from benchmarks.machine import versions as machine_versions  # noqa: E402

WORKER = Path(__file__).resolve().parent / "latency_worker.py"
WORK = REPO / "benchmarks" / ".work" / "latency"
RESULTS = REPO / "benchmarks" / "results"
ENCODER = "all-MiniLM-L6-v2"
ALL_BACKENDS = ("onnx-int8", "onnx", "torch")
DEFAULT_BACKEND = "onnx-int8"
SIZE_LABELS = {"1k": 1_000, "10k": 10_000, "100k": 100_000}
TARGET_SIZE = 10_000  # the size the targets refer to
TARGETS = {
    "p50_ms": 2.5, "ratio_bare": 1.3, "batch_per_s": 700.0, "cold_start_s": 1.5,
    "build_s": 30.0, "incremental_s": 2.0, "peer_speedup": 5.0,
}

Log = Callable[[str], None]


@dataclass
class Config:
    """What to run; `build_config` fills it from the command line."""

    sizes: list[int]
    backends: list[str]
    large_backends: list[str]  # backends run at sizes >= 100k (builds there take minutes)
    peer_sizes: list[int]
    queries: int = 400
    passes: int = 5
    torch_passes: int = 3  # torch queries take ~10 ms each: fewer passes keep the run short
    warmup: int = 30
    batch_queries: int = 768
    batch_size: int = 256
    batch_passes: int = 3
    cold_runs: int = 5
    load_runs: int = 3
    incremental_size: int | None = 10_000
    incremental_changes: int = 10
    peer: bool = True
    peer_python: str | None = None
    threads: int = 1
    importtime: bool = True
    cold_export: bool = True  # builds start with an empty ONNX export cache
    data_root: Path = DATA_ROOT
    work: Path = WORK
    out: Path = RESULTS
    name: str = "latency"
    command: str = ""
    quick: bool = False
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- helpers


def size_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else str(n)


def parse_sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in SIZE_LABELS:
            out.append(SIZE_LABELS[part])
        elif part.endswith("k") and part[:-1].isdigit():
            out.append(int(part[:-1]) * 1000)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"bad size {part!r} (e.g. 1k,10k,100k)")
    return out


def parse_backends(text: str) -> list[str]:
    out = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in out if b not in ALL_BACKENDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {bad}; known: {ALL_BACKENDS}")
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100])."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_worker(job: str, spec: dict[str, Any], *, env: dict[str, str] | None = None,
               timeout: float = 3600) -> dict[str, Any]:
    """Run one worker job in a fresh interpreter; returns its output plus wall/load."""
    with tempfile.TemporaryDirectory(prefix="semroute-lat-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        load0 = loadavg()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(WORKER), job, str(spec_path), str(out_path)],
                              capture_output=True, text=True, env=env or _env(),
                              timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out_path.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-30:])
            raise RuntimeError(f"worker {job} failed ({proc.returncode}):\n{tail}")
        out = json.loads(out_path.read_text(encoding="utf-8"))
    out["wall_s"] = wall
    out["loadavg"] = [load0, loadavg()]
    return out


def time_first_output(cmd: list[str], env: dict[str, str], timeout: float = 300
                      ) -> tuple[float, float, str]:
    """(seconds to the first byte on stdout, seconds to exit, stdout) of a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    rest, err = proc.communicate(timeout=timeout)
    t_exit = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}: "
                           f"{err.decode(errors='replace')[-2000:]}")
    return t_first, t_exit, (first + rest).decode(errors="replace")


def semroute_exe() -> list[str]:
    """The installed `semroute` command (falls back to `python -m semroute.cli.app`)."""
    exe = Path(sys.executable).with_name("semroute")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "semroute.cli.app"]


def script_args() -> list[str]:
    """What follows `python -X importtime` to run the `semroute` command."""
    exe = Path(sys.executable).with_name("semroute")
    return [str(exe)] if exe.exists() else ["-m", "semroute.cli.app"]


# ---------------------------------------------------------------- importtime


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def parse_importtime(stderr: str, top: int = 12) -> dict[str, Any]:
    """Top offenders of `python -X importtime`: root packages by summed self time, and the
    outermost imports by cumulative time."""
    by_root: dict[str, int] = {}
    outer: list[tuple[int, str]] = []
    total = 0
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        self_us, cum_us, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
        root = name.split(".")[0]
        by_root[root] = by_root.get(root, 0) + self_us
        total += self_us
        if indent <= 1:
            outer.append((cum_us, name))
    roots = sorted(by_root.items(), key=lambda kv: -kv[1])[:top]
    outer.sort(reverse=True)
    return {"total_ms": round(total / 1e3, 1),
            "by_package_ms": [[k, round(v / 1e3, 1)] for k, v in roots],
            "outermost_ms": [[n, round(c / 1e3, 1)] for c, n in outer[:top]]}


def importtime(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO,
                          stdin=subprocess.DEVNULL, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    out = parse_importtime(proc.stderr)
    out["command"] = shlex.join(cmd)
    return out


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, cfg: Config, log: Log) -> None:
        self.cfg = cfg
        self.log = log
        self.pycache = cfg.work / "pycache"
        self.encoder_path = ""

    def cold_env(self, *, bytecode: bool = True) -> dict[str, str]:
        """The environment of the fresh-process timings: with bytecode caching (as an
        installed package has; .pyc files go to a folder of the benchmark's, not into the
        source tree), or without it (PYTHONDONTWRITEBYTECODE=1 and no cache: every start
        compiles semroute's modules from source)."""
        env = _env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPYCACHEPREFIX", None)
        if bytecode:
            env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            env["PYTHONPYCACHEPREFIX"] = str(self.cfg.work / "no-pycache-dir")
        return env

    def build(self, routes_dir: Path, index_dir: Path, *, cold: bool) -> dict[str, Any]:
        if cold:
            shutil.rmtree(index_dir, ignore_errors=True)
        fresh = cold and self.cfg.cold_export
        env = _env()
        if fresh:
            cache = Path(tempfile.mkdtemp(prefix="onnx-cache-", dir=self.cfg.work))
            env["SEMROUTE_CACHE"] = str(cache)
        try:
            out = run_worker("build", {"routes": str(routes_dir), "index": str(index_dir)},
                             env=env)
        finally:
            if fresh:
                shutil.rmtree(cache, ignore_errors=True)
        out["cold"] = cold
        return out

    def query(self, routes_dir: Path, index_dir: Path, pools: Pools,
              backend: str) -> dict[str, Any]:
        cfg = self.cfg
        spec = {"routes": str(routes_dir), "index": str(index_dir),
                "queries": pools.queries[:cfg.queries], "warmup": pools.warmup[:cfg.warmup],
                "passes": cfg.torch_passes if backend == "torch" else cfg.passes,
                "batch_queries": pools.queries[:cfg.batch_queries],
                "batch_size": cfg.batch_size, "batch_passes": cfg.batch_passes,
                # torch with 2 threads on 2 busy cores is known to collapse (STACK-NOTES)
                "batch_threads2": backend != "torch", "search_alternatives": True,
                "threads": cfg.threads}
        return run_worker("query", spec)

    def cold_start(self, routes_dir: Path, index_dir: Path, query: str) -> dict[str, Any]:
        cfg = self.cfg
        cmd = [*semroute_exe(), "route", "--index", str(index_dir), "--routes",
               str(routes_dir), query]
        out: dict[str, Any] = {"command": shlex.join(cmd), "runs": cfg.cold_runs}
        env = self.cold_env()
        time_first_output(cmd, env)  # untimed: writes .pyc, warms the page cache
        firsts, exits = [], []
        for _ in range(cfg.cold_runs):
            f, e, text = time_first_output(cmd, env)
            firsts.append(f)
            exits.append(e)
        out["first_output_s"] = firsts
        out["exit_s"] = exits
        out["printed"] = text.strip().splitlines()[:2]
        nopyc = self.cold_env(bytecode=False)
        out["first_output_s_no_pyc"] = [time_first_output(cmd, nopyc)[0]
                                        for _ in range(max(2, cfg.cold_runs // 2))]
        spec = {"routes": str(routes_dir), "index": str(index_dir), "query": query}
        loads = [run_worker("load", spec, env=env) for _ in range(cfg.load_runs)]
        out["load_router"] = loads
        return out

    def peer(self, routes: dict[str, list[str]], pools: Pools) -> dict[str, Any]:
        from benchmarks.peers.run_peer import run_semantic_router

        spec = {"encoder_path": self.encoder_path, "routes": routes,
                "queries": pools.queries[:self.cfg.queries], "fit": None, "mode": "latency",
                "warmup": self.cfg.warmup, "threads": self.cfg.threads}
        load0 = loadavg()
        t0 = time.perf_counter()
        out = run_semantic_router(spec, python=self.cfg.peer_python, timeout=3600)
        out["wall_s"] = time.perf_counter() - t0
        out["loadavg"] = [load0, loadavg()]
        for k in ("predictions", "confidences", "top_routes", "top_confidences"):
            out.pop(k, None)
        return out


def run_benchmark(cfg: Config, log: Log | None = None) -> dict[str, Any]:
    log = log or _stderr
    started = time.perf_counter()
    load_start = loadavg()
    cfg.work.mkdir(parents=True, exist_ok=True)
    bench = Bench(cfg, log)
    from semroute.encoders import resolve_model_path

    bench.encoder_path = str(resolve_model_path(ENCODER))
    pools = load_pools(cfg.data_root)
    if len(pools.queries) < cfg.queries:
        raise ValueError(f"only {len(pools.queries)} distinct test queries, {cfg.queries} asked")
    results: dict[str, Any] = {"sets": {}, "runs": [], "peer": [], "cold_start": [],
                               "importtime": {}}
    query0 = pools.queries[0]

    for size in cfg.sizes:
        routes, counts = make_route_set(pools, size)
        label = size_label(size)
        results["sets"][label] = {"utterances": size, "routes": len(routes), **counts}
        backends = cfg.backends if size < 100_000 else [b for b in cfg.backends
                                                         if b in cfg.large_backends]
        for backend in backends:
            base = cfg.work / label / backend
            rdir, idir = base / "routes", base / "index"
            write_routes(rdir, routes, backend)
            run: dict[str, Any] = {"size": label, "utterances": size, "backend": backend}
            log(f"[{label} {backend}] cold build (load {loadavg()})")
            run["build"] = bench.build(rdir, idir, cold=True)
            log(f"  {run['build']['wall_s']:.1f} s, peak {run['build']['peak_rss_mib']:.0f} MiB")
            log(f"[{label} {backend}] queries")
            run["query"] = bench.query(rdir, idir, pools, backend)
            q = summarise_query(run["query"])
            log(f"  p50 {q['p50_ms']:.2f} ms (bare encoder {q['bare_p50_ms']:.2f} ms, "
                f"x{q['ratio_bare']:.2f}); batch {q['batch_per_s']:.0f}/s")
            cold_here = backend == DEFAULT_BACKEND or size == TARGET_SIZE or cfg.quick
            if cold_here:
                log(f"[{label} {backend}] cold start x{cfg.cold_runs}")
                cs = bench.cold_start(rdir, idir, query0)
                cs.update(size=label, backend=backend)
                results["cold_start"].append(cs)
                log(f"  semroute route: {statistics.median(cs['first_output_s']):.2f} s")
                if cfg.importtime and backend == DEFAULT_BACKEND and (
                        size == TARGET_SIZE or (size == cfg.sizes[-1]
                                                and not results["importtime"])):
                    env = bench.cold_env()
                    results["importtime"] = {
                        "import semroute.cli.app": importtime(
                            [sys.executable, "-X", "importtime", "-c", "import semroute.cli.app"],
                            env),
                        "semroute route": importtime(
                            [sys.executable, "-X", "importtime", *script_args(), "route",
                             "--index", str(idir), "--routes", str(rdir), query0], env),
                        "size": label}
            if size == cfg.incremental_size:
                changed = change_utterances(routes, pools, cfg.incremental_changes)
                write_routes(rdir, changed, backend)
                log(f"[{label} {backend}] incremental rebuild ({cfg.incremental_changes} "
                    "changed utterances)")
                run["incremental"] = bench.build(rdir, idir, cold=False)
                # the route files stay changed, so the work folder's index matches them
                log(f"  {run['incremental']['timings_s']['total']:.2f} s in build_index, "
                    f"{run['incremental']['wall_s']:.2f} s process")
            results["runs"].append(run)
        if cfg.peer and size in cfg.peer_sizes:
            log(f"[{label}] peer semantic-router (load {loadavg()})")
            try:
                p = bench.peer(routes, pools)
                p.update(size=label, utterances=size)
                results["peer"].append(p)
                log(f"  p50 {1e3 * statistics.median(p['per_query_s']):.2f} ms, "
                    f"build {p['build_s']:.1f} s")
            except Exception as exc:
                results["peer"].append({"size": label, "utterances": size, "error": str(exc)})
                log(f"  peer failed: {exc}")
        elif cfg.peer:
            results["peer"].append({"size": label, "utterances": size, "skipped":
                                    "not in --peer-sizes (its build embeds with torch on one "
                                    "thread; see the estimate)"})
    results["meta"] = meta(cfg, time.perf_counter() - started, load_start, results)
    results["summary"] = summarise(results)
    return results


# ---------------------------------------------------------------- summaries


def _med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def summarise_query(q: dict[str, Any]) -> dict[str, Any]:
    """Per-query medians over passes, then p50/p99 over queries (ms)."""
    tot = [_med(x) for x in q["total_ms"]]
    bare = [_med(x) for x in q["bare_ms"]]
    over = [_med([t - b for t, b in zip(ts, bs, strict=True)])
            for ts, bs in zip(q["total_ms"], q["bare_ms"], strict=True)]
    parts = {k: percentile([_med(x) for x in v], 50) for k, v in q["parts_ms"].items()}
    pooled = [x for row in q["total_ms"] for x in row]
    b = q["batch"]
    out = {
        "queries": len(tot), "passes": len(q["total_ms"][0]) if tot else 0,
        "p50_ms": percentile(tot, 50), "p90_ms": percentile(tot, 90),
        "p99_ms": percentile(tot, 99),
        "pooled_p50_ms": percentile(pooled, 50), "pooled_p99_ms": percentile(pooled, 99),
        "per_pass_p50_ms": [percentile([row[p] for row in q["total_ms"]], 50)
                            for p in range(len(q["total_ms"][0]))] if tot else [],
        "bare_p50_ms": percentile(bare, 50), "bare_p99_ms": percentile(bare, 99),
        "overhead_p50_ms": percentile(over, 50),
        "parts_p50_ms": parts,
        "batch_per_s": _med(b["decisions_per_s"]),
        "batch_per_s_threads2": _med(b["decisions_per_s_threads2"])
        if b.get("decisions_per_s_threads2") else None,
        "batch_bare_per_s": _med(b["bare_encoder_per_s"]),
        "batch_size": b["batch_size"], "cache_hits": q["cache_hits"],
        "undecided": sum(m == "undecided" for m in q["methods"]) / max(len(q["methods"]), 1),
        "load_s": q["load_s"], "index_type": q["index_type"],
        "search_alternatives_ms": q.get("search_alternatives"),
        "loadavg": q["loadavg"],
    }
    out["ratio_bare"] = out["p50_ms"] / out["bare_p50_ms"] if out["bare_p50_ms"] else None
    return out


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    runs = {}
    for r in results["runs"]:
        key = f"{r['size']}/{r['backend']}"
        b = r["build"]
        s: dict[str, Any] = {
            "size": r["size"], "backend": r["backend"],
            "build_process_s": b["wall_s"], "build_index_s": b["timings_s"]["total"],
            "build_stages_s": b["timings_s"], "build_peak_rss_mib": b["peak_rss_mib"],
            "embedded_per_s": b["embedded"] / b["timings_s"]["embed"]
            if b["timings_s"].get("embed") else None,
            **summarise_query(r["query"]),
        }
        if "incremental" in r:
            inc = r["incremental"]
            s["incremental"] = {"build_index_s": inc["timings_s"]["total"],
                                "process_s": inc["wall_s"], "stages_s": inc["timings_s"],
                                "embedded": inc["embedded"], "reused": inc["reused"]}
        runs[key] = s
    # decisions agreement between backends, per size
    agree = {}
    by = {(r["size"], r["backend"]): r["query"]["routes"] for r in results["runs"]}
    for (size, backend), routes in by.items():
        ref = by.get((size, "onnx")) or by.get((size, "torch"))
        if backend != "onnx" and ref is not None and ref is not routes:
            same = sum(a == b for a, b in zip(routes, ref, strict=True)) / len(routes)
            agree[f"{size}/{backend}"] = round(same, 4)
    peers = {}
    for p in results["peer"]:
        if "per_query_s" not in p:
            peers[p["size"]] = {k: v for k, v in p.items() if k in ("error", "skipped")}
            continue
        pq = [1e3 * x for x in p["per_query_s"]]
        pe = [1e3 * x for x in p["encoder_s"] or []]
        entry: dict[str, Any] = {
            "p50_ms": percentile(pq, 50), "p99_ms": percentile(pq, 99),
            "encoder_p50_ms": percentile(pe, 50) if pe else None,
            "overhead_p50_ms": percentile([a - b for a, b in zip(pq, pe, strict=True)], 50)
            if pe else None,
            "build_s": p["build_s"], "load_s": p["load_s"], "import_s": p["import_s"],
            "version": p["version"], "wall_s": p["wall_s"], "loadavg": p["loadavg"],
            "settings": p.get("settings"),
        }
        for backend in ("torch", "onnx-int8", "onnx"):
            ours = runs.get(f"{p['size']}/{backend}")
            if ours:
                entry[f"speedup_vs_{backend}"] = entry["p50_ms"] / ours["p50_ms"]
        peers[p["size"]] = entry
    cold = {}
    for c in results["cold_start"]:
        loads = c["load_router"]
        cold[f"{c['size']}/{c['backend']}"] = {
            "route_first_output_s": _med(c["first_output_s"]),
            "route_first_output_min_max_s": [min(c["first_output_s"]), max(c["first_output_s"])],
            "route_exit_s": _med(c["exit_s"]),
            "route_first_output_no_pyc_s": _med(c["first_output_s_no_pyc"]),
            "load_router_process_s": _med([x["wall_s"] for x in loads]),
            "load_router_total_s": _med([x["total_s"] for x in loads]),
            "import_s": _med([x["import_s"] for x in loads]),
            "load_router_s": _med([x["load_router_s"] for x in loads]),
            "first_route_s": _med([x["first_route_s"] for x in loads]),
            "heavy_modules": loads[0]["modules"],
        }
    summary = {"runs": runs, "agreement_vs_fp32": agree, "peer": peers, "cold_start": cold}
    summary["targets"] = targets(summary)
    return summary


def _pick(summary: dict[str, Any], backend: str = DEFAULT_BACKEND,
          size: int = TARGET_SIZE) -> tuple[str, dict[str, Any] | None]:
    label = size_label(size)
    return label, summary["runs"].get(f"{label}/{backend}")


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each aim of issue 5 with the measured figure and pass/fail (None = not measured)."""
    label, run = _pick(summary)
    if run is None:  # e.g. --quick: report against the largest size measured
        for key in reversed(list(summary["runs"])):
            if key.endswith(f"/{DEFAULT_BACKEND}"):
                label, run = key.split("/")[0], summary["runs"][key]
                break
    cold = summary["cold_start"].get(f"{label}/{DEFAULT_BACKEND}")
    peer = summary["peer"].get(label, {})
    rows = []

    def row(name: str, value: float | None, target: float, higher: bool, unit: str,
            where: str) -> None:
        ok = None if value is None else (value >= target if higher else value <= target)
        rows.append({"target": name, "value": value, "limit": target, "unit": unit,
                     "higher_is_better": higher, "pass": ok, "where": where})

    w = f"{label}, {DEFAULT_BACKEND}"
    row("single-query decision p50", run and run["p50_ms"], TARGETS["p50_ms"], False, "ms", w)
    row("decision p50 / bare encoder p50", run and run["ratio_bare"], TARGETS["ratio_bare"],
        False, "x", w)
    row("batched decisions per second", run and run["batch_per_s"], TARGETS["batch_per_s"],
        True, "/s", w + ", batches of " + str(run["batch_size"] if run else "-") + ", 1 thread")
    row("cold start of `semroute route`", cold and cold["route_first_output_s"],
        TARGETS["cold_start_s"], False, "s", w + ", process start → printed decision")
    row("index build (cold)", run and run["build_process_s"], TARGETS["build_s"], False, "s",
        w + ", whole build process incl. ONNX export")
    inc = run.get("incremental") if run else None
    row("incremental rebuild, 10 changed utterances", inc and inc["build_index_s"],
        TARGETS["incremental_s"], False, "s", w + ", build_index() (process wall in table)")
    row("faster than the peer per decision", peer.get(f"speedup_vs_{DEFAULT_BACKEND}"),
        TARGETS["peer_speedup"], True, "x", w + ", peer p50 / semroute p50, same run")
    return rows


# ---------------------------------------------------------------- metadata, output


def meta(cfg: Config, wall_s: float, load_start: list[float],
         results: dict[str, Any]) -> dict[str, Any]:
    versions = machine_versions(("semroute-llm", "onnxruntime", "faiss-cpu", "torch",
                                         "sentence-transformers", "transformers", "tokenizers",
                                         "numpy"))
    peer_v = next((p.get("version") for p in results["peer"] if p.get("version")), None)
    versions["semantic-router (peer venv)"] = peer_v
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "wall_s": round(wall_s, 1),
        "loadavg_start": load_start, "loadavg_end": loadavg(),
        "machine": machine(),
        "versions": versions,
        "settings": {"encoder": ENCODER, "sizes": [size_label(s) for s in cfg.sizes],
                     "backends": cfg.backends, "large_backends": cfg.large_backends,
                     "peer_sizes": [size_label(s) for s in cfg.peer_sizes] if cfg.peer else [],
                     "queries": cfg.queries, "passes": cfg.passes, "warmup": cfg.warmup,
                     "batch_queries": cfg.batch_queries, "batch_size": cfg.batch_size,
                     "batch_passes": cfg.batch_passes, "cold_runs": cfg.cold_runs,
                     "threads": cfg.threads, "incremental_size":
                         size_label(cfg.incremental_size) if cfg.incremental_size else None,
                     "quick": cfg.quick},
        "sets": results["sets"],
        "notes": cfg.notes,
    }


def _f(v: float | None, nd: int = 2) -> str:
    return "—" if v is None else f"{v:.{nd}f}"


def _pf(ok: bool | None) -> str:
    return "—" if ok is None else ("pass" if ok else "**fail**")


def render_markdown(res: dict[str, Any]) -> str:
    m, s = res["meta"], res["summary"]
    mach, st = m["machine"], m["settings"]
    L: list[str] = []
    L.append("# Latency: semroute decisions, builds, cold start, and the peer\n")
    L.append(f"- date: {m['date']}; wall time {m['wall_s']:.0f} s")
    L.append(f"- command: `{m['command']}`")
    L.append(f"- machine: {mach['cpu']}, {mach['cores']} cores, {mach['ram_gib']} GiB RAM, "
             f"{mach['os']}, Python {mach['python']}")
    L.append(f"- load average (1/5/15 min) at start {m['loadavg_start']}, at end "
             f"{m['loadavg_end']} (shared machine: other jobs ran too)")
    L.append("- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    sets = "; ".join(f"{k}: {v['routes']} routes, {v['real']} real + {v['synthetic']} "
                     "synthetic utterances" for k, v in m["sets"].items())
    L.append(f"- route sets: {sets}")
    L.append(f"- single queries: {st['queries']} distinct test queries × {st['passes']} passes "
             f"(per-query median, then p50/p99 over queries), {st['warmup']} warm-up queries, "
             f"query cache off, encoder threads {st['threads']}; batches: "
             f"{st['batch_queries']} queries in batches of {st['batch_size']}, median of "
             f"{st['batch_passes']} passes")
    for n in m.get("notes") or []:
        L.append(f"- {n}")

    L.append("\n## Targets (issue 5; reported, not asserted)\n")
    L.append("| target | where | measured | limit | result |")
    L.append("| --- | --- | ---: | ---: | --- |")
    for t in s["targets"]:
        op = "≥" if t["higher_is_better"] else "≤"
        L.append(f"| {t['target']} | {t['where']} | {_f(t['value'])} {t['unit']} | "
                 f"{op} {t['limit']} {t['unit']} | {_pf(t['pass'])} |")

    L.append("\n## Single-query decisions (ms)\n")
    L.append("| size | backend | index | p50 | p90 | p99 | normalise | encode | search | score "
             "| bare encoder p50 | decision / bare | overhead p50 | undecided | load avg |")
    L.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | --- |")
    for r in s["runs"].values():
        pp = r["parts_p50_ms"]
        L.append(f"| {r['size']} | {r['backend']} | {r['index_type']} | {_f(r['p50_ms'])} | "
                 f"{_f(r['p90_ms'])} | {_f(r['p99_ms'])} | {_f(pp.get('normalise'), 3)} | "
                 f"{_f(pp.get('encode'))} | {_f(pp.get('search'), 3)} | {_f(pp.get('score'), 3)}"
                 f" | {_f(r['bare_p50_ms'])} | {_f(r['ratio_bare'])}× | "
                 f"{_f(r['overhead_p50_ms'], 3)} | {100 * r['undecided']:.0f}% | "
                 f"{r['loadavg'][0][0]}→{r['loadavg'][1][0]} |")
    L.append("\nStage columns are medians of `Decision.timings_ms`; p50/p90/p99 are the wall time "
             "of `router.route()`. *overhead* = per-query median of (decision − bare encoder "
             "on the same query).")
    L.append("\n### The search stage alone, by index kind\n")
    L.append("Each search right after an encode (as in `route()`: the encoder evicts the "
             "vectors from the CPU caches), p50 in ms over (up to) 200 of the timed queries, "
             "one thread; recall@k "
             "and top-1 agreement against the exact flat search.\n")
    L.append("| size | backend | flat (exact) | SQ fp16 | HNSW ef64 | HNSW ef128 | recall@k fp16 "
             "/ ef64 / ef128 |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in s["runs"].values():
        alt = r.get("search_alternatives_ms") or {}
        if not alt:
            continue
        t, qd = alt["p50_ms"], alt["quality"]
        L.append(f"| {r['size']} | {r['backend']} | {_f(t['flat'], 3)} | {_f(t['sq-fp16'], 3)} "
                 f"| {_f(t['hnsw-ef64'], 3)} | {_f(t['hnsw-ef128'], 3)} | "
                 + " / ".join(f"{100 * qd[k]['recall_at_k']:.2f}%"
                              for k in ("sq-fp16", "hnsw-ef64", "hnsw-ef128")) + " |")

    L.append("\n## Batched decisions (`route_batch`, per second)\n")
    L.append("| size | backend | 1 encoder thread | 2 encoder threads | bare encoder, same "
             "batches (1 thread) |")
    L.append("| --- | --- | ---: | ---: | ---: |")
    for r in s["runs"].values():
        L.append(f"| {r['size']} | {r['backend']} | {_f(r['batch_per_s'], 0)} | "
                 f"{_f(r['batch_per_s_threads2'], 0)} | {_f(r['batch_bare_per_s'], 0)} |")

    L.append("\n## Index builds\n")
    L.append("| size | backend | cold build, process (s) | build_index (s) | encoder/export "
             "| embed | write | utterances/s | peak RSS (MiB) | incremental: build_index (s) | "
             "incremental: process (s) |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in s["runs"].values():
        bs = r["build_stages_s"]
        inc = r.get("incremental") or {}
        L.append(f"| {r['size']} | {r['backend']} | {_f(r['build_process_s'], 1)} | "
                 f"{_f(r['build_index_s'], 1)} | {_f(bs.get('encoder'), 1)} | "
                 f"{_f(bs.get('embed'), 1)} | {_f(bs.get('write'), 2)} | "
                 f"{_f(r['embedded_per_s'], 0)} | {_f(r['build_peak_rss_mib'], 0)} | "
                 f"{_f(inc.get('build_index_s'))} | {_f(inc.get('process_s'))} |")
    L.append("\nCold = empty index folder and empty ONNX export cache (`SEMROUTE_CACHE` pointed at "
             "a new folder), so onnx backends include the export (torch import, trace, quantise, "
             "probe check). Incremental = the same folder rebuilt after 10 utterances changed "
             "(10 embedded, the rest reused from the previous build's cache); stages in the "
             "JSON.")

    L.append("\n## The peer, same run (semantic-router, same encoder weights, 1 thread)\n")
    L.append("| size | peer p50 (ms) | peer p99 | peer bare encoder p50 | peer overhead p50 | "
             "semroute torch p50 | peer ÷ semroute torch | semroute onnx-int8 p50 | "
             "peer ÷ semroute onnx-int8 | peer build (s) |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, p in s["peer"].items():
        if "p50_ms" not in p:
            L.append(f"| {size} | {p.get('error') or p.get('skipped')} | | | | | | | | |")
            continue
        tor = s["runs"].get(f"{size}/torch", {})
        i8 = s["runs"].get(f"{size}/onnx-int8", {})
        L.append(f"| {size} | {_f(p['p50_ms'])} | {_f(p['p99_ms'])} | "
                 f"{_f(p['encoder_p50_ms'])} | {_f(p['overhead_p50_ms'])} | "
                 f"{_f(tor.get('p50_ms'))} | {_f(p.get('speedup_vs_torch'), 1)}× | "
                 f"{_f(i8.get('p50_ms'))} | {_f(p.get('speedup_vs_onnx-int8'), 1)}× | "
                 f"{_f(p['build_s'], 1)} |")
    L.append("\nThe peer: `IndexedRouter` + `LocalIndex` (numpy) + `LocalEncoder` "
             "(sentence-transformers on torch, 1 thread), its defaults, one `router(text)` per "
             "query after warm-up, the same queries; its bare encoder is timed right after each "
             "call (benchmarks/peers/). semroute's torch row is the same encoder path "
             "(sentence-transformers, torch, 1 thread).")

    L.append("\n## Cold start (fresh processes)\n")
    L.append("| size | backend | `semroute route` → printed decision (median, min–max) | "
             "to exit | without .pyc | `load_router()` process | import semroute | "
             "load_router() | first route() | heavy modules loaded |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for key, c in s["cold_start"].items():
        size, backend = key.split("/")
        lo, hi = c["route_first_output_min_max_s"]
        L.append(f"| {size} | {backend} | {_f(c['route_first_output_s'])} s ({_f(lo)}–{_f(hi)})"
                 f" | {_f(c['route_exit_s'])} s | {_f(c['route_first_output_no_pyc_s'])} s | "
                 f"{_f(c['load_router_process_s'])} s | {_f(c['import_s'])} s | "
                 f"{_f(c['load_router_s'])} s | {1e3 * c['first_route_s']:.1f} ms | "
                 f"{', '.join(c['heavy_modules'])} |")
    L.append("\nTimed after one untimed run, with bytecode caching on (.pyc written to the "
             "benchmark's work folder via PYTHONPYCACHEPREFIX, as an installed package has "
             "them); *without .pyc* = PYTHONDONTWRITEBYTECODE=1 and no cache (how this "
             "environment runs by default: semroute's own modules compiled on every start).")

    it = res.get("importtime") or {}
    if it:
        L.append(f"\n## Import time (`python -X importtime`, {it.get('size')} index)\n")
        for key in ("import semroute.cli.app", "semroute route"):
            d = it.get(key)
            if not d:
                continue
            L.append(f"**{key}** — total self time {d['total_ms']:.0f} ms (`{d['command']}`)\n")
            L.append("| package (summed self time) | ms | outermost import (cumulative) | ms |")
            L.append("| --- | ---: | --- | ---: |")
            rows = max(len(d["by_package_ms"]), len(d["outermost_ms"]))
            for i in range(rows):
                a = d["by_package_ms"][i] if i < len(d["by_package_ms"]) else ["", None]
                b = d["outermost_ms"][i] if i < len(d["outermost_ms"]) else ["", None]
                L.append(f"| {a[0]} | {_f(a[1], 1) if a[1] is not None else ''} | {b[0]} | "
                         f"{_f(b[1], 1) if b[1] is not None else ''} |")
            L.append("")

    if s["agreement_vs_fp32"]:
        L.append("\n## Same decisions across backends\n")
        L.append("Share of the timed queries whose decision (route or undecided) equals the fp32 "
                 "ONNX backend's at the same size: " + ", ".join(
                     f"{k} {100 * v:.1f}%" for k, v in s["agreement_vs_fp32"].items()) + ".")
    L.append("")
    return "\n".join(L)


def render_summary(res: dict[str, Any]) -> str:
    lines = []
    for t in res["summary"]["targets"]:
        op = "≥" if t["higher_is_better"] else "≤"
        lines.append(f"{t['target']:<45} {_f(t['value']):>8} {t['unit']:<3} ({op} "
                     f"{t['limit']}) {_pf(t['pass'])}")
    return "\n".join(lines)


def write_results(res: dict[str, Any], out: Path, name: str) -> tuple[Path, Path]:
    return save_results(res, render_markdown(res), out, name)


# ---------------------------------------------------------------- command line


def build_config(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help="utterance counts (default 1k,10k,100k; --quick: 1k)")
    p.add_argument("--backends", type=parse_backends, default=list(ALL_BACKENDS),
                   help="encoder backends (default onnx-int8,onnx,torch)")
    p.add_argument("--large-backends", type=parse_backends, default=[DEFAULT_BACKEND],
                   help="backends run at 100k and above (default onnx-int8: a cold 100k build "
                        "embeds for minutes per backend)")
    p.add_argument("--peer-sizes", type=parse_sizes, default=None,
                   help="sizes the peer runs at (default 1k,10k)")
    p.add_argument("--quick", action="store_true", help="1k only, fewer queries and repetitions")
    p.add_argument("--no-peer", action="store_true", help="skip semantic-router")
    p.add_argument("--peer-python", default=None, help="interpreter with semantic-router")
    p.add_argument("--queries", type=int, default=None, help="timed single queries (400)")
    p.add_argument("--passes", type=int, default=None, help="passes over them (3)")
    p.add_argument("--cold-runs", type=int, default=None, help="fresh-process runs (5)")
    p.add_argument("--no-importtime", action="store_true")
    p.add_argument("--keep-export-cache", action="store_true",
                   help="builds reuse the user's ONNX export cache (not cold; for smoke tests)")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default=None, help="results file stem (latency / latency-quick)")
    a = p.parse_args(argv)
    quick = a.quick
    sizes = a.sizes or ([1_000] if quick else [1_000, 10_000, 100_000])
    cfg = Config(
        sizes=sizes, backends=a.backends, large_backends=a.large_backends,
        peer_sizes=a.peer_sizes or [1_000, 10_000], peer=not a.no_peer,
        peer_python=a.peer_python, importtime=not a.no_importtime, data_root=a.data_root,
        cold_export=not a.keep_export_cache,
        work=a.work, out=a.out, quick=quick,
        name=a.name or ("latency-quick" if quick else "latency"),
        command=("python -m benchmarks.latency " + shlex.join(
            list(argv if argv is not None else sys.argv[1:]))).rstrip())
    if quick:
        cfg.queries, cfg.passes, cfg.warmup = 100, 2, 10
        cfg.batch_queries, cfg.batch_passes, cfg.cold_runs = 256, 2, 3
        cfg.torch_passes, cfg.load_runs = 2, 2
        cfg.incremental_size = sizes[0]
    cfg.queries = a.queries or cfg.queries
    cfg.passes = a.passes or cfg.passes
    cfg.torch_passes = min(cfg.torch_passes, cfg.passes)
    cfg.cold_runs = a.cold_runs or cfg.cold_runs
    cfg.load_runs = min(cfg.load_runs, cfg.cold_runs)
    if cfg.incremental_size not in cfg.sizes:
        cfg.incremental_size = TARGET_SIZE if TARGET_SIZE in cfg.sizes else cfg.sizes[0]
    if not cfg.cold_export:
        cfg.notes.append("--keep-export-cache: builds reused the ONNX export cache, so build "
                         "times are not cold")
    if any(s >= 100_000 for s in sizes):
        skipped = [b for b in cfg.backends if b not in cfg.large_backends]
        if skipped:
            cfg.notes.append(f"100k runs only on {', '.join(cfg.large_backends)} (not "
                             f"{', '.join(skipped)}): each cold 100k build embeds 100k "
                             "utterances for several minutes per backend; search and scoring, "
                             "which grow with the index, do not depend on the backend")
    if cfg.peer and any(s not in cfg.peer_sizes for s in sizes):
        cfg.notes.append("the peer runs at " + ", ".join(size_label(s) for s in cfg.peer_sizes)
                         + " only; at 100k its build alone (torch, one thread, no cache) "
                         "would take roughly 10× its 10k build time (see the peer table)")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    cfg = build_config(argv)
    res = run_benchmark(cfg)
    md, js = write_results(res, cfg.out, cfg.name)
    print(render_summary(res))
    print(f"\nwall time {res['meta']['wall_s']:.0f} s; results: {md}, {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
