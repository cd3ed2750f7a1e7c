"""The `semroute` command: thin verbs over the library (build, route, routes, ...)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from semroute.cli.common import DEFAULT_INDEX, index_arg, read_queries, routes_arg
from semroute.errors import SemrouteError

Verb = Callable[[argparse.Namespace], int]


def cmd_build(args: argparse.Namespace) -> int:
    from semroute.config import load_routes
    from semroute.index import build_index

    routes = load_routes(args.routes, profile=args.profile)
    report = build_index(routes, args.out, log=lambda m: print(m, file=sys.stderr))
    print(report.summary())
    return 0


def _fmt_ms(ms: float) -> str:
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def format_decision(d: dict[str, object]) -> str:
    """A decision as a readable block (from `Decision.to_dict()`)."""
    timings = d["timings_ms"]
    assert isinstance(timings, dict)
    lines = [
        f"query   {d['query']}" + ("  (truncated)" if d.get("truncated") else ""),
        f"route   {d['route'] or '-'}   (method: {d['method']})",
        f"score   {d['score']:.3f}   (threshold {d['threshold']:.3f})",
        f"margin  {d['margin']:.3f}   (threshold {d['margin_threshold']:.3f})",
        f"reason  {d['reason']}",
        "time    " + " · ".join(f"{k} {_fmt_ms(v)}" for k, v in timings.items())
        + f" · total {_fmt_ms(float(d['total_ms']))}",  # type: ignore[arg-type]
    ]
    rule = d.get("rule")
    if isinstance(rule, dict):
        lines.append(f"rule    {rule['rule']} of {rule['route']}: {rule['condition']} "
                     f"{', '.join(map(repr, rule['matched']))}")
    clf = d.get("classifier")
    if isinstance(clf, dict):
        lines.append(f"classif {clf['model']}: {clf['answer']!r} in {_fmt_ms(clf['latency_ms'])}"
                     + (f" (error: {clf['error']})" if clf.get("error") else ""))
    tier = d.get("tier")
    if isinstance(tier, dict):
        lines.append(f"tier    {tier['chosen']}  (ladder {' < '.join(tier['ladder'])}; target "
                     f"{tier['target']:g} from {tier['target_source']})")
        lines.append(f"        {tier['reason']}")
        for k in tier["ladder"]:
            if k in tier["quality"]:
                lines.append(f"        {k}: predicted {tier['quality'][k]:.3f}, support "
                             f"{tier['support'][k]:g}")
        if tier["neighbours"]:
            lines.append("        nearest outcomes: " + ", ".join(
                f"{n['text_hash'][:12]} {n['similarity']:.2f}" for n in tier["neighbours"][:3]))
    negatives = d.get("negatives")
    for n in negatives if isinstance(negatives, list) else []:
        what = "oos" if n["kind"] == "oos" else "neg"
        lines.append(f"{what:<8}{n['route']} lowered {n['penalty']:.3f} by {n['text'][:60]!r} "
                     f"{n['similarity']:.2f} vs nearest utterance {n['nearest']:.2f}")
    cands = d["candidates"]
    assert isinstance(cands, list)
    if cands:
        width = max(len(c["route"]) for c in cands[:5])
        lines.append(f"  {'#':>2}  {'route':<{width}}  score  nearest utterances")
        for i, c in enumerate(cands[:5], 1):
            near = " | ".join(f"{n['similarity']:.2f} {n['text'][:48]!r}"
                              for n in c["neighbours"][:2])
            lines.append(f"  {i:>2}  {c['route']:<{width}}  {c['score']:.3f}  {near}")
    return "\n".join(lines)


def format_brief(decisions: Sequence[dict[str, object]]) -> str:
    """One line per decision: query, route, method, score, margin, runner-up, time."""
    rows = [("query", "route", "method", "score", "margin", "runner-up", "ms")]
    for d in decisions:
        cands = d["candidates"]
        assert isinstance(cands, list)
        q = str(d["query"])
        rows.append((q if len(q) <= 60 else q[:57] + "...", str(d["route"] or "-"),
                     str(d["method"]), f"{d['score']:.3f}", f"{d['margin']:.3f}",
                     cands[1]["route"] if len(cands) > 1 else "-",
                     f"{d['total_ms']:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def parse_meta(items: list[str] | None) -> dict[str, str] | None:
    """`--meta KEY=VALUE` options as request metadata (None when there are none)."""
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"semroute: --meta expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def cmd_route(args: argparse.Namespace) -> int:
    from semroute.routing import Router

    queries = read_queries(args)
    router = Router.load(args.routes, args.index, profile=args.profile,
                         classifier=args.classify)
    metadata = parse_meta(args.meta)
    decisions = [router.route(q, use_classifier=args.classify, metadata=metadata)
                 for q in queries]
    if args.json:
        payload = [d.to_dict() for d in decisions]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    elif args.brief:
        print(format_brief([d.to_dict() for d in decisions]))
    else:
        print("\n\n".join(format_decision(d.to_dict()) for d in decisions))
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    from semroute.config import load_routes

    rs = load_routes(args.routes, profile=args.profile)
    width = max(len(r.name) for r in rs.routes)
    print(f"{'route':<{width}}  utts  models ({rs.profile})  file")
    for r in rs.routes:
        chain = " -> ".join(f"{k}={rs.models[k].provider}:{rs.models[k].model}"
                            for k in r.models)
        if r.parallel is not None:
            chain += (f"  (parallel: {', '.join(r.parallel.models)}; pick {r.parallel.pick}"
                      f"{f' by {r.parallel.judge_model}' if r.parallel.judge_model else ''})")
        if r.cascade is not None:
            steps = " -> ".join("|".join(step) for step in r.cascade.steps)
            chain += (f"  (cascade: {steps}; gates "
                      f"{', '.join(g.kind for g in r.cascade.gates)})")
        ladder = rs.ladder_of(r)
        if ladder is not None:
            chain += (f"  (ladder: {' < '.join(ladder.models)}; target {ladder.target:g}"
                      f"{'' if r.ladder is not None else ', router.ladder'})")
        print(f"{r.name:<{width}}  {len(r.utterances):>4}  {chain}  {r.file.name}")
    from semroute.encoders import default_margin

    s = rs.settings
    margin = (f"auto ({default_margin(s.encoder):g})" if s.margin_threshold == "auto"
              else f"{s.margin_threshold}")
    print(f"\n{len(rs.routes)} routes, {sum(len(r.utterances) for r in rs.routes)} utterances; "
          f"encoder {s.encoder} ({s.backend}); thresholds score {s.score_threshold} "
          f"margin {margin}; default route {s.default_route or '-'}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semroute", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("build", help="validate route files and (re)build the index")
    routes_arg(p)
    p.add_argument("--out", default=DEFAULT_INDEX, metavar="DIR",
                   help=f"index folder to write (default: {DEFAULT_INDEX})")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("route", help="show where queries go and why")
    p.add_argument("query", nargs="*", help="query text(s)")
    p.add_argument("--file", metavar="FILE", help="read queries, one per line ('-' = stdin)")
    p.add_argument("--json", action="store_true", help="print decisions as JSON")
    p.add_argument("--brief", action="store_true", help="one line per decision")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="request metadata that route-file rules match (repeatable)")
    p.add_argument("--classify", action="store_true",
                   help="send undecided queries to the classifier / default route (calls a "
                        "model); without it the index alone decides")
    routes_arg(p)
    index_arg(p)
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("routes", help="list routes, utterance counts and models")
    routes_arg(p)
    p.set_defaults(func=cmd_routes)

    from semroute.cli.dispatch_verbs import register as register_dispatch

    register_dispatch(sub)
    from semroute.cli.feedback_verbs import register as register_feedback

    register_feedback(sub)
    from semroute.cli.quality_verbs import register as register_quality

    register_quality(sub)
    from semroute.cli.outcome_verbs import register as register_outcomes

    register_outcomes(sub)
    from semroute.cli.monitor_verbs import register as register_monitor
    from semroute.cli.suggest_verbs import register as register_suggest

    register_monitor(sub)
    register_suggest(sub)
    from semroute.cli.augment_verbs import register as register_augment

    register_augment(sub)

    from semroute.cli.serve_verbs import register as register_serve

    register_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    func: Verb = args.func
    try:
        return func(args)
    except SemrouteError as exc:
        print(f"semroute {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
