"""Outcomes: what each model's answers were worth, and learning from them which model a query
needs (quality prediction, cost-quality metrics)."""

from __future__ import annotations

from semroute.outcomes.metrics import (
    Curve,
    OperatingPoints,
    apgr,
    cpt,
    frontier,
    operating_points,
    pgr,
    threshold_curve,
)
from semroute.outcomes.predict import KnnSettings, Prediction, QualityPredictor, text_features

__all__ = [
    "Curve",
    "KnnSettings",
    "OperatingPoints",
    "Prediction",
    "QualityPredictor",
    "apgr",
    "cpt",
    "frontier",
    "operating_points",
    "pgr",
    "text_features",
    "threshold_curve",
]
