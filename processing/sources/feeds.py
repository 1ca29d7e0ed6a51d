"""RSS 2.0 and Atom 1.0 feeds, fetched with our client and parsed by feedparser from bytes.

feedparser gets only documents that passed ``safexml`` (no entities, no DTD), and always bytes, never a
URL or a path, so it opens nothing itself. The RSS ``<ttl>`` (minutes) comes back as ``ttl_ms``.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from processing.errors import CorruptInput
from processing.fetch import fetch
from processing.sources import FetchResult, Item, Source, plain_text
from processing.sources.safexml import require_xml, without_doctype

logger = logging.getLogger(__name__)


def _when(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), UTC)
            except (OverflowError, ValueError, TypeError):
                continue
    return None


def parse_feed(body: bytes, *, name: str = "feed") -> tuple[list[Item], int | None]:
    """The items of an RSS or Atom document and its ``<ttl>`` in ms; raises for a refused or unreadable one."""
    import feedparser

    well_formed = require_xml(body, f"the answer of {name}")
    parsed = feedparser.parse(without_doctype(body), sanitize_html=True, resolve_relative_uris=False)
    version = parsed.get("version") or ""
    if not parsed.entries and (not well_formed or not version):
        problem = parsed.get("bozo_exception")
        detail = f": {problem}" if problem else ""
        raise CorruptInput(f"the answer of {name} is not an RSS or Atom feed{detail}")
    if not well_formed:
        logger.warning("%s: the feed is not well-formed XML; read leniently (%s)", name, parsed.get("bozo_exception"))
    items = []
    for entry in parsed.entries:
        link = entry.get("link") or None
        title = plain_text(entry.get("title") or "")
        summary = plain_text(entry.get("summary") or "")
        guid = entry.get("id") or link or hashlib.sha256(f"{title}\n{summary}".encode()).hexdigest()
        if not title and not summary:
            continue
        items.append(
            Item(
                guid=str(guid)[:500],
                title=title[:1000],
                url=link,
                summary=summary[:5000],
                published_at=_when(entry),
                author=entry.get("author"),
            )
        )
    ttl = parsed.feed.get("ttl")
    ttl_ms = int(ttl) * 60_000 if isinstance(ttl, str) and ttl.strip().isdigit() else None
    return items, ttl_ms


class FeedSource(Source):
    """An RSS 2.0 or Atom 1.0 feed at ``url``; a conditional GET each time."""

    kind = "feed"
    description = "RSS 2.0 or Atom 1.0 feed"

    def fetch(self, state: Mapping[str, Any]) -> FetchResult:
        answer = fetch(
            self.url,
            etag=state.get("etag"),
            last_modified=state.get("last_modified"),
            timeout_ms=self.limits.timeout_ms,
            max_bytes=self.limits.max_bytes,
            max_redirects=self.limits.max_redirects,
            headers={"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"},
        )
        new_state = {"etag": answer.etag, "last_modified": answer.last_modified}
        if answer.not_modified:
            return FetchResult([], new_state, not_modified=True, max_age_ms=answer.max_age_ms)
        items, ttl_ms = parse_feed(answer.body, name=self.name)
        warnings: list[str] = []
        items = self._cap(items, warnings)
        return FetchResult(items, new_state, ttl_ms=ttl_ms, max_age_ms=answer.max_age_ms, warnings=warnings)
