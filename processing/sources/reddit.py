"""Reddit listing JSON (``https://www.reddit.com/r/<sub>/hot.json``): the ``t3`` children are posts.

A self post's ``url`` is its own comments page; its text is ``selftext``. Reddit refuses generic
clients, so every request carries a descriptive User-Agent (``options.user_agent`` to change it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processing.errors import CorruptInput
from processing.sources import FetchResult, Item, Source, plain_text
from processing.sources.jsonapi import from_unix, get_json

USER_AGENT = "python:taskforge-collector:1.0 (trend collection; by /u/taskforge)"


class RedditSource(Source):
    """A subreddit listing. Options: ``user_agent``."""

    kind = "reddit"
    description = "Reddit listing JSON (/r/<sub>/hot.json)"

    def fetch(self, state: Mapping[str, Any]) -> FetchResult:
        headers = {"User-Agent": str(self.options.get("user_agent", USER_AGENT))}
        data, answer = get_json(self.url, self.limits, what=self.name, etag=state.get("etag"), headers=headers)
        new_state = {"etag": answer.etag}
        if data is None:
            return FetchResult([], new_state, not_modified=True, max_age_ms=answer.max_age_ms)
        if not isinstance(data, dict) or data.get("kind") != "Listing" or not isinstance(data.get("data"), dict):
            raise CorruptInput(f"{self.name} did not answer a Reddit listing")
        children = data["data"].get("children") or []
        items: list[Item] = []
        for child in children:
            if not isinstance(child, dict) or child.get("kind") != "t3" or not isinstance(child.get("data"), dict):
                continue
            post = child["data"]
            title = plain_text(str(post.get("title") or ""))
            if not title or post.get("removed_by_category"):
                continue
            permalink = post.get("permalink")
            comments = f"https://www.reddit.com{permalink}" if isinstance(permalink, str) else None
            is_self = bool(post.get("is_self"))
            items.append(
                Item(
                    guid=str(post.get("name") or f"t3_{post.get('id')}"),
                    title=title,
                    url=comments if is_self else (post.get("url") or comments),
                    summary=plain_text(str(post.get("selftext") or ""))[:5000],
                    published_at=from_unix(post.get("created_utc")),
                    author=post.get("author"),
                    score=float(post["score"]) if isinstance(post.get("score"), int | float) else None,
                )
            )
        warnings: list[str] = []
        items = self._cap(items, warnings)
        return FetchResult(items, new_state, max_age_ms=answer.max_age_ms, warnings=warnings)
