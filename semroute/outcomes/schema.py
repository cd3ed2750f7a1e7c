"""The outcomes store's SQLite schema, its version, and the migrations from older versions.

Version 1: records, texts, vectors, encoders, datasets. Version 2: `texts.features`.
Version 3: the learning loop's journal: `requests` (answered requests, for feedback and
reports), `feedback` and `shadow` (reference-model verdicts). Older files are migrated in
place on open, in one transaction; a newer file is refused.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from semroute.errors import OutcomeStoreError

SCHEMA_VERSION = 3
KIND = "semroute-outcomes"

JOURNAL = """
CREATE TABLE IF NOT EXISTS requests(request_id TEXT PRIMARY KEY, ts REAL NOT NULL,
    text_id INTEGER REFERENCES texts(id), route TEXT NOT NULL, method TEXT NOT NULL,
    model TEXT, score REAL, margin REAL, cost_usd REAL, latency_ms REAL,
    conversation TEXT);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
CREATE TABLE IF NOT EXISTS feedback(id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(request_id), ts REAL NOT NULL,
    score REAL CHECK (score IS NULL OR score BETWEEN 0 AND 1), label TEXT, note TEXT,
    CHECK (score IS NOT NULL OR label IS NOT NULL OR note IS NOT NULL));
CREATE INDEX IF NOT EXISTS feedback_request ON feedback(request_id);
CREATE INDEX IF NOT EXISTS feedback_ts ON feedback(ts);
CREATE TABLE IF NOT EXISTS shadow(id INTEGER PRIMARY KEY, request_id TEXT NOT NULL,
    ts REAL NOT NULL, route TEXT NOT NULL, model TEXT NOT NULL, reference TEXT NOT NULL,
    judge TEXT NOT NULL, score REAL NOT NULL CHECK (score BETWEEN 0 AND 1),
    verdicts TEXT NOT NULL, cost_usd REAL CHECK (cost_usd IS NULL OR cost_usd >= 0),
    latency_ms REAL);
CREATE INDEX IF NOT EXISTS shadow_ts ON shadow(ts);
CREATE INDEX IF NOT EXISTS shadow_route ON shadow(route, ts);
"""

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE texts(id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, text TEXT,
    features BLOB);
CREATE TABLE encoders(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    backend TEXT NOT NULL, dim INTEGER NOT NULL, weights_hash TEXT NOT NULL);
CREATE TABLE vectors(id INTEGER PRIMARY KEY,
    encoder_id INTEGER NOT NULL REFERENCES encoders(id),
    text_id INTEGER NOT NULL REFERENCES texts(id), vector BLOB NOT NULL,
    UNIQUE (encoder_id, text_id));
CREATE TABLE datasets(id TEXT PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL,
    form TEXT NOT NULL, examples INTEGER NOT NULL, records INTEGER NOT NULL,
    dropped INTEGER NOT NULL, ts REAL NOT NULL);
CREATE TABLE records(id INTEGER PRIMARY KEY, text_id INTEGER NOT NULL REFERENCES texts(id),
    route TEXT, model TEXT NOT NULL, score REAL NOT NULL CHECK (score BETWEEN 0 AND 1),
    source TEXT NOT NULL CHECK (source IN ('gate', 'judge', 'feedback', 'imported')),
    cost_usd REAL CHECK (cost_usd IS NULL OR cost_usd >= 0), latency_ms REAL,
    ts REAL NOT NULL, request_id TEXT, dataset TEXT REFERENCES datasets(id), category TEXT);
CREATE INDEX records_text ON records(text_id, model);
CREATE INDEX records_model ON records(model, ts);
CREATE INDEX records_dataset ON records(dataset);
""" + JOURNAL


def statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in an empty file; migrate versions 1 and 2; refuse other files and
    other versions, naming the file. Opening an up-to-date store never takes the write lock."""
    if not tables(conn):
        with immediate(conn):
            if not tables(conn):  # nobody created it meanwhile
                for statement in statements(SCHEMA):
                    conn.execute(statement)
                conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                 [("kind", KIND), ("schema_version", str(SCHEMA_VERSION)),
                                  ("created", str(time.time()))])
    meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables(conn) else {}
    if meta.get("kind") != KIND:
        raise OutcomeStoreError(f"{path}: an SQLite file, but not a semroute outcomes "
                                f"store: give another --store path")
    if meta.get("schema_version") in ("1", "2"):
        meta["schema_version"] = migrate(conn)
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise OutcomeStoreError(
            f"{path}: outcomes store schema version {meta.get('schema_version')}, but "
            f"this semroute reads version {SCHEMA_VERSION}: open it with the semroute that "
            f"wrote it, or move it aside and import the outcome files again")


def migrate(conn: sqlite3.Connection) -> str:
    """Versions 1 and 2 -> 3 in one transaction: 1 -> 2 adds `texts.features` (texts already
    stored keep NULL, so tiers over them run without the feature line until imported again);
    2 -> 3 adds the journal tables (empty)."""
    with immediate(conn):
        version = str(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                                   ).fetchone()[0])
        if version == "1":
            conn.execute("ALTER TABLE texts ADD COLUMN features BLOB")
            version = "2"
        if version == "2":
            for statement in statements(JOURNAL):
                conn.execute(statement)
            version = str(SCHEMA_VERSION)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    return version


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A BEGIN IMMEDIATE ... COMMIT block on a connection in autocommit mode (rolled back on
    any error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
