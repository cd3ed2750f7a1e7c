"""A private, real `redis-server` for tests: on a free loopback port, no persistence, started
and stopped by the tests (and restarted on the same port to test outages)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.support.llm_server import free_port

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
MISSING = ("redis-server is not installed (apt-get install -y redis-server; .ci/run installs "
           "it, so CI never skips these tests)")


class RedisServer:
    """`redis-server --port P --save '' --daemonize yes` in `folder`; `stop` is
    `redis-cli -p P shutdown nosave`, so a restart starts empty, like a crash without
    persistence."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        assert REDIS_SERVER and REDIS_CLI, MISSING
        self.folder = folder
        self.port = port or free_port()
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str, timeout: float = 5.0) -> str:
        done = subprocess.run([str(REDIS_CLI), "-p", str(self.port), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
        return done.stdout.strip()

    def start(self, timeout: float = 10.0) -> RedisServer:
        subprocess.run([str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--daemonize", "yes",
                        "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log"),
                        "--pidfile", str(self.folder / "redis.pid")], check=True, timeout=10)
        deadline = time.monotonic() + timeout
        while self.cli("ping") != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start; see "
                                   f"{self.folder / 'redis.log'}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.cli("shutdown", "nosave")
        deadline = time.monotonic() + timeout
        while self.cli("ping") == "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not stop")
            time.sleep(0.02)

    def flush(self) -> None:
        self.cli("flushall")
