"""Route-set configuration: route files, the model catalogue and router settings."""

from __future__ import annotations

from semroute.config.modelspec import (
    ModelSpec,
    ProviderName,
    StructuredMode,
    Usage,
)
from semroute.config.routes import (
    CATALOGUE_FILE,
    CatalogueFile,
    ModelEntry,
    Route,
    RouteFile,
    RouterSettings,
    RouteSet,
    load_routes,
    normalise_text,
    route_files,
    utterance_key,
)

__all__ = [
    "CATALOGUE_FILE",
    "CatalogueFile",
    "ModelEntry",
    "ModelSpec",
    "ProviderName",
    "Route",
    "RouteFile",
    "RouteSet",
    "RouterSettings",
    "StructuredMode",
    "Usage",
    "load_routes",
    "normalise_text",
    "route_files",
    "utterance_key",
]
