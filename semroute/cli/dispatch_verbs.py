"""CLI verbs that call models: `semroute dispatch` and the interactive `semroute chat`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_TRACE = "traces/semroute.jsonl"


def _dispatcher(args: argparse.Namespace) -> Any:
    from semroute.dispatching import Dispatcher
    from semroute.routing import Router

    router = Router.load(args.routes, args.index, profile=args.profile,
                         classifier=not args.no_classifier)
    return Dispatcher(router, trace=None if args.no_trace else args.trace,
                      include_query=args.include_query or None)


def _first_line(text: str, width: int = 70) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def _climbed(r: Any) -> str:
    """How a cascade route got its answer, e.g. " after fast: self_confidence" ("" if none)."""
    c = r.cascade
    if c is None or len(c.steps) < 2:
        return ""
    return " after " + ", ".join(f"{s.model_key or s.models[0]}: {s.gate or 'failed'}"
                                 for s in c.steps if s.verdict == "escalated")


def cmd_dispatch(args: argparse.Namespace) -> int:
    from semroute.cli.common import read_queries

    queries = read_queries(args)
    d = _dispatcher(args)
    rows = [("query", "route", "method", "model", "ms", "cost $", "answer (first line)")]
    for q in queries:
        r = d.dispatch(q, max_tokens=args.max_tokens, step=args.step,
                       max_cost_usd=args.max_cost_usd, client_key=args.client_key)
        rows.append((q[:44] + ("..." if len(q) > 44 else ""), r.route, r.decision.method,
                     f"{r.model_key}={r.provider}:{r.model}{_climbed(r)}",
                     f"{r.latency_ms['total']:.0f}",
                     f"{r.cost_usd:.6f}", _first_line(r.text)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    if d.trace is not None:
        print(f"\ntrace: {args.trace}", file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from semroute.errors import SemrouteError

    d = _dispatcher(args)
    history: list[dict[str, str]] = []
    print("semroute chat: type a message (Ctrl-D or /quit to leave, /reset to forget)",
          file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history.clear()
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        try:
            r = d.dispatch(history, max_tokens=args.max_tokens, stream=True)
        except SemrouteError as exc:
            history.pop()
            print(f"[error] {exc}", file=sys.stderr)
            continue
        dec = r.decision
        print(f"[{dec.route} via {dec.method}: score {dec.score:.2f}, margin {dec.margin:.2f} "
              f"-> {r.model_key} ({r.provider}:{r.model})]", file=sys.stderr)
        sys.stdout.write("bot> ")
        try:
            with r:
                for chunk in r:
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
        except SemrouteError as exc:  # the stream broke after text arrived: keep chatting
            print(f"\n[error] {exc}", file=sys.stderr)
            history.pop()
            continue
        print()
        print(f"[{r.usage.output_tokens} tokens, {r.latency_ms['total']:.0f} ms, "
              f"${r.cost_usd:.6f}{_climbed(r)}]", file=sys.stderr)
        history.append({"role": "assistant", "content": r.text})


def register(sub: Any) -> None:
    """Add the `dispatch` and `chat` verbs to the `semroute` parser."""
    from semroute.cli.common import index_arg, routes_arg

    for name, func, text in (("dispatch", cmd_dispatch, "route queries and answer them"),
                             ("chat", cmd_chat, "interactive chat showing each decision")):
        p = sub.add_parser(name, help=text)
        if name == "dispatch":
            p.add_argument("query", nargs="*", help="query text(s)")
            p.add_argument("--file", metavar="FILE", help="queries, one per line ('-' = stdin)")
            p.add_argument("--step", metavar="STEP", help="an agent step of models.yaml "
                           "`steps:` instead of routing (README 'Agent steps')")
            p.add_argument("--max-cost-usd", type=float, metavar="USD", help="per-request "
                           "cost cap: the best model whose estimate fits (README 'Budgets')")
            p.add_argument("--client-key", metavar="ID", help="the caller id that "
                           "router.budgets caps with scope client_key count under")
        routes_arg(p)
        index_arg(p)
        p.add_argument("--max-tokens", type=int, default=256)
        p.add_argument("--no-classifier", action="store_true",
                       help="undecided queries go straight to the default route")
        p.add_argument("--trace", default=DEFAULT_TRACE, metavar="FILE",
                       help=f"append one JSON line per request (default: {DEFAULT_TRACE})")
        p.add_argument("--no-trace", action="store_true", help="write no trace")
        p.add_argument("--include-query", action="store_true",
                       help="put the query text in the trace (off unless models.yaml says so)")
        p.set_defaults(func=func)
