"""The Redis store keeps the `Store` contract exactly as the in-process and SQLite stores do
(the same behaviour tests run against all three): JSON values, TTL expiry, compare-and-set of
JSON values, an atomic `add` whose expiry is set once; and on a real redis-server, atomicity
across threads and processes, a token bucket, and a typed error when the server is gone."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from semroute import StoreUnavailableError
from semroute.state import MemoryStore, RedisStore, SqliteStore, Store
from tests.support.llm_server import free_port
from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
TTL = 0.4  # seconds: short, so the real server's clock can be waited out


class Clock:
    """A clock the test moves by hand (the in-process and SQLite stores take one)."""

    def __init__(self) -> None:
        self.now = 1_764_547_200.0

    def __call__(self) -> float:
        return self.now


Advance = Callable[[float], None]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Advance]]:
    """Each backend, with a way to let time pass (a hand-moved clock, or real time for
    Redis, whose server keeps the time)."""
    clock = Clock()

    def move(seconds: float) -> None:
        clock.now += seconds

    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        yield RedisStore(server.url), lambda s: time.sleep(s + 0.02)
    elif request.param == "sqlite":
        yield SqliteStore(tmp_path / "kv.db", clock=clock), move
    else:
        yield MemoryStore(clock=clock), move


def test_every_backend_is_a_store(redis_server: RedisServer, tmp_path: Path) -> None:
    for s in (MemoryStore(), SqliteStore(tmp_path / "a.db"), RedisStore(redis_server.url)):
        assert isinstance(s, Store)


def test_values_round_trip_as_json_and_expire(store: tuple[Store, Advance]) -> None:
    s, advance = store
    s.set("a", {"x": [1, 2.5, "é", None, True]}, TTL)
    s.set("b", 3, 3 * TTL)
    got = s.get("a")
    assert got == {"x": [1, 2.5, "é", None, True]} and isinstance(got, dict)
    got["x"] = "changed"  # a copy: the stored value is untouched
    assert s.get("a") == {"x": [1, 2.5, "é", None, True]}
    advance(TTL)
    assert s.get("a") is None and s.get("b") == 3
    s.set("b", 4, 0)  # a zero TTL stores nothing (and forgets the old value)
    assert s.get("b") is None
    s.set("c", "v", TTL)
    s.delete("c")
    s.delete("never-there")
    assert s.get("c") is None


def test_compare_and_set_compares_json_values(store: tuple[Store, Advance]) -> None:
    s, advance = store
    assert s.compare_and_set("k", None, {"v": 1, "w": 2}, TTL)
    assert not s.compare_and_set("k", None, {"v": 9}, TTL), "None means: only if absent"
    assert s.compare_and_set("k", {"w": 2, "v": 1}, {"v": 3}, TTL), "key order does not matter"
    assert not s.compare_and_set("k", {"v": 1}, {"v": 4}, TTL)
    assert s.get("k") == {"v": 3}
    advance(TTL)
    assert s.compare_and_set("k", None, "fresh", TTL), "an expired key counts as absent"


def test_add_is_a_counter_whose_expiry_is_set_once(store: tuple[Store, Advance]) -> None:
    s, advance = store
    assert s.add("n", 1.5, 2 * TTL) == 1.5
    advance(TTL)
    assert s.add("n", 2, 2 * TTL) == 3.5, "an existing counter keeps its expiry"
    assert s.get("n") == 3.5 and isinstance(s.get("n"), float)
    advance(TTL)
    assert s.get("n") is None, "2 TTLs after it was created, not after the last add"
    assert s.add("n", -1, TTL) == -1.0
    s.set("text", "not a number", TTL)
    with pytest.raises(TypeError):
        s.add("text", 1, TTL)


def test_a_counter_written_by_add_is_compared_by_value(store: tuple[Store, Advance]) -> None:
    """Budgets read a counter, then compare-and-set it: whatever spelling the backend keeps
    for 0.1 + 0.2, the value read back must match."""
    s, _ = store
    s.add("spent", 0.1, 10)
    s.add("spent", 0.2, 10)
    cur = s.get("spent")
    assert cur == 0.1 + 0.2
    assert s.compare_and_set("spent", cur, 1.0, 10) and s.get("spent") == 1.0
    assert s.add("tiny", 1e-7, 10) == 1e-7 and s.compare_and_set("tiny", 1e-7, 0.0, 10)


def test_adds_and_compare_and_sets_from_16_threads_are_never_lost(
        redis_server: RedisServer) -> None:
    redis_server.flush()
    s = RedisStore(redis_server.url)

    def work() -> None:
        for _ in range(50):
            s.add("sum", 0.5, 60)
            while True:  # a CAS increment: retried until it lands
                cur = s.get("cas")
                if s.compare_and_set("cas", cur, (cur or 0) + 1, 60):  # type: ignore[operator]
                    break

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.get("sum") == 16 * 50 * 0.5
    assert s.get("cas") == 16 * 50


CHILD = """
import sys
from semroute.state import RedisStore
s = RedisStore(sys.argv[1])
for _ in range(200):
    s.add("shared", 1, 60)
"""


def test_two_processes_share_one_counter_without_losing_updates(
        redis_server: RedisServer) -> None:
    redis_server.flush()
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, redis_server.url], cwd=REPO)
             for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert RedisStore(redis_server.url).get("shared") == 400.0


def test_a_token_bucket_lets_the_burst_through_then_says_how_long_to_wait(
        redis_server: RedisServer) -> None:
    redis_server.flush()
    s = RedisStore(redis_server.url)
    took = [s.take_token("bucket", 2.0, 3.0) for _ in range(4)]
    assert took[:3] == [None, None, None]
    assert took[3] is not None and 0.3 < took[3] <= 0.5
    time.sleep(0.55)
    assert s.take_token("bucket", 2.0, 3.0) is None, "refilled at 2 tokens a second"


def test_an_unreachable_server_is_a_typed_error_naming_it_without_the_password() -> None:
    s = RedisStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout_s=0.2)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        s.get("k")
    assert time.monotonic() - t0 < 2, "no retries: the caller's fallback decides"
    assert "127.0.0.1" in str(caught.value) and "hunter2" not in str(caught.value)
    assert not s.ping()
