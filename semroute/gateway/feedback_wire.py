"""`POST /v1/feedback`: feedback on an answered request through the gateway. The body is
`{request_id, score?, label?, note?}` (pydantic, unknown fields refused); the answer is the
stored entry, errors in OpenAI's error shape: 400 a bad body or field (a label naming no
route, a score outside [0, 1]), 401 a missing or wrong client key, 404 an unknown request id
(`code: request_not_found`), 503 no router loaded yet."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from semroute.errors import FeedbackError, GatewayError, UnknownRequestError
from semroute.gateway.access import ClientKeys
from semroute.gateway.calls import bad_field
from semroute.gateway.live import LiveRouter
from semroute.gateway.openai_wire import error_json
from semroute.outcomes import FeedbackEntry

log = logging.getLogger("semroute.gateway")
NOTE_CHARS = 10_000


class FeedbackRequest(BaseModel):
    """The body of `POST /v1/feedback`: `score` in [0, 1] or true/false (thumbs), `label`
    the route the request should have gone to, `note` free text; at least one of them."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    score: StrictBool | float | None = None
    label: str | None = Field(default=None, min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=NOTE_CHARS)


def parse_feedback(body: Any) -> FeedbackRequest:
    """The feedback body, or GatewayError 400 naming the field."""
    try:
        return FeedbackRequest.model_validate(body)
    except ValidationError as exc:
        err = bad_field(exc)
        loc = exc.errors()[0]["loc"]
        if len(loc) > 1 and loc[0] == "score":  # a union's branch: name the field only
            err = GatewayError(400, "field 'score': must be a number in [0, 1] or true/false",
                               param="score")
        raise err from None


def feedback_json(entry: FeedbackEntry) -> dict[str, Any]:
    """The stored entry as the 200 answer."""
    return {"object": "feedback", "id": entry.id, "request_id": entry.request_id,
            "score": entry.score, "label": entry.label, "note": entry.note, "ts": entry.ts}


def feedback_error(exc: Exception) -> tuple[int, dict[str, Any]] | None:
    """Status and body for a feedback failure of ours (None: not one of them)."""
    if isinstance(exc, GatewayError):
        return exc.status, error_json(exc.status, exc.message, param=exc.param)
    if isinstance(exc, UnknownRequestError):
        body = error_json(404, str(exc), param="request_id")
        body["error"]["code"] = "request_not_found"
        return 404, body
    if isinstance(exc, FeedbackError):
        msg = str(exc)
        param = next((f for f in ("score", "label", "note") if f"field '{f}'" in msg), None)
        return 400, error_json(400, msg, param=param)
    return None


async def answer_feedback(request: Any, keys: ClientKeys, live: LiveRouter,
                          read_body: Callable[[], Awaitable[Any]]) -> tuple[int, dict[str, Any]]:
    """Status and JSON body for one `POST /v1/feedback`: client key, body, then the serving
    dispatcher's `afeedback` (its pending journal writes flushed first)."""
    try:
        keys.authenticate(request.headers)
        body = parse_feedback(await read_body())
        serving = live.current
        if serving is None:
            raise GatewayError(503, "the gateway is starting: no router loaded yet")
        entry = await serving.dispatcher.afeedback(body.request_id, score=body.score,
                                                   label=body.label, note=body.note)
    except Exception as exc:
        failed = feedback_error(exc)
        if failed is not None:
            return failed
        log.error("semroute serve: feedback failed", exc_info=exc)
        return 500, error_json(500, f"internal error: {type(exc).__name__}")
    return 200, feedback_json(entry)


def shadow_counters(live: LiveRouter) -> dict[str, int] | None:
    """The serving dispatcher's shadow counters (None: no router, or shadow never ran)."""
    serving = live.current
    shadow = None if serving is None else serving.dispatcher.state.shadow
    return None if shadow is None else shadow.counters()
