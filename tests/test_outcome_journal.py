"""The outcomes store's journal (schema 3): answered requests, feedback on them and shadow
verdicts, written in one transaction each, read back by time window, route and request; a
version-2 store is migrated in place without losing a record. Real SQLite throughout."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from semroute import OutcomeStoreError, UnknownRequestError
from semroute.outcomes import (
    SCHEMA_VERSION,
    FeedbackEntry,
    LoggedRequest,
    OutcomeRecord,
    OutcomeStore,
    ShadowVerdict,
    text_hash,
)

Q = "how do I reverse a list in python"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutcomeStore]:
    s = OutcomeStore(tmp_path / "outcomes.db")
    yield s
    s.close()


def logged(rid: str, ts: float, route: str = "code", method: str = "index",
           **kw: object) -> LoggedRequest:
    return LoggedRequest(request_id=rid, ts=ts, route=route, method=method,
                         text_hash=text_hash(Q), model="fast", score=0.8, margin=0.1,
                         cost_usd=0.0001, latency_ms=12.0, **kw)  # type: ignore[arg-type]


def test_logged_requests_read_back_by_id_window_route_and_method(store: OutcomeStore) -> None:
    with store.transaction() as tx:
        tx.log_requests([logged("r1", 100.0), logged("r2", 200.0, route="chat",
                                                     method="classifier"),
                         logged("r3", 300.0)])
    got = store.request("r2")
    assert got is not None and (got.route, got.method, got.model) == ("chat", "classifier", "fast")
    assert got.text_hash == text_hash(Q) and got.text is None, "text is not kept unless given"
    assert store.request("nope") is None
    assert [r.request_id for r in store.requests(since=150.0)] == ["r2", "r3"]
    assert [r.request_id for r in store.requests(until=300.0)] == ["r1", "r2"]
    assert [r.request_id for r in store.requests(route="code")] == ["r1", "r3"]
    assert [r.request_id for r in store.requests(method="classifier")] == ["r2"]


def test_a_logged_request_keeps_its_text_only_when_given(store: OutcomeStore) -> None:
    with store.transaction() as tx:
        tx.log_requests([logged("r1", 1.0)], texts={text_hash(Q): Q})
    got = store.request("r1")
    assert got is not None and got.text == Q


def test_logging_a_request_id_twice_keeps_the_first(store: OutcomeStore) -> None:
    with store.transaction() as tx:
        tx.log_requests([logged("r1", 1.0)])
    with store.transaction() as tx:
        tx.log_requests([logged("r1", 2.0, route="chat")])
    got = store.request("r1")
    assert got is not None and (got.ts, got.route) == (1.0, "code")


def test_feedback_lands_on_a_logged_request_and_an_unknown_id_is_named(
        store: OutcomeStore) -> None:
    with store.transaction() as tx:
        tx.log_requests([logged("r1", 1.0)])
    with store.transaction() as tx:
        fid = tx.add_feedback(FeedbackEntry(request_id="r1", score=0.0, label="chat",
                                            note="wrong route", ts=5.0))
    (entry,) = store.feedback(request_id="r1")
    assert (entry.id, entry.score, entry.label, entry.note) == (fid, 0.0, "chat", "wrong route")
    with (pytest.raises(UnknownRequestError, match="unknown request id 'r9'") as err,
          store.transaction() as tx):
        tx.add_feedback(FeedbackEntry(request_id="r9", score=1.0))
    assert isinstance(err.value, OutcomeStoreError) and isinstance(err.value, KeyError)
    assert store.feedback(since=0.0) == [entry], "the failed write left nothing"


@pytest.mark.parametrize(("entry", "problem"), [
    (FeedbackEntry(request_id="r1"), "give at least one of score, label or note"),
    (FeedbackEntry(request_id="r1", score=1.5), "field 'score' must be a number in [0, 1]"),
    (FeedbackEntry(request_id="r1", label=""), "field 'label' must be a route name"),
])
def test_invalid_feedback_is_refused_naming_the_field(store: OutcomeStore, entry: FeedbackEntry,
                                                      problem: str) -> None:
    with store.transaction() as tx:
        tx.log_requests([logged("r1", 1.0)])
    with (pytest.raises(OutcomeStoreError, match=re.escape(f"request 'r1': {problem}")),
          store.transaction() as tx):
        tx.add_feedback(entry)
    assert store.feedback() == []


def test_shadow_verdicts_read_back_by_route_and_window(store: OutcomeStore) -> None:
    v = ShadowVerdict(request_id="r1", route="code", model="fast", reference="powerful",
                      judge="powerful", score=0.25, verdicts=("B", "tie"), cost_usd=0.002,
                      latency_ms=900.0, ts=10.0)
    with store.transaction() as tx:
        tx.add_shadow(v)
        tx.add_shadow(ShadowVerdict(request_id="r2", route="chat", model="fast",
                                    reference="powerful", judge="powerful", score=1.0,
                                    verdicts=("A", "A"), ts=20.0))
    (got,) = store.shadow(route="code")
    assert got.verdicts == ("B", "tie") and got.score == 0.25 and got.id is not None
    assert [s.request_id for s in store.shadow(since=15.0)] == ["r2"]
    with (pytest.raises(OutcomeStoreError, match="field 'score' must be a number in"),
          store.transaction() as tx):
        tx.add_shadow(ShadowVerdict(request_id="r3", route="x", model="m", reference="r",
                                    judge="j", score=2.0, verdicts=()))


def test_stats_count_the_journal(store: OutcomeStore) -> None:
    with store.transaction() as tx:
        tx.log_requests([logged("r1", 1.0), logged("r2", 2.0)])
        tx.add_feedback(FeedbackEntry(request_id="r1", score=1.0))
    assert store.summary()["journal"] == {"requests": 2, "feedback": 1, "shadow": 0}


def test_a_version_2_store_is_migrated_in_place_keeping_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with OutcomeStore(path) as s:
        s.add(OutcomeRecord(text_hash=text_hash(Q), model="fast", score=1.0, source="gate"))
    with sqlite3.connect(path) as c:  # make it what semroute 0.x wrote: no journal tables
        for table in ("requests", "feedback", "shadow"):
            c.execute(f"DROP TABLE {table}")
        c.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with OutcomeStore(path) as s:
        assert s.count() == 1
        with s.transaction() as tx:
            tx.log_requests([logged("r1", 1.0)])
        assert s.request("r1") is not None
    with sqlite3.connect(path) as c:
        version = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION) == "3"
