"""CLI verbs of the outcomes store: `semroute outcomes import FILE` and `semroute outcomes
stats`. Registered into the `outcomes` group by `register_store_verbs`.

The store is `--store PATH`, else `router.outcomes.path` of the routes folder (default
`outcomes.db` beside the route files). Texts are encoded with the index's encoder when the
index exists (so stored vectors match the router's queries), else with `router.encoder` on
torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semroute.config import RouteSet
    from semroute.encoders import Encoder
    from semroute.outcomes import OutcomeStore


def register_store_verbs(outcomes_sub: Any) -> None:
    """Add `import` and `stats` to the sub-parsers of the `outcomes` group."""
    from semroute.cli.common import index_arg, routes_arg

    p = outcomes_sub.add_parser(
        "import", help="import a labelled outcome file (long, wide, routellm, mt_bench, "
                       "routerarena CSV) into the outcomes store, in one transaction")
    p.add_argument("file", metavar="FILE", help="the outcome CSV")
    store_arg(p)
    routes_arg(p)
    index_arg(p)
    p.add_argument("--dataset", metavar="NAME", default=None,
                   help="a name for this import (default: the file name)")
    p.add_argument("--keep-text", action="store_true",
                   help="also store the raw texts (by default only their sha256)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_import)

    p = outcomes_sub.add_parser("stats", help="what the outcomes store holds")
    store_arg(p)
    routes_arg(p)
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=cmd_stats)


def store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="PATH", default=None,
                   help="the outcomes store (default: router.outcomes.path of the routes "
                        "folder, outcomes.db beside the route files)")


def route_set(args: argparse.Namespace) -> RouteSet | None:
    """The route set of `--routes`, or None when there is no routes folder."""
    from semroute.config import load_routes

    if not Path(args.routes).is_dir():
        return None
    return load_routes(args.routes, profile=args.profile)


def open_store(args: argparse.Namespace, routes: RouteSet | None, *,
               create: bool = True) -> OutcomeStore:
    """The store of `--store`, else the one the route set names; `create=False` refuses to
    make a new one (stats of a store that is not there)."""
    from semroute.errors import OutcomeStoreError
    from semroute.outcomes import OutcomeStore, store_path

    if args.store is not None:
        path = Path(args.store)
    elif routes is None:
        raise OutcomeStoreError(f"no routes folder at {args.routes} to take "
                                f"router.outcomes.path from: pass --store PATH or --routes DIR")
    else:
        path = store_path(routes)
    if not create and not path.is_file():
        raise OutcomeStoreError(f"{path}: no outcomes store there: import a file first "
                                f"(semroute outcomes import FILE) or pass --store PATH")
    return OutcomeStore(path)


def store_encoder(args: argparse.Namespace, routes: RouteSet | None) -> Encoder:
    """The index's encoder when the index exists, else `router.encoder` on torch (or on its
    native engine)."""
    from semroute.encoders import load_encoder, standalone_backend
    from semroute.index import RouteIndex

    if (Path(args.index) / "CURRENT").is_file():
        return RouteIndex.load(args.index).load_encoder()
    name = routes.settings.encoder if routes is not None else "all-MiniLM-L6-v2"
    return load_encoder(name, standalone_backend(name))


def cmd_import(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from semroute.outcomes import import_file, read_outcome_file

    read_outcome_file(args.file)  # bad rows are reported before an encoder loads
    routes = route_set(args)
    with open_store(args, routes) as store:
        summary = import_file(store, args.file, store_encoder(args, routes),
                              dataset=args.dataset, keep_text=args.keep_text)
        if args.json:
            print(json.dumps({**asdict(summary), "store": str(store.path)}, indent=2))
        else:
            print(summary.describe())
            print(f"store {store.path}: {store.count()} records", file=sys.stderr)
    return 0


def encoder_label(key: str) -> str:
    """`name|backend|dim|weights` as `name (backend, dim 384, weights 1a2b3c4d5e6f)`."""
    parts = key.split("|")
    if len(parts) != 4:
        return key
    name, backend, dim, weights = parts
    return f"{name} ({backend}, dim {dim}, weights {weights[:12]})"


def format_stats(d: dict[str, Any]) -> str:
    """The store summary as a readable block."""
    def money(v: float | None) -> str:
        return "-" if v is None else f"{v:.6f}"

    lines = [f"store    {d['path']} (schema {d['schema_version']})",
             f"records  {d['records']} over {d['texts']} texts; sources: "
             + (", ".join(f"{k} {v}" for k, v in d["sources"].items()) or "-"),
             "journal  " + ", ".join(f"{v} {k}" for k, v in d["journal"].items())]
    if d["models"]:
        width = max(len(m["model"]) for m in d["models"])
        lines += ["", f"{'model':<{width}}  records  mean score  mean cost $"]
        lines += [f"{m['model']:<{width}}  {m['records']:>7}  {m['mean_score']:>10.3f}  "
                  f"{money(m['mean_cost_usd']):>11}" for m in d["models"]]
    if d["encoders"]:
        lines += ["", "vectors per encoder"]
        lines += [f"  {e['vectors']:>7}  {encoder_label(e['encoder'])}" for e in d["encoders"]]
    if d["datasets"]:
        lines += ["", "imported datasets"]
        lines += [f"  {x['name']} ({x['form']}, {x['id'][:12]}): {x['examples']} examples, "
                  f"{x['records']} records" + (f", {x['dropped']} rows left out"
                                               if x["dropped"] else "")
                  for x in d["datasets"]]
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    routes = route_set(args) if args.store is None else None
    with open_store(args, routes, create=False) as store:
        summary = store.summary()
    print(json.dumps(summary, indent=2) if args.json else format_stats(summary))
    return 0
