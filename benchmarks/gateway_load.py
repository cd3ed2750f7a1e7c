"""An open-loop HTTP/1.1 load generator for the gateway benchmark: raw asyncio keep-alive
connections (no client library in the way), requests sent on a fixed schedule.

Request i is due at `start + i / rate` whatever happened to the ones before it, and its latency
is measured from that due time to the last byte of its response: a server that stalls cannot
hide the requests that queued behind the stall (no coordinated omission). A run is bounded in
count (`rate * seconds`) and in time (`seconds + grace`): what has not finished by then is an
error ("timeout"). Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Body = Callable[[int], bytes]
# presented to every target as a bearer key (LiteLLM refuses a short master key)
CLIENT_KEY = "sk-" + hashlib.sha256(b"semroute gateway benchmark").hexdigest()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    first_byte: float  # perf_counter when the status line and headers had arrived


@dataclass
class LoadResult:
    """One run: latencies of the good answers (ms, from the due time), errors by kind, and
    how late the scheduler itself was (a client that cannot keep up shows here)."""

    rate: float
    seconds: float
    sent: int = 0
    ok: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    headers: Counter[str] = field(default_factory=Counter)
    send_lag_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    connections: int = 0
    retried: int = 0
    last_done: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms)
        ttfb = np.asarray(self.ttfb_ms)
        lag = np.asarray(self.send_lag_ms)

        def pct(a: np.ndarray[Any, Any], q: float) -> float | None:
            return round(float(np.percentile(a, q)), 3) if len(a) else None

        return {
            "rate": self.rate, "seconds": self.seconds, "sent": self.sent, "ok": self.ok,
            "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
            "achieved_rps": round(self.ok / self.wall_s, 1) if self.wall_s else 0.0,
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
            "max_ms": round(float(lat.max()), 3) if len(lat) else None,
            "mean_ms": round(float(lat.mean()), 3) if len(lat) else None,
            "ttfb_p50_ms": pct(ttfb, 50), "ttfb_p99_ms": pct(ttfb, 99),
            "send_lag_p99_ms": pct(lag, 99),
            "send_lag_max_ms": round(float(lag.max()), 3) if len(lag) else None,
            "client_cpu_pct": round(100 * self.client_cpu_s / self.wall_s, 1)
            if self.wall_s else None,
            "connections": self.connections, "reconnects": self.retried,
            "headers": dict(self.headers),
        }


class Pool:
    """Keep-alive connections to one host:port, opened on demand up to `limit`; a request
    that finds none free waits (its clock is already running). A connection idle for
    `max_idle_s` or closed by the server is dropped rather than reused (uvicorn closes idle
    ones after 5 s), as keep-alive clients do."""

    def __init__(self, host: str, port: int, limit: int = 512, max_idle_s: float = 3.0) -> None:
        self.host, self.port, self.limit, self.max_idle_s = host, port, limit, max_idle_s
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0
        self.peak = 0
        self._free = asyncio.Condition()

    async def acquire(self, fresh: bool = False,
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """(reader, writer, reused); `fresh`: a new connection whatever is idle."""
        async with self._free:
            while True:
                self._drop_stale()
                if self.idle and not fresh:
                    r, w, _ = self.idle.pop()  # the most recently used
                    return r, w, True
                if self.opened < self.limit:
                    break
                if fresh and self.idle:  # make room: close an idle one
                    self.idle.pop(0)[1].close()
                    self.opened -= 1
                    break
                await self._free.wait()
            self.opened += 1
            self.peak = max(self.peak, self.opened)
        try:
            r, w = await asyncio.open_connection(self.host, self.port, limit=2**20)
        except BaseException:
            await self._forget()
            raise
        return r, w, False

    def _drop_stale(self) -> None:
        now = time.monotonic()
        keep = []
        for r, w, since in self.idle:
            if now - since > self.max_idle_s or r.at_eof() or w.is_closing():
                w.close()
                self.opened -= 1
            else:
                keep.append((r, w, since))
        self.idle = keep

    async def release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                      reusable: bool) -> None:
        if reusable:
            async with self._free:
                self.idle.append((conn[0], conn[1], time.monotonic()))
                self._free.notify()
        else:
            conn[1].close()
            await self._forget()

    async def _forget(self) -> None:
        async with self._free:
            self.opened -= 1
            self._free.notify()

    def close(self) -> None:
        for _, w, _ in self.idle:
            w.close()
        self.idle.clear()


async def read_reply(reader: asyncio.StreamReader) -> tuple[Reply, bool]:
    """One HTTP/1.1 response (content-length or chunked); (reply, keep the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    first = time.perf_counter()
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:  # until close
        body = await reader.read()
        return Reply(status, headers, body, first), False
    return Reply(status, headers, body, first), headers.get("connection") != "close"


def request_bytes(host: str, port: int, path: str, body: bytes,
                  extra_headers: dict[str, str] | None = None,
                  key: str = CLIENT_KEY) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\naccept: application/json\r\n"
            f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n")
    for k, v in (extra_headers or {}).items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


async def send_one(pool: Pool, payload: bytes, timeout: float) -> tuple[Reply, bool]:
    """Send on a pooled connection; a reused connection that the server had closed is retried
    once on a fresh one (as any keep-alive client does). (reply, was retried)."""
    for attempt in (0, 1):
        r, w, reused = await pool.acquire(fresh=attempt == 1)
        got_bytes = False
        try:
            w.write(payload)
            reply, keep = await asyncio.wait_for(read_reply(r), timeout)
            got_bytes = True
            await pool.release((r, w), keep)
            return reply, attempt == 1
        except BaseException as exc:
            await pool.release((r, w), False)
            stale = reused and not got_bytes and isinstance(
                exc, asyncio.IncompleteReadError | ConnectionError)
            if attempt == 0 and stale:
                continue
            raise
    raise AssertionError("unreachable")


def header_tags(reply: Reply, keys: tuple[str, ...]) -> list[str]:
    return [f"{k}={reply.headers[k]}" for k in keys if k in reply.headers]


async def run_load(host: str, port: int, path: str, body: Body, rate: float, seconds: float,
                   *, timeout: float = 30.0, grace: float = 10.0, max_connections: int = 512,
                   extra_headers: dict[str, str] | None = None,
                   count_headers: tuple[str, ...] = ("x-semroute-method",),
                   check: Callable[[Reply], str | None] | None = None) -> LoadResult:
    """Send `rate * seconds` requests at a fixed rate; wait at most `grace` s after the last
    is due. `body(i)` makes request i's JSON body; `check(reply)` names a bad 200 (or None)."""
    total = max(1, round(rate * seconds))
    res = LoadResult(rate, seconds)
    pool = Pool(host, port, max_connections)
    payloads = [request_bytes(host, port, path, body(i), extra_headers) for i in range(total)]
    tasks: list[asyncio.Task[None]] = []

    async def one(due: float, payload: bytes) -> None:
        try:
            reply, retried = await send_one(pool, payload, timeout)
        except TimeoutError:
            res.errors["timeout"] += 1
            return
        except asyncio.CancelledError:
            res.errors["unfinished"] += 1
            raise
        except Exception as exc:
            res.errors[type(exc).__name__] += 1
            return
        done = time.perf_counter()
        res.last_done = max(res.last_done, done)
        res.retried += retried
        bad = f"http_{reply.status}" if reply.status != 200 else (check(reply) if check else None)
        if bad:
            res.errors[bad] += 1
            return
        res.ok += 1
        res.latencies_ms.append((done - due) * 1e3)
        res.ttfb_ms.append((reply.first_byte - due) * 1e3)
        for tag in header_tags(reply, count_headers):
            res.headers[tag] += 1

    cpu0 = time.process_time()
    start = time.perf_counter() + 0.05
    for i, payload in enumerate(payloads):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        res.send_lag_ms.append(max(0.0, (time.perf_counter() - due) * 1e3))
        tasks.append(asyncio.create_task(one(due, payload)))
        res.sent += 1
    last_due = start + (total - 1) / rate
    remaining = max(0.1, last_due + grace - time.perf_counter())
    _, pending = await asyncio.wait(tasks, timeout=remaining)
    for t in pending:
        t.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)
    # from the first due time to the last answer, plus one interval: a server that answers
    # instantly achieves exactly `rate`
    res.wall_s = (res.last_done or time.perf_counter()) - start + 1 / rate
    res.client_cpu_s = time.process_time() - cpu0
    res.connections = pool.peak
    pool.close()
    return res


