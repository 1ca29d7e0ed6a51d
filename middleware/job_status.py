"""The job table: one row per message, kept current by the middleware and written in batches."""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import CurrentMessage, Middleware
from sqlalchemy.exc import OperationalError

from middleware.cancel import JobCancelled, watcher_for
from middleware.events import ABANDONED_ATTRIBUTE, SKIP_REASON_ATTRIBUTE, Event, noted
from settings import settings
from storage.models import STATE_RANK, JobState

logger = logging.getLogger(__name__)

#: Columns a later write never blanks: the first value written stays.
_FILL_ONCE = ("actor", "queue", "args", "enqueued_at", "parent_id")
#: Columns that follow the newest write (highest seq).
_FOLLOW_NEWEST = (
    "state",
    "attempts",
    "error_type",
    "error_message",
    "traceback",
    "started_at",
    "finished_at",
    "result",
)
_COLUMNS = ("id", "seq", "progress", "progress_note", "updated_at", *_FILL_ONCE, *_FOLLOW_NEWEST)

#: Each attempt's outcome row, written to Redis in the round trip that acknowledges the message, so a
#: worker killed before its next flush loses no outcome; flushed rows are removed from it.
FINISHED_KEY = "dramatiq:__finished__"
#: Rows in FINISHED_KEY older than this (seconds) belong to a writer that died; any worker adopts them.
ORPHAN_AGE = 10.0
_TIME_COLUMNS = ("enqueued_at", "started_at", "finished_at", "updated_at")
OUTCOME_ATTRIBUTE = "_platform_outcome_row"

