"""The providers' HTTP transport and wire reading, against a loopback server speaking raw HTTP:
async clients on the SDKs' aiohttp transport (idle connections closed, sessions closed when
their loop ends, no "Unclosed client session"), and bodies read as plain JSON, where a
malformed answer is the server's error, named, and fails over like any other."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest

from semroute.errors import ErrorScope
from semroute.providers import (
    POOL_LIMITS,
    ModelSpec,
    Provider,
    ProviderError,
    aclose_clients,
    make_provider,
)

KINDS = ["openai", "anthropic"]
HELLO = [{"role": "user", "content": "hi"}]
KEY = "sk-transport-canary-1234"


class RawServer:
    """Answers every POST with `body` and `content_type` after `delay_s`; counts the TCP
    connections open right now (keep-alive: HTTP/1.1)."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.content_type = "application/json"
        self.delay_s = 0.0
        self.open = 0
        self.opened = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.open += 1
                    server.opened += 1

            def finish(self) -> None:
                with server._lock:
                    server.open -= 1
                super().finish()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(server.delay_s)
                self.send_response(200)
                self.send_header("content-type", server.content_type)
                self.send_header("content-length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def spec(self, kind: str, **kw: Any) -> ModelSpec:
        url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return ModelSpec(key=f"raw-{kind}", provider=kind, model=f"raw-{kind}-model",  # type: ignore[arg-type]
                         base_url=f"{url}/v1" if kind == "openai" else url, **kw)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[RawServer]:
    s = RawServer()
    yield s
    s.stop()


def answer(kind: str, text: str = "hello") -> bytes:
    if kind == "openai":
        return json.dumps({"model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()
    return json.dumps({"model": "m", "type": "message", "role": "assistant",
                       "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 3, "output_tokens": 1}}).encode()


BROKEN = {
    "not JSON": (b"<html>502 from a proxy</html>", "text/html"),
    "cut-off JSON": (b'{"choices": [{"message": ', "application/json"),
    "JSON, not an object": (b'["hello"]', "application/json"),
    "an object without the answer": (b'{"id": "x", "object": "chat.completion"}',
                                     "application/json"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_malformed_body_is_a_provider_error_naming_the_model(
        server: RawServer, kind: str, broken: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAW_KEY", KEY)
    server.body, server.content_type = BROKEN[broken]
    p = make_provider(server.spec(kind, api_key_env="RAW_KEY"))
    for call in (lambda: p.complete(HELLO), lambda: asyncio.run(p.acomplete(HELLO))):
        with pytest.raises(ProviderError) as err:
            call()
        assert f"raw-{kind}-model" in str(err.value)
        assert "malformed response" in err.value.message
        assert err.value.scope is ErrorScope.RETRY  # another try or model may answer
        assert KEY not in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_json_answer_labelled_as_text_is_still_read(server: RawServer, kind: str) -> None:
    server.body, server.content_type = answer(kind, "plain"), "text/plain"
    p = make_provider(server.spec(kind))
    assert p.complete(HELLO).text == "plain"
    assert asyncio.run(p.acomplete(HELLO)).text == "plain"


def test_an_empty_choices_list_is_an_empty_answer_not_an_error(server: RawServer) -> None:
    """A server may answer `choices: []` (nothing generated, e.g. a filter): that is an answer
    with no text, as before the dict reading, not a malformed body to fail over from."""
    server.body = json.dumps({"model": "m", "choices": [],
                              "usage": {"prompt_tokens": 3, "completion_tokens": 0}}).encode()
    server.content_type = "application/json"
    p = make_provider(server.spec("openai"))
    for got in (p.complete(HELLO), asyncio.run(p.acomplete(HELLO))):
        assert (got.text, got.finish_reason, got.usage.input_tokens) == ("", None, 3)


def unclosed(records: list[warnings.WarningMessage], logs: list[logging.LogRecord]) -> list[str]:
    """Unclosed-session complaints, and aiohttp sessions still alive and open."""
    gc.collect()
    alive = [repr(o) for o in gc.get_objects()
             if isinstance(o, aiohttp.ClientSession) and not o.closed]
    return [str(w.message) for w in records if "nclosed" in str(w.message)] + [
        r.getMessage() for r in logs if "nclosed" in r.getMessage()] + alive


@pytest.mark.parametrize("kind", KINDS)
def test_async_sessions_close_with_their_loop_without_unclosed_warnings(
        server: RawServer, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    server.body = answer(kind)
    p = make_provider(server.spec(kind))

    async def calls() -> str:
        return "".join([(await p.acomplete(HELLO)).text for _ in range(3)])

    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        for _ in range(3):  # each asyncio.run is a new loop with its own client
            assert asyncio.run(calls()) == "hello" * 3
        gc.collect()
    assert unclosed(records, caplog.records) == []
    assert server.open == 0  # each loop's end closed its connections


@pytest.mark.parametrize("kind", KINDS)
def test_aclose_clients_closes_now_and_the_next_call_opens_a_new_session(
        server: RawServer, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    server.body = answer(kind)
    p: Provider[Any, Any] = make_provider(server.spec(kind))

    async def main() -> tuple[int, int]:
        await p.acomplete(HELLO)
        await aclose_clients()  # what the gateway does at shutdown
        await asyncio.sleep(0.2)
        after_close = server.open
        await p.acomplete(HELLO)
        return after_close, server.opened

    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        after_close, opened = asyncio.run(main())
        gc.collect()
    assert after_close == 0
    assert opened == 2
    assert unclosed(records, caplog.records) == []


def test_idle_async_connections_are_reused_then_closed_after_keepalive_expiry(
        server: RawServer) -> None:
    server.body, server.delay_s = answer("openai"), 0.2
    p = make_provider(server.spec("openai"))
    expiry = POOL_LIMITS.keepalive_expiry
    assert expiry is not None and expiry <= 5

    async def main() -> tuple[int, int, list[int]]:
        await asyncio.gather(*(p.acomplete(HELLO) for _ in range(12)))  # a burst: 12 at once
        burst = server.opened
        for _ in range(6):
            await p.acomplete(HELLO)  # one at a time: an idle connection each time
        reused = server.opened
        seen = []
        deadline = time.monotonic() + 2 * expiry + 3
        while server.open and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            seen.append(server.open)
        return burst, reused, seen

    burst, reused, seen = asyncio.run(main())
    assert burst == 12
    assert reused == 12  # sequential calls took idle connections, opened none
    assert seen and seen[-1] == 0, f"idle connections still open: {seen}"


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_async_connection_is_a_connection_failure_not_a_timeout(kind: str) -> None:
    url = "http://127.0.0.1:9"  # the discard port: nothing listens
    p = make_provider(ModelSpec(key="refused", provider=kind, model="refused-model",  # type: ignore[arg-type]
                                base_url=url, timeout=5))
    with pytest.raises(ProviderError) as err:
        asyncio.run(p.acomplete(HELLO))
    assert err.value.message.startswith("connection failed: ")
    assert "Cannot connect to host 127.0.0.1:9" in err.value.message
    assert err.value.scope is ErrorScope.RETRY
