"""Keeping the platform healthy: cache cleanup, stuck jobs, old rows, health, backups, queue watch."""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from periodiq import cron
from sqlalchemy import delete, text

from broker import queue_depths, redis_client_for
from processing import housekeeping
from settings import QUEUES, settings
from storage.db import is_sqlite, session_scope
from storage.jobs import count_by_state, mark_stuck, prune_finished, running_since_before
from storage.models import HealthCheck

logger = logging.getLogger(__name__)

QUEUE = "maintenance"


def _now() -> datetime:
    return datetime.now(UTC)


#: Cache folders (under ``CACHE_DIR``) pruned by an actor on their own queue, in the worker that writes
#: them: a worker only sees its own cache (a container's volume, a machine's disk).
CACHES_PRUNED_ELSEWHERE = {"media": "cleanup_media_cache"}


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("30 2 * * *"))
def cleanup_cache(days: float | None = None) -> dict[str, Any]:
    """Delete cache files older than ``days`` (default ``CACHE_RETENTION_DAYS``) in this worker's cache.

    The media download cache is left to ``cleanup_media_cache``, which runs in the media workers.
    """
    removed = housekeeping.delete_files_older_than(
        settings.cache_dir, days or settings.cache_retention_days, skip=tuple(CACHES_PRUNED_ELSEWHERE)
    )
    if removed.skipped:
        logger.warning("Cache cleanup could not remove %d entries under %s.", removed.skipped, settings.cache_dir)
    return {"files": removed.files, "bytes": removed.bytes, "skipped": removed.skipped}


@dramatiq.actor(queue_name=QUEUE, max_retries=0, periodic=cron("0 * * * *"))
def reap_stuck_jobs() -> dict[str, Any]:
    """Fail jobs left ``running`` past their hard limit, and send them again while retries remain.

    A worker that died mid-job has its message redelivered by the broker within seconds, so what is
    left ``running`` this long lost its final status write; running it again is the at-least-once promise.
    A job whose message still exists (ready in a queue, delayed, or held by a live worker) is left
    alone: that message will run or is running, and sending another would run the job twice.
    """
    broker = dramatiq.get_broker()
    now = _now()
    margin = timedelta(milliseconds=settings.heartbeat_timeout * 2)
    shortest_cutoff = now - timedelta(milliseconds=1000) - margin
    stuck: list[tuple[Any, Any]] = []
    for job in running_since_before(shortest_cutoff):
        if job.started_at is None:
            continue
        actor: Any = None
        try:
            actor = broker.get_actor(job.actor or "")
        except dramatiq.errors.ActorNotFound:
            pass
        hard_limit = (actor.options.get("time_limit") if actor else None) or settings.hard_time_limit
        started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
        if started <= now - timedelta(milliseconds=hard_limit) - margin:
            stuck.append((job, actor))
    held = messages_in_broker(broker, {job.id for job, _ in stuck}) if stuck else set()
    reaped, resent, left = [], [], sorted(held)
    for job, actor in stuck:
        if job.id in held:
            continue
        if not mark_stuck(job.id, seq=job.seq, now=now, message="still running past its hard time limit"):
            continue
        reaped.append(job.id)
        max_retries = actor.options.get("max_retries") if actor else None
        max_retries = settings.max_retries if max_retries is None else max_retries
        arguments = _arguments(job.args)
        attempts = job.attempts or 0
        if actor is not None and arguments is not None and attempts <= max_retries:
            message: Message[Any] = Message(
                queue_name=actor.queue_name,
                actor_name=actor.actor_name,
                args=tuple(arguments["args"]),
                kwargs=arguments["kwargs"],
                options={"retries": attempts},
                message_id=job.id,
            )
            broker.enqueue(message)
            resent.append(job.id)
    if left:
        logger.info("Left %d long-running jobs alone: their messages are still in the broker: %s", len(left), left)
    if reaped:
        logger.warning("Reaped %d stuck jobs, sent %d again: %s", len(reaped), len(resent), reaped)
    return {"reaped": reaped, "resent": resent, "still_in_broker": left}


def messages_in_broker(broker: Any, job_ids: set[str]) -> set[str]:
    """Which of these jobs still have a message in the broker: ready, delayed, or held by a worker.

    The Redis broker keeps a message in its queue's ``.msgs`` hash from enqueue until acknowledgement,
    whichever worker holds it. A message moves between a queue and its delay queue by enqueueing the
    copy before acknowledging the original, so reading the delay queues, the queues, then the delay
    queues again sees a moving message at least once. With RabbitMQ, which cannot be read this way, every
    job counts as present: it is never sent twice, and a stuck row stays for an operator.
    """
    if not isinstance(broker, RedisBroker):
        return set(job_ids)
    client = broker.client
    wanted = {job_id.encode(): job_id for job_id in job_ids}
    found: set[str] = set()
    queues = sorted(name for name in broker.get_declared_queues() if not name.endswith((".DQ", ".XQ")))
    delayed = [f"{name}.DQ" for name in queues]
    for name in (*delayed, *queues, *delayed):
        for _, data in client.hscan_iter(f"{broker.namespace}:{name}.msgs", count=1000):
            # A cheap substring test first; the decode rules out an id quoted inside another message.
            hits = [raw for raw in wanted if raw in data]
            if not hits:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                message_id = json.loads(data)["message_id"]
                if message_id in job_ids:
                    found.add(message_id)
                    wanted.pop(message_id.encode(), None)
        if not wanted:
            break
    return found


