"""The job table: one row per message, kept current by the middleware and written in batches."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import multiprocessing.util
import os
import socket
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dramatiq.broker import Broker
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import CurrentMessage, Middleware
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from middleware.cancellations import watcher_for
from middleware.events import ABANDONED_ATTRIBUTE, SKIP_REASON_ATTRIBUTE, Event, noted
from middleware.interrupts import JobCancelled
from processing.redaction import mask_arguments, redact_text
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

#: Outcome rows waiting for SQL: each writer process keeps its own hash ``FINISHED_PREFIX.<writer id>``
#: (field ``<message id>/<seq>``), filled in the round trip that acknowledges a message and emptied as
#: its rows reach the table. A writer killed before writing leaves its hash for another worker to adopt.
FINISHED_PREFIX = "dramatiq:__finished__"


def job_table_tag(database_url: str) -> str:
    """A short name for the job table a URL points at (the same whatever the password or working dir).

    Workers of two deployments may share one Redis (staging beside production, two test sessions);
    a stopped writer's rows belong in its own table, so only writers of the same table see each other.
    """
    url = make_url(database_url)._replace(password=None)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).resolve()))
    identity = url.render_as_string(hide_password=False)
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


#: Writers that hold such a hash, scored by their last beat (epoch ms), one set per job table. A writer
#: silent for ``HEARTBEAT_TIMEOUT_MS`` has stopped; its rows are adopted.
WRITERS_KEY = f"dramatiq:__finished_writers__.{job_table_tag(settings.database_url)}"
#: A writer's hash outlives its last beat by this long (seconds) before Redis drops it: plenty of time for
#: a worker to adopt it, and a bound on what a writer that never comes back leaves in Redis.
OUTCOME_TTL = 7 * 24 * 3600
#: What a job row keeps of an attempt's error and result (characters); the Redis copy is the same row.
ERROR_MAX_CHARS = 2_000
TRACEBACK_MAX_CHARS = 8_000
RESULT_MAX_CHARS = 4_000
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


def truncate_head(text: str | None, limit: int) -> str | None:
    """Keep the end: a traceback's last frames and its exception line are what a reader needs."""
    if text is None or len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :]


def describe_arguments(args: Any, kwargs: Any, names: Sequence[str] = (), secret_args: Collection[str] = ()) -> str:
    """A job's arguments as its row shows them: secrets masked (``mask_arguments``, URL passwords), cut
    to ``JOB_ARGS_MAX_CHARS``. The message itself keeps them, so a replay still has them."""
    try:
        shown_args, shown_kwargs = mask_arguments(list(args or ()), dict(kwargs or {}), names, secret_args)
        text = json.dumps({"args": shown_args, "kwargs": shown_kwargs}, default=str)
    except (TypeError, ValueError):
        text = repr((args, kwargs))
    return truncate(redact_text(text), settings.job_args_max_chars) or ""


_ARGUMENT_NAMES: weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], tuple[str, ...]]] = weakref.WeakKeyDictionary()


