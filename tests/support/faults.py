"""Fault injection on 127.0.0.1: a server speaking the OpenAI and Anthropic wire formats that
answers each request with a fault drawn (seeded) from a weighted mix, and the harness that
sends concurrent traffic through `semroute.Dispatcher` and checks every request's outcome.

Shared by tests/test_reliability.py and benchmarks/reliability.py.

Faults (`FAULTS`), for both `/v1/chat/completions` and `/v1/messages`, streamed (SSE) or not:

    ok                  a valid answer (SSE with usage in the final chunk when streamed)
    slow_first_byte     a valid answer after `slow_s` of silence (less than the model timeout)
    http_429            429 with `Retry-After: <retry_after>`
    http_500, http_503  server errors (any `http_NNN` works, e.g. http_401 for per-model errors)
    timeout             no answer for `hold_s` (longer than the model timeout), then a close
    reset               part of the body (streamed: one text chunk), then a TCP reset (RST)
    malformed_json      200 with a body that is not JSON (`data:` lines that are not JSON)
    cut_before_text     the stream's opening events, then the connection is closed (FIN)
    cut_after_text      the opening events and `cut_after` text chunks, then a close
    stream_error_event  an SSE error event before any text (OpenAI `{"error":..}`, Anthropic
                        `event: error`, overloaded); a JSON 503 when not streamed
    truncated_stream    the opening events and `cut_after` text chunks, then a clean end of the
                        body with no closing events (no finish reason, no [DONE] or
                        message_stop); not streamed: like cut_after_text
    stall_after_text    the opening events and `cut_after` text chunks (not streamed: half the
                        body), then silence for `hold_s`, then a close

Connection refused is a property of a model, not of a request: `ModelDef(kind="refused")`
points the model at a loopback port with nothing listening.

Requests that offer tools get tool calls, and requests that end with a tool result get text
quoting it (tests/support/tool_turns.py); every body received is kept in `bodies`.

Other answers read `<server> [<fault>] says hello END`, so a truncated answer reported as a
success is visible, and the fault that produced an answer can be counted on the client side.
Error bodies (and malformed ones) echo the credentials the server received, so any path that
does not scrub the API key leaks the canary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import socket
import statistics
import struct
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import yaml

from tests.support.llm_server import free_port
from tests.support.tool_turns import calls_answer, result_chunks, tool_turn

FAULTS = (
    "ok",
    "slow_first_byte",
    "http_429",
    "http_500",
    "http_503",
    "timeout",
    "reset",
    "malformed_json",
    "cut_before_text",
    "cut_after_text",
    "stream_error_event",
    "truncated_stream",
    "stall_after_text",
)
ANSWERS = ("ok", "slow_first_byte")  # faults that end in a valid answer
CANARY_ENV = "SEMROUTE_FAULTS_API_KEY"
CANARY_KEY = "sk-FAKE-semroute-canary-1234567890"
_HTTP = re.compile(r"http_(\d{3})$")


def answer_chunks(server: str, fault: str) -> list[str]:
    """The text chunks of a valid answer: the first names the server and the fault, the
    last is " END"."""
    return [f"{server} [{fault}]", " says", " hello", " END"]


_TAG = re.compile(r"\[(\w+)\]")


# ---------------------------------------------------------------- the server


@dataclass
class Hit:
    """One request the server received, and the fault it answered with."""

    path: str
    stream: bool
    fault: str
    key_seen: bool  # the request carried CANARY_KEY (Authorization or x-api-key)


@dataclass
class FaultyServer:
    """Answers every POST with a fault drawn from `weights` (seeded, in arrival order).

    `weights` maps fault names (see FAULTS) to relative weights; `{"ok": 1}` is a healthy,
    fast OpenAI/Anthropic-compatible responder. Change it at runtime with `set_weights`.
    With `script`, the n-th request gets `script[n]` instead (the last one repeats).
    """

    name: str
    weights: Mapping[str, float]
    seed: int = 0
    script: Sequence[str] = ()
    slow_s: float = 0.15
    hold_s: float = 1.5
    retry_after: str = "0"
    cut_after: int = 2
    chunk_s: float = 0.0  # a valid streamed answer pauses this long before each text chunk
    tool_arguments: Mapping[str, Any] = field(default_factory=lambda: {"city": "Paris"})
    tool_calls: int = 1  # calls per tool-calling answer (tests/support/tool_turns.py)
    hits: list[Hit] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every request body, in order
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _conns: set[socket.socket] = field(default_factory=set, repr=False)
    _httpd: ThreadingHTTPServer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.set_weights(self.weights)
        _check_faults(self.script)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        unknown = _check_faults(weights, strict=False)
        if unknown or not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(f"bad fault weights {dict(weights)!r} (faults: {FAULTS})")
        with self._lock:
            self.weights = dict(weights)

    def draw(self, path: str, stream: bool, key_seen: bool) -> str:
        with self._lock:
            if self.script:
                fault = self.script[min(len(self.hits), len(self.script) - 1)]
            else:
                names = list(self.weights)
                fault = self._rng.choices(names, [self.weights[n] for n in names])[0]
            self.hits.append(Hit(path, stream, fault, key_seen))
            return fault

    def reset(self, seed: int) -> None:
        """Forget the requests seen so far and reseed the fault draws."""
        with self._lock:
            self.hits.clear()
            self._rng = random.Random(seed)

    def served(self) -> Counter[str]:
        """How often each fault was served."""
        with self._lock:
            return Counter(h.fault for h in self.hits)

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        port: int = self._httpd.server_address[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def start(self) -> FaultyServer:
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"faulty-{self.name}", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop accepting, release held requests and close every open connection."""
        self._stop.set()
        if self._httpd is None:
            return
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._httpd = None

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_faults(names: Iterable[str], *, strict: bool = True) -> list[str]:
    unknown = [f for f in names if f not in FAULTS and not _HTTP.match(f)]
    if unknown and strict:
        raise ValueError(f"unknown faults {unknown} (faults: {FAULTS} or http_NNN)")
    return unknown


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 16+ callers connect at once; the default backlog is 5

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that reset or drop a connection are part of the game: no traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


