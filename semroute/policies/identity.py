"""Conversation and user ids as hashes: state keys and traces never hold a caller's text.

A conversation id given by the caller is hashed; without one, the id is derived from the
conversation's start: sha256 of the system prompt and the first user turn's normalised text
(and the `user`, when given), so every later turn of the same conversation gets the same id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from semroute.config import normalise_text
from semroute.providers import Message, message_text

ID_CHARS = 32  # 128 bits of sha256: enough to never collide by chance


def _digest(kind: str, payload: object) -> str:
    raw = json.dumps([kind, payload], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:ID_CHARS]


def conversation_key(messages: Sequence[Message], *, system: str | None = None,
                     conversation_id: str | None = None, user: str | None = None) -> str | None:
    """The hashed id of a conversation: of `conversation_id` when given, else of its start
    (system prompts + first user turn with text, + `user`); None when there is no user text."""
    if conversation_id is not None:
        return _digest("conversation", conversation_id)
    systems = [normalise_text(message_text(m.get("content"))) for m in messages
               if m.get("role") == "system"]
    if system:
        systems.append(normalise_text(system))
    first = next((t for m in messages if m.get("role") == "user"
                  if (t := normalise_text(message_text(m.get("content"))))), None)
    if first is None:
        return None
    return _digest("derived", {"system": systems, "first_user": first, "user": user})


def user_key(user: str | None) -> str | None:
    """The hashed id of a caller-given user, or None."""
    return None if user is None else _digest("user", user)


def client_key_id(client_key: str | None) -> str | None:
    """The hashed id of a caller's key (an API key or tenant id), or None."""
    return None if client_key is None else _digest("client_key", client_key)
