"""`router.shadow`: shadow evaluation of routed answers against a reference model (README
"Feedback and shadow evaluation"). A sampled share of answered requests is also sent to the
reference off the hot path, and a judge compares the two answers. Runtime is in
`dispatching/shadowing.py`."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ShadowSettings(BaseModel):
    """`router.shadow: {rate, reference, judge, routes, max_queued, max_cost_usd_per_day}`:
    `rate` the share of answered requests shadowed (0: off); `routes` per-route rates over it
    (a route name, `step:<name>` or `model:<key>`); `judge` defaults to `reference`;
    `max_queued` bounds the background queue (a full queue drops and counts);
    `max_cost_usd_per_day` bounds what one process spends on shadow calls per UTC day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=0.0, ge=0.0, le=1.0)
    reference: str | None = Field(default=None, min_length=1, description="catalogue key of "
                                  "the reference (frontier) model answers are compared with")
    judge: str | None = Field(default=None, min_length=1, description="catalogue key of the "
                              "judge comparing the two answers (default: the reference)")
    routes: dict[str, float] = Field(default_factory=dict, description="route -> rate, over "
                                     "`rate` for that route")
    max_queued: int = Field(default=64, ge=1, le=100_000)
    max_cost_usd_per_day: float | None = Field(
        default=None, gt=0, description="stop sampling for the rest of the UTC day once this "
        "process's shadow calls cost this much (None: no limit); budget caps never count them")

    @field_validator("routes")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [f"'{k}': {r!r}" for k, r in v.items() if not (math.isfinite(r) and 0 <= r <= 1)]
        if bad:
            raise ValueError(f"each route's rate must be in [0, 1]; got {', '.join(bad)}")
        return v

    @model_validator(mode="after")
    def _reference_named(self) -> ShadowSettings:
        if self.active and self.reference is None:
            raise ValueError("a shadow rate above 0 needs `reference` (the catalogue key of "
                             "the model answers are compared with)")
        return self

    @property
    def active(self) -> bool:
        """Whether any request can be shadowed."""
        return self.rate > 0 or any(r > 0 for r in self.routes.values())

    @property
    def judge_key(self) -> str | None:
        """The judge's catalogue key (the reference unless `judge` is given)."""
        return self.judge or self.reference

    def rate_for(self, route: str) -> float:
        """The share of `route`'s answered requests shadowed."""
        return self.routes.get(route, self.rate)

    def model_keys(self) -> list[tuple[str, str]]:
        """(field, key) for every catalogue key named (for the catalogue check)."""
        return [(f"router.shadow.{name}", key) for name, key in
                (("reference", self.reference), ("judge", self.judge)) if key is not None]