# ---- wire formats


def _openai_completion(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-faulty", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}


def _anthropic_message(model: str, text: str) -> dict[str, Any]:
    return {"id": "msg_faulty", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 5}}


def _error_body(flavour: str, status: int, message: str) -> dict[str, Any]:
    if flavour == "openai":
        kind = {429: "rate_limit_error", 401: "authentication_error"}.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "code": str(status)}}
    kind = {429: "rate_limit_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _sse(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _openai_events(model: str, chunks: Sequence[str],
                   include_usage: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(opening events, one event per text chunk, closing events) of an OpenAI stream."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-faulty", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    opening = [_sse(None, chunk({"role": "assistant", "content": ""}))]
    texts = [_sse(None, chunk({"content": c})) for c in chunks]
    closing = [_sse(None, chunk({}, "stop"))]
    if include_usage:
        closing.append(_sse(None, {
            "id": "chatcmpl-faulty", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(chunks),
                      "total_tokens": 7 + len(chunks)}}))
    closing.append(_sse(None, "[DONE]"))
    return opening, texts, closing


def _anthropic_events(model: str,
                      chunks: Sequence[str]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(opening events, one event per text chunk, closing events) of an Anthropic stream."""
    opening = [
        _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_faulty", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 7, "output_tokens": 1}}}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        _sse("ping", {"type": "ping"}),
    ]
    texts = [_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": c}})
             for c in chunks]
    closing = [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": len(chunks)}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return opening, texts, closing


def _handler_for(server: FaultyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # idle keep-alive connections are closed after this

        def setup(self) -> None:
            super().setup()
            # headers and body go out in separate writes: without this, Nagle's algorithm
            # and the client's delayed ACK add ~40 ms to every answer
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with server._lock:
                server._conns.add(self.connection)

        def finish(self) -> None:
            with server._lock:
                server._conns.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def do_POST(self) -> None:
            try:
                self._serve()
            except (OSError, ValueError):  # the client went away (e.g. after its timeout)
                self.close_connection = True

        # ---- one request

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            path = self.path.split("?", 1)[0]
            if path.endswith("/chat/completions"):
                flavour = "openai"
            elif path.endswith("/messages"):
                flavour = "anthropic"
            else:
                self._json(404, {"error": {"message": f"no route {path}"}})
                return
            creds = f"{self.headers.get('authorization')} {self.headers.get('x-api-key')}"
            stream = bool(body.get("stream"))
            fault = server.draw(path, stream, CANARY_KEY in creds)
            with server._lock:
                server.bodies.append(body)
            model = str(body.get("model", "faulty"))
            echo = f"injected {fault} by {server.name}; you sent {creds}"
            chunks = answer_chunks(server.name, fault)
            turn = tool_turn(flavour, body, server.tool_arguments, server.tool_calls)
            if turn is not None and turn.result is not None:  # quote the tool's result
                chunks = result_chunks(server.name, fault, turn.result)
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if flavour == "openai":
                opening, texts, closing = _openai_events(model, chunks, include_usage)
                whole = _openai_completion(model, "".join(chunks))
            else:
                opening, texts, closing = _anthropic_events(model, chunks)
                whole = _anthropic_message(model, "".join(chunks))
            if turn is not None and turn.calls:  # the answer calls tools (answers only)
                whole, events = calls_answer(flavour, model, turn, include_usage)
                opening, texts, closing = events[:1], events[1:-1], events[-1:]

            status = _HTTP.match(fault)
            if status:
                code = int(status.group(1))
                headers = {"retry-after": server.retry_after} if code == 429 else {}
                self._json(code, _error_body(flavour, code, echo), headers)
            elif fault in ANSWERS:
                if fault == "slow_first_byte":
                    server._stop.wait(server.slow_s)
                if stream:
                    self._sse_start()
                    self._sse_send(opening)
                    for text in texts:  # a slow model: `chunk_s` before each chunk
                        server._stop.wait(server.chunk_s)
                        self._sse_send([text])
                    self._sse_send(closing)
                    self._sse_end()
                else:
                    self._json(200, whole)
            elif fault == "timeout":
                server._stop.wait(server.hold_s)
                self.close_connection = True  # and never answer
            elif fault == "malformed_json":
                if stream:
                    self._sse_start()
                    event = "" if flavour == "openai" else "event: content_block_delta\n"
                    broken = f"{event}data: {{'not json' {echo}\n\n".encode()
                    self._sse_send([*opening, broken])
                    self._sse_end()
                else:
                    data = b'{"id": "chatcmpl-faulty", "choices": [{"message": ' + echo.encode()
                    self._json(200, data)
            elif fault == "stream_error_event":
                if not stream:
                    self._json(503, _error_body(flavour, 503, echo))
                    return
                self._sse_start()
                if flavour == "openai":
                    err = _sse(None, {"error": {"message": echo, "type": "server_error",
                                                "code": "503"}})
                else:
                    err = _sse("error", {"type": "error", "error": {
                        "type": "overloaded_error", "message": echo}})
                self._sse_send([*opening, err])
                self._sse_end()
            elif fault == "truncated_stream" and stream:
                self._sse_start()
                self._sse_send([*opening, *texts[: server.cut_after]])
                self._sse_end()
            elif fault in ("cut_before_text", "cut_after_text", "reset", "truncated_stream",
                           "stall_after_text"):
                keep = {"cut_before_text": 0, "reset": 1}.get(fault, server.cut_after)
                if stream:
                    self._sse_start()
                    self._sse_send([*opening, *texts[:keep]])
                    if fault == "reset":  # let the client read the chunk before the RST
                        server._stop.wait(0.05)
                else:
                    data = json.dumps(whole).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                if fault == "stall_after_text":
                    server._stop.wait(server.hold_s)
                self._abort(rst=fault == "reset")
            else:  # pragma: no cover - set_weights rejects unknown faults
                raise AssertionError(fault)

        # ---- writing

        def _json(self, status: int, payload: Any,
                  headers: Mapping[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _sse_start(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()

        def _sse_send(self, events: Sequence[bytes]) -> None:
            for e in events:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(e), e))
                self.wfile.flush()

        def _sse_end(self) -> None:
            self.wfile.write(b"0\r\n\r\n")

        def _abort(self, *, rst: bool) -> None:
            """End the connection mid-body: a FIN, or with `rst` a TCP reset."""
            self.close_connection = True
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.rfile.close()
            if rst:
                self.connection.close()  # linger 0: the kernel sends RST, not FIN
            else:
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


# ---------------------------------------------------------------- mixes

Flavour = Literal["openai", "anthropic"]
Mode = Literal["sync", "async", "stream", "astream"]
MODES: tuple[Mode, ...] = ("sync", "async", "stream", "astream")

# A flaky model: about 9 requests in 16 fail, with every fault the suite knows about that a client
# can recover from by failing over (stream_error_event and truncated_stream are exercised by
# their own tests).
FLAKY: dict[str, float] = {
    "ok": 6.0, "slow_first_byte": 1.0, "http_429": 1.5, "http_500": 1.5, "http_503": 1.5,
    "timeout": 0.25, "reset": 1.0, "malformed_json": 1.0, "cut_before_text": 1.0,
    "cut_after_text": 1.0,
}
HEALTHY: dict[str, float] = {"ok": 1.0}


@dataclass(frozen=True)
class ModelDef:
    """One model of a mix's chain.

    kind "faulty": a FaultyServer with `weights` (HEALTHY makes a healthy one); "refused": a
    port with nothing listening; "external": an existing server at `base_url` (llama-server,
    without /v1) whose answers are real text."""

    key: str
    flavour: Flavour
    kind: Literal["faulty", "refused", "external"] = "faulty"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(HEALTHY))
    base_url: str | None = None
    script: tuple[str, ...] = ()  # faults in arrival order instead of weights
    retry_after: str = "0"
    api_key_env: str = CANARY_ENV  # another (unset) variable: a "missing key" model

    @property
    def always_answers(self) -> bool:
        return self.kind == "external" or (
            self.kind == "faulty" and not self.script and set(self.weights) <= set(ANSWERS))

    @property
    def per_model_failure(self) -> bool:
        """Every call fails in a way only another model can fix (missing key, 401/403/404):
        one attempt, then the next model."""
        if self.api_key_env != CANARY_ENV:
            return True
        faults = set(self.script or self.weights)
        return self.kind == "faulty" and all(
            (m := _HTTP.match(f)) is not None and int(m.group(1)) in (401, 403, 404)
            for f in faults)


@dataclass(frozen=True)
class Mix:
    """A route's model chain, with the router settings the run uses."""

    name: str
    models: tuple[ModelDef, ...]
    cooldown_seconds: float = 0.0
    attempts_per_model: int = 2
    backoff_seconds: float = 0.002
    timeout_s: float = 1.0  # each faulty model's timeout; the timeout fault holds longer
    slow_s: float = 0.15  # slow_first_byte: well under timeout_s
    note: str = ""

    @property
    def chain(self) -> list[str]:
        return [m.key for m in self.models]

    @property
    def healthy_tail(self) -> bool:
        """The last model never fails: every request must end in an answer."""
        return self.models[-1].always_answers


def standard_mixes() -> list[Mix]:
    """The mixes of the suite and the benchmark."""
    return [
        Mix("failover", (
            ModelDef("flaky_oa", "openai", weights=FLAKY),
            ModelDef("flaky_an", "anthropic", weights=FLAKY),
            ModelDef("healthy", "openai"),
        ), note="No cooldown, so every request walks the chain in order"),
        Mix("all-flaky", (
            ModelDef("flaky_an", "anthropic", weights=FLAKY),
            ModelDef("flaky_oa", "openai", weights=FLAKY),
            ModelDef("dead", "openai", "refused"),
        ), cooldown_seconds=0.05, note="About one request in ten must fail; 50 ms cooldowns "
                                       "reorder the chain (cooling models are tried last)"),
    ]


def llama_mix(llama_base_url: str, flavour: Flavour = "openai") -> Mix:
    """Very flaky models in front of the real llama-server (base URL without /v1), so that
    most requests end up there."""
    front = {**FLAKY, "ok": 0.5, "slow_first_byte": 0.5}  # 9 in 10 fail
    return Mix(f"llama-{flavour}", (
        ModelDef("flaky_oa", "openai", weights=front),
        ModelDef("flaky_an", "anthropic", weights=front),
        ModelDef("llama", flavour, "external", base_url=llama_base_url),
    ), note=f"The flaky models fail 9 requests in 10, so most requests reach the local "
            f"llama-server (SmolLM2-135M, {flavour} API, 1 thread, max_tokens 8)")


# ---------------------------------------------------------------- route set and index

_ROUTES: dict[str, dict[str, Any]] = {
    "greet": {"name": "greet", "description": "Greetings and small talk.",
              "utterances": ["hi there", "hello, how are you", "good morning friend",
                             "hey what's up", "nice to meet you"]},
    "code": {"name": "code", "description": "Writing code.",
             "utterances": ["write a python function to sort a list",
                            "implement binary search in java", "reverse a linked list in C",
                            "write a SQL query joining two tables",
                            "create a REST endpoint in flask"]},
}


def write_route_set(directory: Path, models: Mapping[str, Mapping[str, Any]],
                    chain: Sequence[str], **settings: Any) -> Path:
    """Two small routes, both mapped to `chain` (models are not part of the index, so one
    index serves every chain)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, spec in _ROUTES.items():
        (directory / f"{stem}.yaml").write_text(yaml.safe_dump({**spec, "model": list(chain)}))
    router = {"default_route": "greet", **settings}
    catalogue = {"profile": "faults", "profiles": {"faults": dict(models)}, "router": router}
    (directory / "models.yaml").write_text(yaml.safe_dump(catalogue))
    return directory


def build_fault_index(workdir: Path) -> Path:
    """Build the index of the fault route set once; returns the index folder."""
    from semroute.index import build_index

    routes = write_route_set(workdir / "routes-index",
                             {"m": {"provider": "openai", "model": "m"}}, ["m"])
    build_index(routes, workdir / "index")
    return workdir / "index"


@contextlib.contextmanager
def running(mix: Mix, seed: int) -> Iterator[dict[str, FaultyServer]]:
    """Start the mix's fault servers; stop them afterwards."""
    servers: dict[str, FaultyServer] = {}
    try:
        for i, m in enumerate(mix.models):
            if m.kind == "faulty":
                servers[m.key] = FaultyServer(
                    m.key, m.weights, seed=seed * 1000 + i, script=m.script,
                    retry_after=m.retry_after, slow_s=mix.slow_s,
                    hold_s=mix.timeout_s + 0.5).start()
        yield servers
    finally:
        for s in servers.values():
            s.stop()


def _timeout(mix: Mix, m: ModelDef) -> float:
    """The mix's timeout for models that may time out or answer slowly; generous ones for
    healthy and real models, so that a loaded machine cannot turn their answers into faults."""
    if m.kind == "external":
        return 60.0
    if m.kind == "faulty" and not m.script and set(m.weights) == {"ok"}:
        return 10.0
    return mix.timeout_s


def catalogue_models(mix: Mix, servers: Mapping[str, FaultyServer]) -> dict[str, Any]:
    """Catalogue entries: every model reads its key from CANARY_ENV."""
    out: dict[str, Any] = {}
    for m in mix.models:
        if m.kind == "faulty":
            root = servers[m.key].base_url
        elif m.kind == "refused":
            root = f"http://127.0.0.1:{free_port()}"
        else:
            assert m.base_url, f"{m.key}: an external model needs base_url"
            root = m.base_url
        out[m.key] = {"provider": m.flavour, "model": f"{m.key}-model",
                      "base_url": f"{root}/v1" if m.flavour == "openai" else root,
                      "api_key_env": m.api_key_env,
                      "timeout": _timeout(mix, m),
                      "input_price": 1.0, "output_price": 2.0}
    return out


# ---------------------------------------------------------------- capturing logs


class LeakHandler(logging.Handler):
    """Formats every record (tracebacks included) and keeps those that contain `secret`."""

    def __init__(self, secret: str) -> None:
        super().__init__(logging.DEBUG)
        self.secret = secret
        self.lines = 0
        self.leaks: list[str] = []
        self.asyncio_errors: list[str] = []  # e.g. a stream or task nobody closed

    def emit(self, record: logging.LogRecord) -> None:
        try:  # what any formatter would show: the message, the traceback, the stack
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            if record.stack_info:
                text += "\n" + record.stack_info
        except Exception:  # a record that cannot be formatted is still checked
            text = repr(record.__dict__)
        self.lines += 1
        if self.secret in text:
            self.leaks.append(f"{record.name} {record.levelname} {text}"[:400])
        if record.name.startswith("asyncio") and record.levelno >= logging.ERROR:
            self.asyncio_errors.append(text[:400])


LOGGERS = ("semroute", "openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2",
           "asyncio")


@contextlib.contextmanager
def capture_logs(secret: str = CANARY_KEY) -> Iterator[LeakHandler]:
    """DEBUG records of semroute, both SDKs, the HTTP stack and asyncio go to a LeakHandler
    only (they do not propagate, so pytest does not store them)."""
    handler = LeakHandler(secret)
    saved = []
    for name in LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level, lg.propagate))
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


