"""Outcomes: which model did how well, at what cost, on which query. Reading labelled outcome
files (`formats.py`), the records (`records.py`), the SQLite store of records and query
vectors (`store.py`, its writes in `writing.py`) and importing a file into it in one
transaction (`importing.py`)."""

from __future__ import annotations

from semroute.outcomes.formats import FORMS, OutcomeTable, read_outcome_file
from semroute.outcomes.importing import ImportSummary, import_file
from semroute.outcomes.records import SOURCES, OutcomeRecord, encoder_key, text_hash
from semroute.outcomes.store import SCHEMA_VERSION, OutcomeMatrix, OutcomeStore, store_path
from semroute.outcomes.writing import Writer

__all__ = [
    "FORMS",
    "SCHEMA_VERSION",
    "SOURCES",
    "ImportSummary",
    "OutcomeMatrix",
    "OutcomeRecord",
    "OutcomeStore",
    "OutcomeTable",
    "Writer",
    "encoder_key",
    "import_file",
    "read_outcome_file",
    "store_path",
    "text_hash",
]