def argument_names(broker: Broker, actor_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The parameter names of an actor's function and its ``secret_args`` (none for an unknown actor)."""
    try:
        actor = broker.get_actor(actor_name)
    except ActorNotFound:
        return (), ()
    known = _ARGUMENT_NAMES.get(actor)
    if known is None:
        try:
            names = tuple(inspect.signature(actor.fn).parameters)
        except (TypeError, ValueError):
            names = ()
        known = (names, tuple(actor.options.get("secret_args") or ()))
        _ARGUMENT_NAMES[actor] = known
    return known


class JobWriter:
    """Buffers job rows in memory and upserts them in one statement per flush.

    Several processes write the same row (the producer its ``queued``, workers the attempts), and their
    batches land in any order; ``seq`` (attempt * 10 + state rank) decides which write a column follows,
    so a late ``queued`` never overwrites ``succeeded``.

    An attempt's outcome is also in this writer's Redis hash from the moment its message is
    acknowledged (``persist_with_ack``) until it is in the table. While the database is unreachable
    those outcomes wait; at ``max_rows`` of them the worker takes no new message (``wait_for_room``), so
    what waits in memory and in Redis stays bounded however long the outage lasts, and the messages not
    taken wait in their queue.
    """

    def __init__(self, *, interval: float, max_rows: int, orphan_age: float) -> None:
        self.interval = interval
        self.max_rows = max_rows
        #: Seconds without a beat after which a writer has stopped (the broker's heartbeat timeout).
        self.orphan_age = orphan_age
        self.pending: dict[str, dict[str, Any]] = {}
        self.redis: Any = None
        #: Whether this process adopts stopped writers' rows (worker processes do).
        self.adopting = False
        self.stopping = False
        self.last_adoption = 0.0
        self._new_process()

    def _new_process(self) -> None:
        """State of one process: a forked child is a writer of its own, with its own hash and threads."""
        self.lock = threading.Lock()
        # Held for a whole flush, so a flush at shutdown waits for the one the thread has in flight
        # (a daemon thread dies mid-write when the process exits).
        self.write_lock = threading.Lock()
        self.room = threading.Condition()
        self.wakeup = threading.Event()
        self.thread: threading.Thread | None = None
        self.writer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.key = f"{FINISHED_PREFIX}.{self.writer_id}"
        #: Fields of this writer's hash whose rows are not in the table yet.
        self.waiting: set[str] = set()
        #: Fields written to the table whose removal from Redis failed; removed at the next flush.
        self.unremoved: list[str] = []
        self.beat_thread: threading.Thread | None = None
        self.beat_stop = threading.Event()
        self.last_registration = 0.0
        self.registration_lock = threading.Lock()
        self.failing_since: float | None = None
        self.dropped = 0

    def record(self, row: dict[str, Any]) -> None:
        with self.lock:
            current = self.pending.get(row["id"])
            if current is None:
                self.pending[row["id"]] = row
            else:
                _merge(current, row)
            if row.get("fields"):
                self.waiting.update(row["fields"])
        if self.thread is None:
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="job-writer", daemon=True)
                self.thread.start()

    # -- Redis: this writer's hash and its beat ----------------------------------------------------

    def persist(self, row: dict[str, Any], pipe: Any) -> None:
        """Add an outcome row to the pipeline that acknowledges its message."""
        registered = self._register()
        pipe.hset(self.key, row["fields"][0], _encode_row(row))
        if not registered:
            pipe.zadd(WRITERS_KEY, {self.writer_id: int(time.time() * 1000)})
        pipe.expire(self.key, OUTCOME_TTL)

    def _register(self) -> bool:
        """List this writer before any of its rows can reach its hash; False if Redis did not answer.

        Worker threads acknowledge concurrently. Were the listing only in the pipeline of the thread
        that found it due, the others' pipelines could run first, their messages be settled, and a kill
        before that pipeline ran would leave their rows in a hash no worker looks at: settled jobs whose
        rows stay ``running`` for good. So the listing is its own round trip, done (once every
        ``orphan_age / 5``) before this thread or any other adds a row.
        """
        if time.monotonic() - self.last_registration <= self.orphan_age / 5:
            return True
        with self.registration_lock:
            if time.monotonic() - self.last_registration <= self.orphan_age / 5:
                return True
            try:
                self.redis.zadd(WRITERS_KEY, {self.writer_id: int(time.time() * 1000)})
            except Exception as error:
                # The row's own round trip lists the writer then (and fails with it if Redis is down).
                logger.warning("Could not list this job writer in Redis: %r", error)
                return False
            self.last_registration = time.monotonic()
            self._ensure_beat()
            return True

    def _ensure_beat(self) -> None:
        if self.beat_thread is not None and self.beat_thread.is_alive() and not self.beat_stop.is_set():
            return
        # A fresh event per thread: one told to stop (retire) stays stopped while its successor runs.
        self.beat_stop = threading.Event()
        self.beat_thread = threading.Thread(
            target=self._beat, args=(self.beat_stop,), name="job-writer-beat", daemon=True
        )
        self.beat_thread.start()

    def _beat(self, stop: threading.Event) -> None:
        # Its own thread: a database write that hangs (a locked SQLite file waits 30 s) must not make a
        # live writer look stopped.
        while not stop.wait(self.orphan_age / 5):
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.zadd(WRITERS_KEY, {self.writer_id: int(time.time() * 1000)})
                pipe.expire(self.key, OUTCOME_TTL)
                pipe.execute()
            except Exception as error:
                logger.warning("Job writer beat failed: %r", error)

    def retire(self) -> None:
        """This process writes no more outcomes: stop beating, and leave the list of writers if every
        outcome is in the table (otherwise another worker adopts what is left once the beat is stale)."""
        self.beat_stop.set()
        self.last_registration = 0.0
        if self.redis is None or self.waiting:
            return
        try:
            if not self.redis.hlen(self.key):
                pipe = self.redis.pipeline(transaction=False)
                pipe.delete(self.key)
                pipe.zrem(WRITERS_KEY, self.writer_id)
                pipe.execute()
        except Exception as error:
            logger.warning("Could not leave the list of job writers: %r", error)

    # -- Writing ----------------------------------------------------------------------------------

    def wait_for_room(self) -> None:
        """Block while ``max_rows`` outcomes wait for the database (see the class doc)."""
        with self.room:
            if len(self.waiting) < self.max_rows or self.stopping:
                return
            logger.warning(
                "%d job outcomes are waiting for the database; taking no new message until they are written.",
                len(self.waiting),
            )
            while len(self.waiting) >= self.max_rows and not self.stopping:
                self.room.wait(1.0)

    def _run(self) -> None:
        delay = self.interval
        while True:
            self.wakeup.wait(delay)
            self.wakeup.clear()
            try:
                self.flush_pending()
                if self.adopting and self.redis is not None and time.monotonic() - self.last_adoption > self.orphan_age:
                    self.last_adoption = time.monotonic()
                    adopt_orphans(self.redis)
            except Exception as error:
                # Keep trying, less often, and say so once rather than every second of an outage.
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    logger.exception("Writing job rows failed; they are kept and written when it works again.")
                else:
                    logger.debug("Writing job rows still fails: %r", error)
                delay = min(max(delay * 2, 0.5), 5.0)
            else:
                if self.failing_since is not None:
                    logger.warning("Job rows are written again after %.0f s.", time.monotonic() - self.failing_since)
                    self.failing_since = None
                delay = self.interval

    def flush_pending(self) -> None:
        with self.write_lock:
            self._flush_pending()

    def _flush_pending(self) -> None:
        with self.lock:
            rows, self.pending = self.pending, {}
        if rows:
            try:
                self._write(list(rows.values()))
            except Exception:
                self._keep(rows)
                raise
            written = [field for row in rows.values() for field in row.get("fields", ())]
            self._forget(written)
        elif self.unremoved:
            self._forget([])

    def _keep(self, rows: dict[str, dict[str, Any]]) -> None:
        """Put rows that could not be written back, ahead of anything recorded meanwhile."""
        with self.lock:
            for row_id, row in rows.items():
                newer = self.pending.get(row_id)
                if newer is not None:
                    _merge(row, newer)
                self.pending[row_id] = row
            # Outcomes are bounded by wait_for_room; queued/running rows (a producer sending through an
            # outage) are not, so past max_rows of those the oldest go: the next write of the job
            # (its start, its outcome) brings its row back.
            excess = len(self.pending) - len(self.waiting) - self.max_rows
            if excess > 0:
                for row_id in [row_id for row_id, row in self.pending.items() if not row.get("fields")][:excess]:
                    del self.pending[row_id]
                self.dropped += excess
                logger.warning(
                    "The database is unreachable: dropped %d queued/running job rows held in memory.", excess
                )

    def _forget(self, written: list[str]) -> None:
        """Rows are in the table: take them out of this writer's Redis hash and make room."""
        if self.redis is not None:
            fields = self.unremoved + written
            try:
                for start in range(0, len(fields), 1000):
                    self.redis.hdel(self.key, *fields[start : start + 1000])
                self.unremoved = []
            except Exception as error:
                self.unremoved = fields
                logger.warning("Could not remove %d written outcomes from Redis: %r", len(fields), error)
        if written:
            with self.room:
                self.waiting.difference_update(written)
                self.room.notify_all()

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
        attempts = _attempt_params(rows, sqlite)
        for attempt in (1, 2, 3):
            try:
                with engine.begin() as connection:
                    if sqlite:
                        connection.exec_driver_sql(_UPSERT_SQLITE, params)  # type: ignore[arg-type]
                        if attempts:
                            connection.exec_driver_sql(_INSERT_ATTEMPT_SQLITE, attempts)  # type: ignore[arg-type]
                    else:
                        _upsert_postgres(connection, params)
                        if attempts:
                            _insert_attempts_postgres(connection, attempts)
                return
            except OperationalError as error:
                # A deadlock or serialization failure rolls the batch back whole: write it again.
                if attempt == 3 or "deadlock" not in str(error.orig).lower():
                    raise
                time.sleep(0.05 * attempt)


