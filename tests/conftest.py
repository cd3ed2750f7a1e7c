"""Shared fixtures: the example route set copied to a temp folder, and its index built once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from semroute.config import RouteSet, load_routes
from semroute.index import build_index
from semroute.routing import Router
from tests.support.example_routes import copy_example_routes
from tests.support.redis_server import MISSING, REDIS_SERVER, RedisServer

pytest_plugins = ["tests.conftest_llm"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def example_routes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the shipped example routes (tests may not touch the real ones), as
    shipped: not what running them left in this checkout (tests/support/example_routes.py)."""
    return copy_example_routes(tmp_path_factory.mktemp("example") / "routes")


@pytest.fixture(scope="session")
def example_index(example_routes: Path) -> Path:
    out = example_routes.parent / "index"
    build_index(example_routes, out)
    return out


@pytest.fixture(scope="session")
def router(example_routes: Path, example_index: Path) -> Router:
    """The example router, index only (its classifier would need a cloud API key)."""
    return Router.load(example_routes, example_index, classifier=False)


@pytest.fixture(scope="session")
def example_set(example_routes: Path) -> RouteSet:
    return load_routes(example_routes)


CATALOGUE: dict[str, Any] = {
    "profile": "local",
    "profiles": {"local": {"fast": {"provider": "openai", "model": "local",
                                    "base_url": "http://127.0.0.1:9/v1"}}},
    "router": {"default_route": "greet"},
}
TINY_ROUTES: dict[str, dict[str, Any]] = {
    "greet": {"name": "greet", "description": "Greetings and small talk.", "model": "fast",
              "utterances": ["hi there", "hello, how are you", "good morning friend",
                             "hey what's up", "nice to meet you"]},
    "code": {"name": "code", "description": "Writing code.", "model": "fast",
             "utterances": ["write a python function to sort a list",
                            "implement binary search in java", "reverse a linked list in C",
                            "write a SQL query joining two tables",
                            "create a REST endpoint in flask"]},
}

WriteRoutes = Callable[..., Path]


@pytest.fixture
def write_routes(tmp_path: Path) -> WriteRoutes:
    """Write a route folder from dicts (defaults: two tiny routes); returns its path.

    `raw` maps file names to literal text, for files that must be broken on purpose.
    """

    def write(routes: dict[str, dict[str, Any]] | None = None,
              catalogue: dict[str, Any] | None = None,
              raw: dict[str, str] | None = None, name: str = "routes") -> Path:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        for stem, spec in (TINY_ROUTES if routes is None else routes).items():
            (d / f"{stem}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (d / "models.yaml").write_text(yaml.safe_dump(catalogue or CATALOGUE, sort_keys=False))
        for fname, text in (raw or {}).items():
            (d / fname).write_text(text)
        return d

    return write


# ---------------------------------------------------------------- redis-server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private real redis-server for the session (skipped only when the binary is absent;
    .ci/run installs it). Tests that restart it must leave it running."""
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
