"""Helpers for dispatch tests: one small route set and index, re-pointed at other models, and
a scripted streaming server for the failures a real stream can have."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from semroute.dispatching import Dispatcher
from semroute.index import build_index
from semroute.routing import Router
from semroute.telemetry import TraceSink
from tests.conftest import TINY_ROUTES
from tests.support.llm_server import LLMServer

PRICES = {"input_price": 2.0, "output_price": 8.0}


def catalogue(models: dict[str, dict[str, Any]], **router: Any) -> dict[str, Any]:
    settings = {"default_route": "greet", "backoff_seconds": 0.01, "cooldown_seconds": 60.0}
    settings.update(router)
    return {"profile": "test", "profiles": {"test": models}, "router": settings}


def write_set(directory: Path, models: dict[str, dict[str, Any]], chain: list[str], *,
              system_prompt: str | None = "Answer in one short sentence.",
              **router: Any) -> Path:
    """Write TINY_ROUTES with every route mapped to `chain` (utterances unchanged, so an index
    built from any such set stays valid: models are not part of the index); `system_prompt`
    None leaves the routes without one (it counts in a budget's token bound)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, spec in TINY_ROUTES.items():
        spec = copy.deepcopy(spec)
        spec["model"] = chain
        if system_prompt is not None:
            spec["system_prompt"] = system_prompt
        (directory / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    (directory / "models.yaml").write_text(yaml.safe_dump(catalogue(models, **router)))
    return directory


def load(directory: Path, index: Path, *, classifier: bool = True) -> Router:
    return Router.load(directory, index, classifier=classifier)


def shared_index(root: Path) -> Path:
    """Build the TINY_ROUTES index once under `root` (model chains are not part of it)."""
    routes = write_set(root / "routes", {"m": {"provider": "openai", "model": "x"}}, ["m"])
    build_index(routes, root / "index")
    return root / "index"


def dispatcher_factory(directory: Path, index: Path) -> Callable[..., Dispatcher]:
    """`make(models, chain, trace=True, ...)`: a Dispatcher over TINY_ROUTES whose every route
    uses `chain`; extra keywords become router settings in models.yaml."""

    def make(models: dict[str, dict[str, Any]], chain: list[str], *,
             trace: bool | TraceSink | Path = True, classifier: bool = False,
             include_query: bool | None = None, **router: Any) -> Dispatcher:
        routes = write_set(directory / "routes", models, chain, **router)
        sink: TraceSink | Path | None = directory / "trace.jsonl" if trace is True else \
            None if trace is False else trace
        return Dispatcher(load(routes, index, classifier=classifier), trace=sink,
                          include_query=include_query)

    return make


def live_openai(server: LLMServer) -> dict[str, Any]:
    """A catalogue entry for the test llama-server through the OpenAI SDK."""
    return {"provider": "openai", "model": "local", "base_url": server.openai_base_url,
            "timeout": 60, **PRICES}


def live_anthropic(server: LLMServer) -> dict[str, Any]:
    """A catalogue entry for the test llama-server through the Anthropic SDK."""
    return {"provider": "anthropic", "model": "local", "base_url": server.base_url,
            "timeout": 60, **PRICES}


def entry(kind: str, base_url: str, **extra: Any) -> dict[str, Any]:
    """A catalogue entry for any loopback server speaking `kind`'s API (base_url without /v1)."""
    url = f"{base_url}/v1" if kind == "openai" else base_url
    return {"provider": kind, "model": f"{kind}-model", "base_url": url, "timeout": 10,
            **PRICES, **extra}


# ---------------------------------------------------------------- a scripted SSE server

STREAM_TEXT = ["Hello", " from", " the", " stream", "."]


class SseServer:
    """A loopback server that streams chat completions (OpenAI SSE on /v1/chat/completions,
    Anthropic SSE on /v1/messages) and misbehaves on cue. `behaviours` are taken one per
    request, the last repeating:

    - "ok": every chunk of STREAM_TEXT, then a normal end with usage;
    - "error_first" / "drop_first" / "malformed_first" / "truncated_first": the stream's
      preamble, then an error event / a dropped connection / a `data:` line that is not JSON /
      a clean end of the body without the closing events, before any text;
    - "error_mid" / "drop_mid" / "truncated_mid": two text chunks, then an error event / a
      dropped connection / a clean end without the closing events (no finish reason);
    - "endless": a text chunk every 20 ms until the client goes away (`disconnected` is set).

    A request that does not ask to stream gets a 200 whose JSON body is cut off ("malformed")
    whatever the behaviour.
    """

    def __init__(self, behaviours: Sequence[str]) -> None:
        self.behaviours = list(behaviours)
        self.hits = 0
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _sse_handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def next_behaviour(self) -> str:
        with self._lock:
            b = self.behaviours[min(self.hits, len(self.behaviours) - 1)]
            self.hits += 1
            return b

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _openai_events(behaviour: str) -> Iterator[bytes | None]:
    """SSE frames for the OpenAI flavour; None means 'drop the connection now'."""
    def chunk(delta: dict[str, Any], finish: str | None = None,
              usage: dict[str, int] | None = None) -> bytes:
        body = {"id": "chatcmpl-sse", "object": "chat.completion.chunk", "created": 1,
                "model": "sse", "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish}] if usage is None else [],
                "usage": usage}
        return f"data: {json.dumps(body)}\n\n".encode()

    error = (b'data: {"error": {"message": "injected stream fault", "type": "server_error", '
             b'"code": 500}}\n\n')
    yield chunk({"role": "assistant", "content": ""})
    yield from _scripted(behaviour, lambda text: chunk({"content": text}), error)
    yield chunk({}, "stop")
    yield chunk({}, usage={"prompt_tokens": 7, "completion_tokens": len(STREAM_TEXT),
                           "total_tokens": 7 + len(STREAM_TEXT)})
    yield b"data: [DONE]\n\n"


def _anthropic_events(behaviour: str) -> Iterator[bytes | None]:
    """SSE frames for the Anthropic flavour; None means 'drop the connection now'."""
    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

    error = event("error", {"error": {"type": "overloaded_error",
                                      "message": "injected stream fault"}})
    yield event("message_start", {"message": {
        "id": "msg_sse", "type": "message", "role": "assistant", "model": "sse", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 1}}})
    yield event("content_block_start", {"index": 0,
                                        "content_block": {"type": "text", "text": ""}})
    yield from _scripted(behaviour, lambda text: event("content_block_delta", {
        "index": 0, "delta": {"type": "text_delta", "text": text}}), error)
    yield event("content_block_stop", {"index": 0})
    yield event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": len(STREAM_TEXT)}})
    yield event("message_stop", {})


END_BODY = b""  # a frame that means: end the body cleanly here, closing events or not
MALFORMED = b"data: {not json\n\n"


def _scripted(behaviour: str, text_frame: Callable[[str], bytes],
              error: bytes) -> Iterator[bytes | None]:
    if behaviour == "endless":
        while True:
            yield text_frame("tick ")
            time.sleep(0.02)
    faults = {"error": error, "drop": None, "malformed": MALFORMED, "truncated": END_BODY}
    kind, _, where = behaviour.partition("_")
    if where == "first":
        yield faults[kind]
        return
    for i, text in enumerate(STREAM_TEXT):
        if i == 2 and where == "mid":
            yield faults[kind]
            return
        yield text_frame(text)


def _sse_handler(server: SseServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            behaviour = server.next_behaviour()
            path = self.path.split("?", 1)[0]
            if not body.get("stream"):
                cut = b'{"id": "cut-off", "choices": [{"index": 0, "mess'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(cut)))
                self.send_header("connection", "close")
                self.close_connection = True
                self.end_headers()
                self.wfile.write(cut)
                return
            events = _openai_events(behaviour) if path.endswith("/chat/completions") \
                else _anthropic_events(behaviour)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("connection", "close")  # one request per connection
            self.close_connection = True
            self.end_headers()
            try:
                for frame in events:
                    if frame is None:  # drop mid-body: no terminating chunk
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if frame == END_BODY:
                        break
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                    self.wfile.flush()
                    if b"injected stream fault" in frame or frame == MALFORMED:
                        break
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                server.disconnected.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