def _encode_row(row: dict[str, Any]) -> str:
    """The row as the table keeps it (its columns only), as JSON."""
    return json.dumps(
        {
            column: value.isoformat() if isinstance(value, datetime) else value
            for column in _COLUMNS
            if (value := row.get(column)) is not None
        }
    )


def _decode_row(text: bytes | str) -> dict[str, Any]:
    row = json.loads(text)
    for column in _TIME_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = datetime.fromisoformat(row[column])
    return dict(row)


def persist_with_ack(message: Any, pipe: Any) -> None:
    """Ack hook: store the attempt's outcome row in the same round trip as the acknowledgement."""
    row = noted(message, OUTCOME_ATTRIBUTE)
    if row is not None:
        writer.persist(row, pipe)


def outcome_waiting(client: Any, message_id: str) -> bool:
    """Whether an outcome of this job waits in Redis for the table (in any writer's hash)."""
    for raw_id in client.zrange(WRITERS_KEY, 0, -1):
        writer_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        key = f"{FINISHED_PREFIX}.{writer_id}"
        if any(True for _ in client.hscan_iter(key, match=f"{message_id}/*", count=1000)):
            return True
    return False


def adopt_orphans(client: Any) -> int:
    """Write the outcome rows of writers that stopped before writing them; returns how many.

    Only a writer whose beat is older than its orphan age counts as stopped, and only one worker claims
    each (a short lease), so a live worker's rows are never taken and none is written twice. Rows are
    read in batches, so adopting a long outage's rows needs no more memory than one batch.
    """
    cutoff = int((time.time() - writer.orphan_age) * 1000)
    total = 0
    for raw_id, beat in client.zrangebyscore(WRITERS_KEY, "-inf", cutoff, withscores=True):
        writer_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        if writer_id == writer.writer_id or _alive_here(writer_id, beat):
            continue
        claim = f"{FINISHED_PREFIX}.{writer_id}.claim"
        if not client.set(claim, writer.writer_id, nx=True, px=60_000):
            continue
        try:
            total += _adopt(client, writer_id, cutoff)
        finally:
            client.delete(claim)
    return total