def _arguments(stored: str | None) -> dict[str, Any] | None:
    """The arguments a job row recorded, unless they were truncated."""
    if not stored:
        return None
    try:
        value = json.loads(stored)
    except ValueError:
        return None
    return value if isinstance(value, dict) and {"args", "kwargs"} <= value.keys() else None


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("0 3 * * *"))
def prune_old_data(days: int | None = None) -> dict[str, Any]:
    """Delete finished jobs and health checks older than ``days`` (default ``JOB_RETENTION_DAYS``).

    Results in Redis expire on their own after ``RESULT_TTL_MS``.
    """
    keep = timedelta(days=days or settings.job_retention_days)
    now = _now()
    jobs = prune_finished(keep, now)
    with session_scope() as session:
        checks = session.execute(delete(HealthCheck).where(HealthCheck.checked_at < now - keep)).rowcount  # type: ignore[attr-defined]
    return {"jobs": jobs, "health_checks": int(checks)}


@dramatiq.actor(queue_name=QUEUE, max_retries=0, periodic=cron("*/5 * * * *"))
def health_check() -> dict[str, Any]:
    """Check the broker, the database and the disk; record the outcome."""
    details: dict[str, Any] = {}
    client = redis_client_for(dramatiq.get_broker())
    try:
        if client is not None:
            client.ping()
        details["broker"] = "ok"
    except Exception as error:
        details["broker"] = f"error: {error}"
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        details["database"] = "ok"
    except Exception as error:
        details["database"] = f"error: {error}"
    free = housekeeping.disk_free_fraction(settings.var_dir)
    details["disk_free"] = round(free, 4)
    healthy = details["broker"] == "ok" and details["database"] == "ok" and free > 0.05
    try:
        with session_scope() as session:
            session.add(HealthCheck(checked_at=_now(), healthy=int(healthy), details=json.dumps(details)))
    except Exception:
        logger.exception("Could not record the health check.")
    if not healthy:
        logger.error("Health check failed: %s", details)
    return {"healthy": healthy, **details}


@dramatiq.actor(queue_name=QUEUE, max_retries=0, periodic=cron("* * * * *"))
def monitor_queues() -> dict[str, Any]:
    """Read every queue's depth; warn about any past ``QUEUE_DEPTH_WARNING`` ready messages.

    The depths reach Prometheus at scrape time (``dramatiq_queue_messages``); this records them in the
    job's result and the log, where an operator without Prometheus sees them too.
    """
    depths = {
        queue: {"ready": ready, "delayed": delayed, "dead": dead}
        for queue, (ready, delayed, dead) in queue_depths(dramatiq.get_broker(), QUEUES).items()
    }
    backed_up = [queue for queue, depth in depths.items() if depth["ready"] > settings.queue_depth_warning]
    for queue in backed_up:
        logger.warning(
            "Queue %r is backing up: %d ready messages (warning at %d).",
            queue,
            depths[queue]["ready"],
            settings.queue_depth_warning,
        )
    return {"queues": depths, "backed_up": backed_up}


@dramatiq.actor(queue_name=QUEUE, max_retries=2, min_backoff=60_000, periodic=cron("15 1 * * *"))
def backup_database() -> dict[str, Any]:
    """Back the database up (SQLite's backup API, or pg_dump) and keep the newest ``BACKUPS_KEEP``."""
    url = settings.database_url
    if is_sqlite(url):
        database = url.split("///", 1)[-1]
        target = housekeeping.backup_sqlite(Path(database), settings.backups_dir)
        removed = housekeeping.rotate(
            settings.backups_dir, f"{target.stem.rsplit('-', 1)[0]}-*.db", settings.backups_keep
        )
    else:
        target = housekeeping.backup_postgres(url, settings.backups_dir)
        removed = housekeeping.rotate(settings.backups_dir, "postgres-*.dump", settings.backups_keep)
    return {"backup": str(target), "bytes": target.stat().st_size, "removed": [str(path) for path in removed]}


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("5 0 * * *"))
def daily_summary() -> dict[str, Any]:
    """Jobs of the last 24 hours by actor and outcome, logged and returned."""
    counts = count_by_state(since=_now() - timedelta(days=1))
    by_actor: dict[str, dict[str, int]] = {}
    for (actor, state), count in sorted(counts.items()):
        by_actor.setdefault(actor, {})[state] = count
    totals: dict[str, int] = {}
    for states in by_actor.values():
        for state, count in states.items():
            totals[state] = totals.get(state, 0) + count
    logger.info("Jobs in the last 24 hours: %s", totals)
    return {"totals": totals, "by_actor": by_actor}
