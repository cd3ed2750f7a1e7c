"""Reliability under injected faults: every request ends in an answer or one typed error, with
one trace record and no leaked key, while the models in front fail in every way we know.

Runs the fault mixes of tests/support/faults.py (the same harness and invariants as
tests/test_reliability.py, with more requests) in four modes (sync: threads; async: asyncio
tasks; stream / astream: the same, streaming, every 10th caller leaving after the first
chunk), against loopback servers that speak the OpenAI and Anthropic wire formats through the
real SDKs, plus one smaller run whose last model is the local llama-server. Prints a table and
writes benchmarks/results/reliability.{md,json}.

    .venv/bin/python -m benchmarks.reliability [--requests 500] [--concurrency 16]
    .venv/bin/python -m benchmarks.reliability --smoke --out /tmp/rel   # seconds, no llama
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from benchmarks.machine import machine, save_results, versions
from semroute import __version__
from tests.support.faults import (
    FLAKY,
    MODES,
    Mix,
    MixRun,
    Mode,
    ModelDef,
    build_fault_index,
    llama_mix,
    standard_mixes,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
COLUMNS = ("mix", "mode", "requests", "answered", "typed errors", "lost", "trace records",
           "lost trace records", "key leaks", "attempts p50/max", "failovers",
           "latency p50/p95 ms", "invariants")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--requests", type=int, default=500, help="requests per mix and mode")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent callers")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    ap.add_argument("--llama-requests", type=int, default=40,
                    help="requests per mode in front of llama-server (0: skip it)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smoke", action="store_true",
                    help="16 requests per run, 4 callers, no llama-server (a quick check)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the result files")
    args = ap.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.smoke:
        args.requests, args.concurrency, args.llama_requests = 16, 4, 0
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        ap.error(f"unknown modes {sorted(unknown)} (choose from {', '.join(MODES)})")
    return args


def _cell(row: dict[str, Any], col: str) -> str:
    def num(x: float | None, fmt: str = ".0f") -> str:
        return "–" if x is None else format(x, fmt)

    if col == "typed errors":
        mid = row["mid_stream_errors"]
        return f"{row['typed_errors']}" + (f" ({mid} mid-stream)" if mid else "")
    if col == "answered":
        early = row["closed_early"]
        return f"{row['answered']}" + (f" ({early} closed early)" if early else "")
    if col == "attempts p50/max":
        return f"{num(row['attempts_p50'], 'g')}/{num(row['attempts_max'], 'g')}"
    if col == "latency p50/p95 ms":
        return f"{num(row['latency_p50_ms'])}/{num(row['latency_p95_ms'])}"
    if col == "invariants":
        broken = sum(v["count"] for v in row["violations"].values())
        return "all hold" if not broken else f"**{broken} broken**"
    return str(row[col.replace(" ", "_")])


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def render_violations(rows: Sequence[dict[str, Any]]) -> str:
    """Each broken invariant with its count and an example, per run."""
    out: list[str] = []
    for r in rows:
        for kind, v in r["violations"].items():
            example = v["examples"][0] if v["examples"] else ""
            out.append(f"- {r['mix']}/{r['mode']}: **{kind}** ×{v['count']}: `{example}`")
    return "\n".join(out) if out else "None: every invariant held for every request."


def _role(m: ModelDef) -> str:
    if m.kind == "faulty":
        return "healthy" if m.always_answers else "flaky"
    return {"refused": "connection refused", "external": "llama-server"}.get(m.kind, m.kind)


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every (mix, mode) run; returns the result document (meta, mixes, rows)."""
    from tests.support.llm_server import start_llm_server

    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    mixes: list[tuple[Mix, int, int]] = [(m, args.requests, args.concurrency)
                                         for m in standard_mixes()]
    server = start_llm_server() if args.llama_requests > 0 else None
    try:
        if server is not None:
            mixes.append((llama_mix(server.base_url, "openai"), args.llama_requests, 4))
        with tempfile.TemporaryDirectory(prefix="semroute-reliability-") as tmp:
            work = Path(tmp)
            index = build_fault_index(work)
            for mix, requests, concurrency in mixes:
                with MixRun(mix, index, work, seed=args.seed) as m:
                    reports = [(mode, m.run(mode, requests=requests, concurrency=concurrency,
                                            max_tokens=8 if mix.name.startswith("llama")
                                            else 16))
                               for mode in cast(list[Mode], args.modes)]
                for mode, rep in reports:
                    row = rep.summary()
                    rows.append(row)
                    log(f"{mix.name}/{mode}: {row['answered']}/{requests} answered, "
                        f"{row['typed_errors']} typed errors, {row['lost']} lost, "
                        f"{len(row['violations'])} kinds of broken invariant "
                        f"({row['wall_s']:.1f} s)")
    finally:
        if server is not None:
            server.stop()
    return {
        "meta": {
            "semroute": __version__, "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "machine": machine(), "versions": versions(["openai", "anthropic", "httpx2"]),
            "command": " ".join([".venv/bin/python", "-m", "benchmarks.reliability", *args.argv]),
            "loadavg_start": list(load_before), "loadavg_end": list(os.getloadavg()),
            "wall_s": round(time.perf_counter() - started, 1),
            "requests": args.requests, "concurrency": args.concurrency, "seed": args.seed,
            "llama_requests": args.llama_requests,
        },
        "mixes": [{"name": m.name, "chain": [f"{d.key} ({d.flavour}, {_role(d)})"
                                             for d in m.models],
                   "cooldown_seconds": m.cooldown_seconds,
                   "attempts_per_model": m.attempts_per_model, "timeout_s": m.timeout_s,
                   "slow_s": m.slow_s, "note": m.note} for m, _, _ in mixes],
        "flaky_weights": FLAKY,
        "rows": rows,
    }


