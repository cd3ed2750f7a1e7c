"""What `semroute suggest` and `semroute augment` share: the patch options and how a patch is
shown, saved to `--out`, or applied with `--write`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parser is built for every verb: import the quality layer lazily
    from semroute.quality.route_patch import RoutePatch


def patch_args(p: argparse.ArgumentParser) -> None:
    """`--per-route`, `--out`, `--write`, `--json`."""
    p.add_argument("--per-route", type=int, default=5, metavar="N",
                   help="at most N new utterances per route (default 5)")
    p.add_argument("--out", metavar="FILE", default=None, help="write the patch to FILE")
    p.add_argument("--write", action="store_true",
                   help="apply the patch to the route files (validated first)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def emit_patch(args: argparse.Namespace, patch: RoutePatch, report: Callable[[], dict[str, Any]],
               summary: Callable[[], str], verb: str) -> int:
    """Save the patch to `--out`, apply it with `--write` (validated, then atomic), and print
    the report as JSON or the summary with the diff and what to do next."""
    from semroute.files import write_atomic
    from semroute.quality.route_patch import apply_patch

    diff = patch.diff()
    if args.out:
        write_atomic(args.out, diff.encode("utf-8"))
    written = apply_patch(patch, profile=args.profile) if args.write else []
    if args.json:
        print(json.dumps({**report(), "written": [str(p) for p in written]}))
        return 0
    print(summary())
    if patch.empty:
        print("\nnothing to change")
        return 0
    if not args.out and not args.write:
        print("\n" + diff, end="")
    elif args.out:
        print(f"\npatch: {args.out} (apply with `git apply` or `semroute {verb} --write`)")
    if written:
        print(f"\nwrote {len(written)} route file(s): {', '.join(p.name for p in written)}; "
              f"now run `semroute build`", file=sys.stderr)
    else:
        print("\nreview the patch, then apply it with --write (and run `semroute build`)",
              file=sys.stderr)
    return 0
