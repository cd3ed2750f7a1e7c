"""Prometheus metrics of one gateway app, in its own registry (two apps in one process never
share counters): requests, decisions, latencies, tokens, cost, failovers, cooldowns,
classifier calls, rate-limit and budget refusals, reloads, the shared state's health."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from semroute.dispatching import Attempt, Response

DECISION_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Cooling(Collector):
    """`semroute_models_cooling`: 1 for each model key cooling down now (read at scrape)."""

    def __init__(self, cooling: Callable[[], Iterable[tuple[str, bool]]]) -> None:
        self._cooling = cooling

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("semroute_models_cooling",
                              "1 while a model is cooling down after failures", labels=["model"])
        for key, cooling in self._cooling():
            g.add_metric([key], 1.0 if cooling else 0.0)
        yield g


class _SharedState(Collector):
    """`semroute_shared_state_up{backend}`, `semroute_shared_state_outages_total` and
    `semroute_shared_state_fallbacks_total{kind}` (operations served in-process while the
    shared store was down), read at scrape from the router's `SharedState`."""

    def __init__(self, status: Callable[[], dict[str, Any] | None]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        st = self._status()
        if st is None:
            return
        up = GaugeMetricFamily("semroute_shared_state_up", "1 while the shared-state backend "
                               "answers (always 1 for memory)", labels=["backend"])
        up.add_metric([str(st["backend"])], 1.0 if st["up"] else 0.0)
        yield up
        yield CounterMetricFamily("semroute_shared_state_outages", "Outages of the shared "
                                  "state store (each logged once)", value=st["outages"])
        fb = CounterMetricFamily("semroute_shared_state_fallbacks", "Operations served "
                                 "in-process while the shared store was down, by kind of state",
                                 labels=["kind"])
        for kind, n in sorted(st["fallbacks"].items()):
            fb.add_metric([kind], n)
        yield fb


class _Shadow(Collector):
    """`semroute_shadow_total{outcome}`: shadow evaluations sampled, written, dropped (queue
    full), failed, skipped (reference cooling) and over_budget (the daily shadow budget
    spent), read at scrape from the dispatcher."""

    def __init__(self, counters: Callable[[], dict[str, int] | None]) -> None:
        self._counters = counters

    def collect(self) -> Iterable[Metric]:
        c = self._counters()
        if c is None:
            return
        fam = CounterMetricFamily("semroute_shadow", "Shadow evaluations against the "
                                  "reference model, by outcome", labels=["outcome"])
        for outcome, n in c.items():
            fam.add_metric([outcome], n)
        yield fam


class GatewayMetrics:
    """The app's metrics; `observe` records a finished answer, `render` is the scrape body."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("semroute_requests", "Requests answered, by API and status",
                                ["api", "status"], registry=r)
        self.decisions = Counter("semroute_decisions", "Decisions, by route and method",
                                 ["route", "method"], registry=r)
        self.decision_seconds = Histogram("semroute_decision_seconds",
                                          "Time to decide a request's route",
                                          buckets=DECISION_BUCKETS, registry=r)
        self.upstream_seconds = Histogram("semroute_upstream_seconds",
                                          "Model call time (to the whole answer), by model",
                                          ["model"], buckets=UPSTREAM_BUCKETS, registry=r)
        self.tokens = Counter("semroute_tokens", "Tokens, by model and direction",
                              ["model", "direction"], registry=r)
        self.cost = Counter("semroute_cost_usd", "Cost in USD, by model", ["model"], registry=r)
        self.failovers = Counter("semroute_failovers",
                                 "Answers that came from another model than the first tried",
                                 ["route"], registry=r)
        self.upstream_errors = Counter("semroute_upstream_errors",
                                       "Failed model calls, by model and scope",
                                       ["model", "scope"], registry=r)
        self.classifier_calls = Counter("semroute_classifier_calls",
                                        "Fallback classifier calls, by outcome (answered, "
                                        "cached, error)", ["outcome"], registry=r)
        self.rate_limited = Counter("semroute_rate_limited", "Requests refused by a rate "
                                    "limit, by client", ["client"], registry=r)
        self.budget_refusals = Counter("semroute_budget_refusals", "Requests refused by a "
                                       "budget, by client", ["client"], registry=r)
        self.reloads = Counter("semroute_reloads", "Router reloads after a new build, by "
                               "outcome", ["outcome"], registry=r)
        self.settings_reloads = Counter("semroute_settings_reloads", "gateway.yaml re-read "
                                        "on SIGHUP, by outcome (ok, refused)", ["outcome"],
                                        registry=r)
        self.in_flight = Gauge("semroute_in_flight", "Requests being answered now", registry=r)
        self.build = Gauge("semroute_build_info", "The index build being served (value 1)",
                           ["build_id"], registry=r)

    def watch_cooldowns(self, cooling: Callable[[], Iterable[tuple[str, bool]]]) -> None:
        """Report each model's cooldown state at every scrape."""
        self.registry.register(_Cooling(cooling))

    def watch_shared_state(self, status: Callable[[], dict[str, Any] | None]) -> None:
        """Report the shared state's health at every scrape (`SharedState.status`)."""
        self.registry.register(_SharedState(status))

    def watch_shadow(self, counters: Callable[[], dict[str, int] | None]) -> None:
        """Report shadow evaluation's counters at every scrape (None: not running)."""
        self.registry.register(_Shadow(counters))

    def serving(self, build_id: str) -> None:
        self.build.clear()
        self.build.labels(build_id).set(1)

    def observe(self, r: Response) -> None:
        """Record a finished answer (a stream: when it ended)."""
        d = r.decision
        self.decisions.labels(d.route or "-", d.method).inc()
        self.decision_seconds.observe(r.latency_ms.get("decide", 0.0) / 1e3)
        model_s = (r.latency_ms.get("model", 0.0) + r.latency_ms.get("stream", 0.0)) / 1e3
        self.upstream_seconds.labels(r.model_key).observe(model_s)
        self.tokens.labels(r.model_key, "input").inc(r.usage.input_tokens)
        self.tokens.labels(r.model_key, "output").inc(r.usage.output_tokens)
        self.cost.labels(r.model_key).inc(r.cost_usd)
        if r.attempts and r.attempts[0].model_key != r.model_key:
            self.failovers.labels(r.route or "-").inc()
        self.failed_attempts(r.attempts)
        c = d.classifier
        if c is not None:
            self.classifier_calls.labels(
                "error" if c.error else "cached" if c.cached else "answered").inc()

    def failed_attempts(self, attempts: Iterable[Attempt]) -> None:
        """Count each failed model call by model and error scope."""
        for a in attempts:
            if not a.ok:
                self.upstream_errors.labels(a.model_key, str(a.scope or "unknown")).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
