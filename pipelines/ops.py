"""What an operator does to the platform, for the CLI and the HTTP API alike.

Submitting with the arguments checked up front, listing jobs page by page, queue depths, live workers,
dead letters (list, replay, purge), retrying a failed job, and the schedules. Every function returns plain
data (dicts, dataclasses, ids); errors a caller reports as one line are ``OpsError`` subclasses.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
from dramatiq import Message

from middleware.job_status import argument_names
from processing.redaction import MASK, mask_arguments
from settings import QUEUES, settings
from storage.models import Job, JobState

#: The most a delayed submit may wait (ms): a week, like the dead-letter retention.
MAX_DELAY_MS = 7 * 24 * 3600 * 1000
#: Options a caller may set on a submitted message.
SUBMIT_OPTIONS = ("urgent", "delay")
MAX_PAGE = 500
_checker: Any = None


class OpsError(Exception):
    """An error reported as one line (the CLI's stderr, the API's ``detail``)."""


class BadRequest(OpsError, ValueError):
    """The request itself is wrong: unknown actor or queue, arguments that do not fit, a bad cursor."""


class UnknownJob(OpsError, LookupError):
    """No job (or dead letter) with that id."""


class Conflict(OpsError):
    """The job exists but is in no state for this action (retrying a job that succeeded)."""


# -- submitting ----------------------------------------------------------------------------------------


def get_actor(name: str) -> Any:
    broker = dramatiq.get_broker()
    try:
        return broker.get_actor(name)
    except dramatiq.errors.ActorNotFound:
        known = ", ".join(sorted(broker.get_declared_actors()))
        raise BadRequest(f"unknown actor {name!r}; known actors: {known}") from None


def check_arguments(actor: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    """The arguments middleware's own check, run before sending so a bad call enqueues nothing."""
    from middleware.arguments import ArgumentMismatch, ArgumentTypes

    global _checker
    if _checker is None:
        _checker = ArgumentTypes()
    try:
        _checker.check(actor, args, kwargs)
    except ArgumentMismatch as error:
        raise BadRequest(str(error)) from None


