"""Deciding where a query goes: the index matcher, the cheap-LLM classifier, the `Router`."""

from __future__ import annotations

from semroute.routing.classifier import Classifier, to_default
from semroute.routing.decision import (
    Candidate,
    ClassifierCall,
    Decision,
    Method,
    Neighbour,
    TurnWeight,
)
from semroute.routing.matcher import (
    Matcher,
    Thresholds,
    prepare_query,
    resolve_thresholds,
)
from semroute.routing.router import Request, Router, load_router

__all__ = [
    "Candidate",
    "Classifier",
    "ClassifierCall",
    "Decision",
    "Matcher",
    "Method",
    "Neighbour",
    "Request",
    "Router",
    "Thresholds",
    "TurnWeight",
    "load_router",
    "prepare_query",
    "resolve_thresholds",
    "to_default",
]