@contextlib.contextmanager
def canary_env() -> Iterator[None]:
    """CANARY_ENV holds CANARY_KEY for the duration."""
    old = os.environ.get(CANARY_ENV)
    os.environ[CANARY_ENV] = CANARY_KEY
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(CANARY_ENV, None)
        else:
            os.environ[CANARY_ENV] = old


# ---------------------------------------------------------------- running requests


@dataclass
class Outcome:
    """How one request ended, as its caller saw it."""

    index: int
    query: str
    response: Any = None  # semroute Response, once dispatch() returned
    error: BaseException | None = None
    phase: str | None = None  # where the error surfaced: "dispatch" or "stream"
    chunks: list[str] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = False
    closed_early: bool = False  # the caller left the stream after its first chunk

    @property
    def answered(self) -> bool:
        return self.finished and self.error is None and self.response is not None


def _query(run: str, i: int) -> str:
    return f"hello there, this is request {i} of {run}"


def _fail(o: Outcome, exc: BaseException) -> None:
    o.error = exc
    o.phase = "dispatch" if o.response is None else "stream"


def _one_sync(d: Any, o: Outcome, stream: bool, max_tokens: int, early: bool) -> None:
    t0 = time.perf_counter()
    try:
        o.response = d.dispatch(o.query, max_tokens=max_tokens, stream=stream)
        if stream and early:
            with o.response as r:
                for chunk in r:
                    o.chunks.append(chunk)
                    break
            o.closed_early = True
        elif stream:
            for chunk in o.response:
                o.chunks.append(chunk)
    except Exception as exc:  # typed or not: the checks classify it
        _fail(o, exc)
    finally:
        o.seconds = time.perf_counter() - t0
        o.finished = True


