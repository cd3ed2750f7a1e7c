"""Helpers for dispatch tests: one small route set and index, re-pointed at other models."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from semroute.routing import Router
from tests.conftest import TINY_ROUTES


def catalogue(models: dict[str, dict[str, Any]], **router: Any) -> dict[str, Any]:
    settings = {"default_route": "greet", "backoff_seconds": 0.01, "cooldown_seconds": 60.0}
    settings.update(router)
    return {"profile": "test", "profiles": {"test": models}, "router": settings}


def write_set(directory: Path, models: dict[str, dict[str, Any]], chain: list[str],
              **router: Any) -> Path:
    """Write TINY_ROUTES with every route mapped to `chain` (utterances unchanged, so an index
    built from any such set stays valid: models are not part of the index)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, spec in TINY_ROUTES.items():
        spec = copy.deepcopy(spec)
        spec["model"] = chain
        spec["system_prompt"] = "Answer in one short sentence."
        (directory / f"{stem}.yaml").write_text(yaml.safe_dump(spec))
    (directory / "models.yaml").write_text(yaml.safe_dump(catalogue(models, **router)))
    return directory


def load(directory: Path, index: Path, *, classifier: bool = True) -> Router:
    return Router.load(directory, index, classifier=classifier)
