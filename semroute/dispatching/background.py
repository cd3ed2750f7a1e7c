"""Work done after the caller has its answer: pre-scoring a chat reply for the conversation's
next turn, recording cascade outcomes in the outcomes store.

`BackgroundWorker`: one daemon thread and a bounded queue. The caller never waits, a full
queue drops the job (counted), and a failing job is logged and counted, never raised: the
answer is already served. At interpreter exit a worker is stopped after its current job (an
encoder torn down mid-call would abort the process); queued jobs are dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import weakref
from collections.abc import Callable

logger = logging.getLogger("semroute.dispatching.background")

QUEUE_SIZE = 64
STOP_WAIT_S = 5.0
_LIVE: weakref.WeakSet[BackgroundWorker] = weakref.WeakSet()


class BackgroundWorker:
    """Runs jobs on one background thread named `name`; `what` says in a failure's log line
    what was lost. Counts `done`, `failed` and `dropped` jobs."""

    def __init__(self, name: str, what: str, max_queued: int = QUEUE_SIZE) -> None:
        self.name = name
        self.what = what
        self._jobs: queue.Queue[Callable[[], object]] = queue.Queue(max_queued)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0
        self.failed = 0
        self.done = 0

    def submit(self, job: Callable[[], object]) -> bool:
        """Queue `job`; False (and counted in `dropped`) when the queue is full or closed."""
        if self._closed:
            with self._lock:
                self.dropped += 1
            return False
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False
        self._start()
        return True

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued job has run, at most `timeout` s (None: no limit); whether
        they all have (a server's shutdown waits a bounded time, tests wait for good)."""
        done = self._jobs.all_tasks_done
        with done:
            return done.wait_for(lambda: not self._jobs.unfinished_tasks, timeout)

    def close(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop the worker after its current job; jobs still queued are dropped."""
        self._closed = True
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        with contextlib.suppress(queue.Full):  # when full, the worker sees `_closed` next
            self._jobs.put_nowait(_stop)
        thread.join(timeout)

    def _start(self) -> None:
        if self.running:  # the common case, without the lock the worker takes per job
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name,
                                                daemon=True)
                self._thread.start()
                _LIVE.add(self)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if self._closed or job is _stop:
                self._jobs.task_done()
                self._drain()
                return
            try:
                job()
                with self._lock:
                    self.done += 1
            except Exception:
                with self._lock:
                    self.failed += 1
                logger.warning("%s failed", self.what, exc_info=True)
            finally:
                self._jobs.task_done()

    def _drain(self) -> None:
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self.dropped += 1
            self._jobs.task_done()


def _stop() -> None:
    """The sentinel job that stops a worker."""


@atexit.register
def _close_all() -> None:
    for p in list(_LIVE):
        p.close()
