"""Gateway load benchmark: what `semroute serve` adds (decision included) over calling an
instant upstream directly, against LiteLLM's proxy in the same run, plus the local model end to
end and a memory soak. Prints a table and writes benchmarks/results/gateway.{md,json}.

Every server runs in its own process on 127.0.0.1: the instant upstream
(benchmarks/gateway_upstream.py), `semroute serve` as in production (`--workers`, default one
process, access log off) on the example routes with every model pointed at that upstream,
LiteLLM's proxy (its own venv, benchmarks/peers/README.md; skipped when absent) with one model
on the same upstream, and llama-server. Load is open-loop at fixed rates
(benchmarks/gateway_load.py): each latency runs from the request's due time, so queueing behind
a stall is counted.

    .venv/bin/python -m benchmarks.gateway                      # ~17 min (10-minute soak)
    .venv/bin/python -m benchmarks.gateway --smoke --out /tmp/gw  # seconds, no LiteLLM/llama
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import gateway_targets as targets
from benchmarks.gateway_load import Reply, chat_body, closed_loop_ceiling, run_load
from benchmarks.gateway_report import render_markdown, render_table
from benchmarks.machine import machine, save_results, versions
from semroute import __version__

RESULTS = Path(__file__).resolve().parent / "results"
PATH = "/v1/chat/completions"
# Queries the example routes decide on the index (no rule, no classifier call), each sent with a
# unique suffix "(case N)" so the router's query-vector cache never answers.
QUERIES = [
    "my jest tests fail with 'Cannot find module'", "write a python function to sort a list",
    "summarise this article about climate policy in three bullet points",
    "translate 'good morning' into french", "hi, how are you today?",
    "solve 3x + 5 = 20 for x", "write a short poem about autumn leaves",
    "extract the dates from this email", "compare the pros and cons of remote work",
    "why does my docker container exit immediately", "what is the derivative of x^2 sin x",
    "rewrite this paragraph in a formal tone"]
MODEL = {"direct": "bench-model", "semroute": "semroute", "litellm": "bench"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rates", default="50,200,500", help="requests/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per target and rate")
    ap.add_argument("--stream-rate", type=float, default=200.0,
                    help="rate of the streamed row (0: skip it)")
    ap.add_argument("--stream-seconds", type=float, default=10.0)
    ap.add_argument("--llama-rate", type=float, default=1.0,
                    help="rate against the local llama-server (0: skip it); SmolLM2 on one "
                         "thread takes ~0.4-0.6 s a request here, so 2/s already queues")
    ap.add_argument("--llama-seconds", type=float, default=30.0)
    ap.add_argument("--llama-max-tokens", type=int, default=16)
    ap.add_argument("--soak-seconds", type=float, default=600.0, help="memory soak (0: skip)")
    ap.add_argument("--soak-rate", type=float, default=50.0,
                    help="a rate the gateway sustains without queueing on the shared 2 cores")
    ap.add_argument("--soak-warmup", type=float, default=60.0,
                    help="seconds of the soak before the RSS baseline is taken")
    ap.add_argument("--rss-bound-mib", type=float, default=20.0,
                    help="allowed RSS growth after the soak's warm-up")
    ap.add_argument("--ceiling-seconds", type=float, default=5.0,
                    help="closed-loop client ceiling against the instant upstream (0: skip)")
    ap.add_argument("--workers", type=int, default=1,
                    help="`semroute serve --workers N` for the gateway under test (its CPU and "
                         "RSS are summed over the supervisor and its workers)")
    ap.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy peer")
    ap.add_argument("--smoke", action="store_true",
                    help="2 s per row at 20 and 50 req/s, 6 s soak, no LiteLLM, no llama")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the result files")
    if ap.parse_known_args(argv)[0].smoke:  # smaller defaults; explicit flags still win
        ap.set_defaults(rates="20,50", seconds=2.0, stream_rate=20.0, stream_seconds=2.0,
                        llama_rate=0.0, soak_seconds=6.0, soak_rate=20.0, soak_warmup=2.0,
                        ceiling_seconds=1.0, no_litellm=True)
    args = ap.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    args.rates = [float(r) for r in str(args.rates).split(",") if r]
    return args


def answer_check(stream: bool) -> Callable[[Reply], str | None]:
    """A 200 that is not a whole answer is an error too."""
    def check(reply: Reply) -> str | None:
        if stream:
            return None if reply.body.rstrip().endswith(b"data: [DONE]") else "bad_stream"
        return None if b'"choices"' in reply.body and b'"content"' in reply.body \
            else "bad_body"
    return check


async def measure(name: str, proc: targets.Proc, rate: float, seconds: float, *,
                  stream: bool = False, max_tokens: int = 32, model: str | None = None,
                  upstream: targets.Proc | None = None) -> dict[str, Any]:
    """One row: `rate` req/s for `seconds` at one target, with the servers' CPU per request."""
    body = chat_body(model or MODEL[name], QUERIES, max_tokens=max_tokens, stream=stream)
    await settle(proc)
    cpu0, loop0 = proc.cpu_s(), proc.cpu_s(main_thread=True)
    by_pid0 = proc.cpu_by_pid()
    up0 = upstream.cpu_s() if upstream else 0.0
    res = await run_load("127.0.0.1", proc.port, PATH, body, rate, seconds,
                         check=answer_check(stream))
    row = res.summary()
    cpu_ms = (proc.cpu_s() - cpu0) * 1e3
    by_pid = {pid: s - by_pid0.get(pid, 0.0) for pid, s in proc.cpu_by_pid().items()}
    row |= {"target": name, "stream": stream,
            "server_cpu_ms_per_req": round(cpu_ms / max(1, res.sent), 3),
            "server_cpu_ms_per_answer": round(cpu_ms / max(1, res.ok), 3),
            "server_loop_thread_cpu_ms_per_req": round(
                (proc.cpu_s(main_thread=True) - loop0) * 1e3 / max(1, res.sent), 3),
            "server_rss_mib": round((proc.rss_kib() or 0) / 1024, 1),
            "server_cpu_share_by_process": [round(s * 1e3 / max(1.0, cpu_ms), 3) for s in
                                            sorted(by_pid.values(), reverse=True)]}
    if upstream is not None and upstream is not proc:
        row["upstream_cpu_ms_per_req"] = round((upstream.cpu_s() - up0) * 1e3
                                               / max(1, res.sent), 3)
    return row