async def _one_async(d: Any, o: Outcome, stream: bool, max_tokens: int,
                     early: bool) -> None:
    t0 = time.perf_counter()
    try:
        o.response = await d.adispatch(o.query, max_tokens=max_tokens, stream=stream)
        if stream and early:
            async with o.response as r:
                async for chunk in r:
                    o.chunks.append(chunk)
                    break
            o.closed_early = True
        elif stream:
            async for chunk in o.response:
                o.chunks.append(chunk)
    except Exception as exc:
        _fail(o, exc)
    finally:
        o.seconds = time.perf_counter() - t0
        o.finished = True


def run_requests(d: Any, mode: Mode, queries: Sequence[str], *, concurrency: int,
                 max_tokens: int = 16, deadline_s: float = 300.0,
                 close_early_every: int = 0) -> list[Outcome]:
    """Send every query through `d` with `concurrency` callers (threads for sync and stream,
    asyncio tasks for async and astream). Requests unfinished at the deadline stay
    `finished=False` (lost). With `close_early_every=k`, every k-th streamed request leaves
    its stream after the first chunk (`with` / `async with` the response)."""
    outcomes = [Outcome(i, q) for i, q in enumerate(queries)]
    stream = mode in ("stream", "astream")

    def early(o: Outcome) -> bool:
        return close_early_every > 0 and o.index % close_early_every == close_early_every - 1

    if mode in ("sync", "stream"):
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="caller")
        futures = [pool.submit(_one_sync, d, o, stream, max_tokens, early(o))
                   for o in outcomes]
        end = time.monotonic() + deadline_s
        for f in futures:
            with contextlib.suppress(Exception):
                f.result(timeout=max(0.0, end - time.monotonic()))
        pool.shutdown(wait=False, cancel_futures=True)
        return outcomes

    async def main() -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(o: Outcome) -> None:
            async with gate:
                await _one_async(d, o, stream, max_tokens, early(o))

        tasks = [asyncio.create_task(one(o)) for o in outcomes]
        _done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    asyncio.run(main())
    return outcomes