async def closed_loop_ceiling(host: str, port: int, path: str, body: Body, seconds: float,
                              concurrency: int = 16) -> dict[str, Any]:
    """The most requests/s this client gets through `concurrency` connections kept busy for
    `seconds` (against an instant server: the client's own ceiling, a lower bound as the
    server shares the cores), with this process's CPU share."""
    pool = Pool(host, port, concurrency)
    done = 0
    stop_at = time.perf_counter() + seconds
    cpu0, t0 = time.process_time(), time.perf_counter()

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.perf_counter() < stop_at:
            reply, _ = await send_one(pool, request_bytes(host, port, path, body(i)), 10.0)
            if reply.status == 200:
                done += 1
            i += concurrency

    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    wall = time.perf_counter() - t0
    pool.close()
    return {"requests_per_s": round(done / wall, 1), "concurrency": concurrency,
            "seconds": round(wall, 2),
            "client_cpu_pct": round(100 * (time.process_time() - cpu0) / wall, 1)}


def chat_body(model: str, queries: list[str], *, max_tokens: int = 32,
              stream: bool = False) -> Body:
    """Request i: OpenAI chat body for a unique query (a numbered variant of one of
    `queries`), so no cache of query vectors can answer it."""

    def make(i: int) -> bytes:
        q = f"{queries[i % len(queries)]} (case {i})"
        doc: dict[str, Any] = {"model": model, "max_tokens": max_tokens,
                               "messages": [{"role": "user", "content": q}]}
        if stream:
            doc["stream"] = True
            doc["stream_options"] = {"include_usage": True}
        return json.dumps(doc).encode()

    return make
