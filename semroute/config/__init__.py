"""Route-set configuration: route files, the model catalogue and router settings."""

from __future__ import annotations

from semroute.config.cascade import CascadeSpec, ConfidenceGate, GateSpec, JudgeGate
from semroute.config.gateway import (
    ClientKey,
    GatewaySettings,
    RateLimit,
    RequestLimits,
    TracingSettings,
    hash_client_key,
)
from semroute.config.ladder import LadderSpec
from semroute.config.loading import load_gateway_config, load_routes, route_files
from semroute.config.modelspec import (
    STRUCTURED_MODES,
    ModelSpec,
    ProviderName,
    StructuredMode,
    Usage,
)
from semroute.config.routes import MODEL_PREFIX, STEP_PREFIX, Route, RouteSet
from semroute.config.rules import RuleSpec
from semroute.config.schema import (
    BUILTIN_PICKS,
    CATALOGUE_FILE,
    DEFAULT_BUDGET_STORE,
    RESERVED_ROUTE_NAMES,
    BudgetCap,
    BudgetPeriod,
    BudgetScope,
    BudgetSettings,
    CatalogueFile,
    ModelEntry,
    OutcomesSettings,
    ParallelSpec,
    RouteFile,
    RouterSettings,
    SharedStateSettings,
    StickinessMode,
    StickinessSettings,
)
from semroute.config.shadowing import ShadowSettings
from semroute.config.text import normalise_text, utterance_key

__all__ = [
    "BUILTIN_PICKS",
    "CATALOGUE_FILE",
    "DEFAULT_BUDGET_STORE",
    "MODEL_PREFIX",
    "RESERVED_ROUTE_NAMES",
    "STEP_PREFIX",
    "STRUCTURED_MODES",
    "BudgetCap",
    "BudgetPeriod",
    "BudgetScope",
    "BudgetSettings",
    "CascadeSpec",
    "CatalogueFile",
    "ClientKey",
    "ConfidenceGate",
    "GateSpec",
    "GatewaySettings",
    "JudgeGate",
    "LadderSpec",
    "ModelEntry",
    "ModelSpec",
    "OutcomesSettings",
    "ParallelSpec",
    "ProviderName",
    "RateLimit",
    "RequestLimits",
    "Route",
    "RouteFile",
    "RouteSet",
    "RouterSettings",
    "RuleSpec",
    "ShadowSettings",
    "SharedStateSettings",
    "StickinessMode",
    "StickinessSettings",
    "StructuredMode",
    "TracingSettings",
    "Usage",
    "hash_client_key",
    "load_gateway_config",
    "load_routes",
    "normalise_text",
    "route_files",
    "utterance_key",
]
