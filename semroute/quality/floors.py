"""The classifier floor from traffic: the lowest `router.classifier_min_score` that sends at
most a chosen share of queries to the fallback classifier. Needs no labels: index-only
decisions over a representative sample (validation rows or logged queries) are enough."""

from __future__ import annotations

from collections.abc import Sequence

from semroute.routing import Decision


def classifier_floor_for(decisions: Sequence[Decision], max_share: float) -> float | None:
    """The lowest floor with which at most `max_share` of these index-only decisions would
    reach the classifier (undecided and scoring at or above it); None when the undecided
    ones are already few enough. Raises ValueError for a share outside [0, 1]."""
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"max_share {max_share} is not a share: give a number in [0, 1]")
    scores = sorted((d.score for d in decisions if d.method == "undecided"), reverse=True)
    allowed = int(max_share * len(decisions))
    if len(scores) <= allowed:
        return None
    return round(scores[allowed] + 1e-4, 4)  # the (allowed+1)-th best falls just below it
