"""`semroute suggest`: a reviewable patch to the route files from what the learning loop
logged (new utterances, tier moves); `--write` applies it after validating the result."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the `suggest` verb to the `semroute` sub-parsers."""
    from semroute.cli.common import index_arg, routes_arg
    from semroute.cli.patch_output import patch_args

    p = sub.add_parser("suggest", help="propose new utterances and tier moves from logged "
                                       "requests, feedback and outcomes, as a patch")
    routes_arg(p)
    index_arg(p)
    p.add_argument("--store", metavar="PATH", default=None,
                   help="outcomes store (default: router.outcomes.path)")
    p.add_argument("--trace", action="append", default=[], metavar="FILE",
                   help="trace JSONL file with queries (router.trace_include_query); repeatable")
    p.add_argument("--since", metavar="T", default=None,
                   help="only what was logged since T: epoch seconds, ISO time, or 7d/12h")
    p.add_argument("--target", type=float, default=0.8, metavar="Q",
                   help="quality a route's model should reach (tier moves; default 0.8)")
    p.add_argument("--min-outcomes", type=int, default=20, metavar="N",
                   help="outcomes a tier move needs (default 20)")
    patch_args(p)
    p.set_defaults(func=cmd_suggest)


def cmd_suggest(args: argparse.Namespace) -> int:
    from semroute.cli.patch_output import emit_patch
    from semroute.config import load_routes
    from semroute.errors import SemrouteError
    from semroute.outcomes import OutcomeStore, store_path
    from semroute.quality.suggesting import parse_time
    from semroute.quality.suggestions import suggest
    from semroute.routing import Router

    if args.per_route < 0:
        raise SemrouteError(f"--per-route must be >= 0, got {args.per_route}")
    routes = load_routes(args.routes, profile=args.profile)
    path = Path(args.store) if args.store else store_path(routes)
    if not path.is_file() and not args.trace:
        raise SemrouteError(f"{path}: no outcomes store (set router.outcomes.log_requests, "
                            f"or give --store PATH or --trace FILE)")
    router = Router.load(routes, args.index, classifier=False)
    store = OutcomeStore(path) if path.is_file() else None
    try:
        found = suggest(router, store=store, traces=args.trace, since=parse_time(args.since),
                        per_route=args.per_route, target=args.target,
                        min_n=args.min_outcomes)
    finally:
        if store is not None:
            store.close()
    return emit_patch(args, found.patch, found.to_dict, found.summary, "suggest")
