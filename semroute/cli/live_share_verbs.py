"""`semroute fit --oos-share / --oos-share-from`: validation rows reweighted to the live
out-of-scope share (see quality/live_share.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

SHOWN_SHARES = (0.0, 0.05, 0.1, 0.2, 0.4)


def live_share_weights(args: argparse.Namespace, decisions: Sequence[Any], valid: Sequence[Any],
                       route_names: Sequence[str]) -> tuple[list[float], str, float]:
    """(row weights, a line saying where the share came from, the share)."""
    from semroute.quality.live_share import (
        estimate_oos_share,
        is_out_of_scope,
        oos_share_weights,
        trace_scores,
    )

    if args.oos_share_from is not None:
        est = estimate_oos_share(decisions, valid, route_names, trace_scores(args.oos_share_from),
                                 where=str(args.oos_share_from))
        share, note = est.share, est.describe()
    else:
        share, note = float(args.oos_share), f"live out-of-scope share {args.oos_share:.1%} (given)"
    weights = oos_share_weights(valid, route_names, share, where=str(args.data))
    names = set(route_names)
    n_oos = sum(is_out_of_scope(q, names) for q in valid)
    return weights, (note + f"; {len(valid) - n_oos} in-scope and {n_oos} out-of-scope "
                     f"validation rows reweighted to it"), share


def print_held_out_shares(args: argparse.Namespace, decisions: Sequence[Any],
                          test: Sequence[Any], fit: Any, route_names: Sequence[str]) -> None:
    """The index misroute rate on the held-out file reweighted to several live shares."""
    from semroute.errors import DataError
    from semroute.quality.live_share import misroute_at_share

    cells = []
    for share in SHOWN_SHARES:
        try:
            m = misroute_at_share(decisions, test, fit.thresholds(), route_names, share)
        except DataError:
            continue
        cells.append(f"{share:.0%}: {'–' if m is None else f'{m:.1%}'}")
    if cells:
        print(f"held-out {args.test} index misroute at live out-of-scope shares: "
              + ", ".join(cells))
