"""`semroute fit --outcomes`: thresholds fitted on the outcomes store's labelled requests,
reweighted to the live route mix (see quality/adaptive.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_fit_outcomes(args: argparse.Namespace) -> int:
    from semroute.errors import InfeasibleTargetError, SemrouteError
    from semroute.index import save_calibration
    from semroute.outcomes import OutcomeStore, store_path
    from semroute.quality import load_labelled, route_all, to_calibration
    from semroute.quality.adaptive import check_enough, fit_weighted, outcome_validation
    from semroute.quality.suggesting import parse_time
    from semroute.routing import Router

    router = Router.load(args.routes, args.index, profile=args.profile, classifier=False)
    path = Path(args.store) if args.store else store_path(router.routes)
    if not path.is_file():
        raise SemrouteError(f"{path}: no outcomes store (set router.outcomes.log_requests "
                            f"and keep_text, or give --store PATH)")
    extra = (load_labelled(args.data, text_col=args.text_col, label_col=args.label_col)
             if args.data else [])
    with OutcomeStore(path) as store:
        v = outcome_validation(store, router.routes.names, since=parse_time(args.since),
                               extra=extra)
    check_enough(v, args.min_rows)
    fixed = {r.name: r.threshold for r in router.routes.routes if r.threshold is not None}
    decisions, _ = route_all(router, [q.text for q in v.rows])
    fit = fit_weighted(decisions, v.rows, v.weights, target_misroute=args.target_misroute,
                       fixed=fixed)
    if not fit.feasible:
        raise InfeasibleTargetError(fit.message)
    shifted = sorted(v.live_share, key=lambda r: -abs(v.live_share[r]
                                                      - v.valid_share.get(r, 0.0)))[:3]
    sources = ", ".join(f"{k} {n}" for k, n in v.sources.items())
    print(f"fitted on {path}: {len(v.rows)} rows ({sources}), "
          f"live route mix from {v.live_requests} logged requests; effective sample size "
          f"{v.ess:.0f}")
    print("  largest shifts (live vs validation share): " + ", ".join(
        f"{r} {v.live_share[r]:.1%} vs {v.valid_share.get(r, 0.0):.1%}" for r in shifted))
    print(f"  score threshold   {fit.score_threshold:.4f}")
    print(f"  margin threshold  {fit.margin_threshold:.4f}")
    print(f"  {fit.message}")
    if not args.dry_run:
        cal = to_calibration(fit, build_id=router.index.manifest.build_id,
                             data=f"outcomes:{path}")
        print(f"wrote {save_calibration(args.index, cal)}")
    return 0