#: A writer on this machine whose process still runs is slow, not stopped, until its beat is this many
#: orphan ages old (then the pid may be another process's: a reused one).
ALIVE_GRACE_FACTOR = 10


def _alive_here(writer_id: str, beat: float) -> bool:
    """Whether a silent writer is a process on this machine that still runs.

    A live worker's beat can go stale without it stopping: a C call that holds the GIL for seconds
    (loading a model, say) keeps its beat thread from running. Its rows are its own to write.
    """
    host, _, rest = writer_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if beat < (time.time() - writer.orphan_age * ALIVE_GRACE_FACTOR) * 1000:
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid_text}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")  # a killed process nobody reaped yet has stopped all the same


def _adopt(client: Any, writer_id: str, cutoff: int) -> int:
    beat = client.zscore(WRITERS_KEY, writer_id)
    if beat is not None and beat > cutoff:
        return 0  # it beat again since we looked: alive after all
    key = f"{FINISHED_PREFIX}.{writer_id}"
    count, cursor = 0, 0
    while True:
        cursor, batch = client.hscan(key, cursor, count=500)
        if batch:
            rows = []
            for raw in batch.values():
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    rows.append(_decode_row(raw))
            if rows:
                writer._write(rows)
            client.hdel(key, *batch.keys())
            count += len(rows)
        if not cursor:
            break
    if not client.hlen(key):
        pipe = client.pipeline(transaction=False)
        pipe.delete(key)
        pipe.zrem(WRITERS_KEY, writer_id)
        pipe.execute()
    if count:
        # Which worker, and how long ago: rows a previous run left (a demo stopped yesterday) read as such.
        silent = time.time() - beat / 1000 if beat is not None else None
        logger.warning(
            "Recorded %d job outcomes left by worker %s (silent for %s), which stopped before writing them.",
            count,
            writer_id,
            _age(silent) if silent is not None else "unknown time",
        )
    return count


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _failed_attempt(row: dict[str, Any]) -> tuple[Any, ...] | None:
    """The ``job_attempts`` values of a row that records a failed attempt; ``None`` for any other row."""
    if not row.get("error_type") or not row.get("attempts"):
        return None
    finished = row.get("finished_at") or row.get("updated_at")
    return (
        row["id"],
        row["attempts"],
        row.get("state"),
        row["error_type"],
        row.get("error_message"),
        row.get("traceback"),
        finished,
    )


