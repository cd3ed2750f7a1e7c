"""What negatives and out-of-scope examples cost a decision: the `score` stage of
`Decision.timings_ms` (route scores, then the contrast rule) with 0, 500 and all of the
banking77_oos train rows labelled oos as the route set's out-of-scope examples, k=10.

    python -m benchmarks.negatives_latency            # writes results/negatives_latency.md
    python -m benchmarks.negatives_latency --queries 200 --sizes 0,500
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import WORK, write_route_set  # noqa: E402
from benchmarks.datasets import load_dataset  # noqa: E402
from benchmarks.machine import machine, save_results  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def measure(size: int, queries: Sequence[str], backend: str, work: Path) -> dict[str, Any]:
    """Median and p95 of the score stage, and of the whole decision, one query at a time."""
    import semroute

    ds = load_dataset("banking77_oos")
    folder = work / "negatives_latency" / backend
    oos = ds.oos_examples(size, 0) if size else []
    write_route_set(folder / "routes", ds, ds.utterances(10, 0), backend, oos=oos)
    semroute.build_index(folder / "routes", folder / "index", show_progress=False)
    router = semroute.load_router(folder / "routes", folder / "index", classifier=False)
    router.route_batch(list(queries), use_classifier=False)  # warm: queries encoded once
    score, total, penalised = [], [], 0
    for q in queries:
        t0 = time.perf_counter()
        d = router.route(q, use_classifier=False)
        total.append((time.perf_counter() - t0) * 1e3)
        score.append(d.timings_ms["score"])
        penalised += bool(d.negatives)
    return {"oos_examples": len(oos), "score_ms_p50": statistics.median(score),
            "score_ms_p95": sorted(score)[int(0.95 * (len(score) - 1))],
            "route_ms_p50": statistics.median(total), "penalised": penalised / len(queries)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.negatives_latency",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--sizes", default="0,500,all")
    p.add_argument("--backend", default="onnx-int8")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ds = load_dataset("banking77_oos")
    queries = [q.text for q in ds.test[:a.queries]]
    sizes = [len(ds.train_oos) if s == "all" else int(s) for s in a.sizes.split(",")]
    rows = [measure(n, queries, a.backend, WORK) for n in sizes]
    cmd = shlex.join(["python", "-m", "benchmarks.negatives_latency",
                      *(argv if argv is not None else sys.argv[1:])])
    m = machine()
    lines = ["# Decision time with out-of-scope examples", "",
             f"- Command: `{cmd}`", f"- Date: {datetime.now(UTC).isoformat(timespec='seconds')}",
             f"- Machine: {m['cpu']}, {m['cores']} cores (shared), Python {m['python']}",
             f"- banking77_oos, 50 routes x 10 utterances, {a.backend}, {len(queries)} test "
             f"queries one at a time (vectors cached: encode time excluded from `score`)", "",
             "| OOS examples | score stage p50 ms | p95 ms | route() p50 ms | penalised |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['oos_examples']} | {r['score_ms_p50']:.3f} | {r['score_ms_p95']:.3f} | "
              f"{r['route_ms_p50']:.3f} | {100 * r['penalised']:.1f}% |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    save_results({"command": cmd, "machine": m, "rows": rows}, text, a.out, "negatives_latency")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
