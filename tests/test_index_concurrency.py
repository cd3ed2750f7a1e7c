"""Routers keep serving while another process rebuilds their index; loads that race a rebuild
still load a whole build; builders of one index folder take turns. Real processes, no mocks."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from semroute.config import load_routes
from semroute.index import RouteIndex, build_index, read_manifest
from semroute.routing import Decision, Router
from tests.support.rebuild_worker import (
    EXTRA_UTTERANCE,
    REPO,
    start_worker,
    write_route_pair,
)

THREADS = 16
TASKS = 64
REBUILDS = 5
QUERIES = ["good morning to you", "sort a list in python please", "binary search code",
           "hello friend, nice to see you", "write a SQL join for me", EXTRA_UTTERANCE]


def summary(d: Decision) -> tuple[object, ...]:
    """What a decision says, without its timings."""
    return (d.route, d.method, d.score, d.margin,
            tuple((c.route, c.score, tuple(n.text for n in c.neighbours)) for c in d.candidates))


def test_routers_keep_serving_while_another_process_rebuilds(tmp_path: Path) -> None:
    """16 threads and 64 tasks route, and a thread loads the index, while another process
    rebuilds it 5 times: no errors, the loaded router answers from its own build throughout."""
    routes_a, routes_b = write_route_pair(tmp_path)
    out = tmp_path / "index"
    build_index(routes_a, out)
    # No query cache: every query runs the encoder and the index, whose files get deleted.
    router = Router.load(routes_a, out, classifier=False, cache_size=0)
    first_build = router.index.build_dir
    expected = {q: summary(router.route(q, use_classifier=False)) for q in QUERIES}

    worker = start_worker(out, routes_b, routes_a, times=REBUILDS)  # B, A, B, A, B
    done = threading.Event()
    errors: list[str] = []
    wrong: list[str] = []
    counts = {"route": 0, "aroute": 0, "load": 0}
    seen_builds: set[str] = set()

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException:
                errors.append(traceback.format_exc())
        return run

    def route_in_a_loop() -> None:
        while not done.is_set():
            for q in QUERIES:
                if summary(router.route(q, use_classifier=False)) != expected[q]:
                    wrong.append(q)
                counts["route"] += 1
                time.sleep(0.005)  # leave the rebuilding process some of the 2 cores

    async def aroute_in_a_loop() -> None:
        while not done.is_set():
            for q in QUERIES:
                if summary(await router.aroute(q, use_classifier=False)) != expected[q]:
                    wrong.append(q)
                counts["aroute"] += 1
                await asyncio.sleep(0.005)

    async def tasks() -> None:
        await asyncio.gather(*(aroute_in_a_loop() for _ in range(TASKS)))

    def load_in_a_loop() -> None:
        while not done.is_set():
            seen_builds.add(RouteIndex.load(out, verify=True).manifest.build_id)
            counts["load"] += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=guarded(route_in_a_loop)) for _ in range(THREADS)]
    threads.append(threading.Thread(target=guarded(lambda: asyncio.run(tasks()))))
    threads.append(threading.Thread(target=guarded(load_in_a_loop)))
    for t in threads:
        t.start()
    try:
        stdout, stderr = worker.communicate(timeout=300)
    finally:
        done.set()
        for t in threads:
            t.join()

    assert worker.returncode == 0, stderr
    assert stdout.count("built ") == REBUILDS
    assert not errors, "\n".join(errors)
    assert wrong == []
    assert counts["route"] > 100 and counts["aroute"] > 100 and counts["load"] > 3, counts
    assert len(seen_builds) > 2  # the loads really raced the rebuilds

    # The first router's build folder is gone (two builds are kept); it serves from memory.
    assert not first_build.exists()
    assert {q: summary(router.route(q, use_classifier=False)) for q in QUERIES} == expected
    # A router loaded now serves the latest build (route set B: one more utterance).
    fresh = Router.load(routes_b, out, classifier=False)
    assert fresh.index.manifest.build_id == (out / "CURRENT").read_text()
    nearest = fresh.route(EXTRA_UTTERANCE, use_classifier=False).candidates[0].neighbours[0]
    assert nearest.text == EXTRA_UTTERANCE and nearest.similarity > 0.99
    old_nearest = router.route(EXTRA_UTTERANCE, use_classifier=False).candidates[0].neighbours
    assert EXTRA_UTTERANCE not in [n.text for n in old_nearest]


def test_builders_of_one_index_folder_take_turns(tmp_path: Path) -> None:
    """Two processes rebuilding one folder at once: all builds succeed, one after the other,
    and the folder ends with the live build, its predecessor and nothing half-made."""
    routes_a, routes_b = write_route_pair(tmp_path)
    out = tmp_path / "index"
    build_index(routes_a, out)
    workers = [start_worker(out, routes_a, routes_b, times=3),
               start_worker(out, routes_b, routes_a, times=3)]
    results = [w.communicate(timeout=300) for w in workers]
    for w, (stdout, stderr) in zip(workers, results, strict=True):
        assert w.returncode == 0, stderr
        assert stdout.count("built ") == 3
    builds = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(builds) == 2 and (out / "CURRENT").read_text() in builds
    for build in builds:
        assert read_manifest(out / build).build_id == build
    live = read_manifest(out / (out / "CURRENT").read_text())
    built_from = [r for r in (routes_a, routes_b)
                  if {x.name: x.content_hash() for x in load_routes(r).routes}
                  == {name: e.hash for name, e in live.routes.items()}]
    assert len(built_from) == 1
    Router.load(built_from[0], out, classifier=False)


STRACE = shutil.which("strace")
LOADER = """
import sys
from semroute.routing import Router
print("loading", flush=True)
router = Router.load(sys.argv[1], sys.argv[2], classifier=False)
print(router.index.manifest.build_id, router.route("hi there", use_classifier=False).route)
"""


@pytest.mark.skipif(STRACE is None, reason="needs strace to hold a load at one file")
@pytest.mark.parametrize(("held", "nth_open", "serves"), [
    ("utterances.json", 1, "the newest build"),  # opened first by the checksum pass
    ("encoder/onnx-int8/encoder.json", 2, "the build it loaded"),  # 2nd: the encoder's load
])
def test_a_load_survives_its_build_being_replaced_and_pruned_meanwhile(
        tmp_path: Path, held: str, nth_open: int, serves: str) -> None:
    """A load reads CURRENT, then its build's files; if two builds finish in between, the build
    it started on is pruned. Held while reading the index, it loads the newest build whole;
    held after the index is in memory, it keeps that index and takes the identical encoder
    (same fingerprint) from the newer build. strace holds the loader 3 s at one file."""
    routes_a, _ = write_route_pair(tmp_path)
    out = tmp_path / "index"
    first = build_index(routes_a, out).build_id
    delay = f"inject=openat:delay_enter=3000000:when={nth_open}"
    loader = subprocess.Popen(
        [str(STRACE), "-f", "-qq", "-o", "/dev/null", "-P", str(out / first / held),
         "-e", "trace=openat", "-e", delay, sys.executable, "-c", LOADER, str(routes_a),
         str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert loader.stdout is not None
    assert loader.stdout.readline().strip() == "loading"
    for _ in range(2):
        build_index(routes_a, out)  # same routes: the loader's route files stay fresh
    assert not (out / first).exists()
    stdout, stderr = loader.communicate(timeout=60)
    if loader.returncode != 0 and "ptrace" in stderr:
        pytest.skip(f"strace cannot trace here: {stderr.strip()}")
    assert loader.returncode == 0, stderr
    newest = (out / "CURRENT").read_text()
    assert stdout.split() == [newest if serves == "the newest build" else first, "greet"]