def _attempt_params(rows: list[dict[str, Any]], sqlite: bool) -> list[tuple[Any, ...]]:
    """Every failed attempt the rows carry (their own, and those a merge replaced), for ``job_attempts``."""
    params = []
    for row in rows:
        for failed in (*row.get(_EARLIER_ATTEMPTS, ()), _failed_attempt(row)):
            if failed is not None:
                finished = failed[-1]
                params.append((*failed[:-1], None if finished is None else _db_time(finished, sqlite)))
    return params


def _db_time(value: Any, sqlite: bool) -> Any:
    """A row's time (epoch seconds, as the hooks record them, or a datetime) as the database takes it.

    Raw statements skip SQLAlchemy's type processing (the hot path of this writer), so for SQLite the
    time is written the way SQLAlchemy writes it there: naive UTC text.
    """
    if not sqlite:
        return value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    # Epoch seconds (what the hooks record) without a datetime: every row has several times, and this
    # was a twentieth of a worker's time. Microseconds are rounded as datetime.fromtimestamp rounds them.
    seconds = int(value)
    micros = round((value - seconds) * 1e6)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return f"{_utc_second_text(seconds)}.{micros:06d}"


@functools.lru_cache(maxsize=512)
def _utc_second_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _upsert_postgres(connection: Any, params: list[tuple[Any, ...]]) -> None:
    """Many rows per statement: psycopg2's executemany is a round trip per row, which made each
    submitted job cost the API server ~2 ms of its time on PostgreSQL.

    One statement may not update a row twice, and rows adopted from Redis can hold several writes of one
    job, so those go in rounds: the first write of each job, then the second, and so on (the upsert
    decides by ``seq``, whatever the order).
    """
    from psycopg2.extras import execute_values

    rounds: list[list[tuple[Any, ...]]] = []
    seen: dict[Any, int] = {}
    for values in params:
        index = seen[values[0]] = seen.get(values[0], -1) + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(values)
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        for batch in rounds:
            execute_values(cursor, _UPSERT_POSTGRES_VALUES, batch, page_size=1000)
    finally:
        cursor.close()


def _insert_attempts_postgres(connection: Any, params: list[tuple[Any, ...]]) -> None:
    from psycopg2.extras import execute_values

    cursor = connection.connection.dbapi_connection.cursor()
    try:
        execute_values(cursor, _INSERT_ATTEMPTS_POSTGRES, params, page_size=1000)
    finally:
        cursor.close()


def _upsert_sql(placeholder: str, *, values: str | None = None) -> str:
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
    values = values or "(" + ", ".join(placeholder for _ in _COLUMNS) + ")"
    return f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES {values} ON CONFLICT (id) DO UPDATE SET {', '.join(sets)}"


