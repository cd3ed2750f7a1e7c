"""Provider adapters against a real llama-server through the real OpenAI and Anthropic SDKs.

Assertions are about behaviour (text, usage, valid label, error type), not the tiny model's taste.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import traceback
from typing import Any

import pytest

from semroute.errors import ErrorScope, StreamInterruptedError
from semroute.providers import (
    Completion,
    FatalProviderError,
    ModelSpec,
    Provider,
    ProviderError,
    RetryableProviderError,
    make_provider,
)
from semroute.providers.errors import parse_retry_after, scope_for
from semroute.providers.request import make_request, match_label
from tests.conftest_llm import MakeFaultServer
from tests.support.llm_server import OK_TEXT, LLMServer

KINDS = ["openai", "anthropic"]
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
LABELS = ["billing", "technical_support", "greeting"]
CLASSIFY_SYSTEM = (
    "Classify the user's message. Labels: billing = payments and invoices; "
    "technical_support = bugs and errors; greeting = hello and small talk."
)
CLASSIFY = [{"role": "user", "content": "Hi there, good morning!"}]


def spec_for(kind: str, base_url: str, **kw: object) -> ModelSpec:
    """A spec pointing `kind`'s SDK at a local base URL (OpenAI's wants /v1, Anthropic's not)."""
    url = f"{base_url}/v1" if kind == "openai" else base_url
    return ModelSpec(key=f"local-{kind}", provider=kind, model="local", base_url=url, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def provider(kind: str, llm_server: LLMServer) -> Provider[Any, Any]:
    return make_provider(spec_for(kind, llm_server.base_url))


def check_completion(c: Completion, kind: str, *, streamed: bool = False) -> None:
    assert c.text.strip()
    assert c.provider == kind
    assert c.usage.output_tokens > 0
    if not (streamed and kind == "anthropic"):
        assert c.usage.input_tokens > 0
    # else: llama-server's Anthropic stream once reported 0 input tokens (and no cache reads)
    # in a full-suite run; parsing is checked exactly by test_a_complete_stream_records_usage.
    assert c.finish_reason in {"stop", "length"}
    assert 0 < c.latency_s < 30


# ---------------------------------------------------------------- happy paths


def test_complete_returns_text_and_usage(provider: Provider[Any, Any], kind: str) -> None:
    check_completion(provider.complete(HELLO, max_tokens=16, temperature=0.0), kind)


def test_system_prompt_is_sent(provider: Provider[Any, Any], kind: str) -> None:
    plain = provider.complete(HELLO, max_tokens=4, temperature=0.0)
    with_system = provider.complete(
        [{"role": "system", "content": "You are a pirate. " * 20}, *HELLO],
        max_tokens=4,
        temperature=0.0,
    )
    assert with_system.usage.input_tokens > plain.usage.input_tokens + 40


def test_async_complete(provider: Provider[Any, Any], kind: str) -> None:
    async def run() -> list[Completion]:
        return list(
            await asyncio.gather(*(provider.acomplete(HELLO, max_tokens=8) for _ in range(3)))
        )

    for c in asyncio.run(run()):
        check_completion(c, kind)


def test_stream_yields_chunks_and_final_usage(provider: Provider[Any, Any], kind: str) -> None:
    stream = provider.stream(HELLO, max_tokens=16, temperature=0.0)
    chunks = list(stream)
    final = stream.final()
    assert len(chunks) > 1
    assert final.text == "".join(chunks)
    check_completion(final, kind, streamed=True)


def test_async_stream(provider: Provider[Any, Any], kind: str) -> None:
    async def run() -> tuple[list[str], Completion]:
        stream = await provider.astream(HELLO, max_tokens=16)
        chunks = [chunk async for chunk in stream]
        return chunks, await stream.final()

    chunks, final = asyncio.run(run())
    assert chunks and final.text == "".join(chunks)
    check_completion(final, kind, streamed=True)


def test_final_drains_an_unread_stream(provider: Provider[Any, Any], kind: str) -> None:
    check_completion(provider.stream(HELLO, max_tokens=8).final(), kind)


def test_content_parts_are_accepted_by_both_sdks(provider: Provider[Any, Any], kind: str) -> None:
    """OpenAI-style text parts (`[{"type": "text", "text": ...}]`) work through either SDK."""
    parts = [{"type": "text", "text": "Say hello"}, {"type": "text", "text": "in one sentence."}]
    c = provider.complete([{"role": "user", "content": parts}], max_tokens=8)
    check_completion(c, kind)
    stream = provider.stream([{"role": "system", "content": [parts[0]]},
                              {"role": "user", "content": parts}], max_tokens=8)
    check_completion(stream.final(), kind)


def test_constrained_output_is_an_allowed_label(llm_server: LLMServer) -> None:
    """OpenAI endpoint: llama-server enforces the json_schema enum, so the label is always valid."""
    p = make_provider(spec_for("openai", llm_server.base_url))
    c = p.complete(CLASSIFY, system=CLASSIFY_SYSTEM, labels=LABELS, max_tokens=32, temperature=0.0)
    assert c.label in LABELS, c.text
    assert json.loads(c.text) == {"label": c.label}


def test_grammar_mode_gives_the_bare_label(llm_server: LLMServer) -> None:
    p = make_provider(spec_for("openai", llm_server.base_url, structured="grammar"))
    c = p.complete(CLASSIFY, system=CLASSIFY_SYSTEM, labels=LABELS, max_tokens=32, temperature=0.0)
    assert c.text in LABELS and c.label == c.text


def test_constrained_output_streamed(llm_server: LLMServer) -> None:
    p = make_provider(spec_for("openai", llm_server.base_url))
    stream = p.stream(CLASSIFY, system=CLASSIFY_SYSTEM, labels=LABELS, max_tokens=32)
    assert stream.final().label in LABELS


def test_anthropic_forced_tool_answered_as_text(llm_server: LLMServer) -> None:
    """llama-server's /v1/messages ignores forced tools and grammars: the text is parsed, and a
    label is reported only if the text names exactly one (a 135M model rarely does)."""
    p = make_provider(spec_for("anthropic", llm_server.base_url))
    for call in (p.complete, lambda *a, **k: p.stream(*a, **k).final()):
        c = call(CLASSIFY, system=CLASSIFY_SYSTEM, labels=LABELS, max_tokens=16)
        assert c.text.strip() and c.usage.output_tokens > 0
        assert c.label is None or c.label in LABELS


def test_constrained_output_from_a_conforming_server(
    kind: str, fault_server: MakeFaultServer
) -> None:
    """A server that honours the constraint (json_schema / tool_use block) yields its label."""
    fs = fault_server([200])
    p = make_provider(spec_for(kind, fs.base_url))
    c = p.complete(CLASSIFY, labels=LABELS, max_tokens=16)
    assert c.label == LABELS[0]
    body = fs.bodies[0]
    if kind == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": body["tools"][0]["name"]}
        assert body["tools"][0]["input_schema"]["properties"]["label"]["enum"] == LABELS
        assert c.finish_reason == "tool_calls"
    else:
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["label"]["enum"] == LABELS


def test_unsupported_structured_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="grammar"):
        make_provider(spec_for("anthropic", "http://127.0.0.1:9", structured="grammar"))


