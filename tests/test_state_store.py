"""The in-process store: TTL expiry by an injected clock, LRU bound, atomic compare-and-set,
JSON values copied in and out, and thread safety."""

from __future__ import annotations

import threading

import pytest

from semroute.state import MemoryStore, Store


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_store_is_a_store() -> None:
    assert isinstance(MemoryStore(), Store)


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    s = MemoryStore(clock=clock)
    s.set("a", {"x": 1}, 10)
    s.set("b", [1, 2], 20)
    clock.now += 9.9
    assert s.get("a") == {"x": 1} and len(s) == 2
    clock.now += 0.1
    assert s.get("a") is None and s.get("b") == [1, 2] and len(s) == 1
    clock.now += 10
    assert s.get("b") is None and len(s) == 0
    s.set("c", "v", 0)  # a zero TTL stores nothing
    assert s.get("c") is None


def test_least_recently_used_entries_are_evicted_beyond_the_bound() -> None:
    s = MemoryStore(max_entries=3, clock=Clock())
    for k in "abc":
        s.set(k, k, 60)
    assert s.get("a") == "a"  # a read makes "a" recent: "b" is now the oldest
    s.set("d", "d", 60)
    assert [s.get(k) for k in "abcd"] == ["a", None, "c", "d"]
    s.set("c", "c2", 60)  # a write makes it recent too
    s.set("e", "e", 60)
    assert s.get("a") is None and s.get("c") == "c2" and len(s) == 3
    with pytest.raises(ValueError):
        MemoryStore(max_entries=0)


def test_compare_and_set_is_a_compare_of_json_values() -> None:
    clock = Clock()
    s = MemoryStore(clock=clock)
    assert s.compare_and_set("k", None, {"v": 1}, 10)  # None: only if absent
    assert not s.compare_and_set("k", None, {"v": 2}, 10)
    assert not s.compare_and_set("k", {"v": 9}, {"v": 2}, 10)
    assert s.compare_and_set("k", {"v": 1}, {"v": 2}, 10)  # equal value, not same object
    assert s.get("k") == {"v": 2}
    clock.now += 11
    assert s.compare_and_set("k", None, {"v": 3}, 10), "an expired entry counts as absent"
    s.delete("k")
    s.delete("never-there")
    assert s.get("k") is None


def test_values_are_copies_and_must_be_json() -> None:
    s = MemoryStore()
    value = {"route": "code", "list": [1]}
    s.set("k", value, 10)
    value["route"] = "changed"
    got = s.get("k")
    assert got == {"route": "code", "list": [1]}
    assert isinstance(got, dict)
    got["list"].append(2)
    assert s.get("k") == {"route": "code", "list": [1]}
    with pytest.raises(TypeError):
        s.set("k", {"x": object()}, 10)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        s.set("k", float("nan"), 10)


def test_compare_and_set_is_atomic_across_threads() -> None:
    """16 threads each add 1 to a counter 200 times through compare-and-set: none is lost."""
    s = MemoryStore()
    s.set("n", 0, 60)

    def work() -> None:
        for _ in range(200):
            while True:
                cur = s.get("n")
                assert isinstance(cur, int)
                if s.compare_and_set("n", cur, cur + 1, 60):
                    break

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.get("n") == 16 * 200
