"""Outcomes: which model did how well, at what cost, on which query. Reading labelled outcome
files (`formats.py`), the records (`records.py`), the SQLite store of records and query
vectors (`store.py`, its writes in `writing.py`), importing a file into it in one transaction
(`importing.py`), predicting each model's quality on a query from its nearest outcomes
(`predict.py`) and measuring cost against quality (`metrics.py`)."""

from __future__ import annotations

from semroute.outcomes.formats import FORMS, OutcomeTable, read_outcome_file
from semroute.outcomes.importing import ImportSummary, import_file
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
from semroute.outcomes.records import SOURCES, OutcomeRecord, encoder_key, text_hash
from semroute.outcomes.store import SCHEMA_VERSION, OutcomeMatrix, OutcomeStore, store_path
from semroute.outcomes.writing import Writer

__all__ = [
    "FORMS",
    "SCHEMA_VERSION",
    "SOURCES",
    "Curve",
    "ImportSummary",
    "KnnSettings",
    "OperatingPoints",
    "OutcomeMatrix",
    "OutcomeRecord",
    "OutcomeStore",
    "OutcomeTable",
    "Prediction",
    "QualityPredictor",
    "Writer",
    "apgr",
    "cpt",
    "encoder_key",
    "frontier",
    "import_file",
    "operating_points",
    "pgr",
    "read_outcome_file",
    "store_path",
    "text_features",
    "text_hash",
    "threshold_curve",
]
