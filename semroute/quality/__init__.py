"""Measuring and improving a route set: evaluate, fit thresholds, lint, reports, and the
monitor report over live traffic (`monitor_report.py` and its siblings), and the learning
loop's suggestions (new utterances, tier moves) as patches to the route files."""

from __future__ import annotations

from semroute.quality.conversations import (
    Conversation,
    ConversationEval,
    Turn,
    evaluate_conversations,
    load_conversations,
)
from semroute.quality.crossfit import CrossFit, cross_fit_target, fit_cross_fitted
from semroute.quality.evaluation import (
    OOS,
    EvalResult,
    LabelledQuery,
    evaluate,
    gold_label,
    index_route,
    is_misroute,
    load_labelled,
    predicted_label,
    route_all,
    score_decisions,
)
from semroute.quality.fitting import (
    FitResult,
    evaluate_with,
    fit_thresholds,
    redecide,
    to_calibration,
)
from semroute.quality.floors import classifier_floor_for
from semroute.quality.linting import (
    LintFinding,
    LintLimits,
    lint,
    lint_dir,
)
from semroute.quality.live_share import (
    ShareEstimate,
    estimate_oos_share,
    misroute_at_share,
    oos_share_weights,
    trace_scores,
)
from semroute.quality.monitor_report import (
    MonitorReport,
    MonitorSettings,
    build_report,
    write_monitor,
)
from semroute.quality.pii import personal_data
from semroute.quality.recall_fit import fit_oos_recall
from semroute.quality.route_patch import RouteEdit, RoutePatch, apply_patch, make_patch
from semroute.quality.suggesting import UtteranceSuggestions
from semroute.quality.suggestions import Suggestions, suggest
from semroute.quality.tier_moves import TierMove

__all__ = [
    "OOS",
    "Conversation",
    "ConversationEval",
    "CrossFit",
    "EvalResult",
    "FitResult",
    "LabelledQuery",
    "LintFinding",
    "LintLimits",
    "MonitorReport",
    "MonitorSettings",
    "RouteEdit",
    "RoutePatch",
    "ShareEstimate",
    "Suggestions",
    "TierMove",
    "Turn",
    "UtteranceSuggestions",
    "apply_patch",
    "build_report",
    "classifier_floor_for",
    "cross_fit_target",
    "estimate_oos_share",
    "evaluate",
    "evaluate_conversations",
    "evaluate_with",
    "fit_cross_fitted",
    "fit_oos_recall",
    "fit_thresholds",
    "gold_label",
    "index_route",
    "is_misroute",
    "lint",
    "lint_dir",
    "load_conversations",
    "load_labelled",
    "make_patch",
    "misroute_at_share",
    "oos_share_weights",
    "personal_data",
    "predicted_label",
    "redecide",
    "route_all",
    "score_decisions",
    "suggest",
    "to_calibration",
    "trace_scores",
    "write_monitor",
]
