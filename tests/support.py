"""Helpers for tests that watch jobs through the job table."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
