"""Shadow evaluation (`router.shadow`): a sampled share of answered requests is also sent to
a reference model, off the caller's path, and a judge compares the two answers.

Sampling is deterministic per request id (sha256), so replicas agree; a request answered by
the reference itself is not shadowed, nor a stream that did not complete. The job runs on a
`BackgroundWorker` (bounded queue: a full queue drops and counts, the caller never waits): the
same messages go to the reference through `call_chain` (its retries, cooldowns; a cooling
reference or judge skips the job), then the judge sees the request and both answers twice,
positions swapped, its output constrained to "A", "B" or "tie" with a fixed rubric. Per order
the routed answer scores 1 (better), 0.5 (tie) or 0 (worse); the verdict's score is the mean,
so a judge that always says "A" yields a tie. The verdict goes to the outcomes store with the
reference's and judge's cost (catalogue prices), and to the trace as a `"kind": "shadow"`
line. Shadow calls are never part of the caller's Response, attempts or budget caps.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from semroute.config import ModelSpec, RouterSettings, ShadowSettings
from semroute.dispatching.attempts import Attempt
from semroute.dispatching.background import BackgroundWorker
from semroute.dispatching.chain import call_chain
from semroute.dispatching.parallel import JUDGE_ANSWER_CHARS, JUDGE_MAX_TOKENS
from semroute.dispatching.recording import OutcomeRecorder
from semroute.dispatching.response import Response
from semroute.dispatching.state import DispatchState
from semroute.errors import AllModelsFailedError, ProviderError
from semroute.outcomes import ShadowVerdict
from semroute.providers import Completion, Message, Parallel, Plan, run_sync

log = logging.getLogger(__name__)

LABELS = ("A", "B", "tie")
RUBRIC = (
    "You compare two answers to the same request. Judge, in this order: correctness, then "
    "whether it does what was asked completely, then clarity. Length, style and confidence "
    "count for nothing by themselves. Reply A if answer A is better, B if answer B is better, "
    "tie if neither is better."
)
# The routed answer's score per order: order 0 shows it as A, order 1 as B.
ROUTED_SCORE = ({"A": 1.0, "B": 0.0, "tie": 0.5}, {"A": 0.0, "B": 1.0, "tie": 0.5})


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is shadowed at `rate`: the same answer on every replica."""
    if rate <= 0:
        return False
    draw = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2 ** 64
    return draw < rate


def judge_prompt(query: str, first: str, second: str) -> str:
    """The judge's user message: the request, then answers A and B."""
    return (f"Request:\n{query}\n\nAnswer A:\n{first[:JUDGE_ANSWER_CHARS]}\n\n"
            f"Answer B:\n{second[:JUDGE_ANSWER_CHARS]}\n\nWhich answer is better? "
            f"Reply A, B or tie.")


def combine(labels: Sequence[str]) -> float:
    """The routed answer's score from the judge's label per order (routed shown first, then
    second): the mean of 1 better / 0.5 tie / 0 worse."""
    return sum(ROUTED_SCORE[i][label] for i, label in enumerate(labels)) / len(labels)


@dataclass(frozen=True)
class ShadowJob:
    """What one shadow evaluation needs, captured when the answer was served."""

    request_id: str
    route: str
    model: str
    answer: str
    query: str
    messages: Sequence[Message]
    kwargs: dict[str, Any]
    spec_of: Callable[[str], ModelSpec]
    settings: RouterSettings


@dataclass(frozen=True)
class Judged:
    """A finished shadow evaluation: the verdict and every call made for it."""

    verdict: ShadowVerdict
    attempts: list[Attempt]


