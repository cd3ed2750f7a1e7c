"""Arguments and input shared by the CLI's verbs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semroute.errors import SemrouteError

DEFAULT_ROUTES = "routes"
DEFAULT_INDEX = "indexes/default"


def routes_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--routes", default=DEFAULT_ROUTES, metavar="DIR",
                   help=f"route files and models.yaml (default: {DEFAULT_ROUTES})")
    p.add_argument("--profile", default=None, help="model profile of models.yaml to use")


def index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", default=DEFAULT_INDEX, metavar="DIR",
                   help=f"index folder (default: {DEFAULT_INDEX})")


def read_queries(args: argparse.Namespace) -> list[str]:
    """Queries from the command line and from `--file` (one per line, '-' = stdin)."""
    queries = list(args.query)
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        queries += [q for q in text.splitlines() if q.strip()]
    if not queries:
        raise SemrouteError("give a query, or --file FILE with one query per line")
    return queries
