"""Source plugins: where collected items come from.

A source is a small class with a ``name``, a ``description`` and ``fetch(state) -> FetchResult``: it
reads its place (a feed URL, an API, a folder) and returns the items it found with the fetch state to
hand it next time (ETag, Last-Modified, a cursor). It stores nothing and knows nothing of workers.

Kinds are looked up by name: the built-ins below, plus any ``taskforge.sources`` entry point, whose
object is a ``Source`` subclass taking the same keyword arguments (``name``, ``url``, ``options``).
Which sources exist is configured in ``sources.toml`` (see ``load_config``).
"""

from __future__ import annotations

import abc
import html
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from processing.errors import InvalidArgument

ENTRY_POINT_GROUP = "taskforge.sources"

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def plain_text(markup: str) -> str:
    """Text of an HTML fragment (feed summaries, HN and Reddit bodies): tags out, entities decoded."""
    if not markup:
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", markup))).strip()


@dataclass
class Item:
    """One thing a source found: a story, a post, a row of a file."""

    guid: str  # the source's own id for it (RSS guid, Atom id, HN id, Reddit fullname, a file row key)
    title: str
    url: str | None = None
    summary: str = ""
    published_at: datetime | None = None
    author: str | None = None
    score: float | None = None


@dataclass
class FetchResult:
    """What one fetch returned. ``state`` is handed to the next fetch; ``ttl_ms`` and ``max_age_ms`` are
    the source's own say on when to look again; ``warnings`` are things a person should know."""

    items: list[Item]
    state: dict[str, Any]
    not_modified: bool = False
    ttl_ms: int | None = None
    max_age_ms: int | None = None
    retry_after_ms: int | None = None
    warnings: list[str] = field(default_factory=list)
    requests: int = 1


@dataclass(frozen=True)
class FetchLimits:
    """Caps every fetch obeys (``COLLECTION_*`` settings)."""

    timeout_ms: int = 20_000
    max_bytes: int = 15 * 1024 * 1024
    max_redirects: int = 5
    max_items: int = 10_000


class Source(abc.ABC):
    """A place items come from. Subclasses set ``kind`` and ``description`` and implement ``fetch``."""

    kind: str = ""
    description: str = ""

    def __init__(
        self, *, name: str, url: str, options: Mapping[str, Any] | None = None, limits: FetchLimits | None = None
    ) -> None:
        self.name = name
        self.url = url
        self.options = dict(options or {})
        self.limits = limits or FetchLimits()

    @abc.abstractmethod
    def fetch(self, state: Mapping[str, Any]) -> FetchResult:
        """Read the source; ``state`` is what the previous fetch returned (empty the first time)."""

    def _cap(self, items: list[Item], result_warnings: list[str]) -> list[Item]:
        """Keep the first ``max_items`` items (feeds list the newest first), saying so when some are cut."""
        limit = self.limits.max_items
        if len(items) > limit:
            result_warnings.append(f"{self.name} listed {len(items)} items; kept the first {limit}")
            return items[:limit]
        return items


@dataclass(frozen=True)
class SourceConfig:
    """One ``[[source]]`` table of ``sources.toml``."""

    name: str
    kind: str
    url: str
    interval_ms: int = 3_600_000
    enabled: bool = True
    high_frequency: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


def builtin_kinds() -> dict[str, type[Source]]:
    from processing.sources.feeds import FeedSource
    from processing.sources.folder import FolderSource
    from processing.sources.hackernews import HackerNewsSource
    from processing.sources.reddit import RedditSource

    return {
        "rss": FeedSource,
        "atom": FeedSource,
        "feed": FeedSource,
        "hackernews": HackerNewsSource,
        "reddit": RedditSource,
        "folder": FolderSource,
    }


def plugin_kinds() -> dict[str, type[Source]]:
    """Kinds other packages add through the ``taskforge.sources`` entry-point group."""
    from importlib.metadata import entry_points

    found: dict[str, type[Source]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        if isinstance(loaded, type) and issubclass(loaded, Source):
            found[entry.name] = loaded
    return found


def kinds() -> dict[str, type[Source]]:
    """Every kind by name; a plugin may not replace a built-in."""
    return {**plugin_kinds(), **builtin_kinds()}


def make_source(config: SourceConfig, *, limits: FetchLimits | None = None, root: Path | None = None) -> Source:
    """The source object of a configured source; ``root`` is where a folder source's path is resolved."""
    known: dict[str, Callable[..., Source]] = dict(kinds())
    factory = known.get(config.kind)
    if factory is None:
        raise InvalidArgument(
            f"source {config.name!r} has unknown kind {config.kind!r}; known: {', '.join(sorted(known))}"
        )
    options = dict(config.options)
    if root is not None:
        options.setdefault("root", str(root))
    return factory(name=config.name, url=config.url, options=options, limits=limits)


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def parse_config(text: str, *, origin: str = "sources.toml") -> list[SourceConfig]:
    """The ``[[source]]`` tables of a TOML document; raises ``InvalidArgument`` naming what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidArgument(f"{origin}: {error}") from None
    configs: list[SourceConfig] = []
    seen: set[str] = set()
    known = set(kinds())
    for index, table in enumerate(data.get("source", [])):
        where = f"{origin}: source #{index + 1}"
        name = str(table.get("name", "")).strip()
        if not name or not set(name.lower()) <= _NAME_CHARS:
            raise InvalidArgument(f"{where}: name {name!r} must be letters, digits, '-', '_' or '.'")
        if name in seen:
            raise InvalidArgument(f"{where}: name {name!r} is used twice")
        seen.add(name)
        kind = str(table.get("kind", ""))
        if kind not in known:
            raise InvalidArgument(f"{where} ({name}): unknown kind {kind!r}; known: {', '.join(sorted(known))}")
        url = str(table.get("url", ""))
        if not url:
            raise InvalidArgument(f"{where} ({name}): url is missing")
        interval = table.get("interval_minutes", 60)
        if not isinstance(interval, int | float) or interval <= 0:
            raise InvalidArgument(f"{where} ({name}): interval_minutes must be a positive number")
        reserved = {"name", "kind", "url", "interval_minutes", "enabled", "high_frequency"}
        configs.append(
            SourceConfig(
                name=name,
                kind=kind,
                url=url,
                interval_ms=int(interval * 60_000),
                enabled=bool(table.get("enabled", True)),
                high_frequency=bool(table.get("high_frequency", False)),
                options={k: v for k, v in table.items() if k not in reserved},
            )
        )
    return configs


def load_config(path: Path) -> list[SourceConfig]:
    """``parse_config`` of a file; a missing file configures no source."""
    if not path.exists():
        return []
    return parse_config(path.read_text(encoding="utf-8"), origin=path.name)
