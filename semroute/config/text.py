"""The normal form utterances and queries are compared in."""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Collapse whitespace and trim: the form utterances and queries are compared in."""
    return _WS.sub(" ", text).strip()


def utterance_key(text: str) -> str:
    """Case- and whitespace-insensitive key used to detect the same utterance twice."""
    return normalise_text(text).casefold()