async def settle(proc: targets.Proc, idle_share: float = 0.1, limit_s: float = 90.0) -> None:
    """Wait until `proc` is idle (< `idle_share` of a core over 0.5 s): a server still working
    off requests a saturated run abandoned would otherwise steal the next row's CPU."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = proc.cpu_s()
        await asyncio.sleep(0.5)
        if proc.cpu_s() - before < 0.5 * idle_share:
            return


def overheads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rate (and stream or not): each gateway's p50/p99 minus the direct call's."""
    out = []
    for r in rows:
        if r["target"] in ("direct", "llama-direct"):
            continue
        base_name = "llama-direct" if r["target"] == "semroute-llama" else "direct"
        base = next((b for b in rows if b["target"] == base_name and b["rate"] == r["rate"]
                     and b["stream"] == r["stream"]), None)
        if base is None or r["p50_ms"] is None or base["p50_ms"] is None:
            continue
        out.append({"target": r["target"], "rate": r["rate"], "stream": r["stream"],
                    "p50_ms": round(r["p50_ms"] - base["p50_ms"], 2),
                    "p99_ms": round(r["p99_ms"] - base["p99_ms"], 2),
                    "errors": r["errors"]})
    return out


def aim(over: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's aim at 200 req/s: overhead <= 3 ms p50 and <= 15 ms p99, below LiteLLM's,
    zero errors."""
    def at(target: str) -> dict[str, Any] | None:
        return next((o for o in over if o["target"] == target and o["rate"] == 200
                     and not o["stream"]), None)

    ours, peer = at("semroute"), at("litellm")
    result: dict[str, Any] = {"rate": 200, "semroute": ours, "litellm": peer}
    if ours is None:
        return result | {"met": None, "why": "no 200 req/s row"}
    checks = {"p50 <= 3 ms": ours["p50_ms"] <= 3.0, "p99 <= 15 ms": ours["p99_ms"] <= 15.0,
              "0 errors (all rows)": all(r["errors"] == 0 for r in rows)}
    if peer is not None:
        checks["below LiteLLM p50"] = ours["p50_ms"] < peer["p50_ms"]
        checks["below LiteLLM p99"] = ours["p99_ms"] < peer["p99_ms"]
    return result | {"checks": checks, "met": all(checks.values())}


async def soak(proc: targets.Proc, upstream: targets.Proc, args: argparse.Namespace,
               log: Callable[[str], None]) -> dict[str, Any]:
    """`soak_rate` req/s for `soak_seconds` at the gateway; its RSS every few seconds."""
    samples: list[tuple[float, int]] = []
    every = max(0.5, min(5.0, args.soak_seconds / 20))
    t0 = time.perf_counter()

    async def sample() -> None:
        while True:
            samples.append((round(time.perf_counter() - t0, 1), proc.rss_kib() or 0))
            await asyncio.sleep(every)

    sampler = asyncio.create_task(sample())
    row = await measure("semroute", proc, args.soak_rate, args.soak_seconds, upstream=upstream)
    sampler.cancel()
    samples.append((round(time.perf_counter() - t0, 1), proc.rss_kib() or 0))
    rss = [kib for _, kib in samples]
    after = [kib for t, kib in samples if t >= args.soak_warmup] or rss[-1:]
    base = after[0]
    growth = (rss[-1] - base) / 1024
    out = {"rate": args.soak_rate, "seconds": args.soak_seconds, "sample_every_s": every,
           "warmup_s": args.soak_warmup, "bound_mib": args.rss_bound_mib,
           "rss_start_mib": round(rss[0] / 1024, 1), "rss_after_warmup_mib": round(base / 1024, 1),
           "rss_end_mib": round(rss[-1] / 1024, 1), "rss_max_mib": round(max(rss) / 1024, 1),
           "growth_after_warmup_mib": round(growth, 1),
           "growth_total_mib": round((rss[-1] - rss[0]) / 1024, 1),
           "within_bound": growth < args.rss_bound_mib, "samples": samples, "load": row}
    log(f"soak: RSS {out['rss_start_mib']} → {out['rss_end_mib']} MiB (max {out['rss_max_mib']},"
        f" +{out['growth_after_warmup_mib']} after warm-up), {row['errors']} errors")
    return out


async def run_all(args: argparse.Namespace, work: Path,
                  log: Callable[[str], None]) -> dict[str, Any]:
    procs: list[targets.Proc] = []
    doc: dict[str, Any] = {"rows": [], "notes": []}
    try:
        up = targets.start_upstream(work)
        procs.append(up)
        routes = targets.bench_routes(work, f"http://127.0.0.1:{up.port}/v1")
        targets.build_index(routes, work / "index")
        gw = targets.start_gateway(work, routes, work / "index", workers=args.workers)
        procs.append(gw)
        servers = {"direct": up, "semroute": gw}
        if not args.no_litellm and targets.litellm_available():
            servers["litellm"] = targets.start_litellm(work, f"http://127.0.0.1:{up.port}/v1")
            procs.append(servers["litellm"])
            doc["litellm_version"] = targets.litellm_version()
        elif not args.no_litellm:
            doc["notes"].append(f"LiteLLM skipped: no venv at {targets.LITELLM_VENV}")
        log(f"servers up: {', '.join(f'{n} pid {p.pid}' for n, p in servers.items())}")
        if args.ceiling_seconds > 0:
            doc["client_ceiling"] = await closed_loop_ceiling(
                "127.0.0.1", up.port, PATH, chat_body("bench-model", QUERIES),
                args.ceiling_seconds)
            log(f"client ceiling (closed loop vs the instant upstream): {doc['client_ceiling']}")
        for name, proc in servers.items():  # warm-up, not recorded
            await measure(name, proc, 50, 3 if not args.smoke else 1)
        doc["rss_before_mib"] = {n: round((p.rss_kib() or 0) / 1024, 1)
                                 for n, p in servers.items()}
        plan = [(rate, False, args.seconds) for rate in args.rates]
        if args.stream_rate > 0:
            plan.append((args.stream_rate, True, args.stream_seconds))
        for rate, stream, seconds in plan:
            for name, proc in servers.items():
                row = await measure(name, proc, rate, seconds, stream=stream, upstream=up)
                doc["rows"].append(row)
                log(render_table([row]).splitlines()[-1])
        if args.llama_rate > 0:
            doc["rows"] += await llama_rows(args, work, log)
        if args.soak_seconds > 0:
            doc["soak"] = await soak(gw, up, args, log)
    finally:
        for p in reversed(procs):
            p.stop()
    return doc


async def llama_rows(args: argparse.Namespace, work: Path,
                     log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The local llama-server called directly, then through `semroute serve`, at a low rate."""
    from tests.support.llm_server import start_llm_server

    server = start_llm_server(threads=1)
    llama = targets.Proc("llama-server", server.port, server.process, server.log_path)
    gw = None
    try:
        routes = targets.bench_routes(work, server.openai_base_url, "routes-llama")
        gw = targets.start_gateway(work, routes, work / "index", "semroute-llama",
                                   workers=args.workers)
        rows = []
        for name, proc, model in (("llama-direct", llama, "local"),
                                  ("semroute-llama", gw, "semroute")):
            await measure(name, proc, args.llama_rate, 3, model=model,
                          max_tokens=args.llama_max_tokens)  # warm-up
            row = await measure(name, proc, args.llama_rate, args.llama_seconds, model=model,
                                max_tokens=args.llama_max_tokens, upstream=llama)
            rows.append(row)
            log(render_table([row]).splitlines()[-1])
        return rows
    finally:
        if gw is not None:
            gw.stop()
        server.stop()


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="semroute-gateway-bench-") as tmp:
        doc = asyncio.run(run_all(args, Path(tmp), log))
    doc["overhead"] = overheads(doc["rows"])
    doc["aim"] = aim(doc["overhead"], doc["rows"])
    doc["meta"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.gateway " + " ".join(args.argv),
        "machine": machine(), "semroute": __version__,
        "versions": versions(["uvicorn", "starlette", "openai", "httpx2", "numpy",
                              "onnxruntime"]),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - started, 1),
        "workers": args.workers,
        "settings": {k: v for k, v in vars(args).items() if k != "argv"} | {
            "out": str(args.out)},
        "queries": QUERIES,
    }
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    doc = run_benchmark(args)
    md = render_markdown(doc)
    print(f"semroute serve --workers {args.workers}")
    print(render_table(doc["rows"]))
    paths = save_results(doc, md, args.out, "gateway")
    print(f"\nwrote {paths[0]} and {paths[1]}")
    bad = sum(r["errors"] for r in doc["rows"]) + (doc.get("soak", {}).get("load", {})
                                                  .get("errors", 0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
