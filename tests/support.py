"""Helpers for tests that watch jobs through the job table."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from storage.models import FINISHED_STATES, Job

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def dead_letters(broker: Any, queue: str = "default") -> int:
    """How many messages the broker holds in ``queue``'s dead-letter queue (Redis or RabbitMQ)."""
    from broker import queue_depths

    return queue_depths(broker, (queue,))[queue][2]


def job(message_id: str) -> Job | None:
    """The job row as it stands now, after writing what this process still buffers."""
    from middleware.job_status import flush
    from storage.jobs import get_job

    flush()
    return get_job(message_id)


def wait_for_job(message_id: str, timeout: float = 60.0, states: frozenset[str] | None = None) -> Job:
    """Wait until the job reaches one of ``states`` (default: any finished state) and return its row."""
    wanted = states or frozenset(state.value for state in FINISHED_STATES)

    def reached() -> Job | None:
        row = job(message_id)
        return row if row is not None and row.state in wanted else None

    row = wait_until(reached, timeout=timeout)
    assert row is not None
    return row


class EnqueueRecorder:
    """Every message a broker enqueues, with the delay it was given (ms), in the order sent.

    Tests read what the middleware *scheduled* here instead of measuring how long things took: a
    measured duration depends on how busy the machine is, the delay a middleware chose does not.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int | None]] = []  # (actor name, message id, delay ms)
        self._lock = threading.Lock()

    def delays(self, message_id: str) -> list[int]:
        """The delays of the re-enqueues of one message (a first send without delay is left out)."""
        with self._lock:
            return [delay for _, sent_id, delay in self.sent if sent_id == message_id and delay]

    def delayed(self, actor_name: str) -> list[tuple[str, int]]:
        """(message id, delay) of every delayed enqueue of an actor's messages."""
        with self._lock:
            return [(sent_id, delay) for name, sent_id, delay in self.sent if name == actor_name and delay]


@contextlib.contextmanager
def recording_enqueues(broker: Any) -> Iterator[EnqueueRecorder]:
    """Record what ``broker`` enqueues while the block runs (the middleware is removed afterwards)."""
    from dramatiq.middleware import Middleware

    recorder = EnqueueRecorder()

    class _Record(Middleware):
        def after_enqueue(self, broker: Any, message: Any, delay: int | None) -> None:
            with recorder._lock:
                recorder.sent.append((message.actor_name, message.message_id, delay))

    middleware = _Record()
    broker.middleware.append(middleware)
    try:
        yield recorder
    finally:
        broker.middleware.remove(middleware)
