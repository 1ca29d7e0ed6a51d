"""Collection actors (queue ``collection``): sources to items, items to phrases, phrases to trends.

``collect_from_source`` fetches one source and stores what is new in one transaction. A failed fetch
(a timeout, HTTP 404/410/429/5xx, HTML or a malformed or unsafe document) is recorded on the source —
its last error, one more consecutive error, a backed-off next check, a 410 disables it — and the job
ends ``failed`` with that reason, never retried: the source's own backoff decides when it is tried again.
A source never vanishes because of errors; ``cli sources reset NAME`` clears them.

``collect_all_sources`` and ``collect_high_frequency`` open a run and send one ``collect_from_source``
per due source as a Dramatiq group. Dramatiq's group completion fires only when every member
succeeded, so each member reports its end to a callback actor instead (``on_success`` /
``on_failure``, through the callbacks middleware); the callback of the member that ends last closes
the run with its aggregate (items per source, failures with reasons).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from periodiq import cron

from middleware.interrupts import JobCancelled
from middleware.time_limit import HardTimeLimitExceeded, SoftTimeLimitExceeded
from processing.errors import InvalidArgument, NotFound, PermanentError
from settings import settings
from storage import collection as store

logger = logging.getLogger(__name__)

QUEUE = "collection"
#: Sample items ``test_source`` returns.
SAMPLE_ITEMS = 5


class SourceFailed(PermanentError):
    """A source's fetch failed; its reason is on the source and in the job's error."""


# A time limit or a cancel interrupting a fetch is the job's business, not a failure of the source.
_NOT_THE_SOURCES_FAULT = (SoftTimeLimitExceeded, HardTimeLimitExceeded, JobCancelled)


def _limits() -> Any:
    from processing.sources import FetchLimits

    return FetchLimits(
        timeout_ms=settings.collection_timeout,
        max_bytes=settings.collection_max_body_bytes,
        max_redirects=settings.collection_max_redirects,
        max_items=settings.collection_max_items,
    )


_synced: tuple[int, int] | None = None


def sync_configuration(*, force: bool = False) -> None:
    """Make the sources table follow ``sources.toml`` when the file changed since this process last did.

    Every job of a run calls this; comparing the file's size and modification time first keeps a run
    over a thousand sources from re-reading the table a thousand times.
    """
    from processing.sources import load_config

    global _synced
    path = settings.sources_file
    try:
        info = path.stat()
        mark: tuple[int, int] = (info.st_size, info.st_mtime_ns)
    except FileNotFoundError:
        mark = (-1, -1)
    if not force and mark == _synced:
        return
    store.sync_sources(load_config(path))
    _synced = mark


def _source(name: str) -> tuple[Any, store.SourceInfo]:
    from processing.sources import SourceConfig, make_source

    sync_configuration()
    info = store.get_source(name)
    if info is None:
        raise NotFound(f"no source named {name!r} in {settings.sources_file.name}")
    config = SourceConfig(
        info.name, info.kind, info.url, info.interval_ms, info.enabled, info.high_frequency, info.options
    )
    limits = _limits()
    if isinstance(info.options.get("timeout_ms"), int):
        # A source may ask for less time than the global cap, never more.
        limits = dataclasses.replace(limits, timeout_ms=max(1, min(info.options["timeout_ms"], limits.timeout_ms)))
    return make_source(config, limits=limits, root=settings.storage_root), info


def _reason(error: BaseException) -> str:
    """The short label of a failed fetch (the ``reason`` of ``collection_fetch_errors_total``)."""
    from processing.fetch import FetchError
    from processing.sources.safexml import UnsafeDocument

    if isinstance(error, FetchError):
        return error.reason
    if isinstance(error, UnsafeDocument):
        return "unsafe_document"
    text = str(error)
    if "HTML page" in text:
        return "html"
    if isinstance(error, PermanentError):
        return "malformed" if "JSON" in text or "feed" in text or "listing" in text else "bad_source"
    return "error"


def _candidates(items: list[Any]) -> list[store.Candidate]:
    from processing.dedupe import content_hash
    from processing.urls import canonical_url

    return [
        store.Candidate(
            guid=item.guid,
            title=item.title,
            url=item.url,
            canonical_url=(canonical_url(item.url) or None) if item.url else None,
            content_hash=content_hash(item.title, item.summary),
            summary=item.summary,
            published_at=item.published_at,
        )
        for item in items
    ]


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=5_000, soft_time_limit=4 * 60_000, time_limit=5 * 60_000)
def collect_from_source(name: str) -> dict[str, Any]:
    """Fetch one source and store its new items and mentions; a failure is recorded on the source."""
    from processing.fetch import FetchError
    from processing.sources.timing import backoff_interval, next_interval

    source, info = _source(name)
    if not info.active:
        why = info.disabled_reason or ("not in the configuration" if not info.configured else "enabled = false")
        raise InvalidArgument(f"source {name!r} is disabled: {why}")
    started = time.perf_counter()
    try:
        result = source.fetch(info.fetch_state)
    except _NOT_THE_SOURCES_FAULT:
        raise
    except Exception as error:
        latency = (time.perf_counter() - started) * 1000
        reason = _reason(error)
        retry_after = error.retry_after_ms if isinstance(error, FetchError) else None
        gone = isinstance(error, FetchError) and error.gone
        wait = backoff_interval(
            info.interval_ms,
            info.consecutive_errors + 1,
            retry_after_ms=retry_after,
            jitter=settings.collection_backoff_jitter,
        )
        message = f"{reason}: {error}"
        store.record_failure(
            name,
            reason=reason,
            message=message,
            latency_ms=latency,
            next_check_at=store.utcnow() + timedelta(milliseconds=wait),
            disable=gone,
        )
        logger.warning(
            "Source %r failed (%s); next try in %d s%s.", name, message, wait // 1000, ", disabled" if gone else ""
        )
        if gone:
            message += " (source disabled; `python -m cli sources reset NAME` enables it again)"
        raise SourceFailed(f"source {name!r} failed: {message}") from None
    latency = (time.perf_counter() - started) * 1000
    wait = next_interval(
        info.interval_ms, ttl_ms=result.ttl_ms, max_age_ms=result.max_age_ms, retry_after_ms=result.retry_after_ms
    )
    next_check = store.utcnow() + timedelta(milliseconds=wait)
    stored = store.record_success(
        name, _candidates(result.items), fetch_state=result.state, latency_ms=latency, next_check_at=next_check
    )
    for warning in result.warnings:
        logger.warning("Source %r: %s", name, warning)
    return {
        "source": name,
        "fetched": len(result.items),
        "new_items": stored.new_items,
        "new_mentions": stored.new_mentions,
        "duplicates": stored.duplicates,
        "not_modified": result.not_modified,
        "latency_ms": round(latency, 1),
        "next_check_in_s": wait // 1000,
        "warnings": result.warnings,
    }


def _current_message_id() -> str | None:
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else None


def start_run(kind: str, names: list[str], *, process_after: bool = False) -> dict[str, Any]:
    """Open a run over ``names`` and send one ``collect_from_source`` per source as a group."""
    parent_id = _current_message_id()
    options: dict[str, Any] = {
        "on_success": source_succeeded.actor_name,
        "on_failure": source_failed.actor_name,
    }
    if parent_id is not None:
        options["parent_id"] = parent_id
    messages = [collect_from_source.message_with_options(args=(name,), **options) for name in names]
    members = [(n, m.message_id) for n, m in zip(names, messages, strict=True)]
    run_id = store.open_run(kind, parent_id, members, process_after=process_after)
    if messages:
        dramatiq.group(messages).run()
    logger.info("Collection run %d (%s) sent for %d sources.", run_id, kind, len(messages))
    return {"run_id": run_id, "sources": len(messages), "names": names}


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=2,
    min_backoff=10_000,
    periodic=cron("0 * * * *"),
    schedule_enabled=settings.collection_schedule_enabled,
)
def collect_all_sources(force: bool = False, origin: str | None = None, process_after: bool = False) -> dict[str, Any]:
    """Every enabled source whose next check has come (all of them with ``force``), as one group run.

    Hourly when ``COLLECTION_SCHEDULE_ENABLED`` is on; the run's aggregate is recorded when every
    source's job has ended, whatever their outcomes (see ``storage.collection.get_run``). ``origin``
    picks the sources of one configuration (``config`` is sources.toml); with ``process_after`` the
    closing of the run sends ``process_pending_items`` then ``score_trends``.
    """
    sync_configuration()
    names = store.due_sources(origin=origin, force=force)
    return start_run("all", names, process_after=process_after)


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=2,
    min_backoff=10_000,
    periodic=cron("*/15 * * * *"),
    schedule_enabled=settings.collection_schedule_enabled,
)
def collect_high_frequency() -> dict[str, Any]:
    """The due sources marked ``high_frequency``, every 15 minutes (with ``COLLECTION_SCHEDULE_ENABLED``)."""
    sync_configuration()
    return start_run("high_frequency", store.due_sources(high_frequency=True))


def _member_outcome(outcome: dict[str, Any] | None) -> dict[str, Any]:
    if outcome is None:
        return {"run_member": False}
    if outcome["closed"] and outcome["process_after"]:
        extra: dict[str, Any] = {"parent_id": outcome["message_id"]} if outcome["message_id"] else {}
        messages = [
            process_pending_items.message_with_options(kwargs={"limit": 1_000_000}, **extra),
            score_trends.message_with_options(pipe_ignore=True, **extra),
        ]
        store.set_followup(outcome["run_id"], messages[-1].message_id)
        dramatiq.pipeline(messages).run()
    if outcome["closed"]:
        run = store.get_run(outcome["run_id"]) or {}
        logger.info(
            "Collection run %s ended %s: %s of %s sources succeeded, %s new items; failures: %s",
            run.get("id"),
            run.get("outcome"),
            run.get("succeeded"),
            run.get("total"),
            run.get("new_items"),
            run.get("failures") or "none",
        )
    return {"run_member": True, **outcome}


@dramatiq.actor(queue_name=QUEUE, actor_name="collection_source_succeeded", max_retries=5, min_backoff=500)
def source_succeeded(message_data: dict, result: dict | None) -> dict[str, Any]:
    """Callback of a run's source job that succeeded."""
    new = int((result or {}).get("new_items", 0)) + int((result or {}).get("new_mentions", 0))
    return _member_outcome(store.record_member(message_data["message_id"], succeeded=True, new_items=new))