def test_clients_are_reused(llm_server: LLMServer, kind: str) -> None:
    a = make_provider(spec_for(kind, llm_server.base_url))
    b = make_provider(spec_for(kind, llm_server.base_url, timeout=5.0))
    key = a.api_key()
    assert a._client(key) is b._client(key)


# ---------------------------------------------------------------- failures


def test_connection_refused_is_retryable(kind: str, refused_url: str) -> None:
    p = make_provider(spec_for(kind, refused_url))
    with pytest.raises(RetryableProviderError) as info:
        p.complete(HELLO, max_tokens=4)
    assert info.value.status is None and "connection" in info.value.message.lower()


def test_async_connection_refused_is_retryable(kind: str, refused_url: str) -> None:
    p = make_provider(spec_for(kind, refused_url))
    with pytest.raises(RetryableProviderError):
        asyncio.run(p.acomplete(HELLO, max_tokens=4))


@pytest.mark.parametrize("status", [429, 500, 503, 529])
def test_retryable_statuses(kind: str, fault_server: MakeFaultServer, status: int) -> None:
    fs = fault_server([status], retry_after="7")
    p = make_provider(spec_for(kind, fs.base_url))
    with pytest.raises(RetryableProviderError) as info:
        p.complete(HELLO, max_tokens=4)
    err = info.value
    assert err.status == status and err.retryable
    assert err.retry_after == 7.0
    assert "injected fault" in err.message
    assert fs.hits == 1  # the SDK's own retries are off


@pytest.mark.parametrize(("status", "scope"), [(400, ErrorScope.REQUEST),
                                               (401, ErrorScope.NEXT_MODEL),
                                               (403, ErrorScope.NEXT_MODEL),
                                               (404, ErrorScope.NEXT_MODEL)])
