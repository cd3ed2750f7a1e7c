"""Outcomes: which model did how well, at what cost, on which query. Reading labelled outcome
files (`formats.py`), the records (`records.py`), the SQLite store of records and query
vectors (`store.py`, its writes in `writing.py`), importing a file into it in one
transaction (`importing.py`), the learning loop's journal of answered requests, feedback and
shadow verdicts (`journal.py`), predicting each model's quality on a query from its nearest
outcomes (`predict.py`), the runtime tiers built on it (`tiers.py`) and measuring cost
against quality (`metrics.py`)."""

from __future__ import annotations

from semroute.outcomes.formats import FORMS, OutcomeTable, read_outcome_file
from semroute.outcomes.importing import ImportSummary, import_file
from semroute.outcomes.journal import FeedbackEntry, LoggedRequest, ShadowVerdict
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
from semroute.outcomes.predict import (
    KnnSettings,
    OnePrediction,
    Prediction,
    QualityPredictor,
    feature_row,
    text_features,
)
from semroute.outcomes.records import SOURCES, OutcomeRecord, encoder_key, text_hash
from semroute.outcomes.schema import SCHEMA_VERSION
from semroute.outcomes.store import OutcomeMatrix, OutcomeStore, store_path
from semroute.outcomes.tiers import (
    ALL_ROUTES,
    TIERS_FILE,
    FittedTarget,
    FittedTargets,
    TierModel,
    TierPredictor,
    load_fitted,
    load_tiers,
    predictor_inputs,
    save_fitted,
    tiers_path,
)
from semroute.outcomes.writing import Writer

__all__ = [
    "ALL_ROUTES",
    "FORMS",
    "SCHEMA_VERSION",
    "SOURCES",
    "TIERS_FILE",
    "Curve",
    "FeedbackEntry",
    "FittedTarget",
    "FittedTargets",
    "ImportSummary",
    "KnnSettings",
    "LoggedRequest",
    "OnePrediction",
    "OperatingPoints",
    "OutcomeMatrix",
    "OutcomeRecord",
    "OutcomeStore",
    "OutcomeTable",
    "Prediction",
    "QualityPredictor",
    "ShadowVerdict",
    "TierModel",
    "TierPredictor",
    "Writer",
    "apgr",
    "cpt",
    "encoder_key",
    "feature_row",
    "frontier",
    "import_file",
    "load_fitted",
    "load_tiers",
    "operating_points",
    "pgr",
    "predictor_inputs",
    "read_outcome_file",
    "save_fitted",
    "store_path",
    "text_features",
    "text_hash",
    "threshold_curve",
    "tiers_path",
]