@dramatiq.actor(queue_name=QUEUE, actor_name="collection_source_failed", max_retries=5, min_backoff=500)
def source_failed(message_data: dict, failure: dict) -> dict[str, Any]:
    """Callback of a run's source job that ended failed or dead: its reason goes on the run."""
    reason = f"{failure.get('type', 'Error')}: {failure.get('message', '')}".strip()
    return _member_outcome(store.record_member(message_data["message_id"], succeeded=False, error=reason[:2000]))


@dramatiq.actor(queue_name=QUEUE, max_retries=1)
def collect_and_process(name: str) -> dict[str, Any]:
    """One source, then its items' phrases, then the trends: a pipeline of three jobs."""
    _source(name)  # an unknown source fails here, not three jobs later
    parent_id = _current_message_id()
    extra: dict[str, Any] = {"parent_id": parent_id} if parent_id else {}
    messages = [
        collect_from_source.message_with_options(args=(name,), **extra),
        process_pending_items.message_with_options(pipe_ignore=True, **extra),
        score_trends.message_with_options(pipe_ignore=True, **extra),
    ]
    dramatiq.pipeline(messages).run()
    return {"source": name, "messages": [m.message_id for m in messages]}


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=5_000, periodic=cron("*/30 * * * *"))
def process_pending_items(limit: int = 1000) -> dict[str, Any]:
    """Key phrases of up to ``limit`` unprocessed mentions (oldest first), stored as phrase mentions."""
    from processing.phrases import key_phrases

    if not 1 <= limit <= 1_000_000:
        raise InvalidArgument(f"limit must be between 1 and 1000000, got {limit}")
    pending = store.pending_mentions(limit)
    cache: dict[int, list[str]] = {}
    processed = []
    for mention in pending:
        phrases = mention.phrases
        if phrases is None:
            phrases = cache.get(mention.item_id)
            if phrases is None:
                phrases = cache[mention.item_id] = key_phrases(mention.title, mention.summary)
        processed.append((mention, phrases))
    rows = store.store_processed(processed)
    return {"processed": len(processed), "items": len(cache), "phrase_mentions": rows}


