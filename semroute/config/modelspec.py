"""What a catalogue entry becomes once validated: one callable model and its prices.

Plain frozen dataclasses shared by the catalogue (which builds them) and the providers (which
call them), so the configuration never imports provider code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ProviderName = Literal["openai", "anthropic"]
# How labels are enforced: "auto" = json_schema on OpenAI, a forced tool on Anthropic;
# "grammar" = llama.cpp's GBNF (OpenAI-compatible llama-server only; fewer tokens, ~4x faster).
StructuredMode = Literal["auto", "json_schema", "grammar", "tool"]
# Which modes each SDK can honour (checked when the catalogue is loaded, not at call time).
STRUCTURED_MODES: dict[ProviderName, tuple[StructuredMode, ...]] = {
    "openai": ("auto", "json_schema", "grammar"),
    "anthropic": ("auto", "tool"),
}
STRUCTURED_WHY: dict[StructuredMode, str] = {
    "json_schema": "an OpenAI response_format, for provider openai only",
    "grammar": "a llama.cpp GBNF grammar, for OpenAI-compatible (llama-server) endpoints only",
    "tool": "a forced Anthropic tool call, for provider anthropic only",
    "auto": "the provider's own way",
}


@dataclass(frozen=True)
class ModelSpec:
    """One callable model: SDK, model name, endpoint, key variable; prices per 1M tokens."""

    key: str
    provider: ProviderName
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float = 30.0
    price_in: float = 0.0
    price_out: float = 0.0
    structured: StructuredMode = "auto"

    def cost(self, usage: Usage) -> float:
        """Price of one call in the catalogue's currency."""
        return (usage.input_tokens * self.price_in + usage.output_tokens * self.price_out) / 1e6

    def cost_bound(self, input_tokens: int, max_tokens: int) -> float:
        """What one call may cost at most: `input_tokens` (an estimate) plus a full
        `max_tokens` answer, at this model's prices."""
        return self.cost(Usage(input_tokens, max_tokens))


@dataclass(frozen=True)
class Usage:
    """Token counts as reported by the server; `input_tokens` includes prompt-cache hits."""

    input_tokens: int = 0
    output_tokens: int = 0
