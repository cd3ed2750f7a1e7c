"""Async routing keeps the event loop free: encoding and search run in a worker thread, for
`Router.aroute` and for `adispatch` alike (one plan, driven by `run_sync` or `run_async`)."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import yaml

from semroute.dispatching import Dispatcher
from semroute.encoders import Encoder
from semroute.errors import QueryError
from semroute.index import build_index
from semroute.routing import Decision, Matcher, Router
from tests.conftest import CATALOGUE, TINY_ROUTES
from tests.conftest_llm import MakeFaultServer

if TYPE_CHECKING:
    from numpy.typing import NDArray

QUERIES = [f"write a python function that sorts {i} numbers" for i in range(40)]


class ThreadRecorder:
    """The real encoder, recording the thread each `encode` runs on."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.backend, self.weights_hash = inner.backend, inner.weights_hash
        self.threads: list[int] = []

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               show_progress: bool = False) -> NDArray[np.float32]:
        self.threads.append(threading.get_ident())
        return self.inner.encode(texts, batch_size=batch_size)


def write_tiny(directory: Path, models: dict[str, Any] | None = None) -> Path:
    """TINY_ROUTES, every route on model "fast" (`models` replaces the catalogue's models)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, spec in TINY_ROUTES.items():
        (directory / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    cat = copy.deepcopy(CATALOGUE)
    if models is not None:
        cat["profiles"]["local"] = models
    (directory / "models.yaml").write_text(yaml.safe_dump(cat))
    return directory


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("router_async")
    build_index(write_tiny(root / "routes"), root / "index")
    return root / "index"


def recording(routes: Path, index: Path) -> tuple[Router, ThreadRecorder]:
    """The router of `routes`, its encoder wrapped in a ThreadRecorder."""
    loaded = Router.load(routes, index, classifier=False)
    recorder = ThreadRecorder(loaded.matcher.encoder)
    matcher = Matcher(loaded.routes, loaded.index, recorder,
                      thresholds=loaded.matcher.thresholds)
    return Router(loaded.routes, loaded.index, matcher), recorder


def test_aroute_encodes_off_the_loop_while_the_loop_keeps_running(tmp_path: Path,
                                                                  tiny_index: Path) -> None:
    router, recorder = recording(write_tiny(tmp_path / "routes"), tiny_index)

    async def main() -> tuple[int, list[Decision], list[int]]:
        ticks, stop = 0, False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        decisions, ticked = [], []
        for q in QUERIES:  # uncached: each one is encoded
            before = ticks
            decisions.append(await router.aroute(q))
            ticked.append(ticks - before)
        stop = True
        await task
        return threading.get_ident(), decisions, ticked

    loop_thread, decisions, ticked = asyncio.run(main())
    assert len(recorder.threads) == len(QUERIES)
    assert loop_thread not in recorder.threads, "the encoder ran on the event loop's thread"
    assert min(ticked) > 0, "the loop ran nothing else while a query was being routed"
    for q, d in zip(QUERIES, decisions, strict=True):  # the same decision as the sync path
        one = router.route(q)
        assert (d.route, d.method, d.candidates) == (one.route, one.method, one.candidates)


def test_aroute_raises_query_errors_like_route(tmp_path: Path, tiny_index: Path) -> None:
    router, _ = recording(write_tiny(tmp_path / "routes"), tiny_index)
    with pytest.raises(QueryError, match="empty"):
        asyncio.run(router.aroute("   "))


def test_adispatch_routes_off_the_loop(tmp_path: Path, tiny_index: Path,
                                       fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    routes = write_tiny(tmp_path / "routes", {"fast": {"provider": "openai", "model": "ok",
                                                       "base_url": ok.openai_base_url}})
    router, recorder = recording(routes, tiny_index)
    dispatcher = Dispatcher(router, trace=None)

    async def main() -> int:
        for q in QUERIES[:5]:
            r = await dispatcher.adispatch(q)
            assert r.route == "code" and r.text
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(recorder.threads) == 5 and loop_thread not in recorder.threads
    assert ok.hits == 5