class ShadowEvaluator:
    """Samples answered requests and evaluates them on one background worker. Counts
    `sampled` (chosen), `written` (verdicts stored), `dropped` (queue full), `failed`
    (reference, judge or store failed), `skipped` (reference or judge cooling down) and
    `over_budget` (not sampled: today's shadow spend reached `max_cost_usd_per_day`)."""

    def __init__(self, max_queued: int = 64) -> None:
        self.worker = BackgroundWorker("semroute-shadow", "a shadow evaluation (the caller's "
                                       "answer was served; this verdict is lost)", max_queued)
        self._lock = threading.Lock()
        self.sampled = 0
        self.written = 0
        self.failed = 0
        self.skipped = 0
        self.over_budget = 0
        self.spent_usd = 0.0  # shadow calls' cost on `spent_day` (UTC), this process
        self.spent_day = ""

    @property
    def dropped(self) -> int:
        """Sampled requests dropped because the queue was full."""
        return self.worker.dropped

    def counters(self) -> dict[str, int]:
        """Every counter by name (for /metrics and reports)."""
        return {"sampled": self.sampled, "written": self.written, "dropped": self.dropped,
                "failed": self.failed, "skipped": self.skipped,
                "over_budget": self.over_budget}

    def spend(self, cost_usd: float) -> None:
        """Count a shadow evaluation's cost against today's (UTC) total."""
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        with self._lock:
            if today != self.spent_day:
                self.spent_day, self.spent_usd = today, 0.0
            self.spent_usd += cost_usd

    def within_budget(self, limit: float | None) -> bool:
        """Whether today's shadow spend is under `limit` (None: always)."""
        if limit is None:
            return True
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        return today != self.spent_day or self.spent_usd < limit

    def offer(self, r: Response, shadow: ShadowSettings, make_job: Callable[[], ShadowJob],
              state: DispatchState, recorder: OutcomeRecorder | None) -> bool:
        """Queue `r` for evaluation when it is sampled; True when queued. Cheap: a hash and a
        queue put on the caller's path."""
        if (r.stream_state != "complete" or not r.text.strip() or r.model_key == shadow.reference
                or not sampled(r.request_id, shadow.rate_for(r.route))):
            return False
        if not self.within_budget(shadow.max_cost_usd_per_day):
            with self._lock:
                self.over_budget += 1
            return False
        with self._lock:
            self.sampled += 1
        job = make_job()
        return self.worker.submit(lambda: self.run(job, shadow, state, recorder))

    def run(self, job: ShadowJob, shadow: ShadowSettings, state: DispatchState,
            recorder: OutcomeRecorder | None) -> None:
        """Evaluate one job (worker thread): never raises; counts and traces the outcome."""
        reference, judge = shadow.reference, shadow.judge_key
        assert reference is not None and judge is not None
        t0 = time.perf_counter()
        line: dict[str, Any] = {
            "kind": "shadow", "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": job.request_id, "route": job.route, "model": job.model,
            "reference": reference, "judge": judge}
        try:
            if state.cooldowns.cooling([reference, judge]):
                with self._lock:
                    self.skipped += 1
                line["error"] = "skipped: the reference or the judge is cooling down"
                return
            judged = run_sync(evaluate(job, reference, judge, state))
            self.spend(judged.verdict.cost_usd or 0.0)
            line.update(score=judged.verdict.score, verdicts=list(judged.verdict.verdicts),
                        cost_usd=judged.verdict.cost_usd,
                        attempts=[asdict(a) for a in judged.attempts])
            if recorder is None:
                raise RuntimeError("no outcomes store to write the verdict to")
            recorder.add_verdict(judged.verdict)
            with self._lock:
                self.written += 1
            line["error"] = None
        except Exception as exc:  # the caller's answer is served; this is only a verdict
            with self._lock:
                self.failed += 1
            line["error"] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("shadow evaluation of request %s failed: %s", job.request_id,
                        line["error"])
        finally:
            line["latency_ms"] = (time.perf_counter() - t0) * 1e3
            if state.trace is not None:
                state.trace.write(line, redact=(job.query,))


def evaluate(job: ShadowJob, reference: str, judge: str,
             state: DispatchState) -> Plan[Judged]:
    """Ask the reference, then the judge in both orders (at once); raises when the reference
    or a judge call fails or a judge gives no valid label."""
    t0 = time.perf_counter()
    name = f"shadow:{job.route}"
    ref = yield from call_chain(name, [reference], job.spec_of, job.messages, job.kwargs, False,
                                state, job.settings)
    attempts = list(ref.attempts)
    done = ref.outcome
    assert isinstance(done, Completion)
    cost = ref.spec.cost(done.usage)
    pairs = ((job.answer, done.text), (done.text, job.answer))
    results: list[Any] = yield Parallel(tuple(call_chain(
        name, [judge], job.spec_of,
        [{"role": "user", "content": judge_prompt(job.query, a, b)}],
        {"system": RUBRIC, "max_tokens": JUDGE_MAX_TOKENS, "labels": list(LABELS)},
        False, state, job.settings) for a, b in pairs))
    labels: list[str] = []
    for order, result in enumerate(results):
        if isinstance(result, AllModelsFailedError | ProviderError):
            raise result
        if isinstance(result, BaseException):
            raise result
        attempts += result.attempts
        said = result.outcome
        assert isinstance(said, Completion)
        cost += result.spec.cost(said.usage)
        if said.label not in LABELS:
            raise ValueError(f"judge '{judge}' gave no valid label in order {order + 1} "
                             f"({said.text[:60]!r})")
        labels.append(said.label)
    verdict = ShadowVerdict(request_id=job.request_id, route=job.route, model=job.model,
                            reference=reference, judge=judge, score=combine(labels),
                            verdicts=tuple(labels), cost_usd=cost,
                            latency_ms=(time.perf_counter() - t0) * 1e3)
    return Judged(verdict, attempts)
