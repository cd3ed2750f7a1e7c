"""Policies between a Decision and the call: stickiness keeps a conversation's tier or model.

Modules: `identity` (hashed conversation and user ids), `stickiness` (the policy).
"""

from __future__ import annotations

from semroute.policies.identity import conversation_key, user_key
from semroute.policies.stickiness import Placement, Stickiness

__all__ = ["Placement", "Stickiness", "conversation_key", "user_key"]
