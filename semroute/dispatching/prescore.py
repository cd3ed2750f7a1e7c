"""Assistant replies scored in the background as they are produced, so that the next turn of a
chat finds them in the router's per-turn cache and its decision encodes only the new turn.

One daemon worker thread and a bounded queue: the caller never waits, a full queue drops the
job (counted), and a failing job is logged and counted, never raised. It is a cache warm-up:
a dropped job only means the next decision encodes the reply itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger("semroute.dispatching.prescore")

QUEUE_SIZE = 64


class Prescorer:
    """Runs small warm-up jobs (`Router.prescore` of a reply) on one background thread."""

    def __init__(self, max_queued: int = QUEUE_SIZE) -> None:
        self._jobs: queue.Queue[Callable[[], object]] = queue.Queue(max_queued)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.failed = 0
        self.done = 0

    def submit(self, job: Callable[[], object]) -> bool:
        """Queue `job`; False (and counted in `dropped`) when the queue is full."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False
        self._start()
        return True

    def join(self) -> None:
        """Wait until every queued job has run (tests and benchmarks use this)."""
        self._jobs.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="semroute-prescore",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
                with self._lock:
                    self.done += 1
            except Exception:
                with self._lock:
                    self.failed += 1
                logger.warning("pre-scoring an assistant reply failed", exc_info=True)
            finally:
                self._jobs.task_done()
