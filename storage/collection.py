"""Collection tables: sources with their health, items, mentions, phrases, trends and runs.

An *item* is a story, stored once; a *mention* is one source's sighting of it (its GUID there), so the
same story from two sources is one item with two mentions. Every fetch's outcome is written in one
transaction (its new items, mentions and the source's state and health), so a failed fetch stores
nothing of its items. Timestamps are UTC; SQLite hands them back without a zone, so readers attach UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.db import Base, session_scope

_IN_CHUNK = 500


class SourceRow(Base):
    """A configured source: what ``sources.toml`` says, its fetch state, and its health."""

    __tablename__ = "collection_sources"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    # Which configuration lists it: "config" (sources.toml) or another one (the demo's).
    origin: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    interval_ms: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)  # what the configuration says
    configured: Mapped[bool] = mapped_column(Boolean)  # still listed in the configuration
    high_frequency: Mapped[bool] = mapped_column(Boolean)
    options: Mapped[str] = mapped_column(Text)
    # Set by us (HTTP 410); only `cli sources reset NAME` clears it.
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    fetch_state: Mapped[str] = mapped_column(Text)
    next_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    consecutive_errors: Mapped[int] = mapped_column(Integer)
    # When the current streak of failures began (None while the last fetch succeeded).
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_reason: Mapped[str | None] = mapped_column(String(40))
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_fetch_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
    last_items: Mapped[int | None] = mapped_column(Integer)
    runs_total: Mapped[int] = mapped_column(Integer)
    runs_succeeded: Mapped[int] = mapped_column(Integer)
    items_total: Mapped[int] = mapped_column(Integer)
    duplicates_total: Mapped[int] = mapped_column(Integer)
    fetch_ms_total: Mapped[float] = mapped_column(Float)
    errors_by_reason: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ItemRow(Base):
    """One story, however many sources carried it."""

    __tablename__ = "collection_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    canonical_url: Mapped[str | None] = mapped_column(String(2000), unique=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    phrases: Mapped[str | None] = mapped_column(Text)  # JSON list, once processed
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_model: Mapped[str | None] = mapped_column(String(200))


class MentionRow(Base):
    """One source's sighting of an item."""

    __tablename__ = "collection_mentions"
    __table_args__ = (
        UniqueConstraint("source", "guid", name="uq_collection_mentions_source_guid"),
        Index("ix_collection_mentions_pending", "processed_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("collection_items.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(100))
    guid: Mapped[str] = mapped_column(String(500))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PhraseRow(Base):
    __tablename__ = "collection_phrases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phrase: Mapped[str] = mapped_column(String(300), unique=True)


class PhraseMentionRow(Base):
    """A phrase of an item as one source mentioned it, at the mention's time (Unix seconds)."""

    __tablename__ = "collection_phrase_mentions"
    # Covers the scoring query (phrase and time by time), so reading a day of mentions is one ordered scan.
    __table_args__ = (Index("ix_collection_phrase_mentions_ts", "ts", "phrase_id", "item_id", "source"),)

    phrase_id: Mapped[int] = mapped_column(ForeignKey("collection_phrases.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("collection_items.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    ts: Mapped[float] = mapped_column(Float)


class TrendRow(Base):
    __tablename__ = "collection_trends"

    phrase: Mapped[str] = mapped_column(String(300), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    score: Mapped[float] = mapped_column(Float)
    z: Mapped[float] = mapped_column(Float)
    current: Mapped[int] = mapped_column(Integer)
    previous: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    items: Mapped[int] = mapped_column(Integer)
    sources: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(String(300))
    related: Mapped[str] = mapped_column(Text)
    since: Mapped[float] = mapped_column(Float)
    pending: Mapped[str | None] = mapped_column(String(20))
    streak: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunRow(Base):
    """One ``collect_all_sources``: how many sources it sent, and the aggregate once all ended."""

    __tablename__ = "collection_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    total: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    new_items: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))
    # Process the new items and score the trends once every source has ended; the scoring job's id.
    process_after: Mapped[bool] = mapped_column(Boolean)
    followup_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RunItemRow(Base):
    __tablename__ = "collection_run_items"

    run_id: Mapped[int] = mapped_column(ForeignKey("collection_runs.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    new_items: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _insert(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert


def insert_into(model: Any) -> Any:
    from sqlalchemy import insert

    return insert(model)


def _chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


@dataclass
class SourceInfo:
    name: str
    kind: str
    origin: str
    url: str
    interval_ms: int
    enabled: bool
    configured: bool
    high_frequency: bool
    options: dict[str, Any]
    disabled_reason: str | None
    fetch_state: dict[str, Any]
    next_check_at: datetime | None
    consecutive_errors: int
    failing_since: datetime | None
    last_error: str | None
    last_error_reason: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    last_fetch_at: datetime | None
    last_latency_ms: float | None
    last_items: int | None
    runs_total: int
    runs_succeeded: int
    items_total: int
    duplicates_total: int
    fetch_ms_total: float
    errors_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Collected by ``collect_all_sources``: configured, enabled, and not disabled by us."""
        return self.configured and self.enabled and self.disabled_reason is None

    @property
    def healthy(self) -> bool:
        return self.active and self.consecutive_errors == 0

    @property
    def success_rate(self) -> float | None:
        return self.runs_succeeded / self.runs_total if self.runs_total else None

    @property
    def status(self) -> str:
        if not self.configured:
            return "removed"
        if self.disabled_reason:
            return "disabled"
        if not self.enabled:
            return "off"
        if self.consecutive_errors:
            return "unhealthy"
        return "healthy" if self.runs_total else "new"


def _info(row: SourceRow) -> SourceInfo:
    return SourceInfo(
        name=row.name,
        kind=row.kind,
        origin=row.origin,
        url=row.url,
        interval_ms=row.interval_ms,
        enabled=bool(row.enabled),
        configured=bool(row.configured),
        high_frequency=bool(row.high_frequency),
        options=json.loads(row.options or "{}"),
        disabled_reason=row.disabled_reason,
        fetch_state=json.loads(row.fetch_state or "{}"),
        next_check_at=as_utc(row.next_check_at),
        consecutive_errors=row.consecutive_errors,
        failing_since=as_utc(row.failing_since),
        last_error=row.last_error,
        last_error_reason=row.last_error_reason,
        last_error_at=as_utc(row.last_error_at),
        last_success_at=as_utc(row.last_success_at),
        last_fetch_at=as_utc(row.last_fetch_at),
        last_latency_ms=row.last_latency_ms,
        last_items=row.last_items,
        runs_total=row.runs_total,
        runs_succeeded=row.runs_succeeded,
        items_total=row.items_total,
        duplicates_total=row.duplicates_total,
        fetch_ms_total=row.fetch_ms_total,
        errors_by_reason=json.loads(row.errors_by_reason or "{}"),
    )


def sync_sources(configs: Iterable[Any], *, origin: str = "config") -> None:
    """Make the table follow a configuration (``processing.sources.SourceConfig`` objects).

    A new source is added; a listed one takes the configured kind, URL, interval and switches, keeping
    its state and health; one of this ``origin`` no longer listed is kept (its history stays) but
    marked not configured.
    """
    configs = list(configs)
    try:
        _sync_sources(configs, origin)
    except IntegrityError:
        # Another job (a thread here, a process elsewhere) added the same new source between our read and
        # our insert; the row is there now, so a second pass updates it.
        _sync_sources(configs, origin)


def _sync_sources(configs: list[Any], origin: str) -> None:
    now = utcnow()
    with session_scope() as session:
        rows = {row.name: row for row in session.scalars(select(SourceRow))}
        listed = set()
        for config in configs:
            listed.add(config.name)
            row = rows.get(config.name)
            values = {
                "kind": config.kind,
                "origin": origin,
                "url": config.url,
                "interval_ms": int(config.interval_ms),
                "enabled": bool(config.enabled),
                "configured": True,
                "high_frequency": bool(config.high_frequency),
                "options": json.dumps(dict(config.options), sort_keys=True, default=str),
            }
            if row is None:
                session.add(
                    SourceRow(
                        name=config.name,
                        **values,
                        disabled_reason=None,
                        fetch_state="{}",
                        next_check_at=None,
                        consecutive_errors=0,
                        runs_total=0,
                        runs_succeeded=0,
                        items_total=0,
                        duplicates_total=0,
                        fetch_ms_total=0.0,
                        errors_by_reason="{}",
                        updated_at=now,
                    )
                )
            elif any(getattr(row, key) != value for key, value in values.items()):
                for key, value in values.items():
                    setattr(row, key, value)
                row.updated_at = now
        for name, row in rows.items():
            if name not in listed and row.configured and row.origin == origin:
                row.configured = False
                row.updated_at = now


def get_source(name: str) -> SourceInfo | None:
    with session_scope() as session:
        row = session.get(SourceRow, name)
        return _info(row) if row is not None else None


def list_sources() -> list[SourceInfo]:
    with session_scope() as session:
        return [_info(row) for row in session.scalars(select(SourceRow).order_by(SourceRow.name))]


def due_sources(
    *, now: datetime | None = None, high_frequency: bool | None = None, origin: str | None = None, force: bool = False
) -> list[str]:
    """Active sources whose next check has come (or never was; any with ``force``), by name."""
    now = now or utcnow()
    chosen = []
    for info in list_sources():
        if not info.active or (high_frequency is not None and info.high_frequency != high_frequency):
            continue
        if origin is not None and info.origin != origin:
            continue
        if force:
            chosen.append(info.name)
            continue
        if info.next_check_at is None or info.next_check_at <= now:
            chosen.append(info.name)
    return chosen


def reset_source(name: str) -> bool:
    """Clear what errors did to a source (disabled by a 410, backoff, last error); False when unknown."""
    with session_scope() as session:
        row = session.get(SourceRow, name)
        if row is None:
            return False
        row.disabled_reason = None
        row.consecutive_errors = 0
        row.failing_since = None
        row.next_check_at = None
        row.last_error = None
        row.last_error_reason = None
        row.fetch_state = "{}"
        row.updated_at = utcnow()
        return True


def record_failure(
    name: str,
    *,
    reason: str,
    message: str,
    latency_ms: float | None,
    next_check_at: datetime,
    disable: bool = False,
) -> SourceInfo | None:
    """A failed fetch: the error and its reason, one more consecutive error, the backed-off next check."""
    now = utcnow()
    with session_scope() as session:
        row = session.get(SourceRow, name, with_for_update=True)
        if row is None:
            return None
        errors = json.loads(row.errors_by_reason or "{}")
        errors[reason] = int(errors.get(reason, 0)) + 1
        row.errors_by_reason = json.dumps(errors, sort_keys=True)
        if row.consecutive_errors == 0 or row.failing_since is None:
            row.failing_since = now
        row.consecutive_errors += 1
        row.last_error = message[:2000]
        row.last_error_reason = reason
        row.last_error_at = now
        row.last_fetch_at = now
        row.runs_total += 1
        if latency_ms is not None:
            row.last_latency_ms = latency_ms
            row.fetch_ms_total += latency_ms
        row.last_items = 0
        row.next_check_at = next_check_at
        if disable:
            row.disabled_reason = message[:2000]
        row.updated_at = now
        session.flush()
        return _info(row)


@dataclass
class StoredFetch:
    new_items: int
    new_mentions: int
    duplicates: int


@dataclass
class Candidate:
    """An item ready to store: the source's item with its dedupe keys."""

    guid: str
    title: str
    url: str | None
    canonical_url: str | None
    content_hash: str
    summary: str
    published_at: datetime | None


def record_success(
    name: str,
    candidates: Sequence[Candidate],
    *,
    fetch_state: Mapping[str, Any],
    latency_ms: float,
    next_check_at: datetime,
) -> StoredFetch:
    """Store a fetch in one transaction: new items, new mentions, and the source's state and health.

    An item already known by this source's GUID is a duplicate; one known by canonical URL or content
    hash from elsewhere gets a mention from this source (a duplicate when this source mentions it
    already).
    """
    now = utcnow()
    with session_scope() as session:
        row = session.get(SourceRow, name, with_for_update=True)
        if row is None:
            raise LookupError(f"no source named {name!r}")
        stored = _store_items(session, name, candidates, now)
        row.consecutive_errors = 0
        row.failing_since = None
        row.last_success_at = now
        row.last_fetch_at = now
        row.runs_total += 1
        row.runs_succeeded += 1
        row.last_latency_ms = latency_ms
        row.fetch_ms_total += latency_ms
        row.last_items = stored.new_items + stored.new_mentions
        row.items_total += stored.new_items + stored.new_mentions
        row.duplicates_total += stored.duplicates
        row.fetch_state = json.dumps(dict(fetch_state), sort_keys=True, default=str)
        row.next_check_at = next_check_at
        row.updated_at = now
        return stored


def _store_items(session: Session, source: str, candidates: Sequence[Candidate], now: datetime) -> StoredFetch:
    items, mentions = ItemRow.__table__, MentionRow.__table__
    assert isinstance(items, Table) and isinstance(mentions, Table)
    duplicates = 0
    # One candidate per key within the batch: a feed that lists a story twice stores it once.
    unique: list[Candidate] = []
    seen_guid: set[str] = set()
    seen_url: set[str] = set()
    seen_hash: set[str] = set()
    for c in candidates:
        if c.guid in seen_guid or (c.canonical_url and c.canonical_url in seen_url) or c.content_hash in seen_hash:
            duplicates += 1
            continue
        seen_guid.add(c.guid)
        seen_hash.add(c.content_hash)
        if c.canonical_url:
            seen_url.add(c.canonical_url)
        unique.append(c)

    known_guids: set[str] = set()
    for chunk in _chunks([c.guid for c in unique]):
        known_guids.update(
            session.scalars(select(mentions.c.guid).where(mentions.c.source == source, mentions.c.guid.in_(chunk)))
        )
    fresh = [c for c in unique if c.guid not in known_guids]
    duplicates += len(unique) - len(fresh)

    by_url: dict[str, int] = {}
    by_hash: dict[str, int] = {}
    for chunk in _chunks([c.canonical_url for c in fresh if c.canonical_url]):
        by_url.update(
            session.execute(select(items.c.canonical_url, items.c.id).where(items.c.canonical_url.in_(chunk))).all()
        )
    for chunk in _chunks([c.content_hash for c in fresh]):
        by_hash.update(
            session.execute(select(items.c.content_hash, items.c.id).where(items.c.content_hash.in_(chunk))).all()
        )

    matched: list[tuple[Candidate, int]] = []
    new: list[Candidate] = []
    for c in fresh:
        item_id = by_url.get(c.canonical_url or "") or by_hash.get(c.content_hash)
        if item_id is not None:
            matched.append((c, item_id))
        else:
            new.append(c)

    if new:
        rows = [
            {
                "canonical_url": c.canonical_url,
                "content_hash": c.content_hash,
                "title": c.title,
                "url": c.url,
                "summary": c.summary,
                "published_at": c.published_at,
                "first_seen_at": now,
            }
            for c in new
        ]
        for chunk in _chunks(rows, 1_000):
            session.execute(items.insert(), list(chunk))
        for chunk in _chunks([c.content_hash for c in new]):
            by_hash.update(
                session.execute(select(items.c.content_hash, items.c.id).where(items.c.content_hash.in_(chunk))).all()
            )
        matched += [(c, by_hash[c.content_hash]) for c in new]

    # An item this source mentions already (under another GUID) is a duplicate, not a second mention.
    already: set[int] = set()
    for chunk in _chunks([item_id for _, item_id in matched]):
        already.update(
            session.scalars(
                select(mentions.c.item_id).where(mentions.c.source == source, mentions.c.item_id.in_(chunk))
            )
        )
    mention_rows = []
    added: set[int] = set()
    for c, item_id in matched:
        if item_id in already or item_id in added:
            duplicates += 1
            continue
        added.add(item_id)
        mention_rows.append(
            {"item_id": item_id, "source": source, "guid": c.guid, "seen_at": now, "processed_at": None}
        )
    for chunk in _chunks(mention_rows, 1_000):
        session.execute(mentions.insert(), list(chunk))
    return StoredFetch(new_items=len(new), new_mentions=len(mention_rows) - len(new), duplicates=duplicates)


def mentions_of(item_id: int) -> list[str]:
    """The sources that mentioned an item."""
    with session_scope() as session:
        return sorted(session.scalars(select(MentionRow.source).where(MentionRow.item_id == item_id)))


def count_items(source: str | None = None) -> int:
    with session_scope() as session:
        if source is None:
            return int(session.scalar(select(func.count()).select_from(ItemRow)) or 0)
        query = select(func.count()).select_from(MentionRow).where(MentionRow.source == source)
        return int(session.scalar(query) or 0)


def items_of(source: str) -> list[dict[str, Any]]:
    """The items a source mentioned (tests and ``cli``)."""
    with session_scope() as session:
        query = (
            select(ItemRow)
            .join(MentionRow, MentionRow.item_id == ItemRow.id)
            .where(MentionRow.source == source)
            .order_by(ItemRow.id)
        )
        return [
            {
                "id": r.id,
                "title": r.title,
                "url": r.url,
                "canonical_url": r.canonical_url,
                "summary": r.summary,
                "published_at": as_utc(r.published_at),
                "phrases": json.loads(r.phrases) if r.phrases else None,
            }
            for r in session.scalars(query)
        ]


# --------------------------------------------------------------------------------------------------
# Processing: phrases of pending mentions
# --------------------------------------------------------------------------------------------------


@dataclass
class PendingMention:
    mention_id: int
    item_id: int
    source: str
    title: str
    summary: str
    phrases: list[str] | None
    ts: float


def pending_mentions(limit: int) -> list[PendingMention]:
    """The oldest mentions not processed yet, with their items' text."""
    with session_scope() as session:
        query = (
            select(
                MentionRow.id,
                MentionRow.item_id,
                MentionRow.source,
                MentionRow.seen_at,
                ItemRow.title,
                ItemRow.summary,
                ItemRow.phrases,
                ItemRow.published_at,
            )
            .join(ItemRow, ItemRow.id == MentionRow.item_id)
            .where(MentionRow.processed_at.is_(None))
            .order_by(MentionRow.id)
            .limit(limit)
        )
        out = []
        for mid, iid, source, seen_at, title, summary, phrases, published_at in session.execute(query):
            seen = as_utc(seen_at)
            published = as_utc(published_at)
            assert seen is not None
            # A mention counts at the story's publication time, unless that claims to be later than
            # when we saw it (a clock or a feed in the future).
            moment = published if published is not None and published <= seen else seen
            out.append(
                PendingMention(
                    mid, iid, source, title, summary, json.loads(phrases) if phrases else None, moment.timestamp()
                )
            )
        return out


def store_processed(processed: Sequence[tuple[PendingMention, list[str]]]) -> int:
    """Store the phrases of processed mentions and mark them processed, in one transaction."""
    if not processed:
        return 0
    now = utcnow()
    with session_scope() as session:
        insert = _insert(session)
        vocabulary = sorted({p for _, phrases in processed for p in phrases})
        ids: dict[str, int] = {}
        for chunk in _chunks(vocabulary):
            ids.update(session.execute(select(PhraseRow.phrase, PhraseRow.id).where(PhraseRow.phrase.in_(chunk))).all())
        missing = [p for p in vocabulary if p not in ids]
        for chunk in _chunks(missing, 1_000):
            session.execute(
                insert(PhraseRow).on_conflict_do_nothing(index_elements=["phrase"]), [{"phrase": p} for p in chunk]
            )
        for chunk in _chunks(missing):
            ids.update(session.execute(select(PhraseRow.phrase, PhraseRow.id).where(PhraseRow.phrase.in_(chunk))).all())
        item_phrases = {m.item_id: phrases for m, phrases in processed if m.phrases is None}
        if item_phrases:
            # One executemany, not one statement per item.
            table = ItemRow.__table__
            assert isinstance(table, Table)
            statement = update(table).where(table.c.id == bindparam("item")).values(phrases=bindparam("text"))
            session.connection().execute(
                statement, [{"item": i, "text": json.dumps(p)} for i, p in item_phrases.items()]
            )
        tuples = [(ids[p], m.item_id, m.source, m.ts) for m, phrases in processed for p in phrases]
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            # Tens of rows per item: the driver's executemany is several times faster than building
            # SQLAlchemy parameter dicts, and SQLite runs it as one prepared statement.
            connection.exec_driver_sql(
                "INSERT INTO collection_phrase_mentions (phrase_id, item_id, source, ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                tuples,
            )
        else:
            statement = insert(PhraseMentionRow).on_conflict_do_nothing(
                index_elements=["phrase_id", "item_id", "source"]
            )
            rows = [{"phrase_id": a, "item_id": b, "source": c, "ts": d} for a, b, c, d in tuples]
            for chunk in _chunks(rows, 2_000):
                session.execute(statement, list(chunk))
        for chunk in _chunks([m.mention_id for m, _ in processed]):
            session.execute(update(MentionRow).where(MentionRow.id.in_(chunk)).values(processed_at=now))
        return len(tuples)


def count_pending() -> int:
    with session_scope() as session:
        return int(
            session.scalar(select(func.count()).select_from(MentionRow).where(MentionRow.processed_at.is_(None))) or 0
        )


# --------------------------------------------------------------------------------------------------
# Trends
# --------------------------------------------------------------------------------------------------


@contextmanager
def _driver_cursor(session: Session, sql: str) -> Iterator[Any]:
    """The driver's own cursor on ``sql``, in the session's transaction: plain tuples, none of
    SQLAlchemy's row objects, which cost more than the database when a million rows come back."""
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(sql)
        yield cursor
    finally:
        cursor.close()


def _phrase_names(session: Session) -> dict[int, str]:
    with _driver_cursor(session, "SELECT id, phrase FROM collection_phrases") as cursor:
        return dict(cursor)


def load_mention_times(since_ts: float) -> Any:
    """Phrase and time of every mention since a Unix time, as ``processing.trends.Mentions`` columns
    without items or sources: all that ranking needs (``load_mentions`` reads those for the trends kept)."""
    import numpy as np

    from processing.trends import Mentions

    with session_scope() as session:
        # Two columns of the covering time index straight into numpy, with no list of rows in between:
        # the items and sources of a million mentions were most of the reading time.
        sql = f"SELECT phrase_id, ts FROM collection_phrase_mentions WHERE ts >= {float(since_ts)!r}"
        with _driver_cursor(session, sql) as cursor:
            columns = np.fromiter(cursor, dtype=[("phrase", np.int64), ("ts", np.float64)])
        names = _phrase_names(session)
    used, phrase_index = np.unique(columns["phrase"], return_inverse=True)
    return Mentions(
        phrases=[names[int(i)] for i in used],
        sources=[],
        phrase=phrase_index.astype(np.int64),
        source=None,
        item=None,
        ts=np.ascontiguousarray(columns["ts"]),
    )


def load_mentions(since_ts: float, phrases: Sequence[str] | None = None) -> Any:
    """Phrase mentions since a Unix time (of ``phrases`` only, when given), as ``processing.trends.Mentions``."""
    import numpy as np

    from processing.trends import Mentions

    with session_scope() as session:
        where = ""
        if phrases is None:
            names = _phrase_names(session)
        else:
            names = {}
            for chunk in _chunks(list(phrases)):
                query = select(PhraseRow.id, PhraseRow.phrase).where(PhraseRow.phrase.in_(chunk))
                names.update(session.execute(query).all())
            # Integers of our own, so inlining them is safe; the primary key (phrase first) serves the lookup.
            where = f" AND phrase_id IN ({', '.join(str(int(i)) for i in names) or 'NULL'})"
        sql = f"SELECT phrase_id, item_id, source, ts FROM collection_phrase_mentions WHERE ts >= {float(since_ts)!r}"
        with _driver_cursor(session, sql + where) as cursor:
            rows = cursor.fetchall()
    count = len(rows)
    phrase_ids = np.fromiter((r[0] for r in rows), np.int64, count)
    items = np.fromiter((r[1] for r in rows), np.int64, count)
    codes: dict[str, int] = {}
    sources = np.fromiter((codes.setdefault(r[2], len(codes)) for r in rows), np.int64, count)
    ts = np.fromiter((r[3] for r in rows), np.float64, count)
    del rows
    used, phrase_index = np.unique(phrase_ids, return_inverse=True)
    return Mentions(
        phrases=[names[int(i)] for i in used],
        sources=list(codes),
        phrase=phrase_index.astype(np.int64),
        source=sources,
        item=items,
        ts=ts,
    )


def trend_states() -> dict[str, Any]:
    from processing.trends import TrendState

    with session_scope() as session:
        return {
            row.phrase: TrendState(row.state, row.since, row.pending, row.streak)
            for row in session.scalars(select(TrendRow))
        }


def replace_trends(trends: Sequence[Any]) -> None:
    """The trends of this run replace the previous ones (phrases that dropped out are removed)."""
    now = utcnow()
    with session_scope() as session:
        session.execute(delete(TrendRow))
        rows = [
            {
                "phrase": t.phrase,
                "state": t.state,
                "score": t.score,
                "z": t.z,
                "current": t.current,
                "previous": t.previous,
                "total": t.total,
                "items": t.items,
                "sources": json.dumps(t.sources),
                "topic": t.topic,
                "related": json.dumps(t.related),
                "since": t.since,
                "pending": t.pending,
                "streak": t.streak,
                "updated_at": now,
            }
            for t in trends
        ]
        for chunk in _chunks(rows, 1_000):
            session.execute(insert_into(TrendRow), list(chunk))


def list_trends(limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
    with session_scope() as session:
        query = select(TrendRow).order_by(TrendRow.score.desc(), TrendRow.phrase).limit(limit)
        if state:
            query = query.where(TrendRow.state == state)
        return [
            {
                "phrase": r.phrase,
                "state": r.state,
                "score": r.score,
                "z": r.z,
                "current": r.current,
                "previous": r.previous,
                "total": r.total,
                "items": r.items,
                "sources": json.loads(r.sources),
                "topic": r.topic,
                "related": json.loads(r.related),
                "pending": r.pending,
            }
            for r in session.scalars(query)
        ]


# --------------------------------------------------------------------------------------------------
# Runs of collect_all_sources
# --------------------------------------------------------------------------------------------------


def open_run(
    kind: str, message_id: str | None, members: Sequence[tuple[str, str]], *, process_after: bool = False
) -> int:
    """A run over ``(source, message id)`` members.

    A retried fanning message finds the run it opened before and points the unfinished members at the
    messages it sends now; callbacks of the earlier messages then find no member and change nothing.
    """
    now = utcnow()
    with session_scope() as session:
        if message_id is not None:
            found = session.scalar(select(RunRow).where(RunRow.message_id == message_id))
            if found is not None:
                current = dict(members)
                for member in session.scalars(select(RunItemRow).where(RunItemRow.run_id == found.id)):
                    if member.finished_at is None and member.source in current:
                        member.message_id = current[member.source]
                return int(found.id)
        run = RunRow(
            process_after=process_after,
            kind=kind,
            message_id=message_id,
            total=len(members),
            succeeded=0,
            failed=0,
            new_items=0,
            outcome="running" if members else "succeeded",
            started_at=now,
            finished_at=None if members else now,
        )
        session.add(run)
        session.flush()
        for source, member_id in members:
            session.add(RunItemRow(run_id=run.id, source=source, message_id=member_id, outcome="queued", new_items=0))
        return int(run.id)


def record_member(
    message_id: str, *, succeeded: bool, new_items: int = 0, error: str | None = None
) -> dict[str, Any] | None:
    """How one member of a run ended; the member that ends last closes the run. None: no such member.

    The run's row is locked first (``FOR UPDATE`` on PostgreSQL, the database's write lock on SQLite),
    so members are counted one at a time and exactly one call closes the run. A member recorded again
    (a redelivered callback) replaces its outcome without being counted twice.
    """
    now = utcnow()
    with session_scope() as session:
        found = session.scalar(select(RunItemRow.run_id).where(RunItemRow.message_id == message_id))
        if found is None:
            return None
        run = session.get(RunRow, found, with_for_update=True)
        assert run is not None
        # A write takes SQLite's lock before anything else is read in this transaction.
        session.execute(update(RunRow).where(RunRow.id == run.id).values(new_items=RunRow.new_items))
        member = session.scalar(select(RunItemRow).where(RunItemRow.message_id == message_id))
        assert member is not None
        outcome = "succeeded" if succeeded else "failed"
        session.refresh(run)
        if member.outcome == "succeeded":
            run.succeeded -= 1
        elif member.outcome == "failed":
            run.failed -= 1
        run.new_items -= member.new_items
        member.outcome = outcome
        member.new_items = new_items
        member.error = error
        member.finished_at = now
        if succeeded:
            run.succeeded += 1
        else:
            run.failed += 1
        run.new_items += new_items
        closed_now = run.finished_at is None and run.succeeded + run.failed >= run.total
        if closed_now:
            run.finished_at = now
            run.outcome = "succeeded" if run.failed == 0 else "failed" if run.succeeded == 0 else "partial"
        session.flush()
        return {
            "run_id": run.id,
            "closed": closed_now,
            "finished": run.finished_at is not None,
            "process_after": bool(run.process_after),
            "message_id": run.message_id,
        }


def set_followup(run_id: int, message_id: str) -> None:
    with session_scope() as session:
        session.execute(update(RunRow).where(RunRow.id == run_id).values(followup_id=message_id))


def get_run(run_id: int) -> dict[str, Any] | None:
    with session_scope() as session:
        run = session.get(RunRow, run_id)
        if run is None:
            return None
        members = session.scalars(
            select(RunItemRow).where(RunItemRow.run_id == run_id).order_by(RunItemRow.source)
        ).all()
        return {
            "id": run.id,
            "kind": run.kind,
            "message_id": run.message_id,
            "total": run.total,
            "succeeded": run.succeeded,
            "failed": run.failed,
            "new_items": run.new_items,
            "outcome": run.outcome,
            "process_after": bool(run.process_after),
            "followup_id": run.followup_id,
            "started_at": as_utc(run.started_at),
            "finished_at": as_utc(run.finished_at),
            "items_by_source": {m.source: m.new_items for m in members},
            "failures": {m.source: m.error for m in members if m.outcome == "failed"},
            "pending": [m.source for m in members if m.finished_at is None],
        }


def run_for_message(message_id: str) -> int | None:
    with session_scope() as session:
        found = session.scalar(select(RunRow.id).where(RunRow.message_id == message_id))
        return int(found) if found is not None else None


# --------------------------------------------------------------------------------------------------
# Housekeeping, embeddings, analytics, metrics
# --------------------------------------------------------------------------------------------------


def delete_items_before(cutoff: datetime) -> int:
    """Items first seen before ``cutoff``, with their mentions and phrase mentions."""
    with session_scope() as session:
        old = select(ItemRow.id).where(ItemRow.first_seen_at < cutoff)
        session.execute(delete(PhraseMentionRow).where(PhraseMentionRow.item_id.in_(old)))
        session.execute(delete(MentionRow).where(MentionRow.item_id.in_(old)))
        result = session.execute(delete(ItemRow).where(ItemRow.first_seen_at < cutoff))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def items_without_embedding(model: str, limit: int) -> list[tuple[int, str]]:
    with session_scope() as session:
        query = (
            select(ItemRow.id, ItemRow.title, ItemRow.summary)
            .where((ItemRow.embedding.is_(None)) | (ItemRow.embedding_model != model))
            .order_by(ItemRow.id)
            .limit(limit)
        )
        return [(i, f"{t}\n{s}".strip()) for i, t, s in session.execute(query)]


def store_embeddings(model: str, vectors: Sequence[tuple[int, bytes]]) -> None:
    with session_scope() as session:
        for item_id, data in vectors:
            session.execute(update(ItemRow).where(ItemRow.id == item_id).values(embedding=data, embedding_model=model))


def analytics(hours: float = 24.0) -> dict[str, Any]:
    """Counts for the daily picture: items, mentions per source, trends per state."""
    since = utcnow() - timedelta(hours=hours)
    with session_scope() as session:
        per_source = dict(
            session.execute(
                select(MentionRow.source, func.count()).where(MentionRow.seen_at >= since).group_by(MentionRow.source)
            ).all()
        )
        states = dict(session.execute(select(TrendRow.state, func.count()).group_by(TrendRow.state)).all())
        items = int(
            session.scalar(select(func.count()).select_from(ItemRow).where(ItemRow.first_seen_at >= since)) or 0
        )
        multi = session.scalar(
            select(func.count()).select_from(
                select(MentionRow.item_id).group_by(MentionRow.item_id).having(func.count() > 1).subquery()
            )
        )
    return {
        "hours": hours,
        "new_items": items,
        "mentions_by_source": {str(k): int(v) for k, v in per_source.items()},
        "items_from_several_sources": int(multi or 0),
        "trends_by_state": {str(k): int(v) for k, v in states.items()},
    }


def metrics_snapshot() -> dict[str, Any]:
    """What the scrape-time collector exposes: per-source totals and health, trends per state."""
    sources = list_sources()
    with session_scope() as session:
        states = dict(session.execute(select(TrendRow.state, func.count()).group_by(TrendRow.state)).all())
    return {"sources": sources, "trends_by_state": {str(k): int(v) for k, v in states.items()}}
