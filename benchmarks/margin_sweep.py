"""Index-only accuracy at several margin thresholds on the validation splits (k utterances
per route, one seed): how `PackagedModel.default_margin` (`margin_threshold: auto`) is chosen.

Each query is routed once; the margins are applied to the same decisions
(`semroute.quality.evaluate_with`). The reference row is all-MiniLM-L6-v2 at 0.05.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.accuracy import RESULTS, WORK, route_all, write_route_set  # noqa: E402
from benchmarks.datasets import DATA_ROOT, load_dataset  # noqa: E402
from benchmarks.machine import machine, save_results  # noqa: E402

REFERENCE = ("all-MiniLM-L6-v2", "torch", 0.05)


def sweep(encoder: str, backend: str, margins: list[float], datasets: list[str], k: int,
          threads: int, work: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{dataset: {margin: metrics}} on the validation split, index only."""
    import semroute
    from semroute.quality import evaluate_with
    from semroute.routing import Thresholds

    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in datasets:
        ds = load_dataset(name, DATA_ROOT)
        base = work / "margin_sweep" / encoder.replace("/", "_") / name
        (base / "index" / "calibration.json").unlink(missing_ok=True)
        write_route_set(base / "routes", ds, ds.utterances(k, 0), backend, encoder=encoder)
        semroute.build_index(base / "routes", base / "index", threads=threads,
                             show_progress=False)
        router = semroute.load_router(base / "routes", base / "index", threads=threads)
        t0 = time.perf_counter()
        valid = route_all(router, [q.text for q in ds.valid], 512)
        score = router.matcher.thresholds.score
        print(f"{encoder} {name}: {len(ds.valid)} validation rows in "
              f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
        out[name] = {}
        for m in margins:
            r = evaluate_with(valid, ds.valid, Thresholds(score, m, {}), ds.routes).metrics
            out[name][f"{m:g}"] = {"in_scope": r["in_scope_accuracy"],
                                   "misroute_routed": r["misroute_rate_index"] or 0.0,
                                   "coverage": r["index_rate"]}
    return out


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def render(res: dict[str, Any]) -> str:
    sets = res["datasets"]
    head = ("| encoder | margin | " + " | ".join(f"{d} in-scope / misroute of routed"
                                                 for d in sets) + " | mean in-scope |")
    lines = [head, "|" + "---|" * (len(sets) + 3)]
    for enc, table in res["tables"].items():
        for m in next(iter(table.values())):
            cells = [f"{pct(table[d][m]['in_scope'])} / {pct(table[d][m]['misroute_routed'])}"
                     for d in sets]
            mean = sum(table[d][m]["in_scope"] for d in sets) / len(sets)
            lines.append(f"| {enc} | {m} | " + " | ".join(cells) + f" | {pct(mean)} |")
    return "\n".join([
        "# Margin threshold sweep (validation splits, index only)", "",
        f"- Date: {res['date']}", f"- Command: `{res['command']}`",
        f"- Machine: {res['machine']}", f"- k = {res['k']} utterances per route, seed 0; "
        "score threshold `auto`; validation splits (carved from train where a set has none)",
        "", *lines, "",
        "Rule: the chosen default margin is the smallest whose misroute of routed is at or "
        f"below {REFERENCE[0]}'s at {REFERENCE[2]} on every set.", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.margin_sweep",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="multilingual-e5-small")
    p.add_argument("--backend", default="native")
    p.add_argument("--margins", default="0.005,0.0075,0.01,0.0125,0.015,0.02,0.03,0.05")
    p.add_argument("--datasets", default="banking77,hwu64,snips")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="margin-sweep")
    a = p.parse_args(argv)
    sets = [d for d in a.datasets.split(",") if d]
    margins = [float(m) for m in a.margins.split(",") if m]
    tables = {a.encoder: sweep(a.encoder, a.backend, margins, sets, a.k, a.threads, a.work)}
    ref_enc, ref_backend, ref_margin = REFERENCE
    if a.encoder != ref_enc:
        tables[ref_enc] = sweep(ref_enc, ref_backend, [ref_margin], sets, a.k, a.threads, a.work)
    res = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
           "command": "python -m benchmarks.margin_sweep " + shlex.join(argv or sys.argv[1:]),
           "k": a.k, "datasets": sets, "tables": tables}
    md = render(res)
    print(md)
    save_results(res, md, a.out, a.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
