"""A validated route set: plain frozen records made from the route files and the catalogue."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from semroute.config.cascade import CascadeSpec
from semroute.config.ladder import LadderSpec
from semroute.config.rules import RuleSpec
from semroute.config.schema import ModelEntry, ParallelSpec, RouterSettings

STEP_PREFIX = "step:"  # a step's route label: never a route name (':' is not allowed there)
MODEL_PREFIX = "model:"  # the route label of a request whose caller named the model


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
    ladder: LadderSpec | None = None
    negatives: tuple[str, ...] = ()

    def content_hash(self) -> str:
        """Hash of what the index depends on: the name, the (normalised) utterances and
        negatives (not the rules: they are checked before the index, so editing them needs no
        rebuild). A route without negatives hashes as it did before negatives existed."""
        parts: list[Any] = [self.name, list(self.utterances)]
        if self.negatives:
            parts.append(list(self.negatives))
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass(frozen=True)
class RouteSet:
    """Everything read from a routes folder: routes, the active profile's models, settings."""

    directory: Path
    routes: tuple[Route, ...]
    models: dict[str, ModelEntry]
    settings: RouterSettings
    profile: str
    profiles: dict[str, dict[str, ModelEntry]] = field(repr=False)
    steps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    oos_examples: tuple[str, ...] = ()  # `router.oos_examples`, normalised
    oos_file: Path | None = None

    def oos_hash(self) -> str | None:
        """Hash of the out-of-scope examples the index embeds (None: the set has none)."""
        if not self.oos_examples:
            return None
        return hashlib.sha256(json.dumps(list(self.oos_examples)).encode()).hexdigest()

    def route(self, name: str) -> Route:
        """The route called `name` (KeyError if none): a dict lookup, once per request; a
        step's label (`step:<name>`) gives the step's route."""
        found = self._by_name.get(name)
        if found is None and name.startswith(STEP_PREFIX):
            return self.step_route(name.removeprefix(STEP_PREFIX))
        if found is None and name.startswith(MODEL_PREFIX):
            return self.model_route(name.removeprefix(MODEL_PREFIX))
        if found is None:
            raise KeyError(name)
        return found

    def step_route(self, step: str) -> Route:
        """An agent step (models.yaml `steps:`) as a route named `step:<step>` with the step's
        model chain, no utterances and no system prompt (KeyError if unknown)."""
        return Route(name=f"{STEP_PREFIX}{step}", description=f"agent step '{step}'",
                     models=self.steps[step], utterances=(), threshold=None,
                     system_prompt=None, metadata={}, file=self.directory / "models.yaml")

    def model_route(self, key: str) -> Route:
        """A caller-named catalogue key as a route named `model:<key>` served by that model
        alone, no utterances and no system prompt (KeyError if the key is unknown)."""
        if key not in self.models:
            raise KeyError(key)
        return Route(name=f"{MODEL_PREFIX}{key}", description=f"the caller named model '{key}'",
                     models=(key,), utterances=(), threshold=None, system_prompt=None,
                     metadata={}, file=self.directory / "models.yaml")

    def ladder_of(self, route: Route) -> LadderSpec | None:
        """The ladder that serves `route`: its own, else `router.ladder` for a plain route
        (parallel, cascade, agent-step and caller-named-model routes have their own way of
        choosing models)."""
        if route.ladder is not None:
            return route.ladder
        if route.parallel is None and route.cascade is None and \
                not route.name.startswith((STEP_PREFIX, MODEL_PREFIX)):
            return self.settings.ladder
        return None

    @property
    def ladders(self) -> list[LadderSpec]:
        """Every ladder some route uses (the router's default included when it applies)."""
        found = [x for r in self.routes if (x := self.ladder_of(r)) is not None]
        return list({id(x): x for x in found}.values())

    @cached_property
    def _by_name(self) -> dict[str, Route]:
        return {r.name: r for r in self.routes}

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.routes]
