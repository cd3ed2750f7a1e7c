"""The query-vector cache: safe to share between threads, and its entries own their memory."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np

from semroute.encoders import Encoder, QueryCache
from semroute.routing import Router

if TYPE_CHECKING:
    from numpy.typing import NDArray


class BatchWatcher:
    """The real encoder, keeping a weak reference to every array it returns."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.backend, self.weights_hash = inner.backend, inner.weights_hash
        self.batches: list[weakref.ref[NDArray[np.float32]]] = []

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               show_progress: bool = False) -> NDArray[np.float32]:
        out = self.inner.encode(texts, batch_size=batch_size)
        self.batches.append(weakref.ref(out))
        return out


def test_an_eviction_between_lookup_and_reorder_is_harmless(router: Router) -> None:
    """Thread A finds its query cached; before A marks it recently used, thread B's insert
    evicts it. Without a lock A then fails with KeyError (the race, made deterministic by
    pausing A at the reorder with a profile hook)."""
    encoder = router.matcher.encoder
    cache = QueryCache(encoder, maxsize=1)
    cache.encode(["the cached query"])
    in_window, evicted = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def pause_before_reorder(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") == "move_to_end" \
                and not in_window.is_set():
            in_window.set()
            evicted.wait(timeout=1.0)  # a locked cache makes B wait for A: go on after 1 s

    def reader() -> None:
        sys.setprofile(pause_before_reorder)
        try:
            results["reader"] = cache.encode(["the cached query"])
        except BaseException as exc:  # reported by the main thread
            results["reader"] = exc
        finally:
            sys.setprofile(None)

    def evictor() -> None:
        in_window.wait(timeout=10.0)
        results["evictor"] = cache.encode(["another query"])
        evicted.set()

    workers = [threading.Thread(target=reader), threading.Thread(target=evictor)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30.0)
    assert in_window.is_set(), "the reader never reordered a cached entry"
    got = results["reader"]
    assert isinstance(got, tuple), f"the reader failed: {got!r}"
    vecs, hits = got
    assert hits == 1
    np.testing.assert_allclose(vecs[0], encoder.encode(["the cached query"])[0], atol=1e-5)
    assert len(cache) == 1 and cache.hits + cache.misses == 3


def test_cache_survives_many_threads_with_a_tiny_maxsize(router: Router) -> None:
    """Readers re-ask two hot queries while writers keep evicting them (maxsize 2)."""
    encoder = router.matcher.encoder
    cache = QueryCache(encoder, maxsize=2)
    hot = ["a hot query", "another hot query"]
    expected = {t: encoder.encode([t])[0] for t in hot}
    errors: list[BaseException] = []
    calls, per_call = 60, 16
    saved = sys.getswitchinterval()

    def reader() -> None:
        for _ in range(calls):
            try:
                vecs, _ = cache.encode(hot * per_call)
                for t, vec in zip(hot * per_call, vecs, strict=True):
                    np.testing.assert_allclose(vec, expected[t], atol=0.05)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

    def writer(k: int) -> None:
        for i in range(calls):
            try:
                cache.encode([f"cold query {k} {i}"])
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

    workers = [threading.Thread(target=reader) for _ in range(4)]
    workers += [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up sooner
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(saved)
    assert not errors, f"{len(errors)} call(s) failed, first: {errors[0]!r}"
    assert cache.hits + cache.misses == 4 * calls * (2 * per_call + 1)
    assert len(cache) <= 2


def test_cached_vectors_do_not_keep_the_encoder_batch_alive(router: Router) -> None:
    watcher = BatchWatcher(router.matcher.encoder)
    cache = QueryCache(watcher, maxsize=16)
    texts = ["a first uncached query", "a second uncached query", "a third one"]
    vecs, hits = cache.encode(texts)
    assert hits == 0 and len(watcher.batches) == 1
    del vecs
    gc.collect()
    assert watcher.batches[0]() is None, "a cached row still refers to the whole batch array"
    again, hits = cache.encode(texts)
    assert hits == 3 and len(watcher.batches) == 1
    np.testing.assert_allclose(again, router.matcher.encoder.encode(texts), atol=1e-5)
    cache.clear()
    assert len(cache) == 0 and cache.encode(texts[:1])[1] == 0

