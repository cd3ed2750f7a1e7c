"""The gateway load benchmark's machinery: the open-loop load generator counts the time a
request queued behind a slow server (no coordinated omission) and every failure, and a tiny
run of benchmarks/gateway.py (instant upstream, `semroute serve`, a short soak) writes its
results. LiteLLM's proxy is a benchmark peer, not a test dependency: its test is skipped when
its venv is absent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from benchmarks import gateway as bench
from benchmarks import gateway_targets as targets
from benchmarks.gateway_load import chat_body, run_load

SLOW_MS = 40


async def _serial_server(delay_s: float, status: int = 200,
                         hang_up: bool = False) -> asyncio.Server:
    """A loopback server that answers one request at a time, each after `delay_s`; with
    `hang_up` it closes the connection after each answer without saying so."""
    lock = asyncio.Lock()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                async with lock:
                    await asyncio.sleep(delay_s)
                body = b'{"choices": [{"message": {"content": "ok"}}]}'
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s"
                             % (status, len(body), body))
                await writer.drain()
                if hang_up:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _load(delay_s: float, rate: float, seconds: float, status: int = 200,
          hang_up: bool = False) -> dict[str, object]:
    async def go() -> dict[str, object]:
        server = await _serial_server(delay_s, status, hang_up)
        port = server.sockets[0].getsockname()[1]
        async with server:
            res = await run_load("127.0.0.1", port, "/v1/chat/completions",
                                 chat_body("m", ["q"]), rate, seconds, grace=5)
        return res.summary()

    return asyncio.run(go())


def test_latency_counts_the_queue_behind_a_slow_server() -> None:
    # 40 requests due over 1 s at a server that serves one per 40 ms: the last is due at
    # ~1 s but answered at ~1.6 s. A closed-loop client would report ~40 ms for every one.
    s = _load(SLOW_MS / 1e3, rate=40, seconds=1)
    assert s["ok"] == 40 and s["errors"] == 0
    assert s["p50_ms"] >= SLOW_MS  # type: ignore[operator]
    assert s["p99_ms"] > 10 * SLOW_MS  # type: ignore[operator]
    assert s["achieved_rps"] < 30  # type: ignore[operator]


def test_an_instant_server_keeps_up_with_the_schedule() -> None:
    s = _load(0.0, rate=100, seconds=1)
    assert s["ok"] == 100 and s["errors"] == 0
    assert 90 <= s["achieved_rps"] <= 101  # type: ignore[operator]
    assert s["p50_ms"] < 20  # type: ignore[operator]


def test_a_server_that_hangs_up_between_requests_is_not_an_error() -> None:
    # keep-alive clients meet connections the server has closed; the generator reconnects
    s = _load(0.0, rate=50, seconds=0.6, hang_up=True)
    assert s["ok"] == 30 and s["errors"] == 0


def test_error_statuses_are_counted_not_timed() -> None:
    s = _load(0.0, rate=50, seconds=0.4, status=500)
    assert s["ok"] == 0 and s["errors"] == 20 and s["error_kinds"] == {"http_500": 20}
    assert s["p50_ms"] is None


def test_a_tiny_run_writes_results_for_upstream_and_gateway(tmp_path: Path) -> None:
    args = bench.parse_args(["--smoke", "--rates", "30", "--seconds", "1", "--soak-seconds",
                             "3", "--soak-warmup", "1", "--out", str(tmp_path)])
    doc = bench.run_benchmark(args, log=lambda _: None)
    rows = {(r["target"], r["stream"]): r for r in doc["rows"]}
    assert set(rows) == {("direct", False), ("semroute", False), ("direct", True),
                         ("semroute", True)}
    for r in rows.values():
        assert r["errors"] == 0 and r["ok"] == r["sent"] > 0
    gw = rows[("semroute", False)]
    assert gw["headers"] == {"x-semroute-method=index": gw["ok"]}  # decided, not defaulted
    assert gw["server_cpu_ms_per_req"] > 0
    over = [o for o in doc["overhead"] if o["target"] == "semroute"]
    assert len(over) == 2 and all(o["p50_ms"] is not None for o in over)
    soak = doc["soak"]
    assert soak["load"]["errors"] == 0 and len(soak["samples"]) >= 3
    assert soak["rss_start_mib"] > 50  # a real process's RSS, read from /proc
    assert doc["aim"]["met"] is None  # no 200 req/s row in this run
    md = bench.render_markdown(doc)
    bench.save_results(doc, md, tmp_path, "gateway")
    assert "## Overhead over the direct call" in (tmp_path / "gateway.md").read_text()
    assert json.loads((tmp_path / "gateway.json").read_text())["meta"]["machine"]["cores"]


@pytest.mark.skipif(not targets.litellm_available(),
                    reason=f"LiteLLM's proxy is not installed in {targets.LITELLM_VENV} "
                           f"(benchmarks/peers/README.md)")
def test_litellm_proxy_answers_through_the_same_upstream(tmp_path: Path) -> None:
    async def go() -> dict[str, object]:
        up = targets.start_upstream(tmp_path)
        try:
            peer = targets.start_litellm(tmp_path, f"http://127.0.0.1:{up.port}/v1")
            try:
                res = await run_load("127.0.0.1", peer.port, bench.PATH,
                                     chat_body("bench", bench.QUERIES), 10, 1,
                                     check=bench.answer_check(False))
                return res.summary()
            finally:
                peer.stop()
        finally:
            up.stop()

    s = asyncio.run(go())
    assert s["errors"] == 0 and s["ok"] == 10
