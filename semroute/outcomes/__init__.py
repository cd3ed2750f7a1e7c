"""Outcomes: which model did how well on which query. Reading labelled outcome files
(`formats.py`); the store of outcome records and query vectors follows in `store.py`."""

from __future__ import annotations

from semroute.outcomes.formats import FORMS, OutcomeTable, read_outcome_file

__all__ = [
    "FORMS",
    "OutcomeTable",
    "read_outcome_file",
]
