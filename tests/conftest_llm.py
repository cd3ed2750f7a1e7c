"""Pytest fixtures for the real local LLM and for injected HTTP faults.

Enable with `pytest_plugins = ["tests.conftest_llm"]` in tests/conftest.py. A missing
llama-server or model is built by `scripts/local-llm build`; if that fails, tests fail.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.support.llm_server import FaultServer, LLMServer, free_port, start_llm_server

MakeFaultServer = Callable[..., FaultServer]


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LLMServer]:
    """llama-server (SmolLM2-135M, model alias "local") on a free 127.0.0.1 port, no API key."""
    server = start_llm_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llm_server_with_key() -> Iterator[LLMServer]:
    """A second llama-server that requires `server.api_key` (a random secret per session)."""
    server = start_llm_server(api_key=f"sk-test-{secrets.token_hex(12)}")
    yield server
    server.stop()


@pytest.fixture
def fault_server() -> Iterator[MakeFaultServer]:
    """Factory: `fault_server([429, 500])` starts a FaultServer; all are stopped after the test."""
    started: list[FaultServer] = []

    def make(
        statuses: Sequence[int],
        *,
        retry_after: str | None = None,
        delay_s: float = 0.0,
        echo_auth: bool = False,
        reply_text: str | None = None,
    ) -> FaultServer:
        server = FaultServer(
            list(statuses), retry_after=retry_after, delay_s=delay_s, echo_auth=echo_auth,
            reply_text=reply_text,
        ).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def refused_url() -> str:
    """A loopback base URL with nothing listening (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"
