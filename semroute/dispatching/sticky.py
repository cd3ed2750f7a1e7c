"""Glue between a dispatch and the stickiness policy (`policies/`): hashed ids in, the route and
model chain that serve the turn out. With stickiness off this is the decision, unchanged.

Store operations run inline in the plan (the in-process store is fast); a blocking backend
would go through an `Offload` effect so that `adispatch` keeps the event loop free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from semroute.config import RouteSet
from semroute.policies import Placement, Stickiness, conversation_key, user_key
from semroute.providers import Message


def place(policy: Stickiness | None, routes: RouteSet, decided: str,
          messages: Sequence[Message], system: str | None,
          ids: tuple[str | None, str | None], first: str | None = None) -> Placement:
    """Which route and model chain serve a turn the router sent to `decided`; `first` (the
    ladder's choice) goes first in the route's chain, the rest stays as failover."""
    route = routes.route(decided)
    if first is not None and first != route.models[0]:
        route = replace(route, models=(first, *(k for k in route.models if k != first)))
    if policy is None or not policy.active:
        return Placement(route, route.models, route)
    conversation_id, user = ids
    conv = None if policy.settings.mode == "off" else conversation_key(
        messages, system=system, conversation_id=conversation_id, user=user)
    return policy.place(routes, route, conv, user_key(user))


def record(policy: Stickiness | None, placed: Placement, model_key: str) -> None:
    """Tell the policy which model answered the turn."""
    if policy is not None and policy.active:
        policy.record(placed, model_key)
