"""Request ids and idempotency keys: 32 hex digits, never repeated in a process, in its
threads, or in a forked child (which draws its own secret)."""

from __future__ import annotations

import os
import re
import threading

from semroute.ids import new_id


def test_ids_are_32_hex_digits_and_unique_across_threads() -> None:
    seen: list[str] = []

    def take() -> None:
        seen.extend(new_id() for _ in range(5000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in seen)
    assert len(set(seen)) == len(seen) == 20000


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids, then leave without cleanup
        os.write(write, " ".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(100)}
    assert len(child) == 100 and not child & parent
