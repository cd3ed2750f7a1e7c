"""An instant OpenAI-compatible upstream for the gateway benchmark: a raw asyncio HTTP/1.1
server (keep-alive, no framework) that answers every chat completion with one fixed reply, so
what a gateway adds in front of it is all that is left to measure.

    python -m benchmarks.gateway_upstream PORT      # prints "ready PORT" once listening

`POST /v1/chat/completions` (and `/chat/completions`): the fixed completion, or with
`"stream": true` the same reply as SSE chunks (role, two text deltas, finish, usage, [DONE]).
`GET /v1/models` and `GET /health`: small JSON. Anything else: a 404 in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

REPLY = "OK: the benchmark upstream answered."
USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}


def completion(model: str) -> bytes:
    """The fixed, non-streamed chat completion body."""
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY,
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": USAGE}).encode()


def stream_body(model: str) -> bytes:
    """The same reply as an OpenAI SSE stream, usage in the last chunk."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        doc = dict(base, choices=choices, **extra)
        return b"data: " + json.dumps(doc).encode() + b"\n\n"

    half = len(REPLY) // 2
    return b"".join([
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": REPLY[:half]}), chunk({"content": REPLY[half:]}),
        chunk({}, "stop"),
        b"data: " + json.dumps(dict(base, choices=[], usage=USAGE)).encode() + b"\n\n",
        b"data: [DONE]\n\n"])


def response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    reason = b"OK" if status == 200 else b"Not Found"
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
            % (status, reason, content_type, len(body)) + body)


def answer(method: bytes, path: bytes, body: bytes) -> bytes:
    """The response bytes for one request."""
    path = path.split(b"?", 1)[0]
    if method == b"POST" and path in (b"/v1/chat/completions", b"/chat/completions"):
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        model = str(doc.get("model", "bench-model"))
        if doc.get("stream"):
            return response(200, stream_body(model), b"text/event-stream")
        return response(200, completion(model))
    if method == b"GET" and path in (b"/v1/models", b"/models"):
        return response(200, json.dumps({"object": "list", "data": [
            {"id": "bench-model", "object": "model", "created": 0,
             "owned_by": "bench"}]}).encode())
    if method == b"GET" and path == b"/health":
        return response(200, b'{"status": "ok"}')
    return response(404, json.dumps({"error": {
        "message": f"no route {path.decode(errors='replace')}", "type": "invalid_request_error",
        "code": "not_found", "param": None}}).encode())


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer requests on one keep-alive connection until the client closes it."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = await reader.readexactly(length) if length else b""
            writer.write(answer(method, path, body))
            if close:
                await writer.drain()
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
            ValueError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve_connection, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
