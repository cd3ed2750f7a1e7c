"""The shipped example route set, copied for a test or benchmark to use: the route files and
models.yaml only, never what running them left in the checkout (the quickstart's outcome
store and its WAL files, traces, local state), so every copy starts from the shipped state."""

from __future__ import annotations

import shutil
from pathlib import Path

EXAMPLE_ROUTES = Path(__file__).resolve().parent.parent.parent / "routes"
RUN_STATE = shutil.ignore_patterns("*.db", "*.db-*", ".semroute", "traces", "*.jsonl")


def copy_example_routes(dst: Path) -> Path:
    """`routes/` as shipped, copied to `dst` (which must not exist yet)."""
    shutil.copytree(EXAMPLE_ROUTES, dst, ignore=RUN_STATE)
    return dst