def trend_params(hours: float) -> Any:
    from processing.trends import TrendParams

    return TrendParams(
        window_ms=settings.trend_window,
        lookback_hours=hours,
        z_threshold=settings.trend_z_threshold,
        min_mentions=settings.trend_min_mentions,
        hysteresis_runs=settings.trend_hysteresis_runs,
        gravity=settings.trend_gravity,
    )


@dramatiq.actor(queue_name=QUEUE, max_retries=2, min_backoff=5_000, periodic=cron("5,35 * * * *"))
def score_trends(hours: float = 24, now: float | None = None) -> dict[str, Any]:
    """Score every phrase over the last ``hours`` and store the trends with their states.

    ``now`` (Unix seconds) scores as of another moment (replays and tests); default: now.
    """
    from processing.trends import describe_trends, rank_trends

    if not 0 < hours <= 24 * 90:
        raise InvalidArgument(f"hours must be between 0 and 2160, got {hours}")
    moment = float(now) if now is not None else time.time()
    since, params = moment - hours * 3600, trend_params(hours)
    # Ranking reads phrase and time of every mention; items and sources only of the trends it keeps.
    mentions = store.load_mention_times(since)
    trends = rank_trends(mentions, now=moment, params=params, previous=store.trend_states())
    describe_trends(trends, store.load_mentions(since, [t.phrase for t in trends]), now=moment, params=params)
    store.replace_trends(trends)
    by_state: dict[str, int] = {}
    for trend in trends:
        by_state[trend.state] = by_state.get(trend.state, 0) + 1
    return {
        "mentions": len(mentions.ts),
        "trends": len(trends),
        "by_state": by_state,
        "top": [f"{t.phrase} ({t.state})" for t in trends[:5]],
    }


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=2 * 60_000)
def test_source(name: str) -> dict[str, Any]:
    """A dry run: fetch the source (unconditionally) and return sample items; stores nothing."""
    source, _ = _source(name)
    started = time.perf_counter()
    try:
        result = source.fetch({})
    except _NOT_THE_SOURCES_FAULT:
        raise
    except Exception as error:
        raise SourceFailed(f"source {name!r} failed: {_reason(error)}: {error}") from None
    return {
        "source": name,
        "kind": source.kind,
        "description": source.description,
        "items": len(result.items),
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "ttl_ms": result.ttl_ms,
        "max_age_ms": result.max_age_ms,
        "warnings": result.warnings,
        "sample": [
            {"title": i.title, "url": i.url, "published_at": i.published_at.isoformat() if i.published_at else None}
            for i in result.items[:SAMPLE_ITEMS]
        ],
    }


