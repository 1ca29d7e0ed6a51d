"""What the JSON sources share: a GET that must answer JSON, and a timestamp from Unix seconds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from processing.errors import CorruptInput
from processing.fetch import Response, fetch
from processing.sources import FetchLimits
from processing.sources.safexml import looks_like_html


def get_json(
    url: str, limits: FetchLimits, *, what: str, etag: str | None = None, headers: dict[str, str] | None = None
) -> tuple[Any, Response]:
    """The decoded JSON at ``url`` (None for a 304) and the response; HTML or broken JSON is refused."""
    answer = fetch(
        url,
        etag=etag,
        timeout_ms=limits.timeout_ms,
        max_bytes=limits.max_bytes,
        max_redirects=limits.max_redirects,
        headers={"Accept": "application/json", **(headers or {})},
    )
    if answer.not_modified:
        return None, answer
    body = answer.body
    if "html" in answer.content_type.lower() or looks_like_html(body):
        raise CorruptInput(f"{what} answered an HTML page where JSON was expected")
    try:
        return json.loads(body), answer
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptInput(f"{what} did not answer valid JSON: {error}") from None


def from_unix(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None