_CLEARED_BY_NEW_ATTEMPT = ("error_type", "error_message", "traceback", "finished_at", "result")
#: Key of a pending row's failed attempts that a merged later attempt replaced (see ``_merge``).
_EARLIER_ATTEMPTS = "earlier_attempts"
_ATTEMPT_COLUMNS = ("job_id", "attempt", "state", "error_type", "error_message", "traceback", "finished_at")
_INSERT_ATTEMPT = f"INSERT INTO job_attempts ({', '.join(_ATTEMPT_COLUMNS)}) VALUES {{}} ON CONFLICT DO NOTHING"
_INSERT_ATTEMPT_SQLITE = _INSERT_ATTEMPT.format("(" + ", ".join("?" for _ in _ATTEMPT_COLUMNS) + ")")
_INSERT_ATTEMPTS_POSTGRES = _INSERT_ATTEMPT.format("%s")  # execute_values fills in the rows
_UPSERT_SQLITE = _upsert_sql("?")
_UPSERT_POSTGRES_VALUES = _upsert_sql("%s", values="%s")
_TIME_INDEXES = tuple(_COLUMNS.index(column) for column in _TIME_COLUMNS)


def _merge(current: dict[str, Any], newer: dict[str, Any]) -> None:
    """Fold a later write of the same row into a pending one."""
    if newer.get("fields"):
        current["fields"] = [*current.get("fields", ()), *newer["fields"]]
    for column in _FILL_ONCE:
        if current.get(column) is None:
            current[column] = newer.get(column)
    # Of two attempts, the row keeps the later one's error; the earlier failed one goes to job_attempts.
    earlier = [*current.get(_EARLIER_ATTEMPTS, ()), *newer.get(_EARLIER_ATTEMPTS, ())]
    older = current if newer.get("seq", 0) > current.get("seq", 0) + 5 else None
    if current.get("seq", 0) > newer.get("seq", 0) + 5:
        older = newer
    failed = _failed_attempt(older) if older is not None else None
    if failed is not None:
        earlier.append(failed)
    if earlier:
        current[_EARLIER_ATTEMPTS] = earlier
    if newer.get("seq", 0) >= current.get("seq", 0):
        if newer["seq"] > current.get("seq", 0) + 5:
            for column in _CLEARED_BY_NEW_ATTEMPT:
                current[column] = None
        for column in (*_FOLLOW_NEWEST, "seq", "progress", "progress_note", "updated_at"):
            value = newer.get(column)
            if value is not None:
                current[column] = value


writer = JobWriter(
    interval=settings.job_flush_interval / 1000,
    max_rows=settings.job_buffer_max_rows,
    orphan_age=settings.heartbeat_timeout / 1000,
)
os.register_at_fork(after_in_child=writer._new_process)


def _flush_at_exit() -> None:
    try:
        writer.flush_pending()
    except Exception:
        logger.exception("Could not write the job rows still in memory at exit.")
    writer.retire()


# A worker process writes its rows in ``after_worker_shutdown``; this covers every other process (one
# that only sends messages, a fork process), and runs where ``atexit`` does not: at the end of a
# multiprocessing child such as a `dramatiq` worker or fork process.
multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=20)


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
    client = writer.redis
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
        return truncate(json.dumps(result, default=str), RESULT_MAX_CHARS)
    except (TypeError, ValueError):
        return truncate(repr(result), RESULT_MAX_CHARS)


