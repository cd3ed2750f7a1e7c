"""A build killed at any moment leaves the previous index serving, and everything a build wrote
is on disk (fsynced) before `CURRENT` names it. Real builds in real processes, real SIGKILLs."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from semroute.config import RouteSet, load_routes
from semroute.errors import StaleIndexError
from semroute.index import RouteIndex, build_index, read_manifest
from semroute.routing import Router
from tests.support.rebuild_worker import EXTRA_UTTERANCE, start_worker, write_route_pair

KILLS = 20


def load_live(out: Path, candidates: list[RouteSet]) -> tuple[RouteSet, RouteIndex]:
    """Load the live build, checking every checksum and that it is fresh against one of the
    route sets it may have been built from; that route set and the index."""
    for routes in candidates:
        try:
            return routes, RouteIndex.load(out, routes, verify=True)
        except StaleIndexError:
            continue
    raise AssertionError(f"the live build {(out / 'CURRENT').read_text()} matches no route set")


def test_a_build_killed_at_any_moment_leaves_a_loadable_index(tmp_path: Path) -> None:
    routes_a, routes_b = write_route_pair(tmp_path)
    sets = [load_routes(routes_a), load_routes(routes_b)]
    out = tmp_path / "index"
    user_file = out / "notes.txt"
    out.mkdir()
    user_file.write_text("mine")

    # The index to protect, then how long a build takes in a fresh process with a warm
    # embedding cache, like the builds that get killed (the longest of two: the machine is shared).
    durations = []
    for routes in (routes_a, routes_b, routes_a):
        worker = start_worker(out, routes)
        stdout, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
        durations.append(float(stdout.split()[-1]))
    duration = max(durations[1:])

    # Kill times spread evenly over the build (and a little past it), one random one per slot.
    rng = random.Random(1234)
    interrupted = 0
    for kill in range(KILLS):
        before = (out / "CURRENT").read_text()
        worker = start_worker(out, [routes_a, routes_b][kill % 2])
        assert worker.stdout is not None
        assert worker.stdout.readline().startswith("building")
        time.sleep(duration * 1.25 * (kill + rng.random()) / KILLS)
        worker.send_signal(signal.SIGKILL)
        stdout, _ = worker.communicate(timeout=30)
        interrupted += "built" not in stdout

        after = (out / "CURRENT").read_text()
        assert after == before or re.fullmatch(r"b\d{8}T\d{6}-[0-9a-f]{6}", after)
        assert load_live(out, sets)[1].manifest.build_id == after
    assert interrupted >= KILLS // 2, f"only {interrupted} kills landed during a build"

    routes, _ = load_live(out, sets)
    router = Router.load(routes, out, classifier=False)
    assert router.route("good morning friend", use_classifier=False).route == "greet"

    # The next normal build succeeds and removes what the killed builds left (only that).
    report = build_index(routes_b, out)
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 5 and {".lock", "CURRENT", "notes.txt", report.build_id} <= set(left)
    assert user_file.read_text() == "mine"
    router = Router.load(routes_b, out, classifier=False)
    nearest = router.route(EXTRA_UTTERANCE, use_classifier=False).candidates[0].neighbours[0]
    assert nearest.text == EXTRA_UTTERANCE and nearest.similarity > 0.99


STRACE = shutil.which("strace")


def traced_build(out: Path, routes: Path, log: Path) -> str:
    """Run one build under strace, recording fsyncs and renames with the paths they act on."""
    worker = start_worker(out, routes, prefix=[
        str(STRACE), "-f", "-qq", "-y", "-o", str(log),
        "-e", "trace=fsync,fdatasync,rename,renameat,renameat2"])
    stdout, stderr = worker.communicate(timeout=120)
    if worker.returncode != 0 and "ptrace" in stderr:
        pytest.skip(f"strace cannot trace here: {stderr.strip()}")
    assert worker.returncode == 0, stderr
    return stdout.split()[-2]


@pytest.mark.skipif(STRACE is None, reason="needs strace")
def test_every_file_and_folder_is_fsynced_before_current_switches(tmp_path: Path) -> None:
    routes_a, routes_b = write_route_pair(tmp_path)
    out = tmp_path / "index"
    build_index(routes_a, out)
    log = tmp_path / "strace.log"
    build_id = traced_build(out, routes_b, log)

    events: list[tuple[str, str]] = []  # (call, path or "src -> dst"), in order
    index = str(out.resolve())
    for line in log.read_text().splitlines():
        m = re.search(r"\b(fsync|fdatasync)\(\d+<([^>]*)>\)\s*=\s*0", line)
        if m:
            events.append(("fsync", m.group(2)))
            continue
        m = re.search(r"\b(rename\w*)\(.*?\"([^\"]+)\".*?\"([^\"]+)\".*\)\s*=\s*0", line)
        if m:
            events.append(("rename", f"{m.group(2)} -> {m.group(3)}"))

    def at(call: str, predicate: str) -> int:
        hits = [i for i, (c, what) in enumerate(events) if c == call and re.search(predicate, what)]
        assert hits, f"no {call} matching {predicate!r} in {events}"
        return hits[-1]

    tmp_dir = f"{index}/.tmp-{build_id}"
    switch = at("rename", rf"\.CURRENT\.{build_id}\S* -> \S*/CURRENT$")
    publish = at("rename", rf"\.tmp-{build_id} -> \S*/{build_id}$")
    build = out / build_id
    written = [p for p in build.rglob("*")] + [build]
    for p in written:
        as_written = str(p.resolve()).replace(f"{index}/{build_id}", tmp_dir)
        synced = [i for i, (c, what) in enumerate(events) if c == "fsync" and what == as_written]
        assert synced and synced[0] < publish, f"{p} is not fsynced before the build is published"
    index_synced = [i for i, (c, what) in enumerate(events) if c == "fsync" and what == index]
    assert any(publish < i < switch for i in index_synced), "the build's rename is not durable"
    assert any(i > switch for i in index_synced), "CURRENT's rename is not durable"
    pointer = f"{index}/.CURRENT.{build_id}"
    assert at("fsync", rf"^{re.escape(pointer)}") < switch
    assert os.path.samefile(out / (out / "CURRENT").read_text(), build)


def test_a_damaged_live_build_is_not_carried_into_the_next(tmp_path: Path) -> None:
    """A rebuild reuses the live build's encoder export and vectors only if every checksum
    matches; a damaged file is never copied into the new build and blessed with a new checksum."""
    routes_a, routes_b = write_route_pair(tmp_path)
    out = tmp_path / "index"
    first = build_index(routes_a, out)
    tokenizer = "encoder/onnx-int8/tokenizer.json"
    pristine = read_manifest(out / first.build_id).files[tokenizer]
    path = out / first.build_id / tokenizer
    path.write_text(path.read_text().replace('"hello"', '"hellp"', 1))  # still valid JSON
    second = build_index(routes_b, out)
    assert read_manifest(out / second.build_id).files[tokenizer] == pristine
    RouteIndex.load(out, load_routes(routes_b), verify=True)
