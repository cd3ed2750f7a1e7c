"""What a request may cost before it is sent: a token estimate of the prompt, and the calendar
periods (UTC) budget caps count in.

The token estimate is deliberately an upper-ish bound and needs no tokenizer: one token per
digit, and the other UTF-8 bytes / 3. Byte-level BPE tokenizers average about 4 bytes per token
on English prose and 3 on code; several split numbers digit by digit; CJK text is 3 bytes per
character at about one token per character. Measured against a real BPE tokenizer
(`benchmarks/token_estimate.py`) it over-counts by 20-50% on average and under-counts few texts
(number-heavy tables), where chars/4 under-counts 15-90% of them. The model's own tokenizer
would be exact but differs by provider and is not at hand for cloud models; a cap must hold
whichever model answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from semroute.config import BudgetPeriod
from semroute.providers import Message, message_text

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD = 4  # role and separators of one chat message, in tokens
REPLY_PRIMING = 3  # the tokens that open the assistant's reply
IMAGE_TOKENS = 1600  # a non-text part (an image): about the most providers charge for one


def text_tokens(text: str) -> int:
    """An upper-ish token count of `text`: one per digit, plus its other UTF-8 bytes / 3,
    rounded up."""
    digits = sum(c.isdigit() for c in text)
    return digits + math.ceil((len(text.encode("utf-8")) - digits) / BYTES_PER_TOKEN)


def estimate_input_tokens(messages: Sequence[Message], system: str | None = None) -> int:
    """An upper-ish count of the prompt tokens a model is sent for `messages` and `system`."""
    total = REPLY_PRIMING
    if system:
        total += MESSAGE_OVERHEAD + text_tokens(system)
    for m in messages:
        content = m.get("content")
        images = sum(1 for p in content if not (isinstance(p, Mapping) and p.get("type") == "text")
                     ) if isinstance(content, list) else 0
        total += MESSAGE_OVERHEAD + text_tokens(message_text(content)) + images * IMAGE_TOKENS
        for call in m.get("tool_calls") or ():  # a call's id, name and arguments are sent
            total += MESSAGE_OVERHEAD + text_tokens(str(call))
    return total


def period_bounds(period: BudgetPeriod, now: float) -> tuple[datetime, datetime]:
    """The calendar period (UTC) holding the epoch time `now`: its start and its end (the
    moment the next one starts)."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 \
        else start.replace(month=start.month + 1)
    return start, end