def submit(
    actor_name: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> str:
    """Send one message after checking actor, arguments and options; returns the job id."""
    from pipelines import send_urgent

    actor = get_actor(actor_name)
    args, kwargs, options = list(args or []), dict(kwargs or {}), dict(options or {})
    unknown = sorted(set(options) - set(SUBMIT_OPTIONS))
    if unknown:
        raise BadRequest(f"unknown option {unknown[0]!r}; options: {', '.join(SUBMIT_OPTIONS)}")
    urgent = options.get("urgent", False)
    if not isinstance(urgent, bool):
        raise BadRequest("option 'urgent' must be true or false")
    delay = options.get("delay")
    if delay is not None and (not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= MAX_DELAY_MS):
        raise BadRequest(f"option 'delay' must be milliseconds from 0 to {MAX_DELAY_MS}")
    if urgent and delay:
        raise BadRequest("an urgent message cannot be delayed")
    check_arguments(actor, args, kwargs)
    if urgent:
        return str(send_urgent(actor, *args, **kwargs).message_id)
    return str(actor.send_with_options(args=tuple(args), kwargs=kwargs, delay=delay).message_id)


def parse_since(text: str) -> datetime:
    """``30m``, ``2h``, ``7d`` ago, or an ISO date/time (UTC unless it says otherwise)."""
    import re

    match = re.fullmatch(r"(\d{1,6})\s*([smhd])", text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"since must look like 30m, 2h, 7d or an ISO date, got {text[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- the job table ---------------------------------------------------------------------------------------


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes back; every time in the job table is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def job_dict(job: Job) -> dict[str, Any]:
    """A job row as JSON-ready data."""

    def iso(moment: datetime | None) -> str | None:
        aware = _aware(moment)
        return aware.isoformat() if aware else None

    return {
        "id": job.id,
        "actor": job.actor,
        "queue": job.queue,
        "state": job.state,
        "attempts": job.attempts or 0,
        "progress": job.progress or 0.0,
        "progress_note": job.progress_note,
        "args": job.args,
        "result": job.result,
        "error_type": job.error_type,
        "error_message": job.error_message,
        "traceback": job.traceback,
        "parent_id": job.parent_id,
        "enqueued_at": iso(job.enqueued_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "updated_at": iso(job.updated_at),
        "cancel_requested_at": iso(job.cancel_requested_at),
    }


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    #: Pass back as ``after`` for the next page; None on the last page.
    next_cursor: str | None


def _encode_cursor(job: Job) -> str:
    moment = _aware(job.enqueued_at)
    assert moment is not None
    raw = f"{moment.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment_text, job_id = raw.split("|", 1)
        moment = datetime.fromisoformat(moment_text)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this API returned") from None
    if moment.tzinfo is None:
        raise BadRequest("cursor is not one this API returned")
    return moment, job_id


def list_jobs(
    *,
    state: str | None = None,
    actor: str | None = None,
    queue: str | None = None,
    parent: str | None = None,
    since: datetime | None = None,
    after: str | None = None,
    limit: int = 50,
) -> JobPage:
    """Jobs newest first, filtered; keyset pagination on (enqueued_at, id), so page 1,000 costs what
    page 1 does. Rows that have no enqueue time yet (a write still on its way) are left out."""
    from sqlalchemy import select, tuple_

    from middleware.job_status import flush
    from storage.db import is_sqlite, read_scope

    if state and state not in {member.value for member in JobState}:
        raise BadRequest(f"state must be one of {', '.join(member.value for member in JobState)}")
    if queue and queue not in QUEUES:
        raise BadRequest(f"unknown queue {queue!r}; queues: {', '.join(QUEUES)}")
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be from 1 to {MAX_PAGE}")
    query = select(Job).where(Job.enqueued_at.is_not(None))
    for column, value in ((Job.state, state), (Job.actor, actor), (Job.queue, queue), (Job.parent_id, parent)):
        if value:
            query = query.where(column == value)
    sqlite = is_sqlite()

    def bound(moment: datetime) -> datetime:
        # SQLite stores naive UTC text; compare like with like.
        return moment.astimezone(UTC).replace(tzinfo=None) if sqlite else moment

    if since:
        query = query.where(Job.enqueued_at >= bound(since if since.tzinfo else since.replace(tzinfo=UTC)))
    if after:
        moment, job_id = _decode_cursor(after)
        query = query.where(tuple_(Job.enqueued_at, Job.id) < tuple_(bound(moment), job_id))
    query = query.order_by(Job.enqueued_at.desc(), Job.id.desc()).limit(limit + 1)
    flush()
    with read_scope() as session:
        rows = list(session.scalars(query).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(rows, _encode_cursor(rows[-1]) if more and rows else None)


def get_job(job_id: str) -> Job:
    from pipelines import job_status

    job = job_status(job_id)
    if job is None:
        raise UnknownJob(f"no job with id {job_id!r}")
    return job


def failed_attempts(job: Job) -> list[dict[str, Any]]:
    """Each failed attempt of the job, first to last, with its error and traceback (the job row keeps only
    the latest). A job with one attempt and no error has none, and costs no query."""
    from storage.jobs import attempts_of

    if (job.attempts or 0) < 2 and not job.error_type:
        return []
    found = []
    for attempt in attempts_of(job.id):
        finished = _aware(attempt.finished_at)
        found.append(
            {
                "attempt": attempt.attempt,
                "state": attempt.state,
                "error_type": attempt.error_type,
                "error_message": attempt.error_message,
                "traceback": attempt.traceback,
                "finished_at": finished.isoformat() if finished else None,
            }
        )
    return found


def job_with_tree(job_id: str, *, depth: int = 3, limit: int = 200) -> tuple[Job, list[dict[str, Any]]]:
    """The job and the jobs it started (``parent_id`` = its id), each with its own children, ``depth``
    levels; one session, one query per level."""
    from sqlalchemy import or_, select

    from middleware.job_status import flush
    from storage.db import read_scope

    flush()
    with read_scope() as session:
        # The job and its children in one query: a read of a job that started nothing is one round trip.
        first = session.scalars(
            select(Job)
            .where(or_(Job.id == job_id, Job.parent_id == job_id))
            .order_by(Job.enqueued_at, Job.id)
            .limit(limit + 1)
        ).all()
        # A job with more than ``limit`` children may sort after them: then read it on its own.
        job = next((row for row in first if row.id == job_id), None) or session.get(Job, job_id)
        if job is None:
            raise UnknownJob(f"no job with id {job_id!r}")
        seen = {job_id}
        nodes: dict[str, dict[str, Any]] = {job_id: {"children": []}}
        parents = [job_id]
        for level in range(depth):
            if level == 0:
                rows: Any = [row for row in first if row.id != job_id]
            else:
                query = select(Job).where(Job.parent_id.in_(parents)).order_by(Job.enqueued_at, Job.id).limit(limit)
                rows = session.scalars(query)
            parents = []
            for row in rows:
                if row.id in seen or row.parent_id not in nodes:
                    continue
                seen.add(row.id)
                node = nodes[row.id] = {**job_dict(row), "children": []}
                nodes[row.parent_id]["children"].append(node)
                parents.append(row.id)
            if not parents:
                break
        return job, nodes[job_id]["children"]


def job_tree(job_id: str, *, depth: int = 3, limit: int = 200) -> list[dict[str, Any]]:
    """The jobs a run started, as ``job_with_tree`` gives them."""
    return job_with_tree(job_id, depth=depth, limit=limit)[1]


def cancel(job_id: str) -> str:
    """``cancelled``, ``cancelling``, or the state the job already ended in."""
    from pipelines import cancel as cancel_job

    try:
        return cancel_job(job_id)
    except LookupError as error:
        raise UnknownJob(str(error)) from None


def retry(job_id: str) -> str:
    """Send a failed or dead job again as a new job whose ``parent_id`` is the original; returns its id.

    A dead job's message is taken out of the dead-letter queue (its arguments are exact there); a failed
    job is rebuilt from the arguments kept in its row.
    """
    job = get_job(job_id)
    if job.state not in (JobState.FAILED.value, JobState.DEAD.value):
        raise Conflict(f"job {job_id} is {job.state}: only failed or dead jobs are retried")
    if job.state == JobState.DEAD.value and job.queue:
        replayed = replay_dead_letters([job_id], queue=job.queue if job.queue in QUEUES else None)
        if replayed:
            return replayed[0][1]
    try:
        kept = json.loads(job.args or "")
        args, kwargs = list(kept["args"]), dict(kept["kwargs"])
    except (ValueError, KeyError, TypeError):
        raise Conflict(f"job {job_id}'s arguments were too long to keep: send it again with its arguments") from None
    if MASK in (job.args or ""):
        raise Conflict(f"job {job_id}'s row does not keep its secret arguments: send it again with its arguments")
    actor = get_actor(job.actor or "")
    message = actor.message_with_options(args=tuple(args), kwargs=kwargs, parent_id=job_id)
    return str(dramatiq.get_broker().enqueue(message).message_id)


# -- queues, workers, dead letters -------------------------------------------------------------------


def _redis() -> Any:
    from broker import redis_client_for

    client = redis_client_for(dramatiq.get_broker())
    if client is None:
        raise OpsError("this needs Redis; set REDIS_URL")
    return client


def queue_names(queue: str | None = None) -> list[str]:
    if queue and queue not in QUEUES:
        raise BadRequest(f"unknown queue {queue!r}; queues: {', '.join(QUEUES)}")
    return [queue] if queue else list(QUEUES)


def _message_age_ms(data: bytes | None, now_ms: float) -> float | None:
    if data is None:
        return None
    try:
        return max(0.0, now_ms - Message.decode(data).message_timestamp)
    except Exception:
        return None


def queue_stats() -> list[dict[str, Any]]:
    """Per queue: ready, delayed and dead messages, and the age of the oldest ready one (ms)."""
    broker = dramatiq.get_broker()
    now_ms = time.time() * 1000
    if hasattr(broker, "get_queue_message_counts"):
        rows = []
        for queue in QUEUES:
            ready, delayed, dead = broker.get_queue_message_counts(queue)
            rows.append({"queue": queue, "ready": ready, "delayed": delayed, "dead": dead, "oldest_ms": None})
        return rows
    client = _redis()
    # Two round trips for every queue together: counts and the ids at both ends of each ready list
    # (consumers take from the head; an urgent push may land at either end), then those messages.
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(f"dramatiq:{queue}")
        pipe.hlen(f"dramatiq:{queue}.DQ.msgs")
        pipe.zcard(f"dramatiq:{queue}.XQ")
        pipe.lindex(f"dramatiq:{queue}", 0)
        pipe.lindex(f"dramatiq:{queue}", -1)
    answers = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for index, queue in enumerate(QUEUES):
        for redis_id in answers[5 * index + 3 : 5 * index + 5]:
            pipe.hget(f"dramatiq:{queue}.msgs", redis_id or b"")
    messages = pipe.execute()
    rows = []
    for index, queue in enumerate(QUEUES):
        ready, delayed, dead = answers[5 * index : 5 * index + 3]
        ages = [_message_age_ms(data, now_ms) for data in messages[2 * index : 2 * index + 2]]
        known = [age for age in ages if age is not None]
        rows.append(
            {
                "queue": queue,
                "ready": ready,
                "delayed": delayed,
                "dead": dead,
                "oldest_ms": max(known) if known else None,
            }
        )
    return rows


def workers(*, include_gone: bool = False) -> list[dict[str, Any]]:
    """Worker processes from their heartbeats: host, pid, queues, heartbeat age (ms), alive."""
    from broker import workers_key

    client = _redis()
    now = time.time() * 1000
    rows = []
    for _, raw in sorted(client.hgetall(workers_key()).items()):
        info = json.loads(raw)
        age = now - info["seen"]
        alive = age < settings.heartbeat_timeout
        if alive or include_gone:
            rows.append(
                {"host": info["host"], "pid": info["pid"], "queues": info["queues"], "age_ms": age, "alive": alive}
            )
    return rows


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    redis_id: str
    dead_since: datetime
    message: Message[Any] | None

    def shown_arguments(self) -> tuple[list[Any], dict[str, Any]] | None:
        """The message's arguments with its secrets masked (the message itself keeps them for a replay)."""
        message = self.message
        if message is None:
            return None
        names = argument_names(dramatiq.get_broker(), message.actor_name)
        return mask_arguments(list(message.args), dict(message.kwargs), *names)

    def as_dict(self) -> dict[str, Any]:
        message = self.message
        shown = self.shown_arguments()
        return {
            "queue": self.queue,
            "message_id": message.message_id if message else None,
            "actor": message.actor_name if message else None,
            "args": shown[0] if shown else None,
            "kwargs": shown[1] if shown else None,
            "dead_since": self.dead_since.isoformat(),
            "undecodable": message is None,
        }


def dead_letters(queue: str | None = None) -> list[DeadLetter]:
    client = _redis()
    entries = []
    for name in queue_names(queue):
        for redis_id, score in client.zrange(f"dramatiq:{name}.XQ", 0, -1, withscores=True):
            data = client.hget(f"dramatiq:{name}.XQ.msgs", redis_id)
            try:
                message = Message.decode(data) if data is not None else None
            except Exception:
                message = None
            entries.append(DeadLetter(name, redis_id.decode(), datetime.fromtimestamp(score / 1000, UTC), message))
    return entries


def replay_dead_letters(ids: list[str] | None = None, *, queue: str | None = None) -> list[tuple[str, str]]:
    """Send dead letters again (all, or those with these message ids) as fresh jobs whose parent is the
    dead one, with a full set of retries; returns (dead id, new id) pairs."""
    broker = dramatiq.get_broker()
    client = _redis()
    wanted = set(ids or [])
    replayed = []
    for entry in dead_letters(queue):
        message = entry.message
        if message is None or (wanted and message.message_id not in wanted):
            continue
        fresh: Message[Any] = Message(
            queue_name=message.queue_name,
            actor_name=message.actor_name,
            args=message.args,
            kwargs=message.kwargs,
            options={"parent_id": message.message_id},
        )
        broker.enqueue(fresh)
        client.zrem(f"dramatiq:{entry.queue}.XQ", entry.redis_id)
        client.hdel(f"dramatiq:{entry.queue}.XQ.msgs", entry.redis_id)
        replayed.append((message.message_id, fresh.message_id))
    return replayed


def purge_dead_letters(queue: str | None = None) -> int:
    client = _redis()
    removed = 0
    for name in queue_names(queue):
        removed += client.zcard(f"dramatiq:{name}.XQ")
        client.delete(f"dramatiq:{name}.XQ", f"dramatiq:{name}.XQ.msgs")
    return int(removed)


# -- overview and schedules --------------------------------------------------------------------------


def recent_counts(*, minutes: int = 60) -> dict[str, int]:
    """Jobs enqueued in the last ``minutes`` by state."""
    from storage.jobs import count_by_state

    totals: dict[str, int] = {}
    for (_, state), count in count_by_state(since=datetime.now(UTC) - timedelta(minutes=minutes)).items():
        totals[state] = totals.get(state, 0) + count
    return totals


def schedules() -> list[dict[str, Any]]:
    """Every periodic actor: cron, timezone, enabled, next fire, and the last tick handled with its
    outcome (``fired``, ``misfired`` (late, after downtime), ``beyond_grace``, ``disabled``), and how many
    ticks were sent late in all (``misfires``)."""
    from scheduler import load_state, schedules_from_actors

    now = datetime.now(UTC)
    state = load_state()
    rows = []
    for schedule in schedules_from_actors(dramatiq.get_broker().actors.values()):
        record = state.get(schedule.actor_name)
        upcoming = schedule.trigger.get_next_fire_time(None, now) if schedule.enabled else None
        rows.append(
            {
                "actor": schedule.actor_name,
                "queue": schedule.queue_name,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "enabled": schedule.enabled,
                "grace_ms": schedule.grace_ms,
                "next_fire_at": upcoming.isoformat() if upcoming else None,
                "last_fire_at": record.last_fire_at.isoformat() if record and record.last_fire_at else None,
                "last_outcome": record.last_outcome if record else None,
                "misfired": bool(record and record.last_outcome == "misfired"),
                "misfires": record.misfires if record else 0,
            }
        )
    return rows
