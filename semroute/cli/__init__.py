"""The `semroute` command line: build, route, routes, dispatch, chat, eval, fit, lint."""

from __future__ import annotations

from semroute.cli.app import main

__all__ = ["main"]