def render_markdown(res: dict[str, Any]) -> str:
    meta, rows = res["meta"], res["rows"]
    m = meta["machine"]
    machine_line = (f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, "
                    f"Python {m['python']}; load average {meta['loadavg_start'][0]:.1f} before / "
                    f"{meta['loadavg_end'][0]:.1f} after")
    sdk = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    served: dict[str, Counter[str]] = {}
    answered_by: dict[str, Counter[str]] = {}
    errors: dict[str, Counter[str]] = {}
    for r in rows:
        served.setdefault(r["mix"], Counter()).update(r["faults_served"])
        answered_by.setdefault(r["mix"], Counter()).update(r["answered_by"])
        errors.setdefault(r["mix"], Counter()).update(r["errors_by_type"])

    def listed(counts: dict[str, Counter[str]], mix: str) -> str:
        return ", ".join(f"{k} {n}" for k, n in counts.get(mix, Counter()).most_common()) \
            or "none"

    weights = ", ".join(f"{k} {v:g}" for k, v in res["flaky_weights"].items())
    mixes = "\n".join(
        f"- **{x['name']}**: {' → '.join(x['chain'])}. {x['note']}. attempts_per_model "
        f"{x['attempts_per_model']}, cooldown {x['cooldown_seconds']:g} s, model timeout "
        f"{x['timeout_s']:g} s, slow first byte {x['slow_s']:g} s. All modes together: "
        f"faults served: {listed(served, x['name'])}; answered by: "
        f"{listed(answered_by, x['name'])}; typed errors: {listed(errors, x['name'])}."
        for x in res["mixes"])
    return f"""# Reliability under injected faults

semroute {meta['semroute']}, {meta['date']}; {sdk}.
Machine: {machine_line}.

Command: `{meta['command']}` (wall {meta['wall_s']:.0f} s)

{render_table(rows)}

Columns: **answered** includes streams the caller left after the first chunk (closed early);
**typed errors** are semroute exceptions (`AllModelsFailedError` listing every attempt, or a
mid-stream `StreamInterruptedError` once text was delivered); **lost** = untyped exceptions
plus requests that never finished (must be 0); **lost trace records** = requests without
exactly one trace record (must be 0); **key leaks** = places the fake API key appeared (log
lines at DEBUG from semroute, openai, anthropic, httpx2/httpcore2; error str/repr/traceback;
the trace file); **failovers** = requests that moved on to another model; latency is per
request as its caller saw it (streams: until the last chunk). **invariants**: the checks of
`tests/support/faults.py::check_run` (attempt structure against the chain and
`attempts_per_model`, trace record per request with the response's request_id and attempts,
server-side request counts equal to recorded attempts, every valid answer taken).

## Mixes

Flaky model weights: {weights}. Each request to a flaky server draws one fault (seeded);
both wire formats, streamed (SSE) or not. Two more faults (an SSE error event before any text,
a stream that ends cleanly without its closing events) and per-model failures (missing key,
401/403/404) are checked one at a time by `tests/test_reliability.py`.

{mixes}

## Broken invariants

{render_violations(rows)}
"""


def write_results(res: dict[str, Any], out: Path) -> tuple[Path, Path]:
    return save_results(res, render_markdown(res), out, "reliability")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = run_benchmark(args)
    print(render_table(res["rows"]))
    md, js = write_results(res, args.out)
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
