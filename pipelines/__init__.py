"""Starting work from application code, and following it.

``actor.send(...)`` is the plain way; the functions here add what a caller usually wants next: urgent
sends, runs whose children are linked to one parent id, cancelling, and reading a job's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq import Message

from middleware.cancellations import mark_cancelled
from middleware.job_status import flush, utcnow
from pipelines.runs import Run, RunFailed, RunStatus
from storage.models import Job, JobState

__all__ = [
    "Run",
    "RunFailed",
    "RunStatus",
    "cancel",
    "job_status",
    "run",
    "run_group",
    "run_pipeline",
    "send_urgent",
    "with_parent",
]


def run(job_id: str) -> Run:
    """A handle on the job ``job_id`` and the jobs it started: ``status()``, ``wait(timeout)``, ``result()``."""
    return Run(job_id)


def send_urgent(actor: Any, *args: Any, **kwargs: Any) -> Message[Any]:
    """Send to the ``priority`` queue, which workers that take it serve apart from the domain queues."""
    broker = dramatiq.get_broker()
    message = actor.message_with_options(args=args, kwargs=kwargs)
    return broker.enqueue(message.copy(queue_name="priority", options={**message.options, "broker_priority": 9}))


def with_parent(messages: Sequence[Message[Any]], parent_id: str) -> list[Message[Any]]:
    """Copies of ``messages`` linked to ``parent_id`` in the job table."""
    return [message.copy(options={**message.options, "parent_id": parent_id}) for message in messages]


def run_pipeline(messages: Sequence[Message[Any]]) -> Run:
    """Run messages one after the other, each receiving the previous one's result unless it was built
    with ``message_with_options(pipe_ignore=True)``; returns the run's handle (its id is the first
    message id).

    Every step's job row carries the run id as its ``parent_id``.
    """
    if not messages:
        raise ValueError("a pipeline needs at least one message")
    parent_id = messages[0].message_id
    dramatiq.pipeline(with_parent(messages, parent_id)).run()
    return Run(parent_id)


def run_group(messages: Sequence[Message[Any]], *, parent_id: str, on_complete: Message[Any] | None = None) -> Run:
    """Run messages in parallel; ``on_complete`` is sent once all of them succeeded. Returns the handle of
    run ``parent_id``, whose children are the messages."""
    group = dramatiq.group(with_parent(messages, parent_id))
    if on_complete is not None:
        group.add_completion_callback(on_complete.copy(options={**on_complete.options, "parent_id": parent_id}))
    group.run()
    return Run(parent_id)


def job_status(job_id: str) -> Job | None:
    """The job's row, including what this process has not written yet."""
    from storage.jobs import get_job

    flush()
    return get_job(job_id)


def cancel(job_id: str, *, wait_ms: int = 0) -> str:
    """Ask for a job to be cancelled. Returns the state it finished in, or ``cancelling`` while the
    request is on its way. Raises ``LookupError`` for an unknown id.

    The request is recorded (``cancel_requested_at``) and sent to every worker; the worker's outcome
    decides the state: a job that had not started is skipped and ends ``cancelled``, a running one is
    interrupted and ends ``cancelled``, one that finished first keeps its outcome. ``wait_ms`` waits that
    long for the outcome.
    """
    import time

    from broker import redis_client_for
    from storage.jobs import record_cancel_request

    row = job_status(job_id)
    if row is None:
        raise LookupError(f"no job with id {job_id!r}")
    if row.state in _FINISHED:
        return str(row.state)
    client = redis_client_for(dramatiq.get_broker())
    if client is None:
        raise RuntimeError("cancelling needs Redis (set REDIS_URL)")
    mark_cancelled(client, job_id)
    record_cancel_request(job_id, utcnow())
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        row = job_status(job_id)
        if row is not None and row.state in _FINISHED:
            return str(row.state)
        if time.monotonic() >= deadline:
            return "cancelling"
        time.sleep(0.05)


_FINISHED = frozenset(state.value for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED))
