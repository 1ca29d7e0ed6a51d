"""Estimated cost of a call from a price table: USD per million input, output and cached input tokens."""

from __future__ import annotations

import json
from collections.abc import Mapping

from processing.errors import InvalidArgument
from processing.llm.types import Usage

#: Used when ``LLM_PRICES`` is empty; a model missing from the table costs 0 (the offline rules do).
DEFAULT_PRICES: dict[str, tuple[float, float, float]] = {
    "claude-opus-4-5": (5.0, 25.0, 0.5),
    "claude-sonnet-4-6": (3.0, 15.0, 0.3),
    "claude-sonnet-4-5": (3.0, 15.0, 0.3),
    "claude-haiku-4-5": (1.0, 5.0, 0.1),
    "gpt-4o": (2.5, 10.0, 1.25),
    "gpt-4o-mini": (0.15, 0.6, 0.075),
}


def parse_prices(text: str) -> dict[str, tuple[float, float, float]]:
    """``{"model": [input, output, cached_input], ...}`` (USD per million tokens) merged over the defaults."""
    prices = dict(DEFAULT_PRICES)
    if not text.strip():
        return prices
    try:
        raw = json.loads(text)
        for model, values in raw.items():
            numbers = [float(value) for value in values]
            if len(numbers) == 2:
                numbers.append(numbers[0])
            prices[str(model)] = (numbers[0], numbers[1], numbers[2])
    except (ValueError, TypeError, AttributeError, IndexError):
        raise InvalidArgument(
            'LLM_PRICES must be JSON like {"model": [input, output, cached_input]} in USD per million tokens'
        ) from None
    return prices


def cost_of(model: str, usage: Usage, prices: Mapping[str, tuple[float, float, float]]) -> float:
    """USD for ``usage`` on ``model``: cached input tokens at the cached price, the rest at full price.

    A dated model name (``claude-sonnet-4-5-20250929``) takes the price of its undated prefix.
    """
    price = prices.get(model)
    if price is None:
        match = max((name for name in prices if model.startswith(name)), key=len, default=None)
        price = prices[match] if match else None
    if price is None:
        return 0.0
    per_input, per_output, per_cached = price
    fresh_input = max(usage.input_tokens - usage.cached_tokens, 0)
    total = fresh_input * per_input + usage.cached_tokens * per_cached + usage.output_tokens * per_output
    return round(total / 1_000_000, 8)