def test_fatal_statuses_say_how_far_they_reach(
    kind: str, fault_server: MakeFaultServer, status: int, scope: ErrorScope
) -> None:
    """400: the request is wrong (no model will take it); 401/403/404: this model cannot
    answer (its key, its permissions, its name), another one may."""
    fs = fault_server([status])
    p = make_provider(spec_for(kind, fs.base_url))
    with pytest.raises(FatalProviderError) as info:
        p.complete(HELLO, max_tokens=4)
    assert info.value.status == status and not info.value.retryable
    assert info.value.scope is scope


def test_retryable_errors_have_the_retry_scope(kind: str, refused_url: str) -> None:
    with pytest.raises(RetryableProviderError) as info:
        make_provider(spec_for(kind, refused_url)).complete(HELLO, max_tokens=4)
    assert info.value.scope is ErrorScope.RETRY and info.value.retryable


def test_context_too_long_is_a_too_long_error(provider: Provider[Any, Any]) -> None:
    """llama-server here has a 2048-token context; a bigger model could take the prompt."""
    long = [{"role": "user", "content": "tell me everything about rivers " * 600}]
    with pytest.raises(FatalProviderError) as info:
        provider.complete(long, max_tokens=4)
    assert info.value.scope is ErrorScope.TOO_LONG, info.value
    assert info.value.status is not None and 400 <= info.value.status < 500


def test_statuses_in_order_then_last_repeats(kind: str, fault_server: MakeFaultServer) -> None:
    fs = fault_server([429, 200])
    p = make_provider(spec_for(kind, fs.base_url))
    with pytest.raises(RetryableProviderError):
        p.complete(HELLO, max_tokens=4)
    for _ in range(2):
        assert p.complete(HELLO, max_tokens=4).text == OK_TEXT
    assert fs.hits == 3


def test_stream_error_raises_at_start(kind: str, fault_server: MakeFaultServer) -> None:
    fs = fault_server([503])
    p = make_provider(spec_for(kind, fs.base_url))
    with pytest.raises(RetryableProviderError):
        p.stream(HELLO, max_tokens=4)


def test_timeout_is_retryable(kind: str, fault_server: MakeFaultServer) -> None:
    fs = fault_server([200], delay_s=1.0)
    p = make_provider(spec_for(kind, fs.base_url, timeout=0.2))
    with pytest.raises(RetryableProviderError) as info:
        p.complete(HELLO, max_tokens=4)
    assert "timed out" in info.value.message


# ---------------------------------------------------------------- keys


def assert_secret_absent(err: ProviderError, secret: str) -> None:
    shown = [str(err), repr(err), "".join(traceback.format_exception(err))]
    assert not any(secret in s for s in shown)


