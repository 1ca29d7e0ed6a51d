"""Reading and curating the job table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from storage.db import session_scope
from storage.models import FINISHED_STATES, Job, JobAttempt, JobState


def get_job(job_id: str) -> Job | None:
    with session_scope() as session:
        return session.get(Job, job_id)


def get_jobs(job_ids: Sequence[str]) -> dict[str, Job]:
    """The rows of these jobs that exist, by id, in one query per 500 ids."""
    found: dict[str, Job] = {}
    with session_scope() as session:
        for start in range(0, len(job_ids), 500):
            query = select(Job).where(Job.id.in_(job_ids[start : start + 500]))
            found.update((job.id, job) for job in session.scalars(query))
    return found


def list_jobs(
    *,
    state: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    parent_id: str | None = None,
    limit: int = 50,
) -> Sequence[Job]:
    query = select(Job).order_by(Job.enqueued_at.desc().nulls_last()).limit(limit)
    if state:
        query = query.where(Job.state == state)
    if actor:
        query = query.where(Job.actor == actor)
    if since:
        query = query.where(Job.enqueued_at >= since)
    if parent_id:
        query = query.where(Job.parent_id == parent_id)
    with session_scope() as session:
        return session.scalars(query).all()


def count_by_state(*, since: datetime | None = None) -> dict[tuple[str, str], int]:
    """Jobs per (actor, state), optionally only those enqueued since a time."""
    query = select(Job.actor, Job.state, func.count()).group_by(Job.actor, Job.state)
    if since:
        query = query.where(Job.enqueued_at >= since)
    with session_scope() as session:
        return {(actor or "", state or ""): count for actor, state, count in session.execute(query).all()}


def record_cancel_request(job_id: str, now: datetime) -> bool:
    """Note that a cancel was asked for (the first time counts); False for an unknown job.

    The state is left alone: the worker decides it (``cancelled`` when it skips or interrupts the job, or
    whatever the job did when it had already finished), so this write can never hide a real outcome.
    """
    with session_scope() as session:
        result = session.execute(
            update(Job).where(Job.id == job_id).values(cancel_requested_at=func.coalesce(Job.cancel_requested_at, now))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def running_since_before(cutoff: datetime) -> Sequence[Job]:
    with session_scope() as session:
        return session.scalars(select(Job).where(Job.state == JobState.RUNNING.value, Job.started_at < cutoff)).all()


def mark_stuck(job_id: str, *, seq: int, now: datetime, message: str) -> bool:
    """Fail a job that stayed ``running`` too long; only if nothing newer was written meanwhile."""
    with session_scope() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.seq == seq, Job.state == JobState.RUNNING.value)
            .values(
                state=JobState.FAILED.value,
                seq=seq + 2,
                error_type="StuckJob",
                error_message=message,
                finished_at=now,
                updated_at=now,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def prune_finished(older_than: timedelta, now: datetime) -> int:
    """Delete finished jobs that ended before ``now - older_than``, and their failed attempts."""
    old = (Job.state.in_([state.value for state in FINISHED_STATES]), Job.finished_at < now - older_than)
    with session_scope() as session:
        session.execute(delete(JobAttempt).where(JobAttempt.job_id.in_(select(Job.id).where(*old))))
        result = session.execute(delete(Job).where(*old))
        return int(result.rowcount)  # type: ignore[attr-defined]


def attempts_of(job_id: str) -> list[JobAttempt]:
    """The job's failed attempts, first to last (its latest error is also on the job row)."""
    with session_scope() as session:
        return list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.attempt)))
