"""The provider interface and the factory that picks one from a configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from processing.errors import InvalidArgument
from processing.llm.types import Reply, Request

#: Each provider's model when none is configured.
DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o-mini", "offline": "rules-v1"}


class Provider(Protocol):
    """Turns a request into a reply, or raises one of ``processing.llm.errors``' errors."""

    name: str
    model: str

    def complete(self, request: Request) -> Reply: ...


@dataclass(frozen=True)
class ProviderConfig:
    provider: str
    model: str = ""
    base_url: str = ""
    timeout_ms: int = 120_000
    # How long to wait after a 429 that names no time.
    default_wait_ms: int = 30_000
    # Kept out of repr(): a config printed in a traceback or a log shows no key.
    api_key: str = field(default="", repr=False)


def make_provider(config: ProviderConfig) -> Provider:
    """The provider a configuration names. ``offline`` needs nothing; the others need their SDK and,
    for Anthropic, a key (an OpenAI-compatible local server may do without)."""
    from processing.llm.errors import register_secret

    name = config.provider.strip().lower()
    model = config.model or DEFAULT_MODELS.get(name, "")
    register_secret(config.api_key)
    if name == "offline":
        from processing.llm.providers.offline import OfflineProvider

        return OfflineProvider(model=model)
    if name == "anthropic":
        if not config.api_key:
            raise InvalidArgument("LLM_PROVIDER is anthropic but LLM_API_KEY is not set")
        from processing.llm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(
            api_key=config.api_key,
            model=model,
            base_url=config.base_url,
            timeout_ms=config.timeout_ms,
            default_wait_ms=config.default_wait_ms,
        )
    if name == "openai":
        from processing.llm.providers.openai import OpenAIProvider

        return OpenAIProvider(
            api_key=config.api_key,
            model=model,
            base_url=config.base_url,
            timeout_ms=config.timeout_ms,
            default_wait_ms=config.default_wait_ms,
        )
    raise InvalidArgument(f"unknown LLM provider {config.provider!r} (anthropic, openai or offline)")
