"""Outcomes: which model did how well on which query. Reading labelled outcome files
(`formats.py`), predicting each model's quality on a query from its nearest outcomes
(`predict.py`) and measuring cost against quality (`metrics.py`)."""

from __future__ import annotations

from semroute.outcomes.formats import FORMS, OutcomeTable, read_outcome_file
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
    "FORMS",
    "Curve",
    "KnnSettings",
    "OperatingPoints",
    "OutcomeTable",
    "Prediction",
    "QualityPredictor",
    "apgr",
    "cpt",
    "frontier",
    "operating_points",
    "pgr",
    "read_outcome_file",
    "text_features",
    "threshold_curve",
]
