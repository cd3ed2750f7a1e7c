"""A realistic week for `semroute monitor`: real dispatches on the example routes against a
loopback fake upstream, then the report (the README's picture comes from it).

    python -m benchmarks.monitor_demo [--requests 1400] [--out benchmarks/results/monitor_demo]

What is real: every request goes through `Dispatcher.dispatch` on a copy of `routes/` (the
real index, rules, classifier, cascades, retries and failover) against a loopback
OpenAI-compatible server that answers every catalogue key, with the catalogue's cloud prices,
so the trace lines, tokens and costs are what semroute writes. The server's usage grows with
the prompt and varies per route; the `fast` key fails with 503 for a stretch (an outage:
failovers to `fast_backup`).

What is journalled for real: the example set's `router.outcomes.log_requests` journals every
answered request; `router.shadow` (rate 0.2, reference `powerful`) sends a fifth of them to the
reference in the background and asks the judge (`powerful` too) twice, positions swapped;
feedback goes through `Dispatcher.feedback` on 6% of requests (thumbs, and route corrections
on some classifier decisions). The loopback judge is scripted: an answer that `fast` gave
under `simple_qa`'s system prompt from day 4 on is sloppy and loses to the reference 70% of
the time (else a tie); otherwise the judge calls the pair a tie 60% of the time and prefers
either answer 20%, the same way in both orders.

What is simulated: the calendar. The requests run in seconds, so each trace line's `ts` (and
its shadow and feedback lines', and the store's journal, feedback, shadow and outcome rows')
is moved to its place in a 7-day week ending 2026-11-30 00:00 UTC, and the mix drifts: the
share of queries the route files do not cover (travel, legal, health...) rises from 5% to 45%
over the week. The store's times are rewritten with SQL after the run: that is the only
write to the store the demo makes itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
WEEK = 7 * 86400
END = 1795996800.0  # 2026-11-30T00:00:00Z
UNCOVERED = [
    "my landlord won't give back my deposit, what are my options",
    "plan a three day trip to lisbon on a budget",
    "is it safe to take ibuprofen with coffee",
    "what's the best time of year to see the northern lights in norway",
    "how do I appeal a parking ticket in ohio",
    "which vpn protocol should my small office use",
    "my dog ate a grape, should I worry",
    "can I deduct a home office on my taxes as a freelancer",
    "recommend a beginner running plan for a 10k",
    "what documents do I need to renew a passport",
    "how long should I rest a steak after grilling",
    "is a heat pump worth it in a cold climate",
    "what to pack for a week of hiking in the dolomites",
    "my toddler has a fever of 39, when should I see a doctor",
    "how do I negotiate a higher salary offer",
    "which houseplants are safe for cats",
    "can my employer read my work email",
    "how much should I tip a tour guide in japan",
    "what's a good stretching routine for lower back pain",
    "how do I get a refund for a cancelled flight in the eu",
    "best way to store fresh herbs in the fridge",
    "do I need a visa to visit brazil with a canadian passport",
    "how can I improve my sleep without medication",
    "is it legal to record a phone call in california",
]
OUTAGE = (0.38, 0.42)  # share of the week when `fast` answers 503
REFERENCE = "powerful"  # the shadow reference and judge (requests it served are not compared)
SHADOW_SHARE = 0.2
DEGRADED = ("simple_qa", "fast")  # from day 4 its accepted cheap answers lose to the reference
DEGRADED_FROM = 3 / 7  # share of the week
SIMPLE_QA_PROMPT = "Explain clearly and briefly"  # simple_qa's system prompt: how the fake knows
SLOPPY = "(sloppy)"
FEEDBACK_SHARE = 0.06


class Upstream:
    """A loopback OpenAI-compatible server for every catalogue key (model = the key)."""

    def __init__(self) -> None:
        self.fail_fast = False
        self.degraded = False  # `fast` answers simple_qa sloppily (from day 4)
        self.lock = threading.Lock()
        self.calls = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"] or 0)))
                status, doc = upstream.answer(body)
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = str(body.get("model"))
        with self.lock:
            self.calls += 1
        if model == "fast" and self.fail_fast:
            return 503, {"error": {"message": "overloaded", "type": "server_error"}}
        text = " ".join(str(m.get("content")) for m in body.get("messages", []))
        rng = random.Random(text if model == "fast" else f"{model}|{text}")  # answers differ
        fmt = body.get("response_format") or {}
        labels = (((fmt.get("json_schema") or {}).get("schema") or {}).get("properties") or {}
                  ).get("label", {}).get("enum")
        if labels == ["A", "B", "tie"]:  # the shadow judge
            reply, out = json.dumps({"label": judge(text)}), 4
        elif labels:  # the classifier: usually the top candidate, sometimes none of them
            label = labels[0] if rng.random() < 0.75 or len(labels) == 1 else "none"
            reply, out = json.dumps({"label": label if label in labels else labels[-1]}), 6
        else:
            out = int(rng.uniform(60, 700) * (1.6 if "code" in text or "debug" in text else 1))
            reply = f"A fake answer of {out} tokens. Confidence: {rng.uniform(0.55, 0.97):.2f}"
            if model == "fast" and self.degraded and SIMPLE_QA_PROMPT in text:
                reply += f" {SLOPPY}"
        prompt = max(8, len(text) // 4)
        return 200, {
            "id": "chatcmpl-demo", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": out,
                      "total_tokens": prompt + out}}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def judge(prompt: str) -> str:
    """The scripted judge, consistent across the two orders (it judges the pair, not the
    positions): a sloppy answer loses 70% of the time (else tie); otherwise the first answer
    by text wins 20%, the second 20%, tie 60%."""
    a = prompt.split("Answer A:", 1)[-1].split("Answer B:", 1)[0].strip()
    b = prompt.split("Answer B:", 1)[-1].strip()
    u = random.Random("|".join(sorted([a, b]))).random()
    if (SLOPPY in a) != (SLOPPY in b):
        better = b if SLOPPY in a else a
    else:
        better = "" if u < 0.6 else min(a, b) if u < 0.8 else max(a, b)
        u = 0.0
    if u >= 0.7 or not better or a == b:
        return "tie"
    return "A" if better == a else "B"


def route_set(work: Path, upstream: Upstream, trace: Path, store: Path) -> Path:
    """A copy of routes/ whose cloud keys all point at the loopback upstream, same prices,
    journalling into `store` and shadowing a fifth of the answers against `powerful`."""
    routes = work / "routes"
    shutil.copytree(REPO / "routes", routes)
    cat = yaml.safe_load((routes / "models.yaml").read_text())
    for key, entry in cat["profiles"]["cloud"].items():
        entry.update(provider="openai", model=key, base_url=upstream.url, timeout=10)
        entry.pop("api_key_env", None)
    cat["profile"] = "cloud"
    cat["router"].update(backoff_seconds=0.005, cooldown_seconds=0.5,
                         trace_path=str(trace))
    assert cat["router"]["outcomes"]["log_requests"], "the example set journals requests"
    cat["router"]["outcomes"]["path"] = str(store)
    cat["router"]["shadow"] = {"rate": SHADOW_SHARE, "reference": REFERENCE,
                               "max_queued": 4096}  # the demo outruns the worker
    (routes / "models.yaml").write_text(yaml.safe_dump(cat, sort_keys=False))
    return routes


def labelled() -> list[str]:
    with (REPO / "examples" / "labelled" / "test.csv").open() as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    with (REPO / "examples" / "labelled" / "valid.csv").open() as f:
        return rows + [r["text"] for r in csv.DictReader(f)]


def run_traffic(routes: Path, index: Path, upstream: Upstream, n: int, seed: int
                ) -> tuple[list[float], dict[str, int]]:
    """Dispatch `n` requests, with feedback on some; returns each one's simulated time (in
    trace order) and the dispatcher's journal, shadow and feedback counts."""
    from semroute.dispatching import Dispatcher
    from semroute.errors import SemrouteError
    from semroute.routing import Router

    rng = random.Random(seed)
    covered = labelled()
    dispatcher = Dispatcher(Router.load(routes, index, classifier=True))
    names = sorted(dispatcher.router.routes.names)
    stamps, feedback = [], 0
    for i in range(n):
        phase = i / n
        ts = END - WEEK + phase * WEEK + rng.uniform(0, WEEK / n)
        upstream.fail_fast = OUTAGE[0] <= phase < OUTAGE[1]
        upstream.degraded = phase >= DEGRADED_FROM
        roll = rng.random()
        kwargs: dict[str, Any] = {"max_tokens": 800}
        if roll < 0.03:
            kwargs["step"] = rng.choice(["planning", "tool_call", "summarise"])
        elif roll < 0.05:
            kwargs["model"] = rng.choice(["fast", "powerful"])
        query = rng.choice(UNCOVERED) if rng.random() < 0.05 + 0.40 * phase else \
            rng.choice(covered)
        if rng.random() < 0.3:  # the same questions, worded a little differently
            query = re.sub(r"[?!.]+$", "", query) + rng.choice([" please", "?", " thanks"])
        stamps.append(ts)
        try:
            r = dispatcher.dispatch(query, **kwargs)
        except SemrouteError as exc:
            print(f"request {i}: {type(exc).__name__}", file=sys.stderr)
            continue
        if rng.random() < FEEDBACK_SHARE:  # a user's thumbs; a correction on some
            good = rng.random() < (0.45 if SLOPPY in r.text else 0.85)
            label = rng.choice(names) if r.decision.method == "classifier" and not good and \
                rng.random() < 0.5 else None
            dispatcher.feedback(r.request_id, score=good, label=label)
            feedback += 1
    assert dispatcher.recorder is not None
    dispatcher.shadow.worker.join()
    dispatcher.recorder.close()
    counts = {"feedback": feedback, "journal dropped": dispatcher.recorder.dropped,
              **{f"shadow {k}": v for k, v in dispatcher.shadow.counters().items()}}
    return stamps, counts


