"""`semroute monitor`: a report (Markdown + PNG charts + monitor.json) on traffic, cost,
decision methods, margin drift, quality against the reference and money saved, from trace
files and the outcomes store over a time window."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from semroute.cli.common import routes_arg
from semroute.cli.dispatch_verbs import DEFAULT_TRACE


def register(sub: Any) -> None:
    """Add the `monitor` verb."""
    p = sub.add_parser("monitor", help="report traffic, cost, decision methods, margin drift, "
                                       "quality against the reference and money saved")
    routes_arg(p)
    p.add_argument("--trace", nargs="+", action="extend", metavar="FILE", default=None,
                   help="trace JSONL file(s) (default: router.trace_path of the routes folder, "
                        f"else {DEFAULT_TRACE} if it exists)")
    p.add_argument("--store", metavar="PATH", default=None,
                   help="the outcomes store (default: router.outcomes.path of the routes "
                        "folder); never created by this verb")
    p.add_argument("--since", metavar="T", help="start: ISO date/time, epoch seconds or a "
                                                 "duration ago (7d)")
    end = p.add_mutually_exclusive_group()
    end.add_argument("--until", metavar="T", help="end (exclusive), same forms as --since")
    end.add_argument("--window", metavar="SPAN", help="window length (7d, 12h): from --since, "
                                                      "else up to now")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--buckets", type=int, default=12, metavar="N",
                     help="time buckets in the window (default 12)")
    cut.add_argument("--bucket", metavar="SPAN", help="bucket width instead (1h, 1d)")
    p.add_argument("--quality-threshold", type=float, default=0.5, metavar="Q",
                   help="flag routes whose mean shadow or feedback score is below Q "
                        "(default 0.5)")
    p.add_argument("--min-n", type=int, default=None, metavar="N",
                   help="scored rows a route needs before it can be flagged (default 20)")
    p.add_argument("--baseline", metavar="MODEL_KEY", default=None,
                   help="price every request at this catalogue model for the savings "
                        "(default: the shadow reference, else the dearest by output price)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="report folder (default: reports/monitor-<UTC date>/)")
    p.add_argument("--json", action="store_true", help="print the report's data as JSON")
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    from semroute.config import load_routes
    from semroute.errors import DataError
    from semroute.outcomes import store_path
    from semroute.quality import MonitorSettings, build_report, write_monitor
    from semroute.quality.monitor_markdown import summary_lines
    from semroute.quality.monitor_quality import MIN_FLAG_N
    from semroute.quality.monitor_sources import (
        make_window,
        parse_duration,
        read_store,
        read_trace,
    )

    routes = load_routes(args.routes, profile=args.profile) if Path(args.routes).is_dir() \
        else None
    traces = list(args.trace or [])
    if not traces and routes is not None and routes.settings.trace_path:
        traces = [routes.settings.trace_path]
    if not traces and Path(DEFAULT_TRACE).is_file():
        traces = [DEFAULT_TRACE]  # where `semroute dispatch` and `chat` write by default
    store = Path(args.store) if args.store else store_path(routes) if routes else None
    if not traces and store is None:
        raise DataError(f"nothing to read: no --trace FILE, no --store PATH, and no routes "
                        f"folder at {args.routes} to take router.trace_path and "
                        f"router.outcomes.path from")
    if args.buckets is not None and args.buckets < 1:
        raise DataError("--buckets must be at least 1")
    window = make_window(args.since, args.until, args.window)
    reference = routes.settings.shadow.reference if routes else None
    settings = MonitorSettings(
        buckets=args.buckets, quality_threshold=args.quality_threshold,
        bucket_seconds=parse_duration(args.bucket) if args.bucket else None,
        min_n=MIN_FLAG_N if args.min_n is None else args.min_n, baseline=args.baseline,
        reference=reference)
    rows, files = [], []
    for path in traces:
        got, info = read_trace(path, window)
        rows += got
        files.append(info)
        if not info.found:
            print(f"semroute monitor: warning: trace {path} not found", file=sys.stderr)
    data = read_store(store, window) if store is not None else None
    if data is not None and not data.found:
        print(f"semroute monitor: warning: no outcomes store at {store} (feedback, shadow "
              f"and journal figures left out)", file=sys.stderr)
    prices = {k: (e.input_price, e.output_price) for k, e in routes.models.items()} \
        if routes else {}
    report = build_report(rows, files, data, prices, window, settings)
    out = Path(args.out or f"reports/monitor-{time.strftime('%Y-%m-%d', time.gmtime())}")
    folder = write_monitor(report, out)
    if args.json:
        print(json.dumps({**report.to_dict(), "report": str(folder / "report.md")}, indent=2))
    else:
        print("\n".join(summary_lines(report)))
        print(f"report: {folder / 'report.md'}")
    return 0
