"""The platform's own tables: the job table, each failed attempt, scheduler state and health checks."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base


class JobState(enum.StrEnum):
    QUEUED = "queued"  # enqueued, waiting for a worker
    RUNNING = "running"  # a worker is executing an attempt
    RETRYING = "retrying"  # an attempt failed; another is scheduled after a backoff
    SUCCEEDED = "succeeded"  # the last attempt returned
    FAILED = "failed"  # ended by an error that is not retried (bad input, hard limit, no retries)
    DEAD = "dead"  # every retry failed; the message is in the dead-letter queue
    CANCELLED = "cancelled"  # cancelled before or while running

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})

#: Order of states within one attempt; a row only moves forward (see ``Job.seq``).
STATE_RANK = {
    JobState.QUEUED: 0,
    JobState.RUNNING: 1,
    JobState.RETRYING: 2,
    JobState.SUCCEEDED: 3,
    JobState.FAILED: 3,
    JobState.DEAD: 3,
    JobState.CANCELLED: 4,
}


class Job(Base):
    """One row per message id: what ran, how it went, and where it is now.

    Indexed (migrations ``core_0001``, ``web_0001``, ``web_0002``) by ``finished_at``, ``updated_at``, and
    by each listing filter (state, actor, queue, parent) followed by ``enqueued_at, id``.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    actor: Mapped[str | None] = mapped_column(String(200))
    queue: Mapped[str | None] = mapped_column(String(100))
    args: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(String(20))
    # attempt * 10 + state rank: writes from several processes arrive out of order, and a row only
    # takes a write whose seq is not lower than its own.
    seq: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int | None] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    progress: Mapped[float | None] = mapped_column(Float)
    progress_note: Mapped[str | None] = mapped_column(String(500))
    result: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When ``cancel`` was asked for. Only that is recorded: the state stays what the worker reports, so a
    # job that ran to its end before the cancel reached it still shows what it did.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobAttempt(Base):
    """One failed attempt of a job: its error and traceback, kept when the next attempt clears the job
    row's. A job that succeeded at once has none."""

    __tablename__ = "job_attempts"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based, as ``Job.attempts``
    state: Mapped[str] = mapped_column(String(20))  # retrying, failed or dead: how the attempt ended
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ScheduleState(Base):
    """The last time each periodic actor fired, so a restarted scheduler knows what it missed."""

    __tablename__ = "schedule_state"

    actor: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_fire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_outcome: Mapped[str | None] = mapped_column(String(20))
    #: Ticks sent late (``misfired``) since the schedule was first recorded.
    misfires: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class HealthCheck(Base):
    """The outcome of one health check of broker, database and disk."""

    __tablename__ = "health_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    healthy: Mapped[int] = mapped_column(Integer)
    details: Mapped[str] = mapped_column(Text)
