"""A loopback OpenAI-compatible model whose answers are scripted: a fixed answer text, and for
judge requests (a `response_format` JSON schema constraining a `label`) a label chosen by a
function of the judge's prompt, so tests can check how verdicts are combined. Optionally slow
(`delay_s`) or failing (`status`). Used by the shadow-evaluation tests and benchmark; as a
process (`GET /health` answers 200):

    python -m tests.support.scripted_model PORT [--delay S] [--label A]   # prints "ready PORT"
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Judge = Callable[[str], str]
"""`judge(prompt) -> label`: the label a judge request gets, from its user message."""


def always(label: str) -> Judge:
    """A judge that gives `label` whatever it is shown (pure position bias for "A")."""
    return lambda prompt: label


def prefers(marker: str) -> Judge:
    """A consistent judge: the answer whose text contains `marker` is better, wherever it is
    shown; neither or both: tie."""
    def judge(prompt: str) -> str:
        a = prompt.split("Answer A:", 1)[1].split("Answer B:", 1)[0]
        b = prompt.split("Answer B:", 1)[1]
        in_a, in_b = marker in a, marker in b
        return "A" if in_a and not in_b else "B" if in_b and not in_a else "tie"
    return judge


def sse(completion: dict[str, Any]) -> bytes:
    """A completion as an OpenAI SSE stream: role, the text, finish, usage, [DONE]."""
    base = {k: completion[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"

    def chunk(**extra: Any) -> bytes:
        return b"data: " + json.dumps(dict(base, **extra)).encode() + b"\n\n"

    text = completion["choices"][0]["message"]["content"]
    return b"".join([
        chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None}]),
        chunk(choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}]),
        chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        chunk(choices=[], usage=completion["usage"]), b"data: [DONE]\n\n"])


@dataclass
class ScriptedModel:
    """Answers POST /v1/chat/completions: `answer` as text (3 tokens in, 3 out; streamed as
    SSE when asked), or a judge's `{"label": judge(prompt)}` when the request constrains a
    label."""

    answer: str = "scripted answer"
    judge: Judge = field(default_factory=lambda: always("tie"))
    delay_s: float = 0.0
    status: int = 200
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _httpd: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def entry(self, **extra: Any) -> dict[str, Any]:
        """A catalogue entry pointing at this server (OpenAI SDK), priced 2/8 USD per 1M."""
        return {"provider": "openai", "model": "scripted", "base_url": f"{self.base_url}/v1",
                "timeout": 10, "input_price": 2.0, "output_price": 8.0, **extra}

    def judged(self) -> list[dict[str, Any]]:
        """The judge requests received."""
        with self._lock:
            return [b for b in self.requests if b.get("response_format")]

    def reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.status != 200:
            return self.status, {"error": {"message": f"scripted fault {self.status}",
                                           "type": "server_error", "code": str(self.status)}}
        text = self.answer
        if body.get("response_format"):
            prompt = str(body["messages"][-1]["content"])
            text = json.dumps({"label": self.judge(prompt)})
        return 200, {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 1,
                     "model": str(body.get("model")),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}

    def start(self) -> ScriptedModel:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()  # headers and body are two writes: no Nagle delay between
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.loads(raw or b"{}")
                status, payload = model.reply(body)
                streamed = status == 200 and bool(body.get("stream"))
                data = sse(payload) if streamed else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "text/event-stream" if streamed
                                     else "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                data = b'{"status": "ok"}'
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def main() -> None:
    ap = argparse.ArgumentParser(description="a scripted loopback model")
    ap.add_argument("port", type=int)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--label", default="A", help="what every judge request is answered")
    ap.add_argument("--answer", default="scripted answer")
    args = ap.parse_args()
    model = ScriptedModel(answer=args.answer, judge=always(args.label), delay_s=args.delay,
                          port=args.port).start()
    print(f"ready {args.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        model.stop()


if __name__ == "__main__":
    main()
