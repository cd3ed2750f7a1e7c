"""The one place where request fields and headers become dispatch options (conversation id,
user, metadata, ...). Headers win over body fields: a proxy in front may set them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from semroute.config import ClientKey
from semroute.errors import GatewayError
from semroute.gateway.calls import ChatCall

CONVERSATION_HEADER = "x-semroute-conversation-id"
USER_HEADER = "x-semroute-user"
METADATA_HEADER_PREFIX = "x-semroute-meta-"  # x-semroute-meta-task_type: extraction
STEP_HEADER = "x-semroute-step"  # an agent step (models.yaml `steps:`) instead of routing
MAX_COST_HEADER = "x-semroute-max-cost-usd"  # the request's own cost cap (README "Budgets")


def dispatch_options(call: ChatCall, headers: Mapping[str, str],
                     client: ClientKey | None) -> dict[str, Any]:
    """Keyword arguments for `Dispatcher.adispatch` besides the request itself: `metadata`
    (matched by route rules, never sent to a model), `conversation_id` and `user` (stickiness;
    hashed before any store or trace), `step` (an agent step), `max_cost_usd` and
    `client_key` (budgets: the client key's configured name). Header names are lower-case
    (Starlette's are); a bad value is a 400 naming the header."""
    metadata = dict(call.metadata)
    for name, value in headers.items():
        if name.startswith(METADATA_HEADER_PREFIX):
            metadata[name[len(METADATA_HEADER_PREFIX):]] = value
    options: dict[str, Any] = {
        "metadata": metadata or None,
        "conversation_id": headers.get(CONVERSATION_HEADER) or None,
        "user": headers.get(USER_HEADER) or call.user,
    }
    step = headers.get(STEP_HEADER) or None
    if step is not None:
        options["step"] = step
    raw_cap = headers.get(MAX_COST_HEADER)
    if raw_cap:
        try:
            cap = float(raw_cap)
        except ValueError:
            cap = float("nan")
        if not cap > 0 or cap == float("inf"):
            raise GatewayError(400, f"header '{MAX_COST_HEADER}': {raw_cap!r} is not a "
                                    "positive number of USD", param=MAX_COST_HEADER)
        options["max_cost_usd"] = cap
    if client is not None:
        options["client_key"] = client.name  # budgets' client_key caps count per named key
    return options
