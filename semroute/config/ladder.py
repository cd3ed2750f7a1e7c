"""A route's `ladder:` (and `router.ladder`, the default of every plain route): models from
cheap to strong and the quality target the cheapest must be predicted to clear (README
"Outcome-learned tiers"). Runtime selection is in `routing/tiering.py`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MIN_SIMILARITY = 0.3
"""Default similarity floor (all-MiniLM-L6-v2 cosine; README "Outcome-learned tiers")."""


class LadderSpec(BaseModel):
    """`ladder: {models: [cheap, ..., strong], target, min_support, min_similarity}`: the
    cheapest model whose predicted quality (from the nearest outcome records) is at least
    `target` serves; none does: the strongest; fewer than `min_support` neighbours with
    outcomes for a model: that model is not trusted, and with no model trusted the route's
    static `model` serves, as it does when even the nearest outcome text is less similar
    than `min_similarity` (the query is unlike anything with an outcome)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(min_length=2)
    target: float = Field(default=0.8, ge=0.0, le=1.0)
    min_support: float = Field(default=10.0, ge=0.0, description="neighbours (weighted) with "
                               "an outcome for a model before its prediction is trusted")
    min_similarity: float = Field(default=MIN_SIMILARITY, ge=-1.0, le=1.0,
                                  description="cosine similarity of the nearest outcome text "
                                  "below which no prediction is made")

    @field_validator("models")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        dupes = sorted({k for k in v if v.count(k) > 1})
        if dupes:
            raise ValueError(f"each model may appear once, cheap to strong; repeated: "
                             f"{', '.join(dupes)}")
        if not all(k.strip() for k in v):
            raise ValueError("model keys must not be empty")
        return v

    def model_keys(self, prefix: str = "ladder") -> list[tuple[str, str]]:
        """(field, key) for every catalogue key named (for the catalogue check)."""
        return [(f"{prefix}.models", k) for k in self.models]
