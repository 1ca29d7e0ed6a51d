"""The two analyses: a trading strategy from text (split and merged when long), a chart from an image."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.errors import InvalidArgument, NotFound, TooLarge
from processing.llm.complete import Ledger, complete
from processing.llm.prompts import chart_request, strategy_request
from processing.llm.providers.base import Provider
from processing.llm.types import Image, Reply

#: Characters shared by neighbouring parts of a long text, so a rule cut in two is seen whole once.
PART_OVERLAP = 300
MAX_CHART_BYTES = 20 * 1024 * 1024
_MEDIA_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}


@dataclass(frozen=True)
class Analysis:
    data: dict[str, Any]
    replies: tuple[Reply, ...]
    provider: str
    model: str


def split_text(text: str, chunk_chars: int) -> list[str]:
    """``text`` in parts of at most ``chunk_chars`` characters, cut at paragraph or sentence ends."""
    from processing.chunking import chunk_text

    if len(text) <= chunk_chars:
        return [text]
    return [chunk.text for chunk in chunk_text(text, size=chunk_chars, overlap=min(PART_OVERLAP, chunk_chars // 4))]


def merge_strategies(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One strategy from the parts' partial ones: the first name, the most named market and timeframe,
    every rule once in order, and each indicator once with the parameters any part gave it."""
    if len(parts) == 1:
        return parts[0]

    def most_common(field: str) -> str | None:
        values = Counter(part[field] for part in parts if part.get(field))
        return values.most_common(1)[0][0] if values else None

    def rules(field: str) -> list[str]:
        return list(dict.fromkeys(rule for part in parts for rule in part.get(field) or []))

    indicators: dict[tuple[str, Any], dict[str, Any]] = {}
    for part in parts:
        for indicator in part.get("indicators") or []:
            params = dict(indicator.get("parameters") or {})
            key = (indicator["name"].lower(), params.get("period"))
            if key in indicators:
                for name, value in params.items():
                    indicators[key]["parameters"].setdefault(name, value)
            else:
                indicators[key] = {"name": indicator["name"], "parameters": params}
    names = [part["name"] for part in parts if part.get("name") and part["name"] != "Unnamed strategy"]
    return {
        "name": names[0] if names else parts[0].get("name") or "Unnamed strategy",
        "market": most_common("market"),
        "timeframe": most_common("timeframe"),
        "entry_rules": rules("entry_rules"),
        "exit_rules": rules("exit_rules"),
        "risk_management": rules("risk_management"),
        "indicators": list(indicators.values()),
    }


def extract_strategy(
    text: str,
    *,
    provider: Provider,
    ledger: Ledger,
    prices: Mapping[str, tuple[float, float, float]],
    chunk_chars: int = 12_000,
    max_reasks: int = 2,
    max_tokens: int = 4096,
) -> Analysis:
    """The trading strategy ``text`` describes, validated against ``STRATEGY_SCHEMA``."""
    if not text or not text.strip():
        raise InvalidArgument("there is no text to extract a strategy from")
    parts = split_text(text, chunk_chars)
    replies = []
    for index, part in enumerate(parts, start=1):
        request = strategy_request(part, part=index, parts=len(parts), max_tokens=max_tokens)
        replies.append(complete(provider, request, ledger=ledger, prices=prices, max_reasks=max_reasks))
    merged = merge_strategies([reply.data for reply in replies])
    return Analysis(merged, tuple(replies), provider.name, provider.model)


def load_image(path: Path) -> Image:
    """A chart image from disk, its media type sniffed from its first bytes."""
    if not path.is_file():
        raise NotFound(f"chart image {path} does not exist")
    size = path.stat().st_size
    if size > MAX_CHART_BYTES:
        raise TooLarge(f"chart image {path.name} is {size} bytes, over {MAX_CHART_BYTES}")
    data = path.read_bytes()
    media_type = next((kind for magic, kind in _MEDIA_TYPES.items() if data.startswith(magic)), None)
    if media_type is None:
        raise InvalidArgument(f"{path.name} is not a PNG, JPEG, GIF or WebP image")
    return Image(data, media_type)


def analyze_chart(
    image: Image,
    *,
    provider: Provider,
    ledger: Ledger,
    prices: Mapping[str, tuple[float, float, float]],
    context: dict[str, Any] | None = None,
    max_reasks: int = 2,
) -> Analysis:
    """Trend, support and resistance, patterns and indicators of a chart, validated against ``CHART_SCHEMA``."""
    reply = complete(
        provider, chart_request(image, context=context), ledger=ledger, prices=prices, max_reasks=max_reasks
    )
    return Analysis(reply.data, (reply,), provider.name, provider.model)
