"""Decision records and where they go: a JSONL file (one line per dispatch) or `logging`, and
the guard that keeps a failing sink from ever costing the caller an answer.

A record holds the decision, the model calls and their cost. It never holds an API key, and
holds the query text only when the configuration asks for it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
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
        self.path = Path(path)  # the folder is made on first write: a bad path costs no answer
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, "short write to the trace file", str(self.path))
            finally:
                os.close(fd)  # closing releases the flock

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            return os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, flags, 0o644)


class LoggingSink:
    """Sends each record to the `semroute.telemetry.trace` logger as one JSON string at INFO."""

    def write(self, record: Mapping[str, Any]) -> None:
        logger.info(json.dumps(record, ensure_ascii=False, default=str))


class TraceWriter:
    """Writes records to a sink and never raises: a failed write (disk full, permission
    denied, a sink that raises) is counted in `drops` and logged as a warning (at most once a
    minute, naming the error but never the record, so no query text reaches the log)."""

    warn_every_s = 60.0

    def __init__(self, sink: TraceSink) -> None:
        self.sink = sink
        self.drops = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._warned_at: float | None = None

    def write(self, record: Mapping[str, Any], *, redact: Sequence[str] = ()) -> bool:
        """Write one record; False if it was dropped. `redact`: texts to keep out of the log."""
        try:
            self.sink.write(record)
            return True
        except Exception as exc:  # tracing must never cost the caller an answer
            self._dropped(exc, redact)
            return False

    def _dropped(self, exc: Exception, redact: Sequence[str]) -> None:
        why = describe_error(exc, redact)
        now = time.monotonic()
        with self._lock:
            self.drops += 1
            self.last_error = why
            drops, due = self.drops, (
                self._warned_at is None or now - self._warned_at >= self.warn_every_s
            )
            if due:
                self._warned_at = now
        if due:
            logger.warning(
                "trace record dropped (%d so far) by %s: %s", drops, type(self.sink).__name__, why
            )


def describe_error(exc: BaseException, redact: Sequence[str] = ()) -> str:
    """`Type: message` of an exception, with `redact` texts replaced, cut to 300 characters."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        text = f"{type(exc).__name__}: {exc.strerror}{where}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    for secret in redact:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text[:300]


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL trace file (for tests, `semroute eval` and users' tooling)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
