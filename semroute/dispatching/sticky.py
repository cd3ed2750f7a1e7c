"""Glue between a dispatch and the stickiness policy (`policies/`): hashed ids in, the route and
model chain that serve the turn out. With stickiness off this is the decision, unchanged.

Both steps are plans: with the in-process store they run inline (it is fast); with a shared
store (Redis) they are `Offload` effects, so `adispatch` never blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial

from semroute.config import RouteSet
from semroute.policies import Placement, Stickiness, conversation_key, user_key
from semroute.providers import Message, Offload, Plan
from semroute.state import MemoryStore


def blocking(policy: Stickiness) -> bool:
    """Whether the policy's store may block on I/O (anything but the in-process store)."""
    return not isinstance(policy.store, MemoryStore)


def place(policy: Stickiness | None, routes: RouteSet, decided: str,
          messages: Sequence[Message], system: str | None,
          ids: tuple[str | None, str | None], first: str | None = None) -> Plan[Placement]:
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
    placing = partial(policy.place, routes, route, conv, user_key(user))
    if blocking(policy):
        placed: Placement = yield Offload(placing)
        return placed
    return placing()


def record(policy: Stickiness | None, placed: Placement, model_key: str) -> Plan[None]:
    """Tell the policy which model answered the turn."""
    if policy is not None and policy.active:
        if blocking(policy):
            yield Offload(partial(policy.record, placed, model_key))
        else:
            policy.record(placed, model_key)
