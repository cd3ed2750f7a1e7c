"""Real servers on 127.0.0.1 for tests: llama-server (built by scripts/local-llm) and a tiny
HTTP server that answers with chosen error statuses in the OpenAI or Anthropic format."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local-llm"


def free_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening on it (also good for 'connection refused')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------- llama-server


def _paths() -> tuple[Path, Path]:
    out = subprocess.run([str(SCRIPT), "paths"], check=True, capture_output=True, text=True)
    kv = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return Path(kv["LLAMA_SERVER"]), Path(kv["LLM_MODEL"])


def ensure_local_llm() -> tuple[Path, Path]:
    """(binary, model); builds them with `scripts/local-llm build` when missing, else raises."""
    binary, model = _paths()
    if binary.is_file() and model.is_file():
        return binary, model
    env = {"SEMROUTE_PYTHON": sys.executable, **os.environ}  # a python that has pip
    proc = subprocess.run([str(SCRIPT), "build"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"scripts/local-llm build failed ({proc.returncode}):\n{tail}")
    binary, model = _paths()
    if not (binary.is_file() and model.is_file()):
        raise RuntimeError(f"scripts/local-llm build did not produce {binary} and {model}")
    return binary, model


@dataclass
class LLMServer:
    """A running llama-server. `base_url` has no /v1 (Anthropic style); see `openai_base_url`."""

    port: int
    api_key: str | None
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate by PID, then kill if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log_path.unlink(missing_ok=True)

    def __repr__(self) -> str:  # keep the key out of pytest's output
        return f"LLMServer(base_url={self.base_url!r}, pid={self.process.pid})"


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the test process dies without running its teardown."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_healthy(server: LLMServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{server.base_url}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or 503 while the model loads
        time.sleep(0.1)
    return False


def start_llm_server(
    api_key: str | None = None,
    *,
    threads: int = 1,
    ready_timeout: float = 60.0,
    extra_args: Sequence[str] = (),
    model: Path | None = None,
) -> LLMServer:
    """Start llama-server on a free loopback port and wait for /health; raises if it fails.
    `model` replaces the tests' SmolLM2-135M GGUF (benchmarks serve a bigger one).

    One thread by default: on a busy 2-core machine `-t 2` measured up to 10x slower calls."""
    binary, tiny = ensure_local_llm()
    model = model or tiny
    last_tail = ""
    for _ in range(3):  # a port picked free can be taken before the server binds it
        port = free_port()
        cmd = [
            str(binary),
            "-m",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "2048",
            "-t",
            str(threads),
            "--alias",
            "local",
            "--no-webui",
            *extra_args,
        ]
        if api_key:
            cmd += ["--api-key", api_key]
        fd, log_name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        server = LLMServer(port, api_key, proc, Path(log_name))
        if _wait_healthy(server, ready_timeout):
            return server
        last_tail = server.log_tail()
        server.stop()
    raise RuntimeError(f"llama-server did not become healthy:\n{last_tail}")


# ---------------------------------------------------------------- fault server


def _openai_error(status: int) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 401: "authentication_error"}.get(status, "server_error")
    return {"error": {"message": f"injected fault {status}", "type": kind, "code": str(status)}}


def _anthropic_error(status: int) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 401: "authentication_error", 529: "overloaded_error"}.get(
        status, "api_error"
    )
    return {"type": "error", "error": {"type": kind, "message": f"injected fault {status}"}}


OK_TEXT = "fault-server ok"


def _first_label(schema: Any) -> str | None:
    try:
        return str(schema["properties"]["label"]["enum"][0])
    except (KeyError, IndexError, TypeError):
        return None


def _openai_ok(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion; a json_schema request gets `{"label": <first enum value>}`."""
    rf = body.get("response_format") or {}
    label = _first_label((rf.get("json_schema") or {}).get("schema"))
    content = json.dumps({"label": label}) if label else OK_TEXT
    model = str(body.get("model", "fault"))
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }


def _anthropic_ok(body: dict[str, Any]) -> dict[str, Any]:
    """A message; a forced-tool request gets a tool_use block choosing the first enum value."""
    tools = body.get("tools") or [{}]
    label = _first_label(tools[0].get("input_schema"))
    block: dict[str, Any] = {"type": "text", "text": OK_TEXT}
    if label and (body.get("tool_choice") or {}).get("type") == "tool":
        block = {
            "type": "tool_use",
            "id": "toolu_fault",
            "name": tools[0].get("name"),
            "input": {"label": label},
        }
    return {
        "id": "msg_fault",
        "type": "message",
        "role": "assistant",
        "model": str(body.get("model", "fault")),
        "content": [block],
        "stop_reason": "tool_use" if block["type"] == "tool_use" else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 3},
    }


@dataclass
class FaultServer:
    """Answers POSTs to /v1/chat/completions and /v1/messages with `statuses` in order, then
    repeats the last one. 200 gives a small valid completion (non-streaming requests only;
    constrained requests get the first allowed label, as JSON or a tool_use block)."""

    statuses: Sequence[int]
    retry_after: str | None = None
    delay_s: float = 0.0
    echo_auth: bool = False  # put the received credentials into error messages
    reply_text: str | None = None  # a 200's text regardless of constraints (e.g. an invalid label)
    hits: int = 0
    paths: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _httpd: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        assert self._httpd is not None
        port: int = self._httpd.server_address[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def next_status(self, path: str, body: dict[str, Any]) -> int:
        with self._lock:
            status = self.statuses[min(self.hits, len(self.statuses) - 1)]
            self.hits += 1
            self.paths.append(path)
            self.bodies.append(body)
            return status

    def start(self) -> FaultServer:
        if not self.statuses:
            raise ValueError("statuses must not be empty")
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def _handler_for(fault: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            path = self.path.split("?", 1)[0]
            status = fault.next_status(path, body)
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if path.endswith("/chat/completions"):
                payload = _openai_ok(body) if status == 200 else _openai_error(status)
                if status == 200 and fault.reply_text is not None:
                    payload["choices"][0]["message"]["content"] = fault.reply_text
            elif path.endswith("/messages"):
                payload = _anthropic_ok(body) if status == 200 else _anthropic_error(status)
            else:
                status, payload = 404, {"error": {"message": f"no route {path}"}}
            if fault.echo_auth and status != 200:
                creds = f"{self.headers.get('authorization')} {self.headers.get('x-api-key')}"
                payload["error"]["message"] += f"; you sent {creds}"
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if fault.retry_after is not None and status != 200:
                    self.send_header("retry-after", fault.retry_after)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler
