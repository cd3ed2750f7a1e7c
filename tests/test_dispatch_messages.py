"""Chat messages in the OpenAI content-parts form (`[{"type": "text", ...}, {"type":
"image_url", ...}]`) are routed on their text and reach either SDK intact."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from semroute.dispatching import Dispatcher, latest_user_turn
from semroute.errors import QueryError
from tests.conftest_llm import MakeFaultServer
from tests.dispatch_support import (
    dispatcher_factory,
    entry,
    live_anthropic,
    live_openai,
    shared_index,
)
from tests.support.llm_server import OK_TEXT, LLMServer

PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVO"
         "RK5CYII=")
IMAGE_PART: dict[str, Any] = {"type": "image_url",
                              "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.mktemp("messages"))


@pytest.fixture
def make(tmp_path: Path, index: Path) -> Callable[..., Dispatcher]:
    return dispatcher_factory(tmp_path, index)


def parts(*texts: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": t} for t in texts]


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_text_parts_are_routed_and_answered_through_both_sdks(
        make: Callable[..., Dispatcher], llm_server: LLMServer, flavour: str) -> None:
    spec = live_openai(llm_server) if flavour == "openai" else live_anthropic(llm_server)
    d = make({"live": spec}, ["live"])
    messages = [{"role": "user", "content": parts("write a python function", "to sort a list")}]
    r = d.dispatch(messages, max_tokens=8)
    assert r.route == "code" and r.decision.query == "write a python function to sort a list"
    assert r.text.strip() and r.usage.input_tokens > 0
    streamed = asyncio.run(d.adispatch(messages, max_tokens=8, stream=True))
    assert streamed.route == "code"


def test_a_user_turn_without_text_is_skipped_and_messages_pass_through_unchanged(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    d = make({"m": entry("openai", ok.base_url)}, ["m"])
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": parts("write a python function to sort a list")},
        {"role": "assistant", "content": "Send me the list."},
        {"role": "user", "content": [IMAGE_PART]},
    ]
    r = d.dispatch(messages)
    assert r.route == "code" and r.text == OK_TEXT
    assert ok.bodies[0]["messages"][1:] == messages, "the OpenAI SDK gets the parts as given"


def test_openai_parts_are_translated_for_the_anthropic_sdk(
        make: Callable[..., Dispatcher], fault_server: MakeFaultServer) -> None:
    ok = fault_server([200])
    d = make({"m": entry("anthropic", ok.base_url)}, ["m"])
    d.dispatch([{"role": "user", "content": [*parts("what is in this picture?"), IMAGE_PART]}])
    [sent] = ok.bodies[0]["messages"]
    assert sent["content"] == [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PIXEL}}]


def test_latest_user_turn_joins_text_parts_and_skips_turns_without_text() -> None:
    assert latest_user_turn([{"role": "user", "content": parts("a", "b")}]) == "a\nb"
    assert latest_user_turn([{"role": "user", "content": "first"},
                             {"role": "user", "content": [IMAGE_PART]},
                             {"role": "assistant", "content": "x"}]) == "first"
    with pytest.raises(QueryError, match="no user turn"):
        latest_user_turn([{"role": "user", "content": [IMAGE_PART]}])
