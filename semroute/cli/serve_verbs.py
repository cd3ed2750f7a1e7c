"""CLI verbs of the gateway: `semroute serve` and `semroute gateway-key`."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any


def cmd_serve(args: argparse.Namespace) -> int:
    from semroute.config import load_gateway_config
    from semroute.gateway import serve

    settings = load_gateway_config(args.config)
    if args.redis:
        from pydantic import ValidationError

        from semroute.config import SharedStateSettings
        try:
            SharedStateSettings(backend="redis", url=args.redis)
        except ValidationError as exc:
            print(f"semroute serve: --redis (or $SEMROUTE_REDIS_URL): "
                  f"{exc.errors()[0]['msg']}", file=sys.stderr)
            return 2
    if not settings.keys and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"semroute serve: warning: no client keys configured and listening on "
              f"{args.host}: anyone who reaches it can spend your model budget "
              f"(add keys in --config)", file=sys.stderr)
    if args.workers < 1:
        print(f"semroute serve: --workers {args.workers}: give 1 or more", file=sys.stderr)
        return 2
    if args.workers > 1 and not args.redis:
        warning = per_worker_warning(args.routes, args.profile, args.workers)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    return serve(args.routes, args.index, workers=args.workers, host=args.host,
                 port=args.port, profile=args.profile, settings=settings,
                 access_log=args.access_log, redis_url=args.redis or None,
                 config_path=args.config)


def per_worker_warning(routes: str, profile: str | None, workers: int) -> str | None:
    """The warning `semroute serve --workers N` prints when state is in-process (None when
    `router.shared_state` is Redis): what each worker enforces on its own."""
    from semroute.config import load_routes

    s = load_routes(routes, profile=profile).settings
    if s.shared_state.backend != "memory":
        return None
    return (f"semroute serve: warning: {workers} workers with in-process state "
            f"(router.shared_state.backend: memory): client rate limits, cooldowns and "
            f"conversation stickiness are enforced per worker, so a rate limit is effectively "
            f"{workers}x and each worker cools a failing model on its own; budget caps still "
            f"hold across workers on this machine (they count in the SQLite file "
            f"{s.budgets.store}). Share everything with --redis URL.")


def cmd_gateway_key(args: argparse.Namespace) -> int:
    from semroute.config import hash_client_key

    key = args.key or ("sk-semroute-" + secrets.token_urlsafe(24))
    if not args.key:
        print(f"key     {key}   (give this to the client; it is not stored anywhere)")
    print(f"sha256  {hash_client_key(key)}")
    print(f"\n# gateway.yaml\nkeys:\n  - name: {args.name}\n    sha256: {hash_client_key(key)}")
    return 0


def register(sub: Any) -> None:
    """Add `serve` and `gateway-key` to the `semroute` parser."""
    from semroute.cli.common import index_arg, routes_arg

    p = sub.add_parser("serve", help="run the OpenAI/Anthropic-compatible gateway")
    routes_arg(p)
    index_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="gateway settings (gateway.yaml: client keys, limits, CORS, tracing)")
    p.add_argument("--access-log", action="store_true", help="log every request line")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes on one port, each with its own router (default: "
                        "1); without --redis, rate limits, cooldowns and stickiness are per "
                        "worker")
    p.add_argument("--redis", default=os.environ.get("SEMROUTE_REDIS_URL"), metavar="URL",
                   help="share cooldowns, stickiness, budgets and rate limits with the other "
                        "replicas on this Redis (redis://host:6379/0; overrides "
                        "router.shared_state; default: $SEMROUTE_REDIS_URL)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("gateway-key", help="make a client key for the gateway and print the "
                                           "sha256 to configure")
    p.add_argument("key", nargs="?", help="an existing key to hash (default: make a new one)")
    p.add_argument("--name", default="client", help="the key's name in gateway.yaml")
    p.set_defaults(func=cmd_gateway_key)
