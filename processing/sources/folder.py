"""A folder of JSON and CSV files under the storage root: each row or object is one item.

JSON files hold a list of objects (or ``{"items": [...]}``); CSV files have a header row. Fields:
``title`` (required), ``url``, ``summary`` (or ``text``), ``published_at`` (ISO 8601 or Unix seconds),
``guid`` (or ``id``; default: file name and row number). The fetch state remembers each file's size
and modification time, so a fetch reads only new or changed files, and reports nothing new otherwise.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from processing.errors import CorruptInput, NotFound
from processing.paths import resolve_under
from processing.sources import FetchResult, Item, Source, plain_text
from processing.sources.jsonapi import from_unix


def _when(value: Any) -> datetime | None:
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.replace(".", "", 1).isdigit():
            return from_unix(float(text))
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return from_unix(value)


def _item(row: Mapping[str, Any], default_guid: str) -> Item | None:
    title = plain_text(str(row.get("title") or ""))
    if not title:
        return None
    return Item(
        guid=str(row.get("guid") or row.get("id") or default_guid)[:500],
        title=title[:1000],
        url=str(row["url"]) if row.get("url") else None,
        summary=plain_text(str(row.get("summary") or row.get("text") or ""))[:5000],
        published_at=_when(row.get("published_at")),
        author=str(row["author"]) if row.get("author") else None,
    )


def read_file(path: Path, max_bytes: int) -> list[Item]:
    """The items of one JSON or CSV file; raises ``CorruptInput`` naming the file when it cannot be read."""
    size = path.stat().st_size
    if size > max_bytes:
        raise CorruptInput(f"{path.name} is {size} bytes, over the {max_bytes} byte cap")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CorruptInput(f"{path.name} is not UTF-8: {error}") from None
    rows: list[Any]
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CorruptInput(f"{path.name} is not valid JSON: {error}") from None
        rows = data.get("items", []) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise CorruptInput(f"{path.name} holds neither a list nor an object with 'items'")
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    items = []
    for number, row in enumerate(rows, 1):
        if isinstance(row, dict):
            item = _item(row, f"{path.name}#{number}")
            if item is not None:
                items.append(item)
    return items


class FolderSource(Source):
    """``url`` is a folder under the storage root (``options.root``); ``*.json`` and ``*.csv`` in it."""

    kind = "folder"
    description = "local folder of JSON/CSV files"

    def fetch(self, state: Mapping[str, Any]) -> FetchResult:
        root = Path(str(self.options.get("root", ".")))
        folder = resolve_under(root, self.url.removeprefix("file:"))
        if not folder.is_dir():
            raise NotFound(f"{self.name}: folder {self.url!r} does not exist under the storage root")
        previous: Mapping[str, Any] = state.get("files", {})
        files: dict[str, list[int]] = {}
        items: list[Item] = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in (".json", ".csv") or not path.is_file():
                continue
            info = path.stat()
            mark = [info.st_size, info.st_mtime_ns]
            files[path.name] = mark
            if list(previous.get(path.name, [])) == mark:
                continue
            items += read_file(path, self.limits.max_bytes)
        warnings: list[str] = []
        items = self._cap(items, warnings)
        changed = files != dict(previous)
        return FetchResult(
            items, {"files": files}, not_modified=not changed and not items, warnings=warnings, requests=0
        )
