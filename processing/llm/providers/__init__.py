"""Providers: one small interface, one module per backend (``anthropic``, ``openai``, ``offline``)."""

from __future__ import annotations

from processing.llm.providers.base import Provider, ProviderConfig, make_provider

__all__ = ["Provider", "ProviderConfig", "make_provider"]
