"""Agent steps: a caller naming a step (`dispatch(..., step="planning")`) skips semantic
routing; models.yaml `steps:` maps the step to its model chain. The Decision says so."""

from __future__ import annotations

import time

from semroute.config import STEP_PREFIX, RouteSet
from semroute.errors import UnknownStepError
from semroute.routing.decision import Decision


def step_decision(routes: RouteSet, step: str, query: str) -> Decision:
    """The Decision for agent step `step`: route `step:<step>`, method "step", score and
    margin 1; raises `UnknownStepError` listing the known steps."""
    t0 = time.perf_counter()
    if step not in routes.steps:
        known = ", ".join(sorted(routes.steps)) or "none: add a `steps:` map"
        raise UnknownStepError(f"unknown agent step '{step}' (known in "
                               f"{routes.directory / 'models.yaml'} steps: {known})")
    chain = routes.steps[step]
    return Decision(
        query=query, route=f"{STEP_PREFIX}{step}", method="step", score=1.0, margin=1.0,
        threshold=0.0, margin_threshold=0.0,
        reason=f"agent step '{step}' named by the caller: models.yaml steps.{step} -> "
               f"{', '.join(chain)} (no semantic routing)",
        candidates=(), timings_ms={"step": (time.perf_counter() - t0) * 1e3})
