"""CLI verbs for routing quality: `semroute eval`, `semroute fit`, `semroute lint`.

Only argparse is imported here; the library modules load inside the verbs, so `semroute
--help` and the other verbs stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from semroute.errors import SemrouteError


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-col", default="text", help="column of the query text")
    p.add_argument("--label-col", default="label", help="column of the route name ('oos' = none)")


def register(sub: Any) -> None:
    """Add the eval, fit and lint verbs to the `semroute` sub-parsers."""
    from semroute.cli.common import index_arg, routes_arg

    p = sub.add_parser("eval", help="measure routing quality on labelled data")
    p.add_argument("--data", required=True, metavar="FILE", help="CSV/JSONL with text,label")
    p.add_argument("--conversations", action="store_true",
                   help="FILE is a CSV of conversations (conversation_id,turn,speaker,text,"
                        "label): score user turns in context and last-turn-only")
    routes_arg(p)
    index_arg(p)
    _data_args(p)
    p.add_argument("--with-classifier", action="store_true",
                   help="send what the index leaves undecided to the classifier")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="report folder (default: reports/eval-<timestamp>; none with --json "
                        "unless given)")
    p.add_argument("--latency-sample", type=int, default=100, metavar="N",
                   help="route the first N queries one at a time to time them (default 100)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("fit", help="fit score/margin thresholds on labelled validation data")
    p.add_argument("--data", metavar="VALIDATION", help="CSV/JSONL text,label")
    p.add_argument("--outcomes", action="store_true",
                   help="fit on the outcomes store's classifier-decided and feedback-labelled "
                        "requests (with --data: both), reweighted to the live route mix")
    p.add_argument("--store", metavar="PATH", default=None,
                   help="outcomes store for --outcomes (default: router.outcomes.path)")
    p.add_argument("--since", metavar="T", default=None,
                   help="--outcomes: only requests logged since T (epoch s, ISO time, 7d)")
    p.add_argument("--min-rows", type=int, default=50, metavar="N",
                   help="--outcomes: refuse below N rows / effective sample size (default 50)")
    p.add_argument("--test", metavar="TEST", help="held-out CSV/JSONL to check the fit on")
    p.add_argument("--target-misroute", type=float, default=0.03, metavar="RATE",
                   help="highest misroute rate of the index path (default 0.03)")
    p.add_argument("--oos-recall", type=float, default=None, metavar="R",
                   help="instead of a misroute target: keep at least R of the validation rows "
                        "labelled oos undecided, routing the most in-scope rows right "
                        "(router-wide thresholds; README 'Out-of-scope examples')")
    p.add_argument("--min-route-rows", type=int, default=30, metavar="N",
                   help="rows a route needs for its own threshold (default 30; 0 = none)")
    p.add_argument("--shrink", type=float, default=0.0, metavar="K",
                   help="pull each route's threshold towards the router-wide one by its row "
                        "count n (weight n/(n+K)); 0 = off (default)")
    p.add_argument("--min-coverage", type=float, default=0.0, metavar="SHARE",
                   help="refuse when the index would decide less than this share")
    p.add_argument("--cross-fit", type=int, default=0, metavar="K",
                   help="fit at the internal target whose K-fold held-out misroute meets "
                        "--target-misroute (corrects the optimism of fitting and scoring on "
                        "the same rows; K >= 2, e.g. 5; 0 = off, default); a target no "
                        "internal target meets on held-out rows is kept and the expected "
                        "held-out rate printed; with --data only")
    share = p.add_mutually_exclusive_group()
    share.add_argument("--oos-share", type=float, default=None, metavar="SHARE",
                       help="expected out-of-scope share of live traffic (0 <= SHARE < 1): "
                            "validation rows are reweighted so the target holds at that share")
    share.add_argument("--oos-share-from", metavar="TRACE", default=None,
                       help="estimate the out-of-scope share from a trace file's scores "
                            "(adjusted classify-and-count, calibrated on --data)")
    p.add_argument("--dry-run", action="store_true", help="do not write calibration.json")
    routes_arg(p)
    index_arg(p)
    _data_args(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("lint", help="find utterances and routes that will route badly")
    routes_arg(p)
    index_arg(p)
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    p.add_argument("--near-dup", type=float, default=0.92, metavar="SIM",
                   help="similarity from which utterances of two routes are near-duplicates")
    p.set_defaults(func=cmd_lint)


# ---------------------------------------------------------------- eval


def _summary(result: Any) -> str:
    from semroute.quality.reporting import PATHS, metrics_table

    m = result.metrics
    lines = [metrics_table(m), "", "path        share   misroute"]
    lines += [f"{p:<10}  {m[f'{p}_rate']:.3f}   "
              + (f"{v:.3f}" if (v := m.get(f"misroute_rate_{p}")) is not None else "–")
              for p in PATHS]
    if result.unknown_labels:
        lines += ["", "labels that are not routes (scored as oos): " + ", ".join(
            f"{k} ({v})" for k, v in result.unknown_labels.items())]
    if result.confusions:
        lines += ["", "top confusions (label -> predicted: rows)"]
        lines += [f"  {c.gold} -> {c.predicted}: {c.count}   e.g. {c.examples[0]!r}"
                  for c in result.confusions[:8]]
    return "\n".join(lines)


CONV_ROWS = (("all user turns", "accuracy", "user_turns"),
             ("first turns", "first_turn_accuracy", "first_turns"),
             ("follow-ups", "followup_accuracy", "followup_turns"))


def _conversation_summary(d: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "–" if v is None else f"{v:.1%}"

    last = d["last_turn_only"]
    lines = [f"{d['conversations']} conversations, {d['user_turns']} user turns "
             f"({d['first_turns']} first turns, {d['followup_turns']} follow-ups)", "",
             f"{'user turns':<16}  {'turns':>6}  {'in context':>10}  {'last turn only':>14}"]
    lines += [f"{name:<16}  {d[count]:>6}  {pct(d[key]):>10}  {pct(last[key]):>14}"
              for name, key, count in CONV_ROWS]
    if d["unknown_labels"]:
        lines += ["", "labels that are not routes (scored as oos): " + ", ".join(
            f"{k} ({v})" for k, v in d["unknown_labels"].items())]
    return "\n".join(lines)


def _eval_conversations(args: argparse.Namespace) -> int:
    from pathlib import Path

    from semroute.quality import evaluate_conversations, load_conversations
    from semroute.routing import Router

    convs = load_conversations(args.data, text_col=args.text_col, label_col=args.label_col)
    router = Router.load(args.routes, args.index, profile=args.profile,
                         classifier=args.with_classifier)
    result = evaluate_conversations(router, convs, with_classifier=args.with_classifier)
    result.info["data"] = str(args.data)
    payload = result.to_dict()
    text = _conversation_summary(payload)
    if args.report is not None:
        out = Path(args.report)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
        (out / "report.md").write_text(f"# semroute eval --conversations: {args.data}\n\n"
                                       f"```\n{text}\n```\n")
    print(json.dumps(payload) if args.json else text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from datetime import datetime

    if args.conversations:
        return _eval_conversations(args)

    from semroute.quality import evaluate, load_labelled
    from semroute.quality.reporting import write_report
    from semroute.routing import Router

    data = load_labelled(args.data, text_col=args.text_col, label_col=args.label_col)
    router = Router.load(args.routes, args.index, profile=args.profile)
    result = evaluate(router, data, with_classifier=args.with_classifier,
                      latency_sample=max(args.latency_sample, 0))
    result.info["data"] = str(args.data)
    out = args.report
    if out is None and not args.json:
        out = f"reports/eval-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out is not None:
        write_report(result, out, title=f"semroute eval: {args.data}")
    if args.json:
        print(json.dumps({**result.metrics, "unknown_labels": result.unknown_labels,
                          "thresholds": {"score": router.matcher.thresholds.score,
                                         "margin": router.matcher.thresholds.margin,
                                         "per_route": router.matcher.thresholds.per_route},
                          "report": out}))
    else:
        print(_summary(result))
        print(f"\nreport: {out}/report.md")
    return 0


# ---------------------------------------------------------------- fit


def _fit_lines(fit: Any, oos_recall: float | None = None) -> list[str]:
    per = ", ".join(f"{k}={v:.3f}" for k, v in sorted(fit.per_route.items())) or "none"
    upper = fit.misroute_upper95
    return [
        f"score threshold   {fit.score_threshold:.4f}",
        f"margin threshold  {fit.margin_threshold:.4f}",
        f"per-route         {per}",
        f"expected coverage {fit.coverage:.1%} decided by the index "
        f"({1 - fit.coverage:.1%} to the classifier / fallback)",
        f"expected misroute {fit.misroute or 0:.2%} on the index path ("
        + (f"no misroute target: fitted for out-of-scope recall ≥ {oos_recall:.0%}"
           if oos_recall is not None else f"target {fit.target:.1%}")
        + f"; 95% upper bound {upper or 0:.1%})",
        *([f"at the live share {fit.weighted_misroute or 0:.2%} misroute, "
           f"{fit.weighted[0] / (fit.weighted[2] or 1):.1%} decided"] if fit.weighted else []),
        *(f"note: {n}" for n in fit.notes),
    ]


def cmd_fit(args: argparse.Namespace) -> int:
    from semroute.errors import InfeasibleTargetError
    from semroute.index import save_calibration
    from semroute.quality import (
        OOS,
        evaluate_with,
        fit_thresholds,
        load_labelled,
        route_all,
        to_calibration,
    )
    from semroute.routing import Router

    if not 0.0 <= args.target_misroute < 1.0:
        raise SemrouteError(f"--target-misroute must be in [0, 1), got {args.target_misroute}")
    if args.shrink < 0:
        raise SemrouteError(f"--shrink must be 0 (off) or more, got {args.shrink}")
    live_share = args.oos_share is not None or args.oos_share_from is not None
    if args.oos_share is not None and not 0.0 <= args.oos_share < 1.0:
        raise SemrouteError(f"--oos-share must be in [0, 1), got {args.oos_share}")
    if args.cross_fit and args.cross_fit < 2:
        raise SemrouteError(f"--cross-fit needs at least 2 folds (e.g. 5), or 0 for off; got "
                            f"{args.cross_fit}")
    if args.cross_fit and args.outcomes:
        raise SemrouteError("--cross-fit works on a labelled --data file, not on --outcomes")
    if args.outcomes and live_share:
        raise SemrouteError("--oos-share/--oos-share-from reweight a labelled --data file; "
                            "--outcomes already weights rows to the live traffic: use one")
    if args.oos_recall is not None and (args.outcomes or live_share or args.shrink
                                        or args.cross_fit):
        raise SemrouteError("--oos-recall fits router-wide thresholds on a labelled --data "
                            "file: drop --outcomes, --oos-share(-from), --shrink and "
                            "--cross-fit")
    if args.outcomes:
        from semroute.cli.adaptive_verbs import cmd_fit_outcomes

        return cmd_fit_outcomes(args)
    if not args.data:
        raise SemrouteError("give --data VALIDATION (a labelled file), or --outcomes")
    valid = load_labelled(args.data, text_col=args.text_col, label_col=args.label_col)
    test = (load_labelled(args.test, text_col=args.text_col, label_col=args.label_col)
            if args.test else None)
    router = Router.load(args.routes, args.index, profile=args.profile)
    fixed = {r.name: r.threshold for r in router.routes.routes if r.threshold is not None}
    decisions, _ = route_all(router, [q.text for q in valid])
    weights, share_note, share = None, "", 0.0
    if live_share:
        from semroute.cli.live_share_verbs import live_share_weights

        weights, share_note, share = live_share_weights(args, decisions, valid, router.routes.names)
    options: dict[str, Any] = {"min_route_rows": args.min_route_rows, "fixed": fixed,
                               "shrink": args.shrink}
    if args.oos_recall is not None:
        from semroute.quality import fit_oos_recall

        if not 0.0 < args.oos_recall <= 1.0:
            raise SemrouteError(f"--oos-recall must be in (0, 1], got {args.oos_recall}")
        fit = fit_oos_recall(decisions, valid, oos_recall=args.oos_recall, fixed=fixed)
    elif args.cross_fit:
        from semroute.quality import fit_cross_fitted

        fit, _ = fit_cross_fitted(decisions, valid, target_misroute=args.target_misroute,
                                  folds=args.cross_fit, weights=weights,
                                  min_coverage=args.min_coverage, **options)
    else:
        fit = fit_thresholds(decisions, valid, target_misroute=args.target_misroute,
                             min_coverage=args.min_coverage, weights=weights, **options)
    if not fit.feasible:
        raise InfeasibleTargetError(fit.message)
    print(f"fitted on {args.data} ({fit.rows} rows), index {args.index} "
          f"(build {router.index.manifest.build_id})")
    if share_note:
        print(f"  {share_note}")
    unknown = sorted({q.label for q in valid} - {*router.routes.names, OOS})
    if unknown:
        print(f"  note: labels that are not routes, scored as oos: {', '.join(unknown[:10])}")
    print("\n".join(f"  {line}" for line in _fit_lines(fit, args.oos_recall)))
    if not args.dry_run:
        data = str(args.data) + (f" (reweighted to oos share {share:.4g})" if live_share else "")
        if args.oos_recall is not None:
            data += f" (fitted for out-of-scope recall ≥ {args.oos_recall:.0%})"
        cal = to_calibration(fit, build_id=router.index.manifest.build_id, data=data)
        print(f"wrote {save_calibration(args.index, cal)}")
    if test is not None:
        test_decisions, _ = route_all(router, [q.text for q in test])
        if live_share:
            from semroute.cli.live_share_verbs import print_held_out_shares

            print_held_out_shares(args, test_decisions, test, fit, router.routes.names)
        m = evaluate_with(test_decisions, test, fit.thresholds(), router.routes.names).metrics
        print(f"held-out {args.test} ({len(test)} rows): index decides {m['index_rate']:.1%}, "
              f"index misroute {_pct(m['misroute_rate_index'])}, in-scope accuracy (index "
              f"only) {_pct(m['in_scope_accuracy'])}, oos recall {_pct(m['oos_recall'])}")
        held = m["misroute_rate_index"]
        if held is not None and args.oos_recall is None and held > args.target_misroute + 0.02:
            print(f"warning: on {args.test} the index path misroutes {held:.1%}, more than two "
                  f"points above the {args.target_misroute:.1%} target: the validation data "
                  f"may not look like the test data (more validation rows, or a mix of in-scope"
                  f" and out-of-scope queries closer to real traffic, will help)",
                  file=sys.stderr)
    return 0


def _pct(v: Any) -> str:
    return "–" if v is None else f"{v:.1%}"


# ---------------------------------------------------------------- lint


def cmd_lint(args: argparse.Namespace) -> int:
    from semroute.quality import lint_dir

    findings = lint_dir(args.routes, args.index, profile=args.profile, near_dup=args.near_dup)
    for f in findings:
        print(f.format())
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors or (args.strict and warnings) else 0
