"""From decision to answer: the route's model chain with retries, failover and cooldowns.

Modules: `dispatcher` (Dispatcher), `chain` (the failover plan), `parallel` (parallel-then-
pick), `cascade` (cheap first, gates in `gates`, escalation; `cascade_serve` builds its
Response), `sticky` (stickiness glue), `response` (Response and its stream's life), `attempts`,
`cooldowns`, `messages` (what is routed on), `trace_record`, `state` (what a router's
dispatches share), `recording` (the outcomes store's background writer), `journaling` (the
request journal and feedback), `shadowing` (shadow evaluation against a reference model) and
`api` (module-level dispatch()/adispatch()/feedback()/afeedback()).
"""

from __future__ import annotations

from semroute.dispatching.api import adispatch, afeedback, dispatch, dispatcher_for, feedback
from semroute.dispatching.attempts import Attempt
from semroute.dispatching.cascade import CascadeOutcome, CascadeStep
from semroute.dispatching.cooldowns import Cooldowns
from semroute.dispatching.dispatcher import Dispatcher
from semroute.dispatching.messages import latest_user_turn
from semroute.dispatching.parallel import ParallelCall, ParallelOutcome, Picker
from semroute.dispatching.response import Response
from semroute.dispatching.shadowing import ShadowEvaluator, ShadowJob
from semroute.dispatching.state import DispatchState

__all__ = [
    "Attempt",
    "CascadeOutcome",
    "CascadeStep",
    "Cooldowns",
    "DispatchState",
    "Dispatcher",
    "ParallelCall",
    "ParallelOutcome",
    "Picker",
    "Response",
    "ShadowEvaluator",
    "ShadowJob",
    "adispatch",
    "afeedback",
    "dispatch",
    "dispatcher_for",
    "feedback",
    "latest_user_turn",
]
