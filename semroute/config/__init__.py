"""Route-set configuration: route files, the model catalogue and router settings."""

from __future__ import annotations

from semroute.config.loading import load_routes, route_files
from semroute.config.modelspec import (
    STRUCTURED_MODES,
    ModelSpec,
    ProviderName,
    StructuredMode,
    Usage,
)
from semroute.config.routes import Route, RouteSet
from semroute.config.rules import RuleSpec
from semroute.config.schema import (
    BUILTIN_PICKS,
    CATALOGUE_FILE,
    RESERVED_ROUTE_NAMES,
    CatalogueFile,
    ModelEntry,
    OutcomesSettings,
    ParallelSpec,
    RouteFile,
    RouterSettings,
    StickinessMode,
    StickinessSettings,
)
from semroute.config.text import normalise_text, utterance_key

__all__ = [
    "BUILTIN_PICKS",
    "CATALOGUE_FILE",
    "RESERVED_ROUTE_NAMES",
    "STRUCTURED_MODES",
    "CatalogueFile",
    "ModelEntry",
    "ModelSpec",
    "OutcomesSettings",
    "ParallelSpec",
    "ProviderName",
    "Route",
    "RouteFile",
    "RouteSet",
    "RouterSettings",
    "RuleSpec",
    "StickinessMode",
    "StickinessSettings",
    "StructuredMode",
    "Usage",
    "load_routes",
    "normalise_text",
    "route_files",
    "utterance_key",
]