# ---------------------------------------------------------------- checking


@dataclass
class RunReport:
    """What happened to every request of one run, and every broken invariant."""

    mix: str
    mode: str
    requests: int
    concurrency: int
    answered: int = 0
    typed_errors: int = 0
    mid_stream_errors: int = 0
    closed_early: int = 0  # streams the caller left after one chunk (counted as answered)
    lost: int = 0  # untyped exceptions and requests that never finished
    trace_records: int = 0
    lost_trace_records: int = 0  # requests without exactly one trace record
    key_leaks: int = 0
    failovers: int = 0  # requests that moved on from a model to the next
    attempts: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    log_lines: int = 0
    errors_by_type: Counter[str] = field(default_factory=Counter)
    answered_by: Counter[str] = field(default_factory=Counter)
    faults_served: Counter[str] = field(default_factory=Counter)
    violations: dict[str, list[str]] = field(default_factory=dict)

    def violate(self, kind: str, detail: str) -> None:
        self.violations.setdefault(kind, []).append(detail)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> dict[str, Any]:
        """A JSON-ready row: counts, percentiles and violations (up to 5 examples each)."""
        def pct(xs: Sequence[float], q: float) -> float | None:
            if not xs:
                return None
            s = sorted(xs)
            return float(s[min(len(s) - 1, int(q * len(s)))])

        return {
            "mix": self.mix, "mode": self.mode, "requests": self.requests,
            "concurrency": self.concurrency, "answered": self.answered,
            "typed_errors": self.typed_errors, "mid_stream_errors": self.mid_stream_errors,
            "closed_early": self.closed_early,
            "lost": self.lost, "trace_records": self.trace_records,
            "lost_trace_records": self.lost_trace_records, "key_leaks": self.key_leaks,
            "attempts_p50": statistics.median(self.attempts) if self.attempts else None,
            "attempts_max": max(self.attempts, default=None), "failovers": self.failovers,
            "latency_p50_ms": pct(self.latencies_ms, 0.5),
            "latency_p95_ms": pct(self.latencies_ms, 0.95),
            "wall_s": round(self.wall_s, 2), "log_lines": self.log_lines,
            "errors_by_type": dict(self.errors_by_type),
            "answered_by": dict(self.answered_by), "faults_served": dict(self.faults_served),
            "violations": {k: {"count": len(v), "examples": v[:5]}
                           for k, v in sorted(self.violations.items())},
        }

    def describe(self) -> str:
        """The broken invariants, for an assertion message."""
        lines = [f"{self.mix}/{self.mode}: {self.requests} requests, {self.answered} answered, "
                 f"{self.typed_errors} typed errors, {self.lost} lost"]
        for kind, found in sorted(self.violations.items()):
            lines.append(f"  {kind}: {len(found)}")
            lines += [f"    e.g. {x}" for x in found[:3]]
        return "\n".join(lines)


