"""The one place where request fields and headers become dispatch options (conversation id,
user, metadata, ...). Headers win over body fields: a proxy in front may set them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from semroute.config import ClientKey
from semroute.gateway.calls import ChatCall

CONVERSATION_HEADER = "x-semroute-conversation-id"
USER_HEADER = "x-semroute-user"
METADATA_HEADER_PREFIX = "x-semroute-meta-"  # x-semroute-meta-task_type: extraction


def dispatch_options(call: ChatCall, headers: Mapping[str, str],
                     client: ClientKey | None) -> dict[str, Any]:
    """Keyword arguments for `Dispatcher.adispatch` besides the request itself: `metadata`
    (matched by route rules, never sent to a model), `conversation_id` and `user` (stickiness;
    hashed before any store or trace). Header names are lower-case (Starlette's are)."""
    metadata = dict(call.metadata)
    for name, value in headers.items():
        if name.startswith(METADATA_HEADER_PREFIX):
            metadata[name[len(METADATA_HEADER_PREFIX):]] = value
    options: dict[str, Any] = {
        "metadata": metadata or None,
        "conversation_id": headers.get(CONVERSATION_HEADER) or None,
        "user": headers.get(USER_HEADER) or call.user,
    }
    # ---- WIRED BY THE LEAD after merging the budgets/steps branch (issue 10):
    #   options["step"] = headers.get("x-semroute-step") or call.metadata.get("step")
    #   options["max_cost_usd"] = float(headers["x-semroute-max-cost-usd"]) if present
    #   options["client_key"] = None if client is None else client.name
    # (parse errors there must raise GatewayError(400, ..., param=<header or field>)).
    _ = client
    return options
