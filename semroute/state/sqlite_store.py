"""`SqliteStore`: the `Store` protocol in one SQLite file (WAL), shared by threads and processes.

Every write is one `BEGIN IMMEDIATE` transaction, so compare-and-set and `add` are atomic across
processes as well as threads (SQLite's file lock serialises writers; readers never block in
WAL mode). Expiry is by wall-clock time (`clock`, default `time.time`), the one clock several
processes agree on. Expired rows read as absent and are purged now and then.
`synchronous=NORMAL`: a commit is atomic and the file never corrupts; a power loss may forget
the last commits (a budget counter then reads a little low), which buys a write without fsync.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from semroute.state.store import Json, added, dump

PURGE_EVERY = 1000  # writes between sweeps of expired rows
SCHEMA = ("CREATE TABLE IF NOT EXISTS semroute_kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
          "expires REAL NOT NULL) WITHOUT ROWID")


class SqliteStore:
    """A `Store` in the SQLite file at `path` (folders are created). Safe from several threads
    (a connection per thread) and processes (a connection per process, opened after a fork);
    `busy_timeout_s` is how long a writer waits for another's lock."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time,
                 busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.clock = clock
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._writes = 0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)

    def get(self, key: str) -> Json | None:
        row = self._conn().execute("SELECT value, expires FROM semroute_kv WHERE key = ?",
                                   (key,)).fetchone()
        if row is None or row[1] <= self.clock():
            return None
        value: Json = json.loads(row[0])
        return value

    def set(self, key: str, value: Json, ttl_seconds: float) -> None:
        text = dump(value)
        with self._write() as conn:
            self._put(conn, key, text, ttl_seconds)

    def compare_and_set(self, key: str, expected: Json | None, value: Json,
                        ttl_seconds: float) -> bool:
        text = dump(value)
        want = None if expected is None else dump(expected)
        with self._write() as conn:
            if self._live(conn, key) != want:
                return False
            self._put(conn, key, text, ttl_seconds)
            return True

    def add(self, key: str, amount: float, ttl_seconds: float) -> float:
        with self._write() as conn:
            now = self.clock()
            row = conn.execute("SELECT value, expires FROM semroute_kv WHERE key = ?",
                               (key,)).fetchone()
            live = row is not None and row[1] > now
            total = added(json.loads(row[0]) if live else None, amount, key)
            expires = row[1] if live else now + ttl_seconds
            conn.execute("INSERT OR REPLACE INTO semroute_kv VALUES (?, ?, ?)",
                         (key, dump(total), expires))
            return total

    def delete(self, key: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM semroute_kv WHERE key = ?", (key,))

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---- internals

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, reopened in a child process (connections never cross a
        fork)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock at once (no upgrade deadlocks)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        with self._lock:
            self._writes += 1
            sweep = self._writes % PURGE_EVERY == 0
        if sweep:
            conn.execute("DELETE FROM semroute_kv WHERE expires <= ?", (self.clock(),))

    def _live(self, conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value, expires FROM semroute_kv WHERE key = ?",
                           (key,)).fetchone()
        return None if row is None or row[1] <= self.clock() else str(row[0])

    def _put(self, conn: sqlite3.Connection, key: str, text: str, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            conn.execute("DELETE FROM semroute_kv WHERE key = ?", (key,))
            return
        conn.execute("INSERT OR REPLACE INTO semroute_kv VALUES (?, ?, ?)",
                     (key, text, self.clock() + ttl_seconds))
