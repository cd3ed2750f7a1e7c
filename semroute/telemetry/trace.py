"""Decision records and where they go: a JSONL file (one line per dispatch) or `logging`.

A record holds the decision, the model calls and their cost. It never holds an API key, and
holds the query text only when the configuration asks for it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("semroute.telemetry.trace")


class TraceSink(Protocol):
    """Receives one JSON-ready record per dispatch."""

    def write(self, record: Mapping[str, Any]) -> None: ...


class JsonlSink:
    """Appends one JSON line per record to a file.

    Each record is written with a single `write(2)` on an `O_APPEND` descriptor under a lock
    (a thread lock in-process, `flock` across processes), so concurrent dispatches from
    threads, asyncio tasks or several workers never interleave lines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
            finally:
                os.close(fd)  # closing releases the flock


class LoggingSink:
    """Sends each record to the `semroute.telemetry.trace` logger as one JSON string at INFO."""

    def write(self, record: Mapping[str, Any]) -> None:
        logger.info(json.dumps(record, ensure_ascii=False, default=str))


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL trace file (for tests, `semroute eval` and users' tooling)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
