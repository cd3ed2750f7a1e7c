"""Where decision records go: trace sinks (JSONL file, logging)."""

from __future__ import annotations

from semroute.telemetry.trace import (
    JsonlSink,
    LoggingSink,
    TraceSink,
    TraceWriter,
    read_trace,
)

__all__ = [
    "JsonlSink",
    "LoggingSink",
    "TraceSink",
    "TraceWriter",
    "read_trace",
]
