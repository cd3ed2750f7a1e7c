"""From decision to answer: the route's model chain with retries, failover and cooldowns."""

from __future__ import annotations

from semroute.dispatching.attempts import Attempt
from semroute.dispatching.dispatcher import (
    Cooldowns,
    Dispatcher,
    Response,
    adispatch,
    dispatch,
    dispatcher_for,
    latest_user_turn,
)

__all__ = [
    "Attempt",
    "Cooldowns",
    "Dispatcher",
    "Response",
    "adispatch",
    "dispatch",
    "dispatcher_for",
    "latest_user_turn",
]
