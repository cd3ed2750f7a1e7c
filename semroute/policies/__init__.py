"""Policies between a Decision and the call: stickiness keeps a conversation's tier or model;
budgets keep a request within its `max_cost_usd` and the period caps.

Modules: `identity` (hashed conversation, user and client-key ids), `stickiness` (the policy),
`costs` (prompt token estimates, calendar periods), `budgets` (the budget policy).
"""

from __future__ import annotations

from semroute.policies.budgets import BudgetRequest, Budgets, Grant, Reservation, strength
from semroute.policies.costs import estimate_input_tokens, period_bounds, text_tokens
from semroute.policies.identity import client_key_id, conversation_key, user_key
from semroute.policies.stickiness import Placement, Stickiness

__all__ = [
    "BudgetRequest",
    "Budgets",
    "Grant",
    "Placement",
    "Reservation",
    "Stickiness",
    "client_key_id",
    "conversation_key",
    "estimate_input_tokens",
    "period_bounds",
    "strength",
    "text_tokens",
    "user_key",
]
