"""Semroute's exceptions: one root, and a type per thing a user has to fix."""

from __future__ import annotations


class SemrouteError(Exception):
    """Root of semroute's errors."""


class ConfigError(SemrouteError):
    """A route file or the model catalogue is invalid; the message names file, route and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid route set ({count}):\n{listed}")


class IndexNotFoundError(SemrouteError):
    """No index at the given location."""


class StaleIndexError(SemrouteError):
    """The index was built from other route files, settings or another encoder."""


class CorruptIndexError(SemrouteError):
    """An index file is missing, truncated or does not match its manifest."""


class QueryError(SemrouteError, ValueError):
    """The query cannot be routed (e.g. empty after normalisation)."""


class OnnxBackendError(SemrouteError):
    """An ONNX export of the encoder cannot be made, or a saved one cannot be loaded."""
