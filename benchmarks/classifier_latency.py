"""Added latency of the classifier path over the index path, on the example route set.

Starts the local llama-server (SmolLM2-135M, `scripts/local-llm build` first), builds the
example index in a temporary folder, and routes the same queries twice: once as the index
decides them, once with the index forced to be undecided so the classifier answers (through
the OpenAI SDK with a json_schema enum, and through the Anthropic SDK). Prints a table and
writes benchmarks/results/classifier_latency.{md,json}.

    .venv/bin/python -m benchmarks.classifier_latency [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.machine import machine
from semroute import __version__, build_index
from semroute.routing import Router
from tests.support.llm_server import start_llm_server

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def _queries() -> list[str]:
    cases = yaml.safe_load((REPO / "tests" / "data" / "routing_cases.yaml").read_text())
    clear = [q for qs in cases["clear"].values() for q in qs]
    examples = (REPO / "examples" / "queries.txt").read_text().splitlines()
    return [q for q in clear + examples if q.strip()]


def _routes(tmp: Path, base_url: str, flavour: str, structured: str,
            force_undecided: bool) -> Path:
    dst = tmp / f"routes-{flavour}-{structured}-{int(force_undecided)}"
    shutil.copytree(REPO / "routes", dst, dirs_exist_ok=True)
    cat = yaml.safe_load((dst / "models.yaml").read_text())
    url = f"{base_url}/v1" if flavour == "openai" else base_url
    cat["profiles"]["bench"] = {k: {"provider": flavour, "model": "local", "base_url": url,
                                    "timeout": 60, "structured": structured}
                                for k in cat["profiles"]["local"]}
    cat["profile"] = "bench"
    if force_undecided:
        cat["router"]["margin_threshold"] = 1.5  # no margin reaches it
    (dst / "models.yaml").write_text(yaml.safe_dump(cat))
    return dst


def _time(router: Router, queries: list[str], reps: int) -> tuple[list[float], list[Any]]:
    times, decisions = [], []
    for _ in range(reps):
        if router.classifier is not None:
            router.classifier.clear_cache()  # measure calls, not the answer cache
        router.matcher.cache.clear()
        for q in queries:
            t = time.perf_counter()
            decisions.append(router.route(q))
            times.append((time.perf_counter() - t) * 1e3)
    return times, decisions


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    queries = _queries()
    load_before = os.getloadavg()
    started = time.perf_counter()
    server = start_llm_server()
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            index = tmp / "index"
            build_index(_routes(tmp, server.base_url, "openai", "auto", False), index)
            for flavour, structured in (("openai", "json_schema"), ("openai", "grammar"),
                                        ("anthropic", "auto")):
                for forced in (False, True):
                    router = Router.load(_routes(tmp, server.base_url, flavour, structured,
                                                 forced), index)
                    _time(router, queries[:3], 1)  # warm-up
                    times, decisions = _time(router, queries, args.reps)
                    methods = {m: sum(d.method == m for d in decisions) / len(decisions)
                               for m in ("index", "classifier", "default", "undecided")}
                    rows.append({"sdk": f"{flavour} ({structured})",
                                 "path": "classifier (forced)" if forced else "as decided",
                                 "n": len(times), "p50_ms": _pct(times, 0.5),
                                 "p95_ms": _pct(times, 0.95),
                                 "mean_ms": statistics.fmean(times), "methods": methods})
    finally:
        server.stop()
    index_p50 = next(r["p50_ms"] for r in rows if r["path"] == "as decided")
    lines = ["| SDK | path | queries×reps | p50 ms | p95 ms | added p50 vs index | methods |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        methods = ", ".join(f"{k} {v:.0%}" for k, v in r["methods"].items() if v)
        lines.append(f"| {r['sdk']} | {r['path']} | {r['n']} | {r['p50_ms']:.1f} | "
                     f"{r['p95_ms']:.1f} | {r['p50_ms'] - index_p50:+.1f} | {methods} |")
    table = "\n".join(lines)
    print(table)
    m = machine()
    machine_line = (f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
                    f"load average {load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after")
    command = " ".join(["python", "-m", "benchmarks.classifier_latency",
                        *(argv if argv is not None else sys.argv[1:])])
    md = (f"# Classifier path latency\n\nsemroute {__version__}, {datetime.now(UTC):%Y-%m-%d}, "
          f"{machine_line}; local llama-server (SmolLM2-135M, 1 thread) on 127.0.0.1.\n\n"
          f"Command: `{command}`"
          f" (wall {time.perf_counter() - started:.0f} s)\n\n{table}\n\n"
          "`as decided`: the example thresholds (the index decides most queries; undecided ones "
          "go to the classifier). `classifier (forced)`: margin threshold 1.5, so every query "
          "goes to the classifier. On the Anthropic endpoint llama-server ignores the forced "
          "tool, the 135M model rarely names a route, and those queries fall to the default "
          "route: the call is still made and timed.\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "classifier_latency.md").write_text(md)
    (RESULTS / "classifier_latency.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
