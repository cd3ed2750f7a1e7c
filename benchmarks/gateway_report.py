"""Tables and the Markdown report of the gateway benchmark (benchmarks/gateway.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = ("target", "rate req/s", "achieved req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
           "errors", "server CPU ms/req (main thread)", "server CPU ms/answer", "conns",
           "client send lag p99 ms")


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def _cell(r: dict[str, Any], col: str) -> str:
    if col == "target":
        return r["target"] + (" (stream)" if r["stream"] else "")
    if col == "errors":
        kinds = ", ".join(f"{k} {v}" for k, v in r["error_kinds"].items())
        return f"{r['errors']}" + (f" ({kinds})" if kinds else "")
    if col == "server CPU ms/answer":  # per 200 answer: a saturated row's /req undercounts
        return _num(r.get("server_cpu_ms_per_answer"))
    if col.startswith("server CPU"):
        loop = r.get("server_loop_thread_cpu_ms_per_req")
        return _num(r["server_cpu_ms_per_req"]) + ("" if loop is None else f" ({loop:.2f})")
    key = {"rate req/s": "rate", "achieved req/s": "achieved_rps", "p50 ms": "p50_ms",
           "p90 ms": "p90_ms", "p99 ms": "p99_ms", "max ms": "max_ms",
           "conns": "connections",
           "client send lag p99 ms": "send_lag_p99_ms"}[col]
    v = r[key]
    return _num(v, "g") if col in ("rate req/s", "conns") else _num(v)


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def render_overhead(over: Sequence[dict[str, Any]]) -> str:
    lines = ["| gateway | rate req/s | overhead p50 ms | overhead p99 ms | errors |",
             "|---|---|---|---|---|"]
    lines += [f"| {o['target']}{' (stream)' if o['stream'] else ''} | {o['rate']:g} | "
              f"{o['p50_ms']:+.2f} | {o['p99_ms']:+.2f} | {o['errors']} |" for o in over]
    return "\n".join(lines)


def render_aim(a: dict[str, Any]) -> str:
    if a.get("met") is None:
        return f"Not assessed: {a.get('why', 'no data')}."
    checks = "; ".join(f"{k}: {'yes' if v else '**no**'}" for k, v in a["checks"].items())
    verdict = "**met**" if a["met"] else "**not met**"
    ours, peer = a["semroute"], a["litellm"]
    peer_txt = "" if peer is None else \
        f"; LiteLLM's proxy +{peer['p50_ms']:.2f} ms p50, +{peer['p99_ms']:.2f} ms p99"
    return (f"At 200 req/s semroute serve adds {ours['p50_ms']:+.2f} ms p50 and "
            f"{ours['p99_ms']:+.2f} ms p99 over the direct call{peer_txt}. Aim (≤ 3 ms p50, "
            f"≤ 15 ms p99, below LiteLLM, 0 errors): {verdict} ({checks}).")


def render_capacity(rows: Sequence[dict[str, Any]]) -> str:
    """The most answers per second each gateway gave in any non-streamed row (a saturated
    row shows the ceiling of one process on this machine)."""
    best: dict[str, float] = {}
    for r in rows:
        if r["target"] != "direct" and not r["stream"]:
            best[r["target"]] = max(best.get(r["target"], 0.0), r["achieved_rps"])
    if not best:
        return ""
    return ("Most answers per second achieved in any row: " +
            ", ".join(f"{k} {v:g}" for k, v in best.items()) +
            "; a row asking more queues (its latency counts the wait) and what is still "
            "unanswered 10 s after its last request was due is counted as an error "
            "(`unfinished`).")


def render_soak(s: dict[str, Any] | None) -> str:
    if not s:
        return "Not run."
    load = s["load"]
    verdict = "within" if s["within_bound"] else "**over**"
    return (f"`semroute serve` at {s['rate']:g} req/s for {s['seconds']:g} s "
            f"({load['sent']} requests, {load['errors']} errors, p50 {_num(load['p50_ms'])} ms,"
            f" p99 {_num(load['p99_ms'])} ms), RSS from /proc/<pid>/status every "
            f"{s['sample_every_s']:g} s: start {s['rss_start_mib']} MiB, after the "
            f"{s['warmup_s']:g} s warm-up {s['rss_after_warmup_mib']} MiB, end "
            f"{s['rss_end_mib']} MiB, max {s['rss_max_mib']} MiB; growth after warm-up "
            f"{s['growth_after_warmup_mib']:+.1f} MiB ({verdict} the bound of "
            f"{s['bound_mib']:g} MiB), {s['growth_total_mib']:+.1f} MiB in all.")


def _workers(n: int) -> str:
    return "one process, one uvicorn worker" if n <= 1 else \
        f"`--workers {n}`: uvicorn's supervisor and {n} worker processes on one socket, CPU " \
        f"and RSS summed over all of them"


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc["meta"]
    mc = m["machine"]
    ceiling = doc.get("client_ceiling")
    plain = [r for r in doc["rows"] if not r["target"].endswith("llama") and
             r["target"] != "llama-direct"]
    llama = [r for r in doc["rows"] if r not in plain]
    parts = [
        "# Gateway load benchmark",
        "",
        f"- Date: {m['date']}; command: `{m['command']}` ({m['wall_s']:g} s)",
        f"- Machine: {mc['cpu']}, {mc['cores']} cores, {mc['ram_gib']} GiB RAM, {mc['os']}, "
        f"Python {mc['python']}; load average (1/5/15 min) before {m['load_avg_before']}, "
        f"after {m['load_avg_after']} (the cores are shared with other work: see the send lag"
        f" column)",
        f"- semroute {m['semroute']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + (f"; LiteLLM {doc['litellm_version']}" if doc.get("litellm_version") else ""),
        "- Targets, each its own process on 127.0.0.1: **direct** = the instant upstream "
        "(`benchmarks/gateway_upstream.py`, raw asyncio HTTP/1.1, one fixed completion); "
        f"**semroute** = `semroute serve` as in production ({_workers(m.get('workers', 1))}, "
        "access log off, a gateway.yaml with one client key) on the example routes with every "
        "model pointed at the upstream: each request is decided (encoder + index, unique "
        "queries so no cache answers; the method header is counted below), then sent with "
        "the OpenAI SDK; "
        "**litellm** = LiteLLM's proxy (`litellm --config`, 1 worker, its defaults, a master "
        "key: the same bearer key semroute checks) with one model on the same upstream. Each "
        "row starts once the target's process is idle again.",
        "- Load: open loop, request i due at start + i/rate; latency from the due time to the "
        "last byte (queueing behind a stall counts: no coordinated omission); raw asyncio "
        "keep-alive connections opened on demand; non-streamed OpenAI chat bodies (max_tokens "
        "32) unless marked stream. Overhead = gateway percentile − direct percentile at the "
        "same rate (a difference of percentiles, not a percentile of differences). Server "
        "CPU (user + system, /proc) over the row, per request sent (in brackets: the event "
        "loop's thread alone) and per answer (a saturated row leaves requests unanswered, so "
        "its per-request figure undercounts).",
    ]
    if ceiling:
        parts.append(f"- Client ceiling: closed loop, {ceiling['concurrency']} connections, "
                     f"against the instant upstream: {ceiling['requests_per_s']:g} req/s with "
                     f"the client at {ceiling['client_cpu_pct']:g}% of a core (the upstream "
                     f"shares the cores, so the client alone does more); the highest rate here "
                     f"is {max(r['rate'] for r in doc['rows']):g} req/s.")
    parts += [f"- {n}" for n in doc.get("notes", [])]
    parts += ["", "## Latency by target and rate", "", render_table(plain), "",
              "## Overhead over the direct call", "", render_overhead(
                  [o for o in doc["overhead"] if o["target"] != "semroute-llama"]), "",
              "## Aim", "", render_aim(doc["aim"]), "", render_capacity(plain), ""]
    if llama:
        parts += ["## The local model end to end (llama-server, SmolLM2-135M)", "",
                  "`semroute-llama` is `semroute serve` with every model on the local "
                  "llama-server (one thread); `llama-direct` calls it directly with the same "
                  "bodies. The gateway adds the route's system prompt, so the model reads a "
                  "longer prompt: the difference is not all gateway.", "",
                  render_table(llama), ""]
    parts += ["## Memory soak", "", render_soak(doc.get("soak")), ""]
    methods: dict[str, int] = {}
    for r in doc["rows"]:
        if r["target"] == "semroute":
            for k, v in r["headers"].items():
                methods[k] = methods.get(k, 0) + v
    if methods:
        parts += ["## Decisions", "", "semroute rows, by `x-semroute-method`: " + ", ".join(
            f"{k.split('=', 1)[1]} {v}" for k, v in sorted(methods.items())) + ".", ""]
    rss = doc.get("rss_before_mib")
    if rss:
        parts += ["RSS after warm-up, before the runs (MiB): " +
                  ", ".join(f"{k} {v}" for k, v in rss.items()) + ".", ""]
    return "\n".join(parts)
