"""OpenTelemetry spans of each answered request (request → decide → classify → model call),
only when `tracing.exporter` is set in gateway.yaml: off, nothing is imported and each request
pays one attribute check. Spans are made after the answer from its recorded timings (the
library runs no tracing code on its hot path); their start times are laid end to end."""

from __future__ import annotations

from typing import Any

from semroute.config import TracingSettings
from semroute.dispatching import Response
from semroute.errors import ConfigError


class Spans:
    """Emits one span tree per answered request, or nothing when tracing is off."""

    def __init__(self, settings: TracingSettings, exporter: Any = None) -> None:
        """`exporter` (an OpenTelemetry SpanExporter) replaces the one `settings` names and is
        fed synchronously (tests read it back)."""
        self.tracer: Any = None
        self._provider: Any = None
        if settings.exporter == "none" and exporter is None:
            return
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import (
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SimpleSpanProcessor,
            )
        except ImportError:
            raise ConfigError(["gateway settings: field 'tracing.exporter': needs the "
                               "OpenTelemetry SDK (pip install opentelemetry-sdk"
                               " opentelemetry-exporter-otlp-proto-http)"]) from None
        provider = TracerProvider(resource=Resource.create(
            {"service.name": settings.service_name}))
        self._provider = provider
        self.tracer = provider.get_tracer("semroute.gateway")
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            return
        if settings.exporter == "console":
            exporter = ConsoleSpanExporter()
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise ConfigError(["gateway settings: field 'tracing.exporter': 'otlp' needs "
                                   "pip install opentelemetry-exporter-otlp-proto-http"]) from None
            exporter = OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint \
                else OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))

    def record(self, r: Response, api: str, start_ns: int, end_ns: int) -> None:
        """The span tree of one answered request (no-op when tracing is off)."""
        if self.tracer is None:
            return
        from opentelemetry import trace

        d = r.decision
        root = self.tracer.start_span("semroute.request", start_time=start_ns, attributes={
            "semroute.api": api, "semroute.request_id": r.request_id,
            "semroute.route": d.route or "", "semroute.method": d.method,
            "semroute.model": r.model_key, "gen_ai.usage.input_tokens": r.usage.input_tokens,
            "gen_ai.usage.output_tokens": r.usage.output_tokens})
        ctx = trace.set_span_in_context(root)
        at = start_ns
        decide_ns = int(r.latency_ms.get("decide", 0.0) * 1e6)
        span = self.tracer.start_span("semroute.decide", context=ctx, start_time=at, attributes={
            "semroute.score": d.score, "semroute.margin": d.margin})
        if d.classifier is not None:
            c = d.classifier
            c_ns = int(c.latency_ms * 1e6)
            self.tracer.start_span(
                "semroute.classify", context=trace.set_span_in_context(span),
                start_time=at + max(0, decide_ns - c_ns),
                attributes={"semroute.classifier.model": c.model,
                            "semroute.classifier.answer": c.answer or ""},
            ).end(end_time=at + decide_ns)
        span.end(end_time=at + decide_ns)
        at += decide_ns
        for a in r.attempts:
            took = int(a.latency_ms * 1e6)
            self.tracer.start_span("semroute.model_call", context=ctx, start_time=at,
                                   attributes={"semroute.model_key": a.model_key,
                                               "semroute.try": a.try_number,
                                               "semroute.ok": a.ok}).end(end_time=at + took)
            at += took
        root.end(end_time=max(end_ns, at))

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
