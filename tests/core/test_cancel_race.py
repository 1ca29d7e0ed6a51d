"""Cancel racing the worker, through real `dramatiq` processes: the worker's outcome decides the state.

The worker here writes its job rows only every ten minutes, so the table still shows ``queued`` while the
job runs and after it finished: the window in which a cancel used to overwrite what really happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import job, wait_for_job, wait_until

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
DRAMATIQ = str(Path(sys.executable).parent / "dramatiq")


def _start_worker(**env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [DRAMATIQ, "actors", "tests.core.sample_actors", "-p", "1", "-t", "2", "-Q", "default"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _record_outcomes_left_by(process: subprocess.Popen[bytes], key: str) -> subprocess.Popen[bytes]:
    """Kill the worker before its next write and start another, which records the outcomes the first
    left in Redis (a job of its own starts its writer, which adopts them after ``ORPHAN_AGE``)."""
    from tests.core.sample_actors import counts

    _stop(process, signal.SIGKILL)
    other = _start_worker()
    counts.send(key, "after")
    return other


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    process.wait(60)


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


@pytest.fixture
def slow_writer_worker(broker):  # type: ignore[no-untyped-def]
    """A `dramatiq` worker that holds its job rows in memory (flushes every ten minutes)."""
    broker.flush_all()
    process = _start_worker(JOB_FLUSH_INTERVAL_MS="600000")
    try:
        yield process
    finally:
        _stop(process, signal.SIGKILL)
        broker.flush_all()


def test_cancelling_a_job_that_already_finished_leaves_its_real_outcome(slow_writer_worker, redis_client, key):
    from middleware.job_status import outcome_waiting
    from pipelines import cancel
    from tests.core.sample_actors import waits_for_go

    # Given a job that ran to its end while its table row still says queued
    message = waits_for_go.send(key)
    redis_client.set(f"{key}:go", 1)
    # Ended means its outcome is decided and stored with the ack: the `ran` flag is set a few bytecodes
    # before the actor returns, and a cancel that lands in those still interrupts the attempt (cancelled).
    wait_until(lambda: outcome_waiting(redis_client, message.message_id), timeout=60)
    assert redis_client.get(f"{key}:ran")
    row = job(message.message_id)
    assert row is not None and row.state == "queued"

    # When it is cancelled, and the worker's outcome reaches the table afterwards (the worker dies
    # before its next write; another one records the outcome it left in Redis)
    assert cancel(message.message_id) == "cancelling"
    other = _record_outcomes_left_by(slow_writer_worker, key)
    try:
        # Then the row shows what the job did, and that a cancel was asked for
        row = wait_for_job(message.message_id, timeout=90)
    finally:
        _stop(other)
    assert row.state == "succeeded"
    assert row.result == '"ran"'
    assert row.cancel_requested_at is not None


def test_a_job_cancelled_while_it_runs_is_interrupted_even_while_its_row_still_says_queued(
    slow_writer_worker, redis_client, key
):
    from middleware.job_status import outcome_waiting
    from pipelines import cancel
    from tests.core.sample_actors import waits_for_go

    # Given a running job whose row still says queued
    message = waits_for_go.send(key)
    wait_until(lambda: redis_client.llen(f"{key}:events"), timeout=60)
    row = job(message.message_id)
    assert row is not None and row.state == "queued"

    # When it is cancelled, and then told it may finish
    assert cancel(message.message_id) == "cancelling"
    wait_until(lambda: outcome_waiting(redis_client, message.message_id), timeout=30)
    redis_client.set(f"{key}:go", 1)

    # Then it was interrupted where it was: it never reached its end, and ends cancelled
    other = _record_outcomes_left_by(slow_writer_worker, key)
    try:
        row = wait_for_job(message.message_id, timeout=90)
    finally:
        _stop(other)
    assert (row.state, row.error_type) == ("cancelled", "JobCancelled")
    assert redis_client.get(f"{key}:ran") is None
    assert [event.split()[0] for event in redis_client.lrange(f"{key}:events", 0, -1)] == [b"start"]
