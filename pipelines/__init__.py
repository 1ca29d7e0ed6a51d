"""Starting work from application code, and following it.

``actor.send(...)`` is the plain way; the functions here add what a caller usually wants next: urgent
sends, runs whose children are linked to one parent id, cancelling, and reading a job's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq import Message

from middleware.cancel import mark_cancelled
from middleware.job_status import flush, utcnow
from storage.models import Job, JobState


def send_urgent(actor: Any, *args: Any, **kwargs: Any) -> Message[Any]:
    """Send to the ``priority`` queue, which workers that take it serve apart from the domain queues."""
    broker = dramatiq.get_broker()
    message = actor.message_with_options(args=args, kwargs=kwargs)
    return broker.enqueue(message.copy(queue_name="priority", options={**message.options, "broker_priority": 9}))


def with_parent(messages: Sequence[Message[Any]], parent_id: str) -> list[Message[Any]]:
    """Copies of ``messages`` linked to ``parent_id`` in the job table."""
    return [message.copy(options={**message.options, "parent_id": parent_id}) for message in messages]


def run_pipeline(messages: Sequence[Message[Any]]) -> str:
    """Run messages one after the other, each receiving the previous one's result unless it was built
    with ``message_with_options(pipe_ignore=True)``; returns the run's id (its first message id).

    Every step's job row carries the run id as its ``parent_id``.
    """
    if not messages:
        raise ValueError("a pipeline needs at least one message")
    parent_id = messages[0].message_id
    dramatiq.pipeline(with_parent(messages, parent_id)).run()
    return parent_id


def run_group(messages: Sequence[Message[Any]], *, parent_id: str, on_complete: Message[Any] | None = None) -> str:
    """Run messages in parallel; ``on_complete`` is sent once all of them succeeded."""
    group = dramatiq.group(with_parent(messages, parent_id))
    if on_complete is not None:
        group.add_completion_callback(on_complete.copy(options={**on_complete.options, "parent_id": parent_id}))
    group.run()
    return parent_id


def job_status(job_id: str) -> Job | None:
    """The job's row, including what this process has not written yet."""
    from storage.jobs import get_job

    flush()
    return get_job(job_id)


def cancel(job_id: str) -> str:
    """Cancel a job. Returns ``cancelled`` (it had not started), ``cancelling`` (it stops at its next
    check point), or the state it already finished in. Raises ``LookupError`` for an unknown id.
    """
    from broker import redis_client_for
    from storage.jobs import mark_cancelled_if_queued

    row = job_status(job_id)
    if row is None:
        raise LookupError(f"no job with id {job_id!r}")
    if row.state in {state.value for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED)}:
        return str(row.state)
    client = redis_client_for(dramatiq.get_broker())
    if client is None:
        raise RuntimeError("cancelling needs Redis (set REDIS_URL)")
    mark_cancelled(client, job_id)
    if mark_cancelled_if_queued(job_id, utcnow()):
        return "cancelled"
    return "cancelling"