def restamp(trace: Path, stamps: list[float]) -> dict[str, float]:
    """Move each request line to its simulated time, its shadow line 30 s and its feedback
    line 2 min later; returns the time of each request id."""
    from datetime import UTC, datetime

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")

    records = [json.loads(line) for line in trace.read_text().splitlines()]
    requests = [r for r in records if "kind" not in r]
    if len(requests) != len(stamps):
        raise SystemExit(f"{len(requests)} request lines for {len(stamps)} requests")
    at = {r["request_id"]: ts for r, ts in zip(requests, stamps, strict=True)}
    later = {"shadow": 30.0, "feedback": 120.0}
    for rec in records:
        rec["ts"] = iso(at[rec["request_id"]] + later.get(rec.get("kind", ""), 0.0))
    trace.write_text("".join(json.dumps(r) + "\n" for r in records))
    return at


def restamp_store(store: Path, at: dict[str, float]) -> dict[str, int]:
    """The same calendar in the store (journal, feedback, shadow verdicts, outcome records);
    returns its row counts."""
    import sqlite3

    conn = sqlite3.connect(store)
    with conn:
        for table, later in (("requests", 0.0), ("shadow", 30.0), ("feedback", 120.0),
                             ("records", 120.0)):
            conn.executemany(f"UPDATE {table} SET ts = ? WHERE request_id = ?",
                             [(ts + later, rid) for rid, ts in at.items()])
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("requests", "feedback", "shadow")}
    conn.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "monitor_demo"))
    ap.add_argument("--work", default=None, help="keep the trace, store and routes here")
    args = ap.parse_args(argv)
    from semroute.cli import main as semroute
    from semroute.index import build_index

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="monitor-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    trace, store = work / "trace.jsonl", work / "outcomes.db"
    for p in (trace, store, work / "routes"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    upstream = Upstream()
    try:
        routes = route_set(work, upstream, trace, store)
        build_index(routes, work / "index")
        t0 = time.perf_counter()
        stamps, live = run_traffic(routes, work / "index", upstream, args.requests, args.seed)
        took = time.perf_counter() - t0
    finally:
        upstream.stop()
    counts = restamp_store(store, restamp(trace, stamps))
    print(f"shadow and journal: {live}", file=sys.stderr)
    with trace.open("a") as f:  # what a crash mid-write leaves: one truncated line
        f.write('{"ts": "2026-11-29T23:59:59.000+00:00", "request_id": "cut')
    print(f"{args.requests} dispatches in {took:.1f} s ({upstream.calls} upstream calls); "
          f"journal {counts}; work folder {work}", file=sys.stderr)
    code = semroute(["monitor", "--routes", str(routes), "--trace", str(trace), "--store",
                     str(store), "--since", "2026-11-23", "--until", "2026-11-30",
                     "--bucket", "12h", "--out", args.out])
    if code == 0:
        summarise(args, took, upstream.calls, counts, live)
    return code


def summarise(args: argparse.Namespace, took: float, calls: int,
              counts: dict[str, int], live: dict[str, int]) -> None:
    """benchmarks/results/monitor_demo.md: the machine, the command, the run, the headline."""
    from benchmarks.machine import machine, save_results

    report = json.loads((Path(args.out) / "monitor.json").read_text())
    m, s, d = machine(), report["savings"], report["drift"]
    flagged = [f for f in report["quality"]["below_threshold"] if f["flagged"]]
    rows = [("requests dispatched", args.requests), ("dispatch wall time s", f"{took:.1f}"),
            ("upstream calls (retries, classifier, cascade steps, shadow reference and judge)",
             calls),
            ("store rows: journal / feedback / shadow verdicts",
             f"{counts['requests']} / {counts['feedback']} / {counts['shadow']}"),
            ("shadow: sampled / written / dropped / failed / skipped",
             " / ".join(str(live[f"shadow {k}"]) for k in
                        ("sampled", "written", "dropped", "failed", "skipped"))),
            ("cost USD / all on " + str(s["baseline"]),
             f"{s['actual_usd']:.4f} / {s['baseline_usd']:.4f}"),
            ("saved", f"{s['saved_share']:.1%}"),
            ("method shares", ", ".join(f"{k} {v:.1%}" for k, v in report["methods"].items())),
            ("drift", d["verdict"]),
            ("flagged routes", ", ".join(f"{f['route']}/{f['model']} (n={f['n']}, mean "
                                         f"{f['mean']:.2f})" for f in flagged) or "none")]
    md = "\n".join([
        "# semroute monitor demo", "",
        f"Command: `python -m benchmarks.monitor_demo --requests {args.requests} --seed "
        f"{args.seed}`. Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, Python "
        f"{m['python']} (shared with other jobs).", "",
        "Real dispatches on a copy of routes/ against a loopback upstream, journalled, "
        "shadow-evaluated (20%, judged by a scripted loopback judge) and given feedback by "
        "semroute itself; the calendar is simulated (see the script's docstring). The "
        "report: [monitor_demo/report.md](monitor_demo/report.md).", "",
        "| figure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), ""])
    print(md)
    save_results({"machine": m, "requests": args.requests, "seed": args.seed,
                  "dispatch_s": took, "upstream_calls": calls, "journal": counts, "live": live,
                  "report": report}, md, Path(args.out).parent, "monitor_demo")


if __name__ == "__main__":
    sys.exit(main())
