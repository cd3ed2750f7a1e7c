"""Model providers: one interface (`Provider`) over the official OpenAI and Anthropic SDKs.

Usage (a local llama-server on port 8080):
    spec = ModelSpec("fast", "openai", "local", base_url="http://127.0.0.1:8080/v1")
    make_provider(spec).complete([{"role": "user", "content": "hi"}], max_tokens=16).text
"""

from __future__ import annotations

from typing import Any

from semroute.config import ModelSpec, Usage
from semroute.errors import (
    ErrorScope,
    FatalProviderError,
    ProviderError,
    RetryableProviderError,
    StreamInterruptedError,
)
from semroute.providers.base import Completion, Provider
from semroute.providers.clients import POOL_LIMITS, aclose_clients
from semroute.providers.effects import (
    ModelCall,
    Offload,
    Parallel,
    Plan,
    Sleep,
    completed,
    run_async,
    run_sync,
)
from semroute.providers.request import Message, message_text
from semroute.providers.streaming import AsyncStream, Stream
from semroute.providers.tools import (
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    arguments_object,
    as_stop,
    as_tool_choice,
    as_tools,
    calls_text,
    neutral_messages,
)

__all__ = [
    "POOL_LIMITS",
    "AsyncStream",
    "Completion",
    "ErrorScope",
    "FatalProviderError",
    "Message",
    "ModelCall",
    "ModelSpec",
    "Offload",
    "Parallel",
    "Plan",
    "Provider",
    "ProviderError",
    "RetryableProviderError",
    "Sleep",
    "Stream",
    "StreamInterruptedError",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "aclose_clients",
    "arguments_object",
    "as_stop",
    "as_tool_choice",
    "as_tools",
    "calls_text",
    "completed",
    "make_provider",
    "message_text",
    "neutral_messages",
    "run_async",
    "run_sync",
]


def make_provider(spec: ModelSpec) -> Provider[Any, Any]:
    """The adapter for `spec.provider`; SDKs are imported only when first needed."""
    if spec.provider == "openai":
        from semroute.providers.openai import OpenAIProvider

        return OpenAIProvider(spec)
    if spec.provider == "anthropic":
        from semroute.providers.anthropic import AnthropicProvider

        return AnthropicProvider(spec)
    raise ValueError(f"unknown provider {spec.provider!r} (expected 'openai' or 'anthropic')")