EVENT_STATE = {
    Event.ENQUEUED: JobState.QUEUED,
    Event.STARTED: JobState.RUNNING,
    Event.SUCCEEDED: JobState.SUCCEEDED,
    Event.RETRYING: JobState.RETRYING,
    Event.FAILED: JobState.FAILED,
    Event.DEAD: JobState.DEAD,
    Event.CANCELLED: JobState.CANCELLED,
    Event.SKIPPED: JobState.CANCELLED,
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def truncate(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def describe_arguments(args: Any, kwargs: Any) -> str:
    try:
        text = json.dumps({"args": args, "kwargs": kwargs}, default=str)
    except (TypeError, ValueError):
        text = repr((args, kwargs))
    return truncate(text, settings.job_args_max_chars) or ""


class JobWriter:
    """Buffers job rows in memory and upserts them in one statement per flush.

    Several processes write the same row (the producer its ``queued``, workers the attempts), and their
    batches land in any order; ``seq`` (attempt * 10 + state rank) decides which write a column follows,
    so a late ``queued`` never overwrites ``succeeded``.
    """

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self.pending: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.flushed = threading.Condition()
        self.thread: threading.Thread | None = None
        self.redis: Any = None
        self.last_adoption = 0.0

    def record(self, row: dict[str, Any]) -> None:
        with self.lock:
            current = self.pending.get(row["id"])
            if current is None:
                self.pending[row["id"]] = row
            else:
                _merge(current, row)
        if self.thread is None:
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="job-writer", daemon=True)
                    self.thread.start()
                    # A forked child (a worker process) starts its own writer on its first record.
                    os.register_at_fork(after_in_child=self._forget_thread)

    def _forget_thread(self) -> None:
        self.thread = None
        self.lock = threading.Lock()

    def _run(self) -> None:
        while True:
            self.wakeup.wait(self.interval)
            self.wakeup.clear()
            try:
                self.flush_pending()
                if self.redis is not None and time.monotonic() - self.last_adoption > ORPHAN_AGE:
                    self.last_adoption = time.monotonic()
                    adopt_orphans(self.redis)
            except Exception:
                logger.exception("Writing job rows failed; they are kept for the next flush.")
                time.sleep(1)

    def flush_pending(self) -> None:
        with self.lock:
            rows, self.pending = self.pending, {}
        if rows:
            try:
                self._write(list(rows.values()))
                durable = [row_id for row_id, row in rows.items() if row.get("durable")]
                if durable and self.redis is not None:
                    self.redis.hdel(FINISHED_KEY, *durable)
            except Exception:
                with self.lock:
                    for row_id, row in rows.items():
                        newer = self.pending.get(row_id)
                        if newer is not None:
                            _merge(row, newer)
                        self.pending[row_id] = row
                raise
        with self.flushed:
            self.flushed.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        """Write everything recorded so far (used by tests, the CLI and at exit)."""
        self.flush_pending()

    def _write(self, rows: list[dict[str, Any]]) -> None:
        from storage.db import get_engine, is_sqlite, migrate

        migrate()
        engine = get_engine()
        sqlite = is_sqlite(str(engine.url))
        params = []
        # In id order: several processes upsert overlapping rows, and PostgreSQL locks each row as it
        # goes, so one order for everybody is what keeps two writers from deadlocking.
        for row in sorted(rows, key=lambda row: row["id"]):
            values = [row.get(column) for column in _COLUMNS]
            for index in _TIME_INDEXES:
                if values[index] is not None:
                    values[index] = _db_time(values[index], sqlite)
            params.append(tuple(values))
        statement = _UPSERT_SQLITE if sqlite else _UPSERT_POSTGRES
        for attempt in (1, 2, 3):
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql(statement, params)  # type: ignore[arg-type]
                return
            except OperationalError as error:
                # A deadlock or serialization failure rolls the batch back whole: write it again.
                if attempt == 3 or "deadlock" not in str(error.orig).lower():
                    raise
                time.sleep(0.05 * attempt)


def _encode_row(row: dict[str, Any]) -> str:
    return json.dumps({key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()})


def _decode_row(text: bytes | str) -> dict[str, Any]:
    row = json.loads(text)
    for column in _TIME_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = datetime.fromisoformat(row[column])
    return dict(row)


def _timestamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def persist_with_ack(message: Any, pipe: Any) -> None:
    """Ack hook: store the attempt's outcome row in the same round trip as the acknowledgement."""
    row = noted(message, OUTCOME_ATTRIBUTE)
    if row is not None:
        pipe.hset(FINISHED_KEY, message.message_id, _encode_row(row))


def adopt_orphans(client: Any, min_age: float = ORPHAN_AGE) -> int:
    """Write outcome rows that a dead worker acknowledged but never flushed; returns how many."""
    cutoff = time.time() - min_age
    orphans = []
    for message_id, raw in client.hgetall(FINISHED_KEY).items():
        try:
            row = _decode_row(raw)
        except (ValueError, TypeError):
            client.hdel(FINISHED_KEY, message_id)
            continue
        updated = row.get("updated_at")
        if updated is None or _timestamp(updated) < cutoff:
            orphans.append((message_id, row))
    if orphans:
        writer._write([row for _, row in orphans])
        client.hdel(FINISHED_KEY, *[message_id for message_id, _ in orphans])
        logger.warning("Recorded %d job outcomes left by a worker that stopped before writing them.", len(orphans))
    return len(orphans)


def _db_time(value: Any, sqlite: bool) -> Any:
    """A row's time (epoch seconds, as the hooks record them, or a datetime) as the database takes it.

    Raw statements skip SQLAlchemy's type processing (the hot path of this writer), so for SQLite the
    time is written the way SQLAlchemy writes it there: naive UTC text.
    """
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else moment


def _upsert_sql(placeholder: str) -> str:
    """INSERT ... ON CONFLICT for SQLite and PostgreSQL alike; SET expressions read the old row."""
    newer = "excluded.seq >= jobs.seq"
    sets = [
        f"seq = CASE WHEN {newer} THEN excluded.seq ELSE jobs.seq END",
        "updated_at = excluded.updated_at",
        f"progress = CASE WHEN excluded.progress IS NULL THEN jobs.progress WHEN {newer} THEN excluded.progress "
        "ELSE jobs.progress END",
        f"progress_note = CASE WHEN {newer} THEN COALESCE(excluded.progress_note, jobs.progress_note) "
        "ELSE jobs.progress_note END",
    ]
    sets += [f"{column} = COALESCE(jobs.{column}, excluded.{column})" for column in _FILL_ONCE]
    for column in _FOLLOW_NEWEST:
        if column in _CLEARED_BY_NEW_ATTEMPT:
            # A new attempt clears what the previous one left (its error, its finish time).
            sets.append(
                f"{column} = CASE WHEN excluded.seq > jobs.seq + 5 THEN excluded.{column} "
                f"WHEN {newer} THEN COALESCE(excluded.{column}, jobs.{column}) ELSE jobs.{column} END"
            )
        else:
            sets.append(
                f"{column} = CASE WHEN {newer} THEN COALESCE(excluded.{column}, jobs.{column}) ELSE jobs.{column} END"
            )
    values = ", ".join(placeholder for _ in _COLUMNS)
    return (
        f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({values}) ON CONFLICT (id) DO UPDATE SET {', '.join(sets)}"
    )


_CLEARED_BY_NEW_ATTEMPT = ("error_type", "error_message", "traceback", "finished_at", "result")
_UPSERT_SQLITE = _upsert_sql("?")
_UPSERT_POSTGRES = _upsert_sql("%s")
_TIME_INDEXES = tuple(_COLUMNS.index(column) for column in _TIME_COLUMNS)


def _merge(current: dict[str, Any], newer: dict[str, Any]) -> None:
    """Fold a later write of the same row into a pending one."""
    if newer.get("durable"):
        current["durable"] = True
    for column in _FILL_ONCE:
        if current.get(column) is None:
            current[column] = newer.get(column)
    if newer.get("seq", 0) >= current.get("seq", 0):
        if newer["seq"] > current.get("seq", 0) + 5:
            for column in _CLEARED_BY_NEW_ATTEMPT:
                current[column] = None
        for column in (*_FOLLOW_NEWEST, "seq", "progress", "progress_note", "updated_at"):
            value = newer.get(column)
            if value is not None:
                current[column] = value


writer = JobWriter(interval=settings.job_flush_interval / 1000)
atexit.register(lambda: writer.flush_pending())


_RUNNING_RANK = STATE_RANK[JobState.RUNNING]


def _seq(attempt: int, state: JobState) -> int:
    return attempt * 10 + STATE_RANK[state]


def flush() -> None:
    """Write every pending job row now."""
    writer.flush()


def report_progress(percent: float, note: str | None = None) -> None:
    """Record the running job's progress (0–100) and stop it if it was cancelled.

    Call it from an actor at natural check points (per page, per segment). Outside a worker it does
    nothing, so processing code stays callable from a notebook.
    """
    message = CurrentMessage.get_current_message()
    if message is None:
        return
    import dramatiq

    from broker import redis_client_for

    client = redis_client_for(dramatiq.get_broker())
    if client is not None and watcher_for(client).is_cancelled(message.message_id):
        raise JobCancelled(f"job {message.message_id} was cancelled")
    attempt = int(message.options.get("retries", 0)) + 1
    writer.record(
        {
            "id": message.message_id,
            "seq": _seq(attempt, JobState.RUNNING),
            "progress": max(0.0, min(100.0, float(percent))),
            "progress_note": truncate(note, 500),
            "updated_at": utcnow(),
        }
    )


def summarize_result(result: Any) -> str | None:
    if result is None:
        return None
    try:
        return truncate(json.dumps(result, default=str), 4000)
    except (TypeError, ValueError):
        return truncate(repr(result), 4000)


class JobStatus(Middleware):
    """Keep one row per message in the job table: state, attempts, error, times, progress, result.

    States move ``queued → running → retrying → succeeded | failed | dead | cancelled``. Rows are written
    by a background thread every ``JOB_FLUSH_INTERVAL_MS``, so a reader may see a state that is that much
    behind; ``flush()`` writes at once.

    Message options:
      parent_id(str): the run this job belongs to (a pipeline's or a group's first message id).
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    @property
    def actor_options(self) -> set[str]:
        return {"parent_id"}

    def after_process_boot(self, broker: Broker) -> None:
        from storage.db import migrate

        migrate()

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        from broker import redis_client_for

        hooks = getattr(broker, "ack_hooks", None)
        client = redis_client_for(broker)
        if hooks is None or client is None:
            return
        if persist_with_ack not in hooks:
            hooks.append(persist_with_ack)
        writer.redis = client
        adopt_orphans(client)

    def before_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        # Redeliveries from the delay queue and retries are the same job: no new "queued" row.
        if "retries" in message.options or message.options.get("queued_recorded"):
            return
        message.options["queued_recorded"] = True
        writer.record(
            {
                "id": message.message_id,
                "seq": _seq(1, JobState.QUEUED),
                "state": JobState.QUEUED.value,
                "actor": message.actor_name,
                "queue": message.queue_name.removesuffix(".DQ"),
                "args": describe_arguments(message.args, message.kwargs),
                "enqueued_at": message.message_timestamp / 1000,
                "parent_id": message.options.get("parent_id"),
                "attempts": 0,
                "updated_at": time.time(),
            }
        )

    def before_process_message(self, broker: Broker, message: Any) -> None:
        attempt = message.options.get("retries", 0) + 1
        now = time.time()
        # Times are epoch seconds here and become datetimes in the writer thread, off the hot path.
        writer.record(
            {
                "id": message.message_id,
                "seq": attempt * 10 + _RUNNING_RANK,
                "state": "running",
                "actor": message.actor_name,
                "queue": message.queue_name,
                "enqueued_at": message.message_timestamp / 1000,
                "parent_id": message.options.get("parent_id"),
                "attempts": attempt,
                "started_at": now,
                "progress": 0.0,
                "updated_at": now,
            }
        )

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if noted(message, ABANDONED_ATTRIBUTE):
            return
        from middleware.retries import decide

        decision = decide(broker, message, exception)
        state = EVENT_STATE[decision.event]
        now = time.time()
        row: dict[str, Any] = {
            "id": message.message_id,
            "seq": _seq(decision.attempt, state),
            "state": state.value,
            "actor": message.actor_name,
            "queue": message.queue_name,
            "attempts": decision.attempt,
            "updated_at": now,
        }
        if state is not JobState.RETRYING:
            row["finished_at"] = now
        if exception is None:
            row["progress"] = 100.0
            row["result"] = summarize_result(result)
        else:
            row["error_type"] = type(exception).__name__
            row["error_message"] = truncate(str(exception) or type(exception).__name__, 4000)
            row["traceback"] = truncate(
                "".join(traceback.format_exception(type(exception), exception, exception.__traceback__, limit=30)),
                20_000,
            )
        self._record_outcome(message, row)

    @staticmethod
    def _record_outcome(message: Any, row: dict[str, Any]) -> None:
        row["durable"] = True
        setattr(message, OUTCOME_ATTRIBUTE, row)
        writer.record(row)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        reason = noted(message, SKIP_REASON_ATTRIBUTE)
        if reason not in (Event.CANCELLED, Event.SKIPPED):
            return
        attempt = int(message.options.get("retries", 0)) + 1
        now = time.time()
        self._record_outcome(
            message,
            {
                "id": message.message_id,
                "seq": _seq(attempt, JobState.CANCELLED),
                "state": JobState.CANCELLED.value,
                "actor": message.actor_name,
                "queue": message.queue_name,
                "error_type": "Cancelled" if reason is Event.CANCELLED else "Skipped",
                "error_message": (
                    "cancelled before it ran" if reason is Event.CANCELLED else "skipped: past its schedule grace"
                ),
                "finished_at": now,
                "updated_at": now,
            },
        )