def _error_text(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    parts += [repr(a) for a in getattr(exc, "attempts", None) or []]
    return "\n".join(parts)


def _retryable(status: int | None) -> bool:
    return status is None or status in (408, 409, 429) or status >= 500


def _groups(attempts: Sequence[Any]) -> list[list[Any]]:
    """Consecutive attempts on the same model."""
    groups: list[list[Any]] = []
    for a in attempts:
        if groups and groups[-1][0].model_key == a.model_key:
            groups[-1].append(a)
        else:
            groups.append([a])
    return groups


def check_attempts(report: RunReport, mix: Mix, o: Outcome, attempts: Sequence[Any]) -> None:
    """Attempts are consistent with the chain and attempts_per_model."""
    where = f"request {o.index}"
    per_model = mix.attempts_per_model
    if not attempts:
        report.violate("attempts: none listed", where)
        return
    groups = _groups(attempts)
    keys = [g[0].model_key for g in groups]
    shown = [(a.model_key, a.try_number, a.ok, a.status) for a in attempts]
    if len(set(keys)) != len(keys) or not set(keys) <= set(mix.chain):
        report.violate("attempts: models repeated or outside the chain", f"{where}: {shown}")
    if len(attempts) > per_model * len(mix.chain):
        report.violate("attempts: more than attempts_per_model x chain", f"{where}: {shown}")
    for g in groups:
        if [a.try_number for a in g] != list(range(1, len(g) + 1)) or len(g) > per_model:
            report.violate("attempts: try numbers not 1..n <= attempts_per_model",
                           f"{where}: {shown}")
    for a in attempts[:-1]:
        if a.ok:
            report.violate("attempts: a success before the last attempt", f"{where}: {shown}")
    for a in attempts:
        if not a.ok and not a.error:
            report.violate("attempts: failed attempt without error text", f"{where}: {shown}")
    fatal = {m.key for m in mix.models if m.per_model_failure}
    for g in groups[:-1]:  # a model is left after all its tries, or after a fatal error
        key = g[0].model_key
        if key in fatal and len(g) != 1:
            report.violate("attempts: a per-model failure (key, 401/403/404) was retried",
                           f"{where}: {shown}")
        elif key not in fatal and len(g) != per_model and _retryable(g[-1].status):
            report.violate("attempts: model left before attempts_per_model tries",
                           f"{where}: {shown}")
    if o.answered:
        last = attempts[-1]
        if not last.ok or last.model_key != o.response.model_key:
            report.violate("attempts: answer not from the last, successful attempt",
                           f"{where}: {shown} answered by {o.response.model_key}")
    if mix.cooldown_seconds == 0 and keys != mix.chain[: len(keys)]:
        report.violate("attempts: chain order not followed", f"{where}: {keys}")


def check_run(mix: Mix, mode: Mode, outcomes: Sequence[Outcome], records: Sequence[Any],
              trace_text: str, logs: LeakHandler, servers: Mapping[str, FaultyServer],
              *, concurrency: int, wall_s: float) -> RunReport:
    """Every invariant of the suite, for one run."""
    from semroute.errors import AllModelsFailedError, SemrouteError

    rep = RunReport(mix.name, mode, len(outcomes), concurrency, wall_s=wall_s,
                    log_lines=logs.lines)
    stream = mode in ("stream", "astream")
    by_query: dict[str, list[Any]] = {}
    for rec in records:
        by_query.setdefault(str(rec.get("query")), []).append(rec)
    rep.trace_records = len(records)
    queries = {o.query for o in outcomes}
    foreign = [q for q in by_query if q not in queries]
    if foreign:
        rep.violate("trace: records for no request of this run", f"{foreign[:3]}")
    attempts_to: Counter[str] = Counter()
    valid_taken: Counter[str] = Counter()  # valid answers the callers received, per model
    fatal = {m.key for m in mix.models if m.per_model_failure}
    external = {m.key for m in mix.models if m.kind == "external"}

    for o in outcomes:
        where = f"request {o.index}"
        err = o.error
        if not o.finished:
            rep.lost += 1
            rep.violate("lost: request never finished", where)
            continue
        if err is not None and not isinstance(err, SemrouteError):
            rep.lost += 1
            rep.violate(f"lost: untyped {type(err).__module__}.{type(err).__name__}",
                        f"{where} ({o.phase}, after {len(o.chunks)} chunks): {str(err)[:160]}")
        elif err is not None:
            rep.typed_errors += 1
            rep.errors_by_type[type(err).__name__] += 1
            if o.phase == "stream":
                rep.mid_stream_errors += 1
        else:
            rep.answered += 1
        rep.latencies_ms.append(o.seconds * 1e3)
        if err is not None and CANARY_KEY in _error_text(err):
            rep.key_leaks += 1
            rep.violate("key leak: error text", f"{where}: {type(err).__name__}")
        if o.response is not None and CANARY_KEY in repr(o.response):
            rep.key_leaks += 1
            rep.violate("key leak: response repr", where)

        # -- how it ended
        r = o.response
        if o.answered:
            rep.answered_by[r.model_key] += 1
            rep.closed_early += o.closed_early
            tag = _TAG.search(o.chunks[0]) if o.closed_early and o.chunks else None
            if not o.closed_early or (tag and tag.group(1) in ANSWERS):
                valid_taken[r.model_key] += 1
            text = "".join(o.chunks) if stream else r.text
            if stream and text != r.text:
                rep.violate("answer: streamed chunks differ from response.text",
                            f"{where}: {text!r} vs {r.text!r}")
            complete = bool(text.strip()) if r.model_key in external else text.endswith(" END")
            if not complete and not o.closed_early:
                rep.violate("answer: incomplete text reported as success", f"{where}: {text!r}")
        elif err is not None and isinstance(err, SemrouteError):
            brief = f"{where}: {type(err).__name__}: {str(err)[:200]}"
            if o.phase == "stream" and not o.chunks:
                rep.violate("stream: error before the first chunk, not failed over", brief)
            if o.phase == "dispatch" and not isinstance(err, AllModelsFailedError):
                rep.violate(f"error: {type(err).__name__} raised, not failed over", brief)
            if o.phase == "dispatch" and mix.healthy_tail:
                rep.violate("error: raised although the last model always answers", brief)
        # -- attempts
        attempts = list(r.attempts) if r is not None else list(getattr(err, "attempts", None)
                                                               or [])
        if o.phase == "dispatch" and err is not None and isinstance(err, SemrouteError) \
                and not getattr(err, "attempts", None):
            rep.violate("error: does not list its attempts", f"{where}: {type(err).__name__}")
        if attempts:
            check_attempts(rep, mix, o, attempts)
            rep.attempts.append(len(attempts))
            if len({a.model_key for a in attempts}) > 1:
                rep.failovers += 1
            attempts_to.update(a.model_key for a in attempts)
            if isinstance(err, AllModelsFailedError):
                tried = [len(g) for g in _groups(attempts)]
                if tried and tried[-1] != mix.attempts_per_model \
                        and attempts[-1].model_key not in fatal:
                    rep.violate("all models failed: the last model was not tried "
                                "attempts_per_model times", f"{where}: {tried}")
                if {a.model_key for a in attempts} != set(mix.chain):
                    rep.violate("all models failed: not every model of the chain was tried",
                                f"{where}: tried {[a.model_key for a in attempts]}")
                missing = [a for a in attempts if str(a.error) not in str(err)]
                if missing:
                    rep.violate("all models failed: message does not list every attempt", where)
        # -- its trace record
        recs = by_query.get(o.query, [])
        if len(recs) != 1:
            rep.lost_trace_records += 1
            rep.violate(f"trace: {len(recs)} records for one request",
                        f"{where} ({'answered' if o.answered else type(err).__name__}"
                        f"{', mid-stream' if o.phase == 'stream' else ''})")
            continue
        rec = recs[0]
        rid = r.request_id if r is not None else getattr(err, "request_id", None)
        if rid is not None and rec.get("request_id") != rid:
            rep.violate("trace: request_id differs from the response/error", where)
        if (rec.get("error") is None) != o.answered:
            rep.violate("trace: error field does not match the outcome",
                        f"{where}: error={rec.get('error')!r}, answered={o.answered}")
        traced = [(a["model_key"], a["try_number"], a["status"]) for a in rec["attempts"]]
        mine = [(a.model_key, a.try_number, a.status) for a in attempts]
        if traced != mine:
            rep.violate("trace: attempts differ from the response/error", f"{where}")
        if o.answered and rec.get("model_key") != r.model_key:
            rep.violate("trace: model_key differs from the response", where)

    # -- the key
    if CANARY_KEY in trace_text:
        rep.key_leaks += 1
        rep.violate("key leak: trace file", f"{trace_text.count(CANARY_KEY)} occurrences")
    if logs.leaks:
        rep.key_leaks += len(logs.leaks)
        rep.violate("key leak: log lines", logs.leaks[0][:300])
    for text in logs.asyncio_errors:
        rep.violate("asyncio: error logged (an unclosed stream or unretrieved task?)", text)
    # -- the servers' side: every request they saw is an attempt, every answer was taken
    keyless = {m.key for m in mix.models if m.api_key_env != CANARY_ENV}
    for key, srv in servers.items():
        hits = list(srv.hits)
        rep.faults_served.update(h.fault for h in hits)
        if not all(h.key_seen for h in hits):
            rep.violate("setup: the canary key did not reach the server", key)
        if len(hits) != (0 if key in keyless else attempts_to[key]):
            rep.violate("attempts: server saw a different number of requests",
                        f"{key}: server {len(hits)}, recorded attempts {attempts_to[key]}")
        valid = sum(h.fault in ANSWERS for h in hits)
        if valid > valid_taken[key]:
            rep.violate("answers: a valid answer was discarded (slow first byte timed out?)",
                        f"{key}: served {valid} valid answers, {valid_taken[key]} taken")
        elif valid < valid_taken[key]:
            rep.violate("answers: a broken answer was taken for a valid one",
                        f"{key}: served {valid} valid answers, {valid_taken[key]} taken")
    return rep


# ---------------------------------------------------------------- one run


class MixRun:
    """A mix's servers, route set and router, started once and run in any number of modes:
    each `run` gets a fresh Dispatcher (cooldowns, trace file) and freshly seeded servers.

        with MixRun(mix, index, workdir) as m:
            report = m.run("sync", requests=200, concurrency=16)
    """

    def __init__(self, mix: Mix, index: Path, workdir: Path, *, seed: int = 0) -> None:
        self.mix, self.index, self.workdir, self.seed = mix, index, workdir, seed
        self.servers: dict[str, FaultyServer] = {}
        self.router: Any = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> MixRun:
        from semroute.routing import Router

        try:
            self.servers = self._stack.enter_context(running(self.mix, self.seed))
            routes = write_route_set(
                self.workdir / f"routes-{self.mix.name}-{uuid.uuid4().hex[:6]}",
                catalogue_models(self.mix, self.servers), self.mix.chain,
                attempts_per_model=self.mix.attempts_per_model,
                backoff_seconds=self.mix.backoff_seconds,
                cooldown_seconds=self.mix.cooldown_seconds)
            self.router = Router.load(routes, self.index, classifier=False)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(self, mode: Mode, *, requests: int, concurrency: int, seed: int | None = None,
            max_tokens: int = 16, deadline_s: float = 300.0,
            close_early_every: int = 10) -> RunReport:
        """Dispatch `requests` unique queries through a fresh Dispatcher (trace to a JSONL file,
        query text included to match records to requests) and check every invariant. Every
        `close_early_every`-th streamed request is left after its first chunk."""
        return self.collect(mode, requests=requests, concurrency=concurrency, seed=seed,
                            max_tokens=max_tokens, deadline_s=deadline_s,
                            close_early_every=close_early_every).check()

    def collect(self, mode: Mode, *, requests: int, concurrency: int, seed: int | None = None,
                max_tokens: int = 16, deadline_s: float = 300.0,
                close_early_every: int = 10) -> RunData:
        """`run` without the checks: what happened, as the checks see it."""
        from semroute.dispatching import Dispatcher

        seed = self.seed if seed is None else seed
        for i, srv in enumerate(self.servers.values()):
            srv.reset(seed * 1000 + i)
        run = f"{self.mix.name}-{mode}-{seed}-{uuid.uuid4().hex[:6]}"
        trace = self.workdir / f"trace-{run}.jsonl"
        d = Dispatcher(self.router, trace=trace, include_query=True, rng=random.Random(seed))
        queries = [_query(run, i) for i in range(requests)]
        with canary_env(), capture_logs() as logs:
            t0 = time.perf_counter()
            outcomes = run_requests(d, mode, queries, concurrency=concurrency,
                                    max_tokens=max_tokens, deadline_s=deadline_s,
                                    close_early_every=close_early_every)
            wall = time.perf_counter() - t0
        trace_text = trace.read_text(encoding="utf-8") if trace.exists() else ""
        return RunData(self.mix, mode, outcomes, trace_text, logs, self.servers, concurrency,
                       wall)


@dataclass
class RunData:
    """The raw material of one run: outcomes, the trace file's text, the captured logs."""

    mix: Mix
    mode: Mode
    outcomes: list[Outcome]
    trace_text: str
    logs: LeakHandler
    servers: Mapping[str, FaultyServer]
    concurrency: int
    wall_s: float

    def check(self) -> RunReport:
        records = [json.loads(x) for x in self.trace_text.splitlines() if x.strip()]
        return check_run(self.mix, self.mode, self.outcomes, records, self.trace_text,
                         self.logs, self.servers, concurrency=self.concurrency,
                         wall_s=self.wall_s)


def run_mix(mix: Mix, mode: Mode, *, index: Path, workdir: Path, requests: int,
            concurrency: int, seed: int = 0, max_tokens: int = 16,
            deadline_s: float = 300.0, close_early_every: int = 10) -> RunReport:
    """One run of one mix in one mode (see MixRun)."""
    with MixRun(mix, index, workdir, seed=seed) as m:
        return m.run(mode, requests=requests, concurrency=concurrency, max_tokens=max_tokens,
                     deadline_s=deadline_s, close_early_every=close_early_every)
