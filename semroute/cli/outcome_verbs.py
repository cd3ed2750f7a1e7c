"""CLI verbs on outcome data: the `semroute outcomes` group and its `eval` verb.

`outcomes eval` cross-validates the outcome-learned router on a labelled file and prints what
it saves at what quality. The store's verbs (`import`, `stats`) join the same group from
`cli/outcome_store_verbs.py` when that module is present. Library modules load inside the verb.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
from typing import Any


def register(sub: Any) -> None:
    """Add the `outcomes` command group to the `semroute` sub-parsers."""
    group = sub.add_parser("outcomes", help="learn from outcomes: which model a query needs")
    verbs = group.add_subparsers(dest="outcomes_verb", required=True, metavar="OUTCOMES_VERB")

    p = verbs.add_parser("eval", help="cross-validate the outcome-learned router on a file and "
                                      "report its cost against its quality")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="outcomes: long (text,model,score[,cost]), wide (text,<model>_score"
                        "[,<model>_cost]), routellm_evals or routerarena CSV")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="fold shuffle seed (default 0)")
    p.add_argument("--routes", default=None, metavar="DIR",
                   help="take the encoder from DIR/models.yaml (default: all-MiniLM-L6-v2)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_eval)

    if importlib.util.find_spec("semroute.cli.outcome_store_verbs") is not None:
        store_verbs = importlib.import_module("semroute.cli.outcome_store_verbs")
        store_verbs.register_store_verbs(verbs)
    importlib.import_module("semroute.cli.tier_verbs").register_tier_verbs(verbs)  # fit


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    return f"${v:.6f}" if unit == "usd" else f"{v:.3f}"


def summary(d: dict[str, Any]) -> str:
    """The report as text: per-model quality and cost, then the router's operating points."""
    unit = d["cost_unit"]
    lines = [f"{d['source']}: {d['rows']} rows, {len(d['models'])} models, {d['folds']}-fold "
             f"CV (seed {d['seed']}); cost in {unit}", "",
             f"{'model':<28} {'quality':>8} {'cost':>12}"]
    lines += [f"{m:<28} {d['model_quality'][m]:>8.3f} {_num(d['model_cost'][m], unit):>12}"
              for m in d["models"]]
    lines += [f"{'oracle':<28} {d['oracle_quality']:>8.3f} {_num(d['oracle_cost'], unit):>12}",
              f"{'learned router':<28} {d['quality']:>8.3f} {_num(d['cost'], unit):>12}"
              f"   (best quality at no more than {d['best_single']}'s cost)", "",
              f"cost at 95% of {d['best_single']}'s quality: {_num(d['cost_at_95'], unit)} "
              f"(saving {_pct(d['saving_at_95'])})"]
    if "apgr" in d:
        apgr = "–" if d["apgr"] is None else f"{d['apgr']:.3f}"
        lines += [f"APGR {apgr} (random 0.500); strong-model calls for 50% of the gap: "
                  f"{_pct(d['cpt50'])}, for 80%: {_pct(d['cpt80'])} (weak {d['weak']}, strong "
                  f"{d['strong']})"]
    return "\n".join(lines)


def question_groups(form: str, texts: list[str]) -> list[str] | None:
    """Fold groups: an MT-Bench question's turn-2 row holds its turn 1, so both rows of a
    question share a fold (keyed by the first turn); other forms have independent rows."""
    return [t.split("\n\n", 1)[0] for t in texts] if form == "mt_bench" else None


def cmd_eval(args: argparse.Namespace) -> int:
    from semroute.encoders import load_encoder, standalone_backend
    from semroute.errors import DataError
    from semroute.outcomes.formats import read_outcome_file
    from semroute.quality.cost_quality import evaluate_outcomes

    if args.folds < 2:
        raise DataError(f"--folds must be at least 2, got {args.folds}")
    table = read_outcome_file(args.data)
    name = "all-MiniLM-L6-v2"
    if args.routes is not None:
        from semroute.config import load_routes

        name = load_routes(args.routes).settings.encoder
    encoder = load_encoder(name, standalone_backend(name))
    groups = question_groups(table.form, table.texts)
    report = evaluate_outcomes(table, encoder, folds=args.folds, seed=args.seed, groups=groups)
    payload = report.to_dict()
    if args.json:
        payload.pop("frontier", None)
        payload.pop("curve", None)
        print(json.dumps(payload))
    else:
        print(summary(payload))
    return 0
