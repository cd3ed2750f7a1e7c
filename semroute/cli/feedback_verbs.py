"""`semroute feedback REQUEST_ID [--score S] [--label ROUTE] [--note TEXT]`: feedback on an
answered request, straight into the outcomes store of the routes folder (README "Feedback and
shadow evaluation")."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from typing import Any

from semroute.cli.dispatch_verbs import DEFAULT_TRACE


def _score(text: str) -> float | bool:
    low = text.strip().lower()
    if low in ("up", "true", "yes", "+1", "👍"):
        return True
    if low in ("down", "false", "no", "-1", "👎"):
        return False
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a score: give a number in [0, 1], "
                                         f"or up/down") from None


def cmd_feedback(args: argparse.Namespace) -> int:
    from semroute.config import load_routes
    from semroute.dispatching import feedback

    routes = load_routes(args.routes, profile=args.profile)
    trace = None if args.no_trace else args.trace or routes.settings.trace_path or DEFAULT_TRACE
    routes = replace(routes, settings=routes.settings.model_copy(update={"trace_path": trace}))
    entry = feedback(args.request_id, score=args.score, label=args.label, note=args.note,
                     routes=routes)
    if args.json:
        print(json.dumps(asdict(entry)))
    else:
        print(f"feedback #{entry.id} on request {entry.request_id}: score "
              f"{'-' if entry.score is None else f'{entry.score:g}'}, label "
              f"{entry.label or '-'}{', with a note' if entry.note else ''}")
    return 0


def register(sub: Any) -> None:
    """Add the `feedback` verb to the `semroute` parser."""
    from semroute.cli.common import routes_arg

    p = sub.add_parser("feedback", help="feedback on an answered request: a score (thumbs), "
                       "the route it should have gone to, a note")
    p.add_argument("request_id", metavar="REQUEST_ID",
                   help="Response.request_id, or the x-semroute-request-id header")
    p.add_argument("--score", type=_score, default=None, metavar="S",
                   help="a number in [0, 1], or up/down (1/0)")
    p.add_argument("--label", metavar="ROUTE", default=None,
                   help="the route the request should have gone to")
    p.add_argument("--note", metavar="TEXT", default=None, help="free text (kept in the "
                   "store; in the trace only its length unless trace_include_query)")
    routes_arg(p)
    p.add_argument("--trace", default=None, metavar="FILE", help="append the feedback line "
                   f"here (default: router.trace_path, else {DEFAULT_TRACE})")
    p.add_argument("--no-trace", action="store_true", help="write no trace line")
    p.add_argument("--json", action="store_true", help="print the stored entry as JSON")
    p.set_defaults(func=cmd_feedback)
