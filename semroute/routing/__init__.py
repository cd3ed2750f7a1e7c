"""Deciding where a query goes: the index matcher, the cheap-LLM classifier, the `Router`."""

from __future__ import annotations

from semroute.routing.classifier import Classifier, to_default
from semroute.routing.decision import (
    Candidate,
    ClassifierCall,
    Decision,
    Method,
    NegativeHit,
    Neighbour,
    RuleHit,
    TurnWeight,
)
from semroute.routing.matcher import (
    Matcher,
    Thresholds,
    prepare_query,
    resolve_thresholds,
)
from semroute.routing.router import Request, Router, load_router
from semroute.routing.rules import CompiledRule, RuleOutcome, RuleSet
from semroute.routing.steps import step_decision

__all__ = [
    "Candidate",
    "Classifier",
    "ClassifierCall",
    "CompiledRule",
    "Decision",
    "Matcher",
    "Method",
    "NegativeHit",
    "Neighbour",
    "Request",
    "Router",
    "RuleHit",
    "RuleOutcome",
    "RuleSet",
    "Thresholds",
    "TurnWeight",
    "load_router",
    "prepare_query",
    "resolve_thresholds",
    "step_decision",
    "to_default",
]
