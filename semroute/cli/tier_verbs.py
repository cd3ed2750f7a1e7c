"""`semroute outcomes fit`: set a ladder's target on held-out outcomes, for a share of strong
calls or a share of the best single model's quality, and write it to `tiers.json` beside the
outcomes store, where the router applies it over the route file's target (the Decision's
`tier.target_source` says so). `--dry-run` only prints it and the YAML line to paste instead.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register_tier_verbs(outcomes_sub: Any) -> None:
    """Add `fit` to the sub-parsers of the `outcomes` group."""
    from semroute.cli.common import index_arg, routes_arg

    p = outcomes_sub.add_parser(
        "fit", help="fit a ladder's target on held-out outcomes (a share of strong calls or "
                    "of the best model's quality) and write it to tiers.json")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-strong-share", type=float, metavar="SHARE",
                      help="send this share of queries (0-1) to the ladder's strongest model")
    goal.add_argument("--target-quality", type=float, metavar="SHARE",
                      help="reach this share (0-1] of the best single model's quality, "
                           "as cheaply as possible")
    p.add_argument("--route", default=None, metavar="NAME",
                   help="the route whose ladder to fit (default: router.ladder, or the one "
                        "ladder the routes use); its target is written for that route only")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="fold shuffle seed (default 0)")
    p.add_argument("--store", metavar="PATH", default=None,
                   help="the outcomes store (default: router.outcomes.path)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the target and the YAML to paste; write nothing")
    p.add_argument("--json", action="store_true", help="print the fitted target as JSON")
    routes_arg(p)
    index_arg(p)
    p.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from semroute.config import load_routes
    from semroute.errors import ConfigError, OutcomeStoreError
    from semroute.index import RouteIndex
    from semroute.outcomes import (
        ALL_ROUTES,
        FittedTargets,
        OutcomeStore,
        load_fitted,
        predictor_inputs,
        save_fitted,
        store_path,
        tiers_path,
    )
    from semroute.quality.tier_fit import fit_target, held_out

    routes = load_routes(args.routes, profile=args.profile)
    if args.route is not None:
        ladder = routes.ladder_of(routes.route(args.route)) if args.route in routes.names \
            else None
        if ladder is None:
            raise ConfigError([f"{args.routes}: route '{args.route}' has no ladder (give it "
                               f"`ladder:` or set router.ladder)"
                               if args.route in routes.names else
                               f"{args.routes}: no route named '{args.route}'"])
    elif routes.settings.ladder is not None:
        ladder = routes.settings.ladder
    elif len(routes.ladders) == 1:
        ladder = routes.ladders[0]
    else:
        raise ConfigError([f"{args.routes}: {len(routes.ladders)} ladders in the routes and no "
                           f"router.ladder: name one with --route"])
    file = Path(args.store) if args.store else store_path(routes)
    if not file.is_file():
        raise OutcomeStoreError(f"{file}: no outcomes store there: import outcomes first "
                                f"(semroute outcomes import FILE)")
    fingerprint = RouteIndex.load(args.index, routes).manifest.fingerprint
    with OutcomeStore(file) as store:
        vectors, scores, feats, _ = predictor_inputs(store, fingerprint, list(ladder.models))
    h = held_out(vectors, scores, feats, ladder.models, folds=args.folds, seed=args.seed)
    fitted = fit_target(h, ladder.models, strong_share=args.target_strong_share,
                        quality=args.target_quality, folds=args.folds)
    key = args.route or ALL_ROUTES
    written = None
    if not args.dry_run:
        path = tiers_path(file)
        old = load_fitted(path) or FittedTargets()
        written = save_fitted(path, FittedTargets(targets={**old.targets, key: fitted}))
    if args.json:
        print(json.dumps({"route": key, "written": str(written) if written else None,
                          **fitted.model_dump()}, indent=2))
        return 0
    print(f"ladder {' < '.join(ladder.models)} on {fitted.rows} held-out outcome texts "
          f"({fitted.folds} folds)")
    print(f"target {fitted.target:.4f}: strong share {fitted.achieved_strong_share:.1%}, "
          f"quality {fitted.achieved_quality:.4f} (strongest alone {fitted.strong_quality:.4f})")
    where = f"route '{key}'" if key != ALL_ROUTES else "every ladder with these models"
    print(f"written to {written} for {where}" if written else
          f"not written (--dry-run); paste into the ladder instead:\n  target: "
          f"{fitted.target:.4f}")
    return 0
