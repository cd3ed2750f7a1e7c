"""A real gateway for tests: the Starlette app on uvicorn in a thread, on a free loopback
port, started (router loaded) before the test talks to it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from tests.support.llm_server import free_port


@dataclass
class RunningGateway:
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    app: Any

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def run_gateway(app: Any, *, ready_timeout: float = 120.0, drain_seconds: int = 5,
                ) -> RunningGateway:
    """Serve `app` on 127.0.0.1 in a daemon thread; return once it accepts connections."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", access_log=False,
                            timeout_graceful_shutdown=drain_seconds)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name=f"gateway-{port}")
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the gateway stopped while starting (see the log above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not start within {ready_timeout} s")
        time.sleep(0.02)
    return RunningGateway(server, thread, port, app)
