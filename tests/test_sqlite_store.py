"""The SQLite store keeps the `Store` contract of the in-process one (TTL by an injected clock,
compare-and-set of JSON values, atomic add) in one WAL file that several threads and several
real processes share without losing an update."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from semroute.state import MemoryStore, SqliteStore, Store

REPO = Path(__file__).resolve().parent.parent


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_764_547_200.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def store_and_clock(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, Clock]:
    clock = Clock()
    store: Store = MemoryStore(clock=clock) if request.param == "memory" else \
        SqliteStore(tmp_path / "state" / "kv.db", clock=clock)
    return store, clock


def test_both_stores_are_stores(tmp_path: Path) -> None:
    assert isinstance(SqliteStore(tmp_path / "a.db"), Store)
    assert isinstance(MemoryStore(), Store)


def test_values_round_trip_as_json_and_expire(store_and_clock: tuple[Store, Clock]) -> None:
    s, clock = store_and_clock
    s.set("a", {"x": [1, 2.5, "é", None, True]}, 10)
    s.set("b", 3, 20)
    got = s.get("a")
    assert got == {"x": [1, 2.5, "é", None, True]}
    assert isinstance(got, dict)
    got["x"] = "changed"  # a copy: the stored value is untouched
    assert s.get("a") == {"x": [1, 2.5, "é", None, True]}
    clock.now += 10
    assert s.get("a") is None and s.get("b") == 3
    s.set("b", 4, 0)  # a zero TTL stores nothing (and forgets the old value)
    assert s.get("b") is None
    s.set("c", "v", 5)
    s.delete("c")
    s.delete("never-there")
    assert s.get("c") is None


def test_compare_and_set_compares_json_values(store_and_clock: tuple[Store, Clock]) -> None:
    s, clock = store_and_clock
    assert s.compare_and_set("k", None, {"v": 1, "w": 2}, 10)
    assert not s.compare_and_set("k", None, {"v": 9}, 10), "None means: only if absent"
    assert s.compare_and_set("k", {"w": 2, "v": 1}, {"v": 3}, 10), "key order does not matter"
    assert not s.compare_and_set("k", {"v": 1}, {"v": 4}, 10)
    assert s.get("k") == {"v": 3}
    clock.now += 10
    assert s.compare_and_set("k", None, "fresh", 10), "an expired key counts as absent"


def test_add_is_a_counter_whose_expiry_is_set_once(store_and_clock: tuple[Store, Clock]) -> None:
    s, clock = store_and_clock
    assert s.add("n", 1.5, 100) == 1.5
    clock.now += 60
    assert s.add("n", 2, 100) == 3.5, "an existing counter keeps its expiry"
    clock.now += 40
    assert s.get("n") is None, "100 s after it was created, not after the last add"
    assert s.add("n", -1, 100) == -1.0
    s.set("text", "abc", 10)
    with pytest.raises(TypeError, match="'text' holds str"):
        s.add("text", 1, 10)


def test_the_file_is_shared_by_instances_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    SqliteStore(path).set("k", [1, 2], 60)
    assert SqliteStore(path).get("k") == [1, 2]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_adds_from_16_threads_are_never_lost(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "kv.db")

    def work() -> None:
        for _ in range(50):
            s.add("n", 1, 60)
        for _ in range(25):
            while True:
                cur = s.get("m")
                base = cur if isinstance(cur, int | float) else 0
                if s.compare_and_set("m", cur, base + 1, 60):
                    break

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (s.get("n"), s.get("m")) == (16 * 50, 16 * 25)


WORKER = """
import sys
from semroute.state import SqliteStore
s = SqliteStore(sys.argv[1])
for _ in range(int(sys.argv[2])):
    s.add("adds", 0.25, 600)
    while True:
        cur = s.get("cas")
        if s.compare_and_set("cas", cur, (cur or 0) + 1, 600):
            break
"""


def test_two_processes_share_one_counter_without_losing_updates(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SqliteStore(path)  # created before the workers race to create it
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), "300"], cwd=REPO)
             for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    s = SqliteStore(path)
    assert (s.get("adds"), s.get("cas")) == (2 * 300 * 0.25, 600)


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    import os

    s = SqliteStore(tmp_path / "kv.db")
    s.set("before", 1, 60)
    pid = os.fork()
    if pid == 0:  # the child: use the inherited store object
        try:
            s.add("child", 1, 60)
        finally:
            os._exit(0 if s.get("before") == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s.get("child") == 1
