"""`semroute augment ROUTE...`: paraphrases of thin routes' utterances from the configured
model, filtered and shown as a patch to review; `--write` applies it after validation."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the `augment` verb to the `semroute` sub-parsers."""
    from semroute.cli.common import index_arg, routes_arg
    from semroute.cli.patch_output import patch_args

    p = sub.add_parser("augment", help="ask the configured model for new utterances of "
                                       "thin routes, as a patch to review")
    p.add_argument("route", nargs="*", help="route names (default: with --thin N, every "
                                            "route with fewer than N utterances)")
    routes_arg(p)
    index_arg(p)
    p.add_argument("--thin", type=int, default=None, metavar="N",
                   help="augment every route with fewer than N utterances")
    p.add_argument("--model", metavar="KEY", default=None,
                   help="catalogue key of the model to ask (default: router.classifier_model, "
                        "else the route's first model)")
    p.add_argument("--n", type=int, default=12, metavar="N",
                   help="paraphrases to ask for per route (default 12)")
    patch_args(p)
    p.set_defaults(func=cmd_augment)


def cmd_augment(args: argparse.Namespace) -> int:
    from semroute.cli.patch_output import emit_patch
    from semroute.config import load_routes
    from semroute.dispatching import Dispatcher
    from semroute.errors import SemrouteError
    from semroute.quality.augmenting import augment
    from semroute.routing import Router

    routes = load_routes(args.routes, profile=args.profile)
    names = list(args.route)
    if args.thin is not None:
        names += [r.name for r in routes.routes if len(r.utterances) < args.thin]
    if not names:
        raise SemrouteError("name the routes to augment, or give --thin N (every route with "
                            "fewer than N utterances)" if args.thin is None else
                            f"no route has fewer than {args.thin} utterances")
    by_name = {r.name: r for r in routes.routes}
    key = args.model or routes.settings.classifier_model or (
        by_name[names[0]].models[0] if names[0] in by_name else None)
    if key is None:
        raise SemrouteError("no model to ask: give --model KEY")
    dispatcher = Dispatcher(Router.load(routes, args.index, classifier=False))

    def ask(model: str, system: str, prompt: str) -> tuple[str, float, str | None]:
        r = dispatcher.dispatch(prompt, system=system, model=model, max_tokens=600,
                                temperature=0.9)
        return r.text, r.cost_usd, r.request_id

    found = augment(dispatcher.router, names, ask, model=key, n=args.n,
                    per_route=args.per_route)
    return emit_patch(args, found.patch, found.to_dict, found.summary, "augment")