@dramatiq.actor(queue_name=QUEUE, max_retries=2, soft_time_limit=20 * 60_000, time_limit=25 * 60_000)
def generate_item_embeddings(limit: int = 512) -> dict[str, Any]:
    """Embed up to ``limit`` items (title and text) with the documents' sentence-embedding model."""
    from processing.embeddings import embed_array
    from storage.documents import vector_bytes

    todo = store.items_without_embedding(settings.embedding_model, limit)
    if not todo:
        return {"embedded": 0}
    vectors = embed_array(
        [text for _, text in todo], model_name=settings.embedding_model, batch_size=settings.embedding_batch_size
    )
    store.store_embeddings(
        settings.embedding_model, [(i, vector_bytes(v)) for (i, _), v in zip(todo, vectors, strict=True)]
    )
    return {"embedded": len(todo), "model": settings.embedding_model}


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("0 3 * * *"))
def cleanup_old_items(days: int | None = None) -> dict[str, Any]:
    """Delete items first seen more than ``days`` ago (``COLLECTION_RETENTION_DAYS``) with their mentions."""
    keep = settings.collection_retention_days if days is None else days
    if keep < 1:
        raise InvalidArgument(f"days must be at least 1, got {keep}")
    deleted = store.delete_items_before(store.utcnow() - timedelta(days=keep))
    return {"deleted_items": deleted, "days": keep}


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("*/5 * * * *"))
def update_source_health() -> dict[str, Any]:
    """Follow the configuration and report each source's health; warns about sources failing for 1 h."""
    sync_configuration()
    sources = store.list_sources()
    now = store.utcnow()
    unhealthy = [s for s in sources if s.status == "unhealthy"]
    long_failing = [s for s in unhealthy if s.failing_since and now - s.failing_since >= timedelta(hours=1)]
    for source in long_failing:
        logger.warning("Source %r has failed since %s: %s", source.name, source.failing_since, source.last_error)
    return {
        "sources": len(sources),
        "healthy": sum(1 for s in sources if s.status == "healthy"),
        "unhealthy": {s.name: s.last_error for s in unhealthy},
        "failing_for_an_hour": [s.name for s in long_failing],
        "disabled": {s.name: s.disabled_reason for s in sources if s.status == "disabled"},
    }


@dramatiq.actor(queue_name=QUEUE, max_retries=1)
def generate_analytics(hours: float = 24) -> dict[str, Any]:
    """Items, mentions per source and trends per state over the last ``hours``."""
    return store.analytics(hours)