def test_wrong_key_is_fatal_401_and_not_leaked(
    kind: str, llm_server_with_key: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-0123456789abcdef"
    monkeypatch.setenv("SEMROUTE_TEST_KEY", wrong)
    p = make_provider(spec_for(kind, llm_server_with_key.base_url, api_key_env="SEMROUTE_TEST_KEY"))
    with pytest.raises(FatalProviderError) as info:
        p.complete(HELLO, max_tokens=4)
    assert info.value.status == 401
    assert_secret_absent(info.value, wrong)


def test_right_key_from_env_works(
    kind: str, llm_server_with_key: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert llm_server_with_key.api_key
    monkeypatch.setenv("SEMROUTE_TEST_KEY", llm_server_with_key.api_key)
    p = make_provider(spec_for(kind, llm_server_with_key.base_url, api_key_env="SEMROUTE_TEST_KEY"))
    check_completion(p.complete(HELLO, max_tokens=8), kind)
    assert llm_server_with_key.api_key not in repr(p)


def test_echoed_key_is_scrubbed(
    kind: str, fault_server: MakeFaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-echo-9f8e7d6c5b4a3210"
    monkeypatch.setenv("SEMROUTE_TEST_KEY", secret)
    fs = fault_server([401], echo_auth=True)
    p = make_provider(spec_for(kind, fs.base_url, api_key_env="SEMROUTE_TEST_KEY"))
    with pytest.raises(FatalProviderError) as info:
        p.complete(HELLO, max_tokens=4)
    assert "you sent" in info.value.message  # the server did echo it ...
    assert_secret_absent(info.value, secret)  # ... and it was scrubbed


def test_missing_key_variable_is_fatal_for_this_model(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEMROUTE_UNSET_KEY", raising=False)
    p = make_provider(spec_for(kind, "http://127.0.0.1:9", api_key_env="SEMROUTE_UNSET_KEY"))
    with pytest.raises(FatalProviderError, match="SEMROUTE_UNSET_KEY") as info:
        p.complete(HELLO, max_tokens=4)
    assert info.value.scope is ErrorScope.NEXT_MODEL, "another provider's model may answer"


# ---------------------------------------------------------------- pure helpers


def test_match_label_forms() -> None:
    labels = ["billing", "tech", "greeting"]
    assert match_label('{"label": "tech"}', labels) == "tech"
    assert match_label('{"name": "choose_label", "arguments": {"label": "billing"}}', labels) == (
        "billing"
    )
    assert match_label(' "Greeting". ', labels) == "greeting"
    assert match_label("The answer is billing.", labels) == "billing"
    assert match_label("billing or tech", labels) is None
    assert match_label("no idea", labels) is None
    assert match_label("technical", labels) is None


def test_scope_for_known_wordings() -> None:
    """How OpenAI, Anthropic, llama.cpp and vLLM say "too long for this model" vs "invalid"."""
    too_long = [
        (400, "This model's maximum context length is 128000 tokens. However, you requested"),
        (400, "prompt is too long: 210000 tokens > 200000 maximum"),
        (400, "request (3031 tokens) exceeds the available context size (2048 tokens)"),
        (400, "invalid_request_error context_length_exceeded"),
        (413, "Request Entity Too Large"),
    ]
    for status, text in too_long:
        assert scope_for(status, text) is ErrorScope.TOO_LONG, text
    assert scope_for(400, "temperature must be between 0 and 2") is ErrorScope.REQUEST
    assert scope_for(422, "field required: messages") is ErrorScope.REQUEST
    assert scope_for(402, "insufficient balance") is ErrorScope.NEXT_MODEL
    assert scope_for(None, "connection failed") is ErrorScope.RETRY
    assert scope_for(529, "overloaded") is ErrorScope.RETRY


def test_errors_survive_pickling_with_their_scope() -> None:
    """Errors cross process boundaries (worker pools, multiprocessing) intact."""
    fatal = FatalProviderError("openai", "m", 404, "no such model", scope=ErrorScope.NEXT_MODEL)
    cut = StreamInterruptedError("anthropic", "m", None, "reset", partial_text="Hel",
                                 scope=ErrorScope.RETRY)
    for err in (fatal, cut):
        back = pickle.loads(pickle.dumps(err))
        assert (type(back), str(back), back.scope) == (type(err), str(err), err.scope)
    assert pickle.loads(pickle.dumps(cut)).partial_text == "Hel"
    assert not fatal.retryable and cut.retryable


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_make_request_validates_and_folds_system() -> None:
    r = make_request(
        [{"role": "system", "content": "b"}, {"role": "user", "content": "q"}],
        "a",
        8,
        None,
        None,
        {},
    )
    assert r.system == "a\n\nb" and r.messages == ({"role": "user", "content": "q"},)
    with pytest.raises(ValueError):
        make_request([{"role": "tool", "content": "x"}], None, 8, None, None, {})
    with pytest.raises(ValueError):
        make_request([{"role": "user", "content": "x"}], None, 8, None, ["a", "a"], {})
    with pytest.raises(ValueError):
        make_request([{"role": "system", "content": "x"}], None, 8, None, None, {})
    with pytest.raises(ValueError, match="content"):
        make_request([{"role": "user", "content": [{"text": "no type"}]}], None, 8, None, None, {})
    parts = make_request(
        [{"role": "system", "content": [{"type": "text", "text": "s"}]},
         {"role": "user", "content": [{"type": "text", "text": "q"}]}], None, 8, None, None, {})
    assert parts.system == "s" and parts.messages == (
        {"role": "user", "content": [{"type": "text", "text": "q"}]},)


def test_unknown_provider_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        make_provider(ModelSpec("x", "cohere", "m"))  # type: ignore[arg-type]


def test_openai_itself_gets_max_completion_tokens_and_compatible_servers_max_tokens(
        fault_server: MakeFaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI's current models (gpt-5, o-series) reject `max_tokens` with a 400, which would
    end the request; OpenAI-compatible servers often know only `max_tokens`."""
    fs = fault_server([200])
    # No base_url in the catalogue means OpenAI's own API; the SDK reads OPENAI_BASE_URL.
    monkeypatch.setenv("OPENAI_BASE_URL", fs.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    make_provider(ModelSpec("cloud", "openai", "gpt-5-mini")).complete(
        [{"role": "user", "content": "hi"}], max_tokens=7)
    make_provider(ModelSpec("compat", "openai", "local", base_url=fs.openai_base_url)).complete(
        [{"role": "user", "content": "hi"}], max_tokens=9)
    cloud, compat = fs.bodies
    assert cloud.get("max_completion_tokens") == 7 and "max_tokens" not in cloud
    assert compat.get("max_tokens") == 9 and "max_completion_tokens" not in compat