class JobStatus(Middleware):
    """Keep one row per message in the job table: state, attempts, error, times, progress, result.

    States move ``queued → running → retrying → succeeded | failed | dead | cancelled``. Rows are written
    by a background thread every ``JOB_FLUSH_INTERVAL_MS``, so a reader may see a state that is that much
    behind; ``flush()`` writes at once.

    An attempt's outcome is recorded once its message is acknowledged, and goes to Redis in the round
    trip of that acknowledgement (see ``JobWriter``), so the writer never removes from Redis a row that
    is not there yet, and a worker killed before its next batch loses no outcome.

    Message options:
      parent_id(str): the run this job belongs to (a pipeline's or a group's first message id).

    Parameters:
      client(redis.Redis | None): where outcomes wait for the table and cancellations are read; None
        (RabbitMQ without ``REDIS_URL``) keeps outcomes in memory only.
    """

    def __init__(self, *, client: Any = None) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.client = client

    @property
    def actor_options(self) -> set[str]:
        return {"parent_id", "secret_args"}

    def after_process_boot(self, broker: Broker) -> None:
        from storage.db import migrate

        migrate()

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        writer.stopping = False
        if self.client is None:
            return
        writer.redis = self.client
        hooks = getattr(broker, "ack_hooks", None)
        if hooks is None:
            return
        if persist_with_ack not in hooks:
            hooks.append(persist_with_ack)
        writer.adopting = True
        # Its thread looks for stopped writers' rows from now on, even before this worker records a row.
        writer._ensure_thread()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        # Worker threads waiting for room go on, so the shutdown never waits for the database.
        with writer.room:
            writer.stopping = True
            writer.room.notify_all()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        # The worker threads have finished their last attempts: write every row they left in memory
        # before the process exits (durable outcomes stay in Redis for another worker if this fails).
        _flush_at_exit()

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
                "args": describe_arguments(message.args, message.kwargs, *argument_names(broker, message.actor_name)),
                "enqueued_at": message.message_timestamp / 1000,
                "parent_id": message.options.get("parent_id"),
                "attempts": 0,
                "updated_at": time.time(),
            }
        )

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if len(writer.waiting) >= writer.max_rows:
            writer.wait_for_room()
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
        from middleware.outcome import decide

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
            # An error may quote a connection URL (a driver's message, a subprocess's output): its password
            # must not reach the table, the log or the console.
            row["error_type"] = type(exception).__name__
            row["error_message"] = truncate(redact_text(str(exception) or type(exception).__name__), ERROR_MAX_CHARS)
            row["traceback"] = truncate_head(
                redact_text(
                    "".join(traceback.format_exception(type(exception), exception, exception.__traceback__, limit=30))
                ),
                TRACEBACK_MAX_CHARS,
            )
        self._note_outcome(message, row)

    def before_nack(self, broker: Broker, message: Any) -> None:
        # A message for an actor this worker does not know never reaches process_message: Dramatiq
        # dead-letters it straight away. Give it a row that says why, stored with the nack like any outcome.
        if noted(message, OUTCOME_ATTRIBUTE) is not None:
            return
        error = getattr(message, "_exception", None)
        if not isinstance(error, ActorNotFound):
            return
        now = time.time()
        attempt = int(message.options.get("retries", 0)) + 1
        self._note_outcome(
            message,
            {
                "id": message.message_id,
                "seq": _seq(attempt, JobState.DEAD),
                "state": JobState.DEAD.value,
                "actor": message.actor_name,
                "queue": message.queue_name.removesuffix(".DQ"),
                "args": describe_arguments(message.args, message.kwargs, *argument_names(broker, message.actor_name)),
                "enqueued_at": message.message_timestamp / 1000,
                "attempts": attempt,
                "error_type": "ActorNotFound",
                "error_message": (
                    f"no actor named {message.actor_name!r} is registered on the worker that took it; "
                    "the message is in the dead-letter queue"
                ),
                "finished_at": now,
                "updated_at": now,
            },
        )

    @staticmethod
    def _note_outcome(message: Any, row: dict[str, Any]) -> None:
        # Recorded after the acknowledgement (after_ack / after_nack), which also stores it in Redis.
        row["fields"] = [f"{row['id']}/{row['seq']}"]
        setattr(message, OUTCOME_ATTRIBUTE, row)

    def after_ack(self, broker: Broker, message: Any) -> None:
        row = noted(message, OUTCOME_ATTRIBUTE)
        if row is not None:
            writer.record(row)

    after_nack = after_ack

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        reason = noted(message, SKIP_REASON_ATTRIBUTE)
        attempt = int(message.options.get("retries", 0)) + 1
        if reason is Event.RATE_LIMITED:
            # Put back with a delay: the job waits again, for the attempt it has not begun.
            writer.record(
                {
                    "id": message.message_id,
                    "seq": _seq(attempt, JobState.QUEUED),
                    "state": JobState.QUEUED.value,
                    "actor": message.actor_name,
                    "queue": message.queue_name.removesuffix(".DQ"),
                    "updated_at": time.time(),
                }
            )
            return
        if reason not in (Event.CANCELLED, Event.SKIPPED):
            return
        now = time.time()
        self._note_outcome(
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
