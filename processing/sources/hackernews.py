"""The Hacker News Firebase API: ``/v0/topstories.json``, then ``/v0/item/<id>.json`` per story.

``url`` is the API root (``https://hacker-news.firebaseio.com/v0``). A ``null`` item is a deleted story
and is skipped, as are dead or deleted items and comments. Ask HN posts have ``text`` and no ``url``.
The fetch state keeps the ids already read (a cursor), so each fetch asks only for new stories.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from processing.errors import CorruptInput
from processing.sources import FetchResult, Item, Source, plain_text
from processing.sources.jsonapi import from_unix, get_json

#: How many already-read story ids the cursor remembers.
SEEN_KEPT = 2_000
STORY_TYPES = {"story", "job", "poll"}


class HackerNewsSource(Source):
    """Top stories of Hacker News. Options: ``limit`` (stories per fetch, 30), ``list`` (``topstories``),
    ``concurrency`` (parallel item requests, 8)."""

    kind = "hackernews"
    description = "Hacker News Firebase API (top stories)"

    def _item(self, story_id: int) -> Item | None:
        data, _ = get_json(
            f"{self.url.rstrip('/')}/item/{story_id}.json", self.limits, what=f"{self.name} item {story_id}"
        )
        if data is None or not isinstance(data, dict):
            return None  # null: the story was deleted
        if data.get("deleted") or data.get("dead") or data.get("type", "story") not in STORY_TYPES:
            return None
        title = plain_text(str(data.get("title") or ""))
        if not title:
            return None
        return Item(
            guid=f"hn:{data.get('id', story_id)}",
            title=title,
            url=data.get("url") or None,
            summary=plain_text(str(data.get("text") or ""))[:5000],
            published_at=from_unix(data.get("time")),
            author=data.get("by"),
            score=float(data["score"]) if isinstance(data.get("score"), int | float) else None,
        )

    def fetch(self, state: Mapping[str, Any]) -> FetchResult:
        listing = str(self.options.get("list", "topstories"))
        limit = int(self.options.get("limit", 30))
        ids, answer = get_json(
            f"{self.url.rstrip('/')}/{listing}.json", self.limits, what=f"{self.name} {listing}", etag=state.get("etag")
        )
        seen = [int(i) for i in state.get("seen", []) if isinstance(i, int)]
        if ids is None:
            return FetchResult([], {**state}, not_modified=True, max_age_ms=answer.max_age_ms)
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise CorruptInput(f"{self.name} {listing} is not a list of story ids")
        known = set(seen)
        wanted = [i for i in ids[:limit] if i not in known]
        workers = max(1, min(int(self.options.get("concurrency", 8)), len(wanted) or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="hn-items") as pool:
            found = list(pool.map(self._item, wanted))
        items = [item for item in found if item is not None]
        warnings: list[str] = []
        items = self._cap(items, warnings)
        new_state = {"etag": answer.etag, "seen": (wanted + seen)[:SEEN_KEPT]}
        return FetchResult(items, new_state, max_age_ms=answer.max_age_ms, warnings=warnings, requests=1 + len(wanted))
