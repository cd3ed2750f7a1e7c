"""A validated route set: plain frozen records made from the route files and the catalogue."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from semroute.config.cascade import CascadeSpec
from semroute.config.rules import RuleSpec
from semroute.config.schema import ModelEntry, ParallelSpec, RouterSettings


@dataclass(frozen=True)
class Route:
    """A validated route, with where it came from."""

    name: str
    description: str
    models: tuple[str, ...]
    utterances: tuple[str, ...]
    threshold: float | None
    system_prompt: str | None
    metadata: dict[str, Any]
    file: Path
    rules: tuple[RuleSpec, ...] = ()
    parallel: ParallelSpec | None = None
    cascade: CascadeSpec | None = None

    def content_hash(self) -> str:
        """Hash of what the index depends on: the name and the (normalised) utterances (not
        the rules: they are checked before the index, so editing them needs no rebuild)."""
        payload = json.dumps([self.name, list(self.utterances)])
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class RouteSet:
    """Everything read from a routes folder: routes, the active profile's models, settings."""

    directory: Path
    routes: tuple[Route, ...]
    models: dict[str, ModelEntry]
    settings: RouterSettings
    profile: str
    profiles: dict[str, dict[str, ModelEntry]] = field(repr=False)

    def route(self, name: str) -> Route:
        """The route called `name` (KeyError if none): a dict lookup, once per request."""
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, Route]:
        return {r.name: r for r in self.routes}

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.routes]
